//! The cluster on an IPv6-only LAN, as separate processes: a bridge with router
//! advertisements from dnsmasq and no IPv4 address anywhere; `nodeos master` and two
//! `nodeos agent`s each in their own namespace, addressed by SLAAC; the `cloudos` CLI on the
//! bridge as the admin's laptop. Everything crosses a real (virtual) wire: TCP/TLS to the
//! master's IPv6 address, mDNS over ff02::fb.
//!
//! Built like `cluster_netns` ([`cloudos_tests::lab::Lab`]): the workspace's debug
//! binaries (`cargo build -p nodeos -p cloudos-cli`), every process and namespace removed
//! when a test ends. Needs root (network namespaces), and dnsmasq.

use std::time::Duration;

use cloudos_cluster::api::NodeState;
use cloudos_tests::lab::{Lab, API_PORT};
use cloudos_tests::netns::RaMode;

/// The master is found by mDNS (AAAA records) and dialled by `[address]:port`, its serving
/// certificate names its IPv6 address (curl checks it against the IP literal), and agents
/// join both ways and are Ready with their IPv6 addresses.
#[test]
fn on_an_ipv6_only_lan_agents_join_by_mdns_and_by_bracketed_address() {
    let Some(lab) = Lab::ipv6_only(RaMode::Slaac) else {
        return;
    };
    let m_host = lab.host6(2);
    let ip = m_host.ip().to_owned();
    assert!(ip.starts_with("fd77::"), "SLAAC gave {ip}");
    // Nothing on this LAN has IPv4 but loopback.
    let v4 = m_host
        .ip_cmd(&["-4", "-o", "addr", "show"])
        .expect("ip addr");
    let v4 = String::from_utf8_lossy(&v4.stdout).into_owned();
    assert!(
        v4.lines().all(|l| l.contains(" lo ")),
        "IPv4 on the master's host: {v4}"
    );

    let master = lab.master("master-1", &m_host, &lab.path("master"), &[]);
    assert_eq!(master.addr, format!("[{ip}]:{API_PORT}"));

    // The admin logs in by the bracketed address.
    let alice = lab.admin("alice");
    let said = alice.log_in_to(&master.admin_token(), Some(&master.addr));
    assert!(
        said.contains(&format!("logged in to cluster lab at {}", master.addr)),
        "{said}"
    );

    // `cloudos discover` resolves the master's AAAA record across the bridge.
    let found = alice.ok(&["discover", "-o", "json", "--timeout", "3s"]);
    assert!(found.contains(&format!("\"{ip}\"")), "{found}");

    // A TLS client that checks the name it dialled (curl, against an IPv6 literal)
    // accepts the master's serving certificate: it carries the address as an IP SAN.
    let ca = lab.path("ca.pem");
    let ca_text = std::fs::read_to_string(lab.path("config-alice").join("ca.crt"))
        .unwrap_or_else(|e| lab.fail(&format!("alice's CA certificate: {e}")));
    std::fs::write(&ca, ca_text).expect("write ca.pem");
    let url = format!("https://{}/install/ca.pem", master.addr);
    let curl = lab
        .net
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .expect("curl");
    assert!(
        curl.status.success(),
        "curl {url}: {}\n{}",
        String::from_utf8_lossy(&curl.stderr),
        lab.dump()
    );
    assert!(String::from_utf8_lossy(&curl.stdout).contains("BEGIN CERTIFICATE"));

    let token = alice.token("compute", &[]);
    let (h3, h4) = (lab.host6(3), lab.host6(4));
    // n1 by mDNS, n2 by `[address]:port`.
    let _n1 = lab.agent("n1", &h3, &lab.path("n1"), Some(&token), None);
    let _n2 = lab.agent("n2", &h4, &lab.path("n2"), Some(&token), Some(&master.addr));
    for (name, host) in [("n1", &h3), ("n2", &h4)] {
        let node = alice.wait_node(name, NodeState::Ready, Duration::from_secs(40));
        assert_eq!(node.address, host.ip(), "{node:?}");
        assert!(node.telemetry.is_some(), "{node:?}");
    }
}
