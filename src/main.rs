//! `akv-bridge`: parse flags, set up logging, run the chosen server until a signal.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use akv_bridge::cli::{CsiArgs, KmsArgs, ProbeCsiArgs, ProbeKmsArgs};
use akv_bridge::observability::logging::Scale;
use clap::{CommandFactory as _, Parser, Subcommand};

/// The `akv-bridge` command line. The flags of each command live with the library
/// ([`akv_bridge::cli`]); the tree of commands, which names the tools too, lives here.
#[derive(Debug, Parser)]
#[command(name = "akv-bridge", version = akv_bridge::VERSION, propagate_version = true, about = "Kubernetes KMS v2 plugin and CSI provider backed by Azure Key Vault")]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// The KMS v2 plugin kube-apiserver calls.
    // A repeated flag overrides the earlier one, as Go's flag package does (the same
    // setting as `cli::parse_flags`).
    #[command(args_override_self = true)]
    Kms(Box<KmsArgs>),
    /// The Secrets Store CSI Driver provider (provider name `azure`).
    #[command(args_override_self = true)]
    Csi(Box<CsiArgs>),
    /// Talk to a running server the way its client would, and report.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Everything on one machine: mock Key Vault, KMS plugin, CSI provider (needs the
    /// `dev` feature).
    #[cfg(feature = "dev")]
    Dev(akv_bridge::dev::DevArgs),
}

/// `akv-bridge probe …`.
#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Status, Encrypt, Decrypt as kube-apiserver does, checking every limit it checks.
    Kms(ProbeKmsArgs),
    /// Version and Mount as the Secrets Store CSI Driver does, from a SecretProviderClass.
    Csi(ProbeCsiArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    // The Go originals' manifests pass flags without a subcommand, some with one dash.
    let argv = match akv_bridge::cli::go::normalize(std::env::args_os().collect(), &Cli::command())
    {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("akv-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Kms(args) => {
            akv_bridge::observability::logging::init(
                args.log.log_format_json,
                Scale::Mlog,
                args.log.verbosity,
            );
            match akv_bridge::kms::run(*args, akv_bridge::server::process::shutdown_signal()).await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One line that says what to fix.
                    tracing::error!("akv-bridge kms: {e}");
                    eprintln!("akv-bridge kms: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Csi(args) => {
            akv_bridge::observability::logging::init(
                args.log.log_format_json,
                Scale::Klog,
                args.log.verbosity,
            );
            match akv_bridge::csi::run(*args, akv_bridge::server::process::shutdown_signal()).await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("akv-bridge csi: {e}");
                    eprintln!("akv-bridge csi: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe(ProbeCommand::Kms(args)) => probe_kms(args).await,
        Command::Probe(ProbeCommand::Csi(args)) => probe_csi(args).await,
        #[cfg(feature = "dev")]
        Command::Dev(args) => akv_bridge::dev::main(args).await,
    }
}

async fn probe_kms(args: ProbeKmsArgs) -> ExitCode {
    use akv_bridge::probe::{ProbeOptions, probe_socket};
    use akv_bridge::socket::SocketAddress;
    let socket = match SocketAddress::parse_endpoint(&args.socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("akv-bridge probe kms: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ProbeOptions {
        timeout: args.timeout,
        envelope: args.envelope,
        provider_name: args.provider_name,
        store: args.store,
        ..ProbeOptions::default()
    };
    if let Err(e) = options.validate() {
        eprintln!("akv-bridge probe kms: {e}");
        return ExitCode::from(2);
    }
    let report = probe_socket(&socket, &options).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("akv-bridge probe kms: {e}"),
        }
    } else {
        println!("{}", report.to_table());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn probe_csi(args: ProbeCsiArgs) -> ExitCode {
    match akv_bridge::csi::probe::probe(&args).await {
        Err(e) => {
            eprintln!("akv-bridge probe csi: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("akv-bridge probe csi: {e}"),
                }
            } else {
                print!("{}", report.to_table());
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `dev` and the tests parse server flags with `cli::parse_flags`; it must read them as
    /// `akv-bridge kms …` / `akv-bridge csi …` does, a repeated flag included.
    #[test]
    fn server_flags_parse_as_the_command_line_does() {
        let flags = ["--key-name=a", "--keyvault-name=kv", "--key-name=b", "-v=3"];
        let Command::Kms(k) = Cli::try_parse_from(["akv-bridge", "kms"].into_iter().chain(flags))
            .unwrap()
            .command
        else {
            panic!("not kms");
        };
        let direct: KmsArgs = akv_bridge::cli::parse_flags("kms", flags).unwrap();
        assert_eq!(format!("{k:?}"), format!("{direct:?}"));
        assert_eq!(direct.key_name, "b");
        let flags = ["--endpoint=unix:///a.sock", "--endpoint=unix:///b.sock"];
        let Command::Csi(c) = Cli::try_parse_from(["akv-bridge", "csi"].into_iter().chain(flags))
            .unwrap()
            .command
        else {
            panic!("not csi");
        };
        let direct: CsiArgs = akv_bridge::cli::parse_flags("csi", flags).unwrap();
        assert_eq!(format!("{c:?}"), format!("{direct:?}"));
        assert_eq!(direct.endpoint, "unix:///b.sock");
    }
}
