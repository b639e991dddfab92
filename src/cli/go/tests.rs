use clap::Args as _;

use super::*;
use crate::cli::{CsiArgs, KmsArgs, parse_flags};

fn tree() -> clap::Command {
    clap::Command::new("akv-bridge")
        .subcommand(KmsArgs::augment_args(clap::Command::new("kms")))
        .subcommand(CsiArgs::augment_args(clap::Command::new("csi")))
}

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("akv-bridge")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

fn normalized(args: &[&str]) -> Result<Vec<String>, GoArgsError> {
    normalize(argv(args), &tree()).map(|v| {
        v.into_iter()
            .skip(1)
            .map(|s| s.into_string().unwrap())
            .collect()
    })
}

/// The Go static pod's arguments (Azure/kubernetes-kms docs/manual-install.md, v0.11.0).
const GO_STATIC_POD: &[&str] = &[
    "--listen-addr=unix:///opt/azurekms.socket",
    "--keyvault-name=kv-prod",
    "--key-name=kek",
    "--key-version=0123456789abcdef0123456789abcdef",
    "--log-format-json=false",
    "--healthz-port=8787",
    "--healthz-path=/healthz",
    "--healthz-timeout=20s",
    "--managed-hsm=false",
    "-v=1",
];

/// The provider-azure DaemonSet's arguments (deployment/provider-azure-installer.yaml, v1.8.2).
const GO_DAEMONSET: &[&str] = &[
    "--endpoint=unix:///provider/azure.sock",
    "--construct-pem-chain=true",
    "--healthz-port=8989",
    "--healthz-path=/healthz",
    "--healthz-timeout=5s",
];

#[test]
fn the_go_static_pod_runs_the_kms_plugin() {
    let args = normalized(GO_STATIC_POD).unwrap();
    assert_eq!(args[0], "kms");
    assert_eq!(&args[1..], GO_STATIC_POD);
    let k: KmsArgs = parse_flags("kms", &args[1..]).unwrap();
    assert_eq!(
        (k.keyvault_name.as_str(), k.key_name.as_str()),
        ("kv-prod", "kek")
    );
    assert_eq!(k.log.verbosity, 1);
}

#[test]
fn the_go_daemonset_runs_the_csi_provider() {
    let args = normalized(GO_DAEMONSET).unwrap();
    assert_eq!(args[0], "csi");
    let c: CsiArgs = parse_flags("csi", &args[1..]).unwrap();
    assert_eq!(c.endpoint, "unix:///provider/azure.sock");
    assert_eq!(c.healthz_timeout, std::time::Duration::from_secs(5));
}

#[test]
fn a_subcommand_or_help_is_left_alone() {
    for args in [
        &["kms", "--key-name=k"][..],
        &["csi"],
        &["--help"],
        &["-V"],
        &["probe", "kms", "-store", "x"],
        &[],
    ] {
        let mut want: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        if args.first() == Some(&"kms") {
            want = vec!["kms".into(), "--key-name=k".into()];
        }
        assert_eq!(normalized(args).unwrap(), want, "{args:?}");
    }
}

#[test]
fn flags_of_neither_program_are_left_for_clap_to_refuse() {
    assert_eq!(normalized(&["-v=2"]).unwrap(), vec!["-v=2"]);
    assert_eq!(normalized(&["--bogus"]).unwrap(), vec!["--bogus"]);
}

#[test]
fn a_mix_of_both_programs_is_refused_naming_one_of_each() {
    let e = normalized(&["--key-name=k", "--endpoint=unix:///a.sock"]).unwrap_err();
    assert_eq!(
        e,
        GoArgsError::Mixed {
            kms: "key-name".into(),
            csi: "endpoint".into()
        }
    );
    assert!(e.to_string().contains("put `kms` or `csi` first"), "{e}");
}

#[test]
fn go_single_dash_long_flags_get_their_second_dash() {
    let args = normalized(&[
        "-keyvault-name=kv",
        "-key-name",
        "kek",
        "-managed-hsm",
        "-v=3",
        "-healthz-port=9000",
    ])
    .unwrap();
    assert_eq!(
        args,
        vec![
            "kms",
            "--keyvault-name=kv",
            "--key-name",
            "kek",
            "--managed-hsm",
            "-v=3",
            "--healthz-port=9000"
        ]
    );
    let k: KmsArgs = parse_flags("kms", &args[1..]).unwrap();
    assert!(k.managed_hsm);
    assert_eq!((k.healthz_port, k.log.verbosity), (9000, 3));
    // After an explicit subcommand too, and only for the subcommand's own flags.
    assert_eq!(
        normalized(&["csi", "-endpoint=unix:///x.sock", "-nonsense"]).unwrap(),
        vec!["csi", "--endpoint=unix:///x.sock", "-nonsense"]
    );
    // Nothing after `--` is touched.
    assert_eq!(
        normalized(&["kms", "--", "-key-name"]).unwrap(),
        vec!["kms", "--", "-key-name"]
    );
}

#[test]
fn go_booleans_parse_as_strconv_does() {
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(parse_bool(t), Ok(true), "{t}");
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(parse_bool(f), Ok(false), "{f}");
    }
    for bad in ["yes", "tRUE", "", "2"] {
        assert!(parse_bool(bad).is_err(), "{bad}");
    }
}
