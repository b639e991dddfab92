//! The probe's steps: each RPC as kube-apiserver sends it (under the call timeout, with
//! `grpc-timeout`), and the checks kube-apiserver applies to each answer.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::envelope::prefix;
use super::{
    EncryptedDekSourceType, EncryptedObject, INFO_SIZE, KEY_ID_MAX_SIZE, NONCE_SIZE, ProbeOptions,
    ProbeReport, ProbeStep, SEED_SIZE, TAG_SIZE, annotations_size, constant_time_eq,
    decode_etcd_value, encode_etcd_value, millis, new_uid, open_kdf, printable, seal_kdf,
    show_annotation_value, validate_annotations, validate_ciphertext, validate_encrypted_object,
    validate_key_id,
};
use crate::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use crate::proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use crate::socket::error_chain;

/// Longest plugin error message the report repeats.
const MESSAGE_SHOW_MAX: usize = 512;
/// How many leading bytes of the etcd value's protobuf the report shows in hex.
const HEX_PREVIEW: usize = 24;
/// The sample object sealed by the envelope check (kube-apiserver itself stores Secrets as
/// protobuf with the `k8s\0` magic; the envelope does not care what the bytes are).
pub(super) const SAMPLE_SECRET: &[u8] = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"akv-bridge-probe","namespace":"default"},"type":"Opaque","data":{"probe":"YWt2LWJyaWRnZQ=="}}"#;

pub(super) type Client = KeyManagementServiceClient<Channel>;

/// Runs one RPC under the timeout; returns its latency and the message or a description of
/// the failure.
pub(super) async fn call<T>(
    timeout: Duration,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (f64, Result<T, String>) {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, rpc).await;
    let latency = millis(start.elapsed());
    let result = match result {
        Err(_) => Err(format!(
            "no answer within {} (the call timeout; kube-apiserver gives up here too)",
            humantime::format_duration(timeout)
        )),
        Ok(Err(status)) => Err(describe_status(&status, timeout)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    };
    (latency, result)
}

/// A request carrying the timeout as `grpc-timeout`, as a Go client with a deadline sends.
pub(super) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn describe_status(status: &tonic::Status, timeout: Duration) -> String {
    let mut out = format!(
        "gRPC {:?}: {}",
        status.code(),
        printable(status.message(), MESSAGE_SHOW_MAX)
    );
    if let Some(source) = std::error::Error::source(status) {
        let _ = write!(
            out,
            " ({})",
            printable(&error_chain(source), MESSAGE_SHOW_MAX)
        );
    }
    if matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) {
        let _ = write!(
            out,
            " [call timeout {}]",
            humantime::format_duration(timeout)
        );
    }
    out
}

pub(super) async fn status_step(
    client: &mut Client,
    options: &ProbeOptions,
    report: &mut ProbeReport,
) -> Option<String> {
    let (latency, result) = call(
        options.timeout,
        client.status(request(StatusRequest {}, options.timeout)),
    )
    .await;
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            report.push(ProbeStep::new("status", latency, String::new(), vec![e]));
            return None;
        }
    };
    let problems = check_status(&status.healthz, &status.version, &status.key_id);
    let detail = format!(
        "version={} healthz={} key_id={}",
        printable(&status.version, 64),
        printable(&status.healthz, 256),
        printable(&status.key_id, KEY_ID_MAX_SIZE)
    );
    report.version = Some(status.version);
    report.key_id = Some(status.key_id.clone());
    report.push(ProbeStep::new("status", latency, detail, problems));
    validate_key_id(&status.key_id).ok().map(|()| status.key_id)
}

/// The checks kube-apiserver applies to a Status response.
pub(super) fn check_status(healthz: &str, version: &str, key_id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if healthz != "ok" {
        problems.push(format!(
            "healthz is {:?}, not \"ok\": kube-apiserver marks the plugin unhealthy",
            printable(healthz, 256)
        ));
    }
    if version != "v2" && version != "v2beta1" {
        problems.push(format!(
            "version is {:?}; kube-apiserver expects \"v2\" (or \"v2beta1\")",
            printable(version, 64)
        ));
    }
    if let Err(e) = validate_key_id(key_id) {
        problems.push(format!("Status key_id {e}"));
    }
    problems
}

pub(super) async fn encrypt_step(
    client: &mut Client,
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    status_key_id: Option<&str>,
) -> (ProbeStep, Option<EncryptResponse>) {
    let message = EncryptRequest {
        plaintext: seed.to_vec(),
        uid: new_uid(),
    };
    let (latency, result) = call(
        options.timeout,
        client.encrypt(request(message, options.timeout)),
    )
    .await;
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            return (
                ProbeStep::new("encrypt", latency, String::new(), vec![e]),
                None,
            );
        }
    };
    let problems = check_encrypt_response(&response, status_key_id);
    let mut detail = format!(
        "wrapped a {SEED_SIZE}-byte seed: ciphertext {} bytes, key_id={}",
        response.ciphertext.len(),
        printable(&response.key_id, KEY_ID_MAX_SIZE)
    );
    match status_key_id {
        Some(id) if id == response.key_id => detail.push_str(" (matches Status)"),
        Some(_) => {}
        None => detail.push_str(" (not compared: no valid Status key_id)"),
    }
    let _ = write!(
        detail,
        "\nannotations: {} ({} bytes of keys+values)",
        response.annotations.len(),
        annotations_size(&response.annotations)
    );
    let mut keys: Vec<&String> = response.annotations.keys().collect();
    keys.sort();
    for key in keys {
        let value = response
            .annotations
            .get(key)
            .map(|v| show_annotation_value(v))
            .unwrap_or_default();
        let _ = write!(detail, "\n  {} = {value}", printable(key, 256));
    }
    let step = ProbeStep::new("encrypt", latency, detail, problems);
    let response = (!response.ciphertext.is_empty()).then_some(response);
    (step, response)
}

/// The checks kube-apiserver applies to an Encrypt response (and to the `EncryptedObject`
/// it builds from it).
fn check_encrypt_response(response: &EncryptResponse, status_key_id: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = validate_ciphertext(&response.ciphertext) {
        problems.push(e);
    }
    match validate_key_id(&response.key_id) {
        Err(e) => problems.push(format!("Encrypt key_id {e}")),
        Ok(()) => {
            if let Some(status_id) = status_key_id
                && status_id != response.key_id
            {
                problems.push(format!(
                    "key_id mismatch: Encrypt returned {:?} but Status said {:?}; \
                     kube-apiserver throws the new seed away and marks the plugin unhealthy",
                    printable(&response.key_id, KEY_ID_MAX_SIZE),
                    printable(status_id, KEY_ID_MAX_SIZE)
                ));
            }
        }
    }
    problems.extend(validate_annotations(&response.annotations));
    problems
}

pub(super) async fn decrypt_step(
    client: &mut Client,
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    encrypted: &EncryptResponse,
) -> ProbeStep {
    let message = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: new_uid(),
        key_id: encrypted.key_id.clone(),
        annotations: encrypted.annotations.clone(),
    };
    let (latency, result) = call(
        options.timeout,
        client.decrypt(request(message, options.timeout)),
    )
    .await;
    match result {
        Err(e) => ProbeStep::new("decrypt", latency, String::new(), vec![e]),
        Ok(response) => {
            let plaintext = Zeroizing::new(response.plaintext);
            if constant_time_eq(&plaintext, seed.as_slice()) {
                ProbeStep::new(
                    "decrypt",
                    latency,
                    format!("unwrapped {SEED_SIZE} bytes, equal to the seed"),
                    Vec::new(),
                )
            } else {
                ProbeStep::new(
                    "decrypt",
                    latency,
                    format!("unwrapped {} bytes", plaintext.len()),
                    vec!["the plaintext differs from the seed that was encrypted".to_owned()],
                )
            }
        }
    }
}

pub(super) fn envelope_write_step(
    options: &ProbeOptions,
    seed: &Zeroizing<[u8; SEED_SIZE]>,
    encrypted: &EncryptResponse,
) -> (ProbeStep, Option<Vec<u8>>) {
    let start = Instant::now();
    let sealed = match seal_kdf(
        seed.as_slice(),
        SAMPLE_SECRET,
        options.storage_key.as_bytes(),
    ) {
        Ok(sealed) => sealed,
        Err(e) => {
            let step = ProbeStep::new(
                "envelope-write",
                millis(start.elapsed()),
                String::new(),
                vec![e.to_string()],
            );
            return (step, None);
        }
    };
    let sealed_len = sealed.len();
    let object = EncryptedObject {
        encrypted_data: sealed,
        key_id: encrypted.key_id.clone(),
        encrypted_dek_source: encrypted.ciphertext.clone(),
        annotations: encrypted.annotations.clone(),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    let problems = validate_encrypted_object(&object);
    let value = encode_etcd_value(&options.provider_name, &object);
    let proto_len = value
        .len()
        .saturating_sub(prefix(&options.provider_name).len());
    let preview: Vec<u8> = value
        .iter()
        .skip(prefix(&options.provider_name).len())
        .take(HEX_PREVIEW)
        .copied()
        .collect();
    let detail = format!(
        "etcd value: {} + {proto_len}-byte EncryptedObject (protobuf {}…)\n\
         encryptedData {sealed_len} bytes = info {INFO_SIZE} + nonce {NONCE_SIZE} + sealed {} + tag {TAG_SIZE}\n\
         encryptedDEKSourceType=HKDF_SHA256_XNONCE_AES_GCM_SEED, sample {} bytes, AAD {:?}",
        prefix(&options.provider_name),
        hex::encode(preview),
        SAMPLE_SECRET.len(),
        SAMPLE_SECRET.len(),
        options.storage_key
    );
    let problems: Vec<String> = problems
        .into_iter()
        .map(|p| format!("kube-apiserver would refuse to write: {p}"))
        .collect();
    let ok = problems.is_empty();
    let step = ProbeStep::new("envelope-write", millis(start.elapsed()), detail, problems);
    (step, ok.then_some(value))
}

pub(super) async fn envelope_read_step(
    client: &mut Client,
    options: &ProbeOptions,
    value: &[u8],
    status_key_id: Option<&str>,
) -> ProbeStep {
    let start = Instant::now();
    let fail = |detail: String, problem: String| {
        ProbeStep::new(
            "envelope-read",
            millis(start.elapsed()),
            detail,
            vec![problem],
        )
    };
    let object = match decode_etcd_value(&options.provider_name, value) {
        Ok(object) => object,
        Err(e) => return fail(String::new(), e.to_string()),
    };
    let problems = validate_encrypted_object(&object);
    if !problems.is_empty() {
        return fail(String::new(), problems.join("; "));
    }
    let message = DecryptRequest {
        ciphertext: object.encrypted_dek_source.clone(),
        uid: new_uid(),
        key_id: object.key_id.clone(),
        annotations: object.annotations.clone(),
    };
    let (rpc_latency, result) = call(
        options.timeout,
        client.decrypt(request(message, options.timeout)),
    )
    .await;
    let seed = match result {
        Ok(response) => Zeroizing::new(response.plaintext),
        Err(e) => return fail(String::new(), format!("Decrypt of the stored seed: {e}")),
    };
    let mut detail =
        format!("decoded the etcd value; Decrypt of the stored seed took {rpc_latency:.1} ms");
    if status_key_id != Some(object.key_id.as_str()) {
        detail.push_str("\nkey_id differs from Status: kube-apiserver would count it stale");
    }
    match open_kdf(
        &seed,
        &object.encrypted_data,
        options.storage_key.as_bytes(),
    ) {
        Err(e) => fail(detail, e.to_string()),
        Ok(plaintext) if plaintext.as_slice() == SAMPLE_SECRET => {
            let _ = write!(
                detail,
                "\nopened {} bytes: equal to the sample Secret",
                plaintext.len()
            );
            ProbeStep::new("envelope-read", millis(start.elapsed()), detail, Vec::new())
        }
        Ok(plaintext) => fail(
            detail,
            format!(
                "opened {} bytes that differ from the sample Secret",
                plaintext.len()
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
