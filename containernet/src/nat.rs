//! The node's nftables table for its containers, `ip cloudos`: containers reach past the
//! node from the node's own address (masquerade; not into the mesh, where they are seen
//! by their own addresses), published ports of the node lead to
//! containers (destination NAT), and a container reaching a published port of its own node
//! is answered through the node (hairpin). Programmed through nftables netlink messages
//! from Rust: no `nft` binary, no libnftnl.
//!
//! What a container can reach, then (its guard, two filter chains):
//! - the other containers on its bridge, directly, and every service by its address
//!   ([`Balance`]), which leads to one of its replicas, here or on another node;
//! - any published port, of its own node (by any of the node's addresses) or another;
//! - of its node itself, only the ports the admin opened ([`Rules::node_ports`]), by the
//!   gateway address or any other of the node's addresses; the rest is dropped, unanswered;
//! - past its node, anything but the blocked addresses ([`Rules::blocked`]): their answers
//!   to what they opened (a published port) pass, a container's own calls to them do not;
//! - other nodes' containers through the mesh, which in turn reach this node's containers
//!   through the mesh but never the node itself (not even its opened ports).
//!
//! The node's own connections to its containers and into the mesh are not held back: their
//! answers belong to connections already open. The guard is IPv4's, as the table is; the
//! bridge has no IPv6 (bridge::ensure), so a container has no IPv6 way into its node.
//!
//! The table is rebuilt whole on each change, in one batch, which the kernel applies all
//! or nothing: the table made if missing, deleted, and made again with its chains and
//! rules. A packet meets the old table or the new one, never half of one, and nothing is
//! appended to what was there. Everything runs in the calling thread's network namespace.
//!
//! Submodules, one job each:
//! - `wire`: the kernel's numbers the netlink crate has no type for, each said once.
//! - `expr`: nftables expressions, statement by statement, as nft compiles them.
//! - `ruleset`: what the table holds, from [`Rules`]: its chains and rules as commands.
//! - `batch`: a batch on a netfilter netlink socket, and the kernel's answers to it.

mod batch;
mod expr;
mod ruleset;
mod wire;

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::NetError;

/// The node's table (family ip).
pub const TABLE: &str = "cloudos";

/// tcp or udp
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port: connections to `host_port` on any of the node's own addresses go
/// to `address:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub address: Ipv4Addr,
    pub container_port: u16,
}

/// A service's virtual address on this node (decision 57): connections to it, on any
/// port, go to one of `backends` (the service's running replicas, wherever they are),
/// each new connection to any of them with the same chance. A service with no backend
/// has no rule: its address is unreachable (the agent routes the service range so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub address: Ipv4Addr,
    pub backends: Vec<Ipv4Addr>,
    /// The service's published ports as this node routes them (the routing mesh): calls to
    /// `host_port` on the node's own addresses go to a backend's `container_port`. Only
    /// ports no container of this node publishes itself: that one takes them.
    pub ports: Vec<RoutedPort>,
}

/// A published port of a service, on a node that routes it to the service's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedPort {
    pub protocol: Protocol,
    pub host_port: u16,
    pub container_port: u16,
}

/// Everything the node's table holds: rebuilt whole on each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The containers' bridge (bridge::BRIDGE on a node).
    pub bridge: String,
    /// The node's container subnet; an address in it with its prefix will do.
    pub subnet: Ipv4Net,
    /// The published ports; one protocol and host port each.
    pub forwards: Vec<Forward>,
    /// The node's mesh link (mesh::MESH_LINK) when it has one: container traffic into it
    /// keeps its source, since the peers route the node's subnet back through the mesh
    /// and accept only sources inside it.
    pub mesh_link: Option<String>,
    /// Ports of the node's own addresses containers may open (the admin's allow list; DNS
    /// on the gateway comes later). Everything else of the node is closed to them.
    pub node_ports: Vec<(Protocol, u16)>,
    /// Addresses containers may not reach at all, past the node (the masters' API
    /// addresses), unless through a published port of this node.
    pub blocked: Vec<Ipv4Addr>,
    /// The services' addresses and routed ports.
    pub balances: Vec<Balance>,
}

/// Replaces the node's table (`ip cloudos`) with `rules`, atomically (one nftables batch:
/// create table if missing, delete it, create it again with its chains and rules), in the
/// calling thread's network namespace. A batch the kernel refuses changes nothing.
pub fn apply(rules: &Rules) -> Result<(), NetError> {
    batch::run(&ruleset::replace(rules)?)
}

/// Removes the node's table; a missing table is fine.
pub fn clear() -> Result<(), NetError> {
    batch::run(&ruleset::remove())
}
