//! CSI scenarios: mount latency by SecretProviderClass size (cold and warm), and many pods
//! of one identity mounting one class across two rotation windows. Mounts are sent as the
//! Secrets Store CSI Driver sends them: workload identity, each pod with its own token.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use super::procs::{Measure, Server};
use super::report::{DesignFigure, Latencies, Row, Target, group_thousands};
use super::{APP_CLIENT_ID, APP_SUBJECT, BenchError, Env, MOUNT_SIZES, VAULT};
use akv_bridge::proto::csi_v1alpha1 as pb;

type Client = pb::csi_driver_provider_client::CsiDriverProviderClient<Channel>;

/// The secrets of cold sample `round` of the `size`-object class.
pub fn mount_objects(size: usize, round: usize) -> Vec<String> {
    (0..size)
        .map(|i| format!("m{size}-r{round}-o{i}"))
        .collect()
}

/// The secrets of the scale scenario's class.
pub fn scale_objects(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("scale-o{i}")).collect()
}

/// The `objects` parameter of a SecretProviderClass naming these secrets.
fn objects_yaml(names: &[String]) -> String {
    let mut out = String::from("array:\n");
    for n in names {
        out.push_str(&format!(
            "  - |\n    objectName: {n}\n    objectType: secret\n"
        ));
    }
    out
}

/// One pod's Mount, as the driver builds it.
#[derive(Debug, Clone)]
struct PodMount {
    request: pb::MountRequest,
    files: usize,
}

fn pod_mount(tenant: &str, pod: &str, index: usize, token: &str, objects: &[String]) -> PodMount {
    let uid = format!("00000000-0000-4000-8000-{index:012x}");
    let attributes = json!({
        "keyvaultName": VAULT,
        "tenantId": tenant,
        "clientID": APP_CLIENT_ID,
        "objects": objects_yaml(objects),
        "secretProviderClass": "bench",
        "csi.storage.k8s.io/pod.name": pod,
        "csi.storage.k8s.io/pod.namespace": "bench",
        "csi.storage.k8s.io/pod.uid": uid,
        "csi.storage.k8s.io/serviceAccount.name": "app",
        "csi.storage.k8s.io/ephemeral": "false",
        "csi.storage.k8s.io/serviceAccount.tokens": json!({
            "api://AzureADTokenExchange": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}
        }).to_string(),
    });
    PodMount {
        request: pb::MountRequest {
            attributes: attributes.to_string(),
            secrets: "{}".into(),
            target_path: format!(
                "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/secrets/mount"
            ),
            permission: "420".into(),
            current_object_version: vec![],
        },
        files: objects.len(),
    }
}

async fn connect(socket: &Path) -> Result<Client, BenchError> {
    let channel = super::channel(socket).await?;
    Ok(Client::new(channel).max_decoding_message_size(8 * 1024 * 1024))
}

/// Sends one Mount; its latency in µs, or what went wrong.
async fn mount(client: &mut Client, m: &PodMount) -> Result<u64, String> {
    let started = Instant::now();
    let answer = client.mount(m.request.clone()).await;
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match answer {
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        Ok(r) => {
            let r = r.into_inner();
            if let Some(e) = r.error.filter(|e| !e.code.is_empty()) {
                Err(format!("Mount error {}", e.code))
            } else if r.files.len() != m.files {
                Err(format!("{} files instead of {}", r.files.len(), m.files))
            } else {
                Ok(us)
            }
        }
    }
}

async fn start_provider(env: &Env, name: &str, extra: &[String]) -> Result<Server, BenchError> {
    let socket = env.dir.path().join(name).join("azure.sock");
    let flags = env.csi_flags(&socket, extra)?;
    Server::start(
        &env.akv_bridge,
        name,
        &flags,
        env.plan.args.server_log.as_deref(),
        &socket,
        env.dir.path().join(format!("{name}.log")),
    )
    .await
}

async fn stop_provider(env: &mut Env, server: Server) {
    env.csi_hwm_kib = env.csi_hwm_kib.max(server.hwm_kib());
    server.stop().await;
}

/// Samples of one kind of mount.
#[derive(Debug, Default)]
struct Samples {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    cost: Measure,
    seconds: f64,
}

impl Samples {
    fn push(&mut self, result: Result<u64, String>, m: &Measure) {
        match result {
            Ok(us) => {
                self.latencies_us.push(us);
                self.seconds += us as f64 / 1e6;
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        self.cost.add(m);
    }

    fn row(self, group: &str, scenario: String, latency: u64) -> Row {
        let latencies = Latencies::new(self.latencies_us);
        Row::new(
            group,
            scenario,
            1,
            latency,
            &latencies,
            self.errors,
            self.first_error,
            self.seconds,
            self.cost,
        )
    }
}

/// Cold and warm mounts of one SecretProviderClass size.
#[derive(Debug)]
struct Series {
    size: usize,
    cold: Row,
    warm: Row,
}

/// Mounts of each size in `sizes` on a fresh provider started with `extra` flags. Cold: a
/// new pod (new token) and objects this provider never read; warm: the same pod mounting
/// again. The provider is warmed up first so that its one-off costs (Key Vault's auth
/// challenge, connections) are not counted as "cold".
async fn mount_series(
    env: &mut Env,
    name: &str,
    extra: &[String],
    sizes: &[usize],
    label: &str,
) -> Result<Vec<Series>, BenchError> {
    let latency = env.plan.args.cloud_latency_ms;
    let rounds = env.plan.mount_rounds;
    let warm_mounts = env.plan.args.warm_mounts;
    let mut server = start_provider(env, name, extra).await?;
    env.control().set_latency(latency).await?;
    let tenant = env.mock.info.tenant_id.clone();
    let mut client = connect(&server.socket).await?;
    let token = env.control().sa_token(APP_SUBJECT).await?;
    let warmup = pod_mount(&tenant, "warmup", 0, &token, &["warmup".to_owned()]);
    mount(&mut client, &warmup)
        .await
        .map_err(|status| BenchError::Rpc {
            what: "Mount (warm-up)".into(),
            status,
        })?;
    let mut out = Vec::new();
    for &size in sizes {
        eprintln!("bench: CSI mount, {size} objects, {latency} ms{label}");
        let mut cold = Samples::default();
        let mut warm = Samples::default();
        for round in 0..rounds {
            let token = env.control().sa_token(APP_SUBJECT).await?;
            let m = pod_mount(
                &tenant,
                &format!("app-{size}-{round}"),
                size * 1000 + round,
                &token,
                &mount_objects(size, round),
            );
            let (r, cost) = env
                .measured(server.pid(), async { Ok(mount(&mut client, &m).await) })
                .await?;
            cold.push(r, &cost);
            for _ in 0..warm_mounts {
                let (r, cost) = env
                    .measured(server.pid(), async { Ok(mount(&mut client, &m).await) })
                    .await?;
                warm.push(r, &cost);
            }
        }
        server.check_running()?;
        let mut cold = cold.row(
            "csi-mount",
            format!("CSI Mount, {size} object(s), cold{label}"),
            latency,
        );
        cold.note = format!(
            "{:.1} Key Vault reads and {:.1} Entra calls per mount",
            per_op(cold.kv.kv_authenticated, cold.ops),
            per_op(cold.kv.entra, cold.ops)
        );
        let mut warm = warm.row(
            "csi-mount",
            format!("CSI Mount, {size} object(s), warm{label}"),
            latency,
        );
        warm.note = format!(
            "{:.1} Key Vault reads per mount",
            per_op(warm.kv.kv_authenticated, warm.ops)
        );
        out.push(Series { size, cold, warm });
    }
    env.control().set_latency(0).await?;
    stop_provider(env, server).await;
    Ok(out)
}

/// Flags of the second mount series: the defaults before issue 17 (16 objects at a time).
const NARROW: [&str; 2] = ["--mount-concurrency=16", "--keyvault-concurrency=16"];

/// Scenario 4: mounts of 1, 10 and 50 objects, cold and warm, with the provider's
/// defaults (64 objects at a time); then 1 and 50 objects cold on a provider reading 16
/// at a time (the earlier defaults), to show what the defaults save.
pub async fn mount_latency(env: &mut Env) -> Result<(), BenchError> {
    let latency = env.plan.args.cloud_latency_ms;
    let series = mount_series(env, "csi", &[], &MOUNT_SIZES, "").await?;
    let narrow_flags: Vec<String> = NARROW.iter().map(|s| (*s).to_owned()).collect();
    let label = format!(" ({})", NARROW.join(" "));
    let narrow = mount_series(env, "csi-narrow", &narrow_flags, &[1, 50], &label).await?;

    let p50 = |v: &[Series], size: usize| {
        v.iter()
            .find(|s| s.size == size)
            .map(|s| (s.cold.p50_ms, s.warm.p50_ms))
    };
    let (one, fifty) = (p50(&series, 1), p50(&series, 50));
    let narrow_ratio = match (p50(&narrow, 1), p50(&narrow, 50)) {
        (Some((one, _)), Some((fifty, _))) => Some(ratio(fifty, one)),
        _ => None,
    };
    let mut per_mount_reads = Vec::new();
    for s in &series {
        per_mount_reads.push((
            s.size,
            s.cold.kv.kv_authenticated,
            s.cold.ops,
            s.warm.kv.kv_authenticated,
            s.warm.ops,
        ));
    }
    for s in series {
        let judged = s.size == 1 || s.size == 50;
        let (mut cold, warm) = (s.cold, s.warm);
        if judged {
            cold.targets = vec!["T4".into()];
        }
        env.rows.extend([cold, warm]);
    }
    env.rows.extend(narrow.into_iter().map(|s| s.cold));
    if let (Some((one_cold, one_warm)), Some((fifty_cold, fifty_warm))) = (one, fifty) {
        let r = ratio(fifty_cold, one_cold);
        let pass = r <= 2.0;
        env.targets.push(Target {
            id: "T4".into(),
            target: "a cold 50-object mount within 2× of a 1-object mount".into(),
            figure: format!(
                "cold p50 {fifty_cold:.1} ms vs {one_cold:.1} ms = {r:.2}×; warm p50 {fifty_warm:.2} ms vs {one_warm:.2} ms = {:.2}×{}",
                ratio(fifty_warm, one_warm),
                narrow_ratio
                    .map(|w| format!("; with {} (the earlier defaults): cold {w:.2}×", NARROW.join(" ")))
                    .unwrap_or_default()
            ),
            pass,
            why: (!pass).then(|| {
                format!(
                    "the 50 reads did not go out together: check --mount-concurrency and \
                     --keyvault-concurrency (default 64) and the {latency} ms latency"
                )
            }),
        });
    }
    if let Some((_, cold_reads, cold_ops, warm_reads, warm_ops)) =
        per_mount_reads.iter().find(|(s, ..)| *s == 50)
    {
        env.design.push(DesignFigure {
            workload: "CSI mount of 50 objects".into(),
            akv_bridge_measured: format!(
                "{:.0} reads cold, {:.0} warm (per mount)",
                per_op(*cold_reads, *cold_ops),
                per_op(*warm_reads, *warm_ops)
            ),
            go_design: "50 reads every mount".into(),
        });
    }
    Ok(())
}

fn per_op(n: u64, ops: u64) -> f64 {
    if ops == 0 { 0.0 } else { n as f64 / ops as f64 }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::INFINITY }
}

/// Mounts `mounts` from `concurrency` clients (each its own connection).
async fn drive_mounts(
    socket: &Path,
    concurrency: usize,
    mounts: Arc<Vec<PodMount>>,
) -> Result<Samples, BenchError> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(connect(socket).await?);
    }
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let mounts = Arc::clone(&mounts);
        let cursor = Arc::clone(&cursor);
        tasks.spawn(async move {
            let mut results = Vec::new();
            while let Some(m) = mounts.get(cursor.fetch_add(1, Ordering::Relaxed)) {
                results.push(mount(&mut client, m).await);
            }
            results
        });
    }
    let mut s = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        let results =
            joined.map_err(|e| BenchError::Setup(format!("a client task failed: {e}")))?;
        for r in results {
            match r {
                Ok(us) => s.latencies_us.push(us),
                Err(e) => {
                    s.errors += 1;
                    s.first_error.get_or_insert(e);
                }
            }
        }
    }
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

/// Scenario 5: `pods` pods of one identity, each with its own token, mount the same class
/// on a fresh provider; after `--latest-cache-ttl` has passed, they all mount again (the
/// driver's rotation poll).
pub async fn scale(env: &mut Env) -> Result<(), BenchError> {
    let a = env.plan.args.clone();
    let latency = a.cloud_latency_ms;
    let window = a.window;
    let server = start_provider(
        env,
        "csi-scale",
        &[format!("--latest-cache-ttl={}ms", window.as_millis())],
    )
    .await?;
    env.control().set_latency(latency).await?;
    let tenant = env.mock.info.tenant_id.clone();
    let objects = scale_objects(a.scale_objects);
    let mut mounts = Vec::with_capacity(a.pods);
    for i in 0..a.pods {
        let token = env.control().sa_token(APP_SUBJECT).await?;
        mounts.push(pod_mount(&tenant, &format!("app-{i}"), i, &token, &objects));
    }
    let mounts = Arc::new(mounts);
    let go_reads = (a.pods * a.scale_objects) as u64;
    let mut windows = Vec::new();
    let mut first_started = None;
    for w in 1..=2u32 {
        if let Some(t0) = first_started {
            // Past the window opened by the first reads.
            let wake = t0 + window + Duration::from_secs(1);
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
        eprintln!(
            "bench: CSI scale, {} pods × {} objects, window {w}",
            a.pods, a.scale_objects
        );
        first_started.get_or_insert_with(Instant::now);
        let (s, cost) = env
            .measured(
                server.pid(),
                drive_mounts(&server.socket, a.scale_concurrency, Arc::clone(&mounts)),
            )
            .await?;
        let mut samples = s;
        samples.cost = cost;
        let mut row = samples.row(
            "csi-scale",
            format!(
                "CSI {} pods × {} objects, window {w}",
                a.pods, a.scale_objects
            ),
            latency,
        );
        row.concurrency = a.scale_concurrency;
        let reads = row.kv.kv_authenticated;
        row.note = format!(
            "{} Key Vault reads ({} requests with challenges), {} Entra calls; Go design {}",
            group_thousands(reads),
            group_thousands(row.kv.kv_requests),
            group_thousands(row.kv.entra),
            group_thousands(go_reads)
        );
        row.targets = vec!["T5".into()];
        windows.push((w, reads, row.p99_ms, row.errors, row.first_error.clone()));
        env.rows.push(row);
    }
    env.control().set_latency(0).await?;
    stop_provider(env, server).await;

    let max_reads = windows.iter().map(|(_, r, ..)| *r).max().unwrap_or(0);
    let errors: u64 = windows.iter().map(|(_, _, _, e, _)| *e).sum();
    let pass = max_reads <= a.scale_objects as u64 && errors == 0;
    env.targets.push(Target {
        id: "T5".into(),
        target: "scale: at most one Key Vault read per object per window".into(),
        figure: windows
            .iter()
            .map(|(w, reads, p99, ..)| {
                format!(
                    "window {w}: {reads} reads for {} objects, p99 mount {p99:.0} ms",
                    a.scale_objects
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        pass,
        why: (!pass).then(|| {
            if errors > 0 {
                format!(
                    "{errors} mounts failed: {}",
                    windows
                        .iter()
                        .find_map(|(.., e)| e.clone())
                        .unwrap_or_default()
                )
            } else {
                "concurrent first reads of an object were not all coalesced".into()
            }
        }),
    });
    env.design.push(DesignFigure {
        workload: format!(
            "CSI: {} pods × {} objects, per rotation window",
            a.pods, a.scale_objects
        ),
        akv_bridge_measured: windows
            .iter()
            .map(|(w, reads, ..)| format!("window {w}: {reads} reads"))
            .collect::<Vec<_>>()
            .join(", "),
        go_design: format!(
            "{} reads (one per object per pod per mount/rotation)",
            group_thousands(go_reads)
        ),
    });
    Ok(())
}
