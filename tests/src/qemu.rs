//! QEMU virtual machines for tests: [`VmBuilder`] makes the command line,
//! [`Vm`] owns the running process.
//!
//! Fixed choices, and why:
//! - `-accel tcg`: `/dev/kvm` exists on the build hosts but KVM guests hang.
//! - `-display none -no-reboot`: no window; a guest reboot or panic (with
//!   `panic=-1` on the kernel command line) ends QEMU instead of looping.
//! - The board ([`Machine`]) is the architecture's generic one unless a test
//!   asks for a Raspberry Pi 3B, whose fixed RAM, cores and devices the
//!   builder checks up front, so a wrong combination is an error that says
//!   why rather than a cryptic QEMU exit.
//! - The serial port is on a pipe (QEMU's stdin/stdout) or on a unix socket
//!   with `wait=on` (QEMU waits for us, so no output is lost and a TUI can be
//!   driven); the HMP monitor is on a unix socket in a per-VM temp dir.
//! - User networking always carries `restrict=on`: a test VM must never reach
//!   beyond this machine. Port forwards bind to 127.0.0.1 only.
//! - Boot media the test does not mean to change (USB stick) are opened with
//!   `snapshot=on`: writes go to a throwaway overlay, the image is untouched.
//!
//! `Drop` stops QEMU (SIGTERM, then SIGKILL) and removes the temp dir, also
//! when the test panics; then it prints the guest's last lines to stderr.
//! Every VM's full serial output is written, as it arrives, to
//! `target/qemu-logs/<name>.log`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::arch::{Arch, Machine, RPI3B_CPUS, RPI3B_MEMORY_MB};
use crate::artifacts;
use crate::console::Console;
use crate::monitor::Monitor;
use crate::netns::stop_child;
use crate::spawner::spawn_tied;

/// Default guest memory.
pub const DEFAULT_MEMORY_MB: u32 = 512;

/// Lines of guest output printed to stderr when a test panics with a VM alive.
pub const PANIC_TAIL_LINES: usize = 80;

/// How long QEMU gets to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Where OVMF (x86_64 UEFI) and AAVMF (aarch64 UEFI) live on Debian.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// Errors starting or talking to a VM. `Debug` prints as `Display`, so an
/// `.unwrap()` shows the console tail as readable lines.
#[derive(thiserror::Error)]
pub enum VmError {
    #[error("no boot source: call VmBuilder::boot (or ::kernel)")]
    NoBootSource,
    #[error("extra network card: {0}")]
    ExtraNic(String),
    #[error(transparent)]
    NotReserved(#[from] crate::guests::NotReserved),
    #[error("{what} not found at {path}")]
    Missing { what: &'static str, path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited ({status}) before {while_doing}; its stderr:\n{stderr}")]
    EarlyExit {
        status: ExitStatus,
        while_doing: &'static str,
        stderr: String,
    },
    #[error("monitor command {command:?}: {source}")]
    Monitor {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU still running after {timeout:?}; last lines of its console:\n{tail}")]
    ExitTimeout { timeout: Duration, tail: String },
    #[error("the {machine} machine cannot {what}")]
    Unsupported { machine: Machine, what: String },
    #[error(
        "SD card image {path} is {size} bytes; QEMU needs a power of two: \
         grow a copy (artifacts::sd_card_from_image)"
    )]
    SdCardSize { path: PathBuf, size: u64 },
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(transparent)]
    Image(#[from] crate::artifacts::ImageError),
}

impl std::fmt::Debug for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What the VM boots from.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// Direct kernel boot (`-kernel -initrd -append`): no firmware, no bootloader; fastest.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// An ISO in a CD-ROM drive (read-only medium).
    Cdrom(PathBuf),
    /// A raw image on a USB stick (xhci + usb-storage), opened copy-on-write.
    UsbStick(PathBuf),
    /// A disk image on virtio-blk (raw, or qcow2 by extension); writes persist.
    Disk(PathBuf),
}

/// The card model of a VM's network unless a test picks another.
const DEFAULT_NIC_MODEL: &str = "virtio-net-pci";

/// A disk controller QEMU emulates, each with the disk model it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskController {
    /// A SCSI host bus adapter by its QEMU model (`megasas`, `megasas-gen2`,
    /// `mptsas1068`, `lsi53c895a`, `pvscsi`), with a `scsi-hd` on it.
    Scsi(&'static str),
    /// An NVMe controller (the disk is its namespace).
    Nvme,
    /// An AHCI (SATA) controller with an `ide-hd` on it.
    Ahci,
    /// A PCI SD host controller (`sdhci-pci`) with an SD card in it.
    SdhciPci,
}

impl DiskController {
    /// The `-device` values for controller `ctl` holding drive `drive`.
    fn devices(self, ctl: &str, drive: &str) -> Vec<String> {
        match self {
            DiskController::Scsi(model) => vec![
                format!("{model},id={ctl}"),
                format!("scsi-hd,drive={drive},bus={ctl}.0"),
            ],
            DiskController::Nvme => vec![format!("nvme,id={ctl},drive={drive},serial={drive}")],
            DiskController::Ahci => vec![
                format!("ahci,id={ctl}"),
                format!("ide-hd,drive={drive},bus={ctl}.0"),
            ],
            DiskController::SdhciPci => vec![
                format!("sdhci-pci,id={ctl}"),
                // The controller's bus is named `sd-bus` whatever its id, so a
                // VM has one SD controller at most and the card finds it.
                format!("sd-card,drive={drive}"),
            ],
        }
    }
}

/// Which firmware runs before the boot source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS on `-M pc` (x86_64). On aarch64: no firmware (kernel boot only).
    #[default]
    Bios,
    /// OVMF (x86_64, `-M q35`) or AAVMF (aarch64) from pflash, with a private
    /// copy of the variable store so tests never share or change NVRAM.
    Uefi,
}

/// The VM's network.
#[derive(Debug, Clone, Default)]
pub enum GuestNetwork {
    /// No NIC at all.
    #[default]
    None,
    /// QEMU user networking, `restrict=on` (no way out), with TCP forwards
    /// from `127.0.0.1:host_port` to the guest's `guest_port`.
    User { hostfwd: Vec<(u16, u16)> },
    /// A tap in a network namespace (see `TestNet::vm_network`); QEMU is started
    /// inside the namespace.
    Tap {
        netns: String,
        tap_name: String,
        mac: String,
    },
}

/// How the serial port reaches the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerialMode {
    /// QEMU's stdout/stdin pipes. Writable too (`Console::send`).
    #[default]
    Stdio,
    /// A unix socket with `server=on,wait=on`: QEMU does not start the guest
    /// until the harness has connected, so not one byte is missed. Use it for
    /// driving a TUI.
    Socket,
}

/// Builds a [`Vm`]. Defaults: x86_64, the generic machine, 512 MB, 1 CPU,
/// SeaBIOS, no network, serial on stdio, named after the current test. On a
/// Raspberry Pi 3B the board's own 1 GiB and 4 cores are the defaults.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    arch: Arch,
    machine: Machine,
    name: Option<String>,
    /// `None`: the board's default (512 MB, 1 CPU on the generic machines).
    memory_mb: Option<u32>,
    smp: Option<u32>,
    boot: Option<BootSource>,
    dtb: Option<PathBuf>,
    firmware: Firmware,
    disks: Vec<PathBuf>,
    controller_disks: Vec<(PathBuf, DiskController)>,
    sd_card: Option<PathBuf>,
    network: GuestNetwork,
    nic_model: String,
    extra_nics: Vec<(GuestNetwork, String)>,
    guestfwd: Vec<String>,
    serial: SerialMode,
    uefi_files: Option<(PathBuf, PathBuf)>,
    extra_args: Vec<String>,
}

impl Default for VmBuilder {
    fn default() -> Self {
        VmBuilder::new(Arch::X86_64)
    }
}

impl VmBuilder {
    pub fn new(arch: Arch) -> VmBuilder {
        VmBuilder {
            arch,
            machine: Machine::Generic,
            name: None,
            memory_mb: None,
            smp: None,
            boot: None,
            dtb: None,
            firmware: Firmware::Bios,
            disks: Vec::new(),
            controller_disks: Vec::new(),
            sd_card: None,
            network: GuestNetwork::None,
            nic_model: DEFAULT_NIC_MODEL.to_string(),
            extra_nics: Vec::new(),
            guestfwd: Vec::new(),
            serial: SerialMode::Stdio,
            uefi_files: None,
            extra_args: Vec::new(),
        }
    }

    /// Names the VM (log file name, `-name`). Default: the test's thread name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The board to emulate (default: [`Machine::Generic`]).
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = Some(cpus);
        self
    }

    pub fn boot(mut self, source: BootSource) -> Self {
        self.boot = Some(source);
        self
    }

    /// Shorthand for `boot(BootSource::Kernel { .. })`.
    pub fn kernel(
        self,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        append: &str,
    ) -> Self {
        self.boot(BootSource::Kernel {
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: append.to_string(),
        })
    }

    /// A device tree blob for a kernel boot (`-dtb`): on a Raspberry Pi it is
    /// what the firmware would pick for the board, e.g. `bcm2837-rpi-3-b.dtb`.
    pub fn dtb(mut self, path: impl Into<PathBuf>) -> Self {
        self.dtb = Some(path.into());
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Overrides the UEFI code and variable-store templates (defaults: Debian's OVMF/AAVMF).
    pub fn uefi_files(
        mut self,
        code: impl Into<PathBuf>,
        vars_template: impl Into<PathBuf>,
    ) -> Self {
        self.uefi_files = Some((code.into(), vars_template.into()));
        self
    }

    /// Adds a writable virtio disk (raw, or qcow2 by extension), after the boot source.
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    /// Puts a raw image in the board's SD card slot (`-drive if=sd`); writes
    /// persist. Only boards with a slot have one ([`Machine::RaspberryPi3B`]).
    /// QEMU wants a power-of-two size: see [`artifacts::sd_card_from_image`].
    pub fn sd_card(mut self, image: impl Into<PathBuf>) -> Self {
        self.sd_card = Some(image.into());
        self
    }

    pub fn network(mut self, network: GuestNetwork) -> Self {
        self.network = network;
        self
    }

    /// The QEMU device model of the [`network`](Self::network)'s card
    /// (default `virtio-net-pci`): `e1000`, `rtl8139`, `vmxnet3`, …
    pub fn nic_model(mut self, model: &str) -> Self {
        self.nic_model = model.to_string();
        self
    }

    /// Adds another card of QEMU model `model` on a tap (a [`GuestNetwork::Tap`]
    /// in the same namespace as the main network, which QEMU runs in).
    pub fn extra_nic(mut self, network: GuestNetwork, model: &str) -> Self {
        self.extra_nics.push((network, model.to_string()));
        self
    }

    /// Adds a writable disk (raw, or qcow2 by extension) behind a controller
    /// of its own, of the given kind.
    pub fn disk_behind(mut self, path: impl Into<PathBuf>, controller: DiskController) -> Self {
        self.controller_disks.push((path.into(), controller));
        self
    }

    /// Adds a `guestfwd=` rule to user networking (e.g.
    /// `tcp:10.0.2.100:80-cmd:<relay>`), the way a `restrict=on` guest can reach
    /// one chosen host service. Ignored for other networks.
    pub fn guestfwd(mut self, rule: &str) -> Self {
        self.guestfwd.push(rule.to_string());
        self
    }

    pub fn serial(mut self, mode: SerialMode) -> Self {
        self.serial = mode;
        self
    }

    /// Raw extra QEMU arguments, appended last.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts QEMU. Returns once the serial console is being read (in socket
    /// mode: once connected, which is what lets the guest start).
    pub fn spawn(self) -> Result<Vm, VmError> {
        let boot = self.boot.clone().ok_or(VmError::NoBootSource)?;
        let running = crate::guests::started()?;
        let name = unique_name(self.name.as_deref());
        let dir = tempfile::Builder::new()
            .prefix("cloudos-vm-")
            .tempdir()
            .map_err(|source| VmError::Io {
                action: "creating a temp dir in",
                path: std::env::temp_dir(),
                source,
            })?;
        let serial_sock = dir.path().join("serial.sock");
        let monitor_sock = dir.path().join("monitor.sock");

        let args = self.qemu_args(&name, &boot, dir.path(), &serial_sock, &monitor_sock)?;
        let mut cmd = match &self.network {
            // `ip netns exec` execs QEMU, so the PID we get is QEMU's own.
            GuestNetwork::Tap { netns, .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, self.arch.qemu_binary()]);
                c
            }
            _ => Command::new(self.arch.qemu_binary()),
        };
        cmd.args(&args);
        let command_line = describe(&cmd);

        let log_dir = artifacts::target_dir().join("qemu-logs");
        fs::create_dir_all(&log_dir).map_err(|source| VmError::Io {
            action: "creating",
            path: log_dir.clone(),
            source,
        })?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).map_err(|source| VmError::Io {
            action: "creating",
            path: log_path.clone(),
            source,
        })?;
        // The command line beside the log, to re-run a failing VM by hand.
        let _ = fs::write(
            log_dir.join(format!("{name}.cmd")),
            format!("{command_line}\n"),
        );

        cmd.stdin(match self.serial {
            SerialMode::Stdio => Stdio::piped(),
            SerialMode::Socket => Stdio::null(),
        })
        .stdout(match self.serial {
            SerialMode::Stdio => Stdio::piped(),
            SerialMode::Socket => Stdio::null(),
        })
        .stderr(Stdio::piped());

        let mut child = spawn_tied(cmd).map_err(|source| VmError::Spawn {
            command: command_line.clone(),
            source,
        })?;
        let pid = child.id();
        let stderr = collect_stderr(&mut child);

        let console = match self.serial {
            SerialMode::Stdio => {
                let out = child.stdout.take().expect("stdout is piped");
                let input = child.stdin.take().expect("stdin is piped");
                Console::start(Box::new(out), Some(Box::new(input)), Some(log))
            }
            SerialMode::Socket => match connect_serial(&serial_sock, &mut child) {
                Ok(stream) => {
                    let reader = stream.try_clone().map_err(|source| VmError::Io {
                        action: "cloning the socket",
                        path: serial_sock.clone(),
                        source,
                    })?;
                    Console::start(Box::new(reader), Some(Box::new(stream)), Some(log))
                }
                Err(e) => {
                    stop_child(&mut child, TERM_GRACE);
                    return Err(finish_early_error(e, &stderr));
                }
            },
        };

        Ok(Vm {
            name,
            pid,
            command_line,
            log_path,
            console,
            stderr,
            child: Mutex::new(child),
            monitor: Mutex::new(None),
            monitor_sock,
            running,
            _dir: dir,
        })
    }

    /// The QEMU arguments (without the binary). Public for debugging a setup.
    pub fn qemu_args(
        &self,
        name: &str,
        boot: &BootSource,
        dir: &Path,
        serial_sock: &Path,
        monitor_sock: &Path,
    ) -> Result<Vec<String>, VmError> {
        self.check_machine(boot)?;
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-name",
            name,
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
        ]);

        // Machine and firmware.
        match self.machine {
            Machine::Generic => {
                push(&[
                    "-m",
                    &self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB).to_string(),
                    "-smp",
                    &self.smp.unwrap_or(1).to_string(),
                ]);
                match (self.arch, self.firmware) {
                    (Arch::X86_64, Firmware::Bios) => push(&["-M", "pc"]),
                    (Arch::X86_64, Firmware::Uefi) => push(&["-M", "q35"]),
                    (Arch::Aarch64, _) => push(&["-M", "virt", "-cpu", "cortex-a57"]),
                }
            }
            // The board fixes its CPU model, cores and RAM; QEMU refuses others.
            Machine::RaspberryPi3B => push(&[
                "-m",
                &RPI3B_MEMORY_MB.to_string(),
                "-smp",
                &RPI3B_CPUS.to_string(),
                "-M",
                "raspi3b",
            ]),
        }
        if self.firmware == Firmware::Uefi {
            let (code, vars) = self.uefi_files.clone().unwrap_or_else(|| match self.arch {
                Arch::X86_64 => (OVMF_CODE.into(), OVMF_VARS.into()),
                Arch::Aarch64 => (AAVMF_CODE.into(), AAVMF_VARS.into()),
            });
            for (what, p) in [
                ("UEFI firmware code", &code),
                ("UEFI variable store", &vars),
            ] {
                if !p.is_file() {
                    return Err(VmError::Missing {
                        what,
                        path: p.clone(),
                    });
                }
            }
            // A private copy: UEFI writes boot entries to its variable store, and
            // the shared template must stay pristine for every other VM.
            let my_vars = dir.join("uefi-vars.fd");
            fs::copy(&vars, &my_vars).map_err(|source| VmError::Io {
                action: "copying",
                path: vars.clone(),
                source,
            })?;
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", p(&code)),
            ]);
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", p(&my_vars)),
            ]);
        }

        // Boot source. Boot media get bootindex=0 so an attached blank disk is not tried first.
        match boot {
            BootSource::Kernel {
                kernel,
                initrd,
                append,
            } => {
                need("kernel", kernel)?;
                need("initrd", initrd)?;
                push(&[
                    "-kernel",
                    &p(kernel),
                    "-initrd",
                    &p(initrd),
                    "-append",
                    append,
                ]);
                if let Some(dtb) = &self.dtb {
                    need("device tree", dtb)?;
                    push(&["-dtb", &p(dtb)]);
                }
            }
            BootSource::Cdrom(iso) => {
                need("ISO", iso)?;
                push(&[
                    "-drive",
                    &format!(
                        "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={}",
                        p(iso)
                    ),
                ]);
                match self.arch {
                    // ide-cd is what `-cdrom` makes (IDE on pc, AHCI on q35), plus a bootindex.
                    Arch::X86_64 => push(&["-device", "ide-cd,drive=cd0,bootindex=0"]),
                    // The virt machine has no IDE: a SCSI CD on virtio-scsi.
                    Arch::Aarch64 => push(&[
                        "-device",
                        "virtio-scsi-pci,id=scsi0",
                        "-device",
                        "scsi-cd,bus=scsi0.0,drive=cd0,bootindex=0",
                    ]),
                }
            }
            BootSource::UsbStick(img) => {
                need("USB stick image", img)?;
                push(&["-device", "qemu-xhci,id=xhci"]);
                push(&[
                    "-drive",
                    &format!("if=none,id=stick,format=raw,snapshot=on,file={}", p(img)),
                ]);
                push(&["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
            }
            BootSource::Disk(disk) => {
                need("boot disk", disk)?;
                push(&[
                    "-drive",
                    &format!(
                        "if=none,id=boot,format={},file={}",
                        disk_format(disk),
                        p(disk)
                    ),
                ]);
                push(&["-device", "virtio-blk-pci,drive=boot,bootindex=0"]);
            }
        }
        for (i, disk) in self.disks.iter().enumerate() {
            need("disk", disk)?;
            push(&[
                "-drive",
                &format!(
                    "if=none,id=disk{i},format={},file={}",
                    disk_format(disk),
                    p(disk)
                ),
            ]);
            push(&[
                "-device",
                &format!("virtio-blk-pci,drive=disk{i},serial=disk{i}"),
            ]);
        }
        for (i, (disk, controller)) in self.controller_disks.iter().enumerate() {
            need("disk", disk)?;
            push(&[
                "-drive",
                &format!(
                    "if=none,id=cdisk{i},format={},file={}",
                    disk_format(disk),
                    p(disk)
                ),
            ]);
            for device in controller.devices(&format!("ctl{i}"), &format!("cdisk{i}")) {
                push(&["-device", &device]);
            }
        }
        if let Some(card) = &self.sd_card {
            need("SD card image", card)?;
            let size = fs::metadata(card)
                .map_err(|source| VmError::Io {
                    action: "stat",
                    path: card.clone(),
                    source,
                })?
                .len();
            if !size.is_power_of_two() {
                return Err(VmError::SdCardSize {
                    path: card.clone(),
                    size,
                });
            }
            push(&["-drive", &format!("if=sd,format=raw,file={}", p(card))]);
        }

        // GuestNetwork.
        match &self.network {
            GuestNetwork::None => push(&["-nic", "none"]),
            GuestNetwork::User { hostfwd } => {
                let mut netdev = "user,id=n0,restrict=on".to_string();
                for (host, guest) in hostfwd {
                    netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                }
                for rule in &self.guestfwd {
                    netdev.push_str(&format!(",guestfwd={rule}"));
                }
                push(&[
                    "-netdev",
                    &netdev,
                    "-device",
                    &format!("{},netdev=n0", self.nic_model),
                ]);
            }
            GuestNetwork::Tap { tap_name, mac, .. } => {
                push(&[
                    "-netdev",
                    &format!("tap,id=n0,ifname={tap_name},script=no,downscript=no"),
                ]);
                push(&[
                    "-device",
                    &format!("{},netdev=n0,mac={mac}", self.nic_model),
                ]);
            }
        }
        for (i, (network, model)) in self.extra_nics.iter().enumerate() {
            let GuestNetwork::Tap {
                netns,
                tap_name,
                mac,
            } = network
            else {
                return Err(VmError::ExtraNic("an extra card needs a tap".into()));
            };
            match &self.network {
                GuestNetwork::Tap { netns: main, .. } if main == netns => {}
                _ => {
                    return Err(VmError::ExtraNic(format!(
                        "{tap_name} is in {netns}: an extra card's tap must be in the main network's namespace"
                    )))
                }
            }
            let id = format!("n{}", i + 1);
            push(&[
                "-netdev",
                &format!("tap,id={id},ifname={tap_name},script=no,downscript=no"),
                "-device",
                &format!("{model},netdev={id},mac={mac}"),
            ]);
        }

        // Serial and monitor.
        if self.machine == Machine::RaspberryPi3B {
            // The first port is the PL011, on Bluetooth on a real Pi; the
            // console pins (GPIO 14/15, ttyS1) are the mini UART, the second.
            push(&["-serial", "null"]);
        }
        match self.serial {
            SerialMode::Stdio => push(&["-serial", "stdio"]),
            SerialMode::Socket => push(&[
                "-chardev",
                &format!("socket,id=ser0,path={},server=on,wait=on", p(serial_sock)),
                "-serial",
                "chardev:ser0",
            ]),
        }
        push(&[
            "-monitor",
            &format!("unix:{},server=on,wait=off", p(monitor_sock)),
        ]);
        push(&["-parallel", "none"]);
        a.extend(self.extra_args.iter().cloned());
        Ok(a)
    }

    /// Refuses what the chosen board cannot do, naming what to do instead.
    fn check_machine(&self, boot: &BootSource) -> Result<(), VmError> {
        let machine = self.machine;
        let unsupported = |what: String| Err(VmError::Unsupported { machine, what });
        let kernel_boot = matches!(boot, BootSource::Kernel { .. });
        if self.dtb.is_some() && !kernel_boot {
            return unsupported(
                "use a device tree without a kernel boot: firmware brings its own".into(),
            );
        }
        if let Some(arch) = machine.required_arch() {
            if arch != self.arch {
                return unsupported(format!("run {} guests: it is an {arch} board", self.arch));
            }
        }
        match machine {
            Machine::Generic => {
                if self.sd_card.is_some() {
                    return unsupported("take an SD card (it has no slot): use a disk".into());
                }
            }
            Machine::RaspberryPi3B => {
                if let Some(mb) = self.memory_mb.filter(|&mb| mb != RPI3B_MEMORY_MB) {
                    return unsupported(format!(
                        "have {mb} MB of RAM: the board has {RPI3B_MEMORY_MB}"
                    ));
                }
                if let Some(cpus) = self.smp.filter(|&n| n != RPI3B_CPUS) {
                    return unsupported(format!("have {cpus} CPUs: the board has {RPI3B_CPUS}"));
                }
                if self.firmware == Firmware::Uefi {
                    return unsupported(
                        "boot UEFI: QEMU boots its kernel directly (Firmware::Bios)".into(),
                    );
                }
                if !kernel_boot {
                    return unsupported(
                        "boot from a CD, USB stick or virtio disk (it has no PCI): \
                         boot its kernel, initramfs and DTB"
                            .into(),
                    );
                }
                if !self.disks.is_empty() {
                    return unsupported("take virtio disks (it has no PCI): use an SD card".into());
                }
                // Its USB host takes a USB network device, as a real Pi 3B's
                // Ethernet is on USB.
                if !matches!(self.network, GuestNetwork::None)
                    && !self.nic_model.starts_with("usb-")
                {
                    return unsupported(
                        "have a PCI network card (it has no PCI): use nic_model(\"usb-net\")"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A running QEMU. Dropping it stops QEMU and cleans up.
#[derive(Debug)]
pub struct Vm {
    name: String,
    pid: u32,
    command_line: String,
    log_path: PathBuf,
    console: Console,
    stderr: Arc<Mutex<Vec<u8>>>,
    child: Mutex<Child>,
    monitor: Mutex<Option<Monitor>>,
    monitor_sock: PathBuf,
    running: crate::guests::Running,
    // Last field: removed after QEMU is gone (its sockets and NVRAM live here).
    _dir: tempfile::TempDir,
}

impl Vm {
    /// The serial console. Clone it to get an independent cursor.
    pub fn serial(&self) -> &Console {
        &self.console
    }

    /// Runs an HMP monitor command (`system_powerdown`, `set_link n0 off`,
    /// `info status`, `quit`) and returns its output.
    pub fn monitor(&self, command: &str) -> Result<String, VmError> {
        let err = |source| VmError::Monitor {
            command: command.to_string(),
            source,
        };
        let mut slot = self.monitor.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot =
                Some(Monitor::connect(&self.monitor_sock, Duration::from_secs(10)).map_err(err)?);
        }
        let result = slot.as_mut().expect("connected above").command(command);
        if result.is_err() || command.trim() == "quit" {
            // The connection is unusable now; reconnect next time.
            *slot = None;
        }
        result.map_err(err)
    }

    /// Waits for QEMU to exit (the guest powered off, rebooted under
    /// `-no-reboot`, or was quit). Also waits briefly for the console to drain
    /// so the guest's last words are in `serial()`.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = {
                let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
                child.try_wait().map_err(|source| VmError::Io {
                    action: "waiting for QEMU",
                    path: PathBuf::from(format!("pid {}", self.pid)),
                    source,
                })?
            };
            if let Some(status) = status {
                self.running.end();
                self.console.wait_closed(Duration::from_secs(2));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(VmError::ExitTimeout {
                    timeout,
                    tail: self.console.tail(crate::console::ERROR_TAIL_LINES),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops QEMU now: SIGTERM (QEMU flushes its disk images and exits), then
    /// SIGKILL after a grace period. For boards where a guest poweroff only
    /// halts the CPUs and QEMU keeps running (the Raspberry Pi), and for
    /// reading a VM's disks while the `Vm` is still at hand. Waits briefly for
    /// the console to drain.
    pub fn stop(&self) -> Result<ExitStatus, VmError> {
        *self.monitor.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        stop_child(&mut child, TERM_GRACE);
        let status = child.try_wait().map_err(|source| VmError::Io {
            action: "waiting for QEMU",
            path: PathBuf::from(format!("pid {}", self.pid)),
            source,
        })?;
        drop(child);
        if status.is_some() {
            self.running.end();
        }
        self.console.wait_closed(Duration::from_secs(2));
        status.ok_or_else(|| VmError::ExitTimeout {
            timeout: TERM_GRACE,
            tail: self.console.tail(crate::console::ERROR_TAIL_LINES),
        })
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `target/qemu-logs/<name>.log`: the full raw serial output.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The full QEMU command line.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// What QEMU wrote to its stderr so far (its own warnings and errors).
    pub fn qemu_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Close the monitor first: QEMU serves one client at a time.
        *self.monitor.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        stop_child(
            self.child.get_mut().unwrap_or_else(|e| e.into_inner()),
            TERM_GRACE,
        );
        self.console.wait_closed(Duration::from_secs(1));
        if thread::panicking() {
            // libtest shows a failed test's captured stderr: this is what the
            // guest said, which is usually why it failed.
            eprintln!(
                "\n===== VM {} (pid {}): last {PANIC_TAIL_LINES} console lines; full log: {} =====\n{}\n===== end of VM {} console =====",
                self.name,
                self.pid,
                self.log_path.display(),
                self.console.tail(PANIC_TAIL_LINES),
                self.name,
            );
            let stderr = self.qemu_stderr();
            if !stderr.trim().is_empty() {
                eprintln!("===== QEMU stderr =====\n{}", stderr.trim_end());
            }
            eprintln!("===== QEMU command =====\n{}", self.command_line);
        }
    }
}

/// Reads QEMU's stderr in the background (QEMU would block on a full pipe).
fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut err) = child.stderr.take() {
        let buf = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
    }
    buf
}

enum ConnectError {
    Exited(ExitStatus),
    TimedOut(std::io::Error),
}

/// Connects to the serial socket; QEMU creates it shortly after starting and
/// then blocks (wait=on) until we are connected.
fn connect_serial(path: &Path, child: &mut Child) -> Result<UnixStream, ConnectError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ConnectError::Exited(status));
                }
                if Instant::now() >= deadline {
                    return Err(ConnectError::TimedOut(e));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn finish_early_error(e: ConnectError, stderr: &Arc<Mutex<Vec<u8>>>) -> VmError {
    // Give the stderr thread a moment to collect QEMU's last message.
    thread::sleep(Duration::from_millis(100));
    let stderr =
        String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    match e {
        ConnectError::Exited(status) => VmError::EarlyExit {
            status,
            while_doing: "the serial socket was connected",
            stderr,
        },
        ConnectError::TimedOut(source) => VmError::Io {
            action: "connecting to the serial socket (QEMU stderr so far below)",
            path: PathBuf::from(stderr),
            source,
        },
    }
}

/// A log-file-safe, process-unique VM name. libtest names each test's thread
/// after the test, so by default the log is named after the test.
fn unique_name(requested: Option<&str>) -> String {
    static USED: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    let base = requested
        .map(str::to_string)
        .or_else(|| thread::current().name().map(str::to_string))
        .unwrap_or_else(|| "vm".to_string());
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut used = USED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = used.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base}-{n}")
    }
}

fn need(what: &'static str, path: &Path) -> Result<(), VmError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(VmError::Missing {
            what,
            path: path.to_path_buf(),
        })
    }
}

fn disk_format(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        _ => "raw",
    }
}

/// A path as a QEMU option value. Commas are QEMU's option separator and are
/// escaped by doubling.
fn p(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.contains([' ', '"', '\'']) || a.is_empty() {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch dir with empty stand-ins for the files a command line names.
    struct Scratch {
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            Scratch {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        fn file(&self, name: &str, len: u64) -> PathBuf {
            let path = self.dir.path().join(name);
            File::create(&path)
                .and_then(|f| f.set_len(len))
                .expect("scratch file");
            path
        }

        fn args(&self, builder: &VmBuilder, boot: &BootSource) -> Result<Vec<String>, VmError> {
            let d = self.dir.path();
            builder.qemu_args(
                "t",
                boot,
                d,
                &d.join("serial.sock"),
                &d.join("monitor.sock"),
            )
        }

        fn s(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }
    }

    fn kernel_boot(s: &Scratch) -> BootSource {
        BootSource::Kernel {
            kernel: s.file("vmlinuz", 1),
            initrd: s.file("initramfs.img", 1),
            append: "console=ttyS1,115200 quiet".into(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The generic machines' command lines, which every other test relies on.
    #[test]
    fn generic_kernel_boot_command_line_is_unchanged() {
        let s = Scratch::new();
        let boot = kernel_boot(&s);
        let args = s.args(&VmBuilder::new(Arch::X86_64), &boot).unwrap();
        let monitor = format!("unix:{},server=on,wait=off", s.s("monitor.sock"));
        let expected = strings(&[
            "-name",
            "t",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "512",
            "-smp",
            "1",
            "-M",
            "pc",
            "-kernel",
            &s.s("vmlinuz"),
            "-initrd",
            &s.s("initramfs.img"),
            "-append",
            "console=ttyS1,115200 quiet",
            "-nic",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            &monitor,
            "-parallel",
            "none",
        ]);
        assert_eq!(args, expected);

        let args = s
            .args(&VmBuilder::new(Arch::Aarch64).memory_mb(1024).smp(2), &boot)
            .unwrap();
        assert_eq!(
            args[7..15],
            strings(&[
                "-m",
                "1024",
                "-smp",
                "2",
                "-M",
                "virt",
                "-cpu",
                "cortex-a57"
            ])
        );
    }

    #[test]
    fn generic_arm64_uefi_cdrom_is_a_scsi_cd_behind_aavmf() {
        let s = Scratch::new();
        let code = s.file("code.fd", 1);
        let vars = s.file("vars.fd", 1);
        let iso = s.file("cloudos.iso", 1);
        let builder = VmBuilder::new(Arch::Aarch64)
            .firmware(Firmware::Uefi)
            .uefi_files(&code, &vars);
        let args = s.args(&builder, &BootSource::Cdrom(iso)).unwrap().join(" ");
        let expected = format!(
            "-m 512 -smp 1 -M virt -cpu cortex-a57 \
             -drive if=pflash,format=raw,unit=0,readonly=on,file={} \
             -drive if=pflash,format=raw,unit=1,file={} \
             -drive if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={} \
             -device virtio-scsi-pci,id=scsi0 -device scsi-cd,bus=scsi0.0,drive=cd0,bootindex=0 \
             -nic none -serial stdio",
            s.s("code.fd"),
            s.s("uefi-vars.fd"),
            s.s("cloudos.iso"),
        );
        assert!(args.contains(&expected), "{args}");
    }

    #[test]
    fn raspberry_pi_boots_kernel_and_dtb_with_its_sd_card_and_mini_uart() {
        let s = Scratch::new();
        let dtb = s.file("bcm2837-rpi-3-b.dtb", 1);
        let card = s.file("card.img", 1 << 30);
        let builder = VmBuilder::new(Arch::Aarch64)
            .machine(Machine::RaspberryPi3B)
            .dtb(&dtb)
            .sd_card(&card);
        let args = s.args(&builder, &kernel_boot(&s)).unwrap().join(" ");
        let expected = format!(
            "-no-reboot -m 1024 -smp 4 -M raspi3b \
             -kernel {} -initrd {} -append console=ttyS1,115200 quiet -dtb {} \
             -drive if=sd,format=raw,file={} \
             -nic none -serial null -serial stdio -monitor",
            s.s("vmlinuz"),
            s.s("initramfs.img"),
            s.s("bcm2837-rpi-3-b.dtb"),
            s.s("card.img"),
        );
        assert!(args.contains(&expected), "{args}");
        assert!(!args.contains("-cpu"), "{args}");

        // In socket mode the test's port is still the second one.
        let args = s
            .args(
                &builder.clone().serial(SerialMode::Socket),
                &kernel_boot(&s),
            )
            .unwrap()
            .join(" ");
        assert!(
            args.contains("-serial null -chardev socket,id=ser0,")
                && args.contains("-serial chardev:ser0"),
            "{args}"
        );
        // Asking for what the board has anyway is fine.
        s.args(&builder.memory_mb(1024).smp(4), &kernel_boot(&s))
            .unwrap();
    }

    #[test]
    fn raspberry_pi_refuses_what_the_board_cannot_do() {
        let s = Scratch::new();
        let pi = VmBuilder::new(Arch::Aarch64).machine(Machine::RaspberryPi3B);
        let kernel = kernel_boot(&s);
        let tap = GuestNetwork::Tap {
            netns: "n".into(),
            tap_name: "tap0".into(),
            mac: "52:54:00:00:00:01".into(),
        };
        let cases: Vec<(VmBuilder, BootSource, &str)> = vec![
            (
                VmBuilder::new(Arch::X86_64).machine(Machine::RaspberryPi3B),
                kernel.clone(),
                "run x86_64 guests",
            ),
            (pi.clone().memory_mb(512), kernel.clone(), "512 MB"),
            (pi.clone().smp(1), kernel.clone(), "1 CPUs"),
            (
                pi.clone().firmware(Firmware::Uefi),
                kernel.clone(),
                "boot UEFI",
            ),
            (pi.clone(), BootSource::Cdrom(s.file("x.iso", 1)), "no PCI"),
            (
                pi.clone().disk(s.file("disk.img", 1)),
                kernel.clone(),
                "virtio disks",
            ),
            (pi.clone().network(tap), kernel.clone(), "PCI network card"),
            (
                pi.clone().network(GuestNetwork::User { hostfwd: vec![] }),
                kernel.clone(),
                "PCI network card",
            ),
            (
                VmBuilder::new(Arch::Aarch64).sd_card(s.file("c.img", 1 << 20)),
                kernel.clone(),
                "SD card",
            ),
            (
                pi.clone().dtb(s.file("x.dtb", 1)),
                BootSource::Disk(s.file("d.img", 1)),
                "device tree",
            ),
        ];
        for (builder, boot, why) in cases {
            match s.args(&builder, &boot) {
                Err(e @ VmError::Unsupported { .. }) => {
                    assert!(e.to_string().contains(why), "{why:?} not in {e}")
                }
                other => panic!("{builder:?} with {boot:?}: expected a refusal, got {other:?}"),
            }
        }

        let odd = s.file("odd.img", 324 << 20);
        match s.args(&pi.sd_card(&odd), &kernel) {
            Err(VmError::SdCardSize { size, .. }) => assert_eq!(size, 324 << 20),
            other => panic!("expected an SD card size error, got {other:?}"),
        }
    }
}
