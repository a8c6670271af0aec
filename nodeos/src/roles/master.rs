//! The master role as `nodeos` runs it: the `nodeos master` flags and the boot settings,
//! mapped onto the master's own [`MasterConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cloudos_cluster::client::DEFAULT_API_PORT;
use cloudos_master::backup::Schedule;
use cloudos_master::config::{DEFAULT_CLUSTER_NAME, DEFAULT_DATA_DIR};
use cloudos_master::ha::file::HaFile;
use cloudos_master::ha::member::EtcdProgram;
use cloudos_master::workloads::retention::Retention;
use cloudos_master::{MasterConfig, TokenOutput};

use super::{host_name, parse_duration};
use crate::settings::Settings;

/// The master's name when neither a setting nor a flag gives one and the kernel has none.
const FALLBACK_NAME: &str = "cloudos-master";

/// `nodeos master`: run the master outside PID 1 (on a host, or in tests).
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Where the master keeps its state (in `<dir>/master/state.redb`).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address and port of the HTTPS API; `[::]` is IPv4 and IPv6.
    #[arg(long, default_value_t = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_API_PORT)))]
    pub listen: SocketAddr,
    /// Name of the cluster, used when it is created (first start only).
    #[arg(long, default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster_name: String,
    /// This master's name (serving certificate, mDNS); default: the host name.
    #[arg(long)]
    pub name: Option<String>,
    /// How often agents send heartbeats (their telemetry), e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A node silent this long is NotReady, and its replicas run elsewhere a moment later
    /// (the master pings each agent four times within it). Longer on links or machines
    /// that stall (an emulator, a congested uplink).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub not_ready_after: Duration,
    /// How often each node's metric history gets a point (a minute; the history's
    /// windows, a day of points and a month of hourly means, stay the same).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub history_interval: Duration,
    /// Lifetime of the certificates given to nodes and admins, e.g. 7d or 10m.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
    /// Do not advertise the master over mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// How the scheduler picks among nodes that fit: spread (least loaded) or binpack.
    #[arg(long, default_value = "spread")]
    pub scheduler: String,
    /// Binaries served to `install.sh` (`nodeos-<arch>`, `cloudos-<arch>`, optionally a
    /// `SHA256SUMS`); default: `<data-dir>/downloads`. This master's own binary is served too.
    #[arg(long, value_name = "DIR")]
    pub downloads: Option<PathBuf>,
    /// A registry (`host:port`) the master reads image architectures from over plain
    /// HTTP; repeat for more.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// Another name or address for the serving certificate, one clients use but the
    /// master cannot see on its interfaces (a public IP behind NAT, a DNS name); repeat
    /// for more.
    #[arg(long, value_name = "NAME|IP", value_parser = parse_tls_san)]
    pub tls_san: Vec<String>,
    /// A range of addresses a node may name as its mesh endpoint although its connection
    /// comes from elsewhere; repeat for more. Other endpoints are ignored.
    #[arg(long = "mesh-endpoint-range", value_name = "CIDR", value_parser = parse_ip_range)]
    pub mesh_endpoint_ranges: Vec<ipnet::IpNet>,
    /// The private range the nodes' container subnets (a /24 each) come from; it must not
    /// overlap a network this machine is on.
    #[arg(long, value_name = "CIDR", default_value = cloudos_cluster::subnets::DEFAULT_RANGE,
          value_parser = |v: &str| cloudos_cluster::subnets::ClusterRange::parse(v).map_err(|e| e.to_string()))]
    pub container_range: cloudos_cluster::subnets::ClusterRange,
    /// The private range services' virtual addresses come from; it must not overlap a
    /// network this machine is on, nor the container range.
    #[arg(long, value_name = "CIDR", default_value = cloudos_cluster::routing::DEFAULT_SERVICE_RANGE,
          value_parser = |v: &str| cloudos_cluster::subnets::ClusterRange::parse(v).map_err(|e| e.to_string()))]
    pub service_range: cloudos_cluster::subnets::ClusterRange,
    /// How long finished tasks (their records, logs and outputs) are kept, e.g. 7d.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub keep_finished: Duration,
    /// At most this many finished tasks are kept; the oldest go first.
    #[arg(long, default_value_t = Retention::default().max_finished)]
    pub keep_tasks: usize,
    /// Logs and outputs of all tasks together stay within this (e.g. 1Gi); the oldest
    /// finished tasks go first.
    #[arg(long, default_value = "1Gi", value_parser = parse_bytes)]
    pub workload_files: u64,
    /// A task's log (stdout and stderr together) is kept up to this (e.g. 16Mi): its head.
    #[arg(long, default_value = "16Mi", value_parser = parse_bytes)]
    pub log_cap: u64,
    /// Also serve time (SNTP) on UDP port 123, as the appliance master does, for a host
    /// that runs no time server of its own (nodes ask their master by default).
    #[arg(long)]
    pub serve_time: bool,
    /// Restore this backup (`cloudos backup create`) before starting: the same CA, tokens,
    /// nodes, admins and workloads. Refused when the data directory already holds a
    /// cluster, unless --force-restore.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// The backup's passphrase for --restore: the first line of FILE (default: asked on
    /// the terminal, without echo).
    #[arg(long, value_name = "FILE", requires = "restore")]
    pub passphrase_file: Option<PathBuf>,
    /// With --restore: replace the cluster the data directory holds (it is kept aside as
    /// `<data-dir>/master.replaced-<time>`).
    #[arg(long, requires = "restore")]
    pub force_restore: bool,
    /// Write an encrypted backup of the state into DIR every --backup-interval, keeping
    /// the newest --backup-keep (needs --backup-passphrase-file).
    #[arg(long, value_name = "DIR", requires = "backup_passphrase_file")]
    pub backup_dir: Option<PathBuf>,
    /// Time between scheduled backups, e.g. 6h or 1d.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    pub backup_interval: Duration,
    /// How many scheduled backups to keep; the oldest go first.
    #[arg(long, default_value_t = Schedule::DEFAULT_KEEP)]
    pub backup_keep: usize,
    /// The scheduled backups' passphrase: the first line of FILE (at least 12 characters).
    #[arg(long, value_name = "FILE", requires = "backup_dir")]
    pub backup_passphrase_file: Option<PathBuf>,
    /// The etcd program a master among several runs its etcd member with (Debian's
    /// `etcd`); used when `<data-dir>/master/ha.json` says this master runs a member.
    #[arg(long, value_name = "PATH")]
    pub etcd_binary: Option<PathBuf>,
    /// Among several masters: the leader's lease (`1s`, `5s`); a dead leader is replaced
    /// about this long after, and etcd's timing follows it. Overrides `ha.json`'s.
    #[arg(long, value_name = "DURATION", value_parser = parse_ha_lease)]
    pub ha_lease: Option<u64>,
    /// Join the masters of a running cluster with a token of role master (`cloudos token
    /// create --role master`), at the first start; needs --master.
    #[arg(long, value_name = "TOKEN", requires = "master")]
    pub join: Option<String>,
    /// The master (`host:port`) to join the masters through (with --join).
    #[arg(long, value_name = "HOST:PORT", requires = "join")]
    pub master: Option<String>,
    /// The address the other masters reach this one at (default: this machine's address
    /// on the way to --master).
    #[arg(long, value_name = "IP")]
    pub advertise: Option<std::net::IpAddr>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    cloudos_cluster::workload::parse_memory(s).map_err(|e| e.to_string())
}

fn parse_tls_san(value: &str) -> Result<String, String> {
    let mut sans = crate::settings::parse_tls_sans(value)?;
    match (sans.pop(), sans.is_empty()) {
        (Some(san), true) => Ok(san),
        _ => Err("one name or address per --tls-san".to_owned()),
    }
}

fn parse_ip_range(value: &str) -> Result<ipnet::IpNet, String> {
    let mut ranges = crate::settings::values::parse_ip_ranges(value)?;
    match (ranges.pop(), ranges.is_empty()) {
        (Some(range), true) => Ok(range),
        _ => Err("one range per --mesh-endpoint-range".to_owned()),
    }
}

/// The master's config from `nodeos master` flags.
pub fn config_from_args(args: MasterArgs) -> anyhow::Result<MasterConfig> {
    if args.heartbeat_interval.is_zero()
        || args.cert_lifetime.is_zero()
        || args.not_ready_after.is_zero()
    {
        anyhow::bail!(
            "--heartbeat-interval, --not-ready-after and --cert-lifetime must be at least 1s"
        );
    }
    let node_name = args.name.unwrap_or_else(|| host_name(FALLBACK_NAME));
    let mut config = MasterConfig::new(args.data_dir, node_name);
    config.listen = args.listen;
    config.cluster_name = args.cluster_name;
    config.heartbeat_interval = args.heartbeat_interval;
    config.not_ready_after = args.not_ready_after;
    config.cert_lifetime = args.cert_lifetime;
    config.history_interval = args.history_interval.max(Duration::from_secs(1));
    config.mdns = !args.no_mdns;
    if cloudos_scheduler::policy_by_name(&args.scheduler).is_none() {
        anyhow::bail!(
            "unknown --scheduler {:?}: use one of {}",
            args.scheduler,
            cloudos_scheduler::POLICY_NAMES.join(", ")
        );
    }
    config.scheduler = args.scheduler;
    if let Some(dir) = args.downloads {
        config.downloads_dir = dir;
    }
    config.insecure_registries = args.insecure_registry;
    config.tls_san = args.tls_san;
    config.mesh_endpoint_ranges = args.mesh_endpoint_ranges;
    config.container_range = args.container_range;
    config.service_range = args.service_range;
    config.retention = Retention {
        keep_finished: args.keep_finished,
        max_finished: args.keep_tasks,
        files_budget: args.workload_files,
        log_cap: args.log_cap,
        ..Retention::default()
    };
    if args.backup_interval.is_zero() || args.backup_keep == 0 {
        anyhow::bail!("--backup-interval and --backup-keep must be at least 1s and 1");
    }
    config.backups = match (args.backup_dir, args.backup_passphrase_file) {
        (Some(dir), Some(passphrase_file)) => Some(Schedule {
            dir,
            interval: args.backup_interval,
            keep: args.backup_keep,
            passphrase_file,
        }),
        _ => None,
    };
    config.ha = ha_config(
        &config.data_dir,
        args.etcd_binary.map(EtcdProgram::direct).as_ref(),
        args.ha_lease,
    )?;
    Ok(config)
}

/// The master's place among several masters, when `<data>/master/ha.json` gives one;
/// `lease_secs`, when set, is the leader's lease instead of the file's.
fn ha_config(
    data_dir: &std::path::Path,
    program: Option<&EtcdProgram>,
    lease_secs: Option<u64>,
) -> anyhow::Result<Option<cloudos_master::ha::HaConfig>> {
    let Some(mut file) = HaFile::load(data_dir)? else {
        return Ok(None);
    };
    if lease_secs.is_some() {
        file.lease_secs = lease_secs;
    }
    Ok(Some(file.config(data_dir, program)?))
}

fn parse_ha_lease(value: &str) -> Result<u64, String> {
    cloudos_settings::values::parse_ha_lease(value)
}

/// The master under PID 1: defaults, the data partition, the node's host name.
pub fn config_from_settings(settings: &Settings) -> MasterConfig {
    let node_name = settings
        .hostname
        .clone()
        .unwrap_or_else(|| host_name(FALLBACK_NAME));
    let mut config = MasterConfig::new(DEFAULT_DATA_DIR, node_name);
    if let Some(cluster) = &settings.cluster {
        config.cluster_name = cluster.clone();
    }
    config.insecure_registries = settings.insecure_registries.clone();
    config.tls_san = settings.tls_san.clone();
    config.mesh_endpoint_ranges = settings.mesh_endpoint_ranges.clone();
    if let Some(secs) = settings.node_timeout {
        config.not_ready_after = Duration::from_secs(secs);
    }
    if let Some(range) = settings.container_range {
        config.container_range = range;
    }
    if let Some(range) = settings.service_range {
        config.service_range = range;
    }
    config.backups = match (&settings.backup_dir, &settings.backup_passphrase_file) {
        (Some(dir), Some(passphrase_file)) => Some(Schedule {
            dir: dir.into(),
            interval: settings
                .backup_interval
                .map_or(Schedule::DEFAULT_INTERVAL, Duration::from_secs),
            keep: settings
                .backup_keep
                .map_or(Schedule::DEFAULT_KEEP, |n| n as usize),
            passphrase_file: passphrase_file.into(),
        }),
        (Some(_), None) => {
            log::warn!(
                "cloudos.backup_dir is set without cloudos.backup_passphrase_file: no scheduled \
                 backups (they are always encrypted)"
            );
            None
        }
        _ => None,
    };
    config
}

/// `nodeos master …` on a host: the token goes to stdout, the log to stderr.
pub fn run_tool(args: MasterArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    crate::services::limits::raise_open_files(crate::services::limits::OPEN_FILES);
    if args.serve_time {
        serve_time();
    }
    if let Some(file) = &args.restore {
        super::restore::from_flags(
            file,
            args.passphrase_file.as_deref(),
            &args.data_dir,
            args.force_restore,
        )?;
    }
    if let (Some(token), Some(master)) = (&args.join, &args.master) {
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| host_name(FALLBACK_NAME));
        super::master_join::join_if_new(
            &args.data_dir,
            &name,
            token,
            master,
            args.advertise,
            args.listen.port(),
        )?;
    }
    let config = config_from_args(args)?;
    cloudos_master::serve(config, TokenOutput::Stdout, || {})?;
    Ok(())
}

/// The `master` service under PID 1 (`cloudos.role=master`). The appliance master also
/// serves time (docs/design.md decision 19); a host master leaves that to the host's own
/// time service, which holds port 123 there, unless told `--serve-time`.
pub fn run_service(settings: &Settings) -> anyhow::Result<()> {
    serve_time();
    let mut config = config_from_settings(settings);
    // An installed disk has slots: the master upgrades itself last in a rollout, as a
    // compute node's agent would (same hooks, same records).
    if let Some(slot) = settings.slot {
        let install = crate::upgrade::node::install_hook(slot);
        let report = crate::upgrade::node::report_hook(slot);
        config.self_upgrade = Some(cloudos_master::rollout::SelfUpgrade { install, report });
    }
    // A master that runs workloads: its own node joins with a token the master leaves it,
    // once (the agent keeps its identity on the same data partition).
    let agent = cloudos_agent::IdentityStore::new(std::path::Path::new(super::agent::DATA_DIR));
    if settings.workloads && agent.master_address().is_none() {
        config.own_node_token = Some(cloudos_master::own_node_token_file(&config.data_dir));
    }
    super::restore::from_settings(settings, &config.data_dir)?;
    // A master given a token and a master's address is added to that cluster's masters
    // at its first start (the wizard's "add a master", an answer file, the curl line).
    if let (Some(token), Some(master)) = (&settings.token, &settings.master) {
        super::master_join::join_if_new(
            &config.data_dir,
            &config.node_name,
            token.expose(),
            master,
            None,
            config.listen.port(),
        )?;
        // Used: a master never joins again, and the token must not rest on the disk.
        crate::settings::forget_token_in(std::path::Path::new(crate::settings::CONFIG_FILE));
    }
    // A master among several runs its etcd member from the pack of the system it booted,
    // unpacked on its data partition; a master on its own never touches it.
    let member = HaFile::load(&config.data_dir)?.is_some_and(|file| file.member.is_some());
    let program = if member {
        Some(super::etcd_pack::program(&config.data_dir, settings.slot)?)
    } else {
        None
    };
    config.ha = ha_config(&config.data_dir, program.as_ref(), settings.ha_lease)?;
    crate::upgrade::offer::offer_in_background(&config.data_dir, settings.slot);
    cloudos_master::serve(
        config,
        TokenOutput::Consoles,
        crate::supervisor::ready::report,
    )?;
    Ok(())
}

/// The SNTP server on UDP 123 (IPv6 and IPv4 on one socket where the kernel has IPv6), on
/// a thread of its own. A failure is logged: nodes then keep the time of their other
/// servers, and say they drift when the master's clock is off.
fn serve_time() {
    let socket =
        std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, cloudos_time::NTP_PORT))
            .or_else(|_| {
                std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, cloudos_time::NTP_PORT))
            });
    match socket {
        Ok(socket) => {
            log::info!("serving time (SNTP) on UDP port {}", cloudos_time::NTP_PORT);
            std::thread::spawn(move || {
                let e = cloudos_time::server::serve(socket);
                log::error!("the time server stopped: {e}");
            });
        }
        Err(e) => log::warn!(
            "cannot serve time on UDP port {}: {e}; nodes keep the time of their other servers",
            cloudos_time::NTP_PORT
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MasterArgs,
    }

    fn parse(argv: &[&str]) -> Result<MasterConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("master").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        config_from_args(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&["--name", "m1"]).expect("defaults");
        assert_eq!(c.listen.port(), DEFAULT_API_PORT);
        assert_eq!(c.cluster_name, "cloudos");
        assert_eq!(c.not_ready_after, Duration::from_secs(2));
        assert_eq!(c.ping_interval(), Duration::from_millis(500));
        assert_eq!(c.cert_lifetime, Duration::from_secs(7 * 86_400));
        assert!(c.mdns);
        let c = parse(&[
            "--data-dir",
            "/tmp/x",
            "--listen",
            "127.0.0.1:0",
            "--cluster-name",
            "lab",
            "--name",
            "m1",
            "--heartbeat-interval",
            "1s",
            "--not-ready-after",
            "6s",
            "--cert-lifetime",
            "90s",
            "--no-mdns",
        ])
        .expect("flags");
        assert_eq!(c.not_ready_after, Duration::from_secs(6));
        assert_eq!(c.not_ready_without_connection(), Duration::from_secs(6));
        assert_eq!(c.cert_lifetime, Duration::from_secs(90));
        assert!(!c.mdns);
        assert_eq!(c.retention, Retention::default(), "flag defaults match");
        let c = parse(&[
            "--keep-finished",
            "1h",
            "--keep-tasks",
            "5",
            "--workload-files",
            "64Mi",
            "--log-cap",
            "8Mi",
        ])
        .expect("retention flags");
        assert_eq!(c.retention.keep_finished, Duration::from_secs(3600));
        assert_eq!(c.retention.max_finished, 5);
        assert_eq!(c.retention.files_budget, 64 << 20);
        assert_eq!(c.retention.log_cap, 8 << 20);
        assert!(parse(&["--heartbeat-interval", "2x"])
            .expect_err("bad unit")
            .contains("unknown unit"));
    }

    #[test]
    fn backup_and_restore_flags() {
        let c = parse(&[
            "--backup-dir",
            "/b",
            "--backup-passphrase-file",
            "/p",
            "--backup-interval",
            "2s",
            "--backup-keep",
            "3",
        ])
        .expect("backup flags");
        assert_eq!(
            c.backups,
            Some(Schedule {
                dir: "/b".into(),
                interval: Duration::from_secs(2),
                keep: 3,
                passphrase_file: "/p".into(),
            })
        );
        assert_eq!(parse(&[]).expect("defaults").backups, None);
        for bad in [
            &["--backup-dir", "/b"][..],
            &["--backup-passphrase-file", "/p"],
            &["--passphrase-file", "/p"],
            &["--force-restore"],
            &[
                "--backup-dir",
                "/b",
                "--backup-passphrase-file",
                "/p",
                "--backup-keep",
                "0",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&[
            "--restore",
            "/b.age",
            "--passphrase-file",
            "/p",
            "--force-restore"
        ])
        .is_ok());
    }

    #[test]
    fn backup_settings_map_onto_the_schedule() {
        let mut settings = Settings {
            backup_dir: Some("/var/lib/cloudos/backups".into()),
            ..Settings::default()
        };
        assert_eq!(
            config_from_settings(&settings).backups,
            None,
            "no passphrase"
        );
        settings.backup_passphrase_file = Some("/var/lib/cloudos/pass".into());
        let schedule = config_from_settings(&settings).backups.expect("on");
        assert_eq!(schedule.interval, Schedule::DEFAULT_INTERVAL);
        assert_eq!(schedule.keep, Schedule::DEFAULT_KEEP);
        settings.backup_interval = Some(3600);
        settings.backup_keep = Some(2);
        let schedule = config_from_settings(&settings).backups.expect("on");
        assert_eq!(
            (schedule.interval, schedule.keep),
            (Duration::from_secs(3600), 2)
        );
    }
}
