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
//!
//! Owns how far a partition may grow and the order of the steps; the bytes of each are
//! `mbr`'s, `blkpg`'s and `ext4`'s. Whether to grow, and what to log, is the caller's
//! (`init::datastore`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::devices::{self, SysfsError};
use super::mbr::{self, SECTOR};
use super::{blkpg, ext4};

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
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
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

/// The size partition `number` (1–4) can grow to on a disk of `disk_sectors`:
/// up to the next partition or the disk's end, aligned down to a MiB. `None`
/// when it cannot grow by at least a MiB, or is not a primary MBR partition.
pub fn grown_size(entries: &[mbr::Entry; 4], number: u32, disk_sectors: u64) -> Option<u64> {
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
    let name = device.trim_start_matches("/dev/");
    let Some(info) = devices::partition(Path::new(devices::CLASS_BLOCK), name)? else {
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
    let Some(entries) = mbr::entries(&sector0) else {
        return Ok(None);
    };
    let Some(entry) = (info.number as usize)
        .checked_sub(1)
        .and_then(|index| entries.get(index))
        .copied()
    else {
        return Ok(None);
    };
    let mut part_sectors = entry.sectors;

    // Step 1 and 2: the partition.
    if let Some(new_sectors) = grown_size(&entries, info.number, info.disk_sectors) {
        let updated = mbr::with_size(&sector0, info.number, new_sectors);
        disk.seek(SeekFrom::Start(0))
            .and_then(|_| disk.write_all(&updated))
            .and_then(|_| disk.sync_all())
            .map_err(io("writing the partition table of", &disk_path))?;
        blkpg::resize_partition(
            &disk,
            info.number,
            entry.start * SECTOR,
            new_sectors * SECTOR,
        )
        .map_err(|e| GrowError::Blkpg(e, info.number))?;
        log::debug!(
            "{device}: partition {} is now {new_sectors} sectors",
            info.number
        );
        part_sectors = new_sectors;
    }

    // Step 3: the file system, up to the partition's size.
    let dev_path = Path::new(device);
    let mut part = File::open(dev_path).map_err(io("opening", dev_path))?;
    let superblock = ext4::read(&mut part).map_err(io("reading the superblock of", dev_path))?;
    let Some((blocks, block_size)) =
        superblock.and_then(|sb| Some((sb.blocks(), sb.block_size()?)))
    else {
        return Ok(None);
    };
    let fs_bytes = blocks * block_size;
    let part_bytes = part_sectors * SECTOR;
    if part_bytes < fs_bytes + MIN_GROWTH_SECTORS * SECTOR {
        return Ok(None);
    }
    let new_blocks = part_bytes / block_size;
    let root = File::open(mountpoint).map_err(io("opening", mountpoint))?;
    ext4::resize(&root, new_blocks).map_err(|source| GrowError::Resize {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    Ok(Some(Growth {
        device: device.to_string(),
        old_bytes: fs_bytes,
        new_bytes: new_blocks * block_size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::mbr::tests::pi_card;

    #[test]
    fn the_last_partition_grows_to_the_disk_end_aligned_to_a_mib() {
        let e = mbr::entries(&pi_card()).unwrap();
        // A 1 GiB card.
        assert_eq!(grown_size(&e, 2, 2097152), Some(2097152 - 532480));
        // A card whose size is not a MiB multiple: the end is aligned down.
        assert_eq!(grown_size(&e, 2, 2097152 + 1000), Some(2097152 - 532480));
    }

    #[test]
    fn nothing_to_grow_on_a_card_the_image_size_or_for_a_partition_followed_by_another() {
        let e = mbr::entries(&pi_card()).unwrap();
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
}
