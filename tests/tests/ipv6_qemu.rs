//! The x86_64 ISO on IPv6-only LANs, booted for real: one compute VM with two NICs, each on
//! its own bridge with router advertisements from dnsmasq and no IPv4 server. On the first
//! the router announces a prefix for SLAAC; on the second it says Managed and hands out
//! addresses by DHCPv6. The master is a process on the bridge's host side (docs/design.md
//! decision 42), so this is one guest of the two this host allows. Needs root (namespaces,
//! taps), dnsmasq, `scripts/build.sh` (the ISO) and `cargo build -p nodeos -p cloudos-cli`
//! (the host-side master and CLI).

use std::time::Duration;

use cloudos_cluster::api::NodeState;
use cloudos_testkit::require;
use cloudos_tests::guest::{answers_ping, line_timeout, power_button_off, re};
use cloudos_tests::lab::{first_capture, Admin, HostMaster};
use cloudos_tests::netns::{RaMode, IPV6_BRIDGE_ADDR};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Firmware, TestNet, VmBuilder};

/// Ready takes ~4 s of guest time on an idle host and ten times that on a loaded one.
fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

/// The second NIC's MAC (the first's comes from `vm_network`).
const MAC_MANAGED: &str = "52:54:00:78:00:01";

/// The master, as the settings name it: the bridge's IPv6 address in brackets.
const MASTER: &str = "[fd77::1]:9443";

/// eth0 takes a SLAAC address in fd77::/64, the default route and the name server (RDNSS)
/// from the router's advertisement, eth1 (Managed) an address from DHCPv6 with its name
/// server; the node answers ping6 on both, `status` shows both addresses, the IPv6 gateway
/// and both name servers, and the node joins the master given as
/// `master = "[fd77::1]:9443"`.
#[test]
fn iso_on_ipv6_only_lans_takes_slaac_and_dhcpv6_addresses_and_joins_its_master() {
    let _guests = cloudos_tests::guests::reserve(1);
    require!(cloudos_testkit::root("namespaces and taps"));
    let net = TestNet::with_bridge_addr(IPV6_BRIDGE_ADDR).expect("test network");
    net.start_router_advertisements(RaMode::Slaac)
        .expect("dnsmasq: RAs on br0");
    // A second LAN in the same namespace (QEMU runs there): br1, fd78::/64, Managed.
    net.ip(&["link", "add", "br1", "type", "bridge"])
        .expect("br1");
    net.ip(&["addr", "add", "fd78::1/64", "dev", "br1", "nodad"])
        .expect("br1 address");
    net.ip(&["link", "set", "br1", "up"]).expect("br1 up");
    net.ip(&["tuntap", "add", "dev", "tapm", "mode", "tap"])
        .expect("tap");
    net.ip(&["link", "set", "tapm", "master", "br1"])
        .expect("tap on br1");
    net.ip(&["link", "set", "tapm", "up"]).expect("tap up");
    net.start_router_advertisements_on("br1", "fd78", RaMode::Managed)
        .expect("dnsmasq: RAs and DHCPv6 on br1");

    let dir = tempfile::tempdir().expect("temp dir");
    let master = HostMaster::start(&net, &dir.path().join("master"), &[]);
    assert_eq!(master.addr, MASTER);
    let admin = Admin::login(&net, &dir.path().join("admin"), &master, MASTER);
    let token = admin
        .ok(&["token", "create", "--role", "compute"])
        .trim()
        .to_owned();
    let config = format!(
        "role = \"compute\"\nhostname = \"node-6\"\ntoken = \"{token}\"\nmaster = \"{MASTER}\"\n"
    );
    let disk = artifacts::data_disk(&config, 128).expect("data disk");

    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .name("node-6")
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .disk(disk.to_path_buf())
        .network(net.vm_network().expect("tap"))
        .extra_args([
            "-netdev",
            "tap,id=n1,ifname=tapm,script=no,downscript=no",
            "-device",
            &format!("virtio-net-pci,netdev=n1,mac={MAC_MANAGED}"),
        ])
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host node-6, role compute"),
            boot_timeout(),
        )
        .expect("nodeos did not report ready");

    // These lines come in an order that depends on timing: look anywhere.
    let slaac = first_capture(
        &vm,
        r"eth0: slaac address (fd77::[0-9a-f:]+)/64",
        "no SLAAC address on eth0",
        line_timeout(),
    );
    first_capture(
        &vm,
        r"(IPv6 default route via fe80::[0-9a-f:]+ dev eth\d)",
        "no IPv6 default route from the RA",
        line_timeout(),
    );
    first_capture(
        &vm,
        r"(eth0: router advertises dns fd77::1)",
        "the RDNSS option of eth0's router was not read",
        line_timeout(),
    );
    assert!(
        answers_ping(&net, &slaac, line_timeout()),
        "the guest does not answer ping6 on {slaac}"
    );
    first_capture(
        &vm,
        r"(eth1: the router says Managed: asking DHCPv6)",
        "the Managed flag was not seen",
        line_timeout(),
    );
    let leased = first_capture(
        &vm,
        r"eth1: dhcp6 lease (fd78::1[0-9a-f]{2})/128 dns fd78::1 for \d+s",
        "no DHCPv6 lease on eth1",
        line_timeout(),
    );
    assert!(
        answers_ping(&net, &leased, line_timeout()),
        "the guest does not answer ping6 on its DHCPv6 address {leased}"
    );

    // The compute node joined over IPv6 and is listed at its SLAAC address (on-link to the
    // master). A hello sent while that address was still tentative (in DAD) came from
    // another one; the agent says hello again once the kernel would pick the SLAAC one.
    admin.wait_node("node-6", NodeState::Ready, Duration::from_secs(300));
    admin.wait(
        &format!("node-6 to be listed at {slaac}"),
        Duration::from_secs(60),
        || {
            admin
                .nodes()
                .into_iter()
                .find(|n| n.name == "node-6" && n.address == slaac && n.state == NodeState::Ready)
        },
    );

    // What an operator types on the console.
    console.skip_to_end();
    console.send_line("status").expect("typing on the console");
    console
        .wait_for(
            re(&format!(r"slaac\s+{}/64", regex::escape(&slaac))),
            line_timeout(),
        )
        .expect("status lacks the SLAAC address");
    console
        .wait_for(
            re(&format!(r"dhcp6\s+{}/128", regex::escape(&leased))),
            line_timeout(),
        )
        .expect("status lacks the DHCPv6 address");
    console
        .wait_for("dns fd78::1,fd77::1", line_timeout())
        .expect("status lacks the DHCPv6 and RDNSS name servers");
    console
        .wait_for(re(r"ipv6 gateway fe80::"), line_timeout())
        .expect("status lacks the IPv6 gateway");

    power_button_off(
        &vm,
        line_timeout(),
        &[
            ("power button pressed", "power button not seen"),
            ("shutdown: powering off now", "no orderly shutdown"),
        ],
    );
}
