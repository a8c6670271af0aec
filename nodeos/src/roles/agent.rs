//! The agent role as `nodeos` runs it: the `nodeos agent` flags and the boot settings mapped
//! onto the agent's [`AgentConfig`], and its three ways to run: a tool in the foreground,
//! the `agent` service under PID 1, and the systemd unit of a host install (`host`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudos_agent::metrics;
use cloudos_agent::{AgentConfig, Outcome, RETRY_BACKOFF};
use cloudos_cluster::token::TokenError;
use cloudos_cluster::Token;

use super::{host_name, parse_duration};
use crate::settings::{NodeRole, Settings};

/// The data partition, where the identity lives under `agent/`.
pub const DATA_DIR: &str = "/var/lib/cloudos";

/// The node's name when neither a setting nor a flag gives one and the kernel has none.
const FALLBACK_NAME: &str = "cloudos";

/// `nodeos agent`: run the agent outside PID 1 (on a host, or in tests).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Where the agent keeps its identity (in `agent/` below it).
    #[arg(long, default_value = DATA_DIR)]
    pub data_dir: PathBuf,
    /// Join token from `cloudos token create`; only needed for the first join.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The master's host:port; found by mDNS when left out.
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Labels for scheduling: `zone=a,disk=ssd`.
    #[arg(long, value_name = "K=V,…", value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// How long one mDNS browse for the master lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
    /// Where the node serves its Prometheus metrics (plain HTTP, no secrets).
    #[arg(long, default_value = metrics::DEFAULT_LISTEN)]
    pub metrics_listen: std::net::SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// An image registry (`host:port`) to reach over plain HTTP; repeat for more.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// A port of this node its bridge containers may open (`9101/tcp`); repeat for more.
    /// Every other port of the node is closed to them.
    #[arg(long, value_name = "PORT[/udp]")]
    pub container_node_port: Vec<cloudos_cluster::publish::NodePort>,
    /// A directory of this node (and what is under it) that containers may mount
    /// (`--volume /srv/x:/x`); repeat for more. Every other host path is refused.
    #[arg(long, value_name = "PATH")]
    pub volume_host_path: Vec<String>,
    /// The resolv.conf whose resolvers the containers' DNS forwards the names it does not
    /// answer to (a host whose /etc/resolv.conf names a stub on loopback may point at the
    /// stub's own upstream list).
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// Where other nodes reach this node's mesh (`IP:PORT`) when not at its own address: a
    /// cloud VM's public address, a router's port forward to UDP 51820.
    #[arg(long, value_name = "IP:PORT")]
    pub mesh_endpoint: Option<std::net::SocketAddr>,
}

/// Labels in the syntax of `cloudos.labels`, checked by the same parser.
fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, String> {
    let (settings, warnings) = Settings::load(None, &format!("cloudos.labels={value}"));
    match warnings.first() {
        Some(w) => Err(w.to_string()),
        None => Ok(settings.labels),
    }
}

/// The agent's config from the boot settings (or a host install's `config.toml`), with its
/// state under `data_dir`. The token, if any, is the caller's to add.
pub fn config_from_settings(settings: &Settings, data_dir: PathBuf) -> AgentConfig {
    AgentConfig {
        data_dir,
        token: None,
        master: settings.master.clone(),
        name: settings
            .hostname
            .clone()
            .unwrap_or_else(|| host_name(FALLBACK_NAME)),
        labels: settings.labels.clone(),
        discover_timeout: Duration::from_secs(3),
        retry: RETRY_BACKOFF,
        metrics_listen: metrics::DEFAULT_LISTEN.parse().ok(),
        insecure_registries: settings.insecure_registries.clone(),
        container_node_ports: settings.container_node_ports.clone(),
        volume_host_paths: settings.volume_host_paths.clone(),
        resolv_conf: None,
        mesh_endpoint: settings.mesh_endpoint,
        after_join: None,
        set_clock: None,
        clock_report: None,
        install_release: None,
        system_report: None,
        switch_slot: None,
        reboot: None,
        healthy: None,
    }
}

fn parse_token(token: Option<&str>) -> Result<Option<Token>, TokenError> {
    token.map(str::parse).transpose()
}

/// `nodeos agent …` on a host: runs in the foreground until evicted or stopped.
pub fn run_tool(args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    let config = AgentConfig {
        token: parse_token(args.token.as_deref())?,
        data_dir: args.data_dir,
        master: args.master,
        name: args.name.unwrap_or_else(|| host_name(FALLBACK_NAME)),
        labels: args.labels.unwrap_or_default(),
        discover_timeout: args.discover_timeout,
        retry: RETRY_BACKOFF,
        metrics_listen: (!args.no_metrics).then_some(args.metrics_listen),
        insecure_registries: args.insecure_registry,
        container_node_ports: args.container_node_port,
        volume_host_paths: args.volume_host_path,
        resolv_conf: Some(args.resolv_conf),
        mesh_endpoint: args.mesh_endpoint,
        after_join: None,
        set_clock: None,
        clock_report: None,
        install_release: None,
        system_report: None,
        switch_slot: None,
        reboot: None,
        healthy: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(cloudos_agent::run(config))? {
        Outcome::Evicted { reason } => {
            log::info!("agent stopped: the node was evicted ({reason})");
            Ok(())
        }
    }
}

/// The `agent` service under PID 1 (`cloudos.role=compute`, or a master that runs
/// workloads: its own machine's node).
pub fn run_service(settings: &Settings) -> anyhow::Result<()> {
    if settings.role == NodeRole::Master {
        return run_own_node(settings);
    }
    let mut config = pid1_config(settings);
    // settings.rs only keeps a token that parses.
    config.token = parse_token(settings.token.as_ref().map(|t| t.expose()))?;
    // The OS owns the clock: a wrong one is set from the master at first contact.
    config.set_clock = Some(crate::clock::first_contact::hook());
    config.after_join = Some(Arc::new(|| {
        crate::settings::forget_token_in(std::path::Path::new(crate::settings::CONFIG_FILE))
    }));
    // An installed disk has slots to upgrade into; a live boot has none.
    if let Some(slot) = settings.slot {
        config.install_release = Some(crate::upgrade::node::install_hook(slot));
        config.system_report = Some(crate::upgrade::node::report_hook(slot));
        config.switch_slot = Some(crate::upgrade::node::switch_hook(slot));
    }
    serve_under_pid1(
        config,
        "give it a new token (cloudos.token=…) to join again",
    )
}

/// The agent of a master that runs workloads. It joins with the token its master left in
/// the data partition (then deletes it), finds the master by mDNS like any node (so it
/// dials the machine's LAN address, which the other nodes' mesh peers reach, not
/// loopback), and leaves to the master what a node's agent does for its machine: the
/// clock (the master serves time) and upgrades (the master upgrades itself, last).
fn run_own_node(settings: &Settings) -> anyhow::Result<()> {
    let mut config = pid1_config(settings);
    let token_file = cloudos_master::own_node_token_file(std::path::Path::new(DATA_DIR));
    config.token = match std::fs::read_to_string(&token_file) {
        Ok(text) => Some(text.trim().parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("cannot read {}: {e}", token_file.display()),
    };
    config.after_join = Some(Arc::new(move || match std::fs::remove_file(&token_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Used up, so harmless; said so that nobody wonders why it is there.
        Err(e) => log::warn!(
            "cannot delete the spent token {}: {e}",
            token_file.display()
        ),
    }));
    serve_under_pid1(
        config,
        "reboot this machine: its master leaves its own node a new token",
    )
}

/// The config every agent under PID 1 starts from: the settings, the clock's report, and
/// reboots through PID 1, which owns the machine (a reboot the master asks for is its
/// orderly one).
fn pid1_config(settings: &Settings) -> AgentConfig {
    let mut config = config_from_settings(settings, PathBuf::from(DATA_DIR));
    config.clock_report = Some(Arc::new(|| {
        crate::clock::state::ClockState::read().map(|s| s.report())
    }));
    config.reboot = Some(Arc::new(|| {
        crate::init::shutdown::ask_pid1(crate::init::shutdown::ShutdownKind::Reboot)
            .map_err(|e| format!("cannot signal PID 1: {e}"))
    }));
    config
}

/// Runs the agent as PID 1's service. PID 1 never stops the agent: when only a person
/// can help, it idles for good, and `hint` tells them how.
fn serve_under_pid1(config: AgentConfig, hint: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::supervisor::ready::report();
    runtime.block_on(cloudos_agent::service::serve(
        config,
        hint,
        std::future::pending(),
    ))?;
    Ok(())
}
