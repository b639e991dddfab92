//! The key ring: which key version wraps new seeds, which versions we know by key id, and
//! whether Key Vault is healthy.
//!
//! Status is answered from this state, never from a live call. A background poll makes one
//! metadata read (`GET /keys/{name}/`, no cryptography) per interval: it picks up rotations
//! (the newest enabled version, unless a version is pinned) and refreshes health. Real calls
//! report their outcome here too, so a failure turns Status not-ok at once and a success
//! heals it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore as _;

use crate::azure::keyvault::{KeyInfo, KeyVault, KvError, unix_now};
use crate::kms::envelope::{KeyRef, KeyVersion, WRAP_ALGORITHM};
use crate::observability::metrics::KeyMetrics;

/// The version new seeds are wrapped with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Key version.
    pub version: KeyVersion,
    /// Its KMS key id.
    pub key_id: String,
}

/// Why the plugin cannot start. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Key Vault refused or failed a start-up check.
    #[error("key {key}: {error}")]
    KeyVault {
        /// The key.
        key: String,
        /// The failure.
        error: KvError,
    },
    /// The key exists but cannot be used for wrapping.
    #[error("key {key} version {version}: {reason}")]
    Unusable {
        /// The key.
        key: String,
        /// The version.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// No version of the key is enabled and valid.
    #[error("key {0} has no enabled, valid version")]
    NoUsableVersion(String),
    /// The round-trip self-test returned different bytes.
    #[error("key {0}: the encrypt/decrypt self-test did not round-trip")]
    SelfTest(String),
}

#[derive(Debug)]
struct State {
    current: Option<Current>,
    /// key id → version, for every version seen.
    known: HashMap<String, KeyVersion>,
    healthy: Result<(), String>,
    last_list: Option<Instant>,
    /// Whether the identity may read key metadata (`keys/get`).
    can_get: bool,
}

/// The key ring.
#[derive(Debug)]
pub struct KeyRing {
    kv: KeyVault,
    pinned: Option<KeyVersion>,
    state: RwLock<State>,
    metrics: KeyMetrics,
}

/// How often an unknown key id may trigger a listing of versions.
const LIST_COOLDOWN: Duration = Duration::from_secs(30);

impl KeyRing {
    /// A key ring for `kv`'s key, following the newest enabled version unless `pinned`.
    pub fn new(kv: KeyVault, pinned: Option<KeyVersion>, metrics: KeyMetrics) -> Self {
        Self {
            kv,
            pinned,
            state: RwLock::new(State {
                current: None,
                known: HashMap::new(),
                healthy: Err("starting".into()),
                last_list: None,
                can_get: true,
            }),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key.
    pub fn key(&self) -> &KeyRef {
        self.kv.key()
    }

    /// The Key Vault client.
    pub fn keyvault(&self) -> &KeyVault {
        &self.kv
    }

    /// The pinned version, if any.
    pub fn pinned(&self) -> Option<&KeyVersion> {
        self.pinned.as_ref()
    }

    /// The current version.
    pub fn current(&self) -> Option<Current> {
        self.read().current.clone()
    }

    /// Health as Status reports it: `Ok` or a short reason.
    pub fn health(&self) -> Result<(), String> {
        let s = self.read();
        match (&s.current, &s.healthy) {
            (None, _) => Err("no key version resolved yet".into()),
            (Some(_), h) => h.clone(),
        }
    }

    /// Records the outcome of a real Key Vault call.
    pub fn record<T>(&self, result: &Result<T, KvError>) {
        let update = match result {
            Ok(_) => Some(Ok(())),
            Err(e) if e.is_health_failure() => Some(Err(e.to_string())),
            Err(_) => None,
        };
        if let Some(h) = update {
            let mut s = self.write();
            if s.healthy != h {
                match &h {
                    Ok(()) => tracing::info!("Key Vault healthy again"),
                    Err(reason) => tracing::warn!(%reason, "Key Vault unhealthy"),
                }
                s.healthy = h;
            }
        }
    }

    /// The current version first, then every other known version.
    pub fn versions_newest_first(&self) -> Vec<KeyVersion> {
        let s = self.read();
        let current = s.current.as_ref().map(|c| c.version.clone());
        let mut rest: Vec<KeyVersion> = s
            .known
            .values()
            .filter(|v| Some(*v) != current.as_ref())
            .cloned()
            .collect();
        rest.sort();
        current.into_iter().chain(rest).collect()
    }

    /// Remembers a version by its key id.
    pub fn learn(&self, version: &KeyVersion) -> String {
        let key_id = self.key().key_id(version);
        self.write().known.insert(key_id.clone(), version.clone());
        key_id
    }

    fn set_current(&self, version: KeyVersion) -> bool {
        let key_id = self.learn(&version);
        let mut s = self.write();
        let changed = s.current.as_ref().map(|c| &c.version) != Some(&version);
        if changed {
            if let Some(old) = &s.current {
                tracing::info!(from = %old.version, to = %version, %key_id, "key rotation: new seeds use the new version");
                self.metrics.rotations.inc();
            }
            self.metrics.set_current(version.as_str(), &key_id);
            s.current = Some(Current { version, key_id });
        }
        changed
    }

    /// The version a key id names, listing the key's versions (at most every 30 s) when it
    /// is not known yet. `None` means the key id is not a version of the configured key.
    pub async fn resolve(&self, key_id: &str) -> Option<KeyVersion> {
        if let Some(v) = self.read().known.get(key_id) {
            return Some(v.clone());
        }
        let due = self
            .read()
            .last_list
            .is_none_or(|t| t.elapsed() >= LIST_COOLDOWN);
        if !due {
            return None;
        }
        self.write().last_list = Some(Instant::now());
        match self.kv.list_versions().await {
            Ok(versions) => {
                for v in versions {
                    self.learn(&v.version);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list key versions to resolve an unknown key id")
            }
        }
        self.read().known.get(key_id).cloned()
    }

    /// Start-up: resolve the current version, check it can wrap, run an encrypt/decrypt
    /// self-test (which proves the `encrypt` and `decrypt` permissions), and learn the
    /// other versions if the identity may list them.
    pub async fn initialize(&self) -> Result<(), StartupError> {
        let name = self.key().name().to_owned();
        let kv_err = |error| StartupError::KeyVault {
            key: name.clone(),
            error,
        };
        let version = match self.fetch_current().await {
            Ok(info) => {
                if let Some(reason) = info.unusable_reason(unix_now()) {
                    return Err(StartupError::Unusable {
                        key: name.clone(),
                        version: info.version.to_string(),
                        reason: reason.to_owned(),
                    });
                }
                if let Some(reason) = info.rsa_wrap_problem() {
                    return Err(StartupError::Unusable {
                        key: name.clone(),
                        version: info.version.to_string(),
                        reason,
                    });
                }
                info.version
            }
            // Pinned version and no `keys/get`: the Go plugin needs only encrypt/decrypt, so
            // carry on; health then follows real calls only.
            Err(KvError::PermissionDenied("keys/get")) if self.pinned.is_some() => {
                tracing::warn!(
                    "the identity lacks keys/get: key metadata checks are off, health follows real calls only"
                );
                self.write().can_get = false;
                self.pinned
                    .clone()
                    .ok_or_else(|| StartupError::NoUsableVersion(name.clone()))?
            }
            Err(e) => return Err(kv_err(e)),
        };
        let mut probe = vec![0u8; 32];
        rand::rng().fill_bytes(&mut probe);
        let (wrapped, _) = self
            .kv
            .encrypt(&version, WRAP_ALGORITHM, &probe)
            .await
            .map_err(kv_err)?;
        let unwrapped = self
            .kv
            .decrypt(&version, WRAP_ALGORITHM, &wrapped)
            .await
            .map_err(kv_err)?;
        if unwrapped.as_slice() != probe.as_slice() {
            return Err(StartupError::SelfTest(name));
        }
        self.set_current(version);
        self.write().healthy = Ok(());
        if self.pinned.is_none() {
            match self.kv.list_versions().await {
                Ok(versions) => {
                    for v in versions {
                        self.learn(&v.version);
                    }
                    self.write().last_list = Some(Instant::now());
                }
                Err(e) => {
                    tracing::info!(error = %e, "not listing key versions; older key ids are resolved through our annotation")
                }
            }
        }
        Ok(())
    }

    /// The version that should wrap new seeds: the pinned one, or the newest enabled one.
    async fn fetch_current(&self) -> Result<KeyInfo, KvError> {
        if let Some(v) = &self.pinned {
            return self.kv.get(Some(v)).await;
        }
        let latest = self.kv.get(None).await?;
        if latest.unusable_reason(unix_now()).is_none() {
            return Ok(latest);
        }
        // The latest version is disabled or expired: fall back to the newest usable one.
        let now = unix_now();
        let mut versions = self.kv.list_versions().await?;
        versions.retain(|v| v.unusable_reason(now).is_none());
        versions.sort_by_key(|v| v.created.unwrap_or(0));
        match versions.pop() {
            Some(v) => self.kv.get(Some(&v.version)).await,
            None => Ok(latest),
        }
    }

    /// One poll: reads key metadata, follows a rotation, refreshes health.
    pub async fn poll_once(&self) {
        if !self.read().can_get {
            return;
        }
        let result = self.fetch_current().await;
        match &result {
            Ok(info) => match info
                .unusable_reason(unix_now())
                .map(str::to_owned)
                .or_else(|| info.rsa_wrap_problem())
            {
                None => {
                    self.set_current(info.version.clone());
                    self.record(&Ok::<(), KvError>(()));
                }
                Some(reason) => {
                    // Keep wrapping with the last good version; report the problem.
                    let mut s = self.write();
                    s.healthy = Err(format!("key version {} is {reason}", info.version));
                }
            },
            Err(e) => {
                self.record(&Err::<(), _>(e.clone()));
                if !e.is_health_failure() {
                    self.write().healthy = Err(e.to_string());
                }
            }
        }
    }

    /// Polls every `interval` (every 10 s while unhealthy) until `shutdown` resolves.
    pub fn spawn_poller(
        self: &Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wait = if ring.health().is_ok() {
                    interval
                } else {
                    interval.min(Duration::from_secs(10))
                };
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(wait) => ring.poll_once().await,
                }
            }
        })
    }
}
