//! A bounded cache with request coalescing, shared by both servers: the KMS decrypt cache
//! and the CSI object cache.
//!
//! - **Bounded**: at most `capacity` entries and `max_weight` total weight (bytes, for the
//!   CSI cache); least recently used entries go first.
//! - **TTL per entry**: the fetch decides how long its value stays fresh (an explicit Key
//!   Vault version is immutable and kept long, a `latest` lookup briefly).
//! - **Coalescing**: concurrent misses for one key share one fetch. The fetch runs as its own
//!   task, so callers that give up do not cancel it and its result still fills the cache for
//!   the retry that follows.
//! - **Stale on outage**: an entry may carry a grace period past its freshness. When the
//!   refresh of such an entry fails with an error that says the backend is unavailable
//!   ([`CacheError::serve_stale`]), the stale value is answered instead. Errors that say the
//!   caller may not have the value (403, 401) never fall back to it.
//!
//! Values are dropped (and, for zeroizing types, wiped) when evicted and no caller holds
//! them.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache.
    Hit,
    /// This caller's fetch.
    Miss,
    /// Joined another caller's fetch in flight.
    Coalesced,
    /// The refresh failed with a backend outage; the last value was answered.
    Stale,
}

impl Outcome {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
        }
    }
}

/// What a cache's error type must tell it.
pub trait CacheError: Clone + Send + Sync + 'static {
    /// The error a waiter sees when the fetch task ended without a result (it panicked or
    /// the runtime is shutting down).
    fn abandoned() -> Self;
    /// Whether a stale value may answer instead of this error.
    fn serve_stale(&self) -> bool;
}

/// A fetched value and how long to keep it.
#[derive(Debug)]
pub struct Fresh<V> {
    /// The value.
    pub value: V,
    /// How long it answers lookups. Zero: not cached at all.
    pub ttl: Duration,
    /// How long after `ttl` it may still answer when a refresh fails with an outage.
    pub stale_grace: Duration,
    /// Its share of the cache's weight budget (bytes held, or 1).
    pub weight: usize,
}

struct Entry<V> {
    value: V,
    fresh_until: Instant,
    stale_until: Instant,
    weight: usize,
}

struct Entries<K: Hash + Eq, V> {
    lru: LruCache<K, Entry<V>>,
    weight: usize,
}

type Slot<V, E> = watch::Receiver<Option<Result<V, E>>>;

/// The cache. See the module documentation.
pub struct CoalescingCache<K: Hash + Eq, V, E> {
    entries: Mutex<Entries<K, V>>,
    inflight: Mutex<HashMap<K, Slot<V, E>>>,
    max_weight: usize,
}

impl<K: Hash + Eq, V, E> std::fmt::Debug for CoalescingCache<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CoalescingCache")
            .field("entries", &entries.lru.len())
            .field("weight", &entries.weight)
            .field("max_weight", &self.max_weight)
            .finish_non_exhaustive()
    }
}

enum Lookup<V> {
    Fresh(V),
    Stale(V),
    Absent,
}

impl<K, V, E> CoalescingCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: CacheError,
{
    /// A cache of at most `capacity` entries weighing at most `max_weight` together.
    pub fn new(capacity: usize, max_weight: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                lru: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
                weight: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            max_weight,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total weight held.
    pub fn weight(&self) -> usize {
        self.lock().weight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, key: &K) -> Lookup<V> {
        let now = Instant::now();
        let mut entries = self.lock();
        let found = match entries.lru.get(key) {
            Some(e) if now < e.fresh_until => return Lookup::Fresh(e.value.clone()),
            Some(e) if now < e.stale_until => Some(e.value.clone()),
            Some(_) => None,
            None => return Lookup::Absent,
        };
        match found {
            Some(v) => Lookup::Stale(v),
            None => {
                if let Some(old) = entries.lru.pop(key) {
                    entries.weight = entries.weight.saturating_sub(old.weight);
                }
                Lookup::Absent
            }
        }
    }

    fn insert(&self, key: K, fresh: Fresh<V>) {
        if fresh.ttl.is_zero() || fresh.weight > self.max_weight {
            return;
        }
        let now = Instant::now();
        let entry = Entry {
            value: fresh.value,
            fresh_until: now + fresh.ttl,
            stale_until: now + fresh.ttl + fresh.stale_grace,
            weight: fresh.weight,
        };
        let mut entries = self.lock();
        entries.weight += entry.weight;
        if let Some((_, old)) = entries.lru.push(key, entry) {
            // The same key replaced, or the least recently used entry evicted by capacity.
            entries.weight = entries.weight.saturating_sub(old.weight);
        }
        while entries.weight > self.max_weight {
            match entries.lru.pop_lru() {
                Some((_, old)) => entries.weight = entries.weight.saturating_sub(old.weight),
                None => {
                    entries.weight = 0;
                    break;
                }
            }
        }
    }

    /// A fresh value, without fetching (a stale one does not count).
    pub fn peek(&self, key: &K) -> Option<V> {
        match self.lookup(key) {
            Lookup::Fresh(v) => Some(v),
            Lookup::Stale(_) | Lookup::Absent => None,
        }
    }

    /// Answers from the cache, joins a fetch in flight, or starts `fetch` as its own task.
    pub async fn get_or_fetch<F, Fut>(self: &Arc<Self>, key: K, fetch: F) -> (Result<V, E>, Outcome)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fresh<V>, E>> + Send + 'static,
    {
        let stale = match self.lookup(&key) {
            Lookup::Fresh(v) => return (Ok(v), Outcome::Hit),
            Lookup::Stale(v) => Some(v),
            Lookup::Absent => None,
        };
        let (mut rx, outcome) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            // Re-check under the in-flight lock: a fetch may have finished meanwhile.
            if let Lookup::Fresh(v) = self.lookup(&key) {
                return (Ok(v), Outcome::Hit);
            }
            match inflight.get(&key) {
                Some(rx) => (rx.clone(), Outcome::Coalesced),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.clone(), rx.clone());
                    let this = Arc::clone(self);
                    let work = fetch();
                    tokio::spawn(async move {
                        let result = work.await.map(|fresh| {
                            let value = fresh.value.clone();
                            this.insert(key.clone(), fresh);
                            value
                        });
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
            Ok(v) => v.clone().unwrap_or_else(|| Err(E::abandoned())),
            Err(_) => Err(E::abandoned()),
        };
        match (result, stale) {
            (Err(e), Some(v)) if e.serve_stale() => (Ok(v), Outcome::Stale),
            (result, _) => (result, outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum TestError {
        Down,
        Denied,
        Abandoned,
    }

    impl CacheError for TestError {
        fn abandoned() -> Self {
            Self::Abandoned
        }
        fn serve_stale(&self) -> bool {
            matches!(self, Self::Down)
        }
    }

    type Cache = CoalescingCache<u32, Arc<Vec<u8>>, TestError>;

    fn fresh(bytes: Vec<u8>, ttl_ms: u64, grace_ms: u64) -> Fresh<Arc<Vec<u8>>> {
        let weight = bytes.len();
        Fresh {
            value: Arc::new(bytes),
            ttl: Duration::from_millis(ttl_ms),
            stale_grace: Duration::from_millis(grace_ms),
            weight,
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = Arc::new(Cache::new(10, 1000));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(1, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        Ok(fresh(vec![7; 4], 60_000, 0))
                    })
                    .await
            }));
        }
        let mut misses = 0;
        for t in tasks {
            let (r, o) = t.await.unwrap();
            assert_eq!(r.unwrap().as_slice(), &[7; 4]);
            misses += usize::from(o == Outcome::Miss);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(misses, 1);
    }

    #[tokio::test]
    async fn weight_budget_evicts_least_recently_used() {
        let cache = Arc::new(Cache::new(100, 10));
        for k in 0..3u32 {
            let _ = cache
                .get_or_fetch(k, move || async move { Ok(fresh(vec![0; 4], 60_000, 0)) })
                .await;
        }
        assert_eq!(cache.len(), 2, "12 bytes do not fit in 10");
        assert_eq!(cache.weight(), 8);
        let (_, o) = cache
            .get_or_fetch(0, || async { Err(TestError::Down) })
            .await;
        assert_ne!(o, Outcome::Hit, "the oldest entry went first");
        let (_, o) = cache
            .get_or_fetch(9, || async { Ok(fresh(vec![0; 11], 60_000, 0)) })
            .await;
        assert_eq!(o, Outcome::Miss);
        assert_eq!(
            cache.weight(),
            8,
            "a value over the whole budget is not kept"
        );
    }

    #[tokio::test]
    async fn stale_values_answer_outages_but_never_denials() {
        let cache = Arc::new(Cache::new(10, 1000));
        let _ = cache
            .get_or_fetch(1, || async { Ok(fresh(vec![1], 20, 10_000)) })
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (r, o) = cache
            .get_or_fetch(1, || async { Err(TestError::Down) })
            .await;
        assert_eq!((r.unwrap().as_slice(), o), (&[1u8][..], Outcome::Stale));
        let (r, o) = cache
            .get_or_fetch(1, || async { Err(TestError::Denied) })
            .await;
        assert_eq!((r.unwrap_err(), o), (TestError::Denied, Outcome::Miss));
        let (r, o) = cache
            .get_or_fetch(1, || async { Ok(fresh(vec![2], 60_000, 0)) })
            .await;
        assert_eq!((r.unwrap().as_slice(), o), (&[2u8][..], Outcome::Miss));
    }

    #[tokio::test]
    async fn zero_ttl_is_not_cached_and_expiry_without_grace_forgets() {
        let cache = Arc::new(Cache::new(10, 1000));
        let _ = cache
            .get_or_fetch(1, || async { Ok(fresh(vec![1], 0, 0)) })
            .await;
        assert!(cache.is_empty());
        let _ = cache
            .get_or_fetch(2, || async { Ok(fresh(vec![1], 10, 0)) })
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (r, _) = cache
            .get_or_fetch(2, || async { Err(TestError::Down) })
            .await;
        assert_eq!(r.unwrap_err(), TestError::Down);
        assert!(cache.is_empty());
    }
}
