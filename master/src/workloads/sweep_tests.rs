//! The retention sweep against a real master state: a redb store and log and output files
//! in a temp directory.

use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::workload::{LogChunk, LogStream, TaskInfo, TaskState, WorkloadSpec};
use cloudos_store::{RedbStore, Store};
use time::OffsetDateTime;

use super::retention::Retention;
use crate::bootstrap;
use crate::config::MasterConfig;
use crate::state::MasterState;

fn task(
    id: &str,
    state: TaskState,
    ended: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> TaskInfo {
    let mut t = TaskInfo::queued(
        id.into(),
        WorkloadSpec::new("r/busybox:1"),
        None,
        0,
        now - time::Duration::days(30),
    );
    t.state = state;
    t.finished_at = ended;
    if state == TaskState::Running {
        t.node = Some("n1".into());
        t.run = Some(format!("{id}.1"));
    }
    t
}

/// A master state over `tasks`, each with `log_bytes` of stdout and an output file.
fn master(
    dir: &std::path::Path,
    tasks: &[TaskInfo],
    retention: Retention,
    log_bytes: usize,
) -> MasterState {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.join("state.redb")).expect("store"));
    for t in tasks {
        store.put_task(t).expect("seed");
    }
    let cluster = bootstrap::open_cluster(store.as_ref(), "lab").expect("cluster");
    let mut config = MasterConfig::new(dir, "m1");
    config.retention = retention;
    let state = MasterState::new(config, store, cluster, "127.0.0.1:1".parse().expect("addr"))
        .expect("state");
    for t in tasks {
        let chunk = LogChunk {
            run: format!("{}.1", t.id),
            stream: LogStream::Stdout,
            offset: 0,
            data: "x".repeat(log_bytes),
        };
        state.workloads.append_log(&t.id, &chunk).expect("log");
        std::fs::write(state.workloads.output_path(&t.id), b"tar").expect("output");
    }
    state
}

fn ids(state: &MasterState) -> Vec<String> {
    let mut stored: Vec<String> = state
        .store
        .list_tasks()
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    stored.sort();
    let mut held: Vec<String> = state
        .workloads
        .book()
        .tasks()
        .map(|t| t.id.clone())
        .collect();
    held.sort();
    assert_eq!(stored, held, "store and memory agree");
    stored
}

fn has_files(state: &MasterState, id: &str) -> bool {
    state.workloads.log_path(id, LogStream::Stdout).exists()
        || state.workloads.output_path(id).exists()
}

#[test]
fn finished_tasks_past_retention_go_running_ones_never() {
    let dir = tempfile::tempdir().expect("dir");
    let now = OffsetDateTime::now_utc();
    let days = |n| Some(now - time::Duration::days(n));
    let tasks = [
        task("t-old-ok", TaskState::Succeeded, days(8), now),
        task("t-old-failed", TaskState::Failed, days(9), now),
        task("t-recent", TaskState::Succeeded, days(1), now),
        // Running for a month: never swept, whatever its age.
        task("t-running", TaskState::Running, None, now),
        task("t-queued", TaskState::Queued, None, now),
    ];
    let state = master(dir.path(), &tasks, Retention::default(), 10);
    // A file no task owns (a task deleted while its last chunk was on the way).
    std::fs::create_dir_all(dir.path().join("master/workloads/logs/t-orphan")).expect("orphan");

    let mut gone = super::sweep(&state, now).expect("sweep");
    gone.sort();
    assert_eq!(gone, ["t-old-failed", "t-old-ok"]);
    assert_eq!(ids(&state), ["t-queued", "t-recent", "t-running"]);
    assert!(!has_files(&state, "t-old-ok") && !has_files(&state, "t-old-failed"));
    assert!(has_files(&state, "t-recent") && has_files(&state, "t-running"));
    assert!(!dir.path().join("master/workloads/logs/t-orphan").exists());

    // A month later still: the running and queued tasks stay.
    let later = now + time::Duration::days(30);
    super::sweep(&state, later).expect("sweep");
    assert_eq!(ids(&state), ["t-queued", "t-running"]);
}

#[test]
fn the_byte_budget_is_kept_oldest_first() {
    let dir = tempfile::tempdir().expect("dir");
    let now = OffsetDateTime::now_utc();
    let hours = |n| Some(now - time::Duration::hours(n));
    let tasks = [
        task("t-a", TaskState::Succeeded, hours(5), now),
        task("t-b", TaskState::Failed, hours(4), now),
        task("t-c", TaskState::Succeeded, hours(3), now),
        task("t-d", TaskState::Succeeded, hours(2), now),
        task("t-run", TaskState::Running, None, now),
    ];
    // 5 × (100 KiB log + 3 bytes output); room for 3 of them.
    let retention = Retention {
        files_budget: 3 * (100 << 10) + 64,
        ..Retention::default()
    };
    let state = master(dir.path(), &tasks, retention, 100 << 10);
    let mut gone = super::sweep(&state, now).expect("sweep");
    gone.sort();
    assert_eq!(gone, ["t-a", "t-b"], "the two that ended first");
    assert_eq!(ids(&state), ["t-c", "t-d", "t-run"]);
    let info = state.workloads.retention_info(&state.workloads.book());
    assert!(info.files_bytes <= retention.files_budget, "{info:?}");
}

#[test]
fn at_most_max_finished_are_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let now = OffsetDateTime::now_utc();
    let tasks: Vec<TaskInfo> = (0..6)
        .map(|i| {
            task(
                &format!("t-{i}"),
                TaskState::Succeeded,
                Some(now - time::Duration::minutes(60 - i)),
                now,
            )
        })
        .collect();
    let retention = Retention {
        max_finished: 4,
        sweep_every: Duration::from_secs(1),
        ..Retention::default()
    };
    let state = master(dir.path(), &tasks, retention, 1);
    super::sweep(&state, now).expect("sweep");
    assert_eq!(ids(&state), ["t-2", "t-3", "t-4", "t-5"]);
}
