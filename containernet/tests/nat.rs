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

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cloudos_containernet::attach::{attach, detach};
use cloudos_containernet::bridge::{ensure, link_index, required_index};
use cloudos_containernet::nat::{self, Forward, Protocol, Rules};
use cloudos_containernet::{connect, netns, NetError};
use cloudos_testkit::{require, root};
use common::{address, call, refused, seen, up, veth_to, Namespaces, Server};
use ipnet::Ipv4Net;
use nix::sched::{unshare, CloneFlags};
use rtnetlink::Handle;

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

/// The outside's namespace at `path`, joined to this one by a veth pair: LAN here with the
/// node's address, the peer there with the outside's.
async fn outside(handle: &Handle, path: &Path) -> Result<(), NetError> {
    netns::create(path)?;
    veth_to(handle, LAN, OUTSIDE_LAN, path).await?;
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

fn rules(forwards: Vec<Forward>) -> Rules {
    Rules {
        bridge: BRIDGE.into(),
        subnet: "10.250.9.0/24".parse().unwrap(),
        forwards,
        mesh_link: None,
        node_ports: Vec::new(),
        blocked: Vec::new(),
        balances: Vec::new(),
    }
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
