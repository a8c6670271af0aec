//! The data partition: the ext4 file system labelled `CLOUDOS-DATA`, mounted
//! at /var/lib/cloudos and grown to the end of its disk (see `growpart`).
//! Without one (the live ISO) state lives in RAM.

use std::io::{Read, Seek, SeekFrom};

use nix::mount::{mount, MsFlags};

use crate::kmod::Loader;

pub const DATA_LABEL: &str = "CLOUDOS-DATA";
pub const DATA_DIR: &str = "/var/lib/cloudos";

/// Where the state lives, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStore {
    Disk(String),
    Memory,
}

impl std::fmt::Display for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataStore::Disk(dev) => write!(f, "{dev} ({DATA_LABEL})"),
            DataStore::Memory => f.write_str("memory (no CLOUDOS-DATA partition)"),
        }
    }
}

pub fn mount_data(loader: Option<&Loader>) -> DataStore {
    let _ = std::fs::create_dir_all(DATA_DIR);
    if let Some(device) = find_labelled(DATA_LABEL) {
        if let Some(loader) = loader {
            if let Err(e) = loader.load("ext4") {
                log::warn!("cannot load ext4: {e}");
            }
        }
        match mount(
            Some(device.as_str()),
            DATA_DIR,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        ) {
            Ok(()) => {
                grow(&device);
                return DataStore::Disk(device);
            }
            Err(e) => {
                log::error!("cannot mount {device} at {DATA_DIR}: {e}; keeping state in memory")
            }
        }
    }
    if let Err(e) = mount(
        Some("cloudos-data"),
        DATA_DIR,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    ) {
        log::error!("cannot mount a tmpfs at {DATA_DIR}: {e}");
    }
    DataStore::Memory
}

/// The device of the data partition, if a disk has one.
pub fn find_data() -> Option<String> {
    find_labelled(DATA_LABEL)
}

/// Moves the state from memory to the data partition on `device`, found
/// after the boot had started on memory (a disk that probed late). The
/// services are stopped, so nothing holds the memory store: what they kept
/// there is dropped, the disk's state is what counts.
pub fn adopt_late(device: &str, loader: Option<&Loader>) -> DataStore {
    if let Err(e) = nix::mount::umount2(DATA_DIR, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("cannot unmount the memory store at {DATA_DIR}: {e}");
    }
    let store = mount_data(loader);
    if store == DataStore::Memory {
        log::error!("the data partition {device} is gone again; state stays in memory");
    }
    store
}

/// Grows the mounted data partition into free space after it; a failure only
/// costs the space, never the data, so it is logged and boot goes on.
fn grow(device: &str) {
    const MIB: u64 = 1024 * 1024;
    match super::growpart::grow_to_fill(device, std::path::Path::new(DATA_DIR)) {
        Ok(Some(g)) => log::info!(
            "grew the data partition {} from {} MiB to {} MiB",
            g.device,
            g.old_bytes / MIB,
            g.new_bytes / MIB
        ),
        Ok(None) => {}
        Err(e) => log::warn!("cannot grow the data partition {device}: {e}"),
    }
}

/// The block device holding an ext4 file system with this label.
fn find_labelled(label: &str) -> Option<String> {
    find_by(|dev| read_ext4_label(dev).as_deref() == Some(label))
}

/// The block device holding a FAT file system with this volume label.
pub fn find_vfat_labelled(label: &str) -> Option<String> {
    find_by(|dev| read_fat_label(dev).as_deref() == Some(label))
}

/// The first block device (in name order) for which `matches` says yes. CD drives are
/// skipped: state is never on one, and reading an empty one stalls.
fn find_by(matches: impl Fn(&str) -> bool) -> Option<String> {
    block_devices()
        .into_iter()
        .filter(|dev| !dev.starts_with("/dev/sr"))
        .find(|dev| matches(dev))
}

/// Every block device that can hold a file system (`/dev/<name>`, loop and RAM disks
/// left out), in name order: whole disks before their partitions.
pub fn block_devices() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
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

fn read_fat_label(device: &str) -> Option<String> {
    let mut file = std::fs::File::open(device).ok()?;
    let mut boot_sector = [0u8; 512];
    file.read_exact(&mut boot_sector).ok()?;
    fat_label(&boot_sector)
}

/// The volume label in a FAT boot sector (FAT32's at 0x47, FAT12/16's at 0x2B),
/// identified by the file-system type string next to it.
pub fn fat_label(boot_sector: &[u8]) -> Option<String> {
    if boot_sector.len() < 512 || boot_sector[510..512] != [0x55, 0xAA] {
        return None;
    }
    let at = if &boot_sector[82..87] == b"FAT32" {
        71
    } else if &boot_sector[54..57] == b"FAT" {
        43
    } else {
        return None;
    };
    let label = std::str::from_utf8(&boot_sector[at..at + 11])
        .ok()?
        .trim_end();
    (!label.is_empty() && label != "NO NAME").then(|| label.to_string())
}

fn read_ext4_label(device: &str) -> Option<String> {
    let mut file = std::fs::File::open(device).ok()?;
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(1024)).ok()?;
    file.read_exact(&mut superblock).ok()?;
    ext4_label(&superblock)
}

/// The volume label of an ext2/3/4 superblock (the 1024 bytes at offset 1024).
pub fn ext4_label(superblock: &[u8]) -> Option<String> {
    const MAGIC_OFFSET: usize = 0x38;
    const LABEL_OFFSET: usize = 0x78;
    if superblock.len() < LABEL_OFFSET + 16 {
        return None;
    }
    if superblock[MAGIC_OFFSET..MAGIC_OFFSET + 2] != [0x53, 0xEF] {
        return None;
    }
    let raw = &superblock[LABEL_OFFSET..LABEL_OFFSET + 16];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    std::str::from_utf8(&raw[..end]).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fat32_and_fat16_labels() {
        let mut bs = vec![0u8; 512];
        bs[510] = 0x55;
        bs[511] = 0xAA;
        assert_eq!(fat_label(&bs), None);
        bs[82..90].copy_from_slice(b"FAT32   ");
        bs[71..82].copy_from_slice(b"CLOUDOS-ESP");
        assert_eq!(fat_label(&bs).as_deref(), Some("CLOUDOS-ESP"));
        let mut bs16 = vec![0u8; 512];
        bs16[510] = 0x55;
        bs16[511] = 0xAA;
        bs16[54..62].copy_from_slice(b"FAT16   ");
        bs16[43..54].copy_from_slice(b"CLOUDOS-CFG");
        assert_eq!(fat_label(&bs16).as_deref(), Some("CLOUDOS-CFG"));
        bs16[43..54].copy_from_slice(b"NO NAME    ");
        assert_eq!(fat_label(&bs16), None);
    }

    #[test]
    fn reads_label_only_with_the_magic() {
        let mut sb = vec![0u8; 1024];
        sb[0x78..0x78 + 12].copy_from_slice(b"CLOUDOS-DATA");
        assert_eq!(ext4_label(&sb), None);
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        assert_eq!(ext4_label(&sb).as_deref(), Some("CLOUDOS-DATA"));
        assert_eq!(ext4_label(&sb[..100]), None);
    }
}
