//! Tests of [`ApiServer`]: kube-apiserver's write state and seed cache, against the fake
//! plugin.

use super::*;
use crate::probe::fixtures::{FakeKms, serve};
use crate::probe::steps::SAMPLE_SECRET;
use crate::probe::{DEFAULT_PROVIDER_NAME, DEFAULT_TIMEOUT};
use crate::socket::{SocketAddress, connect};
use std::sync::atomic::Ordering;

async fn api_server(socket: &SocketAddress) -> ApiServer {
    let channel = connect(socket, DEFAULT_TIMEOUT).await.unwrap();
    ApiServer::new(channel, ProbeOptions::default())
}

const KEY: &str = "/registry/secrets/default/db";

#[tokio::test]
async fn api_server_has_no_transformer_before_the_first_encrypt() {
    let fake = FakeKms {
        status_key_id: String::new(),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    assert!(!a.has_transformer());
    assert_eq!(a.write(KEY, b"x").unwrap_err(), NIL_TRANSFORMER);

    // Status answers, but without a valid key id nothing is encrypted.
    let seen = a.poll().await.unwrap();
    assert_eq!((seen.healthz.as_str(), seen.key_id.as_str()), ("ok", ""));
    assert_eq!((a.encrypt_calls(), fake.encrypts()), (0, 0));
    assert!(!a.has_transformer());
    assert_eq!(a.write_key_id(), None);

    // Another API server writes once the key id is valid; `a` still cannot read it.
    fake.set_key_ids("key-1", "key-1");
    let mut b = api_server(&socket).await;
    b.poll().await.unwrap();
    let value = b.write(KEY, b"db-password").unwrap();
    assert_eq!(a.read(KEY, &value).await.unwrap_err(), NIL_TRANSFORMER);
    assert_eq!(a.write(KEY, b"x").unwrap_err(), NIL_TRANSFORMER);
    assert_eq!(a.decrypt_calls(), 0);

    // After its first Encrypt it reads.
    a.poll().await.unwrap();
    assert!(a.has_transformer());
    assert_eq!(
        a.read(KEY, &value).await.unwrap().as_slice(),
        b"db-password"
    );
    assert_eq!(a.decrypt_calls(), 1);
}

#[tokio::test]
async fn api_server_encrypts_even_when_healthz_is_not_ok() {
    let fake = FakeKms {
        healthz: "key vault throttled".into(),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    let seen = a.poll().await.unwrap();
    assert_eq!(seen.healthz, "key vault throttled");
    assert_eq!(seen.version, "v2");
    assert_eq!((a.encrypt_calls(), fake.encrypts()), (1, 1));
    assert!(a.has_transformer());
    assert_eq!(a.write_key_id(), Some("key-1"));
    let value = a.write(KEY, b"v").unwrap();
    assert_eq!(a.read(KEY, &value).await.unwrap().as_slice(), b"v");
}

#[tokio::test]
async fn a_key_id_change_causes_exactly_one_new_encrypt() {
    let fake = FakeKms::good();
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    for _ in 0..3 {
        a.poll().await.unwrap();
    }
    assert_eq!((a.encrypt_calls(), fake.encrypts()), (1, 1));
    let old = a.write(KEY, b"old").unwrap();

    fake.set_key_ids("key-2", "key-2");
    for _ in 0..3 {
        assert_eq!(a.poll().await.unwrap().key_id, "key-2");
    }
    assert_eq!((a.encrypt_calls(), fake.encrypts()), (2, 2));
    assert_eq!(a.write_key_id(), Some("key-2"));
    let new = a.write(KEY, b"new").unwrap();
    let object = decode_etcd_value(DEFAULT_PROVIDER_NAME, &new).unwrap();
    assert_eq!(object.key_id, "key-2");

    // Both of its own seeds open without a Decrypt.
    assert_eq!(a.read(KEY, &old).await.unwrap().as_slice(), b"old");
    assert_eq!(a.read(KEY, &new).await.unwrap().as_slice(), b"new");
    assert_eq!((a.decrypt_calls(), fake.decrypts()), (0, 0));
}

#[tokio::test]
async fn own_seed_reads_send_no_decrypt() {
    let fake = FakeKms::good();
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    a.poll().await.unwrap();
    let value = a.write(KEY, SAMPLE_SECRET).unwrap();
    assert!(value.starts_with(b"k8s:enc:kms:v2:azurekmsprovider:"));
    for _ in 0..2 {
        assert_eq!(a.read(KEY, &value).await.unwrap().as_slice(), SAMPLE_SECRET);
    }
    // The etcd key is the additional data: the value does not open under another key.
    let err = a
        .read("/registry/secrets/default/other", &value)
        .await
        .unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    assert_eq!((a.decrypt_calls(), fake.decrypts()), (0, 0));
}

#[tokio::test]
async fn another_api_servers_value_costs_one_decrypt_then_hits_the_cache() {
    let fake = FakeKms::good();
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    a.poll().await.unwrap();
    let first = a.write(KEY, b"first").unwrap();
    let second = a.write("/registry/secrets/default/db2", b"second").unwrap();

    let mut b = api_server(&socket).await;
    b.poll().await.unwrap();
    assert_eq!(b.read(KEY, &first).await.unwrap().as_slice(), b"first");
    assert_eq!((b.decrypt_calls(), fake.decrypts()), (1, 1));
    assert_eq!(b.read(KEY, &first).await.unwrap().as_slice(), b"first");
    // Same DEK source, another object: the cache again.
    let read = b
        .read("/registry/secrets/default/db2", &second)
        .await
        .unwrap();
    assert_eq!(read.as_slice(), b"second");
    assert_eq!((b.decrypt_calls(), fake.decrypts()), (1, 1));
}

#[tokio::test]
async fn an_encrypt_whose_key_id_differs_from_status_is_discarded() {
    let fake = FakeKms {
        encrypt_key_id: "key-2".into(),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    let err = a.poll().await.unwrap_err();
    assert!(
        err.contains("\"key-2\"") && err.contains("\"key-1\""),
        "{err}"
    );
    assert!(!a.has_transformer());
    assert_eq!(a.write(KEY, b"x").unwrap_err(), NIL_TRANSFORMER);
    // Every poll tries again.
    assert!(a.poll().await.is_err());
    assert_eq!(a.encrypt_calls(), 2);

    // With a write state, a mismatched rotation keeps the previous one.
    fake.set_key_ids("key-1", "key-1");
    a.poll().await.unwrap();
    assert_eq!(a.write_key_id(), Some("key-1"));
    fake.set_key_ids("key-3", "key-4");
    assert!(a.poll().await.is_err());
    assert_eq!(a.write_key_id(), Some("key-1"));
    let value = a.write(KEY, b"still").unwrap();
    assert_eq!(
        decode_etcd_value(DEFAULT_PROVIDER_NAME, &value)
            .unwrap()
            .key_id,
        "key-1"
    );
}

#[tokio::test]
async fn a_failed_encrypt_keeps_the_previous_write_state() {
    let fake = FakeKms::good();
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    a.poll().await.unwrap();
    fake.live.fail_encrypt.store(true, Ordering::SeqCst);
    fake.set_key_ids("key-2", "key-2");
    let err = a.poll().await.unwrap_err();
    assert!(
        err.starts_with("Encrypt:") && err.contains("key vault unreachable"),
        "{err}"
    );
    assert_eq!(a.write_key_id(), Some("key-1"));
    assert!(a.write(KEY, b"x").is_ok());

    // A fresh API server gets no transformer at all.
    let mut b = api_server(&socket).await;
    assert!(b.poll().await.is_err());
    assert!(!b.has_transformer());
}

#[tokio::test]
async fn writes_stop_when_the_write_state_expires_and_reads_do_not() {
    let fake = FakeKms::good();
    let (_dir, socket) = serve(fake.clone()).await;
    let mut a = api_server(&socket).await;
    a.poll().await.unwrap();
    let value = a.write(KEY, b"v").unwrap();
    a.expire_write_state();
    let err = a.write(KEY, b"v").unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(a.read(KEY, &value).await.unwrap().as_slice(), b"v");
    // A Status with the same key id extends it without an Encrypt.
    a.poll().await.unwrap();
    assert!(a.write(KEY, b"v").is_ok());
    assert_eq!(a.encrypt_calls(), 1);
}

#[tokio::test]
async fn api_server_reads_report_undecodable_values() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let mut a = api_server(&socket).await;
    a.poll().await.unwrap();
    let err = a.read(KEY, b"k8s:enc:kms:v2:other:xx").await.unwrap_err();
    assert!(err.contains("does not start with"), "{err}");
    let mut value = a.write(KEY, b"v").unwrap();
    value.truncate(value.len() - 3);
    assert!(a.read(KEY, &value).await.is_err());
    assert_eq!(a.decrypt_calls(), 0);
    let debug = format!("{a:?}");
    assert!(
        debug.contains("key-1") && !debug.contains("seed: "),
        "{debug}"
    );
}
