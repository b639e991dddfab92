//! A test double of [`KeyBackend`]: one key's versions in memory, with real RSA keys (so a
//! wrap made with a version's public key, locally or by [`KeyBackend::encrypt`], decrypts
//! with RSA-OAEP-256 or RSA1_5 as Key Vault would), a failure that can be switched on per
//! operation, and a count of calls per operation (failed calls included).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey,
    PrivateDecryptingKey,
};
use zeroize::Zeroizing;

use super::KeyBackend;
use crate::azure::key::{KeyRef, KeyVersion, ResponseInfo};
use crate::azure::keyvault::{KeyInfo, KvError, RsaPublic, Throttle, unix_now};
use crate::azure::upstream::Upstream;
use crate::kms::envelope::{V1_ALGORITHM, WRAP_ALGORITHM};
use crate::kms::wrap::PublicWrapKey;

/// One of the four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Get,
    List,
    Encrypt,
    Decrypt,
}

impl Op {
    /// The data action Key Vault checks for it.
    fn permission(self) -> &'static str {
        match self {
            Self::Get => "keys/get",
            Self::List => "keys/list",
            Self::Encrypt => "keys/encrypt",
            Self::Decrypt => "keys/decrypt",
        }
    }
}

/// A failure an operation answers with while it is switched on.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Key Vault unreachable or failing (HTTP 503): transient.
    Outage,
    /// 403: the identity lacks the operation's permission.
    Forbidden,
    /// 429 past the retries, with this `Retry-After`.
    Throttled(Duration),
    /// 404.
    NotFound,
}

impl Failure {
    fn error(&self, op: Op) -> KvError {
        match self {
            Self::Outage => KvError::unavailable("HTTP 503"),
            Self::Forbidden => KvError::PermissionDenied(op.permission()),
            Self::Throttled(wait) => KvError::Throttled(Throttle {
                by: Upstream::KeyVault,
                retry_after: Some(*wait),
                beyond_deadline: false,
            }),
            Self::NotFound => KvError::NotFound("key fake".into()),
        }
    }
}

/// RSA keys shared by every fake (generating one costs a few milliseconds; versions take
/// them in turn, so neighbouring versions have different keys).
pub(crate) fn key_pool() -> &'static [Arc<PrivateDecryptingKey>] {
    static POOL: OnceLock<Vec<Arc<PrivateDecryptingKey>>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..4)
            .map(|_| Arc::new(PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap()))
            .collect()
    })
}

/// One version: what `get` returns, and its private key.
#[derive(Debug)]
struct Version {
    info: KeyInfo,
    private: Arc<PrivateDecryptingKey>,
}

#[derive(Debug, Default)]
struct State {
    /// In creation order: the last is what `get(None)` returns.
    versions: Vec<Version>,
    failures: HashMap<Op, Failure>,
    calls: HashMap<Op, usize>,
}

/// An in-memory key (see the module documentation).
#[derive(Debug)]
pub(crate) struct FakeVault {
    key: KeyRef,
    state: Mutex<State>,
}

/// The vault URL of every fake.
pub(crate) const VAULT_URL: &str = "https://fake.vault.azure.net";

impl FakeVault {
    /// An empty key `kek`.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            key: KeyRef::new(VAULT_URL, "kek"),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an enabled RSA-2048 version allowing encrypt and decrypt, created a minute after
    /// the one before; it becomes the latest. Returns its version.
    pub(crate) fn add(&self, version: &str) -> KeyVersion {
        let mut s = self.state();
        let private = Arc::clone(key_pool().get(s.versions.len() % key_pool().len()).unwrap());
        let version = KeyVersion::parse(version).unwrap();
        // Creation times increase with every version added.
        let created = 1_700_000_000 + i64::try_from(s.versions.len()).unwrap() * 60;
        s.versions.push(Version {
            info: KeyInfo {
                version: version.clone(),
                enabled: true,
                not_before: None,
                expires: None,
                created: Some(created),
                kty: Some("RSA".into()),
                key_ops: vec!["encrypt".into(), "decrypt".into()],
                rsa: Some(rsa_public(&private)),
            },
            private,
        });
        version
    }

    /// Changes a version's metadata (enabled, validity, key type, operations, public key).
    pub(crate) fn edit(&self, version: &KeyVersion, f: impl FnOnce(&mut KeyInfo)) {
        let mut s = self.state();
        let v = s
            .versions
            .iter_mut()
            .find(|v| &v.info.version == version)
            .unwrap();
        f(&mut v.info);
    }

    /// Makes `op` answer `failure` until [`heal`](Self::heal).
    pub(crate) fn fail(&self, op: Op, failure: Failure) {
        self.state().failures.insert(op, failure);
    }

    /// Lets `op` work again.
    pub(crate) fn heal(&self, op: Op) {
        self.state().failures.remove(&op);
    }

    /// Calls of `op` so far, failed ones included.
    pub(crate) fn calls(&self, op: Op) -> usize {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts the call, then answers the switched-on failure, if any.
    fn enter(&self, op: Op) -> Result<MutexGuard<'_, State>, KvError> {
        let mut s = self.state();
        *s.calls.entry(op).or_default() += 1;
        match s.failures.get(&op) {
            Some(failure) => Err(failure.error(op)),
            None => Ok(s),
        }
    }

    /// The version for an encrypt or decrypt: present, and enabled and valid now.
    fn usable<'a>(s: &'a State, version: &KeyVersion) -> Result<&'a Version, KvError> {
        let v = s
            .versions
            .iter()
            .find(|v| &v.info.version == version)
            .ok_or_else(|| KvError::NotFound(format!("key kek/{version}")))?;
        match v.info.unusable_reason(unix_now()) {
            Some(reason) => Err(KvError::KeyUnusable {
                version: version.to_string(),
                reason,
            }),
            None => Ok(v),
        }
    }
}

#[async_trait::async_trait]
impl KeyBackend for FakeVault {
    fn key(&self) -> &KeyRef {
        &self.key
    }

    async fn get(&self, version: Option<&KeyVersion>) -> Result<KeyInfo, KvError> {
        let s = self.enter(Op::Get)?;
        let found = match version {
            None => s.versions.last(),
            Some(wanted) => s.versions.iter().find(|v| &v.info.version == wanted),
        };
        found
            .map(|v| v.info.clone())
            .ok_or_else(|| KvError::NotFound("key kek".into()))
    }

    async fn list_versions(&self) -> Result<Vec<KeyInfo>, KvError> {
        let s = self.enter(Op::List)?;
        Ok(s.versions
            .iter()
            .map(|v| KeyInfo {
                kty: None,
                key_ops: Vec::new(),
                rsa: None,
                ..v.info.clone()
            })
            .collect())
    }

    async fn encrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, ResponseInfo), KvError> {
        let s = self.enter(Op::Encrypt)?;
        let v = Self::usable(&s, version)?;
        let public = PublicWrapKey::new(&rsa_public(&v.private)).unwrap();
        let raw = public
            .wrap(algorithm, plaintext)
            .map_err(|e| KvError::Rejected(e.to_string()))?;
        let info = ResponseInfo {
            date: Some("Mon, 07 Dec 2026 00:00:00 GMT".into()),
            request_id: Some("fake-request".into()),
            region: Some("fakeregion".into()),
        };
        Ok((raw, info))
    }

    async fn decrypt(
        &self,
        version: &KeyVersion,
        algorithm: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KvError> {
        let s = self.enter(Op::Decrypt)?;
        let private = (*Self::usable(&s, version)?.private).clone();
        let refused = || KvError::Rejected("the ciphertext does not decrypt".into());
        let plain = match algorithm {
            WRAP_ALGORITHM => {
                let key = OaepPrivateDecryptingKey::new(private).unwrap();
                let mut out = vec![0; key.min_output_size()];
                key.decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
                    .map_err(|_| refused())?
                    .to_vec()
            }
            V1_ALGORITHM => {
                let key = Pkcs1PrivateDecryptingKey::new(private).unwrap();
                let mut out = vec![0; key.min_output_size()];
                key.decrypt(ciphertext, &mut out)
                    .map_err(|_| refused())?
                    .to_vec()
            }
            other => return Err(KvError::Rejected(format!("algorithm {other}"))),
        };
        Ok(Zeroizing::new(plain))
    }
}

/// The modulus and exponent of a private key's public half, read from its
/// SubjectPublicKeyInfo DER the long way (the JWK carries them bare).
pub(crate) fn rsa_public(key: &PrivateDecryptingKey) -> RsaPublic {
    let spki = key.public_key().as_der().unwrap();
    let der = spki.as_ref();
    // SPKI: SEQUENCE { AlgorithmIdentifier, BIT STRING { 0x00, RSAPublicKey } }.
    let (_, spki_body) = read_tlv(der, 0x30);
    let (rest, _) = read_tlv(spki_body, 0x30);
    let (_, bits) = read_tlv(rest, 0x03);
    let (_, rsa_key) = read_tlv(&bits[1..], 0x30);
    let (rest, n) = read_tlv(rsa_key, 0x02);
    let (_, e) = read_tlv(rest, 0x02);
    RsaPublic::new(n, e).unwrap()
}

/// Reads one DER TLV with `tag`; returns (what follows, contents).
fn read_tlv(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
    assert_eq!(input[0], tag);
    let (len, header) = match input[1] {
        l if l < 0x80 => (l as usize, 2),
        0x81 => (input[2] as usize, 3),
        0x82 => ((input[2] as usize) << 8 | input[3] as usize, 4),
        other => panic!("length form {other:#x}"),
    };
    (&input[header + len..], &input[header..header + len])
}
