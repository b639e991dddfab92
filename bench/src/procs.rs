//! The processes under test and what the bench reads from them: a private work directory,
//! mock-vault and our servers as child processes (killed when dropped), mock-vault's
//! control API (counters, latency, service-account tokens) and `/proc` memory figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use super::BenchError;

/// A private (0700) temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `$TMPDIR/akv-bridge-bench-<pid>-<random>`.
    pub fn create(keep: bool) -> Result<Self, BenchError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let path = base.join(format!(
                "akv-bridge-bench-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(BenchError::io(format!("create {}", path.display()), e)),
            }
        }
        Err(BenchError::Setup(format!(
            "no free temporary directory under {}: {}",
            base.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file readable by its owner only.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, BenchError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        f.write_all(bytes)
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("akv-bridge-bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process, killed if still running when dropped. Its stderr goes to a log file
/// in the work directory, shown (the last lines) when it fails.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

/// Environment variables that would change how a child behaves (a workload identity, a
/// flag, a log filter from the caller's shell): removed so every run is the same.
fn scrub_env(cmd: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && (k.starts_with("AKV_BRIDGE_")
                || k.starts_with("AZURE_")
                || k.starts_with("MOCK_VAULT_")
                || k == "RUST_LOG"
                || k == "IDENTITY_ENDPOINT"
                || k == "IDENTITY_HEADER")
        {
            cmd.env_remove(k);
        }
    }
}

impl Proc {
    /// Starts `program args…`; stdout is piped when `stdout` is set.
    fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: PathBuf,
        stdout: bool,
    ) -> Result<(Self, Option<tokio::process::ChildStdout>), BenchError> {
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        scrub_env(&mut cmd);
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().map_err(|e| BenchError::Process {
            name: name.to_owned(),
            reason: format!("cannot start {}: {e}", program.display()),
        })?;
        let pid = child.id().ok_or_else(|| BenchError::Process {
            name: name.to_owned(),
            reason: "exited at once".into(),
        })?;
        let out = child.stdout.take();
        Ok((
            Self {
                name: name.to_owned(),
                child,
                pid,
                log,
            },
            out,
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines of its log.
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let skip = all.len().saturating_sub(lines);
        all.iter()
            .skip(skip)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An error naming the process, with the end of its log.
    fn failure(&self, reason: impl std::fmt::Display) -> BenchError {
        BenchError::Process {
            name: self.name.clone(),
            reason: format!(
                "{reason}; last lines of {}:\n{}",
                self.log.display(),
                self.log_tail(15)
            ),
        }
    }

    /// Fails if the process has exited.
    fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failure(format!("exited ({status})"))),
            Err(e) => Err(self.failure(format!("cannot be waited for: {e}"))),
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// One vault of mock-vault's start-up line.
#[derive(Debug, Clone, Deserialize)]
pub struct MockVaultInfo {
    /// Vault URL.
    pub url: String,
}

/// What the bench uses of mock-vault's start-up line.
#[derive(Debug, Clone, Deserialize)]
pub struct MockInfo {
    /// HTTPS address of vaults and Entra.
    pub address: SocketAddr,
    /// Vaults by name.
    pub vaults: BTreeMap<String, MockVaultInfo>,
    /// Entra authority.
    pub authority_host: String,
    /// Default tenant.
    pub tenant_id: String,
    /// CA (PEM file) to trust.
    pub ca_pem_path: PathBuf,
    /// Control API base URL.
    pub control_url: String,
}

/// mock-vault running as a child process.
#[derive(Debug)]
pub struct Mock {
    proc: Proc,
    /// Its start-up information.
    pub info: MockInfo,
    /// Its control API.
    pub control: Control,
    _stdout: tokio::process::ChildStdout,
}

impl Mock {
    /// Starts `bin --listen 127.0.0.1:0 --fixture <fixture>` and reads its start-up line.
    pub async fn start(bin: &Path, fixture: &Path, dir: &WorkDir) -> Result<Self, BenchError> {
        let args = vec![
            "--listen=127.0.0.1:0".to_owned(),
            "--control-listen=127.0.0.1:0".to_owned(),
            format!("--fixture={}", fixture.display()),
            format!("--ca-out={}", dir.path().join("mock-ca.pem").display()),
        ];
        let (mut proc, stdout) = Proc::spawn(
            "mock-vault",
            bin,
            &args,
            &[],
            dir.path().join("mock-vault.log"),
            true,
        )?;
        let stdout = stdout.ok_or_else(|| proc.failure("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
            Err(_) => return Err(proc.failure("no start-up line within 120 s")),
            Ok(Err(e)) => return Err(proc.failure(format!("reading its start-up line: {e}"))),
            Ok(Ok(None)) => {
                let _ = proc.check_running();
                return Err(proc.failure("exited before its start-up line"));
            }
            Ok(Ok(Some(line))) => line,
        };
        let info: MockInfo = serde_json::from_str(&line)
            .map_err(|e| proc.failure(format!("unexpected start-up line ({e})")))?;
        let control = Control::new(&info.control_url)?;
        Ok(Self {
            proc,
            info,
            control,
            _stdout: lines.into_inner().into_inner(),
        })
    }

    /// The vault the fixture defines.
    pub fn vault_url(&self, name: &str) -> Result<&str, BenchError> {
        self.info
            .vaults
            .get(name)
            .map(|v| v.url.as_str())
            .ok_or_else(|| BenchError::Setup(format!("mock-vault serves no vault {name}")))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Fails if mock-vault has stopped.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        self.proc.check_running()
    }

    /// Stops it.
    pub async fn stop(self) {
        self.proc.stop(Duration::from_secs(5)).await;
    }
}

/// One of our servers (`akv-bridge kms` or `akv-bridge csi`) as a child process.
#[derive(Debug)]
pub struct Server {
    proc: Proc,
    /// Its socket.
    pub socket: PathBuf,
}

impl Server {
    /// Starts `program` with `args` (and `RUST_LOG=log_filter` if given) and waits until
    /// `socket` accepts connections.
    pub async fn start(
        program: &Path,
        name: &str,
        args: &[String],
        log_filter: Option<&str>,
        socket: &Path,
        log: PathBuf,
    ) -> Result<Self, BenchError> {
        let envs: Vec<(&str, &str)> = log_filter.map(|f| ("RUST_LOG", f)).into_iter().collect();
        let (mut proc, _) = Proc::spawn(name, program, args, &envs, log, false)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            proc.check_running()?;
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(proc.failure("its socket did not answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            proc,
            socket: socket.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Fails if the server has stopped.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        self.proc.check_running()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:").unwrap_or(0)
    }

    /// SIGTERM and wait (its drain grace is short), SIGKILL past 10 s.
    pub async fn stop(self) {
        self.proc.stop(Duration::from_secs(10)).await;
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system) a process has used, in milliseconds, from `/proc/<pid>/stat`
/// (in USER_HZ ticks, 100 per second on Linux).
pub fn proc_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 * 10.0)
}

/// What a run cost besides its latencies.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Key Vault and Entra requests.
    pub kv: CounterDelta,
    /// Largest `VmRSS` of the server seen, KiB.
    pub rss_kib: u64,
    /// CPU time the server used, ms.
    pub server_cpu_ms: f64,
    /// CPU time mock-vault used, ms.
    pub mock_cpu_ms: f64,
    /// CPU time the bench's clients (this process) used, ms.
    pub client_cpu_ms: f64,
    /// How long mock-vault took to answer each authenticated vault request (its request
    /// log, whole milliseconds, injected latency included).
    pub kv_side_ms: Vec<u64>,
}

impl Measure {
    /// Adds another run's costs (memory: the larger).
    pub fn add(&mut self, other: &Measure) {
        self.kv.add(&other.kv);
        self.rss_kib = self.rss_kib.max(other.rss_kib);
        self.server_cpu_ms += other.server_cpu_ms;
        self.mock_cpu_ms += other.mock_cpu_ms;
        self.client_cpu_ms += other.client_cpu_ms;
        self.kv_side_ms.extend_from_slice(&other.kv_side_ms);
    }
}

/// Samples a process's `VmRSS` every 50 ms and keeps the maximum, until stopped.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            loop {
                if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { peak, stop, task }
    }

    /// Stops and returns the largest `VmRSS` seen, in KiB.
    pub async fn finish(self) -> u64 {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// mock-vault's loopback control API.
#[derive(Debug, Clone)]
pub struct Control {
    base: String,
    http: reqwest::Client,
}

/// Request counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Requests by operation (every status, challenge round trips included).
    pub by_operation: BTreeMap<String, u64>,
    /// Requests by operation that carried an identity (not the unauthenticated challenge).
    pub authenticated: BTreeMap<String, u64>,
}

/// What happened between two [`Counters`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CounterDelta {
    /// Requests to vaults (every operation but Entra's), challenge round trips included.
    pub kv_requests: u64,
    /// Of those, the authenticated ones (the real reads and crypto calls).
    pub kv_authenticated: u64,
    /// Requests to Entra (`entra.*`): token exchanges.
    pub entra: u64,
    /// Requests by operation.
    pub by_operation: BTreeMap<String, u64>,
    /// Authenticated requests by operation.
    pub authenticated_by_operation: BTreeMap<String, u64>,
}

impl CounterDelta {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &CounterDelta) {
        self.kv_requests += other.kv_requests;
        self.kv_authenticated += other.kv_authenticated;
        self.entra += other.entra;
        for (op, n) in &other.by_operation {
            *self.by_operation.entry(op.clone()).or_default() += n;
        }
        for (op, n) in &other.authenticated_by_operation {
            *self
                .authenticated_by_operation
                .entry(op.clone())
                .or_default() += n;
        }
    }

    /// Authenticated requests of one operation (`keys.decrypt`, `secrets.get`).
    pub fn authenticated(&self, op: &str) -> u64 {
        self.authenticated_by_operation
            .get(op)
            .copied()
            .unwrap_or(0)
    }
}

impl Counters {
    /// `self − before`.
    pub fn since(&self, before: &Counters) -> CounterDelta {
        let mut d = CounterDelta::default();
        for (op, n) in &self.by_operation {
            let n = n.saturating_sub(before.by_operation.get(op).copied().unwrap_or(0));
            if n == 0 {
                continue;
            }
            if op.starts_with("entra.") {
                d.entra += n;
            } else {
                d.kv_requests += n;
            }
            d.by_operation.insert(op.clone(), n);
        }
        for (op, n) in &self.authenticated {
            let n = n.saturating_sub(before.authenticated.get(op).copied().unwrap_or(0));
            if n == 0 {
                continue;
            }
            if !op.starts_with("entra.") {
                d.kv_authenticated += n;
            }
            d.authenticated_by_operation.insert(op.clone(), n);
        }
        d
    }
}

impl Control {
    fn new(base: &str) -> Result<Self, BenchError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BenchError::Control(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BenchError> {
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| BenchError::Control(format!("{what}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| BenchError::Control(format!("{what}: {e}")))?;
        if !status.is_success() {
            return Err(BenchError::Control(format!(
                "{what}: {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| BenchError::Control(format!("{what}: not JSON: {e}")))
    }

    /// The request counters now.
    pub async fn counters(&self) -> Result<Counters, BenchError> {
        let v = self.call(reqwest::Method::GET, "/stats", None).await?;
        let mut c = Counters::default();
        if let Some(ops) = v.get("by_operation").and_then(Value::as_object) {
            for (op, n) in ops {
                c.by_operation.insert(op.clone(), n.as_u64().unwrap_or(0));
            }
        }
        // `counters` is a list of [{vault, operation, identity, status}, n].
        for entry in v
            .get("counters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = entry.get(0);
            let n = entry.get(1).and_then(Value::as_u64).unwrap_or(0);
            let op = key.and_then(|k| k.get("operation")).and_then(Value::as_str);
            let identity = key.and_then(|k| k.get("identity")).and_then(Value::as_str);
            if let (Some(op), Some(identity)) = (op, identity)
                && identity != "-"
            {
                *c.authenticated.entry(op.to_owned()).or_default() += n;
            }
        }
        Ok(c)
    }

    /// Latencies (ms) of the last `limit` logged requests that reached a vault
    /// authenticated.
    pub async fn kv_side_latencies(&self, limit: u64) -> Result<Vec<u64>, BenchError> {
        let v = self
            .call(reqwest::Method::GET, &format!("/log?limit={limit}"), None)
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e.get("vault").is_some_and(|v| !v.is_null())
                    && e.get("identity").is_some_and(|i| !i.is_null())
            })
            .filter_map(|e| e.get("latency_ms").and_then(Value::as_u64))
            .collect())
    }

    /// Every vault request answers `ms` later (0: no added latency). Entra is not delayed.
    pub async fn set_latency(&self, ms: u64) -> Result<(), BenchError> {
        self.call(reqwest::Method::DELETE, "/faults", None).await?;
        if ms > 0 {
            self.call(
                reqwest::Method::POST,
                "/faults",
                Some(json!({"kind": "latency", "fixed_ms": ms})),
            )
            .await?;
        }
        Ok(())
    }

    /// A service-account token (audience `api://AzureADTokenExchange`) for `subject`.
    pub async fn sa_token(&self, subject: &str) -> Result<String, BenchError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/sa-tokens",
                Some(json!({"subject": subject, "ttl_secs": 3 * 3600})),
            )
            .await?;
        v.get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| BenchError::Control("POST /sa-tokens: no token in the answer".into()))
    }
}

/// A free loopback TCP port (bound, read, released: good enough for a local bench).
pub fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("find a free port".to_owned(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("find a free port".to_owned(), e))
}
