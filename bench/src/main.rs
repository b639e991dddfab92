//! `akv-bridge-bench`: figures for the KMS plugin and the CSI provider (issue 7).
//!
//! A tool, not part of the product: its own workspace package, so that the production
//! library and the `akv-bridge` binary carry none of it.
//!
//! mock-vault and our servers run as separate processes, as in production: the bench
//! starts the `mock-vault` binary with a fixture it generates, and the `akv-bridge` binary
//! as `akv-bridge kms …` / `akv-bridge csi …` wired to it (both found next to this
//! executable unless given). It drives them over their real Unix sockets with N concurrent
//! clients, each on its own connection, and reads
//! - latencies and throughput from the clients,
//! - Key Vault calls from mock-vault's counters (`GET /stats` before and after each run),
//! - memory from `/proc/<pid>/status` (`VmRSS` sampled every 50 ms, `VmHWM`).
//!
//! Scenarios, as the issue lists them:
//! 1. KMS Status, Decrypt cache hit, Decrypt miss, Encrypt; each at each concurrency and
//!    injected Key Vault latency. Beside the plugin's Status and cache hits, at 0 ms, the
//!    same calls to the floor: a bare tonic server answering constants ([`floor`]).
//! 2. API-server cold start: a fresh plugin, distinct seeds each asked several times.
//! 3. Idle cost: Status and liveness probes for a time-compressed hour.
//! 4. CSI mount latency: 1, 10 and 50 objects, cold and warm.
//! 5. CSI at scale: many pods of one identity, two rotation windows.
//!
//! Layout: [`procs`] (processes, control API, `/proc`), [`kms`] and [`csi`] (the load and
//! the scenarios), [`floor`] (the bare tonic server), [`hot_path`] (the KMS hot-path
//! targets judged from the matrix's rows; pure), [`report`] (figures, targets, table,
//! JSON; pure). Tests never assert on these figures.

#![forbid(unsafe_code)]

pub mod csi;
pub mod floor;
pub mod hot_path;
pub mod kms;
pub mod procs;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;

use self::procs::{Control, Measure, Mock, RssSampler, WorkDir};
use self::report::{DesignFigure, Machine, Reference, Report, Row, Target};

/// Why the bench could not run. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The set-up is wrong (a missing binary, a bad flag).
    #[error("{0}")]
    Setup(String),
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A child process failed.
    #[error("{name}: {reason}")]
    Process {
        /// Which process.
        name: String,
        /// What happened, with the end of its log.
        reason: String,
    },
    /// mock-vault's control API failed.
    #[error("mock-vault control API: {0}")]
    Control(String),
    /// A server refused a request the bench needs to prepare a scenario.
    #[error("{what}: {status}")]
    Rpc {
        /// The request.
        what: String,
        /// The answer.
        status: String,
    },
    /// Interrupted by a signal.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// KMS Status, Decrypt hit and miss, Encrypt at each concurrency and latency.
    Kms,
    /// API-server cold start: distinct seeds plus duplicates on a fresh plugin.
    ColdStart,
    /// Idle cost: Status and liveness probes, time-compressed.
    Idle,
    /// CSI mount latency: 1, 10 and 50 objects, cold and warm.
    Mount,
    /// CSI at scale: many pods, two rotation windows.
    Scale,
}

/// Flags of `akv-bridge-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "akv-bridge-bench",
    version = akv_bridge::VERSION,
    about = "Figures for the KMS plugin and the CSI provider against mock-vault"
)]
pub struct BenchArgs {
    /// The mock-vault binary (default: `mock-vault` next to this executable).
    #[arg(long)]
    pub mock_vault_bin: Option<PathBuf>,
    /// The akv-bridge binary (default: `akv-bridge` next to this executable).
    #[arg(long)]
    pub akv_bridge_bin: Option<PathBuf>,
    /// A short run (1 s per KMS run, fewer samples) to check the set-up, not for figures.
    #[arg(long)]
    pub quick: bool,
    /// Run only these scenarios (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Load time of each KMS run (default 5s; 1s with --quick).
    #[arg(long, value_parser = akv_bridge::cli::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent clients of the KMS runs, each on its own connection.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 64])]
    pub concurrency: Vec<usize>,
    /// Latencies (ms) mock-vault adds to every vault request in the KMS runs.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u64, 20])]
    pub latency_ms: Vec<u64>,
    /// Latency (ms) of the cold-start, idle and CSI scenarios (a cloud-like round trip).
    #[arg(long, default_value_t = 20)]
    pub cloud_latency_ms: u64,
    /// Ciphertexts encrypted up front for the Decrypt-miss runs, each decrypted once
    /// (default 30000; 4000 with --quick).
    #[arg(long)]
    pub miss_pool: Option<usize>,
    /// Cold start: distinct seeds.
    #[arg(long, default_value_t = 1000)]
    pub cold_seeds: usize,
    /// Cold start: how many times each seed is asked for (1 = no duplicates).
    #[arg(long, default_value_t = 3)]
    pub cold_copies: usize,
    /// Cold start: concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub cold_concurrency: usize,
    /// Idle: real seconds to run (default 10; 3 with --quick).
    #[arg(long)]
    pub idle_seconds: Option<u64>,
    /// Idle: time compression (Status every 20 s / N, key poll every 1 m / N).
    #[arg(long, default_value_t = 1000)]
    pub idle_compression: u32,
    /// CSI mount latency: cold samples per SecretProviderClass size (default 8; 2 with
    /// --quick).
    #[arg(long)]
    pub mount_rounds: Option<usize>,
    /// CSI mount latency: warm remounts after each cold mount.
    #[arg(long, default_value_t = 4)]
    pub warm_mounts: usize,
    /// CSI scale: pods (distinct pod names and tokens, one identity).
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// CSI scale: objects in the class every pod mounts.
    #[arg(long, default_value_t = 10)]
    pub scale_objects: usize,
    /// CSI scale: concurrent mounts.
    #[arg(long, default_value_t = 64)]
    pub scale_concurrency: usize,
    /// CSI scale: the provider's `--latest-cache-ttl` (the rotation window).
    #[arg(long, default_value = "5s", value_parser = akv_bridge::cli::parse_duration)]
    pub window: Duration,
    /// `RUST_LOG` for the servers (default: theirs, info with one audit line per KMS call
    /// and per mount), e.g. `warn` to see what the audit lines cost.
    #[arg(long)]
    pub server_log: Option<String>,
    /// Write the JSON document (pretty) to this file as well.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Keep the work directory (servers' logs) instead of removing it.
    #[arg(long)]
    pub keep_dir: bool,
    /// Internal: instead of benchmarking, serve the floor (a bare tonic KMS v2 server
    /// answering constants) on this Unix socket until SIGTERM. The bench starts itself
    /// with it, as a separate process like the plugin.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub serve_floor: Option<PathBuf>,
}

/// Sizes of the SecretProviderClasses of the mount-latency scenario.
pub const MOUNT_SIZES: [usize; 3] = [1, 10, 50];
/// The plugin's `--keyvault-concurrency` (its default), used in the cold-start target.
pub const KMS_KEYVAULT_CONCURRENCY: usize = 32;
/// The vault of the fixture.
pub const VAULT: &str = "bench-kv";
/// The KMS plugin's service principal.
pub const KMS_CLIENT_ID: &str = "00000000-0000-4000-8000-0000000b0001";
const KMS_CLIENT_SECRET: &str = "bench-only-kms-secret";
/// The pods' workload identity (federated with [`APP_SUBJECT`]).
pub const APP_CLIENT_ID: &str = "00000000-0000-4000-8000-0000000b0002";
/// The pods' service account.
pub const APP_SUBJECT: &str = "system:serviceaccount:bench:app";

/// The run's settings, flags resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The flags.
    pub args: BenchArgs,
    /// KMS run length.
    pub duration: Duration,
    /// Decrypt-miss pool.
    pub miss_pool: usize,
    /// Idle real seconds.
    pub idle_seconds: u64,
    /// Cold mount samples per size.
    pub mount_rounds: usize,
}

impl Plan {
    fn new(args: BenchArgs) -> Result<Self, BenchError> {
        let q = args.quick;
        let plan = Self {
            duration: args
                .duration
                .unwrap_or(Duration::from_secs(if q { 1 } else { 5 })),
            miss_pool: args.miss_pool.unwrap_or(if q { 4000 } else { 30_000 }),
            idle_seconds: args.idle_seconds.unwrap_or(if q { 3 } else { 10 }),
            mount_rounds: args.mount_rounds.unwrap_or(if q { 2 } else { 8 }),
            args,
        };
        let a = &plan.args;
        let problems = [
            (
                a.concurrency.contains(&0),
                "--concurrency values must be at least 1",
            ),
            (
                a.cold_seeds == 0 || a.cold_copies == 0,
                "--cold-seeds and --cold-copies must be at least 1",
            ),
            (
                a.cold_concurrency == 0 || a.scale_concurrency == 0,
                "concurrencies must be at least 1",
            ),
            (
                a.idle_compression == 0,
                "--idle-compression must be at least 1",
            ),
            (plan.idle_seconds == 0, "--idle-seconds must be at least 1"),
            (plan.mount_rounds == 0, "--mount-rounds must be at least 1"),
            (
                a.pods == 0 || a.scale_objects == 0,
                "--pods and --scale-objects must be at least 1",
            ),
            (plan.duration.is_zero(), "--duration must be positive"),
            (a.window.is_zero(), "--window must be positive"),
            (
                plan.miss_pool < a.cold_seeds,
                "--miss-pool must be at least --cold-seeds (the cold start reuses the pool)",
            ),
        ];
        if let Some((_, why)) = problems.iter().find(|(bad, _)| *bad) {
            return Err(BenchError::Setup((*why).to_owned()));
        }
        Ok(plan)
    }

    /// Whether scenario `s` is to run.
    pub fn runs(&self, s: Scenario) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&s)
    }

    fn settings(&self) -> serde_json::Value {
        let a = &self.args;
        json!({
            "quick": a.quick,
            "kms_run_seconds": self.duration.as_secs_f64(),
            "kms_concurrency": a.concurrency,
            "kms_latency_ms": a.latency_ms,
            "cloud_latency_ms": a.cloud_latency_ms,
            "kms_key": "RSA 2048, RSA-OAEP-256",
            "kms_floor": "bare tonic KMS v2 server answering constants, its own process, in the 0 ms rounds",
            "kms_keyvault_concurrency": KMS_KEYVAULT_CONCURRENCY,
            "miss_pool": self.miss_pool,
            "cold_start": {"distinct_seeds": a.cold_seeds, "copies_each": a.cold_copies, "concurrency": a.cold_concurrency},
            "idle": {"real_seconds": self.idle_seconds, "compression": a.idle_compression,
                     "status_every_ms": 20_000.0 / f64::from(a.idle_compression),
                     "liveness_every_ms": 10_000.0 / f64::from(a.idle_compression),
                     "key_poll_interval_ms": 60_000.0 / f64::from(a.idle_compression),
                     "kv_latency_ms": a.cloud_latency_ms / u64::from(a.idle_compression),
                     "simulated_hours": self.idle_seconds as f64 * f64::from(a.idle_compression) / 3600.0},
            "mount": {"sizes": MOUNT_SIZES, "cold_samples_per_size": self.mount_rounds, "warm_mounts_per_cold": a.warm_mounts},
            "scale": {"pods": a.pods, "objects": a.scale_objects, "concurrency": a.scale_concurrency,
                      "latest_cache_ttl_seconds": a.window.as_secs_f64()},
            "entra_latency": "none injected (the latency applies to vault requests only)",
            "server_rust_log": a.server_log,
        })
    }
}

/// The bench's state: the work directory and mock-vault (dropped in this order: the mock
/// is killed before its directory is removed), and the figures so far.
#[derive(Debug)]
pub struct Env {
    /// mock-vault.
    pub mock: Mock,
    /// The `akv-bridge` binary the servers run from.
    pub akv_bridge: PathBuf,
    /// The work directory.
    pub dir: WorkDir,
    /// The settings.
    pub plan: Plan,
    /// `azure.json` of the KMS plugin.
    pub azure_json: PathBuf,
    /// Rows so far.
    pub rows: Vec<Row>,
    /// Targets judged so far.
    pub targets: Vec<Target>,
    /// Ratios for reference so far.
    pub references: Vec<Reference>,
    /// Design comparisons so far.
    pub design: Vec<DesignFigure>,
    /// Largest `VmHWM` of a KMS plugin process, KiB.
    pub kms_hwm_kib: u64,
    /// Largest `VmHWM` of a CSI provider process, KiB.
    pub csi_hwm_kib: u64,
}

impl Env {
    /// The control API.
    pub fn control(&self) -> &Control {
        &self.mock.control
    }

    /// Runs `work` while counting Key Vault requests, sampling `pid`'s memory and
    /// measuring its CPU time and mock-vault's.
    pub async fn measured<T>(
        &self,
        pid: u32,
        work: impl std::future::Future<Output = Result<T, BenchError>>,
    ) -> Result<(T, Measure), BenchError> {
        let before = self.control().counters().await?;
        let mock_pid = self.mock.pid();
        let me = std::process::id();
        let cpu = || {
            (
                procs::proc_cpu_ms(pid),
                procs::proc_cpu_ms(mock_pid),
                procs::proc_cpu_ms(me),
            )
        };
        let cpu_before = cpu();
        let sampler = RssSampler::start(pid);
        let result = work.await;
        let cpu_after = cpu();
        let rss_kib = sampler.finish().await;
        let out = result?;
        let after = self.control().counters().await?;
        let kv = after.since(&before);
        // The request log holds the last 10,000 requests: read this run's (at most a
        // background poll more), or its last 10,000 when it made more.
        let logged = (kv.kv_requests + kv.entra).min(10_000);
        let kv_side_ms = if kv.kv_authenticated > 0 {
            let mut l = self.control().kv_side_latencies(logged).await?;
            let skip = l
                .len()
                .saturating_sub(usize::try_from(kv.kv_authenticated).unwrap_or(usize::MAX));
            l.drain(..skip);
            l
        } else {
            Vec::new()
        };
        let delta = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).max(0.0),
            _ => 0.0,
        };
        Ok((
            out,
            Measure {
                kv,
                rss_kib,
                server_cpu_ms: delta(cpu_after.0, cpu_before.0),
                mock_cpu_ms: delta(cpu_after.1, cpu_before.1),
                client_cpu_ms: delta(cpu_after.2, cpu_before.2),
                kv_side_ms,
            },
        ))
    }

    /// [`akv_bridge::cli::mock_vault_flags`] for the mock.
    fn mock_flags(&self) -> Vec<String> {
        let info = &self.mock.info;
        akv_bridge::cli::mock_vault_flags(info.address, &info.ca_pem_path, &info.authority_host)
    }

    /// Flags that wire `akv-bridge kms` to the mock.
    pub fn kms_flags(
        &self,
        socket: &std::path::Path,
        extra: &[String],
    ) -> Result<Vec<String>, BenchError> {
        let mut flags = vec![
            "kms".to_owned(),
            format!("--listen-addr=unix://{}", socket.display()),
            format!("--vault-url={}", self.mock.vault_url(VAULT)?),
        ];
        flags.extend(self.mock_flags());
        flags.extend([
            format!("--config-file-path={}", self.azure_json.display()),
            "--key-name=kek".to_owned(),
            "--healthz-port=0".to_owned(),
            "--healthz-bind-address=127.0.0.1".to_owned(),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            format!("--keyvault-concurrency={KMS_KEYVAULT_CONCURRENCY}"),
            "--shutdown-grace=2s".to_owned(),
        ]);
        flags.extend(extra.iter().cloned());
        Ok(flags)
    }

    /// Flags that wire `akv-bridge csi` to the mock.
    pub fn csi_flags(
        &self,
        socket: &std::path::Path,
        extra: &[String],
    ) -> Result<Vec<String>, BenchError> {
        let url = self.mock.vault_url(VAULT)?;
        // https://bench-kv.vault.localhost:PORT → https://{name}.vault.localhost:PORT
        let template = url.replacen(VAULT, "{name}", 1);
        let mut flags = vec![
            "csi".to_owned(),
            format!("--endpoint=unix://{}", socket.display()),
            format!("--vault-url-template={template}"),
        ];
        flags.extend(self.mock_flags());
        flags.extend([
            "--healthz-port=0".to_owned(),
            "--healthz-bind-address=127.0.0.1".to_owned(),
            "--prometheus-port=0".to_owned(),
            "--metrics-bind-address=127.0.0.1".to_owned(),
            "--shutdown-grace=2s".to_owned(),
        ]);
        flags.extend(extra.iter().cloned());
        Ok(flags)
    }
}

/// The generated fixture: one vault with the KMS key and the CSI secrets, the plugin's
/// service principal and the pods' federated workload identity.
pub fn fixture_yaml(plan: &Plan) -> String {
    let mut y = format!(
        "# Generated by `akv-bridge-bench`.\nvaults:\n  - name: {VAULT}\n    keys:\n      - {{name: kek, kty: RSA, size: 2048}}\n    secrets:\n"
    );
    for name in all_secret_names(plan) {
        // 64-byte values: the size of a typical password or API key.
        let value = format!(
            "{name}-{}",
            "v".repeat(64usize.saturating_sub(name.len() + 1))
        );
        y.push_str(&format!(
            "      - {{name: {name}, value: \"{value}\", content_type: text/plain}}\n"
        ));
    }
    y.push_str(&format!(
        "identities:
  - name: kms-plugin
    client_id: {KMS_CLIENT_ID}
    client_secret: {KMS_CLIENT_SECRET}
    permissions: {{{VAULT}: {{keys: [get, list, encrypt, decrypt]}}}}
  - name: app
    client_id: {APP_CLIENT_ID}
    federated: [{{subject: \"{APP_SUBJECT}\"}}]
    permissions: {{{VAULT}: {{secrets: [get, list]}}}}
"
    ));
    y
}

/// Every secret the CSI scenarios read: a warm-up secret, a fresh set per cold mount
/// sample and size, and the scale class.
fn all_secret_names(plan: &Plan) -> Vec<String> {
    let mut names = vec!["warmup".to_owned()];
    for size in MOUNT_SIZES {
        for round in 0..plan.mount_rounds {
            names.extend(csi::mount_objects(size, round));
        }
    }
    names.extend(csi::scale_objects(plan.args.scale_objects));
    names
}

/// `given`, or the binary `name` next to this executable.
fn sibling_bin(given: Option<&PathBuf>, name: &str, flag: &str) -> Result<PathBuf, BenchError> {
    let path = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| BenchError::io("find this executable".to_owned(), e))?
            .with_file_name(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::Setup(format!(
            "the {name} binary is not at {}: build it beside akv-bridge-bench with \
             `{BUILD}` (or give {flag})",
            path.display()
        )))
    }
}

/// How to build everything the bench runs, for figures.
const BUILD: &str =
    "cargo build --release --locked -p akv-bridge -p mock-vault -p akv-bridge-bench";

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        profile: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
    }
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the bench; prints progress on stderr, the table and the JSON document on stdout.
/// With `--serve-floor`, serves the floor instead (see [`floor`]).
#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    if let Some(socket) = &args.serve_floor {
        return floor::main(socket).await;
    }
    tokio::select! {
        r = run(args) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("akv-bridge-bench: {e}");
                ExitCode::FAILURE
            }
        },
        () = akv_bridge::server::process::shutdown_signal() => {
            // Dropping `run` kills the children and removes the work directory.
            eprintln!("akv-bridge-bench: {}", BenchError::Interrupted);
            ExitCode::from(130)
        }
    }
}

async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let plan = Plan::new(args)?;
    let bin = sibling_bin(
        plan.args.mock_vault_bin.as_ref(),
        "mock-vault",
        "--mock-vault-bin",
    )?;
    let akv_bridge = sibling_bin(
        plan.args.akv_bridge_bin.as_ref(),
        "akv-bridge",
        "--akv-bridge-bin",
    )?;
    let machine = machine();
    if machine.profile == "debug" {
        eprintln!("akv-bridge-bench: this is a debug build; for figures use `{BUILD}`");
    }
    let dir = WorkDir::create(plan.args.keep_dir)?;
    let fixture = dir.write_private("fixture.yaml", fixture_yaml(&plan).as_bytes())?;
    let started = Instant::now();
    let mock = Mock::start(&bin, &fixture, &dir).await?;
    eprintln!(
        "bench: mock-vault up at {} ({} ms)",
        mock.info.address,
        started.elapsed().as_millis()
    );
    let azure_json = dir.write_private(
        "azure.json",
        json!({
            "cloud": "AzurePublicCloud",
            "tenantId": mock.info.tenant_id,
            "aadClientId": KMS_CLIENT_ID,
            "aadClientSecret": KMS_CLIENT_SECRET,
        })
        .to_string()
        .as_bytes(),
    )?;
    let mut env = Env {
        mock,
        akv_bridge,
        dir,
        plan,
        azure_json,
        rows: Vec::new(),
        targets: Vec::new(),
        references: Vec::new(),
        design: Vec::new(),
        kms_hwm_kib: 0,
        csi_hwm_kib: 0,
    };

    let needs_pool = [Scenario::Kms, Scenario::ColdStart]
        .iter()
        .any(|s| env.plan.runs(*s));
    let pool = if needs_pool {
        Some(kms::prepare_pool(&mut env).await?)
    } else {
        None
    };
    if let Some(pool) = &pool {
        if env.plan.runs(Scenario::Kms) {
            kms::matrix(&mut env, pool).await?;
        }
        if env.plan.runs(Scenario::ColdStart) {
            kms::cold_start(&mut env, pool).await?;
        }
    }
    if env.plan.runs(Scenario::Idle) {
        kms::idle(&mut env).await?;
    }
    if env.plan.runs(Scenario::Mount) {
        csi::mount_latency(&mut env).await?;
    }
    if env.plan.runs(Scenario::Scale) {
        csi::scale(&mut env).await?;
    }
    if env.kms_hwm_kib > 0 {
        let mib = report::mib(env.kms_hwm_kib);
        let pass = mib < 30.0;
        let kms_rows = || env.rows.iter().filter(|r| r.group.starts_with("kms"));
        let least = kms_rows()
            .map(|r| r.server_rss_peak_mib)
            .fold(f64::INFINITY, f64::min);
        let most_i = env
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.group.starts_with("kms"))
            .max_by(|(_, a), (_, b)| a.server_rss_peak_mib.total_cmp(&b.server_rss_peak_mib))
            .map(|(i, _)| i);
        let most = most_i.and_then(|i| env.rows.get(i));
        let why = (!pass).then(|| {
            let at = most
                .map(|r| {
                    format!(
                        "; the most was sampled during \"{}\" ({} clients, {} ms): {:.1} MiB",
                        r.scenario, r.concurrency, r.kv_latency_ms, r.server_rss_peak_mib
                    )
                })
                .unwrap_or_default();
            format!(
                "the plugin's resident memory grows with concurrent connections (each \
                 HTTP/2 connection has its own buffers) and with the decrypt cache: the \
                 least sampled in a run was {least:.1} MiB{at}"
            )
        });
        env.targets.push(Target {
            id: "T6".into(),
            target: "KMS plugin RSS under 30 MiB under load".into(),
            figure: format!("peak VmHWM {mib:.1} MiB over every plugin process of the run (< 30)"),
            pass,
            why,
        });
        if let Some(row) = most_i.and_then(|i| env.rows.get_mut(i)) {
            row.targets.push("T6".into());
        }
    }

    let Env {
        mock,
        dir,
        plan,
        rows,
        targets,
        references,
        design,
        kms_hwm_kib,
        csi_hwm_kib,
        ..
    } = env;
    mock.stop().await;
    drop(dir);
    let report = Report {
        tool: "akv-bridge-bench".into(),
        version: akv_bridge::VERSION.into(),
        command: command_line(),
        machine,
        settings: plan.settings(),
        rows,
        targets,
        references,
        peak_rss_mib: json!({
            "kms_plugin": report::mib(kms_hwm_kib),
            "csi_provider": report::mib(csi_hwm_kib),
        }),
        design_comparison: design,
    };
    println!("\n{}", report.table());
    println!("Targets (issue 7):\n\n{}", report.targets_text());
    if !report.references.is_empty() {
        println!(
            "Against the floor (bare tonic), for reference:\n\n{}",
            report.references_text()
        );
    }
    println!(
        "Key Vault calls against the Go plugins' designs:\n\n{}",
        report.design_text()
    );
    println!(
        "Machine: {} CPUs ({}), {} build. mock-vault, the server and the clients share these CPUs.\n",
        report.machine.cpus, report.machine.cpu_model, report.machine.profile
    );
    let doc = serde_json::to_string(&report)
        .map_err(|e| BenchError::Setup(format!("cannot serialise the report: {e}")))?;
    if let Some(path) = &plan.args.json_out {
        let pretty = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Setup(format!("cannot serialise the report: {e}")))?;
        std::fs::write(path, pretty + "\n")
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        eprintln!("bench: JSON written to {}", path.display());
    }
    println!("{doc}");
    Ok(())
}

/// A channel to a server's socket, as both servers' clients use it.
async fn channel(socket: &std::path::Path) -> Result<tonic::transport::Channel, BenchError> {
    akv_bridge::socket::connect(
        &akv_bridge::socket::SocketAddress::Path(socket.to_owned()),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &[&str]) -> Result<Plan, BenchError> {
        let mut argv = vec!["akv-bridge-bench"];
        argv.extend_from_slice(extra);
        match BenchArgs::try_parse_from(argv) {
            Ok(a) => Plan::new(a),
            Err(e) => Err(BenchError::Setup(e.to_string())),
        }
    }

    #[test]
    fn defaults_are_the_issues_scenarios() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.args.concurrency, vec![1, 64]);
        assert_eq!(p.args.latency_ms, vec![0, 20]);
        assert_eq!(
            (p.args.cold_seeds, p.args.pods, p.args.scale_objects),
            (1000, 200, 10)
        );
        assert_eq!(p.duration, Duration::from_secs(5));
        let q = plan(&["--quick", "--only=kms,scale"]).unwrap();
        assert_eq!(q.duration, Duration::from_secs(1));
        assert!(q.runs(Scenario::Scale) && !q.runs(Scenario::Mount));
        assert!(plan(&["--concurrency=0"]).is_err());
        assert!(plan(&["--miss-pool=10"]).is_err());
    }

    #[test]
    fn the_floor_flag_is_hidden_and_takes_a_socket() {
        let p = plan(&["--serve-floor=/tmp/floor.sock"]).unwrap();
        assert_eq!(
            p.args.serve_floor.as_deref(),
            Some(std::path::Path::new("/tmp/floor.sock"))
        );
        assert_eq!(plan(&[]).unwrap().args.serve_floor, None);
        let help = <BenchArgs as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(!help.contains("serve-floor"), "{help}");
    }

    #[test]
    fn the_fixture_parses_and_holds_every_secret() {
        let p = plan(&["--quick"]).unwrap();
        let yaml = fixture_yaml(&p);
        let f = mock_vault::Fixture::parse(&yaml).unwrap();
        let names = all_secret_names(&p);
        assert!(names.len() >= 50);
        assert_eq!(f.vaults.len(), 1);
        assert!(yaml.contains(APP_SUBJECT));
    }
}
