//! PID 1: mounts, re-roots, loads drivers, finds the data partition, reads
//! the settings, then hands over to the supervisor and waits for a signal to
//! shut down. Nothing here may panic or exit: a PID 1 that dies is a kernel
//! panic, so every failure is logged and the boot goes on, degraded.

pub mod bootslot;
pub mod datastore;
pub mod hostname;
pub mod mounts;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::blockdev::{datapart, storage};
use crate::kmod::coldplug::coldplug;
use crate::kmod::{Loader, ModuleIndex};
use crate::settings::{NodeRole, Settings, CONFIG_FILE};
use crate::status::{self, StatusReport};
use crate::supervisor::runner::Launcher;
use crate::supervisor::{Reaper, Supervisor, RESTART_BACKOFF};
use shutdown::ShutdownKind;

/// How long the services get to report ready before we say which are late.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs PID 1. Never returns.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic: {info}");
    }));
    let outcome = std::panic::catch_unwind(run);
    let reason = match outcome {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => "the main loop ended".into(),
        Err(_) => "a panic (see above)".into(),
    };
    stay_up(&reason)
}

/// The last resort: say what went wrong and keep reaping, so the machine
/// stays inspectable instead of panicking the kernel.
fn stay_up(reason: &str) -> ! {
    // Except on a slot on trial after an upgrade: there the last good system is one reboot
    // away, and staying up would keep the machine on the broken one.
    let cmdline = crate::settings::boot_cmdline();
    if let Some(slot) = crate::settings::Settings::load(None, &cmdline).0.slot {
        let why = format!("nodeos cannot continue ({reason})");
        if crate::upgrade::node::give_up_if_on_trial(slot, &why) {
            nix::unistd::sync();
            let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            log::error!("reboot(2) failed: {err:?}");
        }
    }
    log::error!("nodeos cannot continue: {reason}. The system stays up for diagnosis; power it off to leave.");
    crate::watchdog::note_stopping();
    let reaper = Reaper::default();
    loop {
        reaper.reap_all();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run() -> anyhow::Result<()> {
    // Before anything else: afterwards mounts would be moved with it anyway,
    // but a failure here must not cost us /proc.
    let reroot = mounts::reroot();
    let mount_errors = mounts::mount_base();
    crate::logging::init_for_pid1(false);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        log::warn!("cannot take over ctrl-alt-del: {e}");
    }

    let cmdline = crate::settings::boot_cmdline();
    let (settings, _) = Settings::load(None, &cmdline);
    crate::logging::set_debug(settings.debug);
    let release = crate::kmod::kernel_release();
    log::info!(
        "CloudOS nodeos {} starting on Linux {release}",
        cloudos_release::version()
    );
    if let Err(e) = reroot {
        log::warn!("{e}; containers will not be able to pivot_root");
    }
    for e in mount_errors {
        log::warn!("{e}");
    }

    // Drivers ask for more modules at run time (ext4 for crc32c); the kernel
    // runs this path for them, and /sbin/modprobe is nodeos (see kmod::modprobe).
    if let Err(e) = std::fs::write("/proc/sys/kernel/modprobe", "/sbin/modprobe\n") {
        log::warn!("cannot set the kernel's modprobe helper: {e}");
    }
    let loader = load_drivers(&release).map(Arc::new);
    // An installed disk, an install or a setup boot must find its data
    // partition: wait for the disks. A live boot looks now, boots on, probes
    // the storage controllers once ready and looks again (see `supervise`).
    let must_find_data = settings.slot.is_some() || settings.install.is_some();
    if must_find_data {
        storage::probe_in_background(loader.clone());
        if !storage::wait_settled(storage::SETTLE_TIMEOUT) {
            log::warn!(
                "the storage drivers are still probing after {}s; looking for the data partition anyway",
                storage::SETTLE_TIMEOUT.as_secs()
            );
        }
    }
    let mut data = datastore::mount_data(loader.as_deref());
    log::info!("state is kept on {data}");
    crate::clock::boot::at_boot();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reaper = Reaper::default();
    runtime.spawn(reaper.clone().run());
    // The drivers are loaded; fed from this runtime, so a stuck PID 1 resets the machine.
    let config = std::fs::read_to_string(CONFIG_FILE).ok();
    let watchdog = Settings::load(config.as_deref(), &cmdline).0.watchdog;
    if let Some(every) = crate::watchdog::arm(watchdog) {
        runtime.spawn(crate::watchdog::feed(every));
    }
    // One late look per boot: a partition found late that does not mount
    // must not restart the services again and again.
    let mut looked_late = false;
    loop {
        let config = std::fs::read_to_string(CONFIG_FILE).ok();
        let (settings, warnings) = Settings::load(config.as_deref(), &cmdline);
        // A node is set up once it has a config file or a role: a Pi card whose
        // cmdline.txt names the role (and token) needs no setup wizard.
        let configured = config.is_some() || settings.role != NodeRole::None;
        crate::logging::set_debug(settings.debug);
        for w in &warnings {
            log::warn!("settings: {w}");
        }
        let hostname = hostname::choose(settings.hostname.as_deref());
        hostname::set(&hostname);
        log::info!("host name {hostname}, role {}", settings.role);

        let look_late = data == datastore::DataStore::Memory && !must_find_data && !looked_late;
        looked_late = true;
        let warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        let boot = Boot {
            settings,
            configured,
            hostname,
            data: data.to_string(),
            warnings,
            look_late,
            loader: loader.clone(),
        };
        let device = runtime.block_on(supervise(boot, reaper.clone()))?;
        // A live boot found a data partition on a disk that probed late; its
        // services are stopped. Boot again on its state.
        data = datastore::adopt_late(&device, loader.as_deref());
        log::info!("state is kept on {data}");
        crate::clock::boot::at_boot();
    }
}

/// Coldplug with the initramfs's module index. Without one (a kernel built
/// with everything in) the node still boots.
fn load_drivers(release: &str) -> Option<Loader> {
    let dir = format!("/lib/modules/{release}");
    let index = match ModuleIndex::load(std::path::Path::new(&dir)) {
        Ok(index) => index,
        Err(e) => {
            log::warn!("no module index ({e}); using built-in drivers only");
            return None;
        }
    };
    let loader = Loader::new(index);
    let report = coldplug(
        &loader,
        std::path::Path::new("/sys"),
        &storage::boot_skips(),
    );
    log::info!(
        "loaded {} modules for the devices found: {}",
        report.loaded.len(),
        report.loaded.join(" ")
    );
    if !report.deferred.is_empty() {
        log::debug!(
            "left to the storage probe and the devices service: {}",
            report.deferred.join(", ")
        );
    }
    for failure in &report.failures {
        log::warn!("driver: {failure}");
    }
    Some(loader)
}

/// What one round of supervision runs with: the settings as read from the
/// data partition (or the command line alone) and where the state is.
struct Boot {
    settings: Settings,
    configured: bool,
    hostname: String,
    data: String,
    warnings: Vec<String>,
    /// A live boot on memory: look for a data partition again once the
    /// storage drivers have probed.
    look_late: bool,
    /// For the storage probe, if the boot has not started it yet.
    loader: Option<Arc<Loader>>,
}

/// Runs the services until a shutdown signal (then never returns) or until a
/// live boot finds a data partition late: then the services are stopped and
/// the partition's device is returned, to boot again on its state.
async fn supervise(boot: Boot, reaper: Reaper) -> anyhow::Result<String> {
    let Boot {
        settings,
        configured,
        hostname,
        data,
        warnings,
        look_late,
        loader,
    } = boot;
    let launcher: Launcher = Arc::new(|spec, attempt| {
        let mut command = std::process::Command::new("/proc/self/exe");
        command
            .args(["svc", spec.name])
            .env(crate::services::ATTEMPT_ENV, attempt.to_string());
        command
    });
    let mut supervisor = Supervisor::new(reaper.clone(), launcher, RESTART_BACKOFF);
    let specs = crate::services::specs(settings.role, settings.workloads);
    // The installer's wizard takes the console over until it ends (diskinstall::boot).
    if crate::diskinstall::boot::takes_console(settings.install.as_deref(), configured) {
        crate::diskinstall::boot::hold_console();
    }
    supervisor.start(&specs)?;

    let statuses = supervisor.status_reader();
    let ready_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = {
        let ready_flag = ready_flag.clone();
        let hostname = hostname.clone();
        let role = settings.role.to_string();
        move || {
            StatusReport::gather(
                &hostname,
                &role,
                &data,
                ready_flag.load(std::sync::atomic::Ordering::Relaxed),
                statuses(),
                warnings.clone(),
            )
        }
    };
    let status_server = tokio::spawn(status::serve(status::CONTROL_SOCKET, Arc::new(report)));

    let all_ready = supervisor.all_ready(READY_TIMEOUT);
    let role = settings.role;
    let slot = settings.slot;
    let hang = settings.pid1_hang_after();
    let install = (settings.install.clone(), reaper.clone());
    let (late_tx, late_rx) = tokio::sync::oneshot::channel::<String>();
    let after_ready = tokio::spawn(async move {
        let ready = all_ready.await;
        // The storage controllers probe now, if the boot did not wait for them.
        storage::probe_in_background(loader);
        match ready {
            Ok(()) => {
                ready_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                log::info!(
                    "nodeos ready in {:.2}s: host {hostname}, role {role}, rss {} kB",
                    crate::logging::uptime(),
                    status::own_rss_kb().unwrap_or(0)
                );
                if look_late {
                    if let Some(device) = look_for_data_late().await {
                        let _ = late_tx.send(device);
                        return;
                    }
                }
                if let Some(secs) = hang {
                    tokio::spawn(crate::watchdog::hang_on_purpose(Duration::from_secs(
                        secs.into(),
                    )));
                }
                // Every service, the role's included, is up: this slot boots.
                tokio::task::spawn_blocking(move || bootslot::confirm_and_log(slot));
                // Install to disk when the boot asks for it (a child process).
                crate::diskinstall::boot::after_ready(install.0, slot, configured, install.1);
            }
            Err(late) => {
                let why = format!(
                    "{} not ready after {}s",
                    late.join(", "),
                    READY_TIMEOUT.as_secs()
                );
                log::error!("nodeos degraded: {why}");
                // A slot on trial after an upgrade goes back to the one that worked.
                if let Some(slot) = slot {
                    let gave_up = tokio::task::spawn_blocking(move || {
                        crate::upgrade::node::give_up_if_on_trial(slot, &why)
                    })
                    .await
                    .unwrap_or(false);
                    if gave_up {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::getpid(),
                            nix::sys::signal::Signal::SIGINT,
                        );
                        return;
                    }
                }
                // No install on a degraded node: the console is for diagnosis.
                crate::diskinstall::boot::release_console();
            }
        }
    });

    let late_data = async {
        match late_rx.await {
            Ok(device) => device,
            // Nothing found: only a signal ends this round.
            Err(_) => futures::future::pending().await,
        }
    };
    tokio::select! {
        kind = wait_for_shutdown_signal() => {
            shutdown::shutdown(kind, &mut supervisor, &reaper).await
        }
        device = late_data => {
            log::warn!(
                "found the data partition {device} once the storage drivers had probed; \
                 restarting the services on its state"
            );
            after_ready.abort();
            status_server.abort();
            supervisor.shutdown().await;
            Ok(device)
        }
    }
}

/// A live boot's second look for a data partition, once the storage drivers
/// have probed: the disks of slow controllers (IDE, SATA, NVMe) appear only then.
async fn look_for_data_late() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        if !storage::wait_settled(storage::SETTLE_TIMEOUT) {
            log::warn!(
                "the storage drivers are still probing after {}s; no second look for a data partition",
                storage::SETTLE_TIMEOUT.as_secs()
            );
            return None;
        }
        let found = datapart::find();
        if found.is_none() {
            log::info!("no CLOUDOS-DATA partition on the disks probed after the boot either; state stays in memory");
        }
        found
    })
    .await
    .ok()
    .flatten()
}

async fn wait_for_shutdown_signal() -> ShutdownKind {
    let mut listeners = Vec::new();
    for (kind, what) in [
        (SignalKind::interrupt(), ShutdownKind::Reboot),
        (SignalKind::terminate(), ShutdownKind::Poweroff),
        (SignalKind::user_defined2(), ShutdownKind::Poweroff),
    ] {
        match signal(kind) {
            Ok(s) => listeners.push((s, what)),
            Err(e) => log::error!("cannot listen for signal {kind:?}: {e}"),
        }
    }
    if listeners.is_empty() {
        // Nothing can ask us to shut down; the power button still cuts power.
        futures::future::pending::<()>().await;
    }
    let waits = listeners.iter_mut().map(|(s, what)| {
        let what = *what;
        Box::pin(async move {
            s.recv().await;
            what
        })
    });
    let (kind, _, _) = futures::future::select_all(waits).await;
    kind
}
