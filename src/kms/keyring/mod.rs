//! The key ring: which key version wraps new seeds, which versions we know by key id, and
//! what Status, readiness and the metrics say.
//!
//! - **Start-up never waits for Key Vault.** The ring starts empty; a background task
//!   ([`KeyRing::spawn_maintainer`]) resolves the key version, retrying with backoff (1 s
//!   doubling to 30 s) through outages, throttling and configuration errors alike, and
//!   then polls the key's metadata once per interval. Status answers from the start: not
//!   ok, with the reason, until a usable version is known.
//! - **Which version wraps** (unless `--key-version` pins one): the newest usable version,
//!   newest by creation time. Usable means enabled, inside its validity window, an RSA key
//!   of at least 2048 bits whose `key_ops` (if listed) allow `encrypt` and `decrypt`, and
//!   (for local wrapping) a public key in the metadata. An unusable newest version is
//!   skipped with a warning and the `newest_version_usable` metric at 0. The choice moves
//!   only when the set of usable versions changes (a new usable version, or the current
//!   one disabled or expired); a failed poll never moves it, so the key id does not
//!   oscillate. The rule is decided without I/O in `choice`; the ring makes the calls it
//!   asks for, through the [`KeyBackend`] seam.
//! - **Status `healthz`** says whether kube-apiserver can be served now: a version to wrap
//!   with is known, the round trip through Key Vault (the self-test: a wrap as Encrypt
//!   makes it, unwrapped by Key Vault; run again for each new version) has not failed,
//!   and, when wraps go to Key Vault (`--remote-encrypt`, or no public key), Key Vault is
//!   reachable. Seeds already seen decrypt from the cache whatever Key Vault does.
//! - **Key Vault reachability** goes to readiness, the `keyvault_reachable` metric and the
//!   log. Only outages count (Key Vault or Microsoft Entra unreachable, failing, throttling
//!   or too slow, a certificate that cannot be verified, a rejected credential); the reason
//!   names which, so Status never calls an Entra outage an authentication failure. A 403 or
//!   404 is an answer, so the vault is reachable. It turns unhealthy on the first outage
//!   and healthy again only after 30 s without one and with a success, so a vault failing
//!   one operation and answering another shows as one unhealthy period, not an
//!   alternation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::{Rng as _, RngCore as _};

use crate::azure::key::{KeyRef, KeyVersion};
use crate::azure::keyvault::{KvError, unix_now};
use crate::kms::backend::KeyBackend;
use crate::kms::envelope::WRAP_ALGORITHM;
use crate::kms::wrap::PublicWrapKey;
use crate::observability::metrics::KeyMetrics;

mod choice;

use choice::{Choice, Pick, Step};

/// The version new seeds are wrapped with.
#[derive(Debug)]
pub struct Current {
    /// Key version.
    pub version: KeyVersion,
    /// Its KMS key id.
    pub key_id: Arc<str>,
    /// Its public key, for local wrapping; `None` when the identity may not read key
    /// metadata (a pinned version without `keys/get`).
    pub public: Option<Arc<PublicWrapKey>>,
}

/// How long Key Vault must go without a failed call, with a success, before it counts as
/// reachable again.
pub const RECOVERY: Duration = Duration::from_secs(30);
/// How often an unknown key id may trigger a listing of versions.
const LIST_COOLDOWN: Duration = Duration::from_secs(30);
/// First retry delay of an unsettled ring.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay of an unsettled ring.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Shortest pause between polls, whatever `--key-poll-interval` says.
const MIN_POLL: Duration = Duration::from_millis(100);

/// The start-up round trip: a seed wrapped as Encrypt wraps it, unwrapped by Key Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SelfTest {
    /// Not run, or Key Vault could not be reached for it yet.
    Pending,
    /// Key Vault unwrapped what the plugin wrapped.
    Passed,
    /// Key Vault answered, and the wrap does not round-trip (a missing permission, an
    /// unusable version): Encrypt is refused until it passes.
    Failed(String),
}

/// Key Vault reachability with hysteresis (see the module documentation).
#[derive(Debug)]
struct Reachability {
    status: Result<(), String>,
    last_failure: Option<Instant>,
}

impl Reachability {
    /// Records a failure; true when this turned the vault unhealthy.
    fn failure(&mut self, reason: String) -> bool {
        self.last_failure = Some(Instant::now());
        let turned = self.status.is_ok();
        self.status = Err(reason);
        turned
    }

    /// Records a success; true when this turned the vault healthy.
    fn success(&mut self) -> bool {
        if self.status.is_ok() || self.last_failure.is_some_and(|t| t.elapsed() < RECOVERY) {
            return false;
        }
        self.status = Ok(());
        true
    }
}

#[derive(Debug)]
struct State {
    current: Option<Arc<Current>>,
    /// key id → version, for every version seen.
    known: HashMap<String, KeyVersion>,
    /// version → key id (so the hot path hashes no URL).
    ids: HashMap<KeyVersion, Arc<str>>,
    /// version → creation time (Unix seconds), from listings.
    created: HashMap<KeyVersion, i64>,
    vault: Reachability,
    /// Why no version (or not the pinned one) can wrap, from the last answer.
    key_problem: Option<String>,
    /// The last failure while resolving the key version (start-up diagnostics).
    resolve_error: Option<String>,
    /// The newest version and why it is not used, when it is not.
    newest_skipped: Option<(KeyVersion, String)>,
    self_test: SelfTest,
    last_list: Option<Instant>,
    last_list_error: Option<KvError>,
    /// Whether a listing of versions has succeeded.
    listed: bool,
}

/// The key ring.
#[derive(Debug)]
pub struct KeyRing {
    kv: Arc<dyn KeyBackend>,
    pinned: Option<KeyVersion>,
    remote_encrypt: bool,
    state: RwLock<State>,
    /// Status `healthz` is ok (kept in step with `state`, for the per-call gauge).
    status_ok: AtomicBool,
    metrics: KeyMetrics,
}

impl KeyRing {
    /// A key ring for `kv`'s key, following the newest usable version unless `pinned`.
    /// With `remote_encrypt`, every wrap is a Key Vault `encrypt` call.
    pub fn new(
        kv: Arc<dyn KeyBackend>,
        pinned: Option<KeyVersion>,
        remote_encrypt: bool,
        metrics: KeyMetrics,
    ) -> Self {
        Self {
            kv,
            pinned,
            remote_encrypt,
            state: RwLock::new(State {
                current: None,
                known: HashMap::new(),
                ids: HashMap::new(),
                created: HashMap::new(),
                vault: Reachability {
                    status: Err("Key Vault has not been reached yet".into()),
                    last_failure: None,
                },
                key_problem: None,
                resolve_error: None,
                newest_skipped: None,
                self_test: SelfTest::Pending,
                last_list: None,
                last_list_error: None,
                listed: false,
            }),
            status_ok: AtomicBool::new(false),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the state, then brings the flags and gauges derived from it up to date.
    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = f(&mut s);
        let ok = self.status_of(&s).is_ok();
        self.status_ok.store(ok, Ordering::Relaxed);
        self.metrics.set_state(
            s.vault.status.is_ok(),
            s.newest_skipped.is_none() && s.current.is_some(),
        );
        r
    }

    /// The key.
    pub fn key(&self) -> &KeyRef {
        self.kv.key()
    }

    /// The Key Vault client (behind the [`KeyBackend`] seam).
    pub fn backend(&self) -> &Arc<dyn KeyBackend> {
        &self.kv
    }

    /// The pinned version, if any.
    pub fn pinned(&self) -> Option<&KeyVersion> {
        self.pinned.as_ref()
    }

    /// The current version.
    pub fn current(&self) -> Option<Arc<Current>> {
        self.read().current.clone()
    }

    /// The public key new seeds are wrapped with locally; `None`: wrap in Key Vault.
    pub fn local_wrap_key<'a>(&self, current: &'a Current) -> Option<&'a Arc<PublicWrapKey>> {
        if self.remote_encrypt {
            None
        } else {
            current.public.as_ref()
        }
    }

    /// Whether Encrypt may wrap. Refused when Key Vault would not unwrap the result: the
    /// self-test failed (or Key Vault since refused a decrypt for a missing permission),
    /// or no version can wrap (the key disabled or expired: a revocation).
    pub fn wrap_allowed(&self) -> Result<(), String> {
        let s = self.read();
        if let Some(problem) = &s.key_problem {
            return Err(problem.clone());
        }
        match &s.self_test {
            SelfTest::Failed(reason) => Err(reason.clone()),
            SelfTest::Pending | SelfTest::Passed => Ok(()),
        }
    }

    fn status_of(&self, s: &State) -> Result<(), String> {
        let Some(current) = &s.current else {
            let why = s
                .key_problem
                .as_deref()
                .or(s.resolve_error.as_deref())
                .unwrap_or("resolving the key version");
            return Err(format!("no usable key version yet: {why}"));
        };
        if let Some(problem) = &s.key_problem {
            return Err(problem.clone());
        }
        if let SelfTest::Failed(reason) = &s.self_test {
            return Err(reason.clone());
        }
        if self.remote_encrypt || current.public.is_none() {
            return s.vault.status.clone();
        }
        Ok(())
    }

    /// Status `healthz`: `Ok` when kube-apiserver can be served now, or a short reason.
    pub fn status(&self) -> Result<(), String> {
        self.status_of(&self.read())
    }

    /// Whether Status is ok, without building the reason (for the per-call gauge).
    pub fn status_ok(&self) -> bool {
        self.status_ok.load(Ordering::Relaxed)
    }

    /// Readiness: Status is ok, the self-test passed and Key Vault is reachable.
    pub fn ready(&self) -> Result<(), String> {
        let s = self.read();
        self.status_of(&s)?;
        if s.self_test == SelfTest::Pending {
            return Err("the start-up round trip through Key Vault has not run yet".into());
        }
        s.vault.status.clone()
    }

    /// Records the outcome of a real Key Vault call for reachability.
    pub fn record<T>(&self, result: &Result<T, KvError>) {
        match result {
            Ok(_) => {
                let first = self.read().vault.last_failure.is_none();
                if self.update(|s| s.vault.success()) {
                    if first {
                        tracing::info!("Key Vault reachable");
                    } else {
                        tracing::info!("Key Vault reachable again");
                    }
                }
            }
            Err(e @ KvError::PermissionDenied("keys/decrypt")) => {
                // Nothing wrapped now could be unwrapped: stop wrapping until the self-test
                // passes again (it is retried at every poll).
                let reason = e.to_string();
                let turned = self.update(|s| {
                    let turned = s.self_test != SelfTest::Failed(reason.clone());
                    s.self_test = SelfTest::Failed(reason.clone());
                    turned
                });
                if turned {
                    tracing::error!(%reason, "Key Vault refused a decrypt: Encrypt is refused until the permission is back");
                }
            }
            Err(e) if e.is_transient() => {
                let reason = e.to_string();
                if self.update(|s| s.vault.failure(reason.clone())) {
                    tracing::warn!(%reason, "Key Vault unreachable: seeds already seen still decrypt from the cache");
                }
            }
            Err(_) => {}
        }
    }

    /// The candidates for data without a key id (v1beta1): the pinned version alone, or the
    /// current version first, then every other known version, newest by creation time
    /// first (newer versions wrapped newer data), then by version text.
    pub fn versions_newest_first(&self) -> Vec<KeyVersion> {
        if let Some(pinned) = &self.pinned {
            return vec![pinned.clone()];
        }
        let s = self.read();
        let current = s.current.as_ref().map(|c| c.version.clone());
        let mut rest: Vec<KeyVersion> = s
            .known
            .values()
            .filter(|v| Some(*v) != current.as_ref())
            .cloned()
            .collect();
        let created = |v: &KeyVersion| s.created.get(v).copied().unwrap_or(0);
        rest.sort_by(|a, b| (created(b), b).cmp(&(created(a), a)));
        current.into_iter().chain(rest).collect()
    }

    /// The key id of `version`, without remembering it: for versions named by a request
    /// (an annotation), which must not grow the ring's maps.
    pub fn key_id_for(&self, version: &KeyVersion) -> Arc<str> {
        match self.read().ids.get(version) {
            Some(id) => Arc::clone(id),
            None => self.key().key_id(version).into(),
        }
    }

    /// The key id of `version`, remembering the version by it. Only for versions Key Vault
    /// named (the current one, a listing), so the maps stay as small as the key's history.
    pub fn key_id_of(&self, version: &KeyVersion) -> Arc<str> {
        if let Some(id) = self.read().ids.get(version) {
            return Arc::clone(id);
        }
        let key_id: Arc<str> = self.key().key_id(version).into();
        self.update(|s| {
            s.known.insert(key_id.to_string(), version.clone());
            s.ids.insert(version.clone(), Arc::clone(&key_id));
        });
        key_id
    }

    fn set_current(&self, version: KeyVersion, public: Option<Arc<PublicWrapKey>>) {
        let key_id = self.key_id_of(&version);
        let changed = self.update(|s| {
            let same = s
                .current
                .as_ref()
                .is_some_and(|c| c.version == version && c.public.is_some() == public.is_some());
            if same {
                return None;
            }
            let old = s.current.replace(Arc::new(Current {
                version: version.clone(),
                key_id: Arc::clone(&key_id),
                public,
            }));
            // A new version or wrap path gets its own round trip (Encrypt is not held up
            // meanwhile: a pending self-test allows wraps).
            if s.self_test == SelfTest::Passed {
                s.self_test = SelfTest::Pending;
            }
            Some(old.map(|o| o.version.clone()))
        });
        match changed {
            Some(Some(old)) if old != version => {
                tracing::info!(from = %old, to = %version, key_id = %key_id, "key rotation: new seeds use the new version");
                self.metrics.rotations.inc();
                self.metrics.set_current(version.as_str(), &key_id);
            }
            Some(None) => {
                tracing::info!(version = %version, key_id = %key_id, local_wrap = !self.remote_encrypt, "key version resolved");
                self.metrics.set_current(version.as_str(), &key_id);
            }
            _ => {}
        }
    }

    /// The version a key id names, listing the key's versions (at most every 30 s) when it
    /// is not known yet. `Ok(None)`: the key id is not a version of the configured key.
    /// `Err`: the listing failed, so that cannot be told now.
    pub async fn resolve(&self, key_id: &str) -> Result<Option<KeyVersion>, KvError> {
        if let Some(v) = self.read().known.get(key_id) {
            return Ok(Some(v.clone()));
        }
        self.list_versions().await?;
        Ok(self.read().known.get(key_id).cloned())
    }

    /// Learns every version's key id, at most every 30 s (a cooled-down call repeats the
    /// last listing's error, or does nothing). Returns whether a listing ran now. Run once
    /// at start, so Go-plugin data (no version annotation) and v1beta1 data (no key id) of
    /// older versions need no listing later; without the `keys/list` permission, older key
    /// ids are resolved through our annotation only.
    pub async fn list_versions(&self) -> Result<bool, KvError> {
        {
            let s = self.read();
            if s.last_list.is_some_and(|t| t.elapsed() < LIST_COOLDOWN) {
                return match &s.last_list_error {
                    Some(e) => Err(e.clone()),
                    None => Ok(false),
                };
            }
        }
        self.update(|s| s.last_list = Some(Instant::now()));
        let listed = self.kv.list_versions().await;
        self.record(&listed);
        match listed {
            Ok(versions) => {
                for v in &versions {
                    self.key_id_of(&v.version);
                }
                self.update(|s| {
                    for v in versions {
                        if let Some(t) = v.created {
                            s.created.insert(v.version, t);
                        }
                    }
                    s.last_list_error = None;
                    s.listed = true;
                });
                Ok(true)
            }
            Err(e) => {
                tracing::info!(error = %e, "cannot list the key's versions; older key ids are resolved through our annotation");
                let denied = matches!(e, KvError::PermissionDenied(_));
                self.update(|s| {
                    s.last_list_error = Some(e.clone());
                    // Without `keys/list` the start-up listing is not retried at every poll;
                    // an unknown key id still asks (at most every 30 s).
                    s.listed |= denied;
                });
                Err(e)
            }
        }
    }

    /// Decides which version wraps: the pinned one, or the newest usable one (the rule is
    /// [`choice`]'s; this makes the Key Vault calls it asks for).
    async fn pick(&self) -> Result<Pick, KvError> {
        let mut choice = Choice::new(self.pinned.clone(), unix_now(), !self.remote_encrypt);
        let mut step = choice.start();
        loop {
            step = match step {
                Step::Read(version) => choice.read(self.kv.get(version.as_ref()).await?),
                Step::List => match self.kv.list_versions().await {
                    Ok(versions) => choice.listed(versions),
                    Err(KvError::PermissionDenied(p)) => choice.list_denied(p),
                    Err(e) => return Err(e),
                },
                Step::Done(pick) => return Ok(pick),
            };
        }
    }

    /// Reads the key and applies what it says. `Err` only when Key Vault could not answer.
    async fn refresh(&self) -> Result<(), KvError> {
        let picked = self.pick().await;
        self.record(&picked);
        let picked = match picked {
            Ok(p) => p,
            // A pinned version and no `keys/get`: the Go plugin needs only encrypt/decrypt,
            // so carry on with Key Vault wrapping; health then follows real calls only.
            Err(KvError::PermissionDenied("keys/get")) if self.pinned.is_some() => {
                // Key Vault wraps until `keys/get` is granted: the next poll tries again and
                // moves to local wraps as soon as the public key can be read.
                let first = self.update(|s| {
                    s.key_problem = None;
                    s.resolve_error.replace("keys/get denied".into()).is_none()
                });
                if first {
                    tracing::warn!(
                        "the identity lacks keys/get: the pinned version is used without its metadata, wraps go to Key Vault"
                    );
                }
                if let Some(pinned) = self.pinned.clone() {
                    self.set_current(pinned, None);
                }
                return Ok(());
            }
            Err(e) => {
                let reason = e.to_string();
                let changed = self.update(|s| {
                    let changed = s.resolve_error.as_deref() != Some(reason.as_str());
                    s.resolve_error = Some(reason.clone());
                    changed
                });
                if changed && self.current().is_none() {
                    tracing::warn!(error = %reason, "cannot resolve the key version yet; retrying with backoff");
                }
                return Err(e);
            }
        };
        match picked {
            Pick::Use {
                info,
                public,
                skipped,
            } => {
                let announce = self.update(|s| {
                    s.key_problem = None;
                    s.resolve_error = None;
                    let announce = s.newest_skipped != skipped;
                    s.newest_skipped.clone_from(&skipped);
                    announce
                });
                if announce {
                    match &skipped {
                        Some((newest, reason)) => tracing::warn!(
                            newest = %newest, %reason, using = %info.version,
                            "the newest key version cannot wrap; using the newest usable one"
                        ),
                        None => {
                            tracing::info!(version = %info.version, "the newest key version is usable")
                        }
                    }
                }
                self.set_current(info.version, public);
            }
            Pick::NoneUsable(reason) => {
                let changed = self.update(|s| {
                    let changed = s.key_problem.as_deref() != Some(reason.as_str());
                    s.key_problem = Some(reason.clone());
                    changed
                });
                if changed {
                    tracing::error!(%reason, "no key version can wrap new seeds");
                }
            }
        }
        Ok(())
    }

    /// Wraps a random seed as Encrypt would and has Key Vault unwrap it: proves the
    /// `decrypt` permission, and that Key Vault opens the plugin's local wraps.
    async fn self_test(&self, current: &Current) {
        let mut probe = zeroize::Zeroizing::new(vec![0u8; 32]);
        rand::rng().fill_bytes(&mut probe);
        let wrapped = match self.local_wrap_key(current) {
            Some(key) => key.wrap(WRAP_ALGORITHM, &probe).map_err(|e| e.to_string()),
            None => {
                let r = self
                    .kv
                    .encrypt(&current.version, WRAP_ALGORITHM, &probe)
                    .await;
                self.record(&r);
                match r {
                    Ok((raw, _)) => Ok(raw),
                    Err(e) if e.is_transient() => return,
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let outcome = match wrapped {
            Err(e) => SelfTest::Failed(format!("self-test: wrapping failed: {e}")),
            Ok(wrapped) => {
                let r = self
                    .kv
                    .decrypt(&current.version, WRAP_ALGORITHM, &wrapped)
                    .await;
                self.record(&r);
                match r {
                    Ok(plain) if plain.as_slice() == probe.as_slice() => SelfTest::Passed,
                    Ok(_) => SelfTest::Failed(
                        "self-test: Key Vault's decrypt did not return the wrapped seed".into(),
                    ),
                    Err(e) if e.is_transient() => return,
                    Err(e) => SelfTest::Failed(format!("self-test: {e}")),
                }
            }
        };
        match &outcome {
            SelfTest::Passed => tracing::info!(
                version = %current.version,
                local_wrap = self.local_wrap_key(current).is_some(),
                "self-test passed: Key Vault unwrapped a seed wrapped as Encrypt wraps"
            ),
            SelfTest::Failed(reason) => {
                tracing::error!(%reason, "self-test failed: Encrypt is refused until it passes")
            }
            SelfTest::Pending => {}
        }
        self.update(|s| s.self_test = outcome);
    }

    /// One round of upkeep: read the key (unless the identity may not), run the self-test
    /// until it passes. Returns whether the ring is settled (a version, no key problem,
    /// the self-test passed, Key Vault reachable); an unsettled ring is polled again soon.
    pub async fn poll_once(&self) -> bool {
        let _ = self.refresh().await;
        if !self.read().listed && self.current().is_some() {
            let _ = self.list_versions().await;
        }
        if let Some(current) = self.current()
            && self.read().self_test != SelfTest::Passed
        {
            self.self_test(&current).await;
        }
        let s = self.read();
        s.current.is_some()
            && s.key_problem.is_none()
            && s.self_test == SelfTest::Passed
            && s.vault.status.is_ok()
    }

    /// Polls at once, then every `interval` while settled; while unsettled, again after a
    /// backoff of 1 s doubling to 30 s (never longer than `interval`), with jitter.
    pub fn spawn_maintainer(
        self: &Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = BACKOFF_START;
            loop {
                let settled = tokio::select! {
                    _ = shutdown.changed() => break,
                    settled = ring.poll_once() => settled,
                };
                let wait = if settled {
                    backoff = BACKOFF_START;
                    interval.max(MIN_POLL)
                } else {
                    let jittered = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    jittered.min(interval).max(MIN_POLL)
                };
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
