//! Reading settings: the `cloudos.*` words of a kernel command line and the keys of a
//! settings file, both through the key table, so a key means the same thing wherever it is
//! written.
//!
//! Anything malformed becomes a [`Warning`] and the key keeps its default: a typo on a
//! boot line must never stop a boot. Nothing here touches the system.

use std::fmt;

use crate::keys::{self, Kind, KEYS};
use crate::model::{NetMode, Settings, CONFIG_FILE};

/// The prefix every CloudOS key carries on the kernel command line.
pub const PREFIX: &str = "cloudos.";

/// A key that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub source: Source,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ignoring {}: {}", self.source, self.key, self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    KernelCommandLine,
    ConfigFile,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::KernelCommandLine => "kernel command line",
            Source::ConfigFile => CONFIG_FILE,
        })
    }
}

impl Settings {
    /// Builds the settings from the config file (if any) and then the kernel
    /// command line, which wins: it is how an operator overrides a node at boot.
    pub fn load(config_file: Option<&str>, cmdline: &str) -> (Settings, Vec<Warning>) {
        let mut settings = Settings::default();
        let mut warnings = Vec::new();
        if let Some(text) = config_file {
            match config_file_pairs(text) {
                Ok(pairs) => {
                    for (key, value) in pairs {
                        settings.apply(Source::ConfigFile, &key, Some(&value), &mut warnings);
                    }
                }
                Err(reason) => warnings.push(Warning {
                    source: Source::ConfigFile,
                    key: "the whole file".into(),
                    reason,
                }),
            }
        }
        for (key, value) in cmdline_pairs(cmdline, &mut warnings) {
            settings.apply(
                Source::KernelCommandLine,
                &key,
                value.as_deref(),
                &mut warnings,
            );
        }
        settings.check_consistency(&mut warnings);
        (settings, warnings)
    }

    /// Sets one key from its text, as `key = "value"` in the settings file would; the
    /// error is what the boot would warn. For tools that take settings one by one.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.set_given(key, Some(value))
    }

    /// One key as given: `value` is `None` for a bare `cloudos.key`.
    fn set_given(&mut self, key: &str, value: Option<&str>) -> Result<(), String> {
        let Some(spec) = keys::find(key) else {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            return Err(format!("unknown key (known: {})", known.join(", ")));
        };
        let value = match (spec.kind, value) {
            // A bare `cloudos.debug` means "on"; every other key needs a value.
            (Kind::Flag, None) => "1",
            (Kind::Flag, Some(value)) => value,
            (_, Some(value)) if !value.is_empty() => value,
            _ => return Err("needs a value, as in key=value".into()),
        };
        (spec.set)(self, value)
    }

    fn apply(
        &mut self,
        source: Source,
        key: &str,
        value: Option<&str>,
        warnings: &mut Vec<Warning>,
    ) {
        if let Err(reason) = self.set_given(key, value) {
            warnings.push(Warning {
                source,
                key: match source {
                    Source::KernelCommandLine => format!("{PREFIX}{key}"),
                    Source::ConfigFile => key.to_string(),
                },
                reason,
            });
        }
    }

    fn check_consistency(&mut self, warnings: &mut Vec<Warning>) {
        if self.net.mode == NetMode::Static && self.net.address.is_none() {
            warnings.push(Warning {
                source: Source::KernelCommandLine,
                key: format!("{PREFIX}net=static"),
                reason: format!("no {PREFIX}address given; falling back to dhcp"),
            });
            self.net.mode = NetMode::Dhcp;
        }
    }
}

/// Splits a kernel command line the way the kernel does (whitespace, with
/// double quotes grouping) and keeps the `cloudos.*` words.
fn cmdline_pairs(cmdline: &str, warnings: &mut Vec<Warning>) -> Vec<(String, Option<String>)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut started = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    if in_quotes {
        warnings.push(Warning {
            source: Source::KernelCommandLine,
            key: "quotes".into(),
            reason: "unbalanced double quote; the last word runs to the end of the line".into(),
        });
    }
    words
        .into_iter()
        .filter_map(|w| {
            let rest = w.strip_prefix(PREFIX)?;
            Some(match rest.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            })
        })
        .collect()
}

/// Flattens the config file into the same key/value pairs as the command line.
fn config_file_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let mut pairs = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        pairs.push((key, text));
    }
    Ok(pairs)
}

/// The config file's text without its `token` key, or `None` when it has none. Lines are
/// kept as they are (comments too): only the token's goes.
pub fn without_token(text: &str) -> Option<String> {
    let is_token = |line: &str| {
        line.split_once('=')
            .is_some_and(|(key, _)| key.trim().trim_matches('"') == "token")
    };
    if !text.lines().any(is_token) {
        return None;
    }
    Some(
        text.lines()
            .filter(|line| !is_token(line))
            .map(|line| format!("{line}\n"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{NodeRole, Secret, Slot};

    fn from_cmdline(line: &str) -> (Settings, Vec<Warning>) {
        Settings::load(None, line)
    }

    #[test]
    fn the_token_line_alone_is_removed_from_the_config_file() {
        let text = "# written by the installer\nrole = \"compute\"\nhostname = \"c1\"\n\
                    token = \"cloudos1_abc_secret_pin\"\nlabels = \"zone=a\"\n";
        let rest = without_token(text).expect("has a token");
        assert_eq!(
            rest,
            "# written by the installer\nrole = \"compute\"\nhostname = \"c1\"\nlabels = \"zone=a\"\n"
        );
        assert!(!rest.contains("secret"));
        let (settings, warnings) = Settings::load(Some(&rest), "");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(settings.hostname.as_deref(), Some("c1"));
        assert_eq!(without_token(&rest), None);
        // A key that merely contains the word stays.
        assert_eq!(without_token("tokens_seen = \"1\"\n"), None);
    }

    #[test]
    fn defaults_without_cloudos_keys() {
        let (s, w) = from_cmdline("BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 quiet");
        assert_eq!(s, Settings::default());
        assert!(w.is_empty());
    }

    #[test]
    fn reads_every_key() {
        let (s, w) = from_cmdline(
            "quiet cloudos.role=master cloudos.hostname=Node-1 cloudos.net=static \
             cloudos.iface=eth1 cloudos.address=10.0.0.5/24 cloudos.gateway=10.0.0.1 \
             cloudos.dns=1.1.1.1,9.9.9.9 cloudos.debug cloudos.fault=crash:power:3",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.role, NodeRole::Master);
        assert_eq!(s.hostname.as_deref(), Some("node-1"));
        assert_eq!(s.net.mode, NetMode::Static);
        assert_eq!(s.net.iface.as_deref(), Some("eth1"));
        assert_eq!(s.net.address.unwrap().to_string(), "10.0.0.5/24");
        assert_eq!(s.net.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(s.net.dns.len(), 2);
        assert!(s.debug);
        assert_eq!(s.injected_crashes("power"), 3);
        assert_eq!(s.injected_crashes("net"), 0);
    }

    #[test]
    fn slot_and_install_are_read_and_a_bad_slot_is_refused() {
        let (s, w) = from_cmdline("cloudos.slot=b cloudos.install=LABEL=CLOUDOS-CFG:/install.toml");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.slot, Some(Slot::B));
        assert_eq!(
            s.install.as_deref(),
            Some("LABEL=CLOUDOS-CFG:/install.toml")
        );
        let (s, w) = from_cmdline("cloudos.slot=c");
        assert_eq!(s.slot, None);
        assert!(w[0].reason.contains("not a slot"), "{w:?}");
    }

    #[test]
    fn cluster_keys_are_read_and_the_token_never_shown() {
        let pin = cloudos_cluster::CaPin::from_hex(&"ab".repeat(32)).unwrap();
        let token = cloudos_cluster::Token::generate(pin).unwrap().to_string();
        let cmdline = format!("cloudos.role=compute cloudos.token={token} cloudos.master=10.0.0.1 cloudos.labels=zone=a,disk=ssd cloudos.cluster=Lab");
        let (s, w) = Settings::load(None, &cmdline);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.token.as_ref().map(Secret::expose), Some(token.as_str()));
        assert_eq!(s.master.as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(s.cluster.as_deref(), Some("lab"));
        assert!(!s.workloads, "off unless said");
        assert!(
            Settings::load(None, "cloudos.role=master cloudos.workloads=on")
                .0
                .workloads
        );
        assert!(
            Settings::load(None, "cloudos.workloads").0.workloads,
            "a bare flag is on"
        );
        assert_eq!(s.labels.get("disk").map(String::as_str), Some("ssd"));
        let secret = token.split('_').nth(2).unwrap();
        assert!(!format!("{s:?}").contains(secret));
        assert!(!serde_json::to_string(&s).unwrap().contains(secret));

        let bad =
            "cloudos.token=cloudos1_abc_secretsecret cloudos.master=host:99999 cloudos.labels=a";
        let (s, w) = Settings::load(None, bad);
        assert_eq!((s.token, s.master), (None, None));
        assert_eq!(w.len(), 3, "{w:?}");
        for warning in &w {
            assert!(!warning.to_string().contains("secretsecret"), "{warning}");
        }
    }

    #[test]
    fn malformed_keys_warn_and_keep_defaults() {
        let cases = [
            ("cloudos.role=banana", "unknown role"),
            ("cloudos.hostname=-bad-", "not a valid host name"),
            ("cloudos.hostname=a_b", "not a valid host name"),
            ("cloudos.net=wifi", "unknown network mode"),
            ("cloudos.address=10.0.0.5", "needs a prefix length"),
            ("cloudos.address=10.0.0.5/40", "prefix length"),
            ("cloudos.address=300.0.0.1/24", "not an IPv4 address"),
            ("cloudos.gateway=gw", "not an IPv4 address"),
            ("cloudos.dns=1.1.1.1,x", "comma-separated"),
            ("cloudos.debug=maybe", "not a boolean"),
            ("cloudos.role", "needs a value"),
            ("cloudos.rol=master", "unknown key"),
            ("cloudos.=", "unknown key"),
            ("cloudos.fault=explode", "not a fault"),
            ("cloudos.fault=crash:net:lots", "not a count"),
            (
                "cloudos.iface=an-interface-name-too-long",
                "not a valid interface name",
            ),
        ];
        for (line, expected) in cases {
            let (s, w) = from_cmdline(line);
            assert_eq!(s, Settings::default(), "{line}");
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            assert!(w[0].to_string().contains(expected), "{line}: {}", w[0]);
        }
    }

    /// The whole warning, word for word, for a refusal of each key: the table must say
    /// what the hand-written parser said.
    #[test]
    fn every_key_refuses_in_the_same_words() {
        let cases = [
            ("cloudos.role=banana", "cloudos.role: unknown role \"banana\" (use master or compute)"),
            (
                "cloudos.hostname=a_b",
                "cloudos.hostname: \"a_b\" is not a valid host name (letters, digits and inner hyphens, labels of at most 63)",
            ),
            ("cloudos.net=wifi", "cloudos.net: unknown network mode \"wifi\" (use dhcp, static or off)"),
            ("cloudos.iface=a/b", "cloudos.iface: \"a/b\" is not a valid interface name"),
            ("cloudos.address=10.0.0.5", "cloudos.address: \"10.0.0.5\" needs a prefix length, as in 10.0.0.5/24"),
            ("cloudos.gateway=gw", "cloudos.gateway: \"gw\" is not an IPv4 address"),
            ("cloudos.dns=1.1.1.1,x", "cloudos.dns: \"1.1.1.1,x\" is not a comma-separated list of IPv4 addresses"),
            ("cloudos.debug=", "cloudos.debug: \"\" is not a boolean (use 0/1, true/false)"),
            ("cloudos.master=a_b", "cloudos.master: \"a_b\" is not host:port (an IP address, IPv6 in brackets, or a host name)"),
            ("cloudos.cluster=no_good", "cloudos.cluster: \"no_good\" is not a valid cluster name (letters, digits and inner hyphens)"),
            ("cloudos.labels=zone", "cloudos.labels: label \"zone\" is not key=value (letters, digits, . - _ /)"),
            ("cloudos.insecure_registries=reg", "cloudos.insecure_registries: \"reg\" is not a registry host:port"),
            ("cloudos.tls_san=a_b", "cloudos.tls_san: \"a_b\" is neither an IP address nor a DNS name"),
            ("cloudos.ntp=a_b", "cloudos.ntp: \"a_b\" is not a time server (host or host:port)"),
            ("cloudos.watchdog=0", "cloudos.watchdog: \"0\" is not a watchdog timeout; use off or seconds from 1 to 3600, as in 60"),
            ("cloudos.fault=crash:x:y", "cloudos.fault: \"y\" is not a count; use crash:SERVICE:TIMES, as in crash:power:3, or hang:pid1:SECONDS"),
            ("cloudos.slot=c", "cloudos.slot: \"c\" is not a slot (a or b)"),
            ("cloudos.install=", "cloudos.install: needs a value, as in key=value"),
            ("cloudos.backup_dir=backups", "cloudos.backup_dir: \"backups\" is not an absolute path without .."),
            ("cloudos.backup_interval=30s", "cloudos.backup_interval: \"30s\" is shorter than a minute"),
            ("cloudos.node_timeout=6m", "cloudos.node_timeout: \"6m\" is not between 1s and 5m"),
            ("cloudos.container_range=8.8.0.0/16", "cloudos.container_range: the range 8.8.0.0/16 is not a private range (10/8, 172.16/12, 192.168/16): containers would hide real addresses"),
            ("cloudos.mesh_endpoint=cloud:51820", "cloudos.mesh_endpoint: \"cloud:51820\" is not IP:PORT, such as 203.0.113.7:51820"),
            ("cloudos.mesh_endpoint_ranges=203.0.113.0/24,cloud", "cloudos.mesh_endpoint_ranges: \"cloud\" is not an address range such as 203.0.113.0/24"),
            ("cloudos.container_node_ports=9101/icmp", "cloudos.container_node_ports: invalid port \"9101/icmp\": the protocol is tcp or udp; use PORT or PORT/udp, such as 9101"),
            ("cloudos.volume_host_paths=/srv,../etc", "cloudos.volume_host_paths: \"../etc\" is not an absolute path without . or .. (and not / itself)"),
            ("cloudos.backup_keep=0", "cloudos.backup_keep: \"0\" is not a number of backups (1 or more)"),
            ("cloudos.restore=usb:/b.age", "cloudos.restore: \"usb:/b.age\" is neither /path nor LABEL=NAME:/path"),
            ("cloudos.restore_passphrase_file=LABEL=x:pass", "cloudos.restore_passphrase_file: \"LABEL=x:pass\" is not LABEL=NAME:/path (a label of at most 16 characters, an absolute path)"),
            (
                "cloudos.typo=1",
                "cloudos.typo: unknown key (known: role, hostname, net, iface, address, gateway, \
                 dns, debug, token, master, cluster, workloads, labels, insecure_registries, \
                 tls_san, container_range, service_range, mesh_endpoint, mesh_endpoint_ranges, \
                 container_node_ports, \
                 volume_host_paths, node_timeout, ha_lease, ntp, \
                 watchdog, fault, slot, install, backup_dir, backup_interval, backup_keep, \
                 backup_passphrase_file, restore, restore_passphrase_file, health_timeout)",
            ),
        ];
        for (line, want) in cases {
            let (_, w) = from_cmdline(line);
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            assert_eq!(
                w[0].to_string(),
                format!("kernel command line: ignoring {want}")
            );
        }
        let (_, w) = from_cmdline("cloudos.token=cloudos1_x");
        assert!(
            w[0].reason.starts_with("not a CloudOS join token (")
                && w[0]
                    .reason
                    .ends_with("); create one with `cloudos token create`"),
            "{}",
            w[0]
        );
        let (_, w) = Settings::load(Some("hostname = \"a_b\"\n"), "");
        assert_eq!(
            w[0].to_string(),
            "/var/lib/cloudos/config.toml: ignoring hostname: \"a_b\" is not a valid host name \
             (letters, digits and inner hyphens, labels of at most 63)"
        );
    }

    #[test]
    fn set_checks_one_key_as_the_file_would() {
        let mut s = Settings::default();
        s.set("labels", "zone=a").unwrap();
        s.set("tls_san", "Master.Example.org").unwrap();
        assert_eq!(s.labels["zone"], "a");
        assert_eq!(s.tls_san, ["master.example.org"]);
        assert!(s.set("labels", "zone").unwrap_err().contains("key=value"));
        assert!(s.set("role", "").unwrap_err().contains("needs a value"));
        assert!(s.set("nope", "1").unwrap_err().contains("unknown key"));
        assert_eq!(s.labels["zone"], "a", "a refused value changes nothing");
    }

    #[test]
    fn static_without_address_falls_back_to_dhcp() {
        let (s, w) = from_cmdline("cloudos.net=static");
        assert_eq!(s.net.mode, NetMode::Dhcp);
        assert!(w[0].reason.contains("falling back to dhcp"));
    }

    #[test]
    fn quotes_group_words_and_unbalanced_quotes_warn() {
        let (s, w) = from_cmdline("foo=\"a b\" cloudos.hostname=\"n1\"");
        assert!(w.is_empty());
        assert_eq!(s.hostname.as_deref(), Some("n1"));
        let (s, w) = from_cmdline("cloudos.role=compute foo=\"unterminated cloudos.hostname=x");
        assert_eq!(s.role, NodeRole::Compute);
        assert_eq!(s.hostname, None);
        assert!(w[0].reason.contains("unbalanced"));
    }

    #[test]
    fn binary_garbage_does_not_panic() {
        let (_, _) = from_cmdline("cloudos.\u{0}=\u{7f}\u{1b}[ cloudos.hostname=\u{e9} \"\"\"");
    }

    #[test]
    fn config_file_is_read_and_command_line_wins() {
        let file =
            "role = \"compute\"\nhostname = \"from-file\"\ndns = [\"10.0.0.53\"]\ndebug = true\n";
        let (s, w) = Settings::load(Some(file), "cloudos.hostname=from-cmdline");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.role, NodeRole::Compute);
        assert_eq!(s.hostname.as_deref(), Some("from-cmdline"));
        assert_eq!(s.net.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
        assert!(s.debug);
    }

    #[test]
    fn broken_config_file_warns_once() {
        let (s, w) = Settings::load(Some("role = \"compute"), "");
        assert_eq!(s, Settings::default());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].source, Source::ConfigFile);
        assert!(w[0].reason.contains("not valid TOML"));
    }
}
