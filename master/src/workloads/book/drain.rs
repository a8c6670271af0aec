//! Draining a node, as the book sees it: every service replica on the node gets a
//! *replacement* (a new replica of its service, queued away from the node); once the
//! replacement runs, the replica on the node is removed (its run stopped). Until then both
//! run, so a drain never leaves a service with fewer running replicas than it had. Tasks
//! on the node are left to finish, or, once the caller says the time is up, stopped and
//! handled as lost runs (queued again with retries left, else `lost`).
//!
//! Pure, like the rest of the book: the caller (`nodeops::drain`) runs one pass after
//! another and applies the effects; placing the replacements is the dispatch loop's
//! ordinary work (the node is cordoned, so they go elsewhere).

use std::collections::BTreeSet;

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::nodeops::ReplicaMove;
use cloudos_cluster::workload::{TaskInfo, TaskState};
use time::OffsetDateTime;

use super::{is_active, replica_id, Book, Effects};

/// A replacement a drain started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Surge {
    /// The replica it replaces.
    pub replaces: String,
    /// The node being drained.
    pub from: String,
}

/// What one pass of a drain found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainPass {
    /// Moves that ended in this pass: the replacement runs, the replica on the node was
    /// removed.
    pub finished: Vec<ReplicaMove>,
    /// Moves under way (started in this pass or before).
    pub pending: Vec<ReplicaMove>,
    /// Replicas whose replacement failed (`(replica, why)`): they stay on the node.
    pub failed: Vec<(String, String)>,
    /// Tasks still running on the node.
    pub running: Vec<String>,
    /// Tasks this pass stopped (the timeout passed).
    pub stopped: Vec<String>,
    /// Nothing of the book runs on the node any more and no move is under way.
    pub done: bool,
}

impl Book {
    /// One pass of draining `node` (which the caller has cordoned): finishes the moves
    /// whose replacement runs, starts a replacement for each replica on the node that has
    /// none, and lists the tasks still running there. With `stop_tasks` (the time is up,
    /// said in words) those tasks are stopped and handled as lost runs.
    pub fn drain_pass(
        &mut self,
        node: &str,
        stop_tasks: Option<&str>,
        now: OffsetDateTime,
    ) -> (DrainPass, Effects) {
        let mut pass = DrainPass::default();
        let mut effects = Effects::default();
        self.advance_moves(node, &mut pass, &mut effects);
        self.start_moves(node, &mut pass, &mut effects, now);

        let tasks: Vec<TaskInfo> = self
            .tasks
            .values()
            .filter(|t| t.service.is_none() && is_active(t) && t.node.as_deref() == Some(node))
            .cloned()
            .collect();
        for t in tasks {
            let Some(why) = stop_tasks else {
                pass.running.push(t.id);
                continue;
            };
            if let Some(run) = t.run {
                effects
                    .messages
                    .push((node.to_owned(), MasterMessage::Stop { run }));
            }
            if let Some(saved) = self.lose_run(&t.id, why.to_owned(), now) {
                effects.save_tasks.push(saved);
            }
            pass.stopped.push(t.id);
        }
        pass.done = pass.pending.is_empty()
            && pass.failed.is_empty()
            && self.active_runs_on(node).is_empty();
        (pass, effects)
    }

    /// Moves off `node` under way: finished when the replacement runs, failed when it
    /// ended (it is removed; the replica stays), else still pending.
    fn advance_moves(&mut self, node: &str, pass: &mut DrainPass, effects: &mut Effects) {
        for id in self.surge_ids(|s| s.from == node) {
            let (Some(t), Some(surge)) =
                (self.tasks.get(&id).cloned(), self.surges.get(&id).cloned())
            else {
                self.surges.remove(&id);
                continue;
            };
            let mut step = ReplicaMove {
                service: t.service.clone().unwrap_or_default(),
                replica: surge.replaces.clone(),
                replacement: id.clone(),
                to: t.node.clone(),
                done: false,
                waiting: None,
            };
            // A replacement with a health check takes over once it serves, not before.
            let serves = t.health.is_none_or(|h| h.serves());
            match t.state {
                TaskState::Running if serves => {
                    // Its own entry first, so that removing the replica keeps it.
                    self.surges.remove(&id);
                    effects.merge(self.remove_task(&surge.replaces));
                    step.done = true;
                    pass.finished.push(step);
                }
                state if state.is_final() => {
                    let why = t.reason.unwrap_or_else(|| format!("it ended {state:?}"));
                    effects.merge(self.remove_task(&id));
                    pass.failed.push((
                        surge.replaces,
                        format!("its replacement {id} could not start: {why}"),
                    ));
                }
                state => {
                    step.waiting = match state {
                        TaskState::Queued => t.reason,
                        TaskState::Running => Some("its health check has not passed yet".into()),
                        _ => None,
                    };
                    pass.pending.push(step);
                }
            }
        }
    }

    /// A replacement for each replica on `node` that has none (and did not just fail).
    fn start_moves(
        &mut self,
        node: &str,
        pass: &mut DrainPass,
        effects: &mut Effects,
        now: OffsetDateTime,
    ) {
        let replaced: BTreeSet<&str> = self
            .surges
            .values()
            .map(|s| s.replaces.as_str())
            .chain(pass.failed.iter().map(|(r, _)| r.as_str()))
            .collect();
        let replicas: Vec<(String, String)> = self
            .tasks
            .values()
            .filter(|t| is_active(t) && t.node.as_deref() == Some(node))
            .filter(|t| !self.surges.contains_key(&t.id) && !replaced.contains(t.id.as_str()))
            .filter_map(|t| Some((t.id.clone(), t.service.clone()?)))
            .collect();
        for (replica, service) in replicas {
            if !self.services.contains_key(&service) {
                continue;
            }
            // A new index, above every one in use: should the master restart before the
            // move ends, the replacement is the highest index, the one the count rule
            // removes.
            let index = self.new_replica_index(&service, effects);
            let Some(record) = self.services.get(&service) else {
                continue;
            };
            let id = replica_id(&service, index);
            let mut task = TaskInfo::queued(
                id.clone(),
                record.spec.clone(),
                Some(service.clone()),
                0,
                now,
            );
            task.revision = Some(record.revision);
            let why = format!("replaces {replica} (node {node} is being drained)");
            task.reason = Some(why.clone());
            self.queue.push_back(id.clone());
            self.avoid.insert(id.clone(), vec![node.to_owned()]);
            self.surges.insert(
                id.clone(),
                Surge {
                    replaces: replica.clone(),
                    from: node.to_owned(),
                },
            );
            effects.save_tasks.push(task.clone());
            self.tasks.insert(id.clone(), task);
            pass.pending.push(ReplicaMove {
                service,
                replica,
                replacement: id,
                to: None,
                done: false,
                waiting: Some(why),
            });
        }
    }

    /// Gives up the moves off `node` still under way: their replacements are removed and
    /// the replicas stay where they are.
    pub fn abort_drain(&mut self, node: &str) -> Effects {
        let mut effects = Effects::default();
        for id in self.surge_ids(|s| s.from == node) {
            effects.merge(self.remove_task(&id));
        }
        effects
    }

    /// The replacements `which` picks, by id.
    pub(super) fn surge_ids(&self, which: impl Fn(&Surge) -> bool) -> Vec<String> {
        self.surges
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
