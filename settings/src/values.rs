//! The rule for each kind of value a setting takes: host and cluster names, labels,
//! registries, certificate names, booleans, faults, interface names.
//!
//! Pure functions, one rule each. The key table ([`crate::keys`]) checks boot settings with
//! them; the installer checks its answer file with the same ones, in its own words (its
//! lists are TOML arrays, so it checks items: [`parse_label`], [`is_registry`]). An error is
//! the reason part of a warning, which says what the value should look like.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cloudos_cluster::validate_hostname;

/// What a label must look like, as refusals say it.
pub const LABEL_FORM: &str = "key=value (letters, digits, . - _ /)";

/// What an insecure registry must look like, as refusals say it.
pub const REGISTRY_FORM: &str = "a registry host:port";

/// A host name, lowercased as the node keeps it (RFC 1123; the rule is
/// [`cloudos_cluster::validate_hostname`], shared with the installer).
pub fn parse_hostname(value: &str) -> Result<String, String> {
    validate_hostname(value)?;
    Ok(value.to_ascii_lowercase())
}

/// A cluster name: the host name rule, lowercased (it ends up in certificates).
pub fn parse_cluster_name(value: &str) -> Result<String, String> {
    validate_hostname(value).map_err(|_| {
        format!("{value:?} is not a valid cluster name (letters, digits and inner hyphens)")
    })?;
    Ok(value.to_ascii_lowercase())
}

/// One label, `key=value`, each side [`cloudos_cluster::workload::is_label_text`] (so never
/// a comma: lists of labels are joined with commas).
pub fn parse_label(item: &str) -> Option<(&str, &str)> {
    let ok = cloudos_cluster::workload::is_label_text;
    item.split_once('=').filter(|(k, v)| ok(k) && ok(v))
}

/// `k=v,k2=v2`: labels as [`parse_label`] reads them; empty items are skipped, and a key
/// given twice keeps its last value.
pub fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        let (k, v) =
            parse_label(pair).ok_or_else(|| format!("label {pair:?} is not {LABEL_FORM}"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// One registry, `host:port` with a port in 1..=65535 (and no comma: lists of registries
/// are joined with commas).
pub fn is_registry(item: &str) -> bool {
    !item.contains(',')
        && item.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

/// `host:port[,host:port…]`, each as [`is_registry`] reads it.
pub fn parse_registries(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(|r| match is_registry(r) {
            true => Ok(r.to_owned()),
            false => Err(format!("{r:?} is not {REGISTRY_FORM}")),
        })
        .collect()
}

/// `/path[,…]`: absolute paths without `.` or `..` parts (prefixes of host paths that
/// containers may mount).
pub fn parse_host_paths(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let plain = p.starts_with('/')
                && p.len() > 1
                && !p.split('/').any(|part| part == "." || part == "..");
            if plain {
                Ok(p.trim_end_matches('/').to_owned())
            } else {
                Err(format!(
                    "{p:?} is not an absolute path without . or .. (and not / itself)"
                ))
            }
        })
        .collect()
}

/// `CIDR[,…]`: IPv4 or IPv6 ranges; a bare address is a range of one.
pub fn parse_ip_ranges(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<ipnet::IpNet>()
                .or_else(|_| r.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{r:?} is not an address range such as 203.0.113.0/24"))
        })
        .collect()
}

/// `name-or-address[,…]`: IP addresses, or DNS names (letters, digits, `-`, dots between
/// labels), for a certificate's subject alternative names.
pub fn parse_tls_sans(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|san| {
            let is_ip = san.parse::<std::net::IpAddr>().is_ok();
            let is_name = san.len() <= 253
                && san.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if is_ip || is_name {
                Ok(san.to_ascii_lowercase())
            } else {
                Err(format!("{san:?} is neither an IP address nor a DNS name"))
            }
        })
        .collect()
}

/// The SNTP port, when a time server is named without one.
pub const NTP_PORT: u16 = 123;

/// `host[:port][,…]`: time servers, each an IP address (IPv6 in brackets when a port
/// follows) or a host name, stored as `host:port`.
pub fn parse_ntp_servers(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|server| {
            let bad = || format!("{server:?} is not a time server (host or host:port)");
            if let Ok(ip) = server.parse::<std::net::Ipv6Addr>() {
                return Ok(format!("[{ip}]:{NTP_PORT}"));
            }
            let (host, port) = match server.rsplit_once(':') {
                Some((host, port)) => {
                    let port = port
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(bad)?;
                    (host, port)
                }
                None => (server, NTP_PORT),
            };
            let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            let valid = match bare {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    host.parse::<Ipv4Addr>().is_ok()
                        || cloudos_cluster::validate_hostname(host).is_ok()
                }
            };
            if valid {
                Ok(format!("{}:{port}", host.to_ascii_lowercase()))
            } else {
                Err(bad())
            }
        })
        .collect()
}

/// An IPv4 address, as written (no trimming: a boot line has no spaces to trim).
pub fn parse_ipv4(value: &str) -> Result<Ipv4Addr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an IPv4 address"))
}

/// `a.b.c.d[,…]`: DNS servers.
pub fn parse_ipv4_list(value: &str) -> Result<Vec<Ipv4Addr>, String> {
    value
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{value:?} is not a comma-separated list of IPv4 addresses"))
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, in any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (use 0/1, true/false)")),
    }
}

/// `crash:SERVICE:TIMES` or `hang:pid1:SECONDS`.
pub fn parse_fault(value: &str) -> Result<crate::Fault, String> {
    let usage = "use crash:SERVICE:TIMES, as in crash:power:3, or hang:pid1:SECONDS";
    let mut parts = value.split(':');
    let number = |n: &str| {
        n.parse()
            .map_err(|_| format!("{n:?} is not a count; {usage}"))
    };
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("crash"), Some(service), Some(times), None) if !service.is_empty() => {
            Ok(crate::Fault::Crash(crate::CrashFault {
                service: service.to_string(),
                times: number(times)?,
            }))
        }
        (Some("hang"), Some("pid1"), Some(secs), None) => Ok(crate::Fault::HangPid1 {
            after_secs: number(secs)?,
        }),
        _ => Err(format!("{value:?} is not a fault; {usage}")),
    }
}

/// The longest watchdog timeout taken: an hour. Hardware allows less (the Pi's 15 s,
/// i6300ESB's 2046 s); PID 1 uses what the device accepts and says so.
pub const MAX_WATCHDOG_SECS: u32 = 3600;

/// `off`, or a timeout in whole seconds (1 to [`MAX_WATCHDOG_SECS`]).
pub fn parse_watchdog(value: &str) -> Result<crate::Watchdog, String> {
    let usage = format!("use off or seconds from 1 to {MAX_WATCHDOG_SECS}, as in 60");
    match value {
        "off" => Ok(crate::Watchdog::Off),
        secs => match secs.parse::<u32>() {
            Ok(n) if (1..=MAX_WATCHDOG_SECS).contains(&n) => Ok(crate::Watchdog::Seconds(n)),
            _ => Err(format!("{secs:?} is not a watchdog timeout; {usage}")),
        },
    }
}

/// A network interface name as the kernel takes it: 1 to 15 letters, digits, `-`, `_`, `.`.
pub fn parse_iface_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match ok {
        true => Ok(name.to_owned()),
        false => Err(format!("{name:?} is not a valid interface name")),
    }
}

/// An absolute path without `..` (a directory or file on the node).
pub fn parse_abs_path(value: &str) -> Result<String, String> {
    if !value.starts_with('/') || value.split('/').any(|p| p == "..") {
        return Err(format!("{value:?} is not an absolute path without .."));
    }
    Ok(value.to_owned())
}

/// Where a file is: an absolute path on the node, or `LABEL=NAME:/path` (a partition with
/// that label, vfat or ext4, such as a USB stick).
pub fn parse_file_source(value: &str) -> Result<String, String> {
    let Some(rest) = value.strip_prefix("LABEL=") else {
        return parse_abs_path(value)
            .map_err(|_| format!("{value:?} is neither /path nor LABEL=NAME:/path"));
    };
    match rest.split_once(':') {
        Some((label, path))
            if !label.is_empty()
                && label.len() <= 16
                && !label.chars().any(char::is_whitespace)
                && parse_abs_path(path).is_ok() =>
        {
            Ok(value.to_owned())
        }
        _ => Err(format!(
            "{value:?} is not LABEL=NAME:/path (a label of at most 16 characters, an absolute path)"
        )),
    }
}

/// A node timeout such as `2s` or `10s` (token TTL syntax), in seconds: 1 s to 5 min.
pub fn parse_node_timeout(value: &str) -> Result<u64, String> {
    let d = cloudos_cluster::token::parse_ttl(value).map_err(|e| e.to_string())?;
    match u64::try_from(d.whole_seconds()) {
        Ok(secs @ 1..=300) => Ok(secs),
        _ => Err(format!("{value:?} is not between 1s and 5m")),
    }
}

/// The masters' leader lease such as `1s` or `5s` (token TTL syntax), in seconds: 1 s to
/// 1 min (longer would leave a cluster without a leader for that long).
pub fn parse_ha_lease(value: &str) -> Result<u64, String> {
    let d = cloudos_cluster::token::parse_ttl(value).map_err(|e| e.to_string())?;
    match u64::try_from(d.whole_seconds()) {
        Ok(secs @ 1..=60) => Ok(secs),
        _ => Err(format!("{value:?} is not between 1s and 1m")),
    }
}

/// A duration such as `6h` or `1d` (token TTL syntax), in seconds, at least a minute.
pub fn parse_interval(value: &str) -> Result<u64, String> {
    let d = cloudos_cluster::token::parse_ttl(value).map_err(|e| e.to_string())?;
    let secs = u64::try_from(d.whole_seconds()).unwrap_or(0);
    if secs < 60 {
        return Err(format!("{value:?} is shorter than a minute"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value parses to that many items, or is refused with a reason containing that text.
    fn check<T: IntoIterator + std::fmt::Debug>(
        cases: &[(&str, Result<usize, &str>)],
        parse: fn(&str) -> Result<T, String>,
    ) {
        for (value, want) in cases {
            match (parse(value), want) {
                (Ok(got), Ok(n)) => assert_eq!(got.into_iter().count(), *n, "{value}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{value}: {got}"),
                (got, want) => panic!("{value}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn labels_and_registries_refuse_what_they_refused() {
        let labels = [
            ("zone=a,disk=ssd", Ok(2)),
            ("zone=a,,disk=ssd,", Ok(2)),
            ("zone=a,zone=b", Ok(1)),
            ("", Ok(0)),
            ("zone", Err("label \"zone\" is not key=value")),
            ("zone=", Err("label \"zone=\"")),
            ("=a", Err("label \"=a\"")),
            ("a=b=c", Err("label \"a=b=c\"")),
            ("a b=c", Err("label \"a b=c\"")),
        ];
        check(&labels, parse_labels);
        assert_eq!(parse_labels("zone=a,zone=b").unwrap()["zone"], "b");
        assert_eq!(parse_label("zone=a"), Some(("zone", "a")));
        assert_eq!(parse_label("zone=a,disk=ssd"), None);

        let registries = [
            ("10.0.0.1:5000", Ok(1)),
            ("a:1,b:65535", Ok(2)),
            ("[fd00::1]:5000", Ok(1)),
            ("reg", Err("\"reg\" is not a registry host:port")),
            ("reg:0", Err("\"reg:0\"")),
            ("reg:65536", Err("\"reg:65536\"")),
            (":5000", Err("\":5000\"")),
            ("a:1,", Err("\"\" is not")),
        ];
        check(&registries, parse_registries);
        assert!(!is_registry("a:1,b:2"), "an item never holds a comma");
    }

    #[test]
    fn time_servers_get_the_sntp_port_and_bad_ones_are_refused() {
        assert_eq!(
            parse_ntp_servers("Pool.Example.org, 10.0.0.1:1123,fd00::7,[fd00::8]:123").unwrap(),
            [
                "pool.example.org:123",
                "10.0.0.1:1123",
                "[fd00::7]:123",
                "[fd00::8]:123"
            ]
        );
        for bad in [
            "a b",
            "10.0.0.1:0",
            "host:ntp",
            "[fd00::1",
            "-x-",
            "[nope]:123",
        ] {
            assert!(
                parse_ntp_servers(bad)
                    .unwrap_err()
                    .contains("is not a time server"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_sans_and_small_values() {
        assert_eq!(parse_hostname("Node-1").as_deref(), Ok("node-1"));
        assert!(parse_hostname("a_b")
            .unwrap_err()
            .contains("not a valid host name"));
        assert_eq!(parse_cluster_name("Prod-EU").as_deref(), Ok("prod-eu"));
        assert!(parse_cluster_name("no_good")
            .unwrap_err()
            .contains("not a valid cluster name"));
        assert_eq!(
            parse_tls_sans(" 203.0.113.7, Master.Example.org ,").unwrap(),
            ["203.0.113.7", "master.example.org"]
        );
        assert!(parse_tls_sans("not_a name")
            .unwrap_err()
            .contains("neither an IP address nor a DNS name"));
        assert_eq!(parse_bool("ON"), Ok(true));
        assert_eq!(parse_bool("no"), Ok(false));
        assert!(parse_bool("").unwrap_err().contains("not a boolean"));
        assert_eq!(parse_iface_name("eth0.10").as_deref(), Ok("eth0.10"));
        assert!(parse_iface_name("").is_err() && parse_iface_name(&"e".repeat(16)).is_err());
        assert_eq!(
            parse_fault("crash:power:3").unwrap().to_string(),
            "crash:power:3"
        );
        assert!(parse_fault("crash::3").unwrap_err().contains("not a fault"));
        assert_eq!(
            parse_fault("hang:pid1:20"),
            Ok(crate::Fault::HangPid1 { after_secs: 20 })
        );
        assert!(parse_fault("hang:net:20")
            .unwrap_err()
            .contains("not a fault"));
        assert!(parse_fault("hang:pid1:soon")
            .unwrap_err()
            .contains("not a count"));
        assert_eq!(parse_watchdog("off"), Ok(crate::Watchdog::Off));
        assert_eq!(parse_watchdog("30"), Ok(crate::Watchdog::Seconds(30)));
        for bad in ["0", "3601", "-1", "1m", "", "on"] {
            assert!(
                parse_watchdog(bad)
                    .unwrap_err()
                    .contains("not a watchdog timeout"),
                "{bad}"
            );
        }
        assert!(parse_ipv4_list("1.1.1.1,")
            .unwrap_err()
            .contains("comma-separated"));
    }
}
