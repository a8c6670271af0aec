//! A host's upgrade, as the master asks for it (`cloudos node upgrade`, `cloudos upgrade`):
//! the hooks the agent calls (`cloudos_agent::InstallRelease`, `SystemReporter`,
//! `Healthy`), the health check of a binary on trial, and `nodeos host-rollback`, which the
//! rollback unit runs with the previous binary when the new one cannot start.
//!
//! The life of one upgrade:
//! 1. the running binary checks the bundle in one pass (signature, this machine's
//!    architecture, a newer version unless forced, every part's hash) writing only its
//!    `nodeos` part to `nodeos.new`; a refused bundle leaves nothing;
//! 2. it records the attempt (on trial), swaps the binaries (`swap`: the running one stays
//!    as `nodeos.previous`) and asks systemd to restart its unit;
//! 3. the new binary starts on trial: once the master acknowledges a heartbeat it is
//!    healthy and the attempt is confirmed. Not healthy within the time allowed, it puts
//!    the previous binary back, records why and restarts the unit;
//! 4. a new binary that cannot even start never gets to step 3: the unit fails and its
//!    `OnFailure=` unit runs the previous binary's `host-rollback`, which does the same.
//!
//! The previous binary then reports the upgrade as fallen back, with the reason. Files are
//! `swap`'s, the record `attempt`'s, the unit's `systemd`'s; this module only sequences.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cloudos_release::policy::{self, Intent};
use cloudos_release::{bundle, Arch};
use tokio::sync::watch;

use super::attempt::{self, HostAttempt, Stage};
use super::layout::{self, Layout};
use super::swap;
use super::systemd::Systemd;

/// How long a binary on trial has to become healthy when `health_timeout` is not set (the
/// appliance gives its services the same order of time): a cold start, a master a few
/// retries away.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether this start of the binary passed its health check: set by the agent's
/// [`cloudos_agent::Healthy`] hook, read by the reports and the trial.
#[derive(Clone)]
pub struct Health {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Health {
    pub fn passed(&self) -> bool {
        *self.tx.borrow()
    }

    /// The agent's hook: the master acknowledged a heartbeat.
    pub fn hook(&self) -> cloudos_agent::Healthy {
        let tx = Arc::clone(&self.tx);
        Arc::new(move || {
            tx.send_if_modified(|healthy| !std::mem::replace(healthy, true));
        })
    }

    /// Waits until healthy, at most `timeout`; whether it is.
    async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|healthy| *healthy))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn running() -> String {
    cloudos_release::version().to_string()
}

/// The agent's [`cloudos_agent::InstallRelease`] on a host: steps 1 and 2 above. `Ok` once
/// the new binary is in place and systemd has the restart queued.
pub fn install_hook(
    layout: Layout,
    unit: &'static str,
    health: Health,
) -> cloudos_agent::InstallRelease {
    Arc::new(move |bundle: &Path, allow_downgrade: bool, id: &str| {
        install(&layout, unit, &health, bundle, allow_downgrade, id)
    })
}

fn install(
    layout: &Layout,
    unit: &'static str,
    health: &Health,
    bundle: &Path,
    allow_downgrade: bool,
    id: &str,
) -> Result<(), String> {
    let running = running();
    if let Some(last) = attempt::read(&layout.attempt()) {
        if last.on_trial_as(&running) && !health.passed() {
            return Err(format!(
                "nodeos {running} is on trial (not healthy yet), so {} is the last binary known good: it is not replaced; try again once this one is healthy",
                layout.previous().display()
            ));
        }
    }
    super::install::record_paths(layout, &layout.upgrade_files())
        .map_err(|e| format!("cannot note the upgrade's files in the install record: {e:#}"))?;
    let intent = if allow_downgrade {
        Intent::Force
    } else {
        Intent::Upgrade
    };
    let file = std::fs::File::open(bundle).map_err(|e| format!("cannot open the bundle: {e}"))?;
    let record = put_in_place(
        layout,
        std::io::BufReader::new(file),
        &cloudos_release::trusted(),
        cloudos_release::version(),
        intent,
        id,
    )?;
    log::info!(
        "nodeos {} is in place of {running} (kept as {}); restarting {unit} into it",
        record.to,
        layout.previous().display()
    );
    restart_soon(unit);
    Ok(())
}

/// Checks `bundle` against `keyring` and the rules for `running`, writing its `nodeos` to
/// the staging file, records the attempt and swaps the binaries. A refused bundle leaves
/// nothing written.
fn put_in_place(
    layout: &Layout,
    bundle: impl std::io::Read,
    keyring: &cloudos_release::Keyring,
    running: &cloudos_release::Version,
    intent: Intent,
    id: &str,
) -> Result<HostAttempt, String> {
    let staged = layout.staged();
    // A staged binary left by an earlier attempt that stopped midway was never used.
    let _ = std::fs::remove_file(&staged);
    let verified = bundle::open_part(
        bundle,
        keyring,
        |m| policy::check(m, Arch::running(), running, intent),
        "nodeos",
        &staged,
    )
    .map_err(|e| e.to_string())?;
    let record = HostAttempt {
        id: id.to_owned(),
        from: running.to_string(),
        to: verified.manifest.version.to_string(),
        state: Stage::OnTrial,
        reason: None,
        since_us: attempt::now_us(),
    };
    // Recorded before the swap: a binary on trial always finds its record.
    if let Err(e) = attempt::write(&layout.attempt(), &record) {
        let _ = std::fs::remove_file(&staged);
        return Err(format!("cannot record the upgrade: {e}"));
    }
    if let Err(e) = swap::install_staged(layout) {
        let _ = std::fs::remove_file(layout.attempt());
        let _ = std::fs::remove_file(&staged);
        return Err(format!("cannot put the new binary in place: {e}"));
    }
    Ok(record)
}

/// Asks systemd to restart `unit`, this process's own, from a task of the runtime. The stop
/// that follows (SIGTERM) ends the runtime, which waits for its blocking threads but drops
/// its tasks: a blocking thread waiting on the answer would hold the stop until systemd
/// kills the process, and the unit would fail. When systemd cannot be asked, exits so that
/// `Restart=always` starts the binary now in place.
fn restart_soon(unit: &'static str) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(restart_or_exit(unit));
        }
        Err(_) => {
            log::error!("no runtime to ask systemd from; exiting so that {unit} restarts");
            std::process::exit(1);
        }
    }
}

async fn restart_or_exit(unit: &str) {
    if let Err(e) = restart(unit).await {
        log::error!("cannot ask systemd to restart {unit} ({e:#}); exiting so that it restarts");
        std::process::exit(1);
    }
}

async fn restart(unit: &str) -> anyhow::Result<()> {
    Systemd::connect().await?.restart(unit).await?;
    Ok(())
}

/// The agent's [`cloudos_agent::SystemReporter`] on a host.
pub fn report_hook(layout: Layout, health: Health) -> cloudos_agent::SystemReporter {
    let running = running();
    Arc::new(move || {
        let last = attempt::read(&layout.attempt());
        Some(attempt::report(&running, health.passed(), last.as_ref()))
    })
}

/// Step 3, from the start of `nodeos daemon`: confirms this binary once it is healthy, or,
/// on trial and not healthy within `timeout`, goes back to the previous one.
pub async fn trial(layout: Layout, unit: &'static str, health: Health, timeout: Duration) {
    let running = running();
    let path = layout.attempt();
    let mut last = attempt::read(&path);
    if let Some(a) = last.take_if(|a| a.state == Stage::OnTrial && a.to != running) {
        // The previous binary runs and the record still says on trial: the new one stopped
        // (or was put back by hand) before it could say anything.
        let why = format!("nodeos {} stopped before its health check ran", a.to);
        if let Err(e) = attempt::write(&path, &a.rolled_back(&why)) {
            log::warn!("cannot record the failed upgrade: {e}");
        }
    }
    let on_trial = last.as_ref().filter(|a| a.on_trial_as(&running)).cloned();
    if let Some(a) = &on_trial {
        log::info!(
            "nodeos {running} is on trial after an upgrade from {}: it has {}s to become healthy",
            a.from,
            timeout.as_secs()
        );
    }
    if health.wait(timeout).await {
        log::info!("nodeos {running} is healthy (the master acknowledged its report)");
        if let Some(mut a) = on_trial {
            a.state = Stage::Confirmed;
            match attempt::write(&path, &a) {
                Ok(()) => log::info!(
                    "upgrade from {} confirmed; {} is kept",
                    a.from,
                    layout.previous().display()
                ),
                Err(e) => log::warn!("cannot record the confirmed upgrade: {e}"),
            }
        }
        return;
    }
    let Some(a) = on_trial else {
        log::warn!(
            "nodeos {running} is not healthy after {}s (the master has not acknowledged a report)",
            timeout.as_secs()
        );
        return;
    };
    let why = format!(
        "nodeos {running} was not healthy within {}s (the master acknowledged no report from it)",
        timeout.as_secs()
    );
    log::error!("{why}: going back to nodeos {}", a.from);
    if let Err(e) = give_up(&layout, a, &why) {
        log::error!("cannot go back to the previous binary: {e:#}");
        return;
    }
    restart_or_exit(unit).await;
}

/// Puts the previous binary back and records why.
fn give_up(layout: &Layout, attempt: HostAttempt, why: &str) -> anyhow::Result<()> {
    swap::roll_back(layout)?;
    attempt::write(&layout.attempt(), &attempt.rolled_back(why))
        .context("cannot record why the upgrade was rolled back")
}

/// `nodeos host-rollback`: what the rollback unit runs, with the previous binary.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The unit whose binary failed; restarted with the previous one.
    #[arg(long, default_value = layout::unit_name(crate::settings::NodeRole::Compute))]
    pub unit: String,
}

/// Step 4: the unit failed. A binary on trial is replaced by this one (the previous, known
/// good), and the unit restarted; anything else is left as it is, and said so.
pub fn rollback_main(args: RollbackArgs) -> anyhow::Result<()> {
    crate::logging::init_for_host(false);
    let layout = Layout::system();
    let unit = args.unit.as_str();
    let on_trial = attempt::read(&layout.attempt()).filter(|a| a.state == Stage::OnTrial);
    let Some(a) = on_trial else {
        log::warn!(
            "{unit} failed, but no upgrade is on trial: its binary passed its health check, so there is nothing to go back to; see journalctl -u {unit}"
        );
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let systemd = Systemd::connect().await?;
        // The unit also fails when the binary before the upgrade does not stop in time
        // (SIGKILL): the new one has not run yet, and systemd goes on to start it.
        let started = systemd.main_started_us(unit).await.unwrap_or(0);
        if a.failed_before_swap(started) {
            log::warn!(
                "{unit} failed while nodeos {} was stopping for the upgrade; nodeos {} has not run yet, so there is nothing to roll back",
                a.from,
                a.to
            );
            return Ok(());
        }
        let how = systemd
            .service_result(unit)
            .await
            .unwrap_or_else(|e| format!("result unknown: {e}"));
        let why = format!(
            "nodeos {} could not start ({unit} failed: {how}; see journalctl -u {unit})",
            a.to
        );
        log::error!("{why}: going back to nodeos {}", a.from);
        give_up(&layout, a, &why)?;
        systemd.restart(unit).await?;
        log::info!("{unit} restarted with the previous binary");
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_release::{Keyring, SecretKey, Version, PART_NAMES};
    use std::fs;

    struct Host {
        root: tempfile::TempDir,
        layout: Layout,
        key: SecretKey,
    }

    impl Host {
        fn new() -> Host {
            let root = tempfile::tempdir().unwrap();
            let layout = Layout::under(root.path());
            fs::create_dir_all(&layout.bin_dir).unwrap();
            fs::create_dir_all(&layout.state_dir).unwrap();
            fs::write(layout.nodeos(), "nodeos 0.2.0").unwrap();
            Host {
                root,
                layout,
                key: SecretKey::generate().unwrap(),
            }
        }

        fn bundle(&self, key: &SecretKey, version: &str, arch: Arch) -> Vec<u8> {
            let parts = PART_NAMES.map(|n| {
                let path = self.root.path().join(n);
                fs::write(&path, format!("{n} {version}")).unwrap();
                path
            });
            let mut out = Vec::new();
            bundle::write(
                &mut out,
                key,
                Version::parse(version).unwrap(),
                arch,
                &parts,
            )
            .unwrap();
            out
        }

        fn take(&self, bundle: &[u8], intent: Intent) -> Result<HostAttempt, String> {
            let ring = Keyring::new(vec![self.key.public()]);
            put_in_place(
                &self.layout,
                bundle,
                &ring,
                &Version::new(0, 2, 0),
                intent,
                "u-1",
            )
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<_> = fs::read_dir(&self.layout.bin_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    fn other_arch() -> Arch {
        match Arch::running() {
            Some(Arch::X86_64) => Arch::Aarch64,
            _ => Arch::X86_64,
        }
    }

    #[test]
    fn a_checked_release_takes_the_place_of_the_binary_and_is_on_trial() {
        let host = Host::new();
        let arch = Arch::running().unwrap();
        let a = host
            .take(&host.bundle(&host.key, "0.3.0", arch), Intent::Upgrade)
            .unwrap();
        assert_eq!((a.from.as_str(), a.to.as_str()), ("0.2.0", "0.3.0"));
        assert!(a.on_trial_as("0.3.0"));
        assert_eq!(attempt::read(&host.layout.attempt()), Some(a));
        assert_eq!(
            fs::read_to_string(host.layout.nodeos()).unwrap(),
            "nodeos 0.3.0"
        );
        assert_eq!(
            fs::read_to_string(host.layout.previous()).unwrap(),
            "nodeos 0.2.0"
        );
        assert_eq!(host.files(), ["nodeos", "nodeos.previous"]);
    }

    #[test]
    fn refused_releases_leave_the_binary_and_the_record_as_they_were() {
        let host = Host::new();
        let arch = Arch::running().unwrap();
        let stranger = SecretKey::generate().unwrap();
        let mut tampered = host.bundle(&host.key, "0.3.0", arch);
        let at = tampered
            .windows(12)
            .position(|w| w == b"nodeos 0.3.0")
            .unwrap();
        tampered[at] ^= 0x20;
        let cases = [
            (
                "another key",
                host.bundle(&stranger, "0.3.0", arch),
                Intent::Upgrade,
            ),
            ("a tampered binary", tampered, Intent::Upgrade),
            (
                "another architecture",
                host.bundle(&host.key, "0.3.0", other_arch()),
                Intent::Force,
            ),
            (
                "the same version",
                host.bundle(&host.key, "0.2.0", arch),
                Intent::Upgrade,
            ),
            (
                "a downgrade",
                host.bundle(&host.key, "0.1.0", arch),
                Intent::Upgrade,
            ),
        ];
        for (what, bundle, intent) in cases {
            let err = host.take(&bundle, intent).unwrap_err();
            assert_eq!(host.files(), ["nodeos"], "{what}: {err}");
            assert_eq!(
                fs::read_to_string(host.layout.nodeos()).unwrap(),
                "nodeos 0.2.0",
                "{what}"
            );
            assert!(!host.layout.attempt().exists(), "{what}");
        }
        // Forced, an older release is taken.
        let old = host.bundle(&host.key, "0.1.0", arch);
        assert_eq!(host.take(&old, Intent::Force).unwrap().to, "0.1.0");
    }

    #[test]
    fn giving_up_puts_the_previous_binary_back_and_says_why() {
        let host = Host::new();
        let arch = Arch::running().unwrap();
        let a = host
            .take(&host.bundle(&host.key, "0.3.0", arch), Intent::Upgrade)
            .unwrap();
        give_up(&host.layout, a, "not healthy within 120s").unwrap();
        assert_eq!(
            fs::read_to_string(host.layout.nodeos()).unwrap(),
            "nodeos 0.2.0"
        );
        assert_eq!(host.files(), ["nodeos", "nodeos.failed"]);
        let after = attempt::read(&host.layout.attempt()).unwrap();
        assert_eq!(after.state, Stage::RolledBack);
        let report = attempt::report("0.2.0", true, Some(&after));
        let upgrade = report.upgrade.unwrap();
        assert_eq!(upgrade.state, cloudos_cluster::api::UpgradeState::FellBack);
        assert!(upgrade
            .reason
            .unwrap()
            .starts_with("not healthy within 120s"));
        // No previous binary any more: a second give-up changes nothing.
        let again = attempt::read(&host.layout.attempt()).unwrap();
        assert!(give_up(&host.layout, again, "again").is_err());
        assert_eq!(
            fs::read_to_string(host.layout.nodeos()).unwrap(),
            "nodeos 0.2.0"
        );
    }

    #[tokio::test]
    async fn health_is_the_first_acknowledged_report() {
        let health = Health::default();
        assert!(!health.passed());
        assert!(!health.wait(Duration::from_millis(20)).await);
        let hook = health.hook();
        hook();
        hook();
        assert!(health.passed());
        assert!(health.wait(Duration::from_millis(20)).await);
    }
}
