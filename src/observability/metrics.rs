//! Prometheus metrics. One registry per process, passed down; names are prefixed by
//! component (`akv_bridge_kms_…`, `akv_bridge_csi_…`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::go_metrics::{GoCsiMetrics, GoKmsMetrics};
use crate::azure::keyvault::KvError;
use crate::cache::Outcome;

/// Every gRPC status code.
const GRPC_CODES: [tonic::Code; 17] = [
    tonic::Code::Ok,
    tonic::Code::Cancelled,
    tonic::Code::Unknown,
    tonic::Code::InvalidArgument,
    tonic::Code::DeadlineExceeded,
    tonic::Code::NotFound,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::ResourceExhausted,
    tonic::Code::FailedPrecondition,
    tonic::Code::Aborted,
    tonic::Code::OutOfRange,
    tonic::Code::Unimplemented,
    tonic::Code::Internal,
    tonic::Code::Unavailable,
    tonic::Code::DataLoss,
    tonic::Code::Unauthenticated,
];

/// Labels of an RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// gRPC method, e.g. `v2.Decrypt`.
    pub method: &'static str,
    /// gRPC status code name, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: &'static str,
}

/// Labels of a failed upstream operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `entra`, `token_proxy` or `key_vault`.
    pub upstream: &'static str,
    /// The failure class (`unauthenticated`, `unavailable`, `throttled`, ...).
    pub outcome: &'static str,
}

/// Labels naming a gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// gRPC method, e.g. `v2.Decrypt`.
    pub method: &'static str,
}

/// Labels naming a method or operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Method or operation name.
    pub operation: &'static str,
}

/// Labels of a Key Vault call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyVaultLabels {
    /// `encrypt`, `decrypt`, `get`, `list`, `get_secret`, ...
    pub operation: &'static str,
    /// `ok` or the failure class.
    pub outcome: &'static str,
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `miss` or `coalesced`.
    pub result: &'static str,
}

/// Labels of the current key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Key Vault key version.
    pub key_version: String,
    /// KMS key id.
    pub key_id: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Metrics shared by both servers: RPCs, Key Vault calls and cache lookups.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    rpc_total: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabels, Histogram>,
    keyvault_total: Family<KeyVaultLabels, Counter>,
    keyvault_seconds: Family<OperationLabels, Histogram>,
    upstream_failures: Family<UpstreamLabels, Counter>,
    cache_total: Family<CacheLabels, Counter>,
    /// Entries in the cache.
    pub cache_entries: Gauge,
    /// 1 when healthy, 0 otherwise.
    pub healthy: Gauge,
    /// The socket server's connections and in-flight budget.
    pub connections: ConnectionMetrics,
    /// The Go original's metrics, recorded beside ours.
    go: Option<GoCompat>,
}

/// The Go original whose metrics a server also exports (see [`super::go_metrics`]).
#[derive(Debug, Clone)]
pub enum GoCompat {
    /// Azure/kubernetes-kms's `kms_request`.
    Kms(GoKmsMetrics),
    /// provider-azure's `grpc_request` and `keyvault_request`.
    Csi(GoCsiMetrics),
}

impl ServerMetrics {
    /// Registers the families under `registry` (already prefixed by the caller).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            rpc_total: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
            keyvault_total: Family::default(),
            keyvault_seconds: Family::new_with_constructor(latency_histogram),
            upstream_failures: Family::default(),
            cache_total: Family::default(),
            cache_entries: Gauge::default(),
            healthy: Gauge::default(),
            connections: ConnectionMetrics::register(registry),
            go: None,
        };
        registry.register(
            "rpc_requests",
            "gRPC requests by method and status code",
            m.rpc_total.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC request latency by method",
            m.rpc_seconds.clone(),
        );
        registry.register(
            "keyvault_requests",
            "Key Vault operations by operation and outcome",
            m.keyvault_total.clone(),
        );
        registry.register(
            "keyvault_duration_seconds",
            "Key Vault operation latency (retries included)",
            m.keyvault_seconds.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed Key Vault operations by who failed (entra: the token; key_vault: the vault) and outcome",
            m.upstream_failures.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups: hit, miss, coalesced",
            m.cache_total.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries in the cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "healthy",
            "1 when the server reports healthy",
            m.healthy.clone(),
        );
        m
    }

    /// Creates at zero the series alerts and dashboards read: each of `methods` with every
    /// gRPC code, each Key Vault `operations` with every outcome, every failure by who
    /// failed, every cache result. Prometheus takes a series' first sample as its start, so
    /// without this the first failure after a start would be no increase, and an error
    /// ratio would be "no data" instead of 0.
    pub fn precreate(&self, methods: &[&'static str], operations: &[&'static str]) {
        for &method in methods {
            for code in GRPC_CODES {
                let _ = self.rpc_total.get_or_create(&RpcLabels {
                    method,
                    code: code_name(code),
                });
            }
        }
        for &operation in operations {
            for outcome in std::iter::once("ok").chain(KvError::LABELS) {
                let _ = self
                    .keyvault_total
                    .get_or_create(&KeyVaultLabels { operation, outcome });
            }
        }
        for upstream in ["entra", "key_vault"] {
            for outcome in KvError::LABELS {
                let _ = self
                    .upstream_failures
                    .get_or_create(&UpstreamLabels { upstream, outcome });
            }
        }
        for result in [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Coalesced,
            Outcome::Stale,
        ] {
            let _ = self.cache_total.get_or_create(&CacheLabels {
                result: result.label(),
            });
        }
        self.connections.precreate();
    }

    /// Records one RPC.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.rpc_total
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
        match &self.go {
            Some(GoCompat::Kms(go)) => go.rpc(method, code, elapsed),
            Some(GoCompat::Csi(go)) => go.rpc(method, code, elapsed),
            None => {}
        }
    }

    /// Also records the Go original's metrics (`go` registered at the registry's root).
    pub fn with_go(mut self, go: GoCompat) -> Self {
        self.go = Some(go);
        self
    }

    /// Records one Key Vault read of a CSI object: [`Self::keyvault`], and provider-azure's
    /// `keyvault_request` for `object_type` (`secret`, `key`, `cert`) and `object_name`.
    pub fn keyvault_object(
        &self,
        operation: &'static str,
        object_type: &'static str,
        object_name: &str,
        failure: Option<UpstreamLabels>,
        elapsed: Duration,
    ) {
        self.keyvault(operation, failure, elapsed);
        if let Some(GoCompat::Csi(go)) = &self.go {
            let error = failure.map_or("", |f| f.outcome);
            go.keyvault(object_type, object_name, error, elapsed);
        }
    }

    /// Records one Key Vault operation: its outcome (`ok`, or the failure's class) and, when
    /// it failed, who failed (`entra` or `key_vault`), so Entra's failures can be told from
    /// the vault's.
    pub fn keyvault(
        &self,
        operation: &'static str,
        failure: Option<UpstreamLabels>,
        elapsed: Duration,
    ) {
        let outcome = failure.map_or("ok", |f| f.outcome);
        self.keyvault_total
            .get_or_create(&KeyVaultLabels { operation, outcome })
            .inc();
        self.keyvault_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
        if let Some(failure) = failure {
            self.upstream_failures.get_or_create(&failure).inc();
        }
    }

    /// Records one cache lookup.
    pub fn cache(&self, result: &'static str) {
        self.cache_total
            .get_or_create(&CacheLabels { result })
            .inc();
    }
}

/// Labels naming why something ended or was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason, e.g. `idle`, `evicted_unused`, `budget`.
    pub reason: &'static str,
}

/// The socket server's connections and in-flight budget ([`crate::server`]).
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// Connections served now.
    pub open: Gauge,
    closed: Family<ReasonLabels, Counter>,
    refused_calls: Family<ReasonLabels, Counter>,
    budget_used: Family<PoolLabels, Gauge>,
    budget_limit: Family<PoolLabels, Gauge>,
}

/// Labels of a budget pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `calls` or `bytes`.
    pub pool: &'static str,
}

impl ConnectionMetrics {
    /// Registers the families under `registry` (already prefixed by the caller).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            open: Gauge::default(),
            closed: Family::default(),
            refused_calls: Family::default(),
            budget_used: Family::default(),
            budget_limit: Family::default(),
        };
        registry.register(
            "connections",
            "Connections served on the gRPC socket",
            m.open.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by why: client (it closed), idle, first_request_timeout, response_timeout, shutdown, refused (no room), and to make room or relieve the budget evicted_unused, evicted_unread, evicted_idle, evicted_stalled",
            m.closed.clone(),
        );
        registry.register(
            "calls_refused",
            "Calls refused by the socket server, by reason (budget, goaway, message_timeout, call_timeout)",
            m.refused_calls.clone(),
        );
        registry.register(
            "in_flight_bytes",
            "Bytes of the in-flight budget in use, by pool (calls: allowances and headers; bytes: request bytes beyond the allowances, and responses)",
            m.budget_used.clone(),
        );
        registry.register(
            "in_flight_bytes_limit",
            "The in-flight budget, by pool",
            m.budget_limit.clone(),
        );
        m
    }

    /// Every close and refusal reason at zero (see [`ServerMetrics::precreate`]).
    fn precreate(&self) {
        for reason in [
            "client",
            "idle",
            "first_request_timeout",
            "response_timeout",
            "shutdown",
            "refused",
            "evicted_unused",
            "evicted_unread",
            "evicted_idle",
            "evicted_stalled",
        ] {
            let _ = self.closed.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["budget", "goaway", "message_timeout", "call_timeout"] {
            let _ = self.refused_calls.get_or_create(&ReasonLabels { reason });
        }
    }

    /// Counts a connection closed for `reason`.
    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Sets the pools' limits (calls, bytes).
    pub fn set_limits(&self, (calls, bytes): (usize, usize)) {
        Self::set(&self.budget_limit, calls, bytes);
    }

    /// Sets the pools' use (calls, bytes).
    pub fn set_used(&self, (calls, bytes): (usize, usize)) {
        Self::set(&self.budget_used, calls, bytes);
    }

    fn set(family: &Family<PoolLabels, Gauge>, calls: usize, bytes: usize) {
        for (pool, v) in [("calls", calls), ("bytes", bytes)] {
            family
                .get_or_create(&PoolLabels { pool })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Counts a call refused for `reason`.
    pub fn refused_call(&self, reason: &'static str) {
        self.refused_calls
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Labels of a mounted object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// `secret`, `key` or `cert`.
    pub kind: String,
    /// `ok`, `skipped` (optional and missing) or `not_found`.
    pub result: String,
}

/// Labels of a mount.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabels {
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of a failover read.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// `ok` (the failover vault answered) or `error` (it failed too).
    pub result: &'static str,
}

/// CSI-only metrics: mounts, objects, sizes.
#[derive(Debug, Clone)]
pub struct MountMetrics {
    mounts: Family<MountLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    objects: Family<ObjectLabels, Counter>,
    bytes: Histogram,
    /// Object keys ignored because they are not object fields. No label: the keys come
    /// from SecretProviderClasses, so a label would let their authors grow the series
    /// without bound.
    pub unknown_parameters: Counter,
}

impl MountMetrics {
    /// Registers the families.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            mounts: Family::default(),
            failovers: Family::default(),
            objects: Family::default(),
            // 1 KiB .. 4 MiB.
            bytes: Histogram::new(exponential_buckets(1024.0, 2.0, 13)),
            unknown_parameters: Counter::default(),
        };
        registry.register("mounts", "Mount requests by outcome", m.mounts.clone());
        registry.register(
            "failovers",
            "Objects read from their failover vault (failoverKeyvaultName) because their vault \
             was unreachable or throttling, by whether the failover vault answered",
            m.failovers.clone(),
        );
        registry.register(
            "mount_objects",
            "Objects of mounts by type and result (skipped: optional and missing)",
            m.objects.clone(),
        );
        registry.register(
            "mount_response_bytes",
            "Size of successful Mount responses",
            m.bytes.clone(),
        );
        registry.register(
            "unknown_parameters",
            "Keys of SecretProviderClass objects that are not object fields, ignored (see the \
             warning log for the key and object; --strict-parameters refuses them)",
            m.unknown_parameters.clone(),
        );
        m
    }

    /// Every mount outcome and object kind and result at zero (see
    /// [`ServerMetrics::precreate`]).
    pub fn precreate(&self) {
        for outcome in ["ok", "error"] {
            let _ = self.mounts.get_or_create(&MountLabels {
                outcome: outcome.to_owned(),
            });
        }
        for result in ["ok", "error"] {
            let _ = self.failovers.get_or_create(&FailoverLabels { result });
        }
        for kind in ["secret", "key", "cert"] {
            for result in ["ok", "skipped", "not_found"] {
                let _ = self.objects.get_or_create(&ObjectLabels {
                    kind: kind.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
    }

    /// Counts a read from a failover vault.
    pub fn failover(&self, ok: bool) {
        self.failovers
            .get_or_create(&FailoverLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Counts a mount.
    pub fn mount(&self, outcome: &str) {
        self.mounts
            .get_or_create(&MountLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts an object.
    pub fn object(&self, kind: &str, result: &str) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a response's size.
    pub fn observe_files(&self, bytes: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.bytes.observe(bytes as f64);
    }
}

/// KMS-only metrics: the current key, rotations seen, Key Vault reachability.
#[derive(Debug, Clone, Default)]
pub struct KeyMetrics {
    key_info: Family<KeyLabels, Gauge>,
    /// Key rotations observed.
    pub rotations: Counter,
    keyvault_reachable: Gauge,
    newest_version_usable: Gauge,
    /// Seeds wrapped locally with the key version's public key (no Key Vault call).
    pub local_wraps: Counter,
    /// Audit lines dropped because the audit writer fell behind.
    pub audit_dropped: Counter,
}

impl KeyMetrics {
    /// Registers the families.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "key_info",
            "The current key version (value 1) and its key id",
            m.key_info.clone(),
        );
        registry.register(
            "key_rotations",
            "Key rotations observed",
            m.rotations.clone(),
        );
        registry.register(
            "keyvault_reachable",
            "1 when Key Vault answered the last calls (0 from the first failure until 30 s without one)",
            m.keyvault_reachable.clone(),
        );
        registry.register(
            "newest_version_usable",
            "1 when the key's newest version is the one wrapping new seeds; 0 when it was skipped as unusable or none is known",
            m.newest_version_usable.clone(),
        );
        registry.register(
            "local_wraps",
            "Seeds wrapped locally with the key version's public key (no Key Vault call)",
            m.local_wraps.clone(),
        );
        registry.register(
            "audit_lines_dropped",
            "Audit lines dropped because the audit writer fell behind",
            m.audit_dropped.clone(),
        );
        m
    }

    /// Sets the reachability and newest-version gauges.
    pub fn set_state(&self, keyvault_reachable: bool, newest_version_usable: bool) {
        self.keyvault_reachable.set(i64::from(keyvault_reachable));
        self.newest_version_usable
            .set(i64::from(newest_version_usable));
    }

    /// Marks `version` as current.
    pub fn set_current(&self, key_version: &str, key_id: &str) {
        self.key_info.clear();
        self.key_info
            .get_or_create(&KeyLabels {
                key_version: key_version.to_owned(),
                key_id: key_id.to_owned(),
            })
            .set(1);
    }
}

/// The gRPC code's canonical upper-case name.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Encodes a registry in the Prometheus text format.
pub fn encode(registry: &Arc<Registry>) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn alerted_series_exist_at_zero_before_the_first_event() {
        let mut registry = Registry::default();
        let m = ServerMetrics::register(registry.sub_registry_with_prefix("akv_bridge_kms"));
        let before = text(&registry);
        assert!(!before.contains("code=\"UNAVAILABLE\""), "{before}");
        m.precreate(&["v2.Decrypt"], &["decrypt"]);
        let after = text(&registry);
        for line in [
            r#"akv_bridge_kms_rpc_requests_total{method="v2.Decrypt",code="UNAVAILABLE"} 0"#,
            r#"akv_bridge_kms_rpc_requests_total{method="v2.Decrypt",code="OK"} 0"#,
            r#"akv_bridge_kms_keyvault_requests_total{operation="decrypt",outcome="throttled"} 0"#,
            r#"akv_bridge_kms_upstream_failures_total{upstream="entra",outcome="unauthenticated"} 0"#,
            r#"akv_bridge_kms_cache_lookups_total{result="miss"} 0"#,
            r#"akv_bridge_kms_connections_closed_total{reason="evicted_stalled"} 0"#,
            r#"akv_bridge_kms_calls_refused_total{reason="budget"} 0"#,
        ] {
            assert!(after.contains(line), "no {line} in:\n{after}");
        }
        // 17 codes for the one method: and nothing for a method not named.
        assert_eq!(
            after.matches("akv_bridge_kms_rpc_requests_total{").count(),
            17
        );
        // Counting still adds to the pre-created series.
        m.rpc("v2.Decrypt", tonic::Code::Ok, Duration::from_millis(1));
        assert!(
            text(&registry)
                .contains(r#"akv_bridge_kms_rpc_requests_total{method="v2.Decrypt",code="OK"} 1"#)
        );

        let mut registry = Registry::default();
        let mounts = MountMetrics::register(registry.sub_registry_with_prefix("akv_bridge_csi"));
        mounts.precreate();
        let csi = text(&registry);
        for line in [
            r#"akv_bridge_csi_mounts_total{outcome="error"} 0"#,
            r#"akv_bridge_csi_mount_objects_total{kind="cert",result="not_found"} 0"#,
        ] {
            assert!(csi.contains(line), "no {line} in:\n{csi}");
        }
    }
}
