//! Wrapping a seed locally with a key version's RSA public key: exactly what Key Vault's
//! `encrypt` operation computes (RSA-OAEP with SHA-256 and MGF1-SHA-256 and an empty
//! label for `RSA-OAEP-256`; PKCS#1 v1.5 for `RSA1_5`), so Key Vault's `decrypt` unwraps
//! it. Encrypting needs no secret and no Key Vault call: the public key comes with the
//! metadata read the key poll already makes. RSA encryption is randomised, so two wraps of
//! one seed differ, as two Key Vault `encrypt` calls do.

use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey,
    PublicKeyComponents,
};

pub use crate::azure::keyvault::RsaPublic;
use crate::kms::envelope::{V1_ALGORITHM, WRAP_ALGORITHM};

/// Why a public key cannot wrap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// The modulus or exponent is not a usable RSA public key.
    #[error("the key version's RSA public key is not usable: {0}")]
    BadKey(&'static str),
    /// The algorithm is not one this plugin wraps with.
    #[error("algorithm {0} is not wrapped locally")]
    Algorithm(String),
    /// The cryptographic library refused the plaintext (too long for the key).
    #[error("local RSA encryption failed")]
    Encrypt,
}

/// A key version's public key, ready to wrap.
pub struct PublicWrapKey {
    oaep: OaepPublicEncryptingKey,
    pkcs1: Pkcs1PublicEncryptingKey,
}

impl std::fmt::Debug for PublicWrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicWrapKey({} bits)", self.oaep.key_size_bits())
    }
}

impl PublicWrapKey {
    /// From the JWK's modulus and exponent.
    pub fn new(rsa: &RsaPublic) -> Result<Self, WrapError> {
        let components = PublicKeyComponents {
            n: rsa.n.as_slice(),
            e: rsa.e.as_slice(),
        };
        let key: PublicEncryptingKey = components
            .try_into()
            .map_err(|_| WrapError::BadKey("rejected by the RSA library"))?;
        let oaep = OaepPublicEncryptingKey::new(key.clone())
            .map_err(|_| WrapError::BadKey("not usable for RSA-OAEP"))?;
        let pkcs1 = Pkcs1PublicEncryptingKey::new(key)
            .map_err(|_| WrapError::BadKey("not usable for RSA1_5"))?;
        Ok(Self { oaep, pkcs1 })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.oaep.key_size_bits()
    }

    /// Wraps `plaintext` with `algorithm` (`RSA-OAEP-256` or `RSA1_5`); returns the raw RSA
    /// ciphertext, as Key Vault's `encrypt` result before base64url.
    pub fn wrap(&self, algorithm: &str, plaintext: &[u8]) -> Result<Vec<u8>, WrapError> {
        let mut out = vec![0u8; self.oaep.ciphertext_size()];
        let written = match algorithm {
            WRAP_ALGORITHM => self
                .oaep
                .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
                .map_err(|_| WrapError::Encrypt)?
                .len(),
            V1_ALGORITHM => self
                .pkcs1
                .encrypt(plaintext, &mut out)
                .map_err(|_| WrapError::Encrypt)?
                .len(),
            other => return Err(WrapError::Algorithm(other.chars().take(32).collect())),
        };
        out.truncate(written);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::{
        KeySize, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
    };

    use super::*;
    use crate::kms::backend::fake::rsa_public as components;

    #[test]
    fn local_wraps_open_with_the_private_key_for_both_algorithms() {
        for size in [KeySize::Rsa2048, KeySize::Rsa3072, KeySize::Rsa4096] {
            let private = PrivateDecryptingKey::generate(size).unwrap();
            let public = PublicWrapKey::new(&components(&private)).unwrap();
            assert_eq!(public.bits(), private.key_size_bits());
            let seed = [7u8; 32];

            let a = public.wrap(WRAP_ALGORITHM, &seed).unwrap();
            let b = public.wrap(WRAP_ALGORITHM, &seed).unwrap();
            assert_ne!(a, b, "OAEP is randomised");
            assert_eq!(a.len(), private.key_size_bytes());
            let oaep = OaepPrivateDecryptingKey::new(private.clone()).unwrap();
            let mut out = vec![0; oaep.min_output_size()];
            let plain = oaep
                .decrypt(&OAEP_SHA256_MGF1SHA256, &a, &mut out, None)
                .unwrap();
            assert_eq!(plain, seed);

            let v1 = public.wrap(V1_ALGORITHM, &seed).unwrap();
            let pkcs1 = Pkcs1PrivateDecryptingKey::new(private).unwrap();
            let mut out = vec![0; pkcs1.min_output_size()];
            assert_eq!(pkcs1.decrypt(&v1, &mut out).unwrap(), seed);
        }
    }

    #[test]
    fn bad_keys_and_algorithms_are_errors_not_panics() {
        assert!(PublicWrapKey::new(&RsaPublic::new(&[0xff; 8], &[3]).unwrap()).is_err());
        // An exponent longer than the modulus: whatever the library decides, no panic.
        if let Ok(odd) = PublicWrapKey::new(&RsaPublic::new(&[0xff; 256], &[0xff; 300]).unwrap()) {
            let _ = odd.wrap(WRAP_ALGORITHM, &[1; 32]);
        }
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let public = PublicWrapKey::new(&components(&private)).unwrap();
        assert!(matches!(
            public.wrap("RSA-OAEP", &[1; 32]),
            Err(WrapError::Algorithm(_))
        ));
        assert_eq!(
            public.wrap(WRAP_ALGORITHM, &[1; 200]),
            Err(WrapError::Encrypt),
            "longer than OAEP-256 carries in 2048 bits"
        );
    }
}
