//! Entra credentials built from a [`CredentialSource`]: client secret, client certificate,
//! managed identity and workload identity, all on `azure_identity`.
//!
//! `azure_identity`'s own `ClientCertificateCredential` needs OpenSSL (its
//! `client_certificate` feature), so certificate credentials are implemented here: the PFX
//! is read once with `p12-keystore`, and each token request gets a fresh RS256 client
//! assertion signed with `aws-lc-rs`, handed to `azure_identity`'s
//! [`ClientAssertionCredential`].

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::headers::AUTHORIZATION;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientMethodOptions, ClientOptions, Context, Request, StatusCode, Url};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p12_keystore::Pkcs12Archive;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::azure::azure_json::CredentialSource;

/// Lifetime of a certificate client assertion, in seconds.
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// Largest PFX file accepted.
const MAX_PFX_SIZE: u64 = 1024 * 1024;

/// Errors building a credential. No variant carries a secret, a password or key material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The authority host is not an absolute `https` URL.
    #[error("invalid Entra authority host {authority:?}: {reason}")]
    InvalidAuthority {
        /// The authority host as given.
        authority: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The certificate file cannot be read.
    #[error("cannot read client certificate {}: {source}", path.display())]
    ReadCertificate {
        /// The PFX file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file cannot be decrypted with the password given.
    #[error(
        "cannot decrypt client certificate {}: the password (aadClientCertPassword) is wrong \
         or missing",
        path.display()
    )]
    CertificatePassword {
        /// The PFX file.
        path: PathBuf,
    },
    /// The certificate file is not a PKCS#12 file with one private key and its certificate.
    #[error("client certificate {} is not a usable PKCS#12 (PFX) file: {reason}", path.display())]
    InvalidPfx {
        /// The PFX file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not an RSA key (Entra certificate credentials are RS256 only).
    #[error(
        "client certificate {}: certificate credentials need an RSA key, found {found}",
        path.display()
    )]
    NotRsa {
        /// The PFX file.
        path: PathBuf,
        /// The kind of key found.
        found: String,
    },
    /// The RSA private key is malformed or unacceptable (for example smaller than 2048 bits).
    #[error("client certificate {}: unusable RSA private key: {reason}", path.display())]
    InvalidKey {
        /// The PFX file.
        path: PathBuf,
        /// Why the key was rejected.
        reason: String,
    },
    /// The Azure SDK refused to create the credential.
    #[error("cannot create the {kind} credential: {source}")]
    Sdk {
        /// Which credential: `client secret`, `client certificate`, `managed identity` or
        /// `workload identity`.
        kind: &'static str,
        /// The SDK's error.
        source: azure_core::Error,
    },
}

/// Builds the credential `source` describes.
///
/// `cloud_authority` is the Entra authority host, already resolved by the caller (from
/// `AZURE_AUTHORITY_HOST`, a flag or the cloud), e.g. `https://login.microsoftonline.com`.
/// It must be an absolute `https` URL. `client_options` carries the caller's transport and
/// retry policy; its `cloud` is replaced by a custom cloud with that authority host.
///
/// A certificate's PFX file is read here, once; a workload identity token file must exist
/// (the SDK reads it here and re-reads it every ten minutes). Managed identity picks App
/// Service (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) or IMDS from the process environment.
pub fn build(
    source: &CredentialSource,
    cloud_authority: &str,
    mut client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let authority = parse_authority(cloud_authority)?;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = cloud_authority.to_owned();
    client_options.cloud = Some(Arc::new(cloud.into()));

    let sdk = |kind| move |source| CredentialError::Sdk { kind, source };
    match source {
        CredentialSource::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => {
            let credential = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                secret.clone(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(sdk("client secret"))?;
            Ok(credential)
        }
        CredentialSource::ClientCertificate {
            tenant_id,
            client_id,
            pfx_path,
            password,
        } => {
            let assertion = CertificateAssertion::from_pfx(
                pfx_path,
                password.as_ref(),
                client_id,
                &token_endpoint(&authority, tenant_id)?,
            )?;
            let credential = ClientAssertionCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                assertion,
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map_err(sdk("client certificate"))?;
            Ok(credential)
        }
        CredentialSource::ManagedIdentity {
            user_assigned_client_id,
        } => {
            let credential =
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: user_assigned_client_id
                        .clone()
                        .map(UserAssignedId::ClientId),
                    client_options,
                }))
                .map_err(sdk("managed identity"))?;
            Ok(credential)
        }
        CredentialSource::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let credential =
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant_id.clone()),
                    token_file_path: Some(token_file.clone()),
                }))
                .map_err(sdk("workload identity"))?;
            Ok(credential)
        }
    }
}

/// A service-account token held in memory (the CSI driver hands each pod's token over in the
/// Mount request), used as the client assertion of a workload identity. The newest token
/// replaces the older one; tokens are zeroized when replaced or dropped. Clones share the
/// token.
#[derive(Clone, Default)]
pub struct FederatedToken(Arc<std::sync::Mutex<Zeroizing<String>>>);

impl fmt::Debug for FederatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FederatedToken(..)")
    }
}

impl FederatedToken {
    /// A holder of `token`.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Zeroizing::new(
            token.to_owned(),
        ))))
    }

    /// Replaces the token.
    pub fn set(&self, token: &str) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = Zeroizing::new(token.to_owned());
    }

    fn current(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_str()
            .to_owned()
    }
}

// `ClientAssertion` is an `#[async_trait]` trait; see `CertificateAssertion`.
impl ClientAssertion for FederatedToken {
    fn secret<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _options: Option<ClientMethodOptions<'life1>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<String>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(Ok(self.current())))
    }
}

/// A workload-identity credential whose assertion is `token`, whatever token it holds when a
/// new access token is needed. `cloud_authority` and `client_options` as in [`build`].
pub fn federated(
    tenant_id: &str,
    client_id: &str,
    token: FederatedToken,
    cloud_authority: &str,
    mut client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    parse_authority(cloud_authority)?;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = cloud_authority.to_owned();
    client_options.cloud = Some(Arc::new(cloud.into()));
    let credential = ClientAssertionCredential::new(
        tenant_id.to_owned(),
        client_id.to_owned(),
        token,
        Some(ClientAssertionCredentialOptions { client_options }),
    )
    .map_err(|source| CredentialError::Sdk {
        kind: "workload identity",
        source,
    })?;
    Ok(credential)
}

/// Shortest time between two rebuilds of a [`Renewable`] credential.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(30);

/// Builds a fresh credential (with an empty token cache) for [`Renewable`].
pub type CredentialBuilder =
    dyn Fn() -> Result<Arc<dyn TokenCredential>, CredentialError> + Send + Sync;

/// A credential that can be rebuilt when Key Vault rejects its access token.
///
/// The SDK's credentials cache access tokens until they near expiry, and the SDK's
/// authorization policy, on a 401, asks the credential again, which hands back the same
/// cached token. A token Key Vault stops accepting before it expires (the identity deleted
/// and re-created, its token revoked, a vault moved to another tenant) would so fail every
/// call until expiry: up to 24 hours for a managed identity. [`Renewable::policy`] sees
/// such a 401 on the wire and rebuilds the credential, so the authorization policy's own
/// retry of that request already gets a new token from Entra.
///
/// Rebuilds happen at most once per [`RENEW_INTERVAL`], so an identity Key Vault keeps
/// refusing costs Entra one extra token request per interval, not one per call.
pub struct Renewable {
    build: Box<CredentialBuilder>,
    current: std::sync::RwLock<Arc<dyn TokenCredential>>,
    last_renewal: std::sync::Mutex<Option<Instant>>,
    renewals: AtomicU64,
}

impl fmt::Debug for Renewable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renewable")
            .field("renewals", &self.renewals())
            .finish_non_exhaustive()
    }
}

impl Renewable {
    /// A credential `build` makes now and again on each renewal.
    pub fn new(
        build: impl Fn() -> Result<Arc<dyn TokenCredential>, CredentialError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, CredentialError> {
        let first = build()?;
        Ok(Arc::new(Self {
            build: Box::new(build),
            current: std::sync::RwLock::new(first),
            last_renewal: std::sync::Mutex::new(None),
            renewals: AtomicU64::new(0),
        }))
    }

    /// Rebuilds the credential unless that was done less than [`RENEW_INTERVAL`] ago (then
    /// a fresh one is already in place). Returns whether it rebuilt. A builder failure
    /// keeps the current credential.
    pub fn renew(&self) -> bool {
        // Held across the (synchronous, local) rebuild: a request rejected meanwhile waits
        // and then finds the fresh credential in place.
        let mut last = self
            .last_renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < RENEW_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match (self.build)() {
            Ok(fresh) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                self.renewals.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot rebuild the credential; keeping the current one");
                false
            }
        }
    }

    /// How many times the credential was rebuilt.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// The per-try pipeline policy for Key Vault clients that use this credential: on a 401
    /// to a request that carried an access token, it rebuilds the credential. (The SDK's
    /// first request to a vault carries none, to learn the vault's tenant from the
    /// challenge; that 401 is expected.) Not for the credential's own token requests.
    pub fn policy(self: &Arc<Self>) -> Arc<dyn Policy> {
        Arc::new(RenewOnRejection(Arc::clone(self)))
    }

    fn current(&self) -> Arc<dyn TokenCredential> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[async_trait::async_trait]
impl TokenCredential for Renewable {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.current().get_token(scopes, options).await
    }
}

#[derive(Debug)]
struct RenewOnRejection(Arc<Renewable>);

// The trait declares `&Context` with its lifetime hidden; `async_trait` needs the same.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for RenewOnRejection {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let carried_token = request.headers().get_optional_str(&AUTHORIZATION).is_some();
        // A per-try policy always has the transport after it; an empty rest is a bug in the
        // pipeline, answered as an error rather than a panic.
        let Some((inner, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "no policy after the credential renewal policy",
            ));
        };
        let response = inner.send(ctx, request, rest).await?;
        if carried_token && response.status() == StatusCode::Unauthorized && self.0.renew() {
            tracing::warn!(
                renewals = self.0.renewals(),
                "Key Vault rejected an unexpired access token (401): the credential was \
                 rebuilt, the next token comes from Microsoft Entra"
            );
        }
        Ok(response)
    }
}

fn parse_authority(authority: &str) -> Result<Url, CredentialError> {
    let invalid = |reason| CredentialError::InvalidAuthority {
        authority: authority.to_owned(),
        reason,
    };
    let url = Url::parse(authority).map_err(|_| invalid("not an absolute URL"))?;
    if url.scheme() != "https" {
        return Err(invalid("Entra requires https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host name"));
    }
    Ok(url)
}

/// The token endpoint, exactly as `azure_identity` computes it (an absolute path joined to
/// the authority host, so any path there is dropped): the audience of client assertions.
fn token_endpoint(authority: &Url, tenant_id: &str) -> Result<String, CredentialError> {
    authority
        .join(&format!("/{tenant_id}/oauth2/v2.0/token"))
        .map(String::from)
        .map_err(|_| CredentialError::InvalidAuthority {
            authority: authority.to_string(),
            reason: "the tenant id does not form a valid token endpoint URL",
        })
}

/// Signs client assertions with a certificate's RSA key: the JWT Entra accepts in place of
/// a client secret.
struct CertificateAssertion {
    /// The private key. aws-lc clears its memory when the key is dropped.
    key: RsaKeyPair,
    /// Base64url of the JWT header, which never changes.
    header: String,
    /// `iss` and `sub`.
    client_id: String,
    /// `aud`: the token endpoint.
    audience: String,
    /// Base64url SHA-1 thumbprint of the certificate (public; for `Debug`).
    x5t: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("x5t", &self.x5t)
            .field("key", &format_args!("[redacted]"))
            .finish()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    x5t: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    exp: u64,
}

impl CertificateAssertion {
    /// Reads the PFX at `path`: exactly one private key, which must be RSA, and the
    /// certificate carrying its public key.
    fn from_pfx(
        path: &Path,
        password: Option<&Secret>,
        client_id: &str,
        audience: &str,
    ) -> Result<Self, CredentialError> {
        let invalid = |reason: String| CredentialError::InvalidPfx {
            path: path.to_owned(),
            reason,
        };
        let data = read_limited(path)?;
        let password = password.map_or("", Secret::secret);
        let archive = Pkcs12Archive::from_pkcs12(&data, password).map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
                CredentialError::CertificatePassword {
                    path: path.to_owned(),
                }
            }
            other => invalid(other.to_string()),
        })?;

        let mut keys = archive.keys.into_iter();
        let key_bag = keys
            .next()
            .ok_or_else(|| invalid("it holds no private key".to_owned()))?;
        if keys.next().is_some() {
            return Err(invalid(
                "it holds more than one private key; expected one".to_owned(),
            ));
        }
        let pkcs8 = Zeroizing::new(key_bag.key.as_der().to_vec());
        let key =
            RsaKeyPair::from_pkcs8(&pkcs8).map_err(|rejected| match key_algorithm(&pkcs8) {
                KeyAlgorithm::Rsa => CredentialError::InvalidKey {
                    path: path.to_owned(),
                    reason: rejected.to_string(),
                },
                other => CredentialError::NotRsa {
                    path: path.to_owned(),
                    found: other.to_string(),
                },
            })?;

        // The leaf is the certificate whose SubjectPublicKeyInfo holds this key: the
        // RSAPublicKey DER appears verbatim in it. This needs no localKeyId attribute.
        let public_key = key.public_key().as_ref();
        let leaf = archive
            .certs
            .iter()
            .map(|bag| bag.cert.as_der())
            .find(|der| contains(der, public_key))
            .ok_or_else(|| {
                invalid(if archive.certs.is_empty() {
                    "it holds no certificate".to_owned()
                } else {
                    "no certificate in it matches its private key".to_owned()
                })
            })?;

        let x5t = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, leaf));
        let header = serde_json::to_vec(&Header {
            alg: "RS256",
            typ: "JWT",
            x5t: &x5t,
        })
        .map_err(|e| invalid(format!("cannot encode the assertion header: {e}")))?;
        Ok(Self {
            key,
            header: URL_SAFE_NO_PAD.encode(header),
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
            x5t,
        })
    }

    /// A fresh signed assertion, valid for [`ASSERTION_LIFETIME_SECS`] from now.
    fn sign(&self) -> azure_core::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Credential, e, "clock error"))?
            .as_secs();
        let claims = serde_json::to_vec(&Claims {
            aud: &self.audience,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: random_uuid(),
            nbf: now,
            exp: now.saturating_add(ASSERTION_LIFETIME_SECS),
        })
        .map_err(|e| azure_core::Error::new(ErrorKind::DataConversion, e))?;
        let signing_input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "signing the client certificate assertion failed",
                )
            })?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

// `ClientAssertion` is an `#[async_trait]` trait; this is the signature that macro produces.
// Signing is synchronous, so the future is ready at once.
impl ClientAssertion for CertificateAssertion {
    fn secret<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _options: Option<ClientMethodOptions<'life1>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<String>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(self.sign()))
    }
}

/// Reads a PFX file (at most [`MAX_PFX_SIZE`] bytes) into a buffer cleared on drop.
fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    use std::io::Read as _;
    let read_error = |source| CredentialError::ReadCertificate {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut data = Zeroizing::new(Vec::new());
    file.take(MAX_PFX_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if u64::try_from(data.len()).unwrap_or(u64::MAX) > MAX_PFX_SIZE {
        return Err(CredentialError::InvalidPfx {
            path: path.to_owned(),
            reason: format!("it is larger than {MAX_PFX_SIZE} bytes"),
        });
    }
    Ok(data)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The algorithm of a PKCS#8 private key, for error messages.
#[derive(Debug, PartialEq, Eq)]
enum KeyAlgorithm {
    Rsa,
    Ec,
    Other,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "an RSA key",
            Self::Ec => "an EC key",
            Self::Other => "a key that is neither RSA nor EC",
        })
    }
}

/// Finds the key algorithm OID near the start of a PKCS#8 `PrivateKeyInfo` (it comes right
/// after the version), without a full DER parser.
fn key_algorithm(pkcs8: &[u8]) -> KeyAlgorithm {
    // DER of the OIDs 1.2.840.113549.1.1.1 (rsaEncryption) and 1.2.840.10045.2.1
    // (id-ecPublicKey), tag and length included.
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let head = pkcs8.get(..32).unwrap_or(pkcs8);
    if contains(head, RSA) {
        KeyAlgorithm::Rsa
    } else if contains(head, EC) {
        KeyAlgorithm::Ec
    } else {
        KeyAlgorithm::Other
    }
}

/// A random version-4 UUID, for the `jti` claim.
fn random_uuid() -> String {
    let mut r: u128 = rand::random();
    r = (r & !(0xF_u128 << 76)) | (0x4_u128 << 76); // version 4
    r = (r & !(0x3_u128 << 62)) | (0x2_u128 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        r >> 96,
        (r >> 80) & 0xFFFF,
        (r >> 64) & 0xFFFF,
        (r >> 48) & 0xFFFF,
        r & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    };
    use azure_core::http::{ExponentialRetryOptions, RetryOptions, Transport};
    use base64::engine::general_purpose::STANDARD;
    use mock_vault::{Config, Fixture, MockVault, x509};
    use serde_json::{Value, json};

    use super::*;

    const SECRET_NAME: &str = "db-password";
    const SECRET_VALUE: &str = "hunter2";
    const SP_CLIENT_ID: &str = "0b0d6a52-1111-2222-3333-444455556666";
    const SP_SECRET: &str = "sp-Secret-value~1";
    const CERT_CLIENT_ID: &str = "0c0d6a52-1111-2222-3333-444455556666";
    const WI_CLIENT_ID: &str = "0d0d6a52-1111-2222-3333-444455556666";
    const WI_SUBJECT: &str = "system:serviceaccount:kube-system:akv-bridge";
    const PFX_PASSWORD: &str = "pfx-Pa55word!";

    /// An RSA key and its self-signed certificate.
    struct TestCert {
        pkcs8: Vec<u8>,
        der: Vec<u8>,
    }

    impl TestCert {
        fn rsa() -> Self {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&key)
                .unwrap()
                .as_ref()
                .to_vec();
            Self::issue(pkcs8, x509::KeyKind::Rsa)
        }

        fn ec() -> Self {
            let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
            let pkcs8 = key.to_pkcs8v1().unwrap().as_ref().to_vec();
            Self::issue(pkcs8, x509::KeyKind::EcP256)
        }

        fn issue(pkcs8: Vec<u8>, kind: x509::KeyKind) -> Self {
            let issued = x509::issue(
                &x509::CertRequest {
                    subject: "CN=akv-bridge-test".into(),
                    validity_months: 1,
                    ..Default::default()
                },
                &pkcs8,
                kind,
                None,
            )
            .unwrap();
            let der = issued.leaf().to_vec();
            Self { pkcs8, der }
        }

        fn pem(&self) -> String {
            let b64 = STANDARD.encode(&self.der);
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            pem
        }

        /// Writes a PFX of this key with `chain` to a temporary directory.
        fn write_pfx(&self, dir: &Path, chain: &[Vec<u8>], password: &str) -> PathBuf {
            let pfx = x509::build_pfx(&self.pkcs8, chain, password).unwrap();
            let path = dir.join(format!("sp-{}.pfx", rand::random::<u32>()));
            std::fs::write(&path, pfx).unwrap();
            path
        }
    }

    /// mock-vault with vault `kv1` holding one secret, and three app identities allowed to
    /// read it: one with a client secret, one with `cert`, one federated.
    async fn start_mock(cert: &TestCert) -> MockVault {
        let fixture = json!({
            "vaults": [{
                "name": "kv1",
                "secrets": [{"name": SECRET_NAME, "value": SECRET_VALUE}],
            }],
            "identities": [
                {
                    "name": "sp-secret",
                    "client_id": SP_CLIENT_ID,
                    "client_secret": SP_SECRET,
                    "permissions": {"kv1": {"secrets": ["get"]}},
                },
                {
                    "name": "sp-cert",
                    "client_id": CERT_CLIENT_ID,
                    "certificates": [cert.pem()],
                    "permissions": {"kv1": {"secrets": ["get"]}},
                },
                {
                    "name": "workload",
                    "client_id": WI_CLIENT_ID,
                    "federated": [{"subject": WI_SUBJECT}],
                    "permissions": {"kv1": {"secrets": ["get"]}},
                },
            ],
        });
        let fixture = Fixture::parse(&fixture.to_string()).unwrap();
        mock_vault::start(Config {
            fixture,
            ..Config::default()
        })
        .await
        .unwrap()
    }

    /// A reqwest client that trusts only the mock's CA and pins its host names.
    fn http(mock: &MockVault) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(mock.ca_pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none());
        for (host, addr) in &mock.info().resolve {
            builder = builder.resolve(host, *addr);
        }
        builder.build().unwrap()
    }

    fn client_options(mock: &MockVault) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(http(mock)))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(10),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(1),
            }),
            ..ClientOptions::default()
        }
    }

    fn build_for(mock: &MockVault, source: &CredentialSource) -> Arc<dyn TokenCredential> {
        build(source, &mock.info().authority_host, client_options(mock)).unwrap()
    }

    fn scope(mock: &MockVault) -> String {
        format!("{}/.default", mock.info().vaults["kv1"].resource)
    }

    fn tenant(mock: &MockVault) -> String {
        mock.info().tenant_id.clone()
    }

    /// Gets a token from `credential` and reads the secret with it, over the wire.
    async fn assert_token_reads_secret(mock: &MockVault, credential: &Arc<dyn TokenCredential>) {
        let token = credential.get_token(&[&scope(mock)], None).await.unwrap();
        let url = format!(
            "{}/secrets/{SECRET_NAME}?api-version=2025-07-01",
            mock.info().vaults["kv1"].url
        );
        let resp = http(mock)
            .get(&url)
            .bearer_auth(token.token.secret())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["value"], SECRET_VALUE);

        // Without the token the vault challenges: the 200 above is the token's doing.
        let resp = http(mock).get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn client_secret_token_reads_a_secret() {
        let mock = start_mock(&TestCert::rsa()).await;
        let source = CredentialSource::ClientSecret {
            tenant_id: tenant(&mock),
            client_id: SP_CLIENT_ID.into(),
            secret: Secret::new(SP_SECRET),
        };
        let credential = build_for(&mock, &source);
        assert!(!format!("{credential:?}").contains(SP_SECRET));
        assert_token_reads_secret(&mock, &credential).await;
    }

    #[tokio::test]
    async fn wrong_client_secret_is_refused() {
        let mock = start_mock(&TestCert::rsa()).await;
        let source = CredentialSource::ClientSecret {
            tenant_id: tenant(&mock),
            client_id: SP_CLIENT_ID.into(),
            secret: Secret::new("not-the-secret"),
        };
        let err = build_for(&mock, &source)
            .get_token(&[&scope(&mock)], None)
            .await
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
        assert!(!err.to_string().contains("not-the-secret"), "{err}");
    }

    #[tokio::test]
    async fn workload_identity_token_reads_a_secret() {
        let mock = start_mock(&TestCert::rsa()).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let sa_token = mock.sa_token(WI_SUBJECT, Duration::from_secs(600)).unwrap();
        // Kubelet's projected files need not end with a newline; the mock tolerates one.
        std::fs::write(&token_file, format!("{sa_token}\n")).unwrap();
        let source = CredentialSource::WorkloadIdentity {
            tenant_id: tenant(&mock),
            client_id: WI_CLIENT_ID.into(),
            token_file,
        };
        assert_token_reads_secret(&mock, &build_for(&mock, &source)).await;
    }

    #[tokio::test]
    async fn workload_identity_with_another_subject_is_refused() {
        let mock = start_mock(&TestCert::rsa()).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let sa_token = mock
            .sa_token(
                "system:serviceaccount:default:intruder",
                Duration::from_secs(600),
            )
            .unwrap();
        std::fs::write(&token_file, sa_token).unwrap();
        let source = CredentialSource::WorkloadIdentity {
            tenant_id: tenant(&mock),
            client_id: WI_CLIENT_ID.into(),
            token_file,
        };
        let err = build_for(&mock, &source)
            .get_token(&[&scope(&mock)], None)
            .await
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
    }

    #[test]
    fn workload_identity_needs_its_token_file() {
        let source = CredentialSource::WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            token_file: "/nonexistent/akv-bridge/token".into(),
        };
        let err = build(
            &source,
            "https://login.microsoftonline.com",
            ClientOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                CredentialError::Sdk {
                    kind: "workload identity",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn client_certificate_token_reads_a_secret() {
        let cert = TestCert::rsa();
        let mock = start_mock(&cert).await;
        let dir = tempfile::tempdir().unwrap();
        for password in [Some(PFX_PASSWORD), None] {
            let pfx_path = cert.write_pfx(
                dir.path(),
                std::slice::from_ref(&cert.der),
                password.unwrap_or(""),
            );
            let source = CredentialSource::ClientCertificate {
                tenant_id: tenant(&mock),
                client_id: CERT_CLIENT_ID.into(),
                pfx_path,
                password: password.map(Secret::new),
            };
            let credential = build_for(&mock, &source);
            let dbg = format!("{credential:?}");
            assert!(!dbg.contains(PFX_PASSWORD), "{dbg}");
            assert_token_reads_secret(&mock, &credential).await;
        }
    }

    #[tokio::test]
    async fn certificate_of_another_key_is_refused() {
        let registered = TestCert::rsa();
        let mock = start_mock(&registered).await;
        let other = TestCert::rsa();
        let dir = tempfile::tempdir().unwrap();
        let pfx_path = other.write_pfx(dir.path(), std::slice::from_ref(&other.der), "");
        let source = CredentialSource::ClientCertificate {
            tenant_id: tenant(&mock),
            client_id: CERT_CLIENT_ID.into(),
            pfx_path,
            password: None,
        };
        let err = build_for(&mock, &source)
            .get_token(&[&scope(&mock)], None)
            .await
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credential), "{err:?}");
    }

    #[test]
    fn assertion_is_a_well_formed_rs256_jwt() {
        let cert = TestCert::rsa();
        let dir = tempfile::tempdir().unwrap();
        let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), "pw");
        let audience = "https://login.example/tenant-1/oauth2/v2.0/token";
        let assertion =
            CertificateAssertion::from_pfx(&pfx_path, Some(&Secret::new("pw")), "app-1", audience)
                .unwrap();
        let dbg = format!("{assertion:?}");
        assert!(dbg.contains("key: [redacted]"), "{dbg}");

        let jwt = assertion.sign().unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        let x5t = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &cert.der));
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "x5t": x5t}));
        assert_eq!(x509::x5t(&cert.der), x5t);

        let claims = decode_part(parts[1]);
        assert_eq!(claims["aud"], audience);
        assert_eq!(claims["iss"], "app-1");
        assert_eq!(claims["sub"], "app-1");
        let nbf = claims["nbf"].as_u64().unwrap();
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(exp - nbf, ASSERTION_LIFETIME_SECS);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(nbf.abs_diff(now) <= 5, "nbf {nbf}, now {now}");
        let jti = claims["jti"].as_str().unwrap();
        let groups: Vec<usize> = jti.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{jti}");
        assert!(jti.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&jti[14..15], "4", "{jti}");
        assert!("89ab".contains(&jti[19..20]), "{jti}");

        // Signed by the certificate's key.
        let key = RsaKeyPair::from_pkcs8(&cert.pkcs8).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();

        // Every call makes a fresh assertion.
        let again = assertion.sign().unwrap();
        assert_ne!(
            decode_part(again.split('.').nth(1).unwrap())["jti"],
            claims["jti"]
        );
    }

    #[test]
    fn audience_is_the_sdk_token_endpoint() {
        let url = parse_authority("https://login.microsoftonline.com").unwrap();
        assert_eq!(
            token_endpoint(&url, "t1").unwrap(),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        // A trailing slash, an explicit default port or a path change nothing, as in the SDK.
        let url = parse_authority("https://login.microsoftonline.us:443/some/path/").unwrap();
        assert_eq!(
            token_endpoint(&url, "t1").unwrap(),
            "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
        );
        let url = parse_authority("https://localhost:8443").unwrap();
        assert_eq!(
            token_endpoint(&url, "t1").unwrap(),
            "https://localhost:8443/t1/oauth2/v2.0/token"
        );
    }

    #[test]
    fn leaf_is_found_by_key_in_a_chain() {
        let cert = TestCert::rsa();
        let unrelated = TestCert::rsa();
        let dir = tempfile::tempdir().unwrap();
        // The key's certificate is not first: it is still picked.
        let pfx_path = cert.write_pfx(dir.path(), &[cert.der.clone(), unrelated.der.clone()], "");
        let assertion = CertificateAssertion::from_pfx(&pfx_path, None, "a", "aud").unwrap();
        assert_eq!(assertion.x5t, x509::x5t(&cert.der));
    }

    fn cert_source(pfx_path: PathBuf, password: Option<&str>) -> CredentialSource {
        CredentialSource::ClientCertificate {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: CERT_CLIENT_ID.into(),
            pfx_path,
            password: password.map(|p| Secret::new(p.to_owned())),
        }
    }

    fn build_error(source: &CredentialSource) -> CredentialError {
        build(
            source,
            "https://login.microsoftonline.com",
            ClientOptions::default(),
        )
        .unwrap_err()
    }

    #[test]
    fn ec_keys_are_refused() {
        let cert = TestCert::ec();
        let dir = tempfile::tempdir().unwrap();
        let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), "");
        let err = build_error(&cert_source(pfx_path.clone(), None));
        assert!(matches!(err, CredentialError::NotRsa { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "client certificate {}: certificate credentials need an RSA key, found an EC key",
                pfx_path.display()
            )
        );
    }

    #[test]
    fn wrong_pfx_password_is_refused_without_echoing_it() {
        let cert = TestCert::rsa();
        let dir = tempfile::tempdir().unwrap();
        let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&cert.der), PFX_PASSWORD);
        for wrong in [Some("guess-Pa55"), None] {
            let err = build_error(&cert_source(pfx_path.clone(), wrong));
            assert!(
                matches!(err, CredentialError::CertificatePassword { .. }),
                "{err:?}"
            );
            let text = format!("{err} {err:?}");
            assert!(text.contains(&pfx_path.display().to_string()), "{text}");
            assert!(
                !text.contains(PFX_PASSWORD) && !text.contains("guess-Pa55"),
                "{text}"
            );
        }
    }

    #[test]
    fn pfx_whose_certificate_does_not_match_its_key_is_refused() {
        let cert = TestCert::rsa();
        let other = TestCert::rsa();
        let dir = tempfile::tempdir().unwrap();
        let pfx_path = cert.write_pfx(dir.path(), std::slice::from_ref(&other.der), "");
        let err = build_error(&cert_source(pfx_path, None));
        assert!(matches!(err, CredentialError::InvalidPfx { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("no certificate in it matches its private key"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_or_garbage_pfx_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pfx");
        let err = build_error(&cert_source(missing.clone(), None));
        assert!(
            matches!(err, CredentialError::ReadCertificate { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pfx");
        std::fs::write(&garbage, b"-----BEGIN CERTIFICATE-----\nnot a pfx\n").unwrap();
        let err = build_error(&cert_source(garbage.clone(), Some("garbage-Pa55")));
        assert!(matches!(err, CredentialError::InvalidPfx { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains(&garbage.display().to_string()), "{text}");
        assert!(!text.contains("garbage-Pa55"), "{text}");
    }

    #[test]
    fn authority_must_be_https() {
        let source = CredentialSource::ManagedIdentity {
            user_assigned_client_id: None,
        };
        for (authority, reason) in [
            ("http://login.microsoftonline.com", "https"),
            ("login.microsoftonline.com", "absolute URL"),
            ("", "absolute URL"),
        ] {
            let err = build(&source, authority, ClientOptions::default()).unwrap_err();
            assert!(
                matches!(err, CredentialError::InvalidAuthority { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn managed_identity_builds_without_network() {
        // Which endpoint it uses (IMDS or App Service) comes from the process environment,
        // which tests cannot set (no unsafe): only construction is checked here.
        for id in [
            None,
            Some("9a8b7c6d-0000-1111-2222-333344445555".to_owned()),
        ] {
            let source = CredentialSource::ManagedIdentity {
                user_assigned_client_id: id,
            };
            build(
                &source,
                "https://login.microsoftonline.com",
                ClientOptions::default(),
            )
            .unwrap();
        }
    }

    #[test]
    fn client_secret_with_an_invalid_tenant_is_refused() {
        let source = CredentialSource::ClientSecret {
            tenant_id: "not a tenant/../x".into(),
            client_id: SP_CLIENT_ID.into(),
            secret: Secret::new(SP_SECRET),
        };
        let err = build_error(&source);
        assert!(
            matches!(
                err,
                CredentialError::Sdk {
                    kind: "client secret",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!format!("{err} {err:?}").contains(SP_SECRET));
    }

    #[test]
    fn key_algorithm_sniffing() {
        assert_eq!(key_algorithm(&TestCert::rsa().pkcs8), KeyAlgorithm::Rsa);
        assert_eq!(key_algorithm(&TestCert::ec().pkcs8), KeyAlgorithm::Ec);
        assert_eq!(key_algorithm(b"\x30\x03\x02\x01\x00"), KeyAlgorithm::Other);
    }

    #[test]
    fn uuids_are_version_4() {
        let ids: BTreeMap<String, ()> = (0..64).map(|_| (random_uuid(), ())).collect();
        assert_eq!(ids.len(), 64);
        for id in ids.keys() {
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
            assert!("89ab".contains(&id[19..20]), "{id}");
        }
    }
}
