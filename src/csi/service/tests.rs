//! Tests of how Mount errors (parameters, identities, Key Vault and Entra failures, content)
//! become statuses and labels.

use std::collections::BTreeSet;
use std::time::Duration;

use tonic::Code;

use super::MountError;
use crate::azure::cloud::CloudError;
use crate::azure::keyvault::{KvError, Throttle};
use crate::azure::upstream::Upstream;
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
            KvError::Unauthenticated("invalid_client".into()),
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
    ];
    for (error, code, label) in cases {
        let status = error.to_status();
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), error.to_string());
        assert_eq!(error.label(), label, "{error:?}");
    }
}
