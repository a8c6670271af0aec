//! The records the master keeps: the cluster's identity, nodes, admins and revoked
//! certificates (tokens and workloads are the shared crate's types). Stored as JSON, so a
//! field added with `#[serde(default)]` needs no migration.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use cloudos_cluster::identity::Role;
use cloudos_cluster::pki::CertSerial;

pub use cloudos_cluster::api::NodeState;

/// The cluster's identity: name and CA. `Debug` hides the CA key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub name: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for ClusterMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterMeta")
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("ca_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The etcd CA (decision 68): made when the cluster gets its second master, kept with
/// the cluster's state, read by the leader to certify the next master. `Debug` hides the
/// key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdCaRecord {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for EtcdCaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCaRecord")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A joined node as the master knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub role: Role,
    /// Where the node's connection came from (for display; the master never dials it).
    pub address: String,
    pub arch: String,
    /// Labels an admin set (on the join token or with `cloudos node label`): the only ones
    /// selectors match.
    pub labels: BTreeMap<String, String>,
    /// Labels the node says it has (its settings), shown but never matched: a node could
    /// claim any label to attract other people's work.
    #[serde(default)]
    pub reported_labels: BTreeMap<String, String>,
    /// Serial of the node's current certificate.
    pub cert_serial: CertSerial,
    /// Serial of the certificate the last renewal issued, until the node first uses it;
    /// then it becomes `cert_serial` and the old one is revoked. Both are accepted
    /// meanwhile, so a renewal whose answer was lost does not lock the node out.
    #[serde(default)]
    pub pending_serial: Option<CertSerial>,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The last heartbeat's telemetry (`api::Telemetry` as JSON), kept opaque here so the
    /// store does not change when telemetry grows.
    pub telemetry: Option<serde_json::Value>,
    pub state: NodeState,
    /// Cordoned by an admin: the scheduler places no new work here. Kept apart from
    /// `state` (health), as Kubernetes keeps `unschedulable` apart from conditions: a
    /// cordoned node still goes NotReady and comes back, and stays cordoned.
    #[serde(default)]
    pub unschedulable: bool,
    /// The node's boot at its last hello.
    #[serde(default)]
    pub boot: Option<cloudos_cluster::nodeops::NodeBoot>,
    /// The subnet its containers take their addresses from (`10.250.3.0/24`), given out
    /// of the cluster's range at its first hello and kept for the node's life, so that its
    /// containers' addresses stay the same across reboots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// A person who uses the cluster: their role, and the certificate the master issued them.
/// A user's certificate is accepted only while its serial is this record's current or
/// pending one; what it may do is this record's role, whatever role the certificate names
/// (so a changed role takes effect at the next request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// Admin, operator or viewer. Records made before roles existed are admins'.
    #[serde(default = "admin_role")]
    pub role: Role,
    /// Where the user logged in from.
    pub address: String,
    pub cert_serial: CertSerial,
    /// As [`NodeRecord::pending_serial`].
    #[serde(default)]
    pub pending_serial: Option<CertSerial>,
    /// The token the user logged in with.
    pub token_id: String,
    /// The argon2id PHC string of the password they set for the dashboard, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

fn admin_role() -> Role {
    Role::Admin
}

impl UserRecord {
    /// The serials accepted for this admin (current first).
    pub fn serials(&self) -> impl Iterator<Item = &CertSerial> {
        std::iter::once(&self.cert_serial).chain(self.pending_serial.as_ref())
    }
}

impl NodeRecord {
    /// The serials accepted for this node (current first).
    pub fn serials(&self) -> impl Iterator<Item = &CertSerial> {
        std::iter::once(&self.cert_serial).chain(self.pending_serial.as_ref())
    }
}

/// A certificate the master no longer accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    pub serial: CertSerial,
    /// The node it was issued to, when known.
    pub node: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: String,
}
