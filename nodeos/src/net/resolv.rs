//! `/etc/resolv.conf` from the name servers and search domains we learned: DHCPv4 (or the
//! static settings), DHCPv6 and router advertisements (RDNSS) each give theirs, and the
//! file lists them in that order.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What each source said last; the file is rendered from both (one net service process).
struct Learned {
    v4: Vec<Ipv4Addr>,
    v4_search: Vec<String>,
    v6: Vec<Ipv6Addr>,
    v6_search: Vec<String>,
    /// By link: each link's router says its own.
    ra: BTreeMap<String, (Vec<Ipv6Addr>, Vec<String>)>,
}

static LEARNED: Mutex<Learned> = Mutex::new(Learned {
    v4: Vec::new(),
    v4_search: Vec::new(),
    v6: Vec::new(),
    v6_search: Vec::new(),
    ra: BTreeMap::new(),
});

/// At most three servers: the C library reads no more (MAXNS).
pub fn render(servers: &[IpAddr], search: &[String]) -> String {
    let mut text = String::from("# written by nodeos; changes are overwritten\n");
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut seen = Vec::new();
    for server in servers {
        if !seen.contains(server) && seen.len() < 3 {
            seen.push(*server);
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    text
}

/// Sets the IPv4 servers (DHCPv4 or static) and rewrites the file.
pub fn write(servers: &[Ipv4Addr], search: &[String]) -> std::io::Result<()> {
    let text = {
        let mut learned = LEARNED.lock().unwrap_or_else(|e| e.into_inner());
        learned.v4 = servers.to_vec();
        learned.v4_search = search.to_vec();
        render_learned(&learned)
    };
    cloudos_cluster::files::write_atomic(RESOLV_CONF, text.as_bytes())
}

/// Sets the IPv6 servers (DHCPv6) and rewrites the file.
pub fn write_v6(servers: &[Ipv6Addr], search: &[String]) -> std::io::Result<()> {
    let text = {
        let mut learned = LEARNED.lock().unwrap_or_else(|e| e.into_inner());
        learned.v6 = servers.to_vec();
        learned.v6_search = search.to_vec();
        render_learned(&learned)
    };
    cloudos_cluster::files::write_atomic(RESOLV_CONF, text.as_bytes())
}

/// Sets the servers `link`'s router advertisements name (RDNSS, DNSSL) and rewrites the
/// file.
pub fn write_ra(link: &str, servers: &[Ipv6Addr], search: &[String]) -> std::io::Result<()> {
    let text = {
        let mut learned = LEARNED.lock().unwrap_or_else(|e| e.into_inner());
        learned
            .ra
            .insert(link.to_owned(), (servers.to_vec(), search.to_vec()));
        render_learned(&learned)
    };
    cloudos_cluster::files::write_atomic(RESOLV_CONF, text.as_bytes())
}

/// The IPv6 servers learned so far (DHCPv6, then RDNSS), once each, for the state.
pub fn ipv6_servers() -> Vec<Ipv6Addr> {
    let learned = LEARNED.lock().unwrap_or_else(|e| e.into_inner());
    let mut servers = learned.v6.clone();
    for s in learned.ra.values().flat_map(|(servers, _)| servers) {
        if !servers.contains(s) {
            servers.push(*s);
        }
    }
    servers
}

fn render_learned(learned: &Learned) -> String {
    let servers: Vec<IpAddr> = learned
        .v4
        .iter()
        .copied()
        .map(IpAddr::V4)
        .chain(learned.v6.iter().copied().map(IpAddr::V6))
        .chain(
            learned
                .ra
                .values()
                .flat_map(|(servers, _)| servers.iter().copied().map(IpAddr::V6)),
        )
        .collect();
    let mut search = learned.v4_search.clone();
    let ra_search = learned.ra.values().flat_map(|(_, search)| search);
    for domain in learned.v6_search.iter().chain(ra_search) {
        if !search.contains(domain) {
            search.push(domain.clone());
        }
    }
    render(&servers, &search)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_servers_once_and_at_most_three() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3));
        let b = IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1));
        let text = render(
            &[
                a,
                a,
                b,
                IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
                IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
            ],
            &["lan".into()],
        );
        assert_eq!(
            text,
            "# written by nodeos; changes are overwritten\nsearch lan\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"
        );
    }

    #[test]
    fn dhcp4_dhcp6_and_ra_servers_are_listed_together_in_that_order() {
        let learned = Learned {
            v4: vec![Ipv4Addr::new(10, 0, 2, 3)],
            v4_search: vec!["lan".into()],
            v6: vec!["fd77::1".parse().expect("ip")],
            v6_search: vec!["lan".into(), "v6.lan".into()],
            ra: BTreeMap::from([(
                "eth0".to_owned(),
                (
                    vec![
                        "fd77::1".parse().expect("ip"),
                        "fd77::53".parse().expect("ip"),
                    ],
                    vec!["ra.lan".to_owned()],
                ),
            )]),
        };
        assert_eq!(
            render_learned(&learned),
            "# written by nodeos; changes are overwritten\nsearch lan v6.lan ra.lan\nnameserver 10.0.2.3\nnameserver fd77::1\nnameserver fd77::53\n"
        );
        let v6_only = Learned {
            v4: vec![],
            v4_search: vec![],
            ..learned
        };
        assert_eq!(
            render_learned(&v6_only),
            "# written by nodeos; changes are overwritten\nsearch lan v6.lan ra.lan\nnameserver fd77::1\nnameserver fd77::53\n"
        );
    }
}
