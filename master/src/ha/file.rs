//! Where a master among several keeps its place in the etcd cluster:
//! `<data>/master/ha.json` (0600 in the 0700 master directory), written when the master
//! joins the masters, read at every start. A master without it is a master on its own.
//!
//! At start the etcd certificates are written out as the files etcd reads, under
//! `<data>/master/etcd/tls/`, and the member keeps its data in `<data>/master/etcd/data/`.

use std::fmt;
use std::path::{Path, PathBuf};

use cloudos_store::etcd::member::{ClusterState, Member, MemberTls};
use cloudos_store::etcd::{CLUSTER_PREFIX, REQUEST_TIMEOUT};
use cloudos_store::EtcdConfig;
use serde::{Deserialize, Serialize};

use super::member::EtcdProgram;
use super::{HaConfig, DEFAULT_LEASE};

/// Why the HA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HaFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged ({source}); restore it from another master's join, or from a backup"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this master runs an etcd member but knows no etcd program; give it with --etcd-binary (the appliance finds its own)")]
    NoProgram,
    #[error("this master was removed from the cluster's masters (`cloudos master remove`), so it does not start again; to make it a master again, move {path} away with the rest of <data>/master and join it with a new master token")]
    Removed { path: PathBuf },
}

/// This master's place among the masters.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HaFile {
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// The etcd CA certificate (PEM).
    pub etcd_ca_pem: String,
    /// This master's etcd certificate and key (PEM), from the etcd CA.
    pub cert_pem: String,
    pub key_pem: String,
    /// `host:port` where the other masters reach this master's API.
    pub advertise: String,
    /// This master's own etcd member, when it runs one.
    pub member: Option<MemberFile>,
    /// Whether this master brings the cluster's state into etcd, or finds it there.
    #[serde(default)]
    pub founding: Founding,
    /// The leader's lease in seconds, when not [`DEFAULT_LEASE`]: longer for masters
    /// that stall (emulated machines) or talk over a WAN, at the cost of a slower
    /// failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Set when an admin removed this master from the masters (`cloudos master remove`):
    /// it does not start again on this file. Its etcd member is gone from the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// Who puts the cluster's state into a new etcd cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Founding {
    /// The state is (or will be) in etcd: wait for it, never make a cluster.
    #[default]
    Join,
    /// Make a new cluster in etcd when there is none (a cluster born with several
    /// masters).
    Create,
    /// Move this master's embedded store (`<data>/master/state.redb`) into etcd when
    /// etcd holds no cluster yet: the first master, when its cluster got a second one.
    Migrate,
}

/// The settings of a master's etcd member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberFile {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    /// Every member when this one first started: `(name, peer URL)`.
    pub initial_cluster: Vec<(String, String)>,
    /// Whether the member joined a running etcd cluster (`false`: it started one).
    pub existing: bool,
}

impl fmt::Debug for HaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaFile")
            .field("endpoints", &self.endpoints)
            .field("advertise", &self.advertise)
            .field("member", &self.member)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl HaFile {
    /// The file of the master whose data directory is `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("master").join("ha.json")
    }

    /// The HA file, if this master has one.
    pub fn load(data_dir: &Path) -> Result<Option<HaFile>, HaFileError> {
        let path = HaFile::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HaFileError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| HaFileError::Parse { path, source })
    }

    /// Writes it (atomically, 0600, its directory 0700).
    pub fn save(&self, data_dir: &Path) -> Result<(), HaFileError> {
        let path = HaFile::path(data_dir);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                cloudos_cluster::files::create_private_dir(dir)?;
            }
            let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            cloudos_cluster::files::write_private(&path, &bytes)
        };
        write().map_err(|source| HaFileError::Write {
            path: path.clone(),
            source,
        })
    }

    /// The configuration it stands for; writes the member's TLS files first.
    pub fn config(
        &self,
        data_dir: &Path,
        program: Option<&EtcdProgram>,
    ) -> Result<HaConfig, HaFileError> {
        if self.removed {
            return Err(HaFileError::Removed {
                path: HaFile::path(data_dir),
            });
        }
        let etcd_dir = data_dir.join("master").join("etcd");
        let lease = self.lease_secs.map_or(DEFAULT_LEASE, |secs| {
            std::time::Duration::from_secs(secs.max(1))
        });
        let member = match &self.member {
            None => None,
            Some(m) => {
                let program = program.ok_or(HaFileError::NoProgram)?;
                let tls = self.write_tls(&etcd_dir.join("tls"))?;
                Some((
                    program.clone(),
                    Member {
                        name: m.name.clone(),
                        data_dir: etcd_dir.join("data"),
                        client_url: m.client_url.clone(),
                        peer_url: m.peer_url.clone(),
                        initial_cluster: m.initial_cluster.clone(),
                        state: if m.existing {
                            ClusterState::Existing
                        } else {
                            ClusterState::New
                        },
                        tls,
                        pace: lease,
                    },
                ))
            }
        };
        Ok(HaConfig {
            etcd: EtcdConfig {
                endpoints: self.endpoints.clone(),
                ca_pem: self.etcd_ca_pem.clone(),
                cert_pem: self.cert_pem.clone(),
                key_pem: self.key_pem.clone(),
                prefix: CLUSTER_PREFIX.to_owned(),
                timeout: REQUEST_TIMEOUT,
            },
            member,
            advertise: self.advertise.clone(),
            lease,
            founding: self.founding,
        })
    }

    /// The member's certificate files, as etcd reads them.
    fn write_tls(&self, dir: &Path) -> Result<MemberTls, HaFileError> {
        let tls = MemberTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("member.pem"),
            key: dir.join("member.key"),
        };
        let write = || -> std::io::Result<()> {
            cloudos_cluster::files::create_private_dir(dir)?;
            cloudos_cluster::files::write_private(&tls.ca, self.etcd_ca_pem.as_bytes())?;
            cloudos_cluster::files::write_private(&tls.cert, self.cert_pem.as_bytes())?;
            cloudos_cluster::files::write_private(&tls.key, self.key_pem.as_bytes())
        };
        write().map_err(|source| HaFileError::Write {
            path: dir.to_owned(),
            source,
        })?;
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(member: bool) -> HaFile {
        HaFile {
            endpoints: vec!["https://10.0.0.1:2379".into()],
            etcd_ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "secret-key".into(),
            advertise: "10.0.0.1:9443".into(),
            founding: Founding::Join,
            lease_secs: None,
            removed: false,
            member: member.then(|| MemberFile {
                name: "m1".into(),
                client_url: "https://10.0.0.1:2379".into(),
                peer_url: "https://10.0.0.1:2380".into(),
                initial_cluster: vec![("m1".into(), "https://10.0.0.1:2380".into())],
                existing: false,
            }),
        }
    }

    #[test]
    fn it_round_trips_privately_and_hides_its_key_from_debug() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(HaFile::load(dir.path()).expect("load"), None);
        file(true).save(dir.path()).expect("save");
        let mode = std::fs::metadata(HaFile::path(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(HaFile::load(dir.path()).expect("load"), Some(file(true)));
        assert!(!format!("{:?}", file(true)).contains("secret-key"));
    }

    #[test]
    fn a_member_needs_a_program_and_gets_its_tls_files() {
        let dir = tempfile::tempdir().expect("dir");
        let err = file(true).config(dir.path(), None).expect_err("no program");
        assert!(err.to_string().contains("--etcd-binary"), "{err}");
        let config = file(true)
            .config(dir.path(), Some(&EtcdProgram::direct("/usr/bin/etcd")))
            .expect("config");
        let (_, member) = config.member.expect("member");
        assert_eq!(
            std::fs::read_to_string(&member.tls.key).expect("key"),
            "secret-key"
        );
        assert!(file(false)
            .config(dir.path(), None)
            .expect("no member")
            .member
            .is_none());
    }

    #[test]
    fn a_damaged_file_says_so() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("master")).expect("dir");
        std::fs::write(HaFile::path(dir.path()), b"{not json").expect("write");
        let err = HaFile::load(dir.path()).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
