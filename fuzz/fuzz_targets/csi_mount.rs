//! Everything the CSI driver sends in a MountRequest: attributes and secrets JSON, the
//! permission, the objects YAML, and file paths.

#![no_main]

use akv_bridge::fuzzing::csi_params as params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = params::RelativeFilePath::parse(text);
    let mut parts = text.splitn(4, '\u{1}');
    let attributes = parts.next().unwrap_or_default();
    let secrets = parts.next().unwrap_or_default();
    let permission = parts.next().unwrap_or_default();
    let target = parts
        .next()
        .unwrap_or("/var/lib/kubelet/pods/x/volumes/y/mount");
    let _ = params::parse_mount(attributes, secrets, permission, target);
    // The objects YAML on its own, inside otherwise valid attributes.
    let attrs = serde_json::json!({
        "keyvaultName": "kv-fuzz",
        "tenantID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "useVMManagedIdentity": "true",
        "objects": text,
    });
    let _ = params::parse_mount(&attrs.to_string(), "{}", "420", "/mnt/x");
});
