//! A static network chosen in the installer, applied to the live system at once: a compute
//! node must reach its master to have its token checked before anything is written, and a
//! wrong address or gateway is better found now than after the install. The installed node
//! applies the same settings at its first boot (from `config.toml`); this only adds them
//! next to what the live system's network service configured, so DHCP is never undone.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use cloudos_cluster::addr::Ipv4Cidr;
use futures::TryStreamExt as _;

use crate::net::state::NetState;
use crate::net::{links, resolv};

/// How long the gateway gets to answer ARP.
const GATEWAY_WAIT: Duration = Duration::from_secs(3);
/// The address the installer added last (`eth0 10.0.0.5/24`), so a second try with
/// another address replaces it instead of leaving both.
const ADDED: &str = "/run/cloudos/install-address";

/// Adds `address` (and a default route via `gateway`, and `dns` to resolv.conf) on the
/// first Ethernet link with a carrier, then checks the gateway answers. The error is the
/// reason, in words, for the person at the wizard.
pub fn apply_static(
    address: &Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
) -> Result<(), String> {
    if let Some(gw) = gateway {
        if !same_subnet(address, gw) {
            return Err(format!(
                "the gateway {gw} is not in {}; a gateway must be on the node's own subnet",
                network_of(address)
            ));
        }
    }
    let state = NetState::read().unwrap_or_default();
    if state.links.is_empty() {
        // Nothing to check it on (a board whose NIC the live system has no driver for, or
        // an emulated Pi): the settings are kept for the installed node, unchecked.
        log::warn!("install: no Ethernet link: the static address {address} is not checked");
        return Ok(());
    }
    let Some(link) = state.links.iter().find(|l| l.carrier) else {
        return Err("no network cable is connected (no link has a carrier)".to_owned());
    };
    let name = link.name.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network client: {e}"))?;
    runtime.block_on(configure(&name, address, gateway))?;
    if !dns.is_empty() {
        resolv::write(dns, &[]).map_err(|e| format!("cannot write resolv.conf: {e}"))?;
    }
    log::info!(
        "install: {name}: static address {address}{} applied to the live system",
        gateway.map(|g| format!(" gateway {g}")).unwrap_or_default()
    );
    match gateway {
        Some(gw) if !gateway_answers(address.address, gw) => Err(format!(
            "the gateway {gw} does not answer on {name} (no ARP reply within {}s); check \
             the address, the gateway and the cable",
            GATEWAY_WAIT.as_secs()
        )),
        _ => Ok(()),
    }
}

async fn configure(
    name: &str,
    address: &Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
) -> Result<(), String> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("cannot open rtnetlink: {e}"))?;
    tokio::spawn(connection);
    let index = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("cannot find {name}: {e}"))?
        .map(|link| link.header.index)
        .ok_or_else(|| format!("{name} is gone"))?;
    let before = std::fs::read_to_string(ADDED).unwrap_or_default();
    if let Some((link, old)) = before.trim().split_once(' ') {
        let old = old.parse::<Ipv4Cidr>().ok().filter(|o| o != address);
        if let (true, Some(old)) = (link == name, old) {
            links::remove_address(&handle, index, old.address)
                .await
                .map_err(|e| format!("cannot remove {old} from {name}: {e}"))?;
        }
    }
    links::add_address(&handle, index, address.address, address.prefix)
        .await
        .map_err(|e| format!("cannot add {address} to {name}: {e}"))?;
    if let Err(e) =
        cloudos_cluster::files::write_atomic(ADDED, format!("{name} {address}\n").as_bytes())
    {
        log::warn!("cannot note {ADDED}: {e}");
    }
    if let Some(gw) = gateway {
        links::replace_default_route(&handle, index, gw)
            .await
            .map_err(|e| format!("cannot add a default route via {gw}: {e}"))?;
    }
    Ok(())
}

/// Sends a datagram towards the gateway (the discard port), which makes the kernel ask
/// for its MAC address, then waits for a complete ARP entry.
fn gateway_answers(from: Ipv4Addr, gateway: Ipv4Addr) -> bool {
    let deadline = Instant::now() + GATEWAY_WAIT;
    let socket = UdpSocket::bind((from, 0)).ok();
    while Instant::now() < deadline {
        if let Some(socket) = &socket {
            let _ = socket.send_to(b"cloudos-installer", (gateway, 9));
        }
        let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        if arp_complete(&table, gateway) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Whether `/proc/net/arp` has a resolved entry (flag ATF_COM, 0x2) for `ip`.
pub fn arp_complete(table: &str, ip: Ipv4Addr) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 4
            && fields[0].parse::<Ipv4Addr>().ok() == Some(ip)
            && u32::from_str_radix(fields[2].trim_start_matches("0x"), 16)
                .is_ok_and(|flags| flags & 0x2 != 0)
    })
}

/// The netmask of a prefix length (1..=32, as `Ipv4Cidr` guarantees).
fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.clamp(1, 32)))
        .unwrap_or(0)
}

fn same_subnet(address: &Ipv4Cidr, other: Ipv4Addr) -> bool {
    let m = mask(address.prefix);
    u32::from(address.address) & m == u32::from(other) & m
}

fn network_of(address: &Ipv4Cidr) -> String {
    let network = Ipv4Addr::from(u32::from(address.address) & mask(address.prefix));
    format!("{network}/{}", address.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().expect("cidr")
    }

    #[test]
    fn the_gateway_must_be_on_the_subnet() {
        assert!(same_subnet(
            &cidr("10.0.0.5/24"),
            "10.0.0.1".parse().unwrap()
        ));
        assert!(!same_subnet(
            &cidr("10.0.0.5/24"),
            "10.0.1.1".parse().unwrap()
        ));
        assert!(same_subnet(
            &cidr("10.0.0.5/16"),
            "10.0.200.1".parse().unwrap()
        ));
        assert!(same_subnet(
            &cidr("10.0.0.5/32"),
            "10.0.0.5".parse().unwrap()
        ));
        assert!(same_subnet(
            &cidr("10.0.0.5/1"),
            "100.0.0.1".parse().unwrap()
        ));
        assert_eq!(network_of(&cidr("10.0.0.5/24")), "10.0.0.0/24");
        let err = apply_static(&cidr("10.0.0.5/24"), Some("10.9.9.1".parse().unwrap()), &[])
            .expect_err("another subnet");
        assert!(err.contains("not in 10.0.0.0/24"), "{err}");
    }

    #[test]
    fn only_complete_arp_entries_count() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.77.0.1        0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth0\n\
                     10.77.0.9        0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert!(arp_complete(table, "10.77.0.1".parse().unwrap()));
        assert!(!arp_complete(table, "10.77.0.9".parse().unwrap()));
        assert!(!arp_complete(table, "10.77.0.2".parse().unwrap()));
    }
}
