//! The decrypt cache: bounded (LRU + TTL), plaintexts zeroized when evicted, and identical
//! concurrent misses coalesced into one Key Vault call.
//!
//! A miss starts the fetch as its own task, bounded by the Key Vault deadline: callers that
//! give up (kube-apiserver's own timeout) do not cancel it, and its result still fills the
//! cache for the retry that follows. Every waiter for the same key shares that one fetch.
//!
//! Seeds the plugin wrapped itself (Encrypt) are kept apart, without a TTL: kube-apiserver
//! never decrypts its own seed while it runs (it keeps it), so nothing would refresh such
//! an entry, yet a kube-apiserver restarted during a Key Vault outage must read what it
//! wrote, however long ago. kube-apiserver wraps a seed only at start and on rotation, so
//! [`OWN_SEEDS`] (the most recent ones, least recently used evicted first) covers years.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lru::LruCache;

use zeroize::Zeroizing;

use crate::azure::keyvault::KvError;
pub use crate::cache::Outcome;
use crate::cache::{CoalescingCache, Fresh};
use crate::kms::envelope::CacheKey;

/// A cached plaintext. Zeroized when the last reference goes.
pub type Plaintext = Arc<Zeroizing<Vec<u8>>>;

/// Seeds wrapped by this process kept without expiry.
pub const OWN_SEEDS: usize = 1024;

/// The cache: plaintext seeds by a digest of stored ciphertext, key id and algorithm.
pub struct DecryptCache {
    inner: Arc<CoalescingCache<CacheKey, Plaintext, KvError>>,
    own: Mutex<LruCache<CacheKey, Plaintext>>,
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
            inner: Arc::new(CoalescingCache::new(capacity, usize::MAX)),
            own: Mutex::new(LruCache::new(
                NonZeroUsize::new(OWN_SEEDS).unwrap_or(NonZeroUsize::MIN),
            )),
            ttl,
        }
    }

    /// Entries held (decrypted and wrapped here).
    pub fn len(&self) -> usize {
        self.inner.len() + self.own().len()
    }

    fn own(&self) -> std::sync::MutexGuard<'_, LruCache<CacheKey, Plaintext>> {
        self.own.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// A cached seed (decrypted and fresh, or wrapped here); no fetch.
    pub fn peek(&self, key: &CacheKey) -> Option<Plaintext> {
        self.inner
            .peek(key)
            .or_else(|| self.own().get(key).cloned())
    }

    /// Stores a seed the plugin wrapped itself: Decrypt answers it exactly as if it had
    /// been decrypted, with no expiry (see the module documentation).
    pub fn put(&self, key: CacheKey, plaintext: Zeroizing<Vec<u8>>) {
        self.own().put(key, Arc::new(plaintext));
    }

    /// Answers from the cache, joins a fetch in flight, or starts `fetch`.
    pub async fn get_or_fetch<F, Fut>(
        self: &Arc<Self>,
        key: CacheKey,
        fetch: F,
    ) -> (Result<Plaintext, KvError>, Outcome)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Zeroizing<Vec<u8>>, KvError>> + Send + 'static,
    {
        let ttl = self.ttl;
        self.inner
            .get_or_fetch(key, move || {
                let work = fetch();
                async move {
                    // A seed is immutable: no stale grace is needed, the TTL is the bound.
                    work.await.map(|plaintext| Fresh {
                        value: Arc::new(plaintext),
                        ttl,
                        stale_grace: Duration::ZERO,
                        weight: 1,
                    })
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::kms::envelope::WRAP_ALGORITHM;

    fn k(n: u8) -> CacheKey {
        CacheKey::new(&[n; 8], "id", WRAP_ALGORITHM)
    }

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
                    .get_or_fetch(k(1), move || async move {
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
            .get_or_fetch(k(1), || async { Err(KvError::unavailable("down")) })
            .await;
        assert_eq!(o, Outcome::Hit);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_ttl_and_capacity_evict() {
        let cache = Arc::new(DecryptCache::new(2, Duration::from_millis(30)));
        let (r, _) = cache
            .get_or_fetch(k(1), || async { Err(KvError::unavailable("down")) })
            .await;
        assert_eq!(r.unwrap_err(), KvError::unavailable("down"));
        let (r, o) = cache
            .get_or_fetch(k(1), || async { Ok(Zeroizing::new(vec![1])) })
            .await;
        assert!(r.is_ok());
        assert_eq!(o, Outcome::Miss, "the error was not cached");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (_, o) = cache
            .get_or_fetch(k(1), || async { Ok(Zeroizing::new(vec![1])) })
            .await;
        assert_eq!(o, Outcome::Miss, "expired by TTL");
        for n in 2..5u8 {
            let _ = cache
                .get_or_fetch(k(n), move || async move { Ok(Zeroizing::new(vec![n])) })
                .await;
        }
        assert_eq!(cache.len(), 2, "bounded by capacity");
    }

    #[tokio::test]
    async fn a_put_seed_is_a_hit_and_peek_never_fetches() {
        let cache = Arc::new(DecryptCache::new(10, Duration::from_secs(60)));
        assert!(cache.peek(&k(3)).is_none());
        cache.put(k(3), Zeroizing::new(vec![3; 32]));
        assert_eq!(cache.peek(&k(3)).unwrap().as_slice(), &[3; 32]);
    }

    #[tokio::test]
    async fn a_seed_wrapped_here_outlives_the_decrypt_ttl_and_a_full_cache() {
        let cache = Arc::new(DecryptCache::new(2, Duration::from_millis(20)));
        cache.put(k(1), Zeroizing::new(vec![1; 32]));
        for n in 2..6u8 {
            let _ = cache
                .get_or_fetch(k(n), move || async move { Ok(Zeroizing::new(vec![n])) })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(cache.peek(&k(5)).is_none(), "decrypted seeds expire");
        assert_eq!(cache.peek(&k(1)).unwrap().as_slice(), &[1; 32]);
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_cancel_the_fetch() {
        let cache = Arc::new(DecryptCache::new(10, Duration::from_secs(60)));
        let fut = cache.get_or_fetch(k(9), || async {
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
            .get_or_fetch(k(9), || async { Err(KvError::unavailable("down")) })
            .await;
        assert_eq!(
            o,
            Outcome::Hit,
            "the abandoned fetch still filled the cache"
        );
    }
}
