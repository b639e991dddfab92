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
//!     follows the links. When that chain does not take in every certificate (a missing
//!     intermediate or root, an unrelated certificate), all of them keep the PFX's order,
//!     none dropped (Go provider v1.7.0 and later). Without it they keep the PFX's order;
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
//! A secret's value arrives as a [`SecretString`]. File contents, decoded values and DER
//! private keys live in [`Zeroizing`] buffers sized up front, so no reallocation leaves a
//! copy behind. Error messages and `Debug` output never contain secret bytes: they name
//! keys, content types, offsets and file sizes, not values.
//!
//! # Layout
//!
//! - here: the render API ([`render`] and the types it takes and returns);
//! - `encoding`: `objectEncoding` (base64, hex) and `json_key`;
//! - `pfx`: PKCS#12 to PEM; `chain`: certificate chain order; `pkcs8`: private keys
//!   re-encoded as Go writes them;
//! - `spki`: a JWK's public key as PKIX SubjectPublicKeyInfo; `curve`: the curves both use;
//! - `pem`: PEM as Go's `encoding/pem` reads and writes it; `der`: the small DER reader and
//!   writer underneath.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::secret::SecretString;

pub use crate::csi::params::{FieldSelector, ObjectEncoding, ObjectFormat};

use self::encoding::decode_content;
use self::pem::{CERTIFICATE_TYPE, PUBLIC_KEY_TYPE, go_pem_encode, split_cert_and_key};
use self::pfx::pfx_to_pem;
use self::spki::{ec_spki, rsa_spki};

mod chain;
mod curve;
mod der;
mod encoding;
mod field;
mod pem;
mod pfx;
mod pkcs8;
mod spki;
mod yaml_budget;

/// Content type of a certificate-backing secret holding PEM (key and chain).
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";
/// Content type of a certificate-backing secret holding a base64 PKCS#12 file.
pub const PFX_CONTENT_TYPE: &str = "application/x-pkcs12";
/// Suffix of the certificates file written with `write_cert_and_key_in_separate_files`.
pub const CERT_SUFFIX: &str = ".crt";
/// Suffix of the private key file written with `write_cert_and_key_in_separate_files`.
pub const KEY_SUFFIX: &str = ".key";

/// A secret as Key Vault returned it.
#[derive(Debug)]
pub struct SecretValue {
    /// The secret's `value`.
    pub value: SecretString,
    /// The secret's `contentType`, if any.
    pub content_type: Option<String>,
    /// Whether the secret backs a certificate (its bundle has a non-empty `kid`).
    pub backs_certificate: bool,
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
    /// Our extension (`objectJsonKey`, `objectYamlKey`): write only this value of a JSON or
    /// YAML secret.
    pub field: Option<FieldSelector>,
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
    /// `field` was given for an object it cannot apply to.
    #[error(
        "objectJsonKey/objectYamlKey '{0}' can only be used with plain secrets, not \
         certificates or keys"
    )]
    JsonKeyNotApplicable(String),
    /// `field` (JSON) was given but the content is not JSON.
    #[error("secret is not valid JSON (line {line}, column {column}); cannot extract key '{key}'")]
    InvalidJson {
        /// The requested key.
        key: String,
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// `field` (YAML) was given but the content is not YAML.
    #[error("secret is not valid YAML (line {line}, column {column}); cannot extract '{key}'")]
    InvalidYaml {
        /// The requested path.
        key: String,
        /// Line of the syntax error (0: unknown).
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// The document has no value at the path.
    #[error("secret {document} has no '{path}' (nothing at '{at}')")]
    MissingField {
        /// `JSON` or `YAML`.
        document: &'static str,
        /// The requested path.
        path: String,
        /// The part of the path that found nothing.
        at: String,
    },
    /// The text is no top-level key of the document, and not a path either.
    #[error("secret {document} has no top-level key '{path}', and it is not a path: it {reason}")]
    BadPath {
        /// `JSON` or `YAML`.
        document: &'static str,
        /// The requested text.
        path: String,
        /// Why it is not a path.
        reason: String,
    },
    /// A step of the path met the wrong kind of value.
    #[error("secret {document} is not {expected} at '{at}'; cannot extract '{path}'")]
    FieldMismatch {
        /// `JSON` or `YAML`.
        document: &'static str,
        /// The requested path.
        path: String,
        /// Where (empty: the top level).
        at: String,
        /// `a mapping` or `a list`.
        expected: &'static str,
    },
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
    let not_for_json = |options: &ObjectOptions| match &options.field {
        Some(field) => Err(ContentError::JsonKeyNotApplicable(field.path.clone())),
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
    let value = secret.value.expose_secret().as_bytes();
    let mut files: Vec<(Option<&'static str>, Zeroizing<Vec<u8>>)> = Vec::with_capacity(3);
    if secret.backs_certificate {
        if let Some(field) = &options.field {
            return Err(ContentError::JsonKeyNotApplicable(field.path.clone()));
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
            && let Some(field) = &options.field
        {
            contents = field::extract(&contents, field.document, &field.path)?;
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

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
