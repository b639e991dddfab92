//! Key material and the cryptographic operations Key Vault performs with it.
//!
//! Pure code: no I/O. Every key is real (aws-lc-rs, the provider already under the Azure
//! SDK's TLS stack), so SDKs that encrypt or verify locally with the public key (Python's
//! `CryptographyClient`, for instance) interoperate with what the vault decrypts or signs.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_128, AES_256, KeyEncryptionKey, KeyWrap};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    self, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaEncoding, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::SecretString;

/// Errors from key generation and key operations. Messages name the problem, never key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The key type, size or curve is not one Key Vault offers.
    #[error("{0}")]
    Unsupported(String),
    /// The algorithm cannot be used with this key (e.g. `A256GCM` on an RSA key).
    #[error("algorithm {alg} is not valid for a key of type {kty}")]
    WrongAlgorithm {
        /// Requested algorithm.
        alg: String,
        /// The key's type.
        kty: &'static str,
    },
    /// Input to an operation was malformed or out of range.
    #[error("{0}")]
    BadInput(String),
    /// Decryption or unwrapping failed: wrong key, tampered data or wrong parameters.
    #[error("the ciphertext could not be decrypted with this key")]
    DecryptFailed,
    /// The crypto library refused the key or the operation.
    #[error("the cryptographic operation failed")]
    Internal,
}

type Result<T> = std::result::Result<T, CryptoError>;

/// Key Vault `kty` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// Software RSA key.
    #[serde(rename = "RSA")]
    Rsa,
    /// HSM-protected RSA key.
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    /// Software elliptic-curve key.
    #[serde(rename = "EC")]
    Ec,
    /// HSM-protected elliptic-curve key.
    #[serde(rename = "EC-HSM")]
    EcHsm,
    /// Symmetric key.
    #[serde(rename = "oct")]
    Oct,
    /// HSM-protected symmetric key.
    #[serde(rename = "oct-HSM")]
    OctHsm,
}

impl KeyType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::RsaHsm => "RSA-HSM",
            Self::Ec => "EC",
            Self::EcHsm => "EC-HSM",
            Self::Oct => "oct",
            Self::OctHsm => "oct-HSM",
        }
    }

    /// Parses a wire name (Key Vault accepts them case-insensitively).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Rsa,
            Self::RsaHsm,
            Self::Ec,
            Self::EcHsm,
            Self::Oct,
            Self::OctHsm,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// The operations a new key of this type allows when the request names none.
    pub fn default_ops(self) -> Vec<String> {
        let ops: &[&str] = match self {
            Self::Rsa | Self::RsaHsm => &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ],
            Self::Ec | Self::EcHsm => &["sign", "verify"],
            Self::Oct | Self::OctHsm => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        };
        ops.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// Elliptic curves Key Vault offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256.
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::P256, Self::P384, Self::P521]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// The public half of a key, as JWK fields (binary fields raw; the caller encodes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicJwk {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// EC point coordinates.
    Ec {
        /// The curve.
        crv: Curve,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// Symmetric keys have no public part.
    Oct,
}

/// Output of an encrypt or wrap operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Ciphertext.
    pub value: Vec<u8>,
    /// Initialisation vector the service chose (AES-GCM).
    pub iv: Option<Vec<u8>>,
    /// Authentication tag (AES-GCM).
    pub tag: Option<Vec<u8>>,
}

/// Parameters of a decrypt/unwrap operation beyond the ciphertext.
#[derive(Debug, Clone, Default)]
pub struct OpenParams<'a> {
    /// Initialisation vector (AES-GCM).
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data (AES-GCM).
    pub aad: Option<&'a [u8]>,
    /// Authentication tag (AES-GCM).
    pub tag: Option<&'a [u8]>,
}

/// Private key material of one key version. Never printed; zeroized on drop.
pub enum Material {
    /// An RSA key pair.
    Rsa(RsaMaterial),
    /// An EC key pair.
    Ec(EcMaterial),
    /// A symmetric key.
    Oct(Zeroizing<Vec<u8>>),
}

/// RSA key pair, parsed once for signing and once for decryption.
pub struct RsaMaterial {
    pkcs8: Zeroizing<Vec<u8>>,
    signing: rsa::KeyPair,
    decrypting: PrivateDecryptingKey,
}

/// EC key pair.
pub struct EcMaterial {
    curve: Curve,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa(r) => write!(f, "Material::Rsa({} bits, [redacted])", r.bits()),
            Self::Ec(e) => write!(f, "Material::Ec({}, [redacted])", e.curve.as_str()),
            Self::Oct(k) => write!(f, "Material::Oct({} bits, [redacted])", k.len() * 8),
        }
    }
}

impl fmt::Debug for RsaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaMaterial({} bits, [redacted])", self.bits())
    }
}

impl fmt::Debug for EcMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcMaterial({}, [redacted])", self.curve.as_str())
    }
}

impl RsaMaterial {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let signing = rsa::KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| CryptoError::BadInput("not a valid RSA PKCS#8 private key".into()))?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .map_err(|_| CryptoError::BadInput("not a valid RSA PKCS#8 private key".into()))?;
        Ok(Self {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            signing,
            decrypting,
        })
    }

    fn bits(&self) -> usize {
        self.signing.public_modulus_len() * 8
    }

    fn public_der(&self) -> &[u8] {
        self.signing.public_key().as_ref()
    }
}

impl EcMaterial {
    fn from_pkcs8(curve: Curve, pkcs8: &[u8]) -> Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8).map_err(|_| {
            CryptoError::BadInput(format!("not a valid {} PKCS#8 private key", curve.as_str()))
        })?;
        Ok(Self {
            curve,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            pair,
        })
    }
}

/// What a caller asks to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Key type.
    pub kty: KeyType,
    /// RSA modulus bits or symmetric key bits.
    pub size: Option<u32>,
    /// EC curve.
    pub curve: Option<Curve>,
}

/// The persisted form of a key: the key type plus PKCS#8 (asymmetric) or raw bytes (oct).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMaterial {
    /// `rsa`, `ec` or `oct`.
    pub family: String,
    /// Curve for EC keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    /// base64 (standard) of PKCS#8 or raw key bytes.
    pub der: SecretString,
}

impl Material {
    /// Generates fresh key material.
    pub fn generate(spec: KeySpec) -> Result<Self> {
        match spec.kty {
            KeyType::Rsa | KeyType::RsaHsm => {
                let size = match spec.size.unwrap_or(2048) {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    other => {
                        return Err(CryptoError::Unsupported(format!(
                            "RSA key size {other} is not supported; use 2048, 3072 or 4096"
                        )));
                    }
                };
                let pair = rsa::KeyPair::generate(size).map_err(|_| CryptoError::Internal)?;
                let der = pair.as_der().map_err(|_| CryptoError::Internal)?;
                Ok(Self::Rsa(RsaMaterial::from_pkcs8(der.as_ref())?))
            }
            KeyType::Ec | KeyType::EcHsm => {
                let curve = spec.curve.unwrap_or(Curve::P256);
                let pair =
                    EcdsaKeyPair::generate(curve.signing()).map_err(|_| CryptoError::Internal)?;
                let der = pair.to_pkcs8v1().map_err(|_| CryptoError::Internal)?;
                Ok(Self::Ec(EcMaterial::from_pkcs8(curve, der.as_ref())?))
            }
            KeyType::Oct | KeyType::OctHsm => {
                let bits = spec.size.unwrap_or(256);
                if !matches!(bits, 128 | 192 | 256) {
                    return Err(CryptoError::Unsupported(format!(
                        "symmetric key size {bits} is not supported; use 128, 192 or 256"
                    )));
                }
                let mut key = Zeroizing::new(vec![0u8; bits as usize / 8]);
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| CryptoError::Internal)?;
                Ok(Self::Oct(key))
            }
        }
    }

    /// Wraps existing PKCS#8 material (certificate keys are made by the certificate code).
    pub fn from_pkcs8(kty: KeyType, curve: Option<Curve>, pkcs8: &[u8]) -> Result<Self> {
        match kty {
            KeyType::Rsa | KeyType::RsaHsm => Ok(Self::Rsa(RsaMaterial::from_pkcs8(pkcs8)?)),
            KeyType::Ec | KeyType::EcHsm => Ok(Self::Ec(EcMaterial::from_pkcs8(
                curve.unwrap_or(Curve::P256),
                pkcs8,
            )?)),
            KeyType::Oct | KeyType::OctHsm => Err(CryptoError::Unsupported(
                "symmetric keys have no PKCS#8 form".into(),
            )),
        }
    }

    /// Imports a symmetric key.
    pub fn from_oct(bytes: &[u8]) -> Result<Self> {
        if !matches!(bytes.len(), 16 | 24 | 32) {
            return Err(CryptoError::Unsupported(
                "symmetric keys must be 128, 192 or 256 bits".into(),
            ));
        }
        Ok(Self::Oct(Zeroizing::new(bytes.to_vec())))
    }

    /// PKCS#8 DER of an asymmetric key (for certificates and persistence).
    pub fn pkcs8(&self) -> Option<&[u8]> {
        match self {
            Self::Rsa(r) => Some(&r.pkcs8),
            Self::Ec(e) => Some(&e.pkcs8),
            Self::Oct(_) => None,
        }
    }

    /// Key size in bits (RSA modulus, EC field, or symmetric key).
    pub fn bits(&self) -> usize {
        match self {
            Self::Rsa(r) => r.bits(),
            Self::Ec(e) => match e.curve {
                Curve::P256 => 256,
                Curve::P384 => 384,
                Curve::P521 => 521,
            },
            Self::Oct(k) => k.len() * 8,
        }
    }

    /// The family name used in `kty` errors.
    fn family(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RSA",
            Self::Ec(_) => "EC",
            Self::Oct(_) => "oct",
        }
    }

    /// Persisted form.
    pub fn to_stored(&self) -> StoredMaterial {
        use base64::Engine as _;
        let (family, crv, bytes): (&str, Option<Curve>, &[u8]) = match self {
            Self::Rsa(r) => ("rsa", None, &r.pkcs8),
            Self::Ec(e) => ("ec", Some(e.curve), &e.pkcs8),
            Self::Oct(k) => ("oct", None, k),
        };
        StoredMaterial {
            family: family.to_owned(),
            crv,
            der: SecretString::new(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// Restores the persisted form.
    pub fn from_stored(stored: &StoredMaterial) -> Result<Self> {
        use base64::Engine as _;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(stored.der.expose().as_bytes())
                .map_err(|_| CryptoError::BadInput("stored key is not base64".into()))?,
        );
        match stored.family.as_str() {
            "rsa" => Self::from_pkcs8(KeyType::Rsa, None, &bytes),
            "ec" => Self::from_pkcs8(KeyType::Ec, stored.crv, &bytes),
            "oct" => Self::from_oct(&bytes),
            other => Err(CryptoError::BadInput(format!(
                "stored key has unknown family {other:?}"
            ))),
        }
    }

    /// The public half, for the JWK in key bundles.
    pub fn public_jwk(&self) -> PublicJwk {
        match self {
            Self::Rsa(r) => {
                let public = r.signing.public_key();
                PublicJwk::Rsa {
                    n: public.modulus().big_endian_without_leading_zero().to_vec(),
                    e: public.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            Self::Ec(e) => {
                // Uncompressed SEC1 point: 0x04 || X || Y.
                let point = e.pair.public_key().as_ref();
                let len = e.curve.coordinate_len();
                let x = point.get(1..1 + len).unwrap_or_default().to_vec();
                let y = point.get(1 + len..1 + 2 * len).unwrap_or_default().to_vec();
                PublicJwk::Ec { crv: e.curve, x, y }
            }
            Self::Oct(_) => PublicJwk::Oct,
        }
    }

    /// `encrypt` (and `wrapKey` for the RSA algorithms).
    pub fn encrypt(&self, alg: &str, plaintext: &[u8], aad: Option<&[u8]>) -> Result<Sealed> {
        match (self, alg) {
            (Self::Rsa(r), _) => {
                let public = r.decrypting.public_key();
                let mut out = vec![0u8; public.key_size_bytes()];
                let written = match rsa_padding(alg) {
                    Some(RsaPadding::Oaep(oaep)) => {
                        let key = OaepPublicEncryptingKey::new(public)
                            .map_err(|_| CryptoError::Internal)?;
                        if plaintext.len() > key.max_plaintext_size(oaep) {
                            return Err(too_long(alg, key.max_plaintext_size(oaep)));
                        }
                        key.encrypt(oaep, plaintext, &mut out, None)
                            .map_err(|_| CryptoError::Internal)?
                            .len()
                    }
                    Some(RsaPadding::Pkcs1) => {
                        let key = Pkcs1PublicEncryptingKey::new(public)
                            .map_err(|_| CryptoError::Internal)?;
                        if plaintext.len() > key.max_plaintext_size() {
                            return Err(too_long(alg, key.max_plaintext_size()));
                        }
                        key.encrypt(plaintext, &mut out)
                            .map_err(|_| CryptoError::Internal)?
                            .len()
                    }
                    None => return Err(wrong_alg(alg, self)),
                };
                out.truncate(written);
                Ok(Sealed {
                    value: out,
                    iv: None,
                    tag: None,
                })
            }
            (Self::Oct(k), "A128GCM" | "A192GCM" | "A256GCM") => {
                let algorithm = gcm_for(alg, k.len())?;
                let key = LessSafeKey::new(
                    UnboundKey::new(algorithm, k).map_err(|_| CryptoError::Internal)?,
                );
                let mut iv = [0u8; aead::NONCE_LEN];
                SystemRandom::new()
                    .fill(&mut iv)
                    .map_err(|_| CryptoError::Internal)?;
                let mut data = plaintext.to_vec();
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(aad.unwrap_or_default()),
                        &mut data,
                    )
                    .map_err(|_| CryptoError::Internal)?;
                Ok(Sealed {
                    value: data,
                    iv: Some(iv.to_vec()),
                    tag: Some(tag.as_ref().to_vec()),
                })
            }
            _ => Err(wrong_alg(alg, self)),
        }
    }

    /// `decrypt` (and `unwrapKey` for the RSA algorithms).
    pub fn decrypt(
        &self,
        alg: &str,
        ciphertext: &[u8],
        params: &OpenParams<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match (self, alg) {
            (Self::Rsa(r), _) => {
                let expected = r.decrypting.key_size_bytes();
                if ciphertext.len() != expected {
                    return Err(CryptoError::BadInput(format!(
                        "ciphertext must be {expected} bytes for this {}-bit RSA key, got {}",
                        expected * 8,
                        ciphertext.len()
                    )));
                }
                let private = r.decrypting.clone();
                let mut out = Zeroizing::new(vec![0u8; expected]);
                let written = match rsa_padding(alg) {
                    Some(RsaPadding::Oaep(oaep)) => OaepPrivateDecryptingKey::new(private)
                        .map_err(|_| CryptoError::Internal)?
                        .decrypt(oaep, ciphertext, &mut out, None)
                        .map_err(|_| CryptoError::DecryptFailed)?
                        .len(),
                    Some(RsaPadding::Pkcs1) => Pkcs1PrivateDecryptingKey::new(private)
                        .map_err(|_| CryptoError::Internal)?
                        .decrypt(ciphertext, &mut out)
                        .map_err(|_| CryptoError::DecryptFailed)?
                        .len(),
                    None => return Err(wrong_alg(alg, self)),
                };
                out.truncate(written);
                Ok(out)
            }
            (Self::Oct(k), "A128GCM" | "A192GCM" | "A256GCM") => {
                let algorithm = gcm_for(alg, k.len())?;
                let iv: [u8; aead::NONCE_LEN] = params
                    .iv
                    .ok_or_else(|| CryptoError::BadInput(format!("{alg} decrypt needs iv")))?
                    .try_into()
                    .map_err(|_| CryptoError::BadInput("iv must be 12 bytes".into()))?;
                let tag = params
                    .tag
                    .ok_or_else(|| CryptoError::BadInput(format!("{alg} decrypt needs tag")))?;
                if tag.len() != algorithm.tag_len() {
                    return Err(CryptoError::BadInput("tag must be 16 bytes".into()));
                }
                let key = LessSafeKey::new(
                    UnboundKey::new(algorithm, k).map_err(|_| CryptoError::Internal)?,
                );
                let mut data = Zeroizing::new(Vec::with_capacity(ciphertext.len() + tag.len()));
                data.extend_from_slice(ciphertext);
                data.extend_from_slice(tag);
                let len = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(params.aad.unwrap_or_default()),
                        &mut data,
                    )
                    .map_err(|_| CryptoError::DecryptFailed)?
                    .len();
                data.truncate(len);
                Ok(data)
            }
            _ => Err(wrong_alg(alg, self)),
        }
    }

    /// `wrapKey`.
    pub fn wrap(&self, alg: &str, key: &[u8]) -> Result<Sealed> {
        match (self, alg) {
            (Self::Rsa(_), _) => self.encrypt(alg, key, None),
            (Self::Oct(k), "A128KW" | "A192KW" | "A256KW") => {
                if key.len() < 16 || !key.len().is_multiple_of(8) {
                    return Err(CryptoError::BadInput(
                        "AES key wrap needs a key of at least 16 bytes, a multiple of 8".into(),
                    ));
                }
                let mut out = vec![0u8; key.len() + 8];
                let len = kek(alg, k)?
                    .wrap(key, &mut out)
                    .map_err(|_| CryptoError::Internal)?
                    .len();
                out.truncate(len);
                Ok(Sealed {
                    value: out,
                    iv: None,
                    tag: None,
                })
            }
            _ => Err(wrong_alg(alg, self)),
        }
    }

    /// `unwrapKey`.
    pub fn unwrap_key(&self, alg: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match (self, alg) {
            (Self::Rsa(_), _) => self.decrypt(alg, wrapped, &OpenParams::default()),
            (Self::Oct(k), "A128KW" | "A192KW" | "A256KW") => {
                if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
                    return Err(CryptoError::BadInput(
                        "wrapped key must be at least 24 bytes, a multiple of 8".into(),
                    ));
                }
                let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
                let len = kek(alg, k)?
                    .unwrap(wrapped, &mut out)
                    .map_err(|_| CryptoError::DecryptFailed)?
                    .len();
                out.truncate(len);
                Ok(out)
            }
            _ => Err(wrong_alg(alg, self)),
        }
    }

    /// `sign`: `digest` is the already-hashed message, as Key Vault expects.
    pub fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>> {
        let (hash, family) = sign_alg(alg).ok_or_else(|| wrong_alg(alg, self))?;
        let digest = import_digest(hash, digest)?;
        match (self, family) {
            (Self::Rsa(r), SignFamily::RsaPkcs1 | SignFamily::RsaPss) => {
                let encoding = rsa_encoding(alg).ok_or_else(|| wrong_alg(alg, self))?;
                let mut sig = vec![0u8; r.signing.public_modulus_len()];
                r.signing
                    .sign_digest(encoding, &digest, &mut sig)
                    .map_err(|_| CryptoError::Internal)?;
                Ok(sig)
            }
            (Self::Ec(e), SignFamily::Ecdsa(curve)) if curve == e.curve => e
                .pair
                .sign_digest(&digest)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::Internal),
            _ => Err(wrong_alg(alg, self)),
        }
    }

    /// `verify`: true when `signature` is valid for `digest`.
    pub fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool> {
        let (hash, family) = sign_alg(alg).ok_or_else(|| wrong_alg(alg, self))?;
        let digest = import_digest(hash, digest)?;
        let ok = match (self, family) {
            (Self::Rsa(r), SignFamily::RsaPkcs1 | SignFamily::RsaPss) => {
                let verification: &'static dyn signature::VerificationAlgorithm = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(wrong_alg(alg, self)),
                };
                UnparsedPublicKey::new(verification, r.public_der())
                    .verify_digest(&digest, signature)
                    .is_ok()
            }
            (Self::Ec(e), SignFamily::Ecdsa(curve)) if curve == e.curve => {
                let verification: &'static dyn signature::VerificationAlgorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                    Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
                };
                UnparsedPublicKey::new(verification, e.pair.public_key().as_ref())
                    .verify_digest(&digest, signature)
                    .is_ok()
            }
            _ => return Err(wrong_alg(alg, self)),
        };
        Ok(ok)
    }
}

enum RsaPadding {
    Oaep(&'static OaepAlgorithm),
    Pkcs1,
}

fn rsa_padding(alg: &str) -> Option<RsaPadding> {
    match alg {
        "RSA-OAEP" => Some(RsaPadding::Oaep(&OAEP_SHA1_MGF1SHA1)),
        "RSA-OAEP-256" => Some(RsaPadding::Oaep(&OAEP_SHA256_MGF1SHA256)),
        "RSA1_5" => Some(RsaPadding::Pkcs1),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum SignFamily {
    RsaPkcs1,
    RsaPss,
    Ecdsa(Curve),
}

fn sign_alg(alg: &str) -> Option<(&'static digest::Algorithm, SignFamily)> {
    Some(match alg {
        "RS256" => (&digest::SHA256, SignFamily::RsaPkcs1),
        "RS384" => (&digest::SHA384, SignFamily::RsaPkcs1),
        "RS512" => (&digest::SHA512, SignFamily::RsaPkcs1),
        "PS256" => (&digest::SHA256, SignFamily::RsaPss),
        "PS384" => (&digest::SHA384, SignFamily::RsaPss),
        "PS512" => (&digest::SHA512, SignFamily::RsaPss),
        "ES256" => (&digest::SHA256, SignFamily::Ecdsa(Curve::P256)),
        "ES384" => (&digest::SHA384, SignFamily::Ecdsa(Curve::P384)),
        "ES512" => (&digest::SHA512, SignFamily::Ecdsa(Curve::P521)),
        _ => return None,
    })
}

fn rsa_encoding(alg: &str) -> Option<&'static dyn RsaEncoding> {
    Some(match alg {
        "RS256" => &signature::RSA_PKCS1_SHA256,
        "RS384" => &signature::RSA_PKCS1_SHA384,
        "RS512" => &signature::RSA_PKCS1_SHA512,
        "PS256" => &signature::RSA_PSS_SHA256,
        "PS384" => &signature::RSA_PSS_SHA384,
        "PS512" => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn import_digest(hash: &'static digest::Algorithm, bytes: &[u8]) -> Result<Digest> {
    if bytes.len() != hash.output_len() {
        return Err(CryptoError::BadInput(format!(
            "digest must be {} bytes for this algorithm, got {}",
            hash.output_len(),
            bytes.len()
        )));
    }
    Digest::import_less_safe(bytes, hash)
        .map_err(|_| CryptoError::BadInput("digest is not valid".into()))
}

fn gcm_for(alg: &str, key_len: usize) -> Result<&'static aead::Algorithm> {
    let (algorithm, want) = match alg {
        "A128GCM" => (&aead::AES_128_GCM, 16),
        "A192GCM" => (&aead::AES_192_GCM, 24),
        _ => (&aead::AES_256_GCM, 32),
    };
    if key_len != want {
        return Err(CryptoError::BadInput(format!(
            "{alg} needs a {}-bit key, this key has {} bits",
            want * 8,
            key_len * 8
        )));
    }
    Ok(algorithm)
}

fn kek(alg: &str, key: &[u8]) -> Result<KeyEncryptionKey<aws_lc_rs::key_wrap::AesBlockCipher>> {
    let (cipher, want) = match alg {
        "A128KW" => (&AES_128, 16),
        "A256KW" => (&AES_256, 32),
        _ => {
            return Err(CryptoError::Unsupported(format!(
                "{alg} is not supported by mock-vault; use A128KW or A256KW"
            )));
        }
    };
    if key.len() != want {
        return Err(CryptoError::BadInput(format!(
            "{alg} needs a {}-bit key, this key has {} bits",
            want * 8,
            key.len() * 8
        )));
    }
    KeyEncryptionKey::new(cipher, key).map_err(|_| CryptoError::Internal)
}

fn wrong_alg(alg: &str, material: &Material) -> CryptoError {
    CryptoError::WrongAlgorithm {
        alg: alg.to_owned(),
        kty: material.family(),
    }
}

fn too_long(alg: &str, max: usize) -> CryptoError {
    CryptoError::BadInput(format!(
        "plaintext is too long for {alg} with this key (at most {max} bytes)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rsa() -> Material {
        Material::generate(KeySpec {
            kty: KeyType::Rsa,
            size: Some(2048),
            curve: None,
        })
        .unwrap()
    }

    #[test]
    fn rsa_encrypt_decrypt_every_algorithm() {
        let key = rsa();
        for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
            let sealed = key.encrypt(alg, b"seed material", None).unwrap();
            assert_eq!(sealed.value.len(), 256);
            let plain = key
                .decrypt(alg, &sealed.value, &OpenParams::default())
                .unwrap();
            assert_eq!(plain.as_slice(), b"seed material", "{alg}");
        }
        // A ciphertext made with one padding does not open with another.
        let sealed = key.encrypt("RSA-OAEP-256", b"x", None).unwrap();
        assert_eq!(
            key.decrypt("RSA-OAEP", &sealed.value, &OpenParams::default()),
            Err(CryptoError::DecryptFailed)
        );
    }

    #[test]
    fn rsa_refuses_wrong_sizes_and_algorithms() {
        let key = rsa();
        assert!(matches!(
            key.encrypt("RSA-OAEP-256", &[0u8; 300], None),
            Err(CryptoError::BadInput(_))
        ));
        assert!(matches!(
            key.decrypt("RSA-OAEP-256", &[0u8; 10], &OpenParams::default()),
            Err(CryptoError::BadInput(_))
        ));
        assert!(matches!(
            key.encrypt("A256GCM", b"x", None),
            Err(CryptoError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let rsa = rsa();
        let digest = digest::digest(&digest::SHA256, b"message");
        for alg in ["RS256", "PS256"] {
            let sig = rsa.sign(alg, digest.as_ref()).unwrap();
            assert!(rsa.verify(alg, digest.as_ref(), &sig).unwrap());
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!rsa.verify(alg, digest.as_ref(), &bad).unwrap());
        }
        for (crv, alg, hash) in [
            (Curve::P256, "ES256", &digest::SHA256),
            (Curve::P384, "ES384", &digest::SHA384),
            (Curve::P521, "ES512", &digest::SHA512),
        ] {
            let ec = Material::generate(KeySpec {
                kty: KeyType::Ec,
                size: None,
                curve: Some(crv),
            })
            .unwrap();
            let d = digest::digest(hash, b"message");
            let sig = ec.sign(alg, d.as_ref()).unwrap();
            assert!(ec.verify(alg, d.as_ref(), &sig).unwrap());
            let PublicJwk::Ec { x, y, .. } = ec.public_jwk() else {
                panic!("not EC")
            };
            assert_eq!(x.len(), crv.coordinate_len());
            assert_eq!(y.len(), crv.coordinate_len());
        }
    }

    #[test]
    fn aes_gcm_and_key_wrap() {
        let oct = Material::generate(KeySpec {
            kty: KeyType::OctHsm,
            size: Some(256),
            curve: None,
        })
        .unwrap();
        let sealed = oct.encrypt("A256GCM", b"hello", Some(b"aad")).unwrap();
        let params = OpenParams {
            iv: sealed.iv.as_deref(),
            aad: Some(b"aad"),
            tag: sealed.tag.as_deref(),
        };
        assert_eq!(
            oct.decrypt("A256GCM", &sealed.value, &params)
                .unwrap()
                .as_slice(),
            b"hello"
        );
        let wrong_aad = OpenParams {
            aad: Some(b"other"),
            ..params
        };
        assert_eq!(
            oct.decrypt("A256GCM", &sealed.value, &wrong_aad),
            Err(CryptoError::DecryptFailed)
        );
        let wrapped = oct.wrap("A256KW", &[7u8; 32]).unwrap();
        assert_eq!(wrapped.value.len(), 40);
        assert_eq!(
            oct.unwrap_key("A256KW", &wrapped.value).unwrap().as_slice(),
            &[7u8; 32]
        );
    }

    #[test]
    fn stored_material_round_trips_and_debug_is_redacted() {
        let key = rsa();
        let restored = Material::from_stored(&key.to_stored()).unwrap();
        assert_eq!(restored.public_jwk(), key.public_jwk());
        assert!(format!("{key:?}").contains("[redacted]"));
        assert!(!format!("{:?}", key.to_stored()).contains(key.to_stored().der.expose()));
    }
}
