//! The embedded backend: one redb file on the data partition, for a master on its own.
//!
//! redb has one writer at a time, so every update and transaction runs once (the closures
//! never see a conflict). Commits are published to watchers under the store's writer lock,
//! in commit order. The file holds the cluster CA's key: [`RedbStore::open`] creates it
//! readable by its owner only and takes group and other bits off an existing one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::keyspace::{KeyRange, Table, Txn, TxnFn, UpdateFn, Write, SCHEMA_KEY, SCHEMA_VERSION};
use crate::snapshot::Snapshot;
use crate::watch::{Change, Watch, Watchers};
use crate::{decode, encode, get_json, NodeRecord, Store, StoreError};

pub(crate) fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Maps any of redb's specific errors into [`StoreError::Backend`].
fn redb_err<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend {
        action,
        source: Box::new(e.into()),
    }
}

/// The `(key, value)` pairs of `range` in an open table, in key order.
fn read_range(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    range: KeyRange<'_>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    each_in_range(t, range, |key, value| {
        out.push((key.to_owned(), value.to_vec()))
    })?;
    Ok(out)
}

/// The keys of `range`, their values not copied.
fn read_keys(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    range: KeyRange<'_>,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    each_in_range(t, range, |key, _| out.push(key.to_owned()))?;
    Ok(out)
}

/// Calls `visit` with every `(key, value)` of `range`, in key order.
fn each_in_range(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    range: KeyRange<'_>,
    mut visit: impl FnMut(&str, &[u8]),
) -> Result<(), StoreError> {
    let start = match range {
        KeyRange::All => "",
        KeyRange::Prefix(prefix) => prefix,
        KeyRange::Between { start, .. } => start,
    };
    for entry in t.range(start..).map_err(redb_err("read"))? {
        let (key, value) = entry.map_err(redb_err("read"))?;
        let key = key.value();
        if !range.contains(key) {
            // Keys come in order: the first one past the range ends it.
            break;
        }
        visit(key, value.value());
    }
    Ok(())
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

/// A redb write transaction as a [`Txn`]: each call opens the table it needs, and every
/// write is noted for the watchers.
struct RedbTxn<'t> {
    txn: &'t redb::WriteTransaction,
    changes: Vec<(Table, String, Change)>,
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

    fn range(
        &mut self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        read_range(&self.table(table)?, range)
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.table(table)?
            .insert(key, value)
            .map_err(redb_err("write"))?;
        self.changes
            .push((table, key.to_owned(), Change::Put(value.to_vec())));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let existed = self
            .table(table)?
            .remove(key)
            .map_err(redb_err("write"))?
            .is_some();
        if existed {
            self.changes.push((table, key.to_owned(), Change::Delete));
        }
        Ok(existed)
    }
}

/// The embedded, transactional store (redb) kept on the data partition.
pub struct RedbStore {
    db: Database,
    watchers: Watchers,
    /// Held from a write transaction's start to its publication, so watchers see commits
    /// in commit order and a new watch never falls between a commit and its events.
    writer: Mutex<()>,
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
            source: Box::new(source),
        })?;
        RedbStore::init(db)
    }

    /// A store in memory, for tests of the master and of callers.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<memory>"),
                source: Box::new(source),
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
        Ok(RedbStore {
            db,
            watchers: Watchers::default(),
            writer: Mutex::new(()),
        })
    }

    /// The writer lock (see [`RedbStore::writer`]); a panic under it leaves nothing
    /// half-done behind (redb aborts the transaction), so a poisoned lock is taken as is.
    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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

    fn range_raw(
        &self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(redb_err("open table"))?;
        read_range(&t, range)
    }

    fn range_keys(&self, table: Table, range: KeyRange<'_>) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(redb_err("open table"))?;
        read_keys(&t, range)
    }

    /// One read transaction over every table: redb's MVCC gives it the state of the last
    /// commit before it began, whatever is written meanwhile. The revision is read under
    /// the writer lock, so it names exactly that commit.
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (txn, revision) = {
            let _writer = self.write_lock();
            let txn = self.db.begin_read().map_err(redb_err("begin"))?;
            (txn, self.watchers.revision())
        };
        Snapshot::read_with(revision, |table| {
            let t = txn
                .open_table(definition(table))
                .map_err(redb_err("open table"))?;
            read_range(&t, KeyRange::All)
        })
    }

    fn watch_raw(&self, table: Table) -> Result<Watch, StoreError> {
        let _writer = self.write_lock();
        Ok(self.watchers.subscribe(table))
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.watchers.revision())
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
        let _writer = self.write_lock();
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        let mut written = 0;
        let mut changes = Vec::new();
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
                    changes.push((Table::Nodes, node.name.clone(), Change::Put(value)));
                    written += 1;
                }
            }
        }
        txn.commit().map_err(redb_err("commit"))?;
        self.watchers.publish(changes);
        Ok(written)
    }

    fn transact_raw(&self, f: &mut TxnFn<'_>) -> Result<(), StoreError> {
        // As in `update_raw`: one writer at a time, and an early return aborts.
        let _writer = self.write_lock();
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        let mut handle = RedbTxn {
            txn: &txn,
            changes: Vec::new(),
        };
        f(&mut handle)?;
        let changes = handle.changes;
        txn.commit().map_err(redb_err("commit"))?;
        self.watchers.publish(changes);
        Ok(())
    }

    fn update_raw(&self, table: Table, key: &str, f: &mut UpdateFn<'_>) -> Result<(), StoreError> {
        // redb allows one write transaction at a time: the read and the write below cannot
        // interleave with another update. Returning early drops `txn`, which aborts it.
        let _writer = self.write_lock();
        let txn = self.db.begin_write().map_err(redb_err("begin"))?;
        let mut changes = Vec::new();
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
                    changes.push((table, key.to_owned(), Change::Put(value)));
                }
                Write::Delete => {
                    if t.remove(key).map_err(redb_err("write"))?.is_some() {
                        changes.push((table, key.to_owned(), Change::Delete));
                    }
                }
                Write::Keep => {}
            }
        }
        txn.commit().map_err(redb_err("commit"))?;
        self.watchers.publish(changes);
        Ok(())
    }
}
