//! Tests of the store's transactions (one operation, one transaction), the quarantine of
//! undecodable records and the file's mode, against real redb files.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use std::path::{Path, PathBuf};

use ::redb::Database;
use cloudos_cluster::token::TokenError;

use super::*;
use crate::redb::definition;
use cloudos_cluster::pki::CaPin;
use cloudos_cluster::token::Token;
use cloudos_cluster::workload::{ServiceRecord, TaskInfo, WorkloadSpec};

const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);
use crate::backends::{on_both_backends, NewStore};

on_both_backends!(
    a_failing_transaction_writes_nothing,
    a_join_is_one_transaction,
    an_eviction_is_one_transaction,
    workload_changes_are_one_transaction,
    a_secret_is_created_once_and_never_replaced_but_a_put_replaces
);

fn token(uses: Option<u32>) -> (Token, TokenRecord) {
    let t = Token::generate(CaPin::from_hex(&"11".repeat(32)).expect("pin")).expect("token");
    let r = TokenRecord::new(
        &t,
        Role::Compute,
        NOW,
        Some(Duration::hours(1)),
        uses,
        "test",
    )
    .expect("record");
    (t, r)
}

fn node(name: &str, serial: &str) -> NodeRecord {
    NodeRecord {
        name: name.to_owned(),
        role: Role::Compute,
        address: "10.0.0.7".to_owned(),
        arch: "x86_64".to_owned(),
        labels: BTreeMap::new(),
        reported_labels: BTreeMap::new(),
        cert_serial: serial.parse().expect("serial"),
        pending_serial: None,
        joined_at: NOW,
        last_seen: NOW,
        telemetry: None,
        state: NodeState::NotReady,
        unschedulable: false,
        boot: None,
        subnet: None,
    }
}

fn revoked(serial: &str) -> RevokedCert {
    RevokedCert {
        serial: serial.parse().expect("serial"),
        node: Some("n1".into()),
        revoked_at: NOW,
        reason: "test".into(),
    }
}

fn use_of<'a>(t: &'a Token, r: &'a TokenRecord) -> TokenUse<'a> {
    TokenUse {
        id: r.id.as_str(),
        secret: t.secret(),
        now: NOW,
        role: Some(Role::Compute),
    }
}

/// A table's `(key, value)` pairs.
type Rows = Vec<(String, Vec<u8>)>;

/// Everything the store holds, to compare before and after a refused operation.
fn dump(s: &dyn Store) -> Vec<(Table, Rows)> {
    Table::ALL
        .iter()
        .map(|t| (*t, s.list_raw(*t).expect("list")))
        .collect()
}

fn a_failing_transaction_writes_nothing(new: NewStore) {
    let s = new();
    s.put_node(&node("n1", "01")).expect("put");
    let before = dump(&*s);
    let err = s
        .transact_raw(&mut |txn| {
            txn.put(Table::Nodes, "n2", b"{}")?;
            txn.delete(Table::Nodes, "n1")?;
            assert_eq!(txn.get(Table::Nodes, "n1")?, None, "reads see own writes");
            Err(StoreError::NotFound {
                what: "test",
                key: "abort".into(),
            })
        })
        .expect_err("aborted");
    assert!(matches!(err, StoreError::NotFound { what: "test", .. }));
    assert_eq!(dump(&*s), before);
}

fn a_join_is_one_transaction(new: NewStore) {
    let s = new();
    let (t, r) = token(Some(2));
    s.put_token(&r).expect("token");
    s.put_node(&node("n1", "01")).expect("old record");

    // The same node joins again with a new certificate: token use, record, revocations.
    let admission = s
        .admit_node(&use_of(&t, &r), &node("n1", "02"), &[revoked("0a")])
        .expect("admit");
    assert_eq!(
        admission.token.uses_left,
        Some(2),
        "the record before the use"
    );
    assert_eq!(admission.replaced, Some(node("n1", "01")));
    let serials: Vec<&str> = admission
        .revoked
        .iter()
        .map(|r| r.serial.as_str())
        .collect();
    assert_eq!(serials, ["01", "0a"]);
    assert_eq!(admission.revoked[0].reason, ops::REJOIN_REASON);
    assert_eq!(s.get_node("n1").expect("get"), Some(node("n1", "02")));
    for serial in ["01", "0a"] {
        assert!(s
            .is_cert_revoked(&serial.parse().expect("serial"))
            .expect("check"));
    }
    assert_eq!(
        s.get_token(r.id.as_str())
            .expect("get")
            .and_then(|r| r.uses_left),
        Some(1)
    );

    // A join whose token check fails writes nothing: no node, no revocation, no use.
    let before = dump(&*s);
    let wrong = TokenUse {
        secret: "wrongwrongwrongwrongwrongwrongwr",
        ..use_of(&t, &r)
    };
    let err = s
        .admit_node(&wrong, &node("n1", "03"), &[revoked("0b")])
        .expect_err("wrong secret");
    assert!(
        matches!(err, StoreError::Token(TokenError::WrongSecret { .. })),
        "{err}"
    );
    assert_eq!(dump(&*s), before);

    // Same for a token with no uses left.
    s.admit_node(&use_of(&t, &r), &node("n2", "04"), &[])
        .expect("last use");
    let before = dump(&*s);
    let err = s
        .admit_node(&use_of(&t, &r), &node("n3", "05"), &[])
        .expect_err("used up");
    assert!(
        matches!(err, StoreError::Token(TokenError::UsedUp { .. })),
        "{err}"
    );
    assert_eq!(dump(&*s), before);
}

fn an_eviction_is_one_transaction(new: NewStore) {
    let s = new();
    s.put_node(&node("n1", "01")).expect("put");
    let extra: CertSerial = "0c".parse().expect("serial");
    let (record, revoked) = s
        .evict_node(
            "n1",
            "removed by alice",
            NOW,
            &[extra.clone(), "01".parse().expect("serial")],
        )
        .expect("evict");
    assert_eq!(record, node("n1", "01"));
    let serials: Vec<&str> = revoked.iter().map(|r| r.serial.as_str()).collect();
    assert_eq!(serials, ["01", "0c"], "each serial once");
    assert_eq!(s.get_node("n1").expect("get"), None);
    assert_eq!(s.revoked_certs().expect("list"), revoked);
    assert!(revoked.iter().all(|r| r.reason == "removed by alice"));

    let before = dump(&*s);
    let err = s
        .evict_node("n1", "again", NOW, &[extra])
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { what: "node", .. }));
    assert_eq!(dump(&*s), before, "no revocation without a node");
}

fn workload_changes_are_one_transaction(new: NewStore) {
    let s = new();
    let spec = WorkloadSpec::new("10.0.0.1:5000/busybox:1");
    let task = |id: &str| TaskInfo::queued(id.into(), spec.clone(), None, 0, NOW);
    s.put_task(&task("old")).expect("put");
    let service = ServiceRecord {
        request_id: None,
        name: "web".into(),
        spec: spec.clone(),
        replicas: 1,
        created_at: NOW,
        address: None,
        revision: 1,
        revisions: Vec::new(),
        policy: Default::default(),
        update: None,
        next_index: 0,
    };
    s.write_workloads(&WorkloadWrite {
        save_tasks: &[task("t1"), task("t2")],
        delete_tasks: &["old".into()],
        save_services: std::slice::from_ref(&service),
        ..WorkloadWrite::default()
    })
    .expect("write");
    let ids: Vec<String> = s
        .list_tasks()
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t1", "t2"]);
    assert_eq!(s.list_services().expect("list"), vec![service]);
}

/// A file store in a fresh directory.
fn file_store(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cloudos-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.redb");
    (dir, path)
}

/// Damage as it happens on disk: bytes that are not a record, written with redb directly
/// (not through the store, which only writes what it encoded).
fn damage(path: &Path, table: Table, key: &str, bytes: &[u8]) {
    let db = Database::create(path).expect("open with redb");
    let txn = db.begin_write().expect("begin");
    {
        let mut t = txn.open_table(definition(table)).expect("table");
        t.insert(key, bytes).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn an_undecodable_record_is_quarantined_and_the_rest_served() {
    let (dir, path) = file_store("quarantine");
    {
        let s = RedbStore::open(&path).expect("create");
        s.put_node(&node("n1", "01")).expect("put");
        s.put_node(&node("n2", "02")).expect("put");
        s.revoke_cert(&revoked("0d")).expect("revoke");
    }
    damage(&path, Table::Nodes, "n2", b"{\"name\":\"n2\",\"role\":");
    damage(&path, Table::RevokedCerts, "0d", &[0xff, 0x00, 0x13]);
    damage(&path, Table::Tasks, "t-1", b"not json");

    let s = RedbStore::open(&path).expect("a damaged store still opens");
    let moved = s.quarantine_unreadable(NOW).expect("sweep");
    let mut what: Vec<(String, String)> = moved
        .iter()
        .map(|q| (q.table.clone(), q.key.clone()))
        .collect();
    what.sort();
    assert_eq!(
        what,
        [
            ("nodes".to_owned(), "n2".to_owned()),
            ("revoked_certs".to_owned(), "0d".to_owned()),
            ("tasks".to_owned(), "t-1".to_owned()),
        ]
    );
    let bad_task = moved.iter().find(|q| q.table == "tasks").expect("task");
    assert_eq!(
        bad_task.raw_hex,
        cloudos_cluster::to_hex(b"not json"),
        "bytes kept as they were"
    );
    assert!(bad_task.error.contains("expected"), "{}", bad_task.error);
    assert_eq!(s.quarantined().expect("list").len(), 3);

    // The rest is served, and the damaged revocation still revokes.
    assert_eq!(s.list_nodes().expect("nodes"), vec![node("n1", "01")]);
    assert_eq!(s.list_tasks().expect("tasks"), vec![]);
    assert!(s
        .is_cert_revoked(&"0d".parse().expect("serial"))
        .expect("check"));
    let kept = s.revoked_certs().expect("list");
    assert_eq!(kept[0].reason, quarantine::KEPT_REVOKED);

    // A second sweep finds nothing more.
    assert_eq!(s.quarantine_unreadable(NOW).expect("sweep"), vec![]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_store_file_is_private_and_an_old_one_is_tightened() {
    let (dir, path) = file_store("mode");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    drop(RedbStore::open(&path).expect("create"));
    assert_eq!(mode(&path), 0o600, "created private");

    // An install made under umask 022 left the CA's key readable by everyone.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let s = RedbStore::open(&path).expect("reopen");
    assert_eq!(mode(&path), 0o600, "tightened at open");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn a_secret_is_created_once_and_never_replaced_but_a_put_replaces(new: NewStore) {
    let s = new();
    let record = |sealed: &str| cloudos_cluster::secret::SecretRecord {
        name: "db".into(),
        created_at: NOW,
        bytes: 7,
        sealed: sealed.into(),
    };
    assert!(s.create_secret(&record("first")).expect("create"));
    assert!(!s.create_secret(&record("second")).expect("again"));
    assert_eq!(s.get_secret("db").expect("get"), Some(record("first")));
    assert_eq!(s.list_secrets().expect("list").len(), 1);
    assert!(s.delete_secret("db").expect("delete"));
    assert_eq!(s.get_secret("db").expect("get"), None);
    // A registry's credentials, logged in again, replace in one write.
    s.put_secret(&record("first")).expect("put");
    s.put_secret(&record("second")).expect("put again");
    assert_eq!(s.get_secret("db").expect("get"), Some(record("second")));
}
