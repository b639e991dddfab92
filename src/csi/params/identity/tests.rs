//! Tests of identity selection and of the redaction of its secrets.

use std::collections::BTreeMap;

use crate::csi::params::fixtures::{
    CLIENT, DB, SA_TOKEN, SP_SECRET, json, mount_with, objects_yaml, tokens_json, wi_attributes,
};
use crate::csi::params::{
    A_SERVICE_ACCOUNT_TOKENS, AuthMode, IDENTITY_BINDING_AUDIENCE, ParamError, TokenExchange,
    WORKLOAD_IDENTITY_AUDIENCE, parse_mount,
};

#[test]
fn managed_identity() {
    let p = mount_with(&[("clientID", ""), ("useVMManagedIdentity", "true")]).unwrap();
    assert!(matches!(
        p.auth,
        AuthMode::ManagedIdentity {
            user_assigned_client_id: None
        }
    ));
    let p = mount_with(&[
        ("clientID", ""),
        ("useVMManagedIdentity", "1"),
        ("userAssignedIdentityID", CLIENT),
    ])
    .unwrap();
    match p.auth {
        AuthMode::ManagedIdentity {
            user_assigned_client_id,
        } => {
            assert_eq!(user_assigned_client_id.as_deref(), Some(CLIENT));
        }
        other => panic!("{other:?}"),
    }
    let err = mount_with(&[
        ("clientID", ""),
        ("useVMManagedIdentity", "true"),
        ("userAssignedIdentityID", "a b"),
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidParameter {
                name: "userAssignedIdentityID",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn service_principal_secrets_match_case_insensitively() {
    let attributes = wi_attributes(&objects_yaml(&[DB]), &[("clientID", "")]);
    for secrets in [
        json(&[("clientid", CLIENT), ("clientsecret", SP_SECRET)]),
        json(&[
            ("ClientID", CLIENT),
            ("CLIENTSECRET", SP_SECRET),
            ("other", "x"),
        ]),
    ] {
        let p = parse_mount(&attributes, &secrets, "420", "/t").unwrap();
        match &p.auth {
            AuthMode::ServicePrincipal {
                client_id,
                client_secret,
            } => {
                assert_eq!(client_id, CLIENT);
                assert_eq!(client_secret.expose_secret(), SP_SECRET);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{p:?}").contains(SP_SECRET));
    }
    let secrets = format!(r#"{{"clientid":"{CLIENT}","ClientId":"{CLIENT}","clientsecret":"x"}}"#);
    let err = parse_mount(&attributes, &secrets, "420", "/t").unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::DuplicateKey {
                what: "secrets",
                ..
            }
        ),
        "{err}"
    );
    let err = parse_mount(&attributes, &json(&[("clientid", CLIENT)]), "420", "/t").unwrap_err();
    assert_eq!(
        err,
        ParamError::IncompleteServicePrincipal {
            missing: "clientsecret"
        }
    );
    let err = parse_mount(
        &attributes,
        &json(&[("clientsecret", SP_SECRET)]),
        "420",
        "/t",
    )
    .unwrap_err();
    assert_eq!(
        err,
        ParamError::IncompleteServicePrincipal {
            missing: "clientid"
        }
    );
    let err = parse_mount(
        &attributes,
        &json(&[("clientid", CLIENT), ("clientsecret", "")]),
        "420",
        "/t",
    )
    .unwrap_err();
    assert_eq!(
        err,
        ParamError::IncompleteServicePrincipal {
            missing: "clientsecret"
        }
    );
    // A trailing newline in clientid is refused without echoing it.
    let secrets = json(&[
        ("clientid", &format!("{CLIENT}\n")),
        ("clientsecret", SP_SECRET),
    ]);
    let err = parse_mount(&attributes, &secrets, "420", "/t").unwrap_err();
    assert!(err.to_string().contains("trailing newline"), "{err}");
    assert!(!err.to_string().contains(SP_SECRET));
}

#[test]
fn no_identity() {
    let attributes = wi_attributes(&objects_yaml(&[DB]), &[("clientID", "")]);
    for secrets in ["", "null", "{}", "  "] {
        let err = parse_mount(&attributes, secrets, "420", "/t").unwrap_err();
        assert!(
            matches!(err, ParamError::NoIdentity { .. }),
            "{secrets:?}: {err}"
        );
        assert!(err.to_string().starts_with(
            "no identity: set clientID for workload identity, useVMManagedIdentity, or \
             nodePublishSecretRef with clientid/clientsecret"
        ));
    }
    // A mis-cased clientID gets a hint.
    let attributes = wi_attributes(
        &objects_yaml(&[DB]),
        &[("clientID", ""), ("clientId", CLIENT)],
    );
    let err = parse_mount(&attributes, "{}", "420", "/t").unwrap_err();
    assert!(err.to_string().contains("found \"clientId\""), "{err}");
}

#[test]
fn workload_identity_token_extraction() {
    let objects = objects_yaml(&[DB]);
    // Missing attribute, empty, null, other audience only, empty token, null token.
    for tokens in [
        None,
        Some(String::new()),
        Some("null".to_owned()),
        Some("{}".to_owned()),
        Some(tokens_json("api://AKSIdentityBinding", SA_TOKEN)),
        Some(tokens_json(WORKLOAD_IDENTITY_AUDIENCE, "")),
        Some(format!(
            r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":null}}}}"#
        )),
        Some(format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{}}}}"#)),
    ] {
        let mut map: BTreeMap<String, String> =
            serde_json::from_str(&wi_attributes(&objects, &[])).unwrap();
        match &tokens {
            None => map.remove(A_SERVICE_ACCOUNT_TOKENS),
            Some(t) => map.insert(A_SERVICE_ACCOUNT_TOKENS.to_owned(), t.clone()),
        };
        let err =
            parse_mount(&serde_json::to_string(&map).unwrap(), "{}", "420", "/t").unwrap_err();
        assert_eq!(err, ParamError::MissingWorkloadIdentityToken, "{tokens:?}");
        let text = err.to_string();
        assert!(
            text.contains("tokenRequests") && text.contains(WORKLOAD_IDENTITY_AUDIENCE),
            "{text}"
        );
    }
    // Malformed token JSON: an error that does not quote the token.
    for bad in [
        format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":["{SA_TOKEN}"]}}}}"#),
        format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":"{SA_TOKEN}"}}"#),
        format!(r#"{{"{WORKLOAD_IDENTITY_AUDIENCE}":{{"token":"{SA_TOKEN}""#),
        format!(r#"["{SA_TOKEN}"]"#),
    ] {
        let attributes = wi_attributes(&objects, &[(A_SERVICE_ACCOUNT_TOKENS, &bad)]);
        let err = parse_mount(&attributes, "{}", "420", "/t").unwrap_err();
        assert!(
            matches!(err, ParamError::InvalidJson { .. }),
            "{bad}: {err}"
        );
        assert!(!err.to_string().contains(SA_TOKEN), "{err}");
        assert!(!format!("{err:?}").contains(SA_TOKEN), "{err:?}");
    }
}

#[test]
fn debug_is_redacted() {
    let p = mount_with(&[]).unwrap();
    let debug = format!("{p:?}");
    assert!(!debug.contains(SA_TOKEN), "{debug}");
    assert!(!debug.contains("c2EtdG9rZW4"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(debug.contains("kv-prod"));
    // The client secret is a `SecretString` (the `ClientSecret` newtype is gone): its
    // `Debug` is the fixed text, also in the alternate form.
    let secret = crate::secret::SecretString::from(SP_SECRET);
    assert_eq!(format!("{secret:?}"), "[redacted]");
    assert_eq!(format!("{:#?}", secret), "[redacted]");
}

#[test]
fn azure_token_proxy_is_identity_binding() {
    const BINDING_TOKEN: &str = "binding-token";
    // The driver sends a token per audience of the CSIDriver's tokenRequests.
    let both = serde_json::json!({
        WORKLOAD_IDENTITY_AUDIENCE: {"token": SA_TOKEN, "expirationTimestamp": "2030-01-01T00:00:00Z"},
        IDENTITY_BINDING_AUDIENCE: {"token": BINDING_TOKEN, "expirationTimestamp": "2031-01-01T00:00:00Z"},
    })
    .to_string();
    for value in ["true", "True", "1", " t "] {
        let p = mount_with(&[
            ("useAzureTokenProxy", value),
            (A_SERVICE_ACCOUNT_TOKENS, &both),
        ])
        .unwrap();
        match p.auth {
            AuthMode::WorkloadIdentity {
                client_id,
                token,
                token_expiration,
                exchange,
            } => {
                assert_eq!(exchange, TokenExchange::IdentityBinding, "{value:?}");
                assert_eq!(client_id, CLIENT);
                // The identity-binding audience's token, not workload identity's.
                assert_eq!(token.expose_secret(), BINDING_TOKEN);
                assert_eq!(token_expiration.as_deref(), Some("2031-01-01T00:00:00Z"));
            }
            other => panic!("{value:?}: {other:?}"),
        }
    }
    // Only the workload identity token: the CSIDriver lacks the audience; say so.
    let err = mount_with(&[("useAzureTokenProxy", "true")]).unwrap_err();
    assert_eq!(err, ParamError::MissingIdentityBindingToken);
    let text = err.to_string();
    assert!(
        text.contains(IDENTITY_BINDING_AUDIENCE) && text.contains("tokenRequests"),
        "{text}"
    );
    // clientID is required, as in the Go provider.
    let err = mount_with(&[
        ("clientID", ""),
        ("useAzureTokenProxy", "true"),
        (A_SERVICE_ACCOUNT_TOKENS, &both),
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidParameter {
                name: "useAzureTokenProxy",
                ..
            }
        ) && err.to_string().contains("clientID"),
        "{err}"
    );
    // Not together with the VM's identity (the Go provider: one mode at a time).
    let err = mount_with(&[
        ("useVMManagedIdentity", "true"),
        ("useAzureTokenProxy", "true"),
        (A_SERVICE_ACCOUNT_TOKENS, &both),
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidParameter {
                name: "useAzureTokenProxy",
                ..
            }
        ),
        "{err}"
    );
    // False or empty: plain workload identity, with the workload identity token.
    for value in ["false", "0", ""] {
        let p = mount_with(&[
            ("useAzureTokenProxy", value),
            (A_SERVICE_ACCOUNT_TOKENS, &both),
        ])
        .unwrap();
        match p.auth {
            AuthMode::WorkloadIdentity {
                token, exchange, ..
            } => {
                assert_eq!(exchange, TokenExchange::Entra, "{value:?}");
                assert_eq!(token.expose_secret(), SA_TOKEN);
            }
            other => panic!("{value:?}: {other:?}"),
        }
    }
    // Redacted like any token.
    let p = mount_with(&[
        ("useAzureTokenProxy", "true"),
        (A_SERVICE_ACCOUNT_TOKENS, &both),
    ])
    .unwrap();
    assert!(!format!("{p:?}").contains(BINDING_TOKEN));
    let err = mount_with(&[("useAzureTokenProxy", "yes")]).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::InvalidBool {
                name: "useAzureTokenProxy",
                ..
            }
        ),
        "{err}"
    );
}
