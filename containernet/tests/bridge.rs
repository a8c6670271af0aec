//! Real namespaces, links and packets: the test makes a network namespace of its own to play
//! the node (nothing of this host's network is touched), puts the node's bridge in it, and
//! two containers' namespaces on the bridge; `ping` inside each container (through
//! `nsenter`) reaches the other and the node. Needs root, nsenter and ping.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use cloudos_containernet::attach::{attach, detach, CONTAINER_LINK};
use cloudos_containernet::bridge::{ensure, link_index};
use cloudos_containernet::{connect, NetError};
use cloudos_testkit::{program, require, root};
use ipnet::Ipv4Net;
use nix::sched::{unshare, CloneFlags};

const BRIDGE: &str = "cbtest0";

/// Whether one ping from inside the namespace at `netns` to `to` gets its answer.
fn pings(nsenter: &Path, netns: &Path, to: Ipv4Addr) -> bool {
    Command::new(nsenter)
        .arg(format!("--net={}", netns.display()))
        .args(["ping", "-c", "1", "-W", "3", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The container's view of its own link and routes.
fn inside(nsenter: &Path, netns: &Path, what: &[&str]) -> String {
    let out = Command::new(nsenter)
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-4", "-o"])
        .args(what)
        .output()
        .expect("nsenter ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn containers_on_the_bridge_reach_each_other_and_the_node_and_leave_nothing() {
    require!(root("network namespaces and links"));
    let nsenter = require!(program("nsenter", "apt-get install util-linux"));
    require!(program("ping", "apt-get install iputils-ping"));
    require!(program("ip", "apt-get install iproute2"));
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path().to_owned();
    let result = std::thread::spawn(move || -> Result<(), NetError> {
        // This thread, and the threads it starts, are the node.
        unshare(CloneFlags::CLONE_NEWNET).expect("a namespace for the node");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let handle = connect()?;
            let gateway: Ipv4Net = "10.250.7.1/24".parse().unwrap();
            let bridge = ensure(&handle, BRIDGE, &gateway).await?;
            assert_eq!(
                ensure(&handle, BRIDGE, &gateway).await?,
                bridge,
                "a second ensure keeps the bridge"
            );
            let (a_ns, b_ns) = (dir.join("a"), dir.join("b"));
            let a = attach(
                &handle,
                bridge,
                "run-a",
                &a_ns,
                "10.250.7.2/24".parse().unwrap(),
                gateway.addr(),
            )
            .await?;
            let b = attach(
                &handle,
                bridge,
                "run-b",
                &b_ns,
                "10.250.7.3/24".parse().unwrap(),
                gateway.addr(),
            )
            .await?;

            let addr = inside(&nsenter, &a_ns, &["addr", "show", CONTAINER_LINK]);
            assert!(addr.contains("10.250.7.2/24"), "{addr}");
            let routes = inside(&nsenter, &a_ns, &["route"]);
            assert!(
                routes.contains("default via 10.250.7.1 dev eth0"),
                "{routes}"
            );
            assert!(
                pings(&nsenter, &a_ns, Ipv4Addr::new(10, 250, 7, 3)),
                "a reaches b"
            );
            assert!(
                pings(&nsenter, &b_ns, Ipv4Addr::new(10, 250, 7, 2)),
                "b reaches a"
            );
            assert!(pings(&nsenter, &a_ns, gateway.addr()), "a reaches the node");
            assert!(
                !pings(&nsenter, &a_ns, Ipv4Addr::new(10, 250, 7, 99)),
                "an address nobody holds answers"
            );

            detach(&handle, &a).await?;
            assert!(!a_ns.exists(), "a's namespace file is gone");
            assert_eq!(
                link_index(&handle, &a.node_link).await?,
                None,
                "a's veth is gone"
            );
            assert!(
                pings(&nsenter, &b_ns, gateway.addr()),
                "b still reaches the node"
            );
            assert!(
                !pings(&nsenter, &b_ns, Ipv4Addr::new(10, 250, 7, 2)),
                "a still answers"
            );
            detach(&handle, &a).await?;
            detach(&handle, &b).await?;
            assert!(!b_ns.exists());
            Ok(())
        })
    })
    .join()
    .expect("the node's thread");
    result.expect("the container networks");
}
