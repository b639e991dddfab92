//! The mock's one holder of secret text, [`SecretString`]: client secrets, the managed
//! identity header, secret values, stored key material. Zeroized on drop (clones too);
//! `Debug` prints `[redacted]`, so the structs holding one derive `Debug`. It serializes
//! as a plain string because the mock's wire formats (request bodies, fixtures, the state
//! file) carry these values. The mock keeps its own small type rather than depend on
//! akv-bridge; the main crate's `akv_bridge::secret` is the same idea.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Secret text. Zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret text: to answer a request, to write the state file, for the start-up
    /// information line and fixtures. The only way out.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a presented secret in constant time (for equal lengths).
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // Read by `Debug` only.
    struct Holder {
        name: &'static str,
        value: SecretString,
    }

    #[test]
    fn debug_is_redacted_also_in_a_deriving_container() {
        let secret = SecretString::new("s3cr3t".into());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let holder = Holder {
            name: "n",
            value: secret.clone(),
        };
        assert_eq!(
            format!("{holder:?}"),
            "Holder { name: \"n\", value: [redacted] }"
        );
        assert_eq!(holder.value.expose(), "s3cr3t");
    }

    #[test]
    fn matches_and_serde_round_trip() {
        let secret = SecretString::from("abc".to_owned());
        assert!(secret.matches("abc"));
        assert!(!secret.matches("abd") && !secret.matches("ab"));
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"abc\"");
        let back: SecretString = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "abc");
    }
}
