//! Test harness for CloudOS end-to-end tests.
//!
//! The tests boot the real images in QEMU (TCG: KVM hangs on the build hosts)
//! and judge them by what the guest prints on its serial console. Everything a
//! test starts — QEMU processes, network namespaces, temp files — is owned by a
//! value whose `Drop` cleans it up, so a failing (panicking) test leaves nothing
//! behind on the host.
//!
//! Modules, one job each:
//! - [`arch`]: which guest architecture and board, and the QEMU binary/machine for them.
//! - [`console`]: reads a serial stream and waits for lines on it.
//! - [`qemu`]: builds a QEMU command line, owns the process and its monitor.
//! - [`guests`]: at most two guests at a time on the machine, over every test process.
//! - [`netns`]: a private network namespace with a bridge and one tap per VM.
//! - [`nodes`]: hosts on that bridge, each in its own namespace (master and agents as processes).
//! - [`capture`]: what crosses a link of a test's namespace, captured as tcpdump would.
//! - [`artifacts`]: finds the built artifacts (images, binaries) under `out/`, the pinned
//!   inputs (the image's kernel) and other crates' test binaries.
//! - [`rpi`]: reads the Raspberry Pi SD card image (MBR, FAT files, ext4 superblock).
//! - [`screen`]: the VGA text screen read through the monitor, and keys typed with `sendkey`.
//! - [`checks`]: the install tests' keys, menus, blank and config disks, panic checks.
//! - [`guest`]: a booted guest watched from outside: console lines in order, its lease, pings, power-off.
//! - [`process`]: host processes a test starts (tied to it, output in files, stopped on drop).
//! - [`admin`]: the admin's `cloudos` CLI, run from the bridge's side, its answers parsed.
//! - [`lab`]: host-side masters and agents on the test bridge; the namespace lab.
//! - [`debian`]: a real Debian 12 with systemd, driven through its root shell.
//! - [`timeouts`]: scales timeouts for slow (loaded, emulated) hosts.
//! - [`bench`]: the benchmark tests' run count and medians.
//! - [`kernel_guest`]: a host-built test binary run in a guest booted with the image's own kernel.

pub mod admin;
pub mod arch;
pub mod artifacts;
pub mod bench;
pub mod browser;
pub mod capture;
pub mod checks;
pub mod console;
pub mod debian;
pub mod guest;
pub mod guests;
pub mod kernel_guest;
pub mod lab;
pub mod mitm;
mod monitor;
pub mod netns;
pub mod nodes;
pub mod process;
pub mod qemu;
pub mod registry;
pub mod rpi;
pub mod screen;
mod spawner;
pub mod timeouts;

pub use arch::{Arch, Machine};
pub use artifacts::ImageError;
pub use console::{Console, ConsoleError, Match, Pattern};
pub use debian::{DebianGuest, DebianGuestBuilder, GuestError};
pub use netns::{NetError, TestNet};
pub use nodes::NetHost;
pub use qemu::{
    BootSource, DiskController, Firmware, GuestNetwork, SerialMode, Vm, VmBuilder, VmError,
};
pub use timeouts::scaled;
