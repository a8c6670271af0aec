//! The key table: every `cloudos.*` key, once, with its name, kind, help, default, where
//! it is written, how its text is checked into a [`Settings`] field and how the field is
//! written back.
//!
//! Everything else follows this table: the boot's reader ([`crate::load`]), the file and
//! command-line writers ([`crate::write`]), the README's settings table
//! ([`crate::readme`]). Adding a key is a field in [`Settings`] and a row here.

use crate::model::{NetMode, NodeRole, Secret, Settings, Slot};
use crate::values;
use cloudos_cluster::publish::PublishError;
use cloudos_cluster::subnets::ClusterRange;

/// How a key's values combine and what a bare `cloudos.NAME` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value; a later one replaces it (the command line after the file).
    One,
    /// A comma-separated list, replaced as a whole; in the file, a TOML array is joined
    /// with commas too.
    List,
    /// On or off; a bare `cloudos.NAME` means on.
    Flag,
    /// Each time the key is given adds one more value (only on the command line can it be
    /// given more than once).
    Repeated,
}

/// One key of the table.
pub struct Key {
    /// The name, as in the settings file; the command line puts `cloudos.` before it.
    pub name: &'static str,
    pub kind: Kind,
    /// What values it takes, for people (the README table's "values" column).
    pub help: &'static str,
    /// What holds when it is not given, for people (the README table's "default" column;
    /// empty for nothing).
    pub default: &'static str,
    /// Whether the README's table lists it. The two boot-loader keys (`slot`, `install`)
    /// are written by GRUB and by the install media, and described where those are.
    pub listed: bool,
    /// Whether a settings file CloudOS writes may carry it. Keys that instruct one boot
    /// (`fault`, `slot`, `install`) belong on a command line only; the file still reads them.
    pub in_file: bool,
    /// Checks a value (never empty, except for a [`Kind::Flag`]) and stores it; the error
    /// is a warning's reason, and never repeats a secret.
    pub set: fn(&mut Settings, &str) -> Result<(), String>,
    /// The field as the values that [`Key::set`] reads back to it: none when unset, one per
    /// value for a [`Kind::Repeated`] key, else one.
    pub get: fn(&Settings) -> Vec<String>,
}

/// The key named `name`, if it is one.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Stores a checked value, or passes its refusal on.
fn put<T>(field: &mut T, value: Result<T, String>) -> Result<(), String> {
    *field = value?;
    Ok(())
}

/// `Some` value as one text, `None` as none.
fn one(value: Option<impl ToString>) -> Vec<String> {
    value.map(|v| v.to_string()).into_iter().collect()
}

/// A list as one comma-separated text; an empty list as none.
fn joined<T: ToString>(items: &[T]) -> Vec<String> {
    match items.is_empty() {
        true => Vec::new(),
        false => vec![items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")],
    }
}

/// Every key, in the order of the README table, of the settings files CloudOS writes and
/// of the "known keys" a typo is told about.
pub static KEYS: &[Key] = &[
    Key {
        name: "role",
        kind: Kind::One,
        help: "`master`, `compute`, `none`",
        default: "`none`",
        listed: true,
        in_file: true,
        set: |s, v| {
            let role = match v {
                "master" => Ok(NodeRole::Master),
                "compute" => Ok(NodeRole::Compute),
                "none" => Ok(NodeRole::None),
                other => Err(format!("unknown role {other:?} (use master or compute)")),
            };
            put(&mut s.role, role)
        },
        get: |s| vec![s.role.to_string()],
    },
    Key {
        name: "hostname",
        kind: Kind::One,
        help: "a host name",
        default: "`cloudos-` + the last 3 bytes of the first MAC",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.hostname, values::parse_hostname(v).map(Some)),
        get: |s| one(s.hostname.as_ref()),
    },
    Key {
        name: "net",
        kind: Kind::One,
        help: "`dhcp`, `static`, `off`",
        default: "`dhcp`",
        listed: true,
        in_file: true,
        set: |s, v| {
            let mode = match v {
                "dhcp" => Ok(NetMode::Dhcp),
                "static" => Ok(NetMode::Static),
                "off" => Ok(NetMode::Off),
                other => Err(format!(
                    "unknown network mode {other:?} (use dhcp, static or off)"
                )),
            };
            put(&mut s.net.mode, mode)
        },
        get: |s| vec![s.net.mode.as_str().to_owned()],
    },
    Key {
        name: "iface",
        kind: Kind::One,
        help: "interface for the static address",
        default: "first Ethernet link",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.net.iface, values::parse_iface_name(v).map(Some)),
        get: |s| one(s.net.iface.as_ref()),
    },
    Key {
        name: "address",
        kind: Kind::One,
        help: "`10.0.0.5/24` (with `net=static`)",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.net.address, v.parse().map(Some)),
        get: |s| one(s.net.address),
    },
    Key {
        name: "gateway",
        kind: Kind::One,
        help: "`10.0.0.1`",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.net.gateway, values::parse_ipv4(v).map(Some)),
        get: |s| one(s.net.gateway),
    },
    Key {
        name: "dns",
        kind: Kind::List,
        help: "`10.0.0.1,9.9.9.9`",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.net.dns, values::parse_ipv4_list(v)),
        get: |s| joined(&s.net.dns),
    },
    Key {
        name: "debug",
        kind: Kind::Flag,
        help: "`1`/`0`",
        default: "`0`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.debug, values::parse_bool(v)),
        get: |s| vec![if s.debug { "1" } else { "0" }.to_owned()],
    },
    Key {
        name: "token",
        kind: Kind::One,
        help: "a join token (`cloudos1_…`); never shown in logs or status",
        default: "",
        listed: true,
        in_file: true,
        // The token's value is never repeated in a warning: warnings are shown.
        set: |s, v| {
            let token = v.parse::<cloudos_cluster::Token>().map_err(|e| {
                format!("not a CloudOS join token ({e}); create one with `cloudos token create`")
            });
            put(&mut s.token, token.map(|_| Some(Secret::new(v.trim()))))
        },
        get: |s| one(s.token.as_ref().map(Secret::expose)),
    },
    Key {
        name: "master",
        kind: Kind::One,
        help: "`host[:port]` of the master; IPv6 in brackets, `[fd00::2]:9443`",
        default: "found by mDNS",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.master,
                cloudos_cluster::parse_master_address(v).map(Some),
            )
        },
        get: |s| one(s.master.as_ref()),
    },
    Key {
        name: "cluster",
        kind: Kind::One,
        help: "the cluster's name, when this node creates it as master",
        default: "`cloudos`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.cluster, values::parse_cluster_name(v).map(Some)),
        get: |s| one(s.cluster.as_ref()),
    },
    Key {
        name: "workloads",
        kind: Kind::Flag,
        help: "`on`/`off`: a master runs workloads too (its own machine is also a node: a \
               cluster of one machine)",
        default: "`off`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.workloads, values::parse_bool(v)),
        get: |s| match s.workloads {
            true => vec!["on".to_owned()],
            false => Vec::new(),
        },
    },
    Key {
        name: "labels",
        kind: Kind::List,
        help: "`zone=a,disk=ssd`",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.labels, values::parse_labels(v)),
        get: |s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            joined(&labels)
        },
    },
    Key {
        name: "insecure_registries",
        kind: Kind::List,
        help: "`10.88.0.1:5000,…`: registries reached over plain HTTP (nodes pull, the master \
               reads image architectures)",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.insecure_registries, values::parse_registries(v)),
        get: |s| joined(&s.insecure_registries),
    },
    Key {
        name: "tls_san",
        kind: Kind::List,
        help: "`203.0.113.7,master.example.org`: more names and addresses in a master's \
               certificate (behind NAT, a load balancer)",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.tls_san, values::parse_tls_sans(v)),
        get: |s| joined(&s.tls_san),
    },
    Key {
        name: "container_range",
        kind: Kind::One,
        help: "`10.250.0.0/16`: a master's private range that its nodes' container subnets \
               (a /24 each) come from; must not overlap the LAN",
        default: "`10.250.0.0/16`",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.container_range,
                ClusterRange::parse(v).map(Some).map_err(|e| e.to_string()),
            )
        },
        get: |s| one(s.container_range.map(|r| r.to_string())),
    },
    Key {
        name: "service_range",
        kind: Kind::One,
        help: "`10.251.0.0/16`: a master's private range that its services' virtual addresses \
               (`NAME.svc.cloudos`) come from; must not overlap the LAN or `container_range`",
        default: "`10.251.0.0/16`",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.service_range,
                ClusterRange::parse(v).map(Some).map_err(|e| e.to_string()),
            )
        },
        get: |s| one(s.service_range.map(|r| r.to_string())),
    },
    Key {
        name: "mesh_endpoint",
        kind: Kind::One,
        help: "`203.0.113.7:51820`: where other nodes reach this node's mesh when not at its \
               own address (a cloud VM's public address, a port forward to UDP 51820)",
        default: "its own address",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.mesh_endpoint,
                v.trim()
                    .parse::<std::net::SocketAddr>()
                    .map(Some)
                    .map_err(|_| format!("{v:?} is not IP:PORT, such as 203.0.113.7:51820")),
            )
        },
        get: |s| one(s.mesh_endpoint.map(|e| e.to_string())),
    },
    Key {
        name: "mesh_endpoint_ranges",
        kind: Kind::List,
        help: "master: `203.0.113.0/24`: addresses a node may name as its `mesh_endpoint` \
               although its connection comes from elsewhere (cloud VMs' public addresses \
               when the master is inside the same cloud); other endpoints are ignored, so a \
               node cannot point its peers at a third party",
        default: "none",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.mesh_endpoint_ranges, values::parse_ip_ranges(v)),
        get: |s| {
            joined(
                &s.mesh_endpoint_ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        },
    },
    Key {
        name: "container_node_ports",
        kind: Kind::List,
        help: "`9101/tcp,8125/udp`: ports of this node its bridge containers may open (its \
               metrics, a local agent); every other port of the node is closed to them",
        default: "none",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.container_node_ports,
                v.split(',')
                    .map(|p| p.trim().parse().map_err(|e: PublishError| e.to_string()))
                    .collect(),
            )
        },
        get: |s| joined(&s.container_node_ports),
    },
    Key {
        name: "volume_host_paths",
        kind: Kind::List,
        help: "`/srv,/mnt/media`: directories of this node that containers may mount                (`--volume /srv/x:/x`); every other host path is refused",
        default: "none",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.volume_host_paths, values::parse_host_paths(v)),
        get: |s| joined(&s.volume_host_paths),
    },
    Key {
        name: "node_timeout",
        kind: Kind::One,
        help: "master: `2s`, `10s`: a node silent this long is NotReady, and its replicas \
               run elsewhere a moment later; longer where machines or links stall",
        default: "`2s`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.node_timeout, values::parse_node_timeout(v).map(Some)),
        get: |s| one(s.node_timeout.map(|secs| format!("{secs}s"))),
    },
    Key {
        name: "ha_lease",
        kind: Kind::One,
        help: "master among several: `1s`, `5s`: the leader's lease; a dead leader is \
               replaced about this long after, and etcd's timing follows it; longer on \
               slow or emulated machines, whose stalls would otherwise end it",
        default: "`1s`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.ha_lease, values::parse_ha_lease(v).map(Some)),
        get: |s| one(s.ha_lease.map(|secs| format!("{secs}s"))),
    },
    Key {
        name: "ntp",
        kind: Kind::List,
        help: "`pool.example.org,10.0.0.1:123`: time servers (SNTP), asked before the DHCP \
               lease's and the master's",
        default: "the DHCP lease's, then the master",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.ntp, values::parse_ntp_servers(v)),
        get: |s| joined(&s.ntp),
    },
    Key {
        name: "watchdog",
        kind: Kind::One,
        help: "`off`, or seconds without PID 1 feeding it before the hardware watchdog resets \
               the machine (where it has one)",
        default: "`60`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.watchdog, values::parse_watchdog(v)),
        get: |s| vec![s.watchdog.to_string()],
    },
    Key {
        name: "fault",
        kind: Kind::Repeated,
        help: "`crash:SERVICE:N` — the service crashes on its first N starts; `hang:pid1:N` — \
               PID 1 hangs N s after ready and stops feeding the watchdog (for testing \
               recovery)",
        default: "",
        listed: true,
        in_file: false,
        set: |s, v| {
            s.faults.push(values::parse_fault(v)?);
            Ok(())
        },
        get: |s| s.faults.iter().map(ToString::to_string).collect(),
    },
    Key {
        name: "slot",
        kind: Kind::One,
        help: "`a`, `b`: the system slot GRUB booted, set by the installed disk's grub.cfg",
        default: "",
        listed: false,
        in_file: false,
        set: |s, v| {
            let slot = match v {
                "a" => Ok(Slot::A),
                "b" => Ok(Slot::B),
                other => Err(format!("{other:?} is not a slot (a or b)")),
            };
            put(&mut s.slot, slot.map(Some))
        },
        get: |s| one(s.slot.map(Slot::as_str)),
    },
    Key {
        name: "install",
        kind: Kind::One,
        help: "`wizard`, `setup`, `LABEL=NAME:/path` or `http(s)://…`: install to disk (checked \
               by the installer)",
        default: "",
        listed: false,
        in_file: false,
        set: |s, v| put(&mut s.install, Ok(Some(v.to_owned()))),
        get: |s| one(s.install.as_ref()),
    },
    Key {
        name: "backup_dir",
        kind: Kind::One,
        help: "`/var/lib/cloudos/backups`: a master writes an encrypted backup of its state \
               there every `backup_interval`, keeping `backup_keep` (needs \
               `backup_passphrase_file`)",
        default: "no scheduled backups",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.backup_dir, values::parse_abs_path(v).map(Some)),
        get: |s| one(s.backup_dir.as_ref()),
    },
    Key {
        name: "backup_interval",
        kind: Kind::One,
        help: "`6h`, `1d`: time between scheduled backups (at least `1m`)",
        default: "`1d`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.backup_interval, values::parse_interval(v).map(Some)),
        get: |s| one(s.backup_interval.map(|secs| format!("{secs}s"))),
    },
    Key {
        name: "backup_keep",
        kind: Kind::One,
        help: "how many scheduled backups are kept; the oldest go first",
        default: "`7`",
        listed: true,
        in_file: true,
        set: |s, v| {
            let keep = match v.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(format!("{v:?} is not a number of backups (1 or more)")),
            };
            put(&mut s.backup_keep, keep)
        },
        get: |s| one(s.backup_keep),
    },
    Key {
        name: "backup_passphrase_file",
        kind: Kind::One,
        help: "`/var/lib/cloudos/backup.pass`: its first line is the backups' passphrase (at \
               least 12 characters)",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.backup_passphrase_file,
                values::parse_abs_path(v).map(Some),
            )
        },
        get: |s| one(s.backup_passphrase_file.as_ref()),
    },
    Key {
        name: "restore",
        kind: Kind::One,
        help: "`LABEL=NAME:/cluster.age` or `/path`: a master whose data partition holds no \
               cluster restores this backup (`cloudos backup create`) instead of making a new \
               cluster",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.restore, values::parse_file_source(v).map(Some)),
        get: |s| one(s.restore.as_ref()),
    },
    Key {
        name: "restore_passphrase_file",
        kind: Kind::One,
        help: "`LABEL=NAME:/pass` or `/path`: its first line is the passphrase of `restore`; a \
               file on the data partition is deleted once the restore is done",
        default: "",
        listed: true,
        in_file: true,
        set: |s, v| {
            put(
                &mut s.restore_passphrase_file,
                values::parse_file_source(v).map(Some),
            )
        },
        get: |s| one(s.restore_passphrase_file.as_ref()),
    },
    Key {
        name: "health_timeout",
        kind: Kind::One,
        help: "`2m`, `300s`: how long an upgraded `nodeos` on a host installed with the curl \
               line has to become healthy (its report acknowledged by the master) before it \
               goes back to the previous binary (at least `1m`)",
        default: "`2m`",
        listed: true,
        in_file: true,
        set: |s, v| put(&mut s.health_timeout, values::parse_interval(v).map(Some)),
        get: |s| one(s.health_timeout.map(|secs| format!("{secs}s"))),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plain() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                key.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                key.name
            );
            assert!(
                KEYS[..i].iter().all(|k| k.name != key.name),
                "{} twice",
                key.name
            );
            assert!(!key.help.is_empty(), "{} has no help", key.name);
        }
    }

    #[test]
    fn a_repeated_key_is_never_written_to_a_file() {
        // A TOML table holds a key once: a key that accumulates values cannot be written there.
        for key in KEYS.iter().filter(|k| k.kind == Kind::Repeated) {
            assert!(!key.in_file, "{}", key.name);
        }
    }

    #[test]
    fn an_unset_settings_value_reads_back_as_the_default() {
        // `get` of the default is what a writer compares with to leave a key out.
        let defaults = Settings::default();
        for key in KEYS {
            let mut again = Settings::default();
            for value in (key.get)(&defaults) {
                (key.set)(&mut again, &value).expect(key.name);
            }
            assert_eq!(again, defaults, "{}", key.name);
        }
    }
}
