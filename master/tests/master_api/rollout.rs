//! Rolling upgrades against the real master, with a node whose agent connection the test
//! plays: only an admin starts, resumes or aborts a rollout or rolls a node back; a rollout
//! to a release the master does not keep is refused before anything starts; a started
//! rollout cordons and drains the node and then tells it to upgrade; the node reporting
//! that it fell back halts the rollout with its reason, leaves the node cordoned, and a
//! second rollout to that release is refused until the admin says `retry_failed`.

use cloudos_cluster::api::{SystemReport, UpgradeReport, UpgradeState};
use cloudos_cluster::rollout::{
    RollbackStarted, Rollout, RolloutPhase, RolloutStep, UpgradeStatus,
};

use super::releases::{dev_key, make_bundle, send as send_bytes};
use super::*;

fn fell_back(seq: u64, id: &str) -> AgentMessage {
    AgentMessage::Heartbeat(Heartbeat {
        usage: Default::default(),
        seq,
        sent_at: time::OffsetDateTime::now_utc(),
        telemetry: Telemetry {
            nodeos_version: "0.1.0".into(),
            system: Some(Box::new(SystemReport {
                slot: Some("a".into()),
                confirmed: true,
                upgrade: Some(UpgradeReport {
                    id: id.to_owned(),
                    version: "0.2.0".into(),
                    from: "0.1.0".into(),
                    state: UpgradeState::FellBack,
                    reason: Some("agent not ready after 60s; the node went back to slot a".into()),
                }),
            })),
            ..Telemetry::default()
        },
        runs: Vec::new(),
    })
}

/// Sends a heartbeat and reads until its ack; earlier acks are passed over.
async fn beat_acked(ws: &mut Ws, message: &AgentMessage, seq: u64) {
    send(ws, message).await;
    loop {
        match receive(ws).await {
            Some(MasterMessage::HeartbeatAck { seq: acked }) if acked == seq => return,
            Some(MasterMessage::HeartbeatAck { .. }) => continue,
            other => panic!("waiting for ack {seq}: {other:?}"),
        }
    }
}

async fn status(f: &Fixture) -> UpgradeStatus {
    let reply = call(&f.a, f.m.addr, "GET", "/v1/rollout", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_drains_and_upgrades_a_node_and_halts_when_it_falls_back() {
    let f = fixture("rollout").await;
    let work = f.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (code, body) = send_bytes(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/releases",
        make_bundle(&work, &dev_key(), "0.2.0"),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (node, mut ws) = connected_node(&f, "node-1").await;
    send(&mut ws, &beat(1)).await;
    assert_eq!(
        receive(&mut ws).await,
        Some(MasterMessage::HeartbeatAck { seq: 1 })
    );
    wait_state(&f.m, &f.a, "node-1", NodeState::Ready).await;
    let to =
        |version: &str| serde_json::json!({ "version": version, "skip_master": true }).to_string();

    // A node's certificate cannot start a rollout, resume one, abort one or roll back.
    let attacker = node.client(src(2));
    for (method, path, body) in [
        ("POST", "/v1/rollout", Some(to("0.2.0"))),
        ("POST", "/v1/rollout/resume", Some("{}".to_owned())),
        ("POST", "/v1/rollout/abort", None),
        ("POST", "/v1/nodes/node-1/rollback", None),
        ("GET", "/v1/rollout", None),
    ] {
        let reply = call(&attacker, f.m.addr, method, path, body).await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
    }

    // A release the master does not keep: refused, nothing starts.
    let reply = call(&f.a, f.m.addr, "POST", "/v1/rollout", Some(to("9.9.9"))).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("no release 9.9.9"), "{}", reply.body);
    assert!(status(&f).await.rollout.is_none());

    // The admin starts one: the node is cordoned, drained (it runs nothing, as its next
    // heartbeat says) and told to upgrade.
    let reply = call(&f.a, f.m.addr, "POST", "/v1/rollout", Some(to("0.2.0"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let started: Rollout = reply.json();
    assert_eq!(started.phase, RolloutPhase::Running);
    let again = call(&f.a, f.m.addr, "POST", "/v1/rollout", Some(to("0.2.0"))).await;
    assert_eq!(again.status, 409, "one rollout at a time: {}", again.body);
    let mut seq = 1;
    let id = loop {
        seq += 1;
        send(&mut ws, &beat(seq)).await;
        match receive(&mut ws).await {
            Some(MasterMessage::HeartbeatAck { .. }) => {}
            Some(MasterMessage::Upgrade {
                id,
                version,
                allow_downgrade,
            }) => {
                assert_eq!((version.as_str(), allow_downgrade), ("0.2.0", false));
                break id;
            }
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let info: NodeInfo = call(&f.a, f.m.addr, "GET", "/v1/nodes/node-1", None)
        .await
        .json();
    assert!(info.unschedulable, "the node is cordoned while it upgrades");

    // A node on its way cannot be rolled back by hand meanwhile.
    let reply = call(&f.a, f.m.addr, "POST", "/v1/nodes/node-1/rollback", None).await;
    assert_eq!(reply.status, 409, "{}", reply.body);

    // It falls back: the rollout stops with the node's reason. (Every heartbeat from now
    // on carries that report, as a real node's do.)
    let mut waited = 0;
    let failed = loop {
        seq += 1;
        beat_acked(&mut ws, &fell_back(seq, &id), seq).await;
        let s = status(&f).await;
        let rollout = s.rollout.expect("the rollout");
        if rollout.phase == RolloutPhase::Failed {
            break rollout;
        }
        waited += 1;
        assert!(waited < 50, "the rollout did not stop: {rollout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("node-1") && reason.contains("went back to slot a"),
        "{reason}"
    );
    assert_eq!(failed.nodes[0].step, RolloutStep::Failed);
    let info: NodeInfo = call(&f.a, f.m.addr, "GET", "/v1/nodes/node-1", None)
        .await
        .json();
    assert!(
        info.unschedulable,
        "a node that failed stays cordoned for the admin to look at"
    );

    // The same release again: refused, naming the node and the way to override.
    let reply = call(&f.a, f.m.addr, "POST", "/v1/rollout", Some(to("0.2.0"))).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("node node-1 already failed"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("--retry-failed"), "{}", reply.body);

    // Resumed without retrying, the failed node is left out and the rollout ends.
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/rollout/resume",
        Some("{}".into()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut waited = 0;
    loop {
        seq += 1;
        beat_acked(&mut ws, &fell_back(seq, &id), seq).await;
        let rollout = status(&f).await.rollout.expect("rollout");
        if rollout.phase == RolloutPhase::Done {
            assert_eq!(rollout.nodes[0].step, RolloutStep::Skipped);
            break;
        }
        waited += 1;
        assert!(waited < 50, "the resumed rollout did not end: {rollout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The admin rolls the node back by hand: it is told, with an id its reports carry.
    let reply = call(&f.a, f.m.addr, "POST", "/v1/nodes/node-1/rollback", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let told: RollbackStarted = reply.json();
    let heard = loop {
        match receive(&mut ws).await {
            Some(MasterMessage::HeartbeatAck { .. }) => continue,
            other => break other,
        }
    };
    assert_eq!(heard, Some(MasterMessage::Rollback { id: told.id }));
}
