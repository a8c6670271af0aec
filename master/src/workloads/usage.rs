//! What each running task uses, as its node's last heartbeat said (`Heartbeat::usage`),
//! kept in memory only: it is shown on tasks (`ps`, `cloudos top`) and in `/metrics`,
//! and a heartbeat two seconds later replaces it. Not in the book: heartbeats come from
//! every node every interval, and need not wait for the book's lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cloudos_cluster::workload::{ServiceInfo, TaskInfo, TaskState, TaskUsage, WorkloadList};

/// Each node's last report, by run.
#[derive(Debug, Default)]
pub struct UsageBoard {
    by_node: Mutex<HashMap<String, BTreeMap<String, TaskUsage>>>,
}

impl UsageBoard {
    /// `node`'s heartbeat: its report replaces the one before.
    pub fn note(&self, node: &str, usage: BTreeMap<String, TaskUsage>) {
        let mut by_node = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        if usage.is_empty() {
            by_node.remove(node);
        } else {
            by_node.insert(node.to_owned(), usage);
        }
    }

    /// A removed node's report goes with it.
    pub fn forget(&self, node: &str) {
        self.note(node, BTreeMap::new());
    }

    /// What `task` uses: only while it runs, and only its current run on its node (a
    /// report of an older run, or from a node it has left, is not its).
    pub fn of(&self, task: &TaskInfo) -> Option<TaskUsage> {
        if task.state != TaskState::Running {
            return None;
        }
        let (node, run) = (task.node.as_ref()?, task.run.as_ref()?);
        let by_node = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        by_node.get(node)?.get(run).copied()
    }

    pub fn fill(&self, task: &mut TaskInfo) {
        task.usage = self.of(task);
    }

    pub fn fill_service(&self, service: &mut ServiceInfo) {
        for replica in &mut service.instances {
            self.fill(replica);
        }
    }

    pub fn fill_list(&self, list: &mut WorkloadList) {
        for task in &mut list.tasks {
            self.fill(task);
        }
        for service in &mut list.services {
            self.fill_service(service);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::workload::WorkloadSpec;
    use time::macros::datetime;

    fn running(id: &str, node: &str, run: &str) -> TaskInfo {
        let mut task = TaskInfo::queued(
            id.into(),
            WorkloadSpec::new("r/i:1"),
            None,
            0,
            datetime!(2026-12-07 10:00 UTC),
        );
        task.state = TaskState::Running;
        task.node = Some(node.into());
        task.run = Some(run.into());
        task
    }

    #[test]
    fn a_task_shows_what_its_current_run_uses_while_it_runs() {
        let board = UsageBoard::default();
        let used = TaskUsage {
            cpu_millicores: 250,
            memory_bytes: 1 << 20,
            ..TaskUsage::default()
        };
        board.note("n1", [("t-1.2".to_string(), used)].into());
        assert_eq!(board.of(&running("t-1", "n1", "t-1.2")), Some(used));
        assert_eq!(
            board.of(&running("t-1", "n1", "t-1.1")),
            None,
            "an older run"
        );
        assert_eq!(
            board.of(&running("t-1", "n2", "t-1.2")),
            None,
            "another node"
        );
        let mut ended = running("t-1", "n1", "t-1.2");
        ended.state = TaskState::Succeeded;
        assert_eq!(board.of(&ended), None, "not running");
        board.forget("n1");
        assert_eq!(
            board.of(&running("t-1", "n1", "t-1.2")),
            None,
            "node removed"
        );
    }
}
