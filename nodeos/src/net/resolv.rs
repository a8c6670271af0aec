//! `/etc/resolv.conf` from the name servers and search domains we learned.

use std::net::Ipv4Addr;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// At most three servers: the C library reads no more (MAXNS).
pub fn render(servers: &[Ipv4Addr], search: &[String]) -> String {
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

/// Replaces the file atomically, so a reader never sees half of it.
pub fn write(servers: &[Ipv4Addr], search: &[String]) -> std::io::Result<()> {
    cloudos_cluster::files::write_atomic(RESOLV_CONF, render(servers, search).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_servers_once_and_at_most_three() {
        let a = Ipv4Addr::new(10, 0, 2, 3);
        let b = Ipv4Addr::new(1, 1, 1, 1);
        let text = render(
            &[
                a,
                a,
                b,
                Ipv4Addr::new(9, 9, 9, 9),
                Ipv4Addr::new(8, 8, 8, 8),
            ],
            &["lan".into()],
        );
        assert_eq!(
            text,
            "# written by nodeos; changes are overwritten\nsearch lan\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"
        );
    }
}
