//! The Go originals' metrics, exported beside ours so that existing dashboards and alerts
//! keep working after the image swap.
//!
//! - Azure/kubernetes-kms (`docs/metrics.md`): one histogram `kms_request{operation,status,
//!   error_message}`. `operation` is `encrypt`/`decrypt` for the plugin's operations and
//!   `grpc_<method>` (lower case: `grpc_encrypt`, `grpc_decrypt`, `grpc_status`,
//!   `grpc_version`) for every gRPC call; `status` is `success` or `error`. Buckets: the Go
//!   exporter's, 11 from 0.1 s to 2 s, growing geometrically. The OpenTelemetry exporter's
//!   `otel_scope_name="keyvaultkms"`, `otel_scope_version=""` are kept.
//! - provider-azure (`website/content/en/configurations/metrics.md`): histograms
//!   `grpc_request{grpc_method,grpc_code,grpc_message}` (full method, e.g.
//!   `/v1alpha1.CSIDriverProvider/Mount`; Go's code names, e.g. `OK`, `Unavailable`) and
//!   `keyvault_request{object_type,object_name,error}`, each with `os_type`, `provider=azure`
//!   and `service_name`; buckets 0.1 … 30 s.
//!
//! Two deliberate differences, for bounded cardinality and no leaks: the Go plugins put the
//! whole error text in `error_message` / `grpc_message` / `error`; these carry a short fixed
//! class instead (the gRPC code name, or the Key Vault failure class such as `throttled`).
//! And `object_name` stops taking new names after [`MAX_OBJECT_NAMES`] (later ones are
//! counted as `_other`): a SecretProviderClass author must not be able to grow the
//! provider's memory without bound. The Go exporter's `telemetry_sdk_*` labels (the Go
//! SDK's version) are not reproduced.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

/// Distinct `object_name` values `keyvault_request` takes before counting the rest as
/// `_other`.
pub const MAX_OBJECT_NAMES: usize = 1000;

type Labels = Vec<(&'static str, &'static str)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type ObjectHistograms = Family<Vec<(&'static str, String)>, Histogram, fn() -> Histogram>;

/// Azure/kubernetes-kms's buckets: Prometheus's `ExponentialBucketsRange(0.1, 2, 11)`, the
/// values Go computes (its `docs/metrics.md` prints them). The text encoder may print the
/// 17th digit of an `le` differently from Go's; the boundaries are the same numbers.
const KMS_BUCKETS: [f64; 11] = [
    0.1,
    0.13492828476735633,
    0.18205642030260802,
    0.24564560522315804,
    0.3314454017339986,
    0.4472135954999578,
    0.6034176336545162,
    0.8141810630738084,
    1.0985605433061172,
    1.4822688982138947,
    1.9999999999999991,
];

fn kms_histogram() -> Histogram {
    Histogram::new(KMS_BUCKETS)
}

/// provider-azure's buckets.
fn csi_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 15.0, 30.0,
    ])
}

/// Go's `codes.Code.String()`.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Azure/kubernetes-kms's `kms_request`.
#[derive(Debug, Clone)]
pub struct GoKmsMetrics {
    requests: Histograms,
}

impl GoKmsMetrics {
    /// Registers `kms_request` in `registry`, which must be the root (no prefix): the name
    /// is the Go plugin's.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::new_with_constructor(kms_histogram),
        };
        registry.register(
            "kms_request",
            "Distribution of how long it took for an operation",
            m.requests.clone(),
        );
        m
    }

    fn record(&self, operation: &'static str, code: Code, elapsed: Duration) {
        let mut labels: Labels = vec![
            ("operation", operation),
            ("otel_scope_name", "keyvaultkms"),
            ("otel_scope_version", ""),
        ];
        if code == Code::Ok {
            labels.push(("status", "success"));
        } else {
            labels.push(("status", "error"));
            labels.push(("error_message", go_code_name(code)));
        }
        self.requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// One gRPC call, `method` as our metrics name it (`v2.Decrypt`, `v1beta1.Version`).
    /// Encrypt and Decrypt are also the plugin's `encrypt`/`decrypt` operations.
    pub fn rpc(&self, method: &'static str, code: Code, elapsed: Duration) {
        let name = method.rsplit('.').next().unwrap_or(method);
        let (grpc, operation) = match name {
            "Encrypt" => ("grpc_encrypt", Some("encrypt")),
            "Decrypt" => ("grpc_decrypt", Some("decrypt")),
            "Status" => ("grpc_status", None),
            "Version" => ("grpc_version", None),
            _ => ("grpc_unknown", None),
        };
        self.record(grpc, code, elapsed);
        if let Some(operation) = operation {
            self.record(operation, code, elapsed);
        }
    }
}

/// provider-azure's `grpc_request` and `keyvault_request`.
#[derive(Debug, Clone)]
pub struct GoCsiMetrics {
    grpc: Histograms,
    keyvault: ObjectHistograms,
    names: Arc<Mutex<HashSet<String>>>,
}

/// The labels every provider-azure metric carries.
const CSI_COMMON: [(&str, &str); 3] = [
    ("os_type", "linux"),
    ("provider", "azure"),
    ("service_name", "csi-secrets-store-provider-azure"),
];

impl GoCsiMetrics {
    /// Registers `grpc_request` and `keyvault_request` in `registry`, which must be the
    /// root (no prefix): the names are the Go provider's.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            grpc: Family::new_with_constructor(csi_histogram),
            keyvault: Family::new_with_constructor(csi_histogram),
            names: Arc::default(),
        };
        registry.register(
            "grpc_request",
            "Distribution of how long it took for the gRPC requests",
            m.grpc.clone(),
        );
        registry.register(
            "keyvault_request",
            "Distribution of how long it took to get from keyvault",
            m.keyvault.clone(),
        );
        m
    }

    /// One gRPC call, `method` as our metrics name it (`Mount`, `Version`).
    pub fn rpc(&self, method: &'static str, code: Code, elapsed: Duration) {
        let grpc_method = match method {
            "Mount" => "/v1alpha1.CSIDriverProvider/Mount",
            "Version" => "/v1alpha1.CSIDriverProvider/Version",
            _ => "unknown",
        };
        let message = if code == Code::Ok {
            ""
        } else {
            crate::observability::metrics::code_name(code)
        };
        let mut labels: Labels = vec![
            ("grpc_code", go_code_name(code)),
            ("grpc_message", message),
            ("grpc_method", grpc_method),
        ];
        labels.extend(CSI_COMMON);
        self.grpc
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// One read of an object from Key Vault: `object_type` as the Go provider names it
    /// (`secret`, `key`, `cert`), `error` empty on success or the failure class.
    pub fn keyvault(
        &self,
        object_type: &'static str,
        object_name: &str,
        error: &'static str,
        elapsed: Duration,
    ) {
        let name = self.bounded_name(object_name);
        let mut labels: Vec<(&'static str, String)> = vec![
            ("error", error.to_owned()),
            ("object_name", name),
            ("object_type", object_type.to_owned()),
        ];
        labels.extend(CSI_COMMON.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.keyvault
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    fn bounded_name(&self, name: &str) -> String {
        let Ok(mut names) = self.names.lock() else {
            return "_other".to_owned();
        };
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < MAX_OBJECT_NAMES {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        "_other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::encode;

    #[test]
    fn kms_request_reads_as_the_go_plugin_writes_it() {
        let mut registry = Registry::default();
        let m = GoKmsMetrics::register(&mut registry);
        m.rpc("v2.Decrypt", Code::Ok, Duration::from_millis(50));
        m.rpc("v2.Status", Code::Ok, Duration::from_millis(1));
        m.rpc(
            "v1beta1.Encrypt",
            Code::Unavailable,
            Duration::from_millis(300),
        );
        let text = encode(&Arc::new(registry));
        for want in [
            "# TYPE kms_request histogram",
            r#"kms_request_count{operation="grpc_decrypt",otel_scope_name="keyvaultkms",otel_scope_version="",status="success"} 1"#,
            r#"kms_request_count{operation="decrypt",otel_scope_name="keyvaultkms",otel_scope_version="",status="success"} 1"#,
            r#"kms_request_count{operation="grpc_status",otel_scope_name="keyvaultkms",otel_scope_version="",status="success"} 1"#,
            r#"kms_request_count{operation="encrypt",otel_scope_name="keyvaultkms",otel_scope_version="",status="error",error_message="Unavailable"} 1"#,
            r#"kms_request_bucket{le="0.1",operation="grpc_status""#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // No `operation="status"`: the Go plugin records only Encrypt and Decrypt twice.
        assert!(!text.contains(r#"operation="status""#), "{text}");
        assert_eq!(text.matches("kms_request_count{").count(), 5, "{text}");
        // 11 boundaries and +Inf per series.
        assert_eq!(
            text.matches("kms_request_bucket{").count(),
            5 * (KMS_BUCKETS.len() + 1)
        );
    }

    #[test]
    fn provider_metrics_read_as_the_go_provider_writes_them() {
        let mut registry = Registry::default();
        let m = GoCsiMetrics::register(&mut registry);
        m.rpc("Mount", Code::Ok, Duration::from_millis(900));
        m.rpc("Mount", Code::ResourceExhausted, Duration::from_millis(20));
        m.keyvault("secret", "db-password", "", Duration::from_millis(120));
        let text = encode(&Arc::new(registry));
        for want in [
            r#"grpc_request_count{grpc_code="OK",grpc_message="",grpc_method="/v1alpha1.CSIDriverProvider/Mount",os_type="linux",provider="azure",service_name="csi-secrets-store-provider-azure"} 1"#,
            r#"grpc_code="ResourceExhausted",grpc_message="RESOURCE_EXHAUSTED""#,
            r#"keyvault_request_count{error="",object_name="db-password",object_type="secret",os_type="linux",provider="azure",service_name="csi-secrets-store-provider-azure"} 1"#,
            r#"grpc_request_bucket{le="30.0",grpc_code="OK""#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn object_names_stop_growing_at_the_bound() {
        let mut registry = Registry::default();
        let m = GoCsiMetrics::register(&mut registry);
        for i in 0..MAX_OBJECT_NAMES + 50 {
            m.keyvault("secret", &format!("s{i}"), "", Duration::ZERO);
        }
        m.keyvault("secret", "s0", "", Duration::ZERO);
        let text = encode(&Arc::new(registry));
        assert_eq!(
            text.matches("keyvault_request_count{").count(),
            MAX_OBJECT_NAMES + 1,
            "one series per remembered name plus _other"
        );
        assert!(text.contains(r#"object_name="_other""#));
        assert!(text.contains(r#"object_name="s0",object_type="secret",os_type="linux",provider="azure",service_name="csi-secrets-store-provider-azure"} 2"#));
    }
}
