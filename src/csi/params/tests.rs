//! Tests of [`parse_mount`] as a whole: the spec's example, top-level parameters and
//! their errors.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::azure::cloud::{Cloud, CloudError};
use crate::csi::params::fixtures::{
    CLIENT, DB, SA_TOKEN, TENANT, ids, json, mount_with, objects_yaml, paths, wi_attributes,
};
use crate::csi::params::{
    A_POD_NAME, AuthMode, DEFAULT_CLOUD, MountCloud, ObjectFile, ObjectKind, ParamError,
    ParseOptions, PodInfo, RelativeFilePath, parse_mount, parse_mount_with,
};

#[test]
fn spec_example_parses_to_the_expected_objects() {
    let objects = "array:
  - |
    objectName: db-password
    objectType: secret
  - |
    objectName: tls-cert
    objectType: secret        # the cert's private key and chain
    objectAlias: tls/bundle.pem
  - |
    objectName: signing-key
    objectType: key
    objectVersionHistory: 2
";
    let attributes = wi_attributes(objects, &[]);
    let params = parse_mount(&attributes, "null", "420", "/mnt/target").unwrap();
    assert_eq!(params.vault.as_str(), "kv-prod");
    assert_eq!(params.tenant_id, TENANT);
    assert_eq!(params.cloud, MountCloud::Azure(Cloud::AzurePublicCloud));
    assert_eq!(params.default_mode, 0o644);
    assert_eq!(params.target_path, PathBuf::from("/mnt/target"));
    assert_eq!(params.secret_provider_class.as_deref(), Some("app-secrets"));
    assert_eq!(
        params.pod,
        PodInfo {
            namespace: Some("shop".into()),
            name: Some("web-0".into()),
            uid: Some("5d8e3c1e-0000-4000-8000-000000000001".into()),
            service_account: Some("web".into()),
            ephemeral: false,
        }
    );
    match &params.auth {
        AuthMode::WorkloadIdentity {
            client_id,
            token,
            token_expiration,
            exchange,
        } => {
            assert_eq!(*exchange, super::TokenExchange::Entra);
            assert_eq!(client_id, CLIENT);
            assert_eq!(token.expose_secret(), SA_TOKEN);
            assert_eq!(token_expiration.as_deref(), Some("2030-01-01T00:00:00Z"));
        }
        other => panic!("expected workload identity, got {other:?}"),
    }

    let o = &params.objects;
    assert_eq!(o.len(), 3);
    assert_eq!(o[0].name.as_str(), "db-password");
    assert_eq!(o[0].kind, ObjectKind::Secret);
    assert_eq!(o[0].path.as_str(), "db-password");
    assert_eq!(o[0].id, "secret/db-password");
    assert_eq!(
        o[0].files,
        vec![ObjectFile {
            path: RelativeFilePath::parse("db-password").unwrap(),
            id: "secret/db-password".into(),
            history_index: None
        }]
    );
    assert_eq!(o[1].kind, ObjectKind::Secret);
    assert_eq!(paths(&o[1]), ["tls/bundle.pem"]);
    assert_eq!(o[1].id, "secret/tls-cert");
    assert_eq!(o[2].kind, ObjectKind::Key);
    assert_eq!(o[2].history, 2);
    // `objectVersionHistory: 2` plans three files, as the Go provider writes.
    assert_eq!(
        paths(&o[2]),
        ["signing-key/0", "signing-key/1", "signing-key/2"]
    );
    assert_eq!(
        ids(&o[2..]),
        [
            "key/signing-key/0",
            "key/signing-key/1",
            "key/signing-key/2"
        ]
    );
    assert_eq!(o[2].files[2].history_index, Some(2));
    assert_eq!(params.vault_for(&o[0]).as_str(), "kv-prod");
    assert_eq!(params.mode_for(&o[0]), 0o644);
}

#[test]
fn top_level_parameters_and_defaults() {
    let p = mount_with(&[]).unwrap();
    assert_eq!(p.cloud, MountCloud::Azure(DEFAULT_CLOUD));
    for (cloud, expected) in [
        ("AzureUSGovernmentCloud", Cloud::AzureUSGovernmentCloud),
        ("AzureChinaCloud", Cloud::AzureChinaCloud),
        ("azurepubliccloud", Cloud::AzurePublicCloud),
        ("AzureUSGovernment", Cloud::AzureUSGovernmentCloud),
        ("AzureCloud", Cloud::AzurePublicCloud),
    ] {
        let p = mount_with(&[("cloudName", &format!(" {cloud} "))]).unwrap();
        assert_eq!(p.cloud, MountCloud::Azure(expected));
    }
    // Legacy tenantId, and tenantID winning over it.
    let p = mount_with(&[("tenantID", ""), ("tenantId", " contoso.onmicrosoft.com ")]).unwrap();
    assert_eq!(p.tenant_id, "contoso.onmicrosoft.com");
    let p = mount_with(&[("tenantId", "other-tenant")]).unwrap();
    assert_eq!(p.tenant_id, TENANT);
    // Values are trimmed; usePodIdentity false is fine.
    let p = mount_with(&[("keyvaultName", "  kv-prod\n"), ("usePodIdentity", "false")]).unwrap();
    assert_eq!(p.vault.as_str(), "kv-prod");
    // Pod info absent: all None.
    let attributes = json(&[
        ("keyvaultName", "kv1"),
        ("tenantId", TENANT),
        ("useVMManagedIdentity", "true"),
        ("objects", &objects_yaml(&[DB])),
    ]);
    let p = parse_mount(&attributes, "", "0", "/t").unwrap();
    assert_eq!(p.pod, PodInfo::default());
    assert_eq!(p.secret_provider_class, None);
    assert_eq!(p.default_mode, 0);
    let p = mount_with(&[("csi.storage.k8s.io/ephemeral", "True")]).unwrap();
    assert!(p.pod.ephemeral);
}

#[test]
fn top_level_errors() {
    let err = mount_with(&[("keyvaultName", "")]).unwrap_err();
    assert_eq!(
        err,
        ParamError::MissingParameter {
            name: "keyvaultName",
            hint: String::new()
        }
    );
    let err = mount_with(&[("keyvaultName", ""), ("keyVaultName", "kv-prod")]).unwrap_err();
    assert!(err.to_string().contains("found \"keyVaultName\""), "{err}");
    for bad in [
        "kv",
        "a234567890123456789012345",
        "kv_prod",
        "kv.prod",
        "kv prod",
        "kv/x",
        "kvé1",
    ] {
        let err = mount_with(&[("keyvaultName", bad)]).unwrap_err();
        assert!(
            matches!(err, ParamError::InvalidVaultName { .. }),
            "{bad}: {err}"
        );
    }
    let err = mount_with(&[("tenantID", "")]).unwrap_err();
    assert_eq!(
        err,
        ParamError::MissingParameter {
            name: "tenantID",
            hint: String::new()
        }
    );
    for bad in ["../evil", "a/b", "tenant?x=1", "t enant"] {
        let err = mount_with(&[("tenantID", bad)]).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidParameter {
                    name: "tenantID",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        mount_with(&[("usePodIdentity", "true")]).unwrap_err(),
        ParamError::PodIdentityUnsupported
    );
    assert_eq!(
        ParamError::PodIdentityUnsupported.to_string(),
        "usePodIdentity: aad-pod-identity is deprecated and not supported; use workload identity (clientID)"
    );
    let err = mount_with(&[("usePodServiceAccountAnnotation", "true")]).unwrap_err();
    assert!(matches!(
        err,
        ParamError::Unsupported {
            name: "usePodServiceAccountAnnotation",
            ..
        }
    ));
    let err = mount_with(&[("cloudName", "Azure Cloud/../x")]).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidParameter {
                name: "cloudName",
                ..
            }
        ),
        "{err}"
    );
    // Well-formed but not a cloud: the message `Cloud::parse` gives, after `cloudName: `.
    let err = mount_with(&[("cloudName", " MarsCloud ")]).unwrap_err();
    assert_eq!(
        err,
        ParamError::InvalidCloud(CloudError::Unknown("MarsCloud".to_owned()))
    );
    assert_eq!(
        err.to_string(),
        "cloudName: unknown Azure cloud \"MarsCloud\": expected AzurePublicCloud, \
         AzureUSGovernmentCloud or AzureChinaCloud (case-insensitive; empty means \
         AzurePublicCloud)"
    );
    let err = mount_with(&[("cloudName", "azuregermancloud")]).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidCloud(CloudError::Unsupported { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("cloudName: "), "{err}");
    assert_eq!(
        mount_with(&[("useVMManagedIdentity", "true")]).unwrap_err(),
        ParamError::ConflictingIdentity
    );
    let err = mount_with(&[("clientID", "not a guid")]).unwrap_err();
    assert!(matches!(
        err,
        ParamError::InvalidParameter {
            name: "clientID",
            ..
        }
    ));
    let err = mount_with(&[("objects", "")]).unwrap_err();
    assert_eq!(
        err,
        ParamError::MissingParameter {
            name: "objects",
            hint: String::new()
        }
    );
    let err = mount_with(&[("csi.storage.k8s.io/pod.name", "web\n0")]).unwrap_err();
    assert!(matches!(
        err,
        ParamError::InvalidParameter {
            name: A_POD_NAME,
            ..
        }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_mount_never_panics(a in any::<String>(), s in any::<String>(), p in any::<String>(), t in any::<String>()) {
        let _ = parse_mount(&a, &s, &p, &t);
    }
}

/// `--cloud-name` is the cloud of a class without `cloudName`; `cloudName` still wins.
#[test]
fn the_default_cloud_applies_only_without_cloud_name() {
    let options = ParseOptions {
        default_cloud: MountCloud::Azure(Cloud::AzureChinaCloud),
        ..ParseOptions::default()
    };
    let with = |extra: &[(&str, &str)]| {
        parse_mount_with(
            &wi_attributes(&objects_yaml(&[DB]), extra),
            "{}",
            "420",
            "/t",
            &options,
        )
    };
    assert_eq!(
        with(&[]).unwrap().cloud,
        MountCloud::Azure(Cloud::AzureChinaCloud)
    );
    assert_eq!(
        with(&[("cloudName", "  ")]).unwrap().cloud,
        MountCloud::Azure(Cloud::AzureChinaCloud)
    );
    assert_eq!(
        with(&[("cloudName", "AzureUSGovernmentCloud")])
            .unwrap()
            .cloud,
        MountCloud::Azure(Cloud::AzureUSGovernmentCloud)
    );
    assert_eq!(
        with(&[("cloudName", "azurepubliccloud")]).unwrap().cloud,
        MountCloud::Azure(Cloud::AzurePublicCloud)
    );
    // The flags' default: AzurePublicCloud.
    assert_eq!(
        ParseOptions::default().default_cloud,
        MountCloud::Azure(Cloud::AzurePublicCloud)
    );
    assert_eq!(
        mount_with(&[]).unwrap().cloud,
        MountCloud::Azure(DEFAULT_CLOUD)
    );
}

/// `cloudName: AzureStackCloud` is a custom cloud, its file `cloudEnvFileName` (checked
/// lexically here; the provider decides where it may be). As in the Go provider, the
/// file is read only with an explicit AzureStackCloud.
#[test]
fn azure_stack_cloud_takes_its_environment_file() {
    let stack = |file: Option<&str>| MountCloud::Custom {
        env_file: file.map(str::to_owned),
    };
    let p = mount_with(&[
        ("cloudName", "AzureStackCloud"),
        ("cloudEnvFileName", " /cloudEnv/env.json "),
    ])
    .unwrap();
    assert_eq!(p.cloud, stack(Some("/cloudEnv/env.json")));
    let p = mount_with(&[("cloudName", "azurestackcloud")]).unwrap();
    assert_eq!(p.cloud, stack(None));
    // Ignored with any other cloud, as the Go provider ignores it.
    for extra in [
        &[("cloudEnvFileName", "/cloudEnv/env.json")][..],
        &[
            ("cloudName", "AzureChinaCloud"),
            ("cloudEnvFileName", "/cloudEnv/env.json"),
        ][..],
    ] {
        assert!(matches!(
            mount_with(extra).unwrap().cloud,
            MountCloud::Azure(_)
        ));
    }
    for bad in [
        "/cloudEnv/../etc/passwd",
        "../x",
        "/a/b/..",
        "/cloudEnv/env\u{0}.json",
        "/cloudEnv/env\n.json",
    ] {
        let err =
            mount_with(&[("cloudName", "AzureStackCloud"), ("cloudEnvFileName", bad)]).unwrap_err();
        assert!(
            matches!(
                err,
                ParamError::InvalidParameter {
                    name: "cloudEnvFileName",
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
    let long = format!("/{}", "a".repeat(5000));
    assert!(
        mount_with(&[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", &long)
        ])
        .is_err()
    );
    // `--cloud-name=AzureStackCloud`: a class without cloudName uses the default file.
    let options = ParseOptions {
        default_cloud: stack(None),
        ..ParseOptions::default()
    };
    let p = parse_mount_with(
        &wi_attributes(&objects_yaml(&[DB]), &[("cloudEnvFileName", "/x.json")]),
        "{}",
        "420",
        "/t",
        &options,
    )
    .unwrap();
    assert_eq!(p.cloud, stack(None));
}

#[test]
fn failover_vaults_apply_to_their_own_vaults_and_the_newest_version_only() {
    let parse = |objects: &[&str], extra: &[(&str, &str)]| {
        parse_mount(
            &wi_attributes(&objects_yaml(objects), extra),
            "{}",
            "420",
            "/t",
        )
    };
    let p = parse(
        &[
            DB,
            "objectName: a\nobjectType: secret\nkeyvaultName: kv-other",
            "objectName: b\nobjectType: secret\nkeyvaultName: kv-other\nfailoverKeyvaultName: kv-other-dr",
            "objectName: c\nobjectType: secret\nobjectVersion: 0123abcd",
            "objectName: d\nobjectType: secret\nfailoverKeyvaultName: kv-own-dr",
        ],
        &[("failoverKeyvaultName", " kv-prod-dr ")],
    )
    .unwrap();
    let failovers: Vec<Option<&str>> = p
        .objects
        .iter()
        .map(|o| p.failover_for(o).map(|v| v.as_str()))
        .collect();
    assert_eq!(
        failovers,
        [
            // The mount's vault: the mount's failover.
            Some("kv-prod-dr"),
            // Another vault: not the mount's failover.
            None,
            Some("kv-other-dr"),
            // A pinned version belongs to one vault.
            None,
            Some("kv-own-dr"),
        ]
    );
    assert!(parse(&[DB], &[]).unwrap().failover.is_none());

    let err = parse(&[DB], &[("failoverKeyvaultName", "KV-PROD")]).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidParameter {
                name: "failoverKeyvaultName",
                ..
            }
        ),
        "{err}"
    );
    let err = parse(&[DB], &[("failoverKeyvaultName", "not a vault!")]).unwrap_err();
    assert!(matches!(err, ParamError::InvalidVaultName { .. }), "{err}");
    let err = parse(
        &["objectName: a\nobjectType: secret\nkeyvaultName: kv-x\nfailoverKeyvaultName: kv-x"],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidObjectField {
                field: "failoverKeyvaultName",
                ..
            }
        ),
        "{err}"
    ); // A per-object failover for a pinned version would be silently unused: refused.
    let err = parse(
        &["objectName: a\nobjectType: secret\nobjectVersion: 0123abcd\nfailoverKeyvaultName: kv-dr"],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(err, ParamError::IncompatibleObjectFields { .. }),
        "{err}"
    );
}
