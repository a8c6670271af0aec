//! Node settings: the `cloudos.*` keys of the kernel command line and the
//! optional `config.toml` on the data partition.
//!
//! Owns parsing and validation only; it never touches the system. Both
//! sources go through one `apply` function, so a key means the same thing
//! wherever it is written. Anything malformed becomes a [`Warning`] and the
//! key keeps its default: a typo on a boot line must never stop a boot.

use std::fmt;
use std::net::Ipv4Addr;

use cloudos_cluster::parse_master_address;

/// Where the settings file lives once the data partition is mounted.
pub const CONFIG_FILE: &str = "/var/lib/cloudos/config.toml";

/// The prefix every CloudOS key carries on the kernel command line.
const PREFIX: &str = "cloudos.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No role chosen: the node boots, brings up its network and waits.
    #[default]
    None,
    Master,
    Compute,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::None => "none",
            Role::Master => "master",
            Role::Compute => "compute",
        })
    }
}

pub use cloudos_cluster::Ipv4Cidr;

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetMode {
    /// DHCPv4 on every Ethernet link.
    #[default]
    Dhcp,
    /// A fixed address on one link (`cloudos.iface`, else the first Ethernet link).
    Static,
    /// Loopback only.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NetSettings {
    pub mode: NetMode,
    pub iface: Option<String>,
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// A failure injected on purpose, for tests of the supervisor: a service that
/// crashes on its first `times` starts. Only a crash we cannot cause from
/// outside a shell-less appliance is injected this way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrashFault {
    pub service: String,
    pub times: u32,
}

/// A value that must never reach a log, a console or a status report: the
/// join token. Debug and Serialize print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Settings {
    pub role: Role,
    pub hostname: Option<String>,
    pub net: NetSettings,
    pub debug: bool,
    pub faults: Vec<CrashFault>,
    /// The join token (`cloudos.token`): needed by a compute node's first join only.
    pub token: Option<Secret>,
    /// `host:port` of the master (`cloudos.master`); mDNS finds it otherwise.
    pub master: Option<String>,
    /// The cluster's name when this node creates it as master (`cloudos.cluster`).
    pub cluster: Option<String>,
    /// Node labels for scheduling (`cloudos.labels=zone=a,disk=ssd`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Image registries reached over plain HTTP, `host:port` separated by commas
    /// (`cloudos.insecure_registries=10.88.0.1:5000`): a registry on the LAN without TLS.
    pub insecure_registries: Vec<String>,
    /// More names and addresses for the master's serving certificate
    /// (`cloudos.tls_san=203.0.113.7,master.example.org`): the ones clients use to reach a
    /// master behind NAT or a load balancer, which it cannot see on its own interfaces.
    pub tls_san: Vec<String>,
    /// The system slot GRUB booted (`cloudos.slot=a|b`, set by the installed disk's
    /// grub.cfg): nodeos confirms that slot in GRUB's environment once healthy.
    pub slot: Option<Slot>,
    /// Install to disk (`cloudos.install=`): `wizard` for the interactive installer on
    /// the console, or where the answer file is (`http(s)://…` or `LABEL=NAME:/path`);
    /// checked by the installer, which says what is wrong with it.
    pub install: Option<String>,
}

/// One of the installed disk's two system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

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
                        settings.apply(Source::ConfigFile, &key, value.as_deref(), &mut warnings);
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

    fn apply(
        &mut self,
        source: Source,
        key: &str,
        value: Option<&str>,
        warnings: &mut Vec<Warning>,
    ) {
        let shown_key = match source {
            Source::KernelCommandLine => format!("{PREFIX}{key}"),
            Source::ConfigFile => key.to_string(),
        };
        let mut warn = |reason: String| {
            warnings.push(Warning {
                source,
                key: shown_key.clone(),
                reason,
            })
        };
        // A bare `cloudos.debug` means "on"; every other key needs a value.
        if key == "debug" {
            match parse_bool(value.unwrap_or("1")) {
                Some(on) => self.debug = on,
                None => warn(format!(
                    "{:?} is not a boolean (use 0/1, true/false)",
                    value.unwrap_or("")
                )),
            }
            return;
        }
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            if is_known_key(key) {
                warn("needs a value, as in key=value".into());
            } else {
                warn(format!("unknown key (known: {})", KNOWN_KEYS.join(", ")));
            }
            return;
        };
        match key {
            "role" => match value {
                "master" => self.role = Role::Master,
                "compute" => self.role = Role::Compute,
                "none" => self.role = Role::None,
                other => warn(format!("unknown role {other:?} (use master or compute)")),
            },
            "hostname" => match validate_hostname(value) {
                Ok(()) => self.hostname = Some(value.to_ascii_lowercase()),
                Err(reason) => warn(reason),
            },
            "net" => match value {
                "dhcp" => self.net.mode = NetMode::Dhcp,
                "static" => self.net.mode = NetMode::Static,
                "off" => self.net.mode = NetMode::Off,
                other => warn(format!(
                    "unknown network mode {other:?} (use dhcp, static or off)"
                )),
            },
            "iface" => match valid_iface_name(value) {
                true => self.net.iface = Some(value.to_string()),
                false => warn(format!("{value:?} is not a valid interface name")),
            },
            "address" => match value.parse() {
                Ok(cidr) => self.net.address = Some(cidr),
                Err(reason) => warn(reason),
            },
            "gateway" => match value.parse() {
                Ok(gw) => self.net.gateway = Some(gw),
                Err(_) => warn(format!("{value:?} is not an IPv4 address")),
            },
            "dns" => {
                let parsed: Result<Vec<Ipv4Addr>, _> = value.split(',').map(str::parse).collect();
                match parsed {
                    Ok(servers) => self.net.dns = servers,
                    Err(_) => warn(format!(
                        "{value:?} is not a comma-separated list of IPv4 addresses"
                    )),
                }
            }
            // The token's value is never repeated in a warning: warnings are shown.
            "token" => match value.parse::<cloudos_cluster::Token>() {
                Ok(_) => self.token = Some(Secret::new(value.trim())),
                Err(e) => warn(format!(
                    "not a CloudOS join token ({e}); create one with `cloudos token create`"
                )),
            },
            "master" => match parse_master_address(value) {
                Ok(address) => self.master = Some(address),
                Err(reason) => warn(reason),
            },
            "cluster" => match validate_hostname(value) {
                Ok(()) => self.cluster = Some(value.to_ascii_lowercase()),
                Err(_) => warn(format!(
                    "{value:?} is not a valid cluster name (letters, digits and inner hyphens)"
                )),
            },
            "labels" => match parse_labels(value) {
                Ok(labels) => self.labels = labels,
                Err(reason) => warn(reason),
            },
            "insecure_registries" => match parse_registries(value) {
                Ok(list) => self.insecure_registries = list,
                Err(reason) => warn(reason),
            },
            "tls_san" => match parse_tls_sans(value) {
                Ok(list) => self.tls_san = list,
                Err(reason) => warn(reason),
            },
            "fault" => match parse_fault(value) {
                Ok(fault) => self.faults.push(fault),
                Err(reason) => warn(reason),
            },
            "slot" => match value {
                "a" => self.slot = Some(Slot::A),
                "b" => self.slot = Some(Slot::B),
                other => warn(format!("{other:?} is not a slot (a or b)")),
            },
            "install" => self.install = Some(value.to_string()),
            _ => warn(format!("unknown key (known: {})", KNOWN_KEYS.join(", "))),
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

    /// How many times the named service is to crash on purpose.
    pub fn injected_crashes(&self, service: &str) -> u32 {
        self.faults
            .iter()
            .filter(|f| f.service == service)
            .map(|f| f.times)
            .sum()
    }
}

const KNOWN_KEYS: &[&str] = &[
    "role",
    "hostname",
    "net",
    "iface",
    "address",
    "gateway",
    "dns",
    "debug",
    "token",
    "master",
    "cluster",
    "labels",
    "insecure_registries",
    "tls_san",
    "fault",
    "slot",
    "install",
];

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

/// `host:port[,host:port…]`.
fn parse_registries(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(|r| {
            let ok = r.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if ok {
                Ok(r.to_owned())
            } else {
                Err(format!("{r:?} is not a registry host:port"))
            }
        })
        .collect()
}

/// The master's API port when `cloudos.master` names only a host.
pub use cloudos_cluster::client::DEFAULT_API_PORT;

/// `k=v,k2=v2`: keys and values of letters, digits, `.`, `-`, `_`, `/`.
fn parse_labels(value: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let ok = cloudos_cluster::workload::is_label_text;
    let mut labels = std::collections::BTreeMap::new();
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if ok(k) && ok(v) => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "label {pair:?} is not key=value (letters, digits, . - _ /)"
                ))
            }
        }
    }
    Ok(labels)
}

fn is_known_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_fault(value: &str) -> Result<CrashFault, String> {
    let usage = "use crash:SERVICE:TIMES, as in crash:power:3";
    let mut parts = value.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("crash"), Some(service), Some(times), None) if !service.is_empty() => {
            let times = times
                .parse()
                .map_err(|_| format!("{times:?} is not a count; {usage}"))?;
            Ok(CrashFault {
                service: service.to_string(),
                times,
            })
        }
        _ => Err(format!("{value:?} is not a fault; {usage}")),
    }
}

/// RFC 1123 host name; the rule lives in `cloudos_cluster` so the installer checks names
/// exactly as these settings do.
pub use cloudos_cluster::validate_hostname;

fn valid_iface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
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

/// Removes the join token from the settings file at `path`, once the node has joined and
/// its identity replaces it. A failure is logged: the node works either way.
pub fn forget_token_in(path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Some(rest) = without_token(&text) else {
        return;
    };
    match cloudos_cluster::files::write_private(path, rest.as_bytes()) {
        Ok(()) => log::info!(
            "joined: the join token is no longer kept in {}",
            path.display()
        ),
        Err(e) => log::warn!("cannot remove the join token from {}: {e}", path.display()),
    }
}

fn config_file_pairs(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
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
        pairs.push((key, Some(text)));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.role, Role::Master);
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
        assert_eq!(s.role, Role::Compute);
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
        assert_eq!(s.role, Role::Compute);
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
