//! Storage controllers probe in the background, and the boot waits for them
//! only where it needs the disks.
//!
//! An IDE/SATA controller's driver resets every port when it loads (libata
//! sleeps 150 ms after each reset, even on an empty port: about 0.3 s on
//! QEMU's PIIX under TCG), and NVMe resets its controller. `finit_module`
//! returns only when that probing is done, and so does every other module
//! load that ends meanwhile: the kernel waits for all asynchronous probing
//! at the end of each module's init. So PID 1 loads every other driver
//! first, then the storage drivers on a thread of their own, and boots on.
//!
//! When: a boot that must find its data partition (an installed disk, an
//! install or setup boot) starts the probe at once and waits for
//! [`wait_settled`]. A live boot starts it once its services are ready, so
//! that neither the module loads nor the kernel's probe threads take the CPU
//! from them, and then looks for a data partition again (`init::supervise`).
//! The look for an unattended-install disk waits for it too.
//!
//! Owns when the storage drivers load and the wait for their disks; which module a
//! device needs and loading it are `kmod`'s, and what is on the disks is not read here.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::kmod::coldplug::{coldplug, BOOT_DEFERRED};
use crate::kmod::Loader;

/// Drivers whose probe waits on the hardware: storage host controllers.
/// Their disks (and `sd_mod` for them) come from the background thread.
pub const STORAGE_DRIVERS: &[&str] = &["ata_piix", "ahci", "nvme"];

/// How long a boot that must find its data partition waits for the storage
/// probe, and how long the looks that follow a live boot's probe wait for it.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SCSI disk's driver may take to bind after its controller is
/// probed (sd probes asynchronously and reads the partition table).
const DISK_BIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once the storage drivers are loaded and their disks are bound.
static SETTLED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The probe runs once per boot, whoever asks first.
static STARTED: AtomicBool = AtomicBool::new(false);

/// What PID 1's first coldplug leaves out: the deferred drivers and the
/// storage drivers, which [`probe_in_background`] loads.
pub fn boot_skips() -> Vec<&'static str> {
    BOOT_DEFERRED
        .iter()
        .chain(STORAGE_DRIVERS)
        .copied()
        .collect()
}

/// Loads the storage drivers (and what their disks ask for) on a thread of
/// its own; [`wait_settled`] returns once that is done. Only the first call
/// starts it. Without a module index (every driver built in) there is
/// nothing to wait for.
pub fn probe_in_background(loader: Option<Arc<Loader>>) {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let Some(loader) = loader else {
        mark_settled();
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("storage-probe".into())
        .spawn(move || {
            // A boot that waits for the disks has nothing else to run; a live
            // boot's services start meanwhile and come first.
            crate::kmod::coldplug::lower_this_threads_priority();
            let started = Instant::now();
            let report = coldplug(&loader, Path::new("/sys"), BOOT_DEFERRED);
            if !report.loaded.is_empty() {
                log::info!("loaded storage drivers: {}", report.loaded.join(" "));
            }
            for failure in &report.failures {
                log::warn!("driver: {failure}");
            }
            if !wait_for_disk_drivers(Path::new("/sys"), DISK_BIND_TIMEOUT) {
                log::warn!(
                    "a disk still has no driver after {}s; it may be missed at boot",
                    DISK_BIND_TIMEOUT.as_secs()
                );
            }
            log::debug!("storage settled after {} ms", started.elapsed().as_millis());
            mark_settled();
        });
    if let Err(e) = spawned {
        log::error!("cannot start the storage probe thread: {e}");
        mark_settled();
    }
}

/// Waits until the storage drivers have probed; false on timeout.
pub fn wait_settled(timeout: Duration) -> bool {
    let (lock, changed) = &SETTLED;
    let Ok(settled) = lock.lock() else {
        return true;
    };
    match changed.wait_timeout_while(settled, timeout, |settled| !*settled) {
        Ok((settled, _)) => *settled,
        Err(_) => true,
    }
}

fn mark_settled() {
    let (lock, changed) = &SETTLED;
    if let Ok(mut settled) = lock.lock() {
        *settled = true;
    }
    changed.notify_all();
}

/// Waits until every SCSI disk under `sys` has its driver. Another process
/// (the devices service, on the disk's uevent) may have loaded `sd_mod`
/// first, in which case our load returned before sd's asynchronous probe
/// bound the disk; the `driver` link appears once it has.
fn wait_for_disk_drivers(sys: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if unbound_disks(sys).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SCSI devices of a type `sd` drives (disk, optical memory, RBC) that have
/// no driver yet. CD drives (type 5) are left to the deferred `sr_mod`.
fn unbound_disks(sys: &Path) -> Vec<String> {
    let Ok(devices) = std::fs::read_dir(sys.join("bus/scsi/devices")) else {
        return Vec::new();
    };
    devices
        .flatten()
        .filter(|d| {
            let kind = std::fs::read_to_string(d.path().join("type")).unwrap_or_default();
            matches!(kind.trim(), "0" | "7" | "14") && !d.path().join("driver").exists()
        })
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_without_a_driver_are_waited_for_but_cd_drives_are_not() {
        let sys = std::env::temp_dir().join(format!("storage-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sys);
        let device = |name: &str, kind: &str, bound: bool| {
            let dir = sys.join("bus/scsi/devices").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
            if bound {
                std::fs::create_dir_all(dir.join("driver")).unwrap();
            }
        };
        device("0:0:0:0", "0", true);
        device("1:0:0:0", "5", false);
        device("host0", "", false);
        assert!(unbound_disks(&sys).is_empty());
        assert!(wait_for_disk_drivers(&sys, Duration::ZERO));

        device("2:0:0:0", "0", false);
        assert_eq!(unbound_disks(&sys), ["2:0:0:0"]);
        assert!(!wait_for_disk_drivers(&sys, Duration::from_millis(30)));
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn the_first_coldplug_skips_the_storage_and_deferred_drivers() {
        let skips = boot_skips();
        for driver in STORAGE_DRIVERS.iter().chain(BOOT_DEFERRED) {
            assert!(skips.contains(driver), "{driver}");
        }
        assert!(
            !skips.contains(&"virtio_blk"),
            "virtio disks are found at once"
        );
    }
}
