//! Which file system a block device holds and its label, read from the file system's own
//! header (an ISO 9660 primary volume descriptor, an ext4 superblock, a FAT boot sector),
//! and finding devices by label: the data partition, the ESP, the live medium and the
//! answer file's partition are all found this way.
//!
//! Reads only, and only a device's first 34 KiB. The ext4 superblock's layout is
//! `ext4`'s; which devices there are is `devices`'. Mounting what is found is the
//! caller's.

use std::fs::File;
use std::io::Read;

use super::devices::block_devices;
use super::ext4;

/// The file systems a label is looked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Iso9660,
    Vfat,
    Ext4,
}

impl FsKind {
    /// Its name for mount(2).
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
            FsKind::Ext4 => "ext4",
        }
    }
}

/// Where ISO 9660's primary volume descriptor is: the 2048 bytes at 32 KiB.
const ISO9660_DESCRIPTOR_OFFSET: usize = 32768;
/// How much of a device [`probe`] reads: up to the end of that descriptor's volume id.
const PROBE_BYTES: usize = 34 * 1024;

/// The volume id of an ISO 9660 primary volume descriptor (the 2048 bytes at 32 KiB).
pub fn iso9660_label(descriptor: &[u8]) -> Option<String> {
    if descriptor.len() < 72 || descriptor[0] != 1 || &descriptor[1..6] != b"CD001" {
        return None;
    }
    let id = std::str::from_utf8(&descriptor[40..72]).ok()?.trim_end();
    (!id.is_empty()).then(|| id.to_owned())
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

/// The label of an ext2/3/4 superblock (the 1024 bytes at offset 1024).
fn ext4_label(superblock: &[u8]) -> Option<String> {
    ext4::Superblock::parse(superblock)?
        .label()
        .map(str::to_owned)
}

/// The kind and label of the file system on `device`, if it is one we read; a device
/// shorter than a header is read as far as it goes.
pub fn probe(device: &str) -> Option<(FsKind, String)> {
    let mut file = File::open(device).ok()?;
    let mut head = vec![0u8; PROBE_BYTES];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    head.truncate(read);
    probe_head(&head)
}

/// [`probe`] on the bytes read from the start of a device: ISO 9660, ext4, then FAT.
fn probe_head(head: &[u8]) -> Option<(FsKind, String)> {
    if head.len() >= ISO9660_DESCRIPTOR_OFFSET + 72 {
        if let Some(label) = iso9660_label(&head[ISO9660_DESCRIPTOR_OFFSET..]) {
            return Some((FsKind::Iso9660, label));
        }
    }
    let superblock_end = ext4::SUPERBLOCK_OFFSET as usize + ext4::SUPERBLOCK_LEN;
    if head.len() >= superblock_end {
        if let Some(label) = ext4_label(&head[ext4::SUPERBLOCK_OFFSET as usize..superblock_end]) {
            return Some((FsKind::Ext4, label));
        }
    }
    if head.len() >= 512 {
        if let Some(label) = fat_label(&head[..512]) {
            return Some((FsKind::Vfat, label));
        }
    }
    None
}

/// Every block device (`/dev/<name>`) with a file system labelled `label`, in name order.
/// Whole disks come before their partitions, so a hybrid ISO on a USB stick is found as
/// the stick itself.
pub fn find_labelled(label: &str) -> Vec<(String, FsKind)> {
    block_devices()
        .into_iter()
        .filter_map(|dev| match probe(&dev) {
            Some((kind, found)) if found == label => Some((dev, kind)),
            _ => None,
        })
        .collect()
}

/// Every block device (`/dev/<name>`) with a labelled file system we read, with its kind
/// and label, in name order. CD drives are skipped (reading an empty one stalls).
pub fn all_labelled() -> Vec<(String, FsKind, String)> {
    block_devices()
        .into_iter()
        .filter(|dev| !dev.starts_with("/dev/sr"))
        .filter_map(|dev| probe(&dev).map(|(kind, label)| (dev, kind, label)))
        .collect()
}

/// The block device holding an ext4 file system with this label.
pub fn find_ext4_labelled(label: &str) -> Option<String> {
    find_first(|dev| read_ext4_label(dev).as_deref() == Some(label))
}

/// The block device holding a FAT file system with this volume label.
pub fn find_vfat_labelled(label: &str) -> Option<String> {
    find_first(|dev| read_fat_label(dev).as_deref() == Some(label))
}

/// The first block device (in name order) for which `matches` says yes. CD drives are
/// skipped: state is never on one, and reading an empty one stalls.
fn find_first(matches: impl Fn(&str) -> bool) -> Option<String> {
    block_devices()
        .into_iter()
        .filter(|dev| !dev.starts_with("/dev/sr"))
        .find(|dev| matches(dev))
}

fn read_fat_label(device: &str) -> Option<String> {
    let mut file = File::open(device).ok()?;
    let mut boot_sector = [0u8; 512];
    file.read_exact(&mut boot_sector).ok()?;
    fat_label(&boot_sector)
}

fn read_ext4_label(device: &str) -> Option<String> {
    let mut file = File::open(device).ok()?;
    let superblock = ext4::read(&mut file).ok()??;
    superblock.label().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat_boot_sector(kind: &[u8], label: &[u8]) -> Vec<u8> {
        let mut bs = vec![0u8; 512];
        bs[510] = 0x55;
        bs[511] = 0xAA;
        if kind == b"FAT32   " {
            bs[82..90].copy_from_slice(kind);
            bs[71..82].copy_from_slice(label);
        } else {
            bs[54..62].copy_from_slice(kind);
            bs[43..54].copy_from_slice(label);
        }
        bs
    }

    #[test]
    fn reads_fat32_and_fat16_labels() {
        let mut unsigned = vec![0u8; 512];
        unsigned[510] = 0x55;
        unsigned[511] = 0xAA;
        assert_eq!(fat_label(&unsigned), None);
        let esp = fat_boot_sector(b"FAT32   ", b"CLOUDOS-ESP");
        assert_eq!(fat_label(&esp).as_deref(), Some("CLOUDOS-ESP"));
        let cfg = fat_boot_sector(b"FAT16   ", b"CLOUDOS-CFG");
        assert_eq!(fat_label(&cfg).as_deref(), Some("CLOUDOS-CFG"));
        let unnamed = fat_boot_sector(b"FAT16   ", b"NO NAME    ");
        assert_eq!(fat_label(&unnamed), None);
    }

    #[test]
    fn iso9660_volume_ids_are_read_from_the_primary_descriptor() {
        let mut pvd = vec![0u8; 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].copy_from_slice(format!("{:<32}", "CLOUDOS").as_bytes());
        assert_eq!(iso9660_label(&pvd).as_deref(), Some("CLOUDOS"));
        pvd[0] = 2;
        assert_eq!(iso9660_label(&pvd), None);
        assert_eq!(iso9660_label(&[0u8; 10]), None);
    }

    #[test]
    fn an_ext4_label_reads_only_with_the_magic() {
        let mut sb = vec![0u8; 1024];
        sb[0x78..0x78 + 12].copy_from_slice(b"CLOUDOS-DATA");
        assert_eq!(ext4_label(&sb), None);
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        assert_eq!(ext4_label(&sb).as_deref(), Some("CLOUDOS-DATA"));
        assert_eq!(ext4_label(&sb[..100]), None);
    }

    /// What a device's head says it holds.
    type Found = Option<(FsKind, &'static str)>;

    #[test]
    fn a_device_head_says_its_file_system() {
        let mut ext4 = vec![0u8; PROBE_BYTES];
        ext4[1024 + 0x38..1024 + 0x3A].copy_from_slice(&[0x53, 0xEF]);
        ext4[1024 + 0x78..1024 + 0x78 + 11].copy_from_slice(b"CLOUDOS-CFG");
        let mut iso = vec![0u8; PROBE_BYTES];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        // Volume ids are padded with spaces.
        iso[32768 + 40..32768 + 72].copy_from_slice(format!("{:<32}", "CLOUDOS").as_bytes());
        // A hybrid ISO starts with an MBR.
        iso[510] = 0x55;
        iso[511] = 0xAA;
        let fat = fat_boot_sector(b"FAT32   ", b"CLOUDOS-CFG");
        let cases: &[(&str, &[u8], Found)] = &[
            ("ext4", &ext4, Some((FsKind::Ext4, "CLOUDOS-CFG"))),
            ("iso9660", &iso, Some((FsKind::Iso9660, "CLOUDOS"))),
            ("vfat", &fat, Some((FsKind::Vfat, "CLOUDOS-CFG"))),
            ("an ext4 cut short", &ext4[..2047], None),
            ("zeros", &[0u8; PROBE_BYTES], None),
            ("nothing", &[], None),
        ];
        for (what, head, found) in cases {
            let probed = probe_head(head);
            assert_eq!(
                probed.as_ref().map(|(k, l)| (*k, l.as_str())),
                *found,
                "{what}"
            );
        }
    }
}
