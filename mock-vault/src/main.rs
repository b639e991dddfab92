//! `mock-vault`: run the emulator. Prints one JSON line with everything a client needs.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mock_vault::{Config, Fixture, TlsSource};

/// An offline Azure Key Vault + Microsoft Entra emulator for tests and development.
#[derive(Debug, Parser)]
#[command(name = "mock-vault", version)]
struct Args {
    /// HTTPS address for vaults and Entra (port 0 picks a free port).
    #[arg(long, env = "MOCK_VAULT_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Control API address (loopback only; port 0 picks a free port).
    #[arg(long, env = "MOCK_VAULT_CONTROL_LISTEN", default_value = "127.0.0.1:0")]
    control_listen: SocketAddr,
    /// Fixture file (YAML or JSON): vaults, identities, keys, secrets, certificates.
    #[arg(long, env = "MOCK_VAULT_FIXTURE")]
    fixture: Option<PathBuf>,
    /// Extra empty vaults to serve (repeatable), besides the fixture's.
    #[arg(long = "vault")]
    vaults: Vec<String>,
    /// Keep vault content across restarts in this file (mode 0600).
    #[arg(long, env = "MOCK_VAULT_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Write the CA certificate (PEM) here (default: a temporary file, path printed).
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Serve this certificate chain (PEM) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) clients should trust with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Access-token lifetime, e.g. `1h`, `90s`.
    #[arg(long, default_value = "1h", value_parser = humantime_duration)]
    token_ttl: Duration,
    /// Also serve AKS identity binding's token proxy on this address (HTTPS, its own
    /// cluster CA, written beside the CA file as `cluster-ca.pem`).
    #[arg(long, env = "MOCK_VAULT_TOKEN_PROXY_LISTEN")]
    token_proxy_listen: Option<SocketAddr>,
    /// The emulated cluster's id (its API server certificate's
    /// `hcp-kubernetes.<id>.svc.cluster.local`), from which the identity-binding server
    /// name is derived.
    #[arg(long, default_value = "mock-cluster", requires = "token_proxy_listen")]
    cluster_id: String,
    /// Log as JSON lines.
    #[arg(long)]
    log_format_json: bool,
    /// Log verbosity (repeat for more).
    #[arg(short, action = clap::ArgAction::Count)]
    v: u8,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 90s or 1h: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = match args.v {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format_json {
        sub.json().init();
    } else {
        sub.init();
    }

    let mut fixture = match &args.fixture {
        Some(p) => Fixture::from_path(p)?,
        None => Fixture::default(),
    };
    if !args.vaults.is_empty() && fixture.vaults.is_empty() {
        fixture.vaults.push(mock_vault::fixture::VaultFixture {
            name: mock_vault::fixture::DEFAULT_VAULT.into(),
            ..Default::default()
        });
    }
    for name in &args.vaults {
        fixture.vaults.push(mock_vault::fixture::VaultFixture {
            name: name.clone(),
            ..Default::default()
        });
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files {
            cert,
            key,
            ca: args.tls_ca,
        },
        _ => TlsSource::Generate,
    };
    let config = Config {
        listen: args.listen,
        control_listen: args.control_listen,
        fixture,
        state_file: args.state_file,
        tls,
        ca_out: args.ca_out,
        token_ttl: args.token_ttl,
        token_proxy: args
            .token_proxy_listen
            .map(|listen| mock_vault::TokenProxyConfig {
                listen,
                cluster_id: args.cluster_id.clone(),
            }),
        ..Config::default()
    };
    let mock = mock_vault::start(config)
        .await
        .context("mock-vault could not start")?;
    println!("{}", serde_json::to_string(mock.info())?);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    mock.shutdown().await;
    Ok(())
}
