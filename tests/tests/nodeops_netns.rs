//! Node operations on a cluster of separate processes (the namespace lab, as in
//! `cluster_netns`): `nodeos master`, two `nodeos agent` compute nodes pulling from a
//! registry on the bridge, and the admin's `cloudos` on the bridge. What is checked is what
//! an admin would look at: where work runs (`ps`), the node table, the containers a node
//! still holds, and what `cloudos node drain` prints while it waits.
//!
//! Needs root (network namespaces); fails under `CLOUDOS_STRICT=1` without it.

use std::thread;
use std::time::Duration;

use cloudos_cluster::api::NodeState;
use cloudos_tests::lab::{busybox_registry_with, containers, Cluster, Lab};
use cloudos_tests::process::Proc;
use cloudos_tests::NetHost;

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";

/// Compute agents `node-3` and `node-4` on hosts .3 and .4, each waited for until Ready;
/// each agent is stopped before its namespace goes (tuple fields drop in order).
fn two_nodes(cluster: &Cluster<'_>) -> Vec<(Proc, NetHost)> {
    let lab = cluster.lab;
    let token = cluster.alice.token("compute", &[]);
    let flags = ["--insecure-registry", REGISTRY, "--no-metrics"];
    [3u8, 4]
        .into_iter()
        .map(|n| {
            let name = format!("node-{n}");
            let host = lab.host(n);
            let master = Some(cluster.master.addr.as_str());
            let agent =
                lab.agent_with(&name, &host, &lab.path(&name), Some(&token), master, &flags);
            cluster
                .alice
                .wait_node(&name, NodeState::Ready, Duration::from_secs(20));
            (agent, host)
        })
        .collect()
}

/// The nodes the service's running replicas are on, sorted.
fn replica_nodes(svc: &serde_json::Value) -> Vec<String> {
    let mut nodes: Vec<String> = svc["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    nodes
}

/// The STATE column of `cloudos node list` for `node`.
fn state_column(table: &str, node: &str) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or_default()
        .to_owned()
}

/// Cordon keeps new tasks off a node while the other takes them; draining a node moves a
/// service's replicas first (the service never has fewer running replicas than asked,
/// sampled throughout) and waits for a running task to end; a drain with nowhere to go
/// says why and leaves the replicas where they are; uncordon gives a node work again. A
/// node run by `nodeos agent` (as on a host) refuses to be rebooted, and says so.
#[test]
fn cordon_uncordon_drain_and_what_cannot_be_done() {
    let Some(lab) = Lab::new() else { return };
    let _registry = busybox_registry_with(&lab.net, REGISTRY, &[]);
    let cluster = lab.cluster(&[]);
    let alice = &cluster.alice;
    let _nodes = two_nodes(&cluster);

    // Cordoned node-4 takes no new task; node-3 takes all of them.
    let said = alice.ok(&["node", "cordon", "node-4"]);
    assert!(said.contains("node node-4 cordoned"), "{said}");
    let table = alice.ok(&["node", "list"]);
    assert_eq!(state_column(&table, "node-4"), "Ready,Cordoned", "{table}");
    assert_eq!(state_column(&table, "node-3"), "Ready", "{table}");
    let ids: Vec<String> = (0..3)
        .map(|_| alice.run_task(&[BUSYBOX, "--", "sleep", "2"]))
        .collect();
    for id in &ids {
        let task = alice.wait_task(id, &["succeeded", "failed"], Duration::from_secs(60));
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["node"], "node-3", "{task}");
    }

    // Both replicas of a service on node-3 (only it has the label, for now) and a task
    // there; then node-4 may take them too, and has never pulled their image: a
    // replacement takes a while to start there, which the sampling below must see through.
    alice.ok(&["node", "uncordon", "node-4"]);
    alice.ok(&["node", "label", "node-3", "batch=yes", "web=yes"]);
    alice.ok(&[
        "deploy",
        "web",
        "--replicas",
        "2",
        "--node-selector",
        "web=yes",
        BUSYBOX,
        "--",
        "sleep",
        "100000",
    ]);
    lab.wait_for("2 replicas on node-3", Duration::from_secs(60), || {
        (replica_nodes(&alice.service("web")) == ["node-3", "node-3"]).then_some(())
    });
    alice.ok(&["node", "label", "node-4", "web=yes"]);
    let job = alice.run_task(&["--node-selector", "batch=yes", BUSYBOX, "--", "sleep", "6"]);
    let task = alice.wait_task(&job, &["running"], Duration::from_secs(60));
    assert_eq!(task["node"], "node-3", "{task}");

    let (drained, samples) = thread::scope(|s| {
        let drain = s.spawn(|| alice.run(&["node", "drain", "node-3", "--timeout", "60s"]));
        let mut samples = Vec::new();
        while !drain.is_finished() {
            samples.push(alice.service("web")["running"].as_u64().unwrap_or(0));
            thread::sleep(Duration::from_millis(100));
        }
        (drain.join().expect("drain thread"), samples)
    });
    let out = String::from_utf8_lossy(&drained.stdout);
    let err = String::from_utf8_lossy(&drained.stderr);
    assert!(drained.status.success(), "{out}{err}");
    let moved: Vec<&str> = out.lines().filter(|l| l.starts_with("moved ")).collect();
    assert_eq!(moved.len(), 2, "{out}");
    assert!(moved.iter().all(|l| l.contains("runs on node-4")), "{out}");
    assert!(
        out.contains(&format!("waiting for task {job} to finish")),
        "{out}"
    );
    assert!(out.contains(&format!("task {job} finished")), "{out}");
    assert!(
        out.ends_with("node node-3 drained: it runs nothing and stays cordoned\n"),
        "{out}"
    );
    assert!(samples.len() >= 5, "sampled only {} times", samples.len());
    assert!(
        samples.iter().all(|running| *running >= 2),
        "web had fewer than 2 running replicas during the drain: {samples:?}"
    );
    // When drain returned the task had ended on its own, and node-3 ran nothing.
    let task = alice.task(&job);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(containers(&lab.path("node-3")), Vec::<String>::new());
    let svc = alice.service("web");
    assert_eq!(replica_nodes(&svc), ["node-4", "node-4"], "{svc}");
    let table = alice.ok(&["node", "list"]);
    assert_eq!(state_column(&table, "node-3"), "Ready,Cordoned", "{table}");

    // node-4 now has nowhere to send its replicas: the drain says why and gives up after
    // its timeout, the replicas stay and run, node-4 stays cordoned.
    let why = alice.fails(&["node", "drain", "node-4", "--timeout", "4s"]);
    assert!(why.contains("draining node node-4 failed"), "{why}");
    assert!(why.contains("has nowhere to go"), "{why}");
    assert!(why.contains("2 are cordoned"), "{why}");
    let svc = alice.service("web");
    assert_eq!(replica_nodes(&svc), ["node-4", "node-4"], "{svc}");
    assert_eq!(svc["instances"].as_array().map(Vec::len), Some(2), "{svc}");
    assert_eq!(containers(&lab.path("node-4")).len(), 2);
    let table = alice.ok(&["node", "list"]);
    assert_eq!(state_column(&table, "node-4"), "Ready,Cordoned", "{table}");

    // An agent run as a tool (as on a host) does not reboot its machine: refused, with why.
    let refused = alice.fails(&["node", "reboot", "node-4"]);
    assert!(refused.contains("does not own"), "{refused}");

    // Uncordon gives each node new work again (the other one still cordoned, so it must).
    alice.ok(&["node", "uncordon", "node-4"]);
    let id = alice.run_task(&[BUSYBOX, "--", "true"]);
    let task = alice.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(60));
    assert_eq!(task["node"], "node-4", "{task}");
    alice.ok(&["node", "uncordon", "node-3"]);
    let shown = alice.ok(&["node", "show", "node-3"]);
    assert!(
        shown.contains("schedulable") && shown.contains("yes"),
        "{shown}"
    );
    let id = alice.run_task(&["--node-selector", "batch=yes", BUSYBOX, "--", "true"]);
    let task = alice.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(60));
    assert_eq!(task["node"], "node-3", "{task}");
    alice.ok(&["delete", "web"]);
    // The shims outlive their agent by design: wait until the replicas are gone, or they
    // would outlive the test too.
    lab.wait_for("no replicas left", Duration::from_secs(60), || {
        ["node-3", "node-4"]
            .iter()
            .all(|n| containers(&lab.path(n)).is_empty())
            .then_some(())
    });
}
