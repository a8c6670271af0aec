//! PID 1's side of the install: once the live system is ready, run `nodeos install-disk`
//! as a child process when the boot asks for it, and reboot into the installed disk when
//! it succeeds. A failure is logged and the live system stays up; nothing here can make
//! PID 1 fail.

use std::path::Path;
use std::process::{Command, Stdio};

use cloudos_installer::answers::{CONFIG_DISK_LABEL, CONFIG_DISK_PATH};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::settings::Slot;
use crate::supervisor::Reaper;

const REPORT: &str = "/run/cloudos/install.report";
/// While this file exists the installer's wizard has the console, and the maintenance
/// console (services::console) waits; PID 1 creates it before the services start and
/// removes it when the wizard gives the console back.
pub const CONSOLE_HELD: &str = "/run/cloudos/console.held";

/// `cloudos.install=` value for setting up the medium the system runs from (the Pi's SD
/// card, whose cmdline.txt carries it): the wizard without the disk step, on a node that
/// has no settings yet.
pub const SETUP: &str = "setup";

/// What the boot asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Wizard,
    /// The wizard for the medium this system runs from ([`SETUP`]).
    SetUpInPlace,
    /// An answer-file source (`LABEL=…:/path` or a URL).
    Answers(String),
}

/// The install this boot asks for: `cloudos.install=` first; else, on a live boot (not
/// one GRUB started from an installed disk's slot), an answer file on a partition labelled
/// `CLOUDOS-CFG`. `config_disk` says whether such a partition exists; `configured`
/// whether the node has settings: a `config.toml` on its data partition or a role on its
/// command line (a set-up card asks nothing again).
pub fn request(
    install: Option<&str>,
    slot: Option<Slot>,
    config_disk: bool,
    configured: bool,
) -> Option<Request> {
    match install.map(str::trim) {
        Some("wizard") => Some(Request::Wizard),
        Some(SETUP) if configured => None,
        Some(SETUP) => Some(Request::SetUpInPlace),
        Some(source) if !source.is_empty() => Some(Request::Answers(source.to_owned())),
        // An installed node left with its config stick attached must not reinstall itself.
        _ if slot.is_none() && config_disk => Some(Request::Answers(format!(
            "LABEL={CONFIG_DISK_LABEL}:{CONFIG_DISK_PATH}"
        ))),
        _ => None,
    }
}

/// Whether the install this boot asks for is a wizard, which needs the console to itself
/// until it ends.
pub fn takes_console(install: Option<&str>, configured: bool) -> bool {
    matches!(
        request(install, None, false, configured),
        Some(Request::Wizard | Request::SetUpInPlace)
    )
}

/// Makes the maintenance console wait for the wizard (see [`CONSOLE_HELD`]) and keeps log
/// lines off the screen until it ends (see `crate::screen`).
pub fn hold_console() {
    if let Err(e) = cloudos_cluster::files::write_atomic(CONSOLE_HELD, b"installer\n") {
        log::warn!("cannot hold the console for the installer: {e}");
    }
    crate::screen::hold();
}

/// Gives the console back to the maintenance console, and the screen to the log.
pub fn release_console() {
    crate::screen::release();
    match std::fs::remove_file(CONSOLE_HELD) {
        Ok(()) => log::info!("install: the console is the maintenance console again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot release the console: {e}"),
    }
}

/// Called once the live system is ready: starts the install the boot asks for, if any.
pub fn after_ready(install: Option<String>, slot: Option<Slot>, configured: bool, reaper: Reaper) {
    tokio::spawn(async move {
        // Reading every disk's first sectors blocks: not on the thread that reaps.
        let probe = install.is_none() && slot.is_none();
        let config_disk = probe
            && tokio::task::spawn_blocking(|| {
                // The disk may be on a controller that is still probing.
                crate::blockdev::storage::wait_settled(crate::blockdev::storage::SETTLE_TIMEOUT);
                !crate::blockdev::labels::find_labelled(CONFIG_DISK_LABEL).is_empty()
            })
            .await
            .unwrap_or(false);
        match request(install.as_deref(), slot, config_disk, configured) {
            Some(request) => {
                let rebooting = run(request, reaper).await;
                if !rebooting {
                    release_console();
                }
            }
            None => release_console(),
        }
    });
}

/// Runs the installer; true when it succeeded and the machine is rebooting.
async fn run(request: Request, reaper: Reaper) -> bool {
    let _ = std::fs::remove_file(REPORT);
    let mut command = Command::new("/proc/self/exe");
    command.arg("install-disk").args(["--report", REPORT]);
    match &request {
        Request::Wizard | Request::SetUpInPlace => {
            if request == Request::SetUpInPlace {
                log::info!(
                    "setup: this node has no settings yet; starting the wizard on the console"
                );
                command.arg("--in-place");
            } else {
                log::info!("install: starting the installer on the console");
            }
            command.arg("--wizard").env("TERM", "linux");
            // The wizard talks to the person on the console.
            match console_stdio() {
                Ok((i, o, e)) => {
                    command.stdin(i).stdout(o).stderr(e);
                }
                Err(e) => {
                    log::error!("install failed: cannot open /dev/console for the wizard: {e}");
                    return false;
                }
            }
        }
        Request::Answers(source) => {
            log::info!("install: unattended, answer file from {source}");
            command.args(["--from", source]).stdin(Stdio::null());
            // Its progress and errors on the console, where a person watches.
            if let Ok((_, o, e)) = console_stdio() {
                command.stdout(o).stderr(e);
            }
        }
    }
    // Spawned through the reaper, so it cannot miss the exit.
    let (child, exit) = match reaper.spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(e) => {
            log::error!("install failed: cannot start the installer: {e}");
            return false;
        }
    };
    drop(child);
    let status = exit.await.ok();
    let report = std::fs::read_to_string(REPORT).unwrap_or_default();
    let line = report.lines().last().unwrap_or_default();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        super::REPORT_OK => {
            log::info!("install complete: {rest}");
            log::info!(
                "{}",
                if request == Request::SetUpInPlace {
                    "restarting with the new settings"
                } else {
                    "rebooting into the installed system"
                }
            );
            // PID 1 reboots on SIGINT (ctrl-alt-del): the orderly way down.
            match kill(Pid::this(), Signal::SIGINT) {
                Ok(()) => return true,
                Err(e) => log::error!("cannot reboot: {e}; reboot by hand"),
            }
        }
        super::REPORT_NOTHING => log::info!("install: {rest}"),
        super::REPORT_FAILED => log::error!("install failed: {rest}"),
        _ => log::error!(
            "install failed: the installer {}",
            status
                .map(|s| crate::supervisor::reaper::describe(&s))
                .unwrap_or_else(|| "ended without a word".into())
        ),
    }
    false
}

fn console_stdio() -> std::io::Result<(Stdio, Stdio, Stdio)> {
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/dev/console"))
    };
    Ok((open()?.into(), open()?.into(), open()?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_and_a_config_disk_only_counts_on_a_live_boot() {
        let cfg = Request::Answers("LABEL=CLOUDOS-CFG:/install.toml".into());
        assert_eq!(
            request(Some("wizard"), None, true, false),
            Some(Request::Wizard)
        );
        assert_eq!(
            request(Some("http://10.0.0.1/a.toml"), None, true, false),
            Some(Request::Answers("http://10.0.0.1/a.toml".into()))
        );
        assert_eq!(request(None, None, true, false), Some(cfg));
        assert_eq!(request(None, Some(Slot::A), true, false), None);
        assert_eq!(request(None, None, false, false), None);
        assert_eq!(request(Some(""), None, false, false), None);
    }

    #[test]
    fn a_card_is_set_up_once() {
        assert_eq!(
            request(Some("setup"), None, false, false),
            Some(Request::SetUpInPlace)
        );
        assert_eq!(request(Some("setup"), None, false, true), None);
        // A configured card with a CLOUDOS-CFG stick attached is not reinstalled either.
        assert_eq!(request(Some("setup"), None, true, true), None);
        assert!(takes_console(Some("setup"), false));
        assert!(!takes_console(Some("setup"), true));
        assert!(takes_console(Some("wizard"), true));
        assert!(!takes_console(
            Some("LABEL=CLOUDOS-CFG:/install.toml"),
            false
        ));
        assert!(!takes_console(None, false));
    }
}
