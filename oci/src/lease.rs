//! Leases: how a pull in progress, an import or a running container tells garbage
//! collection which blobs it needs, by digest. A blob is kept while any lease pins it,
//! whatever the refs say: a pull's blobs have no ref until the pull ends, and a running
//! container's image may have lost its tag to a newer image.
//!
//! [`ImageStore::gc`] holds the lease table for as long as it decides and unlinks, so a pin
//! either lands before a collection (which then keeps the blob) or after it (and the
//! pinner then sees whether the blob is still there). Owns the table, not the blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::digest::Digest;
use crate::store::ImageStore;

/// Every lease's pins, shared by the clones of one opened [`ImageStore`].
#[derive(Debug, Default)]
pub(crate) struct Leases(Mutex<LeaseTable>);

#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    next_id: u64,
    pins: BTreeMap<u64, BTreeSet<Digest>>,
}

impl Leases {
    /// The table; a panic while it was held cannot leave it half-updated (each change
    /// is one map operation), so a poisoned lock is still good.
    pub(crate) fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LeaseTable {
    /// Every digest some lease pins.
    pub(crate) fn pinned(&self) -> BTreeSet<Digest> {
        self.pins.values().flatten().cloned().collect()
    }
}

/// A hold on blobs: what it pins stays in the store (with its unpacked layer) until the
/// lease is dropped. Pin before checking that a blob is there, so that a collection
/// cannot remove it between the check and its use.
#[derive(Debug)]
pub struct Lease {
    store: ImageStore,
    id: u64,
}

impl Lease {
    fn new(store: ImageStore) -> Self {
        let id = {
            let mut table = store.leases().lock();
            table.next_id += 1;
            let id = table.next_id;
            table.pins.insert(id, BTreeSet::new());
            id
        };
        Self { store, id }
    }

    /// The store whose blobs this lease holds.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Keeps `digest` (a blob, and its unpacked layer if it is one) while this lease
    /// lives. Waits while a garbage collection is deciding and unlinking.
    pub fn pin(&self, digest: &Digest) {
        if let Some(pins) = self.store.leases().lock().pins.get_mut(&self.id) {
            pins.insert(digest.clone());
        }
    }

    /// What this lease pins.
    pub fn pinned(&self) -> BTreeSet<Digest> {
        self.store
            .leases()
            .lock()
            .pins
            .get(&self.id)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.store.leases().lock().pins.remove(&self.id);
    }
}

impl ImageStore {
    /// A new lease on this store's blobs, pinning nothing yet.
    pub fn lease(&self) -> Lease {
        Lease::new(self.clone())
    }
}
