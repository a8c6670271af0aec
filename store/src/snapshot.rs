//! The whole state at one point in time, for backups: every table's raw records, read in
//! one read transaction ([`crate::Store::snapshot`]), and put back into an empty store in
//! one write transaction ([`crate::Store::restore`]).
//!
//! It owns the snapshot's shape and the rules of a restore (schema versions, an empty
//! target, all or nothing); it does not know about files, encryption or the master (the
//! master's `backup` module wraps a snapshot into an encrypted archive).
//!
//! Values are kept as raw bytes (hex in JSON, as the quarantine keeps them): a snapshot
//! carries what is stored, also records that would not decode, so a restore is the state
//! as it was, not as this version reads it. etcd: one range read of the `/cloudos/` prefix
//! (atomic at one revision), or one range per table pinned to the same revision.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::keyspace::{KeyRange, Table, CLUSTER_KEY, SCHEMA_KEY, SCHEMA_VERSION};
use crate::{decode, ClusterMeta, Store, StoreError};

/// One record of a snapshot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub key: String,
    /// The stored bytes, hex-encoded in JSON.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// Every table of the state, read at one revision. `Debug` shows counts only: the `meta`
/// table holds the CA's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The schema the records are in (the `meta` table's `schema_version`).
    pub schema_version: u32,
    /// The store's revision when it was read (for people; revisions restart per backend).
    pub revision: u64,
    /// Table name → its records in key order. Every table of [`Table::ALL`] is present.
    pub tables: BTreeMap<String, Vec<SnapshotEntry>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: BTreeMap<&str, usize> = self
            .tables
            .iter()
            .map(|(name, entries)| (name.as_str(), entries.len()))
            .collect();
        f.debug_struct("Snapshot")
            .field("schema_version", &self.schema_version)
            .field("revision", &self.revision)
            .field("records", &counts)
            .finish()
    }
}

impl Snapshot {
    /// Builds a snapshot from one consistent read of each table (`read` is called once per
    /// table of [`Table::ALL`], inside the backend's read transaction).
    pub fn read_with(
        revision: u64,
        mut read: impl FnMut(Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>,
    ) -> Result<Snapshot, StoreError> {
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let entries = read(table)?
                .into_iter()
                .map(|(key, value)| SnapshotEntry { key, value })
                .collect();
            tables.insert(table.name().to_owned(), entries);
        }
        let schema_version = tables
            .get(Table::Meta.name())
            .and_then(|meta: &Vec<SnapshotEntry>| meta.iter().find(|e| e.key == SCHEMA_KEY))
            .map(|e| decode::<u32>(Table::Meta, SCHEMA_KEY, &e.value))
            .transpose()?
            .unwrap_or(SCHEMA_VERSION);
        Ok(Snapshot {
            schema_version,
            revision,
            tables,
        })
    }

    /// The records of `table` (none when the snapshot has no such table).
    pub fn entries(&self, table: Table) -> &[SnapshotEntry] {
        self.tables
            .get(table.name())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The cluster (name and CA) the snapshot holds, if any.
    pub fn cluster_meta(&self) -> Result<Option<ClusterMeta>, StoreError> {
        self.entries(Table::Meta)
            .iter()
            .find(|e| e.key == CLUSTER_KEY)
            .map(|e| decode(Table::Meta, CLUSTER_KEY, &e.value))
            .transpose()
    }

    /// Whether this code can restore it: a schema it reads (older ones are migrated when
    /// the restored store is opened), and only tables it knows.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.schema_version > SCHEMA_VERSION {
            return Err(StoreError::SnapshotNewer {
                found: self.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if let Some(name) = self
            .tables
            .keys()
            .find(|name| !Table::ALL.iter().any(|t| t.name() == name.as_str()))
        {
            return Err(StoreError::SnapshotTable { name: name.clone() });
        }
        Ok(())
    }
}

/// See [`Store::restore`]: checks, then one transaction that empties every table and puts
/// the snapshot's records. Refuses a store that already holds a cluster.
pub(crate) fn restore<S: Store + ?Sized>(store: &S, snapshot: &Snapshot) -> Result<(), StoreError> {
    snapshot.check()?;
    store.transact_raw(&mut |txn| {
        if let Some(bytes) = txn.get(Table::Meta, CLUSTER_KEY)? {
            let existing: ClusterMeta = decode(Table::Meta, CLUSTER_KEY, &bytes)?;
            return Err(StoreError::AlreadyInitialized {
                name: existing.name,
            });
        }
        for table in Table::ALL {
            for (key, _) in txn.range(table, KeyRange::All)? {
                txn.delete(table, &key)?;
            }
            for entry in snapshot.entries(table) {
                txn.put(table, &entry.key, &entry.value)?;
            }
        }
        Ok(())
    })
}

/// `Vec<u8>` as a hex string in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cloudos_cluster::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not a hex digit"))
            })
            .collect()
    }
}
