//! The ext4 file system as nodeos needs it: its superblock, read by the one parser here
//! (the label that finds a partition, the size that growing one needs), and the online
//! resize of a mounted one (`EXT4_IOC_RESIZE_FS`, the ioctl resize2fs itself uses).
//!
//! Owns the superblock's layout (offsets from `struct ext4_super_block`, fs/ext4/ext4.h);
//! nobody else reads those bytes. ext2 and ext3 share the layout and the magic, so their
//! superblocks parse too. Never writes to a device: the resize goes through the kernel,
//! on a mounted file system.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

/// Where the superblock is: the 1024 bytes at byte 1024 of the file system.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_LEN: usize = 1024;

const MAGIC: u16 = 0xEF53;
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_MAGIC: usize = 0x38;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_VOLUME_NAME: usize = 0x78;
const VOLUME_NAME_LEN: usize = 16;
const S_BLOCKS_COUNT_HI: usize = 0x150;
/// `s_blocks_count_hi` counts only on file systems with this feature.
const INCOMPAT_64BIT: u32 = 0x80;
/// Quota inodes kept by the file system itself (`RO_COMPAT_QUOTA`) and project ids on
/// inodes (`RO_COMPAT_PROJECT`): `mkfs.ext4 -O quota,project`.
const RO_COMPAT_QUOTA: u32 = 0x100;
const RO_COMPAT_PROJECT: u32 = 0x2000;
/// ext4 blocks are 1 KiB to 64 KiB (`s_log_block_size` 0 to 6); the kernel mounts no
/// other, so a larger value is damage, not a size.
const MAX_LOG_BLOCK_SIZE: u32 = 6;

/// What nodeos reads from an ext2/3/4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    blocks: u64,
    log_block_size: u32,
    ro_compat: u32,
    volume_name: [u8; VOLUME_NAME_LEN],
}

impl Superblock {
    /// Parses the 1024-byte superblock; `None` when it is shorter or lacks the ext magic.
    /// Nothing else is checked: the label of a file system the kernel would refuse to
    /// mount (an unknown feature, a damaged block size) still reads, so that such a
    /// partition is found and its mount failure reported, not taken for no partition.
    pub fn parse(bytes: &[u8]) -> Option<Superblock> {
        if bytes.len() < SUPERBLOCK_LEN
            || u16::from_le_bytes([bytes[S_MAGIC], bytes[S_MAGIC + 1]]) != MAGIC
        {
            return None;
        }
        let le32 = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut blocks = u64::from(le32(S_BLOCKS_COUNT_LO));
        if le32(S_FEATURE_INCOMPAT) & INCOMPAT_64BIT != 0 {
            blocks |= u64::from(le32(S_BLOCKS_COUNT_HI)) << 32;
        }
        let mut volume_name = [0u8; VOLUME_NAME_LEN];
        volume_name.copy_from_slice(&bytes[S_VOLUME_NAME..S_VOLUME_NAME + VOLUME_NAME_LEN]);
        Some(Superblock {
            blocks,
            log_block_size: le32(S_LOG_BLOCK_SIZE),
            ro_compat: le32(S_FEATURE_RO_COMPAT),
            volume_name,
        })
    }

    /// Blocks in the file system (`s_blocks_count`, with its high half on 64-bit ones).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Bytes per block, 1024 << `s_log_block_size`; `None` for a value no ext4 has.
    pub fn block_size(&self) -> Option<u64> {
        (self.log_block_size <= MAX_LOG_BLOCK_SIZE).then(|| 1024u64 << self.log_block_size)
    }

    /// Whether it keeps project quotas (volume size limits, decision 64): made with
    /// `-O quota,project`. Such a file system mounts only with the kernel's quota format
    /// (`quota_v2`) loaded, and enforces limits when mounted with `prjquota`.
    pub fn has_project_quotas(&self) -> bool {
        let both = RO_COMPAT_QUOTA | RO_COMPAT_PROJECT;
        self.ro_compat & both == both
    }

    /// The volume label (`s_volume_name` up to its first NUL; empty when unset), `None`
    /// when it is not UTF-8.
    pub fn label(&self) -> Option<&str> {
        let end = self
            .volume_name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(VOLUME_NAME_LEN);
        std::str::from_utf8(&self.volume_name[..end]).ok()
    }
}

/// Reads the superblock of the file system that starts at byte 0 of `device` (a
/// partition's node or an image file); `Ok(None)` when it is not ext2/3/4.
pub fn read<D: Read + Seek>(device: &mut D) -> std::io::Result<Option<Superblock>> {
    let mut bytes = [0u8; SUPERBLOCK_LEN];
    device.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    device.read_exact(&mut bytes)?;
    Ok(Superblock::parse(&bytes))
}

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Grows the mounted ext4 file system whose root directory is `root` to `new_blocks`
/// blocks, online.
pub fn resize(root: &File, new_blocks: u64) -> nix::Result<()> {
    // SAFETY: the argument is a u64 that lives across the call; the kernel reads it.
    unsafe { ext4_resize_fs(root.as_raw_fd(), &new_blocks) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock with the magic and these fields, the rest zero.
    struct Crafted {
        blocks_lo: u32,
        blocks_hi: u32,
        incompat: u32,
        ro_compat: u32,
        log_block_size: u32,
        label: &'static [u8],
    }

    impl Crafted {
        fn bytes(&self) -> Vec<u8> {
            let mut sb = vec![0u8; SUPERBLOCK_LEN];
            let mut put = |at: usize, v: u32| sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
            put(S_BLOCKS_COUNT_LO, self.blocks_lo);
            put(S_BLOCKS_COUNT_HI, self.blocks_hi);
            put(S_FEATURE_INCOMPAT, self.incompat);
            put(S_FEATURE_RO_COMPAT, self.ro_compat);
            put(S_LOG_BLOCK_SIZE, self.log_block_size);
            sb[S_MAGIC..S_MAGIC + 2].copy_from_slice(&MAGIC.to_le_bytes());
            sb[S_VOLUME_NAME..S_VOLUME_NAME + self.label.len()].copy_from_slice(self.label);
            sb
        }
    }

    const DATA: Crafted = Crafted {
        blocks_lo: 16384,
        blocks_hi: 0,
        // filetype, extents, flex_bg: what mkfs.ext4 sets without 64bit
        incompat: 0x242,
        // sparse_super, large_file, huge_file, dir_nlink, extra_isize, metadata_csum
        ro_compat: 0x046b,
        log_block_size: 2,
        label: b"CLOUDOS-DATA",
    };

    /// What a superblock should read as: blocks, block size, label.
    type Fields = (u64, Option<u64>, Option<&'static str>);

    #[test]
    fn fields_read_from_crafted_superblocks() {
        let cases: &[(&str, Crafted, Fields)] = &[
            (
                "the Pi image's 64 MiB data partition",
                DATA,
                (16384, Some(4096), Some("CLOUDOS-DATA")),
            ),
            (
                "the high half is ignored without the 64bit feature",
                Crafted {
                    blocks_hi: 7,
                    ..DATA
                },
                (16384, Some(4096), Some("CLOUDOS-DATA")),
            ),
            (
                "the high half counts with the 64bit feature",
                Crafted {
                    blocks_lo: 1,
                    blocks_hi: 1,
                    incompat: 0x242 | INCOMPAT_64BIT,
                    ro_compat: 0,
                    log_block_size: 0,
                    label: b"",
                },
                ((1 << 32) + 1, Some(1024), Some("")),
            ),
            (
                "a full 16-byte label has no NUL",
                Crafted {
                    label: b"0123456789abcdef",
                    ..DATA
                },
                (16384, Some(4096), Some("0123456789abcdef")),
            ),
            (
                "64 KiB blocks are the largest",
                Crafted {
                    log_block_size: 6,
                    ..DATA
                },
                (16384, Some(65536), Some("CLOUDOS-DATA")),
            ),
            (
                "a damaged block size has no size, but the label still reads",
                Crafted {
                    log_block_size: 40,
                    ..DATA
                },
                (16384, None, Some("CLOUDOS-DATA")),
            ),
            (
                "a label that is not UTF-8 is no label",
                Crafted {
                    label: b"CLOUDOS-\xff",
                    ..DATA
                },
                (16384, Some(4096), None),
            ),
        ];
        for (what, crafted, expected) in cases {
            let sb = Superblock::parse(&crafted.bytes()).unwrap_or_else(|| panic!("{what}"));
            assert_eq!(
                (sb.blocks(), sb.block_size(), sb.label()),
                *expected,
                "{what}"
            );
        }
    }

    /// Both features or no limits: `-O quota` alone keeps user and group quotas only,
    /// `-O project` alone has no quota inodes to keep usage in.
    #[test]
    fn project_quotas_need_both_features() {
        // (what, ro_compat, has project quotas)
        let cases = [
            ("without either", DATA.ro_compat, false),
            ("-O quota,project", DATA.ro_compat | 0x2100, true),
            ("-O quota", DATA.ro_compat | 0x100, false),
            ("-O project", DATA.ro_compat | 0x2000, false),
        ];
        for (what, ro_compat, expected) in cases {
            let sb = Superblock::parse(&Crafted { ro_compat, ..DATA }.bytes()).expect(what);
            assert_eq!(sb.has_project_quotas(), expected, "{what}");
        }
    }

    #[test]
    fn other_bytes_are_not_a_superblock() {
        let good = DATA.bytes();
        let mut no_magic = good.clone();
        no_magic[S_MAGIC] = 0;
        let mut swapped_magic = good.clone();
        swapped_magic[S_MAGIC..S_MAGIC + 2].copy_from_slice(&[0xEF, 0x53]);
        // (what, bytes)
        let cases: &[(&str, &[u8])] = &[
            ("zeros", &[0u8; SUPERBLOCK_LEN]),
            ("no magic", &no_magic),
            ("the magic's bytes swapped", &swapped_magic),
            ("too short", &good[..100]),
            ("cut before its end", &good[..SUPERBLOCK_LEN - 1]),
            ("empty", &[]),
        ];
        for (what, bytes) in cases {
            assert_eq!(Superblock::parse(bytes), None, "{what}");
        }
    }

    #[test]
    fn read_finds_the_superblock_at_byte_1024() {
        let mut image = vec![0xAAu8; SUPERBLOCK_OFFSET as usize];
        image.extend(DATA.bytes());
        let sb = read(&mut std::io::Cursor::new(&image)).expect("read");
        assert_eq!(
            sb.as_ref().and_then(Superblock::label),
            Some("CLOUDOS-DATA")
        );

        let zeros = vec![0u8; 4096];
        assert_eq!(read(&mut std::io::Cursor::new(&zeros)).expect("read"), None);
        // A device too small to hold one is an error, as a short read is.
        assert!(read(&mut std::io::Cursor::new(&image[..1500])).is_err());
    }

    #[test]
    fn the_resize_ioctl_number_is_the_kernels() {
        // EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64) from linux/ext4.h.
        assert_eq!(nix::request_code_write!(b'f', 16, 8), 0x4008_6610);
    }
}
