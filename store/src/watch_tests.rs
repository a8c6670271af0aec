//! Key ranges and watches on the embedded backend: what an etcd backend must also pass.

use std::time::Duration;

use super::*;

fn store_with(keys: &[&str]) -> RedbStore {
    let store = RedbStore::in_memory().expect("store");
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

#[test]
fn ranges_return_their_keys_in_order() {
    let store = store_with(&["web", "api-2", "api-1", "apis", "db"]);
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

#[test]
fn a_watch_sees_each_commit_once_in_order_and_only_its_table() {
    let store = store_with(&["before"]);
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

    let events = watch.drain().expect("events");
    let seen: Vec<(u64, &str, &Change)> = events
        .iter()
        .map(|e| (e.revision - start, e.key.as_str(), &e.change))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "a", &Change::Put(b"1".to_vec())),
            (3, "b", &Change::Put(b"2".to_vec())),
            (3, "a", &Change::Delete),
        ]
    );
    assert_eq!(
        watch.next_timeout(Duration::from_millis(10)),
        Ok(None),
        "nothing else"
    );
}

#[test]
fn an_aborted_transaction_publishes_nothing() {
    let store = store_with(&[]);
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

#[test]
fn a_watcher_that_falls_behind_is_told_to_read_again() {
    let store = store_with(&[]);
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
    assert_eq!(again.drain().expect("events").len(), 1);
}
