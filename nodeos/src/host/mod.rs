//! `nodeos` on a machine that already runs Linux with systemd (a cloud VM, a laptop): the
//! cloud install's side of the binary.
//!
//! - `nodeos install` puts the binary, settings and a unit in place (compute nodes join
//!   first, so a wrong token or a wrong master stops the install before anything is
//!   written), then links, enables and starts the unit over D-Bus and waits for it.
//! - `nodeos uninstall` (and the `cloudos-uninstall.sh` it leaves) removes what the
//!   install created and nothing else.
//! - `nodeos daemon` is what the unit runs: the node's role from `/etc/cloudos/config.toml`,
//!   logging to journald, containers in the unit's delegated cgroup.
//! - an upgrade the master asks for replaces the binary, keeping the previous one, and
//!   restarts the unit; a new binary that is not healthy in time, or cannot start, is
//!   replaced by the previous one again (`upgrade`, `nodeos host-rollback`).
//!
//! Modules: `layout` (paths and file contents, pure), `systemd` (D-Bus), `install` (the
//! install and uninstall steps), `cgroup` (the delegated subtree), `notify` (`sd_notify`),
//! `upgrade` (the upgrade's steps and health check), `swap` (which file is `nodeos`),
//! `attempt` (the record of the last upgrade).
//! It never touches PID 1's world (`init`, `supervisor`) or processes it did not start.

mod attempt;
mod cgroup;
mod install;
pub mod layout;
mod notify;
mod swap;
mod systemd;
mod upgrade;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::settings::{NodeRole, Settings};

pub use install::{install_main, uninstall_main, InstallArgs, UninstallArgs};
pub use upgrade::{rollback_main, RollbackArgs};

/// `nodeos daemon`: the role of a host install, as its systemd unit runs it.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The settings file `install.sh` wrote (same keys as the appliance's config.toml).
    #[arg(long, default_value = "/etc/cloudos/config.toml")]
    pub config: PathBuf,
    /// Where state lives (identity, images, containers, master state).
    #[arg(long, default_value = crate::roles::agent::DATA_DIR)]
    pub data_dir: PathBuf,
}

pub fn daemon_main(args: DaemonArgs) -> anyhow::Result<()> {
    let journal = crate::logging::init_for_host(false);
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the settings in {}", args.config.display()))?;
    let (settings, warnings) = Settings::load(Some(&text), "");
    for warning in &warnings {
        log::warn!("{}: {warning}", args.config.display());
    }
    crate::logging::set_debug(settings.debug);
    log::info!(
        "nodeos {} starting as {} (settings {}, logging to {})",
        cloudos_release::version(),
        settings.role,
        args.config.display(),
        if journal { "the journal" } else { "stderr" }
    );
    match settings.role {
        NodeRole::Compute => run_compute(&settings, args.data_dir),
        NodeRole::Master => run_master(&settings, args.data_dir),
        NodeRole::None => anyhow::bail!(
            "{} sets no role (role = \"compute\" or \"master\"); run install.sh again",
            args.config.display()
        ),
    }
}

fn run_compute(settings: &Settings, data_dir: PathBuf) -> anyhow::Result<()> {
    match cgroup::delegate() {
        // Before any thread exists: the runtime and every shim read it from here.
        Ok(parent) => std::env::set_var(cloudos_runtime::cgroup::PARENT_ENV, parent),
        Err(e) => log::warn!("{e}"),
    }
    let mut config = crate::roles::agent::config_from_settings(settings, data_dir.clone());
    // An installed binary upgrades itself when the master asks; one run by hand does not.
    let layout = layout::Layout {
        state_dir: data_dir,
        ..layout::Layout::system()
    };
    let unit = layout::unit_name(NodeRole::Compute);
    let health = upgrade::Health::default();
    let upgradable = install::is_installed(&layout);
    if upgradable {
        config.install_release = Some(upgrade::install_hook(layout.clone(), unit, health.clone()));
        config.system_report = Some(upgrade::report_hook(layout.clone(), health.clone()));
        config.healthy = Some(health.hook());
    }
    // install.sh joined with the token; it was never written down.
    let store = cloudos_agent::IdentityStore::new(&config.data_dir);
    let identity = store.load()?.with_context(|| {
        format!(
            "this host has not joined a cluster (no identity in {}); run install.sh with a token",
            store.dir().display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    notify::ready(&format!(
        "node {} of cluster {}",
        identity.node_name, identity.joined.cluster_name
    ));
    // Exiting non-zero when evicted would only make systemd restart into the same answer.
    let hint = "run install.sh with a new token to join again";
    if upgradable {
        let timeout = settings
            .health_timeout
            .map_or(upgrade::HEALTH_TIMEOUT, Duration::from_secs);
        start_trial(layout, unit, health, timeout);
    }
    let served = runtime.block_on(cloudos_agent::service::serve(
        config,
        hint,
        cloudos_master::stop_signal(),
    ));
    notify::stopping();
    served?;
    log::info!("stopping (asked by systemd)");
    Ok(())
}

fn run_master(settings: &Settings, data_dir: PathBuf) -> anyhow::Result<()> {
    let mut config = crate::roles::master::config_from_settings(settings);
    config.downloads_dir = data_dir.join("downloads");
    config.data_dir = data_dir.clone();
    // An installed master upgrades itself last in a rollout, as a compute host does: the
    // same binary swap, the same trial. It is healthy once it serves its API with its
    // state open (the point where systemd hears READY).
    let layout = layout::Layout {
        state_dir: data_dir,
        ..layout::Layout::system()
    };
    let unit = layout::unit_name(NodeRole::Master);
    let health = upgrade::Health::default();
    if install::is_installed(&layout) {
        config.self_upgrade = Some(cloudos_master::rollout::SelfUpgrade {
            install: upgrade::install_hook(layout.clone(), unit, health.clone()),
            report: upgrade::report_hook(layout.clone(), health.clone()),
        });
        let timeout = settings
            .health_timeout
            .map_or(upgrade::HEALTH_TIMEOUT, Duration::from_secs);
        start_trial(layout, unit, health.clone(), timeout);
    }
    let healthy = health.hook();
    cloudos_master::run_host_service(config, move || {
        notify::ready("master up");
        healthy();
    })?;
    Ok(())
}

/// [`upgrade::trial`] on a thread and runtime of its own: a new binary whose agent or master
/// hangs after it started (its runtime stuck) is still given up when its time is out.
fn start_trial(
    layout: layout::Layout,
    unit: &'static str,
    health: upgrade::Health,
    timeout: Duration,
) {
    let spawned = std::thread::Builder::new()
        .name("upgrade-trial".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(upgrade::trial(layout, unit, health, timeout)),
                Err(e) => log::error!("cannot watch this binary's trial: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot watch this binary's trial: {e}");
    }
}
