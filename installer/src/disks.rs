//! The machine's disks as sysfs shows them, and whether one may be installed to.
//!
//! Reads only: `/sys/block/*` (a root passed in, so tests use a fake tree) and nothing under
//! `/dev`. Deciding that a disk is acceptable lives here too ([`check_target`]), so the
//! wizard's list and the unattended install refuse the same disks for the same reasons.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use cloudos_cluster::units::format_bytes;

use crate::plan::{MIN_DISK_BYTES, SECTOR_SIZE};

/// Where sysfs is mounted on a running system.
pub const SYSFS: &str = "/sys";

/// One whole disk (never a partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The kernel's name, as in `vda`, `sda`, `nvme0n1`, `mmcblk0`.
    pub name: String,
    /// `/dev/<name>`.
    pub path: String,
    pub size_bytes: u64,
    /// Vendor and model, when the device reports them (virtio disks do not).
    pub model: Option<String>,
    pub bus: Bus,
    pub removable: bool,
    pub read_only: bool,
    /// Bytes per logical sector: 512 on nearly every disk, 4096 on "4Kn" ones.
    pub logical_block_size: u64,
}

/// How a disk is attached, read from where its device sits in the sysfs tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Sata,
    Nvme,
    Usb,
    Mmc,
    Scsi,
    Unknown,
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bus::Virtio => "virtio",
            Bus::Sata => "sata",
            Bus::Nvme => "nvme",
            Bus::Usb => "usb",
            Bus::Mmc => "mmc",
            Bus::Scsi => "scsi",
            Bus::Unknown => "unknown bus",
        })
    }
}

/// Why the disks could not be listed at all.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot list disks in {dir}: {source}; is sysfs mounted?")]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a disk may not be installed to. The text is shown as is, next to the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskRefusal {
    #[error(
        "{path} is a disk of {size}, too small: CloudOS needs at least {min}",
        size = format_bytes(*size_bytes),
        min = format_bytes(MIN_DISK_BYTES)
    )]
    TooSmall { path: String, size_bytes: u64 },
    #[error("{path} is read-only (write-protected); choose another disk")]
    ReadOnly { path: String },
    #[error("{path} holds the medium this installer booted from; choose another disk")]
    BootMedium { path: String },
    #[error(
        "{path} has {size}-byte sectors; the CloudOS disk layout is made for {SECTOR_SIZE}-byte sectors"
    )]
    SectorSize { path: String, size: u64 },
    #[error("there is no disk {path}; the disks here are: {available}")]
    NotFound { path: String, available: String },
}

impl Disk {
    /// One line for a list: path, size, bus, model.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{:<14} {:>10}  {:<6}  {}",
            self.path,
            format_bytes(self.size_bytes),
            self.bus,
            self.model.as_deref().unwrap_or("-")
        );
        if self.removable {
            line.push_str("  (removable)");
        }
        line
    }
}

/// Lists the disks under `<sysfs>/block`, sorted by name. Devices that are never install
/// targets (loop, RAM, zram, optical, device-mapper, md, empty card readers) are left out.
pub fn list(sysfs: &Path) -> Result<Vec<Disk>, DiskError> {
    let dir = sysfs.join("block");
    let entries = fs::read_dir(&dir).map_err(|source| DiskError::List {
        dir: dir.clone(),
        source,
    })?;
    let root = fs::canonicalize(sysfs).unwrap_or_else(|_| sysfs.to_path_buf());
    let mut disks: Vec<Disk> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            if skipped(&name) {
                return None;
            }
            read_disk(&root, &entry.path(), name)
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// Names of block devices that are not disks one installs to.
fn skipped(name: &str) -> bool {
    const PREFIXES: &[&str] = &["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"];
    let mmc_hw_partition =
        name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb"));
    PREFIXES.iter().any(|p| name.starts_with(p)) || mmc_hw_partition
}

fn read_disk(root: &Path, dir: &Path, name: String) -> Option<Disk> {
    let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
    let sectors: u64 = read("size")?.trim().parse().ok()?;
    // A card reader or optical-style slot with no medium in it.
    if sectors == 0 {
        return None;
    }
    let flag = |file: &str| read(file).is_some_and(|v| v.trim() == "1");
    let device = dir.join("device");
    let text = |file: &str| {
        fs::read_to_string(device.join(file))
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    // "ATA" in the vendor field names the bus, not a maker; virtio's is a PCI id (0x1af4).
    let is_a_name = |v: &String| v != "ATA" && !v.starts_with("0x");
    let vendor = text("vendor").filter(is_a_name);
    let model = text("model").or_else(|| text("name")).filter(is_a_name);
    let model = match (vendor, model) {
        (Some(v), Some(m)) if !m.starts_with(&v) => Some(format!("{v} {m}")),
        (v, m) => m.or(v),
    };
    let bus = fs::canonicalize(&device)
        .map(|resolved| bus_of(resolved.strip_prefix(root).unwrap_or(&resolved), &name))
        .unwrap_or(Bus::Unknown);
    Some(Disk {
        path: format!("/dev/{name}"),
        size_bytes: sectors.saturating_mul(512),
        model,
        bus,
        removable: flag("removable"),
        read_only: flag("ro"),
        logical_block_size: read("queue/logical_block_size")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(SECTOR_SIZE),
        name,
    })
}

/// The bus, from the device's place in `/sys/devices`: a USB stick's SCSI disk sits below a
/// `usbN` node, a SATA disk below `ataN`, and so on. The outermost transport wins, so a
/// USB-attached disk is "usb" even though it speaks SCSI.
fn bus_of(device: &Path, name: &str) -> Bus {
    let parts: Vec<&str> = device
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let numbered = |prefix: &str| {
        parts.iter().any(|p| {
            p.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if numbered("usb") {
        Bus::Usb
    } else if numbered("nvme") || name.starts_with("nvme") {
        Bus::Nvme
    } else if numbered("mmc") || parts.iter().any(|p| p.starts_with("mmc_host")) {
        Bus::Mmc
    } else if numbered("ata") {
        Bus::Sata
    } else if numbered("virtio") && !parts.iter().any(|p| p.starts_with("target")) {
        Bus::Virtio
    } else if parts
        .iter()
        .any(|p| p.starts_with("target") || p.starts_with("host"))
    {
        // virtio-scsi, SAS and other SCSI hosts.
        Bus::Scsi
    } else {
        Bus::Unknown
    }
}

/// Whether `disk` may be installed to. `boot_medium` is the kernel name of the device the
/// live system was started from (`sr0`, `sdb` or a partition such as `sdb1`), if known.
pub fn check_target(disk: &Disk, boot_medium: Option<&str>) -> Result<(), DiskRefusal> {
    let path = || disk.path.clone();
    if boot_medium.is_some_and(|medium| holds(&disk.name, medium)) {
        return Err(DiskRefusal::BootMedium { path: path() });
    }
    if disk.read_only {
        return Err(DiskRefusal::ReadOnly { path: path() });
    }
    if disk.logical_block_size != SECTOR_SIZE {
        return Err(DiskRefusal::SectorSize {
            path: path(),
            size: disk.logical_block_size,
        });
    }
    if disk.size_bytes < MIN_DISK_BYTES {
        return Err(DiskRefusal::TooSmall {
            path: path(),
            size_bytes: disk.size_bytes,
        });
    }
    Ok(())
}

/// Whether the device `medium` is the disk `disk` or one of its partitions (`sdb1` of
/// `sdb`, `nvme0n1p2` of `nvme0n1`).
fn holds(disk: &str, medium: &str) -> bool {
    let medium = medium.trim().trim_start_matches("/dev/");
    let Some(rest) = medium.strip_prefix(disk) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ends_in_digit = disk.bytes().last().is_some_and(|b| b.is_ascii_digit());
    rest.is_empty()
        || (ends_in_digit && rest.strip_prefix('p').is_some_and(digits))
        || (!ends_in_digit && digits(rest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(crate) const GIB: u64 = 1 << 30;

    /// A disk as tests need it: 512-byte sectors, writable, fixed.
    pub(crate) fn disk(name: &str, size_bytes: u64) -> Disk {
        Disk {
            name: name.into(),
            path: format!("/dev/{name}"),
            size_bytes,
            model: None,
            bus: Bus::Virtio,
            removable: false,
            read_only: false,
            logical_block_size: 512,
        }
    }

    /// Adds `block/<name>` with a `device` link to `devices/<device>` holding `files`.
    fn add(sys: &Path, name: &str, sectors: u64, device: &str, files: &[(&str, &str)]) {
        let block = sys.join("block").join(name);
        fs::create_dir_all(block.join("queue")).unwrap();
        fs::write(block.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(block.join("removable"), "0\n").unwrap();
        fs::write(block.join("ro"), "0\n").unwrap();
        fs::write(block.join("queue/logical_block_size"), "512\n").unwrap();
        let dev = sys.join("devices").join(device);
        fs::create_dir_all(&dev).unwrap();
        for (file, text) in files {
            let path = match file.strip_prefix("../") {
                Some(in_block) => block.join(in_block),
                None => dev.join(file),
            };
            fs::write(path, text).unwrap();
        }
        symlink(&dev, block.join("device")).unwrap();
    }

    #[test]
    fn lists_a_fake_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        let gib = 2 * 1024 * 1024; // sectors
        add(
            sys,
            "vda",
            20 * gib,
            "pci0000:00/0000:00:04.0/virtio1",
            &[("vendor", "0x1af4\n")],
        );
        add(
            sys,
            "sda",
            100 * gib,
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
            &[("vendor", "ATA     \n"), ("model", "Samsung SSD 860 \n")],
        );
        add(
            sys,
            "sdb",
            gib,
            "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0",
            &[
                ("vendor", "SanDisk \n"),
                ("model", "Cruzer\n"),
                ("../removable", "1\n"),
                ("../ro", "1\n"),
            ],
        );
        add(
            sys,
            "nvme0n1",
            512 * gib,
            "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0",
            &[
                ("model", "WDC PC SN730\n"),
                ("../queue/logical_block_size", "4096\n"),
            ],
        );
        add(
            sys,
            "mmcblk0",
            32 * gib,
            "platform/fe340000.mmc/mmc_host/mmc0/mmc0:0001",
            &[("name", "SD32G\n")],
        );
        add(
            sys,
            "sdc",
            8 * gib,
            "pci0000:00/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0",
            &[("vendor", "QEMU    \n"), ("model", "QEMU HARDDISK   \n")],
        );
        for skipped in [
            "loop0",
            "ram0",
            "zram0",
            "sr0",
            "dm-0",
            "md127",
            "mmcblk0boot0",
        ] {
            add(sys, skipped, 20 * gib, &format!("virtual/{skipped}"), &[]);
        }
        add(
            sys,
            "sdd",
            0,
            "pci0000:00/0000:00:14.0/usb2/2-2/host7/target7:0:0/7:0:0:0",
            &[],
        );

        let disks = list(sys).expect("list");
        type Row<'a> = (&'a str, u64, Option<&'a str>, Bus, bool, bool, u64);
        let summary: Vec<Row> = disks
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.size_bytes / GIB,
                    d.model.as_deref(),
                    d.bus,
                    d.removable,
                    d.read_only,
                    d.logical_block_size,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("mmcblk0", 32, Some("SD32G"), Bus::Mmc, false, false, 512),
                (
                    "nvme0n1",
                    512,
                    Some("WDC PC SN730"),
                    Bus::Nvme,
                    false,
                    false,
                    4096
                ),
                (
                    "sda",
                    100,
                    Some("Samsung SSD 860"),
                    Bus::Sata,
                    false,
                    false,
                    512
                ),
                ("sdb", 1, Some("SanDisk Cruzer"), Bus::Usb, true, true, 512),
                (
                    "sdc",
                    8,
                    Some("QEMU HARDDISK"),
                    Bus::Scsi,
                    false,
                    false,
                    512
                ),
                ("vda", 20, None, Bus::Virtio, false, false, 512),
            ]
        );
        assert_eq!(disks[5].path, "/dev/vda");
        assert_eq!(disks[5].size_bytes, 20 * GIB);
        assert!(
            disks[5].describe().contains("20Gi"),
            "{}",
            disks[5].describe()
        );
    }

    #[test]
    fn a_missing_sysfs_says_so() {
        let err = list(Path::new("/nonexistent/sys"))
            .expect_err("no sysfs")
            .to_string();
        assert!(
            err.contains("/nonexistent/sys/block") && err.contains("sysfs"),
            "{err}"
        );
    }

    #[test]
    fn refusals() {
        let ok = disk("vda", 20 * GIB);
        assert_eq!(check_target(&ok, Some("sr0")), Ok(()));
        assert_eq!(check_target(&ok, None), Ok(()));

        let small = disk("vdb", GIB);
        let err = check_target(&small, None)
            .expect_err("too small")
            .to_string();
        assert!(err.contains("1Gi") && err.contains("4Gi"), "{err}");

        let just = disk("vdb", MIN_DISK_BYTES);
        assert_eq!(check_target(&just, None), Ok(()));

        let ro = Disk {
            read_only: true,
            ..ok.clone()
        };
        assert_eq!(
            check_target(&ro, None),
            Err(DiskRefusal::ReadOnly {
                path: "/dev/vda".into()
            })
        );
        let four_k = Disk {
            logical_block_size: 4096,
            ..ok.clone()
        };
        assert!(check_target(&four_k, None)
            .expect_err("4Kn")
            .to_string()
            .contains("4096-byte sectors"));

        for medium in ["vda", "/dev/vda", "vda1"] {
            let err = check_target(&ok, Some(medium))
                .expect_err(medium)
                .to_string();
            assert!(err.contains("booted from"), "{medium}: {err}");
        }
        assert_eq!(check_target(&ok, Some("vdaa")), Ok(()));
        let nvme = disk("nvme0n1", 20 * GIB);
        assert!(check_target(&nvme, Some("nvme0n1p2")).is_err());
        assert_eq!(check_target(&nvme, Some("nvme0n10")), Ok(()));
        assert_eq!(
            check_target(&disk("nvme0n10", 20 * GIB), Some("nvme0n1")),
            Ok(())
        );
    }
}
