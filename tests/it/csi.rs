//! The CSI provider over its real Unix socket, against mock-vault running as an HTTPS server:
//! every object type and format (certificates checked by parsing what was produced),
//! version history, aliases, modes, optional objects, JSON field extraction, several
//! vaults, each auth mode, isolation between identities, 403/404/429, the cache's
//! Key Vault economy, and hostile paths.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::kms::free_port;
use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as pb;
use mock_vault::{Config, FaultKind, FaultSpec, Fixture, MockVault};
use pb::csi_driver_provider_client::CsiDriverProviderClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const APP: &str = "11111111-0000-0000-0000-00000000a991";
const OTHER: &str = "22222222-0000-0000-0000-00000000a992";
const SP: &str = "33333333-0000-0000-0000-0000000005b1";
const SP_NOCERT: &str = "44444444-0000-0000-0000-0000000005b2";

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    secrets:
      - {name: db-password, value: "s3cr3t-db", content_type: text/plain}
      - {name: api-key, values: [key-v1, key-v2, key-v3]}
      - {name: creds, value: '{"user":"app","password":"pa55","port":5432}'}
      - {name: nested, value: '{"db":{"hosts":[{"name":"primary"},{"name":"replica","port":6432}]},"tls.crt":"CERT"}'}
      - {name: yamlcfg, value: "server:\n  tls:\n    cert.pem: YAML-CERT\n  ports: [8080, 8443]\nuser: app\n"}
      - {name: hexval, value: "68656c6c6f"}
      - {name: b64val, value: "aGVsbG8gd29ybGQ="}
      - {name: fo-both, value: "from-kv1"}
      - {name: fo-pinned, value: "pinned-kv1"}
      - {name: fo-second, value: "second-kv1"}
      - {name: fo-third, value: "third-kv1"}
    certificates:
      - {name: web, dns_names: [web.example.com], issuer: MockCA}
      - {name: web-pem, dns_names: [pem.example.com], issuer: MockCA, content_type: application/x-pem-file}
    keys:
      - {name: rsa-key, kty: RSA, size: 2048}
      - {name: ec-key, kty: EC, crv: P-256, versions: 2}
  - name: kv3
    secrets:
      - {name: app-db, value: "db-pass", tags: {team: payments}}
      - {name: app-cache, value: "cache-pass", tags: {team: orders, mount: ""}}
      - {name: app-off, value: "disabled", enabled: false, tags: {team: payments}}
      - {name: other, value: "other-pass", tags: {team: payments}}
      - {name: bulk-00, value: "b0"}
      - {name: bulk-01, value: "b1"}
      - {name: bulk-02, value: "b2"}
      - {name: bulk-03, value: "b3"}
      - {name: bulk-04, value: "b4"}
      - {name: bulk-05, value: "b5"}
      - {name: bulk-06, value: "b6"}
      - {name: bulk-07, value: "b7"}
      - {name: bulk-08, value: "b8"}
      - {name: bulk-09, value: "b9"}
      - {name: bulk-10, value: "b10"}
      - {name: bulk-11, value: "b11"}
      - {name: bulk-12, value: "b12"}
      - {name: bulk-13, value: "b13"}
      - {name: bulk-14, value: "b14"}
      - {name: bulk-15, value: "b15"}
      - {name: bulk-16, value: "b16"}
      - {name: bulk-17, value: "b17"}
      - {name: bulk-18, value: "b18"}
      - {name: bulk-19, value: "b19"}
      - {name: bulk-20, value: "b20"}
      - {name: bulk-21, value: "b21"}
      - {name: bulk-22, value: "b22"}
      - {name: bulk-23, value: "b23"}
      - {name: bulk-24, value: "b24"}
      - {name: bulk-25, value: "b25"}
      - {name: bulk-26, value: "b26"}
      - {name: bulk-27, value: "b27"}
      - {name: bulk-28, value: "b28"}
      - {name: bulk-29, value: "b29"}
  - name: kv2
    secrets:
      - {name: other-secret, value: "from-kv2"}
      - {name: fo-both, value: "from-kv2"}
      - {name: fo-only-kv2, value: "only-in-kv2"}
      - {name: fo-second, value: "second-kv2"}
      - {name: fo-third, value: "third-kv2"}
      - {name: fo-pinned, value: "pinned-kv2"}
identities:
  - name: app
    client_id: 11111111-0000-0000-0000-00000000a991
    federated: [{subject: "system:serviceaccount:apps:web"}]
    permissions: {"*": {secrets: [get, list], certificates: [get, list], keys: [get, list]}}
  - name: other
    client_id: 22222222-0000-0000-0000-00000000a992
    federated: [{subject: "system:serviceaccount:other:sa"}]
    permissions: {kv2: {secrets: [get]}}
  - name: sp
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: sp-secret-value
    permissions: {kv1: {secrets: [get]}}
  - name: sp-nocert
    client_id: 44444444-0000-0000-0000-0000000005b2
    client_secret: nocert-secret-value
    permissions: {kv1: {secrets: [get]}}
  - name: node
    client_id: 55555555-0000-0000-0000-0000000000e0
    managed: system
    permissions: {kv1: {secrets: [get]}}
  - name: uami
    client_id: 66666666-0000-0000-0000-0000000000e1
    managed: user
    permissions: {kv1: {secrets: [get]}}
  - name: admin
    client_id: 00000000-0000-0000-0000-0000000000ad
    client_secret: admin-secret
"#;

struct Env {
    mock: MockVault,
    _dir: tempfile::TempDir,
    provider: Provider,
}

async fn env_with(extra: &[&str]) -> Env {
    let mock = mock(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("providers/azure.sock");
    let mut flags = csi_flags(&mock, &socket);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let provider = Provider::start(flags, &socket).await.unwrap();
    Env {
        mock,
        _dir: dir,
        provider,
    }
}

async fn env() -> Env {
    env_with(&[]).await
}

/// mock-vault answering for `*.<vault_domain>`, and the provider with no
/// `--vault-url-template`: vault URLs come from the mount's cloud, as in production (the
/// mock's address stands in for DNS). With `mock_authority`, `--authority-host` is the
/// mock's Entra; `extra` adds flags.
async fn env_in_domain(
    vault_domain: &str,
    mock_authority: bool,
    extra: &[String],
) -> Result<Env, akv_bridge::csi::CsiStartError> {
    let mock = mock_vault::start(Config {
        fixture: Fixture::parse(FIXTURE).unwrap(),
        vault_domain: vault_domain.into(),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("providers/azure.sock");
    let info = mock.info();
    let mut flags = vec![
        format!("--endpoint=unix://{}", socket.display()),
        format!("--vault-connect-addr={}", info.address),
        format!("--ca-bundle={}", info.ca_pem_path.display()),
        // The mock's challenge names `https://<domain>:<port>`.
        "--insecure-skip-challenge-resource-verification".into(),
        "--healthz-port=0".into(),
        "--healthz-bind-address=127.0.0.1".into(),
        "--prometheus-port=0".into(),
        "--metrics-bind-address=127.0.0.1".into(),
        "--keyvault-timeout=10s".into(),
        "--shutdown-grace=5s".into(),
    ];
    if mock_authority {
        flags.push(format!("--authority-host={}", info.authority_host));
    }
    flags.extend(extra.iter().cloned());
    let provider = Provider::start(flags, &socket).await?;
    Ok(Env {
        mock,
        _dir: dir,
        provider,
    })
}

impl Env {
    async fn client(&self) -> CsiDriverProviderClient<Channel> {
        CsiDriverProviderClient::new(channel(&self.provider.socket).await)
            .max_decoding_message_size(8 * 1024 * 1024)
    }

    fn token(&self, ns: &str, sa: &str) -> String {
        self.mock
            .sa_token(
                &format!("system:serviceaccount:{ns}:{sa}"),
                Duration::from_secs(3600),
            )
            .unwrap()
    }

    /// Mount attributes for workload identity, as the driver merges them.
    fn wi_attributes(&self, client_id: &str, token: &str, pod: &str, objects: &str) -> Value {
        json!({
            "keyvaultName": "kv1",
            "tenantId": self.mock.info().tenant_id,
            "clientID": client_id,
            "objects": objects,
            "secretProviderClass": "app-secrets",
            "csi.storage.k8s.io/pod.name": pod,
            "csi.storage.k8s.io/pod.namespace": "apps",
            "csi.storage.k8s.io/pod.uid": "6b8f2f0e-0000-4000-8000-000000000001",
            "csi.storage.k8s.io/serviceAccount.name": "web",
            "csi.storage.k8s.io/ephemeral": "false",
            "csi.storage.k8s.io/serviceAccount.tokens": json!({
                "api://AzureADTokenExchange": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}
            }).to_string(),
        })
    }

    async fn mount(
        &self,
        attributes: &Value,
        secrets: &Value,
    ) -> Result<pb::MountResponse, tonic::Status> {
        self.client()
            .await
            .mount(pb::MountRequest {
                attributes: attributes.to_string(),
                secrets: secrets.to_string(),
                target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount".into(),
                permission: "420".into(),
                current_object_version: vec![],
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn mount_wi(&self, objects: &str) -> Result<pb::MountResponse, tonic::Status> {
        let token = self.token("apps", "web");
        let attrs = self.wi_attributes(APP, &token, "web-0", objects);
        self.mount(&attrs, &json!({})).await
    }

    fn version_of(&self, vault: &str, path: &str) -> String {
        let v = self
            .mock
            .admin(vault, http::Method::GET, path, Value::Null)
            .unwrap();
        let id = v["id"]
            .as_str()
            .or(v["kid"].as_str())
            .unwrap_or_else(|| v["key"]["kid"].as_str().unwrap());
        id.rsplit('/').next().unwrap().to_owned()
    }
}

fn objects(entries: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for e in entries {
        out.push_str("  - |\n");
        for line in e.lines() {
            out.push_str("    ");
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

fn files(r: &pb::MountResponse) -> BTreeMap<String, (i32, Vec<u8>)> {
    r.files
        .iter()
        .map(|f| (f.path.clone(), (f.mode, f.contents.clone())))
        .collect()
}

fn versions(r: &pb::MountResponse) -> BTreeMap<String, String> {
    r.object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

fn pem_blocks(bytes: &[u8]) -> Vec<pem::Pem> {
    pem::parse_many(bytes).unwrap()
}

#[tokio::test]
async fn version_answers_v1alpha1_with_a_semver_runtime_version() {
    let env = env().await;
    let v = env
        .client()
        .await
        .version(pb::VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "v1alpha1");
    assert_eq!(v.runtime_name, "akv-bridge");
    let parts: Vec<&str> = v.runtime_version.split('.').collect();
    assert_eq!(parts.len(), 3, "{}", v.runtime_version);
    assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()));
    // The socket is private to the driver.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&env.provider.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The standard gRPC health service answers too.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(&env.provider.socket).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "v1alpha1.CSIDriverProvider".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");
    // Watch would hold a stream open for ever: UNIMPLEMENTED, which clients do not retry.
    let watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn secrets_are_written_as_is_decoded_or_as_one_json_field() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: db-password\nobjectType: secret",
            "objectName: hexval\nobjectType: secret\nobjectEncoding: hex\nobjectAlias: hex.txt",
            "objectName: b64val\nobjectType: secret\nobjectEncoding: base64\nobjectAlias: b64.txt\nfilePermission: \"0600\"",
            "objectName: creds\nobjectType: secret\nobjectJsonKey: password\nobjectAlias: db/password",
            "objectName: creds\nobjectType: secret\nobjectJsonKey: port\nobjectAlias: db/port",
            "objectName: nested\nobjectType: secret\nobjectJsonKey: db.hosts[1].name\nobjectAlias: replica",
            "objectName: nested\nobjectType: secret\nobjectJsonKey: db.hosts[1]\nobjectAlias: replica.json",
            "objectName: nested\nobjectType: secret\nobjectJsonKey: tls.crt\nobjectAlias: tls.crt",
            "objectName: yamlcfg\nobjectType: secret\nobjectYamlKey: 'server.tls[\"cert.pem\"]'\nobjectAlias: cert.pem",
            "objectName: yamlcfg\nobjectType: secret\nobjectYamlKey: server.ports[1]\nobjectAlias: port",
        ]))
        .await
        .unwrap();
    let f = files(&r);
    assert_eq!(f["db-password"], (0o644, b"s3cr3t-db".to_vec()));
    assert_eq!(f["hex.txt"].1, b"hello");
    assert_eq!(f["b64.txt"], (0o600, b"hello world".to_vec()));
    assert_eq!(f["db/password"].1, b"pa55");
    assert_eq!(f["db/port"].1, b"5432");
    // Paths into nested JSON (a whole top-level key first), and YAML.
    assert_eq!(f["replica"].1, b"replica");
    assert_eq!(f["replica.json"].1, br#"{"name":"replica","port":6432}"#);
    assert_eq!(f["tls.crt"].1, b"CERT");
    assert_eq!(f["cert.pem"].1, b"YAML-CERT");
    assert_eq!(f["port"].1, b"8443");
    // A path that finds nothing fails the mount naming the path and the object, no value.
    let err = env
        .mount_wi(&objects(&[
            "objectName: nested\nobjectType: secret\nobjectJsonKey: db.hosts[2].name",
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("'db.hosts[2].name'")
            && err.message().contains("nested")
            && !err.message().contains("replica"),
        "{}",
        err.message()
    );
    let v = versions(&r);
    assert_eq!(
        v["secret/db-password"],
        env.version_of("kv1", "/secrets/db-password")
    );
    assert_eq!(r.object_version.len(), 10);
}

#[tokio::test]
async fn certificates_become_pem_key_and_ordered_chain_or_stay_pfx() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: web\nobjectType: secret\nobjectAlias: tls/bundle.pem",
            "objectName: web\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64\nobjectAlias: tls/web.pfx",
            "objectName: web\nobjectType: cert\nobjectAlias: tls/leaf.pem",
            "objectName: web-pem\nobjectType: secret",
        ]))
        .await
        .unwrap();
    let f = files(&r);

    // PEM: the PKCS#8 key, then leaf, intermediate, root.
    let blocks = pem_blocks(&f["tls/bundle.pem"].1);
    let tags: Vec<&str> = blocks.iter().map(pem::Pem::tag).collect();
    assert_eq!(
        tags,
        ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE", "CERTIFICATE"]
    );
    let certs: Vec<_> = blocks[1..]
        .iter()
        .map(|b| {
            let (_, c) = x509_parser::parse_x509_certificate(b.contents()).unwrap();
            (c.subject().to_string(), c.issuer().to_string())
        })
        .collect();
    assert!(
        certs[0].0.contains("web.example.com") || certs[0].0.contains("web"),
        "{certs:?}"
    );
    assert_eq!(certs[0].1, certs[1].0, "leaf is issued by the next one");
    assert_eq!(certs[1].1, certs[2].0, "intermediate is issued by the root");
    assert_eq!(
        certs[2].0, certs[2].1,
        "the chain ends at the self-signed root"
    );

    // The leaf object is the bundle's leaf, alone.
    let leaf = pem_blocks(&f["tls/leaf.pem"].1);
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf[0].contents(), blocks[1].contents());

    // PFX as stored, decoded from base64: a PKCS#12 file with the key and the chain.
    let pfx = p12_keystore::Pkcs12Archive::from_pkcs12(&f["tls/web.pfx"].1, "").unwrap();
    assert_eq!(pfx.keys.len(), 1);
    assert_eq!(pfx.certs.len(), 3);
    assert!(
        pfx.certs
            .iter()
            .any(|bag| bag.cert.as_der() == blocks[1].contents())
    );

    // A PEM-stored certificate passes through.
    let pem_stored = pem_blocks(&f["web-pem"].1);
    assert!(pem_stored.iter().any(|b| b.tag() == "PRIVATE KEY"));
    assert!(pem_stored.iter().any(|b| b.tag() == "CERTIFICATE"));
    assert_eq!(
        versions(&r)["cert/web"],
        env.version_of("kv1", "/certificates/web")
    );
}

#[tokio::test]
async fn separate_cert_and_key_files_when_asked() {
    let env = env_with(&["--write-cert-and-key-in-separate-files"]).await;
    let r = env
        .mount_wi(&objects(&["objectName: web\nobjectType: secret"]))
        .await
        .unwrap();
    let f = files(&r);
    let crt = pem_blocks(&f["web.crt"].1);
    let key = pem_blocks(&f["web.key"].1);
    assert_eq!(crt.len(), 3);
    assert!(crt.iter().all(|b| b.tag() == "CERTIFICATE"));
    assert_eq!(key.len(), 1);
    assert_eq!(key[0].tag(), "PRIVATE KEY");
    assert!(f.contains_key("web"));
}

#[tokio::test]
async fn keys_become_pkix_public_keys() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: rsa-key\nobjectType: key",
            "objectName: ec-key\nobjectType: key",
        ]))
        .await
        .unwrap();
    let f = files(&r);
    let jwk = env
        .mock
        .admin("kv1", http::Method::GET, "/keys/rsa-key", Value::Null)
        .unwrap();
    for (name, oid) in [
        ("rsa-key", "1.2.840.113549.1.1.1"),
        ("ec-key", "1.2.840.10045.2.1"),
    ] {
        let blocks = pem_blocks(&f[name].1);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].tag(), "PUBLIC KEY");
        let (_, spki) =
            <x509_parser::x509::SubjectPublicKeyInfo<'_> as x509_parser::prelude::FromDer<
                '_,
                x509_parser::error::X509Error,
            >>::from_der(blocks[0].contents())
            .unwrap();
        assert_eq!(spki.algorithm.algorithm.to_id_string(), oid);
    }
    let rsa_der = pem_blocks(&f["rsa-key"].1)[0].contents().to_vec();
    let (_, spki) =
        <x509_parser::x509::SubjectPublicKeyInfo<'_> as x509_parser::prelude::FromDer<
            '_,
            x509_parser::error::X509Error,
        >>::from_der(&rsa_der)
        .unwrap();
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["key"]["n"].as_str().unwrap(),
    )
    .unwrap();
    match spki.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            let modulus: Vec<u8> = rsa
                .modulus
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            assert_eq!(modulus, n);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        versions(&r)["key/rsa-key"],
        env.version_of("kv1", "/keys/rsa-key")
    );
}

#[tokio::test]
async fn version_history_mounts_the_newest_versions_under_the_alias() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: api-key\nobjectType: secret\nobjectVersionHistory: 2\nobjectAlias: api",
            "objectName: ec-key\nobjectType: key\nobjectVersionHistory: 5",
        ]))
        .await
        .unwrap();
    let f = files(&r);
    // `objectVersionHistory: 2` with three versions: three files (N + 1), as the Go
    // provider's getLatestNKeyVaultObjects writes them.
    assert_eq!(f["api/0"].1, b"key-v3");
    assert_eq!(f["api/1"].1, b"key-v2");
    assert_eq!(f["api/2"].1, b"key-v1");
    assert!(!f.contains_key("api/3"));
    // Only two versions exist: two files.
    assert!(f.contains_key("ec-key/0") && f.contains_key("ec-key/1"));
    assert!(!f.contains_key("ec-key/2"));
    let v = versions(&r);
    assert!(v.contains_key("secret/api-key/2"));
    assert!(!v.contains_key("key/ec-key/2"));
    assert_eq!(
        v["secret/api-key/0"],
        env.version_of("kv1", "/secrets/api-key")
    );
    assert!(v.contains_key("secret/api-key/1"));
    assert_ne!(v["secret/api-key/0"], v["secret/api-key/1"]);

    // An explicit version with history starts there.
    let oldest = {
        let list = env
            .mock
            .admin(
                "kv1",
                http::Method::GET,
                "/secrets/api-key/versions",
                Value::Null,
            )
            .unwrap();
        let ids: Vec<String> = list["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let mut found = None;
        for id in ids {
            let value = env
                .mock
                .admin(
                    "kv1",
                    http::Method::GET,
                    &format!("/secrets/api-key/{id}"),
                    Value::Null,
                )
                .unwrap();
            if value["value"] == "key-v2" {
                found = Some(id);
            }
        }
        found.unwrap()
    };
    let r = env
        .mount_wi(&objects(&[&format!(
            "objectName: api-key\nobjectType: secret\nobjectVersion: {oldest}\nobjectVersionHistory: 3"
        )]))
        .await
        .unwrap();
    let f = files(&r);
    assert_eq!(f["api-key/0"].1, b"key-v2");
    assert_eq!(f["api-key/1"].1, b"key-v1");
}

#[tokio::test]
async fn optional_objects_are_skipped_and_required_ones_fail_naming_the_object() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: db-password\nobjectType: secret",
            "objectName: not-there\nobjectType: secret\noptional: true",
        ]))
        .await
        .unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(versions(&r)["secret/not-there"], "");
    let err = env
        .mount_wi(&objects(&["objectName: not-there\nobjectType: cert"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("cert not-there in vault kv1")
            && err.message().contains("not found"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn one_class_can_read_several_vaults() {
    let env = env().await;
    let r = env
        .mount_wi(&objects(&[
            "objectName: db-password\nobjectType: secret",
            "objectName: other-secret\nobjectType: secret\nkeyvaultName: kv2",
        ]))
        .await
        .unwrap();
    assert_eq!(files(&r)["other-secret"].1, b"from-kv2");
}

#[tokio::test]
async fn workload_identities_never_serve_each_other() {
    let env = env().await;
    let objs = objects(&["objectName: db-password\nobjectType: secret"]);
    // Pod A (apps/web, federated for APP) mounts and fills the cache.
    env.mount_wi(&objs).await.unwrap();
    let reads = env.mock.stats().authenticated("secrets.get");

    // Pod B (other/sa) names APP's client id: Entra refuses its token, nothing is served.
    let token_b = env.token("other", "sa");
    let attrs = env.wi_attributes(APP, &token_b, "intruder", &objs);
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(
        err.message().contains("did not accept"),
        "{}",
        err.message()
    );

    // A forged token claiming pod A's subject (not signed by the issuer): refused, although
    // pod A's data is cached under that subject.
    let real = env.token("apps", "web");
    let mut parts: Vec<&str> = real.split('.').collect();
    parts[2] = "Zm9yZ2Vk";
    let forged = parts.join(".");
    let attrs = env.wi_attributes(APP, &forged, "forger", &objs);
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());

    // Pod B with its own identity: reads what it may (kv2), not kv1.
    let attrs = env.wi_attributes(OTHER, &token_b, "b-0", &objs);
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("secrets/get"), "{}", err.message());
    let attrs = env.wi_attributes(
        OTHER,
        &token_b,
        "b-0",
        &objects(&["objectName: other-secret\nobjectType: secret\nkeyvaultName: kv2"]),
    );
    assert_eq!(env.mount(&attrs, &json!({})).await.unwrap().files.len(), 1);
    // No failed attempt was answered from pod A's cache entry or read kv1 for A.
    assert_eq!(env.mock.stats().authenticated("secrets.get"), reads + 2);
}

#[tokio::test]
async fn service_principal_from_node_publish_secret() {
    let env = env().await;
    let attrs = json!({
        "keyvaultName": "kv1",
        "tenantID": env.mock.info().tenant_id,
        "objects": objects(&["objectName: db-password\nobjectType: secret"]),
    });
    // Keys matched case-insensitively, as the Go provider does.
    let r = env
        .mount(
            &attrs,
            &json!({"ClientID": SP, "ClientSecret": "sp-secret-value"}),
        )
        .await
        .unwrap();
    assert_eq!(files(&r)["db-password"].1, b"s3cr3t-db");
    // A wrong secret for the same client id is not served from the cache.
    let err = env
        .mount(
            &attrs,
            &json!({"clientid": SP, "clientsecret": "wrong-secret-value"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(!err.message().contains("wrong-secret-value"));
    // 403 names the missing permission.
    let attrs = json!({
        "keyvaultName": "kv1",
        "tenantID": env.mock.info().tenant_id,
        "objects": objects(&["objectName: web\nobjectType: cert"]),
    });
    let err = env
        .mount(
            &attrs,
            &json!({"clientid": SP_NOCERT, "clientsecret": "nocert-secret-value"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("cert web in vault kv1")
            && err.message().contains("certificates/get"),
        "{}",
        err.message()
    );
    // Missing credentials: a clear invalid-argument error.
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

#[tokio::test]
async fn pods_of_one_identity_share_reads_and_coalesce() {
    let env = env_with(&["--latest-cache-ttl=2s"]).await;
    let objs = objects(&[
        "objectName: db-password\nobjectType: secret",
        "objectName: api-key\nobjectType: secret",
        "objectName: web\nobjectType: cert",
    ]);
    env.mock
        .add_fault(fault(
            FaultKind::Latency {
                fixed_ms: Some(100),
                min_ms: None,
                max_ms: None,
            },
            None,
        ))
        .unwrap();
    let before = env.mock.stats();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let token = env.token("apps", "web");
        let attrs = env.wi_attributes(APP, &token, &format!("web-{i}"), &objs);
        let client = env.client().await;
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            client
                .mount(pb::MountRequest {
                    attributes: attrs.to_string(),
                    secrets: "{}".into(),
                    target_path: "/var/lib/kubelet/pods/x/mount".into(),
                    permission: "420".into(),
                    current_object_version: vec![],
                })
                .await
                .map(|r| r.into_inner().files.len())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 3);
    }
    let after = env.mock.stats();
    let reads = |s: &mock_vault::Snapshot| {
        s.authenticated("secrets.get") + s.authenticated("certificates.get")
    };
    assert_eq!(
        reads(&after) - reads(&before),
        3,
        "20 pods, 3 objects: one Key Vault read per object"
    );
    // After the latest TTL, one more read per object.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    env.mount_wi(&objs).await.unwrap();
    assert_eq!(reads(&env.mock.stats()) - reads(&before), 6);
}

#[tokio::test]
async fn throttling_is_absorbed_and_a_storm_fails_clearly_in_time() {
    let env = env_with(&["--keyvault-timeout=4s", "--mount-timeout=8s"]).await;
    let objs = objects(&["objectName: db-password\nobjectType: secret"]);
    // Two 429s with Retry-After: 1: honoured, then success.
    env.mock
        .add_fault(FaultSpec {
            count: Some(2),
            ..fault(
                FaultKind::Throttle {
                    retry_after_secs: 1,
                },
                Some("secrets.get"),
            )
        })
        .unwrap();
    let started = std::time::Instant::now();
    env.mount_wi(&objs).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was honoured"
    );
    let statuses: Vec<u16> = env
        .mock
        .request_log(100)
        .iter()
        .filter(|e| e.operation == "secrets.get")
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.len() <= 4,
        "{statuses:?}: the auth challenge, two throttled attempts, one success; no more"
    );

    // A storm: every read throttled. The mount fails inside its deadline with
    // RESOURCE_EXHAUSTED (not UNAVAILABLE, which the driver would retry at once), and the
    // requests are bounded by the retry budget.
    env.mock.reset_stats();
    env.mock
        .add_fault(fault(
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
            Some("secrets.get"),
        ))
        .unwrap();
    let started = std::time::Instant::now();
    let err = env
        .mount_wi(&objects(&["objectName: api-key\nobjectType: secret"]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(env.mock.stats().operation("secrets.get") <= 6);
}

#[tokio::test]
async fn hostile_paths_and_duplicates_are_refused_naming_the_object() {
    let env = env().await;
    for alias in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "a\\\\..\\\\b",
        "./x/..",
        "",
    ] {
        let objs = objects(&[&format!(
            "objectName: db-password\nobjectType: secret\nobjectAlias: \"{alias}\""
        )]);
        match env.mount_wi(&objs).await {
            Err(e) if alias.is_empty() => assert_eq!(e.code(), Code::InvalidArgument, "{e:?}"),
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{alias}: {e:?}");
                assert!(
                    e.message().contains("db-password"),
                    "{alias}: {}",
                    e.message()
                );
            }
            // An empty alias means "no alias" in the Go provider.
            Ok(r) if alias.is_empty() => assert!(files(&r).contains_key("db-password")),
            Ok(r) => panic!("{alias:?} accepted: {:?}", files(&r).keys()),
        }
    }
    let long = "x".repeat(300);
    let err = env
        .mount_wi(&objects(&[&format!(
            "objectName: db-password\nobjectType: secret\nobjectAlias: {long}"
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = env
        .mount_wi(&objects(&[
            "objectName: db-password\nobjectType: secret\nobjectAlias: same",
            "objectName: api-key\nobjectType: secret\nobjectAlias: same",
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("same"), "{}", err.message());
    // Deprecated pod identity: refused with a clear reason.
    let token = env.token("apps", "web");
    let mut attrs = env.wi_attributes(
        APP,
        &token,
        "p",
        &objects(&["objectName: db-password\nobjectType: secret"]),
    );
    attrs["usePodIdentity"] = json!("true");
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().to_lowercase().contains("deprecated"),
        "{}",
        err.message()
    );
    // Identity binding (the Go provider's Azure token proxy) without a token for its
    // audience: refused, not silently replaced by plain workload identity. (Identity
    // binding itself: `identity_binding.rs`.)
    attrs["usePodIdentity"] = json!("false");
    attrs["useAzureTokenProxy"] = json!("true");
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("useAzureTokenProxy") && err.message().contains("identity binding"),
        "{}",
        err.message()
    );
    attrs["useAzureTokenProxy"] = json!("false");
    env.mount(&attrs, &json!({})).await.unwrap();
}

#[tokio::test]
async fn probe_csi_mounts_a_secret_provider_class_and_writes_the_files() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let spc = dir.path().join("spc.yaml");
    let spc_body = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets
spec:
  provider: azure
  parameters:
    keyvaultName: kv1
    tenantId: \"{}\"
    clientID: \"{APP}\"
    objects: |
      array:
        - |
          objectName: db-password
          objectType: secret
          objectAlias: config/db
",
        env.mock.info().tenant_id
    );
    std::fs::write(&spc, spc_body).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, env.token("apps", "web")).unwrap();
    let out = dir.path().join("out");
    let args = akv_bridge::cli::ProbeCsiArgs {
        socket: format!("unix://{}", env.provider.socket.display()),
        spc,
        pod_token: Some(token),
        secrets: None,
        pod_name: "web-0".into(),
        pod_namespace: "apps".into(),
        service_account: "web".into(),
        permission: 0o640,
        out: Some(out.clone()),
        timeout: Duration::from_secs(30),
        json: false,
    };
    let report = akv_bridge::csi::probe::probe(&args).await.unwrap();
    assert!(report.ok, "{}", report.to_table());
    assert!(report.version.starts_with("v1alpha1 akv-bridge"));
    assert_eq!(std::fs::read(out.join("config/db")).unwrap(), b"s3cr3t-db");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(out.join("config/db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    // The report lists, never prints, contents.
    assert!(!report.to_table().contains("s3cr3t-db"));
}

/// Managed identity comes from the process environment (App Service-style endpoint here,
/// IMDS on a VM), so this runs the real binary as its own process.
#[tokio::test]
async fn managed_identity_system_and_user_assigned_in_a_separate_process() {
    let mock = mock(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let info = mock.info().clone();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_akv-bridge"))
        .arg("csi")
        .args(csi_flags(&mock, &socket))
        .env("IDENTITY_ENDPOINT", &info.identity_endpoint)
        .env("IDENTITY_HEADER", &info.identity_header)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&socket, &mut child).await;
    let mut client = CsiDriverProviderClient::new(channel(&socket).await);
    let mount = |extra: Value| {
        let mut attrs = json!({
            "keyvaultName": "kv1",
            "tenantId": info.tenant_id,
            "useVMManagedIdentity": "true",
            "objects": objects(&["objectName: db-password\nobjectType: secret"]),
        });
        for (k, v) in extra.as_object().unwrap() {
            attrs[k] = v.clone();
        }
        pb::MountRequest {
            attributes: attrs.to_string(),
            secrets: "{}".into(),
            target_path: "/var/lib/kubelet/pods/x/mount".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    };
    let r = client.mount(mount(json!({}))).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"s3cr3t-db");
    let r = client
        .mount(mount(
            json!({"userAssignedIdentityID": "66666666-0000-0000-0000-0000000000e1"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, b"s3cr3t-db");
    let by_identity = mock.stats().by_identity;
    assert!(by_identity.keys().any(|k| k == "node"), "{by_identity:?}");
    assert!(by_identity.keys().any(|k| k == "uami"), "{by_identity:?}");
    // An identity the node does not have: a clear authentication error.
    let err = client
        .mount(mount(
            json!({"userAssignedIdentityID": "77777777-0000-0000-0000-000000000000"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    child.kill().await.unwrap();
}

/// Key Vault refuses an access token the provider still holds as valid (revoked, identity
/// re-created): the provider gets a new one from Entra inside the same Mount, once.
#[tokio::test]
async fn a_rejected_unexpired_token_is_replaced_inside_the_mount() {
    let env = env().await;
    let token = env.token("apps", "web");
    let attrs = |objects: &str| env.wi_attributes(APP, &token, "web-0", objects);
    env.mount(
        &attrs(&objects(&["objectName: db-password\nobjectType: secret"])),
        &json!({}),
    )
    .await
    .unwrap();
    let before = env.mock.stats();

    env.mock.expire_tokens();
    // Uncached objects of all three clients (secret, certificate, key) of the identity.
    let r = env
        .mount(
            &attrs(&objects(&[
                "objectName: hexval\nobjectType: secret",
                "objectName: web\nobjectType: cert",
                "objectName: rsa-key\nobjectType: key",
            ])),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(files(&r)["hexval"].1, b"68656c6c6f");
    let after = env.mock.stats();
    assert_eq!(
        after.operation("entra.token") - before.operation("entra.token"),
        1,
        "the three clients share one rebuilt credential and one new token"
    );
    // Each client met one 401 with the old token and retried once with the new one.
    assert_eq!(
        after.by_status.get(&401).copied().unwrap_or(0)
            - before.by_status.get(&401).copied().unwrap_or(0),
        3
    );
}

/// The Go provider ignores object keys it does not know; so do we, with a warning and a
/// counter without the key as a label. `--strict-parameters` refuses them, naming the key.
#[tokio::test]
async fn unknown_object_keys_are_ignored_and_counted_unless_strict() {
    let port = free_port();
    let env = env_with(&[&format!("--prometheus-port={port}")]).await;
    let objs = objects(&[
        "objectName: db-password\nobjectType: secret\nobjectAlais: pw\nfutureField: [a, b]",
        "objectName: api-key\nobjectType: secret",
    ]);
    let r = env.mount_wi(&objs).await.unwrap();
    let f = files(&r);
    assert_eq!(f["db-password"].1, b"s3cr3t-db", "the typo changes nothing");
    assert_eq!(f["api-key"].1, b"key-v3");
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "akv_bridge_csi_unknown_parameters_total 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("objectAlais"), "keys never become labels");

    let strict = env_with(&["--strict-parameters"]).await;
    let err = strict.mount_wi(&objs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("objectAlais") && err.message().contains("db-password"),
        "{}",
        err.message()
    );
}

/// `--cloud-name` is the cloud of a class without `cloudName`, as the Go provider's; a
/// name it does not know stops the provider at start-up.
#[tokio::test]
async fn cloud_name_flag_sets_the_default_cloud_and_is_checked_at_start_up() {
    // mock-vault answers as Azure China does: only `*.vault.azure.cn`.
    let env = env_in_domain(
        "vault.azure.cn",
        true,
        &["--cloud-name=AzureChinaCloud".into()],
    )
    .await
    .unwrap();
    let r = env
        .mount_wi(&objects(&["objectName: db-password\nobjectType: secret"]))
        .await
        .unwrap();
    assert_eq!(files(&r)["db-password"].1, b"s3cr3t-db");
    // `cloudName` in the class still wins: the public cloud's vault is not this mock.
    let token = env.token("apps", "web");
    let mut attrs = env.wi_attributes(
        APP,
        &token,
        "web-0",
        &objects(&["objectName: db-password\nobjectType: secret"]),
    );
    attrs["cloudName"] = json!("AzurePublicCloud");
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("vault.azure.net"),
        "{}",
        err.message()
    );

    // Without the flag, the default is the public cloud: the same class fails.
    let public = env_in_domain("vault.azure.cn", true, &[]).await.unwrap();
    let err = public
        .mount_wi(&objects(&["objectName: db-password\nobjectType: secret"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());

    for bad in ["MarsCloud", "", "AzureGermanCloud"] {
        let err = env_in_domain("vault.azure.cn", true, &[format!("--cloud-name={bad}")])
            .await
            .err()
            .unwrap_or_else(|| panic!("--cloud-name={bad:?} accepted"));
        assert!(err.to_string().contains("--cloud-name"), "{bad:?}: {err}");
    }
}

/// `cloudName: AzureStackCloud` with `cloudEnvFileName`: the Entra and Key Vault endpoints
/// come from a go-autorest environment file, read only under `--cloud-env-dir`.
/// mock-vault serves `*.vault.stack.test`; no `--authority-host` and no
/// `--vault-url-template`, so a mount succeeds only if both endpoints come from the file.
#[tokio::test]
async fn custom_cloud_environment_files_are_read_only_under_the_operators_directory() {
    let envs = tempfile::tempdir().unwrap();
    let dir = envs.path().join("cloudEnv");
    std::fs::create_dir(&dir).unwrap();
    let env_file = dir.join("stack.json");
    let outside = envs.path().join("outside.json");
    let write_env = |mock: &MockVault| {
        let body = json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": format!("{}/", mock.info().authority_host),
            "keyVaultEndpoint": "https://vault.stack.test/",
            "keyVaultDNSSuffix": "vault.stack.test",
        })
        .to_string();
        std::fs::write(&env_file, &body).unwrap();
        std::fs::write(&outside, &body).unwrap();
    };
    let dir_flag = format!("--cloud-env-dir={}", dir.display());
    let env = env_in_domain("vault.stack.test", false, &[dir_flag])
        .await
        .unwrap();
    write_env(&env.mock);
    let token = env.token("apps", "web");
    let objs = objects(&["objectName: db-password\nobjectType: secret"]);
    let mut attrs = env.wi_attributes(APP, &token, "web-0", &objs);
    attrs["cloudName"] = json!("AzureStackCloud");
    attrs["cloudEnvFileName"] = json!(env_file.display().to_string());
    let r = env.mount(&attrs, &json!({})).await.unwrap();
    assert_eq!(files(&r)["db-password"].1, b"s3cr3t-db");

    // Outside the directory (also through a link), `..`, or no file at all: refused,
    // naming the rule, quoting nothing.
    std::os::unix::fs::symlink(&outside, dir.join("escape.json")).unwrap();
    for bad in [
        "/etc/passwd".to_owned(),
        outside.display().to_string(),
        dir.join("escape.json").display().to_string(),
        format!("{}/../outside.json", dir.display()),
        "missing.json".to_owned(),
    ] {
        attrs["cloudEnvFileName"] = json!(bad);
        let err = env.mount(&attrs, &json!({})).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{bad}: {}",
            err.message()
        );
        assert!(
            err.message().contains("cloudEnvFileName"),
            "{}",
            err.message()
        );
        assert!(!err.message().contains("root:"), "{}", err.message());
    }
    attrs.as_object_mut().unwrap().remove("cloudEnvFileName");
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("AzureStackCloud"),
        "{}",
        err.message()
    );

    // Without --cloud-env-dir, no cloudEnvFileName is read.
    let closed = env_in_domain("vault.stack.test", false, &[]).await.unwrap();
    write_env(&closed.mock);
    let token = closed.token("apps", "web");
    let mut attrs = closed.wi_attributes(APP, &token, "web-0", &objs);
    attrs["cloudName"] = json!("AzureStackCloud");
    attrs["cloudEnvFileName"] = json!(env_file.display().to_string());
    let err = closed.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("--cloud-env-dir"),
        "{}",
        err.message()
    );
    drop(closed);

    // `--cloud-name=AzureStackCloud` with the operator's file (AZURE_ENVIRONMENT_FILEPATH):
    // read at start-up, used by classes without cloudName.
    // The file must name this mock's Entra: a new mock, the file rewritten, then the
    // provider started.
    let mock = mock_vault::start(Config {
        fixture: Fixture::parse(FIXTURE).unwrap(),
        vault_domain: "vault.stack.test".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    write_env(&mock);
    let socket = envs.path().join("azure.sock");
    let info = mock.info();
    let provider = Provider::start(
        vec![
            format!("--endpoint=unix://{}", socket.display()),
            format!("--vault-connect-addr={}", info.address),
            format!("--ca-bundle={}", info.ca_pem_path.display()),
            "--insecure-skip-challenge-resource-verification".into(),
            "--healthz-port=0".into(),
            "--healthz-bind-address=127.0.0.1".into(),
            "--prometheus-port=0".into(),
            "--metrics-bind-address=127.0.0.1".into(),
            "--cloud-name=AzureStackCloud".into(),
            format!("--cloud-env-file={}", env_file.display()),
        ],
        &socket,
    )
    .await
    .unwrap();
    let stack = Env {
        mock,
        _dir: tempfile::tempdir().unwrap(),
        provider,
    };
    let r = stack.mount_wi(&objs).await.unwrap();
    assert_eq!(files(&r)["db-password"].1, b"s3cr3t-db");

    // AzureStackCloud as the default needs the file at start-up.
    let err = env_in_domain(
        "vault.stack.test",
        false,
        &["--cloud-name=AzureStackCloud".into()],
    )
    .await
    .err()
    .expect("started without an environment file");
    assert!(
        err.to_string().contains("AZURE_ENVIRONMENT_FILEPATH"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_identitys_fifty_object_mount_is_one_challenge_and_fifty_reads() {
    let env = env().await;
    for i in 0..50 {
        env.mock
            .admin(
                "kv1",
                http::Method::PUT,
                &format!("/secrets/bulk-{i}"),
                json!({"value": format!("v{i}")}),
            )
            .unwrap();
    }
    env.mock.reset_stats();
    let entries: Vec<String> = (0..50)
        .map(|i| format!("objectName: bulk-{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let r = env.mount_wi(&objects(&refs)).await.unwrap();
    assert_eq!(r.files.len(), 50);
    let log = env.mock.request_log(1000);
    let count = |pred: &dyn Fn(&mock_vault::stats::LogEntry) -> bool| {
        log.iter().filter(|r| pred(r)).count()
    };
    // The pod's token proven once and the credential's own token: two Entra calls. One
    // read learns Key Vault's challenge; the other 49 go together, authenticated (without
    // the first read going alone, every read in flight was answered 401 and sent again).
    assert_eq!(count(&|r| r.operation == "entra.token"), 2, "{log:?}");
    assert_eq!(count(&|r| r.status == 401), 1, "{log:?}");
    assert_eq!(
        count(&|r| r.operation == "secrets.get" && r.status == 200),
        50
    );
    assert_eq!(log.len(), 53);
}

#[tokio::test]
async fn an_unreachable_vault_fails_over_to_the_secondary_but_never_on_an_answer() {
    // Without the hold, every read asks kv1 first (the hold: the next test).
    let env = env_with(&["--failover-hold=0s"]).await;
    let token = env.token("apps", "web");
    let with_failover = |objects_yaml: &str| {
        let mut a = env.wi_attributes(APP, &token, "web-0", objects_yaml);
        a["failoverKeyvaultName"] = json!("kv2");
        a
    };
    // Every secret read of kv1 fails with `kind`.
    let kv1_reads_fail = |kind| {
        env.mock
            .add_fault(mock_vault::FaultSpec {
                scope: mock_vault::Scope {
                    vault: Some("kv1".into()),
                    operation: Some("secrets.get".into()),
                    ..mock_vault::Scope::default()
                },
                ..fault(kind, None)
            })
            .unwrap();
    };
    let kv2_reads = || {
        env.mock
            .request_log(1000)
            .iter()
            .filter(|r| r.vault.as_deref() == Some("kv2") && r.operation == "secrets.get")
            .count()
    };

    // kv1 answers 503 to every read (past the retries): the object comes from kv2, and its
    // version says so.
    kv1_reads_fail(FaultKind::Status { status: 503 });
    let r = env
        .mount(
            &with_failover(&objects(&["objectName: fo-both\nobjectType: secret"])),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(files(&r)["fo-both"].1, b"from-kv2");
    let version = &r.object_version[0];
    assert_eq!(version.id, "secret/fo-both");
    assert_eq!(
        version.version,
        format!("kv2/{}", env.version_of("kv2", "/secrets/fo-both"))
    );

    // A pinned version is one vault's: no failover, the outage is the answer.
    let pinned = env.version_of("kv1", "/secrets/fo-pinned");
    let err = env
        .mount(
            &with_failover(&objects(&[&format!(
                "objectName: fo-pinned\nobjectType: secret\nobjectVersion: {pinned}"
            )])),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    env.mock.clear_faults();

    // Throttling past the deadline (Retry-After 60 s) fails over too.
    kv1_reads_fail(FaultKind::Throttle {
        retry_after_secs: 60,
    });
    let r = env
        .mount(
            &with_failover(&objects(&["objectName: fo-both\nobjectType: secret"])),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(files(&r)["fo-both"].1, b"from-kv2");
    env.mock.clear_faults();

    // An answer about the object is never failed over: kv1 says it does not exist.
    let before = kv2_reads();
    let err = env
        .mount(
            &with_failover(&objects(&["objectName: fo-only-kv2\nobjectType: secret"])),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Nor a refusal: kv1 answers 403.
    kv1_reads_fail(FaultKind::Status { status: 403 });
    let err = env
        .mount(
            &with_failover(&objects(&["objectName: fo-pinned\nobjectType: secret"])),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(kv2_reads(), before, "kv2 was read after an answer from kv1");
    env.mock.clear_faults();

    // With kv1 back, the object is read from kv1 again.
    let r = env
        .mount(
            &with_failover(&objects(&["objectName: fo-pinned\nobjectType: secret"])),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(files(&r)["fo-pinned"].1, b"pinned-kv1");
    assert!(!r.object_version[0].version.contains('/'));
}

#[tokio::test]
async fn a_selection_mounts_every_enabled_secret_by_prefix_or_tag_within_its_bounds() {
    let env = &env().await;
    let mount = |entries: &[&str]| {
        let token = env.token("apps", "web");
        let attrs = env.wi_attributes(APP, &token, "web-0", &objects(entries));
        async move { env.mount(&attrs, &json!({})).await }
    };
    let lists = || env.mock.stats().authenticated("secrets.list");

    // By prefix, into a directory; the disabled one is left out; ids as if listed by name.
    let r = mount(&[
        "objectNamePrefix: app-\nobjectType: secret\nkeyvaultName: kv3\nobjectAlias: apps",
    ])
    .await
    .unwrap();
    let f = files(&r);
    assert_eq!(
        f.keys().collect::<Vec<_>>(),
        ["apps/app-cache", "apps/app-db"]
    );
    assert_eq!(f["apps/app-db"].1, b"db-pass");
    let v = versions(&r);
    assert_eq!(
        v.keys().collect::<Vec<_>>(),
        ["secret/kv3/app-cache", "secret/kv3/app-db"]
    );

    // By tag value, and by tag presence with a prefix.
    let r = mount(&["objectTag: team=payments\nobjectType: secret\nkeyvaultName: kv3"])
        .await
        .unwrap();
    assert_eq!(files(&r).keys().collect::<Vec<_>>(), ["app-db", "other"]);
    let r =
        mount(&["objectNamePrefix: app-\nobjectTag: mount\nobjectType: secret\nkeyvaultName: kv3"])
            .await
            .unwrap();
    assert_eq!(files(&r).keys().collect::<Vec<_>>(), ["app-cache"]);
    // The listing was read once for the three mounts (cached per identity and vault), in
    // two pages (34 secrets, 25 a page).
    assert_eq!(lists(), 2);

    // Past the page: 30 of 34 secrets.
    let r = mount(&["objectNamePrefix: bulk-\nobjectType: secret\nkeyvaultName: kv3"])
        .await
        .unwrap();
    assert_eq!(r.files.len(), 30);
    assert_eq!(files(&r)["bulk-29"].1, b"b29");

    // Bounded: more matches than objectMaxCount fail, naming the count.
    let err = mount(&[
        "objectNamePrefix: bulk-\nobjectType: secret\nkeyvaultName: kv3\nobjectMaxCount: 10",
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("30 secrets match, more than objectMaxCount 10"),
        "{}",
        err.message()
    );

    // Nothing matches: NOT_FOUND, or no file when optional.
    let err = mount(&["objectNamePrefix: nope-\nobjectType: secret\nkeyvaultName: kv3"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let r = mount(&[
        "objectNamePrefix: nope-\nobjectType: secret\nkeyvaultName: kv3\noptional: true",
        "objectName: db-password\nobjectType: secret",
    ])
    .await
    .unwrap();
    assert_eq!(files(&r).keys().collect::<Vec<_>>(), ["db-password"]);

    // A match writes a file another entry writes: refused, naming the path.
    let err = mount(&[
        "objectNamePrefix: app-\nobjectType: secret\nkeyvaultName: kv3",
        "objectName: db-password\nobjectType: secret\nobjectAlias: app-db",
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("app-db"), "{}", err.message());

    // Listing needs `secrets/list`: an identity with `get` only is told so.
    let token = env.token("other", "sa");
    let attrs = env.wi_attributes(
        OTHER,
        &token,
        "other-0",
        &objects(&["objectNamePrefix: other-\nobjectType: secret\nkeyvaultName: kv2"]),
    );
    let err = env.mount(&attrs, &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("secrets/list"), "{}", err.message());

    // A selection with a single-object key is refused when parsed.
    let err = mount(&["objectNamePrefix: app-\nobjectType: secret\nobjectVersion: abc"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn a_vault_found_down_is_skipped_for_the_hold_then_asked_again() {
    let env = &env_with(&["--failover-hold=5s"]).await;
    let token = env.token("apps", "web");
    let mount = |name: &str| {
        let mut a = env.wi_attributes(
            APP,
            &token,
            "web-0",
            &objects(&[&format!("objectName: {name}\nobjectType: secret")]),
        );
        a["failoverKeyvaultName"] = json!("kv2");
        async move { env.mount(&a, &json!({})).await }
    };
    let kv1_asked_for = |name: &str| {
        let path = format!("/secrets/{name}");
        env.mock
            .request_log(1000)
            .iter()
            .filter(|r| r.vault.as_deref() == Some("kv1") && r.path.trim_end_matches('/') == path)
            .count()
    };
    env.mock
        .add_fault(mock_vault::FaultSpec {
            scope: mock_vault::Scope {
                vault: Some("kv1".into()),
                operation: Some("secrets.get".into()),
                ..mock_vault::Scope::default()
            },
            ..fault(FaultKind::Status { status: 503 }, None)
        })
        .unwrap();

    // Found down: kv1 was asked (and retried), then kv2 answered.
    let r = mount("fo-both").await.unwrap();
    assert_eq!(files(&r)["fo-both"].1, b"from-kv2");
    assert!(kv1_asked_for("fo-both") > 0);

    // Held as down: the next object goes straight to kv2, kv1 is not asked.
    let started = std::time::Instant::now();
    let r = mount("fo-second").await.unwrap();
    assert_eq!(files(&r)["fo-second"].1, b"second-kv2");
    assert_eq!(kv1_asked_for("fo-second"), 0);
    assert!(r.object_version[0].version.starts_with("kv2/"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // kv1 is back; once the hold is over it is asked again and answers.
    env.mock.clear_faults();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = mount("fo-third").await.unwrap();
    assert_eq!(files(&r)["fo-third"].1, b"third-kv1");
    assert!(kv1_asked_for("fo-third") > 0);
    assert!(!r.object_version[0].version.contains('/'));
}
