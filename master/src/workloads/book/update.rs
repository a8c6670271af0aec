//! A service's replicas, counted and updated, as the book sees it (decision 63).
//!
//! Each dispatch pass brings every service one step closer to its record:
//! - replicas that run the service's spec are *current*, the others *old* (an update is
//!   under way); an old replica that serves nobody goes at once;
//! - an old replica that serves *leaves* while more replicas serve than the policy's floor
//!   (count − max unavailable): it is taken out of the rotation first and stopped
//!   [`LEAVE_GRACE`] later, so no connection is sent to a container that is stopping;
//! - new current replicas are added while fewer than the count run it and the total stays
//!   within count + max surge;
//! - a current replica *serves* when it runs and passes its check (if it has one); during
//!   an update a new one counts only once it has served for the policy's monitor time;
//! - a new replica that exits, fails its check or cannot start fails the update, which
//!   then goes back to the revision it came from by itself (a rollback, never rolled
//!   back again).
//!
//! Without an update this is the count rule: the highest indices (sick ones first) go
//! when there are too many, new indices are added when there are too few.

use cloudos_cluster::health::Health;
use cloudos_cluster::revision::{
    previous, Revision, ServiceDeployRequest, Update, UpdatePolicy, KEPT_REVISIONS,
};
use cloudos_cluster::workload::{ServiceCreateRequest, ServiceRecord, TaskInfo, TaskState};
use time::OffsetDateTime;

use super::{check_replicas, replica_id, replica_index, same_spec, Book, BookError, Effects};

/// How long a replica an update takes out of its service's rotation keeps running before
/// it is stopped: time for every node to apply the table without it and for the calls it
/// is answering to end.
pub const LEAVE_GRACE: time::Duration = time::Duration::seconds(2);

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    Created,
    /// An update from one revision to another started.
    Updating {
        from: u32,
        to: u32,
    },
    /// The spec is the one the service runs: only its count or policy changed, if anything.
    Unchanged,
}

/// A replica as one pass of [`Book::reconcile_service`] sees it.
#[derive(Debug)]
struct Replica {
    id: String,
    index: u32,
    /// It runs the service's spec.
    current: bool,
    /// Running, passing its check if it has one, not leaving.
    serving: bool,
    /// Serving, and (a new replica during an update) for the monitor time already.
    settled: bool,
    /// Its check does not pass.
    sick: bool,
    leaving: Option<OffsetDateTime>,
}

impl Book {
    /// `cloudos deploy`: makes the service, or updates it to the request's spec (a new
    /// revision, whose replicas replace the old ones as the policy allows). The spec it
    /// runs already changes only the count and policy: deploying again is harmless.
    pub fn deploy(
        &mut self,
        name: &str,
        request: ServiceDeployRequest,
        now: OffsetDateTime,
    ) -> Result<(Deployed, Effects), BookError> {
        if !self.services.contains_key(name) {
            let create = ServiceCreateRequest {
                name: name.to_owned(),
                spec: request.spec,
                replicas: request.replicas.unwrap_or(1),
                request_id: request.request_id,
            };
            let policy = UpdatePolicy::default().with(&request.policy);
            policy
                .validate()
                .map_err(|e| BookError::Policy(format!("service {name}: {e}")))?;
            let effects = self.make_service(create, policy, now)?;
            return Ok((Deployed::Created, effects));
        }
        if let Some(replicas) = request.replicas {
            check_replicas(replicas)?;
        }
        self.check_published(name, &request.spec)?;
        let Some(record) = self.services.get_mut(name) else {
            return Err(BookError::NoService(name.to_owned()));
        };
        // The change is judged by the policy it leaves, not by itself: `--max-unavailable
        // 0` on a service made with `--max-surge 0` would leave one that never moves.
        let policy = record.policy.with(&request.policy);
        policy
            .validate()
            .map_err(|e| BookError::Policy(format!("service {name}: {e}")))?;
        let before = record.clone();
        record.replicas = request.replicas.unwrap_or(record.replicas);
        record.policy = policy;
        let deployed = if same_spec(&record.spec, &request.spec) {
            Deployed::Unchanged
        } else {
            let from = record.revision;
            let to = new_revision(record, request.spec, "deploy".into(), false, now);
            Deployed::Updating { from, to }
        };
        let mut effects = Effects::default();
        if *record != before {
            effects.save_services.push(record.clone());
        }
        effects.merge(self.reconcile_service(name, now));
        Ok((deployed, effects))
    }

    /// `cloudos rollback`: an update to a new revision with the spec of revision `to`, or
    /// (`None`) of the newest earlier revision that did not fail. Returns the new revision.
    pub fn roll_back(
        &mut self,
        name: &str,
        to: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<(u32, Effects), BookError> {
        let record = self
            .services
            .get_mut(name)
            .ok_or_else(|| BookError::NoService(name.to_owned()))?;
        let target = match to {
            Some(number) => record
                .revisions
                .iter()
                .find(|r| r.number == number)
                .ok_or_else(|| BookError::NoRevision {
                    service: name.to_owned(),
                    number,
                    kept: kept(record),
                })?,
            None => previous(&record.revisions, record.revision).ok_or_else(|| {
                BookError::NothingToRollBack {
                    service: name.to_owned(),
                }
            })?,
        };
        if same_spec(&target.spec, &record.spec) {
            return Err(BookError::RunsThatSpec {
                service: name.to_owned(),
                number: target.number,
                current: record.revision,
            });
        }
        let (number, spec) = (target.number, target.spec.clone());
        let cause = format!("rollback to revision {number}");
        let to = new_revision(record, spec, cause, true, now);
        let mut effects = Effects {
            save_services: vec![record.clone()],
            ..Effects::default()
        };
        effects.merge(self.reconcile_service(name, now));
        Ok((to, effects))
    }

    /// One step of service `name` towards its record (the rules are the module's).
    pub(super) fn reconcile_service(&mut self, name: &str, now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        if let Some((failed, why)) = self.services.get(name).and_then(|s| self.update_failure(s)) {
            effects.merge(self.fail_update(name, &why, now));
            // It exits or fails its check again and again: it goes now, not in turn.
            effects.merge(self.remove_task(&failed));
        }
        let Some(s) = self.services.get(name).cloned() else {
            return effects;
        };
        effects.merge(self.relabel(&s));
        let mut replicas = self.replicas(&s, now);

        // Leaving replicas whose grace is over are stopped.
        let gone: Vec<String> = replicas
            .iter()
            .filter(|r| r.leaving.is_some_and(|since| since + LEAVE_GRACE <= now))
            .map(|r| r.id.clone())
            .collect();
        for id in &gone {
            effects.merge(self.remove_task(id));
        }
        replicas.retain(|r| !gone.contains(&r.id));

        // Too many current replicas (scaled down): the sick ones, then the highest.
        let wanted = s.replicas as usize;
        let mut current: Vec<&Replica> = replicas.iter().filter(|r| r.current).collect();
        current.sort_by_key(|r| (r.sick, r.index));
        let extra: Vec<String> = current.iter().skip(wanted).map(|r| r.id.clone()).collect();
        for id in &extra {
            effects.merge(self.remove_task(id));
        }
        replicas.retain(|r| !extra.contains(&r.id));

        // Old replicas: those serving nobody go at once, the others leave one by one while
        // enough others serve.
        let idle: Vec<String> = replicas
            .iter()
            .filter(|r| !r.current && !r.serving && r.leaving.is_none())
            .map(|r| r.id.clone())
            .collect();
        for id in &idle {
            effects.merge(self.remove_task(id));
        }
        replicas.retain(|r| !idle.contains(&r.id));
        let floor = wanted.saturating_sub(s.policy.max_unavailable as usize);
        let mut serving = replicas
            .iter()
            .filter(|r| (r.current && r.settled) || (!r.current && r.serving))
            .count();
        let mut old: Vec<&Replica> = replicas
            .iter()
            .filter(|r| !r.current && r.serving)
            .collect();
        old.sort_by_key(|r| std::cmp::Reverse(r.index));
        for r in old {
            if serving <= floor {
                break;
            }
            serving -= 1;
            if let Some(t) = self.tasks.get_mut(&r.id) {
                t.leaving_since = Some(now);
                t.reason = Some(format!(
                    "leaving: replaced by revision {} of the service",
                    s.revision
                ));
                effects.save_tasks.push(t.clone());
            }
        }

        // New replicas, within the surge while old ones remain.
        let current = replicas.iter().filter(|r| r.current).count();
        let updating = replicas.iter().any(|r| !r.current);
        let room = wanted
            + if updating {
                s.policy.max_surge as usize
            } else {
                0
            };
        let mut total = replicas.len();
        let mut added = current;
        while added < wanted && total < room {
            effects.merge(self.add_replica(&s, now));
            added += 1;
            total += 1;
        }

        // The update is over when the count runs the new spec, every replica settled.
        let settled = replicas.iter().filter(|r| r.current && r.settled).count();
        if s.update.is_some() && !updating && current == wanted && settled == wanted {
            if let Some(record) = self.services.get_mut(name) {
                let update = record.update.take();
                log::info!(
                    "service {name} runs revision {} on all {} replicas{}",
                    record.revision,
                    record.replicas,
                    update
                        .filter(|u| u.rollback)
                        .map(|u| format!(" (rolled back from revision {})", u.from))
                        .unwrap_or_default()
                );
                effects.save_services.push(record.clone());
            }
        }
        effects
    }

    /// The replicas of `s` (without a drain's replacements), as this pass sees them.
    fn replicas(&self, s: &ServiceRecord, now: OffsetDateTime) -> Vec<Replica> {
        let monitor = time::Duration::seconds(i64::try_from(s.policy.monitor_secs).unwrap_or(0));
        self.tasks
            .values()
            .filter(|t| t.service.as_deref() == Some(s.name.as_str()))
            .filter(|t| !self.surges.contains_key(&t.id))
            .map(|t| {
                let current = t.spec == s.spec;
                let serving = t.state == TaskState::Running
                    && t.health.is_none_or(|h| h.serves())
                    && t.leaving_since.is_none();
                // During an update a new replica counts once it has served a while: one
                // that exits in its first seconds must not cost an old one its place.
                let new = s
                    .update
                    .as_ref()
                    .is_some_and(|u| current && t.created_at >= u.started_at);
                let settled = serving
                    && (!new || t.started_at.is_some_and(|started| started + monitor <= now));
                Replica {
                    id: t.id.clone(),
                    index: replica_index(&s.name, &t.id).unwrap_or(u32::MAX),
                    current,
                    serving,
                    settled,
                    sick: t.health.is_some_and(|h| !h.serves()),
                    leaving: t.leaving_since,
                }
            })
            .collect()
    }

    /// A new replica of `s`'s spec, queued.
    fn add_replica(&mut self, s: &ServiceRecord, now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        let index = self.new_replica_index(&s.name, &mut effects);
        let id = replica_id(&s.name, index);
        let mut task = TaskInfo::queued(id.clone(), s.spec.clone(), Some(s.name.clone()), 0, now);
        task.revision = Some(s.revision);
        self.queue.push_back(id.clone());
        self.tasks.insert(id, task.clone());
        effects.save_tasks.push(task);
        effects
    }

    /// The index of a new replica of `service`: one no replica of it had before (the
    /// record counts them; a record from before the count starts above every index held).
    /// The record is saved with the change.
    pub(super) fn new_replica_index(&mut self, service: &str, effects: &mut Effects) -> u32 {
        let held = self
            .tasks
            .values()
            .filter(|t| t.service.as_deref() == Some(service))
            .filter_map(|t| replica_index(service, &t.id))
            .max()
            .map_or(0, |m| m.saturating_add(1));
        let Some(record) = self.services.get_mut(service) else {
            return held;
        };
        let index = record.next_index.max(held);
        record.next_index = index.saturating_add(1);
        effects.save_services.retain(|r| r.name != service);
        effects.save_services.push(record.clone());
        index
    }

    /// Replicas that run the service's spec under another revision number are the
    /// current revision's: after a rollback the replicas of the old spec that never left
    /// run it, and those leaving, not stopped yet, stay.
    fn relabel(&mut self, s: &ServiceRecord) -> Effects {
        let mut effects = Effects::default();
        for t in self.tasks.values_mut() {
            if t.service.as_deref() != Some(s.name.as_str()) || t.spec != s.spec {
                continue;
            }
            let stays = t.leaving_since.take().is_some();
            if stays {
                t.reason = None;
            }
            if stays || t.revision != Some(s.revision) {
                t.revision = Some(s.revision);
                effects.save_tasks.push(t.clone());
            }
        }
        effects
    }

    /// The new replica that fails the update of `s` under way, and why, if one does. A
    /// rollback is never judged: there is nothing further back to go to.
    fn update_failure(&self, s: &ServiceRecord) -> Option<(String, String)> {
        let update = s.update.as_ref().filter(|u| !u.rollback)?;
        self.tasks
            .values()
            .filter(|t| t.service.as_deref() == Some(s.name.as_str()))
            .filter(|t| t.spec == s.spec && t.created_at >= update.started_at)
            .find_map(|t| {
                let what = if t.state.is_final() {
                    format!(
                        "ended {}",
                        t.reason.as_deref().unwrap_or("without a reason")
                    )
                } else if t.health == Some(Health::Unhealthy) {
                    "failed its health check".to_owned()
                } else if t.restarts > 0 || t.exit_code.is_some() || t.signal.is_some() {
                    let why = t.reason.as_deref().unwrap_or("it exited");
                    why.strip_prefix("last exit: ").unwrap_or(why).to_owned()
                } else {
                    return None;
                };
                let why = format!("replica {} of revision {}: {what}", t.id, update.to);
                Some((t.id.clone(), why))
            })
    }

    /// The update of `name` failed (`why`): its revision is marked failed and an update
    /// back to the spec it came from starts.
    fn fail_update(&mut self, name: &str, why: &str, now: OffsetDateTime) -> Effects {
        let Some(record) = self.services.get_mut(name) else {
            return Effects::default();
        };
        let Some(update) = record.update.clone() else {
            return Effects::default();
        };
        if let Some(r) = record.revisions.iter_mut().find(|r| r.number == update.to) {
            r.failed = Some(why.to_owned());
        }
        let back = record
            .revisions
            .iter()
            .find(|r| r.number == update.from)
            .map(|r| r.spec.clone());
        match back {
            Some(spec) => {
                log::warn!(
                    "service {name}: the update to revision {} failed ({why}); going back to \
                     revision {}",
                    update.to,
                    update.from
                );
                let cause = format!("automatic rollback to revision {}: {why}", update.from);
                new_revision(record, spec, cause, true, now);
            }
            None => {
                // The revision it came from is no longer kept: nothing to go back to, so
                // the update stays, judged no more.
                log::warn!("service {name}: the update to revision {} failed ({why}); revision {} is no longer kept to go back to", update.to, update.from);
                record.update = Some(Update {
                    rollback: true,
                    ..update
                });
            }
        }
        Effects {
            save_services: vec![record.clone()],
            ..Effects::default()
        }
    }
}

/// Makes `spec` the service's new revision and starts the update to it: returns its
/// number. The oldest revisions beyond [`KEPT_REVISIONS`] are forgotten.
fn new_revision(
    record: &mut ServiceRecord,
    spec: cloudos_cluster::workload::WorkloadSpec,
    cause: String,
    rollback: bool,
    now: OffsetDateTime,
) -> u32 {
    let number = record
        .revisions
        .iter()
        .map(|r| r.number)
        .max()
        .unwrap_or(0)
        .max(record.revision)
        + 1;
    record.revisions.push(Revision {
        number,
        spec: spec.clone(),
        created_at: now,
        cause,
        failed: None,
    });
    let excess = record.revisions.len().saturating_sub(KEPT_REVISIONS);
    record.revisions.drain(..excess);
    record.update = Some(Update {
        from: record.revision,
        to: number,
        started_at: now,
        rollback,
    });
    record.revision = number;
    record.spec = spec;
    number
}

/// The revision numbers a service keeps, in words.
fn kept(record: &ServiceRecord) -> String {
    let numbers: Vec<String> = record
        .revisions
        .iter()
        .map(|r| r.number.to_string())
        .collect();
    numbers.join(", ")
}

/// A record from before revisions (or a new one): its spec is revision 1.
pub(super) fn first_revision(record: &mut ServiceRecord) {
    if record.revisions.is_empty() {
        record.revision = record.revision.max(1);
        record.revisions.push(Revision {
            number: record.revision,
            spec: record.spec.clone(),
            created_at: record.created_at,
            cause: "created".into(),
            failed: None,
        });
    }
}

#[cfg(test)]
mod tests;
