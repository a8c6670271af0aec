//! Real packets through the node's table. The test makes a network namespace of its own to
//! play the node (nothing of this host's network is touched), with the bridge and two
//! containers on it (a web server and a client), and an "outside" namespace joined to the
//! node by a veth pair, as the node's LAN: the node is 192.0.2.1 there, the outside
//! 192.0.2.2, which has no route to the containers' subnet. TCP servers in the web
//! container and outside tell each caller the address they see it from. Needs root; no
//! program (sockets are opened by threads that enter the namespaces).
//! The web container calling its own published port needs hairpin mode on its bridge port
//! where br_netfilter hands bridged packets to the IP hooks (this host's kernel has it
//! built in); `attach` sets it.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cloudos_containernet::attach::{attach, detach};
use cloudos_containernet::bridge::{ensure, link_index, required_index};
use cloudos_containernet::nat::{self, Forward, Protocol, Rules};
use cloudos_containernet::{connect, netns, NetError};
use cloudos_testkit::{require, root};
use ipnet::Ipv4Net;
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

const BRIDGE: &str = "cntest0";
/// The node's end of its LAN, and the outside's.
const LAN: &str = "lan0";
const OUTSIDE_LAN: &str = "lan0o";
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 250, 9, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 250, 9, 2);
/// Another container on the bridge, which calls the first through the node.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 250, 9, 3);
const PUBLISHED: u16 = 8080;
const CONTAINER_PORT: u16 = 80;
const OUTSIDE_PORT: u16 = 9000;
/// How long a connection may take to open and answer; a refused one fails at once.
const PATIENCE: Duration = Duration::from_secs(2);

/// A TCP server on `port` in a namespace: tells each caller the address it sees the
/// caller from, and hangs up.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(netns: &Path, port: u16) -> Server {
        let ns = File::open(netns).expect("the namespace file");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready, listening) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("listening");
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accepting: {e}"),
                }
            }
        });
        listening.recv().expect("the server listens");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP connection to `to` from the namespace at `from` (None: the calling thread's):
/// the address the server saw it from, or why it did not open.
fn call(from: Option<&Path>, to: Ipv4Addr, port: u16) -> std::io::Result<IpAddr> {
    let ns = from.map(|p| File::open(p).expect("the namespace file"));
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
        }
        let to = SocketAddr::V4(SocketAddrV4::new(to, port));
        let mut stream = TcpStream::connect_timeout(&to, PATIENCE)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        seen.parse()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{seen:?}: {e}")))
    })
    .join()
    .expect("the caller's thread")
}

async fn up(handle: &Handle, index: u32) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("bringing link {index} up: {e}")))
}

async fn address(handle: &Handle, index: u32, net: &str) -> Result<(), NetError> {
    let net: Ipv4Net = net.parse().unwrap();
    handle
        .address()
        .add(index, IpAddr::V4(net.addr()), net.prefix_len())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("adding {net}: {e}")))
}

/// The outside's namespace at `path`, joined to this one by a veth pair: LAN here with the
/// node's address, the peer there with the outside's.
async fn outside(handle: &Handle, path: &Path) -> Result<(), NetError> {
    netns::create(path)?;
    handle
        .link()
        .add(LinkVeth::new(LAN, OUTSIDE_LAN).build())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("adding the LAN's veth pair: {e}")))?;
    let peer = required_index(handle, OUTSIDE_LAN).await?;
    let ns = File::open(path).unwrap();
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(peer)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("moving the LAN's far end: {e}")))?;
    let lan = required_index(handle, LAN).await?;
    address(handle, lan, "192.0.2.1/24").await?;
    up(handle, lan).await?;
    netns::within(path, || {
        Box::pin(async {
            let handle = connect()?;
            up(&handle, required_index(&handle, "lo").await?).await?;
            let lan = required_index(&handle, OUTSIDE_LAN).await?;
            address(&handle, lan, "192.0.2.2/24").await?;
            up(&handle, lan).await
        })
    })
}

/// Lets the namespaces at these paths go when dropped, also when an assertion failed
/// (their links go with them); the node's own namespace ends with its thread.
struct Namespaces(Vec<PathBuf>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = netns::remove(path);
        }
    }
}

fn rules(forwards: Vec<Forward>) -> Rules {
    Rules {
        bridge: BRIDGE.into(),
        subnet: "10.250.9.0/24".parse().unwrap(),
        forwards,
    }
}

/// The address the server at `to` saw a call from `from` come from; the call must open.
fn seen(from: Option<&Path>, to: Ipv4Addr, port: u16) -> IpAddr {
    call(from, to, port).unwrap_or_else(|e| panic!("{from:?} calling {to}:{port}: {e}"))
}

fn refused(result: std::io::Result<IpAddr>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn published_ports_reach_the_container_and_containers_reach_out_as_the_node() {
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
        let (container_ns, client_ns, outside_ns) = (
            dir.join("container"),
            dir.join("client"),
            dir.join("outside"),
        );
        let namespaces = Namespaces(vec![
            container_ns.clone(),
            client_ns.clone(),
            outside_ns.clone(),
        ]);
        let attached = runtime.block_on(async {
            let handle = connect()?;
            // The node's own connections to its own addresses go through lo.
            up(&handle, required_index(&handle, "lo").await?).await?;
            let gateway = Ipv4Net::new(GATEWAY, 24).unwrap();
            let bridge = ensure(&handle, BRIDGE, &gateway).await?;
            let attached = attach(
                &handle,
                bridge,
                "nat-web",
                &container_ns,
                Ipv4Net::new(CONTAINER, 24).unwrap(),
                GATEWAY,
            )
            .await?;
            let client = attach(
                &handle,
                bridge,
                "nat-client",
                &client_ns,
                Ipv4Net::new(CLIENT, 24).unwrap(),
                GATEWAY,
            )
            .await?;
            outside(&handle, &outside_ns).await?;
            Ok::<_, NetError>([attached, client])
        })?;
        let container = Some(container_ns.as_path());
        let client = Some(client_ns.as_path());
        let outside = Some(outside_ns.as_path());
        let servers = [
            Server::start(&container_ns, CONTAINER_PORT),
            Server::start(&outside_ns, OUTSIDE_PORT),
        ];

        // No table yet: the outside cannot answer the container, which it cannot route to.
        assert!(call(container, OUTSIDE, OUTSIDE_PORT).is_err());
        assert!(
            refused(call(outside, NODE, PUBLISHED)),
            "nothing on the node's 8080"
        );

        let web = Forward {
            protocol: Protocol::Tcp,
            host_port: PUBLISHED,
            address: CONTAINER,
            container_port: CONTAINER_PORT,
        };
        nat::apply(&rules(vec![web.clone()]))?;
        assert_eq!(
            seen(outside, NODE, PUBLISHED),
            OUTSIDE,
            "the published port reaches the container, which sees the caller as it is"
        );
        assert_eq!(
            seen(container, OUTSIDE, OUTSIDE_PORT),
            NODE,
            "the container reaches out from the node's address"
        );
        // Hairpin: without the masquerade the web container would answer the client
        // straight over the bridge, from an address the client did not call.
        assert_eq!(
            seen(client, NODE, PUBLISHED),
            GATEWAY,
            "hairpin: a container reaches a published port of its node through the node"
        );
        assert_eq!(
            seen(container, NODE, PUBLISHED),
            GATEWAY,
            "hairpin: a container reaches its own published port through the node"
        );
        assert_eq!(
            seen(None, NODE, PUBLISHED),
            NODE,
            "the node's own connection to its LAN address is forwarded too"
        );
        assert!(
            refused(call(None, Ipv4Addr::LOCALHOST, PUBLISHED)),
            "loopback is left alone"
        );
        assert!(
            refused(call(outside, NODE, PUBLISHED + 1)),
            "a port not published is the node's"
        );
        // The same rules again replace the table; they do not pile up.
        nat::apply(&rules(vec![web.clone()]))?;
        assert_eq!(seen(outside, NODE, PUBLISHED), OUTSIDE);

        // The table replaced by one without the forward: the port is gone at once.
        nat::apply(&rules(vec![]))?;
        assert!(
            refused(call(outside, NODE, PUBLISHED)),
            "the forward was replaced, not kept"
        );
        assert_eq!(
            seen(container, OUTSIDE, OUTSIDE_PORT),
            NODE,
            "masquerade stays"
        );

        // A forward under another port, then the table gone.
        nat::apply(&rules(vec![Forward {
            host_port: 8081,
            ..web
        }]))?;
        assert!(refused(call(outside, NODE, PUBLISHED)));
        assert_eq!(seen(outside, NODE, 8081), OUTSIDE);
        nat::clear()?;
        nat::clear()?;
        assert!(refused(call(outside, NODE, 8081)), "the table is gone");
        assert!(
            call(container, OUTSIDE, OUTSIDE_PORT).is_err(),
            "no masquerade: the outside cannot answer"
        );

        drop(servers);
        runtime.block_on(async {
            let handle = connect()?;
            for container in &attached {
                detach(&handle, container).await?;
                assert_eq!(link_index(&handle, &container.node_link).await?, None);
            }
            Ok::<_, NetError>(())
        })?;
        netns::remove(&outside_ns)?;
        assert!(!container_ns.exists() && !outside_ns.exists());
        drop(namespaces);
        Ok(())
    })
    .join()
    .expect("the node's thread");
    result.expect("the node's NAT");
}
