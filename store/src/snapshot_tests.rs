//! The snapshot's promises: every table round-trips, a snapshot is one point in time while
//! writers go on, and a restore is refused (with nothing written) for a newer schema, an
//! unknown table or a store that already holds a cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::macros::datetime;

use crate::backends::{on_both_backends, NewStore};
use crate::keyspace::SCHEMA_KEY;
use crate::{ClusterMeta, KeyRange, Snapshot, Store, StoreError, Table, SCHEMA_VERSION};

on_both_backends!(
    every_table_round_trips_through_json,
    debug_shows_counts_not_the_ca_key,
    a_snapshot_is_one_point_in_time_while_writers_go_on,
    restore_refuses_a_store_that_holds_a_cluster_and_writes_nothing,
    restore_refuses_a_newer_schema_or_an_unknown_table_and_writes_nothing,
    the_schema_version_comes_from_the_meta_table
);

fn meta(name: &str) -> ClusterMeta {
    ClusterMeta {
        name: name.to_owned(),
        ca_cert_pem: "-----BEGIN CERTIFICATE-----cert".to_owned(),
        ca_key_pem: "-----BEGIN PRIVATE KEY-----secret-ca-key".to_owned(),
        created_at: datetime!(2026-03-01 10:00 UTC),
    }
}

/// A store with a record in every table, some of them not JSON at all.
fn populated(new: NewStore) -> Arc<dyn Store> {
    let s = new();
    s.init_cluster_meta(&meta("lab")).expect("meta");
    for table in Table::ALL {
        if table != Table::Meta {
            s.put_raw(table, "k1", br#"{"a":1}"#).expect("put");
            s.put_raw(table, "k2", &[0, 159, 255]).expect("put bytes");
        }
    }
    s
}

/// Every table's `(key, value)` pairs.
type Everything = Vec<(Table, Vec<(String, Vec<u8>)>)>;

fn everything(s: &dyn Store) -> Everything {
    Table::ALL
        .iter()
        .map(|&t| (t, s.range_raw(t, KeyRange::All).expect("range")))
        .collect()
}

fn every_table_round_trips_through_json(new: NewStore) {
    let source = populated(new);
    let snapshot = source.snapshot().expect("snapshot");
    assert_eq!(snapshot.schema_version, SCHEMA_VERSION);
    assert_eq!(snapshot.tables.len(), Table::ALL.len());
    let json = serde_json::to_vec(&snapshot).expect("encode");
    let back: Snapshot = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back, snapshot);

    let target = new();
    target.restore(&back).expect("restore");
    assert_eq!(everything(&*target), everything(&*source));
    assert_eq!(target.cluster_meta().expect("meta"), Some(meta("lab")));
    assert_eq!(
        back.cluster_meta().expect("meta").map(|m| m.name),
        Some("lab".to_owned())
    );
}

fn debug_shows_counts_not_the_ca_key(new: NewStore) {
    let shown = format!("{:?}", populated(new).snapshot().expect("snapshot"));
    assert!(shown.contains("tokens"), "{shown}");
    assert!(!shown.contains("secret-ca-key"), "{shown}");
}

fn a_snapshot_is_one_point_in_time_while_writers_go_on(new: NewStore) {
    // A writer moves a counter in two tables in one transaction each time: any snapshot
    // that saw one table at another moment than the other would show them apart.
    let s = new();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = n.to_string().into_bytes();
                s.transact_raw(&mut |txn| {
                    txn.put(Table::Tokens, "counter", &value)?;
                    txn.put(Table::Nodes, "counter", &value)
                })
                .expect("write");
            }
            n
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let snap = s.snapshot().expect("snapshot");
        let a = snap.entries(Table::Tokens).first().map(|e| e.value.clone());
        let b = snap.entries(Table::Nodes).first().map(|e| e.value.clone());
        assert_eq!(a, b, "the two tables from two moments");
        seen.insert(a);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 1 && seen.len() > 1, "the writer ran meanwhile");
}

fn restore_refuses_a_store_that_holds_a_cluster_and_writes_nothing(new: NewStore) {
    let snapshot = populated(new).snapshot().expect("snapshot");
    let target = new();
    target.init_cluster_meta(&meta("other")).expect("meta");
    target.put_raw(Table::Nodes, "mine", b"{}").expect("put");
    let before = everything(&*target);
    let err = target.restore(&snapshot).expect_err("holds a cluster");
    assert!(
        matches!(err, StoreError::AlreadyInitialized { ref name } if name == "other"),
        "{err}"
    );
    assert_eq!(everything(&*target), before);
}

fn restore_refuses_a_newer_schema_or_an_unknown_table_and_writes_nothing(new: NewStore) {
    let mut newer = populated(new).snapshot().expect("snapshot");
    newer.schema_version = SCHEMA_VERSION + 1;
    let mut unknown = populated(new).snapshot().expect("snapshot");
    unknown.tables.insert("leases".to_owned(), Vec::new());
    let target = new();
    let before = everything(&*target);
    let err = target.restore(&newer).expect_err("newer");
    assert!(
        matches!(err, StoreError::SnapshotNewer { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    let err = target.restore(&unknown).expect_err("unknown table");
    assert!(err.to_string().contains("`leases`"), "{err}");
    assert_eq!(everything(&*target), before);
}

fn the_schema_version_comes_from_the_meta_table(new: NewStore) {
    let s = populated(new);
    s.put_raw(Table::Meta, SCHEMA_KEY, b"0").expect("older");
    assert_eq!(s.snapshot().expect("snapshot").schema_version, 0);
}
