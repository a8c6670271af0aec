//! Registry credentials as cluster secrets: an admin logs the cluster in to a registry
//! once (`cloudos registry login HOST`), the master keeps the credentials sealed like any
//! secret, and hands them, inside the assignment, only to a node that pulls an image from
//! that registry. A node's own `registries.toml` entry for the registry still wins (an
//! override for one machine).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::workload::SpecError;

/// How the master names a registry's credentials among its sealed secrets: a name no
/// user secret can take (those have no `:`).
pub const SECRET_PREFIX: &str = "registry:";

/// The sealed secret's name for `registry`'s credentials.
pub fn secret_name(registry: &str) -> String {
    format!("{SECRET_PREFIX}{registry}")
}

/// The registry part of an image reference: the first path component when it looks like a
/// host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A registry as image references name it: `HOST` or `HOST:PORT`, lower case.
pub fn validate_registry(registry: &str) -> Result<(), SpecError> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(SpecError::Secret(format!(
            "invalid registry {registry:?}: give HOST or HOST:PORT as image references name it (lower case)"
        )))
    }
}

/// What a registry is told: a user and password, or a bearer token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAuth {
    Basic { username: String, password: String },
    Token { token: String },
}

/// The pull client's form of a cluster login, one place for both pullers (the master's
/// look at an image's platforms, the node's pull).
#[cfg(feature = "oci")]
impl From<RegistryAuth> for cloudos_oci::Credentials {
    fn from(auth: RegistryAuth) -> Self {
        match auth {
            RegistryAuth::Basic { username, password } => Self::Basic { username, password },
            RegistryAuth::Token { token } => Self::Bearer(token),
        }
    }
}

impl std::fmt::Debug for RegistryAuth {
    // Never a password or token in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Token { .. } => write!(f, "Token(***)"),
        }
    }
}

impl RegistryAuth {
    /// The user it logs in as, if any.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Basic { username, .. } => Some(username),
            Self::Token { .. } => None,
        }
    }

    fn validate(&self) -> Result<(), SpecError> {
        let (what, value) = match self {
            Self::Basic { username, password } => {
                if username.is_empty() || username.len() > 256 || username.contains(':') {
                    return Err(SpecError::Secret(
                        "a registry user name is 1 to 256 characters without ':'".into(),
                    ));
                }
                ("password", password)
            }
            Self::Token { token } => ("token", token),
        };
        if value.is_empty() || value.len() > 4096 || value.contains(['\r', '\n']) {
            return Err(SpecError::Secret(format!(
                "a registry {what} is one line of 1 to 4096 bytes"
            )));
        }
        Ok(())
    }
}

/// `POST /v1/registries`: `cloudos registry login`. Logging in again replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub registry: String,
    pub auth: RegistryAuth,
}

impl RegistryLogin {
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_registry(&self.registry)?;
        self.auth.validate()
    }
}

/// `cloudos registry list`: never a password or token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryInfo {
    pub registry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryList {
    pub registries: Vec<RegistryInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(
            registry_of("10.88.0.1:5000/lab/busybox:1"),
            "10.88.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/org/app:2"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }

    #[test]
    fn logins_are_checked_and_never_show_the_password() {
        let login = |registry: &str, auth: RegistryAuth| RegistryLogin {
            registry: registry.into(),
            auth,
        };
        let basic = |u: &str, p: &str| RegistryAuth::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert!(login("10.77.0.1:5001", basic("ci", "pw"))
            .validate()
            .is_ok());
        assert!(login("ghcr.io", basic("ci", "pw")).validate().is_ok());
        for bad in ["", "GHCR.io", "a/b", "h:0", "h:99999", "-h", "h:x"] {
            assert!(login(bad, basic("ci", "pw")).validate().is_err(), "{bad}");
        }
        assert!(login("h", basic("", "pw")).validate().is_err());
        assert!(login("h", basic("a:b", "pw")).validate().is_err());
        assert!(login("h", basic("ci", "")).validate().is_err());
        assert!(login("h", basic("ci", "two\nlines")).validate().is_err());
        let shown = format!(
            "{:?} {:?}",
            login("h", basic("ci", "hunter2")),
            RegistryAuth::Token {
                token: "tok3n".into()
            }
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("ci"), "{shown}");
        // No user secret can take a registry's name.
        assert!(crate::secret::validate_secret_name(&secret_name("h")).is_err());
    }
}
