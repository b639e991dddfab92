//! Tests of environment files: parsing, and where a SecretProviderClass may point.

use std::os::unix::fs::symlink;

use super::*;

const GOOD: &str = r#"{
  "name": "AzureStackCloud",
  "activeDirectoryEndpoint": "https://login.stack.test/",
  "keyVaultEndpoint": "https://vault.stack.test/",
  "keyVaultDNSSuffix": "vault.stack.test",
  "resourceManagerEndpoint": "https://management.stack.test/"
}"#;

#[test]
fn go_autorest_environment_files_parse() {
    let cloud = parse_environment(GOOD.as_bytes(), "env.json").unwrap();
    assert_eq!(cloud.authority_host, "https://login.stack.test/");
    assert_eq!(cloud.key_vault_dns_suffix, "vault.stack.test");
}

#[test]
fn unusable_environment_files_are_refused_without_quoting_them() {
    for (text, expected) in [
        ("s3cr3t-Content not json", "is not a JSON object"),
        ("\"s3cr3t-Content\"", "is not a JSON object"),
        ("[\"s3cr3t-Content\"]", "is not a JSON object"),
        (
            "{\"activeDirectoryEndpoint\": \"https://l",
            "is not a JSON object",
        ),
        ("{}", "activeDirectoryEndpoint is missing"),
        (
            r#"{"activeDirectoryEndpoint": "http://login.stack.test/", "keyVaultDNSSuffix": "vault.stack.test"}"#,
            "activeDirectoryEndpoint is not an https URL",
        ),
        (
            r#"{"activeDirectoryEndpoint": "https://login.stack.test/"}"#,
            "keyVaultDNSSuffix is missing",
        ),
        (
            r#"{"activeDirectoryEndpoint": "https://login.stack.test/", "keyVaultDNSSuffix": "evil.test/path?x"}"#,
            "keyVaultDNSSuffix is not a DNS suffix",
        ),
        (
            r#"{"activeDirectoryEndpoint": "https://login.stack.test/", "keyVaultDNSSuffix": "a..b"}"#,
            "keyVaultDNSSuffix is not a DNS suffix",
        ),
        (
            r#"{"activeDirectoryEndpoint": "https://login.stack.test/", "keyVaultDNSSuffix": "s3cr3t-Content:1"}"#,
            "keyVaultDNSSuffix is not a DNS suffix",
        ),
    ] {
        let err = parse_environment(text.as_bytes(), "/envs/env.json").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, CloudEnvError::Invalid { .. }),
            "{text}: {msg}"
        );
        assert!(msg.contains(expected), "{text}: {msg}");
        assert!(msg.contains("/envs/env.json"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn files_are_read_only_under_the_operators_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("envs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("stack.json"), GOOD).unwrap();
    std::fs::write(dir.join("broken.json"), "s3cr3t-Content").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/other.json"), GOOD).unwrap();
    let outside = root.path().join("outside.json");
    std::fs::write(&outside, GOOD).unwrap();
    symlink(&outside, dir.join("escape.json")).unwrap();
    symlink(dir.join("stack.json"), dir.join("alias.json")).unwrap();
    std::fs::write(dir.join("huge.json"), vec![b' '; 70 * 1024]).unwrap();

    let envs = CloudEnvFiles::new(Some(&dir), None).unwrap();
    let rt = rt();
    let resolve = |name: &str| rt.block_on(envs.resolve(Some(name)));
    let abs = |p: &str| dir.join(p).display().to_string();

    // Absolute (as the Go provider's docs write it) or relative to the directory; links
    // that stay inside are fine.
    for ok in [
        abs("stack.json"),
        "stack.json".into(),
        "sub/other.json".into(),
        abs("alias.json"),
    ] {
        let cloud = resolve(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(cloud.key_vault_dns_suffix, "vault.stack.test");
    }
    // Outside, through a link, the directory itself, missing, not a file, too large.
    for bad in [
        outside.display().to_string(),
        "/etc/passwd".into(),
        "/proc/self/environ".into(),
        abs("escape.json"),
        "escape.json".into(),
        "../outside.json".into(),
        abs(""),
        "missing.json".into(),
        "sub".into(),
        "huge.json".into(),
    ] {
        let err = resolve(&bad).unwrap_err();
        assert!(
            matches!(err, CloudEnvError::NotAllowed { .. }),
            "{bad}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("--cloud-env-dir"), "{bad}: {msg}");
        assert!(!msg.contains("root:") && !msg.contains("s3cr3t"), "{msg}");
    }
    // A file in the directory that does not parse: named, never quoted.
    let err = resolve("broken.json").unwrap_err();
    assert!(matches!(err, CloudEnvError::Invalid { .. }), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");

    // No directory: every cloudEnvFileName is refused; no default: AzureStackCloud needs one.
    let none = CloudEnvFiles::new(None, None).unwrap();
    assert_eq!(
        rt.block_on(none.resolve(Some("/etc/passwd"))).unwrap_err(),
        CloudEnvError::Disabled
    );
    assert_eq!(
        rt.block_on(none.resolve(None)).unwrap_err(),
        CloudEnvError::NoFile
    );
    assert!(!none.has_default());

    // The operator's default file: read at start-up, anywhere.
    let with_default = CloudEnvFiles::new(None, Some(&outside)).unwrap();
    assert!(with_default.has_default());
    let cloud = rt.block_on(with_default.resolve(None)).unwrap();
    assert_eq!(cloud.authority_host, "https://login.stack.test/");
    let err = CloudEnvFiles::new(None, Some(&dir.join("broken.json"))).unwrap_err();
    assert!(
        err.contains("AZURE_ENVIRONMENT_FILEPATH") && !err.contains("s3cr3t"),
        "{err}"
    );
    assert!(CloudEnvFiles::new(None, Some(&dir.join("missing.json"))).is_err());
    assert!(CloudEnvFiles::new(Some(&dir.join("stack.json")), None).is_err());
    assert!(CloudEnvFiles::new(Some(&root.path().join("nope")), None).is_err());
}
