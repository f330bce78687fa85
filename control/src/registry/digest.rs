//! Content digests (`sha256:<64 hex>`), the registry's only addressing scheme for content.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::RegistryError;

/// A validated `sha256` content digest.
///
/// Only sha256 is accepted: it is what every client produces, and refusing the rest keeps the
/// on-disk layout to one algorithm directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lower-case hex>`.
    pub fn parse(text: &str) -> Result<Digest, RegistryError> {
        let invalid = |reason: &str| RegistryError::DigestInvalid {
            digest: text.to_string(),
            reason: reason.to_string(),
        };
        let (algorithm, hex) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected algorithm:hex"))?;
        if algorithm != "sha256" {
            return Err(invalid("only sha256 is supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("expected 64 lower-case hex digits"));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The hex part, used as the file name in storage.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_only_when_well_formed() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            "sha256",
            "sha256:abc",
            "sha512:aaaa",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}/../x", "a".repeat(60)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn digest_of_empty_content_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
