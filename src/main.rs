//! `akv-bridge`: parse flags, set up logging, run the chosen server until a signal.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use akv_bridge::cli::{Cli, Command, ProbeCommand};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Kms(args) => {
            akv_bridge::observability::logging::init(args.log.log_format_json, args.log.verbosity);
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
            akv_bridge::observability::logging::init(args.log.log_format_json, args.log.verbosity);
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
        #[cfg(feature = "dev")]
        Command::Bench(args) => akv_bridge::bench::main(args).await,
    }
}

async fn probe_kms(args: akv_bridge::cli::ProbeKmsArgs) -> ExitCode {
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

async fn probe_csi(args: akv_bridge::cli::ProbeCsiArgs) -> ExitCode {
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
