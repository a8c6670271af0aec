//! The x86_64 ISO on IPv6-only LANs, booted for real: one VM with two NICs, each on its own
//! bridge with router advertisements from dnsmasq and no IPv4 server. On the first the
//! router announces a prefix for SLAAC; on the second it says Managed and hands out
//! addresses by DHCPv6. One VM (one guest of the two this host allows). Needs root
//! (namespaces, taps) and dnsmasq.

use std::time::Duration;

use cloudos_tests::guest::{answers_ping, line_timeout, power_button_off, re};
use cloudos_tests::netns::{RaMode, IPV6_BRIDGE_ADDR};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Firmware, TestNet, VmBuilder};

/// Ready takes ~4 s of guest time on an idle host and ten times that on a loaded one.
fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

/// The second NIC's MAC (the first's comes from `vm_network`).
const MAC_MANAGED: &str = "52:54:00:78:00:01";

/// eth0 takes a SLAAC address in fd77::/64 and the default route from the router's
/// advertisement, eth1 (Managed) an address from DHCPv6 with its name server; the node
/// answers ping6 on both and `status` shows both addresses, the IPv6 gateway and the DNS
/// server.
#[test]
fn iso_on_ipv6_only_lans_takes_slaac_and_dhcpv6_addresses() {
    let net = TestNet::with_bridge_addr(IPV6_BRIDGE_ADDR).expect("test network");
    net.start_router_advertisements(RaMode::Slaac)
        .expect("dnsmasq: RAs on br0");
    // A second LAN in the same namespace (QEMU runs there): br1, fd78::/64, Managed.
    net.ip(&["link", "add", "br1", "type", "bridge"])
        .expect("br1");
    net.ip(&["addr", "add", "fd78::1/64", "dev", "br1"])
        .expect("br1 address");
    net.ip(&["link", "set", "br1", "up"]).expect("br1 up");
    net.ip(&["tuntap", "add", "dev", "tapm", "mode", "tap"])
        .expect("tap");
    net.ip(&["link", "set", "tapm", "master", "br1"])
        .expect("tap on br1");
    net.ip(&["link", "set", "tapm", "up"]).expect("tap up");
    net.start_router_advertisements_on("br1", "fd78", RaMode::Managed)
        .expect("dnsmasq: RAs and DHCPv6 on br1");

    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
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
        .wait_for(re(r"nodeos ready in \d+\.\d+s"), boot_timeout())
        .expect("nodeos did not report ready");

    let slaac = console
        .wait_for(
            re(r"eth0: slaac address (fd77::[0-9a-f:]+)/64"),
            line_timeout(),
        )
        .expect("no SLAAC address on eth0");
    let slaac = slaac.group(1).expect("address").to_string();
    console
        .wait_for(
            re(r"IPv6 default route via fe80::[0-9a-f:]+ dev eth\d"),
            line_timeout(),
        )
        .expect("no IPv6 default route from the RA");
    assert!(
        answers_ping(&net, &slaac, line_timeout()),
        "the guest does not answer ping6 on {slaac}"
    );

    console
        .wait_for(
            "eth1: the router says Managed: asking DHCPv6",
            line_timeout(),
        )
        .expect("the Managed flag was not seen");
    let leased = console
        .wait_for(
            re(r"eth1: dhcp6 lease (fd78::1[0-9a-f]{2})/128 dns fd78::1 for \d+s"),
            line_timeout(),
        )
        .expect("no DHCPv6 lease on eth1");
    let leased = leased.group(1).expect("address").to_string();
    assert!(
        answers_ping(&net, &leased, line_timeout()),
        "the guest does not answer ping6 on its DHCPv6 address {leased}"
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
        .wait_for(re(r"dns [0-9.,]*fd78::1"), line_timeout())
        .expect("status lacks the DHCPv6 name server");
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
