//! Tests of how Mount errors (parameters, identities, Key Vault and Entra failures, content)
//! become statuses and labels.

use std::collections::BTreeSet;
use std::time::Duration;

use tonic::Code;

use super::MountError;
use crate::azure::cloud::CloudError;
use crate::azure::keyvault::{KvError, Throttle};
use crate::azure::upstream::Upstream;
use crate::csi::cloud_env::CloudEnvError;
use crate::csi::content::ContentError;
use crate::csi::identity::IdentityError;
use crate::csi::params::ParamError;

#[test]
fn a_refused_cloud_name_keeps_its_status_and_message() {
    let error = MountError::from(ParamError::InvalidCloud(CloudError::Unknown(
        "MarsCloud".to_owned(),
    )));
    let status = error.to_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "cloudName: unknown Azure cloud \"MarsCloud\": expected AzurePublicCloud, \
         AzureUSGovernmentCloud or AzureChinaCloud (case-insensitive; empty means \
         AzurePublicCloud)"
    );
    assert_eq!(error.label(), "invalid");

    // Every other parameter error keeps the parameters prefix.
    let error = MountError::from(ParamError::NoObjects);
    assert!(matches!(error, MountError::Params(ParamError::NoObjects)));
    let status = error.to_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("invalid SecretProviderClass parameters: "),
        "{}",
        status.message()
    );
}

/// One of each Key Vault (or Entra) failure, and the code a Mount answers with.
fn every_kv_error() -> Vec<(KvError, Code)> {
    vec![
        (KvError::NotFound("secret db".into()), Code::NotFound),
        (
            KvError::PermissionDenied("secrets/get"),
            Code::PermissionDenied,
        ),
        (
            KvError::KeyUnusable {
                version: "v1".into(),
                reason: "expired",
            },
            Code::FailedPrecondition,
        ),
        (
            KvError::Rejected("bad request".into()),
            Code::InvalidArgument,
        ),
        (
            KvError::Unauthenticated {
                by: Upstream::Entra,
                reason: "invalid_client".into(),
            },
            Code::Unauthenticated,
        ),
        (
            KvError::Throttled(Throttle {
                by: Upstream::KeyVault,
                retry_after: Some(Duration::from_secs(9)),
                beyond_deadline: true,
            }),
            Code::ResourceExhausted,
        ),
        (
            KvError::Unavailable {
                by: Upstream::Entra,
                reason: "HTTP 503".into(),
            },
            Code::Unavailable,
        ),
        (
            KvError::Certificate {
                by: Upstream::KeyVault,
                host: "kv.vault.azure.net".into(),
                reason: "unknown issuer".into(),
            },
            Code::Unavailable,
        ),
        (
            KvError::DeadlineExceeded(Duration::from_secs(5)),
            Code::DeadlineExceeded,
        ),
    ]
}

#[test]
fn every_key_vault_failure_of_an_object_has_its_code_label_and_message() {
    let table = every_kv_error();
    let labels: BTreeSet<&str> = table.iter().map(|(e, _)| e.label()).collect();
    assert_eq!(labels.len(), 9, "one of each KvError variant");
    for (error, code) in table {
        let mount = MountError::Object {
            object: "secret db in vault kv".into(),
            error: error.clone(),
        };
        let status = mount.to_status();
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), format!("secret db in vault kv: {error}"));
        assert_eq!(mount.label(), error.label());
    }
}

#[test]
fn an_entra_failure_of_an_identity_has_the_code_of_the_same_key_vault_failure() {
    for (error, code) in every_kv_error() {
        let mount = MountError::Identity(IdentityError::Entra {
            identity: "workload identity abc".into(),
            error: error.clone(),
        });
        let status = mount.to_status();
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), format!("workload identity abc: {error}"));
        assert_eq!(mount.label(), error.label());
    }
}

#[test]
fn every_other_mount_failure_has_its_code_and_label() {
    let cases = [
        (
            MountError::Identity(IdentityError::BadToken("is not a JWT")),
            Code::InvalidArgument,
            "identity",
        ),
        (
            MountError::Identity(IdentityError::Rejected("invalid_grant".into())),
            Code::Unauthenticated,
            "identity",
        ),
        (
            MountError::Identity(IdentityError::Setup("bad authority".into())),
            Code::InvalidArgument,
            "identity",
        ),
        (
            MountError::Config("vault URL".into()),
            Code::InvalidArgument,
            "invalid",
        ),
        (
            MountError::DuplicatePath("a".into()),
            Code::InvalidArgument,
            "invalid",
        ),
        (
            MountError::VersionNotListed {
                object: "secret db".into(),
                version: "v9".into(),
            },
            Code::NotFound,
            "not_found",
        ),
        (
            MountError::Content {
                object: "secret db".into(),
                error: ContentError::InvalidHex("odd length"),
            },
            Code::FailedPrecondition,
            "content",
        ),
        (
            MountError::TooLarge(5 << 20),
            Code::ResourceExhausted,
            "too_large",
        ),
        (
            MountError::Timeout(Duration::from_secs(20)),
            Code::DeadlineExceeded,
            "deadline_exceeded",
        ),
        (
            MountError::CloudEnv(CloudEnvError::Disabled),
            Code::InvalidArgument,
            "cloud_environment",
        ),
        (
            MountError::CloudEnv(CloudEnvError::NotAllowed {
                path: "/etc/passwd".into(),
                reason: "is not a file under the provider's --cloud-env-dir",
            }),
            Code::InvalidArgument,
            "cloud_environment",
        ),
        (
            MountError::CloudEnv(CloudEnvError::Invalid {
                path: "/cloudEnv/env.json".into(),
                reason: "is not valid JSON (line 1, column 1)".into(),
            }),
            Code::FailedPrecondition,
            "cloud_environment",
        ),
    ];
    for (error, code, label) in cases {
        let status = error.to_status();
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), error.to_string());
        assert_eq!(error.label(), label, "{error:?}");
    }
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[test]
fn unknown_object_keys_are_logged_naming_the_key_and_object_never_the_value() {
    let mut objects = String::from(
        "array:\n  - |\n    objectName: db-password\n    objectType: secret\n    \
         objectAlais: s3cr3t-Value\n",
    );
    objects.push_str("  - |\n    objectName: many\n    objectType: secret\n");
    for i in 0..20 {
        objects.push_str(&format!("    extra{i}: s3cr3t-Value\n"));
    }
    let attributes = serde_json::json!({
        "keyvaultName": "kv1",
        "tenantID": "72f988bf-0000-0000-0000-2d7cd011db47",
        "useVMManagedIdentity": "true",
        "objects": objects,
        "secretProviderClass": "app-secrets",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "shop",
    });
    let params =
        crate::csi::params::parse_mount(&attributes.to_string(), "{}", "420", "/t").unwrap();
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let count = tracing::subscriber::with_default(subscriber, || super::log_unknown_keys(&params));
    assert_eq!(count, 21);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The first 16 keys one by one, then one line with the total.
    assert_eq!(
        lines.len(),
        crate::csi::params::MAX_REPORTED_UNKNOWN_KEYS + 1,
        "{text}"
    );
    assert!(lines[0].contains("WARN"), "{text}");
    assert!(
        lines[0].contains("key=\"objectAlais\"")
            && lines[0].contains(r#"object="objects[0] (\"db-password\")""#)
            && lines[0].contains("shop/web-0")
            && lines[0].contains("app-secrets"),
        "{text}"
    );
    assert!(lines[1].contains("key=\"extra0\"") && lines[1].contains(r#"(\"many\")"#));
    assert!(lines[16].contains("unknown_keys=21"), "{text}");
    assert!(!text.contains("s3cr3t-Value"), "{text}");
}
