//! Real packets through the mesh. Two namespaces play two nodes (nothing of this host's
//! network is touched), joined by a veth pair as their LAN: node A is 192.0.2.1 there,
//! node B 192.0.2.2. Each node has the bridge with one container on it (A's 10.250.0.2 in
//! 10.250.0.0/24, B's 10.250.1.2 in 10.250.1.0/24), the NAT table with the mesh link left
//! out of its masquerade, and the mesh with the other node as its one peer. TCP servers in
//! the containers tell each caller the address they see it from; packet sockets on node
//! A's LAN link and bridge show what crosses them. Needs root and the kernel's WireGuard;
//! no program (sockets are opened by threads that enter the namespaces).

mod common;

use std::ffi::CString;
use std::fs::File;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use cloudos_containernet::attach::attach;
use cloudos_containernet::bridge::{ensure, link_index, required_index, BRIDGE};
use cloudos_containernet::mesh::{self, Mesh, MeshKey, MeshPeer, MESH_LINK, MESH_PORT};
use cloudos_containernet::nat::{self, Rules};
use cloudos_containernet::{connect, netns, NetError};
use cloudos_testkit::{require, root, Missing};
use common::{address, call, from, seen, up, veth_to, Namespaces, Server, PATIENCE};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::libc;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The nodes' ends of their LAN.
const LAN_A: &str = "lan0";
const LAN_B: &str = "lan0b";
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GATEWAY_A: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const GATEWAY_B: Ipv4Addr = Ipv4Addr::new(10, 250, 1, 1);
const CONTAINER_A: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const CONTAINER_B: Ipv4Addr = Ipv4Addr::new(10, 250, 1, 2);
/// The servers that tell callers their address, in the containers and on node B.
const PORT: u16 = 7000;
/// A server in container B that reads what it is sent and says how many bytes came.
const SINK_PORT: u16 = 7001;
/// What container A sends container B, over and over, to look for on the wire.
const MARKER: &[u8] = b"cloudos-mesh-plaintext-payload;";

/// One node: its namespace, its container's, its key, its subnet and LAN address.
struct Node {
    ns: PathBuf,
    container: PathBuf,
    key: Arc<MeshKey>,
    gateway: Ipv4Addr,
    lan: Ipv4Addr,
}

impl Node {
    fn subnet(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, 24).unwrap().trunc()
    }

    /// The node as the other's peer: at its LAN address, carrying its subnet and `more`.
    fn as_peer(&self, more: &[&str]) -> MeshPeer {
        let mut allowed = vec![self.subnet()];
        allowed.extend(more.iter().map(|n| n.parse::<Ipv4Net>().unwrap()));
        MeshPeer {
            public_key: self.key.public(),
            endpoint: Some(SocketAddr::V4(SocketAddrV4::new(self.lan, MESH_PORT))),
            allowed,
            keepalive: None,
        }
    }

    /// Applies the node's mesh with `peers`.
    fn mesh(&self, peers: Vec<MeshPeer>) {
        let (key, address) = (self.key.clone(), self.gateway);
        inside(&self.ns, move |handle| async move {
            let mesh = Mesh {
                key: &key,
                port: MESH_PORT,
                address,
                peers,
            };
            mesh::apply(&handle, &mesh).await
        })
    }

    fn device(&self) -> Option<mesh::Device> {
        inside(&self.ns, |_| async { mesh::device() })
    }

    /// The subnets routed through the mesh link, with their preferred source.
    fn mesh_routes(&self) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
        inside(&self.ns, |handle| async move {
            let Some(index) = link_index(&handle, MESH_LINK).await? else {
                return Ok(Vec::new());
            };
            let routes: Vec<_> = handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .map_err(|e| NetError::Thread(format!("reading routes: {e}")))?;
            Ok(routes
                .into_iter()
                .filter(|r| {
                    r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.attributes.contains(&RouteAttribute::Oif(index))
                })
                .map(|r| {
                    let find = |source: bool| {
                        r.attributes.iter().find_map(|a| match (a, source) {
                            (RouteAttribute::Destination(RouteAddress::Inet(ip)), false)
                            | (RouteAttribute::PrefSource(RouteAddress::Inet(ip)), true) => {
                                Some(*ip)
                            }
                            _ => None,
                        })
                    };
                    let net =
                        Ipv4Net::new(find(false).unwrap(), r.header.destination_prefix_length);
                    (net.unwrap(), find(true))
                })
                .collect())
        })
    }
}

/// Runs `work` with a netlink handle inside the namespace at `ns`; an error fails the test.
fn inside<T, W, F>(ns: &Path, work: W) -> T
where
    T: Send + 'static,
    W: FnOnce(Handle) -> F + Send + 'static,
    F: Future<Output = Result<T, NetError>> + 'static,
{
    netns::within(ns, move || {
        Box::pin(async move { work(connect()?).await })
            as Pin<Box<dyn Future<Output = Result<T, NetError>>>>
    })
    .unwrap_or_else(|e| panic!("in {}: {e}", ns.display()))
}

/// Whether this kernel has WireGuard: the mesh applied (no peers) in a namespace of its
/// own, which ends with its thread.
fn wireguard() -> Result<(), Missing> {
    let probe = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("a namespace for the probe");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let key = MeshKey::generate();
            let mesh = Mesh {
                key: &key,
                port: MESH_PORT,
                address: GATEWAY_A,
                peers: Vec::new(),
            };
            mesh::apply(&connect()?, &mesh).await
        })
    });
    match probe.join().expect("the probe's thread") {
        Ok(()) => Ok(()),
        Err(NetError::NoWireGuard { what }) => Err(Missing {
            need: format!("the kernel's WireGuard ({what})"),
            fix: "run on a kernel with the wireguard module built in or loadable \
                  (CONFIG_WIREGUARD; Debian's kernels have it)"
                .into(),
        }),
        Err(e) => panic!("applying an empty mesh: {e}"),
    }
}

/// A node's own setup: lo, its LAN end addressed and up, the bridge, its container, the
/// NAT table that leaves the mesh link out of the masquerade.
async fn node(
    handle: Handle,
    lan_link: &str,
    lan: &str,
    gateway: Ipv4Addr,
    container: PathBuf,
) -> Result<(), NetError> {
    up(&handle, required_index(&handle, "lo").await?).await?;
    let index = required_index(&handle, lan_link).await?;
    address(&handle, index, lan).await?;
    up(&handle, index).await?;
    let subnet = Ipv4Net::new(gateway, 24).unwrap();
    let bridge = ensure(&handle, BRIDGE, &subnet).await?;
    let address = Ipv4Net::new(Ipv4Addr::from(u32::from(gateway) + 1), 24).unwrap();
    attach(
        &handle,
        bridge,
        "mesh-container",
        &container,
        address,
        gateway,
    )
    .await?;
    nat::apply(&Rules {
        bridge: BRIDGE.into(),
        subnet,
        forwards: Vec::new(),
        mesh_link: Some(MESH_LINK.into()),
        node_ports: Vec::new(),
        blocked: Vec::new(),
        balances: Vec::new(),
    })
}

/// A packet socket on one link of a namespace, keeping every frame it sees (both ways)
/// until it is stopped.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    fn start(ns: &Path, link: &'static str) -> Capture {
        let ns = File::open(ns).expect("the namespace file");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready, listening) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let socket = packet_socket(link);
            ready.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buffer = vec![0u8; 1 << 17];
            while !stopped.load(Ordering::Relaxed) {
                match nix::sys::socket::recv(
                    socket.as_raw_fd(),
                    &mut buffer,
                    nix::sys::socket::MsgFlags::empty(),
                ) {
                    Ok(len) => frames.push(buffer[..len].to_vec()),
                    Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => panic!("capturing on {link}: {e}"),
                }
            }
            frames
        });
        listening.recv().expect("the capture listens");
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops listening; the frames seen.
    fn frames(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the capture's thread")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An AF_PACKET socket bound to `link`, seeing every protocol, reads timing out every
/// 50 ms so that its thread sees the stop.
fn packet_socket(link: &str) -> OwnedFd {
    let name = CString::new(link).unwrap();
    // SAFETY: a NUL-terminated name, read only.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(
        index,
        0,
        "the link {link}: {}",
        std::io::Error::last_os_error()
    );
    // Protocol 0 until bound: a socket made for ETH_P_ALL would see every link's frames
    // until bind narrows it to one.
    // SAFETY: no pointers; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "a packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid value of every field.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    address.sll_ifindex = index as i32;
    // SAFETY: the address is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        bound,
        0,
        "binding to {link}: {}",
        std::io::Error::last_os_error()
    );
    setsockopt(&socket, sockopt::ReceiveTimeout, &TimeVal::new(0, 50_000)).unwrap();
    socket
}

/// An IPv4 packet in an Ethernet frame: addresses, protocol, and UDP's ports.
#[derive(Debug)]
struct Ipv4Packet {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    udp_ports: Option<(u16, u16)>,
}

fn ipv4(frame: &[u8]) -> Option<Ipv4Packet> {
    const ETHERNET: usize = 14;
    if frame.len() < ETHERNET + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETHERNET..];
    let header = usize::from(ip[0] & 0x0f) * 4;
    let address = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let protocol = ip[9];
    let udp_ports = (protocol == libc::IPPROTO_UDP as u8 && ip.len() >= header + 4).then(|| {
        let port = |at: usize| u16::from_be_bytes([ip[header + at], ip[header + at + 1]]);
        (port(0), port(2))
    });
    Some(Ipv4Packet {
        source: address(12),
        destination: address(16),
        protocol,
        udp_ports,
    })
}

fn holds_marker(frame: &[u8]) -> bool {
    frame.windows(MARKER.len()).any(|w| w == MARKER)
}

/// Sends container B's sink `copies` markers from container A; the bytes B says it got.
fn send_markers(container_a: &Path, copies: usize) -> usize {
    from(Some(container_a), move || -> std::io::Result<usize> {
        let to = SocketAddr::V4(SocketAddrV4::new(CONTAINER_B, SINK_PORT));
        let mut stream = TcpStream::connect_timeout(&to, PATIENCE)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        for _ in 0..copies {
            stream.write_all(MARKER)?;
        }
        stream.shutdown(Shutdown::Write)?;
        let mut got = String::new();
        stream.read_to_string(&mut got)?;
        got.parse()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{got:?}: {e}")))
    })
    .expect("container A sends container B the markers")
}

#[test]
#[ignore = "needs the kernel's WireGuard, which the build host's kernel may lack: tests/tests/kernel_qemu.rs runs it in a guest with the image's own kernel"]
fn containers_on_two_nodes_talk_through_the_mesh_by_their_own_addresses_encrypted() {
    require!(root("network namespaces, WireGuard and nftables"));
    require!(wireguard());
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let a = Node {
        ns: dir.join("node-a"),
        container: dir.join("container-a"),
        key: Arc::new(MeshKey::generate()),
        gateway: GATEWAY_A,
        lan: NODE_A,
    };
    let b = Node {
        ns: dir.join("node-b"),
        container: dir.join("container-b"),
        key: Arc::new(MeshKey::generate()),
        gateway: GATEWAY_B,
        lan: NODE_B,
    };
    // Dropped last: the servers and captures in them stop first.
    let _namespaces = Namespaces(vec![
        a.container.clone(),
        b.container.clone(),
        a.ns.clone(),
        b.ns.clone(),
    ]);
    netns::create(&a.ns).expect("node A's namespace");
    netns::create(&b.ns).expect("node B's namespace");
    // The LAN: made in node A, its far end moved into node B.
    let node_b = b.ns.clone();
    inside(&a.ns, move |handle| async move {
        veth_to(&handle, LAN_A, LAN_B, &node_b).await
    });
    let container = a.container.clone();
    inside(&a.ns, move |handle| {
        node(handle, LAN_A, "192.0.2.1/24", GATEWAY_A, container)
    });
    let container = b.container.clone();
    inside(&b.ns, move |handle| {
        node(handle, LAN_B, "192.0.2.2/24", GATEWAY_B, container)
    });
    let (container_a, container_b) = (Some(a.container.as_path()), Some(b.container.as_path()));
    let _servers = [
        Server::start(&a.container, PORT),
        Server::start(&b.container, PORT),
        Server::start(&b.ns, PORT),
        Server::serve(&b.container, SINK_PORT, |mut stream, _| {
            let mut got = 0;
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                got += n;
            }
            let _ = stream.write_all(got.to_string().as_bytes());
        }),
    ];
    assert!(
        call(container_a, CONTAINER_B, PORT).is_err(),
        "no mesh yet: node A has no route to B's subnet"
    );

    a.mesh(vec![b.as_peer(&[])]);
    b.mesh(vec![a.as_peer(&[])]);
    let device = a.device().expect("node A's device");
    assert_eq!(device.public_key, Some(a.key.public()));
    assert_eq!(device.port, MESH_PORT);
    assert_eq!(device.peers.len(), 1);
    assert_eq!(device.peers[0].peer, b.as_peer(&[]), "the peer as set");
    assert_eq!(device.peers[0].last_handshake, None, "no traffic yet");
    assert_eq!(
        a.mesh_routes(),
        [(b.subnet(), Some(GATEWAY_A))],
        "B's subnet through the link, from A's address"
    );

    assert_eq!(
        seen(container_a, CONTAINER_B, PORT),
        CONTAINER_A,
        "container B sees container A by its own address: no masquerade into the mesh"
    );
    assert_eq!(
        seen(container_b, CONTAINER_A, PORT),
        CONTAINER_B,
        "and back"
    );
    assert_eq!(
        seen(Some(&a.ns), CONTAINER_B, PORT),
        GATEWAY_A,
        "node A itself reaches container B, from its address on the mesh"
    );
    assert_eq!(
        seen(container_a, NODE_B, PORT),
        NODE_A,
        "past the node outside the mesh, containers are still masqueraded"
    );

    // What crosses the LAN while container A sends B a recognizable payload; and, to show
    // the capture would see it, what crosses A's bridge.
    let on_lan = Capture::start(&a.ns, LAN_A);
    let on_bridge = Capture::start(&a.ns, BRIDGE);
    let copies = 2000;
    assert_eq!(send_markers(&a.container, copies), copies * MARKER.len());
    let (lan_frames, bridge_frames) = (on_lan.frames(), on_bridge.frames());
    let lan_packets: Vec<_> = lan_frames.iter().filter_map(|f| ipv4(f)).collect();
    let wireguard = |p: &&Ipv4Packet| {
        p.udp_ports == Some((MESH_PORT, MESH_PORT))
            && [(p.source, p.destination), (p.destination, p.source)].contains(&(NODE_A, NODE_B))
    };
    assert!(
        lan_packets.iter().filter(wireguard).count() >= 10,
        "the payload crossed the LAN in WireGuard's UDP packets between the nodes: {lan_packets:?}"
    );
    assert!(
        lan_packets.iter().all(|p| wireguard(&p)),
        "every IPv4 packet on the LAN is WireGuard's: {:?}",
        lan_packets.iter().find(|p| !wireguard(p))
    );
    assert!(
        !lan_packets
            .iter()
            .any(|p| p.source == CONTAINER_A || p.destination == CONTAINER_A),
        "no packet on the LAN shows container A's address"
    );
    assert!(
        !lan_frames.iter().any(|f| holds_marker(f)),
        "the payload never crosses the LAN in the clear"
    );
    assert!(
        bridge_frames.iter().any(|f| holds_marker(f)),
        "the capture sees the payload where it is in the clear (A's bridge)"
    );
    assert!(bridge_frames
        .iter()
        .filter_map(|f| ipv4(f))
        .any(|p| p.source == CONTAINER_A && p.protocol == libc::IPPROTO_TCP as u8));

    // The same mesh again changes nothing: the peer keeps its session.
    let before = a.device().unwrap().peers[0].clone();
    assert!(before.last_handshake.is_some(), "a handshake happened");
    assert!(before.received > 0 && before.sent > 0, "{before:?}");
    a.mesh(vec![b.as_peer(&[])]);
    let after = a.device().unwrap().peers[0].clone();
    assert_eq!(
        after.last_handshake, before.last_handshake,
        "the peer was updated, not dropped and made again"
    );
    assert_eq!(seen(container_a, CONTAINER_B, PORT), CONTAINER_A);

    // A subnet B relays for comes and goes with the peer's list.
    let relayed: Ipv4Net = "10.250.7.0/24".parse().unwrap();
    a.mesh(vec![b.as_peer(&["10.250.7.0/24"])]);
    assert_eq!(
        a.mesh_routes(),
        [(b.subnet(), Some(GATEWAY_A)), (relayed, Some(GATEWAY_A))]
    );
    assert_eq!(
        a.device().unwrap().peers[0].peer.allowed,
        [b.subnet(), relayed]
    );
    a.mesh(vec![b.as_peer(&[])]);
    assert_eq!(a.mesh_routes(), [(b.subnet(), Some(GATEWAY_A))]);
    assert_eq!(a.device().unwrap().peers[0].peer.allowed, [b.subnet()]);

    // No peers: B's subnet is gone from A at once, and B's key from A's device.
    a.mesh(Vec::new());
    assert_eq!(a.mesh_routes(), []);
    assert_eq!(a.device().unwrap().peers, []);
    match call(Some(&a.ns), CONTAINER_B, PORT) {
        Err(e) if e.kind() == ErrorKind::NetworkUnreachable => {}
        other => panic!("node A reaching container B with no peer: {other:?}"),
    }
    assert!(call(container_a, CONTAINER_B, PORT).is_err());

    // Removed, twice; the bridge keeps the address the link had too.
    inside(&a.ns, |handle| async move {
        mesh::remove(&handle).await?;
        mesh::remove(&handle).await?;
        assert_eq!(link_index(&handle, MESH_LINK).await?, None);
        Ok(())
    });
    assert_eq!(a.device(), None);
    assert_eq!(
        seen(Some(&a.ns), CONTAINER_A, PORT),
        GATEWAY_A,
        "node A still reaches its own container from the bridge's address"
    );
    inside(&b.ns, |handle| async move { mesh::remove(&handle).await });
}
