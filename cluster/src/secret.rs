//! Secrets (decision 65): small values a container reads as files, kept sealed by the
//! master and handed only to the nodes that run work using them.
//!
//! `cloudos secret create NAME -f FILE | --from-literal VALUE`; a spec names the secrets it
//! mounts (`--secret NAME`: the file `/run/secrets/NAME`, mode 0400, on a memory file
//! system of the node). Nothing here ever prints a value: [`SecretValue`]'s `Debug` says
//! how long it is, not what it holds.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::workload::SpecError;

/// Largest secret: a key, a certificate chain, a small config file.
pub const MAX_SECRET_BYTES: usize = 32 * 1024;
/// Most secrets one container mounts.
pub const MAX_SECRETS: usize = 32;
/// Where a container finds its secrets.
pub const SECRETS_DIR: &str = "/run/secrets";

/// A secret name: 1 to 63 of `a-z 0-9 _ . -`, starting with a letter or digit (it names a
/// file in the container).
pub fn validate_secret_name(name: &str) -> Result<(), SpecError> {
    if crate::util::is_file_name(name) {
        Ok(())
    } else {
        Err(SpecError::Secret(format!(
            "invalid secret name {name:?}: use 1-63 of a-z 0-9 _ . -, starting with a letter or digit"
        )))
    }
}

/// Checks a spec's secret names: each valid, each once, at most [`MAX_SECRETS`].
pub fn validate_refs(names: &[String]) -> Result<(), SpecError> {
    if names.len() > MAX_SECRETS {
        return Err(SpecError::Secret(format!(
            "{} secrets: a container mounts at most {MAX_SECRETS}",
            names.len()
        )));
    }
    for (i, name) in names.iter().enumerate() {
        validate_secret_name(name)?;
        if names[..i].contains(name) {
            return Err(SpecError::Secret(format!("secret {name} is named twice")));
        }
    }
    Ok(())
}

/// How an environment value names a secret: `--env KEY=secret:NAME`.
pub const ENV_PREFIX: &str = "secret:";
/// Largest secret an environment variable takes (the rest of the limit is for files).
pub const MAX_ENV_SECRET_BYTES: usize = 4096;

/// The secret an environment value refers to, if it is a reference.
pub fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix(ENV_PREFIX)
}

/// Checks the environment's secret references: valid keys and names, and no variable
/// also given a plain value.
pub fn validate_env_refs(
    refs: &std::collections::BTreeMap<String, String>,
    plain: &std::collections::BTreeMap<String, String>,
) -> Result<(), SpecError> {
    for (key, name) in refs {
        if !crate::workload::is_env_key(key) {
            return Err(SpecError::Env(key.clone()));
        }
        if plain.contains_key(key) {
            return Err(SpecError::Secret(format!(
                "{key} is given both a value and secret {name}"
            )));
        }
        validate_secret_name(name)?;
    }
    Ok(())
}

/// A secret's value as an environment variable's: text without NUL, at most
/// [`MAX_ENV_SECRET_BYTES`]. The error never holds the value.
pub fn env_value(name: &str, bytes: &[u8]) -> Result<String, String> {
    if bytes.len() > MAX_ENV_SECRET_BYTES {
        return Err(format!(
            "secret {name} is {} bytes: an environment variable takes at most {MAX_ENV_SECRET_BYTES}",
            bytes.len()
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(text.to_owned()),
        _ => Err(format!(
            "secret {name} is not text without NUL bytes: mount it as a file (--secret {name})"
        )),
    }
}

/// A secret's bytes on their way: base64 in JSON, never in a `Debug` string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue(#[serde(with = "b64")] pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<{} bytes>)", self.0.len())
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/secrets`: `cloudos secret create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretCreateRequest {
    pub name: String,
    pub value: SecretValue,
}

impl SecretCreateRequest {
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_secret_name(&self.name)?;
        if self.value.0.is_empty() || self.value.0.len() > MAX_SECRET_BYTES {
            return Err(SpecError::Secret(format!(
                "secret {} is {} bytes: give 1 to {MAX_SECRET_BYTES}",
                self.name,
                self.value.0.len()
            )));
        }
        Ok(())
    }
}

/// A secret as the master keeps it: sealed with its key (`master::secrets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub bytes: u64,
    /// The nonce and the ciphertext with its tag, base64.
    pub sealed: String,
}

/// `cloudos secret list`: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub bytes: u64,
    /// Tasks and replicas not ended, and services, whose spec names it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// A secret a run mounts, as its assignment carries it to its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSecret {
    pub name: String,
    pub value: SecretValue,
}

/// `bytes` as base64, for a sealed record.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of base64 `text`.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_never_shows_in_debug_and_travels_as_base64() {
        let v = SecretValue(b"hunter2".to_vec());
        assert_eq!(format!("{v:?}"), "SecretValue(<7 bytes>)");
        let request = SecretCreateRequest {
            name: "db-password".into(),
            value: v,
        };
        assert!(!format!("{request:?}").contains("hunter2"));
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains("aHVudGVyMg=="), "{json}");
        let back: SecretCreateRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request);
        assert!(serde_json::from_str::<SecretValue>("\"not base64!\"").is_err());
    }

    #[test]
    fn names_and_sizes_are_checked() {
        let make = |name: &str, len: usize| SecretCreateRequest {
            name: name.into(),
            value: SecretValue(vec![b'x'; len]),
        };
        assert!(make("tls.key", 10).validate().is_ok());
        assert!(make("TLS", 10).validate().is_err());
        assert!(make("../x", 10).validate().is_err());
        assert!(make("a", 0).validate().is_err());
        assert!(make("a", MAX_SECRET_BYTES + 1).validate().is_err());
        let twice = vec!["a".to_owned(), "a".to_owned()];
        assert!(validate_refs(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
