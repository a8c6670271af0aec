//! Builders the unit tests share, so each table reads as data.

use crate::types::{HostPort, NodeView, Request, Resources};

pub const MI: u64 = 1 << 20;
pub const GI: u64 = 1 << 30;

/// A ready node with no labels and nothing allocated.
pub fn node(name: &str, arch: &str, cpu_millis: u64, memory_bytes: u64) -> NodeView {
    NodeView {
        name: name.into(),
        arch: arch.into(),
        ready: true,
        capacity: Resources::new(cpu_millis, memory_bytes),
        ..NodeView::default()
    }
}

/// A request for any node.
pub fn req(id: &str, cpu_millis: u64, memory_bytes: u64) -> Request {
    Request::new(id, Resources::new(cpu_millis, memory_bytes))
}

impl NodeView {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn alloc(mut self, cpu_millis: u64, memory_bytes: u64) -> Self {
        self.allocated = self
            .allocated
            .saturating_add(Resources::new(cpu_millis, memory_bytes));
        self
    }
    pub fn cordoned(mut self) -> Self {
        self.cordoned = true;
        self
    }
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }
    pub fn replicas(mut self, group: &str, count: u32) -> Self {
        self.groups.insert(group.into(), count);
        self
    }
    /// Host port `port`/tcp held by one piece of work already on the node.
    pub fn port(mut self, port: u16) -> Self {
        *self.ports.entry(HostPort::tcp(port)).or_insert(0) += 1;
        self
    }
    /// Host port `port`/udp held by one piece of work already on the node.
    pub fn udp_port(mut self, port: u16) -> Self {
        *self.ports.entry(HostPort::udp(port)).or_insert(0) += 1;
        self
    }
}

impl Request {
    pub fn archs(mut self, archs: &[&str]) -> Self {
        self.archs = archs.iter().map(|a| a.to_string()).collect();
        self
    }
    pub fn select(mut self, key: &str, value: &str) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }
    pub fn avoid(mut self, node: &str) -> Self {
        self.avoid.push(node.into());
        self
    }
    /// Publishes host port `port`/tcp.
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(HostPort::tcp(port));
        self
    }
    /// Publishes host port `port`/udp.
    pub fn udp_port(mut self, port: u16) -> Self {
        self.ports.push(HostPort::udp(port));
        self
    }
}
