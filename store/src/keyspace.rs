//! The store's key-value model, the one every backend implements: named tables of string
//! keys and JSON values, read by key or by key range, changed in transactions.
//!
//! It is shaped after etcd so that the HA backend maps onto it one to one: a table is a key
//! prefix (`/cloudos/<table>/<key>`), a [`KeyRange`] a range request, a [`Txn`] closure an
//! optimistic transaction (reads remember their revisions, the commit compares them and
//! the closure runs again on conflict), and [`crate::Watch`] a watch from a revision. It
//! owns no I/O: backends live in their own modules ([`crate::redb`]).

use std::fmt;

use crate::StoreError;

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) const SCHEMA_KEY: &str = "schema_version";
pub(crate) const CLUSTER_KEY: &str = "cluster";
pub(crate) const ETCD_CA_KEY: &str = "etcd_ca";

/// The tables of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Schema version and cluster meta.
    Meta,
    /// [`TokenRecord`]s by token id.
    Tokens,
    /// [`NodeRecord`]s by node name.
    Nodes,
    /// [`RevokedCert`]s by serial.
    RevokedCerts,
    /// Tasks and service replicas ([`cloudos_cluster::workload::TaskInfo`]) by id.
    Tasks,
    /// [`cloudos_cluster::workload::ServiceRecord`]s by name.
    Services,
    /// [`cloudos_cluster::volume::VolumeRecord`]s by name.
    Volumes,
    /// [`cloudos_cluster::secret::SecretRecord`]s (sealed) by name.
    Secrets,
    /// [`UserRecord`]s by user name (stored as `admins`, its name before users had roles).
    Users,
    /// [`cloudos_cluster::apikey::ApiKeyRecord`]s by key id.
    ApiKeys,
    /// [`cloudos_cluster::api::AuditEntry`]s by id, zero-padded so key order is time order.
    Audit,
    /// Nodes' metric history, a record per node and hour (`fine/…`) or day (`coarse/…`).
    History,
    /// Records that could not be decoded, moved aside at start ([`Quarantined`]).
    Quarantine,
}

impl Table {
    pub const ALL: [Table; 13] = [
        Table::Meta,
        Table::Tokens,
        Table::Nodes,
        Table::RevokedCerts,
        Table::Tasks,
        Table::Services,
        Table::Volumes,
        Table::Secrets,
        Table::Users,
        Table::ApiKeys,
        Table::Audit,
        Table::History,
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
            Table::Volumes => "volumes",
            Table::Secrets => "secrets",
            Table::Users => "admins",
            Table::ApiKeys => "apikeys",
            Table::Audit => "audit",
            Table::History => "history",
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

    /// The `(key, value)` pairs of `range` in a table, in key order.
    fn range(
        &mut self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// All `(key, value)` pairs of a table, in key order.
    fn list(&mut self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.range(table, KeyRange::All)
    }

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

/// Which keys of a table a range read returns, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// Every key of the table.
    All,
    /// The keys that start with the prefix (etcd: a prefix range).
    Prefix(&'a str),
    /// The keys `>= start` and `< end` (etcd: `[key, range_end)`).
    Between { start: &'a str, end: &'a str },
}

impl KeyRange<'_> {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        match *self {
            KeyRange::All => true,
            KeyRange::Prefix(prefix) => key.starts_with(prefix),
            KeyRange::Between { start, end } => key >= start && key < end,
        }
    }
}
