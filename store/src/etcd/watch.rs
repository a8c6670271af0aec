//! etcd watches as the store's [`Watch`]es.
//!
//! A watch starts at the revision after the one current when [`start`] is called, so a
//! change committed after that call is delivered even if the etcd watch itself is set up
//! a moment later (etcd replays history from the start revision). When the stream breaks
//! (the member it was on went away), it is opened again from the revision after the last
//! event delivered, through whichever member answers; when that revision is compacted, the
//! reader is told to read again ([`crate::WatchError::Lagged`]), never left to miss a
//! change.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};

use super::{prefix_end, EtcdStore};
use crate::keyspace::Table;
use crate::watch::{Change, Watch, WatchEvent, WatchFeed};
use crate::StoreError;

/// How long a broken watch keeps trying to reopen before it ends as closed.
const REOPEN_FOR: Duration = Duration::from_secs(60);

pub(super) fn start(store: &EtcdStore, table: Table) -> Result<Watch, StoreError> {
    let from = store.current_revision()? + 1;
    let (feed, watch) = Watch::fed();
    let follower = Follower {
        client: store.client.clone(),
        table,
        base: store.table_prefix(table),
        feed,
    };
    let runtime = store.runtime.as_ref().ok_or(StoreError::Closed)?;
    runtime.spawn(follower.follow(from));
    Ok(watch)
}

/// Forwards one table's etcd events to a [`WatchFeed`].
struct Follower {
    client: etcd_client::Client,
    table: Table,
    /// The table's key prefix, `<prefix><table>/`.
    base: String,
    feed: WatchFeed,
}

/// Why a stream ended.
enum Ended {
    /// The reader is gone or fell behind: stop.
    Reader,
    /// The revision to start from was compacted: the reader must read again.
    Compacted,
    /// The stream broke; reopen from this revision.
    Broken(i64),
}

impl Follower {
    async fn follow(self, mut from: i64) {
        let mut broken_since: Option<tokio::time::Instant> = None;
        loop {
            match self.stream(from).await {
                Ended::Reader => return,
                Ended::Compacted => {
                    self.feed.lag();
                    return;
                }
                Ended::Broken(next) => {
                    if next > from {
                        // Progress was made on that stream: the clock starts again.
                        broken_since = None;
                    }
                    from = next;
                    let since = *broken_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > REOPEN_FOR {
                        // Dropping the feed ends the watch as closed.
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// One etcd watch stream from `from` until it ends.
    async fn stream(&self, from: i64) -> Ended {
        let options = WatchOptions::new()
            .with_range(prefix_end(self.base.as_bytes()))
            .with_start_revision(from);
        let mut client = self.client.watch_client();
        let mut stream = match client.watch(self.base.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(_) => return Ended::Broken(from),
        };
        let mut next = from;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => return Ended::Broken(next),
            };
            if response.compact_revision() > 0 {
                return Ended::Compacted;
            }
            if response.canceled() {
                return Ended::Broken(next);
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(key) = std::str::from_utf8(kv.key())
                    .ok()
                    .and_then(|k| k.strip_prefix(self.base.as_str()))
                else {
                    continue;
                };
                let change = match event.event_type() {
                    EventType::Put => Change::Put(kv.value().to_vec()),
                    EventType::Delete => Change::Delete,
                };
                let delivered = self.feed.send(WatchEvent {
                    revision: u64::try_from(kv.mod_revision()).unwrap_or_default(),
                    table: self.table,
                    key: key.to_owned(),
                    change,
                });
                if !delivered {
                    return Ended::Reader;
                }
                next = next.max(kv.mod_revision() + 1);
            }
        }
    }
}
