//! `objectEncoding`: base64 and hex decoding, lenient about white space and padding.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use super::{ContentError, ObjectEncoding};

/// Standard alphabet, padding optional, non-zero trailing bits accepted (as Go does).
pub(super) const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(super) fn decode_content(
    content: Zeroizing<Vec<u8>>,
    encoding: ObjectEncoding,
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(content),
        ObjectEncoding::Base64 => decode_base64(&content, &BASE64_LENIENT, u8::is_ascii_whitespace)
            .map_err(ContentError::InvalidBase64),
        ObjectEncoding::Hex => decode_hex(&content),
    }
}

/// `input` without the bytes `skip` selects, in a buffer allocated once.
fn without(input: &[u8], skip: impl Fn(&u8) -> bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(input.len()));
    out.extend(input.iter().filter(|b| !skip(b)));
    out
}

pub(super) fn decode_base64(
    input: &[u8],
    engine: &GeneralPurpose,
    skip: impl Fn(&u8) -> bool,
) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let compact = without(input, skip);
    let mut out = Zeroizing::new(vec![0; base64::decoded_len_estimate(compact.len())]);
    let written = engine
        .decode_slice(&compact, &mut out)
        .map_err(|e| match e {
            base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(..)) => {
                "a character is outside the standard base64 alphabet"
            }
            base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidLength(_)) => {
                "the length is not a valid base64 length"
            }
            base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidLastSymbol(..)) => {
                "the last character is invalid"
            }
            base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidPadding) => {
                "the padding is invalid"
            }
            base64::DecodeSliceError::OutputSliceTooSmall => "internal buffer too small",
        })?;
    out.truncate(written);
    Ok(out)
}

fn decode_hex(input: &[u8]) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let compact = without(input, u8::is_ascii_whitespace);
    if compact.len() % 2 != 0 {
        return Err(ContentError::InvalidHex("odd number of hex digits"));
    }
    let mut out = Zeroizing::new(vec![0; compact.len() / 2]);
    hex::decode_to_slice(&*compact, &mut out)
        .map_err(|_| ContentError::InvalidHex("a character is not a hex digit"))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
