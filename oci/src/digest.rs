//! Content digests (`sha256:<64 hex>`): parsing, validation and computing.
//!
//! Only sha256 is accepted: it is what every registry and the OCI image spec use, and a
//! digest string ends up in file names, so it is checked strictly before it gets there.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:<hex>` digest (64 lowercase hex characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest this crate accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} uses an unsupported algorithm; only sha256 is supported")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is malformed; expected sha256: followed by 64 lowercase hex characters")]
    Malformed(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex characters, without the `sha256:` prefix (used as a file name).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm part; always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_string()));
        }
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
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
    fn parses_and_rejects() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let table: &[(&str, Result<(), DigestError>)] = &[
            (empty, Ok(())),
            (
                "sha512:abcd",
                Err(DigestError::UnsupportedAlgorithm("sha512:abcd".into())),
            ),
            (
                "sha256:abcd",
                Err(DigestError::Malformed("sha256:abcd".into())),
            ),
            ("nocolon", Err(DigestError::Malformed("nocolon".into()))),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err(DigestError::Malformed(
                    "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                        .into(),
                )),
            ),
            (
                "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Err(DigestError::Malformed(
                    "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        .into(),
                )),
            ),
        ];
        for (input, want) in table {
            let got = input.parse::<Digest>().map(|_| ());
            assert_eq!(&got, want, "{input}");
        }
        assert_eq!(Digest::of(b"").to_string(), empty);
    }
}
