//! How much of finished work the master keeps: the policy and the pure choice of what a
//! sweep deletes. Carrying it out (store, files) is `workloads::sweep`'s job.
//!
//! A finished task (record, log and `/output`) goes when it ended longer ago than
//! [`Retention::keep_finished`], when more than [`Retention::max_finished`] finished tasks
//! are kept, or while the logs and outputs of all tasks together exceed
//! [`Retention::files_budget`]; in each case the task that ended first goes first. Queued
//! and running tasks and service replicas are never swept: they are bounded by what admins
//! run, and each task's log by [`Retention::log_cap`].

use std::time::Duration;

use cloudos_cluster::workload::TaskInfo;
use time::OffsetDateTime;

/// What the master keeps. The defaults fit a small master: a week of history, a thousand
/// finished tasks, 1 GiB of logs and outputs, 16 MiB of log per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_finished: Duration,
    pub max_finished: usize,
    pub files_budget: u64,
    /// A task's stdout and stderr together; beyond it the master keeps the head.
    pub log_cap: u64,
    /// How often the sweep runs.
    pub sweep_every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_finished: Duration::from_secs(7 * 86_400),
            max_finished: 1000,
            files_budget: 1 << 30,
            log_cap: 16 << 20,
            sweep_every: Duration::from_secs(300),
        }
    }
}

/// The finished tasks a sweep deletes, oldest end first. `files(id)` is the bytes of a
/// task's log and output; `total_files` those of every task, running ones included.
pub fn doomed<'a>(
    tasks: impl Iterator<Item = &'a TaskInfo>,
    files: &dyn Fn(&str) -> u64,
    total_files: u64,
    policy: &Retention,
    now: OffsetDateTime,
) -> Vec<String> {
    let ended = |t: &TaskInfo| t.finished_at.unwrap_or(t.created_at);
    let mut finished: Vec<&TaskInfo> = tasks
        .filter(|t| t.state.is_final() && t.service.is_none())
        .collect();
    finished.sort_by(|a, b| ended(a).cmp(&ended(b)).then(a.id.cmp(&b.id)));
    let keep = time::Duration::try_from(policy.keep_finished).unwrap_or(time::Duration::MAX);
    let mut left = finished.len();
    let mut total = total_files;
    let mut out = Vec::new();
    // Oldest first, each reason only weakens as tasks go: the first task none applies to
    // ends the sweep.
    for t in finished {
        let too_old = now - ended(t) >= keep;
        let too_many = left > policy.max_finished;
        let over_budget = total > policy.files_budget;
        if !(too_old || too_many || over_budget) {
            break;
        }
        total = total.saturating_sub(files(&t.id));
        left -= 1;
        out.push(t.id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::workload::{TaskState, WorkloadSpec};
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 10:00 UTC);

    fn task(id: &str, state: TaskState, ended_hours_ago: i64, service: bool) -> TaskInfo {
        let mut t = TaskInfo::queued(
            id.into(),
            WorkloadSpec::new("r/busybox:1"),
            service.then(|| "web".to_owned()),
            0,
            NOW - time::Duration::days(30),
        );
        t.state = state;
        if state.is_final() {
            t.finished_at = Some(NOW - time::Duration::hours(ended_hours_ago));
        }
        t
    }

    fn policy(max: usize, budget: u64) -> Retention {
        Retention {
            keep_finished: Duration::from_secs(24 * 3600),
            max_finished: max,
            files_budget: budget,
            ..Retention::default()
        }
    }

    #[test]
    fn what_a_sweep_deletes() {
        use TaskState::*;
        let tasks = [
            task("old-ok", Succeeded, 48, false),
            task("old-failed", Failed, 30, false),
            task("recent-1", Succeeded, 3, false),
            task("recent-2", Cancelled, 2, false),
            task("recent-3", Lost, 1, false),
            task("running", Running, 0, false),
            task("queued", Queued, 0, false),
            task("replica", Failed, 100, true),
        ];
        let sizes: BTreeMap<&str, u64> = [
            ("old-ok", 10),
            ("old-failed", 10),
            ("recent-1", 100),
            ("recent-2", 100),
            ("recent-3", 100),
            ("running", 1000),
        ]
        .into();
        let files = |id: &str| sizes.get(id).copied().unwrap_or(0);
        let total: u64 = sizes.values().sum();
        let cases: Vec<(&str, Retention, Vec<&str>)> = vec![
            (
                "age only",
                policy(100, u64::MAX),
                vec!["old-failed", "old-ok"],
            ),
            (
                "count: at most 2 finished",
                policy(2, u64::MAX),
                vec!["old-failed", "old-ok", "recent-1"],
            ),
            (
                "budget: oldest first until within it",
                policy(100, 1150),
                vec!["old-failed", "old-ok", "recent-1", "recent-2"],
            ),
            (
                "a running task's files alone exceed it: every finished task goes",
                policy(100, 500),
                vec!["old-failed", "old-ok", "recent-1", "recent-2", "recent-3"],
            ),
        ];
        for (name, p, want) in cases {
            let mut got = doomed(tasks.iter(), &files, total, &p, NOW);
            got.sort();
            let mut want: Vec<String> = want.into_iter().map(String::from).collect();
            want.sort();
            assert_eq!(got, want, "{name}");
        }
    }
}
