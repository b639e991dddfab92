//! The version choice, fed Key Vault's answers by hand: which version wins, which are
//! skipped and why, and which calls the choice asks for.

use super::*;
use crate::azure::keyvault::RsaPublic;
use crate::kms::backend::fake::{key_pool, rsa_public};

const NOW: i64 = 1_800_000_000;

fn info(version: &str, created: i64) -> KeyInfo {
    KeyInfo {
        version: KeyVersion::parse(version).unwrap(),
        enabled: true,
        not_before: None,
        expires: None,
        created: Some(created),
        kty: Some("RSA".into()),
        key_ops: vec![],
        rsa: None,
    }
}

/// A version that can wrap locally: RSA-2048 with its public key, encrypt and decrypt.
fn good(version: &str, created: i64) -> KeyInfo {
    KeyInfo {
        key_ops: vec!["encrypt".into(), "decrypt".into()],
        rsa: Some(rsa_public(&key_pool()[0])),
        ..info(version, created)
    }
}

/// Every way a version can be unusable, with the words its reason contains.
fn broken(version: &str, created: i64) -> Vec<(KeyInfo, &'static str)> {
    let base = good(version, created);
    vec![
        (
            KeyInfo {
                enabled: false,
                ..base.clone()
            },
            "disabled",
        ),
        (
            KeyInfo {
                expires: Some(NOW),
                ..base.clone()
            },
            "expired",
        ),
        (
            KeyInfo {
                not_before: Some(NOW + 1),
                ..base.clone()
            },
            "not yet valid",
        ),
        (
            KeyInfo {
                kty: Some("EC".into()),
                ..base.clone()
            },
            "key type EC",
        ),
        (
            KeyInfo {
                key_ops: vec!["sign".into(), "verify".into()],
                ..base.clone()
            },
            "do not allow encrypt",
        ),
        (
            KeyInfo {
                key_ops: vec!["encrypt".into()],
                ..base.clone()
            },
            "do not allow decrypt",
        ),
        (
            KeyInfo {
                rsa: RsaPublic::new(&[0xc1; 128], &[1, 0, 1]),
                ..base.clone()
            },
            "1024 bits",
        ),
        (KeyInfo { rsa: None, ..base }, "no RSA public key"),
    ]
}

/// Runs a choice the way the ring does, against `vault` (full metadata, the last is the
/// latest) and `listing` (`Err`: the permission the identity lacks). Returns the pick and
/// the calls made, as `get latest`, `get <version>`, `list`.
fn run(
    pinned: Option<&str>,
    need_public: bool,
    vault: &[KeyInfo],
    listing: Result<Vec<KeyInfo>, &'static str>,
) -> (Pick, Vec<String>) {
    let mut choice = Choice::new(
        pinned.map(|p| KeyVersion::parse(p).unwrap()),
        NOW,
        need_public,
    );
    let mut calls = Vec::new();
    let mut step = choice.start();
    loop {
        step = match step {
            Step::Read(None) => {
                calls.push("get latest".to_owned());
                choice.read(vault.last().unwrap().clone())
            }
            Step::Read(Some(v)) => {
                calls.push(format!("get {v}"));
                let found = vault.iter().find(|i| i.version == v).unwrap();
                choice.read(found.clone())
            }
            Step::List => {
                calls.push("list".to_owned());
                match listing.clone() {
                    Ok(versions) => choice.listed(versions),
                    Err(permission) => choice.list_denied(permission),
                }
            }
            Step::Done(pick) => return (pick, calls),
        };
    }
}

fn used(pick: &Pick) -> (&str, bool, Option<(&str, &str)>) {
    match pick {
        Pick::Use {
            info,
            public,
            skipped,
        } => (
            info.version.as_str(),
            public.is_some(),
            skipped.as_ref().map(|(v, r)| (v.as_str(), r.as_str())),
        ),
        Pick::NoneUsable(reason) => panic!("none usable: {reason}"),
    }
}

fn none_usable(pick: &Pick) -> &str {
    match pick {
        Pick::NoneUsable(reason) => reason,
        Pick::Use { info, .. } => panic!("picked {}", info.version),
    }
}

#[test]
fn fallback_tries_usable_versions_newest_first_and_never_the_newest_again() {
    let disabled = KeyInfo {
        enabled: false,
        ..info("d", 50)
    };
    let expired = KeyInfo {
        expires: Some(10),
        ..info("x", 60)
    };
    let order = fallback_order(
        vec![
            info("a", 10),
            info("newest", 90),
            disabled,
            info("c", 30),
            expired,
            info("b", 30),
        ],
        &KeyVersion::parse("newest").unwrap(),
        100,
    );
    let names: Vec<&str> = order.iter().map(KeyVersion::as_str).collect();
    assert_eq!(
        names,
        ["c", "b", "a"],
        "creation time, then version, newest first"
    );
}

#[test]
fn usable_needs_a_public_key_only_for_local_wrapping() {
    let no_key = info("a", 1);
    assert!(usable(&no_key, 2, true).unwrap_err().contains("public key"));
    assert!(usable(&no_key, 2, false).unwrap().is_none());
    let ec = KeyInfo {
        kty: Some("EC".into()),
        ..info("a", 1)
    };
    assert!(usable(&ec, 2, false).unwrap_err().contains("EC"));
    let small = KeyInfo {
        rsa: RsaPublic::new(&[0xc1; 128], &[1, 0, 1]),
        ..info("a", 1)
    };
    assert!(usable(&small, 2, true).unwrap_err().contains("1024 bits"));
}

#[test]
fn a_usable_newest_version_wins_with_one_read_and_no_listing() {
    let vault = [good("old", 10), good("new", 20)];
    let (pick, calls) = run(None, true, &vault, Err("keys/list"));
    assert_eq!(used(&pick), ("new", true, None));
    assert_eq!(calls, ["get latest"]);
}

#[test]
fn remote_wraps_need_no_public_key_and_local_wraps_do() {
    let vault = [
        good("old", 10),
        KeyInfo {
            rsa: None,
            ..good("new", 20)
        },
    ];
    let (pick, calls) = run(None, false, &vault, Ok(vault.to_vec()));
    assert_eq!(used(&pick), ("new", false, None));
    assert_eq!(calls, ["get latest"]);

    let (pick, calls) = run(None, true, &vault, Ok(vault.to_vec()));
    let (version, public, skipped) = used(&pick);
    assert_eq!((version, public), ("old", true));
    let (newest, reason) = skipped.unwrap();
    assert_eq!(newest, "new");
    assert!(reason.contains("no RSA public key"), "{reason}");
    assert_eq!(calls, ["get latest", "list", "get old"]);
}

#[test]
fn every_unusable_newest_version_falls_back_to_the_newest_usable_older_one() {
    for (newest, why) in broken("new", 30) {
        let vault = [good("older", 10), good("old", 20), newest];
        let (pick, calls) = run(None, true, &vault, Ok(vault.to_vec()));
        let (version, public, skipped) = used(&pick);
        assert_eq!((version, public), ("old", true), "{why}");
        let (skipped, reason) = skipped.unwrap();
        assert_eq!(skipped, "new");
        assert!(reason.contains(why), "{reason} should say {why}");
        assert_eq!(calls, ["get latest", "list", "get old"], "{why}");
    }
}

#[test]
fn the_listing_skips_versions_unusable_by_their_attributes_without_reading_them() {
    let newest = KeyInfo {
        enabled: false,
        ..good("new", 90)
    };
    let mut vault = vec![good("oldest", 10)];
    for (i, (version, _)) in broken("x", 0).into_iter().take(3).enumerate() {
        // Disabled, expired, not yet valid: the listing says so, no read is spent.
        let name = format!("attr{i}");
        vault.push(KeyInfo {
            version: KeyVersion::parse(&name).unwrap(),
            created: Some(50 + i64::try_from(i).unwrap()),
            ..version
        });
    }
    vault.push(newest);
    let (pick, calls) = run(None, true, &vault, Ok(vault.clone()));
    assert_eq!(used(&pick).0, "oldest");
    assert_eq!(calls, ["get latest", "list", "get oldest"]);
}

#[test]
fn versions_unusable_only_by_their_metadata_are_read_and_skipped_in_order() {
    let newest = KeyInfo {
        enabled: false,
        ..good("new", 90)
    };
    let ec = KeyInfo {
        kty: Some("EC".into()),
        ..good("ec", 80)
    };
    let sign = KeyInfo {
        key_ops: vec!["sign".into()],
        ..good("sign", 70)
    };
    let vault = [good("b", 60), good("a", 60), sign, ec, newest];
    let (pick, calls) = run(None, true, &vault, Ok(vault.to_vec()));
    assert_eq!(used(&pick), ("b", true, Some(("new", "disabled"))));
    assert_eq!(calls, ["get latest", "list", "get ec", "get sign", "get b"]);
}

#[test]
fn no_usable_version_says_why_after_reading_each_candidate_once() {
    let newest = KeyInfo {
        expires: Some(NOW - 1),
        ..good("new", 90)
    };
    let ec = KeyInfo {
        kty: Some("EC".into()),
        ..good("ec", 80)
    };
    let disabled = KeyInfo {
        enabled: false,
        ..good("off", 85)
    };
    let vault = [ec, disabled, newest];
    let (pick, calls) = run(None, true, &vault, Ok(vault.to_vec()));
    assert_eq!(
        none_usable(&pick),
        "no version of the key can wrap: the newest (new) expired, and no older version is \
         enabled, valid and RSA"
    );
    assert_eq!(calls, ["get latest", "list", "get ec"]);
}

#[test]
fn an_empty_or_newest_only_listing_leaves_none_usable() {
    let newest = KeyInfo {
        enabled: false,
        ..good("new", 90)
    };
    for listing in [vec![], vec![newest.clone()]] {
        let (pick, calls) = run(None, true, std::slice::from_ref(&newest), Ok(listing));
        assert!(
            none_usable(&pick)
                .starts_with("no version of the key can wrap: the newest (new) disabled"),
            "{}",
            none_usable(&pick)
        );
        assert_eq!(calls, ["get latest", "list"]);
    }
}

#[test]
fn a_refused_listing_leaves_none_usable_naming_the_permission() {
    let newest = KeyInfo {
        enabled: false,
        ..good("new", 90)
    };
    let vault = [good("old", 10), newest];
    let (pick, calls) = run(None, true, &vault, Err("keys/list"));
    assert_eq!(
        none_usable(&pick),
        "the newest key version new cannot wrap (disabled), and finding an older one needs \
         the keys/list permission"
    );
    assert_eq!(calls, ["get latest", "list"]);
}

#[test]
fn at_most_sixteen_older_versions_are_read() {
    let newest = KeyInfo {
        enabled: false,
        ..good("new", 1000)
    };
    let mut vault: Vec<KeyInfo> = (0..20)
        .map(|i| KeyInfo {
            kty: Some("EC".into()),
            ..good(&format!("v{i}"), i)
        })
        .collect();
    // The oldest version could wrap, but it is the 21st candidate.
    vault.insert(0, good("usable", -1));
    vault.push(newest);
    let (pick, calls) = run(None, true, &vault, Ok(vault.clone()));
    none_usable(&pick);
    assert_eq!(calls.len(), 2 + MAX_FALLBACK_READS);
    assert_eq!(calls[2], "get v19", "newest first");
    assert_eq!(calls.last().unwrap(), "get v4");
}

#[test]
fn a_pinned_version_is_used_alone_even_when_a_newer_one_exists() {
    let vault = [good("pin", 10), good("new", 20)];
    let (pick, calls) = run(Some("pin"), true, &vault, Ok(vault.to_vec()));
    assert_eq!(used(&pick), ("pin", true, None));
    assert_eq!(calls, ["get pin"]);
}

#[test]
fn an_unusable_pinned_version_is_never_replaced() {
    for (pinned, why) in broken("pin", 10) {
        let vault = [pinned, good("new", 20)];
        let (pick, calls) = run(Some("pin"), true, &vault, Ok(vault.to_vec()));
        let reason = none_usable(&pick);
        assert!(
            reason.starts_with("pinned key version pin cannot wrap: "),
            "{reason}"
        );
        assert!(reason.contains(why), "{reason} should say {why}");
        assert_eq!(calls, ["get pin"], "{why}");
    }
}

#[test]
fn a_pinned_version_without_a_public_key_wraps_remotely() {
    let vault = [KeyInfo {
        rsa: None,
        ..good("pin", 10)
    }];
    let (pick, _) = run(Some("pin"), false, &vault, Err("keys/list"));
    assert_eq!(used(&pick), ("pin", false, None));
}
