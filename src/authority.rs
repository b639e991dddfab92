//! A connection layer in front of tonic that makes HTTP/2 requests whose `:authority` is
//! unusable (a socket path, as gRPC-Go in kube-apiserver before late 2024 and the Secrets
//! Store CSI Driver before v1.6.0 send it, or an empty value) acceptable to `h2`, which
//! otherwise resets them as malformed.
//!
//! It reads the client's bytes frame by frame until the first header block. Frames other
//! than HEADERS/CONTINUATION pass through untouched (their payload is never buffered: it
//! is read straight into the server's buffer). The first header block is decoded with
//! HPACK:
//! - if its `:authority` is usable (or absent), the connection is a modern client's and
//!   every later byte passes untouched: clients keep one authority per connection;
//! - if it is unusable, the connection switches to re-encoding: from then on every block
//!   is decoded and re-encoded with `:authority: localhost` where needed, as literal fields
//!   without indexing, so the server's decoder never depends on entries it did not see.
//!
//! Hostile input is bounded and fatal in the right way:
//! - one header block is at most [`MAX_BLOCK`] bytes in at most [`MAX_CONTINUATIONS`]
//!   frames, and decodes to at most [`MAX_HEADER_LIST`] bytes (`ENHANCE_YOUR_CALM`);
//! - frames larger than the server allows get `FRAME_SIZE_ERROR`;
//! - CONTINUATION out of place gets `PROTOCOL_ERROR`, undecodable HPACK
//!   `COMPRESSION_ERROR`;
//! - HPACK dynamic-table size updates are honoured up to what the server advertised.
//!
//! On such an error the layer sends GOAWAY with that code and closes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BufMut as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest header block (all fragments) accepted.
pub const MAX_BLOCK: usize = 64 * 1024;
/// Most CONTINUATION frames in one header block.
pub const MAX_CONTINUATIONS: usize = 64;
/// Largest decoded header list (RFC 7541 size: name + value + 32 per field).
pub const MAX_HEADER_LIST: usize = 256 * 1024;
/// What replaces an unusable `:authority`.
pub const REPLACEMENT: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DEFAULT_MAX_FRAME: usize = 16_384;
const DEFAULT_TABLE: usize = 4_096;
const FRAME_HEADER: usize = 9;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_GOAWAY: u8 = 0x7;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// HTTP/2 error codes the layer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Error {
    /// 0x1.
    Protocol,
    /// 0x6.
    FrameSize,
    /// 0x9.
    Compression,
    /// 0xb.
    EnhanceYourCalm,
}

impl H2Error {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::Protocol => 0x1,
            Self::FrameSize => 0x6,
            Self::Compression => 0x9,
            Self::EnhanceYourCalm => 0xb,
        }
    }
}

/// Whether h2 will accept this `:authority` value.
pub fn usable_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Matching the client preface; `usize` bytes matched so far.
    Preface(usize),
    /// Parsing frames.
    Frames,
    /// Not HTTP/2 with prior knowledge, or rewriting disabled: bytes pass untouched.
    Transparent,
    /// A fatal error was sent; the connection is closing.
    Failed,
}

#[derive(Debug)]
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    raw: BytesMut,
    frames: usize,
}

/// Tracks server→client frame boundaries and the server's SETTINGS.
#[derive(Debug, Default)]
struct WriteTrack {
    header: [u8; FRAME_HEADER],
    have: usize,
    remaining: usize,
    settings: Option<Vec<u8>>,
}

/// The rewriting layer around one connection.
pub struct AuthorityRewrite<IO> {
    io: IO,
    state: ReadState,
    inbuf: BytesMut,
    outbuf: BytesMut,
    passthrough: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    rewriting: bool,
    rewrites: u64,
    max_frame: usize,
    last_stream: u32,
    eof: bool,
    write: WriteTrack,
    goaway: Option<BytesMut>,
    arena: Vec<u8>,
    fields: Vec<(usize, usize, usize)>,
}

impl<IO> std::fmt::Debug for AuthorityRewrite<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewrite")
            .field("state", &self.state)
            .field("rewriting", &self.rewriting)
            .field("rewrites", &self.rewrites)
            .finish_non_exhaustive()
    }
}

impl<IO> AuthorityRewrite<IO> {
    /// Wraps a connection; with `enabled = false` every byte passes untouched.
    pub fn new(io: IO, enabled: bool) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(DEFAULT_TABLE);
        Self {
            io,
            state: if enabled {
                ReadState::Preface(0)
            } else {
                ReadState::Transparent
            },
            inbuf: BytesMut::new(),
            outbuf: BytesMut::new(),
            passthrough: 0,
            block: None,
            decoder,
            rewriting: false,
            rewrites: 0,
            max_frame: DEFAULT_MAX_FRAME,
            last_stream: 0,
            eof: false,
            write: WriteTrack::default(),
            goaway: None,
            arena: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Header blocks re-encoded so far.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Feeds client bytes without I/O and returns what the server would read (for fuzzing
    /// and tests). An error is what would close the connection.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, H2Error> {
        self.inbuf.extend_from_slice(bytes);
        while self.process()? {}
        Ok(self.outbuf.split().to_vec())
    }

    /// Feeds bytes the server wrote (its SETTINGS change the layer's limits).
    pub fn feed_server(&mut self, bytes: &[u8]) {
        if self.state != ReadState::Transparent {
            self.observe_written(bytes);
        }
    }

    /// Processes buffered input; `Ok(true)` when progress was made.
    fn process(&mut self) -> Result<bool, H2Error> {
        match self.state {
            ReadState::Preface(matched) => {
                let want = PREFACE.get(matched..).unwrap_or_default();
                let n = want.len().min(self.inbuf.len());
                if n == 0 {
                    return Ok(false);
                }
                if self.inbuf.get(..n) != want.get(..n) {
                    // Not an HTTP/2 prior-knowledge client: leave it to the server.
                    self.state = ReadState::Transparent;
                } else if matched + n == PREFACE.len() {
                    self.state = ReadState::Frames;
                } else {
                    self.state = ReadState::Preface(matched + n);
                }
                self.forward(n);
                Ok(true)
            }
            ReadState::Transparent => {
                if self.inbuf.is_empty() {
                    return Ok(false);
                }
                self.forward(self.inbuf.len());
                Ok(true)
            }
            ReadState::Failed => Ok(false),
            ReadState::Frames => self.process_frame(),
        }
    }

    /// Moves `n` buffered input bytes to the output unchanged.
    fn forward(&mut self, n: usize) {
        self.outbuf
            .extend_from_slice(self.inbuf.get(..n).unwrap_or_default());
        self.inbuf.advance(n);
    }

    fn process_frame(&mut self) -> Result<bool, H2Error> {
        if self.passthrough > 0 {
            let n = self.passthrough.min(self.inbuf.len());
            if n == 0 {
                return Ok(false);
            }
            self.forward(n);
            self.passthrough -= n;
            return Ok(true);
        }
        let Some(header) = self
            .inbuf
            .get(..FRAME_HEADER)
            .and_then(|h| <[u8; FRAME_HEADER]>::try_from(h).ok())
        else {
            return Ok(false);
        };
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let kind = header[3];
        let flags = header[4];
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if len > self.max_frame {
            return Err(H2Error::FrameSize);
        }
        if let Some(block) = &self.block {
            if kind != TYPE_CONTINUATION || stream != block.stream {
                return Err(H2Error::Protocol);
            }
        } else if kind == TYPE_CONTINUATION {
            return Err(H2Error::Protocol);
        }
        if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
            self.forward(FRAME_HEADER);
            self.passthrough = len;
            return Ok(true);
        }
        if self.inbuf.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let frame = self.inbuf.split_to(FRAME_HEADER + len);
        let payload = frame.get(FRAME_HEADER..).unwrap_or_default();
        if kind == TYPE_HEADERS {
            if stream == 0 {
                return Err(H2Error::Protocol);
            }
            let (priority, fragment) = split_headers_payload(flags, payload)?;
            self.last_stream = self.last_stream.max(stream);
            self.block = Some(Block {
                stream,
                flags,
                priority,
                fragment: BytesMut::from(fragment),
                raw: BytesMut::new(),
                frames: 1,
            });
        } else if let Some(block) = self.block.as_mut() {
            block.fragment.extend_from_slice(payload);
            block.frames += 1;
        }
        let block = self.block.as_mut().ok_or(H2Error::Protocol)?;
        block.raw.extend_from_slice(&frame);
        if block.fragment.len() > MAX_BLOCK || block.frames > MAX_CONTINUATIONS + 1 {
            return Err(H2Error::EnhanceYourCalm);
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().ok_or(H2Error::Protocol)?;
            self.finish_block(block)?;
        }
        Ok(true)
    }

    fn finish_block(&mut self, block: Block) -> Result<(), H2Error> {
        // Decoded fields go into one reused arena: no allocation per field in steady state.
        let arena = &mut self.arena;
        let fields = &mut self.fields;
        arena.clear();
        fields.clear();
        let mut size = 0usize;
        let mut bad = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size += name.len() + value.len() + 32;
                if size > MAX_HEADER_LIST {
                    return;
                }
                if name.as_ref() == b":authority" && !usable_authority(&value) {
                    bad = true;
                }
                let start = arena.len();
                arena.extend_from_slice(&name);
                arena.extend_from_slice(&value);
                fields.push((start, name.len(), value.len()));
            })
            .map_err(|_| H2Error::Compression)?;
        if size > MAX_HEADER_LIST {
            return Err(H2Error::EnhanceYourCalm);
        }
        if !bad && !self.rewriting {
            // A client keeps one authority for the life of a connection (gRPC-Go and tonic
            // both fix it per channel), so a connection whose first request is fine needs
            // nothing more from us: from here its bytes pass untouched and h2 enforces the
            // protocol itself. Decoding every block costs a third of the throughput.
            self.outbuf.extend_from_slice(&block.raw);
            self.state = ReadState::Transparent;
            return Ok(());
        }
        if bad && self.rewrites == 0 {
            tracing::debug!(
                stream = block.stream,
                "replacing an unusable :authority with localhost on this connection"
            );
        }
        self.rewriting = true;
        self.rewrites += 1;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for &(start, name_len, value_len) in fields.iter() {
            let name = arena.get(start..start + name_len).unwrap_or_default();
            let value = arena
                .get(start + name_len..start + name_len + value_len)
                .unwrap_or_default();
            let value = if name == b":authority" && !usable_authority(value) {
                REPLACEMENT
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        write_header_frames(&mut self.outbuf, &block, &encoded, self.max_frame);
        Ok(())
    }

    fn fail(&mut self, error: H2Error) {
        tracing::debug!(?error, "closing an HTTP/2 connection on malformed input");
        self.state = ReadState::Failed;
        self.inbuf.clear();
        self.block = None;
        let mut frame = BytesMut::with_capacity(FRAME_HEADER + 8);
        frame.put_slice(&[0, 0, 8, TYPE_GOAWAY, 0, 0, 0, 0, 0]);
        frame.put_u32(self.last_stream);
        frame.put_u32(error.code());
        self.goaway = Some(frame);
    }

    /// Observes bytes the server wrote, tracking frame boundaries and its SETTINGS.
    fn observe_written(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let t = &mut self.write;
            if t.have < FRAME_HEADER {
                let n = (FRAME_HEADER - t.have).min(bytes.len());
                if let (Some(dst), Some(src)) =
                    (t.header.get_mut(t.have..t.have + n), bytes.get(..n))
                {
                    dst.copy_from_slice(src);
                }
                t.have += n;
                bytes = bytes.get(n..).unwrap_or_default();
                if t.have == FRAME_HEADER {
                    let h = t.header;
                    t.remaining =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let is_settings = h[3] == TYPE_SETTINGS && h[4] & FLAG_ACK == 0;
                    t.settings = (is_settings && t.remaining <= 1024).then(Vec::new);
                    if t.remaining == 0 {
                        t.have = 0;
                        self.apply_settings();
                    }
                }
                continue;
            }
            let n = t.remaining.min(bytes.len());
            if let (Some(s), Some(src)) = (t.settings.as_mut(), bytes.get(..n)) {
                s.extend_from_slice(src);
            }
            t.remaining -= n;
            bytes = bytes.get(n..).unwrap_or_default();
            if t.remaining == 0 {
                t.have = 0;
                self.apply_settings();
            }
        }
    }

    fn apply_settings(&mut self) {
        let Some(settings) = self.write.settings.take() else {
            return;
        };
        for entry in settings.chunks_exact(6) {
            let Ok(entry) = <[u8; 6]>::try_from(entry) else {
                continue;
            };
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]) as usize;
            match id {
                // The client may size its encoder's table up to what the server allows.
                0x1 => self
                    .decoder
                    .set_max_allowed_table_size(value.max(DEFAULT_TABLE)),
                0x5 => self.max_frame = value.clamp(DEFAULT_MAX_FRAME, 16_777_215),
                _ => {}
            }
        }
    }

    fn at_write_boundary(&self) -> bool {
        self.write.have == 0 && self.write.remaining == 0
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Result<(Option<[u8; 5]>, &[u8]), H2Error> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&p, tail) = rest.split_first().ok_or(H2Error::Protocol)?;
        pad = usize::from(p);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let p: [u8; 5] = rest
            .get(..5)
            .and_then(|s| s.try_into().ok())
            .ok_or(H2Error::Protocol)?;
        priority = Some(p);
        rest = rest.get(5..).unwrap_or_default();
    }
    if pad > rest.len() {
        return Err(H2Error::Protocol);
    }
    Ok((priority, rest.get(..rest.len() - pad).unwrap_or_default()))
}

/// RFC 7541 §5.1 integer with an `prefix`-bit prefix, first byte OR-ed with `first`.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name, raw strings (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_integer(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    encode_integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn write_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

/// Writes a re-encoded block as HEADERS (+ CONTINUATION) frames within `max_frame`.
fn write_header_frames(out: &mut BytesMut, block: &Block, encoded: &[u8], max_frame: usize) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_room = max_frame - priority_len;
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = block.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        out,
        priority_len + first.len(),
        TYPE_HEADERS,
        flags,
        block.stream,
    );
    if let Some(p) = block.priority {
        out.put_slice(&p);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(max_frame));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, block.stream);
        out.put_slice(chunk);
        rest = tail;
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for AuthorityRewrite<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // Process every complete frame buffered, so the server gets them in one read.
            loop {
                match this.process() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        this.fail(e);
                        break;
                    }
                }
            }
            if !this.outbuf.is_empty() {
                let n = this.outbuf.len().min(buf.remaining());
                buf.put_slice(this.outbuf.get(..n).unwrap_or_default());
                this.outbuf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.state == ReadState::Failed {
                // Best effort: the GOAWAY goes out if the server is between frames.
                if let Some(frame) = this.goaway.take()
                    && this.at_write_boundary()
                {
                    let _ = Pin::new(&mut this.io).poll_write(cx, &frame);
                    let _ = Pin::new(&mut this.io).poll_flush(cx);
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed HTTP/2 input; connection closed",
                )));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Fast paths: payload of a pass-through frame, or a transparent connection, is
            // read straight into the server's buffer.
            if this.inbuf.is_empty()
                && (this.state == ReadState::Transparent
                    || (this.state == ReadState::Frames && this.passthrough > 0))
            {
                let limit = if this.state == ReadState::Transparent {
                    buf.remaining()
                } else {
                    this.passthrough.min(buf.remaining())
                };
                // Initialise first (safe code cannot assume bytes initialised), then let
                // the connection fill a view of exactly `limit` bytes.
                buf.initialize_unfilled_to(limit);
                let mut limited = buf.take(limit);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
                let n = limited.filled().len();
                buf.advance(n);
                if this.state == ReadState::Frames {
                    this.passthrough -= n;
                }
                if n == 0 {
                    this.eof = true;
                }
                return Poll::Ready(Ok(()));
            }
            this.inbuf.reserve(16 * 1024);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.inbuf
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        if this.state != ReadState::Transparent {
            this.observe_written(buf.get(..n).unwrap_or_default());
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Keep the server's vectored writes: without them h2 copies every frame into one
        // buffer and makes more system calls.
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        if this.state != ReadState::Transparent {
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                this.observe_written(b.get(..take).unwrap_or_default());
                left -= take;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityRewrite<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_literals_decode_back() {
        let mut out = Vec::new();
        encode_literal(&mut out, b":authority", &vec![b'a'; 300]);
        encode_literal(&mut out, b"x", b"");
        let mut d = loona_hpack::Decoder::new();
        let h = d.decode(&out).unwrap();
        assert_eq!(h[0].0, b":authority");
        assert_eq!(h[0].1.len(), 300);
        assert_eq!(h[1], (b"x".to_vec(), Vec::new()));
    }

    #[test]
    fn authority_values() {
        assert!(usable_authority(b"localhost"));
        assert!(usable_authority(b"localhost:1234"));
        assert!(!usable_authority(
            b"/var/run/secrets-store-csi-providers/azure.sock"
        ));
        assert!(!usable_authority(b""));
        assert!(!usable_authority(b"unix:///opt/azurekms.socket"));
    }

    #[test]
    fn headers_payload_padding_and_priority() {
        let payload = [3u8, 0, 0, 0, 1, 16, b'a', b'b', 0, 0, 0];
        let (p, frag) = split_headers_payload(FLAG_PADDED | FLAG_PRIORITY, &payload).unwrap();
        assert_eq!(p, Some([0, 0, 0, 1, 16]));
        assert_eq!(frag, b"ab");
        assert_eq!(
            split_headers_payload(FLAG_PADDED, &[9, 1, 2]),
            Err(H2Error::Protocol)
        );
        assert_eq!(
            split_headers_payload(FLAG_PRIORITY, &[1, 2]),
            Err(H2Error::Protocol)
        );
    }

    fn process_all(
        layer: &mut AuthorityRewrite<tokio::io::DuplexStream>,
        bytes: &[u8],
    ) -> Result<Vec<u8>, H2Error> {
        layer.feed(bytes)
    }

    proptest::proptest! {
        #[test]
        fn hostile_byte_streams_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..20)) {
            let mut layer = AuthorityRewrite::new(tokio::io::empty(), true);
            let mut first = true;
            for c in chunks {
                let input = if first { [PREFACE, &c].concat() } else { c };
                first = false;
                if layer.feed(&input).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn rewritten_blocks_keep_every_other_header(
            authority in "(/[a-z]{1,12}){1,4}\\.sock|localhost|",
            extra in proptest::collection::vec(("[a-z]{1,10}", "[ -~]{0,40}"), 0..8),
            split in 16usize..64,
        ) {
            let mut fields = Vec::new();
            encode_literal(&mut fields, b":method", b"POST");
            encode_literal(&mut fields, b":authority", authority.as_bytes());
            for (n, v) in &extra {
                encode_literal(&mut fields, n.as_bytes(), v.as_bytes());
            }
            let mut input = PREFACE.to_vec();
            let mut parts = fields.chunks(split).peekable();
            let first = parts.next().unwrap_or_default();
            input.extend(frame(TYPE_HEADERS, if parts.peek().is_none() { FLAG_END_HEADERS } else { 0 }, 1, first));
            while let Some(p) = parts.next() {
                input.extend(frame(TYPE_CONTINUATION, if parts.peek().is_none() { FLAG_END_HEADERS } else { 0 }, 1, p));
            }
            let mut layer = AuthorityRewrite::new(tokio::io::empty(), true);
            let out = layer.feed(&input).unwrap();
            // Reassemble what the server reads and decode it.
            let mut rest = out.get(PREFACE.len()..).unwrap();
            let mut blockbytes = Vec::new();
            while rest.len() >= FRAME_HEADER {
                let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
                blockbytes.extend_from_slice(&rest[FRAME_HEADER..FRAME_HEADER + len]);
                rest = &rest[FRAME_HEADER + len..];
            }
            let decoded = loona_hpack::Decoder::new().decode(&blockbytes).unwrap();
            let auth = decoded.iter().find(|(n, _)| n == b":authority").unwrap();
            proptest::prop_assert!(usable_authority(&auth.1));
            if usable_authority(authority.as_bytes()) {
                proptest::prop_assert_eq!(&auth.1, &authority.as_bytes().to_vec());
            }
            proptest::prop_assert_eq!(decoded.len(), extra.len() + 2);
            for ((n, v), (dn, dv)) in extra.iter().zip(decoded.iter().skip(2)) {
                proptest::prop_assert_eq!(n.as_bytes(), dn.as_slice());
                proptest::prop_assert_eq!(v.as_bytes(), dv.as_slice());
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.put_slice(payload);
        out.to_vec()
    }

    #[tokio::test]
    async fn malformed_sequences_are_fatal_with_the_right_code() {
        let cases: Vec<(Vec<u8>, H2Error)> = vec![
            (
                frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]),
                H2Error::Protocol,
            ),
            (
                [
                    frame(TYPE_HEADERS, 0, 1, &[0x82]),
                    frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0x84]),
                ]
                .concat(),
                H2Error::Protocol,
            ),
            (
                [frame(TYPE_HEADERS, 0, 1, &[0x82]), frame(0x0, 0, 1, &[0])].concat(),
                H2Error::Protocol,
            ),
            (
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]),
                H2Error::Compression,
            ),
            (
                frame(TYPE_HEADERS, FLAG_END_HEADERS, 0, &[0x82]),
                H2Error::Protocol,
            ),
            (frame(0x0, 0, 1, &vec![0; 20_000]), H2Error::FrameSize),
        ];
        for (bytes, want) in cases {
            let (a, _b) = tokio::io::duplex(64);
            let mut layer = AuthorityRewrite::new(a, true);
            let input = [PREFACE, &bytes].concat();
            assert_eq!(process_all(&mut layer, &input).map(|_| ()), Err(want));
        }
        // A CONTINUATION flood is refused once past the bound.
        let (a, _b) = tokio::io::duplex(64);
        let mut layer = AuthorityRewrite::new(a, true);
        let mut input = [PREFACE, &frame(TYPE_HEADERS, 0, 1, &[0x82])].concat();
        for _ in 0..(MAX_CONTINUATIONS + 2) {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &[0x84]));
        }
        assert_eq!(
            process_all(&mut layer, &input).map(|_| ()),
            Err(H2Error::EnhanceYourCalm)
        );
        // So is a block larger than MAX_BLOCK, whatever its frame count.
        let (a, _b) = tokio::io::duplex(64);
        let mut layer = AuthorityRewrite::new(a, true);
        let mut input = [PREFACE, &frame(TYPE_HEADERS, 0, 1, &[0x82])].concat();
        for _ in 0..5 {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &vec![0x40; 16_000]));
        }
        assert_eq!(
            process_all(&mut layer, &input).map(|_| ()),
            Err(H2Error::EnhanceYourCalm)
        );
    }

    #[tokio::test]
    async fn unchanged_connections_pass_bytes_through_exactly() {
        let (a, _b) = tokio::io::duplex(64);
        let mut layer = AuthorityRewrite::new(a, true);
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"localhost");
        let input = [
            PREFACE,
            &frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block),
            &frame(0x0, 1, 1, b"data"),
        ]
        .concat();
        assert_eq!(process_all(&mut layer, &input).unwrap(), input);
        assert_eq!(layer.rewrites(), 0);
    }
}
