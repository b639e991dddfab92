use super::*;
use crate::proto::kms_v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};
use crate::proto::kms_v2::{DecryptResponse, StatusResponse};
use base64::Engine as _;
use sha2::Digest as _;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

// ----- kube-apiserver's limits -----

#[test]
fn annotation_keys_must_be_fully_qualified_domain_names() {
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    let name253 = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name253.len(), 253);
    let name254 = format!("{name253}e");
    let valid = [
        "version.azure.akv.io",
        "x-ms-request-id.azure.akv.io",
        "key-version.akv-bridge.io",
        "a.b",
        "1.2",
        "a-b.c-d",
        "a.b.",
        &format!("{label63}.io"),
        &name253,
        &format!("{name253}."),
    ];
    for key in valid {
        assert!(
            validate_annotation_key(key).is_ok(),
            "{key:?} should be valid"
        );
    }
    let invalid = [
        "",
        ".",
        "a.",
        "version",
        "Version.azure.akv.io",
        "a_b.io",
        "-a.io",
        "a-.io",
        "a.-b",
        "a..b",
        ".a.b",
        "a.b..",
        "a b.io",
        "a.b/c",
        "ä.io",
        "a.b\n",
        &format!("{label64}.io"),
        &name254,
    ];
    for key in invalid {
        assert!(
            validate_annotation_key(key).is_err(),
            "{key:?} should be invalid"
        );
    }
}

#[test]
fn annotation_total_size_is_limited_to_32_kib() {
    let key = "big.azure.akv.io".to_owned();
    let at_limit = HashMap::from([(key.clone(), vec![b'x'; ANNOTATIONS_MAX_SIZE - key.len()])]);
    assert_eq!(annotations_size(&at_limit), ANNOTATIONS_MAX_SIZE);
    assert!(validate_annotations(&at_limit).is_empty());
    let over = HashMap::from([(
        key.clone(),
        vec![b'x'; ANNOTATIONS_MAX_SIZE - key.len() + 1],
    )]);
    let problems = validate_annotations(&over);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("32769"), "{problems:?}");
    // Keys count too, across entries.
    let two = HashMap::from([
        ("a.io".to_owned(), vec![0u8; 16 * 1024]),
        ("b.io".to_owned(), vec![0u8; 16 * 1024 - 8]),
    ]);
    assert_eq!(annotations_size(&two), ANNOTATIONS_MAX_SIZE);
    assert!(validate_annotations(&two).is_empty());
}

#[test]
fn key_id_and_ciphertext_limits() {
    assert!(validate_key_id("").is_err());
    assert!(validate_key_id(&"k".repeat(1024)).is_ok());
    assert!(validate_key_id(&"k".repeat(1025)).is_err());
    assert!(validate_ciphertext(&[]).is_err());
    assert!(validate_ciphertext(&[1; 1024]).is_ok());
    assert!(validate_ciphertext(&[1; 1025]).is_err());
}

#[test]
fn status_checks() {
    assert!(check_status("ok", "v2", "k").is_empty());
    assert!(check_status("ok", "v2beta1", "k").is_empty());
    assert_eq!(check_status("degraded", "v1", "").len(), 3);
}

// ----- the envelope -----

const SEED: [u8; 32] = [7; 32];
const INFO: [u8; 32] = [1; 32];
const NONCE: [u8; 12] = [2; 12];
const AAD: &[u8] = b"/registry/secrets/default/x";

/// HMAC-SHA256 written out, to check the KDF independently of the hkdf crate's API.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    sha2::Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn kdf_is_hkdf_expand_only_as_kube_apiserver() {
    // Go: hkdf.Expand(sha256.New, seed, info), 32 bytes = T(1) = HMAC(seed, info || 0x01).
    let mut msg = INFO.to_vec();
    msg.push(1);
    let key = hmac_sha256(&SEED, &msg);
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, b"hello", AAD).unwrap();
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let plain = cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(&NONCE),
            Payload {
                msg: &sealed[44..],
                aad: AAD,
            },
        )
        .unwrap();
    assert_eq!(plain, b"hello");
}

#[test]
fn envelope_layout_and_round_trip() {
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, SAMPLE_SECRET, AAD).unwrap();
    assert_eq!(
        sealed.len(),
        INFO_SIZE + NONCE_SIZE + SAMPLE_SECRET.len() + TAG_SIZE
    );
    assert_eq!(&sealed[..32], &INFO);
    assert_eq!(&sealed[32..44], &NONCE);
    assert_eq!(
        open_kdf(&SEED, &sealed, AAD).unwrap().as_slice(),
        SAMPLE_SECRET
    );

    // Random info and nonce: two seals differ, both open.
    let a = seal_kdf(&SEED, b"x", AAD).unwrap();
    let b = seal_kdf(&SEED, b"x", AAD).unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32 + 12 + 1 + 16);
    assert_eq!(open_kdf(&SEED, &b, AAD).unwrap().as_slice(), b"x");
}

#[test]
fn envelope_open_fails_with_wrong_seed_aad_or_data() {
    let sealed = seal_kdf_with(&SEED, &INFO, &NONCE, SAMPLE_SECRET, AAD).unwrap();
    let wrong_seed = [8u8; 32];
    assert!(open_kdf(&wrong_seed, &sealed, AAD).is_err());
    assert!(open_kdf(&SEED, &sealed, b"/registry/secrets/default/y").is_err());
    let mut flipped = sealed.clone();
    flipped[5] ^= 1; // info is authenticated through the key
    assert!(open_kdf(&SEED, &flipped, AAD).is_err());
    assert!(open_kdf(&SEED, &sealed[..32 + 12 + 15], AAD).is_err());
    assert!(open_kdf(&SEED, &[], AAD).is_err());
    assert!(seal_kdf(&[0u8; 31], b"x", AAD).is_err());
    let err = open_kdf(&wrong_seed, &sealed, AAD).unwrap_err().to_string();
    assert!(!err.contains("07070707"));
}

#[test]
fn etcd_value_prefix_and_protobuf_fields() {
    let object = EncryptedObject {
        encrypted_data: vec![0xaa; 3],
        key_id: "kid".into(),
        encrypted_dek_source: vec![0xbb; 2],
        annotations: HashMap::from([("version.azure.akv.io".into(), b"1".to_vec())]),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    let value = encode_etcd_value("azurekmsprovider", &object);
    let prefix = b"k8s:enc:kms:v2:azurekmsprovider:";
    assert!(value.starts_with(prefix));
    let body = &value[prefix.len()..];
    // field 1 bytes, field 2 string, field 3 bytes, field 4 map entry, field 5 varint 1
    assert_eq!(&body[..5], &[0x0a, 3, 0xaa, 0xaa, 0xaa]);
    assert_eq!(&body[5..10], &[0x12, 3, b'k', b'i', b'd']);
    assert_eq!(&body[10..14], &[0x1a, 2, 0xbb, 0xbb]);
    assert_eq!(body[14], 0x22);
    assert_eq!(&body[body.len() - 2..], &[0x28, 0x01]);
    assert_eq!(
        decode_etcd_value("azurekmsprovider", &value).unwrap(),
        object
    );
    assert!(decode_etcd_value("other", &value).is_err());
    assert!(validate_encrypted_object(&object).is_empty());

    let bad = EncryptedObject {
        encrypted_data: vec![],
        key_id: String::new(),
        encrypted_dek_source: vec![],
        annotations: HashMap::from([("Bad_Key".into(), vec![])]),
        encrypted_dek_source_type: 7,
    };
    assert_eq!(validate_encrypted_object(&bad).len(), 5);
}

#[test]
fn options_validation() {
    assert!(ProbeOptions::default().validate().is_ok());
    let colon = ProbeOptions {
        provider_name: "a:b".into(),
        ..ProbeOptions::default()
    };
    assert!(colon.validate().unwrap_err().to_string().contains("':'"));
    let zero = ProbeOptions {
        timeout: Duration::ZERO,
        ..ProbeOptions::default()
    };
    assert!(zero.validate().is_err());
}

#[test]
fn uid_is_a_v4_uuid() {
    let uid = new_uid();
    assert_eq!(uid.len(), 36);
    assert_eq!(&uid[14..15], "4");
    assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
    assert_ne!(new_uid(), uid);
}

#[test]
fn display_helpers_hide_and_escape() {
    assert_eq!(show_annotation_value(b"1"), "\"1\"");
    assert_eq!(show_annotation_value(&[0xff, 0x00]), "<2 bytes>");
    assert_eq!(show_annotation_value(&[b'a'; 129]), "<129 bytes>");
    assert_eq!(printable("a\x1b[2Jb", 100), "a\\u{1b}[2Jb");
    assert!(printable(&"k".repeat(2000), 1024).ends_with("… (2000 bytes)"));
}

// ----- a fake plugin over a real Unix socket -----

/// A KMS v2 plugin that "wraps" by XOR, so any instance unwraps what another wrapped.
/// `live` is shared by every clone: tests change it while the server runs and read its
/// counters.
#[derive(Clone)]
struct FakeKms {
    status_key_id: String,
    encrypt_key_id: String,
    annotations: HashMap<String, Vec<u8>>,
    status_delay: Duration,
    healthz: String,
    live: Arc<Live>,
}

/// What a test changes or counts while the fake runs.
#[derive(Default)]
struct Live {
    /// Replaces (Status key id, Encrypt key id) when set.
    key_ids: Mutex<Option<(String, String)>>,
    /// Every key id Encrypt has returned: Decrypt accepts these.
    issued: Mutex<HashSet<String>>,
    /// Encrypt fails while set.
    fail_encrypt: AtomicBool,
    encrypts: AtomicUsize,
    decrypts: AtomicUsize,
}

impl FakeKms {
    fn good() -> Self {
        Self {
            status_key_id: "key-1".into(),
            encrypt_key_id: "key-1".into(),
            annotations: HashMap::from([
                ("version.azure.akv.io".into(), b"1".to_vec()),
                ("algorithm.azure.akv.io".into(), b"RSA-OAEP-256".to_vec()),
                ("blob.akv-bridge.io".into(), vec![0xff; 200]),
            ]),
            status_delay: Duration::ZERO,
            healthz: "ok".into(),
            live: Arc::default(),
        }
    }

    /// (Status key id, Encrypt key id) now.
    fn key_ids(&self) -> (String, String) {
        self.live
            .key_ids
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| (self.status_key_id.clone(), self.encrypt_key_id.clone()))
    }

    /// Rotates the key: Status and Encrypt report `status` and `encrypt` from now on.
    fn set_key_ids(&self, status: &str, encrypt: &str) {
        *self.live.key_ids.lock().unwrap() = Some((status.into(), encrypt.into()));
    }

    fn encrypts(&self) -> usize {
        self.live.encrypts.load(Ordering::SeqCst)
    }

    fn decrypts(&self) -> usize {
        self.live.decrypts.load(Ordering::SeqCst)
    }
}

fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ 0x5a).collect()
}

#[tonic::async_trait]
impl KeyManagementService for FakeKms {
    async fn status(
        &self,
        _request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        tokio::time::sleep(self.status_delay).await;
        Ok(tonic::Response::new(StatusResponse {
            version: "v2".into(),
            healthz: self.healthz.clone(),
            key_id: self.key_ids().0,
        }))
    }

    async fn decrypt(
        &self,
        request: tonic::Request<DecryptRequest>,
    ) -> Result<tonic::Response<DecryptResponse>, tonic::Status> {
        self.live.decrypts.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let (status_key_id, encrypt_key_id) = self.key_ids();
        if request.key_id != status_key_id
            && request.key_id != encrypt_key_id
            && !self.live.issued.lock().unwrap().contains(&request.key_id)
        {
            return Err(tonic::Status::invalid_argument("unknown key id"));
        }
        if request.annotations != self.annotations || request.uid.len() != 36 {
            return Err(tonic::Status::invalid_argument("annotations or uid lost"));
        }
        Ok(tonic::Response::new(DecryptResponse {
            plaintext: xor(&request.ciphertext),
        }))
    }

    async fn encrypt(
        &self,
        request: tonic::Request<EncryptRequest>,
    ) -> Result<tonic::Response<EncryptResponse>, tonic::Status> {
        self.live.encrypts.fetch_add(1, Ordering::SeqCst);
        if self.live.fail_encrypt.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("key vault unreachable"));
        }
        let request = request.into_inner();
        let key_id = self.key_ids().1;
        self.live.issued.lock().unwrap().insert(key_id.clone());
        Ok(tonic::Response::new(EncryptResponse {
            ciphertext: xor(&request.plaintext),
            key_id,
            annotations: self.annotations.clone(),
        }))
    }
}

async fn serve(fake: FakeKms) -> (tempfile::TempDir, SocketAddress) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (dir, SocketAddress::Path(path))
}

fn step<'a>(report: &'a ProbeReport, name: &str) -> &'a ProbeStep {
    report.steps.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test]
async fn probe_passes_against_a_good_plugin() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let options = ProbeOptions {
        envelope: true,
        ..ProbeOptions::default()
    };
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "connect",
            "status",
            "encrypt",
            "decrypt",
            "envelope-write",
            "envelope-read"
        ]
    );
    assert_eq!(report.key_id.as_deref(), Some("key-1"));
    let encrypt = step(&report, "encrypt");
    assert!(
        encrypt.detail.contains("ciphertext 32 bytes"),
        "{}",
        encrypt.detail
    );
    assert!(encrypt.detail.contains("version.azure.akv.io = \"1\""));
    assert!(encrypt.detail.contains("blob.akv-bridge.io = <200 bytes>"));
    assert!(
        step(&report, "envelope-write")
            .detail
            .contains("k8s:enc:kms:v2:azurekmsprovider:")
    );
    assert!(table.contains("result: OK"));

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["timeout_ms"], 3000);
    assert_eq!(json["steps"].as_array().unwrap().len(), 6);
    assert!(json["steps"][1]["latency_ms"].is_number());
}

#[tokio::test]
async fn probe_without_envelope_has_three_steps() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let channel = connect(&socket, DEFAULT_TIMEOUT).await.unwrap();
    let report = probe_kms(channel, &ProbeOptions::default()).await;
    assert!(report.ok(), "{}", report.to_table());
    assert_eq!(report.steps.len(), 3);
}

#[tokio::test]
async fn probe_flags_a_key_id_mismatch() {
    let fake = FakeKms {
        encrypt_key_id: "key-2".into(),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!report.ok(), "{table}");
    let encrypt = step(&report, "encrypt");
    assert!(!encrypt.ok);
    assert!(
        encrypt
            .problems
            .iter()
            .any(|p| p.contains("key_id mismatch") && p.contains("key-2") && p.contains("key-1")),
        "{table}"
    );
    assert!(table.contains("key_id mismatch"), "{table}");
    assert!(table.contains("result: FAILED"), "{table}");
}

#[tokio::test]
async fn probe_flags_bad_annotations() {
    let fake = FakeKms {
        annotations: HashMap::from([("Not_A_Domain".into(), b"v".to_vec())]),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let options = ProbeOptions {
        envelope: true,
        ..ProbeOptions::default()
    };
    let report = probe_socket(&socket, &options).await;
    assert!(!report.ok());
    assert!(!step(&report, "encrypt").ok);
    assert!(!step(&report, "envelope-write").ok);
    assert!(step(&report, "envelope-read").skipped);
}

#[tokio::test]
async fn probe_times_out_instead_of_hanging() {
    let fake = FakeKms {
        status_delay: Duration::from_secs(30),
        ..FakeKms::good()
    };
    let (_dir, socket) = serve(fake).await;
    let options = ProbeOptions {
        timeout: Duration::from_millis(200),
        ..ProbeOptions::default()
    };
    let start = Instant::now();
    let report = probe_socket(&socket, &options).await;
    println!("{}", report.to_table());
    assert!(start.elapsed() < Duration::from_secs(5));
    let status = step(&report, "status");
    assert!(!status.ok);
    assert!(!report.ok());
    // The other calls still ran and answered.
    assert!(step(&report, "decrypt").ok, "{}", report.to_table());
}

#[tokio::test]
async fn connect_fails_cleanly_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = SocketAddress::Path(dir.path().join("missing.sock"));
    let err = connect(&socket, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Failed { .. }), "{err}");
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    println!("{}", report.to_table());
    assert!(!report.ok());
    assert_eq!(report.steps.len(), 1);
    assert!(report.to_table().contains("could not connect"));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn probe_over_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("akv-bridge-probe-test-{}", new_uid());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(FakeKms::good()))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let socket = SocketAddress::parse_endpoint(&format!("unix:///@{name}")).unwrap();
    let report = probe_socket(&socket, &ProbeOptions::default()).await;
    assert!(report.ok(), "{}", report.to_table());
}

#[tokio::test]
async fn invalid_options_are_a_failed_step() {
    let (_dir, socket) = serve(FakeKms::good()).await;
    let channel = connect(&socket, DEFAULT_TIMEOUT).await.unwrap();
    let options = ProbeOptions {
        provider_name: "bad:name".into(),
        ..ProbeOptions::default()
    };
    let report = probe_kms(channel, &options).await;
    assert!(!report.ok());
    assert_eq!(report.steps[0].name, "options");
}

// ----- ApiServer: kube-apiserver's write state and seed cache -----

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

// ----- `probe kms --store`: a restarted kube-apiserver, replayed -----

fn store_options(store: &std::path::Path) -> ProbeOptions {
    ProbeOptions {
        store: Some(store.to_owned()),
        ..ProbeOptions::default()
    }
}

fn store_lines(store: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(store)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn store_replay_reads_the_previous_runs_records() {
    use std::os::unix::fs::PermissionsExt as _;
    let fake = FakeKms::good();
    let (dir, socket) = serve(fake.clone()).await;
    let store = dir.path().join("probe-store.jsonl");
    let options = store_options(&store);

    // First run: nothing stored yet; Status, Encrypt, one record written.
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["connect", "status", "encrypt", "stored-read", "write"]
    );
    assert!(
        step(&report, "stored-read")
            .detail
            .contains("no records yet")
    );
    assert_eq!((fake.encrypts(), fake.decrypts()), (1, 0));
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let lines = store_lines(&store);
    assert_eq!(lines.len(), 1);
    let record = &lines[0];
    let storage_key = record["storage_key"].as_str().unwrap();
    assert!(storage_key.starts_with("/registry/secrets/default/akv-bridge-probe-"));
    let value = base64::engine::general_purpose::STANDARD
        .decode(record["value"].as_str().unwrap())
        .unwrap();
    assert!(value.starts_with(b"k8s:enc:kms:v2:azurekmsprovider:"));
    assert_eq!(record["plaintext_sha256"].as_str().unwrap().len(), 64);
    time::OffsetDateTime::parse(
        record["written_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // Second run, a new API server: the first run's record costs exactly one Decrypt.
    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(report.ok(), "{table}");
    let detail = &step(&report, "stored-read").detail;
    assert!(detail.contains("1 of 1 records"), "{detail}");
    assert!(detail.contains("Decrypt RPCs: 1 "), "{detail}");
    assert_eq!((fake.encrypts(), fake.decrypts()), (2, 1));
    assert_eq!(store_lines(&store).len(), 2);

    // Third run: two records under two DEK sources, two Decrypts.
    let report = probe_socket(&socket, &options).await;
    assert!(report.ok(), "{}", report.to_table());
    assert_eq!((fake.encrypts(), fake.decrypts()), (3, 3));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["steps"][3]["name"], "stored-read");
}

#[tokio::test]
async fn store_replay_fails_when_a_stored_record_no_longer_reads() {
    let fake = FakeKms::good();
    let (dir, socket) = serve(fake.clone()).await;
    let store = dir.path().join("store.jsonl");
    let options = store_options(&store);
    assert!(probe_socket(&socket, &options).await.ok());

    // A record moved to another etcd key, a line that is no record, a blank line.
    let mut moved = store_lines(&store).remove(0);
    moved["storage_key"] = "/registry/secrets/default/moved".into();
    let mut text = std::fs::read_to_string(&store).unwrap();
    text.push_str(&format!("{moved}\nnot json\n\n"));
    std::fs::write(&store, text).unwrap();

    let report = probe_socket(&socket, &options).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!report.ok(), "{table}");
    let read = step(&report, "stored-read");
    assert!(!read.ok);
    assert!(read.detail.contains("1 of 3 records"), "{}", read.detail);
    assert_eq!(read.problems.len(), 2, "{:?}", read.problems);
    assert!(
        read.problems[0].contains("line 2")
            && read.problems[0].contains("/registry/secrets/default/moved")
            && read.problems[0].contains("authentication failed"),
        "{:?}",
        read.problems
    );
    assert!(read.problems[1].starts_with("line 3: not a record"));
    // The run still wrote its own record.
    assert!(step(&report, "write").ok);
    assert_eq!(store_lines_raw(&store), 5);
}

fn store_lines_raw(store: &std::path::Path) -> usize {
    std::fs::read_to_string(store).unwrap().lines().count()
}

#[tokio::test]
async fn store_replay_without_a_transformer_fails_every_read_and_the_write() {
    let good = FakeKms::good();
    let (dir, socket) = serve(good).await;
    let store = dir.path().join("store.jsonl");
    assert!(probe_socket(&socket, &store_options(&store)).await.ok());

    let broken = FakeKms {
        status_key_id: String::new(),
        ..FakeKms::good()
    };
    let (_dir2, socket2) = serve(broken.clone()).await;
    let report = probe_socket(&socket2, &store_options(&store)).await;
    let table = report.to_table();
    println!("{table}");
    assert!(!step(&report, "status").ok);
    let encrypt = step(&report, "encrypt");
    assert!(!encrypt.ok && encrypt.problems[0].contains("no Encrypt sent"));
    let read = step(&report, "stored-read");
    assert!(read.problems[0].contains(NIL_TRANSFORMER), "{table}");
    let write = step(&report, "write");
    assert_eq!(write.problems, [NIL_TRANSFORMER]);
    assert_eq!(broken.encrypts() + broken.decrypts(), 0);
    assert_eq!(store_lines_raw(&store), 1);
}

#[tokio::test]
async fn store_limits_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    assert!(replay::load_store(&missing).await.unwrap().is_empty());

    let big = dir.path().join("big.jsonl");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(STORE_MAX_BYTES + 1)
        .unwrap();
    let err = replay::load_store(&big).await.unwrap_err().to_string();
    assert!(err.contains("16 MiB") && err.contains("big.jsonl"), "{err}");

    let many = dir.path().join("many.jsonl");
    std::fs::write(&many, "{}\n".repeat(STORE_MAX_RECORDS + 1)).unwrap();
    let err = replay::load_store(&many).await.unwrap_err().to_string();
    assert!(err.contains("more than 10000 records"), "{err}");
    std::fs::write(&many, "{}\n".repeat(STORE_MAX_RECORDS)).unwrap();
    assert_eq!(
        replay::load_store(&many).await.unwrap().len(),
        STORE_MAX_RECORDS
    );

    // Over the limit the replay reads nothing and appends nothing.
    let (_sock_dir, socket) = serve(FakeKms::good()).await;
    let report = probe_socket(&socket, &store_options(&big)).await;
    assert!(!report.ok());
    assert!(!step(&report, "stored-read").ok);
    assert!(step(&report, "write").skipped);
    assert_eq!(std::fs::metadata(&big).unwrap().len(), STORE_MAX_BYTES + 1);
}
