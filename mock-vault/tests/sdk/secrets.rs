//! Secrets through `azure_security_keyvault_secrets::SecretClient`.

use std::collections::HashMap;

use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientUpdateSecretPropertiesOptions,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient};
use futures::TryStreamExt as _;

use crate::harness::{Harness, error_code};

async fn set(client: &SecretClient, name: &str, value: &str, ct: Option<&str>) -> String {
    let params = SetSecretParameters {
        value: Some(value.to_owned()),
        content_type: ct.map(str::to_owned),
        tags: Some(HashMap::from([("env".to_owned(), "test".to_owned())])),
        ..Default::default()
    };
    let s = client
        .set_secret(name, params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    s.resource_id().unwrap().version.unwrap()
}

fn at(version: &str) -> Option<SecretClientGetSecretOptions<'static>> {
    Some(SecretClientGetSecretOptions {
        secret_version: Some(version.to_owned()),
        ..Default::default()
    })
}

#[tokio::test]
async fn set_get_versions_and_content_type() {
    let h = Harness::start("{}").await;
    let client = h.secrets("kv1", h.default_credential());
    // Values with quotes, newlines and non-ASCII survive the round trip.
    let v1 = set(
        &client,
        "db-password",
        "first \"quoted\"\nline",
        Some("text/plain"),
    )
    .await;
    let v2 = set(&client, "db-password", "second ✓", None).await;
    let latest = client
        .get_secret("db-password", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("second ✓"));
    assert_eq!(latest.resource_id().unwrap().version.unwrap(), v2);
    assert_eq!(latest.tags.unwrap()["env"], "test");
    let old = client
        .get_secret("db-password", at(&v1))
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("first \"quoted\"\nline"));
    assert_eq!(old.content_type.as_deref(), Some("text/plain"));
    let versions: Vec<_> = client
        .list_secret_properties_versions("db-password", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    let all: Vec<_> = client
        .list_secret_properties(None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let err = client.get_secret("absent", None).await.unwrap_err();
    assert_eq!(error_code(&err), (404, "SecretNotFound".into()));
}

#[tokio::test]
async fn disabled_versions_cannot_be_read() {
    let h =
        Harness::start("{vaults: [{name: kv1, secrets: [{name: s, values: [one, two]}]}]}").await;
    let client = h.secrets("kv1", h.default_credential());
    let latest = client
        .get_secret("s", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = latest.resource_id().unwrap().version.unwrap();
    let params = UpdateSecretPropertiesParameters {
        secret_attributes: Some(SecretAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    let updated = client
        .update_secret_properties(
            "s",
            params.try_into().unwrap(),
            Some(SecretClientUpdateSecretPropertiesOptions {
                secret_version: Some(version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.attributes.unwrap().enabled, Some(false));
    assert!(updated.value.is_none(), "an update never returns the value");
    let err = client.get_secret("s", at(&version)).await.unwrap_err();
    assert_eq!(error_code(&err), (403, "Forbidden".into()));
    // The older version is still readable by its version id.
    let versions: Vec<_> = client
        .list_secret_properties_versions("s", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let older = versions
        .iter()
        .map(|p| p.resource_id().unwrap().version.unwrap())
        .find(|v| *v != version)
        .unwrap();
    let one = client
        .get_secret("s", at(&older))
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(one.value.as_deref(), Some("one"));
}

#[tokio::test]
async fn delete_recover_purge_and_oversized_values() {
    let h = Harness::start("{}").await;
    let client = h.secrets("kv1", h.default_credential());
    set(&client, "tmp", "v", None).await;
    let deleted = client
        .delete_secret("tmp", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        deleted
            .recovery_id
            .unwrap()
            .ends_with("/deletedsecrets/tmp")
    );
    assert_eq!(
        error_code(&client.get_secret("tmp", None).await.unwrap_err()).0,
        404
    );
    client.recover_deleted_secret("tmp", None).await.unwrap();
    assert_eq!(
        client
            .get_secret("tmp", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("v")
    );
    client.delete_secret("tmp", None).await.unwrap();
    client.purge_deleted_secret("tmp", None).await.unwrap();
    let big = "x".repeat(30 * 1024);
    let err = client
        .set_secret(
            "big",
            SetSecretParameters {
                value: Some(big),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), (400, "BadParameter".into()));
}
