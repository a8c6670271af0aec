//! Which driver runs each network card and disk controller, as sysfs shows it.
//!
//! On a machine nobody has booted CloudOS on before, the first question is
//! "did it find my NIC and my disks, and with which driver?". `nodeos status`
//! answers it from this inventory. Reads sysfs only (and, for a disk's label,
//! the first bytes of the disk through `blockdev::labels`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One network interface backed by a device (virtual links have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    /// The kernel driver bound to the device (`e1000e`, `r8169`, `cdc_ether`).
    pub driver: String,
}

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    /// The driver of the controller it hangs off (`ahci`, `megaraid_sas`,
    /// `sdhci-pci`, `usb-storage`, `nvme`, `virtio_blk`).
    pub controller: Option<String>,
    /// File-system labels on the disk or its partitions, in partition order.
    pub labels: Vec<String>,
    /// `/dev/<disk>` and its partitions' device paths, in partition order.
    #[serde(skip)]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub nics: Vec<Nic>,
    pub disks: Vec<Disk>,
}

impl Inventory {
    /// The running machine's inventory (sysfs at /sys). Labels come from
    /// [`labels::known`]: this never reads a disk itself, so `status` cannot
    /// hang on a device that is slow to answer.
    pub fn read() -> Inventory {
        let sys = Path::new("/sys");
        let mut disks = disks(sys, |_| None);
        let devices: Vec<String> = disks
            .iter()
            .flat_map(|d| d.devices.iter().cloned())
            .collect();
        let known = labels::known(&devices);
        for disk in &mut disks {
            disk.labels = disk
                .devices
                .iter()
                .filter_map(|dev| known.get(dev).cloned().flatten())
                .collect();
        }
        Inventory {
            nics: nics(sys),
            disks,
        }
    }

    pub fn nic_driver(&self, name: &str) -> Option<&str> {
        self.nics
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.driver.as_str())
    }
}

/// Interfaces under `sys/class/net` whose `device` has a driver.
pub fn nics(sys: &Path) -> Vec<Nic> {
    let mut nics: Vec<Nic> = list(&sys.join("class/net"))
        .into_iter()
        .filter_map(|name| {
            let device = sys.join("class/net").join(&name).join("device");
            Some(Nic {
                driver: driver_of(&device)?,
                name,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// Block devices that are whole disks with media (size > 0), with their
/// controller's driver. `label_of` reads a label from `/dev/<name>`.
pub fn disks(sys: &Path, label_of: impl Fn(&str) -> Option<String>) -> Vec<Disk> {
    let class = sys.join("class/block");
    let mut disks = Vec::new();
    for name in list(&class) {
        let dir = class.join(&name);
        if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p))
            || dir.join("partition").exists()
        {
            continue;
        }
        let sectors: u64 = std::fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue; // an empty CD drive or card reader: nothing to read
        }
        let mut parts: Vec<String> = list(&dir)
            .into_iter()
            .filter(|p| p.starts_with(&name) && dir.join(p).join("partition").exists())
            .collect();
        parts.sort_by_key(|p| partition_number(&dir.join(p)));
        let devices: Vec<String> = std::iter::once(&name)
            .chain(parts.iter())
            .map(|dev| format!("/dev/{dev}"))
            .collect();
        let labels = devices.iter().filter_map(|dev| label_of(dev)).collect();
        disks.push(Disk {
            controller: controller_driver(&dir.join("device")),
            size_bytes: sectors * 512,
            labels,
            devices,
            name,
        });
    }
    disks
}

fn partition_number(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("partition"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The driver of the controller behind a block device's `device`: the
/// nearest device up the chain that sits on a bus a controller sits on (PCI,
/// USB, virtio, VMBus, Xen, platform). A SCSI disk's own driver (`sd`) says
/// nothing about the hardware, so SCSI and MMC levels are passed over.
pub fn controller_driver(device: &Path) -> Option<String> {
    let mut dir: PathBuf = std::fs::canonicalize(device).ok()?;
    loop {
        if let (Some(bus), Some(driver)) = (
            link_name(&dir.join("subsystem")),
            link_name(&dir.join("driver")),
        ) {
            if CONTROLLER_BUSES.contains(&bus.as_str()) {
                return Some(driver);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// Disk labels, read off the status path.
///
/// Reading a device's first bytes can block for as long as the device takes
/// to answer (a CD drive settling, a controller still resetting), and a
/// status request must not. So a labeller thread reads them, one at a time,
/// and status shows what it knew last.
mod labels {
    use std::collections::BTreeMap;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    #[derive(Default)]
    struct Cache {
        /// device -> label (None: read, no label we know). A BTreeMap: its
        /// `new` is const, so the cache is a plain static.
        labels: BTreeMap<String, Option<String>>,
        /// A labeller thread is reading devices.
        busy: bool,
    }

    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        labels: BTreeMap::new(),
        busy: false,
    });
    static DONE: Condvar = Condvar::new();

    /// How long a status request waits for a fresh read before it answers
    /// with what was known: long enough for disks that answer at once.
    const WAIT: Duration = Duration::from_millis(500);

    /// The labels known for `devices`, after starting a fresh read of them
    /// (unless one is still running) and waiting for it up to [`WAIT`].
    pub fn known(devices: &[String]) -> BTreeMap<String, Option<String>> {
        let Ok(mut cache) = CACHE.lock() else {
            return BTreeMap::new();
        };
        if !cache.busy {
            cache.busy = true;
            let list = devices.to_vec();
            let started = std::thread::Builder::new()
                .name("labels".into())
                .spawn(move || read_all(list));
            if started.is_err() {
                cache.busy = false;
            }
        }
        let (cache, _) = match DONE.wait_timeout_while(cache, WAIT, |c| c.busy) {
            Ok(r) => r,
            Err(_) => return BTreeMap::new(),
        };
        devices
            .iter()
            .filter_map(|d| cache.labels.get(d).map(|l| (d.clone(), l.clone())))
            .collect()
    }

    fn read_all(devices: Vec<String>) {
        for dev in devices {
            let label = crate::blockdev::labels::probe(&dev).map(|(_, label)| label);
            if let Ok(mut cache) = CACHE.lock() {
                cache.labels.insert(dev, label);
            }
        }
        if let Ok(mut cache) = CACHE.lock() {
            cache.busy = false;
        }
        DONE.notify_all();
    }
}

/// Buses whose devices are controllers (or the disk's own transport, as a
/// virtio disk is its own controller).
const CONTROLLER_BUSES: &[&str] = &["pci", "usb", "virtio", "vmbus", "xen", "platform"];

/// The driver bound to `device`, if any.
fn driver_of(device: &Path) -> Option<String> {
    link_name(&device.join("driver"))
}

/// The last component of a symbolic link's target (`driver` -> `…/e1000e`).
fn link_name(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree as the kernel lays it out for a MegaRAID disk, an NVMe
    /// disk, a virtio disk, an empty CD drive and two NICs.
    fn fake_sys() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        let mk = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        let ln = |target: &str, link: &str| {
            std::fs::create_dir_all(s.join(link).parent().unwrap()).unwrap();
            symlink(s.join(target), s.join(link)).unwrap();
        };
        for bus in ["pci", "scsi", "virtio", "nvme"] {
            mk(&format!("bus/{bus}"));
        }
        for drv in [
            "megaraid_sas",
            "sd",
            "virtio_blk",
            "virtio-pci",
            "nvme",
            "e1000e",
            "virtio_net",
        ] {
            mk(&format!("drivers/{drv}"));
        }
        // MegaRAID: pci -> host -> target -> scsi device -> block/sda (+ sda1)
        let pci = "devices/pci0000:00/0000:00:04.0";
        mk(pci);
        ln("bus/pci", &format!("{pci}/subsystem"));
        ln("drivers/megaraid_sas", &format!("{pci}/driver"));
        let sdev = format!("{pci}/host0/target0:2:0/0:2:0:0");
        mk(&sdev);
        ln("bus/scsi", &format!("{sdev}/subsystem"));
        ln("drivers/sd", &format!("{sdev}/driver"));
        mk(&format!("{sdev}/block/sda/sda1"));
        std::fs::write(s.join(format!("{sdev}/block/sda/size")), "131072\n").unwrap();
        std::fs::write(s.join(format!("{sdev}/block/sda/sda1/partition")), "1\n").unwrap();
        ln(&sdev, &format!("{sdev}/block/sda/device"));
        ln(&format!("{sdev}/block/sda"), "class/block/sda");
        ln(&format!("{sdev}/block/sda/sda1"), "class/block/sda1");
        // virtio disk: pci (virtio-pci) -> virtio0 (virtio_blk) -> block/vda
        let vpci = "devices/pci0000:00/0000:00:05.0";
        mk(vpci);
        ln("bus/pci", &format!("{vpci}/subsystem"));
        ln("drivers/virtio-pci", &format!("{vpci}/driver"));
        let v = format!("{vpci}/virtio0");
        mk(&format!("{v}/block/vda"));
        ln("bus/virtio", &format!("{v}/subsystem"));
        ln("drivers/virtio_blk", &format!("{v}/driver"));
        std::fs::write(s.join(format!("{v}/block/vda/size")), "2048\n").unwrap();
        ln(&v, &format!("{v}/block/vda/device"));
        ln(&format!("{v}/block/vda"), "class/block/vda");
        // empty CD drive
        mk("devices/virtual/block/sr0");
        std::fs::write(s.join("devices/virtual/block/sr0/size"), "0\n").unwrap();
        ln("devices/virtual/block/sr0", "class/block/sr0");
        // NICs: e1000e on PCI, virtio_net on virtio1, and lo without a device
        let npci = "devices/pci0000:00/0000:00:02.0";
        mk(&format!("{npci}/net/eth0"));
        ln("drivers/e1000e", &format!("{npci}/driver"));
        ln(npci, &format!("{npci}/net/eth0/device"));
        ln(&format!("{npci}/net/eth0"), "class/net/eth0");
        let vn = "devices/pci0000:00/0000:00:06.0/virtio1";
        mk(&format!("{vn}/net/eth1"));
        ln("drivers/virtio_net", &format!("{vn}/driver"));
        ln(vn, &format!("{vn}/net/eth1/device"));
        ln(&format!("{vn}/net/eth1"), "class/net/eth1");
        mk("devices/virtual/net/lo");
        ln("devices/virtual/net/lo", "class/net/lo");
        tmp
    }

    #[test]
    fn nics_are_named_with_their_drivers_and_virtual_links_left_out() {
        let sys = fake_sys();
        assert_eq!(
            nics(sys.path()),
            [
                Nic {
                    name: "eth0".into(),
                    driver: "e1000e".into()
                },
                Nic {
                    name: "eth1".into(),
                    driver: "virtio_net".into()
                },
            ]
        );
    }

    #[test]
    fn disks_show_their_controller_size_and_labels_and_empty_drives_are_left_out() {
        let sys = fake_sys();
        let found = disks(sys.path(), |dev| match dev {
            "/dev/sda1" => Some("CLOUDOS-DATA".into()),
            _ => None,
        });
        assert_eq!(
            found,
            [
                Disk {
                    name: "sda".into(),
                    size_bytes: 64 << 20,
                    controller: Some("megaraid_sas".into()),
                    labels: vec!["CLOUDOS-DATA".into()],
                    devices: vec!["/dev/sda".into(), "/dev/sda1".into()],
                },
                Disk {
                    name: "vda".into(),
                    size_bytes: 1 << 20,
                    controller: Some("virtio_blk".into()),
                    labels: vec![],
                    devices: vec!["/dev/vda".into()],
                },
            ]
        );
    }
}
