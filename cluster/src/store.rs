//! The master's state behind one trait, and its embedded redb backend.
//!
//! Backends implement six raw operations on JSON values in the [`Table`]s; the typed methods
//! (cluster meta, tokens, nodes, revoked certificates, workloads) are provided on top of
//! them, so a later etcd backend only has to supply the raw operations. Two raw operations
//! are atomic: read-modify-write of one key ([`Store::update_raw`]) and a transaction over
//! several tables ([`Store::transact_raw`]). redb runs each in one write transaction (redb
//! has a single writer); etcd will run them as compare-and-swap loops (so the closures may
//! run more than once). Every change that spans records (a join, an eviction, a workload
//! change) is one transaction: it happens entirely or not at all (see [`ops`]).
//!
//! A record that does not decode does not stop a master: [`Store::quarantine_unreadable`]
//! (run at start) moves it into the `quarantine` table with the reason, see [`quarantine`].
//!
//! The redb file holds the cluster CA's key: [`RedbStore::open`] creates it readable by its
//! owner only and takes group and other bits off an existing one.
//!
//! The schema version lives in the `meta` table under `schema_version`. Opening state with a
//! newer version than [`SCHEMA_VERSION`] fails with a message instead of misreading it; an
//! older version is migrated on open (version 1 is the first, so there is nothing to migrate
//! yet).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::identity::Role;
use crate::pki::CertSerial;
use crate::token::{TokenError, TokenRecord};
use crate::workload::{ServiceRecord, TaskInfo};

pub mod ops;
pub mod quarantine;

pub use ops::{Admission, TokenUse, WorkloadWrite};
pub use quarantine::Quarantined;

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &str = "schema_version";
const CLUSTER_KEY: &str = "cluster";

/// The tables of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Schema version and cluster meta.
    Meta,
    /// [`TokenRecord`]s by token id.
    Tokens,
    /// [`NodeRecord`]s by node name.
    Nodes,
    /// [`RevokedCert`]s by serial.
    RevokedCerts,
    /// Tasks and service replicas ([`crate::workload::TaskInfo`]) by id.
    Tasks,
    /// [`crate::workload::ServiceRecord`]s by name.
    Services,
    /// [`AdminRecord`]s by admin name.
    Admins,
    /// Records that could not be decoded, moved aside at start ([`Quarantined`]).
    Quarantine,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Meta,
        Table::Tokens,
        Table::Nodes,
        Table::RevokedCerts,
        Table::Tasks,
        Table::Services,
        Table::Admins,
        Table::Quarantine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Tokens => "tokens",
            Table::Nodes => "nodes",
            Table::RevokedCerts => "revoked_certs",
            Table::Tasks => "tasks",
            Table::Services => "services",
            Table::Admins => "admins",
            Table::Quarantine => "quarantine",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The closure of [`Store::update_raw`]: sees the current value, decides the write.
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Write, StoreError> + 'a;

/// One write transaction over any tables, as [`Store::transact_raw`] lends it to its closure.
/// Reads see the transaction's own earlier writes.
pub trait Txn {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// All `(key, value)` pairs of a table, in key order.
    fn list(&mut self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes a key; `true` if it was there.
    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError>;
}

/// The closure of [`Store::transact_raw`].
pub type TxnFn<'a> = dyn FnMut(&mut dyn Txn) -> Result<(), StoreError> + 'a;

/// What [`Store::update_raw`]'s closure decides to do with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>),
    Delete,
    Keep,
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {source}; check that the data partition is mounted and that no other master uses it")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot make the state store {path} private (mode 0600): {source}; it holds the cluster CA's key, fix its owner and permissions")]
    Protect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state store has schema version {found}, newer than {supported} which this nodeos understands; upgrade nodeos, or restore the state backup made before the upgrade")]
    NewerSchema { found: u32, supported: u32 },
    #[error("state store {action} failed: {source}")]
    Backend {
        action: &'static str,
        source: redb::Error,
    },
    #[error(
        "stored {table} record `{key}` is unreadable ({source}); restore the state from a backup"
    )]
    Corrupt {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {table} record `{key}`: {source}")]
    Encode {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
    #[error("this state store already holds cluster `{name}`; use it, or wipe the data partition to start a new cluster")]
    AlreadyInitialized { name: String },
    #[error("no {what} `{key}`")]
    NotFound { what: &'static str, key: String },
    #[error(transparent)]
    Token(#[from] TokenError),
}

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

/// Whether the master considers a node usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heartbeats arrive; work may be scheduled.
    Ready,
    /// Heartbeats stopped; work is moved away.
    NotReady,
    /// An admin asked for no new work on it.
    Cordoned,
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
}

/// A person's admin certificate, as the master issued it. An admin certificate is accepted
/// only while its serial is this record's current or pending one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    pub name: String,
    /// Where the admin logged in from.
    pub address: String,
    pub cert_serial: CertSerial,
    /// As [`NodeRecord::pending_serial`].
    #[serde(default)]
    pub pending_serial: Option<CertSerial>,
    /// The token the admin logged in with.
    pub token_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

impl AdminRecord {
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

/// The master's state. Backends implement the `*_raw` methods; the rest is provided.
pub trait Store: Send + Sync {
    fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// All `(key, value)` pairs of a table, in key order.
    fn list_raw(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    fn put_raw(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes a key; `true` if it was there.
    fn delete_raw(&self, table: Table, key: &str) -> Result<bool, StoreError>;

    /// Atomically reads a key, lets `f` decide, and applies the decision. An error from `f`
    /// aborts without writing and is returned. `f` may be called more than once by backends
    /// that retry on conflict, so it must not have side effects beyond its captures.
    fn update_raw(&self, table: Table, key: &str, f: &mut UpdateFn<'_>) -> Result<(), StoreError>;

    /// Runs `f` in one write transaction over any tables and commits what it wrote: all of
    /// it or, when `f` or the commit fails, none of it (the error is returned). Like
    /// [`Store::update_raw`]'s closure, `f` may run more than once.
    fn transact_raw(&self, f: &mut TxnFn<'_>) -> Result<(), StoreError>;

    /// A join, in one transaction: checks the token and takes one use (as
    /// [`Store::consume_token`]), stores `node` (replacing a record of the same name),
    /// revokes the replaced record's serial when it differs from the new one, and stores
    /// every revocation in `revoke`. Nothing is written when any step fails. See
    /// [`ops::admit_node`].
    fn admit_node(
        &self,
        token: &TokenUse<'_>,
        node: &NodeRecord,
        revoke: &[RevokedCert],
    ) -> Result<Admission, StoreError> {
        ops::admit_node(self, token, node, revoke)
    }

    /// A node's removal, in one transaction: deletes its record, revokes the record's
    /// current serial and every serial of `also_revoke`, all for `reason` at `now`. Returns
    /// the deleted record and the revocations written; `NotFound` (nothing written) if no
    /// such node is stored. See [`ops::evict_node`].
    fn evict_node(
        &self,
        name: &str,
        reason: &str,
        now: OffsetDateTime,
        also_revoke: &[CertSerial],
    ) -> Result<(NodeRecord, Vec<RevokedCert>), StoreError> {
        ops::evict_node(self, name, reason, now, also_revoke)
    }

    /// An admin's login, in one transaction: takes one use of the token, stores `admin`
    /// (replacing a record of the same name, the admin logging in again) and revokes every
    /// serial the replaced record held. Returns those revocations. See
    /// [`ops::admit_admin`].
    fn admit_admin(
        &self,
        token: &TokenUse<'_>,
        admin: &AdminRecord,
        reason: &str,
    ) -> Result<Vec<RevokedCert>, StoreError> {
        ops::admit_admin(self, token, admin, reason)
    }

    /// An admin's revocation, in one transaction: deletes the record and revokes its
    /// current and pending serials. `NotFound` (nothing written) if there is no such admin.
    fn evict_admin(
        &self,
        name: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(AdminRecord, Vec<RevokedCert>), StoreError> {
        ops::evict_admin(self, name, reason, now)
    }

    /// One workload change (tasks and services saved and deleted), in one transaction.
    fn write_workloads(&self, write: &WorkloadWrite<'_>) -> Result<(), StoreError> {
        ops::write_workloads(self, write)
    }

    /// Moves every record that does not decode into the `quarantine` table, in one
    /// transaction, and returns what was moved (the master logs it at start). The `meta`
    /// table is never touched: without its CA a master must not start.
    fn quarantine_unreadable(&self, now: OffsetDateTime) -> Result<Vec<Quarantined>, StoreError> {
        quarantine::sweep(self, now)
    }

    /// The records quarantined so far.
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        list_json(self, Table::Quarantine)
    }

    /// The cluster's meta, once `master init` ran.
    fn cluster_meta(&self) -> Result<Option<ClusterMeta>, StoreError> {
        get_json(self, Table::Meta, CLUSTER_KEY)
    }

    /// Stores the cluster meta; fails if a cluster is already there (never overwrites a CA).
    fn init_cluster_meta(&self, meta: &ClusterMeta) -> Result<(), StoreError> {
        let value = encode(Table::Meta, CLUSTER_KEY, meta)?;
        self.update_raw(Table::Meta, CLUSTER_KEY, &mut |current| match current {
            Some(bytes) => {
                let existing: ClusterMeta = decode(Table::Meta, CLUSTER_KEY, bytes)?;
                Err(StoreError::AlreadyInitialized {
                    name: existing.name,
                })
            }
            None => Ok(Write::Put(value.clone())),
        })
    }

    fn put_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        put_json(self, Table::Tokens, record.id.as_str(), record)
    }

    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        get_json(self, Table::Tokens, id)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        list_json(self, Table::Tokens)
    }

    fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Tokens, id)
    }

    /// Marks a token revoked (kept for the audit trail; delete it to forget it).
    fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        update_json(
            self,
            Table::Tokens,
            "token",
            id,
            |record: &mut TokenRecord| {
                record.revoked = true;
                Ok(())
            },
        )
    }

    /// Verifies `secret` for token `id` (and its role when `role` is given) and takes one
    /// use, atomically: two nodes racing for the last use cannot both win. Returns the record
    /// as it was before this use.
    fn consume_token(
        &self,
        id: &str,
        secret: &str,
        now: OffsetDateTime,
        role: Option<Role>,
    ) -> Result<TokenRecord, StoreError> {
        let token = TokenUse {
            id,
            secret,
            now,
            role,
        };
        let mut used = None;
        self.transact_raw(&mut |txn| {
            used = Some(ops::take_use(txn, &token)?);
            Ok(())
        })?;
        used.ok_or_else(|| StoreError::NotFound {
            what: "token",
            key: id.to_owned(),
        })
    }

    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        put_json(self, Table::Nodes, &node.name, node)
    }

    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        get_json(self, Table::Nodes, name)
    }

    fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        list_json(self, Table::Nodes)
    }

    fn delete_node(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Nodes, name)
    }

    /// Changes a node atomically (heartbeats, state changes); `NotFound` if it is unknown.
    fn update_node(
        &self,
        name: &str,
        f: &mut dyn FnMut(&mut NodeRecord) -> Result<(), StoreError>,
    ) -> Result<NodeRecord, StoreError> {
        update_json(self, Table::Nodes, "node", name, f)
    }

    /// Replaces several stored node records at once (the master's periodic save of live
    /// state). Nodes no longer stored are skipped, never re-created. Returns how many were
    /// written. Backends override it to write them in one transaction.
    fn update_nodes(&self, nodes: &[NodeRecord]) -> Result<usize, StoreError> {
        let mut written = 0;
        for node in nodes {
            let result = self.update_node(&node.name, &mut |stored| {
                *stored = node.clone();
                Ok(())
            });
            match result {
                Ok(_) => written += 1,
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    fn put_admin(&self, admin: &AdminRecord) -> Result<(), StoreError> {
        put_json(self, Table::Admins, &admin.name, admin)
    }

    fn get_admin(&self, name: &str) -> Result<Option<AdminRecord>, StoreError> {
        get_json(self, Table::Admins, name)
    }

    fn list_admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        list_json(self, Table::Admins)
    }

    fn delete_admin(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Admins, name)
    }

    fn revoke_cert(&self, revoked: &RevokedCert) -> Result<(), StoreError> {
        put_json(self, Table::RevokedCerts, revoked.serial.as_str(), revoked)
    }

    fn is_cert_revoked(&self, serial: &CertSerial) -> Result<bool, StoreError> {
        Ok(self
            .get_raw(Table::RevokedCerts, serial.as_str())?
            .is_some())
    }

    fn revoked_certs(&self) -> Result<Vec<RevokedCert>, StoreError> {
        list_json(self, Table::RevokedCerts)
    }

    fn put_task(&self, task: &TaskInfo) -> Result<(), StoreError> {
        put_json(self, Table::Tasks, &task.id, task)
    }

    fn list_tasks(&self) -> Result<Vec<TaskInfo>, StoreError> {
        list_json(self, Table::Tasks)
    }

    fn delete_task(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Tasks, id)
    }

    fn put_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        put_json(self, Table::Services, &service.name, service)
    }

    fn list_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        list_json(self, Table::Services)
    }

    fn delete_service(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Services, name)
    }
}

pub(crate) fn encode<T: Serialize>(
    table: Table,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        table,
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: Table,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        source,
    })
}

fn get_json<S: Store + ?Sized, T: DeserializeOwned>(
    store: &S,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    store
        .get_raw(table, key)?
        .map(|bytes| decode(table, key, &bytes))
        .transpose()
}

fn put_json<S: Store + ?Sized, T: Serialize>(
    store: &S,
    table: Table,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    store.put_raw(table, key, &encode(table, key, value)?)
}

fn list_json<S: Store + ?Sized, T: DeserializeOwned>(
    store: &S,
    table: Table,
) -> Result<Vec<T>, StoreError> {
    store
        .list_raw(table)?
        .iter()
        .map(|(key, bytes)| decode(table, key, bytes))
        .collect()
}

fn update_json<S: Store + ?Sized, T: Serialize + DeserializeOwned + Clone>(
    store: &S,
    table: Table,
    what: &'static str,
    key: &str,
    mut f: impl FnMut(&mut T) -> Result<(), StoreError>,
) -> Result<T, StoreError> {
    let mut updated = None;
    store.update_raw(table, key, &mut |current| {
        let bytes = current.ok_or_else(|| StoreError::NotFound {
            what,
            key: key.to_owned(),
        })?;
        let mut value: T = decode(table, key, bytes)?;
        f(&mut value)?;
        let encoded = encode(table, key, &value)?;
        updated = Some(value);
        Ok(Write::Put(encoded))
    })?;
    updated.ok_or_else(|| StoreError::NotFound {
        what,
        key: key.to_owned(),
    })
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Maps any of redb's specific errors into [`StoreError::Backend`].
fn redb_err<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend {
        action,
        source: e.into(),
    }
}

/// Creates `path` with mode 0600 when missing, and sets 0600 on it otherwise.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A redb write transaction as a [`Txn`]: each call opens the table it needs.
struct RedbTxn<'t> {
    txn: &'t redb::WriteTransaction,
}

impl RedbTxn<'_> {
    fn table(
        &self,
        table: Table,
    ) -> Result<redb::Table<'_, &'static str, &'static [u8]>, StoreError> {
        self.txn
            .open_table(definition(table))
            .map_err(redb_err("open table"))
    }
}

impl Txn for RedbTxn<'_> {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.table(table)?;
        let value = t.get(key).map_err(redb_err("read"))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn list(&mut self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let t = self.table(table)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(redb_err("read"))? {
            let (key, value) = entry.map_err(redb_err("read"))?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.table(table)?
            .insert(key, value)
            .map_err(redb_err("write"))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut t = self.table(table)?;
        let existed = t.remove(key).map_err(redb_err("write"))?.is_some();
        Ok(existed)
    }
}

/// The embedded, transactional store (redb) kept on the data partition.
pub struct RedbStore {
    db: Database,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens the state file at `path`, creating it (and its tables) when missing. The file
    /// is made private (0600) first: it is created so, and an existing one that others
    /// could read (an install made under umask 022) loses its group and other bits.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        make_private(path).map_err(|source| StoreError::Protect {
            path: path.to_owned(),
            source,
        })?;
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        RedbStore::init(db)
    }

    /// A store in memory, for tests of the master and of callers.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<memory>"),
                source,
            })?;
        RedbStore::init(db)
    }

    /// Creates the tables and checks (or writes) the schema version.
    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(redb_err("begin"))?;
        {
            for table in Table::ALL {
                txn.open_table(definition(table))
                    .map_err(redb_err("open table"))?;
            }
            let mut meta = txn
                .open_table(definition(Table::Meta))
                .map_err(redb_err("open table"))?;
            let found = match meta.get(SCHEMA_KEY).map_err(redb_err("read"))? {
                Some(guard) => Some(decode::<u32>(Table::Meta, SCHEMA_KEY, guard.value())?),
                None => None,
            };
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        found: v,
                        supported: SCHEMA_VERSION,
                    })
                }
                Some(v) if v == SCHEMA_VERSION => {}
                // Older or fresh: migrations from `v` go here once there is a version 2.
                _ => {
                    let value = encode(Table::Meta, SCHEMA_KEY, &SCHEMA_VERSION)?;
                    meta.insert(SCHEMA_KEY, value.as_slice())
                        .map_err(redb_err("write"))?;
                }
            }
        }
        txn.commit().map_err(redb_err("commit"))?;
        Ok(RedbStore { db })
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        get_json(self, Table::Meta, SCHEMA_KEY)
    }
}

impl Store for RedbStore {
    fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(redb_err("open table"))?;
        let value = t.get(key).map_err(redb_err("read"))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn list_raw(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(redb_err("open table"))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(redb_err("read"))? {
            let (key, value) = entry.map_err(redb_err("read"))?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn put_raw(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.update_raw(table, key, &mut |_| Ok(Write::Put(value.to_vec())))
    }

    fn delete_raw(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut existed = false;
        self.update_raw(table, key, &mut |current| {
            existed = current.is_some();
            Ok(Write::Delete)
        })?;
        Ok(existed)
    }

    /// One transaction for all of them: a few thousand nodes cost one commit, not one each.
    fn update_nodes(&self, nodes: &[NodeRecord]) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        let mut written = 0;
        {
            let mut t = txn
                .open_table(definition(Table::Nodes))
                .map_err(redb_err("open table"))?;
            for node in nodes {
                let stored = t
                    .get(node.name.as_str())
                    .map_err(redb_err("read"))?
                    .is_some();
                if stored {
                    let value = encode(Table::Nodes, &node.name, node)?;
                    t.insert(node.name.as_str(), value.as_slice())
                        .map_err(redb_err("write"))?;
                    written += 1;
                }
            }
        }
        txn.commit().map_err(redb_err("commit"))?;
        Ok(written)
    }

    fn transact_raw(&self, f: &mut TxnFn<'_>) -> Result<(), StoreError> {
        // As in `update_raw`: one writer at a time, and an early return aborts.
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        f(&mut RedbTxn { txn: &txn })?;
        txn.commit().map_err(redb_err("commit"))
    }

    fn update_raw(&self, table: Table, key: &str, f: &mut UpdateFn<'_>) -> Result<(), StoreError> {
        // redb allows one write transaction at a time: the read and the write below cannot
        // interleave with another update. Returning early drops `txn`, which aborts it.
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        {
            let mut t = txn
                .open_table(definition(table))
                .map_err(redb_err("open table"))?;
            let decision = {
                let current = t.get(key).map_err(redb_err("read"))?;
                f(current.as_ref().map(|guard| guard.value()))?
            };
            match decision {
                Write::Put(value) => {
                    t.insert(key, value.as_slice()).map_err(redb_err("write"))?;
                }
                Write::Delete => {
                    t.remove(key).map_err(redb_err("write"))?;
                }
                Write::Keep => {}
            }
        }
        txn.commit().map_err(redb_err("commit"))
    }
}

#[cfg(test)]
mod atomic_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CaPin;
    use crate::token::Token;
    use std::sync::Arc;
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    fn store() -> RedbStore {
        RedbStore::in_memory().expect("in-memory store")
    }

    fn token(uses: Option<u32>, role: Role) -> (Token, TokenRecord) {
        let t = Token::generate(CaPin::from_hex(&"11".repeat(32)).expect("pin")).expect("token");
        let r = TokenRecord::new(&t, role, NOW, Some(Duration::hours(1)), uses, "test")
            .expect("record");
        (t, r)
    }

    fn node(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            role: Role::Compute,
            address: "10.0.0.7:50312".to_owned(),
            arch: "x86_64".to_owned(),
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            reported_labels: Default::default(),
            pending_serial: None,
            cert_serial: "4a01".parse().expect("serial"),
            joined_at: NOW,
            last_seen: NOW,
            telemetry: None,
            state: NodeState::Ready,
        }
    }

    fn meta(name: &str) -> ClusterMeta {
        ClusterMeta {
            name: name.to_owned(),
            ca_cert_pem: "cert".to_owned(),
            ca_key_pem: "key".to_owned(),
            created_at: NOW,
        }
    }

    #[test]
    fn cluster_meta_is_written_once() {
        let s = store();
        assert_eq!(s.cluster_meta().expect("read"), None);
        s.init_cluster_meta(&meta("lab")).expect("init");
        assert_eq!(s.cluster_meta().expect("read"), Some(meta("lab")));
        let err = s
            .init_cluster_meta(&meta("other"))
            .expect_err("second init");
        assert!(
            matches!(err, StoreError::AlreadyInitialized { ref name } if name == "lab"),
            "{err}"
        );
        assert_eq!(s.cluster_meta().expect("read"), Some(meta("lab")));
        assert!(!format!("{:?}", meta("lab")).contains("key\""));
    }

    #[test]
    fn tokens_crud() {
        let s = store();
        let (_, a) = token(None, Role::Compute);
        let (_, b) = token(Some(1), Role::Admin);
        s.put_token(&a).expect("put a");
        s.put_token(&b).expect("put b");
        assert_eq!(s.get_token(a.id.as_str()).expect("get"), Some(a.clone()));
        let mut ids: Vec<_> = s
            .list_tokens()
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut want = vec![a.id.clone(), b.id.clone()];
        ids.sort();
        want.sort();
        assert_eq!(ids, want);
        assert!(s.revoke_token(a.id.as_str()).expect("revoke").revoked);
        assert!(s
            .get_token(a.id.as_str())
            .expect("get")
            .is_some_and(|r| r.revoked));
        assert!(s.delete_token(a.id.as_str()).expect("delete"));
        assert!(!s.delete_token(a.id.as_str()).expect("delete again"));
        assert!(matches!(
            s.revoke_token("nosuch"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn consume_token_table() {
        let s = store();
        let (t, limited) = token(Some(1), Role::Compute);
        let (u, unlimited) = token(None, Role::Compute);
        s.put_token(&limited).expect("put");
        s.put_token(&unlimited).expect("put");
        let lid = limited.id.to_string();
        let uid = unlimited.id.to_string();
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            OffsetDateTime,
            Option<Role>,
            Result<(), TokenError>,
        );
        let cases: Vec<Case> = vec![
            (
                "unknown",
                "zzzzzz",
                t.secret(),
                NOW,
                None,
                Err(TokenError::UnknownId {
                    id: "zzzzzz".into(),
                }),
            ),
            (
                "wrong secret",
                &lid,
                u.secret(),
                NOW,
                None,
                Err(TokenError::WrongSecret { id: lid.clone() }),
            ),
            (
                "role",
                &lid,
                t.secret(),
                NOW,
                Some(Role::Master),
                Err(TokenError::RoleMismatch {
                    id: lid.clone(),
                    actual: Role::Compute,
                    wanted: Role::Master,
                }),
            ),
            (
                "first use",
                &lid,
                t.secret(),
                NOW,
                Some(Role::Compute),
                Ok(()),
            ),
            (
                "used up",
                &lid,
                t.secret(),
                NOW,
                None,
                Err(TokenError::UsedUp { id: lid.clone() }),
            ),
            ("unlimited", &uid, u.secret(), NOW, None, Ok(())),
            ("unlimited again", &uid, u.secret(), NOW, None, Ok(())),
            (
                "expired",
                &uid,
                u.secret(),
                NOW + Duration::hours(2),
                None,
                Err(TokenError::Expired {
                    id: uid.clone(),
                    expired_at: NOW + Duration::hours(1),
                }),
            ),
        ];
        for (name, id, secret, now, role, want) in cases {
            let got = match s.consume_token(id, secret, now, role) {
                Ok(_) => Ok(()),
                Err(StoreError::Token(e)) => Err(e),
                Err(e) => panic!("{name}: unexpected {e}"),
            };
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            s.get_token(&uid).expect("get").and_then(|r| r.uses_left),
            None
        );
    }

    #[test]
    fn concurrent_consumers_share_uses_exactly() {
        let s = Arc::new(store());
        let (t, record) = token(Some(5), Role::Compute);
        s.put_token(&record).expect("put");
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let s = Arc::clone(&s);
                let id = record.id.to_string();
                let secret = t.secret().to_owned();
                std::thread::spawn(move || {
                    (0..4)
                        .filter(|_| s.consume_token(&id, &secret, NOW, None).is_ok())
                        .count()
                })
            })
            .collect();
        let wins: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(wins, 5);
        assert_eq!(
            s.get_token(record.id.as_str())
                .expect("get")
                .and_then(|r| r.uses_left),
            Some(0)
        );
    }

    #[test]
    fn nodes_crud_and_update() {
        let s = store();
        s.put_node(&node("n1")).expect("put");
        s.put_node(&node("n2")).expect("put");
        let names: Vec<_> = s
            .list_nodes()
            .expect("list")
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["n1", "n2"]);
        let later = NOW + Duration::minutes(1);
        let updated = s
            .update_node("n1", &mut |n| {
                n.last_seen = later;
                n.telemetry = Some(serde_json::json!({"load1": 0.5}));
                Ok(())
            })
            .expect("update");
        assert_eq!(updated.last_seen, later);
        assert_eq!(s.get_node("n1").expect("get"), Some(updated));
        let err = s
            .update_node("n1", &mut |_| {
                Err(StoreError::NotFound {
                    what: "test",
                    key: "x".into(),
                })
            })
            .expect_err("aborted");
        assert!(matches!(err, StoreError::NotFound { what: "test", .. }));
        assert!(matches!(
            s.update_node("n9", &mut |_| Ok(())),
            Err(StoreError::NotFound { what: "node", .. })
        ));
        assert!(s.delete_node("n2").expect("delete"));
        assert_eq!(s.get_node("n2").expect("get"), None);
    }

    #[test]
    fn update_nodes_writes_known_nodes_only() {
        let s = store();
        s.put_node(&node("n1")).expect("put");
        let mut n1 = node("n1");
        n1.state = NodeState::NotReady;
        assert_eq!(
            s.update_nodes(&[n1.clone(), node("gone")]).expect("batch"),
            1
        );
        assert_eq!(s.get_node("n1").expect("get"), Some(n1));
        assert_eq!(s.get_node("gone").expect("get"), None);
    }

    #[test]
    fn revoked_certs() {
        let s = store();
        let serial: CertSerial = "7f00aa".parse().expect("serial");
        assert!(!s.is_cert_revoked(&serial).expect("check"));
        let r = RevokedCert {
            serial: serial.clone(),
            node: Some("n1".into()),
            revoked_at: NOW,
            reason: "node removed".into(),
        };
        s.revoke_cert(&r).expect("revoke");
        assert!(s.is_cert_revoked(&serial).expect("check"));
        assert_eq!(s.revoked_certs().expect("list"), vec![r]);
    }

    #[test]
    fn corrupt_record_says_which() {
        let s = store();
        s.put_raw(Table::Nodes, "n1", b"{not json")
            .expect("raw put");
        let err = s.get_node("n1").expect_err("corrupt").to_string();
        assert!(
            err.contains("stored nodes record `n1` is unreadable"),
            "{err}"
        );
    }

    #[test]
    fn file_store_persists_and_checks_schema() {
        let dir = std::env::temp_dir().join(format!("cloudos-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.redb");
        let _ = std::fs::remove_file(&path);
        {
            let s = RedbStore::open(&path).expect("create");
            assert_eq!(s.schema_version().expect("version"), Some(SCHEMA_VERSION));
            s.put_node(&node("n1")).expect("put");
        }
        {
            let s = RedbStore::open(&path).expect("reopen");
            assert_eq!(s.get_node("n1").expect("get"), Some(node("n1")));
            s.put_raw(Table::Meta, SCHEMA_KEY, b"99").expect("bump");
        }
        let err = RedbStore::open(&path).expect_err("newer schema");
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade nodeos"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_error_names_the_path() {
        let err = RedbStore::open("/proc/cloudos-no-such-dir/state.redb").expect_err("cannot open");
        assert!(
            err.to_string()
                .contains("/proc/cloudos-no-such-dir/state.redb"),
            "{err}"
        );
    }

    #[test]
    fn store_is_object_safe_and_errors_are_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<StoreError>();
        let s: Box<dyn Store> = Box::new(store());
        assert_eq!(s.list_nodes().expect("list"), vec![]);
    }
}
