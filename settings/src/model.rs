//! The typed node settings: what a node was told, after checking.
//!
//! Owns the types only. How a key's text becomes a field is the key table's job
//! ([`crate::keys`]); reading a boot line or a file is [`crate::load`]'s, writing one is
//! [`crate::write`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

pub use cloudos_cluster::Ipv4Cidr;

/// Where the settings file lives once the data partition is mounted.
pub const CONFIG_FILE: &str = "/var/lib/cloudos/config.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// No role chosen: the node boots, brings up its network and waits.
    #[default]
    None,
    Master,
    Compute,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::None => "none",
            NodeRole::Master => "master",
            NodeRole::Compute => "compute",
        })
    }
}

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

impl NetMode {
    /// The value of `cloudos.net` that selects this mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            NetMode::Dhcp => "dhcp",
            NetMode::Static => "static",
            NetMode::Off => "off",
        }
    }
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

impl fmt::Display for CrashFault {
    /// The value of `cloudos.fault` that injects this fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crash:{}:{}", self.service, self.times)
    }
}

/// A failure injected on purpose (`cloudos.fault`), for tests of what recovers from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Fault {
    /// A service crashes on its first starts (the supervisor restarts it).
    Crash(CrashFault),
    /// PID 1's main loop hangs this many seconds after the node is ready, and stops
    /// feeding the hardware watchdog, which must then reset the machine.
    HangPid1 { after_secs: u32 },
}

impl fmt::Display for Fault {
    /// The value of `cloudos.fault` that injects this fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(crash) => crash.fmt(f),
            Fault::HangPid1 { after_secs } => write!(f, "hang:pid1:{after_secs}"),
        }
    }
}

/// The hardware watchdog's timeout (`cloudos.watchdog`): PID 1 arms the machine's watchdog
/// device with it and feeds it, so a hung PID 1 resets the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Watchdog {
    /// Not armed, even where the machine has one.
    Off,
    /// Reset the machine when PID 1 has not fed the watchdog for this long.
    Seconds(u32),
}

impl Watchdog {
    /// A minute: long enough that a busy or slowly emulated machine is never reset for
    /// being slow, short enough that a hung node is back within a couple of minutes.
    pub const DEFAULT_SECS: u32 = 60;
}

impl Default for Watchdog {
    fn default() -> Watchdog {
        Watchdog::Seconds(Watchdog::DEFAULT_SECS)
    }
}

impl fmt::Display for Watchdog {
    /// The value of `cloudos.watchdog` that sets this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watchdog::Off => f.write_str("off"),
            Watchdog::Seconds(secs) => write!(f, "{secs}"),
        }
    }
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

/// Every node setting. A field is added together with its row in [`crate::keys::KEYS`],
/// which says how the field is read, checked, written and documented.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Settings {
    pub role: NodeRole,
    pub hostname: Option<String>,
    pub net: NetSettings,
    pub debug: bool,
    pub faults: Vec<Fault>,
    /// The hardware watchdog's timeout (`cloudos.watchdog`).
    pub watchdog: Watchdog,
    /// The join token (`cloudos.token`): needed by a compute node's first join only.
    pub token: Option<Secret>,
    /// `host:port` of the master (`cloudos.master`); mDNS finds it otherwise.
    pub master: Option<String>,
    /// The cluster's name when this node creates it as master (`cloudos.cluster`).
    pub cluster: Option<String>,
    /// A master that also runs workloads (`cloudos.workloads=on`): its machine is a node
    /// of its own cluster too. Compute nodes ignore it.
    pub workloads: bool,
    /// Node labels for scheduling (`cloudos.labels=zone=a,disk=ssd`).
    pub labels: BTreeMap<String, String>,
    /// Image registries reached over plain HTTP, `host:port` separated by commas
    /// (`cloudos.insecure_registries=10.88.0.1:5000`): a registry on the LAN without TLS.
    pub insecure_registries: Vec<String>,
    /// More names and addresses for the master's serving certificate
    /// (`cloudos.tls_san=203.0.113.7,master.example.org`): the ones clients use to reach a
    /// master behind NAT or a load balancer, which it cannot see on its own interfaces.
    pub tls_san: Vec<String>,
    /// The private range a master gives its nodes' container subnets from
    /// (`cloudos.container_range=10.250.0.0/16`); the default when not set.
    pub container_range: Option<cloudos_cluster::subnets::ClusterRange>,
    /// The private range a master gives its services' virtual addresses from
    /// (`cloudos.service_range=10.251.0.0/16`); the default when not set.
    pub service_range: Option<cloudos_cluster::subnets::ClusterRange>,
    /// Where other nodes reach this node's mesh when not at its own address
    /// (`cloudos.mesh_endpoint=203.0.113.7:51820`): a cloud VM's public address.
    pub mesh_endpoint: Option<std::net::SocketAddr>,
    /// A master's: addresses a node may name as its mesh endpoint although its connection
    /// comes from elsewhere (`cloudos.mesh_endpoint_ranges=203.0.113.0/24`); none when not
    /// set, so a node's endpoint counts only at the address the master sees it at.
    pub mesh_endpoint_ranges: Vec<ipnet::IpNet>,
    /// Ports of this node its bridge containers may open
    /// (`cloudos.container_node_ports=9101/tcp`); none when not set.
    pub container_node_ports: Vec<cloudos_cluster::publish::NodePort>,
    /// Directories of this node containers may mount, by prefix
    /// (`cloudos.volume_host_paths=/srv,/mnt/media`); none when not set.
    pub volume_host_paths: Vec<String>,
    /// A master's: seconds of silence before a node is NotReady
    /// (`cloudos.node_timeout=2s`); the master's default when not set.
    pub node_timeout: Option<u64>,
    /// A master among several: the leader's lease in seconds (`cloudos.ha_lease=5s`); the
    /// default (or `ha.json`'s) when not set.
    pub ha_lease: Option<u64>,
    /// SNTP servers, `host:port` (port 123 when none was given), asked before the DHCP
    /// lease's and the master's (`cloudos.ntp=pool.example.org,10.0.0.1`).
    pub ntp: Vec<String>,
    /// The system slot GRUB booted (`cloudos.slot=a|b`, set by the installed disk's
    /// grub.cfg): nodeos confirms that slot in GRUB's environment once healthy.
    pub slot: Option<Slot>,
    /// Install to disk (`cloudos.install=`): `wizard` for the interactive installer on
    /// the console, or where the answer file is (`http(s)://…` or `LABEL=NAME:/path`);
    /// checked by the installer, which says what is wrong with it.
    pub install: Option<String>,
    /// Scheduled backups of a master's state (`cloudos.backup_dir=/var/lib/cloudos/backups`):
    /// on when set, with [`Settings::backup_passphrase_file`].
    pub backup_dir: Option<String>,
    /// Seconds between scheduled backups (`cloudos.backup_interval=1d`).
    pub backup_interval: Option<u64>,
    /// How many scheduled backups are kept (`cloudos.backup_keep=7`).
    pub backup_keep: Option<u32>,
    /// The file whose first line is the backups' passphrase.
    pub backup_passphrase_file: Option<String>,
    /// A backup to restore when the data partition holds no cluster yet
    /// (`cloudos.restore=LABEL=NAME:/path` or `/path`): a master restored on a new machine.
    pub restore: Option<String>,
    /// The file whose first line is that backup's passphrase, in the same syntax.
    pub restore_passphrase_file: Option<String>,
    /// Seconds an upgraded `nodeos` on a host installed with the curl line has to become
    /// healthy before it goes back to the previous binary (`cloudos.health_timeout=2m`).
    pub health_timeout: Option<u64>,
}

impl Settings {
    /// How many times the named service is to crash on purpose.
    pub fn injected_crashes(&self, service: &str) -> u32 {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Crash(crash) if crash.service == service => Some(crash.times),
                _ => None,
            })
            .sum()
    }

    /// After how many seconds of being ready PID 1 is to hang on purpose, if at all.
    pub fn pid1_hang_after(&self) -> Option<u32> {
        self.faults.iter().find_map(|f| match f {
            Fault::HangPid1 { after_secs } => Some(*after_secs),
            Fault::Crash(_) => None,
        })
    }
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
