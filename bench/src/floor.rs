//! The floor: a bare tonic KMS v2 server on a Unix socket, answering every call with a
//! constant and never looking at the request. No authority layer, no metrics, no logging,
//! no cache: what "tonic over a Unix socket" costs on this machine, run as its own process
//! (`akv-bridge-bench --serve-floor <SOCKET>`, hidden) so that its CPU and memory are
//! measured as the plugin's are.

use std::path::Path;
use std::time::Duration;

use super::BenchError;
use akv_bridge::proto::kms_v2 as v2;
use akv_bridge::socket::{self, SocketAddress};

/// The key id every answer names (64 hex digits, the shape of the plugin's).
pub const KEY_ID: &str = "f1002f1002f1002f1002f1002f1002f1002f1002f1002f1002f1002f1002f100";
/// Length of the constant plaintext Decrypt answers: a DEK seed, as the plugin's.
pub const PLAINTEXT_LEN: usize = 32;
/// Time in-flight calls get to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);

/// The service: constants only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor;

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for Floor {
    async fn status(
        &self,
        _request: tonic::Request<v2::StatusRequest>,
    ) -> Result<tonic::Response<v2::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(v2::StatusResponse {
            version: "v2".to_owned(),
            healthz: "ok".to_owned(),
            key_id: KEY_ID.to_owned(),
        }))
    }

    async fn decrypt(
        &self,
        _request: tonic::Request<v2::DecryptRequest>,
    ) -> Result<tonic::Response<v2::DecryptResponse>, tonic::Status> {
        Ok(tonic::Response::new(v2::DecryptResponse {
            plaintext: vec![0x5a; PLAINTEXT_LEN],
        }))
    }

    async fn encrypt(
        &self,
        _request: tonic::Request<v2::EncryptRequest>,
    ) -> Result<tonic::Response<v2::EncryptResponse>, tonic::Status> {
        Ok(tonic::Response::new(v2::EncryptResponse {
            ciphertext: vec![0xa5; 256],
            key_id: KEY_ID.to_owned(),
            annotations: std::collections::HashMap::new(),
        }))
    }
}

/// Serves [`Floor`] on `path` (bound as our servers bind: mode 0600, a stale socket
/// replaced, a live one refused) with tonic's default server settings, until `shutdown`
/// resolves; then in-flight calls get `GRACE` to finish and the socket file is removed.
pub async fn serve(
    path: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    let address = SocketAddress::Path(path.to_owned());
    let bound = socket::bind(&address, 0o600)
        .map_err(|e| BenchError::Setup(format!("floor server: {e}")))?;
    let (listener, _guard) = bound.into_parts();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    akv_bridge::server::process::serve_and_drain(
        |stop| {
            tonic::transport::Server::builder()
                .add_service(
                    v2::key_management_service_server::KeyManagementServiceServer::new(Floor),
                )
                .serve_with_incoming_shutdown(incoming, stop)
        },
        shutdown,
        GRACE,
        "calls",
    )
    .await
    .map_err(|e| BenchError::Setup(format!("floor server: {e}")))
}

/// Entry point of `akv-bridge-bench --serve-floor <SOCKET>`: serves until SIGTERM (how
/// the bench stops every server) or SIGINT.
pub async fn main(path: &Path) -> std::process::ExitCode {
    match serve(path, akv_bridge::server::process::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("akv-bridge-bench --serve-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_constants_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floor.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let path = path.clone();
            async move {
                serve(&path, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let mut client = loop {
            if let Ok(channel) = super::super::channel(&path).await {
                break v2::key_management_service_client::KeyManagementServiceClient::new(channel);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let status = client
            .status(v2::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status.version.as_str(), status.healthz.as_str()),
            ("v2", "ok")
        );
        assert_eq!(status.key_id.len(), 64);
        assert!(status.key_id.chars().all(|c| c.is_ascii_hexdigit()));
        let plain = client
            .decrypt(v2::DecryptRequest {
                ciphertext: vec![1; 300],
                uid: "u".into(),
                key_id: "anything".into(),
                annotations: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(plain.plaintext.len(), PLAINTEXT_LEN);
        let enc = client
            .encrypt(v2::EncryptRequest {
                plaintext: vec![2; 32],
                uid: "u".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enc.key_id, KEY_ID);
        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!path.exists(), "the socket file is removed on shutdown");
    }
}
