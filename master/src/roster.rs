//! The nodes the master knows, in memory: each node's record plus its live state (last
//! heartbeat, telemetry, the runs it last said it runs, open connection). Heartbeats only touch this map; the store is
//! written on join, on state changes and periodically (see `health`), because thousands of
//! agents beat every second or two and a store transaction per beat would not keep up.
//!
//! Pure bookkeeping under one mutex: no I/O, no logging; callers log the [`Transition`]s
//! it returns and save what [`Roster::take_unsaved`] hands out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloudos_cluster::api::{AgentHello, NodeInfo, Telemetry};
use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::subnets::{ClusterRange, SubnetError};
use cloudos_store::{NodeRecord, NodeState};
use ipnet::Ipv4Net;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// What the master tells a node's connection task to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Send `Evicted`, then close.
    Evict { reason: String },
    /// Send this message (workload assignments and stops).
    Send(Box<cloudos_cluster::api::MasterMessage>),
}

/// Messages waiting for one node's connection; beyond this the node catches up through
/// the reconciliation of its next hello.
const CONTROL_QUEUE: usize = 256;

/// A node's open agent connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub control: mpsc::Sender<Control>,
}

/// Which of a node's (or admin's) accepted certificates a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialStatus {
    Current,
    /// The one the last renewal issued, used for the first time.
    Pending,
}

impl SerialStatus {
    /// `serial` against a record's current and pending serials.
    pub fn of(
        current: &CertSerial,
        pending: Option<&CertSerial>,
        serial: &CertSerial,
    ) -> Option<SerialStatus> {
        if serial == current {
            Some(SerialStatus::Current)
        } else if pending == Some(serial) {
            Some(SerialStatus::Pending)
        } else {
            None
        }
    }
}

/// A node changed between Ready and NotReady.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub name: String,
    pub to: NodeState,
    /// Why, for the log: `silent for 2.1s`, `connection closed`, `heartbeats arrive`.
    pub why: String,
}

/// Which records [`Roster::take_unsaved`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsaved {
    /// Nodes whose state changed: saved within a sweep period.
    StateChanges,
    /// Also nodes whose last-seen time or telemetry changed: saved periodically.
    All,
}

struct Entry {
    record: NodeRecord,
    telemetry: Option<Telemetry>,
    last_heartbeat: Instant,
    conn: Option<Conn>,
    /// The runs the node's last heartbeat listed, and when it arrived (a drain waits for
    /// the node itself to say it runs nothing).
    runs: Vec<String>,
    runs_at: Option<Instant>,
    /// Last seen or telemetry changed since the store last saw them.
    dirty: bool,
    /// Ready/NotReady changed since the store last saw it.
    changed: bool,
    /// The node's end of the mesh, from its last hello: kept in memory only, since every
    /// node says it again when it reconnects to a master that restarted.
    mesh: Option<MeshEnd>,
    /// Heard from (a connection, a heartbeat) since this master started leading.
    heard: bool,
}

/// A node's end of the mesh: what its hello said and where its connection came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshEnd {
    pub public_key: String,
    pub port: u16,
    /// The address the node says it has.
    pub address: String,
    pub seen: std::net::IpAddr,
    /// Where the node says the others reach it, when not at its own address.
    pub endpoint: Option<std::net::SocketAddr>,
}

impl Entry {
    fn snapshot(&self) -> NodeRecord {
        let mut record = self.record.clone();
        record.telemetry = self
            .telemetry
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok());
        record
    }

    fn set_state(&mut self, to: NodeState, why: String) -> Option<Transition> {
        if self.record.state == to {
            return None;
        }
        self.record.state = to;
        self.changed = true;
        Some(Transition {
            name: self.record.name.clone(),
            to,
            why,
        })
    }
}

/// `telemetry` with the node's clock against the master's, measured from the heartbeat's
/// `sent_at` at `now` (one network delay makes a node look a little behind).
pub fn with_clock_skew(
    mut telemetry: Telemetry,
    sent_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Telemetry {
    telemetry.clock_skew_secs = Some((sent_at - now).as_seconds_f64());
    telemetry
}

/// Whether a node's clock skew deserves a warning (docs/design.md decision 19).
fn drifting(skew_secs: f64) -> bool {
    skew_secs.abs() > cloudos_time::policy::DRIFT_WARNING.as_secs_f64()
}

pub struct Roster {
    nodes: Mutex<HashMap<String, Entry>>,
    next_conn: AtomicU64,
    /// Until then, a node not heard from since this master started leading is not
    /// judged by its silence ([`Roster::grant_grace`]).
    grace_until: Mutex<Option<Instant>>,
}

impl Roster {
    /// The roster as stored. Nodes get one `not_ready_after` from now to reconnect.
    pub fn new(records: Vec<NodeRecord>) -> Self {
        let now = Instant::now();
        let nodes = records
            .into_iter()
            .map(|mut record| {
                // Cordoning was once a state; it is a flag beside the health now.
                if record.state == NodeState::Cordoned {
                    record.state = NodeState::NotReady;
                    record.unschedulable = true;
                }
                let telemetry = record
                    .telemetry
                    .as_ref()
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                let entry = Entry {
                    record,
                    telemetry,
                    last_heartbeat: now,
                    conn: None,
                    runs: Vec::new(),
                    runs_at: None,
                    dirty: false,
                    changed: false,
                    mesh: None,
                    heard: false,
                };
                (entry.record.name.clone(), entry)
            })
            .collect();
        Roster {
            nodes: Mutex::new(nodes),
            next_conn: AtomicU64::new(1),
            grace_until: Mutex::new(None),
        }
    }

    /// Until `until`, nodes not heard from since the roster was loaded are not made
    /// NotReady for their silence: their agents may still be on a master that stalled or
    /// died, and connect here once they notice.
    pub fn grant_grace(&self, until: Instant) {
        *self.grace_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<NodeInfo> {
        self.lock().get(name).map(|e| NodeInfo::from(&e.snapshot()))
    }

    /// All nodes, by name.
    pub fn list(&self) -> Vec<NodeInfo> {
        let mut all: Vec<NodeInfo> = self
            .lock()
            .values()
            .map(|e| NodeInfo::from(&e.snapshot()))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Visits every node's record and live telemetry under the lock, without the JSON
    /// round trip of [`Roster::list`]: the workload dispatcher reads this four times a
    /// second.
    pub fn each(&self, mut f: impl FnMut(&NodeRecord, Option<&Telemetry>)) {
        for e in self.lock().values() {
            f(&e.record, e.telemetry.as_ref());
        }
    }

    /// `(total, ready)`.
    pub fn counts(&self) -> (usize, usize) {
        let nodes = self.lock();
        let ready = nodes
            .values()
            .filter(|e| e.record.state == NodeState::Ready)
            .count();
        (nodes.len(), ready)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Whether the node's agent has its connection open now.
    pub fn is_connected(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|e| e.conn.as_ref().is_some_and(|c| !c.control.is_closed()))
    }

    /// Queues `message` for the node's open connection; `false` when it has none (the
    /// node's next hello reconciles) or its queue is full.
    pub fn send(&self, name: &str, message: cloudos_cluster::api::MasterMessage) -> bool {
        let nodes = self.lock();
        let Some(conn) = nodes.get(name).and_then(|e| e.conn.as_ref()) else {
            return false;
        };
        conn.control
            .try_send(Control::Send(Box::new(message)))
            .is_ok()
    }

    /// Adds a node that joined, replacing one of the same name; returns the replaced
    /// node's record (revoke every serial it holds).
    pub fn insert(&self, record: NodeRecord) -> Option<NodeRecord> {
        let entry = Entry {
            record,
            telemetry: None,
            last_heartbeat: Instant::now(),
            conn: None,
            runs: Vec::new(),
            runs_at: None,
            dirty: false,
            changed: false,
            mesh: None,
            // It joined this master just now.
            heard: true,
        };
        self.lock()
            .insert(entry.record.name.clone(), entry)
            .map(|old| old.record)
    }

    /// Records a renewed certificate as the node's pending one (see
    /// `NodeRecord::pending_serial`): the updated record and the pending serial it replaced
    /// (never used: revoke it), `None` if the node is unknown.
    pub fn set_pending_serial(
        &self,
        name: &str,
        serial: CertSerial,
    ) -> Option<(NodeRecord, Option<CertSerial>)> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        let replaced = entry.record.pending_serial.replace(serial);
        Some((entry.snapshot(), replaced))
    }

    /// The serials (current and pending) the roster holds for `name`.
    pub fn serials_of(&self, name: &str) -> Vec<CertSerial> {
        self.lock()
            .get(name)
            .map(|e| e.record.serials().cloned().collect())
            .unwrap_or_default()
    }

    /// Which of the node's certificates `serial` is: `None` when it is neither the current
    /// nor the pending one (an old, replaced certificate) or the node is unknown.
    pub fn serial_status(&self, name: &str, serial: &CertSerial) -> Option<SerialStatus> {
        let nodes = self.lock();
        let record = &nodes.get(name)?.record;
        SerialStatus::of(&record.cert_serial, record.pending_serial.as_ref(), serial)
    }

    /// The node used its pending certificate: it becomes the current one. The updated
    /// record and the serial it replaced (revoke it); `None` when `serial` is not the
    /// node's pending serial (already promoted by another request).
    pub fn promote_pending(
        &self,
        name: &str,
        serial: &CertSerial,
    ) -> Option<(NodeRecord, CertSerial)> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        if entry.record.pending_serial.as_ref() != Some(serial) {
            return None;
        }
        let pending = entry.record.pending_serial.take()?;
        let old = std::mem::replace(&mut entry.record.cert_serial, pending);
        Some((entry.snapshot(), old))
    }

    /// Changes a node's labels with `f`; the updated record, `None` if the node is unknown.
    pub fn relabel(&self, name: &str, f: impl FnOnce(&mut NodeRecord)) -> Option<NodeRecord> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        f(&mut entry.record);
        Some(entry.snapshot())
    }

    /// Cordons (`true`) or uncordons a node: the updated record and whether it was
    /// cordoned before; `None` if the node is unknown.
    pub fn set_unschedulable(&self, name: &str, cordoned: bool) -> Option<(NodeRecord, bool)> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        let was = std::mem::replace(&mut entry.record.unschedulable, cordoned);
        Some((entry.snapshot(), was))
    }

    /// The runs a node's heartbeat lists: kept for [`Roster::reported_runs`].
    pub fn note_runs(&self, name: &str, runs: &[String]) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.runs.clear();
            entry.runs.extend_from_slice(runs);
            entry.runs_at = Some(Instant::now());
        }
    }

    /// The runs the node's last heartbeat listed and when it arrived; `None` before the
    /// first heartbeat of this master.
    pub fn reported_runs(&self, name: &str) -> Option<(Vec<String>, Instant)> {
        let nodes = self.lock();
        let entry = nodes.get(name)?;
        Some((entry.runs.clone(), entry.runs_at?))
    }

    /// Forgets a node; its record and its connection, if one is open.
    pub fn remove(&self, name: &str) -> Option<(NodeRecord, Option<Conn>)> {
        self.lock().remove(name).map(|e| (e.snapshot(), e.conn))
    }

    /// A node's agent connected and said hello. Any older connection of the node is
    /// dropped from the roster (its task sees its control channel close). `None` if the
    /// node is not registered.
    pub fn connect(
        &self,
        name: &str,
        hello: &AgentHello,
        now: OffsetDateTime,
    ) -> Option<(u64, mpsc::Receiver<Control>, Option<Transition>)> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        entry.conn = Some(Conn { id, control: tx });
        entry.last_heartbeat = Instant::now();
        entry.heard = true;
        entry.record.last_seen = now;
        if !hello.address.is_empty() {
            entry.record.address = hello.address.clone();
        }
        if !hello.arch.is_empty() {
            entry.record.arch = hello.arch.clone();
        }
        // What a node says of itself is reported, never matched by selectors.
        entry.record.reported_labels = hello.labels.clone();
        entry.record.boot = hello.boot.clone();
        // What the hello says (address, labels) is saved with the next state changes.
        entry.changed = true;
        let transition = entry.set_state(NodeState::Ready, "its agent connected".to_owned());
        Some((id, rx, transition))
    }

    /// The node's container subnet: the one it has, or the first of `range` no node holds,
    /// given now (saved with the hello's other changes). Under the roster's one lock, so two
    /// hellos at once never get the same subnet. `None` if the node is not registered.
    pub fn subnet(&self, name: &str, range: &ClusterRange) -> Option<Result<Ipv4Net, SubnetError>> {
        let mut nodes = self.lock();
        let held = |e: &Entry| e.record.subnet.as_deref().and_then(|s| s.parse().ok());
        if let Some(subnet) = held(nodes.get(name)?) {
            return Some(Ok(subnet));
        }
        let taken: Vec<Ipv4Net> = nodes.values().filter_map(held).collect();
        let given = range.allocate(&taken);
        if let (Ok(subnet), Some(entry)) = (&given, nodes.get_mut(name)) {
            entry.record.subnet = Some(subnet.to_string());
            entry.changed = true;
        }
        Some(given)
    }

    /// Records a node's end of the mesh (`None`: it takes no part). True when that changes
    /// it (a node that came, or moved, or has a new key): then other nodes' peers change.
    pub fn set_mesh(&self, name: &str, end: Option<MeshEnd>) -> bool {
        match self.lock().get_mut(name) {
            Some(entry) if entry.mesh != end => {
                entry.mesh = end;
                true
            }
            _ => false,
        }
    }

    /// Every node that takes part in the mesh, with its container subnet, for the plan;
    /// `master` is the master's own name (its machine's node, when it runs workloads, is
    /// marked).
    pub fn mesh_nodes(&self, master: &str) -> Vec<crate::mesh::MeshNode> {
        self.lock()
            .values()
            .filter_map(|e| {
                let end = e.mesh.as_ref()?;
                Some(crate::mesh::MeshNode {
                    name: e.record.name.clone(),
                    public_key: end.public_key.clone(),
                    port: end.port,
                    address: end.address.parse().ok()?,
                    seen: end.seen,
                    endpoint: end.endpoint,
                    subnet: e.record.subnet.as_deref()?.parse().ok()?,
                    master: e.record.name == master,
                })
            })
            .collect()
    }

    /// The nodes with an open connection.
    pub fn connected(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|e| e.conn.is_some())
            .map(|e| e.record.name.clone())
            .collect()
    }

    /// A heartbeat from a node. `Err(())` if the node is not registered (it was removed).
    #[allow(clippy::result_unit_err)]
    pub fn heartbeat(
        &self,
        name: &str,
        telemetry: Telemetry,
        now: OffsetDateTime,
    ) -> Result<Option<Transition>, ()> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name).ok_or(())?;
        entry.last_heartbeat = Instant::now();
        entry.heard = true;
        entry.record.last_seen = now;
        let mut telemetry = telemetry;
        // What a node claims to have is believed only within sane bounds.
        telemetry.capacity = telemetry.capacity.bounded();
        let drifting =
            |t: Option<&Telemetry>| t.and_then(|t| t.clock_skew_secs).filter(|s| drifting(*s));
        match (drifting(Some(&telemetry)), drifting(entry.telemetry.as_ref())) {
            (Some(skew), None) => log::warn!(
                "node {name}: its clock is {skew:+.1}s off the master's; check its time servers (cloudos node show {name})"
            ),
            (None, Some(_)) => log::info!("node {name}: its clock agrees with the master's again"),
            _ => {}
        }
        entry.telemetry = Some(telemetry);
        entry.dirty = true;
        Ok(entry.set_state(NodeState::Ready, "heartbeats arrive".to_owned()))
    }

    /// Connection `conn_id` of `name` answered (a pong, or any frame): the node lives,
    /// and a node that had turned NotReady for its silence is Ready again. Frames of an
    /// older connection count for nothing.
    pub fn alive(&self, name: &str, conn_id: u64) -> Option<Transition> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        if entry.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return None;
        }
        entry.last_heartbeat = Instant::now();
        entry.set_state(NodeState::Ready, "it answers again".to_owned())
    }

    /// How long each node has been silent at `now` (since its last heartbeat or answer):
    /// the dispatcher counts a NotReady node's grace from its last sign of life.
    pub fn silences(&self, now: Instant) -> HashMap<String, Duration> {
        self.lock()
            .iter()
            .map(|(name, e)| {
                (
                    name.clone(),
                    now.saturating_duration_since(e.last_heartbeat),
                )
            })
            .collect()
    }

    /// Connection `conn_id` of `name` closed. NotReady at once, unless a newer connection
    /// of the node took over.
    pub fn disconnect(&self, name: &str, conn_id: u64) -> Option<Transition> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(name)?;
        if entry.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return None;
        }
        entry.conn = None;
        entry.set_state(NodeState::NotReady, "connection closed".to_owned())
    }

    /// Ready nodes silent for longer than their limit become NotReady: `not_ready_after`
    /// for a node on its agent connection (the master pings it, so it answers several
    /// times within that), `without_connection` for one that only posts heartbeats.
    pub fn sweep(
        &self,
        now: Instant,
        not_ready_after: Duration,
        without_connection: Duration,
    ) -> Vec<Transition> {
        let graced = self
            .grace_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until);
        let mut nodes = self.lock();
        nodes
            .values_mut()
            .filter(|e| e.record.state == NodeState::Ready)
            .filter(|e| !graced || e.heard)
            .filter_map(|e| {
                let silent = now.saturating_duration_since(e.last_heartbeat);
                let limit = if e.conn.is_some() {
                    not_ready_after
                } else {
                    without_connection.max(not_ready_after)
                };
                if silent <= limit {
                    return None;
                }
                let why = format!("silent for {:.1}s", silent.as_secs_f64());
                e.set_state(NodeState::NotReady, why)
            })
            .collect()
    }

    /// Records the store has not seen yet, marked as seen.
    pub fn take_unsaved(&self, which: Unsaved) -> Vec<NodeRecord> {
        let mut nodes = self.lock();
        nodes
            .values_mut()
            .filter(|e| e.changed || (which == Unsaved::All && e.dirty))
            .map(|e| {
                e.dirty = false;
                e.changed = false;
                e.snapshot()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::Role;
    use std::collections::BTreeMap;

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            role: Role::Compute,
            address: "10.0.0.2".to_owned(),
            arch: "x86_64".to_owned(),
            labels: BTreeMap::new(),
            reported_labels: Default::default(),
            pending_serial: None,
            cert_serial: "4a01".parse().expect("serial"),
            joined_at: OffsetDateTime::UNIX_EPOCH,
            last_seen: OffsetDateTime::UNIX_EPOCH,
            telemetry: None,
            state: NodeState::NotReady,
            unschedulable: false,
            boot: None,
            subnet: None,
        }
    }

    fn hello() -> AgentHello {
        AgentHello {
            address: "10.0.0.9".to_owned(),
            arch: "aarch64".to_owned(),
            labels: BTreeMap::new(),
            nodeos_version: "0.1.0".to_owned(),
            runs: Vec::new(),
            boot: None,
            mesh: None,
        }
    }

    /// A rogue agent claims to be the largest machine on earth to draw other people's work.
    #[test]
    fn claimed_capacity_is_bounded() {
        let roster = Roster::new(vec![record("n1")]);
        let mut telemetry = Telemetry::default();
        telemetry.capacity.cpu_millicores = u64::MAX;
        telemetry.capacity.memory_bytes = u64::MAX;
        roster
            .heartbeat("n1", telemetry, OffsetDateTime::now_utc())
            .expect("known node");
        let mut seen = None;
        roster.each(|_, t| seen = t.map(|t| t.capacity));
        assert_eq!(seen, Some(cloudos_cluster::api::Capacity::MAX));
    }

    #[test]
    fn a_node_that_only_posts_heartbeats_gets_its_heartbeats_time() {
        let now = OffsetDateTime::now_utc();
        let r = Roster::new(vec![]);
        r.insert(record("n1"));
        let up = r.heartbeat("n1", Telemetry::default(), now).expect("known");
        assert_eq!(up.map(|t| t.to), Some(NodeState::Ready));
        let (two, six) = (Duration::from_secs(2), Duration::from_secs(6));
        // Unpinged: three seconds of silence is a heartbeat or so missed, not a dead node.
        assert!(r
            .sweep(Instant::now() + Duration::from_secs(3), two, six)
            .is_empty());
        assert_eq!(
            r.sweep(Instant::now() + Duration::from_secs(7), two, six)
                .len(),
            1
        );
    }

    /// A new leader: nodes whose agents are still on the master that died are not made
    /// NotReady before they could notice and connect here; a node heard is judged as ever.
    #[test]
    fn a_new_leader_gives_unheard_nodes_time_to_connect() {
        let mut ready = record("n1");
        ready.state = NodeState::Ready;
        let mut other = record("n2");
        other.state = NodeState::Ready;
        let r = Roster::new(vec![ready, other]);
        let start = Instant::now();
        r.grant_grace(start + Duration::from_secs(10));
        let (two, six) = (Duration::from_secs(2), Duration::from_secs(6));
        r.connect("n2", &hello(), OffsetDateTime::now_utc())
            .expect("registered");
        let swept = r.sweep(start + Duration::from_secs(8), two, six);
        let names: Vec<&str> = swept.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["n2"], "only the node heard since is judged");
        let swept = r.sweep(start + Duration::from_secs(11), two, six);
        let names: Vec<&str> = swept.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["n1"], "once the grace is over, silence counts");
    }

    #[test]
    fn ready_notready_ready() {
        let now = OffsetDateTime::now_utc();
        let r = Roster::new(vec![]);
        assert_eq!(r.insert(record("n1")), None);
        let (id, _rx, t) = r.connect("n1", &hello(), now).expect("registered");
        assert_eq!(t.map(|t| t.to), Some(NodeState::Ready));
        assert_eq!(r.get("n1").map(|n| n.address), Some("10.0.0.9".into()));
        assert!(r.is_connected("n1"));
        assert_eq!(r.heartbeat("n1", Telemetry::default(), now), Ok(None));

        // On its connection a node is judged by `not_ready_after` (it is pinged).
        let (two, six) = (Duration::from_secs(2), Duration::from_secs(6));
        let later = Instant::now() + Duration::from_secs(3);
        let swept = r.sweep(later, two, six);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].to, NodeState::NotReady);
        assert!(
            swept[0].why.starts_with("silent for 3."),
            "{}",
            swept[0].why
        );
        assert!(r.sweep(later, two, six).is_empty());
        assert!(r.silences(later)["n1"] >= Duration::from_secs(3));
        // An answer of another connection is not its; one of its own brings it back.
        assert_eq!(r.alive("n1", id + 100), None);
        let back = r.alive("n1", id).expect("answers");
        assert_eq!(
            (back.to, back.why.as_str()),
            (NodeState::Ready, "it answers again")
        );
        assert!(r.silences(Instant::now())["n1"] < Duration::from_secs(1));
        assert_eq!(r.sweep(later, two, six).len(), 1);

        let back = r.heartbeat("n1", Telemetry::default(), now).expect("known");
        assert_eq!(back.map(|t| t.to), Some(NodeState::Ready));
        assert_eq!(r.counts(), (1, 1));
        assert_eq!(r.take_unsaved(Unsaved::StateChanges).len(), 1);
        assert_eq!(r.take_unsaved(Unsaved::StateChanges).len(), 0);
        r.heartbeat("n1", Telemetry::default(), now).expect("known");
        assert_eq!(r.take_unsaved(Unsaved::StateChanges).len(), 0);
        assert_eq!(r.take_unsaved(Unsaved::All).len(), 1);

        assert_eq!(r.disconnect("n1", id + 100), None, "not its connection");
        let closed = r.disconnect("n1", id).expect("closed");
        assert_eq!(
            (closed.to, closed.why.as_str()),
            (NodeState::NotReady, "connection closed")
        );
        assert_eq!(r.heartbeat("n9", Telemetry::default(), now), Err(()));
    }

    /// Cordoning is a flag beside the health: a cordoned node goes NotReady and Ready
    /// again and stays cordoned; a record stored as `Cordoned` (the old way) reads as
    /// NotReady and cordoned.
    #[test]
    fn cordon_is_kept_apart_from_health() {
        let now = OffsetDateTime::now_utc();
        let mut old = record("n2");
        old.state = NodeState::Cordoned;
        let r = Roster::new(vec![record("n1"), old]);
        let n2 = r.get("n2").expect("n2");
        assert_eq!((n2.state, n2.unschedulable), (NodeState::NotReady, true));

        let (id, _rx, _) = r.connect("n1", &hello(), now).expect("registered");
        assert_eq!(
            r.set_unschedulable("n1", true).map(|(_, was)| was),
            Some(false)
        );
        let closed = r.disconnect("n1", id).expect("NotReady");
        assert_eq!(closed.to, NodeState::NotReady);
        let (_, _rx, back) = r.connect("n1", &hello(), now).expect("registered");
        assert_eq!(back.map(|t| t.to), Some(NodeState::Ready));
        let n1 = r.get("n1").expect("n1");
        assert_eq!((n1.state, n1.unschedulable), (NodeState::Ready, true));
        assert_eq!(
            r.set_unschedulable("n1", false).map(|(_, was)| was),
            Some(true)
        );
        assert!(r.set_unschedulable("n9", true).is_none());
    }

    #[test]
    fn newer_connection_takes_over_and_remove_hands_back_the_connection() {
        let now = OffsetDateTime::now_utc();
        let r = Roster::new(vec![record("n1")]);
        let (first, mut first_rx, _) = r.connect("n1", &hello(), now).expect("first");
        let (second, _rx, t) = r.connect("n1", &hello(), now).expect("second");
        assert!(t.is_none(), "already Ready");
        assert_eq!(
            first_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        );
        assert_eq!(r.disconnect("n1", first), None);
        let (rec, conn) = r.remove("n1").expect("known");
        assert_eq!(rec.name, "n1");
        assert_eq!(conn.map(|c| c.id), Some(second));
        assert!(!r.contains("n1"));
        assert!(r.connect("n1", &hello(), now).is_none());
    }
}
