//! PEM as Go's `encoding/pem` reads and writes it: the encoder every output file goes
//! through, the decoder the `.crt`/`.key` split uses, and that split.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use super::encoding::decode_base64;

pub(super) const CERTIFICATE_TYPE: &[u8] = b"CERTIFICATE";
pub(super) const PRIVATE_KEY_TYPE: &[u8] = b"PRIVATE KEY";
pub(super) const PUBLIC_KEY_TYPE: &[u8] = b"PUBLIC KEY";

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits accepted.
const BASE64_GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

pub(super) fn concat(parts: &[Zeroizing<Vec<u8>>]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A PEM block as Go's `pem.Decode` returns it.
struct PemBlock {
    kind: Vec<u8>,
    /// Header lines; a repeated key keeps its last value, as in Go's map.
    headers: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: Zeroizing<Vec<u8>>,
}

/// Go's `pem.EncodeToMemory`: `Proc-Type` first, other headers sorted by key, then a blank
/// line; base64 in 64-character lines.
pub(super) fn go_pem_encode(
    kind: &[u8],
    headers: &BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: &[u8],
) -> Zeroizing<Vec<u8>> {
    const PROC_TYPE: &[u8] = b"Proc-Type";
    let body = Zeroizing::new(STANDARD.encode(bytes));
    let header_len: usize = headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 3)
        .sum::<usize>()
        + usize::from(!headers.is_empty());
    let capacity = 2 * (kind.len() + 16) + header_len + body.len() + body.len().div_ceil(64);
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"-----\n");
    let proc_type = headers.get_key_value(PROC_TYPE);
    let others = headers.iter().filter(|(k, _)| k.as_slice() != PROC_TYPE);
    for (key, value) in proc_type.into_iter().chain(others) {
        out.extend_from_slice(key);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    if !headers.is_empty() {
        out.push(b'\n');
    }
    for line in body.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"-----\n");
    out
}

/// The Go provider's `splitCertAndKey`: `CERTIFICATE` blocks to the first buffer, every other
/// block to the second, each re-encoded; text outside blocks is dropped.
pub(super) fn split_cert_and_key(content: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    let mut rest = content;
    while let Some((block, next)) = go_pem_decode(rest) {
        let encoded = go_pem_encode(&block.kind, &block.headers, &block.bytes);
        if block.kind == CERTIFICATE_TYPE {
            certs.push(encoded);
        } else {
            keys.push(encoded);
        }
        rest = next;
    }
    (concat(&certs), concat(&keys))
}

/// Go's `getLine`: the line up to `\n` (or the end) without a `\r` before the `\n` and without
/// trailing spaces and tabs, and how many bytes it used up including the `\n`.
fn go_get_line(data: &[u8]) -> (&[u8], usize) {
    let (mut end, consumed) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (i, i + 1),
        None => (data.len(), data.len()),
    };
    if consumed > end && end > 0 && data.get(end - 1) == Some(&b'\r') {
        end -= 1;
    }
    let line = data.get(..end).unwrap_or_default();
    let trimmed = line
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(0, |i| i + 1);
    (line.get(..trimmed).unwrap_or_default(), consumed)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Go's `bytes.TrimSpace` (Unicode white space, like Go's `unicode.IsSpace`).
fn go_trim_space(mut s: &[u8]) -> &[u8] {
    fn first_char(s: &[u8]) -> Option<char> {
        let head = s.get(..s.len().min(4))?;
        let valid = match std::str::from_utf8(head) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(head.get(..e.valid_up_to())?).ok()?,
        };
        valid.chars().next()
    }
    fn last_char(s: &[u8]) -> Option<char> {
        (1..=s.len().min(4)).find_map(|k| {
            let text = std::str::from_utf8(s.get(s.len() - k..)?).ok()?;
            let mut chars = text.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(c)
        })
    }
    while let Some(c) = first_char(s).filter(|c| c.is_whitespace()) {
        s = s.get(c.len_utf8()..).unwrap_or_default();
    }
    while let Some(c) = last_char(s).filter(|c| c.is_whitespace()) {
        s = s.get(..s.len() - c.len_utf8()).unwrap_or_default();
    }
    s
}

/// Go's `pem.Decode` (current algorithm): the next well-formed block and the text after its
/// END line. It finds the first `\n-----END `, takes the last `-----BEGIN ` before it that
/// starts a line, and on any defect moves past that END marker and tries again.
fn go_pem_decode(data: &[u8]) -> Option<(PemBlock, &[u8])> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"\n-----END ";
    const DASHES: &[u8] = b"-----";
    let mut window = 0;
    loop {
        let window_start = window;
        // `end` is the newline before `-----END `; `trailer` follows `-----END `.
        let end = window_start + find(data.get(window_start..)?, END)?;
        let trailer = end + END.len();
        window = trailer;

        let Some(begin) = rfind(data.get(window_start..end)?, BEGIN) else {
            continue;
        };
        if begin > 0 && data.get(window_start + begin - 1) != Some(&b'\n') {
            continue;
        }
        let mut pos = window_start + begin + BEGIN.len();
        let (type_line, consumed) = go_get_line(data.get(pos..)?);
        pos += consumed;
        let Some(kind) = type_line.strip_suffix(DASHES) else {
            continue;
        };

        let mut headers = BTreeMap::new();
        loop {
            let rest = data.get(pos..)?;
            if rest.is_empty() {
                return None;
            }
            let (line, consumed) = go_get_line(rest);
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                break;
            };
            let key = go_trim_space(line.get(..colon).unwrap_or_default());
            let value = go_trim_space(line.get(colon + 1..).unwrap_or_default());
            headers.insert(key.to_vec(), value.to_vec());
            pos += consumed;
        }
        // With headers, a newline must separate them from the END line.
        if !headers.is_empty() && pos > end {
            continue;
        }
        // The END line: the same type, five dashes, then only white space.
        let after_kind = trailer + kind.len() + DASHES.len();
        let Some(end_line) = data.get(trailer..after_kind) else {
            continue;
        };
        if !end_line.starts_with(kind) || !end_line.ends_with(DASHES) {
            continue;
        }
        if !go_get_line(data.get(after_kind..)?).0.is_empty() {
            continue;
        }
        let bytes = if pos < end {
            let body = data.get(pos..end)?;
            match decode_base64(body, &BASE64_GO_STD, |b| {
                matches!(b, b' ' | b'\t' | b'\r' | b'\n')
            }) {
                Ok(bytes) => bytes,
                Err(_) => continue,
            }
        } else {
            Zeroizing::new(Vec::new())
        };
        // Go skips the rest of the END line from inside `-----END `.
        let end_line_start = trailer - 1;
        let (_, consumed) = go_get_line(data.get(end_line_start..)?);
        let block = PemBlock {
            kind: kind.to_vec(),
            headers,
            bytes,
        };
        return Some((block, data.get(end_line_start + consumed..)?));
    }
}

#[cfg(test)]
mod tests;
