//! The mesh plan (decision 56): which WireGuard peers each node gets, from what every node
//! said in its hello (key, port, its own address) and where its connection came from.
//! [`plan`] is pure; [`announce`] hands every connected node its plan through the roster.
//!
//! A node whose connection comes from the address it says it has is *reachable*: others
//! send to it there. One whose connection comes from elsewhere is behind NAT: others wait
//! for it to reach them (it keeps the path open with keepalives), and two nodes behind NAT
//! reach each other through the *relay*, which forwards between its peers (WireGuard routes
//! by the subnets each peer is allowed): the master's own node when the master runs
//! workloads and is reachable, else the first reachable node by name.

use std::net::IpAddr;

use cloudos_cluster::mesh::MeshPeer;
use ipnet::Ipv4Net;

/// Keepalive interval for a path through NAT: below the 30 s many NATs keep UDP mappings.
pub const NAT_KEEPALIVE: u16 = 25;

/// One node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNode {
    pub name: String,
    pub public_key: String,
    pub port: u16,
    /// The address the node says it has.
    pub address: IpAddr,
    /// The address its connection came from.
    pub seen: IpAddr,
    /// Where it says the others reach it (`mesh_endpoint`), when not at its own address.
    pub endpoint: Option<std::net::SocketAddr>,
    pub subnet: Ipv4Net,
    /// The master's own machine (a master that runs workloads): the relay when reachable.
    pub master: bool,
}

impl MeshNode {
    /// Others can send to it: it named its endpoint, or its connection comes from the
    /// address it says it has (no NAT between it and the master).
    fn reachable(&self) -> bool {
        self.endpoint.is_some() || self.address == self.seen
    }

    /// Where the others send to it.
    fn dial(&self) -> std::net::SocketAddr {
        self.endpoint
            .unwrap_or_else(|| std::net::SocketAddr::new(self.seen, self.port))
    }
}

/// Whether the master uses the mesh endpoint a node names (`mesh_endpoint`) when its
/// connection comes from `seen`: at that same address (a cloud VM whose public address
/// is where its connection comes from, a home's port forward on the router's address), or
/// in a range the master's admin allows (`mesh_endpoint_ranges`). Anything else would
/// let one node, with nothing but its own certificate, point every peer's handshakes and
/// keepalives at a machine of its choosing; such an endpoint is ignored, and the node is
/// planned as one behind NAT (it opens its paths itself).
pub fn endpoint_allowed(
    endpoint: std::net::SocketAddr,
    seen: IpAddr,
    ranges: &[ipnet::IpNet],
) -> bool {
    let ip = endpoint.ip();
    ip == seen || ranges.iter().any(|range| range.contains(&ip))
}

/// The peers node `me` gets, by name. Empty when `me` is not in `nodes`.
pub fn plan(me: &str, nodes: &[MeshNode]) -> Vec<MeshPeer> {
    let Some(this) = nodes.iter().find(|n| n.name == me) else {
        return Vec::new();
    };
    let mut others: Vec<&MeshNode> = nodes.iter().filter(|n| n.name != me).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    // Every node reaches the master already; its machine is the one an admin keeps up.
    let relay = others
        .iter()
        .filter(|n| n.reachable())
        .min_by_key(|n| !n.master)
        .map(|n| n.name.clone());
    // Subnets this node can reach only through the relay: both ends behind NAT.
    let relayed: Vec<String> = if this.reachable() {
        Vec::new()
    } else {
        others
            .iter()
            .filter(|n| !n.reachable())
            .map(|n| n.subnet.to_string())
            .collect()
    };
    let mut peers = Vec::new();
    for other in others {
        let mut allowed = vec![other.subnet.to_string()];
        let (endpoint, keepalive) = match (this.reachable(), other.reachable()) {
            // Straight there; keep our NAT's mapping open if we are behind one.
            (me_open, true) => (
                Some(other.dial().to_string()),
                (!me_open).then_some(NAT_KEEPALIVE),
            ),
            // It comes to us.
            (true, false) => (None, None),
            // Through the relay.
            (false, false) => continue,
        };
        if relay.as_deref() == Some(other.name.as_str()) {
            allowed.extend(relayed.iter().cloned());
        }
        peers.push(MeshPeer {
            node: other.name.clone(),
            public_key: other.public_key.clone(),
            endpoint,
            allowed,
            keepalive,
        });
    }
    peers
}

/// How long a requested announcement waits for others to ride along: a master restart
/// brings every node back within a second or two, and each hello asks.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(250);

/// Coalesces the announcements hellos ask for. Announcing to every node after each hello
/// would, when all nodes come back after a master restart, send n plans n times (each
/// plan O(n)); requests that come while one waits ride along with it, so a burst costs
/// one or two announcements. A removal does not wait: [`announce`] at once, so a removed
/// node's peer goes everywhere before anything else.
#[derive(Debug, Default)]
pub struct Announcer {
    wanted: tokio::sync::Notify,
}

impl Announcer {
    /// Every node gets its plan soon (within [`COALESCE`]).
    pub fn request(&self) {
        self.wanted.notify_one();
    }

    /// Runs `announce` once per burst of requests; runs until the master stops.
    pub async fn run(&self, announce: impl Fn()) {
        loop {
            self.wanted.notified().await;
            tokio::time::sleep(COALESCE).await;
            announce();
        }
    }
}

/// Sends every connected node its peers: after a node is removed (its peer goes
/// everywhere at once), and for the [`Announcer`].
pub fn announce(roster: &crate::roster::Roster, master: &str) {
    let nodes = roster.mesh_nodes(master);
    for name in roster.connected() {
        send_plan(roster, &name, &nodes);
    }
}

/// Sends node `name` its peers only: a node that reconnects with nothing changed (every
/// node after a master restart) must not make the master plan and send for all of them.
pub fn announce_to(roster: &crate::roster::Roster, master: &str, name: &str) {
    send_plan(roster, name, &roster.mesh_nodes(master));
}

fn send_plan(roster: &crate::roster::Roster, name: &str, nodes: &[MeshNode]) {
    if nodes.iter().any(|n| n.name == name) {
        let peers = plan(name, nodes);
        roster.send(name, cloudos_cluster::api::MasterMessage::Mesh { peers });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str, seen: &str, subnet: &str) -> MeshNode {
        MeshNode {
            name: name.into(),
            public_key: format!("key-{name}"),
            port: 51820,
            address: address.parse().unwrap(),
            seen: seen.parse().unwrap(),
            endpoint: None,
            subnet: subnet.parse().unwrap(),
            master: false,
        }
    }

    fn shown(peers: &[MeshPeer]) -> Vec<String> {
        peers
            .iter()
            .map(|p| {
                format!(
                    "{} {} {} {:?}",
                    p.node,
                    p.endpoint.as_deref().unwrap_or("-"),
                    p.allowed.join(","),
                    p.keepalive
                )
            })
            .collect()
    }

    /// a and b on a LAN or in a cloud, c and d each behind a home router.
    fn cluster() -> Vec<MeshNode> {
        vec![
            node("a", "10.0.0.1", "10.0.0.1", "10.250.0.0/24"),
            node("b", "10.0.0.2", "10.0.0.2", "10.250.1.0/24"),
            node("c", "192.168.1.5", "198.51.100.7", "10.250.2.0/24"),
            node("d", "192.168.1.5", "203.0.113.9", "10.250.3.0/24"),
        ]
    }

    #[test]
    fn reachable_nodes_dial_each_other_and_wait_for_those_behind_nat() {
        assert_eq!(
            shown(&plan("a", &cluster())),
            [
                "b 10.0.0.2:51820 10.250.1.0/24 None",
                "c - 10.250.2.0/24 None",
                "d - 10.250.3.0/24 None",
            ]
        );
        // b is not the relay (a is, first by name), so it carries only its own subnet.
        assert_eq!(
            shown(&plan("b", &cluster()))[0],
            "a 10.0.0.1:51820 10.250.0.0/24 None"
        );
    }

    #[test]
    fn a_node_behind_nat_keeps_its_paths_open_and_reaches_its_like_through_the_relay() {
        assert_eq!(
            shown(&plan("c", &cluster())),
            [
                "a 10.0.0.1:51820 10.250.0.0/24,10.250.3.0/24 Some(25)",
                "b 10.0.0.2:51820 10.250.1.0/24 Some(25)",
            ]
        );
        assert_eq!(
            shown(&plan("d", &cluster()))[0],
            "a 10.0.0.1:51820 10.250.0.0/24,10.250.2.0/24 Some(25)"
        );
    }

    #[test]
    fn a_node_that_is_gone_is_no_ones_peer() {
        let mut nodes = cluster();
        nodes.retain(|n| n.name != "b");
        for me in ["a", "c", "d"] {
            assert!(
                plan(me, &nodes).iter().all(|p| p.node != "b"),
                "{me} still has b"
            );
        }
        assert!(plan("b", &nodes).is_empty());
    }

    #[test]
    fn with_no_reachable_node_those_behind_nat_have_no_way_to_each_other() {
        let nodes: Vec<MeshNode> = cluster().into_iter().filter(|n| !n.reachable()).collect();
        assert!(plan("c", &nodes).is_empty());
    }

    #[test]
    fn a_cloud_vm_that_names_its_endpoint_is_dialled_there_and_relays_for_homes() {
        // A cloud VM says its private address; the master sees its public one. Without
        // its endpoint it counts as behind NAT, and with two homes nobody reaches anybody.
        let mut nodes: Vec<MeshNode> = cluster().into_iter().filter(|n| !n.reachable()).collect();
        let mut cloud = node("cloud", "172.31.5.9", "192.0.2.44", "10.250.4.0/24");
        assert!(plan("c", &[nodes.clone(), vec![cloud.clone()]].concat()).is_empty());
        cloud.endpoint = Some("192.0.2.44:51820".parse().unwrap());
        nodes.push(cloud);
        // Each home dials the cloud VM at its endpoint, keeps the path open, and reaches
        // the other home through it.
        assert_eq!(
            shown(&plan("c", &nodes)),
            ["cloud 192.0.2.44:51820 10.250.4.0/24,10.250.3.0/24 Some(25)"]
        );
        // The cloud VM waits for the homes (they come to it) and relays between them.
        assert_eq!(
            shown(&plan("cloud", &nodes)),
            ["c - 10.250.2.0/24 None", "d - 10.250.3.0/24 None"]
        );
    }

    /// The attacker holds one node's certificate and names a third party's address as its
    /// mesh endpoint, to have every peer send it handshakes and keepalives. Only the
    /// address its connection comes from, or a range the master's admin allows, counts.
    #[test]
    fn a_node_cannot_point_its_peers_at_an_address_it_does_not_come_from() {
        let seen: IpAddr = "192.0.2.44".parse().unwrap();
        let at = |e: &str| e.parse::<std::net::SocketAddr>().unwrap();
        let none: &[ipnet::IpNet] = &[];
        // Its own public address (a cloud VM, a port forward on the router): used.
        assert!(endpoint_allowed(at("192.0.2.44:51820"), seen, none));
        assert!(endpoint_allowed(at("192.0.2.44:40000"), seen, none));
        // Someone else's: ignored, unless the admin allows the range.
        assert!(!endpoint_allowed(at("198.51.100.7:51820"), seen, none));
        assert!(!endpoint_allowed(at("10.77.0.1:9443"), seen, none));
        let allowed: Vec<ipnet::IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        assert!(endpoint_allowed(at("198.51.100.7:51820"), seen, &allowed));
        assert!(!endpoint_allowed(at("198.51.101.7:51820"), seen, &allowed));
        assert!(!endpoint_allowed(at("[2001:db8::7]:51820"), seen, &allowed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_requests_is_one_or_two_announcements() {
        let announcer = std::sync::Arc::new(Announcer::default());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, c) = (announcer.clone(), count.clone());
        tokio::spawn(async move {
            a.run(|| {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
        });
        // A hundred nodes say hello within 100 ms of each other.
        for _ in 0..100 {
            announcer.request();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(COALESCE * 4).await;
        let announced = count.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&announced), "{announced} announcements");
        // A request later is announced again.
        announcer.request();
        tokio::time::sleep(COALESCE * 2).await;
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            announced + 1
        );
    }

    #[test]
    fn the_master_s_own_node_relays_when_it_runs_workloads() {
        // "m" sorts after "a": without the mark, a would relay.
        let mut nodes = cluster();
        let mut own = node("m", "10.0.0.9", "10.0.0.9", "10.250.9.0/24");
        own.master = true;
        nodes.push(own);
        assert_eq!(
            shown(&plan("c", &nodes)),
            [
                "a 10.0.0.1:51820 10.250.0.0/24 Some(25)",
                "b 10.0.0.2:51820 10.250.1.0/24 Some(25)",
                "m 10.0.0.9:51820 10.250.9.0/24,10.250.3.0/24 Some(25)",
            ]
        );
        assert_eq!(
            shown(&plan("m", &nodes))[2..],
            ["c - 10.250.2.0/24 None", "d - 10.250.3.0/24 None"]
        );
        // A master behind NAT itself cannot relay: the first reachable node does.
        let behind = nodes.iter_mut().find(|n| n.name == "m").unwrap();
        behind.seen = "198.51.100.77".parse().unwrap();
        assert!(shown(&plan("c", &nodes))[0].contains("10.250.0.0/24,10.250.3.0/24"));
    }
}
