//! The node's side of `bridge` networks (decisions 55, 56): the subnet the master gave this
//! node, which address each run has in it, the run's namespace on the node's bridge, the
//! node's NAT table (outbound masquerade and every run's published ports), and the node's
//! end of the WireGuard mesh to the other nodes' containers (its key in
//! `<data>/network/mesh.key`, its peers as the master says).
//!
//! A run is attached once, before its first container starts, and detached after its last
//! one ends: a replica that restarts keeps its namespace and address. The NAT table is
//! rebuilt whole from what is attached at each change (one atomic nftables batch), so it is
//! never out of step with the runs. Owns `<data>/network/netns`; the links and rules it makes
//! live in the agent's own network namespace.
//!
//! Leftovers of an earlier agent (its containers are removed at start, see `Executor::new`)
//! are swept before the first attach: their namespaces, veths and rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cloudos_cluster::mesh::{MeshHello, MeshPeer};
use cloudos_cluster::publish::NodePort;
use cloudos_cluster::routing::{ServiceTable, DOMAIN};
use cloudos_cluster::subnets;
use cloudos_cluster::workload::{PortMapping, Protocol};
use cloudos_containernet::attach::{self, Attached};
use cloudos_containernet::mesh::{self, MeshKey};
use cloudos_containernet::{bridge, fence, nat, NetError};
use ipnet::Ipv4Net;
use tokio::sync::Mutex;

/// What a run holds on the bridge, for [`Network::detach`].
#[derive(Debug, Clone)]
pub(super) struct Attachment {
    pub run: String,
    /// The namespace file the container joins.
    pub netns: PathBuf,
    /// The run's `resolv.conf`, naming the node's DNS; `None` when that is not serving
    /// (the container then has the node's own).
    pub resolv_conf: Option<PathBuf>,
    /// The container's address on the bridge.
    pub address: std::net::Ipv4Addr,
}

struct Inner {
    subnet: Option<Ipv4Net>,
    /// The mesh peers the master gave last.
    peers: Vec<MeshPeer>,
    /// The subnet and peers the mesh link was last set to, so that the same list again
    /// (every reconnect) costs no netlink round trips.
    mesh_applied: Option<(Ipv4Net, Vec<MeshPeer>)>,
    /// The masters' addresses, which containers may not reach (their API is for nodes and
    /// admins, never for workloads).
    masters: Vec<std::net::Ipv4Addr>,
    /// Leftovers of an earlier agent are gone.
    swept: bool,
    /// Attached runs: their address, link and published ports.
    runs: BTreeMap<String, (Attached, Vec<PortMapping>)>,
    /// The address given last (see [`next_address`]).
    last_address: Option<std::net::Ipv4Addr>,
    /// The services, as the master sent them last.
    services: ServiceTable,
    /// The cluster's container range, from the welcome.
    container_range: Option<Ipv4Net>,
    /// The ranges made unreachable (the container range and the service range).
    fenced: BTreeSet<Ipv4Net>,
    /// The node's DNS for its containers, once a run is on the bridge.
    dns: Option<super::dns::DnsServer>,
}

pub(super) struct Network {
    dir: PathBuf,
    /// Each run's resolv.conf, `<data>/network/resolv/<run>`.
    resolv_dir: PathBuf,
    /// The node's own resolv.conf: the DNS forwards to its resolvers.
    host_resolv: PathBuf,
    /// The node's WireGuard key; `Err`: why the node takes no part in the mesh.
    key: Result<MeshKey, String>,
    /// Ports of the node its containers may open (the admin's allow list).
    node_ports: Vec<NodePort>,
    /// Where other nodes reach this node's mesh, when not at its own address.
    mesh_endpoint: Option<std::net::SocketAddr>,
    inner: Mutex<Inner>,
}

impl Network {
    pub fn new(
        data_dir: &Path,
        node_ports: &[NodePort],
        resolv: Option<PathBuf>,
        mesh_endpoint: Option<std::net::SocketAddr>,
    ) -> Network {
        let key = MeshKey::load_or_create(&data_dir.join("network").join("mesh.key"))
            .map_err(|e| format!("this node takes no part in the mesh: {e}"));
        if let Err(e) = &key {
            log::error!("{e}");
        }
        Network {
            dir: data_dir.join("network").join("netns"),
            resolv_dir: data_dir.join("network").join("resolv"),
            host_resolv: resolv.unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            key,
            node_ports: node_ports.to_vec(),
            mesh_endpoint,
            inner: Mutex::new(Inner {
                subnet: None,
                peers: Vec::new(),
                mesh_applied: None,
                masters: Vec::new(),
                swept: false,
                runs: BTreeMap::new(),
                last_address: None,
                services: ServiceTable::default(),
                container_range: None,
                fenced: BTreeSet::new(),
                dns: None,
            }),
        }
    }

    /// The subnet from the master's welcome (`None`: it gave none; bridge runs then fail
    /// with the reason), and the cluster's container range, which is closed but for the
    /// node's own subnet and its peers'. A changed subnet applies to runs attached from now
    /// on.
    pub async fn set_subnet(&self, subnet: Option<&str>, range: Option<&str>) {
        let range = range.and_then(|r| match r.parse::<Ipv4Net>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                log::error!("the master's container range {r:?} is not one");
                None
            }
        });
        let parsed = subnet.and_then(|s| match s.parse::<Ipv4Net>() {
            Ok(net) if net.prefix_len() <= 30 => Some(net),
            _ => {
                log::error!("the master gave this node a container subnet that is not one: {s:?}");
                None
            }
        });
        let mut inner = self.inner.lock().await;
        if inner.subnet != parsed {
            if let Some(net) = parsed {
                log::info!("container subnet {net}");
            }
        }
        inner.subnet = parsed;
        inner.container_range = range;
        refence(&mut inner).await;
    }

    /// The master this node talks to: closed to its containers from the next change of the
    /// table on (the table is rebuilt now when runs are on the bridge).
    pub async fn set_master(&self, master: std::net::Ipv4Addr) {
        let mut inner = self.inner.lock().await;
        if inner.masters.contains(&master) {
            return;
        }
        inner.masters.push(master);
        if let (Some(subnet), false) = (inner.subnet, inner.runs.is_empty()) {
            if let Err(e) = self.apply_rules(subnet, &inner).await {
                log::warn!("cannot close the master's address to containers: {e}");
            }
        }
    }

    /// The services from the master: their names for the node's DNS, their addresses and
    /// routed ports for the NAT table, their range closed to everything else.
    pub async fn set_services(&self, table: ServiceTable) {
        let mut inner = self.inner.lock().await;
        if inner.services == table {
            return;
        }
        if let Some(dns) = &inner.dns {
            dns.set_names(super::dns::Names::from_table(&table));
        }
        inner.services = table;
        refence(&mut inner).await;
        if let Some(subnet) = inner.subnet {
            if let Err(e) = self.apply_rules(subnet, &inner).await {
                log::error!("cannot route the services: {e}");
            }
        }
    }

    /// The node's end of the mesh, for its hello.
    pub fn mesh_hello(&self) -> Option<MeshHello> {
        let key = self.key.as_ref().ok()?;
        Some(MeshHello {
            public_key: key.public(),
            port: mesh::MESH_PORT,
            endpoint: self.mesh_endpoint,
        })
    }

    /// The mesh peers from the master: the node's mesh link is set to have exactly these.
    /// Needs the subnet (the link holds its gateway address); the welcome that gives it
    /// comes first.
    pub async fn set_mesh(&self, peers: Vec<MeshPeer>) {
        let mut inner = self.inner.lock().await;
        inner.peers = peers;
        let (Some(subnet), Ok(key)) = (inner.subnet, &self.key) else {
            return;
        };
        if inner.mesh_applied.as_ref() == Some(&(subnet, inner.peers.clone())) {
            return;
        }
        let mut wanted = Vec::new();
        for peer in &inner.peers {
            match mesh_peer(peer) {
                Ok(p) => wanted.push(p),
                Err(e) => log::warn!("leaving out mesh peer {}: {e}", peer.node),
            }
        }
        let applied = match cloudos_containernet::connect() {
            Ok(handle) => {
                let mesh = mesh::Mesh {
                    key,
                    port: mesh::MESH_PORT,
                    address: subnets::gateway(&subnet),
                    peers: wanted,
                };
                mesh::apply(&handle, &mesh).await
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => {
                let names: Vec<&str> = inner.peers.iter().map(|p| p.node.as_str()).collect();
                log::info!("mesh peers: {}", names.join(", "));
                inner.mesh_applied = Some((subnet, inner.peers.clone()));
                // Packets from the mesh to this node's containers, and relayed between
                // peers, are forwarded.
                if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                    log::warn!("cannot turn on forwarding for the mesh: {e}");
                }
            }
            Err(e) => log::error!("cannot set up the mesh: {e}"),
        }
    }

    /// Gives run `run` a namespace on the bridge with an address of its own, and forwards
    /// its published ports to it. The error is the run's failure reason.
    pub async fn attach(&self, run: &str, publish: &[PortMapping]) -> Result<Attachment, String> {
        let mut inner = self.inner.lock().await;
        let subnet = inner.subnet.ok_or(
            "this node has no container subnet: the master gives one when the node connects \
             (its log says why it gave none), so the bridge network cannot be used yet",
        )?;
        let handle = cloudos_containernet::connect().map_err(|e| e.to_string())?;
        if !inner.swept {
            sweep(&handle, &self.dir).await;
            let _ = std::fs::remove_dir_all(&self.resolv_dir);
            inner.swept = true;
        }
        if let Some((other, port)) = port_in_use(&inner.runs, publish) {
            return Err(format!(
                "host port {}/{} is published already by run {other} on this node",
                port.host, port.protocol
            ));
        }
        lan_clash(&handle, subnet).await?;
        let gateway = subnets::gateway(&subnet);
        let on_bridge = Ipv4Net::new(gateway, subnet.prefix_len()).map_err(|e| e.to_string())?;
        let index = bridge::ensure(&handle, bridge::BRIDGE, &on_bridge)
            .await
            .map_err(|e| format!("cannot set up the node's bridge: {e}"))?;
        self.serve_dns(&mut inner, gateway).await;
        let resolv_conf = match &inner.dns {
            Some(dns) => Some(self.write_resolv(run, dns.address())?),
            None => None,
        };
        // A run that fails from here on leaves no resolv.conf behind.
        let failed = |why: String| {
            if let Some(path) = &resolv_conf {
                let _ = std::fs::remove_file(path);
            }
            why
        };
        let taken: BTreeSet<std::net::Ipv4Addr> = inner
            .runs
            .values()
            .map(|(at, _)| at.address.addr())
            .collect();
        let address = next_address(&subnet, inner.last_address, &taken)
            .ok_or_else(|| failed(format!("the node's container subnet {subnet} is full")))?;
        inner.last_address = Some(address);
        let address =
            Ipv4Net::new(address, subnet.prefix_len()).map_err(|e| failed(e.to_string()))?;
        let netns = self.dir.join(run);
        let attached = attach::attach(&handle, index, run, &netns, address, gateway)
            .await
            .map_err(|e| {
                failed(format!(
                    "cannot put the container on the node's bridge: {e}"
                ))
            })?;
        inner
            .runs
            .insert(run.to_owned(), (attached.clone(), publish.to_vec()));
        if let Err(e) = self.apply_rules(subnet, &inner).await {
            inner.runs.remove(run);
            let _ = attach::detach(&handle, &attached).await;
            return Err(failed(format!("cannot forward the container's ports: {e}")));
        }
        log::info!("run {run} is on the bridge at {}", address.addr());
        Ok(Attachment {
            run: run.to_owned(),
            netns,
            resolv_conf,
            address: address.addr(),
        })
    }

    /// Takes a run off the bridge: its forwards first (no new connection reaches a
    /// container that is going), then its link and namespace. Failures are logged: the run
    /// is over either way, and the next agent's sweep takes what is left.
    pub async fn detach(&self, attachment: &Attachment) {
        let mut inner = self.inner.lock().await;
        let Some((attached, _)) = inner.runs.remove(&attachment.run) else {
            return;
        };
        if let Some(subnet) = inner.subnet {
            if let Err(e) = self.apply_rules(subnet, &inner).await {
                log::warn!("cannot remove the forwards of run {}: {e}", attachment.run);
            }
        }
        let result = match cloudos_containernet::connect() {
            Ok(handle) => attach::detach(&handle, &attached).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            log::warn!("cannot take run {} off the bridge: {e}", attachment.run);
        }
        if let Some(path) = &attachment.resolv_conf {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the node's DNS on the bridge's `gateway` unless it serves there already. A
    /// port taken (another DNS server on the node's every address) is logged: containers
    /// then resolve through the node's own resolv.conf, without service names.
    async fn serve_dns(&self, inner: &mut Inner, gateway: std::net::Ipv4Addr) {
        if inner.dns.as_ref().is_some_and(|d| d.address() == gateway) {
            return;
        }
        inner.dns = None;
        let names = super::dns::Names::from_table(&inner.services);
        match super::dns::DnsServer::start(gateway, names, self.host_resolv.clone()).await {
            Ok(dns) => inner.dns = Some(dns),
            Err(e) => log::error!(
                "no DNS for containers on {gateway}:53 ({e}): they resolve through the node's \
                 resolvers, without the names of services"
            ),
        }
    }

    /// Writes run `run`'s resolv.conf: the node's DNS, the service zone searched first,
    /// then the node's own search domains.
    fn write_resolv(&self, run: &str, dns: std::net::Ipv4Addr) -> Result<PathBuf, String> {
        let host = std::fs::read_to_string(&self.host_resolv).unwrap_or_default();
        let search: Vec<&str> = host
            .lines()
            .filter_map(|l| l.strip_prefix("search "))
            .flat_map(str::split_whitespace)
            .collect();
        let text = format!(
            "# The node's DNS: services by name (NAME or NAME.{DOMAIN}), the rest through \
             the node's resolvers.\nnameserver {dns}\nsearch {DOMAIN} {}\n",
            search.join(" ")
        );
        std::fs::create_dir_all(&self.resolv_dir)
            .and_then(|()| std::fs::write(self.resolv_dir.join(run), text))
            .map_err(|e| format!("cannot write the run's resolv.conf: {e}"))?;
        Ok(self.resolv_dir.join(run))
    }
}

/// Makes the cluster's ranges unreachable (more specific routes, the node's own subnet on
/// the bridge and its peers' through the mesh, still lead there), and a range no longer
/// the cluster's reachable again.
async fn refence(inner: &mut Inner) {
    let service_range = match inner.services.range.parse::<Ipv4Net>() {
        Ok(range) => Some(range.trunc()),
        Err(_) if inner.services.range.is_empty() => None,
        Err(_) => {
            log::error!(
                "the master's service range {:?} is not one",
                inner.services.range
            );
            None
        }
    };
    let wanted: BTreeSet<Ipv4Net> = [service_range, inner.container_range]
        .into_iter()
        .flatten()
        .collect();
    if wanted == inner.fenced {
        return;
    }
    let handle = match cloudos_containernet::connect() {
        Ok(handle) => handle,
        Err(e) => return log::warn!("cannot close the cluster's ranges: {e}"),
    };
    for gone in inner.fenced.difference(&wanted) {
        if let Err(e) = fence::open(&handle, *gone).await {
            log::warn!("{e}");
        }
    }
    let mut fenced = BTreeSet::new();
    for range in &wanted {
        match fence::close(&handle, *range).await {
            Ok(()) => {
                fenced.insert(*range);
            }
            Err(e) => log::warn!("{e}"),
        }
    }
    let shown: Vec<String> = fenced.iter().map(ToString::to_string).collect();
    log::info!(
        "unreachable but through the bridge and the mesh: {}",
        shown.join(", ")
    );
    inner.fenced = fenced;
}

/// Refuses a subnet that overlaps a network this node is on (the master checks only its
/// own): its containers' addresses would hide that network's machines from them.
async fn lan_clash(handle: &rtnetlink::Handle, subnet: Ipv4Net) -> Result<(), String> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    // The bridge and the mesh link hold the subnet's gateway themselves.
    let mut own = Vec::new();
    for link in cloudos_cluster::subnets::NODE_LINKS {
        own.extend(
            bridge::link_index(handle, link)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut addresses = handle.address().get().execute();
    while let Some(msg) = addresses
        .try_next()
        .await
        .map_err(|e| format!("cannot read the node's addresses: {e}"))?
    {
        if own.contains(&msg.header.index) {
            continue;
        }
        let Some(ip) = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        }) else {
            continue;
        };
        let Ok(lan) = Ipv4Net::new(ip, msg.header.prefix_len) else {
            continue;
        };
        if !ip.is_loopback() && (lan.contains(&subnet.network()) || subnet.contains(&ip)) {
            return Err(format!(
                "the node's container subnet {subnet} overlaps its network {}: containers \
                 would lose the machines there; the admin chooses another container_range \
                 on the master",
                lan.trunc()
            ));
        }
    }
    Ok(())
}

/// A peer as the master sent it, checked, as the mesh link takes it.
fn mesh_peer(peer: &MeshPeer) -> Result<mesh::MeshPeer, String> {
    cloudos_cluster::mesh::check_key(&peer.public_key).map_err(|e| e.to_string())?;
    let endpoint = match &peer.endpoint {
        Some(e) => Some(
            e.parse()
                .map_err(|_| format!("endpoint {e:?} is not ip:port"))?,
        ),
        None => None,
    };
    let allowed = peer
        .allowed
        .iter()
        .map(|a| a.parse().map_err(|_| format!("{a:?} is not a subnet")))
        .collect::<Result<Vec<Ipv4Net>, String>>()?;
    Ok(mesh::MeshPeer {
        public_key: peer.public_key.clone(),
        endpoint,
        allowed,
        keepalive: peer.keepalive,
    })
}

/// The first port of `publish` another attached run forwards already, with that run.
/// The first free address of `subnet` after `last`, round the subnet: an address a
/// stopped container had is given again only once the others were. The node's neighbour
/// cache keeps an address's old MAC for up to half a minute, and a new container at it would
/// get nothing the node sends it meanwhile (its health probes, its service's connections).
fn next_address(
    subnet: &Ipv4Net,
    last: Option<std::net::Ipv4Addr>,
    taken: &BTreeSet<std::net::Ipv4Addr>,
) -> Option<std::net::Ipv4Addr> {
    let all: Vec<std::net::Ipv4Addr> = subnets::container_addresses(subnet).collect();
    let start = last
        .and_then(|l| all.iter().position(|a| *a == l))
        .map_or(0, |i| i + 1);
    all.iter()
        .cycle()
        .skip(start)
        .take(all.len())
        .find(|a| !taken.contains(a))
        .copied()
}

fn port_in_use<'a>(
    runs: &'a BTreeMap<String, (Attached, Vec<PortMapping>)>,
    publish: &'a [PortMapping],
) -> Option<(&'a str, &'a PortMapping)> {
    publish.iter().find_map(|want| {
        runs.iter().find_map(|(run, (_, ports))| {
            ports
                .iter()
                .any(|p| p.host == want.host && p.protocol == want.protocol)
                .then_some((run.as_str(), want))
        })
    })
}

impl Network {
    async fn apply_rules(&self, subnet: Ipv4Net, inner: &Inner) -> Result<(), NetError> {
        let mut rules = rules(subnet, &inner.runs);
        rules.node_ports = self
            .node_ports
            .iter()
            .map(|p| (protocol(p.protocol), p.port))
            .collect();
        rules.blocked = inner.masters.clone();
        if inner.dns.is_some() {
            // The node's DNS on the gateway.
            rules
                .node_ports
                .extend([(nat::Protocol::Udp, 53), (nat::Protocol::Tcp, 53)]);
        }
        rules.balances = balances(&inner.services, &rules.forwards);
        // A netlink round trip: short, but off the async threads all the same.
        tokio::task::spawn_blocking(move || nat::apply(&rules))
            .await
            .map_err(|e| NetError::Thread(format!("the nftables task failed: {e}")))?
    }
}

fn protocol(p: Protocol) -> nat::Protocol {
    match p {
        Protocol::Tcp => nat::Protocol::Tcp,
        Protocol::Udp => nat::Protocol::Udp,
    }
}

/// The NAT table for what is attached now (the guard's lists are the caller's).
fn rules(subnet: Ipv4Net, runs: &BTreeMap<String, (Attached, Vec<PortMapping>)>) -> nat::Rules {
    let forwards = runs
        .values()
        .flat_map(|(attached, ports)| {
            ports.iter().map(move |p| nat::Forward {
                protocol: protocol(p.protocol),
                host_port: p.host,
                address: attached.address.addr(),
                container_port: p.container,
            })
        })
        .collect();
    nat::Rules {
        bridge: bridge::BRIDGE.to_owned(),
        subnet,
        forwards,
        // Containers' traffic to other nodes' containers keeps its addresses.
        mesh_link: Some(mesh::MESH_LINK.to_owned()),
        // The guard's lists and the services: `Network::apply_rules` fills them in.
        node_ports: Vec::new(),
        blocked: Vec::new(),
        balances: Vec::new(),
    }
}

/// The services as the node's table routes them: each address over its running replicas,
/// and its published ports, but those a run of this node publishes itself (its own
/// replica there takes them).
fn balances(table: &ServiceTable, forwards: &[nat::Forward]) -> Vec<nat::Balance> {
    table
        .services
        .iter()
        .map(|service| nat::Balance {
            address: service.address,
            backends: service.replicas.clone(),
            ports: service
                .publish
                .iter()
                .map(|p| nat::RoutedPort {
                    protocol: protocol(p.protocol),
                    host_port: p.host,
                    container_port: p.container,
                })
                .filter(|p| {
                    !forwards
                        .iter()
                        .any(|f| f.protocol == p.protocol && f.host_port == p.host_port)
                })
                .collect(),
        })
        .collect()
}

/// Removes what an earlier agent left: every namespace under `dir` with its veth.
async fn sweep(handle: &rtnetlink::Handle, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let run = entry.file_name().to_string_lossy().into_owned();
        let left = Attached {
            netns: entry.path(),
            node_link: attach::node_link_name(&run),
            // Not needed to take it down.
            address: Ipv4Net::default(),
        };
        match attach::detach(handle, &left).await {
            Ok(()) => log::info!("removed the network of an earlier agent's run {run}"),
            Err(e) => log::warn!("cannot remove the network of an earlier run {run}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(address: &str) -> Attached {
        Attached {
            netns: "/n".into(),
            node_link: "cv0".into(),
            address: address.parse().expect("address"),
        }
    }

    #[test]
    fn the_master_knows_the_names_of_the_links_this_agent_makes() {
        assert_eq!(
            cloudos_cluster::subnets::NODE_LINKS,
            [bridge::BRIDGE, mesh::MESH_LINK]
        );
    }

    #[test]
    fn addresses_are_given_round_the_subnet_not_the_lowest_free_again() {
        let subnet: Ipv4Net = "10.250.0.0/29".parse().unwrap();
        let a = |last: u8| std::net::Ipv4Addr::new(10, 250, 0, last);
        let none = BTreeSet::new();
        // .1 is the bridge's; containers get .2 to .6.
        assert_eq!(next_address(&subnet, None, &none), Some(a(2)));
        assert_eq!(next_address(&subnet, Some(a(2)), &none), Some(a(3)));
        // .3 was freed, yet the next is .4.
        let taken: BTreeSet<_> = [a(2)].into();
        assert_eq!(next_address(&subnet, Some(a(3)), &taken), Some(a(4)));
        // Round the end, past the taken ones.
        let taken: BTreeSet<_> = [a(2), a(3)].into();
        assert_eq!(next_address(&subnet, Some(a(6)), &taken), Some(a(4)));
        let full: BTreeSet<_> = (2..=6).map(a).collect();
        assert_eq!(next_address(&subnet, Some(a(4)), &full), None);
    }

    #[test]
    fn each_run_forwards_its_own_ports_to_its_own_address() {
        let port = |t: &str| t.parse::<PortMapping>().expect(t);
        let mut runs = BTreeMap::new();
        runs.insert(
            "a".to_owned(),
            (attached("10.250.3.2/24"), vec![port("8080:80")]),
        );
        runs.insert(
            "b".to_owned(),
            (
                attached("10.250.3.3/24"),
                vec![port("8081:80"), port("53:53/udp")],
            ),
        );
        let r = rules("10.250.3.0/24".parse().expect("net"), &runs);
        assert_eq!(r.bridge, bridge::BRIDGE);
        let seen: Vec<String> = r
            .forwards
            .iter()
            .map(|f| {
                format!(
                    "{:?} {} {}:{}",
                    f.protocol, f.host_port, f.address, f.container_port
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                "Tcp 8080 10.250.3.2:80",
                "Tcp 8081 10.250.3.3:80",
                "Udp 53 10.250.3.3:53"
            ]
        );
        // Another run asking for 8081/tcp is refused; 8081/udp or 8082 are free.
        let wanted = [port("9000:1"), port("8081:90")];
        let (run, p) = port_in_use(&runs, &wanted).expect("clash");
        assert_eq!((run, p.host), ("b", 8081));
        assert!(port_in_use(&runs, &[port("8081:80/udp"), port("8082:80")]).is_none());
    }
}
