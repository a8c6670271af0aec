use std::collections::BTreeMap;

use cloudos_cluster::health::Health;
use cloudos_cluster::workload::{
    RunReport, RunState, ServiceCreateRequest, TaskCreateRequest, TaskState,
};
use cloudos_scheduler::Resources;
use time::macros::datetime;
use time::OffsetDateTime;

use super::super::tests::{assigned, scheduler, spec, stops};
use super::super::{Book, NodeFacts};

const NOW: OffsetDateTime = datetime!(2026-12-02 10:00 UTC);

fn node(name: &str, cordoned: bool) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        ready: true,
        cordoned,
        capacity: Resources::new(2000, 2 << 30),
    }
}

fn running(book: &mut Book, placed: &[(String, String)]) {
    for (node, run) in placed {
        let report = RunReport {
            run: run.clone(),
            state: RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        };
        book.report(node, &report, NOW);
    }
}

/// `web` with `replicas` running, placed on `nodes` (spread), returned with its placements.
fn web(replicas: u32, nodes: &[NodeFacts]) -> (Book, Vec<(String, String)>) {
    let mut book = Book::default();
    let request = ServiceCreateRequest {
        request_id: None,
        name: "web".into(),
        spec: spec(),
        replicas,
    };
    book.create_service(request, NOW).expect("service");
    let placed = assigned(&book.schedule(&scheduler(), nodes, NOW));
    running(&mut book, &placed);
    (book, placed)
}

fn running_nodes(book: &Book) -> Vec<String> {
    let svc = book.service("web").expect("web");
    let mut nodes: Vec<String> = svc
        .instances
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .filter_map(|t| t.node.clone())
        .collect();
    nodes.sort();
    nodes
}

/// The replica on the drained node is stopped only once its replacement runs elsewhere:
/// at no point does the service have fewer running replicas than asked.
#[test]
fn a_replica_moves_before_it_stops() {
    let (mut book, placed) = web(2, &[node("n1", false), node("n2", false)]);
    assert_eq!(running_nodes(&book), ["n1", "n2"]);
    let on_n1 = placed
        .iter()
        .find(|(n, _)| n == "n1")
        .expect("on n1")
        .1
        .clone();

    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert!(
        stops(&effects).is_empty(),
        "stopped before its replacement ran"
    );
    assert_eq!(pass.pending.len(), 1, "{pass:?}");
    assert!(!pass.done);
    let replacement = pass.pending[0].replacement.clone();
    assert_eq!(replacement, "web-r2");

    // The dispatch loop places it, never on the cordoned node.
    let nodes = [node("n1", true), node("n2", false)];
    let reconciled = book.reconcile_services(NOW);
    assert!(
        reconciled.is_empty(),
        "the replacement counts as no replica: {reconciled:?}"
    );
    let placed = assigned(&book.schedule(&scheduler(), &nodes, NOW));
    assert_eq!(placed, [("n2".to_owned(), "web-r2.1".to_owned())]);
    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert!(stops(&effects).is_empty(), "still pulling: {pass:?}");
    assert_eq!(pass.pending[0].to.as_deref(), Some("n2"));
    assert_eq!(running_nodes(&book), ["n1", "n2"]);

    running(&mut book, &placed);
    assert_eq!(
        running_nodes(&book),
        ["n1", "n2", "n2"],
        "both run for a while"
    );
    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert_eq!(stops(&effects), [("n1".to_owned(), on_n1)]);
    assert_eq!(pass.finished.len(), 1);
    assert!(pass.finished[0].done);
    assert!(pass.done, "{pass:?}");
    assert_eq!(running_nodes(&book), ["n2", "n2"]);
    assert!(
        book.reconcile_services(NOW).is_empty(),
        "two replicas, as asked"
    );
}

/// A replacement with a health check takes over only once it passes: while it starts, the
/// replica it replaces keeps serving.
#[test]
fn a_checked_replacement_takes_over_once_healthy() {
    let (mut book, _) = web(1, &[node("n1", false), node("n2", false)]);
    book.drain_pass("n1", None, NOW);
    let nodes = [node("n1", true), node("n2", false)];
    let placed = assigned(&book.schedule(&scheduler(), &nodes, NOW));
    let report = |health| RunReport {
        run: placed[0].1.clone(),
        state: RunState::Running {
            health_reason: None,
            health: Some(health),
            restarts: 0,
            address: None,
        },
    };
    book.report("n2", &report(Health::Starting), NOW);
    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert!(
        stops(&effects).is_empty(),
        "stopped for a starting replacement"
    );
    assert_eq!(
        pass.pending[0].waiting.as_deref(),
        Some("its health check has not passed yet")
    );
    book.report("n2", &report(Health::Healthy), NOW);
    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert_eq!(stops(&effects).len(), 1, "{pass:?}");
    assert!(pass.done);
}

/// With nowhere to go the replacement waits and says why; giving up removes it and leaves
/// the replica running where it is.
#[test]
fn with_no_room_the_replica_stays_and_the_reason_is_said() {
    let (mut book, _) = web(1, &[node("n1", false)]);
    book.drain_pass("n1", None, NOW);
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let (pass, _) = book.drain_pass("n1", None, NOW);
    let waiting = pass.pending[0].waiting.clone().unwrap_or_default();
    assert_eq!(waiting, "no node fits: 1 is cordoned");
    assert!(!pass.done);

    let effects = book.abort_drain("n1");
    assert!(stops(&effects).is_empty(), "the replacement never ran");
    assert_eq!(effects.delete_tasks, ["web-r1"]);
    assert_eq!(running_nodes(&book), ["n1"]);
    assert_eq!(book.queued(), 0);
}

/// Tasks may finish; when the time is up they are stopped and handled as lost runs.
#[test]
fn tasks_finish_or_are_stopped_as_lost_runs() {
    let mut book = Book::default();
    let retry = TaskCreateRequest {
        timeout_secs: None,
        request_id: None,
        spec: spec(),
        retries: 1,
    };
    let once = TaskCreateRequest {
        timeout_secs: None,
        request_id: None,
        spec: spec(),
        retries: 0,
    };
    book.create_task("t-retry".into(), retry, NOW).unwrap();
    book.create_task("t-once".into(), once, NOW).unwrap();
    let placed = assigned(&book.schedule(&scheduler(), &[node("n1", false)], NOW));
    running(&mut book, &placed);

    let (pass, effects) = book.drain_pass("n1", None, NOW);
    assert_eq!(pass.running, ["t-once", "t-retry"]);
    assert!(effects.is_empty() && !pass.done);

    let why = "stopped by the drain of node n1 after 5s";
    let (pass, effects) = book.drain_pass("n1", Some(why), NOW);
    assert_eq!(pass.stopped, ["t-once", "t-retry"]);
    assert_eq!(stops(&effects).len(), 2);
    assert!(pass.done, "{pass:?}");
    let once = book.task("t-once").expect("t-once");
    assert_eq!(once.state, TaskState::Lost);
    assert_eq!(once.reason.as_deref(), Some(why));
    let retry = book.task("t-retry").expect("t-retry");
    assert_eq!(retry.state, TaskState::Queued);
    // It does not go back to the drained node (cordoned), and prefers any other node to
    // the one it was stopped on; with no other node it waits for the cordon to end.
    let placed = assigned(&book.schedule(&scheduler(), &[node("n1", true)], NOW));
    assert!(placed.is_empty(), "{placed:?}");
    let both = [node("n1", false), node("n2", false)];
    let placed = assigned(&book.schedule(&scheduler(), &both, NOW));
    assert_eq!(
        placed,
        [("n2".to_owned(), "t-retry.2".to_owned())],
        "{placed:?}"
    );
}

/// Scaling a service down while one of its replicas moves removes the replacement with
/// it; a master restart in the middle of a move drops the replacement (the highest index).
#[test]
fn scaling_and_restarts_in_the_middle_of_a_move() {
    let (mut book, _) = web(2, &[node("n1", false), node("n2", false)]);
    let drained = book
        .task("web-r1")
        .and_then(|t| t.node.clone())
        .expect("web-r1 placed");
    let (pass, _) = book.drain_pass(&drained, None, NOW);
    assert_eq!(pass.pending[0].replica, "web-r1");
    assert_eq!(pass.pending[0].replacement, "web-r2");

    let saved: Vec<_> = book.tasks().cloned().collect();
    let services = vec![cloudos_cluster::workload::ServiceRecord {
        request_id: None,
        name: "web".into(),
        spec: spec(),
        replicas: 2,
        created_at: NOW,
        address: None,
        // As a master from before revisions kept it.
        revision: 0,
        revisions: Vec::new(),
        policy: Default::default(),
        update: None,
        next_index: 0,
    }];
    let mut restarted = Book::load(saved, services);
    let effects = restarted.reconcile_services(NOW);
    assert_eq!(effects.delete_tasks, ["web-r2"]);

    let effects = book.scale("web", 1, NOW).expect("scale");
    let mut gone = effects.delete_tasks.clone();
    gone.sort();
    assert_eq!(gone, ["web-r1", "web-r2"]);
    let (pass, _) = book.drain_pass(&drained, None, NOW);
    assert!(pass.done, "{pass:?}");
}
