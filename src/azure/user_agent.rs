//! `--custom-user-agent`: text the Go provider appends to the `User-Agent` of its Key Vault
//! requests, so an operator can tell clusters apart in Key Vault's logs. [`UserAgentSuffix`]
//! appends it (after `akv-bridge/<version>`) to the SDK's own `User-Agent`.

use std::sync::Arc;

use azure_core::http::headers::{HeaderName, HeaderValue};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};

/// Longest suffix accepted.
pub const MAX_LEN: usize = 256;

/// Why a suffix is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserAgentError {
    /// Too long.
    #[error("--custom-user-agent is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Not printable ASCII: it could not be sent in a header, or would split it.
    #[error("--custom-user-agent must be printable ASCII (no control characters)")]
    NotPrintable,
}

/// Appends ` akv-bridge/<version>` and the operator's text to `User-Agent`.
#[derive(Debug, Clone)]
pub struct UserAgentSuffix {
    suffix: String,
}

impl UserAgentSuffix {
    /// The suffix for `custom` (may be empty: then only our product token).
    pub fn new(custom: &str) -> Result<Self, UserAgentError> {
        let custom = custom.trim();
        if custom.len() > MAX_LEN {
            return Err(UserAgentError::TooLong);
        }
        if !custom.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(UserAgentError::NotPrintable);
        }
        let mut suffix = format!("akv-bridge/{}", crate::SEMVER);
        if !custom.is_empty() {
            suffix.push(' ');
            suffix.push_str(custom);
        }
        Ok(Self { suffix })
    }

    /// The text appended.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// As a pipeline policy (per call: after the SDK's user-agent policy has set the header).
    pub fn policy(&self) -> Arc<dyn Policy> {
        Arc::new(self.clone())
    }
}

// The trait declares `&Context` with its lifetime hidden; `async_trait` needs the same.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for UserAgentSuffix {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let (inner, rest) = crate::azure::upstream::next_policy(next, "user-agent policy")?;
        let name = HeaderName::from_static("user-agent");
        let value = match request.headers().get_optional_str(&name) {
            Some(sdk) if !sdk.contains(&self.suffix) => format!("{sdk} {}", self.suffix),
            Some(sdk) => sdk.to_owned(),
            None => self.suffix.clone(),
        };
        request.insert_header(name, HeaderValue::from(value));
        inner.send(ctx, request, rest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_text_follows_our_product_token() {
        let s = UserAgentSuffix::new("contoso-prod/1.2 (cluster=east)").unwrap();
        assert_eq!(
            s.suffix(),
            format!(
                "akv-bridge/{} contoso-prod/1.2 (cluster=east)",
                crate::SEMVER
            )
        );
        assert_eq!(
            UserAgentSuffix::new("").unwrap().suffix(),
            format!("akv-bridge/{}", crate::SEMVER)
        );
    }

    #[test]
    fn header_breaking_text_is_refused() {
        assert_eq!(
            UserAgentSuffix::new("a\r\nX-Injected: 1").unwrap_err(),
            UserAgentError::NotPrintable
        );
        assert_eq!(
            UserAgentSuffix::new("caf\u{e9}").unwrap_err(),
            UserAgentError::NotPrintable
        );
        assert_eq!(
            UserAgentSuffix::new(&"x".repeat(MAX_LEN + 1)).unwrap_err(),
            UserAgentError::TooLong
        );
    }
}
