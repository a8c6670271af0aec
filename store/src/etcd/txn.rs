//! Optimistic transactions on etcd: the closure reads (all at one revision) and buffers
//! its writes; the commit is one etcd `Txn` whose compares check that nothing it read has
//! changed since, and whose success branch holds the writes. When another master's commit
//! came in between, the compares fail and the closure runs again on fresh reads.
//!
//! What a commit compares:
//! - each key read by `get`: its mod revision as read (0 for a key that was absent);
//! - each table read by `range`: its table marker's mod revision (a range compare would
//!   not see a key deleted from the range);
//! - on a leader's store, the leader key's create revision ([`super::Fence`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, TxnOp};

use super::{EtcdStore, MAX_ATTEMPTS};
use crate::keyspace::{KeyRange, Table, Txn, TxnFn};
use crate::StoreError;

/// What one attempt of a transaction read and wrote.
struct Attempt<'s> {
    store: &'s EtcdStore,
    /// The revision every read of this attempt is made at, set by the first read.
    read_at: Option<i64>,
    /// Keys read, with their mod revision (0: absent).
    keys: BTreeMap<Vec<u8>, i64>,
    /// Tables range-read, with their marker's mod revision.
    tables: BTreeMap<Table, i64>,
    /// Buffered writes: `Some` puts, `None` deletes.
    writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    /// The first table written, for a contention error.
    first_table: Option<Table>,
}

impl<'s> Attempt<'s> {
    fn new(store: &'s EtcdStore) -> Self {
        Attempt {
            store,
            read_at: None,
            keys: BTreeMap::new(),
            tables: BTreeMap::new(),
            writes: BTreeMap::new(),
            first_table: None,
        }
    }

    /// Reads one etcd key at this attempt's revision: its value and mod revision.
    fn read_key(&mut self, key: Vec<u8>) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let mut options = GetOptions::new();
        if let Some(revision) = self.read_at {
            options = options.with_revision(revision);
        }
        let kv = self.store.kv();
        let response = self.store.read("read", || {
            let (mut kv, key, options) = (kv.clone(), key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })?;
        if self.read_at.is_none() {
            self.read_at = Some(super::header_revision(response.header()));
        }
        Ok(match response.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        })
    }

    fn note_write(&mut self, table: Table, key: &str, value: Option<Vec<u8>>) {
        self.first_table.get_or_insert(table);
        self.writes.insert((table, key.to_owned()), value);
    }

    /// Commits the buffered writes under the compares; `Ok(false)` when a compare failed
    /// (the attempt's reads are stale). A read-only attempt commits nothing.
    fn commit(self) -> Result<bool, StoreError> {
        if self.writes.is_empty() {
            return Ok(true);
        }
        let store = self.store;
        let mut compares = Vec::with_capacity(self.keys.len() + self.tables.len() + 1);
        for (key, revision) in &self.keys {
            compares.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                *revision,
            ));
        }
        for (table, revision) in &self.tables {
            compares.push(Compare::mod_revision(
                store.marker(*table),
                CompareOp::Equal,
                *revision,
            ));
        }
        if let Some(fence) = &store.fence {
            compares.push(fence.compare());
        }
        let mut ops = Vec::with_capacity(self.writes.len() + 4);
        let mut tables = BTreeSet::new();
        for ((table, key), value) in self.writes {
            tables.insert(table);
            let etcd_key = store.key(table, &key);
            ops.push(match value {
                Some(value) => TxnOp::put(etcd_key, value, None::<PutOptions>),
                None => TxnOp::delete(etcd_key, None),
            });
        }
        for table in tables {
            ops.push(TxnOp::put(store.marker(table), [], None::<PutOptions>));
        }
        // On failure, read the leader key: it tells a lost leadership from a conflict.
        let otherwise = match &store.fence {
            Some(fence) => vec![TxnOp::get(fence.key().to_vec(), None)],
            None => Vec::new(),
        };
        let txn = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(otherwise);
        let kv = store.kv();
        let response = store.request("commit", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })?;
        if response.succeeded() {
            return Ok(true);
        }
        if let Some(fence) = &store.fence {
            if !fence.holds_in(&response) {
                return Err(StoreError::Fenced);
            }
        }
        Ok(false)
    }
}

impl Txn for Attempt<'_> {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.writes.get(&(table, key.to_owned())) {
            return Ok(value.clone());
        }
        let etcd_key = self.store.key(table, key);
        let (value, revision) = self.read_key(etcd_key.clone())?;
        // The first read of a key is what the commit must still find.
        self.keys.entry(etcd_key).or_insert(revision);
        Ok(value)
    }

    fn range(
        &mut self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if !self.tables.contains_key(&table) {
            let (_, marker_revision) = self.read_key(self.store.marker(table))?;
            self.tables.insert(table, marker_revision);
        }
        let (rows, read_at) = self.store.read_range(table, range, self.read_at)?;
        self.read_at.get_or_insert(read_at);
        // The attempt's own writes, over what was read.
        let mut merged: BTreeMap<String, Vec<u8>> = rows.into_iter().collect();
        for ((t, key), value) in &self.writes {
            if *t != table || !range.contains(key) {
                continue;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.note_write(table, key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let existed = self.get(table, key)?.is_some();
        // Deleting what is not there writes nothing (and moves no revision).
        if existed {
            self.note_write(table, key, None);
        }
        Ok(existed)
    }
}

/// Runs `f` until one attempt commits, `f` fails, or [`MAX_ATTEMPTS`] were overtaken.
pub(super) fn transact(store: &EtcdStore, f: &mut TxnFn<'_>) -> Result<(), StoreError> {
    let mut table = Table::Meta;
    for attempt in 0..MAX_ATTEMPTS {
        let mut txn = Attempt::new(store);
        f(&mut txn)?;
        table = txn.first_table.unwrap_or(table);
        if txn.commit()? {
            return Ok(());
        }
        // Back off a little, more each time, so that masters racing for the same keys
        // spread out instead of colliding again.
        std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) * 2));
    }
    Err(StoreError::Contention {
        table,
        attempts: MAX_ATTEMPTS,
    })
}
