//! Node operations against the real master: a compute node's certificate trying to
//! cordon, drain or reboot (refused, nothing changes), the reboot reaching the node over
//! its own connection (and refused where it cannot work), a cordon kept across a restart.

use cloudos_cluster::nodeops::{NodeBoot, RebootStarted};

use super::*;

fn hello_with_boot(id: &str, rebootable: bool) -> AgentMessage {
    let AgentMessage::Hello(mut hello) = hello() else {
        unreachable!("hello() is a hello")
    };
    hello.boot = Some(NodeBoot {
        id: id.to_owned(),
        rebootable,
    });
    AgentMessage::Hello(hello)
}

/// Joins `name` and opens its agent connection with a hello naming boot `boot`.
async fn node_with_boot(
    f: &Fixture,
    name: &str,
    boot: &str,
    rebootable: bool,
) -> (Credentials, Ws) {
    let token = compute_token(&f.m, &f.a).await;
    let node = join(&f.m, src(2), &token, name).await;
    let mut ws = agent_connect(&f.m, &node.client(src(2))).await;
    send(&mut ws, &hello_with_boot(boot, rebootable)).await;
    assert!(matches!(
        receive(&mut ws).await,
        Some(MasterMessage::Welcome { .. })
    ));
    wait_state(&f.m, &f.a, name, NodeState::Ready).await;
    (node, ws)
}

async fn node_info(f: &Fixture, name: &str) -> NodeInfo {
    call(&f.a, f.m.addr, "GET", &format!("/v1/nodes/{name}"), None)
        .await
        .json()
}

/// The attacker holds a compute node's certificate (its own, stolen from its disk) and
/// calls every node operation on another node and on itself, with real mTLS. Each is
/// refused before any handler runs; the victim stays schedulable, no drain starts, and no
/// reboot reaches the victim's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_node_cannot_cordon_drain_or_reboot() {
    let f = fixture("nodeops-attack").await;
    let (_victim, mut victim_ws) = node_with_boot(&f, "victim", "boot-v", true).await;
    let token = compute_token(&f.m, &f.a).await;
    let rogue = join(&f.m, src(3), &token, "rogue").await;
    let attacker = rogue.client(src(3));

    for target in ["victim", "rogue"] {
        for op in ["cordon", "uncordon", "drain", "reboot"] {
            let path = format!("/v1/nodes/{target}/{op}");
            let body = Some(r#"{"timeout_secs":1}"#.to_owned());
            let reply = call(&attacker, f.m.addr, "POST", &path, body).await;
            assert_error(&reply, 403, ErrorCode::Forbidden, "needs role admin");
        }
        let path = format!("/v1/nodes/{target}/drain");
        let reply = call(&attacker, f.m.addr, "GET", &path, None).await;
        assert_error(&reply, 403, ErrorCode::Forbidden, "needs role viewer");
    }

    // Nothing changed: both schedulable, no drain known, the victim got no reboot.
    for name in ["victim", "rogue"] {
        assert!(!node_info(&f, name).await.unschedulable, "{name} cordoned");
        let reply = call(
            &f.a,
            f.m.addr,
            "GET",
            &format!("/v1/nodes/{name}/drain"),
            None,
        )
        .await;
        assert_error(&reply, 404, ErrorCode::NotFound, "has not been drained");
    }
    send(&mut victim_ws, &beat(1)).await;
    assert_eq!(
        receive(&mut victim_ws).await,
        Some(MasterMessage::HeartbeatAck { seq: 1 }),
        "the next message after the attack is the heartbeat's answer"
    );
}

/// An admin's reboot travels on the node's own connection; it is refused, with the reason,
/// for a host install, for a node that never said its boot and for a node without a
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_reaches_the_node_over_its_connection_or_says_why_not() {
    let f = fixture("nodeops-reboot").await;
    let (_n1, mut ws1) = node_with_boot(&f, "n1", "boot-1", true).await;
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/n1/reboot",
        Some("{}".into()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let started: RebootStarted = reply.json();
    assert_eq!(started.boot_id, "boot-1");
    assert!(
        matches!(receive(&mut ws1).await, Some(MasterMessage::Reboot { reason }) if reason.contains("admin")),
        "the node was asked to reboot"
    );
    assert_eq!(
        node_info(&f, "n1").await.boot.map(|b| b.id),
        Some("boot-1".to_owned())
    );

    let (_host, _ws_host) = node_with_boot(&f, "host", "boot-h", false).await;
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/host/reboot",
        Some("{}".into()),
    )
    .await;
    assert_error(&reply, 409, ErrorCode::Conflict, "does not own");

    let (_old, _ws_old) = connected_node(&f, "old").await;
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/old/reboot",
        Some("{}".into()),
    )
    .await;
    assert_error(&reply, 409, ErrorCode::Conflict, "did not report its boot");

    let token = compute_token(&f.m, &f.a).await;
    join(&f.m, src(4), &token, "silent").await;
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/silent/reboot",
        Some("{}".into()),
    )
    .await;
    assert_error(
        &reply,
        409,
        ErrorCode::Conflict,
        "no connection to the master",
    );
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/nobody/reboot",
        Some("{}".into()),
    )
    .await;
    assert_error(&reply, 404, ErrorCode::NotFound, "no node named nobody");
}

/// A cordon is in the store: a restarted master still keeps new work off the node, and
/// the node's health goes on apart from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordon_survives_a_master_restart() {
    let dir = common::temp_dir("nodeops-restart");
    let mut m = start_master(&dir);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let token = compute_token(&m, &a).await;
    join(&m, src(2), &token, "n1").await;
    let reply = call(&a, m.addr, "POST", "/v1/nodes/n1/cordon", Some("{}".into())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let node: NodeInfo = reply.json();
    assert!(node.unschedulable);
    assert_eq!(node.state, NodeState::NotReady, "health is its own");
    m.stop();

    let mut m = start_master(&dir);
    let node: NodeInfo = call(&a, m.addr, "GET", "/v1/nodes/n1", None).await.json();
    assert!(node.unschedulable, "the cordon was forgotten");
    let reply = call(
        &a,
        m.addr,
        "POST",
        "/v1/nodes/n1/uncordon",
        Some("{}".into()),
    )
    .await;
    assert!(!reply.json::<NodeInfo>().unschedulable);
    m.stop();
    let mut m = start_master(&dir);
    let node: NodeInfo = call(&a, m.addr, "GET", "/v1/nodes/n1", None).await.json();
    assert!(!node.unschedulable, "the uncordon was forgotten");
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
