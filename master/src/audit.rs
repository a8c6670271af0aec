//! The audit log: every change made through the API (who, from where, what, when, and the
//! answer), kept in the store with the rest of the cluster's state, so it survives a
//! master's loss with etcd and travels in backups.
//!
//! "A change" is every request other than `GET`/`HEAD` to a route people, keys or joining
//! machines call; nodes' own traffic (reports, outputs) is the cluster working, not a
//! change anyone made, and would drown the log. Refused requests are kept too: an attack
//! is what an audit log is for.
//!
//! Ids are microseconds since the epoch, bumped past the last id so they only grow; the
//! store's keys are the ids zero-padded, so a range read from a time is a key range.
//! Entries older than [`RETENTION`] and beyond the newest [`MAX_ENTRIES`] are pruned.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use cloudos_cluster::api::AuditEntry;
use cloudos_store::{PeopleStore, Store, StoreError};
use time::{Duration, OffsetDateTime};

/// How long entries are kept.
pub const RETENTION: Duration = Duration::days(90);
/// The most entries kept (about 25 MB at 250 bytes each).
pub const MAX_ENTRIES: usize = 100_000;
/// Entries appended between prunes.
const PRUNE_EVERY: u32 = 1_000;

/// The id an entry made at `at` would have, before bumping: for range reads by time.
pub fn id_at(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or_default()
}

#[derive(Debug, Default)]
pub struct AuditLog {
    last: Mutex<u64>,
    since_prune: AtomicU32,
}

impl AuditLog {
    pub fn open(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(AuditLog {
            last: Mutex::new(store.last_audit_id()?.unwrap_or_default()),
            since_prune: AtomicU32::new(PRUNE_EVERY),
        })
    }

    /// A new id, later than every id given before.
    pub fn next_id(&self, at: OffsetDateTime) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = id_at(at).max(*last + 1);
        *last
    }

    /// Stores `entry`, and now and then prunes what retention lets go.
    pub fn append(&self, store: &dyn Store, entry: &AuditEntry) -> Result<(), StoreError> {
        store.append_audit(entry)?;
        if self.since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            self.since_prune.store(0, Ordering::Relaxed);
            let removed = store.prune_audit(id_at(entry.at - RETENTION), MAX_ENTRIES)?;
            if removed > 0 {
                log::info!("audit log: pruned {removed} entries past retention");
            }
        }
        Ok(())
    }
}

/// What `GET /v1/audit` asks for.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuditQuery {
    /// RFC 3339 time, or a span back from now such as `1h` or `7d`.
    pub since: Option<String>,
    /// Only this user's (or `key:<name>`'s) entries.
    pub user: Option<String>,
    /// The newest this many (default 200, at most 10,000).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// The entries asked for, oldest first.
    pub fn run(&self, store: &dyn Store, now: OffsetDateTime) -> Result<Vec<AuditEntry>, String> {
        let from = match self.since.as_deref() {
            None => 0,
            Some(text) => id_at(crate::since::parse(text, now)?),
        };
        let limit = self.limit.unwrap_or(200).clamp(1, 10_000);
        let mut entries: Vec<AuditEntry> = store
            .audit_from(from)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| self.user.as_deref().is_none_or(|u| e.who == u))
            .collect();
        let skip = entries.len().saturating_sub(limit);
        entries.drain(..skip);
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_store::redb::RedbStore;
    use time::macros::datetime;

    fn entry(log: &AuditLog, at: OffsetDateTime, who: &str) -> AuditEntry {
        AuditEntry {
            id: log.next_id(at),
            at,
            who: who.to_owned(),
            role: Some(cloudos_cluster::Role::Admin),
            from: "10.0.0.9".to_owned(),
            method: "POST".to_owned(),
            path: "/v1/tasks".to_owned(),
            status: 200,
        }
    }

    #[test]
    fn ids_only_grow_even_when_the_clock_steps_back() {
        let log = AuditLog::default();
        let t = datetime!(2026-12-07 12:00 UTC);
        let a = log.next_id(t);
        let b = log.next_id(t - Duration::hours(1));
        let c = log.next_id(t);
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn a_query_filters_by_time_and_user_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path().join("s.redb")).expect("store");
        let log = AuditLog::open(&store).expect("open");
        let t = datetime!(2026-12-07 12:00 UTC);
        for (i, who) in ["alice", "bob", "alice", "key:ci"].iter().enumerate() {
            let at = t + Duration::minutes(i as i64 * 10);
            log.append(&store, &entry(&log, at, who)).expect("append");
        }
        let now = t + Duration::hours(1);
        let ask = |since: Option<&str>, user: Option<&str>, limit| {
            AuditQuery {
                since: since.map(str::to_owned),
                user: user.map(str::to_owned),
                limit,
            }
            .run(&store, now)
            .expect("query")
        };
        assert_eq!(ask(None, None, None).len(), 4);
        let alice = ask(None, Some("alice"), None);
        assert_eq!(alice.len(), 2);
        assert!(alice[0].id < alice[1].id);
        // 35 minutes back from 13:00 is 12:25: the entries of 12:30 only.
        assert_eq!(ask(Some("35m"), None, None).len(), 1);
        assert_eq!(ask(Some("2026-12-07T12:15:00Z"), None, None).len(), 2);
        let newest = ask(None, None, Some(1));
        assert_eq!(newest[0].who, "key:ci");
        assert!(AuditQuery {
            since: Some("yesterday".into()),
            ..Default::default()
        }
        .run(&store, now)
        .is_err());
        // A master started on the same store goes on after the last id.
        let again = AuditLog::open(&store).expect("reopen");
        assert!(again.next_id(t) > newest[0].id);
    }

    #[test]
    fn pruning_drops_what_is_too_old_or_too_many() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path().join("s.redb")).expect("store");
        let log = AuditLog::default();
        let t = datetime!(2026-12-07 12:00 UTC);
        for i in 0..6 {
            let at = t + Duration::days(i * 30);
            store
                .append_audit(&entry(&log, at, "alice"))
                .expect("append");
        }
        // Older than day 60 goes (days 0 and 30), then all but the newest three.
        let removed = store
            .prune_audit(id_at(t + Duration::days(60)), 3)
            .expect("prune");
        assert_eq!(removed, 3);
        let left = store.audit_from(0).expect("read");
        assert_eq!(left.len(), 3);
        assert_eq!(left[0].at, t + Duration::days(90));
    }
}
