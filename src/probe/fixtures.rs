//! The fake KMS v2 plugin the probe tests share, served on a real Unix socket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proto::kms_v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};
use crate::proto::kms_v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use crate::socket::SocketAddress;

use super::{ProbeReport, ProbeStep};

/// A KMS v2 plugin that "wraps" by XOR, so any instance unwraps what another wrapped.
/// `live` is shared by every clone: tests change it while the server runs and read its
/// counters.
#[derive(Clone)]
pub(super) struct FakeKms {
    pub(super) status_key_id: String,
    pub(super) encrypt_key_id: String,
    pub(super) annotations: HashMap<String, Vec<u8>>,
    pub(super) status_delay: Duration,
    pub(super) healthz: String,
    pub(super) live: Arc<Live>,
}

/// What a test changes or counts while the fake runs.
#[derive(Default)]
pub(super) struct Live {
    /// Replaces (Status key id, Encrypt key id) when set.
    pub(super) key_ids: Mutex<Option<(String, String)>>,
    /// Every key id Encrypt has returned: Decrypt accepts these.
    pub(super) issued: Mutex<HashSet<String>>,
    /// Encrypt fails while set.
    pub(super) fail_encrypt: AtomicBool,
    pub(super) encrypts: AtomicUsize,
    pub(super) decrypts: AtomicUsize,
}

impl FakeKms {
    pub(super) fn good() -> Self {
        Self {
            status_key_id: "key-1".into(),
            encrypt_key_id: "key-1".into(),
            annotations: HashMap::from([
                ("version.azure.akv.io".into(), b"1".to_vec()),
                ("algorithm.azure.akv.io".into(), b"RSA-OAEP-256".to_vec()),
                ("blob.akv-bridge.io".into(), vec![0xff; 200]),
            ]),
            status_delay: Duration::ZERO,
            healthz: "ok".into(),
            live: Arc::default(),
        }
    }

    /// (Status key id, Encrypt key id) now.
    pub(super) fn key_ids(&self) -> (String, String) {
        self.live
            .key_ids
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| (self.status_key_id.clone(), self.encrypt_key_id.clone()))
    }

    /// Rotates the key: Status and Encrypt report `status` and `encrypt` from now on.
    pub(super) fn set_key_ids(&self, status: &str, encrypt: &str) {
        *self.live.key_ids.lock().unwrap() = Some((status.into(), encrypt.into()));
    }

    pub(super) fn encrypts(&self) -> usize {
        self.live.encrypts.load(Ordering::SeqCst)
    }

    pub(super) fn decrypts(&self) -> usize {
        self.live.decrypts.load(Ordering::SeqCst)
    }
}

pub(super) fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ 0x5a).collect()
}

#[tonic::async_trait]
impl KeyManagementService for FakeKms {
    async fn status(
        &self,
        _request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        tokio::time::sleep(self.status_delay).await;
        Ok(tonic::Response::new(StatusResponse {
            version: "v2".into(),
            healthz: self.healthz.clone(),
            key_id: self.key_ids().0,
        }))
    }

    async fn decrypt(
        &self,
        request: tonic::Request<DecryptRequest>,
    ) -> Result<tonic::Response<DecryptResponse>, tonic::Status> {
        self.live.decrypts.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let (status_key_id, encrypt_key_id) = self.key_ids();
        if request.key_id != status_key_id
            && request.key_id != encrypt_key_id
            && !self.live.issued.lock().unwrap().contains(&request.key_id)
        {
            return Err(tonic::Status::invalid_argument("unknown key id"));
        }
        if request.annotations != self.annotations || request.uid.len() != 36 {
            return Err(tonic::Status::invalid_argument("annotations or uid lost"));
        }
        Ok(tonic::Response::new(DecryptResponse {
            plaintext: xor(&request.ciphertext),
        }))
    }

    async fn encrypt(
        &self,
        request: tonic::Request<EncryptRequest>,
    ) -> Result<tonic::Response<EncryptResponse>, tonic::Status> {
        self.live.encrypts.fetch_add(1, Ordering::SeqCst);
        if self.live.fail_encrypt.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("key vault unreachable"));
        }
        let request = request.into_inner();
        let key_id = self.key_ids().1;
        self.live.issued.lock().unwrap().insert(key_id.clone());
        Ok(tonic::Response::new(EncryptResponse {
            ciphertext: xor(&request.plaintext),
            key_id,
            annotations: self.annotations.clone(),
        }))
    }
}

pub(super) async fn serve(fake: FakeKms) -> (tempfile::TempDir, SocketAddress) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (dir, SocketAddress::Path(path))
}

pub(super) fn step<'a>(report: &'a ProbeReport, name: &str) -> &'a ProbeStep {
    report.steps.iter().find(|s| s.name == name).unwrap()
}
