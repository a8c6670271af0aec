//! What the store keeps of the people side of a cluster beyond users: API keys and the
//! audit log. An extension of [`Store`], so every backend has it.

use cloudos_cluster::api::AuditEntry;
use cloudos_cluster::apikey::ApiKeyRecord;

use super::{decode, encode, get_json, list_json, put_json, KeyRange, Store, StoreError, Table};

/// The audit log's key of entry `id`: zero-padded, so key order is id order.
pub fn audit_key(id: u64) -> String {
    format!("{id:020}")
}

pub trait PeopleStore: Store {
    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        put_json(self, Table::ApiKeys, &key.id, key)
    }

    fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        get_json(self, Table::ApiKeys, id)
    }

    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        list_json(self, Table::ApiKeys)
    }

    /// Adds an entry to the audit log.
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let key = audit_key(entry.id);
        self.put_raw(Table::Audit, &key, &encode(Table::Audit, &key, entry)?)
    }

    /// The entries with an id of at least `from`, oldest first.
    fn audit_from(&self, from: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let start = audit_key(from);
        let end = audit_key(u64::MAX);
        self.range_raw(
            Table::Audit,
            KeyRange::Between {
                start: &start,
                end: &end,
            },
        )?
        .into_iter()
        .map(|(key, bytes)| decode(Table::Audit, &key, &bytes))
        .collect()
    }

    /// The id of the newest entry, if any.
    fn last_audit_id(&self) -> Result<Option<u64>, StoreError> {
        // Keys are fixed-width ids, so the last key is the newest entry's.
        Ok(self
            .range_keys(Table::Audit, KeyRange::All)?
            .last()
            .and_then(|key| key.parse().ok()))
    }

    /// Deletes entries older than id `before`, and the oldest beyond the newest `keep`;
    /// returns how many went.
    fn prune_audit(&self, before: u64, keep: usize) -> Result<usize, StoreError> {
        let keys = self.range_keys(Table::Audit, KeyRange::All)?;
        let over = keys.len().saturating_sub(keep);
        let cut = audit_key(before);
        let mut removed = 0;
        for (i, key) in keys.iter().enumerate() {
            if i < over || *key < cut {
                self.delete_raw(Table::Audit, key)?;
                removed += 1;
            } else {
                break;
            }
        }
        Ok(removed)
    }
}

impl<S: Store + ?Sized> PeopleStore for S {}
