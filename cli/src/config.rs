//! The CLI's credentials and endpoint, in one directory:
//!
//! | file | what |
//! |---|---|
//! | `config.json` | endpoint (`host:port`), the name the master's certificate carries, cluster name, CA pin, user name |
//! | `ca.crt` | the cluster CA: the only certificate authority the CLI trusts for this master |
//! | `client.crt` | the admin client certificate from `cloudos login` |
//! | `client.key` | its private key, mode 0600 (the directory is 0700) |
//!
//! The directory is `--config DIR`, else `$CLOUDOS_CONFIG`, else `$XDG_CONFIG_HOME/cloudos`,
//! else `~/.config/cloudos`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cloudos_cluster::client::{ApiClient, JoinedIdentity};
use cloudos_cluster::pki;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

const CONFIG_FILE: &str = "config.json";
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "client.crt";
const KEY_FILE: &str = "client.key";

/// Where the configuration lives, from the flag and the environment (passed in, for tests).
pub fn resolve_dir(
    flag: Option<&Path>,
    cloudos_config: Option<&str>,
    xdg_config_home: Option<&str>,
    home: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = non_empty(cloudos_config) {
        return Ok(dir);
    }
    if let Some(xdg) = non_empty(xdg_config_home) {
        return Ok(xdg.join("cloudos"));
    }
    match non_empty(home) {
        Some(home) => Ok(home.join(".config").join("cloudos")),
        None => {
            bail!("cannot find a config directory: HOME is not set; give one with --config DIR")
        }
    }
}

/// The directory for this run: flag, then the environment.
pub fn dir_from_env(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var(name).ok();
    resolve_dir(
        flag,
        var("CLOUDOS_CONFIG").as_deref(),
        var("XDG_CONFIG_HOME").as_deref(),
        var("HOME").as_deref(),
    )
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `host:port` of the master.
    pub endpoint: String,
    /// The name to check the master's certificate against.
    pub master_name: String,
    pub cluster_name: String,
    /// `sha256:<hex>` of the cluster CA.
    pub ca_pin: String,
    /// The name in the client certificate.
    pub user: String,
    /// Every master's `host:port`, when the cluster has several (from `status`): where
    /// to turn when `endpoint` stops answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<String>,
}

/// Everything a logged-in CLI has.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub endpoint: Endpoint,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials a join as `user` returned.
    pub fn from_join(user: &str, id: &JoinedIdentity) -> anyhow::Result<Self> {
        let ca = pki::cert_from_pem(&id.ca_pem, "cluster CA")?;
        Ok(Credentials {
            endpoint: Endpoint {
                endpoint: id.master_addr.clone(),
                master_name: id.master_name.clone(),
                cluster_name: id.cluster_name.clone(),
                ca_pin: pki::CaPin::of_cert(&ca)?.to_string(),
                user: user.to_owned(),
                masters: Vec::new(),
            },
            ca_pem: id.ca_pem.clone(),
            cert_pem: id.cert_pem.clone(),
            key_pem: id.key_pem.clone(),
        })
    }

    /// Reads the credentials in `dir`; the error tells how to log in when there are none.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "not logged in: run cloudos login --token TOKEN (no {} yet)",
                config_path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", config_path.display()))
            }
        };
        let endpoint: Endpoint = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; run cloudos login --token TOKEN again",
                config_path.display()
            )
        })?;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {}; run cloudos login --token TOKEN again",
                    path.display()
                )
            })
        };
        Ok(Credentials {
            endpoint,
            ca_pem: read(CA_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: read(KEY_FILE)?,
        })
    }

    /// Writes the credentials to `dir` (created 0700; the key 0600 from its first byte).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot protect {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&self.endpoint)?;
        write_file(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_file(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        // Last: a config.json means the rest is in place.
        write_file(
            &dir.join(CONFIG_FILE),
            format!("{json}\n").as_bytes(),
            0o644,
        )
    }

    /// When the client certificate should be renewed and when it expires.
    pub fn cert_times(&self) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
        let der = pki::cert_from_pem(&self.cert_pem, "client certificate")?;
        let info = pki::inspect_cert(&der)?;
        Ok((info.renew_at(), info.not_after))
    }

    /// The API client for these credentials.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            &self.endpoint.endpoint,
            &self.endpoint.master_name,
            &self.ca_pem,
            &self.cert_pem,
            &self.key_pem,
        )?)
    }

    /// Credentials with a renewed certificate and key.
    pub fn renewed(&self, id: &JoinedIdentity) -> Credentials {
        Credentials {
            cert_pem: id.cert_pem.clone(),
            key_pem: id.key_pem.clone(),
            ..self.clone()
        }
    }
}

/// Writes `bytes` atomically to a file created with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    cloudos_cluster::files::write_atomic_mode(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dir_precedence() {
        let flag = Path::new("/flag");
        type Case<'a> = (
            Option<&'a Path>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case; 6] = [
            (
                Some(flag),
                Some("/env"),
                Some("/xdg"),
                Some("/home/a"),
                "/flag",
            ),
            (None, Some("/env"), Some("/xdg"), Some("/home/a"), "/env"),
            (None, None, Some("/xdg"), Some("/home/a"), "/xdg/cloudos"),
            (
                None,
                Some(""),
                Some(""),
                Some("/home/a"),
                "/home/a/.config/cloudos",
            ),
            (None, None, None, Some("/home/a"), "/home/a/.config/cloudos"),
            (None, None, Some("/xdg"), None, "/xdg/cloudos"),
        ];
        for (flag, env, xdg, home, want) in cases {
            assert_eq!(
                resolve_dir(flag, env, xdg, home).expect("dir"),
                PathBuf::from(want)
            );
        }
        let err = resolve_dir(None, None, None, None)
            .expect_err("no home")
            .to_string();
        assert!(err.contains("--config"), "{err}");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cloudos-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn not_logged_in_says_how_to_log_in() {
        let dir = temp_dir("none");
        let err = Credentials::load(&dir).expect_err("none").to_string();
        assert!(
            err.starts_with("not logged in: run cloudos login --token"),
            "{err}"
        );
    }

    #[test]
    fn saves_and_loads_with_a_private_key_file() {
        let dir = temp_dir("save").join("nested");
        let creds = Credentials {
            endpoint: Endpoint {
                endpoint: "10.0.0.5:9443".into(),
                master_name: "master-1".into(),
                cluster_name: "lab".into(),
                ca_pin: "sha256:00".into(),
                user: "alice".into(),
                masters: Vec::new(),
            },
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        creds.save(&dir).expect("save");
        assert_eq!(Credentials::load(&dir).expect("load"), creds);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("client.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(!format!("{creds:?}").contains("key\""));
        std::fs::write(dir.join("config.json"), "{").expect("damage");
        let err = Credentials::load(&dir).expect_err("damaged").to_string();
        assert!(err.contains("damaged"), "{err}");
        let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
    }
}
