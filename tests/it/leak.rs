//! Secrets stay secret: both servers run as real processes with the most verbose logging
//! (`-v=5`, JSON lines), through successful and failing KMS and CSI flows; then every log
//! line, every error message returned, and the metrics text are searched for each
//! plaintext, secret value, token and client secret used. None may appear.

use std::time::Duration;

use crate::common::*;
use akv_bridge::proto::csi_v1alpha1 as csi;
use akv_bridge::proto::kms_v2 as v2;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

const CLIENT_SECRET: &str = "leak-canary-client-secret-7f3a";
const KMS_SECRET: &str = "kms-secret";
const SECRET_VALUE: &str = "leak-canary-secret-value-91bd";
const JSON_FIELD: &str = "leak-canary-json-field-2c5e";
const PLAINTEXT: [u8; 32] = *b"leak-canary-kms-plaintext-0d4f!!";

const FIXTURE: &str = r#"
vaults:
  - name: kv1
    keys: [{name: kek, kty: RSA, size: 2048}]
    secrets:
      - {name: plain, value: "leak-canary-secret-value-91bd"}
      - {name: config, value: '{"password":"leak-canary-json-field-2c5e"}'}
    certificates:
      - {name: web, dns_names: [web.example.com], issuer: MockCA}
identities:
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions: {kv1: {keys: [get, list, encrypt, decrypt]}}
  - name: sp
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: leak-canary-client-secret-7f3a
    permissions: {kv1: {secrets: [get]}}
  - name: app
    client_id: 11111111-0000-0000-0000-00000000a991
    federated: [{subject: "system:serviceaccount:apps:web"}]
    permissions: {kv1: {secrets: [get], certificates: [get]}}
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn metrics(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("akv_bridge_"), "{out}");
    out
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_metrics() {
    let mock = mock(FIXTURE).await;
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_akv-bridge");

    // KMS plugin.
    let kms_socket = dir.path().join("kms.sock");
    let azure = azure_json(
        dir.path(),
        &mock,
        "00000000-0000-0000-0000-00000000c0de",
        KMS_SECRET,
    );
    let kms_metrics = free_port();
    let mut kms_flags = kms_flags(&mock, &kms_socket, &azure);
    kms_flags.retain(|f| !f.starts_with("--metrics-addr"));
    kms_flags.push(format!("--metrics-addr=127.0.0.1:{kms_metrics}"));
    kms_flags.extend(["-v=5".to_owned(), "--log-format-json".to_owned()]);
    let mut kms = tokio::process::Command::new(exe)
        .arg("kms")
        .args(&kms_flags)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&kms_socket, &mut kms).await;
    wait_status(&kms_socket, |s| s.healthz == "ok", "Status ok").await;

    // CSI provider.
    let csi_socket = dir.path().join("azure.sock");
    let csi_metrics = free_port();
    let mut csi_flags = csi_flags(&mock, &csi_socket);
    csi_flags.retain(|f| !f.starts_with("--prometheus-port"));
    csi_flags.push(format!("--prometheus-port={csi_metrics}"));
    csi_flags.extend(["-v=5".to_owned(), "--log-format-json".to_owned()]);
    let mut provider = tokio::process::Command::new(exe)
        .arg("csi")
        .args(&csi_flags)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_child_socket(&csi_socket, &mut provider).await;

    let mut errors = Vec::new();

    // KMS: encrypt, decrypt (miss, then hit), a tampered decrypt.
    let mut k = v2(&kms_socket).await;
    let e = k
        .encrypt(v2::EncryptRequest {
            plaintext: PLAINTEXT.to_vec(),
            uid: "uid-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let d = k
            .decrypt(v2::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "uid-2".into(),
                key_id: e.key_id.clone(),
                annotations: e.annotations.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, PLAINTEXT);
    }
    let mut tampered = e.ciphertext.clone();
    tampered[10] ^= 1;
    if let Err(s) = k
        .decrypt(v2::DecryptRequest {
            ciphertext: tampered,
            uid: "uid-3".into(),
            key_id: e.key_id.clone(),
            annotations: e.annotations.clone(),
        })
        .await
    {
        errors.push(s.message().to_owned());
    }

    // CSI: service principal, workload identity, failures carrying secrets in the request.
    let mut c =
        csi::csi_driver_provider_client::CsiDriverProviderClient::new(channel(&csi_socket).await);
    let objects = "array:\n  - |\n    objectName: plain\n    objectType: secret\n  - |\n    objectName: config\n    objectType: secret\n    objectJsonKey: password\n    objectAlias: pw\n";
    let tenant = mock.info().tenant_id.clone();
    let sp_attrs = json!({"keyvaultName": "kv1", "tenantId": tenant, "objects": objects});
    let token = mock
        .sa_token("system:serviceaccount:apps:web", Duration::from_secs(3600))
        .unwrap();
    let wi_attrs = json!({
        "keyvaultName": "kv1", "tenantId": tenant, "clientID": "11111111-0000-0000-0000-00000000a991",
        "objects": "array:\n  - |\n    objectName: plain\n    objectType: secret\n  - |\n    objectName: web\n    objectType: secret\n",
        "csi.storage.k8s.io/serviceAccount.tokens": json!({"api://AzureADTokenExchange": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}}).to_string(),
    });
    let mount = |attrs: &serde_json::Value, secrets: serde_json::Value| csi::MountRequest {
        attributes: attrs.to_string(),
        secrets: secrets.to_string(),
        target_path: "/var/lib/kubelet/pods/p/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    };
    let sp =
        json!({"clientid": "33333333-0000-0000-0000-0000000005b1", "clientsecret": CLIENT_SECRET});
    let r = c
        .mount(mount(&sp_attrs, sp.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, SECRET_VALUE.as_bytes());
    let r = c
        .mount(mount(&wi_attrs, json!({})))
        .await
        .unwrap()
        .into_inner();
    let pem_key: String = String::from_utf8(r.files[1].contents.clone()).unwrap();
    let key_line = pem_key.lines().nth(1).unwrap().to_owned();
    let failing = [
        // Wrong secret.
        mount(
            &sp_attrs,
            json!({"clientid": "33333333-0000-0000-0000-0000000005b1", "clientsecret": format!("{CLIENT_SECRET}-wrong")}),
        ),
        // (Names, such as objectName or keyvaultName, are echoed shortened in errors when
        // invalid: they are identifiers, not secrets, and the operator needs to see which.)
        // The client secret in an unknown attribute and in a malformed objects document.
        mount(
            &json!({"keyvaultName": "kv1", "tenantId": tenant, "objects": format!("array: [{CLIENT_SECRET}"), "x": CLIENT_SECRET}),
            sp.clone(),
        ),
        // An expired-looking, unparsable token for workload identity.
        mount(
            &json!({"keyvaultName": "kv1", "tenantId": tenant, "clientID": "11111111-0000-0000-0000-00000000a991", "objects": objects,
            "csi.storage.k8s.io/serviceAccount.tokens": json!({"api://AzureADTokenExchange": {"token": format!("{token}.extra"), "expirationTimestamp": "2099-01-01T00:00:00Z"}}).to_string()}),
            json!({}),
        ),
        // JSON key that does not exist in a secret holding secrets.
        mount(
            &json!({"keyvaultName": "kv1", "tenantId": tenant, "objects": "array:\n  - |\n    objectName: config\n    objectType: secret\n    objectJsonKey: nope\n"}),
            sp.clone(),
        ),
        // JSON key on a non-JSON secret.
        mount(
            &json!({"keyvaultName": "kv1", "tenantId": tenant, "objects": "array:\n  - |\n    objectName: plain\n    objectType: secret\n    objectJsonKey: a\n"}),
            sp.clone(),
        ),
    ];
    for request in failing {
        let err = c.mount(request).await.unwrap_err();
        errors.push(err.message().to_owned());
    }

    let metrics_text = format!(
        "{}{}",
        metrics(kms_metrics).await,
        metrics(csi_metrics).await
    );

    // Stop both (SIGTERM) and collect everything they wrote.
    let mut logs = String::new();
    for child in [&mut kms, &mut provider] {
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        logs.push_str(&err);
        logs.push_str(&out);
    }
    // The logs are verbose and real: audit lines for both servers are there.
    assert!(logs.contains("\"rpc\":\"Mount\""), "no CSI audit lines");
    assert!(logs.contains("Decrypt"), "no KMS audit lines");
    assert!(!logs.contains("panicked"), "a panic was logged");

    let canaries: Vec<(&str, String)> = vec![
        ("client secret", CLIENT_SECRET.to_owned()),
        ("KMS client secret", KMS_SECRET.to_owned()),
        ("secret value", SECRET_VALUE.to_owned()),
        ("JSON field", JSON_FIELD.to_owned()),
        (
            "KMS plaintext",
            String::from_utf8(PLAINTEXT.to_vec()).unwrap(),
        ),
        ("service-account token", token.clone()),
        (
            "token signature",
            token.rsplit('.').next().unwrap().to_owned(),
        ),
        ("private key line", key_line),
    ];
    for (what, canary) in &canaries {
        for (place, text) in [("logs", &logs), ("metrics", &metrics_text)] {
            assert!(
                !text.contains(canary.as_str()),
                "the {what} appears in the {place}"
            );
        }
        for e in &errors {
            assert!(
                !e.contains(canary.as_str()),
                "the {what} appears in an error: {e}"
            );
        }
    }
    // No bearer token of any kind (JWTs start with eyJ) in logs or errors.
    assert!(!logs.contains("eyJ"), "a JWT appears in the logs");
    assert!(errors.iter().all(|e| !e.contains("eyJ")));
    assert!(errors.len() >= 6, "{errors:?}");
}
