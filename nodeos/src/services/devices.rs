//! The devices service: loads the modules for devices that appear after boot
//! (hot-plug), from the kernel's uevents. PID 1 did the coldplug already,
//! leaving out the drivers the boot does not need (see
//! `kmod::coldplug::BOOT_DEFERRED`); a pass here after subscribing loads
//! those and catches devices that appeared in between. The storage
//! controllers are not ours: PID 1 probes them when it wants the disks
//! (`blockdev::storage`).

use std::os::fd::AsRawFd;

use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::kmod::{coldplug::coldplug, Loader, ModuleIndex};

pub fn run() -> anyhow::Result<()> {
    let release = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    let index = ModuleIndex::load(std::path::Path::new(&format!("/lib/modules/{release}")))?;
    let loader = std::sync::Arc::new(Loader::new(index));

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // Group 1: the kernel's own uevents (not udev's re-broadcasts).
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;

    // Ready once subscribed: from here on no device is missed, since one that
    // appears now either sends an event we read below or is found by the
    // pass that follows. The pass itself may take long (a CD drive's probe),
    // and the services that wait for us need only the drivers PID 1 loaded.
    crate::supervisor::ready::report();
    let background = loader.clone();
    std::thread::spawn(move || catch_up(&background));

    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ENOBUFS) => continue,
            Err(e) => return Err(e.into()),
        };
        let event = Uevent::parse(&buf[..n]);
        if event.action.as_deref() != Some("add") {
            continue;
        }
        let Some(alias) = event.modalias else {
            continue;
        };
        match loader.load_for_alias(&alias) {
            Ok(loaded) => {
                for module in loaded {
                    log::info!(
                        "loaded {module} for {}",
                        event.devpath.as_deref().unwrap_or("a new device")
                    );
                }
            }
            Err(e) => log::warn!("no driver loaded for {alias}: {e}"),
        }
    }
}

/// The coldplug pass after subscribing, with the drivers PID 1 deferred. It
/// runs at the lowest CPU priority: on a one-CPU machine it would otherwise
/// take the CPU from the other services while they start, and nothing waits
/// for it. Hot-plug events are still handled at normal priority meanwhile.
fn catch_up(loader: &Loader) {
    crate::kmod::coldplug::lower_this_threads_priority();
    // PID 1 probes the storage controllers itself (blockdev::storage).
    let report = coldplug(
        loader,
        std::path::Path::new("/sys"),
        crate::blockdev::storage::STORAGE_DRIVERS,
    );
    for module in &report.loaded {
        log::info!("loaded {module} for a device found at boot");
    }
    for failure in &report.failures {
        log::warn!("driver: {failure}");
    }
}

/// The parts of a kernel uevent we use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Uevent {
    pub action: Option<String>,
    pub devpath: Option<String>,
    pub modalias: Option<String>,
}

impl Uevent {
    /// A kernel uevent is `action@devpath` then `KEY=value` strings, NUL-separated.
    pub fn parse(bytes: &[u8]) -> Uevent {
        let mut event = Uevent::default();
        for field in bytes.split(|b| *b == 0).skip(1) {
            let Ok(text) = std::str::from_utf8(field) else {
                continue;
            };
            let Some((key, value)) = text.split_once('=') else {
                continue;
            };
            match key {
                "ACTION" => event.action = Some(value.to_string()),
                "DEVPATH" => event.devpath = Some(value.to_string()),
                "MODALIAS" => event.modalias = Some(value.to_string()),
                _ => {}
            }
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_uevent() {
        let raw = b"add@/devices/pci0000:00/0000:00:04.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\0SEQNUM=1234\0";
        let e = Uevent::parse(raw);
        assert_eq!(e.action.as_deref(), Some("add"));
        assert_eq!(
            e.devpath.as_deref(),
            Some("/devices/pci0000:00/0000:00:04.0")
        );
        assert!(e.modalias.unwrap().starts_with("pci:v00001AF4"));
    }

    #[test]
    fn garbage_is_an_empty_event() {
        assert_eq!(Uevent::parse(b"\xff\xfe\0=\0noequals\0"), Uevent::default());
    }
}
