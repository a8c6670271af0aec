//! Key ranges and watches, on both backends.

use std::time::Duration;

use std::sync::Arc;

use super::*;
use crate::backends::{on_both_backends, NewStore};

on_both_backends!(
    ranges_return_their_keys_in_order,
    a_watch_sees_each_commit_once_in_order_and_only_its_table,
    an_aborted_transaction_publishes_nothing,
    a_watcher_that_falls_behind_is_told_to_read_again
);

fn store_with(new: NewStore, keys: &[&str]) -> Arc<dyn Store> {
    let store = new();
    for key in keys {
        store
            .put_raw(Table::Services, key, key.as_bytes())
            .expect("put");
    }
    store
}

fn keys(pairs: Vec<(String, Vec<u8>)>) -> Vec<String> {
    pairs.into_iter().map(|(k, _)| k).collect()
}

fn ranges_return_their_keys_in_order(new: NewStore) {
    let store = store_with(new, &["web", "api-2", "api-1", "apis", "db"]);
    let cases: [(KeyRange<'_>, &[&str]); 5] = [
        (KeyRange::All, &["api-1", "api-2", "apis", "db", "web"]),
        (KeyRange::Prefix("api-"), &["api-1", "api-2"]),
        (KeyRange::Prefix("x"), &[]),
        (
            KeyRange::Between {
                start: "apis",
                end: "web",
            },
            &["apis", "db"],
        ),
        (
            KeyRange::Between {
                start: "b",
                end: "a",
            },
            &[],
        ),
    ];
    for (range, want) in cases {
        let got = keys(store.range_raw(Table::Services, range).expect("range"));
        assert_eq!(got, want, "{range:?}");
        // The keys-only read gives the same keys (etcd: a keys-only range).
        let only = store.range_keys(Table::Services, range).expect("keys");
        assert_eq!(only, want, "keys of {range:?}");
        let mut in_txn = Vec::new();
        store
            .transact_raw(&mut |txn| {
                in_txn = keys(txn.range(Table::Services, range)?);
                Ok(())
            })
            .expect("txn");
        assert_eq!(in_txn, want, "{range:?} in a transaction");
    }
}

fn a_watch_sees_each_commit_once_in_order_and_only_its_table(new: NewStore) {
    let store = store_with(new, &["before"]);
    let watch = store.watch_raw(Table::Services).expect("watch");
    let start = store.revision().expect("revision");
    store.put_raw(Table::Services, "a", b"1").expect("put");
    store
        .put_raw(Table::Tasks, "t", b"{}")
        .expect("other table");
    store
        .transact_raw(&mut |txn| {
            txn.put(Table::Services, "b", b"2")?;
            txn.delete(Table::Services, "a")?;
            Ok(())
        })
        .expect("txn");
    // Deleting what is not there changes nothing, so nothing is published.
    assert!(!store
        .delete_raw(Table::Services, "nothing")
        .expect("delete"));

    // etcd delivers a moment after the commit; the embedded backend at once.
    let mut events = Vec::new();
    while events.len() < 3 {
        match watch.next_timeout(Duration::from_secs(5)).expect("watch") {
            Some(event) => events.push(event),
            None => panic!("only {events:?} arrived"),
        }
    }
    let seen: Vec<(&str, &Change)> = events.iter().map(|e| (e.key.as_str(), &e.change)).collect();
    assert_eq!(seen[0], ("a", &Change::Put(b"1".to_vec())));
    // The two changes of one transaction happen at once: their order is not promised.
    let mut together = seen[1..].to_vec();
    together.sort();
    assert_eq!(
        together,
        [("a", &Change::Delete), ("b", &Change::Put(b"2".to_vec()))]
    );
    // One revision per transaction, after the watch began, growing with each commit (on
    // etcd other masters' commits come in between, so only the order is promised).
    assert!(events[0].revision > start, "{events:?}");
    assert!(events[1].revision > events[0].revision, "{events:?}");
    assert_eq!(events[1].revision, events[2].revision, "one transaction");
    assert_eq!(
        watch.next_timeout(Duration::from_millis(10)),
        Ok(None),
        "nothing else"
    );
}

fn an_aborted_transaction_publishes_nothing(new: NewStore) {
    let store = store_with(new, &[]);
    let watch = store.watch_raw(Table::Services).expect("watch");
    let failed = store.transact_raw(&mut |txn| {
        txn.put(Table::Services, "half", b"1")?;
        Err(StoreError::NotFound {
            what: "thing",
            key: "k".into(),
        })
    });
    assert!(failed.is_err());
    assert_eq!(watch.drain().expect("events"), []);
    assert_eq!(store.get_raw(Table::Services, "half").expect("get"), None);
}

fn a_watcher_that_falls_behind_is_told_to_read_again(new: NewStore) {
    let store = store_with(new, &[]);
    let watch = store.watch_raw(Table::Services).expect("watch");
    for i in 0..=watch::WATCH_BUFFER {
        store
            .put_raw(Table::Services, &format!("k{i}"), b"x")
            .expect("put");
    }
    let mut delivered = 0;
    let end = loop {
        match watch.next_timeout(Duration::from_millis(10)) {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("the lagging watcher was not told"),
            Err(e) => break e,
        }
    };
    assert_eq!(delivered, watch::WATCH_BUFFER);
    assert_eq!(end, WatchError::Lagged);
    // A new watch works again.
    let again = store.watch_raw(Table::Services).expect("watch");
    store.put_raw(Table::Services, "fresh", b"y").expect("put");
    let fresh = again
        .next_timeout(Duration::from_secs(5))
        .expect("watch")
        .expect("the new watch's event");
    assert_eq!(fresh.key, "fresh");
}
