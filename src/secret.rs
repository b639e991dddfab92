//! The crate's one holder of secret material: [`SecretString`] for secret text (client
//! secrets, PFX passwords, service-account tokens, Key Vault secret values) and
//! [`SecretBytes`] for secret bytes (seeds).
//!
//! Both zeroize their buffer on drop (clones too), and their `Debug` prints a fixed
//! `[redacted]`, never the value nor its length (an empty `SecretString`, an unset field,
//! prints `""`). So a struct holding one can
//! `#[derive(Debug)]`: this leaf type redacts itself, as rustls-pki-types' private key types
//! print `[secret key elided]`. They have no `Display` and no `Serialize`.
//!
//! The value comes out only through `expose_secret`, which is easy to grep for. The Azure
//! SDK's own `Secret` (which redacts but does not zeroize) appears only where an SDK API
//! demands it: [`SecretString::to_sdk_secret`].

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use zeroize::{Zeroize, Zeroizing};

/// What `Debug` prints in place of a secret.
const REDACTED: &str = "[redacted]";

/// Secret text. Zeroized on drop; `Debug` prints `[redacted]` (or `""` when empty: an unset
/// secret reveals nothing and is worth seeing when debugging a configuration).
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// The secret itself. The only way out; callers hand it to a parser, a hash or the
    /// network, never to a log line.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (an unset field).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret's length in bytes (to weigh a cache entry; not for logs).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// A copy as the Azure SDK's `Secret`, for an SDK API that takes one (today the client
    /// secret credential). That copy is not zeroized: the SDK owns it from here.
    pub fn to_sdk_secret(&self) -> azure_core::credentials::Secret {
        azure_core::credentials::Secret::new(self.0.as_str().to_owned())
    }
}

impl From<String> for SecretString {
    /// Takes the string's buffer as is (no copy left behind).
    fn from(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(Zeroizing::new(value.to_owned()))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { REDACTED })
    }
}

impl Zeroize for SecretString {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// Constant time in the contents (the length is not hidden), like the SDK's `Secret`.
/// Comparing credentials (`CredentialSource`) is what needs it.
impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretString {}

/// A JSON (or YAML) string straight into a zeroizing buffer: the service-account tokens of
/// a CSI mount arrive in a JSON attribute.
impl<'de> de::Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SecretStringVisitor)
    }
}

struct SecretStringVisitor;

impl Visitor<'_> for SecretStringVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(SecretString::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(SecretString::from(v))
    }
}

/// Secret bytes. Zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// The secret itself. The only way out.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    /// Takes the vector's buffer as is (no copy left behind).
    fn from(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(value: Zeroizing<Vec<u8>>) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "s3cr3t-Value~42";

    /// A container that derives `Debug`, as the crate's configuration types do.
    #[derive(Debug)]
    struct Holder {
        name: &'static str,
        secret: SecretString,
        optional: Option<SecretString>,
        bytes: SecretBytes,
    }

    fn holder() -> Holder {
        Holder {
            name: "app-1",
            secret: SecretString::from(VALUE),
            optional: Some(SecretString::from(VALUE.to_owned())),
            bytes: SecretBytes::from(VALUE.as_bytes().to_vec()),
        }
    }

    #[test]
    fn debug_prints_a_fixed_text() {
        let secret = SecretString::from(VALUE);
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        // No length either: a short and a long secret look the same.
        assert_eq!(format!("{:?}", SecretString::from("x")), "[redacted]");
        assert_eq!(
            format!("{:?}", SecretString::from(VALUE.repeat(50))),
            "[redacted]"
        );
        assert_eq!(
            format!("{:?}", SecretBytes::from(vec![1, 2, 3])),
            "[redacted]"
        );
        assert_eq!(format!("{:?}", SecretBytes::default()), "[redacted]");
        // An unset secret shows as empty.
        assert_eq!(format!("{:?}", SecretString::default()), "\"\"");
    }

    #[test]
    fn a_deriving_container_prints_no_part_of_the_value() {
        let holder = holder();
        for shown in [format!("{holder:?}"), format!("{holder:#?}")] {
            assert!(shown.contains("app-1"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
            for part in ["s3cr3t", "Value", "42", &VALUE.len().to_string()] {
                assert!(!shown.contains(part), "{part} in {shown}");
            }
            // Nor its bytes as numbers.
            assert!(!shown.contains(&VALUE.as_bytes()[0].to_string()), "{shown}");
        }
        assert_eq!(
            format!("{holder:?}"),
            "Holder { name: \"app-1\", secret: [redacted], optional: Some([redacted]), \
             bytes: [redacted] }"
        );
    }

    #[test]
    fn expose_secret_is_the_way_out() {
        let holder = holder();
        assert_eq!(holder.name, "app-1");
        assert_eq!(holder.secret.expose_secret(), VALUE);
        assert_eq!(
            holder.optional.as_ref().map(SecretString::expose_secret),
            Some(VALUE)
        );
        assert_eq!(holder.secret.len(), VALUE.len());
        assert!(!holder.secret.is_empty() && SecretString::default().is_empty());
        assert_eq!(holder.bytes.expose_secret(), VALUE.as_bytes());
        assert_eq!(holder.bytes.expose_secret().len(), VALUE.len());
        assert!(
            !holder.bytes.expose_secret().is_empty()
                && SecretBytes::default().expose_secret().is_empty()
        );
        assert_eq!(
            SecretBytes::from(Zeroizing::new(vec![7])).expose_secret(),
            &[7]
        );
    }

    #[test]
    fn clones_are_independent() {
        let mut original = SecretString::from(VALUE);
        let copy = original.clone();
        original.zeroize();
        assert_eq!(original.expose_secret(), "");
        assert_eq!(copy.expose_secret(), VALUE);

        let mut original = SecretBytes::from(VALUE.as_bytes().to_vec());
        let copy = original.clone();
        original.zeroize();
        assert!(original.expose_secret().is_empty());
        assert_eq!(copy.expose_secret(), VALUE.as_bytes());
    }

    #[test]
    fn zeroize_empties_the_value() {
        let mut secret = SecretString::from(VALUE);
        secret.zeroize();
        assert!(secret.is_empty());
        assert_eq!(format!("{secret:?}"), "\"\"");
        let mut bytes = SecretBytes::from(vec![9; 32]);
        bytes.zeroize();
        assert!(bytes.expose_secret().is_empty());
    }

    #[test]
    fn equality_compares_contents() {
        let a = SecretString::from(VALUE);
        assert_eq!(a, SecretString::from(VALUE.to_owned()));
        assert_ne!(a, SecretString::from("s3cr3t-Value~43"));
        assert_ne!(a, SecretString::from("s3cr3t"));
        assert_ne!(a, SecretString::default());
        assert_eq!(SecretString::default(), SecretString::from(""));
    }

    #[test]
    fn deserializes_from_a_json_string_only() {
        let secret: SecretString = serde_json::from_str(&format!("\"{VALUE}\"")).unwrap();
        assert_eq!(secret.expose_secret(), VALUE);
        let borrowed: SecretString = serde_json::from_slice(b"\"abc\"").unwrap();
        assert_eq!(borrowed.expose_secret(), "abc");
        for not_a_string in ["1234", "null", "{}", "[\"a\"]"] {
            let err = serde_json::from_str::<SecretString>(not_a_string).unwrap_err();
            assert!(err.to_string().contains("a string"), "{err}");
        }
    }

    #[test]
    fn converts_to_the_sdk_secret() {
        let sdk = SecretString::from(VALUE).to_sdk_secret();
        assert_eq!(sdk.secret(), VALUE);
    }
}
