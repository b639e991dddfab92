//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf compiler): no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/kms/v2/api.proto",
        "proto/kms/v1beta1/api.proto",
        "proto/csi/v1alpha1/service.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    embed_commit();
    Ok(())
}

/// Sets `AKV_BRIDGE_COMMIT` for `--version`: the variable of the same name when the build
/// sets it (the container build passes it in), else `git rev-parse`, else `unknown`.
fn embed_commit() {
    println!("cargo:rerun-if-env-changed=AKV_BRIDGE_COMMIT");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let from_env = std::env::var("AKV_BRIDGE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = from_env
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    // Keep the value printable and short whatever the environment held.
    let commit: String = commit
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    println!("cargo:rustc-env=AKV_BRIDGE_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.trim().to_owned())
}
