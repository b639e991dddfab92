//! What a mounted Key Vault object becomes on disk: the pure conversion from the values
//! fetched from Key Vault to file contents, byte for byte what
//! Azure/secrets-store-csi-driver-provider-azure writes for the same vault content.
//!
//! No I/O happens here: the caller fetches the object, calls [`render`] (or one of
//! [`render_secret`], [`render_key`], [`render_cert`]) and names the files: the object's path
//! (`objectAlias` or `objectName`, or `<alias>/<n>` with version history) plus each
//! [`OutputFile::suffix`].
//!
//! # Behaviour (the Go provider's, `pkg/provider/provider.go`)
//!
//! - `secret`: the value as is. When the secret backs a certificate (its bundle has `kid`):
//!   - `application/x-pem-file`: passed through unchanged (never reordered);
//!   - `application/x-pkcs12` with `objectFormat: pfx`: the value unchanged, i.e. the
//!     base64 text; `objectEncoding: base64` turns it into the PFX binary;
//!   - `application/x-pkcs12` otherwise: the PFX (empty password) becomes PEM: every private
//!     key as PKCS#8 `PRIVATE KEY` (re-encoded the way Go's `x509.MarshalPKCS8PrivateKey`
//!     does), then the certificates. With `construct_pem_chain` (the default) the
//!     certificates are linked child to parent by Authority Key Identifier = Subject Key
//!     Identifier; the chain starts at the first certificate that signs no other one and
//!     follows the links, and certificates off that chain are dropped. Without it they keep
//!     the PFX's order;
//!   - any other content type is an error;
//!   - with `write_cert_and_key_in_separate_files`, two more files come first: `.crt` (every
//!     `CERTIFICATE` block of the content) and `.key` (every other block), re-encoded as Go's
//!     `encoding/pem` does. For a PFX kept as PFX both are empty, as in Go.
//!
//!   `objectEncoding` then applies to every file of the object (base64 or hex decoding).
//! - `key`: the public key as PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo) for `RSA`,
//!   `RSA-HSM`, `EC` and `EC-HSM` keys on P-256, P-384 and P-521.
//! - `cert`: the certificate bundle's `cer` as one PEM `CERTIFICATE` (the leaf only).
//!
//! PEM text is always `-----BEGIN <type>-----\n`, base64 in 64-character lines each ending in
//! `\n`, `-----END <type>-----\n`.
//!
//! Our additions: `json_key` picks one key out of a JSON secret; base64 and hex decoding
//! tolerate ASCII whitespace, and base64 missing padding (Go refuses both).
//!
//! # Secrets
//!
//! File contents, decoded values and DER private keys live in [`Zeroizing`] buffers sized up
//! front, so no reallocation leaves a copy behind. Error messages and `Debug` output never
//! contain secret bytes: they name keys, content types and offsets, not values.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::agreement;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use p12_keystore::Pkcs12Archive;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use zeroize::{Zeroize as _, Zeroizing};

pub use crate::csi::params::{ObjectEncoding, ObjectFormat};

/// Content type of a certificate-backing secret holding PEM (key and chain).
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";
/// Content type of a certificate-backing secret holding a base64 PKCS#12 file.
pub const PFX_CONTENT_TYPE: &str = "application/x-pkcs12";
/// Suffix of the certificates file written with `write_cert_and_key_in_separate_files`.
pub const CERT_SUFFIX: &str = ".crt";
/// Suffix of the private key file written with `write_cert_and_key_in_separate_files`.
pub const KEY_SUFFIX: &str = ".key";

const CERTIFICATE_TYPE: &[u8] = b"CERTIFICATE";
const PRIVATE_KEY_TYPE: &[u8] = b"PRIVATE KEY";
const PUBLIC_KEY_TYPE: &[u8] = b"PUBLIC KEY";

/// A secret as Key Vault returned it.
pub struct SecretValue {
    /// The secret's `value`.
    pub value: Zeroizing<String>,
    /// The secret's `contentType`, if any.
    pub content_type: Option<String>,
    /// Whether the secret backs a certificate (its bundle has a non-empty `kid`).
    pub backs_certificate: bool,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field(
                "value",
                &format_args!("[redacted {} bytes]", self.value.len()),
            )
            .field("content_type", &self.content_type)
            .field("backs_certificate", &self.backs_certificate)
            .finish()
    }
}

/// The public parts of a key's JWK, base64url already decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// `kty`: `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: String,
    /// RSA modulus, big-endian.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent, big-endian.
    pub e: Option<Vec<u8>>,
    /// EC curve name: `P-256`, `P-384`, `P-521` (or `P-256K`, not supported).
    pub crv: Option<String>,
    /// EC x coordinate, big-endian.
    pub x: Option<Vec<u8>>,
    /// EC y coordinate, big-endian.
    pub y: Option<Vec<u8>>,
}

/// A certificate bundle's public certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertValue {
    /// The bundle's `cer`: the leaf certificate, DER.
    pub der: Vec<u8>,
}

/// An object fetched from Key Vault, by `objectType`.
#[derive(Debug)]
pub enum VaultObject {
    /// `objectType: secret`.
    Secret(SecretValue),
    /// `objectType: key`.
    Key(KeyValue),
    /// `objectType: cert`.
    Cert(CertValue),
}

/// Per-object options from the SecretProviderClass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// Our extension: write only this key of a JSON object secret.
    pub json_key: Option<String>,
}

/// Provider-wide flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderOptions {
    /// `--construct-pem-chain` (default true): order a converted PFX's certificates leaf to root.
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files` (default false): also write `.crt` and `.key`.
    pub write_cert_and_key_in_separate_files: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            construct_pem_chain: true,
            write_cert_and_key_in_separate_files: false,
        }
    }
}

/// One file to write for an object.
pub struct OutputFile {
    /// `None` for the object's own path; otherwise appended to it ([`CERT_SUFFIX`], [`KEY_SUFFIX`]).
    pub suffix: Option<&'static str>,
    /// The file's bytes.
    pub contents: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputFile")
            .field("suffix", &self.suffix)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// Why an object could not be turned into files. No variant carries secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// `objectEncoding: base64`, but the content is not base64.
    #[error("content is not valid base64: {0}")]
    InvalidBase64(&'static str),
    /// `objectEncoding: hex`, but the content is not hex.
    #[error("content is not valid hex: {0}")]
    InvalidHex(&'static str),
    /// A certificate-backing secret without a content type.
    #[error("certificate-backing secret has no content type")]
    MissingContentType,
    /// A certificate-backing secret whose content type is neither PEM nor PKCS#12.
    #[error(
        "certificate-backing secret has unknown content type '{0}' (expected {PEM_CONTENT_TYPE} or {PFX_CONTENT_TYPE})"
    )]
    UnknownContentType(String),
    /// The PKCS#12 secret is not base64.
    #[error("PKCS#12 secret value is not valid base64")]
    PfxNotBase64,
    /// The PKCS#12 file's MAC or decryption failed with the empty password.
    #[error("PKCS#12 file is not readable with an empty password (wrong password or corrupt)")]
    PfxPassword,
    /// The PKCS#12 file is malformed or uses an unsupported algorithm.
    #[error("PKCS#12 file cannot be read: {0}")]
    PfxMalformed(&'static str),
    /// The PKCS#12 file holds bags the conversion does not handle.
    #[error("PKCS#12 file holds {0}, which cannot be converted to PEM")]
    PfxUnsupportedBag(&'static str),
    /// A private key in the PKCS#12 file is malformed.
    #[error("private key in the PKCS#12 file is invalid: {0}")]
    InvalidPrivateKey(&'static str),
    /// A private key in the PKCS#12 file is of an unsupported type or curve.
    #[error("private key in the PKCS#12 file is not supported: {0}")]
    UnsupportedPrivateKey(&'static str),
    /// A certificate in the PKCS#12 file cannot be parsed (while ordering the chain).
    #[error("certificate {index} in the PKCS#12 file is invalid: {reason}")]
    InvalidCertificate {
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Chain ordering found no certificate that signs no other one (none, or all in a loop).
    #[error("no leaf certificate found while ordering the certificate chain")]
    NoLeafCertificate,
    /// Following issuer links went round in a loop.
    #[error("constructing the certificate chain resulted in a cycle")]
    ChainCycle,
    /// `json_key` was given for an object it cannot apply to.
    #[error("json key '{0}' can only be used with plain secrets, not certificates or keys")]
    JsonKeyNotApplicable(String),
    /// `json_key` was given but the content is not JSON.
    #[error("secret is not valid JSON (line {line}, column {column}); cannot extract key '{key}'")]
    InvalidJson {
        /// The requested key.
        key: String,
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// `json_key` was given but the JSON is not an object.
    #[error("secret JSON is not an object; cannot extract key '{0}'")]
    NotAJsonObject(String),
    /// The JSON object has no such key.
    #[error("secret JSON object has no key '{0}'")]
    MissingJsonKey(String),
    /// The key's `kty` cannot be written as a public key.
    #[error("key type '{0}' is not supported (expected RSA, RSA-HSM, EC or EC-HSM)")]
    UnsupportedKeyType(String),
    /// A JWK field the key type needs is absent.
    #[error("key has no '{0}' parameter")]
    MissingKeyParameter(&'static str),
    /// A JWK field has an unusable value.
    #[error("key parameter '{param}' is invalid: {reason}")]
    InvalidKeyParameter {
        /// The JWK field.
        param: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The EC key's curve is not P-256, P-384 or P-521.
    #[error("curve '{0}' is not supported (expected P-256, P-384 or P-521)")]
    UnsupportedCurve(String),
    /// The EC key's x and y are not a point on its curve.
    #[error("EC key coordinates are not a point on the curve")]
    InvalidEcPoint,
}

/// Renders any object. Key and certificate objects ignore `format` and `encoding`, as the Go
/// provider does; `json_key` applies only to plain secrets.
pub fn render(
    object: &VaultObject,
    options: &ObjectOptions,
    provider: &ProviderOptions,
) -> Result<Vec<OutputFile>, ContentError> {
    let not_for_json = |options: &ObjectOptions| match &options.json_key {
        Some(key) => Err(ContentError::JsonKeyNotApplicable(key.clone())),
        None => Ok(()),
    };
    match object {
        VaultObject::Secret(secret) => render_secret(secret, options, provider),
        VaultObject::Key(key) => {
            not_for_json(options)?;
            Ok(vec![render_key(key)?])
        }
        VaultObject::Cert(cert) => {
            not_for_json(options)?;
            Ok(vec![render_cert(cert)])
        }
    }
}

/// Renders a secret: the object's file, preceded by `.crt` and `.key` files when the secret
/// backs a certificate and `write_cert_and_key_in_separate_files` is set (the Go order).
pub fn render_secret(
    secret: &SecretValue,
    options: &ObjectOptions,
    provider: &ProviderOptions,
) -> Result<Vec<OutputFile>, ContentError> {
    let value = secret.value.as_bytes();
    let mut files: Vec<(Option<&'static str>, Zeroizing<Vec<u8>>)> = Vec::with_capacity(3);
    if secret.backs_certificate {
        if let Some(key) = &options.json_key {
            return Err(ContentError::JsonKeyNotApplicable(key.clone()));
        }
        let content_type = secret
            .content_type
            .as_deref()
            .ok_or(ContentError::MissingContentType)?;
        let main = match content_type {
            PEM_CONTENT_TYPE => Zeroizing::new(value.to_vec()),
            PFX_CONTENT_TYPE if options.format == ObjectFormat::Pfx => {
                Zeroizing::new(value.to_vec())
            }
            PFX_CONTENT_TYPE => pfx_to_pem(value, provider.construct_pem_chain)?,
            other => return Err(ContentError::UnknownContentType(other.to_owned())),
        };
        if provider.write_cert_and_key_in_separate_files {
            let (certs, keys) = split_cert_and_key(&main);
            files.push((Some(CERT_SUFFIX), certs));
            files.push((Some(KEY_SUFFIX), keys));
        }
        files.push((None, main));
    } else {
        files.push((None, Zeroizing::new(value.to_vec())));
    }

    let mut out = Vec::with_capacity(files.len());
    for (suffix, contents) in files {
        let mut contents = decode_content(contents, options.encoding)?;
        if suffix.is_none()
            && let Some(key) = &options.json_key
        {
            contents = extract_json_key(&contents, key)?;
        }
        out.push(OutputFile { suffix, contents });
    }
    Ok(out)
}

/// Renders a key's public part as PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo).
pub fn render_key(key: &KeyValue) -> Result<OutputFile, ContentError> {
    let spki = match key.kty.as_str() {
        "RSA" | "RSA-HSM" => rsa_spki(key)?,
        "EC" | "EC-HSM" => ec_spki(key)?,
        other => return Err(ContentError::UnsupportedKeyType(other.to_owned())),
    };
    Ok(OutputFile {
        suffix: None,
        contents: go_pem_encode(PUBLIC_KEY_TYPE, &BTreeMap::new(), &spki),
    })
}

/// Renders a certificate bundle's `cer` as one PEM `CERTIFICATE`. Like the Go provider, the
/// bytes are not checked.
pub fn render_cert(cert: &CertValue) -> OutputFile {
    OutputFile {
        suffix: None,
        contents: go_pem_encode(CERTIFICATE_TYPE, &BTreeMap::new(), &cert.der),
    }
}

// ---------------------------------------------------------------------------------------------
// objectEncoding and json_key

/// Standard alphabet, padding optional, non-zero trailing bits accepted (as Go does).
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits accepted.
const BASE64_GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

fn decode_content(
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

fn decode_base64(
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

/// The value of `key` in the JSON object `content`: a string as its raw text, anything else as
/// compact JSON. The parsed document is scrubbed before it is dropped.
fn extract_json_key(content: &[u8], key: &str) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let document: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| ContentError::InvalidJson {
            key: key.to_owned(),
            line: e.line(),
            column: e.column(),
        })?;
    let serde_json::Value::Object(mut object) = document else {
        scrub_json(document);
        return Err(ContentError::NotAJsonObject(key.to_owned()));
    };
    let found = object.remove(key);
    scrub_json(serde_json::Value::Object(object));
    match found {
        None => Err(ContentError::MissingJsonKey(key.to_owned())),
        Some(serde_json::Value::String(text)) => Ok(Zeroizing::new(text.into_bytes())),
        Some(other) => {
            // Compact JSON is rarely longer than its source; the margin covers number
            // re-formatting so the buffer is not reallocated.
            let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 64));
            let written = serde_json::to_writer(&mut *out, &other);
            scrub_json(other);
            written.map_err(|_| ContentError::NotAJsonObject(key.to_owned()))?;
            Ok(out)
        }
    }
}

/// Zeroizes every string (and object key) of a parsed JSON document.
fn scrub_json(value: serde_json::Value) {
    match value {
        serde_json::Value::String(mut text) => text.zeroize(),
        serde_json::Value::Array(items) => items.into_iter().for_each(scrub_json),
        serde_json::Value::Object(map) => {
            for (mut key, item) in map {
                key.zeroize();
                scrub_json(item);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// PKCS#12 to PEM

/// The Go provider's `decodePKCS12`: every key block, then the certificate blocks.
fn pfx_to_pem(value: &[u8], construct_chain: bool) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let pfx = decode_base64(value, &BASE64_LENIENT, u8::is_ascii_whitespace)
        .map_err(|_| ContentError::PfxNotBase64)?;
    let archive = Pkcs12Archive::from_pkcs12(&pfx, "").map_err(pfx_error)?;
    if !archive.secrets.is_empty() {
        return Err(ContentError::PfxUnsupportedBag("secret bags"));
    }
    let mut blocks = Vec::with_capacity(archive.keys.len() + archive.certs.len());
    for bag in &archive.keys {
        let pkcs8 = canonical_pkcs8(bag.key.as_der())?;
        blocks.push(go_pem_encode(PRIVATE_KEY_TYPE, &BTreeMap::new(), &pkcs8));
    }
    let certs: Vec<&[u8]> = archive.certs.iter().map(|bag| bag.cert.as_der()).collect();
    let certs = if construct_chain {
        order_chain(&certs)?
    } else {
        certs
    };
    for der in certs {
        blocks.push(go_pem_encode(CERTIFICATE_TYPE, &BTreeMap::new(), der));
    }
    Ok(concat(&blocks))
}

fn pfx_error(e: p12_keystore::error::Error) -> ContentError {
    use p12_keystore::error::Error;
    match e {
        Error::MacError(_) | Error::UnpadError => ContentError::PfxPassword,
        Error::InvalidVersion => ContentError::PfxMalformed("unsupported PFX version"),
        Error::UnsupportedContentType => ContentError::PfxMalformed("unsupported content type"),
        Error::UnsupportedCertificateType => {
            ContentError::PfxMalformed("certificate bag is not an X.509 certificate")
        }
        Error::X509Error(_) => ContentError::PfxMalformed("a certificate is not valid X.509"),
        Error::UnsupportedEncryptionScheme | Error::UnsupportedMacAlgorithm => {
            ContentError::PfxMalformed("unsupported encryption or MAC algorithm")
        }
        Error::InvalidPrivateKey => ContentError::PfxMalformed("a private key is not PKCS#8"),
        Error::InvalidParameters => {
            ContentError::PfxMalformed("invalid algorithm parameters or iteration count")
        }
        _ => ContentError::PfxMalformed("malformed PKCS#12 structure"),
    }
}

/// Orders certificates as the Go provider's `fetchCertChains`: certificate `i`'s parent is
/// the first other certificate whose Subject Key Identifier equals `i`'s Authority Key
/// Identifier (pairs where both are absent never match); the chain starts at the first
/// certificate that is nobody's parent. Certificates off that chain are dropped.
fn order_chain<'c>(certs: &[&'c [u8]]) -> Result<Vec<&'c [u8]>, ContentError> {
    let ids = certs
        .iter()
        .enumerate()
        .map(|(index, der)| {
            key_identifiers(der)
                .map_err(|reason| ContentError::InvalidCertificate { index, reason })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut parent: Vec<Option<usize>> = vec![None; ids.len()];
    let mut is_parent = vec![false; ids.len()];
    for (i, (child_aki, _)) in ids.iter().enumerate() {
        for (j, (_, candidate_ski)) in ids.iter().enumerate() {
            if i == j || (child_aki.is_none() && candidate_ski.is_none()) {
                continue;
            }
            if child_aki.as_deref().unwrap_or_default()
                == candidate_ski.as_deref().unwrap_or_default()
            {
                if let Some(flag) = is_parent.get_mut(j) {
                    *flag = true;
                }
                if let Some(link) = parent.get_mut(i) {
                    *link = Some(j);
                }
                break;
            }
        }
    }

    let leaf = is_parent
        .iter()
        .position(|p| !p)
        .ok_or(ContentError::NoLeafCertificate)?;
    let mut chain = Vec::with_capacity(certs.len());
    let mut next = Some(leaf);
    while let Some(i) = next {
        if chain.len() == certs.len() {
            return Err(ContentError::ChainCycle);
        }
        chain.extend(certs.get(i).copied());
        next = parent.get(i).copied().flatten();
    }
    Ok(chain)
}

/// `(authority key identifier, subject key identifier)` of a DER certificate.
type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);

fn key_identifiers(der: &[u8]) -> Result<KeyIds, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing data after the certificate".to_owned());
    }
    let mut aki = None;
    let mut ski = None;
    for ext in cert.extensions() {
        if ext.oid == OID_X509_EXT_SUBJECT_KEY_IDENTIFIER {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                _ => return Err("malformed subject key identifier".to_owned()),
            }
        } else if ext.oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(id) => {
                    aki = id.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => return Err("malformed authority key identifier".to_owned()),
            }
        }
    }
    Ok((aki, ski))
}

/// Re-encodes a PKCS#8 private key exactly as Go's `x509.MarshalPKCS8PrivateKey` would after
/// parsing it: version 0, no attributes; RSA with NULL parameters and a two-prime PKCS#1 key;
/// EC with the named curve in the algorithm and an inner SEC 1 key holding the scalar padded
/// to the order's length and the public point (recomputed), without parameters.
fn canonical_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed PKCS#8 structure");
    let mut outer = der::Reader::new(der);
    let mut info = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    info.read(der::INTEGER).map_err(malformed)?;
    let mut algorithm = der::Reader::new(info.read(der::SEQUENCE).map_err(malformed)?);
    let private_key = info.read(der::OCTET_STRING).map_err(malformed)?;
    // Attributes and a v2 public key may follow; Go ignores them.
    let oid = algorithm.read(der::OID).map_err(malformed)?;
    let params = if algorithm.is_empty() {
        None
    } else {
        Some(algorithm.read_any().map_err(malformed)?)
    };
    if oid == der::OID_RSA_ENCRYPTION {
        match params {
            None | Some((der::NULL, [])) => rsa_pkcs8(private_key),
            Some(_) => Err(ContentError::InvalidPrivateKey(
                "RSA key with illegal algorithm parameters",
            )),
        }
    } else if oid == der::OID_EC_PUBLIC_KEY {
        let curve = match params {
            Some((der::OID, curve)) => Some(curve),
            _ => None,
        };
        ec_pkcs8(curve, private_key)
    } else {
        Err(ContentError::UnsupportedPrivateKey(
            "only RSA and EC (P-256, P-384, P-521) keys can be converted",
        ))
    }
}

fn rsa_pkcs8(pkcs1: &[u8]) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed PKCS#1 RSA key");
    let mut outer = der::Reader::new(pkcs1);
    let mut key = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    if !outer.is_empty() {
        return Err(ContentError::InvalidPrivateKey(
            "trailing data after the RSA key",
        ));
    }
    match key.read_uint().map_err(malformed)? {
        [] => {}
        [1] => {
            return Err(ContentError::UnsupportedPrivateKey("multi-prime RSA keys"));
        }
        _ => return Err(ContentError::InvalidPrivateKey("unknown RSA key version")),
    }
    // n, e, d, p, q, dp, dq, qinv.
    let mut fields: [&[u8]; 8] = [&[]; 8];
    for field in &mut fields {
        *field = key.read_uint().map_err(malformed)?;
    }
    if !key.is_empty() {
        return Err(ContentError::UnsupportedPrivateKey("multi-prime RSA keys"));
    }
    let [n, e, d, p, q, ..] = fields;
    if [n, e, d, p, q].iter().any(|v| v.is_empty()) {
        return Err(ContentError::InvalidPrivateKey(
            "RSA key contains a zero value",
        ));
    }
    let integers: Vec<Zeroizing<Vec<u8>>> = std::iter::once(&[][..])
        .chain(fields)
        .map(der::uint)
        .collect();
    let parts: Vec<&[u8]> = integers.iter().map(|i| i.as_slice()).collect();
    let inner = der::tlv(der::SEQUENCE, &parts);
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION]),
            &[der::NULL, 0],
        ],
    );
    Ok(pkcs8_envelope(&algorithm, &inner))
}

fn ec_pkcs8(
    curve_from_algorithm: Option<&[u8]>,
    sec1: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let malformed = |_| ContentError::InvalidPrivateKey("malformed SEC 1 EC key");
    let mut outer = der::Reader::new(sec1);
    let mut key = der::Reader::new(outer.read(der::SEQUENCE).map_err(malformed)?);
    if key.read_uint().map_err(malformed)? != [1] {
        return Err(ContentError::InvalidPrivateKey(
            "unknown EC private key version",
        ));
    }
    let scalar = key.read(der::OCTET_STRING).map_err(malformed)?;
    let mut curve_from_key = None;
    while !key.is_empty() {
        let (tag, content) = key.read_any().map_err(malformed)?;
        if tag == der::CONTEXT_0 {
            curve_from_key = Some(
                der::Reader::new(content)
                    .read(der::OID)
                    .map_err(malformed)?,
            );
        }
        // [1] public key: Go recomputes it from the scalar, and so do we.
    }
    let curve_oid = curve_from_algorithm
        .or(curve_from_key)
        .ok_or(ContentError::InvalidPrivateKey("EC key names no curve"))?;
    let curve = Curve::by_oid(curve_oid).ok_or(ContentError::UnsupportedPrivateKey(
        "elliptic curve other than P-256, P-384 or P-521",
    ))?;

    // Extra leading zeros are tolerated, missing ones restored (as Go does).
    let mut scalar = scalar;
    while scalar.len() > curve.scalar_len {
        match scalar.split_first() {
            Some((0, rest)) => scalar = rest,
            _ => {
                return Err(ContentError::InvalidPrivateKey(
                    "EC private key longer than the curve order",
                ));
            }
        }
    }
    let mut padded = Zeroizing::new(vec![0; curve.scalar_len]);
    if let Some(tail) = padded.get_mut(curve.scalar_len - scalar.len()..) {
        tail.copy_from_slice(scalar);
    }
    let private = agreement::PrivateKey::from_private_key(curve.agreement, &padded)
        .map_err(|_| ContentError::InvalidPrivateKey("EC private key out of range"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| ContentError::InvalidPrivateKey("EC public key cannot be computed"))?;

    let inner = der::tlv(
        der::SEQUENCE,
        &[
            &der::uint(&[1]),
            &der::tlv(der::OCTET_STRING, &[&padded]),
            &der::tlv(
                der::CONTEXT_1,
                &[&der::tlv(der::BIT_STRING, &[&[0], public.as_ref()])],
            ),
        ],
    );
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
            &der::tlv(der::OID, &[curve.oid]),
        ],
    );
    Ok(pkcs8_envelope(&algorithm, &inner))
}

/// `PrivateKeyInfo { version 0, algorithm, privateKey }`.
fn pkcs8_envelope(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    der::tlv(
        der::SEQUENCE,
        &[
            &der::uint(&[]),
            algorithm,
            &der::tlv(der::OCTET_STRING, &[private_key]),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Public keys

/// An elliptic curve Key Vault keys and certificates can use.
struct Curve {
    /// JWK `crv`.
    name: &'static str,
    /// Named-curve OID, DER content octets.
    oid: &'static [u8],
    /// Bytes of a field element (x, y).
    field_len: usize,
    /// Bytes of a private scalar: (bit length of the order + 7) / 8.
    scalar_len: usize,
    agreement: &'static agreement::Algorithm,
}

const CURVES: [Curve; 3] = [
    Curve {
        name: "P-256",
        oid: der::OID_P256,
        field_len: 32,
        scalar_len: 32,
        agreement: &agreement::ECDH_P256,
    },
    Curve {
        name: "P-384",
        oid: der::OID_P384,
        field_len: 48,
        scalar_len: 48,
        agreement: &agreement::ECDH_P384,
    },
    Curve {
        name: "P-521",
        oid: der::OID_P521,
        field_len: 66,
        scalar_len: 66,
        agreement: &agreement::ECDH_P521,
    },
];

impl Curve {
    fn by_name(name: &str) -> Option<&'static Self> {
        CURVES.iter().find(|c| c.name == name)
    }

    fn by_oid(oid: &[u8]) -> Option<&'static Self> {
        CURVES.iter().find(|c| c.oid == oid)
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn rsa_spki(key: &KeyValue) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let n = strip_leading_zeros(
        key.n
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("n"))?,
    );
    let e = strip_leading_zeros(
        key.e
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("e"))?,
    );
    if n.is_empty() {
        return Err(ContentError::InvalidKeyParameter {
            param: "n",
            reason: "the modulus is empty or zero",
        });
    }
    // Go keeps the exponent in an int64.
    if e.is_empty() || e.len() > 8 || (e.len() == 8 && e.first().is_some_and(|b| *b >= 0x80)) {
        return Err(ContentError::InvalidKeyParameter {
            param: "e",
            reason: "the exponent must be a positive 63-bit integer",
        });
    }
    let public_key = der::tlv(der::SEQUENCE, &[&der::uint(n), &der::uint(e)]);
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION]),
            &[der::NULL, 0],
        ],
    );
    Ok(der::tlv(
        der::SEQUENCE,
        &[&algorithm, &der::tlv(der::BIT_STRING, &[&[0], &public_key])],
    ))
}

fn ec_spki(key: &KeyValue) -> Result<Zeroizing<Vec<u8>>, ContentError> {
    let name = key
        .crv
        .as_deref()
        .ok_or(ContentError::MissingKeyParameter("crv"))?;
    let curve =
        Curve::by_name(name).ok_or_else(|| ContentError::UnsupportedCurve(name.to_owned()))?;
    let x = strip_leading_zeros(
        key.x
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("x"))?,
    );
    let y = strip_leading_zeros(
        key.y
            .as_deref()
            .ok_or(ContentError::MissingKeyParameter("y"))?,
    );
    if x.len() > curve.field_len || y.len() > curve.field_len {
        return Err(ContentError::InvalidEcPoint);
    }
    // 04 || x || y, each coordinate left-padded to the field size.
    let mut point = vec![0; 1 + 2 * curve.field_len];
    if let Some(first) = point.first_mut() {
        *first = 0x04;
    }
    let x_end = 1 + curve.field_len;
    for (coordinate, end) in [(x, x_end), (y, point.len())] {
        if let Some(slot) = point.get_mut(end - coordinate.len()..end) {
            slot.copy_from_slice(coordinate);
        }
    }
    agreement::ParsedPublicKey::try_from(agreement::UnparsedPublicKey::new(
        curve.agreement,
        &point,
    ))
    .map_err(|_| ContentError::InvalidEcPoint)?;
    let algorithm = der::tlv(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
            &der::tlv(der::OID, &[curve.oid]),
        ],
    );
    Ok(der::tlv(
        der::SEQUENCE,
        &[&algorithm, &der::tlv(der::BIT_STRING, &[&[0], &point])],
    ))
}

// ---------------------------------------------------------------------------------------------
// PEM as Go's encoding/pem reads and writes it

fn concat(parts: &[Zeroizing<Vec<u8>>]) -> Zeroizing<Vec<u8>> {
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
fn go_pem_encode(
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
fn split_cert_and_key(content: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
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

// ---------------------------------------------------------------------------------------------
// DER

mod der {
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
                Some(_) => Ok(super::strip_leading_zeros(content)),
            }
        }
    }

    fn length_octets(len: usize) -> Vec<u8> {
        match u8::try_from(len) {
            Ok(short) if short < 0x80 => vec![short],
            _ => {
                let be = len.to_be_bytes();
                let significant = super::strip_leading_zeros(&be);
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
        let m = super::strip_leading_zeros(magnitude);
        match m.first() {
            None => tlv(INTEGER, &[&[0]]),
            Some(b) if *b >= 0x80 => tlv(INTEGER, &[&[0], m]),
            Some(_) => tlv(INTEGER, &[m]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    };
    use mock_vault::x509::{self, CertRequest, KeyKind, TestCa};
    use p12_keystore::{
        Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
        PrivateKeyChain,
    };
    use x509_parser::prelude::FromDer as _;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;

    use super::*;

    /// A marker that must never appear in an error message or `Debug` output.
    const MARKER: &str = "s3cr3t-Marker-9f1c";

    fn rsa_key() -> &'static [u8] {
        static KEY: OnceLock<Vec<u8>> = OnceLock::new();
        KEY.get_or_init(|| {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let der: Pkcs8V1Der<'_> = key.as_der().unwrap();
            der.as_ref().to_vec()
        })
    }

    fn ec_key(kind: KeyKind) -> Vec<u8> {
        let alg = match kind {
            KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyKind::EcP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            KeyKind::EcP521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
            KeyKind::Rsa => unreachable!(),
        };
        EcdsaKeyPair::generate(alg)
            .unwrap()
            .to_pkcs8v1()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn ca() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(|| TestCa::generate("Content Test").unwrap())
    }

    /// Leaf, intermediate, root.
    fn issue(key: &[u8], kind: KeyKind, issuer: Option<&TestCa>) -> Vec<Vec<u8>> {
        let req = CertRequest {
            subject: "CN=web.example.com, O=Contoso".into(),
            dns_names: vec!["web.example.com".into()],
            validity_months: 6,
            ..Default::default()
        };
        x509::issue(&req, key, kind, issuer).unwrap().chain
    }

    fn rsa_chain() -> &'static [Vec<u8>] {
        static CHAIN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        CHAIN.get_or_init(|| issue(rsa_key(), KeyKind::Rsa, Some(ca())))
    }

    /// A PFX the way Key Vault writes it (3DES, SHA-1 MAC, 2000 iterations), keeping `certs`
    /// in the given order. Without a key, the certificates are stored as trusted entries.
    fn build_pfx(key: Option<&[u8]>, certs: &[&[u8]], password: &str) -> Vec<u8> {
        let certs: Vec<Certificate> = certs
            .iter()
            .map(|der| Certificate::from_der(der).unwrap())
            .collect();
        let mut store = KeyStore::new();
        match key {
            Some(key) => store.add_entry(
                "entry",
                KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
                    &b"local-key-id"[..],
                    PrivateKey::from_der(key).unwrap(),
                    certs,
                )),
            ),
            None => {
                for (i, cert) in certs.into_iter().enumerate() {
                    store.add_entry(&format!("cert{i}"), KeyStoreEntry::Certificate(cert));
                }
            }
        }
        store
            .writer(password)
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(2000)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(2000)
            .write()
            .unwrap()
    }

    fn cert_secret(value: String, content_type: &str) -> SecretValue {
        SecretValue {
            value: Zeroizing::new(value),
            content_type: Some(content_type.to_owned()),
            backs_certificate: true,
        }
    }

    fn pfx_secret(pfx: &[u8]) -> SecretValue {
        cert_secret(STANDARD.encode(pfx), PFX_CONTENT_TYPE)
    }

    fn plain_secret(value: &str) -> SecretValue {
        SecretValue {
            value: Zeroizing::new(value.to_owned()),
            content_type: None,
            backs_certificate: false,
        }
    }

    /// PEM as an independent encoder (the `pem` crate) writes it.
    fn pem_block(tag: &str, der: &[u8]) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new(tag, der.to_vec()), config)
    }

    fn with_chain(options: &ProviderOptions, construct_pem_chain: bool) -> ProviderOptions {
        ProviderOptions {
            construct_pem_chain,
            ..*options
        }
    }

    /// The single file a render must produce.
    fn only(files: Vec<OutputFile>) -> Vec<u8> {
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].suffix, None);
        files[0].contents.to_vec()
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn secret_files(secret: &SecretValue, options: &ObjectOptions) -> Vec<OutputFile> {
        render_secret(secret, options, &ProviderOptions::default()).unwrap()
    }

    #[test]
    fn pfx_becomes_pkcs8_key_then_chain_leaf_to_root_even_when_shuffled() {
        let [leaf, intermediate, root] = rsa_chain() else {
            panic!("expected three certificates")
        };
        let pfx = build_pfx(Some(rsa_key()), &[root, leaf, intermediate], "");
        let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));

        let expected = [
            pem_block("PRIVATE KEY", rsa_key()),
            pem_block("CERTIFICATE", leaf),
            pem_block("CERTIFICATE", intermediate),
            pem_block("CERTIFICATE", root),
        ]
        .concat();
        assert_eq!(text(&main), expected);
        assert!(text(&main).ends_with("-----END CERTIFICATE-----\n"));

        let parsed = x509::parse_pem_bundle(text(&main)).unwrap();
        assert_eq!(parsed.key_pkcs8.as_slice(), rsa_key());
        assert_eq!(parsed.kind, KeyKind::Rsa);
        assert_eq!(
            parsed.chain,
            [leaf.clone(), intermediate.clone(), root.clone()]
        );
    }

    #[test]
    fn without_construct_pem_chain_certificates_keep_the_pfx_order() {
        let [leaf, intermediate, root] = rsa_chain() else {
            panic!("expected three certificates")
        };
        let pfx = build_pfx(Some(rsa_key()), &[root, leaf, intermediate], "");
        let provider = with_chain(&ProviderOptions::default(), false);
        let files = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider);
        let expected = [
            pem_block("PRIVATE KEY", rsa_key()),
            pem_block("CERTIFICATE", root),
            pem_block("CERTIFICATE", leaf),
            pem_block("CERTIFICATE", intermediate),
        ]
        .concat();
        assert_eq!(text(&only(files.unwrap())), expected);
    }

    #[test]
    fn ec_keys_on_every_curve_convert_to_the_canonical_pkcs8() {
        for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::EcP521] {
            let key = ec_key(kind);
            let chain = issue(&key, kind, None);
            let pfx = build_pfx(Some(&key), &[&chain[0]], "");
            let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
            // aws-lc writes EC PKCS#8 the way Go does: curve in the algorithm, an inner
            // SEC 1 key with the public point and without parameters.
            let expected = [
                pem_block("PRIVATE KEY", &key),
                pem_block("CERTIFICATE", &chain[0]),
            ];
            assert_eq!(text(&main), expected.concat(), "{kind}");
            let parsed = x509::parse_pem_bundle(text(&main)).unwrap();
            assert_eq!(parsed.kind, kind);
        }
    }

    /// `d` = 0x11 repeated, a valid P-256 scalar.
    fn p256_scalar() -> [u8; 32] {
        [0x11; 32]
    }

    fn canonical_p256() -> Vec<u8> {
        let key =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &p256_scalar()).unwrap();
        let der: Pkcs8V1Der<'_> = key.as_der().unwrap();
        der.as_ref().to_vec()
    }

    #[test]
    fn non_canonical_private_keys_are_re_encoded_as_go_does() {
        let attributes = der::tlv(der::CONTEXT_0, &[&der::tlv(der::SEQUENCE, &[])]);
        let p256_oid = der::tlv(der::OID, &[der::OID_P256]);
        let ec_algorithm = |params: &[u8]| {
            der::tlv(
                der::SEQUENCE,
                &[&der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]), params],
            )
        };
        let sec1 = |scalar: &[u8], with_params: bool| {
            let version = der::uint(&[1]);
            let scalar = der::tlv(der::OCTET_STRING, &[scalar]);
            let params = der::tlv(der::CONTEXT_0, &[&p256_oid]);
            let parts: Vec<&[u8]> = if with_params {
                vec![&version, &scalar, &params]
            } else {
                vec![&version, &scalar]
            };
            der::tlv(der::SEQUENCE, &parts)
        };
        let pkcs8 = |algorithm: &[u8], private: &[u8], extra: &[u8]| {
            der::tlv(
                der::SEQUENCE,
                &[
                    &der::uint(&[]),
                    algorithm,
                    &der::tlv(der::OCTET_STRING, &[private]),
                    extra,
                ],
            )
        };
        let expected = canonical_p256();

        // Curve inside the SEC 1 key, no public key, attributes: all normalised away.
        let odd = pkcs8(&ec_algorithm(&[]), &sec1(&p256_scalar(), true), &attributes);
        assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), expected);
        // A scalar with an extra leading zero, and one with its leading zero removed.
        let mut padded = vec![0];
        padded.extend_from_slice(&p256_scalar());
        let odd = pkcs8(&ec_algorithm(&p256_oid), &sec1(&padded, false), &[]);
        assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), expected);
        let mut short_scalar = [0u8; 32];
        short_scalar[1..].copy_from_slice(&[0x22; 31]);
        let short = pkcs8(
            &ec_algorithm(&p256_oid),
            &sec1(&short_scalar[1..], false),
            &[],
        );
        let full =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &short_scalar).unwrap();
        let full: Pkcs8V1Der<'_> = full.as_der().unwrap();
        assert_eq!(canonical_pkcs8(&short).unwrap().as_slice(), full.as_ref());

        // RSA without NULL parameters and with attributes.
        let mut reader = der::Reader::new(rsa_key());
        let mut info = der::Reader::new(reader.read(der::SEQUENCE).unwrap());
        info.read(der::INTEGER).unwrap();
        info.read(der::SEQUENCE).unwrap();
        let pkcs1 = info.read(der::OCTET_STRING).unwrap();
        let bare = der::tlv(
            der::SEQUENCE,
            &[&der::tlv(der::OID, &[der::OID_RSA_ENCRYPTION])],
        );
        let odd = pkcs8(&bare, pkcs1, &attributes);
        assert_eq!(canonical_pkcs8(&odd).unwrap().as_slice(), rsa_key());

        // Through a whole PFX, too.
        let odd = pkcs8(&ec_algorithm(&[]), &sec1(&p256_scalar(), true), &attributes);
        let leaf = issue(&canonical_p256(), KeyKind::EcP256, None);
        let pfx = build_pfx(Some(&odd), &[&leaf[0]], "");
        let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
        let expected = [
            pem_block("PRIVATE KEY", &expected),
            pem_block("CERTIFICATE", &leaf[0]),
        ];
        assert_eq!(text(&main), expected.concat());
    }

    #[test]
    fn hostile_private_keys_are_errors() {
        let p224 = der::tlv(
            der::SEQUENCE,
            &[
                &der::uint(&[]),
                &der::tlv(
                    der::SEQUENCE,
                    &[
                        &der::tlv(der::OID, &[der::OID_EC_PUBLIC_KEY]),
                        &der::tlv(der::OID, &[&[0x2b, 0x81, 0x04, 0x00, 0x21]]),
                    ],
                ),
                &der::tlv(
                    der::OCTET_STRING,
                    &[&der::tlv(
                        der::SEQUENCE,
                        &[&der::uint(&[1]), &der::tlv(der::OCTET_STRING, &[&[1; 28]])],
                    )],
                ),
            ],
        );
        assert!(matches!(
            canonical_pkcs8(&p224),
            Err(ContentError::UnsupportedPrivateKey(_))
        ));
        let ed25519 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        assert!(matches!(
            canonical_pkcs8(&ed25519),
            Err(ContentError::UnsupportedPrivateKey(_))
        ));
        // Out-of-range scalars: zero and all ones (above the order).
        for scalar in [[0u8; 32], [0xff; 32]] {
            let mut bad = canonical_p256();
            let at = bad.windows(32).position(|w| w == p256_scalar()).unwrap();
            bad[at..at + 32].copy_from_slice(&scalar);
            assert!(
                matches!(
                    canonical_pkcs8(&bad),
                    Err(ContentError::InvalidPrivateKey(_))
                ),
                "{scalar:?}"
            );
        }
        // Every truncation of valid keys fails cleanly.
        for key in [rsa_key(), &canonical_p256()[..]] {
            for len in 0..key.len() {
                assert!(canonical_pkcs8(&key[..len]).is_err(), "{len}");
            }
        }
        // Garbage of every kind.
        for garbage in [
            &b""[..],
            b"\x30",
            b"\x30\x80\x00\x00",
            b"\x30\x84\xff\xff\xff\xff",
            b"junk",
        ] {
            assert!(canonical_pkcs8(garbage).is_err());
        }
    }

    #[test]
    fn format_pfx_writes_the_secret_text_and_base64_encoding_makes_it_binary() {
        let pfx = build_pfx(Some(rsa_key()), &[&rsa_chain()[0]], "");
        let secret = pfx_secret(&pfx);
        let as_text = ObjectOptions {
            format: ObjectFormat::Pfx,
            ..Default::default()
        };
        assert_eq!(
            only(secret_files(&secret, &as_text)),
            secret.value.as_bytes()
        );
        let as_binary = ObjectOptions {
            format: ObjectFormat::Pfx,
            encoding: ObjectEncoding::Base64,
            ..Default::default()
        };
        assert_eq!(only(secret_files(&secret, &as_binary)), pfx);
    }

    #[test]
    fn separate_files_come_first_and_split_key_from_certificates() {
        let [leaf, intermediate, root] = rsa_chain() else {
            panic!("expected three certificates")
        };
        let pfx = build_pfx(Some(rsa_key()), &[intermediate, root, leaf], "");
        let provider = ProviderOptions {
            write_cert_and_key_in_separate_files: true,
            ..Default::default()
        };
        let files = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider).unwrap();
        let suffixes: Vec<_> = files.iter().map(|f| f.suffix).collect();
        assert_eq!(suffixes, [Some(CERT_SUFFIX), Some(KEY_SUFFIX), None]);
        let chain = [leaf, intermediate, root]
            .map(|c| pem_block("CERTIFICATE", c))
            .concat();
        assert_eq!(text(&files[0].contents), chain);
        assert_eq!(
            text(&files[1].contents),
            pem_block("PRIVATE KEY", rsa_key())
        );
        assert_eq!(
            [files[1].contents.as_slice(), &files[0].contents].concat(),
            files[2].contents.as_slice()
        );

        // A PFX kept as PFX has no PEM blocks: both extra files are empty, as in Go.
        let as_binary = ObjectOptions {
            format: ObjectFormat::Pfx,
            encoding: ObjectEncoding::Base64,
            ..Default::default()
        };
        let files = render_secret(&pfx_secret(&pfx), &as_binary, &provider).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files[0].contents.is_empty() && files[1].contents.is_empty());
        assert_eq!(files[2].contents.as_slice(), pfx);

        // Plain secrets never get extra files.
        let files = render_secret(&plain_secret("x"), &ObjectOptions::default(), &provider);
        assert_eq!(only(files.unwrap()), b"x");
    }

    /// `der` as PEM with CRLF line endings and 76-character lines.
    fn crlf_pem(tag: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {tag}-----\r\n{}\r\n-----END {tag}-----\r\n",
            lines.join("\r\n")
        )
    }

    #[test]
    fn pem_secrets_pass_through_unchanged_and_split_like_go() {
        let [leaf, _, root] = rsa_chain() else {
            panic!("expected three certificates")
        };
        let ec_params = der::tlv(der::OID, &[der::OID_P256]);
        let bundle = [
            "Bag Attributes: friendlyName\r\n".to_owned(),
            crlf_pem("CERTIFICATE", root),
            crlf_pem("PRIVATE KEY", rsa_key()),
            "some text between blocks\n".to_owned(),
            crlf_pem("EC PARAMETERS", &ec_params),
            crlf_pem("CERTIFICATE", leaf),
        ]
        .concat();
        let secret = cert_secret(bundle.clone(), PEM_CONTENT_TYPE);
        // Never reordered, even with construct_pem_chain.
        assert_eq!(
            only(secret_files(&secret, &ObjectOptions::default())),
            bundle.as_bytes()
        );

        let provider = ProviderOptions {
            write_cert_and_key_in_separate_files: true,
            ..Default::default()
        };
        let files = render_secret(&secret, &ObjectOptions::default(), &provider).unwrap();
        assert_eq!(
            text(&files[0].contents),
            [
                pem_block("CERTIFICATE", root),
                pem_block("CERTIFICATE", leaf)
            ]
            .concat()
        );
        assert_eq!(
            text(&files[1].contents),
            [
                pem_block("PRIVATE KEY", rsa_key()),
                pem_block("EC PARAMETERS", &ec_params)
            ]
            .concat()
        );
        assert_eq!(files[2].contents.as_slice(), bundle.as_bytes());
    }

    #[test]
    fn plain_secrets_are_written_as_is() {
        let value = "pässwörd\n with spaces ";
        assert_eq!(
            only(secret_files(
                &plain_secret(value),
                &ObjectOptions::default()
            )),
            value.as_bytes()
        );
        // A PKCS#12 content type without kid is just a secret.
        let secret = SecretValue {
            backs_certificate: false,
            ..cert_secret("not even base64".into(), PFX_CONTENT_TYPE)
        };
        assert_eq!(
            only(secret_files(&secret, &ObjectOptions::default())),
            b"not even base64"
        );
    }

    fn decoded(value: &str, encoding: ObjectEncoding) -> Result<Vec<u8>, ContentError> {
        let options = ObjectOptions {
            encoding,
            ..Default::default()
        };
        render_secret(&plain_secret(value), &options, &ProviderOptions::default()).map(only)
    }

    #[test]
    fn base64_and_hex_encodings_decode_the_value() {
        let bytes = b"\x00\xffbinary secret\x80".to_vec();
        let b64 = STANDARD.encode(&bytes);
        for input in [
            b64.clone(),
            b64.trim_end_matches('=').to_owned(),
            format!(" {}\r\n{}\n", &b64[..8], &b64[8..]),
        ] {
            assert_eq!(
                decoded(&input, ObjectEncoding::Base64).unwrap(),
                bytes,
                "{input:?}"
            );
        }
        // Go accepts non-zero trailing bits ("QR==" decodes like "QQ==").
        assert_eq!(decoded("QR==", ObjectEncoding::Base64).unwrap(), b"A");
        // Padding is optional, so partial padding is accepted too.
        assert_eq!(decoded("QQ=", ObjectEncoding::Base64).unwrap(), b"A");
        let hex_text = hex::encode(&bytes);
        for input in [
            hex_text.clone(),
            hex_text.to_uppercase(),
            format!("{}\n {}\n", &hex_text[..6], &hex_text[6..]),
        ] {
            assert_eq!(
                decoded(&input, ObjectEncoding::Hex).unwrap(),
                bytes,
                "{input:?}"
            );
        }
        assert_eq!(decoded("", ObjectEncoding::Hex).unwrap(), b"");
        assert_eq!(decoded("", ObjectEncoding::Base64).unwrap(), b"");
        assert_eq!(
            decoded(MARKER, ObjectEncoding::Utf8).unwrap(),
            MARKER.as_bytes()
        );

        let errors = [
            decoded(&format!("{MARKER}*"), ObjectEncoding::Base64).unwrap_err(),
            decoded("QQ==QQ==", ObjectEncoding::Base64).unwrap_err(),
            decoded("Q", ObjectEncoding::Base64).unwrap_err(),
            decoded(MARKER, ObjectEncoding::Hex).unwrap_err(),
            decoded("abc", ObjectEncoding::Hex).unwrap_err(),
        ];
        assert!(matches!(errors[0], ContentError::InvalidBase64(_)));
        assert!(matches!(errors[1], ContentError::InvalidBase64(_)));
        assert!(matches!(errors[2], ContentError::InvalidBase64(_)));
        assert!(matches!(errors[3], ContentError::InvalidHex(_)));
        assert!(matches!(
            errors[4],
            ContentError::InvalidHex("odd number of hex digits")
        ));
        for e in errors {
            assert!(!e.to_string().contains("cr3t") && !format!("{e:?}").contains("cr3t"));
        }
    }

    fn json(value: &str, key: &str, encoding: ObjectEncoding) -> Result<Vec<u8>, ContentError> {
        let options = ObjectOptions {
            encoding,
            json_key: Some(key.to_owned()),
            ..Default::default()
        };
        render_secret(&plain_secret(value), &options, &ProviderOptions::default()).map(only)
    }

    #[test]
    fn json_key_extracts_one_value() {
        let doc = format!(
            r#"{{"user":"admin","password":"{MARKER}\"\u00e9","port":5432,"ratio":0.5,
               "nested":{{"z":[1,{{"k":"v"}}],"a":null}},"flag":true}}"#
        );
        let utf8 = ObjectEncoding::Utf8;
        assert_eq!(
            json(&doc, "password", utf8).unwrap(),
            format!("{MARKER}\"é").as_bytes()
        );
        assert_eq!(json(&doc, "port", utf8).unwrap(), b"5432");
        assert_eq!(json(&doc, "ratio", utf8).unwrap(), b"0.5");
        assert_eq!(json(&doc, "flag", utf8).unwrap(), b"true");
        assert_eq!(
            json(&doc, "nested", utf8).unwrap(),
            br#"{"a":null,"z":[1,{"k":"v"}]}"#
        );
        // Decoded first.
        let encoded = STANDARD.encode(&doc);
        assert_eq!(
            json(&encoded, "user", ObjectEncoding::Base64).unwrap(),
            b"admin"
        );

        let errors = [
            json(&doc, "missing", utf8).unwrap_err(),
            json(MARKER, "password", utf8).unwrap_err(),
            json(&format!(r#"["{MARKER}"]"#), "password", utf8).unwrap_err(),
            json(&format!(r#"{{"password": "{MARKER}""#), "password", utf8).unwrap_err(),
        ];
        assert!(matches!(&errors[0], ContentError::MissingJsonKey(k) if k == "missing"));
        assert!(matches!(&errors[1], ContentError::InvalidJson { key, .. } if key == "password"));
        assert!(matches!(&errors[2], ContentError::NotAJsonObject(_)));
        assert!(matches!(&errors[3], ContentError::InvalidJson { .. }));
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains(MARKER) && !shown.contains("admin"),
                "{shown}"
            );
        }
        assert!(errors[0].to_string().contains("'missing'"));

        // Not for certificates or keys.
        let options = ObjectOptions {
            json_key: Some("k".into()),
            ..Default::default()
        };
        let pem_secret = cert_secret(pem_block("CERTIFICATE", &rsa_chain()[0]), PEM_CONTENT_TYPE);
        assert!(matches!(
            render_secret(&pem_secret, &options, &ProviderOptions::default()),
            Err(ContentError::JsonKeyNotApplicable(_))
        ));
        let cert = VaultObject::Cert(CertValue {
            der: rsa_chain()[0].clone(),
        });
        assert!(matches!(
            render(&cert, &options, &ProviderOptions::default()),
            Err(ContentError::JsonKeyNotApplicable(_))
        ));
    }

    #[test]
    fn cert_objects_are_the_leaf_as_pem() {
        let leaf = &rsa_chain()[0];
        let file = render_cert(&CertValue { der: leaf.clone() });
        assert_eq!(file.suffix, None);
        assert_eq!(text(&file.contents), pem_block("CERTIFICATE", leaf));
        assert_eq!(
            pem::parse(&*file.contents).unwrap().contents(),
            leaf.as_slice()
        );
        let via_render = render(
            &VaultObject::Cert(CertValue { der: leaf.clone() }),
            &ObjectOptions {
                encoding: ObjectEncoding::Hex,
                ..Default::default()
            },
            &ProviderOptions::default(),
        );
        assert_eq!(only(via_render.unwrap()), file.contents.as_slice());
    }

    fn key_pem(key: &KeyValue) -> Vec<u8> {
        let file = render_key(key).unwrap();
        assert_eq!(file.suffix, None);
        let block = pem::parse(&*file.contents).unwrap();
        assert_eq!(block.tag(), "PUBLIC KEY");
        assert_eq!(
            text(&file.contents),
            pem_block("PUBLIC KEY", block.contents())
        );
        block.into_contents()
    }

    #[test]
    fn rsa_keys_become_the_same_spki_as_aws_lc() {
        let pair = RsaKeyPair::from_pkcs8(rsa_key()).unwrap();
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let expected: PublicKeyX509Der<'_> = public.as_der().unwrap();
        for kty in ["RSA", "RSA-HSM"] {
            let key = KeyValue {
                kty: kty.into(),
                n: Some(n.clone()),
                e: Some(e.clone()),
                ..Default::default()
            };
            let spki = key_pem(&key);
            assert_eq!(spki, expected.as_ref());
            let (rest, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
            assert!(rest.is_empty());
            let PublicKey::RSA(rsa) = info.parsed().unwrap() else {
                panic!("not RSA")
            };
            assert_eq!(strip_leading_zeros(rsa.modulus), n);
            assert_eq!(rsa.try_exponent().unwrap(), 65537);
        }
        // Leading zeros in the JWK do not change the result.
        let padded = KeyValue {
            kty: "RSA".into(),
            n: Some([&[0, 0][..], &n].concat()),
            e: Some([&[0][..], &e].concat()),
            ..Default::default()
        };
        assert_eq!(key_pem(&padded), expected.as_ref());
    }

    #[test]
    fn ec_keys_become_the_same_spki_as_aws_lc() {
        for (kind, crv, len) in [
            (KeyKind::EcP256, "P-256", 32),
            (KeyKind::EcP384, "P-384", 48),
            (KeyKind::EcP521, "P-521", 66),
        ] {
            let alg = match kind {
                KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
                KeyKind::EcP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
                _ => &ECDSA_P521_SHA512_ASN1_SIGNING,
            };
            let pair = EcdsaKeyPair::from_pkcs8(alg, &ec_key(kind)).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let expected: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
            let (x, y) = point[1..].split_at(len);
            for kty in ["EC", "EC-HSM"] {
                let key = KeyValue {
                    kty: kty.into(),
                    crv: Some(crv.into()),
                    x: Some(strip_leading_zeros(x).to_vec()),
                    y: Some([&[0][..], y].concat()),
                    ..Default::default()
                };
                let spki = key_pem(&key);
                assert_eq!(spki, expected.as_ref(), "{crv}");
                let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
                let PublicKey::EC(ec) = info.parsed().unwrap() else {
                    panic!("not EC")
                };
                assert_eq!(ec.data(), point.as_slice());
            }
        }
    }

    #[test]
    fn unusable_keys_are_errors() {
        let rsa = |n: Option<Vec<u8>>, e: Option<Vec<u8>>| KeyValue {
            kty: "RSA".into(),
            n,
            e,
            ..Default::default()
        };
        let ec = |crv: Option<&str>, x: Vec<u8>, y: Vec<u8>| KeyValue {
            kty: "EC".into(),
            crv: crv.map(Into::into),
            x: Some(x),
            y: Some(y),
            ..Default::default()
        };
        let e = Some(vec![1, 0, 1]);
        let cases = [
            (
                KeyValue {
                    kty: "oct".into(),
                    ..Default::default()
                },
                "UnsupportedKeyType",
            ),
            (
                KeyValue {
                    kty: "oct-HSM".into(),
                    ..Default::default()
                },
                "UnsupportedKeyType",
            ),
            (rsa(None, e.clone()), "MissingKeyParameter"),
            (rsa(Some(vec![]), e.clone()), "InvalidKeyParameter"),
            (rsa(Some(vec![0, 0]), e.clone()), "InvalidKeyParameter"),
            (rsa(Some(vec![0xc5; 256]), None), "MissingKeyParameter"),
            (
                rsa(Some(vec![0xc5; 256]), Some(vec![])),
                "InvalidKeyParameter",
            ),
            (
                rsa(Some(vec![0xc5; 256]), Some(vec![0x80, 0, 0, 0, 0, 0, 0, 1])),
                "InvalidKeyParameter",
            ),
            (
                rsa(Some(vec![0xc5; 256]), Some(vec![1; 9])),
                "InvalidKeyParameter",
            ),
            (ec(None, vec![1], vec![1]), "MissingKeyParameter"),
            (ec(Some("P-256K"), vec![1], vec![1]), "UnsupportedCurve"),
            (ec(Some("p-256"), vec![1], vec![1]), "UnsupportedCurve"),
            (ec(Some("P-256"), vec![1], vec![1]), "InvalidEcPoint"),
            (ec(Some("P-256"), vec![], vec![]), "InvalidEcPoint"),
            (
                ec(Some("P-256"), vec![1; 33], vec![1; 32]),
                "InvalidEcPoint",
            ),
            (
                ec(Some("P-384"), vec![0xff; 48], vec![0xff; 48]),
                "InvalidEcPoint",
            ),
        ];
        for (key, variant) in cases {
            let err = render_key(&key).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{key:?}: {err:?}");
        }
        let no_x = KeyValue {
            x: None,
            ..ec(Some("P-256"), vec![], vec![])
        };
        assert!(matches!(
            render_key(&no_x),
            Err(ContentError::MissingKeyParameter("x"))
        ));
    }

    #[test]
    fn hostile_pfx_secrets_are_errors_not_panics() {
        let leaf = &rsa_chain()[0];
        let render_default = |secret: &SecretValue| {
            render_secret(
                secret,
                &ObjectOptions::default(),
                &ProviderOptions::default(),
            )
        };
        let cases = [
            (
                cert_secret(format!("{MARKER}!!"), PFX_CONTENT_TYPE),
                "PfxNotBase64",
            ),
            (
                cert_secret(STANDARD.encode(MARKER), PFX_CONTENT_TYPE),
                "PfxMalformed",
            ),
            (cert_secret(String::new(), PFX_CONTENT_TYPE), "PfxMalformed"),
            (
                pfx_secret(&build_pfx(Some(rsa_key()), &[leaf], "pw")),
                "PfxPassword",
            ),
            (
                pfx_secret(&build_pfx(
                    Some(
                        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                            .unwrap()
                            .as_ref(),
                    ),
                    &[leaf],
                    "",
                )),
                "UnsupportedPrivateKey",
            ),
            (
                cert_secret(MARKER.into(), "text/plain"),
                "UnknownContentType",
            ),
            (
                SecretValue {
                    content_type: None,
                    ..cert_secret(MARKER.into(), PFX_CONTENT_TYPE)
                },
                "MissingContentType",
            ),
        ];
        for (secret, variant) in cases {
            let err = render_default(&secret).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(format!("{err:?}").starts_with(variant), "{shown}");
            assert!(!shown.contains(MARKER), "{shown}");
        }
        // Every truncation of a PFX fails cleanly.
        let pfx = build_pfx(Some(rsa_key()), &[leaf], "");
        for len in (0..pfx.len()).step_by(7) {
            assert!(render_default(&pfx_secret(&pfx[..len])).is_err(), "{len}");
        }
    }

    #[test]
    fn pfx_without_key_or_without_certificates_converts_like_go() {
        let [leaf, intermediate, root] = rsa_chain() else {
            panic!("expected three certificates")
        };
        // Certificates only: no key block.
        let pfx = build_pfx(None, &[root, leaf, intermediate], "");
        let main = only(secret_files(&pfx_secret(&pfx), &ObjectOptions::default()));
        let chain = [leaf, intermediate, root]
            .map(|c| pem_block("CERTIFICATE", c))
            .concat();
        assert_eq!(text(&main), chain);
        // A key only: no leaf to start a chain from; without chain construction, the key.
        let pfx = build_pfx(Some(rsa_key()), &[], "");
        assert!(matches!(
            render_secret(
                &pfx_secret(&pfx),
                &ObjectOptions::default(),
                &ProviderOptions::default()
            ),
            Err(ContentError::NoLeafCertificate)
        ));
        let provider = with_chain(&ProviderOptions::default(), false);
        let main = render_secret(&pfx_secret(&pfx), &ObjectOptions::default(), &provider);
        assert_eq!(
            text(&only(main.unwrap())),
            pem_block("PRIVATE KEY", rsa_key())
        );
    }

    /// A minimal certificate with the given key identifiers (x509-parser does not check the
    /// signature).
    fn fake_cert(cn: &str, ski: Option<&[u8]>, aki: Option<&[u8]>) -> Vec<u8> {
        static SPKI: OnceLock<Vec<u8>> = OnceLock::new();
        let spki = SPKI.get_or_init(|| {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &canonical_p256())
                .unwrap();
            let der: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
            der.as_ref().to_vec()
        });
        let sig_alg = der::tlv(
            der::SEQUENCE,
            &[&der::tlv(
                der::OID,
                &[&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]],
            )],
        );
        let name = der::tlv(
            der::SEQUENCE,
            &[&der::tlv(
                0x31,
                &[&der::tlv(
                    der::SEQUENCE,
                    &[
                        &der::tlv(der::OID, &[&[0x55, 0x04, 0x03]]),
                        &der::tlv(0x0c, &[cn.as_bytes()]),
                    ],
                )],
            )],
        );
        let validity = der::tlv(
            der::SEQUENCE,
            &[
                &der::tlv(0x17, &[b"250101000000Z"]),
                &der::tlv(0x17, &[b"350101000000Z"]),
            ],
        );
        let mut extensions = Vec::new();
        if let Some(ski) = ski {
            extensions.push(der::tlv(
                der::SEQUENCE,
                &[
                    &der::tlv(der::OID, &[&[0x55, 0x1d, 0x0e]]),
                    &der::tlv(der::OCTET_STRING, &[&der::tlv(der::OCTET_STRING, &[ski])]),
                ],
            ));
        }
        if let Some(aki) = aki {
            extensions.push(der::tlv(
                der::SEQUENCE,
                &[
                    &der::tlv(der::OID, &[&[0x55, 0x1d, 0x23]]),
                    &der::tlv(
                        der::OCTET_STRING,
                        &[&der::tlv(der::SEQUENCE, &[&der::tlv(0x80, &[aki])])],
                    ),
                ],
            ));
        }
        let ext_parts: Vec<&[u8]> = extensions.iter().map(|e| e.as_slice()).collect();
        let extensions = der::tlv(0xa3, &[&der::tlv(der::SEQUENCE, &ext_parts)]);
        let tbs = der::tlv(
            der::SEQUENCE,
            &[
                &der::tlv(der::CONTEXT_0, &[&der::uint(&[2])]),
                &der::uint(cn.as_bytes()),
                &sig_alg,
                &name,
                &validity,
                &name,
                spki,
                &extensions,
            ],
        );
        der::tlv(
            der::SEQUENCE,
            &[
                &tbs,
                &sig_alg,
                &der::tlv(der::BIT_STRING, &[&[0, 0x30, 0x00]]),
            ],
        )
        .to_vec()
    }

    fn names(chain: &[&[u8]], all: &[(&str, &Vec<u8>)]) -> Vec<String> {
        chain
            .iter()
            .map(|der| {
                all.iter()
                    .find(|(_, c)| c.as_slice() == *der)
                    .map(|(n, _)| (*n).to_owned())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn chain_ordering_follows_go_fetch_cert_chains() {
        let root = fake_cert("root", Some(b"R"), None);
        let inter = fake_cert("inter", Some(b"I"), Some(b"R"));
        let leaf = fake_cert("leaf", Some(b"L"), Some(b"I"));
        let other = fake_cert("other", Some(b"O"), None);
        let bare_a = fake_cert("bare-a", None, None);
        let bare_b = fake_cert("bare-b", None, None);
        let all = [
            ("root", &root),
            ("inter", &inter),
            ("leaf", &leaf),
            ("other", &other),
            ("bare-a", &bare_a),
            ("bare-b", &bare_b),
        ];
        let order = |certs: &[&Vec<u8>]| {
            let certs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
            order_chain(&certs).map(|chain| names(&chain, &all))
        };
        assert_eq!(
            order(&[&root, &leaf, &inter]).unwrap(),
            ["leaf", "inter", "root"]
        );
        // Certificates off the chain are dropped; the first unlinked certificate starts it.
        assert_eq!(
            order(&[&leaf, &root, &other, &inter]).unwrap(),
            ["leaf", "inter", "root"]
        );
        assert_eq!(order(&[&other, &leaf, &inter, &root]).unwrap(), ["other"]);
        // A missing intermediate breaks the chain: only the first certificate is kept.
        assert_eq!(order(&[&leaf, &root]).unwrap(), ["leaf"]);
        assert_eq!(order(&[&root, &leaf]).unwrap(), ["root"]);
        // Absent identifiers never match each other.
        assert_eq!(order(&[&bare_a, &bare_b]).unwrap(), ["bare-a"]);

        // Loops.
        let x = fake_cert("x", Some(b"1"), Some(b"2"));
        let y = fake_cert("y", Some(b"2"), Some(b"1"));
        let into_loop = fake_cert("into-loop", None, Some(b"1"));
        assert!(matches!(
            order(&[&x, &y]),
            Err(ContentError::NoLeafCertificate)
        ));
        assert!(matches!(
            order(&[&into_loop, &x, &y]),
            Err(ContentError::ChainCycle)
        ));
        assert!(matches!(order(&[]), Err(ContentError::NoLeafCertificate)));

        let junk = b"junk".to_vec();
        assert!(matches!(
            order(&[&root, &junk]),
            Err(ContentError::InvalidCertificate { index: 1, .. })
        ));
        let trailing = [root.as_slice(), b"\x00"].concat();
        assert!(matches!(
            order(&[&trailing]),
            Err(ContentError::InvalidCertificate { index: 0, .. })
        ));
    }

    /// Type, headers and bytes of a decoded block.
    type Decoded = (String, BTreeMap<Vec<u8>, Vec<u8>>, Vec<u8>);

    fn decode_all(text: &str) -> Vec<Decoded> {
        let mut rest = text.as_bytes();
        let mut out = Vec::new();
        while let Some((block, next)) = go_pem_decode(rest) {
            assert!(next.len() < rest.len());
            out.push((
                String::from_utf8(block.kind).unwrap(),
                block.headers,
                block.bytes.to_vec(),
            ));
            rest = next;
        }
        out
    }

    #[test]
    fn pem_decoding_follows_go_encoding_pem() {
        let kinds =
            |text: &str| -> Vec<String> { decode_all(text).into_iter().map(|b| b.0).collect() };
        let block = |kind: &str, body: &str| {
            format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n")
        };

        // Text around and between blocks is skipped; CRLF and trailing blanks are fine.
        let input = format!(
            "junk\n{}middle\r\n-----BEGIN B-----  \r\nAAAA\r\n-----END B-----\t\r\n",
            block("A", "AAAA")
        );
        let blocks = decode_all(&input);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].0.as_str(), blocks[0].2.as_slice()),
            ("A", &[0u8, 0, 0][..])
        );
        assert_eq!(blocks[1].0, "B");
        // BEGIN must start a line.
        assert!(kinds(&format!("x{}", block("A", "AAAA"))).is_empty());
        // A block with a defect (wrong END type, bad base64, missing padding, text after
        // END) is skipped and the search goes on after its END line.
        for broken in [
            "-----BEGIN A-----\nAAAA\n-----END X-----\n".to_owned(),
            block("A", "!!!!"),
            block("A", "AAA"),
            "-----BEGIN A-----\nAAAA\n-----END A----- x\n".to_owned(),
        ] {
            assert_eq!(
                kinds(&format!("{broken}{}", block("B", "AAAA"))),
                ["B"],
                "{broken:?}"
            );
        }
        // No END, or nothing after the type line: nothing.
        assert!(kinds("-----BEGIN A-----\nAAAA\n").is_empty());
        assert!(kinds("-----BEGIN A-----").is_empty());
        assert!(kinds("").is_empty());
        // The last BEGIN before the first END wins.
        assert_eq!(
            kinds(&format!("-----BEGIN X-----\n{}", block("A", "AAAA"))),
            ["A"]
        );
        // Empty block; spaces inside the base64.
        let empty = decode_all("-----BEGIN E-----\n-----END E-----\n");
        assert_eq!((empty[0].0.as_str(), empty[0].2.len()), ("E", 0));
        assert_eq!(
            decode_all(&block("S", "AA AA\tAA==")).remove(0).2,
            [0, 0, 0, 0]
        );

        // Headers: parsed, trimmed, written back with Proc-Type first and the rest sorted.
        let with_headers = "-----BEGIN RSA PRIVATE KEY-----\nzeta:  last \nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let (kind, headers, bytes) = decode_all(with_headers).remove(0);
        assert_eq!(headers.len(), 3);
        assert_eq!(
            headers.get(&b"zeta"[..]).map(Vec::as_slice),
            Some(&b"last"[..])
        );
        let encoded = go_pem_encode(kind.as_bytes(), &headers, &bytes);
        assert_eq!(
            text(&encoded),
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\nzeta: last\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"
        );
        // A header block that runs into the END line is not a block.
        assert!(kinds("-----BEGIN A-----\nk: v\n-----END A-----\n").is_empty());
        // Unicode white space is trimmed from headers like Go's bytes.TrimSpace.
        assert_eq!(go_trim_space("\u{a0} k \u{2003}".as_bytes()), b"k");
        assert_eq!(go_trim_space(b"\x0b\x0ck\x85"), b"k\x85");
    }

    #[test]
    fn pem_encoding_matches_go_for_every_length() {
        assert_eq!(
            text(&go_pem_encode(b"X", &BTreeMap::new(), &[])),
            "-----BEGIN X-----\n-----END X-----\n"
        );
        for len in 1..200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ours = go_pem_encode(b"CERTIFICATE", &BTreeMap::new(), &bytes);
            assert_eq!(text(&ours), pem_block("CERTIFICATE", &bytes), "{len}");
        }
    }

    #[test]
    fn prefixes_of_pem_text_never_panic() {
        let [leaf, intermediate, _] = rsa_chain() else {
            panic!("expected three certificates")
        };
        let bundle = [
            crlf_pem("CERTIFICATE", leaf),
            pem_block("PRIVATE KEY", rsa_key()),
            pem_block("CERTIFICATE", intermediate),
        ]
        .concat();
        for len in 0..=bundle.len() {
            let (certs, keys) = split_cert_and_key(&bundle.as_bytes()[..len]);
            assert!(certs.len() + keys.len() <= 2 * len, "{len}");
        }
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let secret = plain_secret(MARKER);
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains(MARKER) && shown.contains("redacted"),
            "{shown}"
        );
        let files = secret_files(&secret, &ObjectOptions::default());
        let shown = format!("{files:?}");
        assert!(
            !shown.contains(MARKER) && shown.contains(&MARKER.len().to_string()),
            "{shown}"
        );
        let object = VaultObject::Secret(plain_secret(MARKER));
        assert!(!format!("{object:?}").contains(MARKER));
    }
}
