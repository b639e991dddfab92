//! Unix-socket listeners for the gRPC servers: `unix:///path` or Linux abstract
//! `unix:///@name` addresses, stale-socket recovery that never steals a live socket,
//! restrictive permissions from the first instant, and removal on shutdown.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Errors binding a socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The address is not a `unix://` address we can use.
    #[error("invalid listen address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another process is serving on the socket.
    #[error("{0} is in use by a running server; refusing to take it over")]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// An I/O operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A parsed listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// A filesystem socket.
    Path(PathBuf),
    /// A Linux abstract socket (no filesystem entry), written `@name`.
    Abstract(String),
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "unix://{}", p.display()),
            Self::Abstract(n) => write!(f, "unix://@{n}"),
        }
    }
}

impl SocketAddress {
    /// Parses `unix:///abs/path`, `unix:///@name`, `unix://@name`, or a bare absolute path.
    pub fn parse(address: &str) -> Result<Self, SocketError> {
        let invalid = |reason| SocketError::InvalidAddress {
            address: address.to_owned(),
            reason,
        };
        let rest = match address.split_once("://") {
            Some(("unix", rest)) => rest,
            Some(_) => return Err(invalid("only unix:// sockets are supported")),
            None => address,
        };
        let rest = rest
            .strip_prefix('/')
            .filter(|r| r.starts_with('@'))
            .unwrap_or(rest);
        if let Some(name) = rest.strip_prefix('@') {
            if name.is_empty() || name.len() > 107 || name.contains('\0') {
                return Err(invalid("abstract socket names are 1-107 bytes without NUL"));
            }
            return Ok(Self::Abstract(name.to_owned()));
        }
        if !rest.starts_with('/') {
            return Err(invalid("the socket path must be absolute"));
        }
        if rest.len() > 107 {
            return Err(invalid("the socket path is longer than 107 bytes"));
        }
        if rest.contains('\0') || rest.ends_with('/') {
            return Err(invalid("the socket path must name a file"));
        }
        Ok(Self::Path(PathBuf::from(rest)))
    }
}

/// A bound socket that removes its file when dropped.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener.
    pub listener: UnixListener,
    address: SocketAddress,
    /// (device, inode) of the socket file we created, so we never remove a replacement.
    identity: Option<(u64, u64)>,
}

impl BoundSocket {
    /// The address it is bound to.
    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// Splits into the listener and a guard that removes the socket file when dropped.
    pub fn into_parts(self) -> (UnixListener, SocketGuard) {
        let guard = SocketGuard {
            path: match &self.address {
                SocketAddress::Path(p) => Some(p.clone()),
                SocketAddress::Abstract(_) => None,
            },
            identity: self.identity,
        };
        (self.listener, guard)
    }
}

/// Removes the socket file on drop, if it is still the one we created.
#[derive(Debug)]
pub struct SocketGuard {
    path: Option<PathBuf>,
    identity: Option<(u64, u64)>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        if let (Some(path), Some((dev, ino))) = (&self.path, self.identity)
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.dev() == dev
            && meta.ino() == ino
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a listening socket with `mode` permissions.
///
/// The parent directory is created (mode 0700) if missing. An existing socket file is
/// removed only when nothing answers on it; a live one makes this fail, so a second
/// instance cannot steal the socket of a running one. The socket is created under a
/// restrictive umask so it is never reachable with looser permissions, then set to `mode`.
pub fn bind(address: &SocketAddress, mode: u32) -> Result<BoundSocket, SocketError> {
    match address {
        SocketAddress::Abstract(name) => bind_abstract(name),
        SocketAddress::Path(path) => bind_path(path, mode),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn bind_path(path: &Path, mode: u32) -> Result<BoundSocket, SocketError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("cannot create directory", parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::warn!(path = %path.display(), "removing stale socket");
                    std::fs::remove_file(path)
                        .map_err(io_err("cannot remove stale socket", path))?;
                }
                Err(e) => return Err(io_err("cannot probe existing socket", path)(e)),
            }
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    }
    // Create the socket with no group/other access; widen to `mode` afterwards if asked.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(io_err("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot set permissions on", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
    Ok(BoundSocket {
        listener,
        address: SocketAddress::Path(path.to_owned()),
        identity: Some((meta.dev(), meta.ino())),
    })
}

fn bind_abstract(name: &str) -> Result<BoundSocket, SocketError> {
    use std::os::linux::net::SocketAddrExt as _;
    let display = format!("@{name}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(io_err("invalid abstract name", Path::new(&display)))?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            SocketError::InUse(PathBuf::from(&display))
        } else {
            io_err("cannot bind", Path::new(&display))(e)
        }
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_err("cannot configure", Path::new(&display)))?;
    let listener = UnixListener::from_std(std_listener)
        .map_err(io_err("cannot register", Path::new(&display)))?;
    Ok(BoundSocket {
        listener,
        address: SocketAddress::Abstract(name.to_owned()),
        identity: None,
    })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// A future that resolves once a server must stop accepting calls.
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs a server until it ends or `shutdown` resolves; then it stops accepting and its
/// in-flight calls get at most `grace` to finish. `serve` receives the signal to stop
/// accepting; `in_flight` names the calls (`calls`, `mounts`) in the log lines.
pub async fn serve_and_drain<F, E>(
    serve: impl FnOnce(StopSignal) -> F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
    in_flight: &'static str,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight {in_flight}");
        let _ = signal_tx.send(true);
    });
    let signalled = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let served = serve(Box::pin(signalled(signal_rx.clone())));
    tokio::pin!(served);
    tokio::select! {
        r = &mut served => r,
        () = async {
            signalled(signal_rx).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "drain timed out; stopping with {in_flight} in flight");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            SocketAddress::parse("unix:///opt/azurekms.socket").unwrap(),
            SocketAddress::Path("/opt/azurekms.socket".into())
        );
        assert_eq!(
            SocketAddress::parse("unix:///@kms").unwrap(),
            SocketAddress::Abstract("kms".into())
        );
        assert_eq!(
            SocketAddress::parse("/tmp/x.sock").unwrap(),
            SocketAddress::Path("/tmp/x.sock".into())
        );
        for bad in [
            "tcp://1.2.3.4:5",
            "unix://relative.sock",
            "unix:///@",
            "unix:///dir/",
        ] {
            assert!(SocketAddress::parse(bad).is_err(), "{bad}");
        }
        let long = format!("unix:///{}", "a".repeat(200));
        assert!(SocketAddress::parse(&long).is_err());
    }

    #[tokio::test]
    async fn binds_0600_refuses_live_socket_and_replaces_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kms.sock");
        let addr = SocketAddress::Path(path.clone());
        let first = bind(&addr, 0o600).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // A second instance must not steal the live socket.
        assert!(matches!(bind(&addr, 0o600), Err(SocketError::InUse(_))));
        // Drop the listener without removing the file: a stale socket.
        let (listener, guard) = first.into_parts();
        drop(listener);
        std::mem::forget(guard);
        assert!(path.exists());
        let second = bind(&addr, 0o660).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        let (_l, guard) = second.into_parts();
        drop(guard);
        assert!(!path.exists(), "the socket is removed on shutdown");
        // A regular file in the way is never removed.
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(
            bind(&addr, 0o600),
            Err(SocketError::NotASocket(_))
        ));
    }

    #[tokio::test]
    async fn abstract_sockets_bind_once() {
        let name = format!("akv-bridge-test-{}", std::process::id());
        let addr = SocketAddress::Abstract(name);
        let _first = bind(&addr, 0o600).unwrap();
        assert!(matches!(bind(&addr, 0o600), Err(SocketError::InUse(_))));
    }
}
