use std::collections::BTreeMap;

use cloudos_cluster::health::Health;
use cloudos_cluster::revision::{PolicyChange, ServiceDeployRequest};
use cloudos_cluster::workload::{RunReport, RunState, TaskState, WorkloadSpec};
use cloudos_scheduler::Resources;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::super::tests::{assigned, scheduler, spec, stops};
use super::super::{Book, BookError, NodeFacts};
use super::{Deployed, LEAVE_GRACE};

const T0: OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

fn nodes() -> Vec<NodeFacts> {
    ["n1", "n2"]
        .into_iter()
        .map(|name| NodeFacts {
            name: name.into(),
            arch: "x86_64".into(),
            labels: BTreeMap::new(),
            ready: true,
            cordoned: false,
            capacity: Resources::new(4000, 4 << 30),
        })
        .collect()
}

fn version(n: u32) -> WorkloadSpec {
    WorkloadSpec {
        command: vec!["serve".into(), format!("v{n}")],
        ..spec()
    }
}

fn deploy(spec: WorkloadSpec) -> ServiceDeployRequest {
    ServiceDeployRequest {
        spec,
        replicas: None,
        policy: PolicyChange {
            monitor_secs: Some(5),
            ..PolicyChange::default()
        },
        request_id: None,
    }
}

fn running(health: Option<Health>, restarts: u32) -> RunState {
    RunState::Running {
        health_reason: None,
        restarts,
        address: None,
        health,
    }
}

/// Each run's container address: `10.250.0.N`, N from the run's replica index and attempt.
fn address(run: &str) -> std::net::Ipv4Addr {
    let digits: String = run.chars().filter(char::is_ascii_digit).collect();
    std::net::Ipv4Addr::new(10, 250, 0, digits.parse::<u8>().unwrap_or(1))
}

/// The service `web` as the dispatch loop moves it: one pass (reconcile, schedule) at
/// `now`, every new assignment reported running (with `health`) at once.
struct Lab {
    book: Book,
    now: OffsetDateTime,
    health: Option<Health>,
}

impl Lab {
    fn new(replicas: u32) -> Lab {
        let mut book = Book::default();
        book.set_service_range("10.251.0.0/16".parse().expect("range"));
        let mut request = deploy(version(1));
        request.replicas = Some(replicas);
        let (deployed, _) = book.deploy("web", request, T0).expect("created");
        assert_eq!(deployed, Deployed::Created);
        let mut lab = Lab {
            book,
            now: T0,
            health: None,
        };
        lab.pass();
        lab
    }

    /// One dispatch pass; returns the runs it stopped.
    fn pass(&mut self) -> Vec<String> {
        let mut effects = self.book.reconcile_services(self.now);
        let placed = self.book.schedule(&scheduler(), &nodes(), self.now);
        for (node, run) in assigned(&placed) {
            let report = RunReport {
                state: RunState::Running {
                    health_reason: None,
                    restarts: 0,
                    address: Some(address(&run)),
                    health: self.health,
                },
                run,
            };
            self.book.report(&node, &report, self.now);
        }
        effects.merge(placed);
        stops(&effects).into_iter().map(|(_, run)| run).collect()
    }

    fn later(&mut self, secs: i64) {
        self.now += Duration::seconds(secs);
    }

    /// `(id, command's version, running, in the service table)` of each replica.
    fn replicas(&self) -> Vec<(String, String, bool, bool)> {
        let svc = self.book.service("web").expect("web");
        let table = self.book.service_table();
        let routed = &table.get("web").expect("routed").replicas;
        svc.instances
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.spec.command.last().cloned().unwrap_or_default(),
                    t.state == TaskState::Running,
                    t.address.is_some_and(|a| routed.contains(&a)),
                )
            })
            .collect()
    }

    /// Replicas in the rotation.
    fn serving(&self) -> usize {
        self.replicas().iter().filter(|r| r.3).count()
    }

    fn report(&mut self, id: &str, mut state: RunState) {
        let t = self.book.task(id).expect("replica").clone();
        let run = t.run.expect("a run");
        if let RunState::Running { address, .. } = &mut state {
            *address = Some(self::address(&run));
        }
        let report = RunReport { run, state };
        self.book
            .report(&t.node.expect("a node"), &report, self.now);
    }
}

/// v1 → v2 on two replicas with the default policy (surge 1, unavailable 0): never fewer
/// than two serving, never more than three running, each old replica out of the rotation
/// before it is stopped, and the update over once both run v2.
#[test]
fn an_update_replaces_replicas_one_at_a_time_and_never_serves_with_fewer() {
    let mut lab = Lab::new(2);
    assert_eq!(lab.serving(), 2);
    let (deployed, _) = lab
        .book
        .deploy("web", deploy(version(2)), lab.now)
        .expect("update");
    assert_eq!(deployed, Deployed::Updating { from: 1, to: 2 });
    let mut stopped = Vec::new();
    for _ in 0..40 {
        stopped.extend(lab.pass());
        let replicas = lab.replicas();
        assert!(lab.serving() >= 2, "fewer than two serve: {replicas:?}");
        assert!(replicas.len() <= 3, "more than the surge: {replicas:?}");
        lab.later(1);
    }
    let svc = lab.book.service("web").expect("web");
    assert!(svc.update.is_none(), "still updating: {:?}", svc.update);
    assert_eq!(svc.revision, 2);
    let versions: Vec<String> = lab.replicas().into_iter().map(|r| r.1).collect();
    assert_eq!(versions, ["v2", "v2"]);
    assert_eq!(
        stopped,
        ["web-r1.1", "web-r0.1"],
        "the highest index leaves first"
    );
    assert!(svc.instances.iter().all(|t| t.revision == Some(2)));
    // New indices: the late report of a stopped run is never taken for a new replica's.
    let ids: Vec<String> = lab.replicas().into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["web-r2", "web-r3"]);
    let late = RunReport {
        run: "web-r1.1".into(),
        state: RunState::Stopped,
    };
    let effects = lab.book.report("n1", &late, lab.now);
    assert!(!effects.writes_store(), "{effects:?}");
    assert_eq!(lab.serving(), 2);
}

/// A replica chosen to leave is out of the service table at once and stopped only after
/// the grace.
#[test]
fn a_leaving_replica_leaves_the_rotation_before_it_is_stopped() {
    let mut lab = Lab::new(1);
    lab.book
        .deploy("web", deploy(version(2)), lab.now)
        .expect("update");
    lab.pass();
    lab.later(5);
    // The new one has served its monitor time: the old one leaves, not stopped yet.
    assert!(lab.pass().is_empty());
    let old = lab.book.task("web-r0").expect("r0").clone();
    assert!(old.leaving_since.is_some(), "{old:?}");
    let r0 = lab
        .replicas()
        .into_iter()
        .find(|r| r.0 == "web-r0")
        .expect("r0");
    assert!(r0.2 && !r0.3, "running, out of the table: {r0:?}");
    assert!(old
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("replaced by revision 2"));
    lab.now += LEAVE_GRACE - Duration::milliseconds(1);
    assert!(lab.pass().is_empty(), "stopped within its grace");
    lab.now += Duration::milliseconds(1);
    assert_eq!(lab.pass(), ["web-r0.1"]);
}

/// A new replica that exits (no check) fails the update: the service goes back to v1
/// by itself, the failed revision says why, and no old replica was stopped meanwhile.
#[test]
fn a_new_replica_that_exits_rolls_the_update_back() {
    let mut lab = Lab::new(2);
    lab.book
        .deploy("web", deploy(version(3)), lab.now)
        .expect("update");
    assert!(lab.pass().is_empty());
    lab.later(1);
    let exited = RunState::Exited {
        code: Some(1),
        signal: None,
        oom_killed: false,
        output_bytes: None,
    };
    lab.report("web-r2", exited);
    let stopped = lab.pass();
    assert_eq!(stopped, ["web-r2.1"], "the failed replica goes");
    for _ in 0..10 {
        assert!(lab.pass().is_empty());
        lab.later(1);
    }
    let svc = lab.book.service("web").expect("web");
    assert!(svc.update.is_none(), "{:?}", svc.update);
    assert_eq!(svc.revision, 3);
    assert_eq!(svc.spec, version(1));
    let failed = svc.revisions.iter().find(|r| r.number == 2).expect("rev 2");
    let why = failed.failed.as_deref().unwrap_or_default();
    assert!(
        why.contains("web-r2 of revision 2: exited with code 1"),
        "{why}"
    );
    let back = svc.revisions.last().expect("rev 3");
    assert!(
        back.cause.starts_with("automatic rollback to revision 1"),
        "{back:?}"
    );
    let ids: Vec<String> = lab.replicas().into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["web-r0", "web-r1"], "the v1 replicas never left");
    assert!(svc.instances.iter().all(|t| t.revision == Some(3)));
}

/// With a check, a new replica serves once it passes; one that fails it fails the update.
#[test]
fn a_new_replica_that_fails_its_check_rolls_the_update_back() {
    let mut lab = Lab::new(1);
    lab.health = Some(Health::Starting);
    lab.book
        .deploy("web", deploy(version(2)), lab.now)
        .expect("update");
    lab.pass();
    lab.later(30);
    assert!(
        lab.pass().is_empty(),
        "a starting replica replaced an old one"
    );
    lab.report("web-r1", running(Some(Health::Unhealthy), 0));
    lab.pass();
    let svc = lab.book.service("web").expect("web");
    assert_eq!(svc.spec, version(1));
    let why = svc.revisions[1].failed.as_deref().unwrap_or_default();
    assert!(why.contains("failed its health check"), "{why}");
}

/// `cloudos rollback` goes to the newest earlier revision that did not fail; a rollback
/// to the spec the service runs, or to a revision not kept, is refused.
#[test]
fn a_rollback_goes_to_the_previous_good_spec() {
    let mut lab = Lab::new(1);
    lab.book
        .deploy("web", deploy(version(2)), lab.now)
        .expect("v2");
    for _ in 0..10 {
        lab.pass();
        lab.later(1);
    }
    let (to, _) = lab.book.roll_back("web", None, lab.now).expect("rollback");
    assert_eq!(to, 3);
    let svc = lab.book.service("web").expect("web");
    assert_eq!(svc.spec, version(1));
    assert_eq!(svc.revisions[2].cause, "rollback to revision 1");
    let again = lab.book.roll_back("web", Some(1), lab.now).unwrap_err();
    assert!(matches!(again, BookError::RunsThatSpec { .. }), "{again}");
    let missing = lab.book.roll_back("web", Some(9), lab.now).unwrap_err();
    assert!(
        missing.to_string().contains("it keeps 1, 2, 3"),
        "{missing}"
    );
    let nothing = Lab::new(1).book.roll_back("web", None, T0).unwrap_err();
    assert!(
        matches!(nothing, BookError::NothingToRollBack { .. }),
        "{nothing}"
    );
}

/// Deploying the spec the service runs starts nothing; a new count is a scale.
#[test]
fn deploying_the_same_spec_again_changes_nothing_but_the_count() {
    let mut lab = Lab::new(2);
    let (deployed, effects) = lab
        .book
        .deploy("web", deploy(version(1)), lab.now)
        .expect("again");
    assert_eq!(deployed, Deployed::Unchanged);
    assert!(effects.is_empty(), "{effects:?}");
    let mut more = deploy(version(1));
    more.replicas = Some(3);
    let (deployed, effects) = lab.book.deploy("web", more, lab.now).expect("scale");
    assert_eq!(deployed, Deployed::Unchanged);
    assert_eq!(effects.save_services.len(), 1);
    assert_eq!(lab.book.service("web").expect("web").revisions.len(), 1);
}

/// A change is judged by the policy it leaves: a service made with no surge may not be
/// told to keep every replica too, whatever the change says alone; the refusal changes
/// nothing.
#[test]
fn a_deploy_that_would_leave_a_policy_that_cannot_move_is_refused() {
    let mut lab = Lab::new(2);
    let mut no_surge = deploy(version(1));
    no_surge.policy.max_surge = Some(0);
    no_surge.policy.max_unavailable = Some(1);
    lab.book
        .deploy("web", no_surge, lab.now)
        .expect("no surge, one may go");
    let before = lab.book.service("web").expect("web");
    let mut stuck = deploy(version(2));
    stuck.policy.max_unavailable = Some(0);
    let err = lab.book.deploy("web", stuck, lab.now).unwrap_err();
    assert!(matches!(err, BookError::Policy(_)), "{err}");
    assert!(err.to_string().contains("service web"), "{err}");
    assert_eq!(lab.book.service("web").expect("web"), before);
    // Made with such a policy, a service is refused too.
    let mut made_stuck = deploy(version(1));
    made_stuck.policy.max_surge = Some(0);
    made_stuck.policy.max_unavailable = Some(0);
    let err = lab.book.deploy("db", made_stuck, lab.now).unwrap_err();
    assert!(matches!(err, BookError::Policy(_)), "{err}");
    assert!(lab.book.service("db").is_none());
}

/// Ten revisions are kept; the oldest go.
#[test]
fn only_the_last_revisions_are_kept() {
    let mut lab = Lab::new(1);
    for n in 2..=14 {
        lab.book
            .deploy("web", deploy(version(n)), lab.now)
            .expect("deploy");
    }
    let svc = lab.book.service("web").expect("web");
    let numbers: Vec<u32> = svc.revisions.iter().map(|r| r.number).collect();
    assert_eq!(numbers, (5..=14).collect::<Vec<u32>>());
}

/// A service deleted and made again under its name goes on with new indices: the last
/// reports of the deleted one's runs are not the new replicas'.
#[test]
fn a_service_made_again_never_takes_the_deleted_ones_runs_for_its_own() {
    let mut lab = Lab::new(2);
    lab.book.delete_service("web", lab.now).expect("delete");
    let mut again = deploy(version(1));
    again.replicas = Some(2);
    lab.book.deploy("web", again, lab.now).expect("again");
    lab.pass();
    let ids: Vec<String> = lab.replicas().into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["web-r2", "web-r3"]);
    let late = RunReport {
        run: "web-r0.1".into(),
        state: RunState::Stopped,
    };
    let node = lab.book.task("web-r2").and_then(|t| t.node.clone());
    let effects = lab.book.report(&node.expect("placed"), &late, lab.now);
    assert!(!effects.writes_store(), "{effects:?}");
    assert_eq!(lab.serving(), 2);
}
