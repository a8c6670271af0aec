//! Grows the data partition to the end of its disk, with its ext4 file system.
//!
//! The Raspberry Pi SD image ships a 64 MiB data partition so the image stays
//! small; the card it is written to is bigger. At boot, once the partition is
//! mounted, nodeos grows the partition (MBR only; GPT disks are left alone) and
//! then the file system, online:
//!
//! 1. the partition's new size goes into the MBR (sector 0), synced;
//! 2. the kernel is told with `BLKPG_RESIZE_PARTITION` (no re-read of a disk in use);
//! 3. ext4 grows with `EXT4_IOC_RESIZE_FS`, the ioctl resize2fs itself uses.
//!
//! Each step is checked from what is on disk, not from a flag, so a power cut
//! between them is finished at the next boot: a partition larger than its file
//! system only gets step 3.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
/// Partitions end on a MiB boundary, as partitioning tools align them.
const ALIGN_SECTORS: u64 = 2048;
/// Less free space than this after the partition is not worth a resize.
const MIN_GROWTH_SECTORS: u64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Sysfs { path: PathBuf, what: &'static str },
    #[error("telling the kernel the new size of partition {partition} failed: {0}", partition = .1)]
    Blkpg(nix::Error, u32),
    #[error("growing the ext4 file system at {path} failed: {source}")]
    Resize { path: PathBuf, source: nix::Error },
}

/// What was grown, for the boot log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub device: String,
    pub old_bytes: u64,
    pub new_bytes: u64,
}

/// One of the four primary entries of an MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

const MBR_TABLE: usize = 446;
const MBR_ENTRY: usize = 16;

/// The partition entries of a classic MBR (`None` if sector 0 is not one, or is
/// GPT's protective MBR).
pub fn mbr_entries(sector0: &[u8]) -> Option<[MbrEntry; 4]> {
    if sector0.len() < 512 || sector0[510..512] != [0x55, 0xAA] {
        return None;
    }
    let entry = |i: usize| {
        let e = &sector0[MBR_TABLE + i * MBR_ENTRY..MBR_TABLE + (i + 1) * MBR_ENTRY];
        let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        MbrEntry {
            kind: e[4],
            start: le(&e[8..12]),
            sectors: le(&e[12..16]),
        }
    };
    let entries = [entry(0), entry(1), entry(2), entry(3)];
    if entries.iter().any(|e| e.kind == 0xEE) {
        return None;
    }
    Some(entries)
}

/// The size partition `number` (1–4) can grow to on a disk of `disk_sectors`:
/// up to the next partition or the disk's end, aligned down to a MiB. `None`
/// when it cannot grow by at least a MiB, or is not a primary MBR partition.
pub fn grown_size(entries: &[MbrEntry; 4], number: u32, disk_sectors: u64) -> Option<u64> {
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    let me = *entries.get(index)?;
    if me.kind == 0 || me.sectors == 0 {
        return None;
    }
    let limit = entries
        .iter()
        .filter(|e| e.kind != 0 && e.sectors != 0 && e.start > me.start)
        .map(|e| e.start)
        .min()
        .unwrap_or(disk_sectors)
        .min(disk_sectors)
        // The MBR stores 32-bit sector counts (2 TiB with 512-byte sectors).
        .min(me.start + u64::from(u32::MAX));
    let end = limit / ALIGN_SECTORS * ALIGN_SECTORS;
    let size = end.checked_sub(me.start)?;
    (size >= me.sectors + MIN_GROWTH_SECTORS).then_some(size)
}

/// Sector 0 with partition `number`'s size set to `sectors`.
pub fn with_size(sector0: &[u8; 512], number: u32, sectors: u64) -> [u8; 512] {
    let mut out = *sector0;
    let at = MBR_TABLE + (number as usize - 1) * MBR_ENTRY;
    let sectors = u32::try_from(sectors).unwrap_or(u32::MAX);
    out[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    // The end CHS cannot describe a large disk: the "use LBA" marker.
    out[at + 5..at + 8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    out
}

/// ext4 size (blocks, block size) from the superblock (the 1024 bytes at offset 1024).
pub fn ext4_size(superblock: &[u8]) -> Option<(u64, u64)> {
    if superblock.len() < 0x154 || superblock[0x38..0x3A] != [0x53, 0xEF] {
        return None;
    }
    let u32_at = |o: usize| {
        u32::from_le_bytes([
            superblock[o],
            superblock[o + 1],
            superblock[o + 2],
            superblock[o + 3],
        ]) as u64
    };
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let high = if incompat_64bit { u32_at(0x150) } else { 0 };
    let blocks = high << 32 | u32_at(0x4);
    let log = u32_at(0x18);
    let block_size = 1024u64.checked_shl(u32::try_from(log).ok()?)?;
    Some((blocks, block_size))
}

/// The sysfs facts about a partition device (`/dev/mmcblk0p2`).
struct PartitionInfo {
    number: u32,
    disk: String,
    disk_sectors: u64,
}

fn read_sysfs(path: &Path) -> Result<String, GrowError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| GrowError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
}

fn sysfs_number(path: &Path) -> Result<u64, GrowError> {
    read_sysfs(path)?.parse().map_err(|_| GrowError::Sysfs {
        path: path.to_path_buf(),
        what: "not a number",
    })
}

/// `None` when the device is a whole disk (a file system without a partition table).
fn partition_info(device: &str) -> Result<Option<PartitionInfo>, GrowError> {
    let name = device.trim_start_matches("/dev/");
    let sys = PathBuf::from("/sys/class/block").join(name);
    let partition_file = sys.join("partition");
    if !partition_file.exists() {
        return Ok(None);
    }
    let number = sysfs_number(&partition_file)? as u32;
    // /sys/class/block/<part> links into .../block/<disk>/<part>.
    let real = std::fs::canonicalize(&sys).map_err(|source| GrowError::Io {
        action: "resolving",
        path: sys.clone(),
        source,
    })?;
    let disk_dir = real.parent().ok_or(GrowError::Sysfs {
        path: real.clone(),
        what: "no parent disk",
    })?;
    let disk = disk_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or(GrowError::Sysfs {
            path: real.clone(),
            what: "no parent disk",
        })?;
    let disk_sectors = sysfs_number(&disk_dir.join("size"))?;
    Ok(Some(PartitionInfo {
        number,
        disk,
        disk_sectors,
    }))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GrowError {
    let path = path.to_path_buf();
    move |source| GrowError::Io {
        action,
        path,
        source,
    }
}

/// Grows `device` (mounted at `mountpoint`) to the end of its disk. `Ok(None)`
/// when there is nothing to do (whole-disk file system, GPT, no free space).
pub fn grow_to_fill(device: &str, mountpoint: &Path) -> Result<Option<Growth>, GrowError> {
    let Some(info) = partition_info(device)? else {
        return Ok(None);
    };
    let disk_path = PathBuf::from("/dev").join(&info.disk);
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk_path)
        .map_err(io("opening", &disk_path))?;
    let mut sector0 = [0u8; 512];
    disk.read_exact(&mut sector0)
        .map_err(io("reading the partition table of", &disk_path))?;
    let Some(entries) = mbr_entries(&sector0) else {
        return Ok(None);
    };
    let index = info.number as usize - 1;
    let Some(entry) = entries.get(index).copied() else {
        return Ok(None);
    };
    let mut part_sectors = entry.sectors;

    // Step 1 and 2: the partition.
    if let Some(new_sectors) = grown_size(&entries, info.number, info.disk_sectors) {
        let updated = with_size(&sector0, info.number, new_sectors);
        disk.seek(SeekFrom::Start(0))
            .and_then(|_| disk.write_all(&updated))
            .and_then(|_| disk.sync_all())
            .map_err(io("writing the partition table of", &disk_path))?;
        resize_partition(&disk, device, info.number, entry.start, new_sectors)?;
        part_sectors = new_sectors;
    }

    // Step 3: the file system, up to the partition's size.
    let mut superblock = [0u8; 1024];
    let dev_path = Path::new(device);
    let mut part = File::open(dev_path).map_err(io("opening", dev_path))?;
    part.seek(SeekFrom::Start(1024))
        .and_then(|_| part.read_exact(&mut superblock))
        .map_err(io("reading the superblock of", dev_path))?;
    let Some((blocks, block_size)) = ext4_size(&superblock) else {
        return Ok(None);
    };
    let fs_bytes = blocks * block_size;
    let part_bytes = part_sectors * SECTOR;
    if part_bytes < fs_bytes + MIN_GROWTH_SECTORS * SECTOR {
        return Ok(None);
    }
    let new_blocks = part_bytes / block_size;
    resize_ext4(mountpoint, new_blocks)?;
    Ok(Some(Growth {
        device: device.to_string(),
        old_bytes: fs_bytes,
        new_bytes: new_blocks * block_size,
    }))
}

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

fn resize_partition(
    disk: &File,
    device: &str,
    number: u32,
    start: u64,
    sectors: u64,
) -> Result<(), GrowError> {
    crate::diskinstall::blkdev::resize_partition(disk, number, start * SECTOR, sectors * SECTOR)
        .map_err(|e| GrowError::Blkpg(e, number))?;
    log::debug!("{device}: partition {number} is now {sectors} sectors");
    Ok(())
}

fn resize_ext4(mountpoint: &Path, new_blocks: u64) -> Result<(), GrowError> {
    let dir = File::open(mountpoint).map_err(io("opening", mountpoint))?;
    // SAFETY: the argument is a u64 that lives across the call; the kernel reads it.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &new_blocks) }.map_err(|source| {
        GrowError::Resize {
            path: mountpoint.to_path_buf(),
            source,
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(entries: &[(u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, (kind, start, size)) in entries.iter().enumerate() {
            let at = MBR_TABLE + i * MBR_ENTRY;
            s[at + 4] = *kind;
            s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            s[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    /// The Pi image: FAT at 4 MiB (256 MiB), data after it (64 MiB).
    fn pi_card() -> [u8; 512] {
        mbr(&[(0x0c, 8192, 524288), (0x83, 532480, 131072)])
    }

    #[test]
    fn the_last_partition_grows_to_the_disk_end_aligned_to_a_mib() {
        let e = mbr_entries(&pi_card()).unwrap();
        // A 1 GiB card.
        assert_eq!(grown_size(&e, 2, 2097152), Some(2097152 - 532480));
        // A card whose size is not a MiB multiple: the end is aligned down.
        assert_eq!(grown_size(&e, 2, 2097152 + 1000), Some(2097152 - 532480));
    }

    #[test]
    fn nothing_to_grow_on_a_card_the_image_size_or_for_a_partition_followed_by_another() {
        let e = mbr_entries(&pi_card()).unwrap();
        assert_eq!(grown_size(&e, 2, 532480 + 131072), None);
        // Less than a MiB free is not worth it.
        assert_eq!(grown_size(&e, 2, 532480 + 131072 + 1000), None);
        // Partition 1 ends where partition 2 starts.
        assert_eq!(grown_size(&e, 1, 2097152), None);
        // Empty slots and out-of-range numbers.
        assert_eq!(grown_size(&e, 3, 2097152), None);
        assert_eq!(grown_size(&e, 0, 2097152), None);
        assert_eq!(grown_size(&e, 5, 2097152), None);
    }

    #[test]
    fn gpt_and_garbage_are_not_mbrs() {
        assert!(mbr_entries(&[0u8; 512]).is_none());
        assert!(mbr_entries(&mbr(&[(0xEE, 1, 0xFFFF_FFFF)])).is_none());
        assert!(mbr_entries(&[0u8; 100]).is_none());
    }

    #[test]
    fn the_new_size_is_written_to_the_right_entry_only() {
        let before = pi_card();
        let after = with_size(&before, 2, 1564672);
        let e = mbr_entries(&after).unwrap();
        assert_eq!(e[0], mbr_entries(&before).unwrap()[0]);
        assert_eq!(
            e[1],
            MbrEntry {
                kind: 0x83,
                start: 532480,
                sectors: 1564672
            }
        );
        assert_eq!(after[..MBR_TABLE], before[..MBR_TABLE]);
        assert_eq!(after[510..], before[510..]);
    }

    #[test]
    fn ext4_size_reads_32_and_64_bit_block_counts() {
        let mut sb = vec![0u8; 1024];
        assert_eq!(ext4_size(&sb), None);
        sb[0x38..0x3A].copy_from_slice(&[0x53, 0xEF]);
        sb[0x4..0x8].copy_from_slice(&16384u32.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some((16384, 4096)));
        // The high word counts only with the 64bit feature.
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some((16384, 4096)));
        sb[0x60] = 0x80;
        assert_eq!(ext4_size(&sb), Some(((1 << 32) + 16384, 4096)));
    }
}
