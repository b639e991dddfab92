//! The few DER pieces the conversions need: a strict reader of definite-length TLVs and
//! a writer that sizes every buffer before filling it.

use zeroize::Zeroizing;

pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;
pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const CONTEXT_0: u8 = 0xa0;
pub(super) const CONTEXT_1: u8 = 0xa1;

/// 1.2.840.113549.1.1.1
pub(super) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1
pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 (prime256v1)
pub(super) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34 (secp384r1)
pub(super) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// 1.3.132.0.35 (secp521r1)
pub(super) const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// Malformed DER (the callers say what was being read).
#[derive(Debug, Clone, Copy)]
pub(super) struct Malformed;

/// Reads TLVs one after another from a buffer.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV's tag and content. Only single-byte tags and minimal definite
    /// lengths up to 4 bytes are accepted.
    pub(super) fn read_any(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
        let (&tag, after) = self.rest.split_first().ok_or(Malformed)?;
        if tag & 0x1f == 0x1f {
            return Err(Malformed);
        }
        let (&first, after) = after.split_first().ok_or(Malformed)?;
        let (len, after) = if first < 0x80 {
            (usize::from(first), after)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err(Malformed);
            }
            let (octets, after) = after.split_at_checked(count).ok_or(Malformed)?;
            if octets.first() == Some(&0) {
                return Err(Malformed);
            }
            let len = octets
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return Err(Malformed);
            }
            (len, after)
        };
        let (content, after) = after.split_at_checked(len).ok_or(Malformed)?;
        self.rest = after;
        Ok((tag, content))
    }

    /// The next TLV's content, which must carry `tag`.
    pub(super) fn read(&mut self, tag: u8) -> Result<&'a [u8], Malformed> {
        match self.read_any()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(Malformed),
        }
    }

    /// A non-negative INTEGER's magnitude without leading zeros (empty for zero).
    pub(super) fn read_uint(&mut self) -> Result<&'a [u8], Malformed> {
        let content = self.read(INTEGER)?;
        match content.first() {
            None => Err(Malformed),
            Some(b) if *b >= 0x80 => Err(Malformed),
            Some(_) => Ok(strip_leading_zeros(content)),
        }
    }
}

/// `bytes` without leading zero bytes: the significant part of a big-endian magnitude.
pub(super) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn length_octets(len: usize) -> Vec<u8> {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => vec![short],
        _ => {
            let be = len.to_be_bytes();
            let significant = strip_leading_zeros(&be);
            let mut out = Vec::with_capacity(1 + significant.len());
            // At most size_of::<usize>() octets, so the count fits in 7 bits.
            out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0x7f));
            out.extend_from_slice(significant);
            out
        }
    }
}

/// One TLV whose content is `parts` concatenated, in a buffer allocated once.
pub(super) fn tlv(tag: u8, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len = parts.iter().map(|p| p.len()).sum();
    let header = length_octets(len);
    let mut out = Zeroizing::new(Vec::with_capacity(1 + header.len() + len));
    out.push(tag);
    out.extend_from_slice(&header);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A non-negative INTEGER from a big-endian magnitude (leading zeros ignored).
pub(super) fn uint(magnitude: &[u8]) -> Zeroizing<Vec<u8>> {
    let m = strip_leading_zeros(magnitude);
    match m.first() {
        None => tlv(INTEGER, &[&[0]]),
        Some(b) if *b >= 0x80 => tlv(INTEGER, &[&[0], m]),
        Some(_) => tlv(INTEGER, &[m]),
    }
}
