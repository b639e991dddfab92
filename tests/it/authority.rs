//! Older gRPC-Go clients send the socket path as HTTP/2 `:authority`, which `h2` rejects.
//! These tests speak raw HTTP/2 frames over both servers' real Unix sockets (KMS `Status`,
//! CSI `Version`), with every HPACK
//! form such clients use, and check the answers; with the layer disabled the same requests
//! fail, so the tests prove the layer is what makes them work.

use std::time::Duration;

use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCKET_PATH_HUFFMAN: &str = "60f5a581fbb6c2f5a50ba0e4ea54ff"; // "/opt/azurekms.socket", RFC 7541 Huffman

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn int(out: &mut Vec<u8>, first: u8, prefix: u8, mut v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// How a test client encodes one header field.
enum Field<'a> {
    /// Literal without indexing, new name, raw strings.
    Literal(&'a str, &'a [u8]),
    /// Literal with incremental indexing, new name; value already Huffman-coded.
    IndexedHuffman(&'a str, Vec<u8>),
    /// Indexed field (static 1..=61 or dynamic 62..).
    Index(usize),
}

fn block(fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Field::Literal(n, v) => {
                out.push(0x00);
                int(&mut out, 0, 7, n.len());
                out.extend(n.as_bytes());
                int(&mut out, 0, 7, v.len());
                out.extend(*v);
            }
            Field::IndexedHuffman(n, v) => {
                out.push(0x40);
                int(&mut out, 0, 7, n.len());
                out.extend(n.as_bytes());
                int(&mut out, 0x80, 7, v.len());
                out.extend(v);
            }
            Field::Index(i) => int(&mut out, 0x80, 7, *i),
        }
    }
    out
}

/// The two servers and the call each test makes: KMS `Status`, CSI `Version`.
#[derive(Clone, Copy, Debug)]
enum Target {
    Kms,
    Csi,
}

impl Target {
    fn path(self) -> &'static str {
        match self {
            Self::Kms => "/v2.KeyManagementService/Status",
            Self::Csi => "/v1alpha1.CSIDriverProvider/Version",
        }
    }

    fn body(self) -> Vec<u8> {
        match self {
            Self::Kms => grpc_message(&v2::StatusRequest {}),
            Self::Csi => grpc_message(&csi::VersionRequest {
                version: "v1alpha1".into(),
            }),
        }
    }

    /// The answer, decoded and printed, for comparing answers.
    fn decode(self, outcome: &Outcome) -> String {
        let data = match outcome {
            Outcome::Answer(code, data) if code == "0" => &data[5..],
            other => panic!("expected an OK answer, got {other:?}"),
        };
        match self {
            Self::Kms => {
                let s = v2::StatusResponse::decode(data).unwrap();
                assert_eq!((s.version.as_str(), s.healthz.as_str()), ("v2beta1", "ok"));
                format!("{s:?}")
            }
            Self::Csi => {
                let v = csi::VersionResponse::decode(data).unwrap();
                assert_eq!(v.version, "v1alpha1");
                format!("{v:?}")
            }
        }
    }

    fn frames(self, authority: Option<Field<'_>>, split: Option<usize>) -> impl Fn(u32) -> Vec<u8> {
        request_frames(
            block(&request_fields(self.path(), authority)),
            split,
            self.body(),
        )
    }

    /// Starts the server, with or without the layer.
    async fn start(self, rewrite: bool) -> Running {
        let mock = mock(KMS_FIXTURE).await;
        let dir = tempfile::tempdir().unwrap();
        match self {
            Self::Kms => {
                let socket = dir.path().join("kms.sock");
                let azure = azure_json(
                    dir.path(),
                    &mock,
                    "00000000-0000-0000-0000-00000000c0de",
                    "kms-secret",
                );
                let mut flags = kms_flags(&mock, &socket, &azure);
                flags.push(format!("--h2-authority-rewrite={rewrite}"));
                let server = Plugin::start(flags, &socket).await.unwrap();
                Running {
                    socket,
                    _mock: mock,
                    _dir: dir,
                    _kms: Some(server),
                    _csi: None,
                }
            }
            Self::Csi => {
                let socket = dir.path().join("azure.sock");
                let mut flags = csi_flags(&mock, &socket);
                flags.push(format!("--h2-authority-rewrite={rewrite}"));
                let server = Provider::start(flags, &socket).await.unwrap();
                Running {
                    socket,
                    _mock: mock,
                    _dir: dir,
                    _kms: None,
                    _csi: Some(server),
                }
            }
        }
    }
}

struct Running {
    socket: std::path::PathBuf,
    _mock: mock_vault::MockVault,
    _dir: tempfile::TempDir,
    _kms: Option<Plugin>,
    _csi: Option<Provider>,
}

fn request_fields<'a>(path: &'a str, authority: Option<Field<'a>>) -> Vec<Field<'a>> {
    let mut f = vec![
        Field::Index(3), // :method POST
        Field::Index(6), // :scheme http
        Field::Literal(":path", path.as_bytes()),
    ];
    f.extend(authority);
    f.push(Field::Literal("content-type", b"application/grpc"));
    f.push(Field::Literal("te", b"trailers"));
    f
}

fn grpc_message(msg: &impl prost::Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// A raw HTTP/2 client connection.
struct Raw {
    io: UnixStream,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// grpc-status and the response message.
    Answer(String, Vec<u8>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed.
    Closed,
}

impl Raw {
    async fn connect(socket: &std::path::Path) -> Self {
        let mut io = UnixStream::connect(socket).await.unwrap();
        io.write_all(PREFACE).await.unwrap();
        io.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        Self {
            io,
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        }
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut h = [0u8; 9];
        self.io.read_exact(&mut h).await.ok()?;
        let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await.ok()?;
        Some((
            h[3],
            h[4],
            u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        ))
    }

    /// Sends raw frames for a new stream (built by `build(stream)`), then reads until that
    /// stream ends.
    async fn exchange(&mut self, frames: impl Fn(u32) -> Vec<u8>) -> Outcome {
        let stream = self.next_stream;
        self.next_stream += 2;
        // The server may close mid-write on malformed input; the answer tells.
        let _ = self.io.write_all(&frames(stream)).await;
        let mut status = None;
        let mut data = Vec::new();
        loop {
            let Some((kind, flags, sid, payload)) =
                tokio::time::timeout(Duration::from_secs(10), self.read_frame())
                    .await
                    .expect("answer in time")
            else {
                return Outcome::Closed;
            };
            match kind {
                0x4 if flags & 1 == 0 => {
                    let _ = self.io.write_all(&frame(0x4, 1, 0, &[])).await;
                }
                0x6 if flags & 1 == 0 => {
                    let _ = self.io.write_all(&frame(0x6, 1, 0, &payload)).await;
                }
                0x7 => {
                    return Outcome::GoAway(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                }
                0x3 if sid == stream => {
                    return Outcome::Reset(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
                0x1 => {
                    let headers = self.decoder.decode(&payload).expect("server HPACK");
                    if sid == stream {
                        for (n, v) in &headers {
                            if n == b"grpc-status" {
                                status = Some(String::from_utf8(v.clone()).unwrap());
                            }
                        }
                        if flags & 1 != 0 {
                            return Outcome::Answer(status.unwrap_or_default(), data);
                        }
                    }
                }
                0x0 if sid == stream => {
                    data.extend(&payload);
                    // Give the flow-control window back.
                    if !payload.is_empty() {
                        let inc = (payload.len() as u32).to_be_bytes();
                        self.io.write_all(&frame(0x8, 0, 0, &inc)).await.unwrap();
                    }
                }
                _ => {}
            }
        }
    }
}

fn request_frames(block: Vec<u8>, split: Option<usize>, body: Vec<u8>) -> impl Fn(u32) -> Vec<u8> {
    move |stream| {
        let mut out = Vec::new();
        match split {
            None => out.extend(frame(0x1, 0x4, stream, &block)),
            Some(chunk) => {
                let mut parts = block.chunks(chunk).peekable();
                let first = parts.next().unwrap();
                out.extend(frame(0x1, 0, stream, first));
                while let Some(p) = parts.next() {
                    let flags = if parts.peek().is_none() { 0x4 } else { 0 };
                    out.extend(frame(0x9, flags, stream, p));
                }
            }
        }
        out.extend(frame(0x0, 0x1, stream, &body));
        out
    }
}

/// Literal path, then a Huffman-coded path added to the dynamic table, then many requests
/// that reuse that dynamic entry by index, then a block split over CONTINUATION frames;
/// empty, absent and `localhost` authorities answer identically.
async fn every_hpack_form_is_answered(target: Target) {
    let server = target.start(true).await;
    let mut raw = Raw::connect(&server.socket).await;
    let path = b"/var/run/secrets-store-csi-providers/azure.sock";
    let first = target.decode(
        &raw.exchange(target.frames(Some(Field::Literal(":authority", path)), None))
            .await,
    );
    let huffman = hex::decode(SOCKET_PATH_HUFFMAN).unwrap();
    let indexed = target.frames(Some(Field::IndexedHuffman(":authority", huffman)), None);
    assert_eq!(target.decode(&raw.exchange(&indexed).await), first);
    // The entry just added is dynamic index 62; reuse it across many requests.
    let reuse = target.frames(Some(Field::Index(62)), None);
    for _ in 0..50 {
        assert_eq!(target.decode(&raw.exchange(&reuse).await), first);
    }
    let split = target.frames(Some(Field::Literal(":authority", path)), Some(7));
    assert_eq!(target.decode(&raw.exchange(&split).await), first);
    for authority in [
        Some(Field::Literal(":authority", b"")),
        None,
        Some(Field::Literal(":authority", b"localhost")),
    ] {
        let f = target.frames(authority, None);
        assert_eq!(target.decode(&raw.exchange(&f).await), first);
    }
}

async fn without_the_layer_a_path_authority_fails(target: Target) {
    let server = target.start(false).await;
    let mut raw = Raw::connect(&server.socket).await;
    let f = target.frames(
        Some(Field::Literal(":authority", b"/opt/azurekms.socket")),
        None,
    );
    let outcome = raw.exchange(&f).await;
    assert!(
        !matches!(outcome, Outcome::Answer(ref s, _) if s == "0"),
        "h2 alone must refuse a path authority, got {outcome:?}"
    );
    // The same server answers a modern client.
    let mut raw = Raw::connect(&server.socket).await;
    let f = target.frames(Some(Field::Literal(":authority", b"localhost")), None);
    target.decode(&raw.exchange(&f).await);
}

#[tokio::test]
async fn kms_answers_a_socket_path_authority_in_every_hpack_form() {
    every_hpack_form_is_answered(Target::Kms).await;
}

#[tokio::test]
async fn csi_answers_a_socket_path_authority_in_every_hpack_form() {
    every_hpack_form_is_answered(Target::Csi).await;
}

#[tokio::test]
async fn kms_without_the_layer_fails_the_same_requests() {
    without_the_layer_a_path_authority_fails(Target::Kms).await;
}

#[tokio::test]
async fn csi_without_the_layer_fails_the_same_requests() {
    without_the_layer_a_path_authority_fails(Target::Csi).await;
}

#[tokio::test]
async fn malformed_frames_close_the_connection_with_the_right_error() {
    let server = Target::Kms.start(true).await;
    let p = &server;
    // CONTINUATION on another stream: PROTOCOL_ERROR.
    let mut raw = Raw::connect(&p.socket).await;
    let outcome = raw
        .exchange(|stream| {
            [
                frame(0x1, 0, stream, &[0x83]),
                frame(0x9, 0x4, stream + 2, &[0x86]),
            ]
            .concat()
        })
        .await;
    assert_eq!(outcome, Outcome::GoAway(0x1));
    // Undecodable HPACK: COMPRESSION_ERROR.
    let mut raw = Raw::connect(&p.socket).await;
    let outcome = raw
        .exchange(|stream| frame(0x1, 0x4, stream, &[0xbf, 0xff, 0xff, 0xff, 0x7f]))
        .await;
    assert_eq!(outcome, Outcome::GoAway(0x9));
    // A CONTINUATION flood: ENHANCE_YOUR_CALM, memory bounded.
    let mut raw = Raw::connect(&p.socket).await;
    let outcome = raw
        .exchange(|stream| {
            let mut out = frame(0x1, 0, stream, &[0x83]);
            // More CONTINUATION frames than the layer accepts (small, so the whole flood
            // is read before the connection closes and the GOAWAY is not lost to a reset).
            for _ in 0..70 {
                out.extend(frame(0x9, 0, stream, &[0x40; 16]));
            }
            out
        })
        .await;
    assert_eq!(outcome, Outcome::GoAway(0xb));
    // The server keeps serving new connections.
    let mut raw = Raw::connect(&p.socket).await;
    let f = Target::Kms.frames(Some(Field::Literal(":authority", b"/x.sock")), None);
    Target::Kms.decode(&raw.exchange(&f).await);
}
