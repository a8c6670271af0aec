use std::collections::BTreeMap;

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::workload::{
    RunReport, RunState, ServiceCreateRequest, TaskCreateRequest, TaskState, WorkloadSpec,
};
use cloudos_scheduler::{Resources, Scheduler, Spread};
use time::macros::datetime;
use time::OffsetDateTime;

use super::{Book, Effects, NodeFacts};

const NOW: OffsetDateTime = datetime!(2026-12-02 10:00 UTC);

pub(super) fn spec() -> WorkloadSpec {
    WorkloadSpec {
        command: vec!["true".into()],
        ..WorkloadSpec::new("10.88.0.1:5000/busybox:1")
    }
}

fn node(name: &str, ready: bool) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        ready,
        cordoned: false,
        capacity: Resources::new(2000, 2 << 30),
    }
}

pub(super) fn scheduler() -> Scheduler {
    Scheduler::new(Box::new(Spread))
}

pub(super) fn assigned(effects: &Effects) -> Vec<(String, String)> {
    effects
        .messages
        .iter()
        .filter_map(|(node, m)| match m {
            MasterMessage::Assign(a) => Some((node.clone(), a.run.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn stops(effects: &Effects) -> Vec<(String, String)> {
    effects
        .messages
        .iter()
        .filter_map(|(node, m)| match m {
            MasterMessage::Stop { run } => Some((node.clone(), run.clone())),
            _ => None,
        })
        .collect()
}

fn task(retries: u32) -> TaskCreateRequest {
    TaskCreateRequest {
        spec: spec(),
        retries,
        request_id: None,
        timeout_secs: None,
    }
}

fn report(run: &str, state: RunState) -> RunReport {
    RunReport {
        run: run.into(),
        state,
    }
}

fn exited(code: i32) -> RunState {
    RunState::Exited {
        code: Some(code),
        signal: None,
        oom_killed: false,
        output_bytes: None,
    }
}

#[test]
fn a_task_waits_with_a_reason_then_runs_to_success() {
    let mut book = Book::default();
    let (t, effects) = book.create_task("t-1".into(), task(0), NOW).unwrap();
    assert_eq!(t.state, TaskState::Queued);
    assert_eq!(effects.save_tasks.len(), 1);

    let effects = book.schedule(&scheduler(), &[], NOW);
    assert!(assigned(&effects).is_empty());
    let reason = book.task("t-1").unwrap().reason.clone().unwrap();
    assert!(reason.contains("no ready"), "{reason}");

    let effects = book.schedule(&scheduler(), &[node("n1", true)], NOW);
    assert_eq!(
        assigned(&effects),
        [("n1".to_string(), "t-1.1".to_string())]
    );
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Pulling);
    assert_eq!(book.queued(), 0);

    book.report(
        "n1",
        &report(
            "t-1.1",
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        ),
        NOW,
    );
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Running);
    book.report("n1", &report("t-1.1", exited(0)), NOW);
    let t = book.task("t-1").unwrap();
    assert_eq!((t.state, t.exit_code), (TaskState::Succeeded, Some(0)));
}

#[test]
fn a_task_past_its_deadline_is_stopped_and_fails_saying_so() {
    let mut book = Book::default();
    let mut request = task(0);
    request.timeout_secs = Some(90);
    book.create_task("t-1".into(), request, NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    // Pulling for a minute does not count: the deadline runs from the start.
    let started = NOW + time::Duration::seconds(60);
    let running = RunState::Running {
        health_reason: None,
        health: None,
        restarts: 0,
        address: None,
    };
    book.report("n1", &report("t-1.1", running), started);
    assert!(book
        .deadlines(started + time::Duration::seconds(89))
        .is_empty());
    let effects = book.deadlines(started + time::Duration::seconds(90));
    assert_eq!(stops(&effects), [("n1".to_string(), "t-1.1".to_string())]);
    let t = book.task("t-1").unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(
        t.reason.as_deref(),
        Some("stopped at its deadline: it ran for its --timeout of 1m30s")
    );
    assert_eq!(effects.save_tasks.len(), 1, "the end is stored");
    // Once ended, it stays ended; its run's exit report changes nothing.
    assert!(book
        .deadlines(started + time::Duration::hours(1))
        .is_empty());
    book.report("n1", &report("t-1.1", exited(137)), started);
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Failed);
}

#[test]
fn queued_tasks_show_their_place_in_the_queue() {
    let mut book = Book::default();
    let (first, _) = book.create_task("t-1".into(), task(0), NOW).unwrap();
    let (second, _) = book.create_task("t-2".into(), task(0), NOW).unwrap();
    assert_eq!(
        (first.queue_position, second.queue_position),
        (Some(1), Some(2))
    );
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    // Both placed: no place in a queue any more.
    let shown: Vec<_> = book
        .workloads()
        .tasks
        .iter()
        .map(|t| t.queue_position)
        .collect();
    assert_eq!(shown, [None, None]);
    let (third, _) = book.create_task("t-3".into(), task(0), NOW).unwrap();
    assert_eq!(third.queue_position, Some(1));
    assert_eq!(book.shown("t-3").unwrap().queue_position, Some(1));
    assert_eq!(
        book.task("t-3").unwrap().queue_position,
        None,
        "never stored"
    );
}

#[test]
fn exits_and_failures_say_why() {
    let mut book = Book::default();
    book.create_task("t-1".into(), task(0), NOW).unwrap();
    book.create_task("t-2".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let oom = RunState::Exited {
        code: Some(137),
        signal: Some(9),
        oom_killed: true,
        output_bytes: None,
    };
    book.report("n1", &report("t-1.1", oom), NOW);
    let t = book.task("t-1").unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(
        t.reason.as_deref().unwrap().contains("out of memory"),
        "{:?}",
        t.reason
    );

    let missing = RunState::Failed {
        reason: "/bin/nope does not exist in the image".into(),
    };
    book.report("n1", &report("t-2.1", missing), NOW);
    let t = book.task("t-2").unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.reason.as_deref().unwrap().contains("/bin/nope"));
}

#[test]
fn a_lost_node_requeues_tasks_with_retries_and_loses_the_rest() {
    let mut book = Book::default();
    book.create_task("t-retry".into(), task(1), NOW).unwrap();
    book.create_task("t-once".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let effects = book.nodes_lost(&|n, _| n != "n1", NOW);
    assert_eq!(effects.save_tasks.len(), 2);
    let retry = book.task("t-retry").unwrap();
    assert_eq!(retry.state, TaskState::Queued);
    assert!(retry.reason.as_deref().unwrap().contains("n1"));
    let once = book.task("t-once").unwrap();
    assert_eq!(once.state, TaskState::Lost);

    // The retry goes to another node, never back to the one that lost it.
    let effects = book.schedule(&scheduler(), &[node("n1", true), node("n2", true)], NOW);
    assert_eq!(
        assigned(&effects),
        [("n2".to_string(), "t-retry.2".to_string())]
    );

    // The old node comes back and reports the old run: it is told to stop it.
    let effects = book.hello(
        "n1",
        &[report(
            "t-retry.1",
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        )],
        NOW,
    );
    assert_eq!(
        stops(&effects),
        [("n1".to_string(), "t-retry.1".to_string())]
    );
    assert_eq!(book.task("t-retry").unwrap().node.as_deref(), Some("n2"));
}

/// The node was only out of touch (its master stalled): the run it reports of a task given
/// up as lost is taken back, running or finished; another node's word is not.
#[test]
fn a_task_lost_with_its_node_is_taken_back_when_that_node_reports_the_run() {
    let mut book = Book::default();
    book.create_task("t-a".into(), task(0), NOW).unwrap();
    book.create_task("t-b".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    book.nodes_lost(&|n, _| n != "n1", NOW);
    for id in ["t-a", "t-b"] {
        let t = book.task(id).unwrap();
        assert_eq!((t.state, t.node.as_deref()), (TaskState::Lost, Some("n1")));
    }
    // Another node cannot claim a lost task's run.
    let done = RunState::Exited {
        code: Some(0),
        signal: None,
        oom_killed: false,
        output_bytes: None,
    };
    book.report("n2", &report("t-a.1", done.clone()), NOW);
    assert_eq!(book.task("t-a").unwrap().state, TaskState::Lost);

    let running = RunState::Running {
        health_reason: None,
        health: None,
        restarts: 0,
        address: None,
    };
    let effects = book.hello(
        "n1",
        &[report("t-a.1", done), report("t-b.1", running)],
        NOW,
    );
    assert!(stops(&effects).is_empty(), "nothing to stop: {effects:?}");
    let a = book.task("t-a").unwrap();
    assert_eq!((a.state, a.reason.as_deref()), (TaskState::Succeeded, None));
    let b = book.task("t-b").unwrap();
    assert_eq!((b.state, b.finished_at), (TaskState::Running, None));
    assert!(book.stale_runs("n1", &["t-b.1".to_owned()]).is_empty());
}

#[test]
fn hello_assigns_again_what_the_node_does_not_have() {
    let mut book = Book::default();
    book.create_task("t-1".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let effects = book.hello("n1", &[], NOW);
    assert_eq!(
        assigned(&effects),
        [("n1".to_string(), "t-1.1".to_string())]
    );
    // A node reporting the run keeps it without a second assignment.
    let effects = book.hello(
        "n1",
        &[report(
            "t-1.1",
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        )],
        NOW,
    );
    assert!(assigned(&effects).is_empty());
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Running);
}

#[test]
fn heartbeats_name_the_runs_to_stop() {
    let mut book = Book::default();
    book.create_task("t-1".into(), task(1), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let runs = vec!["t-1.1".to_string(), "t-gone.1".to_string()];
    assert_eq!(book.stale_runs("n1", &runs), ["t-gone.1"]);
    // Cut off long enough to lose the run, then back on the same connection.
    book.nodes_lost(&|_, _| false, NOW);
    assert_eq!(book.stale_runs("n1", &runs), runs);
}

#[test]
fn cancel_stops_a_running_task_and_ignores_its_late_reports() {
    let mut book = Book::default();
    book.create_task("t-1".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    book.report(
        "n1",
        &report(
            "t-1.1",
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        ),
        NOW,
    );
    let (t, effects) = book.cancel("t-1", NOW).unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(stops(&effects), [("n1".to_string(), "t-1.1".to_string())]);
    book.report("n1", &report("t-1.1", exited(143)), NOW);
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Cancelled);
    assert!(book.cancel("t-nope", NOW).is_err());
}

#[test]
fn late_pull_progress_does_not_take_a_running_task_back() {
    let mut book = Book::default();
    book.create_task("t-1".into(), task(0), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    book.report(
        "n1",
        &report(
            "t-1.1",
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        ),
        NOW,
    );
    let late = RunState::Pulling {
        progress: Default::default(),
    };
    book.report("n1", &report("t-1.1", late), NOW);
    assert_eq!(book.task("t-1").unwrap().state, TaskState::Running);
}

fn service(replicas: u32) -> ServiceCreateRequest {
    ServiceCreateRequest {
        request_id: None,
        name: "web".into(),
        spec: spec(),
        replicas,
    }
}

#[test]
fn a_deploy_sent_again_gets_its_service_and_another_deploy_of_the_name_is_refused() {
    let mut book = Book::default();
    let mut request = service(2);
    request.request_id = Some("d-0123456789".into());
    let effects = book.create_service(request.clone(), NOW).unwrap();
    assert_eq!(effects.save_services.len(), 1);
    let effects = book.create_service(request.clone(), NOW).unwrap();
    assert!(effects.save_services.is_empty() && effects.save_tasks.is_empty());
    assert_eq!(book.service("web").unwrap().replicas, 2);
    // Another request for the name, or the same id with another spec: it exists.
    let mut other = request.clone();
    other.request_id = Some("d-9876543210".into());
    assert!(matches!(
        book.create_service(other, NOW),
        Err(super::BookError::ServiceExists(_))
    ));
    let mut changed = request;
    changed.spec.command = vec!["other".into()];
    assert!(matches!(
        book.create_service(changed, NOW),
        Err(super::BookError::ServiceExists(_))
    ));
}

#[test]
fn service_replicas_spread_and_move_off_a_dead_node() {
    let mut book = Book::default();
    book.create_service(service(2), NOW).unwrap();
    assert!(book.create_service(service(1), NOW).is_err());
    let nodes = [node("n1", true), node("n2", true), node("n3", true)];
    let effects = book.schedule(&scheduler(), &nodes, NOW);
    let placed = assigned(&effects);
    assert_eq!(placed.len(), 2);
    assert_ne!(
        placed[0].0, placed[1].0,
        "replicas share a node: {placed:?}"
    );
    for (n, run) in &placed {
        book.report(
            n,
            &report(
                run,
                RunState::Running {
                    health_reason: None,
                    health: None,
                    restarts: 0,
                    address: None,
                },
            ),
            NOW,
        );
    }
    assert_eq!(book.service("web").unwrap().running, 2);

    let dead = placed[0].0.clone();
    book.nodes_lost(&|n, _| n != dead, NOW);
    let effects = book.schedule(&scheduler(), &nodes, NOW);
    let moved = assigned(&effects);
    assert_eq!(moved.len(), 1);
    assert_ne!(moved[0].0, dead);
    assert_ne!(
        moved[0].0, placed[1].0,
        "spread: the free node is preferred"
    );
    assert!(moved[0].1.ends_with(".2"), "{moved:?}");

    // A replica's exit is not final: its node restarts it.
    book.report(
        &moved[0].0,
        &report(
            &moved[0].1,
            RunState::Running {
                health_reason: None,
                health: None,
                restarts: 0,
                address: None,
            },
        ),
        NOW,
    );
    book.report(&moved[0].0, &report(&moved[0].1, exited(1)), NOW);
    let replica = book.task(super::task_of_run(&moved[0].1)).unwrap();
    assert_eq!(replica.state, TaskState::Running);
    assert!(replica.reason.as_deref().unwrap().contains("code 1"));
}

/// Two nodes, three replicas that each publish 8080/tcp: one replica a node, and the third
/// waits, saying the port is why; a task publishing 8080/udp still fits.
#[test]
fn replicas_publishing_one_host_port_take_a_node_each_and_the_rest_waits_saying_why() {
    let mut book = Book::default();
    let mut web = service(3);
    web.spec.network = cloudos_cluster::workload::NetworkMode::Bridge;
    web.spec.publish = vec!["8080:80".parse().unwrap()];
    book.create_service(web, NOW).unwrap();
    let nodes = [node("n1", true), node("n2", true)];
    let effects = book.schedule(&scheduler(), &nodes, NOW);
    let mut on: Vec<String> = assigned(&effects).into_iter().map(|(n, _)| n).collect();
    on.sort();
    assert_eq!(on, ["n1", "n2"]);
    let waiting: Vec<_> = book
        .tasks()
        .filter(|t| t.state == TaskState::Queued)
        .collect();
    assert_eq!(waiting.len(), 1);
    let reason = waiting[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("host port 8080/tcp taken"), "{reason}");

    let mut udp = task(0);
    udp.spec.network = cloudos_cluster::workload::NetworkMode::Bridge;
    udp.spec.publish = vec!["8080:80/udp".parse().unwrap()];
    book.create_task("t-udp".into(), udp, NOW).unwrap();
    let effects = book.schedule(&scheduler(), &nodes, NOW);
    assert_eq!(assigned(&effects).len(), 1, "udp 8080 is another port");
}

#[test]
fn scaling_down_and_deleting_stop_replicas() {
    let mut book = Book::default();
    book.create_service(service(3), NOW).unwrap();
    book.schedule(&scheduler(), &[node("n1", true)], NOW);
    let effects = book.scale("web", 1, NOW).unwrap();
    assert_eq!(stops(&effects).len(), 2);
    assert_eq!(effects.delete_tasks.len(), 2);
    assert_eq!(book.service("web").unwrap().instances.len(), 1);
    let effects = book.delete_service("web", NOW).unwrap();
    assert_eq!(stops(&effects).len(), 1);
    assert_eq!(effects.delete_services, ["web"]);
    assert!(book.service("web").is_none());
    assert!(book.scale("web", 1, NOW).is_err());
    assert!(book.create_service(service(100_000), NOW).is_err());
}

#[test]
fn a_request_id_makes_one_task_however_often_it_is_sent() {
    let mut book = Book::default();
    let mut request = task(0);
    request.request_id = Some("r-0123456789".into());
    let (first, effects) = book
        .create_task("t-1".into(), request.clone(), NOW)
        .unwrap();
    assert_eq!(effects.save_tasks.len(), 1);
    // The retry (after a lost answer) gets the same task, and nothing is written.
    let (again, effects) = book
        .create_task("t-2".into(), request.clone(), NOW)
        .unwrap();
    assert_eq!(again, first);
    assert!(effects.save_tasks.is_empty() && effects.messages.is_empty());
    // So does one after a master restart: the id is kept with the task.
    let mut reloaded = Book::load(vec![first.clone()], vec![]);
    let (again, _) = reloaded
        .create_task("t-3".into(), request.clone(), NOW)
        .unwrap();
    assert_eq!(again.id, "t-1");
    // The same id for something else is a mistake, and said so.
    let mut other = request.clone();
    other.retries = 2;
    let err = book.create_task("t-4".into(), other, NOW).unwrap_err();
    assert!(
        err.to_string().contains("made task t-1 with another spec"),
        "{err}"
    );
    // Without an id, every request is a new task.
    let (plain, _) = book.create_task("t-5".into(), task(0), NOW).unwrap();
    let (plain2, _) = book.create_task("t-6".into(), task(0), NOW).unwrap();
    assert_ne!(plain.id, plain2.id);
}

#[test]
fn a_loaded_book_queues_in_creation_order() {
    let mut book = Book::default();
    let (a, _) = book.create_task("t-b".into(), task(0), NOW).unwrap();
    let (b, _) = book
        .create_task("t-a".into(), task(0), NOW + time::Duration::seconds(1))
        .unwrap();
    let mut reloaded = Book::load(vec![b, a], vec![]);
    let effects = reloaded.schedule(&scheduler(), &[node("n1", true)], NOW);
    let runs: Vec<String> = assigned(&effects).into_iter().map(|(_, r)| r).collect();
    assert_eq!(runs, ["t-b.1", "t-a.1"]);
}
