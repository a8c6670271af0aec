//! The block-device calls the disk writer needs: telling the kernel about a partition
//! that is not in any table yet (`BLKPG_ADD_PARTITION`), forgetting it again
//! (`BLKPG_DEL_PARTITION`), growing one in use (`BLKPG_RESIZE_PARTITION`, for
//! `init::growpart`), re-reading the table once it is written (`BLKRRPART`),
//! mounting for a moment, and waiting for a device node.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount, MsFlags};

// linux/blkpg.h
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_none_bad!(blkrrpart, nix::request_code_none!(0x12, 95));

fn blkpg_op(disk: &File, op: libc::c_int, number: u32, start: u64, length: u64) -> nix::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at a live, correctly laid out blkpg_partition for the whole
    // call; the kernel only reads it.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.map(|_| ())
}

/// Makes partition `number` of `disk` exist for the kernel at `start..start+length`
/// (bytes), without a partition table on the disk.
pub fn add_partition(disk: &File, number: u32, start: u64, length: u64) -> nix::Result<()> {
    blkpg_op(disk, BLKPG_ADD_PARTITION, number, start, length)
}

/// Forgets partition `number` of `disk` (the disk is untouched).
pub fn del_partition(disk: &File, number: u32) -> nix::Result<()> {
    blkpg_op(disk, BLKPG_DEL_PARTITION, number, 0, 0)
}

/// Tells the kernel partition `number` of `disk` now ends at `start + length` (bytes;
/// `start` unchanged), which works while it is mounted, unlike a re-read of the table.
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> nix::Result<()> {
    blkpg_op(disk, BLKPG_RESIZE_PARTITION, number, start, length)
}

/// Has the kernel read `disk`'s partition table again.
pub fn reread_partitions(disk: &File) -> nix::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blkrrpart(disk.as_raw_fd()) }.map(|_| ())
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

/// A file system mounted for the time this value lives.
pub struct Mounted {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    pub fn new(device: &str, dir: &Path, fstype: &str, flags: MsFlags) -> nix::Result<Mounted> {
        std::fs::create_dir_all(dir)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        mount(
            Some(device),
            dir,
            Some(fstype),
            flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts now, so that a failure is seen (dropping only logs it).
    pub fn unmount(mut self) -> nix::Result<()> {
        self.mounted = false;
        umount(&self.dir)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = umount(&self.dir) {
                log::warn!("cannot unmount {}: {e}", self.dir.display());
            }
        }
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
}
