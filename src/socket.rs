//! Unix-socket listeners for the gRPC servers: `unix:///path` or Linux abstract
//! `unix:///@name` addresses, stale-socket recovery that never steals a live socket,
//! restrictive permissions from the first instant, and removal on shutdown.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint};

/// Longest socket path or abstract name a `sockaddr_un` holds (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

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

/// Errors reading a socket address the way kube-apiserver reads a KMS `endpoint`.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The argument is not a usable Unix socket address.
    #[error("invalid KMS socket {input:?}: {reason}")]
    Invalid {
        /// The argument as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL has a scheme other than `unix`, which kube-apiserver refuses.
    #[error(
        "unsupported scheme {scheme:?} in {input:?}: kube-apiserver only dials KMS plugins on \
         unix sockets (unix:///path/to/socket or unix:///@abstract-name)"
    )]
    UnsupportedScheme {
        /// The argument as given.
        input: String,
        /// The scheme found.
        scheme: String,
    },
}

/// Errors connecting a gRPC client to a socket.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection could be made within the timeout.
    #[error("could not connect to {socket} within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The socket, as `unix://` URL.
        socket: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// Connecting failed.
    #[error("could not connect to {socket}: {reason}")]
    Failed {
        /// The socket, as `unix://` URL.
        socket: String,
        /// The cause, with its source chain.
        reason: String,
    },
}

/// A Unix socket: the servers listen on one, clients (kube-apiserver's stand-in, the CSI
/// driver's, the liveness self-check) dial one. Two grammars read it: [`Self::parse`], the
/// servers' `--listen-addr`/`--endpoint`, and [`Self::parse_endpoint`], kube-apiserver's.
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
            Self::Path(p) if p.is_absolute() => write!(f, "unix://{}", p.display()),
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Abstract(name) => write!(f, "unix:///@{}", name.escape_debug()),
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
            if name.is_empty() || name.len() > SUN_PATH_MAX || name.contains('\0') {
                return Err(invalid("abstract socket names are 1-107 bytes without NUL"));
            }
            return Ok(Self::Abstract(name.to_owned()));
        }
        if !rest.starts_with('/') {
            return Err(invalid("the socket path must be absolute"));
        }
        if rest.len() > SUN_PATH_MAX {
            return Err(invalid("the socket path is longer than 107 bytes"));
        }
        if rest.contains('\0') || rest.ends_with('/') {
            return Err(invalid("the socket path must name a file"));
        }
        Ok(Self::Path(PathBuf::from(rest)))
    }

    /// Parses `unix:///path`, `unix:///@name`, `unix:/path`, a bare path, or `@name`, the
    /// way kube-apiserver parses the `endpoint` of a KMS provider (URL path, percent-decoded;
    /// `/@name` is abstract). Other schemes (`tcp://`, `http://`, …) are refused, and so is a
    /// `unix://host/path` form, which kube-apiserver would silently turn into `/path`.
    pub fn parse_endpoint(input: &str) -> Result<Self, EndpointError> {
        let invalid = |reason: String| EndpointError::Invalid {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid(
                "empty; give unix:///path/to/socket, unix:///@name or a path".to_owned(),
            ));
        }
        if let Some((scheme, rest)) = input.split_once("://")
            && is_url_scheme(scheme)
        {
            if !scheme.eq_ignore_ascii_case("unix") {
                return Err(EndpointError::UnsupportedScheme {
                    input: input.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            if !authority.is_empty() {
                return Err(invalid(format!(
                    "{authority:?} is read as a host name and ignored by kube-apiserver, which \
                     would dial {path:?}; write unix:///{authority}{path}"
                )));
            }
            return Self::from_url_path(input, path);
        }
        if let Some(scheme) = input.get(..5)
            && scheme.eq_ignore_ascii_case("unix:")
        {
            let rest = input.get(5..).unwrap_or_default();
            if !rest.starts_with('/') {
                return Err(invalid(format!(
                    "after \"unix:\" an absolute path is expected; write unix:///{rest}"
                )));
            }
            return Self::from_url_path(input, rest);
        }
        if let Some(name) = input.strip_prefix('@') {
            return Self::abstract_name(input, name);
        }
        Self::file_path(input, input)
    }

    /// The path part of a `unix:` URL: percent-decoded, `/@name` is abstract.
    fn from_url_path(input: &str, path: &str) -> Result<Self, EndpointError> {
        let invalid = |reason: String| EndpointError::Invalid {
            input: input.to_owned(),
            reason,
        };
        if path.contains(['?', '#']) {
            return Err(invalid(
                "contains '?' or '#', which kube-apiserver's URL parser cuts off; escape them \
                 as %3F / %23"
                    .to_owned(),
            ));
        }
        let decoded = percent_decode(path).map_err(invalid)?;
        if let Some(name) = decoded.strip_prefix("/@") {
            return Self::abstract_name(input, name);
        }
        if decoded.is_empty() || decoded == "/" {
            return Err(invalid("no socket path".to_owned()));
        }
        Self::file_path(input, &decoded)
    }

    fn abstract_name(input: &str, name: &str) -> Result<Self, EndpointError> {
        if name.is_empty() {
            return Err(EndpointError::Invalid {
                input: input.to_owned(),
                reason: "empty abstract socket name".to_owned(),
            });
        }
        if name.len() > SUN_PATH_MAX {
            return Err(EndpointError::Invalid {
                input: input.to_owned(),
                reason: format!(
                    "abstract name is {} bytes; a Unix socket address holds at most {SUN_PATH_MAX}",
                    name.len()
                ),
            });
        }
        Ok(Self::Abstract(name.to_owned()))
    }

    fn file_path(input: &str, path: &str) -> Result<Self, EndpointError> {
        if path.len() > SUN_PATH_MAX {
            return Err(EndpointError::Invalid {
                input: input.to_owned(),
                reason: format!(
                    "path is {} bytes; a Unix socket path holds at most {SUN_PATH_MAX}",
                    path.len()
                ),
            });
        }
        Ok(Self::Path(PathBuf::from(path)))
    }
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_url_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Decodes `%XX` escapes as Go's `url.Parse` does for the path; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    fn hex(b: Option<&u8>) -> Option<u8> {
        b.and_then(|b| (*b as char).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            match (hex(bytes.next()), hex(bytes.next())) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err("invalid %-escape in the path".to_owned()),
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| "the decoded path is not UTF-8".to_owned())
}

/// Opens a gRPC channel to the plugin over its Unix socket, as kube-apiserver does
/// (plaintext HTTP/2, `:authority` `localhost`). Fails if no connection is made within
/// `timeout`.
pub async fn connect(socket: &SocketAddress, timeout: Duration) -> Result<Channel, ConnectError> {
    let connect_error = |reason: String| ConnectError::Failed {
        socket: socket.to_string(),
        reason,
    };
    let endpoint = Endpoint::try_from("http://localhost")
        .map_err(|e| connect_error(error_chain(&e)))?
        .connect_timeout(timeout);
    let spec = socket.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let spec = spec.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(dial(&spec).await?)) }
    });
    match tokio::time::timeout(timeout, endpoint.connect_with_connector(connector)).await {
        Err(_) => Err(ConnectError::Timeout {
            socket: socket.to_string(),
            timeout,
        }),
        Ok(Err(e)) => Err(connect_error(error_chain(&e))),
        Ok(Ok(channel)) => Ok(channel),
    }
}

/// Connects one stream to the socket.
pub async fn dial(address: &SocketAddress) -> std::io::Result<tokio::net::UnixStream> {
    match address {
        SocketAddress::Path(path) => tokio::net::UnixStream::connect(path).await,
        SocketAddress::Abstract(name) => dial_abstract(name.clone()).await,
    }
}

#[cfg(target_os = "linux")]
async fn dial_abstract(name: String) -> std::io::Result<tokio::net::UnixStream> {
    // std's connect blocks (a full backlog makes a Unix connect wait): keep it off the
    // runtime's worker threads.
    let stream = tokio::task::spawn_blocking(move || {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        std::os::unix::net::UnixStream::connect_addr(&addr)
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

#[cfg(not(target_os = "linux"))]
async fn dial_abstract(name: String) -> std::io::Result<tokio::net::UnixStream> {
    Err(std::io::Error::other(format!(
        "abstract socket @{name} requested, but abstract sockets exist only on Linux"
    )))
}

/// An error and its sources, `a: b: c`, without repeating identical messages.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if parts.last().is_none_or(|last| !last.contains(&msg)) {
            parts.push(msg);
        }
        source = s.source();
    }
    parts.join(": ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_what_kube_apiserver_accepts() {
        let path = |p: &str| SocketAddress::Path(PathBuf::from(p));
        let cases = [
            ("unix:///opt/azurekms.socket", path("/opt/azurekms.socket")),
            ("UNIX:///opt/azurekms.socket", path("/opt/azurekms.socket")),
            ("unix:/opt/azurekms.socket", path("/opt/azurekms.socket")),
            (
                "unix:///@azurekms",
                SocketAddress::Abstract("azurekms".into()),
            ),
            (
                "unix:///%40azurekms",
                SocketAddress::Abstract("azurekms".into()),
            ),
            ("unix:///tmp/a%20b.sock", path("/tmp/a b.sock")),
            ("/opt/azurekms.socket", path("/opt/azurekms.socket")),
            ("relative/kms.sock", path("relative/kms.sock")),
            ("@azurekms", SocketAddress::Abstract("azurekms".into())),
            ("/tmp/odd://name", path("/tmp/odd://name")),
        ];
        for (input, want) in cases {
            assert_eq!(
                SocketAddress::parse_endpoint(input).unwrap(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn endpoints_refuse_other_schemes_and_mistakes() {
        for input in ["tcp://127.0.0.1:8080", "http://localhost/kms", "grpc:///x"] {
            let err = SocketAddress::parse_endpoint(input).unwrap_err();
            assert!(
                matches!(err, EndpointError::UnsupportedScheme { .. }),
                "{input}"
            );
            assert!(
                err.to_string()
                    .contains("only dials KMS plugins on unix sockets")
            );
        }
        let err = SocketAddress::parse_endpoint("unix://opt/azurekms.socket").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unix:///opt/azurekms.socket"), "{msg}");
        assert!(msg.contains("\"/azurekms.socket\""), "{msg}");
        let err = SocketAddress::parse_endpoint("unix://@name")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unix:///@name"), "{err}");
        for input in [
            "",
            "@",
            "unix://",
            "unix:///",
            "unix:///@",
            "unix:@name",
            "unix:///tmp/a?b",
            "unix:///tmp/a#b",
            "unix:///tmp/%zz",
        ] {
            assert!(
                matches!(
                    SocketAddress::parse_endpoint(input),
                    Err(EndpointError::Invalid { .. })
                ),
                "{input}"
            );
        }
        let long = format!("/{}", "a".repeat(107));
        assert!(SocketAddress::parse_endpoint(&long).is_err());
        assert!(SocketAddress::parse_endpoint(&long[..107]).is_ok());
        assert!(SocketAddress::parse_endpoint(&format!("@{}", "a".repeat(108))).is_err());
    }

    #[test]
    fn endpoints_display_as_urls() {
        assert_eq!(
            SocketAddress::parse_endpoint("/opt/a.sock")
                .unwrap()
                .to_string(),
            "unix:///opt/a.sock"
        );
        assert_eq!(
            SocketAddress::parse_endpoint("@x").unwrap().to_string(),
            "unix:///@x"
        );
    }

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
