//! The Raspberry Pi SD card image, read from the host without mounting
//! anything: its MBR partition table, the files on its FAT boot partition
//! (through mtools), and the superblock of its ext4 data partition.
//!
//! The parsers are pure functions over bytes, tested here on hand-made
//! sectors; the `read_*` functions apply them to an image file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Arch, Machine, VmBuilder};

/// Bytes per sector in MBR addresses.
pub const SECTOR: u64 = 512;

/// MBR partition types the Pi image uses.
pub const MBR_FAT32_LBA: u8 = 0x0c;
pub const MBR_LINUX: u8 = 0x83;

/// Where the partition table and its signature are in sector 0.
const MBR_TABLE: usize = 446;
const MBR_ENTRY: usize = 16;
const MBR_SIGNATURE: usize = 510;

/// The ext2/3/4 superblock: 1024 bytes at byte 1024 of the file system.
pub const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_SUPERBLOCK_LEN: usize = 1024;
const EXT4_BLOCKS_LO: usize = 0x04;
const EXT4_LOG_BLOCK_SIZE: usize = 0x18;
const EXT4_MAGIC: usize = 0x38;
const EXT4_FEATURE_INCOMPAT: usize = 0x60;
const EXT4_VOLUME_NAME: usize = 0x78;
const EXT4_BLOCKS_HI: usize = 0x150;
const EXT4_MAGIC_VALUE: u16 = 0xEF53;
const EXT4_INCOMPAT_64BIT: u32 = 0x80;

/// Errors reading a card image. `Debug` prints as `Display`, for `.unwrap()`.
#[derive(thiserror::Error)]
pub enum RpiError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path} has no partition {number}; its table: {table:?}")]
    NoPartition {
        path: PathBuf,
        number: u8,
        table: Vec<MbrPartition>,
    },
    #[error("{command} failed: {stderr} (is mtools installed? scripts/deps.sh)")]
    Mtools { command: String, stderr: String },
}

impl std::fmt::Debug for RpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RpiError {
    let path = path.to_path_buf();
    move |source| RpiError::Io {
        action,
        path,
        source,
    }
}

/// One used entry of an MBR's partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPartition {
    /// 1 to 4, as in `/dev/mmcblk0p<number>`.
    pub number: u8,
    /// The boot flag (0x80).
    pub bootable: bool,
    /// The partition type byte (0x0c FAT32 LBA, 0x83 Linux, ...).
    pub kind: u8,
    pub start_sector: u64,
    pub sectors: u64,
}

impl MbrPartition {
    /// Byte offset of the partition in the image.
    pub fn offset(&self) -> u64 {
        self.start_sector * SECTOR
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }

    /// Byte offset just past the partition.
    pub fn end(&self) -> u64 {
        self.offset() + self.size()
    }
}

/// The used primary partitions of a classic MBR, in table order; `None` if
/// sector 0 has no MBR signature.
pub fn parse_mbr(sector0: &[u8]) -> Option<Vec<MbrPartition>> {
    if sector0.len() < SECTOR as usize || sector0[MBR_SIGNATURE..MBR_SIGNATURE + 2] != [0x55, 0xAA]
    {
        return None;
    }
    let partitions = (0..4u8)
        .map(|i| {
            let at = MBR_TABLE + usize::from(i) * MBR_ENTRY;
            let e = &sector0[at..at + MBR_ENTRY];
            MbrPartition {
                number: i + 1,
                bootable: e[0] == 0x80,
                kind: e[4],
                start_sector: u64::from(le32(&e[8..12])),
                sectors: u64::from(le32(&e[12..16])),
            }
        })
        .filter(|p| p.kind != 0 && p.sectors != 0)
        .collect();
    Some(partitions)
}

/// The MBR partition table of a disk image.
pub fn read_mbr(image: &Path) -> Result<Vec<MbrPartition>, RpiError> {
    let sector0 = read_at(image, 0, SECTOR as usize)?;
    parse_mbr(&sector0).ok_or_else(|| RpiError::Malformed {
        path: image.to_path_buf(),
        what: "sector 0 is not an MBR (no 55 AA signature)".into(),
    })
}

/// Partition `number` (1-4) of a disk image.
pub fn partition(image: &Path, number: u8) -> Result<MbrPartition, RpiError> {
    let table = read_mbr(image)?;
    table
        .iter()
        .find(|p| p.number == number)
        .copied()
        .ok_or_else(|| RpiError::NoPartition {
            path: image.to_path_buf(),
            number,
            table,
        })
}

/// What the tests need from an ext4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Superblock {
    /// Blocks in the file system (`s_blocks_count`, with its high half on 64-bit file systems).
    pub blocks: u64,
    /// Bytes per block: 1024 << `s_log_block_size`.
    pub block_size: u64,
    /// `s_volume_name`, up to the first NUL.
    pub label: String,
}

impl Ext4Superblock {
    /// The file system's size in bytes.
    pub fn size(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// Parses the 1024-byte ext2/3/4 superblock; `None` without the ext magic
/// or with an impossible block size.
pub fn parse_ext4_superblock(sb: &[u8]) -> Option<Ext4Superblock> {
    if sb.len() < EXT4_SUPERBLOCK_LEN
        || u16::from_le_bytes([sb[EXT4_MAGIC], sb[EXT4_MAGIC + 1]]) != EXT4_MAGIC_VALUE
    {
        return None;
    }
    let log = le32(&sb[EXT4_LOG_BLOCK_SIZE..]);
    // ext4 blocks are 1 KiB to 64 KiB.
    if log > 6 {
        return None;
    }
    let mut blocks = u64::from(le32(&sb[EXT4_BLOCKS_LO..]));
    if le32(&sb[EXT4_FEATURE_INCOMPAT..]) & EXT4_INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(&sb[EXT4_BLOCKS_HI..])) << 32;
    }
    let name = &sb[EXT4_VOLUME_NAME..EXT4_VOLUME_NAME + 16];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Some(Ext4Superblock {
        blocks,
        block_size: 1024 << log,
        label: String::from_utf8_lossy(name).into_owned(),
    })
}

/// The ext4 superblock of a partition of a disk image.
pub fn read_ext4_superblock(image: &Path, part: &MbrPartition) -> Result<Ext4Superblock, RpiError> {
    let sb = read_at(
        image,
        part.offset() + EXT4_SUPERBLOCK_OFFSET,
        EXT4_SUPERBLOCK_LEN,
    )?;
    parse_ext4_superblock(&sb).ok_or_else(|| RpiError::Malformed {
        path: image.to_path_buf(),
        what: format!("partition {} holds no ext4 superblock", part.number),
    })
}

/// The names in the root directory of a FAT partition (`mdir -b`).
pub fn fat_files(image: &Path, part: &MbrPartition) -> Result<Vec<String>, RpiError> {
    let out = mtools(
        "mdir",
        &[
            "-b".into(),
            "-i".into(),
            fat_image(image, part),
            "::/".into(),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("::/"))
        .map(str::to_string)
        .collect())
}

/// The volume label of a FAT partition (`mlabel -s`).
pub fn fat_label(image: &Path, part: &MbrPartition) -> Result<String, RpiError> {
    let out = mtools(
        "mlabel",
        &[
            "-s".into(),
            "-i".into(),
            fat_image(image, part),
            "::".into(),
        ],
    )?;
    // " Volume label is CLOUDOS-PI "
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .trim()
        .strip_prefix("Volume label is")
        .unwrap_or(&text)
        .trim()
        .to_string())
}

/// The contents of a file in the root directory of a FAT partition.
pub fn fat_read(image: &Path, part: &MbrPartition, name: &str) -> Result<Vec<u8>, RpiError> {
    mtools(
        "mcopy",
        &[
            "-i".into(),
            fat_image(image, part),
            format!("::/{name}"),
            "-".into(),
        ],
    )
}

/// Copies a file from the root directory of a FAT partition to `dir`;
/// returns its path there.
pub fn fat_extract(
    image: &Path,
    part: &MbrPartition,
    name: &str,
    dir: &Path,
) -> Result<PathBuf, RpiError> {
    let dest = dir.join(name);
    mtools(
        "mcopy",
        &[
            "-n".into(),
            "-i".into(),
            fat_image(image, part),
            format!("::/{name}"),
            dest.to_string_lossy().into_owned(),
        ],
    )?;
    Ok(dest)
}

/// mtools' name for a file system inside an image: `image@@offset`.
fn fat_image(image: &Path, part: &MbrPartition) -> String {
    format!("{}@@{}", image.display(), part.offset())
}

fn mtools(program: &str, args: &[String]) -> Result<Vec<u8>, RpiError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        // The card's geometry is whatever the image builder chose; do not judge it.
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RpiError::Mtools {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(RpiError::Mtools {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, RpiError> {
    let mut file = File::open(path).map_err(io_error("opening", path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_error("seeking in", path))?;
    let mut buf = vec![0; len];
    file.read_exact(&mut buf)
        .map_err(io_error("reading", path))?;
    Ok(buf)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The card as a Pi 3B boots it: QEMU cannot run the VideoCore firmware, so the
/// kernel, initramfs, device tree and command line come from the card's own boot
/// partition, as the firmware would load them.
pub struct PiBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: PathBuf,
    /// `cmdline.txt`'s line.
    pub append: String,
}

impl PiBoot {
    /// Extracts the boot files from the card's FAT partition `boot` into `dir`.
    pub fn from_card(card: &Path, boot: &MbrPartition, dir: &Path) -> PiBoot {
        let extract =
            |name: &str| fat_extract(card, boot, name, dir).unwrap_or_else(|e| panic!("{e}"));
        let cmdline = std::fs::read_to_string(extract("cmdline.txt")).expect("reading cmdline.txt");
        PiBoot {
            kernel: extract("vmlinuz"),
            initrd: extract("initramfs.img"),
            dtb: extract("bcm2837-rpi-3-b.dtb"),
            append: cmdline.lines().next().unwrap_or("").trim().to_owned(),
        }
    }

    /// A Raspberry Pi 3B booting these files with `card` in its slot.
    ///
    /// The command line gets `cloudos.watchdog=off`: QEMU's raspi3b does not
    /// count the Pi's watchdog down, it resets the board the moment the
    /// driver starts it (its power-management block treats "full reset" as
    /// now), which a real Pi never does. The watchdog is tested on QEMU's
    /// i6300esb instead.
    pub fn vm(&self, card: &Path) -> VmBuilder {
        VmBuilder::new(Arch::Aarch64)
            .machine(Machine::RaspberryPi3B)
            .kernel(
                &self.kernel,
                &self.initrd,
                &format!("{} cloudos.watchdog=off", self.append),
            )
            .dtb(&self.dtb)
            .sd_card(card)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(entries: &[(u8, bool, u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for &(slot, boot, kind, start, sectors) in entries {
            let at = MBR_TABLE + usize::from(slot) * MBR_ENTRY;
            s[at] = if boot { 0x80 } else { 0 };
            s[at + 4] = kind;
            s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            s[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn mbr_entries_are_read_with_numbers_flags_and_byte_ranges() {
        // The Pi image's layout: FAT32 256 MiB at 4 MiB, then ext4 64 MiB.
        let sector0 = mbr(&[
            (0, true, 0x0c, 8192, 524288),
            (1, false, 0x83, 532480, 131072),
        ]);
        let parts = parse_mbr(&sector0).expect("an MBR");
        assert_eq!(
            parts,
            vec![
                MbrPartition {
                    number: 1,
                    bootable: true,
                    kind: MBR_FAT32_LBA,
                    start_sector: 8192,
                    sectors: 524288,
                },
                MbrPartition {
                    number: 2,
                    bootable: false,
                    kind: MBR_LINUX,
                    start_sector: 532480,
                    sectors: 131072,
                },
            ]
        );
        assert_eq!(parts[0].offset(), 4 << 20);
        assert_eq!(parts[0].size(), 256 << 20);
        assert_eq!(parts[0].end(), parts[1].offset());
        assert_eq!(parts[1].end(), 324 << 20);
    }

    #[test]
    fn mbr_skips_empty_slots_and_rejects_a_missing_signature() {
        let sector0 = mbr(&[(2, false, 0x83, 2048, 4096)]);
        let parts = parse_mbr(&sector0).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].number, 3);

        let mut unsigned = sector0.clone();
        unsigned[511] = 0;
        assert_eq!(parse_mbr(&unsigned), None);
        assert_eq!(parse_mbr(&sector0[..100]), None);
    }

    fn superblock(blocks_lo: u32, blocks_hi: u32, incompat: u32, log: u32, label: &str) -> Vec<u8> {
        let mut sb = vec![0u8; EXT4_SUPERBLOCK_LEN];
        sb[EXT4_BLOCKS_LO..EXT4_BLOCKS_LO + 4].copy_from_slice(&blocks_lo.to_le_bytes());
        sb[EXT4_LOG_BLOCK_SIZE..EXT4_LOG_BLOCK_SIZE + 4].copy_from_slice(&log.to_le_bytes());
        sb[EXT4_MAGIC..EXT4_MAGIC + 2].copy_from_slice(&EXT4_MAGIC_VALUE.to_le_bytes());
        sb[EXT4_FEATURE_INCOMPAT..EXT4_FEATURE_INCOMPAT + 4]
            .copy_from_slice(&incompat.to_le_bytes());
        sb[EXT4_VOLUME_NAME..EXT4_VOLUME_NAME + label.len()].copy_from_slice(label.as_bytes());
        sb[EXT4_BLOCKS_HI..EXT4_BLOCKS_HI + 4].copy_from_slice(&blocks_hi.to_le_bytes());
        sb
    }

    #[test]
    fn ext4_superblock_gives_size_and_label() {
        // 64 MiB of 4 KiB blocks without the 64bit feature (filetype, extents,
        // flex_bg): the high half is ignored.
        let sb = parse_ext4_superblock(&superblock(16384, 7, 0x242, 2, "CLOUDOS-DATA")).unwrap();
        assert_eq!(
            sb,
            Ext4Superblock {
                blocks: 16384,
                block_size: 4096,
                label: "CLOUDOS-DATA".into(),
            }
        );
        assert_eq!(sb.size(), 64 << 20);

        // With the 64bit feature the high half counts: 2^32 + 1 blocks of 1 KiB.
        let sb =
            parse_ext4_superblock(&superblock(1, 1, 0x242 | EXT4_INCOMPAT_64BIT, 0, "")).unwrap();
        assert_eq!(sb.blocks, (1 << 32) + 1);
        assert_eq!(sb.block_size, 1024);
        assert_eq!(sb.label, "");

        // A full 16-byte label has no NUL.
        let sb = parse_ext4_superblock(&superblock(8, 0, 0, 0, "0123456789abcdef")).unwrap();
        assert_eq!(sb.label, "0123456789abcdef");
    }

    /// The parsers agree with the real tools: sfdisk's table and mkfs.ext4's
    /// superblock, with and without the 64bit feature.
    #[test]
    fn real_sfdisk_and_mkfs_ext4_output_parses() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        File::create(&disk)
            .and_then(|f| f.set_len(16 << 20))
            .unwrap();
        let mut sfdisk = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&disk)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sfdisk (util-linux)");
        std::io::Write::write_all(
            sfdisk.stdin.as_mut().unwrap(),
            b"label: dos\nstart=2048, size=4096, type=c, bootable\nstart=6144, type=83\n",
        )
        .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let table = read_mbr(&disk).unwrap();
        assert_eq!(table.len(), 2);
        assert!(table[0].bootable && table[0].kind == MBR_FAT32_LBA);
        assert_eq!((table[1].kind, table[1].start_sector), (MBR_LINUX, 6144));
        assert_eq!(table[1].end(), 16 << 20);
        assert!(matches!(
            partition(&disk, 3),
            Err(RpiError::NoPartition { number: 3, .. })
        ));

        for (features, block_size) in [("^64bit", "1024"), ("64bit", "4096")] {
            let fs = dir.path().join(format!("{features}.ext4"));
            let status = Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-L",
                    "CLOUDOS-DATA",
                    "-O",
                    features,
                    "-b",
                    block_size,
                ])
                .arg(&fs)
                .arg("8M")
                .status()
                .expect("mkfs.ext4");
            assert!(status.success());
            let whole = MbrPartition {
                number: 1,
                bootable: false,
                kind: MBR_LINUX,
                start_sector: 0,
                sectors: (8 << 20) / SECTOR,
            };
            let sb = read_ext4_superblock(&fs, &whole).unwrap();
            assert_eq!(sb.label, "CLOUDOS-DATA");
            assert_eq!(sb.block_size.to_string(), block_size);
            assert_eq!(sb.size(), 8 << 20, "{features}");
        }
    }

    #[test]
    fn ext4_superblock_rejects_other_data() {
        let mut sb = superblock(16384, 0, 0, 2, "X");
        assert!(parse_ext4_superblock(&sb).is_some());
        sb[EXT4_MAGIC] = 0;
        assert_eq!(parse_ext4_superblock(&sb), None);
        assert_eq!(parse_ext4_superblock(&superblock(1, 0, 0, 40, "X")), None);
        assert_eq!(parse_ext4_superblock(&[0u8; 100]), None);
    }
}
