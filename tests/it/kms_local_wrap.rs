//! Seeds wrapped locally (with the key version's public key) are what Key Vault and Managed
//! HSM unwrap: each ciphertext from the plugin's Encrypt is decrypted by the official Azure
//! SDK for Rust (`KeyClient::decrypt`) over HTTPS against mock-vault, for RSA keys of every
//! size, an `RSA-HSM` key in a Managed HSM, and the v1beta1 API's RSA1_5.
//!
//! mock-vault unwraps with aws-lc-rs, the library the plugin wraps with, so this shows the
//! plugin asks for exactly the operation Key Vault performs (RSA-OAEP-256: OAEP, SHA-256,
//! MGF1-SHA-256, empty label) and the SDK path works end to end; it is not an independent
//! implementation. Independent ones: OpenSSL decrypts the plugin's local wraps
//! (`openssl_decrypts_the_local_wrap_…` below), and the Python check
//! (`mock-vault/tests/python/check_sdks.py`) shows OpenSSL's RSA-OAEP-256 wrap (the Python
//! SDK's local wrap) opening in mock-vault.

use crate::common::*;
use crate::harness::Harness;
use akv_bridge::proto::{kms_v1beta1 as v1, kms_v2 as v2};
use azure_security_keyvault_keys::models::{EncryptionAlgorithm, KeyOperationParameters};
use base64::Engine as _;

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    keys:
      - {name: kek2048, kty: RSA, size: 2048}
      - {name: kek3072, kty: RSA, size: 3072}
      - {name: kek4096, kty: RSA, size: 4096}
  - name: hsm1
    kind: managed-hsm
    keys: [{name: kek, kty: RSA-HSM, size: 3072}]
identities:
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions:
      kv1: {keys: [get, list, encrypt, decrypt]}
      hsm1: {keys: [get, list, encrypt, decrypt]}
"#;

/// The official SDK's decrypt of a stored ciphertext text.
async fn sdk_decrypt(
    h: &Harness,
    vault: &str,
    key: &str,
    version: &str,
    algorithm: EncryptionAlgorithm,
    stored: &[u8],
) -> Vec<u8> {
    let client = h.keys(
        vault,
        h.credential("00000000-0000-0000-0000-00000000c0de", "kms-secret"),
    );
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(stored)
        .unwrap();
    let params = KeyOperationParameters {
        algorithm: Some(algorithm),
        value: Some(raw),
        ..Default::default()
    };
    client
        .decrypt(key, version, params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .result
        .unwrap()
}

/// Starts the plugin on `vault`/`key` and waits for Status ok.
async fn plugin(
    h: &Harness,
    dir: &std::path::Path,
    vault: &str,
    key: &str,
    extra: &[&str],
) -> Plugin {
    let socket = dir.join(format!("{vault}-{key}.sock"));
    let azure = azure_json(
        dir,
        &h.mock,
        "00000000-0000-0000-0000-00000000c0de",
        "kms-secret",
    );
    let mut flags = kms_flags(&h.mock, &socket, &azure);
    flags.retain(|f| !f.starts_with("--vault-url") && !f.starts_with("--key-name"));
    flags.push(format!("--vault-url={}", h.vault_url(vault)));
    flags.push(format!("--key-name={key}"));
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    Plugin::start(flags, &socket).await.unwrap()
}

#[tokio::test]
async fn the_official_sdk_decrypts_local_wraps_of_every_rsa_size_and_of_managed_hsm() {
    let h = Harness::start(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    for (vault, key, hsm) in [
        ("kv1", "kek2048", false),
        ("kv1", "kek3072", false),
        ("kv1", "kek4096", false),
        ("hsm1", "kek", true),
    ] {
        let extra: &[&str] = if hsm { &["--managed-hsm"] } else { &[] };
        let p = plugin(&h, dir.path(), vault, key, extra).await;
        let mut c = v2(&p.socket).await;
        h.mock.reset_stats();
        let seed: Vec<u8> = (0..32u8).map(|b| b ^ key.len() as u8).collect();
        let enc = c
            .encrypt(v2::EncryptRequest {
                plaintext: seed.clone(),
                uid: "u".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            h.mock.stats().operation("keys.encrypt"),
            0,
            "{vault}/{key}: wrapped without Key Vault"
        );
        let version =
            String::from_utf8(enc.annotations["key-version.akv-bridge.io"].clone()).unwrap();
        let plain = sdk_decrypt(
            &h,
            vault,
            key,
            &version,
            EncryptionAlgorithm::RsaOaep256,
            &enc.ciphertext,
        )
        .await;
        assert_eq!(plain, seed, "{vault}/{key}");
        p.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_official_sdk_decrypts_a_local_v1beta1_wrap_rsa1_5() {
    let h = Harness::start(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(&h, dir.path(), "kv1", "kek2048", &[]).await;
    let mut c = v1(&p.socket).await;
    let cipher = c
        .encrypt(v1::EncryptRequest {
            version: "v1beta1".into(),
            plain: vec![5; 32],
        })
        .await
        .unwrap()
        .into_inner()
        .cipher;
    let version = crate::common::kms::newest_version(&h.mock, "kv1", "kek2048");
    let plain = sdk_decrypt(
        &h,
        "kv1",
        "kek2048",
        &version,
        EncryptionAlgorithm::Rsa1_5,
        &cipher,
    )
    .await;
    assert_eq!(plain, [5; 32]);
}

/// Runs `openssl` with `args`; returns stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI (Debian's openssl package) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An independent implementation: OpenSSL makes the key pair and decrypts what the
/// plugin's local wrap (aws-lc-rs) produced from the public modulus and exponent alone,
/// with RSA-OAEP-256's parameters named explicitly (OAEP, SHA-256, MGF1-SHA-256) and with
/// PKCS#1 v1.5 for RSA1_5.
#[test]
fn openssl_decrypts_the_local_wrap_with_rsa_oaep_256_and_rsa1_5() {
    use akv_bridge::kms::envelope::{V1_ALGORITHM, WRAP_ALGORITHM};
    use akv_bridge::kms::wrap::PublicWrapKey;
    use akv_bridge::kms::wrap::RsaPublic;

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let key = key.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        key,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", key, "-noout", "-modulus"])).unwrap();
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let public = PublicWrapKey::new(&RsaPublic::new(&n, &[1, 0, 1]).unwrap()).unwrap();
    assert_eq!(public.bits(), 3072);

    let seed: Vec<u8> = (100..132u8).collect();
    for (algorithm, options) in [
        (
            WRAP_ALGORITHM,
            &[
                "rsa_padding_mode:oaep",
                "rsa_oaep_md:sha256",
                "rsa_mgf1_md:sha256",
            ][..],
        ),
        (V1_ALGORITHM, &["rsa_padding_mode:pkcs1"][..]),
    ] {
        let wrapped = dir.path().join("wrapped.bin");
        std::fs::write(&wrapped, public.wrap(algorithm, &seed).unwrap()).unwrap();
        let mut args = vec![
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key,
            "-in",
            wrapped.to_str().unwrap(),
        ];
        for o in options {
            args.extend(["-pkeyopt", o]);
        }
        assert_eq!(openssl(&args), seed, "{algorithm}");
    }
}
