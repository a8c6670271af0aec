//! What only the etcd backend has to show: masters racing on the same keys, the leader's
//! election and fence, a cluster that cannot answer, and etcd's TLS boundary attacked.
//! Everything runs against a real etcd ([`super::fixture`]).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::identity::{NodeIdentity, Role};
use cloudos_cluster::pki::{ClusterCa, NodeKey};
use cloudos_testkit::require;
use time::OffsetDateTime;

use super::fixture::EtcdFixture;
use super::*;
use crate::keyspace::Table;

/// Two stores on one prefix: two masters of one cluster.
fn two_masters(fixture: &EtcdFixture) -> (Arc<EtcdStore>, Arc<EtcdStore>) {
    let first = fixture.store();
    let config = fixture.config(&first.prefix);
    let second = EtcdStore::connect(&config).expect("second master");
    (Arc::new(first), Arc::new(second))
}

/// A campaign that never gives up.
fn never() -> std::sync::atomic::AtomicBool {
    std::sync::atomic::AtomicBool::new(false)
}

fn counter(store: &EtcdStore) -> u32 {
    store
        .get_raw(Table::Services, "counter")
        .expect("read")
        .map(|v| String::from_utf8(v).expect("utf8").parse().expect("number"))
        .unwrap_or(0)
}

#[test]
fn masters_racing_on_one_key_lose_no_update() {
    let fixture = require!(EtcdFixture::shared());
    let (a, b) = two_masters(fixture);
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store
                        .update_raw(Table::Services, "counter", &mut |current| {
                            let n: u32 = current
                                .map(|v| std::str::from_utf8(v).expect("utf8").parse().expect("n"))
                                .unwrap_or(0);
                            Ok(Write::Put((n + 1).to_string().into_bytes()))
                        })
                        .expect("update");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer");
    }
    assert_eq!(counter(&a), 100);
    assert_eq!(counter(&b), 100);
}

#[test]
fn a_transaction_that_read_a_range_runs_again_when_a_key_of_it_is_deleted() {
    let fixture = require!(EtcdFixture::shared());
    let (a, b) = two_masters(fixture);
    a.put_raw(Table::Nodes, "n1", b"1").expect("put");
    a.put_raw(Table::Nodes, "n2", b"2").expect("put");
    let runs = AtomicU32::new(0);
    let mut seen = Vec::new();
    a.transact_raw(&mut |txn| {
        let run = runs.fetch_add(1, Ordering::SeqCst);
        seen = txn
            .list(Table::Nodes)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if run == 0 {
            // Another master deletes a node between this read and the commit.
            assert!(b.delete_raw(Table::Nodes, "n2").expect("delete"));
        }
        txn.put(Table::Tasks, "count", seen.len().to_string().as_bytes())
    })
    .expect("transaction");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the stale read was not committed"
    );
    assert_eq!(seen, ["n1"]);
    assert_eq!(
        a.get_raw(Table::Tasks, "count").expect("read"),
        Some(b"1".to_vec())
    );
}

#[test]
fn one_candidate_leads_and_the_next_takes_over_when_it_resigns() {
    let fixture = require!(EtcdFixture::shared());
    let (a, b) = two_masters(fixture);
    assert_eq!(a.leader("work").expect("leader"), None);
    let first = a
        .campaign("work", "master-a", Duration::from_secs(5), &never())
        .expect("elected");
    assert_eq!(
        b.leader("work").expect("leader").as_deref(),
        Some("master-a")
    );

    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let second = b
            .campaign("work", "master-b", Duration::from_secs(5), &never())
            .expect("elected");
        (second, started.elapsed(), b)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!waiting.is_finished(), "two leaders at once");
    first.resign().expect("resign");
    let (second, waited, b) = waiting.join().expect("candidate");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert_eq!(
        b.leader("work").expect("leader").as_deref(),
        Some("master-b")
    );
    second
        .store()
        .put_raw(Table::Tasks, "by-b", b"1")
        .expect("the new leader writes");
}

#[test]
fn a_stale_leader_cannot_write_once_its_lease_is_gone() {
    let fixture = require!(EtcdFixture::shared());
    let (a, b) = two_masters(fixture);
    let old = a
        .campaign("work", "master-a", Duration::from_secs(5), &never())
        .expect("elected");
    old.store()
        .put_raw(Table::Tasks, "t1", b"by a")
        .expect("the leader writes");
    // The lease ends as when the leader stops answering: etcd deletes the leader key. The
    // old leader has not noticed yet (its keeper would only notice later).
    let mut leases = b.client.lease_client();
    let lease = old.lease;
    b.run(async move { leases.revoke(lease).await })
        .expect("runtime")
        .expect("revoke");
    let new = b
        .campaign("work", "master-b", Duration::from_secs(5), &never())
        .expect("b elected");

    let err = old
        .store()
        .put_raw(Table::Tasks, "t1", b"by the stale a")
        .expect_err("a stale leader's write");
    assert!(matches!(err, StoreError::Fenced), "{err}");
    assert!(err.to_string().contains("no longer the leader"), "{err}");
    assert_eq!(
        a.get_raw(Table::Tasks, "t1").expect("read"),
        Some(b"by a".to_vec()),
        "nothing of the stale write landed"
    );
    new.store()
        .put_raw(Table::Tasks, "t1", b"by b")
        .expect("the new leader writes");
}

#[test]
fn a_cluster_that_does_not_answer_is_reported_in_time_and_served_again_after() {
    let fixture = require!(EtcdFixture::start());
    let mut config = fixture.config("/quorum/");
    config.timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&config).expect("connect");
    store.put_raw(Table::Tasks, "before", b"1").expect("put");

    // SIGSTOP: the member is there but answers nothing, as a cluster without quorum.
    let pid = fixture.pid() as i32;
    // SAFETY: a signal to the member this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let started = Instant::now();
    let err = store
        .put_raw(Table::Tasks, "during", b"1")
        .expect_err("no answer");
    let waited = started.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("a majority of them must be up"),
        "{err}"
    );
    assert!(waited < Duration::from_secs(10), "told after {waited:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.put_raw(Table::Tasks, "after", b"1") {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("not served again: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert_eq!(
        store.get_raw(Table::Tasks, "before").expect("read"),
        Some(b"1".to_vec())
    );
}

#[test]
fn a_newer_schema_under_the_prefix_is_refused() {
    let fixture = require!(EtcdFixture::shared());
    let store = fixture.store();
    store
        .put_raw(Table::Meta, crate::keyspace::SCHEMA_KEY, b"99")
        .expect("bump");
    let err = EtcdStore::connect(&fixture.config(&store.prefix)).expect_err("newer");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}

/// A node's certificate from the *cluster* CA, valid everywhere else in the cluster.
fn node_certificate() -> (String, String) {
    let now = OffsetDateTime::now_utc();
    let cluster = ClusterCa::create("test", now).expect("cluster CA");
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem("node-1").expect("csr");
    let identity = NodeIdentity::new("node-1", Role::Compute).expect("identity");
    let cert = cluster
        .sign_csr(&csr, &identity, time::Duration::days(1), now)
        .expect("signed");
    (cert.cert_pem, key.to_pem())
}

#[test]
fn a_node_certificate_from_the_cluster_ca_opens_nothing_in_etcd() {
    let fixture = require!(EtcdFixture::shared());
    let secret = fixture.store();
    secret
        .put_raw(Table::Meta, "cluster", b"the CA key")
        .expect("put");
    let (cert_pem, key_pem) = node_certificate();
    let mut config = fixture.config(&secret.prefix);
    config.cert_pem = cert_pem;
    config.key_pem = key_pem;
    let err = EtcdStore::connect(&config).expect_err("a node's certificate");
    let shown = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::Unavailable { .. } | StoreError::Backend { .. }
        ),
        "{shown}"
    );
    assert!(!shown.contains("the CA key"), "{shown}");
    // The member's log names the refusal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fixture
        .log()
        .contains("certificate signed by unknown authority")
    {
        assert!(
            Instant::now() < deadline,
            "etcd did not log the refused certificate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn etcd_refuses_a_client_without_a_certificate_and_tls_1_2() {
    let fixture = require!(EtcdFixture::shared());
    let address = fixture.endpoint.trim_start_matches("https://").to_owned();
    let ca = cloudos_cluster::pki::cert_from_pem(fixture.pki.ca.cert_pem(), "ca").expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let member_cert =
        cloudos_cluster::pki::cert_from_pem(&fixture.pki.member.cert_pem, "cert").expect("cert");
    let member_key =
        cloudos_cluster::pki::key_from_pem(&fixture.pki.member.key_pem, "key").expect("key");

    // A valid member certificate, but TLS 1.2 only.
    let tls12 = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![member_cert], member_key)
        .expect("client auth");
    // TLS 1.3, but no client certificate.
    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

    for (what, config) in [("TLS 1.2", tls12), ("no certificate", anonymous)] {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let mut tcp = TcpStream::connect(&address).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        // A gRPC request never gets an answer: the handshake, or the first read after
        // it, fails.
        let outcome = tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .and_then(|()| tls.flush())
            .and_then(|()| {
                let mut buf = [0u8; 64];
                tls.read(&mut buf)
            });
        match outcome {
            Err(_) | Ok(0) => {}
            Ok(n) => panic!("{what}: etcd answered {n} bytes"),
        }
    }
}

#[test]
fn only_an_election_in_progress_makes_a_read_ask_again() {
    use super::between_leaders;
    let status =
        |code, message: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
    // etcd's own messages while its members elect a leader.
    assert!(between_leaders(&status(
        tonic::Code::Unavailable,
        "etcdserver: leader changed"
    )));
    assert!(between_leaders(&status(
        tonic::Code::Unavailable,
        "etcdserver: no leader"
    )));
    // A cluster without quorum times out: the caller must hear "unavailable" in time, not
    // wait through retries; a refusal is final.
    assert!(!between_leaders(&status(
        tonic::Code::DeadlineExceeded,
        "etcdserver: request timed out"
    )));
    assert!(!between_leaders(&status(
        tonic::Code::PermissionDenied,
        "etcdserver: permission denied"
    )));
    assert!(!between_leaders(&status(
        tonic::Code::Unavailable,
        "etcdserver: too many requests"
    )));
}
