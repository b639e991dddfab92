//! X.509 certificate work for the mock vault: issuing certificates from a Key Vault style
//! policy (self-signed or from a generated test CA chain), packaging key and chain as PKCS#12
//! or PEM, and reading both back for certificate import.
//!
//! Everything here is pure and synchronous. Private keys come in and go out as PKCS#8 DER;
//! certificates are DER, and chains are always ordered leaf first, then intermediates, then
//! the root. No error message or `Debug` output contains key material.

use std::fmt::{self, Write as _};

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p12_keystore::{
    EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive, PrivateKeyChain,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, OtherNameValue, SanType,
    SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use time::{Date, Duration, Month, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Any, FromDer as _, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;
use zeroize::Zeroizing;

/// Largest accepted `validity_months` (100 years).
pub const MAX_VALIDITY_MONTHS: u32 = 1200;
/// Key derivation / MAC iterations in generated PFX files (the count Windows and Key Vault use).
const PFX_ITERATIONS: u32 = 2000;
/// Microsoft User Principal Name `otherName` OID.
const UPN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 20, 2, 3];

/// How a subject attribute value is encoded in the certificate.
#[derive(Clone, Copy)]
enum ValueType {
    Utf8,
    /// Two-letter country code, encoded as PrintableString (RFC 5280).
    Country,
    Ia5,
}

/// Subject attributes with their accepted names (the first is canonical), OID and encoding.
const SUBJECT_ATTRIBUTES: &[(&[&str], &[u64], ValueType)] = &[
    (&["CN"], &[2, 5, 4, 3], ValueType::Utf8),
    (&["O"], &[2, 5, 4, 10], ValueType::Utf8),
    (&["OU"], &[2, 5, 4, 11], ValueType::Utf8),
    (&["C"], &[2, 5, 4, 6], ValueType::Country),
    (&["L"], &[2, 5, 4, 7], ValueType::Utf8),
    (&["ST", "S"], &[2, 5, 4, 8], ValueType::Utf8),
    (
        &["E", "EMAIL", "EMAILADDRESS"],
        &[1, 2, 840, 113_549, 1, 9, 1],
        ValueType::Ia5,
    ),
    (
        &["DC"],
        &[0, 9, 2342, 19_200_300, 100, 1, 25],
        ValueType::Ia5,
    ),
];

/// Key Vault key usage names, in X.509 bit order.
const KEY_USAGES: &[(&str, KeyUsagePurpose)] = &[
    ("digitalSignature", KeyUsagePurpose::DigitalSignature),
    ("nonRepudiation", KeyUsagePurpose::ContentCommitment),
    ("keyEncipherment", KeyUsagePurpose::KeyEncipherment),
    ("dataEncipherment", KeyUsagePurpose::DataEncipherment),
    ("keyAgreement", KeyUsagePurpose::KeyAgreement),
    ("keyCertSign", KeyUsagePurpose::KeyCertSign),
    ("cRLSign", KeyUsagePurpose::CrlSign),
    ("encipherOnly", KeyUsagePurpose::EncipherOnly),
    ("decipherOnly", KeyUsagePurpose::DecipherOnly),
];

/// Extended key usages rcgen names, by dotted OID.
const KNOWN_EKUS: &[(&str, ExtendedKeyUsagePurpose)] = &[
    ("2.5.29.37.0", ExtendedKeyUsagePurpose::Any),
    ("1.3.6.1.5.5.7.3.1", ExtendedKeyUsagePurpose::ServerAuth),
    ("1.3.6.1.5.5.7.3.2", ExtendedKeyUsagePurpose::ClientAuth),
    ("1.3.6.1.5.5.7.3.3", ExtendedKeyUsagePurpose::CodeSigning),
    (
        "1.3.6.1.5.5.7.3.4",
        ExtendedKeyUsagePurpose::EmailProtection,
    ),
    ("1.3.6.1.5.5.7.3.8", ExtendedKeyUsagePurpose::TimeStamping),
    ("1.3.6.1.5.5.7.3.9", ExtendedKeyUsagePurpose::OcspSigning),
];

/// Errors from certificate issuance, parsing and packaging.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// The subject is not a well-formed `NAME=value, ...` distinguished name.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The subject uses an attribute name this module does not know.
    #[error(
        "unknown subject attribute '{0}' (expected CN, O, OU, C, L, ST, E, DC or a dotted OID)"
    )]
    UnknownSubjectAttribute(String),
    /// The subject repeats an attribute, which the certificate builder cannot represent.
    #[error("subject attribute '{0}' appears more than once")]
    DuplicateSubjectAttribute(String),
    /// A subject alternative name cannot be encoded (DNS names and e-mails must be ASCII).
    #[error("invalid {kind} subject alternative name '{value}'")]
    InvalidSan {
        /// Which kind of name: `dns`, `email` or `upn`.
        kind: &'static str,
        /// The rejected name.
        value: String,
    },
    /// A key usage is not one of Key Vault's names (`digitalSignature`, `keyEncipherment`, ...).
    #[error("unknown key usage '{0}'")]
    UnknownKeyUsage(String),
    /// An extended key usage is not a dotted OID.
    #[error("invalid extended key usage '{0}': expected a dotted OID such as 1.3.6.1.5.5.7.3.1")]
    InvalidEku(String),
    /// `validity_months` is zero or above [`MAX_VALIDITY_MONTHS`].
    #[error("validity_months must be between 1 and {MAX_VALIDITY_MONTHS}, got {0}")]
    InvalidValidity(u32),
    /// The private key is not a PKCS#8 key of the declared kind.
    #[error("private key is not a valid PKCS#8 {0} key")]
    InvalidKey(KeyKind),
    /// The private key is malformed or not RSA (2048-8192 bit) or EC P-256/P-384/P-521.
    #[error(
        "unsupported or malformed private key: expected RSA (2048-8192 bit) or EC P-256, P-384 or P-521"
    )]
    UnsupportedKey,
    /// Building or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A certificate is not valid DER-encoded X.509.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// An empty certificate chain was given where a leaf is required.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// PKCS#12 encoding or decoding failed for a reason other than the password.
    #[error("PKCS#12 error: {0}")]
    Pfx(String),
    /// The PKCS#12 password is wrong (integrity check or decryption failed).
    #[error("PKCS#12 password is incorrect")]
    WrongPassword,
    /// The PEM text is malformed or holds no PEM block.
    #[error("invalid PEM: {0}")]
    InvalidPem(&'static str),
    /// The PEM text holds a block type that is not supported (e.g. `ENCRYPTED PRIVATE KEY`).
    #[error("unsupported PEM block '{0}'")]
    UnsupportedPemBlock(String),
    /// The bundle holds no private key.
    #[error("bundle contains no private key")]
    MissingPrivateKey,
    /// The bundle holds more than one private key.
    #[error("bundle contains more than one private key")]
    MultiplePrivateKeys,
    /// The bundle holds no certificate.
    #[error("bundle contains no certificate")]
    MissingCertificate,
    /// No certificate in the bundle carries the private key's public key.
    #[error("no certificate in the bundle matches the private key")]
    KeyMismatch,
}

/// Kind of a certificate's private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA (2048, 3072 or 4096 bits in Key Vault), signed with SHA-256.
    Rsa,
    /// ECDSA on P-256, signed with SHA-256.
    EcP256,
    /// ECDSA on P-384, signed with SHA-384.
    EcP384,
    /// ECDSA on P-521, signed with SHA-512.
    EcP521,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA",
            Self::EcP256 => "EC P-256",
            Self::EcP384 => "EC P-384",
            Self::EcP521 => "EC P-521",
        })
    }
}

impl KeyKind {
    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::Rsa => &rcgen::PKCS_RSA_SHA256,
            Self::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::EcP521 => &rcgen::PKCS_ECDSA_P521_SHA512,
        }
    }
}

const EC_KINDS: [(KeyKind, &EcdsaSigningAlgorithm); 3] = [
    (KeyKind::EcP256, &ECDSA_P256_SHA256_ASN1_SIGNING),
    (KeyKind::EcP384, &ECDSA_P384_SHA384_ASN1_SIGNING),
    (KeyKind::EcP521, &ECDSA_P521_SHA512_ASN1_SIGNING),
];

/// What to put in a new certificate (the X.509 part of a Key Vault certificate policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertRequest {
    /// X.500 subject such as `CN=www.example.com, O=Contoso`; see [`parse_subject`].
    pub subject: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// E-mail (rfc822Name) subject alternative names.
    pub emails: Vec<String>,
    /// User principal names, encoded as `otherName` 1.3.6.1.4.1.311.20.2.3.
    pub upns: Vec<String>,
    /// Calendar months from now until expiry, 1 to [`MAX_VALIDITY_MONTHS`].
    pub validity_months: u32,
    /// Key Vault key usage names; empty means no key usage extension.
    pub key_usage: Vec<String>,
    /// Extended key usages as dotted OIDs; empty means no extended key usage extension.
    pub ekus: Vec<String>,
}

/// A newly issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// DER certificates: leaf first, then intermediate, then root (only the leaf if self-signed).
    pub chain: Vec<Vec<u8>>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number as uppercase hex without separators.
    pub serial: String,
}

impl IssuedCert {
    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }
}

/// A test certificate authority: a self-signed root and one intermediate, both generated
/// (EC P-256 keys). The intermediate signs leaves; the root's key is discarded after use.
pub struct TestCa {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("root_x5t", &x5t(&self.root_der))
            .field("intermediate_x5t", &x5t(&self.intermediate_der))
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates `CN={name} Root CA` and `CN={name} Intermediate CA`, valid from an hour ago
    /// for longer than any leaf may be.
    pub fn generate(name: &str) -> Result<Self, X509Error> {
        let now = OffsetDateTime::now_utc();
        let not_after = add_months(now, MAX_VALIDITY_MONTHS + 12)
            .ok_or(X509Error::InvalidValidity(MAX_VALIDITY_MONTHS + 12))?;
        let ca_params = |cn: String, constraint| {
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(constraint);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            params.not_before = now - Duration::hours(1);
            params.not_after = not_after;
            params.serial_number = Some(random_serial());
            params
        };
        let generate_key = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256);

        let root_key = generate_key().map_err(generate_error)?;
        let root_params = ca_params(format!("{name} Root CA"), BasicConstraints::Unconstrained);
        let root_der = root_params
            .self_signed(&root_key)
            .map_err(generate_error)?
            .der()
            .to_vec();
        let root = Issuer::new(root_params, root_key);

        let intermediate_key = generate_key().map_err(generate_error)?;
        let mut intermediate_params = ca_params(
            format!("{name} Intermediate CA"),
            BasicConstraints::Constrained(0),
        );
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_der = intermediate_params
            .signed_by(&intermediate_key, &root)
            .map_err(generate_error)?
            .der()
            .to_vec();
        Ok(Self {
            root_der,
            intermediate_der,
            intermediate: Issuer::new(intermediate_params, intermediate_key),
        })
    }

    /// The CA's certificates as DER, in chain order: intermediate, then root.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate_der.clone(), self.root_der.clone()]
    }

    /// The root certificate as PEM, for clients that must trust it.
    pub fn root_pem(&self) -> String {
        encode_pem("CERTIFICATE", self.root_der.clone())
    }
}

/// Issues a certificate for `key_pkcs8` (a PKCS#8 key of `kind`), self-signed when `issuer` is
/// `None`, otherwise signed by the test CA's intermediate. Validity starts five minutes ago
/// and ends `validity_months` calendar months from now; the serial is 16 random bytes.
pub fn issue(
    req: &CertRequest,
    key_pkcs8: &[u8],
    kind: KeyKind,
    issuer: Option<&TestCa>,
) -> Result<IssuedCert, X509Error> {
    if req.validity_months == 0 || req.validity_months > MAX_VALIDITY_MONTHS {
        return Err(X509Error::InvalidValidity(req.validity_months));
    }
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(key_pkcs8),
        kind.signature_algorithm(),
    )
    .map_err(|_| X509Error::InvalidKey(kind))?;

    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = parse_subject(&req.subject)?;
    params.subject_alt_names = subject_alt_names(req)?;
    params.key_usages = req
        .key_usage
        .iter()
        .map(|u| key_usage(u))
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = req
        .ekus
        .iter()
        .map(|e| extended_key_usage(e))
        .collect::<Result<_, _>>()?;
    params.not_before = now - Duration::minutes(5);
    params.not_after = add_months(now, req.validity_months)
        .ok_or(X509Error::InvalidValidity(req.validity_months))?;
    let serial = random_serial();
    params.serial_number = Some(serial.clone());

    let (leaf, mut chain) = match issuer {
        None => (params.self_signed(&key), Vec::new()),
        Some(ca) => {
            params.use_authority_key_identifier_extension = true;
            (params.signed_by(&key, &ca.intermediate), ca.chain_der())
        }
    };
    chain.insert(0, leaf.map_err(generate_error)?.der().to_vec());
    Ok(IssuedCert {
        chain,
        not_before: params.not_before.unix_timestamp(),
        not_after: params.not_after.unix_timestamp(),
        serial: hex_upper(&serial.to_bytes()),
    })
}

/// Parses an X.500 subject such as `CN=www.example.com, O=Contoso, OU=IT, C=US, L=Seattle,
/// ST=WA` into a distinguished name, keeping the attribute order.
///
/// Attributes are separated by `,` or `;`. Names are case-insensitive: `CN`, `O`, `OU`, `C`
/// (two letters), `L`, `ST` (or `S`), `E` (or `EMAIL`, `emailAddress`), `DC`, or a dotted OID
/// (optionally `OID.`-prefixed). A value may be double-quoted (`CN="Contoso, Ltd"`), and a
/// backslash escapes the next character (`O=Contoso\, Ltd`). Each attribute may appear once.
pub fn parse_subject(s: &str) -> Result<DistinguishedName, X509Error> {
    let mut dn = DistinguishedName::new();
    for (name, value) in split_subject(s)? {
        let (oid, value_type) = subject_attribute(&name)?;
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(X509Error::DuplicateSubjectAttribute(name));
        }
        let invalid = |what: &str| X509Error::InvalidSubject(format!("{name}: {what}"));
        let value = match value_type {
            ValueType::Utf8 => DnValue::Utf8String(value),
            ValueType::Country
                if value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                DnValue::PrintableString(value.try_into().map_err(|_| invalid("not printable"))?)
            }
            ValueType::Country => return Err(invalid("expected a two-letter country code")),
            ValueType::Ia5 => {
                DnValue::Ia5String(value.try_into().map_err(|_| invalid("must be ASCII"))?)
            }
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Splits a subject into trimmed `(name, value)` pairs, handling quotes and escapes.
fn split_subject(s: &str) -> Result<Vec<(String, String)>, X509Error> {
    let invalid = |what: &str| X509Error::InvalidSubject(what.to_owned());
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c @ (',' | ';' | '"' | '\\')) => {
                    return Err(invalid(&format!("unexpected '{c}' in attribute name")));
                }
                Some(c) => name.push(c),
                None if pairs.is_empty() && name.trim().is_empty() => {
                    return Err(invalid("subject is empty"));
                }
                None => return Err(invalid("expected NAME=value after separator")),
            }
        }
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("missing attribute name before '='"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let at_end = if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| invalid("dangling '\\'"))?),
                    Some(c) => value.push(c),
                    None => return Err(invalid(&format!("{name}: unterminated quoted value"))),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            match chars.next() {
                None => true,
                Some(',' | ';') => false,
                Some(_) => return Err(invalid(&format!("{name}: text after quoted value"))),
            }
        } else {
            // Length of `value` up to its last non-space or escaped character.
            let mut significant = 0;
            let at_end = loop {
                match chars.next() {
                    None => break true,
                    Some(',' | ';') => break false,
                    Some('\\') => {
                        value.push(chars.next().ok_or_else(|| invalid("dangling '\\'"))?);
                        significant = value.len();
                    }
                    Some(c) => {
                        value.push(c);
                        if !c.is_whitespace() {
                            significant = value.len();
                        }
                    }
                }
            };
            value.truncate(significant);
            at_end
        };
        if value.is_empty() {
            return Err(invalid(&format!("{name} has an empty value")));
        }
        pairs.push((name, value));
        if at_end {
            return Ok(pairs);
        }
    }
}

fn subject_attribute(name: &str) -> Result<(Vec<u64>, ValueType), X509Error> {
    let upper = name.to_ascii_uppercase();
    let oid = match SUBJECT_ATTRIBUTES
        .iter()
        .find(|(names, ..)| names.contains(&upper.as_str()))
    {
        Some((_, oid, _)) => oid.to_vec(),
        None => parse_oid(upper.strip_prefix("OID.").unwrap_or(&upper))
            .ok_or_else(|| X509Error::UnknownSubjectAttribute(name.to_owned()))?,
    };
    let known = SUBJECT_ATTRIBUTES
        .iter()
        .find(|(_, known, _)| *known == oid.as_slice());
    Ok((oid, known.map_or(ValueType::Utf8, |(.., ty)| *ty)))
}

/// Parses a dotted OID (`1.3.6.1.5.5.7.3.1`); `None` if malformed.
fn parse_oid(s: &str) -> Option<Vec<u64>> {
    let arcs = s
        .split('.')
        .map(|arc| {
            if arc.is_empty() || !arc.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                arc.parse::<u64>().ok()
            }
        })
        .collect::<Option<Vec<u64>>>()?;
    (arcs.len() >= 2 && arcs.first().is_some_and(|first| *first <= 2)).then_some(arcs)
}

fn subject_alt_names(req: &CertRequest) -> Result<Vec<SanType>, X509Error> {
    let invalid = |kind, value: &String| X509Error::InvalidSan {
        kind,
        value: value.clone(),
    };
    let mut sans = Vec::new();
    for name in &req.dns_names {
        let ia5 = name.as_str().try_into().map_err(|_| invalid("dns", name))?;
        sans.push(SanType::DnsName(ia5));
    }
    for email in &req.emails {
        let ia5 = email
            .as_str()
            .try_into()
            .map_err(|_| invalid("email", email))?;
        sans.push(SanType::Rfc822Name(ia5));
    }
    for upn in &req.upns {
        if upn.is_empty() {
            return Err(invalid("upn", upn));
        }
        sans.push(SanType::OtherName((
            UPN_OID.to_vec(),
            OtherNameValue::Utf8String(upn.clone()),
        )));
    }
    Ok(sans)
}

fn key_usage(name: &str) -> Result<KeyUsagePurpose, X509Error> {
    KEY_USAGES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, usage)| *usage)
        .ok_or_else(|| X509Error::UnknownKeyUsage(name.to_owned()))
}

fn extended_key_usage(oid: &str) -> Result<ExtendedKeyUsagePurpose, X509Error> {
    let arcs = parse_oid(oid.trim()).ok_or_else(|| X509Error::InvalidEku(oid.to_owned()))?;
    let dotted = arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    Ok(KNOWN_EKUS
        .iter()
        .find(|(known, _)| *known == dotted)
        .map_or(ExtendedKeyUsagePurpose::Other(arcs), |(_, eku)| eku.clone()))
}

/// Adds calendar months, clamping the day to the target month's length (Jan 31 + 1 = Feb 28/29).
fn add_months(t: OffsetDateTime, months: u32) -> Option<OffsetDateTime> {
    let index = i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1 + i64::from(months);
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let date = Date::from_calendar_date(year, month, t.day().min(month.length(year))).ok()?;
    Some(t.replace_date(date))
}

/// A random positive 16-byte serial whose top byte is non-zero, so it always encodes in 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    SerialNumber::from_slice(&bytes)
}

fn generate_error(e: rcgen::Error) -> X509Error {
    X509Error::Generate(e.to_string())
}

/// The Key Vault `x5t` of a DER certificate: unpadded base64url of its SHA-1 digest.
pub fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der))
}

/// Packs a PKCS#8 key and its chain (leaf first) as one key entry of a PKCS#12 file, the way
/// Key Vault exports certificates: PbeWithShaAnd3KeyTripleDesCbc for key and certificates,
/// HMAC-SHA1 MAC, 2000 iterations. Readable by OpenSSL, .NET and Go's x/crypto/pkcs12.
pub fn build_pfx(
    key_pkcs8: &[u8],
    chain: &[Vec<u8>],
    password: &str,
) -> Result<Vec<u8>, X509Error> {
    let leaf = chain.first().ok_or(X509Error::EmptyChain)?;
    let key =
        p12_keystore::PrivateKey::from_der(key_pkcs8).map_err(|_| X509Error::UnsupportedKey)?;
    let certs = chain
        .iter()
        .map(|der| {
            p12_keystore::Certificate::from_der(der)
                .map_err(|e| X509Error::InvalidCertificate(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let thumbprint = digest(&SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let mut store = KeyStore::new();
    store.add_entry(
        &hex_upper(thumbprint.as_ref()),
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(thumbprint.as_ref(), key, certs)),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .encryption_iterations(PFX_ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .mac_iterations(PFX_ITERATIONS)
        .write()
        .map_err(|e| X509Error::Pfx(e.to_string()))
}

/// PEM text as Key Vault returns it for PEM certificates: the PKCS#8 key as `PRIVATE KEY`,
/// then one `CERTIFICATE` block per chain entry, leaf first.
pub fn build_pem_bundle(key_pkcs8: &[u8], chain: &[Vec<u8>]) -> String {
    let mut out = encode_pem("PRIVATE KEY", key_pkcs8.to_vec());
    for der in chain {
        out.push_str(&encode_pem("CERTIFICATE", der.clone()));
    }
    out
}

fn encode_pem(tag: &str, contents: Vec<u8>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, contents), config)
}

/// A private key with its certificate chain, read from an imported PFX or PEM bundle.
#[derive(Clone)]
pub struct ParsedBundle {
    /// The private key as PKCS#8 DER.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// The private key's kind.
    pub kind: KeyKind,
    /// DER certificates, leaf first, then each issuer found in the bundle; certificates not
    /// linked to the leaf's chain follow in input order.
    pub chain: Vec<Vec<u8>>,
    /// Leaf validity start, Unix seconds.
    pub not_before: i64,
    /// Leaf validity end, Unix seconds.
    pub not_after: i64,
    /// Leaf subject, formatted as by [`cert_info`].
    pub subject: String,
    /// Leaf DNS subject alternative names.
    pub dns_names: Vec<String>,
}

impl fmt::Debug for ParsedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedBundle")
            .field("key_pkcs8", &"<redacted>")
            .field("kind", &self.kind)
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("subject", &self.subject)
            .field("dns_names", &self.dns_names)
            .finish()
    }
}

/// Reads a PKCS#12 file holding exactly one private key and its certificates.
pub fn parse_pfx(der: &[u8], password: &str) -> Result<ParsedBundle, X509Error> {
    let archive = Pkcs12Archive::from_pkcs12(der, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
            X509Error::WrongPassword
        }
        other => X509Error::Pfx(other.to_string()),
    })?;
    let mut keys = archive.keys.into_iter();
    let key = keys.next().ok_or(X509Error::MissingPrivateKey)?;
    if keys.next().is_some() {
        return Err(X509Error::MultiplePrivateKeys);
    }
    let certs = archive
        .certs
        .into_iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    bundle_from_parts(Zeroizing::new(key.key.as_der().to_vec()), certs)
}

/// Reads PEM text holding one private key (`PRIVATE KEY`, or `RSA PRIVATE KEY` / `EC PRIVATE
/// KEY`, converted to PKCS#8) and certificates in any order. `EC PARAMETERS` blocks are skipped;
/// other block types are rejected.
pub fn parse_pem_bundle(pem_text: &str) -> Result<ParsedBundle, X509Error> {
    let blocks = pem::parse_many(pem_text).map_err(|e| {
        X509Error::InvalidPem(match e {
            pem::PemError::MismatchedTags(..) => "mismatched BEGIN and END lines",
            pem::PemError::MissingEndTag => "missing END line",
            pem::PemError::InvalidData(_) => "invalid base64 in a PEM block",
            _ => "malformed PEM block",
        })
    })?;
    if blocks.is_empty() {
        return Err(X509Error::InvalidPem("no PEM block found"));
    }
    let mut key = None;
    let mut certs = Vec::new();
    for block in blocks {
        let tag = block.tag().to_owned();
        let converted = match tag.as_str() {
            "CERTIFICATE" => {
                certs.push(block.into_contents());
                continue;
            }
            "EC PARAMETERS" => continue,
            "PRIVATE KEY" => Zeroizing::new(block.into_contents()),
            "RSA PRIVATE KEY" => pkcs1_to_pkcs8(&Zeroizing::new(block.into_contents()))?,
            "EC PRIVATE KEY" => sec1_to_pkcs8(&Zeroizing::new(block.into_contents()))?,
            _ => return Err(X509Error::UnsupportedPemBlock(tag)),
        };
        if key.replace(converted).is_some() {
            return Err(X509Error::MultiplePrivateKeys);
        }
    }
    bundle_from_parts(key.ok_or(X509Error::MissingPrivateKey)?, certs)
}

fn pkcs1_to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, X509Error> {
    let key = RsaKeyPair::from_der(der).map_err(|_| X509Error::InvalidKey(KeyKind::Rsa))?;
    let pkcs8 = key
        .as_der()
        .map_err(|_| X509Error::InvalidKey(KeyKind::Rsa))?;
    Ok(Zeroizing::new(pkcs8.as_ref().to_vec()))
}

fn sec1_to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, X509Error> {
    EC_KINDS
        .iter()
        .find_map(|(_, alg)| EcdsaKeyPair::from_private_key_der(alg, der).ok())
        .and_then(|key| key.to_pkcs8v1().ok())
        .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
        .ok_or(X509Error::UnsupportedKey)
}

fn bundle_from_parts(
    key_pkcs8: Zeroizing<Vec<u8>>,
    certs: Vec<Vec<u8>>,
) -> Result<ParsedBundle, X509Error> {
    if certs.is_empty() {
        return Err(X509Error::MissingCertificate);
    }
    let (kind, public_key) = inspect_pkcs8(&key_pkcs8)?;
    let chain = order_chain(&public_key, certs)?;
    let info = cert_info(chain.first().ok_or(X509Error::MissingCertificate)?)?;
    Ok(ParsedBundle {
        key_pkcs8,
        kind,
        chain,
        not_before: info.not_before,
        not_after: info.not_after,
        subject: info.subject,
        dns_names: info.dns_names,
    })
}

/// Orders certificates leaf first: the leaf carries `public_key`, then each certificate whose
/// subject is the previous one's issuer, up to a self-signed one. Duplicates are dropped and
/// unlinked certificates are appended in input order.
fn order_chain(public_key: &[u8], certs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, X509Error> {
    struct Node {
        der: Vec<u8>,
        subject: Vec<u8>,
        issuer: Vec<u8>,
        public_key: Vec<u8>,
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(certs.len());
    for der in certs {
        if nodes.iter().any(|n| n.der == der) {
            continue;
        }
        let cert = parse_cert(&der)?;
        let (subject, issuer) = (
            cert.subject().as_raw().to_vec(),
            cert.issuer().as_raw().to_vec(),
        );
        let node_key = cert.public_key().subject_public_key.data.to_vec();
        nodes.push(Node {
            der,
            subject,
            issuer,
            public_key: node_key,
        });
    }
    let leaf = nodes
        .iter()
        .position(|n| n.public_key == public_key)
        .ok_or(X509Error::KeyMismatch)?;
    let mut chain = vec![nodes.remove(leaf)];
    while let Some(last) = chain.last() {
        if last.subject == last.issuer {
            break;
        }
        let Some(next) = nodes.iter().position(|n| n.subject == last.issuer) else {
            break;
        };
        chain.push(nodes.remove(next));
    }
    chain.extend(nodes);
    Ok(chain.into_iter().map(|n| n.der).collect())
}

/// The kind of a PKCS#8 private key (RSA 2048-8192 bit, or EC P-256/P-384/P-521).
pub fn key_kind_of_pkcs8(der: &[u8]) -> Result<KeyKind, X509Error> {
    inspect_pkcs8(der).map(|(kind, _)| kind)
}

/// Kind and public key (as in a certificate's subjectPublicKey BIT STRING) of a PKCS#8 key.
fn inspect_pkcs8(der: &[u8]) -> Result<(KeyKind, Vec<u8>), X509Error> {
    for (kind, alg) in EC_KINDS {
        if let Ok(key) = EcdsaKeyPair::from_pkcs8(alg, der) {
            return Ok((kind, key.public_key().as_ref().to_vec()));
        }
    }
    let key = RsaKeyPair::from_pkcs8(der).map_err(|_| X509Error::UnsupportedKey)?;
    Ok((KeyKind::Rsa, key.public_key().as_ref().to_vec()))
}

/// Facts about a certificate, as Key Vault reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject as `CN=..., O=...` in certificate order; values with separators are quoted, so
    /// the string can be fed back to [`parse_subject`].
    pub subject: String,
    /// Issuer, formatted like `subject`.
    pub issuer: String,
    /// Serial number as uppercase hex of its DER content bytes.
    pub serial_hex: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// E-mail subject alternative names.
    pub emails: Vec<String>,
    /// User principal name subject alternative names.
    pub upns: Vec<String>,
    /// Key usages, as Key Vault names.
    pub key_usage: Vec<String>,
    /// Extended key usages, as dotted OIDs.
    pub ekus: Vec<String>,
    /// Whether basic constraints mark the certificate as a CA.
    pub is_ca: bool,
}

/// Reads the facts Key Vault reports about a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, X509Error> {
    let cert = parse_cert(der)?;
    let invalid = |e: x509_parser::error::X509Error| X509Error::InvalidCertificate(e.to_string());
    let (mut dns_names, mut emails, mut upns) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(invalid)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                GeneralName::RFC822Name(n) => emails.push((*n).to_owned()),
                GeneralName::OtherName(oid, value)
                    if oid.iter().is_some_and(|a| a.eq(UPN_OID.iter().copied())) =>
                {
                    upns.extend(other_name_utf8(value));
                }
                _ => {}
            }
        }
    }
    // x509-parser keeps key usage bit i (RFC 5280 order, as in KEY_USAGES) at `1 << i`.
    let flags = cert
        .key_usage()
        .map_err(invalid)?
        .map_or(0, |ku| ku.value.flags);
    let key_usage = (0..)
        .zip(KEY_USAGES)
        .filter(|(bit, _)| flags >> bit & 1 == 1)
        .map(|(_, (name, _))| (*name).to_owned())
        .collect();
    let ekus = match cert.extended_key_usage().map_err(invalid)? {
        Some(eku) => {
            let eku = eku.value;
            let flags = [
                eku.any,
                eku.server_auth,
                eku.client_auth,
                eku.code_signing,
                eku.email_protection,
                eku.time_stamping,
                eku.ocsp_signing,
            ];
            let known = KNOWN_EKUS.iter().zip(flags).filter(|(_, on)| *on);
            let known = known.map(|((oid, _), _)| (*oid).to_owned());
            known
                .chain(eku.other.iter().map(|oid| oid.to_id_string()))
                .collect()
        }
        None => Vec::new(),
    };
    Ok(CertInfo {
        subject: format_name(cert.subject()),
        issuer: format_name(cert.issuer()),
        serial_hex: hex_upper(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        emails,
        upns,
        key_usage,
        ekus,
        is_ca: cert.is_ca(),
    })
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509Error::InvalidCertificate(
            "trailing data after certificate".to_owned(),
        )),
        Err(e) => Err(X509Error::InvalidCertificate(e.to_string())),
    }
}

/// The UTF8String inside an `otherName` value (`[0] EXPLICIT UTF8String`).
fn other_name_utf8(value: &[u8]) -> Option<String> {
    let (_, explicit) = Any::from_der(value).ok()?;
    let (_, inner) = Any::from_der(explicit.data).ok()?;
    (inner.tag() == Tag::Utf8String)
        .then(|| std::str::from_utf8(inner.data).ok().map(str::to_owned))
        .flatten()
}

fn format_name(name: &X509Name<'_>) -> String {
    let attribute = |atv: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        let arcs: Option<Vec<u64>> = atv.attr_type().iter().map(Iterator::collect);
        let label = arcs
            .and_then(|arcs| {
                SUBJECT_ATTRIBUTES
                    .iter()
                    .find(|(_, oid, _)| *oid == arcs.as_slice())
            })
            .and_then(|(names, _, _)| names.first())
            .map_or_else(|| atv.attr_type().to_id_string(), |n| (*n).to_owned());
        let value = match atv.as_str() {
            Ok(v) => quote_value(v),
            Err(_) => format!("#{}", hex_upper(atv.as_slice())),
        };
        format!("{label}={value}")
    };
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join(" + "))
        .collect();
    rdns.join(", ")
}

fn quote_value(v: &str) -> String {
    let special = v.contains([',', ';', '+', '"', '\\'])
        || v.starts_with(char::is_whitespace)
        || v.ends_with(char::is_whitespace);
    if special {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_owned()
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P521_SHA512_ASN1,
        RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey, VerificationAlgorithm,
    };
    use x509_parser::extensions::ParsedExtension;

    use super::*;

    fn rsa_key() -> Vec<u8> {
        static KEY: OnceLock<Vec<u8>> = OnceLock::new();
        KEY.get_or_init(|| {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            key.as_der().unwrap().as_ref().to_vec()
        })
        .clone()
    }

    fn ec_key(kind: KeyKind) -> Vec<u8> {
        let (_, alg) = EC_KINDS.iter().find(|(k, _)| *k == kind).unwrap();
        EcdsaKeyPair::generate(alg)
            .unwrap()
            .to_pkcs8v1()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn request() -> CertRequest {
        CertRequest {
            subject: "CN=www.example.com, O=Contoso, OU=IT, C=US, L=Seattle, ST=WA".into(),
            dns_names: vec!["www.example.com".into(), "example.com".into()],
            emails: vec!["admin@example.com".into()],
            upns: vec!["user@contoso.com".into()],
            validity_months: 12,
            key_usage: vec!["digitalSignature".into(), "keyEncipherment".into()],
            ekus: vec![
                "1.3.6.1.5.5.7.3.1".into(),
                "1.3.6.1.5.5.7.3.2".into(),
                "1.2.3.4.5".into(),
            ],
        }
    }

    /// Whether `child`'s signature verifies with `issuer`'s public key under `alg`.
    fn signed_by(child: &[u8], issuer: &[u8], alg: &'static dyn VerificationAlgorithm) -> bool {
        let child = parse_cert(child).unwrap();
        let issuer = parse_cert(issuer).unwrap();
        UnparsedPublicKey::new(alg, issuer.public_key().subject_public_key.data.as_ref())
            .verify(
                child.tbs_certificate.as_ref(),
                child.signature_value.data.as_ref(),
            )
            .is_ok()
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn issues_self_signed_certificates_for_every_key_kind() {
        let kinds: [(KeyKind, Vec<u8>, &'static dyn VerificationAlgorithm); 4] = [
            (KeyKind::Rsa, rsa_key(), &RSA_PKCS1_2048_8192_SHA256),
            (
                KeyKind::EcP256,
                ec_key(KeyKind::EcP256),
                &ECDSA_P256_SHA256_ASN1,
            ),
            (
                KeyKind::EcP384,
                ec_key(KeyKind::EcP384),
                &ECDSA_P384_SHA384_ASN1,
            ),
            (
                KeyKind::EcP521,
                ec_key(KeyKind::EcP521),
                &ECDSA_P521_SHA512_ASN1,
            ),
        ];
        for (kind, key, alg) in kinds {
            assert_eq!(key_kind_of_pkcs8(&key).unwrap(), kind);
            let issued = issue(&request(), &key, kind, None).unwrap();
            assert_eq!(issued.chain.len(), 1, "{kind:?}");
            let leaf = issued.leaf();
            assert!(signed_by(leaf, leaf, alg), "{kind:?} self-signature");

            let info = cert_info(leaf).unwrap();
            assert_eq!(
                info.subject,
                "CN=www.example.com, O=Contoso, OU=IT, C=US, L=Seattle, ST=WA"
            );
            assert_eq!(info.issuer, info.subject);
            assert_eq!(info.dns_names, ["www.example.com", "example.com"]);
            assert_eq!(info.emails, ["admin@example.com"]);
            assert_eq!(info.upns, ["user@contoso.com"]);
            assert_eq!(info.key_usage, ["digitalSignature", "keyEncipherment"]);
            assert_eq!(
                info.ekus,
                ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2", "1.2.3.4.5"]
            );
            assert!(!info.is_ca);
            assert_eq!(info.serial_hex, issued.serial);
            assert_eq!(issued.serial.len(), 32);
            assert_eq!(
                (info.not_before, info.not_after),
                (issued.not_before, issued.not_after)
            );
            assert!((now() - 310..=now() - 290).contains(&issued.not_before));
            let lifetime = issued.not_after - now();
            assert!(
                (365 * 86_400 - 60..=366 * 86_400 + 60).contains(&lifetime),
                "{lifetime}"
            );

            // The certificate carries the caller's key, and C is a PrintableString.
            let cert = parse_cert(leaf).unwrap();
            let (_, public_key) = inspect_pkcs8(&key).unwrap();
            assert_eq!(
                cert.public_key().subject_public_key.data.as_ref(),
                public_key
            );
            let country = cert.subject().iter_country().next().unwrap();
            assert_eq!(country.attr_value().tag(), Tag::PrintableString);
        }
    }

    #[test]
    fn ca_issued_leaf_chains_to_intermediate_and_root() {
        let ca = TestCa::generate("Mock Vault Test").unwrap();
        let issued = issue(&request(), &rsa_key(), KeyKind::Rsa, Some(&ca)).unwrap();
        assert_eq!(issued.chain.len(), 3);
        assert_eq!(issued.chain[1..], ca.chain_der());
        let (leaf, intermediate, root) = (&issued.chain[0], &issued.chain[1], &issued.chain[2]);

        let (leaf_info, int_info, root_info) = (
            cert_info(leaf).unwrap(),
            cert_info(intermediate).unwrap(),
            cert_info(root).unwrap(),
        );
        assert_eq!(leaf_info.issuer, "CN=Mock Vault Test Intermediate CA");
        assert_eq!(int_info.subject, leaf_info.issuer);
        assert_eq!(int_info.issuer, "CN=Mock Vault Test Root CA");
        assert_eq!(
            (root_info.subject.as_str(), root_info.issuer.as_str()),
            (int_info.issuer.as_str(), int_info.issuer.as_str())
        );
        assert!(!leaf_info.is_ca && int_info.is_ca && root_info.is_ca);
        assert!(root_info.not_after >= leaf_info.not_after);

        assert!(signed_by(leaf, intermediate, &ECDSA_P256_SHA256_ASN1));
        assert!(signed_by(intermediate, root, &ECDSA_P256_SHA256_ASN1));
        assert!(signed_by(root, root, &ECDSA_P256_SHA256_ASN1));
        assert!(!signed_by(leaf, root, &ECDSA_P256_SHA256_ASN1));

        // The leaf's authority key identifier names the intermediate's key.
        let key_id = |der: &[u8], want_authority: bool| {
            parse_cert(der).unwrap().iter_extensions().find_map(|ext| {
                match ext.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(aki) if want_authority => {
                        aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                    }
                    ParsedExtension::SubjectKeyIdentifier(ski) if !want_authority => {
                        Some(ski.0.to_vec())
                    }
                    _ => None,
                }
            })
        };
        assert!(key_id(leaf, true).is_some());
        assert_eq!(key_id(leaf, true), key_id(intermediate, false));
        let path_len = parse_cert(intermediate)
            .unwrap()
            .basic_constraints()
            .unwrap()
            .unwrap()
            .value
            .path_len_constraint;
        assert_eq!(path_len, Some(0));

        assert_eq!(
            pem::parse(ca.root_pem()).unwrap().contents(),
            root.as_slice()
        );
        assert!(!format!("{ca:?}").contains("signing_key"));
    }

    #[test]
    fn pfx_round_trips_key_and_chain() {
        let ca = TestCa::generate("Pfx").unwrap();
        let key = rsa_key();
        let issued = issue(&request(), &key, KeyKind::Rsa, Some(&ca)).unwrap();
        let pfx = build_pfx(&key, &issued.chain, "s3cret").unwrap();
        let parsed = parse_pfx(&pfx, "s3cret").unwrap();
        assert_eq!(parsed.key_pkcs8.as_slice(), key.as_slice());
        assert_eq!(parsed.kind, KeyKind::Rsa);
        assert_eq!(parsed.chain, issued.chain);
        assert_eq!(
            parsed.subject,
            "CN=www.example.com, O=Contoso, OU=IT, C=US, L=Seattle, ST=WA"
        );
        assert_eq!(parsed.dns_names, ["www.example.com", "example.com"]);
        assert_eq!(
            (parsed.not_before, parsed.not_after),
            (issued.not_before, issued.not_after)
        );

        // Key Vault's own PFX secrets have an empty password.
        let ec = ec_key(KeyKind::EcP384);
        let self_signed = issue(&request(), &ec, KeyKind::EcP384, None).unwrap();
        let parsed = parse_pfx(&build_pfx(&ec, &self_signed.chain, "").unwrap(), "").unwrap();
        assert_eq!(
            (parsed.kind, parsed.chain),
            (KeyKind::EcP384, self_signed.chain)
        );
    }

    #[test]
    fn pfx_with_wrong_password_is_rejected() {
        let key = ec_key(KeyKind::EcP256);
        let issued = issue(&request(), &key, KeyKind::EcP256, None).unwrap();
        let pfx = build_pfx(&key, &issued.chain, "right").unwrap();
        assert!(matches!(
            parse_pfx(&pfx, "wrong"),
            Err(X509Error::WrongPassword)
        ));
        assert!(matches!(parse_pfx(&pfx, ""), Err(X509Error::WrongPassword)));
    }

    #[test]
    fn pem_bundle_round_trips_and_orders_shuffled_chains() {
        let ca = TestCa::generate("Pem").unwrap();
        let key = ec_key(KeyKind::EcP256);
        let issued = issue(&request(), &key, KeyKind::EcP256, Some(&ca)).unwrap();

        let bundle = build_pem_bundle(&key, &issued.chain);
        assert!(bundle.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(bundle.matches("-----BEGIN CERTIFICATE-----").count(), 3);
        let parsed = parse_pem_bundle(&bundle).unwrap();
        assert_eq!(
            (parsed.key_pkcs8.as_slice(), parsed.kind),
            (key.as_slice(), KeyKind::EcP256)
        );
        assert_eq!(parsed.chain, issued.chain);

        let cert_pem = |i: usize| encode_pem("CERTIFICATE", issued.chain[i].clone());
        let shuffled = [
            cert_pem(2),
            cert_pem(0),
            encode_pem("PRIVATE KEY", key.clone()),
            cert_pem(1),
            cert_pem(0),
        ]
        .concat();
        let parsed = parse_pem_bundle(&shuffled).unwrap();
        assert_eq!(parsed.chain, issued.chain);
        assert_eq!(parsed.subject, cert_info(issued.leaf()).unwrap().subject);
    }

    /// The inner key of a PKCS#8 PrivateKeyInfo: PKCS#1 for RSA, SEC1 for EC.
    fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
        let (_, outer) = Any::from_der(pkcs8).unwrap();
        let (rest, _version) = Any::from_der(outer.data).unwrap();
        let (rest, _algorithm) = Any::from_der(rest).unwrap();
        let (_, key) = Any::from_der(rest).unwrap();
        key.data.to_vec()
    }

    #[test]
    fn pem_bundle_accepts_pkcs1_and_sec1_keys() {
        for (kind, key, tag) in [
            (KeyKind::Rsa, rsa_key(), "RSA PRIVATE KEY"),
            (KeyKind::EcP384, ec_key(KeyKind::EcP384), "EC PRIVATE KEY"),
            (KeyKind::EcP521, ec_key(KeyKind::EcP521), "EC PRIVATE KEY"),
        ] {
            let issued = issue(&request(), &key, kind, None).unwrap();
            let text = [
                encode_pem(tag, pkcs8_inner(&key)),
                encode_pem("CERTIFICATE", issued.leaf().to_vec()),
            ]
            .concat();
            let parsed = parse_pem_bundle(&text).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(
                inspect_pkcs8(&parsed.key_pkcs8).unwrap(),
                inspect_pkcs8(&key).unwrap()
            );
            assert_eq!(parsed.chain, issued.chain);
        }
    }

    #[test]
    fn x5t_is_base64url_sha1() {
        // SHA-1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d (FIPS 180-1 test vector).
        assert_eq!(x5t(b"abc"), "qZk-NkcGgWq6PiVxeFDCbJzQ2J0");
        let issued = issue(&request(), &ec_key(KeyKind::EcP256), KeyKind::EcP256, None).unwrap();
        let thumbprint = x5t(issued.leaf());
        assert_eq!(thumbprint.len(), 27);
        assert!(
            thumbprint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn parses_subjects_with_quotes_escapes_and_aliases() {
        let dn = parse_subject(r#" CN = "Contoso, Ltd" ; o=A\, B ;E=pki@example.com, DC=example,S=WA, OID.2.5.4.5=42 "#).unwrap();
        let entries: Vec<_> = dn.iter().map(|(t, v)| (t.clone(), v.clone())).collect();
        let custom = |oid: &[u64]| DnType::CustomDnType(oid.to_vec());
        assert_eq!(
            entries,
            [
                (
                    DnType::CommonName,
                    DnValue::Utf8String("Contoso, Ltd".into())
                ),
                (DnType::OrganizationName, DnValue::Utf8String("A, B".into())),
                (
                    custom(&[1, 2, 840, 113_549, 1, 9, 1]),
                    DnValue::Ia5String("pki@example.com".try_into().unwrap())
                ),
                (
                    custom(&[0, 9, 2342, 19_200_300, 100, 1, 25]),
                    DnValue::Ia5String("example".try_into().unwrap())
                ),
                (
                    DnType::StateOrProvinceName,
                    DnValue::Utf8String("WA".into())
                ),
                (custom(&[2, 5, 4, 5]), DnValue::Utf8String("42".into())),
            ]
        );

        // Subjects read back from a certificate parse to the same name.
        let mut req = request();
        req.subject = r#"CN="Contoso, Ltd", O=A\"B, E=pki@example.com, DC=example"#.into();
        let issued = issue(&req, &ec_key(KeyKind::EcP256), KeyKind::EcP256, None).unwrap();
        let subject = cert_info(issued.leaf()).unwrap().subject;
        assert_eq!(
            subject,
            r#"CN="Contoso, Ltd", O="A\"B", E=pki@example.com, DC=example"#
        );
        assert_eq!(
            parse_subject(&subject).unwrap(),
            parse_subject(&req.subject).unwrap()
        );
    }

    #[test]
    fn rejects_bad_subjects() {
        let err = |s: &str| parse_subject(s).unwrap_err();
        assert!(matches!(err("XX=1"), X509Error::UnknownSubjectAttribute(a) if a == "XX"));
        assert!(matches!(err("CN=a, cn=b"), X509Error::DuplicateSubjectAttribute(a) if a == "cn"));
        for bad in [
            "",
            "   ",
            "CN",
            "CN=",
            "CN=a,",
            "CN=\"open",
            "CN=\"a\" b",
            "C=USA",
            "E=é@example.com",
            "=x",
            "CN=a\\",
        ] {
            assert!(
                matches!(err(bad), X509Error::InvalidSubject(_)),
                "{bad:?}: {:?}",
                err(bad)
            );
        }
        assert!(matches!(
            err("1.x=y"),
            X509Error::UnknownSubjectAttribute(_)
        ));
        assert!(matches!(
            err("3.1=y"),
            X509Error::UnknownSubjectAttribute(_)
        ));
        assert!(parse_subject("1.2=x").is_ok());
    }

    #[test]
    fn rejects_bad_requests() {
        let key = ec_key(KeyKind::EcP256);
        let with = |change: fn(&mut CertRequest)| {
            let mut req = request();
            change(&mut req);
            issue(&req, &key, KeyKind::EcP256, None).unwrap_err()
        };
        assert!(matches!(
            with(|r| r.validity_months = 0),
            X509Error::InvalidValidity(0)
        ));
        assert!(matches!(
            with(|r| r.validity_months = MAX_VALIDITY_MONTHS + 1),
            X509Error::InvalidValidity(_)
        ));
        assert!(matches!(
            with(|r| r.key_usage.push("sign".into())),
            X509Error::UnknownKeyUsage(_)
        ));
        assert!(matches!(
            with(|r| r.ekus.push("serverAuth".into())),
            X509Error::InvalidEku(_)
        ));
        assert!(matches!(
            with(|r| r.dns_names.push("bücher.example".into())),
            X509Error::InvalidSan { kind: "dns", .. }
        ));
        assert!(matches!(
            with(|r| r.subject = "Nope=1".into()),
            X509Error::UnknownSubjectAttribute(_)
        ));
        // A key of another kind than declared.
        assert!(matches!(
            issue(&request(), &key, KeyKind::Rsa, None),
            Err(X509Error::InvalidKey(KeyKind::Rsa))
        ));
        assert!(matches!(
            issue(&request(), &key, KeyKind::EcP384, None),
            Err(X509Error::InvalidKey(_))
        ));
        assert!(matches!(
            issue(&request(), b"junk", KeyKind::EcP256, None),
            Err(X509Error::InvalidKey(_))
        ));
    }

    #[test]
    fn malformed_inputs_give_errors() {
        let key = ec_key(KeyKind::EcP256);
        let issued = issue(&request(), &key, KeyKind::EcP256, None).unwrap();
        let key_pem = encode_pem("PRIVATE KEY", key.clone());
        let cert_pem = encode_pem("CERTIFICATE", issued.leaf().to_vec());

        assert!(matches!(
            parse_pfx(b"garbage", "pw"),
            Err(X509Error::Pfx(_))
        ));
        assert!(matches!(parse_pfx(&[], ""), Err(X509Error::Pfx(_))));
        assert!(matches!(
            cert_info(b"garbage"),
            Err(X509Error::InvalidCertificate(_))
        ));
        assert!(matches!(
            cert_info(&[issued.leaf(), b"x"].concat()),
            Err(X509Error::InvalidCertificate(_))
        ));
        assert!(matches!(
            key_kind_of_pkcs8(b"garbage"),
            Err(X509Error::UnsupportedKey)
        ));
        assert!(matches!(
            build_pfx(&key, &[], "pw"),
            Err(X509Error::EmptyChain)
        ));
        assert!(matches!(
            build_pfx(b"junk", &issued.chain, "pw"),
            Err(X509Error::UnsupportedKey)
        ));
        assert!(matches!(
            build_pfx(&key, &[b"junk".to_vec()], "pw"),
            Err(X509Error::InvalidCertificate(_))
        ));

        assert!(matches!(
            parse_pem_bundle(""),
            Err(X509Error::InvalidPem(_))
        ));
        assert!(matches!(
            parse_pem_bundle("not pem at all"),
            Err(X509Error::InvalidPem(_))
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_pem_bundle(broken),
            Err(X509Error::InvalidPem(_))
        ));
        assert!(matches!(
            parse_pem_bundle(&cert_pem),
            Err(X509Error::MissingPrivateKey)
        ));
        assert!(matches!(
            parse_pem_bundle(&key_pem),
            Err(X509Error::MissingCertificate)
        ));
        assert!(matches!(
            parse_pem_bundle(&[key_pem.clone(), key_pem.clone(), cert_pem.clone()].concat()),
            Err(X509Error::MultiplePrivateKeys)
        ));
        let encrypted = encode_pem("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]);
        assert!(
            matches!(parse_pem_bundle(&[encrypted, cert_pem.clone()].concat()), Err(X509Error::UnsupportedPemBlock(t)) if t == "ENCRYPTED PRIVATE KEY")
        );
        let garbage_key = encode_pem("PRIVATE KEY", b"junk".to_vec());
        assert!(matches!(
            parse_pem_bundle(&[garbage_key, cert_pem.clone()].concat()),
            Err(X509Error::UnsupportedKey)
        ));
        let garbage_cert = encode_pem("CERTIFICATE", b"junk".to_vec());
        assert!(matches!(
            parse_pem_bundle(&[key_pem.clone(), garbage_cert].concat()),
            Err(X509Error::InvalidCertificate(_))
        ));

        // A key that matches no certificate in the bundle, via PEM and PFX.
        let other = encode_pem("PRIVATE KEY", ec_key(KeyKind::EcP256));
        assert!(matches!(
            parse_pem_bundle(&[other, cert_pem].concat()),
            Err(X509Error::KeyMismatch)
        ));
        let mismatched = build_pfx(&ec_key(KeyKind::EcP256), &issued.chain, "pw").unwrap();
        assert!(matches!(
            parse_pfx(&mismatched, "pw"),
            Err(X509Error::KeyMismatch)
        ));
    }

    #[test]
    fn debug_output_hides_key_material() {
        let key = ec_key(KeyKind::EcP256);
        let issued = issue(&request(), &key, KeyKind::EcP256, None).unwrap();
        let parsed = parse_pem_bundle(&build_pem_bundle(&key, &issued.chain)).unwrap();
        let debug = format!("{parsed:?}");
        assert!(debug.contains("<redacted>") && debug.contains("www.example.com"));
        let key_start = format!("{:?}", &key[..6]);
        assert!(!debug.contains(key_start.trim_matches(['[', ']'])));
        let ca = TestCa::generate("Debug").unwrap();
        assert_eq!(format!("{ca:?}").matches("x5t").count(), 2);
    }

    #[test]
    fn test_ca_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TestCa>();
        assert_send_sync::<ParsedBundle>();
    }

    #[test]
    fn adds_calendar_months_clamping_the_day() {
        let t = |y, m, d| {
            Date::from_calendar_date(y, m, d)
                .unwrap()
                .midnight()
                .assume_utc()
        };
        assert_eq!(
            add_months(t(2024, Month::January, 31), 1),
            Some(t(2024, Month::February, 29))
        );
        assert_eq!(
            add_months(t(2023, Month::November, 15), 14),
            Some(t(2025, Month::January, 15))
        );
        assert_eq!(
            add_months(t(2024, Month::March, 1), 1200),
            Some(t(2124, Month::March, 1))
        );
    }
}
