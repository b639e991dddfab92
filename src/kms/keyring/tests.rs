//! The key ring against the in-memory fake: start-up, rotation, outages, key id
//! resolution, pinned versions and permissions, and how many Key Vault calls each makes.

use super::*;
use crate::kms::backend::fake::{Failure, FakeVault, Op};

fn ring(fake: &Arc<FakeVault>, pinned: Option<&KeyVersion>, remote_encrypt: bool) -> KeyRing {
    let backend: Arc<dyn KeyBackend> = Arc::clone(fake) as _;
    KeyRing::new(
        backend,
        pinned.cloned(),
        remote_encrypt,
        KeyMetrics::default(),
    )
}

fn current(ring: &KeyRing) -> KeyVersion {
    ring.current().unwrap().version.clone()
}

/// Moves the last listing, and the last Key Vault failure, back past their quiet periods,
/// as if that much time had passed.
fn age(ring: &KeyRing) {
    ring.update(|s| {
        s.last_list = s.last_list.and_then(|t| t.checked_sub(LIST_COOLDOWN));
        s.vault.last_failure = s.vault.last_failure.and_then(|t| t.checked_sub(RECOVERY));
    });
}

/// Calls per operation: get, list, encrypt, decrypt.
fn calls(fake: &FakeVault) -> [usize; 4] {
    [Op::Get, Op::List, Op::Encrypt, Op::Decrypt].map(|op| fake.calls(op))
}

#[test]
fn reachability_turns_healthy_only_after_a_quiet_period() {
    let mut r = Reachability {
        status: Err("not yet".into()),
        last_failure: None,
    };
    assert!(r.success(), "first contact heals at once");
    assert!(r.failure("down".into()));
    assert!(!r.failure("down again".into()), "one transition per period");
    assert!(
        !r.success(),
        "a success right after a failure does not heal"
    );
    assert!(r.status.is_err());
    r.last_failure = Instant::now().checked_sub(RECOVERY);
    assert!(r.success());
    assert!(r.status.is_ok());
}

#[tokio::test]
async fn the_first_poll_settles_with_one_read_one_listing_and_one_self_test() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    assert!(
        ring.status()
            .unwrap_err()
            .starts_with("no usable key version yet")
    );

    assert!(ring.poll_once().await);
    let c = ring.current().unwrap();
    assert_eq!(c.version, v1);
    assert_eq!(*c.key_id, fake.key().key_id(&v1));
    assert!(ring.local_wrap_key(&c).is_some(), "wraps locally");
    assert_eq!(
        calls(&fake),
        [1, 1, 0, 1],
        "self-test: a local wrap, one decrypt"
    );
    assert_eq!(ring.status(), Ok(()));
    assert_eq!(ring.ready(), Ok(()));
    assert!(ring.status_ok());

    // A settled ring reads the key once per poll, and nothing else, however long after.
    assert!(ring.poll_once().await);
    age(&ring);
    assert!(ring.poll_once().await);
    assert_eq!(calls(&fake), [3, 1, 0, 1]);
}

#[tokio::test]
async fn rotation_moves_to_the_new_version_and_old_key_ids_still_resolve() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    assert!(ring.poll_once().await);
    let old_id = Arc::clone(&ring.current().unwrap().key_id);

    let v2 = fake.add("v2");
    assert!(ring.poll_once().await);
    let c = ring.current().unwrap();
    assert_eq!(c.version, v2);
    assert_ne!(c.key_id, old_id);
    assert_eq!(ring.metrics.rotations.get(), 1);
    assert_eq!(
        calls(&fake),
        [2, 1, 0, 2],
        "the new version gets its own self-test; no new listing"
    );

    assert_eq!(ring.resolve(&old_id).await, Ok(Some(v1.clone())));
    assert_eq!(ring.resolve(&c.key_id).await, Ok(Some(v2.clone())));
    assert_eq!(
        fake.calls(Op::List),
        1,
        "known key ids resolve without a listing"
    );
    assert_eq!(ring.versions_newest_first(), [v2, v1]);
}

#[tokio::test]
async fn an_outage_during_a_poll_keeps_the_current_version_and_turns_readiness() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    assert!(ring.poll_once().await);

    fake.fail(Op::Get, Failure::Outage);
    let v2 = fake.add("v2");
    assert!(!ring.poll_once().await, "unsettled: polled again soon");
    assert_eq!(current(&ring), v1, "a failed poll never moves the version");
    assert_eq!(ring.status(), Ok(()), "local wraps do not need Key Vault");
    assert_eq!(ring.wrap_allowed(), Ok(()));
    let why = ring.ready().unwrap_err();
    assert!(why.contains("Key Vault is unavailable: HTTP 503"), "{why}");

    // Key Vault is back: the rotation happens, readiness waits for a quiet period.
    fake.heal(Op::Get);
    assert!(!ring.poll_once().await);
    assert_eq!(current(&ring), v2);
    assert!(
        ring.ready().is_err(),
        "healthy again only after {RECOVERY:?}"
    );
    age(&ring);
    assert!(ring.poll_once().await);
    assert_eq!(ring.ready(), Ok(()));
}

#[tokio::test]
async fn with_key_vault_wraps_an_outage_turns_status() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, true);
    assert!(ring.poll_once().await);
    let c = ring.current().unwrap();
    assert!(ring.local_wrap_key(&c).is_none());
    assert_eq!(
        calls(&fake),
        [1, 1, 1, 1],
        "self-test: Key Vault encrypt, decrypt"
    );

    fake.fail(Op::Get, Failure::Outage);
    assert!(!ring.poll_once().await);
    assert_eq!(current(&ring), v1);
    let why = ring.status().unwrap_err();
    assert!(why.contains("Key Vault is unavailable"), "{why}");
    assert!(!ring.status_ok());
}

#[tokio::test]
async fn a_throttled_start_says_why_and_settles_once_key_vault_answers() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    fake.fail(Op::Get, Failure::Throttled(Duration::from_secs(5)));
    assert!(!ring.poll_once().await);
    assert!(ring.current().is_none());
    assert_eq!(
        ring.status().unwrap_err(),
        "no usable key version yet: Key Vault is throttling requests (HTTP 429, Retry-After \
         5s) past the retries"
    );
    assert_eq!(
        calls(&fake),
        [1, 0, 0, 0],
        "nothing else before a version is known"
    );

    fake.heal(Op::Get);
    assert!(
        !ring.poll_once().await,
        "throttling is an outage: not yet healthy"
    );
    assert_eq!(current(&ring), v1);
    assert_eq!(ring.status(), Ok(()));
}

#[tokio::test]
async fn an_unknown_key_id_lists_the_versions_at_most_once_per_cooldown() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    fake.add("v2");
    let ring = ring(&fake, None, false);

    assert_eq!(ring.resolve("not-a-key-id").await, Ok(None));
    assert_eq!(fake.calls(Op::List), 1);
    assert_eq!(
        ring.resolve(&fake.key().key_id(&v1)).await,
        Ok(Some(v1)),
        "the listing taught every version's key id"
    );
    assert_eq!(ring.resolve("another-unknown-id").await, Ok(None));
    assert_eq!(fake.calls(Op::List), 1, "one listing per {LIST_COOLDOWN:?}");

    // Past the cooldown, an unknown key id lists again and finds a new version.
    let v3 = fake.add("v3");
    age(&ring);
    assert_eq!(
        ring.resolve(&fake.key().key_id(&v3)).await,
        Ok(Some(v3.clone()))
    );
    assert_eq!(calls(&fake), [0, 2, 0, 0]);
}

#[tokio::test]
async fn a_failed_listing_is_repeated_not_retried_within_the_cooldown() {
    let fake = FakeVault::new();
    fake.add("v1");
    let ring = ring(&fake, None, false);
    fake.fail(Op::List, Failure::Outage);
    let first = ring.resolve("unknown").await.unwrap_err();
    assert!(first.is_transient());
    assert_eq!(ring.resolve("unknown").await, Err(first));
    assert_eq!(fake.calls(Op::List), 1);
}

#[tokio::test]
async fn an_unusable_newest_version_without_list_permission_names_the_permission() {
    let fake = FakeVault::new();
    fake.add("v1");
    let v2 = fake.add("v2");
    fake.edit(&v2, |info| info.enabled = false);
    fake.fail(Op::List, Failure::Forbidden);
    let ring = ring(&fake, None, false);

    assert!(!ring.poll_once().await);
    assert!(ring.current().is_none(), "an older version cannot be found");
    assert_eq!(
        ring.status().unwrap_err(),
        "no usable key version yet: the newest key version v2 cannot wrap (disabled), and \
         finding an older one needs the keys/list permission"
    );
    assert_eq!(calls(&fake), [1, 1, 0, 0]);
}

#[tokio::test]
async fn a_pinned_version_without_list_permission_settles_and_is_not_relisted() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    fake.add("v2");
    fake.fail(Op::List, Failure::Forbidden);
    let ring = ring(&fake, Some(&v1), false);

    assert!(ring.poll_once().await);
    assert_eq!(current(&ring), v1, "pinned, though v2 is newer");
    age(&ring);
    assert!(ring.poll_once().await);
    assert_eq!(
        calls(&fake),
        [2, 1, 0, 1],
        "one listing, refused, never repeated"
    );
    assert_eq!(ring.versions_newest_first(), [v1]);
}

#[tokio::test]
async fn a_pinned_version_without_get_permission_wraps_in_key_vault() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    fake.fail(Op::Get, Failure::Forbidden);
    let ring = ring(&fake, Some(&v1), false);

    assert!(ring.poll_once().await);
    let c = ring.current().unwrap();
    assert_eq!(c.version, v1);
    assert!(c.public.is_none());
    assert!(
        ring.local_wrap_key(&c).is_none(),
        "no public key: Key Vault wraps"
    );
    assert_eq!(calls(&fake), [1, 1, 1, 1]);
    assert_eq!(ring.status(), Ok(()));

    // Once `keys/get` is granted, the next poll moves to local wraps.
    fake.heal(Op::Get);
    assert!(ring.poll_once().await);
    let c = ring.current().unwrap();
    assert!(ring.local_wrap_key(&c).is_some());
    assert_eq!(
        calls(&fake),
        [2, 1, 1, 2],
        "the new wrap path gets its own self-test"
    );
}

#[tokio::test]
async fn a_refused_decrypt_stops_wraps_until_the_self_test_passes_again() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    assert!(ring.poll_once().await);

    fake.fail(Op::Decrypt, Failure::Forbidden);
    let refused = ring.backend().decrypt(&v1, WRAP_ALGORITHM, &[0; 256]).await;
    ring.record(&refused);
    let why = ring.wrap_allowed().unwrap_err();
    assert!(why.contains("keys/decrypt"), "{why}");
    assert!(ring.status().is_err());
    assert!(
        !ring.poll_once().await,
        "the self-test fails while decrypt is refused"
    );

    fake.heal(Op::Decrypt);
    assert!(ring.poll_once().await);
    assert_eq!(ring.wrap_allowed(), Ok(()));
    assert_eq!(
        fake.calls(Op::Decrypt),
        4,
        "start, the refused call, two self-tests"
    );
}

#[tokio::test]
async fn a_disabled_current_version_falls_back_to_the_newest_usable_one() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let v2 = fake.add("v2");
    let ring = ring(&fake, None, false);
    assert!(ring.poll_once().await);
    assert_eq!(current(&ring), v2);

    fake.edit(&v2, |info| info.enabled = false);
    assert!(ring.poll_once().await);
    assert_eq!(current(&ring), v1);
    assert_eq!(
        calls(&fake),
        [3, 2, 0, 2],
        "the latest, a listing, then v1; a self-test for v1"
    );
    assert_eq!(ring.status(), Ok(()));
    assert_eq!(ring.metrics.rotations.get(), 1);
}

#[tokio::test]
async fn a_revoked_key_refuses_wraps_and_keeps_its_key_id() {
    let fake = FakeVault::new();
    let v1 = fake.add("v1");
    let ring = ring(&fake, None, false);
    assert!(ring.poll_once().await);

    fake.edit(&v1, |info| info.expires = Some(unix_now() - 1));
    assert!(!ring.poll_once().await);
    assert_eq!(current(&ring), v1, "Status keeps its key id");
    let why = ring.wrap_allowed().unwrap_err();
    assert!(
        why.starts_with("no version of the key can wrap: the newest (v1) expired"),
        "{why}"
    );
    assert_eq!(ring.status(), Err(why));

    fake.edit(&v1, |info| info.expires = None);
    assert!(ring.poll_once().await);
    assert_eq!(ring.wrap_allowed(), Ok(()));
}
