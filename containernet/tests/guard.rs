//! Real packets through the node's guard: what a container may open on its node and past
//! it. The test makes a network namespace of its own to play the node (nothing of this
//! host's network is touched), with the bridge and two containers on it (a web server and
//! a client); an "outside" namespace joined to the node by a veth pair as the node's LAN
//! (the node is 192.0.2.1 there, the outside 192.0.2.2 and 192.0.2.3, a master's API
//! address the containers may not reach); and a "peer" namespace joined by another veth
//! pair named as the node's mesh link, which plays another node's containers: it routes the
//! node's subnet through that link, as the mesh's peers do. The node itself listens on a
//! port the admin opened to containers and on one it did not, the latter on `[::]` (IPv4
//! and IPv6) as the master's API does. TCP servers tell each caller the address they see
//! it from. Needs root; no program (sockets are opened by threads that
//! enter the namespaces).
//!
//! A dropped connection is waited for a second ([`common::NO_ANSWER`]).

mod common;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cloudos_containernet::attach::{attach, detach};
use cloudos_containernet::bridge::{ensure, required_index};
use cloudos_containernet::nat::{self, Forward, Protocol, Rules};
use cloudos_containernet::{connect, netns, NetError};
use cloudos_testkit::{require, root};
use common::{
    address, assert_unanswered, seen, up, veth_to, Namespaces, Server, NO_ANSWER, PATIENCE,
};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::time::TimeVal;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};

const BRIDGE: &str = "cngd0";
/// The node's end of its LAN, and the outside's.
const LAN: &str = "lan0";
const OUTSIDE_LAN: &str = "lan0o";
/// The node's end of the link that plays its mesh, and the peer's.
const MESH: &str = "cngdwg";
const PEER_MESH: &str = "cngdwgp";
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Another address of the outside: a master's API, blocked to containers.
const MASTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 250, 6, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 250, 6, 2);
/// Another container on the bridge, which calls the first through the node (hairpin).
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 250, 6, 3);
/// The node's and the peer's addresses on the mesh's stand-in.
const NODE_MESH: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PUBLISHED: u16 = 8080;
const CONTAINER_PORT: u16 = 80;
/// The servers outside and on the peer.
const OUTSIDE_PORT: u16 = 9000;
/// The node's own listeners: one the admin opens to containers (metrics), one not (API).
const OPEN: u16 = 9101;
const CLOSED: u16 = 9443;

/// The namespace at `path`, joined to this one by a veth pair: `near` here with
/// `near_net`, `far` there with `far_net` (and more addresses in `also`), routing `routes`
/// back through this one's end.
async fn joined(
    handle: &Handle,
    path: &Path,
    (near, near_net): (&'static str, &'static str),
    (far, far_net): (&'static str, &'static str),
    also: &'static [&'static str],
    routes: &'static [(Ipv4Net, Ipv4Addr)],
) -> Result<(), NetError> {
    netns::create(path)?;
    veth_to(handle, near, far, path).await?;
    let index = required_index(handle, near).await?;
    address(handle, index, near_net).await?;
    up(handle, index).await?;
    netns::within(path, move || {
        Box::pin(async move {
            let handle = connect()?;
            up(&handle, required_index(&handle, "lo").await?).await?;
            let index = required_index(&handle, far).await?;
            for net in std::iter::once(&far_net).chain(also) {
                address(&handle, index, net).await?;
            }
            up(&handle, index).await?;
            for (net, via) in routes {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(net.network(), net.prefix_len())
                    .gateway(*via)
                    .build();
                handle
                    .route()
                    .add(route)
                    .execute()
                    .await
                    .map_err(|e| NetError::Thread(format!("adding the route to {net}: {e}")))?;
            }
            Ok(())
        })
    })
}

/// The address the server at `to` saw a call from the namespace at `from` come from, the
/// call leaving from `source` (one of that namespace's addresses); it must open.
fn seen_as(from: &Path, source: Ipv4Addr, to: Ipv4Addr, port: u16) -> IpAddr {
    let called = common::from(Some(from), move || -> std::io::Result<String> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(source, 0)),
        )?;
        // A blocking connect gives up after the send timeout.
        let patience = TimeVal::new(PATIENCE.as_secs() as i64, 0);
        socket::setsockopt(&fd, sockopt::SendTimeout, &patience)?;
        socket::connect(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(to, port)),
        )?;
        let mut stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        Ok(seen)
    });
    let seen = called.unwrap_or_else(|e| panic!("{source} calling {to}:{port}: {e}"));
    seen.parse().unwrap_or_else(|e| panic!("{seen:?}: {e}"))
}

/// The IPv6 addresses of this namespace, but loopback's, each with its link's index.
async fn ipv6_addresses(handle: &Handle) -> Result<Vec<(Ipv6Addr, u32)>, NetError> {
    let mut out = Vec::new();
    let mut addresses = handle.address().get().execute();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(|e| NetError::Thread(format!("reading the addresses: {e}")))?
    {
        for attribute in &message.attributes {
            if let AddressAttribute::Address(IpAddr::V6(ip)) = attribute {
                if !ip.is_loopback() {
                    out.push((*ip, message.header.index));
                }
            }
        }
    }
    Ok(out)
}

/// A TCP connection from the namespace at `from` to `to` (a link-local address, reached
/// through `link` there): the address the server saw it from, or why it did not open
/// within [`NO_ANSWER`].
fn call6(from: &Path, link: &'static str, to: Ipv6Addr, port: u16) -> std::io::Result<IpAddr> {
    common::from(Some(from), move || {
        let scope = nix::net::if_::if_nametoindex(link)?;
        let to = SocketAddr::V6(SocketAddrV6::new(to, port, 0, scope));
        let mut stream = TcpStream::connect_timeout(&to, NO_ANSWER)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        seen.parse()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{seen:?}: {e}")))
    })
}

fn rules(node_ports: Vec<(Protocol, u16)>, blocked: Vec<Ipv4Addr>) -> Rules {
    Rules {
        bridge: BRIDGE.into(),
        subnet: "10.250.6.0/24".parse().unwrap(),
        forwards: vec![Forward {
            protocol: Protocol::Tcp,
            host_port: PUBLISHED,
            address: CONTAINER,
            container_port: CONTAINER_PORT,
        }],
        mesh_link: Some(MESH.into()),
        node_ports,
        blocked,
        balances: Vec::new(),
    }
}

#[test]
fn containers_reach_only_the_nodes_open_ports_and_no_blocked_address() {
    require!(root("network namespaces and nftables"));
    let dir = tempfile::tempdir().expect("temp dir");
    let dir: PathBuf = dir.path().to_owned();
    let result = std::thread::spawn(move || -> Result<(), NetError> {
        // This thread, and the threads it starts, are the node.
        unshare(CloneFlags::CLONE_NEWNET).expect("a namespace for the node");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let [container_ns, client_ns, outside_ns, peer_ns] =
            ["container", "client", "outside", "peer"].map(|name| dir.join(name));
        let namespaces = Namespaces(vec![
            container_ns.clone(),
            client_ns.clone(),
            outside_ns.clone(),
            peer_ns.clone(),
        ]);
        let (bridge, attached) = runtime.block_on(async {
            let handle = connect()?;
            up(&handle, required_index(&handle, "lo").await?).await?;
            let gateway = Ipv4Net::new(GATEWAY, 24).unwrap();
            let bridge = ensure(&handle, BRIDGE, &gateway).await?;
            let mut attached = Vec::new();
            for (name, ns, address) in [
                ("guard-web", &container_ns, CONTAINER),
                ("guard-client", &client_ns, CLIENT),
            ] {
                let net = Ipv4Net::new(address, 24).unwrap();
                attached.push(attach(&handle, bridge, name, ns, net, GATEWAY).await?);
            }
            joined(
                &handle,
                &outside_ns,
                (LAN, "192.0.2.1/24"),
                (OUTSIDE_LAN, "192.0.2.2/24"),
                &["192.0.2.3/24"],
                &[],
            )
            .await?;
            // The peer routes the node's subnet through the link, as a mesh peer does.
            const PEER_ROUTES: &[(Ipv4Net, Ipv4Addr)] = &[(
                Ipv4Net::new_assert(Ipv4Addr::new(10, 250, 6, 0), 24),
                NODE_MESH,
            )];
            joined(
                &handle,
                &peer_ns,
                (MESH, "10.99.0.1/30"),
                (PEER_MESH, "10.99.0.2/30"),
                &[],
                PEER_ROUTES,
            )
            .await?;
            Ok::<_, NetError>((bridge, attached))
        })?;
        let container = Some(container_ns.as_path());
        let client = Some(client_ns.as_path());
        let outside = Some(outside_ns.as_path());
        let peer = Some(peer_ns.as_path());
        // The node's listeners: this thread's namespace, opened from this thread.
        let node_ns = Path::new("/proc/thread-self/ns/net");
        let servers = [
            Server::start(&container_ns, CONTAINER_PORT),
            Server::start(&outside_ns, OUTSIDE_PORT),
            Server::start(&peer_ns, OUTSIDE_PORT),
            Server::start(node_ns, OPEN),
            Server::start_at(node_ns, (Ipv6Addr::UNSPECIFIED, CLOSED).into()),
        ];

        // No table: a container opens any port of its node, by either of its addresses,
        // and so does the peer through the mesh.
        assert_eq!(seen(container, GATEWAY, CLOSED), CONTAINER);
        assert_eq!(seen(container, NODE, CLOSED), CONTAINER);
        assert_eq!(seen(peer, NODE_MESH, CLOSED), PEER);

        nat::apply(&rules(vec![(Protocol::Tcp, OPEN)], vec![MASTER]))?;

        // The node, to its containers: the port the admin opened, nothing else.
        assert_unanswered(
            container,
            GATEWAY,
            CLOSED,
            "a port not opened, on the gateway address",
        );
        assert_unanswered(
            container,
            NODE,
            CLOSED,
            "a port not opened, on the node's LAN address",
        );
        assert_eq!(
            seen(container, GATEWAY, OPEN),
            CONTAINER,
            "the opened port, on the gateway address"
        );
        assert_eq!(
            seen(container, NODE, OPEN),
            CONTAINER,
            "the opened port, on the node's LAN address"
        );
        assert_eq!(
            seen(outside, NODE, CLOSED),
            OUTSIDE,
            "the guard is the containers': the LAN still reaches the node"
        );

        // What the NAT table did before it still works.
        assert_eq!(
            seen(outside, NODE, PUBLISHED),
            OUTSIDE,
            "a published port reaches the container from outside"
        );
        assert_eq!(
            seen(client, NODE, PUBLISHED),
            GATEWAY,
            "hairpin: a container reaches a published port of its node through the node"
        );
        assert_eq!(
            seen(container, GATEWAY, PUBLISHED),
            GATEWAY,
            "hairpin on the gateway address: a published port is no port of the node"
        );
        assert_eq!(
            seen(container, OUTSIDE, OUTSIDE_PORT),
            NODE,
            "the container reaches out from the node's address"
        );
        assert_eq!(
            seen(None, CONTAINER, CONTAINER_PORT),
            GATEWAY,
            "the node itself reaches its container: the answers come back"
        );
        assert_eq!(
            seen(None, NODE, PUBLISHED),
            NODE,
            "the node reaches a published port on its own LAN address"
        );

        // Past the node: not the blocked address, whichever port; the rest of the LAN yes.
        assert_unanswered(container, MASTER, OUTSIDE_PORT, "a blocked address");
        assert_unanswered(client, MASTER, OUTSIDE_PORT, "a blocked address");
        assert_eq!(seen(client, OUTSIDE, OUTSIDE_PORT), NODE);
        assert_eq!(
            seen_as(&outside_ns, MASTER, NODE, PUBLISHED),
            MASTER,
            "the blocked address calls a published port and has its answers"
        );

        // Through the mesh: the node's containers, never the node, not even the port the
        // admin opened; the node's own calls into it have their answers.
        assert_eq!(
            seen(peer, CONTAINER, CONTAINER_PORT),
            PEER,
            "another node's container reaches this node's by forwarding"
        );
        assert_unanswered(peer, NODE_MESH, CLOSED, "the node through the mesh");
        assert_unanswered(peer, GATEWAY, OPEN, "the node through the mesh");
        assert_eq!(
            seen(None, PEER, OUTSIDE_PORT),
            NODE_MESH,
            "the node reaches into the mesh: the answers come back"
        );
        assert_eq!(
            seen(container, PEER, OUTSIDE_PORT),
            CONTAINER,
            "into the mesh a container keeps its address"
        );

        // IPv6, which the table does not see: the bridge has none, and no IPv6 address of
        // the node opens to a container (by now the links have theirs, as the LAN shows).
        let node_ipv6 = runtime.block_on(async { ipv6_addresses(&connect()?).await })?;
        assert!(
            !node_ipv6.iter().any(|(_, link)| *link == bridge),
            "the bridge has no IPv6 address: {node_ipv6:?}"
        );
        let lan = runtime.block_on(async { required_index(&connect()?, LAN).await })?;
        let (lan_ipv6, _) = *node_ipv6
            .iter()
            .find(|(_, link)| *link == lan)
            .expect("the LAN link has its link-local address");
        match call6(&outside_ns, OUTSIDE_LAN, lan_ipv6, CLOSED) {
            Ok(IpAddr::V6(_)) => {}
            other => panic!("the node's listener on [::] answers the LAN over IPv6: {other:?}"),
        }
        let tries: Vec<_> = node_ipv6
            .iter()
            .map(|&(ip, _)| {
                let container_ns = container_ns.clone();
                std::thread::spawn(move || (ip, call6(&container_ns, "eth0", ip, CLOSED)))
            })
            .collect();
        for caller in tries {
            let (ip, result) = caller.join().expect("a caller");
            assert!(
                result.is_err(),
                "the container reached the node on {ip}: {result:?}"
            );
        }

        // The table replaced whole by one with nothing opened and nothing blocked: the
        // opened port is closed again, the blocked address is reached.
        nat::apply(&rules(Vec::new(), Vec::new()))?;
        assert_unanswered(container, GATEWAY, OPEN, "no port opened any more");
        assert_eq!(
            seen(container, MASTER, OUTSIDE_PORT),
            NODE,
            "nothing blocked any more"
        );
        assert_eq!(seen(outside, NODE, PUBLISHED), OUTSIDE);

        // No table: the node is open to its containers again.
        nat::clear()?;
        assert_eq!(seen(container, GATEWAY, CLOSED), CONTAINER);
        assert_eq!(seen(peer, NODE_MESH, OPEN), PEER);

        drop(servers);
        runtime.block_on(async {
            let handle = connect()?;
            for container in &attached {
                detach(&handle, container).await?;
            }
            Ok::<_, NetError>(())
        })?;
        netns::remove(&outside_ns)?;
        netns::remove(&peer_ns)?;
        drop(namespaces);
        Ok(())
    })
    .join()
    .expect("the node's thread");
    result.expect("the node's guard");
}
