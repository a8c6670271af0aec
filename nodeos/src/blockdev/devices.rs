//! The machine's block devices as the kernel lists them in sysfs (`/sys/class/block`):
//! which there are, which disk a partition is on, its number and the disk's size, and
//! the device nodes devtmpfs makes for them.
//!
//! Reads sysfs and looks for nodes only; nothing here opens a device. What a device
//! holds is `labels`' and `ext4`'s; telling the kernel about partitions is `blkpg`'s.
//! The sysfs directory is a parameter wherever a test needs a fake tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel lists every block device, disks and partitions alike.
pub const CLASS_BLOCK: &str = "/sys/class/block";

#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: &'static str },
}

/// Every block device that can hold a file system (`/dev/<name>`, loop and RAM disks
/// left out), in name order: whole disks before their partitions.
pub fn block_devices() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(CLASS_BLOCK) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("/dev/{n}")).collect()
}

/// What sysfs says about a partition (`mmcblk0p2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number in its disk's table (the 2 of `mmcblk0p2`).
    pub number: u32,
    /// The kernel name of its disk (`mmcblk0`).
    pub disk: String,
    /// The disk's size in 512-byte sectors (sysfs counts in those whatever the disk's).
    pub disk_sectors: u64,
}

/// The partition `name` (a kernel name, as in `mmcblk0p2`) under `class_block`;
/// `Ok(None)` when it is a whole disk.
pub fn partition(class_block: &Path, name: &str) -> Result<Option<Partition>, SysfsError> {
    let sys = class_block.join(name);
    let partition_file = sys.join("partition");
    if !partition_file.exists() {
        return Ok(None);
    }
    let number = read_number(&partition_file)? as u32;
    let (disk_dir, disk) = parent_disk(&sys)?;
    let disk_sectors = read_number(&disk_dir.join("size"))?;
    Ok(Some(Partition {
        number,
        disk,
        disk_sectors,
    }))
}

/// The disk a partition belongs to (`mmcblk0p2` → `mmcblk0`); `None` for a whole disk.
pub fn disk_of(class_block: &Path, name: &str) -> Option<String> {
    let sys = class_block.join(name);
    if !sys.join("partition").exists() {
        return None;
    }
    parent_disk(&sys).ok().map(|(_, disk)| disk)
}

/// The sysfs directory and kernel name of the disk holding the partition at `sys`:
/// `/sys/class/block/<part>` links into `…/block/<disk>/<part>`.
fn parent_disk(sys: &Path) -> Result<(PathBuf, String), SysfsError> {
    let real = std::fs::canonicalize(sys).map_err(|source| SysfsError::Io {
        action: "resolving",
        path: sys.to_path_buf(),
        source,
    })?;
    let no_disk = || SysfsError::Malformed {
        path: real.clone(),
        what: "no parent disk",
    };
    let disk_dir = real.parent().ok_or_else(no_disk)?;
    let disk = disk_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(no_disk)?;
    Ok((disk_dir.to_path_buf(), disk))
}

fn read_number(path: &Path) -> Result<u64, SysfsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SysfsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| SysfsError::Malformed {
        path: path.to_path_buf(),
        what: "not a number",
    })
}

/// The device node of partition `number` of `disk` (`/dev/vda` → `/dev/vda3`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p3`).
pub fn partition_path(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// Waits until devtmpfs shows `path` (it appears shortly after BLKPG adds it).
pub fn wait_for_node(path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if Path::new(path).exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_follow_the_kernels_rule() {
        assert_eq!(partition_path("/dev/vda", 3), "/dev/vda3");
        assert_eq!(partition_path("/dev/sdb", 2), "/dev/sdb2");
        assert_eq!(partition_path("/dev/nvme0n1", 3), "/dev/nvme0n1p3");
        assert_eq!(partition_path("/dev/mmcblk0", 1), "/dev/mmcblk0p1");
    }

    /// A sysfs tree with an SD card of 2 GiB and its partition 2, linked from class/block
    /// as the kernel links them.
    fn sd_card_sysfs(root: &Path) -> PathBuf {
        let disk = root.join("devices/mmc/block/mmcblk0");
        std::fs::create_dir_all(disk.join("mmcblk0p2")).expect("sysfs");
        std::fs::write(disk.join("size"), "4194304\n").expect("sysfs");
        std::fs::write(disk.join("mmcblk0p2/partition"), "2\n").expect("sysfs");
        let class = root.join("class/block");
        std::fs::create_dir_all(&class).expect("sysfs");
        std::os::unix::fs::symlink(disk.join("mmcblk0p2"), class.join("mmcblk0p2")).expect("link");
        std::os::unix::fs::symlink(&disk, class.join("mmcblk0")).expect("link");
        class
    }

    #[test]
    fn a_partition_names_its_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let class = sd_card_sysfs(dir.path());
        assert_eq!(disk_of(&class, "mmcblk0p2").as_deref(), Some("mmcblk0"));
        assert_eq!(disk_of(&class, "mmcblk0"), None);
        assert_eq!(disk_of(&class, "sda1"), None);
    }

    #[test]
    fn a_partition_has_a_number_and_its_disk_a_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let class = sd_card_sysfs(dir.path());
        assert_eq!(
            partition(&class, "mmcblk0p2").expect("sysfs"),
            Some(Partition {
                number: 2,
                disk: "mmcblk0".into(),
                disk_sectors: 4194304,
            })
        );
        assert_eq!(partition(&class, "mmcblk0").expect("sysfs"), None);

        let disk = dir.path().join("devices/mmc/block/mmcblk0");
        std::fs::write(disk.join("size"), "lots\n").expect("sysfs");
        let err = partition(&class, "mmcblk0p2").expect_err("a size that is no number");
        assert!(err.to_string().ends_with("size: not a number"), "{err}");
    }
}
