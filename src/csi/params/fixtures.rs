//! Fixtures the params tests share: attribute and `objects` builders and the values
//! secrets must never leak.

use std::collections::BTreeMap;

use crate::csi::params::{
    MountParams, ObjectSpec, ParamError, VaultName, WORKLOAD_IDENTITY_AUDIENCE, parse_mount,
    parse_objects,
};

pub(super) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(super) const CLIENT: &str = "0b0d7c5e-1111-2222-3333-4444c8c8c8c8";
pub(super) const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2EtdG9rZW4tcGF5bG9hZA.c2lnbmF0dXJl";
pub(super) const SP_SECRET: &str = "sp-s3cr3t~value";

pub(super) fn json(pairs: &[(&str, &str)]) -> String {
    let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    serde_json::to_string(&map).unwrap()
}

pub(super) fn tokens_json(audience: &str, token: &str) -> String {
    serde_json::json!({
        audience: {"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"},
        "other-audience": {"token": "not-this-one", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    })
    .to_string()
}

/// `array:` of the given object YAML texts, as `- |` block strings.
pub(super) fn objects_yaml(entries: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for entry in entries {
        out.push_str("  - |\n");
        for line in entry.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub(super) const DB: &str = "objectName: db-password\nobjectType: secret";

/// A predicate on an expected error.
pub(super) type Check = fn(&ParamError) -> bool;

/// A YAML double-quoted scalar for `s`, every control character escaped.
pub(super) fn yaml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Workload-identity attributes plus `extra` (which may override or, with "", unset).
pub(super) fn wi_attributes(objects: &str, extra: &[(&str, &str)]) -> String {
    let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, SA_TOKEN);
    let mut map: BTreeMap<&str, &str> = [
        ("keyvaultName", "kv-prod"),
        ("tenantID", TENANT),
        ("clientID", CLIENT),
        ("objects", objects),
        ("secretProviderClass", "app-secrets"),
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.namespace", "shop"),
        (
            "csi.storage.k8s.io/pod.uid",
            "5d8e3c1e-0000-4000-8000-000000000001",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", "web"),
        ("csi.storage.k8s.io/ephemeral", "false"),
        ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
    ]
    .into_iter()
    .collect();
    for (k, v) in extra {
        map.insert(k, v);
    }
    serde_json::to_string(&map).unwrap()
}

pub(super) fn mount_with(extra: &[(&str, &str)]) -> Result<MountParams, ParamError> {
    parse_mount(
        &wi_attributes(&objects_yaml(&[DB]), extra),
        "{}",
        "420",
        "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount",
    )
}

pub(super) fn objects_of(entries: &[&str]) -> Result<Vec<ObjectSpec>, ParamError> {
    parse_objects(
        &objects_yaml(entries),
        &VaultName::parse("kv-prod").unwrap(),
    )
}

pub(super) fn one(entry: &str) -> Result<ObjectSpec, ParamError> {
    objects_of(&[entry]).map(|mut v| v.remove(0))
}

pub(super) fn paths(spec: &ObjectSpec) -> Vec<&str> {
    spec.files.iter().map(|f| f.path.as_str()).collect()
}

pub(super) fn ids(specs: &[ObjectSpec]) -> Vec<&str> {
    specs
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.id.as_str()))
        .collect()
}
