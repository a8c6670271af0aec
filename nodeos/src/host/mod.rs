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
//!
//! Modules: `layout` (paths and file contents, pure), `systemd` (D-Bus), `install` (the
//! install and uninstall steps), `cgroup` (the delegated subtree), `notify` (`sd_notify`).
//! It never touches PID 1's world (`init`, `supervisor`) or processes it did not start.

mod cgroup;
mod install;
pub mod layout;
mod notify;
mod systemd;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::settings::{Role, Settings};

pub use install::{install_main, uninstall_main, InstallArgs, UninstallArgs};

/// `nodeos daemon`: the role of a host install, as its systemd unit runs it.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The settings file `install.sh` wrote (same keys as the appliance's config.toml).
    #[arg(long, default_value = "/etc/cloudos/config.toml")]
    pub config: PathBuf,
    /// Where state lives (identity, images, containers, master state).
    #[arg(long, default_value = crate::agent::DATA_DIR)]
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
        env!("CARGO_PKG_VERSION"),
        settings.role,
        args.config.display(),
        if journal { "the journal" } else { "stderr" }
    );
    match settings.role {
        Role::Compute => run_compute(&settings, args.data_dir),
        Role::Master => run_master(&settings, args.data_dir),
        Role::None => anyhow::bail!(
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
    let config = crate::agent::AgentConfig {
        data_dir,
        token: None,
        master: settings.master.clone(),
        name: settings
            .hostname
            .clone()
            .unwrap_or_else(crate::agent::host_name),
        labels: settings.labels.clone(),
        discover_timeout: Duration::from_secs(3),
        retry: crate::agent::RETRY_BACKOFF,
        metrics_listen: crate::agent::metrics::DEFAULT_LISTEN.parse().ok(),
        insecure_registries: settings.insecure_registries.clone(),
        // install.sh joined with the token; it was never written down.
        forget_token_in: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = crate::agent::IdentityStore::new(&config.data_dir);
    let identity = store.load()?.with_context(|| {
        format!(
            "this host has not joined a cluster (no identity in {}); run install.sh with a token",
            store.dir().display()
        )
    })?;
    notify::ready(&format!(
        "node {} of cluster {}",
        identity.node_name, identity.joined.cluster_name
    ));
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = crate::agent::run(config) => Some(outcome),
            _ = crate::master::stop_signal() => None,
        }
    });
    notify::stopping();
    match outcome {
        None => {
            log::info!("stopping (asked by systemd)");
            Ok(())
        }
        Some(Ok(crate::agent::Outcome::Evicted { reason })) => {
            // Exiting non-zero would only make systemd restart into the same answer.
            log::warn!("the master evicted this node ({reason}); run install.sh with a new token to join again");
            idle()
        }
        Some(Err(e)) if e.needs_a_person() => {
            log::error!("{e}");
            idle()
        }
        Some(Err(e)) => Err(e.into()),
    }
}

fn run_master(settings: &Settings, data_dir: PathBuf) -> anyhow::Result<()> {
    let mut config = crate::master::config::MasterConfig::from_settings(settings);
    config.downloads_dir = data_dir.join("downloads");
    config.data_dir = data_dir;
    crate::master::run_host_service(config, notify::ready)
}

/// Waits for systemd to stop the unit, without restarting into a state only a person can
/// change (evicted, expired identity).
fn idle() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::master::stop_signal());
    Ok(())
}
