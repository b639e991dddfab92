//! The state every connection and the control API share: vaults, identities, tokens,
//! faults, statistics, persistence. The HTTPS router (`server`), Entra (`entra`) and the
//! control API (`control`) all work on it; it depends on none of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::certificates::Issuers;
use crate::faults::{Decision, Faults};
use crate::identity::{Identity, SaIssuer, TokenGrant, TokenStore};
use crate::secret::SecretString;
use crate::stats::{LogEntry, Stats};
use crate::store::{StateFile, VaultCell, VaultKind};

/// A response body.
pub type Body = Full<Bytes>;

/// Metadata of one vault.
#[derive(Debug, Clone)]
pub struct VaultMeta {
    /// Vault or Managed HSM.
    pub kind: VaultKind,
    /// Canonical base URL, e.g. `https://kv1.vault.localhost:8443`.
    pub url: String,
    /// Token resource, e.g. `https://vault.localhost:8443`.
    pub resource: String,
    /// Host name.
    pub host: String,
}

/// State shared by every connection and the control API.
#[derive(Debug)]
pub struct Shared {
    pub(crate) vaults: BTreeMap<String, VaultCell>,
    pub(crate) meta: BTreeMap<String, VaultMeta>,
    pub(crate) default_vault: String,
    pub(crate) identities: RwLock<Vec<Identity>>,
    pub(crate) tokens: Mutex<TokenStore>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) stats: Mutex<Stats>,
    /// `https://localhost:PORT`.
    pub(crate) authority: String,
    pub(crate) tenants: Vec<String>,
    pub(crate) token_ttl: Duration,
    pub(crate) sa_issuer: SaIssuer,
    pub(crate) identity_header: SecretString,
    pub(crate) issuers: Issuers,
    pub(crate) region: String,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) persist_lock: Mutex<()>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Host part of the authority URL.
    pub(crate) fn authority_host(&self) -> String {
        self.authority
            .trim_start_matches("https://")
            .split(':')
            .next()
            .unwrap_or("localhost")
            .to_owned()
    }

    pub(crate) fn knows_tenant(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t.eq_ignore_ascii_case(tenant))
    }

    pub(crate) fn identity_by(&self, f: impl Fn(&Identity) -> bool) -> Option<Identity> {
        self.identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|i| f(i))
            .cloned()
    }

    pub(crate) fn issue_token(&self, grant: TokenGrant) -> String {
        lock(&self.tokens).issue(grant)
    }

    pub(crate) fn record(&self, entry: LogEntry) {
        lock(&self.stats).record(entry);
    }

    pub(crate) fn decide(&self, vault: Option<&str>, op: &str, identity: Option<&str>) -> Decision {
        lock(&self.faults).decide(vault, op, identity)
    }

    /// Writes the state file if a vault changed since the last write.
    pub(crate) fn persist_if_dirty(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let _guard = lock(&self.persist_lock);
        let dirty = self
            .vaults
            .values()
            .fold(false, |acc, cell| cell.take_dirty() | acc);
        if !dirty {
            return;
        }
        let snapshot = {
            let mut vaults = Vec::new();
            for cell in self.vaults.values() {
                vaults.push(cell.read(Clone::clone));
            }
            StateFile::capture(vaults.iter())
        };
        if let Err(e) = snapshot.save(path) {
            tracing::error!(error = %e, "could not write the state file");
        }
    }
}
