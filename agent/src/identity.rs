//! The node's identity on the data partition, under `<data_dir>/agent/`:
//!
//! | file | what |
//! |---|---|
//! | `node.key` | the node's private key (PKCS#8 PEM), mode 0600, in a 0700 directory |
//! | `node.crt` | its certificate from the master |
//! | `ca.crt` | the cluster CA, the only trust anchor for the master |
//! | `identity.json` | node name, role, cluster name, master address and the name its certificate carries |
//!
//! An identity left readable by an older install (umask 022) is made private again when it
//! is loaded.
//!
//! A renewal replaces key and certificate together, so the set is written to
//! `agent.new/` and swapped in with renames: a crash leaves the old set or the new one,
//! never a key beside a certificate for another key. The join token is never stored.

use std::io;
use std::path::{Path, PathBuf};

use cloudos_cluster::client::JoinedIdentity;
use cloudos_cluster::pki;
use cloudos_cluster::Role;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use cloudos_cluster::files::{make_private, write_atomic, write_private};

const KEY_FILE: &str = "node.key";
const CERT_FILE: &str = "node.crt";
const CA_FILE: &str = "ca.crt";
const META_FILE: &str = "identity.json";

/// Errors reading or writing the stored identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityStoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the stored identity in {dir} is damaged ({why}); delete the directory and join again with a token")]
    Damaged { dir: PathBuf, why: String },
}

/// Everything the agent needs to reconnect without a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub node_name: String,
    pub joined: JoinedIdentity,
}

impl StoredIdentity {
    /// When the certificate expires.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        cert_info(&self.joined.cert_pem).map(|info| info.not_after)
    }
}

fn cert_info(cert_pem: &str) -> Option<pki::CertInfo> {
    let der = pki::cert_from_pem(cert_pem, "node certificate").ok()?;
    pki::inspect_cert(&der).ok()
}

/// The non-secret, non-PEM part, as `identity.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    node_name: String,
    role: Role,
    cluster_name: String,
    master_addr: String,
    master_name: String,
}

/// Reads and writes the identity under one data directory.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    dir: PathBuf,
}

impl IdentityStore {
    pub fn new(data_dir: &Path) -> Self {
        IdentityStore {
            dir: data_dir.join("agent"),
        }
    }

    /// The directory holding the identity.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.dir.with_file_name(name)
    }

    /// The master's `host:port` of the stored identity, read from its metadata alone (no
    /// key is opened): for the node's clock, which asks its master for the time.
    pub fn master_address(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(META_FILE)).ok()?;
        serde_json::from_str::<Meta>(&text)
            .ok()
            .map(|meta| meta.master_addr)
    }

    /// The stored identity, or `None` when the node has not joined (or was evicted).
    pub fn load(&self) -> Result<Option<StoredIdentity>, IdentityStoreError> {
        // A crash between the two renames of `save` leaves only the old set.
        let old = self.sibling(".old");
        if !self.dir.exists() && old.exists() {
            rename(&old, &self.dir)?;
        }
        for path in [self.dir.clone(), self.dir.join(KEY_FILE)] {
            make_private(&path).map_err(|source| IdentityStoreError::Io {
                action: "protect",
                path,
                source,
            })?;
        }
        let meta_path = self.dir.join(META_FILE);
        let meta_text = match std::fs::read_to_string(&meta_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityStoreError::Io {
                    action: "read",
                    path: meta_path,
                    source,
                })
            }
        };
        let damaged = |why: String| IdentityStoreError::Damaged {
            dir: self.dir.clone(),
            why,
        };
        let meta: Meta =
            serde_json::from_str(&meta_text).map_err(|e| damaged(format!("{META_FILE}: {e}")))?;
        let read = |file: &str| {
            let path = self.dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| IdentityStoreError::Io {
                action: "read",
                path,
                source,
            })
        };
        let cert_pem = read(CERT_FILE)?;
        let info = cert_info(&cert_pem)
            .ok_or_else(|| damaged(format!("{CERT_FILE} is not a certificate")))?;
        Ok(Some(StoredIdentity {
            node_name: meta.node_name,
            joined: JoinedIdentity {
                key_pem: read(KEY_FILE)?,
                ca_pem: read(CA_FILE)?,
                cluster_name: meta.cluster_name,
                role: meta.role,
                renew_after: info.renew_at(),
                master_addr: meta.master_addr,
                master_name: meta.master_name,
                cert_pem,
            },
        }))
    }

    /// Writes the whole identity, replacing any previous one at once.
    pub fn save(&self, identity: &StoredIdentity) -> Result<(), IdentityStoreError> {
        let staging = self.sibling(".new");
        let old = self.sibling(".old");
        remove_dir(&staging)?;
        create_private_dir(&staging)?;
        let id = &identity.joined;
        let meta = Meta {
            node_name: identity.node_name.clone(),
            role: id.role,
            cluster_name: id.cluster_name.clone(),
            master_addr: id.master_addr.clone(),
            master_name: id.master_name.clone(),
        };
        let meta_json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        let key_path = staging.join(KEY_FILE);
        // Created 0600: the key is never in a file others may open, not even for a moment.
        write_private(&key_path, id.key_pem.as_bytes()).map_err(|source| {
            IdentityStoreError::Io {
                action: "write",
                path: key_path.clone(),
                source,
            }
        })?;
        write(&staging.join(CERT_FILE), id.cert_pem.as_bytes())?;
        write(&staging.join(CA_FILE), id.ca_pem.as_bytes())?;
        write(&staging.join(META_FILE), &meta_json)?;
        remove_dir(&old)?;
        if self.dir.exists() {
            rename(&self.dir, &old)?;
        }
        rename(&staging, &self.dir)?;
        remove_dir(&old)
    }

    /// Forgets the identity (after an eviction): the node needs a token to join again.
    pub fn remove(&self) -> Result<(), IdentityStoreError> {
        remove_dir(&self.sibling(".old"))?;
        let _ = std::fs::remove_file(self.masters_file());
        remove_dir(&self.dir)
    }

    /// Where the list of the cluster's masters is kept: beside the identity, not in it, as
    /// it changes apart from the identity (and a renewal's save replaces the identity).
    fn masters_file(&self) -> PathBuf {
        self.sibling(".masters.json")
    }

    /// Every master's `host:port` as the master last said (empty with a single master).
    pub fn masters(&self) -> Vec<String> {
        std::fs::read(self.masters_file())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Keeps the masters' addresses the master sent.
    pub fn save_masters(&self, addresses: &[String]) -> Result<(), IdentityStoreError> {
        let json = serde_json::to_vec(addresses).unwrap_or_default();
        write(&self.masters_file(), &json)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IdentityStoreError> {
    write_atomic(path, bytes).map_err(|source| IdentityStoreError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), IdentityStoreError> {
    std::fs::rename(from, to).map_err(|source| IdentityStoreError::Io {
        action: "rename",
        path: from.to_owned(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityStoreError> {
    let io = |source| IdentityStoreError::Io {
        action: "create",
        path: dir.to_owned(),
        source,
    };
    cloudos_cluster::files::create_private_dir(dir).map_err(io)
}

fn remove_dir(dir: &Path) -> Result<(), IdentityStoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(IdentityStoreError::Io {
            action: "remove",
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::pki::{ClusterCa, NODE_CERT_LIFETIME};
    use cloudos_cluster::{NodeIdentity, NodeKey};
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nodeos-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn identity(ca: &ClusterCa) -> StoredIdentity {
        let now = OffsetDateTime::now_utc();
        let key = NodeKey::generate().expect("key");
        let cert = ca
            .sign_csr(
                &key.csr_pem("n1").expect("csr"),
                &NodeIdentity::new("n1", Role::Compute).expect("id"),
                NODE_CERT_LIFETIME,
                now,
            )
            .expect("sign");
        StoredIdentity {
            node_name: "n1".into(),
            joined: JoinedIdentity {
                key_pem: key.to_pem(),
                cert_pem: cert.cert_pem,
                ca_pem: ca.cert_pem().to_owned(),
                cluster_name: "lab".into(),
                role: Role::Compute,
                renew_after: cert.info.renew_at(),
                master_addr: "10.0.0.5:9443".into(),
                master_name: "master.lan".into(),
            },
        }
    }

    #[test]
    fn saves_loads_replaces_and_removes() {
        let data = temp_dir("store");
        let store = IdentityStore::new(&data);
        assert_eq!(store.load().expect("empty"), None);
        let ca = ClusterCa::create("lab", OffsetDateTime::now_utc()).expect("ca");
        let first = identity(&ca);
        assert_eq!(store.master_address(), None);
        store.save(&first).expect("save");
        assert_eq!(store.load().expect("load"), Some(first.clone()));
        assert_eq!(store.master_address().as_deref(), Some("10.0.0.5:9443"));
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("agent/node.key")), 0o600);
        assert_eq!(mode(&data.join("agent")), 0o700);

        let second = identity(&ca);
        store.save(&second).expect("replace");
        assert_eq!(store.load().expect("load"), Some(second.clone()));
        let entries: Vec<_> = std::fs::read_dir(&data)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries, ["agent"], "no staging left behind");

        // A crash between the renames leaves only agent.old: it is used.
        std::fs::rename(data.join("agent"), data.join("agent.old")).expect("simulate");
        assert_eq!(store.load().expect("recover"), Some(second));

        store.remove().expect("remove");
        assert_eq!(store.load().expect("gone"), None);
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn damaged_files_say_what_to_do() {
        let data = temp_dir("damaged");
        std::fs::create_dir_all(data.join("agent")).expect("dir");
        std::fs::write(data.join("agent/identity.json"), "{").expect("write");
        let err = IdentityStore::new(&data)
            .load()
            .expect_err("damaged")
            .to_string();
        assert!(
            err.contains("damaged") && err.contains("join again"),
            "{err}"
        );
        std::fs::remove_dir_all(&data).expect("cleanup");
    }
}
