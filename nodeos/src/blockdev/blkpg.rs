//! The kernel's partition ioctls on a whole disk: telling it about a partition that is
//! not in any table yet (`BLKPG_ADD_PARTITION`, for the disk writer), forgetting it again
//! (`BLKPG_DEL_PARTITION`), growing one in use (`BLKPG_RESIZE_PARTITION`, for `grow`),
//! and re-reading the table once it is written (`BLKRRPART`).
//!
//! Owns these ioctls' numbers and structs (linux/blkpg.h, linux/fs.h) and nothing else:
//! it never writes to a disk (`grow` writes its MBR, `diskinstall::writer` its GPT).

use std::fs::File;
use std::os::fd::AsRawFd;

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
