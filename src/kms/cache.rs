//! The decrypt cache: bounded (LRU + TTL), plaintexts zeroized when evicted, and identical
//! concurrent misses coalesced into one Key Vault call.
//!
//! A miss starts the fetch as its own task, bounded by the Key Vault deadline: callers that
//! give up (kube-apiserver's own timeout) do not cancel it, and its result still fills the
//! cache for the retry that follows. Every waiter for the same key shares that one fetch.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::azure::keyvault::KvError;

/// A cached plaintext. Zeroized when the last reference goes.
pub type Plaintext = Arc<Zeroizing<Vec<u8>>>;

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache.
    Hit,
    /// This caller's fetch.
    Miss,
    /// Joined another caller's fetch in flight.
    Coalesced,
}

impl Outcome {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

type Slot = watch::Receiver<Option<Result<Plaintext, KvError>>>;

struct Entry {
    plaintext: Plaintext,
    inserted: Instant,
}

/// The cache.
pub struct DecryptCache {
    entries: Mutex<LruCache<[u8; 32], Entry>>,
    inflight: Mutex<HashMap<[u8; 32], Slot>>,
    ttl: Duration,
}

impl std::fmt::Debug for DecryptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptCache")
            .field("entries", &self.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl DecryptCache {
    /// A cache of at most `capacity` plaintexts, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, key: &[u8; 32]) -> Option<Plaintext> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(e) if e.inserted.elapsed() < self.ttl => Some(Arc::clone(&e.plaintext)),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: [u8; 32], plaintext: Plaintext) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(
                key,
                Entry {
                    plaintext,
                    inserted: Instant::now(),
                },
            );
    }

    /// Answers from the cache, joins a fetch in flight, or starts `fetch`.
    pub async fn get_or_fetch<F, Fut>(
        self: &Arc<Self>,
        key: [u8; 32],
        fetch: F,
    ) -> (Result<Plaintext, KvError>, Outcome)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Zeroizing<Vec<u8>>, KvError>> + Send + 'static,
    {
        if let Some(p) = self.lookup(&key) {
            return (Ok(p), Outcome::Hit);
        }
        let (mut rx, outcome) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            // Re-check under the in-flight lock: a fetch may have finished meanwhile.
            if let Some(p) = self.lookup(&key) {
                return (Ok(p), Outcome::Hit);
            }
            match inflight.get(&key) {
                Some(rx) => (rx.clone(), Outcome::Coalesced),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key, rx.clone());
                    let this = Arc::clone(self);
                    let work = fetch();
                    tokio::spawn(async move {
                        let result = work.await.map(Arc::new);
                        if let Ok(p) = &result {
                            this.insert(key, Arc::clone(p));
                        }
                        this.inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                        let _ = tx.send(Some(result));
                    });
                    (rx, Outcome::Miss)
                }
            }
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| {
                Err(KvError::Unavailable("fetch ended without a result".into()))
            }),
            Err(_) => Err(KvError::Unavailable("fetch ended without a result".into())),
        };
        (result, outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch_and_later_calls_hit() {
        let cache = Arc::new(DecryptCache::new(10, Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch([1; 32], move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Zeroizing::new(vec![7; 32]))
                    })
                    .await
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            let (r, o) = t.await.unwrap();
            assert_eq!(r.unwrap().as_slice(), &[7; 32]);
            outcomes.push(o);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Miss).count(), 1);
        let (_, o) = cache
            .get_or_fetch([1; 32], || async { Err(KvError::Throttled) })
            .await;
        assert_eq!(o, Outcome::Hit);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_ttl_and_capacity_evict() {
        let cache = Arc::new(DecryptCache::new(2, Duration::from_millis(30)));
        let (r, _) = cache
            .get_or_fetch([1; 32], || async { Err(KvError::Throttled) })
            .await;
        assert_eq!(r.unwrap_err(), KvError::Throttled);
        let (r, o) = cache
            .get_or_fetch([1; 32], || async { Ok(Zeroizing::new(vec![1])) })
            .await;
        assert!(r.is_ok());
        assert_eq!(o, Outcome::Miss, "the error was not cached");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (_, o) = cache
            .get_or_fetch([1; 32], || async { Ok(Zeroizing::new(vec![1])) })
            .await;
        assert_eq!(o, Outcome::Miss, "expired by TTL");
        for k in 2..5u8 {
            let _ = cache
                .get_or_fetch([k; 32], move || async move { Ok(Zeroizing::new(vec![k])) })
                .await;
        }
        assert_eq!(cache.len(), 2, "bounded by capacity");
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_cancel_the_fetch() {
        let cache = Arc::new(DecryptCache::new(10, Duration::from_secs(60)));
        let fut = cache.get_or_fetch([9; 32], || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Zeroizing::new(vec![9]))
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(5), fut)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (_, o) = cache
            .get_or_fetch([9; 32], || async { Err(KvError::Throttled) })
            .await;
        assert_eq!(
            o,
            Outcome::Hit,
            "the abandoned fetch still filled the cache"
        );
    }
}
