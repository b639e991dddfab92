//! Which version wraps new seeds, decided without I/O: [`Choice`] says which Key Vault
//! answer it needs next ([`Step`]) and, once it has enough, what it decided ([`Pick`]).
//! The key ring makes the calls; the tests feed answers by hand.
//!
//! The rule: a pinned version, if it can wrap; otherwise the newest version (Key Vault's
//! latest), if it can wrap; otherwise the versions the listing shows enabled and valid,
//! newest by creation time first, read one by one (at most [`MAX_FALLBACK_READS`]) until
//! one can wrap. A listing refused for a missing permission, or no usable older version,
//! leaves none usable, with the reason.

use std::sync::Arc;

use crate::azure::key::KeyVersion;
use crate::azure::keyvault::KeyInfo;
use crate::kms::wrap::PublicWrapKey;

/// Versions read one by one when the newest is unusable, newest first.
pub(super) const MAX_FALLBACK_READS: usize = 16;

/// What the ring decided about a version.
#[derive(Debug)]
pub(super) enum Pick {
    /// Wrap with this one; the newest was skipped for the reason given, if it was.
    Use {
        info: Box<KeyInfo>,
        public: Option<Arc<PublicWrapKey>>,
        skipped: Option<(KeyVersion, String)>,
    },
    /// No version can wrap, for this reason.
    NoneUsable(String),
}

/// What the choice needs next, or its outcome.
#[derive(Debug)]
pub(super) enum Step {
    /// Read this version's metadata (`None`: the latest version), then [`Choice::read`].
    Read(Option<KeyVersion>),
    /// List the key's versions, then [`Choice::listed`] (or [`Choice::list_denied`] when
    /// the identity may not).
    List,
    /// Decided.
    Done(Pick),
}

/// One decision in progress (see the module documentation).
#[derive(Debug)]
pub(super) struct Choice {
    now: i64,
    need_public: bool,
    pinned: Option<KeyVersion>,
    /// The newest version and why it cannot wrap, once read and found unusable.
    newest: Option<(KeyVersion, String)>,
    /// Older versions still to read, newest first.
    older: std::iter::Take<std::vec::IntoIter<KeyVersion>>,
}

impl Choice {
    /// A decision at `now` (Unix seconds); `need_public`: wraps are local, so a version
    /// needs its public key in the metadata.
    pub(super) fn new(pinned: Option<KeyVersion>, now: i64, need_public: bool) -> Self {
        Self {
            now,
            need_public,
            pinned,
            newest: None,
            older: Vec::new().into_iter().take(0),
        }
    }

    /// The first step: read the pinned version, or the latest.
    pub(super) fn start(&self) -> Step {
        Step::Read(self.pinned.clone())
    }

    /// A version's metadata, as a [`Step::Read`] asked.
    pub(super) fn read(&mut self, info: KeyInfo) -> Step {
        let verdict = usable(&info, self.now, self.need_public);
        if let Some(pinned) = &self.pinned {
            return Step::Done(match verdict {
                Ok(public) => Pick::Use {
                    info: Box::new(info),
                    public,
                    skipped: None,
                },
                Err(reason) => {
                    Pick::NoneUsable(format!("pinned key version {pinned} cannot wrap: {reason}"))
                }
            });
        }
        match (verdict, &self.newest) {
            (Ok(public), skipped) => Step::Done(Pick::Use {
                info: Box::new(info),
                public,
                skipped: skipped.clone(),
            }),
            (Err(reason), None) => {
                self.newest = Some((info.version, reason));
                Step::List
            }
            (Err(_), Some(_)) => self.next_older(),
        }
    }

    /// The listing of versions, as [`Step::List`] asked.
    pub(super) fn listed(&mut self, versions: Vec<KeyInfo>) -> Step {
        if let Some((newest, _)) = &self.newest {
            self.older = fallback_order(versions, newest, self.now)
                .into_iter()
                .take(MAX_FALLBACK_READS);
        }
        self.next_older()
    }

    /// The listing was refused: the identity lacks `permission`.
    pub(super) fn list_denied(&self, permission: &'static str) -> Step {
        let (newest, reason) = self.newest_or_unknown();
        Step::Done(Pick::NoneUsable(format!(
            "the newest key version {newest} cannot wrap ({reason}), and finding an older one needs the {permission} permission"
        )))
    }

    fn next_older(&mut self) -> Step {
        if let Some(version) = self.older.next() {
            return Step::Read(Some(version));
        }
        let (newest, reason) = self.newest_or_unknown();
        Step::Done(Pick::NoneUsable(format!(
            "no version of the key can wrap: the newest ({newest}) {reason}, and no older version is enabled, valid and RSA"
        )))
    }

    /// The newest version and its reason; placeholders only if the steps were taken out of
    /// order (the ring never does).
    fn newest_or_unknown(&self) -> (&str, &str) {
        match &self.newest {
            Some((version, reason)) => (version.as_str(), reason.as_str()),
            None => ("(not read)", "was not read"),
        }
    }
}

/// Whether a version can wrap seeds now, and its public key when local wrapping needs it.
pub(super) fn usable(
    info: &KeyInfo,
    now: i64,
    need_public: bool,
) -> Result<Option<Arc<PublicWrapKey>>, String> {
    if let Some(problem) = info.wrap_problem(now) {
        return Err(problem);
    }
    match &info.rsa {
        Some(rsa) => PublicWrapKey::new(rsa)
            .map(|k| Some(Arc::new(k)))
            .map_err(|e| e.to_string()),
        None if need_public => Err("Key Vault returned no RSA public key for it".into()),
        None => Ok(None),
    }
}

/// The order in which versions are tried when the newest is unusable: usable by their
/// attributes, newest first by creation time (then by version, so the order is total).
pub(super) fn fallback_order(
    mut versions: Vec<KeyInfo>,
    newest: &KeyVersion,
    now: i64,
) -> Vec<KeyVersion> {
    versions.retain(|v| &v.version != newest && v.unusable_reason(now).is_none());
    versions.sort_by(|a, b| {
        (b.created.unwrap_or(0), &b.version).cmp(&(a.created.unwrap_or(0), &a.version))
    });
    versions.into_iter().map(|v| v.version).collect()
}

#[cfg(test)]
mod tests;
