//! A real Debian 12 with systemd, booted in QEMU and driven through its
//! serial console as a person at a terminal would: for tests of things that
//! run on an ordinary Linux machine (the curl|sh installer).
//!
//! `scripts/debian-guest.sh` makes the disk (`out/x86_64/debian-guest.img`,
//! ext4, root logged in automatically on ttyS0, DHCPv4 by systemd-networkd)
//! and its initramfs; the kernel is CloudOS's own (`out/x86_64/vmlinuz`).
//! Each [`DebianGuest`] boots a private copy-on-write overlay of that disk, so
//! the shared image is never written and a guest's changes survive its
//! reboots (`systemctl reboot`: QEMU resets the same VM) and a fresh boot
//! after a poweroff ([`DebianGuest::poweroff`] then [`DebianGuest::start`]).
//! The overlay is deleted with the guest.
//!
//! [`DebianGuest::run`] types a command line at the root shell and waits for
//! a marker line carrying the exit status:
//!
//! ```no_run
//! # use cloudos_tests::{debian::DebianGuest, scaled, TestNet};
//! # use std::time::Duration;
//! let net = TestNet::new().unwrap();
//! net.start_dhcp_server(600).unwrap();
//! let guest = DebianGuest::boot(net.vm_network().unwrap()).unwrap();
//! let ready = guest.wait_ready(scaled(Duration::from_secs(120))).unwrap();
//! let (code, out) = guest.run("uname -r", scaled(Duration::from_secs(10))).unwrap();
//! ```
//!
//! Timeouts passed to these methods are used as given (like
//! [`Console::wait_for`]): wrap them in [`crate::scaled`]. The defaults here
//! are scaled already.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::artifacts::{self, ImageError};
use crate::console::{Console, ConsoleError, Pattern};
use crate::qemu::{GuestNetwork, Vm, VmBuilder, VmError};
use crate::timeouts::scaled;

/// Guest memory: systemd, udev and an installer's downloads want more than
/// CloudOS's 512 MB default.
pub const DEFAULT_MEMORY_MB: u32 = 1024;

/// How long a boot may take to reach the root prompt on an unloaded host
/// (~25 s under TCG), before [`scaled`].
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The kernel command line. `systemd.show_status=auto` keeps systemd's
/// "[  OK  ]" lines off the console (they would interleave with command
/// output while boot finishes) unless a unit fails or boot stalls;
/// `loglevel=4` does the same for the kernel's chatter.
const APPEND: &str = "console=ttyS0,115200 rw loglevel=4 systemd.show_status=auto";

/// What the initramfs prints on every boot (first boot, and after a reboot).
const INITRD_LINE: &str = "debian-guest-initrd: mounting /dev/vda";

/// The autologin shell's prompt (bash's default `\u@\h:\w\$ `), before
/// [`SHELL_SETUP`] blanks it. No `$`: systemd may print right after it.
const PROMPT: &str = r"root@debian-guest:\S*# ";

/// Typed once per login. `stty -echo` and empty prompts: what comes back
/// between two markers is only the command's output. Bracketed paste off:
/// bash 5.2 would end every line read with `ESC[?2004l\r`, an extra line
/// break. A pager would wait for a key (systemctl pipes into `more`), and
/// kernel messages would interleave with the output. Wide columns so
/// systemctl and friends do not ellipsize.
const SHELL_SETUP: &str = "stty -echo cols 250; bind 'set enable-bracketed-paste off'; \
     export PS1= PS2= PROMPT_COMMAND= PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; dmesg -n 1";

/// Errors booting or driving the guest. `Debug` prints as `Display`, so an
/// `.unwrap()` shows the console tail as lines.
#[derive(thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("creating the overlay {overlay} on {base}: {detail}")]
    Overlay {
        overlay: PathBuf,
        base: PathBuf,
        detail: String,
    },
    #[error("the guest is powered off: call DebianGuest::start")]
    NotRunning,
    #[error("{what}: {source}")]
    Console {
        what: String,
        #[source]
        source: ConsoleError,
    },
    #[error("`{command}` exited with {code}; its output:\n{output}")]
    CommandFailed {
        command: String,
        code: i32,
        output: String,
    },
    #[error("{what} after {timeout:?}; last answer:\n{last}")]
    NotReady {
        what: &'static str,
        timeout: Duration,
        last: String,
    },
}

impl std::fmt::Debug for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What [`DebianGuest::wait_ready`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// `systemctl is-system-running`: `running`, or `degraded` (a unit failed).
    pub state: String,
    /// The guest's IPv4 address (from DHCP).
    pub ipv4: String,
}

/// Settings for [`DebianGuest`]; [`DebianGuestBuilder::boot`] starts it.
#[derive(Debug, Clone)]
pub struct DebianGuestBuilder {
    network: GuestNetwork,
    name: Option<String>,
    memory_mb: u32,
    smp: u32,
    append: String,
    boot_timeout: Duration,
}

impl DebianGuestBuilder {
    /// A guest on `network` (normally `TestNet::vm_network()`; a DHCP server
    /// there gives it an address).
    pub fn new(network: GuestNetwork) -> DebianGuestBuilder {
        DebianGuestBuilder {
            network,
            name: None,
            memory_mb: DEFAULT_MEMORY_MB,
            smp: 1,
            append: String::new(),
            boot_timeout: scaled(BOOT_TIMEOUT),
        }
    }

    /// Names the VM (its log is `target/qemu-logs/<name>.log`; later boots
    /// get `-2`, `-3`...). Default: the test's name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }

    /// Appends to the kernel command line.
    pub fn append(mut self, args: &str) -> Self {
        self.append = args.to_string();
        self
    }

    /// How long a boot may take to reach the shell (default: [`BOOT_TIMEOUT`], scaled).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Makes the overlay, starts QEMU and waits for the root shell.
    pub fn boot(self) -> Result<DebianGuest, GuestError> {
        let base = artifacts::debian_guest_disk(Arch::X86_64)?;
        // The overlay records the base by path: make it absolute.
        let base = base.canonicalize().unwrap_or(base);
        let dir = tempfile::Builder::new()
            .prefix("cloudos-debian-")
            .tempdir()
            .map_err(|e| GuestError::Overlay {
                overlay: std::env::temp_dir(),
                base: base.clone(),
                detail: e.to_string(),
            })?;
        // `.qcow2`: VmBuilder::disk picks the format by extension.
        let overlay = dir.path().join("debian-guest.qcow2");
        create_overlay(&base, &overlay)?;
        let mut guest = DebianGuest {
            vm: None,
            shell: Mutex::new(Shell::default()),
            settings: self,
            overlay,
            _dir: dir,
        };
        guest.start()?;
        Ok(guest)
    }
}

/// A booted Debian guest with a root shell on its serial console. Dropping
/// it stops QEMU and deletes the overlay.
#[derive(Debug)]
pub struct DebianGuest {
    // Declared first so it is dropped first: QEMU goes before its overlay.
    vm: Option<Vm>,
    shell: Mutex<Shell>,
    settings: DebianGuestBuilder,
    overlay: PathBuf,
    _dir: tempfile::TempDir,
}

/// The shell's side of the console: a cursor of our own, and where the last
/// command's end marker was (the next command's output starts after it).
#[derive(Debug, Default)]
struct Shell {
    console: Option<Console>,
    next_marker: u32,
    last_marker: Option<String>,
}

impl DebianGuest {
    /// Boots a guest with default settings on `network` (see [`DebianGuestBuilder`]).
    pub fn boot(network: GuestNetwork) -> Result<DebianGuest, GuestError> {
        DebianGuestBuilder::new(network).boot()
    }

    /// Settings before booting.
    pub fn builder(network: GuestNetwork) -> DebianGuestBuilder {
        DebianGuestBuilder::new(network)
    }

    /// The running QEMU (its serial console, monitor, log), or `None` after a poweroff.
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }

    /// The guest's private qcow2 overlay (its disk). Deleted with the guest.
    pub fn overlay(&self) -> &Path {
        &self.overlay
    }

    /// Boots the overlay again after [`DebianGuest::poweroff`] (a fresh QEMU,
    /// same disk, same network) and waits for the root shell.
    pub fn start(&mut self) -> Result<(), GuestError> {
        if self.vm.is_some() {
            return Ok(());
        }
        let s = &self.settings;
        let append = format!("{APPEND} {}", s.append).trim_end().to_string();
        let mut builder = VmBuilder::new(Arch::X86_64)
            .memory_mb(s.memory_mb)
            .smp(s.smp)
            .kernel(
                artifacts::kernel(Arch::X86_64)?,
                artifacts::debian_guest_initrd(Arch::X86_64)?,
                &append,
            )
            .disk(self.overlay.clone())
            .network(s.network.clone())
            // VmBuilder passes -no-reboot (a CloudOS reboot ends the test);
            // this guest must survive `systemctl reboot`, and a later
            // -action overrides it (QEMU applies actions in order).
            .extra_args(["-action", "reboot=reset"]);
        if let Some(name) = &s.name {
            builder = builder.name(name);
        }
        let vm = builder.spawn()?;
        let console = vm.serial().clone();
        self.vm = Some(vm);
        *lock(&self.shell) = Shell {
            console: Some(console),
            ..Shell::default()
        };
        self.login(self.settings.boot_timeout)
    }

    /// `systemctl reboot` in the guest; waits for the root shell of the next boot.
    pub fn reboot(&mut self) -> Result<(), GuestError> {
        let timeout = self.settings.boot_timeout;
        self.with_console(|console| {
            console
                .send_line("systemctl reboot")
                .map_err(|source| GuestError::Console {
                    what: "sending `systemctl reboot`".into(),
                    source,
                })?;
            console
                .wait_for(INITRD_LINE, timeout)
                .map_err(|source| GuestError::Console {
                    what: "waiting for the guest to boot again after `systemctl reboot`".into(),
                    source,
                })
        })?;
        lock(&self.shell).last_marker = None;
        self.login(timeout)
    }

    /// `systemctl poweroff` in the guest; waits for QEMU to exit. The overlay
    /// stays: [`DebianGuest::start`] boots it again.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<(), GuestError> {
        let Some(vm) = &self.vm else {
            return Ok(());
        };
        vm.serial()
            .send_line("systemctl poweroff")
            .map_err(|source| GuestError::Console {
                what: "sending `systemctl poweroff`".into(),
                source,
            })?;
        vm.wait_exit(timeout)?;
        self.vm = None;
        *lock(&self.shell) = Shell::default();
        Ok(())
    }

    /// Runs `command` (one or more lines of shell) in the root shell and
    /// returns its exit status and output (stdout and stderr as the terminal
    /// showed them: ANSI escapes removed, `\r` taken as a line end, no trailing
    /// newline).
    ///
    /// The command's stdin is the console: a command that reads it would eat
    /// the end marker typed after it (redirect `</dev/null`). Keep it under
    /// 4 KB (the tty's line limit) and do not `exit` the shell. After a
    /// timeout the command may still be running, and what it prints later
    /// shows up in the next command's output.
    pub fn run(&self, command: &str, timeout: Duration) -> Result<(i32, String), GuestError> {
        let mut shell = lock(&self.shell);
        let Shell {
            console,
            next_marker,
            last_marker,
        } = &mut *shell;
        let console = console.as_ref().ok_or(GuestError::NotRunning)?;
        let n = *next_marker;
        *next_marker += 1;
        let marker = format!("@@END-{n}-");
        // Typed on its own line (a comment or a trailing `&` in `command`
        // cannot swallow it), and split in two shell words so that the marker
        // text exists only in the output, never in an echo of the input.
        let input = format!("{command}\recho \"@@EN\"\"D-{n}-$?@@\"");
        console
            .send_line(&input)
            .map_err(|source| GuestError::Console {
                what: format!("typing {command:?}"),
                source,
            })?;
        let pattern = Pattern::regex(&format!("{marker}(\\d+)@@")).expect("a valid regex");
        // Even when this times out, the next command's output starts after
        // this marker's line, should the marker still come.
        let previous = last_marker.replace(marker.clone());
        let found = console
            .wait_for(pattern, timeout)
            .map_err(|source| GuestError::Console {
                what: format!("running {command:?}"),
                source,
            })?;
        let code: i32 = found
            .group(1)
            .and_then(|c| c.parse().ok())
            .expect("the marker's status is digits");

        // The output is what came between the line of the previous marker
        // (or the start of this shell) and this marker.
        let text = console.contents();
        let end = text.rfind(&marker).expect("the marker was just seen");
        let start = previous
            .as_ref()
            .and_then(|m| text[..end].rfind(m.as_str()))
            .and_then(|i| text[i..end].find('\n').map(|j| i + j + 1))
            .unwrap_or(end);
        let output = &text[start..end];
        let output = output.strip_suffix('\n').unwrap_or(output);
        Ok((code, output.to_string()))
    }

    /// [`DebianGuest::run`], and an error unless the command exits 0. Returns its output.
    pub fn run_ok(&self, command: &str, timeout: Duration) -> Result<String, GuestError> {
        let (code, output) = self.run(command, timeout)?;
        if code == 0 {
            Ok(output)
        } else {
            Err(GuestError::CommandFailed {
                command: command.to_string(),
                code,
                output,
            })
        }
    }

    /// Waits until systemd has finished booting (`systemctl
    /// is-system-running --wait` says `running` or `degraded`) and the guest
    /// has an IPv4 address (DHCP, from the test LAN's dnsmasq).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Ready, GuestError> {
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        // --wait returns when the boot jobs are done; its exit status is
        // non-zero for `degraded`, so judge by what it prints.
        let (_, said) = self.run("systemctl is-system-running --wait", remaining())?;
        let state = said
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if state != "running" && state != "degraded" {
            return Err(GuestError::NotReady {
                what: "systemd did not finish booting",
                timeout,
                last: said,
            });
        }
        loop {
            let (_, said) = self.run("ip -4 -o addr show scope global", remaining())?;
            // `2: enp0s3    inet 10.77.0.123/24 metric 1024 brd ...`
            let ipv4 = said.split_whitespace().skip_while(|w| *w != "inet").nth(1);
            if let Some(ipv4) = ipv4.and_then(|a| a.split('/').next()) {
                return Ok(Ready {
                    state,
                    ipv4: ipv4.to_string(),
                });
            }
            if remaining().is_zero() {
                return Err(GuestError::NotReady {
                    what: "no IPv4 address",
                    timeout,
                    last: said,
                });
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Calls `f` with the shell's console (a cursor of its own, which the waits
    /// in `f` move on), if the guest is running.
    fn with_console<R>(
        &self,
        f: impl FnOnce(&Console) -> Result<R, GuestError>,
    ) -> Result<R, GuestError> {
        let shell = lock(&self.shell);
        f(shell.console.as_ref().ok_or(GuestError::NotRunning)?)
    }

    /// Waits for the autologin prompt and makes the shell fit for [`DebianGuest::run`].
    fn login(&self, timeout: Duration) -> Result<(), GuestError> {
        let prompt = Pattern::regex(PROMPT).expect("a valid regex");
        self.with_console(|console| {
            console
                .wait_for(prompt, timeout)
                .map_err(|source| GuestError::Console {
                    what: "waiting for the root prompt on ttyS0".into(),
                    source,
                })
        })?;
        // Echo is still on for this one: its echo lands before the marker, and
        // the first real command's output starts after it.
        self.run(SHELL_SETUP, scaled(Duration::from_secs(30)))?;
        Ok(())
    }
}

/// `qemu-img create -f qcow2 -b BASE -F raw OVERLAY`: writes go to the
/// overlay, the shared base image is only read.
fn create_overlay(base: &Path, overlay: &Path) -> Result<(), GuestError> {
    let err = |detail: String| GuestError::Overlay {
        overlay: overlay.to_path_buf(),
        base: base.to_path_buf(),
        detail,
    };
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(base)
        .arg(overlay)
        .output()
        .map_err(|e| err(format!("running qemu-img: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_string()))
    }
}

/// Locks, ignoring poisoning (a panicked test must still be able to clean up).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
