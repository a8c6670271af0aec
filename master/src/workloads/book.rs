//! The master's book of tasks, services and their runs: pure bookkeeping with no I/O.
//! Every change returns the [`Effects`] it needs (records to save or delete, messages to
//! nodes), which `workloads::Workloads` carries out; that keeps every rule here testable
//! with plain values.
//!
//! Rules, in one place:
//! - a task waits in a FIFO queue until the scheduler places it; placing it starts a new
//!   *run* `<task>.<attempt>` on that node;
//! - a run whose node goes NotReady (or is removed) is lost: a task with retries left is
//!   queued again (avoiding that node), otherwise it ends `lost`; a service replica is always
//!   queued again, which is how a replica moves when its node dies;
//! - a service has as many replicas as asked, counted without the replacements a drain
//!   starts (`drain`): each runs beside the replica it replaces until it runs itself, then
//!   the replica on the drained node is removed; scaling down removes the highest indices;
//! - a new spec deployed on a service is a new revision, which replaces its replicas a few
//!   at a time and goes back by itself if they fail (`update`);
//! - reports about any run other than a task's current one are stale and answered with Stop;
//! - final states never change again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::health::Health;
use cloudos_cluster::revision::UpdatePolicy;
use cloudos_cluster::units::format_bytes;
use cloudos_cluster::volume::VolumeRecord;
use cloudos_cluster::workload::{
    Protocol, PullProgress, RunAssignment, RunReport, RunState, ServiceCreateRequest, ServiceInfo,
    ServiceRecord, TaskCreateRequest, TaskInfo, TaskState, WorkloadList, WorkloadSpec,
};
use cloudos_scheduler::{HostPort, NodeView, PortProtocol, Request, Resources, Scheduler};
use time::OffsetDateTime;

/// What a change asks the outside world to do.
#[derive(Debug, Default)]
pub struct Effects {
    pub save_tasks: Vec<TaskInfo>,
    pub delete_tasks: Vec<String>,
    pub save_services: Vec<ServiceRecord>,
    pub delete_services: Vec<String>,
    pub save_volumes: Vec<VolumeRecord>,
    pub delete_volumes: Vec<String>,
    /// `(node, message)` for the node's agent connection.
    pub messages: Vec<(String, MasterMessage)>,
}

impl Effects {
    pub fn merge(&mut self, other: Effects) {
        self.save_tasks.extend(other.save_tasks);
        self.delete_tasks.extend(other.delete_tasks);
        // A record changed twice in one change is saved once, as it is last.
        for record in other.save_services {
            self.save_services.retain(|r| r.name != record.name);
            self.save_services.push(record);
        }
        self.delete_services.extend(other.delete_services);
        self.save_volumes.extend(other.save_volumes);
        self.delete_volumes.extend(other.delete_volumes);
        self.messages.extend(other.messages);
    }

    pub fn is_empty(&self) -> bool {
        !self.writes_store() && self.messages.is_empty()
    }

    /// Whether the change has records to save or delete. Every change of what the service
    /// table is made of (services, replicas' states and addresses) has.
    pub fn writes_store(&self) -> bool {
        !(self.save_tasks.is_empty()
            && self.delete_tasks.is_empty()
            && self.save_services.is_empty()
            && self.delete_services.is_empty()
            && self.save_volumes.is_empty()
            && self.delete_volumes.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("no task {0}; `cloudos ps` lists them")]
    NoTask(String),
    #[error("no service {0}; `cloudos ps` lists them")]
    NoService(String),
    #[error("a service named {0} exists already; scale it or delete it first")]
    ServiceExists(String),
    #[error("{id} is a replica of service {service}: scale or delete the service instead")]
    IsReplica { id: String, service: String },
    #[error("replicas must be between 0 and {max}, not {given}")]
    Replicas { given: u32, max: u32 },
    #[error("every address of the service range {range} is a service's; delete services or give the master a larger service_range")]
    NoServiceAddress { range: ipnet::Ipv4Net },
    #[error("host port {port} is published by service {service} already, on every node (the routing mesh); choose another host port")]
    PortPublished { port: String, service: String },
    #[error("request id {id} made {made} with another spec; a new request needs a new id")]
    RequestReused { id: String, made: String },
    #[error("service {service} keeps no revision {number}; it keeps {kept} (`cloudos history {service}`)")]
    NoRevision {
        service: String,
        number: u32,
        kept: String,
    },
    #[error(
        "service {service} has no earlier revision to go back to (`cloudos history {service}`)"
    )]
    NothingToRollBack { service: String },
    #[error("no volume {0}; `cloudos volume list` lists them")]
    NoVolume(String),
    #[error("volume {name} is in use by {users}; remove or change those first")]
    VolumeInUse { name: String, users: String },
    #[error("volume {name} is on node {node}, which is not connected: remove it once the node is back (its data is there), or remove the node")]
    VolumeNodeAway { name: String, node: String },
    #[error("service {service} runs the spec of revision {number} already (revision {current})")]
    RunsThatSpec {
        service: String,
        number: u32,
        current: u32,
    },
    /// The update policy a change would leave the service with cannot move.
    #[error("{0}")]
    Policy(String),
    /// A volume's name or size limit is not one.
    #[error("{0}")]
    BadVolume(String),
}

/// A node as the book needs it: the scheduler's view without the allocations, which the
/// book adds from the runs it knows.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub arch: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Cordoned: no new work goes there.
    pub cordoned: bool,
    pub capacity: Resources,
}

/// `Clone`: a change is tried on the book and undone by putting the copy back when the
/// store refuses to record it (see `workloads::commit`).
#[derive(Debug, Default, Clone)]
pub struct Book {
    tasks: BTreeMap<String, TaskInfo>,
    services: BTreeMap<String, ServiceRecord>,
    /// Queued task ids, oldest first.
    queue: VecDeque<String>,
    /// Nodes each task should not go back to (where its runs were lost).
    avoid: BTreeMap<String, Vec<String>>,
    /// Replacements a drain started, by their id (see `drain`). In memory only: after a
    /// master restart a replacement is one replica too many and, having the highest
    /// index, is the one the count rule of [`Book::reconcile_services`] removes.
    surges: BTreeMap<String, drain::Surge>,
    /// Where services' virtual addresses come from (`None`: services get none).
    service_range: Option<ipnet::Ipv4Net>,
    /// Named volumes by name: the node each is on (`volumes`).
    volumes: BTreeMap<String, VolumeRecord>,
    /// The next replica index of each service deleted since the master started: a service
    /// made again under its name goes on from there, so the last reports of the deleted
    /// one's runs (`web-r0.1` stopped) are never taken for the new one's. In memory: those
    /// reports come within seconds, and a node reports its ended runs in its hello, before
    /// any new run is placed on it.
    retired: BTreeMap<String, u32>,
}

/// The node ports a spec publishes, as the scheduler counts them.
fn host_ports(spec: &WorkloadSpec) -> Vec<HostPort> {
    spec.publish
        .iter()
        .map(|p| HostPort {
            protocol: match p.protocol {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
            },
            port: p.host,
        })
        .collect()
}

fn is_active(t: &TaskInfo) -> bool {
    matches!(t.state, TaskState::Pulling | TaskState::Running)
}

/// What a report may change that is kept (and, for services, routed): a change of any of
/// it is saved.
fn shown_state(
    task: &TaskInfo,
) -> (
    TaskState,
    u32,
    Option<String>,
    Option<std::net::Ipv4Addr>,
    Option<Health>,
) {
    (
        task.state,
        task.restarts,
        task.reason.clone(),
        task.address,
        task.health,
    )
}

/// Ends a task that has not ended (a cancel, a deadline): its run, if one is under way, is
/// told to stop on its node, and the end is stored. The caller takes it out of the queue.
fn end(
    task: &mut TaskInfo,
    state: TaskState,
    why: String,
    now: OffsetDateTime,
    effects: &mut Effects,
) {
    if let (true, Some(node), Some(run)) = (is_active(task), &task.node, &task.run) {
        effects
            .messages
            .push((node.clone(), MasterMessage::Stop { run: run.clone() }));
    }
    task.address = None;
    task.state = state;
    task.reason = Some(why);
    task.finished_at = Some(now);
    task.pull = None;
    effects.save_tasks.push(task.clone());
}

/// `t-1a2b3c4d5e.2` → `t-1a2b3c4d5e`.
pub fn task_of_run(run: &str) -> &str {
    run.rsplit_once('.').map(|(task, _)| task).unwrap_or(run)
}

fn replica_id(service: &str, index: u32) -> String {
    format!("{service}-r{index}")
}

fn replica_index(service: &str, id: &str) -> Option<u32> {
    id.strip_prefix(service)?.strip_prefix("-r")?.parse().ok()
}

impl Book {
    /// The book as stored: queued tasks queue again in the order they were created.
    pub fn load(tasks: Vec<TaskInfo>, services: Vec<ServiceRecord>) -> Self {
        let mut queued: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| t.state == TaskState::Queued)
            .collect();
        queued.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let queue = queued.iter().map(|t| t.id.clone()).collect();
        let mut services = services;
        services.iter_mut().for_each(update::first_revision);
        Book {
            queue,
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            avoid: BTreeMap::new(),
            surges: BTreeMap::new(),
            service_range: None,
            retired: BTreeMap::new(),
            volumes: BTreeMap::new(),
        }
    }

    pub fn task(&self, id: &str) -> Option<&TaskInfo> {
        self.tasks.get(id)
    }

    /// Task `id` as the API shows it: with its place in the queue while it waits.
    pub fn shown(&self, id: &str) -> Option<TaskInfo> {
        self.tasks.get(id).map(|t| self.with_position(t.clone()))
    }

    fn with_position(&self, mut task: TaskInfo) -> TaskInfo {
        task.queue_position = match task.state {
            TaskState::Queued => self
                .queue
                .iter()
                .position(|q| *q == task.id)
                .and_then(|i| u32::try_from(i + 1).ok()),
            _ => None,
        };
        task
    }

    /// Every task and replica, in id order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskInfo> {
        self.tasks.values()
    }

    /// Deletes finished tasks (the retention sweep); others in `ids` are left alone.
    pub fn forget_finished(&mut self, ids: &[String]) -> Effects {
        let mut effects = Effects::default();
        for id in ids {
            if self.tasks.get(id).is_some_and(|t| t.state.is_final()) {
                self.tasks.remove(id);
                self.avoid.remove(id);
                effects.delete_tasks.push(id.clone());
            }
        }
        effects
    }

    /// What uses what `uses` picks in a spec: tasks and replicas that have not ended, by
    /// id, and services (`service NAME`), whose next replica would.
    pub(super) fn spec_users(&self, uses: impl Fn(&WorkloadSpec) -> bool) -> Vec<String> {
        let mut users: Vec<String> = self
            .tasks
            .values()
            .filter(|t| !t.state.is_final() && uses(&t.spec))
            .map(|t| t.id.clone())
            .collect();
        users.extend(
            self.services
                .values()
                .filter(|s| uses(&s.spec))
                .map(|s| format!("service {}", s.name)),
        );
        users
    }

    /// What uses secret `name` (see [`Book::spec_users`]).
    pub fn secret_users(&self, name: &str) -> Vec<String> {
        self.spec_users(|spec| spec.secret_names().contains(&name))
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// What `cloudos ps` shows: tasks (not replicas) newest first, then services.
    pub fn workloads(&self) -> WorkloadList {
        let mut tasks: Vec<TaskInfo> = self
            .tasks
            .values()
            .filter(|t| t.service.is_none())
            .map(|t| self.with_position(t.clone()))
            .collect();
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let services = self
            .services
            .keys()
            .filter_map(|name| self.service(name))
            .collect();
        WorkloadList {
            tasks,
            services,
            retention: None,
        }
    }

    pub fn service(&self, name: &str) -> Option<ServiceInfo> {
        let record = self.services.get(name)?;
        let mut instances: Vec<TaskInfo> = self
            .tasks
            .values()
            .filter(|t| t.service.as_deref() == Some(name))
            .map(|t| self.with_position(t.clone()))
            .collect();
        instances.sort_by_key(|t| replica_index(name, &t.id).unwrap_or(u32::MAX));
        Some(ServiceInfo {
            name: record.name.clone(),
            spec: record.spec.clone(),
            address: record.address,
            replicas: record.replicas,
            running: instances
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .count() as u32,
            instances,
            created_at: record.created_at,
            revision: record.revision,
            revisions: record.revisions.clone(),
            policy: record.policy,
            update: record.update.clone(),
        })
    }

    /// A new task, queued. The spec was validated by the caller. A request whose id made a
    /// task already gets that task back, unchanged, and nothing new is made; the same id
    /// with another spec is refused.
    pub fn create_task(
        &mut self,
        id: String,
        request: TaskCreateRequest,
        now: OffsetDateTime,
    ) -> Result<(TaskInfo, Effects), BookError> {
        if let Some(made) = self.task_of_request(request.request_id.as_deref()) {
            let same = same_spec(&made.spec, &request.spec)
                && made.retries == request.retries
                && made.timeout_secs == request.timeout_secs;
            if !same {
                return Err(BookError::RequestReused {
                    id: request.request_id.unwrap_or_default(),
                    made: format!("task {}", made.id),
                });
            }
            let made = made.clone();
            return Ok((self.with_position(made), Effects::default()));
        }
        let mut task = TaskInfo::queued(id, request.spec, None, request.retries, now);
        task.request_id = request.request_id;
        task.timeout_secs = request.timeout_secs;
        self.queue.push_back(task.id.clone());
        self.tasks.insert(task.id.clone(), task.clone());
        let effects = Effects {
            save_tasks: vec![task.clone()],
            ..Effects::default()
        };
        Ok((self.with_position(task), effects))
    }

    /// Stops every task past its deadline (`--timeout`, counted from its first start): it
    /// fails with that reason, and its run, if any, is stopped on its node. A retry still
    /// queued when the deadline passes fails too: the deadline is the task's, not a run's.
    pub fn deadlines(&mut self, now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        for task in self.tasks.values_mut() {
            let (Some(secs), Some(started)) = (task.timeout_secs, task.started_at) else {
                continue;
            };
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            if task.state.is_final() || now < started + time::Duration::seconds(secs) {
                continue;
            }
            let why = format!(
                "stopped at its deadline: it ran for its --timeout of {}",
                cloudos_cluster::units::format_duration(task.timeout_secs.unwrap_or(0))
            );
            end(task, TaskState::Failed, why, now, &mut effects);
        }
        let ended: Vec<String> = effects.save_tasks.iter().map(|t| t.id.clone()).collect();
        self.queue.retain(|q| !ended.contains(q));
        effects
    }

    /// The task request `id` made, while the book keeps it (finished tasks stay for the
    /// retention's time: far longer than any retry). Tasks are few enough (the retention
    /// bounds them) that a search beats keeping an index in step.
    fn task_of_request(&self, id: Option<&str>) -> Option<&TaskInfo> {
        let id = id?;
        self.tasks
            .values()
            .find(|t| t.service.is_none() && t.request_id.as_deref() == Some(id))
    }

    /// Cancels a task: queued ones simply end, running ones are stopped on their node.
    pub fn cancel(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<(TaskInfo, Effects), BookError> {
        let task = self
            .tasks
            .get_mut(id)
            .ok_or_else(|| BookError::NoTask(id.to_owned()))?;
        if let Some(service) = &task.service {
            return Err(BookError::IsReplica {
                id: id.to_owned(),
                service: service.clone(),
            });
        }
        let mut effects = Effects::default();
        if task.state.is_final() {
            return Ok((task.clone(), effects));
        }
        end(
            task,
            TaskState::Cancelled,
            "cancelled".into(),
            now,
            &mut effects,
        );
        let task = task.clone();
        self.queue.retain(|q| q != id);
        Ok((task, effects))
    }

    pub fn create_service(
        &mut self,
        request: ServiceCreateRequest,
        now: OffsetDateTime,
    ) -> Result<Effects, BookError> {
        self.make_service(request, UpdatePolicy::default(), now)
    }

    /// A new service, its spec revision 1, updated by `policy` when it is deployed again.
    fn make_service(
        &mut self,
        request: ServiceCreateRequest,
        policy: UpdatePolicy,
        now: OffsetDateTime,
    ) -> Result<Effects, BookError> {
        if let Some(made) = self.services.get(&request.name) {
            // The retry of the request that made it: nothing more to do.
            let retry = request.request_id.is_some() && made.request_id == request.request_id;
            if retry && same_spec(&made.spec, &request.spec) {
                return Ok(Effects::default());
            }
            return Err(BookError::ServiceExists(request.name));
        }
        check_replicas(request.replicas)?;
        self.check_published(&request.name, &request.spec)?;
        let address = match self.service_range {
            Some(range) => Some(self.free_service_address(range)?),
            None => None,
        };
        let mut record = ServiceRecord {
            name: request.name.clone(),
            spec: request.spec,
            replicas: request.replicas,
            created_at: now,
            address,
            request_id: request.request_id,
            revision: 1,
            revisions: Vec::new(),
            policy,
            update: None,
            next_index: self.retired.remove(&request.name).unwrap_or(0),
        };
        update::first_revision(&mut record);
        self.services.insert(record.name.clone(), record.clone());
        let mut effects = Effects {
            save_services: vec![record],
            ..Effects::default()
        };
        effects.merge(self.reconcile_services(now));
        Ok(effects)
    }

    pub fn scale(
        &mut self,
        name: &str,
        replicas: u32,
        now: OffsetDateTime,
    ) -> Result<Effects, BookError> {
        check_replicas(replicas)?;
        let record = self
            .services
            .get_mut(name)
            .ok_or_else(|| BookError::NoService(name.to_owned()))?;
        record.replicas = replicas;
        let mut effects = Effects {
            save_services: vec![record.clone()],
            ..Effects::default()
        };
        effects.merge(self.reconcile_services(now));
        Ok(effects)
    }

    pub fn delete_service(
        &mut self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Effects, BookError> {
        let mut scratch = Effects::default();
        let next = self.new_replica_index(name, &mut scratch);
        self.services
            .remove(name)
            .ok_or_else(|| BookError::NoService(name.to_owned()))?;
        self.retired.insert(name.to_owned(), next);
        let mut effects = self.remove_replicas(name);
        effects.delete_services.push(name.to_owned());
        let _ = now;
        Ok(effects)
    }

    /// Removes every replica of `service`, stopping their runs.
    fn remove_replicas(&mut self, service: &str) -> Effects {
        let mut effects = Effects::default();
        let doomed: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.service.as_deref() == Some(service))
            .map(|t| t.id.clone())
            .collect();
        for id in doomed {
            effects.merge(self.remove_task(&id));
        }
        effects
    }

    /// Removes a task or replica (stopping its run) and the drain replacement of it, if
    /// one is under way.
    fn remove_task(&mut self, id: &str) -> Effects {
        let mut effects = Effects::default();
        if let Some(t) = self.tasks.remove(id) {
            if let (true, Some(node), Some(run)) = (is_active(&t), t.node, t.run) {
                effects.messages.push((node, MasterMessage::Stop { run }));
            }
            effects.delete_tasks.push(id.to_owned());
        }
        self.queue.retain(|q| q != id);
        self.avoid.remove(id);
        self.surges.remove(id);
        for new in self.surge_ids(|s| s.replaces == id) {
            effects.merge(self.remove_task(&new));
        }
        effects
    }

    /// Brings every service one step closer to its record: as many replicas as asked
    /// (not counting a drain's replacements), all of its current revision
    /// ([`update`]'s rules).
    pub fn reconcile_services(&mut self, now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            effects.merge(self.reconcile_service(&name, now));
        }
        effects
    }

    /// Runs on nodes that `alive(node, is_replica)` gives up on are lost.
    pub fn nodes_lost(
        &mut self,
        alive: &dyn Fn(&str, bool) -> bool,
        now: OffsetDateTime,
    ) -> Effects {
        let mut effects = Effects::default();
        let lost: Vec<(String, String)> = self
            .tasks
            .values()
            .filter(|t| is_active(t))
            .filter_map(|t| {
                let node = t.node.as_deref()?;
                let why = format!(
                    "node {node} stopped answering while {} ran there",
                    t.run.as_deref().unwrap_or("it")
                );
                (!alive(node, t.service.is_some())).then(|| (t.id.clone(), why))
            })
            .collect();
        for (id, why) in lost {
            if let Some(task) = self.lose_run(&id, why, now) {
                effects.save_tasks.push(task);
            }
        }
        effects
    }

    /// Gives up the current run of `id` on its node (the node is lost, or a drain stopped
    /// it): a replica, or a task with retries left, queues again and avoids that node; any
    /// other task ends `lost` with `why`. The task as it is now, `None` if unknown.
    fn lose_run(&mut self, id: &str, why: String, now: OffsetDateTime) -> Option<TaskInfo> {
        let task = self.tasks.get_mut(id)?;
        let node = task.node.take().unwrap_or_default();
        self.avoid
            .entry(id.to_owned())
            .or_default()
            .push(node.clone());
        task.pull = None;
        task.address = None;
        if task.service.is_some() || task.attempts <= task.retries {
            task.state = TaskState::Queued;
            task.reason = Some(format!("{why}; queued again"));
            self.queue.push_back(id.to_owned());
        } else {
            task.state = TaskState::Lost;
            task.reason = Some(why);
            task.finished_at = Some(now);
            // Kept: if the node comes back with this run, its word wins (see `report`).
            task.node = Some(node);
        }
        Some(task.clone())
    }

    /// Places what it can of the queue; the rest keeps its reason for `cloudos ps`.
    pub fn schedule(
        &mut self,
        scheduler: &Scheduler,
        nodes: &[NodeFacts],
        now: OffsetDateTime,
    ) -> Effects {
        let mut effects = Effects::default();
        if self.queue.is_empty() {
            return effects;
        }
        let mut views: Vec<NodeView> = nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                arch: n.arch.clone(),
                labels: n.labels.clone(),
                ready: n.ready,
                cordoned: n.cordoned,
                capacity: n.capacity,
                allocated: Resources::default(),
                groups: BTreeMap::new(),
                ports: BTreeMap::new(),
            })
            .collect();
        let index: BTreeMap<String, usize> = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        for t in self.tasks.values().filter(|t| is_active(t)) {
            let Some(&i) = t.node.as_ref().and_then(|n| index.get(n)) else {
                continue;
            };
            let v = &mut views[i];
            v.allocated.cpu_millis += t.spec.resources.cpu_millicores;
            v.allocated.memory_bytes += t.spec.resources.memory_bytes;
            if let Some(s) = &t.service {
                *v.groups.entry(s.clone()).or_default() += 1;
            }
            for port in host_ports(&t.spec) {
                *v.ports.entry(port).or_default() += 1;
            }
        }
        // Work whose volumes are on a node goes there; work whose volumes are on two nodes
        // goes nowhere, and says why.
        let pins: BTreeMap<String, volumes::Pin> = self
            .queue
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| !t.spec.volumes.is_empty())
            .map(|t| (t.id.clone(), self.pin(&t.spec)))
            .collect();
        let mut requests: Vec<Request> = self
            .queue
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| !matches!(pins.get(&t.id), Some(volumes::Pin::Split(_))))
            .map(|t| Request {
                pinned: match pins.get(&t.id) {
                    Some(volumes::Pin::Node { node, .. }) => Some(node.clone()),
                    _ => None,
                },
                id: t.id.clone(),
                resources: Resources {
                    cpu_millis: t.spec.resources.cpu_millicores,
                    memory_bytes: t.spec.resources.memory_bytes,
                },
                archs: t.spec.platforms.clone(),
                node_selector: t.spec.node_selector.clone(),
                group: t.service.clone(),
                avoid: self.avoid.get(&t.id).cloned().unwrap_or_default(),
                ports: host_ports(&t.spec),
            })
            .collect();
        let outcome = scheduler.schedule_queue(&mut views, &mut requests);
        let placed: BTreeSet<String> = outcome.placed.iter().map(|(id, _)| id.clone()).collect();
        self.queue.retain(|id| !placed.contains(id));
        for (id, node) in outcome.placed {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.attempts += 1;
            let run = format!("{}.{}", task.id, task.attempts);
            task.state = TaskState::Pulling;
            task.node = Some(node.clone());
            task.run = Some(run.clone());
            task.reason = None;
            task.pull = Some(PullProgress::default());
            task.exit_code = None;
            task.signal = None;
            task.oom_killed = false;
            effects.save_tasks.push(task.clone());
            let task = task.clone();
            effects
                .save_volumes
                .extend(self.bind_volumes(&task, &node, now));
            let assignment = RunAssignment {
                registry_auth: None,
                run,
                volume_limits: self.volume_limits(&task.spec),
                spec: task.spec,
                restart: task.service.is_some(),
                secrets: Vec::new(),
            };
            effects
                .messages
                .push((node.clone(), MasterMessage::Assign(Box::new(assignment))));
        }
        let split = pins.iter().filter_map(|(id, pin)| match pin {
            volumes::Pin::Split(why) => Some((id.clone(), why.clone())),
            _ => None,
        });
        let waiting: Vec<(String, String)> = outcome
            .waiting
            .into_iter()
            .map(|(id, why)| {
                let why = why.to_string();
                let pinned = pins.get(&id).and_then(|pin| Book::pinned_reason(pin, &why));
                (id, pinned.unwrap_or(why))
            })
            .chain(split)
            .collect();
        for (id, reason) in waiting {
            if let Some(task) = self.tasks.get_mut(&id) {
                // Saved only when the reason changes: the queue is re-read every pass.
                if task.reason.as_deref() != Some(reason.as_str()) {
                    task.reason = Some(reason);
                    effects.save_tasks.push(task.clone());
                }
            }
        }
        effects
    }

    /// A node reports on one of its runs.
    pub fn report(&mut self, node: &str, report: &RunReport, now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        let id = task_of_run(&report.run);
        // A task judged lost with its node (silent too long, no retry left) is taken back
        // when that node reports the very run: it was never lost, only out of touch (its
        // master stalled, a link was down), and no other run of it exists to conflict.
        let current = self.tasks.get_mut(id).filter(|t| {
            t.run.as_deref() == Some(report.run.as_str())
                && t.node.as_deref() == Some(node)
                && (!t.state.is_final() || t.state == TaskState::Lost)
        });
        let Some(task) = current else {
            // A run the master has moved on from (cancelled, moved, scaled away).
            let restart = id.contains("-r");
            if !report.state.is_final(restart) {
                effects.messages.push((
                    node.to_owned(),
                    MasterMessage::Stop {
                        run: report.run.clone(),
                    },
                ));
            }
            return effects;
        };
        let before = shown_state(task);
        if task.state == TaskState::Lost {
            log::info!(
                "{node} reports run {} of task {} that was given up as lost: taken back",
                report.run,
                task.id
            );
            task.state = TaskState::Pulling;
            task.reason = None;
            task.finished_at = None;
        }
        match &report.state {
            RunState::Pulling { progress } => {
                // A late progress report must not take a running task back.
                if task.state == TaskState::Pulling {
                    task.pull = Some(*progress);
                }
            }
            RunState::Running {
                restarts,
                address,
                health,
                health_reason,
            } => {
                task.state = TaskState::Running;
                task.pull = None;
                task.restarts = *restarts;
                task.address = *address;
                task.health = *health;
                task.health_reason = health_reason.clone();
                task.started_at.get_or_insert(now);
            }
            RunState::Exited {
                code,
                signal,
                oom_killed,
                output_bytes,
            } => {
                task.exit_code = *code;
                task.signal = *signal;
                task.oom_killed = *oom_killed;
                task.pull = None;
                // Out of the services' rotation until it runs again.
                task.address = None;
                if output_bytes.is_some() {
                    task.output_bytes = *output_bytes;
                }
                // Stopped by its node for failing its check: that is the news, not the
                // signal it was stopped with.
                let why = match (task.health, task.health_reason.take()) {
                    (Some(Health::Unhealthy), Some(detail)) => {
                        format!("stopped by its node: its health check failed ({detail})")
                    }
                    (Some(Health::Unhealthy), None) => {
                        "stopped by its node: its health check failed".into()
                    }
                    _ => exit_reason(
                        *code,
                        *signal,
                        *oom_killed,
                        task.spec.resources.memory_bytes,
                    ),
                };
                if task.service.is_some() {
                    // The node restarts the replica itself, with backoff.
                    task.reason = Some(format!("last exit: {why}"));
                } else {
                    task.state = if *code == Some(0) {
                        TaskState::Succeeded
                    } else {
                        TaskState::Failed
                    };
                    task.reason = (*code != Some(0)).then_some(why);
                    task.finished_at = Some(now);
                }
            }
            RunState::Failed { reason } => {
                task.address = None;
                task.state = TaskState::Failed;
                task.reason = Some(reason.clone());
                task.pull = None;
                task.finished_at = Some(now);
            }
            RunState::Stopped => {
                task.address = None;
                task.state = TaskState::Cancelled;
                task.reason = Some("stopped on its node".into());
                task.finished_at = Some(now);
            }
        }
        if !matches!(report.state, RunState::Running { .. }) {
            // Health is a running container's: an exited one has none until it runs again.
            task.health = None;
        }
        if shown_state(task) != before || matches!(report.state, RunState::Exited { .. }) {
            effects.save_tasks.push(task.clone());
        }
        effects
    }

    /// A node (re)connected with the runs it has: apply what it says, stop what the master
    /// moved on from, and assign again what it should have but does not (it never got the
    /// assignment, or it restarted without its state).
    pub fn hello(&mut self, node: &str, runs: &[RunReport], now: OffsetDateTime) -> Effects {
        let mut effects = Effects::default();
        for report in runs {
            effects.merge(self.report(node, report, now));
        }
        let reported: BTreeSet<&str> = runs.iter().map(|r| r.run.as_str()).collect();
        for t in self.tasks.values() {
            if !is_active(t) || t.node.as_deref() != Some(node) {
                continue;
            }
            let Some(run) = &t.run else { continue };
            if !reported.contains(run.as_str()) {
                effects.messages.push((
                    node.to_owned(),
                    MasterMessage::Assign(Box::new(RunAssignment {
                        registry_auth: None,
                        volume_limits: self.volume_limits(&t.spec),
                        run: run.clone(),
                        spec: t.spec.clone(),
                        restart: t.service.is_some(),
                        secrets: Vec::new(),
                    })),
                ));
            }
        }
        effects
    }

    /// Of the runs `node` says it runs, those that are not the current run of a task on
    /// that node: each is to be stopped.
    pub fn stale_runs(&self, node: &str, runs: &[String]) -> Vec<String> {
        runs.iter()
            .filter(|run| {
                // A run of a task given up as lost on this node is left running: its next
                // report takes the task back (see `report`).
                !self.tasks.get(task_of_run(run)).is_some_and(|t| {
                    t.run.as_deref() == Some(run.as_str())
                        && t.node.as_deref() == Some(node)
                        && (!t.state.is_final() || t.state == TaskState::Lost)
                })
            })
            .cloned()
            .collect()
    }

    /// The runs on `node` that may still send output.
    pub fn active_runs_on(&self, node: &str) -> Vec<(String, String)> {
        self.tasks
            .values()
            .filter(|t| is_active(t) && t.node.as_deref() == Some(node))
            .filter_map(|t| Some((t.id.clone(), t.run.clone()?)))
            .collect()
    }

    /// Whether `run` is the current run of its task on `node` (uploads and logs check this).
    pub fn is_current_run(&self, node: &str, run: &str) -> bool {
        self.tasks
            .get(task_of_run(run))
            .is_some_and(|t| t.run.as_deref() == Some(run) && t.node.as_deref() == Some(node))
    }

    /// The `/output` archive of `run` is stored.
    pub fn output_stored(&mut self, run: &str, bytes: u64) -> Effects {
        let mut effects = Effects::default();
        if let Some(t) = self.tasks.get_mut(task_of_run(run)) {
            t.output_bytes = Some(bytes);
            effects.save_tasks.push(t.clone());
        }
        effects
    }
}

/// Whether a retried request asks for what the first one made: the platforms the master
/// read from the registry then may differ from those it reads now, and are not the
/// caller's.
fn same_spec(made: &WorkloadSpec, asked: &WorkloadSpec) -> bool {
    let mut made = made.clone();
    made.platforms = asked.platforms.clone();
    made == *asked
}

fn check_replicas(replicas: u32) -> Result<(), BookError> {
    use cloudos_cluster::workload::MAX_REPLICAS;
    if replicas > MAX_REPLICAS {
        return Err(BookError::Replicas {
            given: replicas,
            max: MAX_REPLICAS,
        });
    }
    Ok(())
}

/// How a container ended, in words.
pub fn exit_reason(code: Option<i32>, signal: Option<i32>, oom: bool, memory: u64) -> String {
    if oom {
        return format!(
            "out of memory: killed at its {} limit",
            format_bytes(memory)
        );
    }
    match (code, signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(0), None) => "exited with code 0".into(),
        (Some(127), None) => "exited with code 127 (command not found)".into(),
        (Some(c), None) => format!("exited with code {c}"),
        (None, None) => "ended without an exit status".into(),
    }
}

mod drain;
mod routing;
mod update;
mod volumes;

pub use drain::DrainPass;
pub use update::{Deployed, LEAVE_GRACE};

#[cfg(test)]
mod tests;
