//! Coldplug: load the modules for the devices that exist at boot.
//!
//! Loading a driver can make new devices appear (the ACPI button driver makes
//! an input device that wants `evdev`; a USB host controller makes USB
//! devices), so the walk repeats until a pass loads nothing new.
//!
//! PID 1 runs it first with [`BOOT_DEFERRED`] and the storage drivers left
//! out: the drivers the boot and the services need, no more. A thread of PID 1
//! then loads the storage drivers (`blockdev::storage`), and the devices service
//! runs it again, with only the storage drivers left out, once it listens for
//! hot-plug events, so the deferred drivers load in the background instead of
//! holding up `nodeos ready`.

use std::path::Path;
use std::time::Instant;

use super::Loader;

/// The longest chain of "driver makes device" we follow at boot.
const MAX_PASSES: usize = 6;

/// Modules PID 1 does not wait for. `sr_mod` probes CD/DVD drives and spends
/// ~0.6 s on QEMU's (empty) IDE drive under TCG, with the module load blocked
/// all along; nothing at boot reads a CD (the OS is the initramfs, and the
/// data partition is never on `sr*`), so the devices service loads it later.
pub const BOOT_DEFERRED: &[&str] = &["sr_mod"];

#[derive(Debug, Default)]
pub struct ColdplugReport {
    pub loaded: Vec<String>,
    pub failures: Vec<String>,
    /// Modaliases skipped because every module they want is deferred.
    pub deferred: Vec<String>,
}

/// Loads the modules for the devices sysfs (mounted at `sys`) shows, except
/// those whose every matching module is in `defer`.
pub fn coldplug(loader: &Loader, sys: &Path, defer: &[&str]) -> ColdplugReport {
    let mut report = ColdplugReport::default();
    for pass in 1..=MAX_PASSES {
        let started = Instant::now();
        let mut aliases = Vec::new();
        collect_modaliases(sys, &mut aliases);
        aliases.sort();
        aliases.dedup();
        let walked = started.elapsed();
        let before = report.loaded.len();
        // One thread per device: a driver's init probes its hardware and
        // often sleeps doing so (ATA resets, PHY negotiation), so loading in
        // parallel overlaps those waits. A module two devices share is loaded
        // once: the kernel makes the second finit_module wait, then EEXIST.
        let mut wanted = Vec::new();
        for alias in aliases {
            let modules = loader.index().lookup(&alias);
            if modules.is_empty() {
                continue;
            }
            if modules.iter().all(|m| defer.contains(&m.as_str())) {
                if !report.deferred.contains(&alias) {
                    report.deferred.push(alias);
                }
                continue;
            }
            wanted.push(alias);
        }
        let matched = started.elapsed();
        let results: Vec<(String, Result<Vec<String>, super::loader::LoadError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = wanted
                    .iter()
                    .map(|alias| scope.spawn(move || (alias.clone(), loader.load_for_alias(alias))))
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
        for (alias, result) in results {
            match result {
                Ok(newly) => report.loaded.extend(newly),
                Err(e) => {
                    let line = format!("{alias}: {e}");
                    if !report.failures.contains(&line) {
                        report.failures.push(line);
                    }
                }
            }
        }
        log::debug!(
            "coldplug pass {pass}: walk {} ms, match {} ms, load {} ms, {} new modules",
            walked.as_millis(),
            (matched - walked).as_millis(),
            (started.elapsed() - matched).as_millis(),
            report.loaded.len() - before
        );
        // Loading a driver can make devices appear (a button driver's input
        // device wants evdev): walk again until a pass loads nothing new.
        // Devices that a driver probes later come as hot-plug events to the
        // devices service.
        if report.loaded.len() == before {
            break;
        }
    }
    report
}

/// Gives the calling thread the lowest CPU priority, for a coldplug that
/// nothing waits for: on a one-CPU machine it would otherwise take the CPU
/// from the services while they start (loading a module is CPU work in the
/// loading thread: the kernel copies, relocates and links it).
pub fn lower_this_threads_priority() {
    // SAFETY: setpriority has no memory effects; with PRIO_PROCESS and a
    // thread id, Linux sets the nice value of this thread only.
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) } != 0 {
        log::debug!(
            "cannot lower the coldplug thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The modaliases of the devices the kernel knows, read the way `udevadm
/// trigger` finds devices: every device of every bus, and the input devices,
/// which are class devices on no bus (the button driver's input device wants
/// `evdev`). No other class's devices carry a modalias, and asking each of the
/// hundred-odd tty, vc and mem devices for one cost ~20 ms a pass under TCG.
/// A full walk of /sys/devices reads every attribute directory too and cost
/// ~0.2 s a pass.
fn collect_modaliases(sys: &Path, out: &mut Vec<String>) {
    let buses = std::fs::read_dir(sys.join("bus"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|bus| (bus.path().join("devices"), true));
    let inputs = std::iter::once((sys.join("class/input"), false));
    for (dir, on_a_bus) in buses.chain(inputs) {
        let Ok(devices) = std::fs::read_dir(dir) else {
            continue;
        };
        for device in devices.flatten() {
            // The entries are symlinks into /sys/devices; following one
            // to read a file is safe (only walking them loops).
            let alias = match std::fs::read_to_string(device.path().join("modalias")) {
                Ok(text) => Some(text.trim().to_string()),
                // Some buses (mmc: an SD card's `mmc:block`) put the alias
                // only in the device's uevent. Only bus devices are asked:
                // most class devices have neither, and reading hundreds of
                // uevent files would slow every pass.
                Err(_) if on_a_bus => std::fs::read_to_string(device.path().join("uevent"))
                    .ok()
                    .and_then(|text| uevent_modalias(&text)),
                Err(_) => None,
            };
            if let Some(alias) = alias.filter(|a| !a.is_empty()) {
                out.push(alias);
            }
        }
    }
}

/// The `MODALIAS=` of a device's uevent file.
fn uevent_modalias(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("MODALIAS="))
        .map(|a| a.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modaliases_of_bus_and_class_devices() {
        let sys = std::env::temp_dir().join(format!("coldplug-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sys);
        let write = |path: &str, text: &str| {
            let path = sys.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "devices/pci0000:00/0000:00:01.1/modalias",
            "pci:v00008086d00007010\n",
        );
        write("devices/pci0000:00/0000:00:01.1/power/control", "auto\n");
        write(
            "devices/LNXPWRBN:00/input/input2/modalias",
            "input:b0019v0000\n",
        );
        write("devices/platform/serial8250/modalias", "\n");
        // An SD card: the mmc bus has no modalias file, only the uevent's.
        write(
            "devices/pci0000:00/0000:00:03.0/mmc_host/mmc0/mmc0:4567/uevent",
            "DRIVER=\nMMC_TYPE=SD\nMODALIAS=mmc:block\n",
        );
        // A tty is a class device: never read (input is the only class asked).
        write(
            "devices/virtual/tty/tty1/uevent",
            "MAJOR=4\nMODALIAS=never:read\n",
        );
        std::fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        std::fs::create_dir_all(sys.join("bus/platform/devices")).unwrap();
        std::fs::create_dir_all(sys.join("class/input")).unwrap();
        std::fs::create_dir_all(sys.join("bus/mmc/devices")).unwrap();
        std::fs::create_dir_all(sys.join("class/tty")).unwrap();
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(sys.join(target), sys.join(at)).unwrap();
        };
        link(
            "devices/pci0000:00/0000:00:01.1",
            "bus/pci/devices/0000:00:01.1",
        );
        link(
            "devices/platform/serial8250",
            "bus/platform/devices/serial8250",
        );
        link("devices/LNXPWRBN:00/input/input2", "class/input/input2");
        link(
            "devices/pci0000:00/0000:00:03.0/mmc_host/mmc0/mmc0:4567",
            "bus/mmc/devices/mmc0:4567",
        );
        link("devices/virtual/tty/tty1", "class/tty/tty1");
        let mut found = Vec::new();
        collect_modaliases(&sys, &mut found);
        found.sort();
        assert_eq!(
            found,
            ["input:b0019v0000", "mmc:block", "pci:v00008086d00007010"]
        );
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
