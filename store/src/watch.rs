//! Watches: the changes committed to the store, in commit order, as they happen.
//!
//! A watcher registers, then reads what it needs, then applies the events that follow (a
//! put is idempotent, so an event for something the read already saw does no harm). etcd
//! gives the same guarantee with a watch from the read's revision. A watcher that falls
//! [`WATCH_BUFFER`] events behind is dropped and told so ([`WatchError::Lagged`]), as etcd
//! tells a watcher whose revision was compacted: it must read again, never miss a change
//! silently. Backends own a [`Watchers`] and call [`Watchers::publish`] after each commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Table;

/// How many events a watcher may leave unread before it is dropped.
pub const WATCH_BUFFER: usize = 4096;

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Put(Vec<u8>),
    Delete,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Grows by one per committed write transaction; events of one transaction share it.
    pub revision: u64,
    pub table: Table,
    pub key: String,
    pub change: Change,
}

/// Why a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("the watcher fell {WATCH_BUFFER} changes behind and was dropped; read the state again and watch anew")]
    Lagged,
    #[error("the store was closed")]
    Closed,
}

/// The receiving end of a watch on one table.
#[derive(Debug)]
pub struct Watch {
    rx: Receiver<WatchEvent>,
    /// Set by the publisher when it dropped this watcher for a full buffer.
    lagged: Arc<AtomicBool>,
}

impl Watch {
    /// The next event, waiting at most `timeout`; `Ok(None)` when none came in time.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>, WatchError> {
        match self.rx.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// Every event already delivered, without waiting.
    pub fn drain(&self) -> Result<Vec<WatchEvent>, WatchError> {
        let mut events = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(event) => events.push(event),
                Err(mpsc::TryRecvError::Empty) => return Ok(events),
                Err(mpsc::TryRecvError::Disconnected) => return Err(self.ended()),
            }
        }
    }

    fn ended(&self) -> WatchError {
        if self.lagged.load(Ordering::Acquire) {
            WatchError::Lagged
        } else {
            WatchError::Closed
        }
    }
}

impl Watch {
    /// A watch fed by a backend's own task (etcd's watch stream) through the returned
    /// [`WatchFeed`], with the same buffer and the same lag rule as [`Watchers`].
    pub(crate) fn fed() -> (WatchFeed, Watch) {
        let (tx, rx) = mpsc::sync_channel(WATCH_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        (
            WatchFeed {
                tx,
                lagged: lagged.clone(),
            },
            Watch { rx, lagged },
        )
    }
}

/// The sending end of a [`Watch::fed`] watch.
pub(crate) struct WatchFeed {
    tx: SyncSender<WatchEvent>,
    lagged: Arc<AtomicBool>,
}

impl WatchFeed {
    /// Delivers an event; `false` when the watch ended: its reader is gone, or it fell
    /// [`WATCH_BUFFER`] events behind and now reads [`WatchError::Lagged`].
    pub(crate) fn send(&self, event: WatchEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                self.lag();
                false
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Ends the watch as lagged: its reader must read again (etcd compacted the revision
    /// the watch stood at).
    pub(crate) fn lag(&self) {
        self.lagged.store(true, Ordering::Release);
    }
}

struct Subscriber {
    table: Table,
    tx: SyncSender<WatchEvent>,
    lagged: Arc<AtomicBool>,
}

/// A backend's registry of watchers and its revision counter.
#[derive(Default)]
pub struct Watchers {
    inner: Mutex<WatchersInner>,
}

#[derive(Default)]
struct WatchersInner {
    revision: u64,
    subscribers: Vec<Subscriber>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watchers")
    }
}

impl Watchers {
    /// A new watch on `table`. Callers serialize this with their commits (the backend's
    /// writer lock), so a change is either visible to a read after this call or delivered.
    pub fn subscribe(&self, table: Table) -> Watch {
        let (tx, rx) = mpsc::sync_channel(WATCH_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        self.lock().subscribers.push(Subscriber {
            table,
            tx,
            lagged: lagged.clone(),
        });
        Watch { rx, lagged }
    }

    /// The revision of the last commit published.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Delivers one committed transaction's changes; returns its revision. A watcher whose
    /// buffer is full is dropped and reads `Lagged`; one whose `Watch` is gone is dropped.
    pub fn publish(&self, changes: Vec<(Table, String, Change)>) -> u64 {
        let mut inner = self.lock();
        if changes.is_empty() {
            return inner.revision;
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.subscribers.retain(|sub| {
            for (table, key, change) in &changes {
                if *table != sub.table {
                    continue;
                }
                let event = WatchEvent {
                    revision,
                    table: *table,
                    key: key.clone(),
                    change: change.clone(),
                };
                match sub.tx.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::TrySendError::Full(_)) => {
                        sub.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
        revision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchersInner> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
