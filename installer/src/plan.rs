//! The partition layout of an installed disk, and the exact GPT bytes that describe it.
//!
//! Owns the numbers only: where each partition starts and ends, and the sectors of the
//! protective MBR and both GPT copies. Writing them to a disk, and the file systems inside
//! the partitions, belong to the install step. The headers and entries come from the `gpt`
//! crate, so there is no table or CRC code of our own.
//!
//! Layout (512-byte sectors, everything MiB-aligned):
//!
//! ```text
//! LBA 0        protective MBR (boot code in bytes 0..440 for BIOS GRUB)
//! LBA 1..33    primary GPT header and 128 entries
//! p1  2048     BIOS boot, 1 MiB: GRUB's core.img on BIOS machines
//! p2  4096     EFI system partition, 256 MiB: GRUB, system slots A and B
//! p3  next MiB data partition (/var/lib/cloudos) up to the last whole MiB
//!     last 33   backup GPT entries and header
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use cloudos_cluster::units::format_bytes;
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types;
use uuid::Uuid;

// image/disk-template must use the same numbers: the installer copies the template's
// BIOS-boot and ESP contents into these exact sectors, and GRUB's boot.img in the template
// points at core.img by LBA.

/// Bytes per sector the layout is made for.
pub const SECTOR_SIZE: u64 = 512;
/// One MiB in sectors: the alignment of every partition.
pub const MIB_SECTORS: u64 = 2048;
/// p1, BIOS boot: GRUB's core.img, found by LBA from the MBR boot code.
pub const BIOS_BOOT_START_LBA: u64 = 2048;
pub const BIOS_BOOT_END_LBA: u64 = 4095;
/// p2, the EFI system partition: GRUB for UEFI and both system slots.
pub const ESP_START_LBA: u64 = 4096;
pub const ESP_SIZE_BYTES: u64 = 256 << 20;
pub const ESP_END_LBA: u64 = ESP_START_LBA + ESP_SIZE_BYTES / SECTOR_SIZE - 1;
/// p3, the data partition, from the first MiB after the ESP to the end of the disk.
pub const DATA_START_LBA: u64 = (ESP_END_LBA + 1).div_ceil(MIB_SECTORS) * MIB_SECTORS;
/// Sectors 0..34: protective MBR, primary header, 128 entries of 128 bytes.
pub const PRIMARY_GPT_SECTORS: u64 = 34;
/// The last 33 sectors: backup entries and the backup header.
pub const BACKUP_GPT_SECTORS: u64 = 33;

/// The smallest disk CloudOS installs to: the ESP and a data partition with room for a
/// few container images. Smaller disks are refused up front rather than filling up later.
pub const MIN_DISK_BYTES: u64 = 4 << 30;

pub const BIOS_BOOT_NAME: &str = "bios";
pub const ESP_NAME: &str = "esp";
pub const DATA_NAME: &str = "cloudos-data";

/// 21686148-6449-6E6F-744E-656564454649, "BIOS boot partition".
pub const BIOS_BOOT_TYPE: Uuid = Uuid::from_u128(0x21686148_6449_6E6F_744E_656564454649);
/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "EFI system partition".
pub const ESP_TYPE: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// 0FC63DAF-8483-4772-8E79-3D69D8477DE4, "Linux filesystem".
pub const DATA_TYPE: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

/// What cannot be planned or built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "a disk of {size} is too small: CloudOS needs at least {min}",
        size = format_bytes(sectors.saturating_mul(SECTOR_SIZE)),
        min = format_bytes(MIN_DISK_BYTES)
    )]
    TooSmall { sectors: u64 },
    #[error("partition GUIDs must be distinct and not nil (the nil GUID marks an unused entry)")]
    BadGuids,
    #[error("cannot build the GPT: {0}")]
    Gpt(#[from] gpt::GptError),
    #[error("cannot build the protective MBR: {0}")]
    Mbr(#[from] gpt::mbr::MBRError),
    #[error("cannot build the GPT: {0}")]
    Io(#[from] io::Error),
}

/// One partition of the plan, inclusive LBAs as GPT stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedPartition {
    /// 1-based: `/dev/vda<number>`, or `p<number>` after a digit.
    pub number: u32,
    pub name: &'static str,
    pub type_guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl PlannedPartition {
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }
    pub fn size_bytes(&self) -> u64 {
        self.sectors() * SECTOR_SIZE
    }
}

/// The three partitions for a disk of `disk_sectors` 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub disk_sectors: u64,
    /// BIOS boot, ESP, data, in that order.
    pub partitions: [PlannedPartition; 3],
}

impl PartitionPlan {
    /// The plan for a disk this many sectors long; refused below [`MIN_DISK_BYTES`].
    pub fn for_disk(disk_sectors: u64) -> Result<PartitionPlan, PlanError> {
        if disk_sectors.saturating_mul(SECTOR_SIZE) < MIN_DISK_BYTES {
            return Err(PlanError::TooSmall {
                sectors: disk_sectors,
            });
        }
        // The last sector before the backup GPT, rounded down so the data partition ends
        // on a whole MiB.
        let first_backup = disk_sectors - BACKUP_GPT_SECTORS;
        let data_end = first_backup / MIB_SECTORS * MIB_SECTORS - 1;
        let part = |number, name, type_guid, first_lba, last_lba| PlannedPartition {
            number,
            name,
            type_guid,
            first_lba,
            last_lba,
        };
        Ok(PartitionPlan {
            disk_sectors,
            partitions: [
                part(
                    1,
                    BIOS_BOOT_NAME,
                    BIOS_BOOT_TYPE,
                    BIOS_BOOT_START_LBA,
                    BIOS_BOOT_END_LBA,
                ),
                part(2, ESP_NAME, ESP_TYPE, ESP_START_LBA, ESP_END_LBA),
                part(3, DATA_NAME, DATA_TYPE, DATA_START_LBA, data_end),
            ],
        })
    }

    pub fn bios_boot(&self) -> &PlannedPartition {
        &self.partitions[0]
    }
    pub fn esp(&self) -> &PlannedPartition {
        &self.partitions[1]
    }
    pub fn data(&self) -> &PlannedPartition {
        &self.partitions[2]
    }

    /// The first sector of the backup GPT.
    pub fn backup_gpt_lba(&self) -> u64 {
        self.disk_sectors - BACKUP_GPT_SECTORS
    }
}

/// The sectors that make a disk partitioned as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptTables {
    /// Sectors 0..34: protective MBR, primary header, primary entries; goes at offset 0.
    pub primary: Vec<u8>,
    /// The last 33 sectors: backup entries, then the backup header; goes at
    /// [`GptTables::backup_offset`].
    pub backup: Vec<u8>,
    /// Byte offset of [`GptTables::backup`] on the disk.
    pub backup_offset: u64,
}

impl GptTables {
    /// Puts boot code (the first 440 bytes of GRUB's boot.img, as patched into the disk
    /// template) into the protective MBR. Bytes 440..512 (disk signature, the protective
    /// partition record and 0x55AA) stay as built: GRUB itself keeps them when it installs.
    pub fn set_boot_code(&mut self, code: &[u8; 440]) {
        self.primary[..440].copy_from_slice(code);
    }

    /// Writes both copies. The backup goes first so that, if the write is cut short, no
    /// primary table exists that points at a missing backup; the caller syncs after.
    pub fn write_to<D: Write + Seek>(&self, disk: &mut D) -> io::Result<()> {
        disk.seek(SeekFrom::Start(self.backup_offset))?;
        disk.write_all(&self.backup)?;
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(&self.primary)?;
        disk.flush()
    }
}

/// Builds the protective MBR and both GPT copies for `plan`, with fixed GUIDs (the caller
/// makes them random, tests make them known). Nothing of the disk's size is allocated: the
/// `gpt` crate writes into a sparse in-memory disk.
pub fn gpt_tables(
    plan: &PartitionPlan,
    disk_guid: Uuid,
    part_guids: [Uuid; 3],
) -> Result<GptTables, PlanError> {
    let distinct = part_guids[0] != part_guids[1]
        && part_guids[1] != part_guids[2]
        && part_guids[0] != part_guids[2];
    if !distinct || disk_guid.is_nil() || part_guids.iter().any(Uuid::is_nil) {
        return Err(PlanError::BadGuids);
    }
    let mut disk = SparseDisk::new(plan.disk_sectors * SECTOR_SIZE);

    // The MBR's one partition covers the disk, saturating at 2 TiB as the UEFI spec says.
    let mbr_sectors = u32::try_from(plan.disk_sectors - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(mbr_sectors).overwrite_lba0(&mut disk)?;

    let mut gpt = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(disk, Some(disk_guid))?;
    let entries: BTreeMap<u32, Partition> = plan
        .partitions
        .iter()
        .zip(part_guids)
        .map(|(p, guid)| {
            let entry = Partition {
                part_type_guid: partition_types::Type {
                    guid: p.type_guid,
                    os: partition_types::OperatingSystem::None,
                },
                part_guid: guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.to_owned(),
            };
            (p.number, entry)
        })
        .collect();
    gpt.update_partitions(entries)?;
    let mut disk = gpt.write()?;

    let backup_offset = plan.backup_gpt_lba() * SECTOR_SIZE;
    Ok(GptTables {
        primary: disk.read_range(0, PRIMARY_GPT_SECTORS * SECTOR_SIZE),
        backup: disk.read_range(backup_offset, BACKUP_GPT_SECTORS * SECTOR_SIZE),
        backup_offset,
    })
}

/// A disk in memory that keeps only the sectors written to it; the rest reads as zeros.
/// The `gpt` crate needs a device as long as the disk (it finds the backup header from the
/// length), and a `Cursor<Vec<u8>>` of a 1 TB disk would need 1 TB of memory.
struct SparseDisk {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, Box<[u8; SECTOR_SIZE as usize]>>,
}

impl std::fmt::Debug for SparseDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SparseDisk({} bytes, {} sectors written)",
            self.len,
            self.sectors.len()
        )
    }
}

impl SparseDisk {
    fn new(len: u64) -> SparseDisk {
        SparseDisk {
            len,
            pos: 0,
            sectors: BTreeMap::new(),
        }
    }

    fn read_range(&mut self, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0; len as usize];
        self.pos = offset;
        let mut done = 0;
        while done < buf.len() {
            match self.read(&mut buf[done..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        buf
    }

    /// The sector under `pos`, the offset in it, and how many bytes of `want` fit in it.
    fn span(&self, want: usize) -> (u64, usize, usize) {
        let sector = self.pos / SECTOR_SIZE;
        let offset = (self.pos % SECTOR_SIZE) as usize;
        let left_on_disk = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = want.min(SECTOR_SIZE as usize - offset).min(left_on_disk);
        (sector, offset, n)
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (sector, offset, n) = self.span(buf.len());
        match self.sectors.get(&sector) {
            Some(data) => buf[..n].copy_from_slice(&data[offset..offset + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (sector, offset, n) = self.span(buf.len());
        if n == 0 && !buf.is_empty() {
            // A disk does not grow: writing past its end is a bug in the plan.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the disk",
            ));
        }
        let data = self
            .sectors
            .entry(sector)
            .or_insert_with(|| Box::new([0; SECTOR_SIZE as usize]));
        data[offset..offset + n].copy_from_slice(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the disk",
            )
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const GIB_SECTORS: u64 = (1 << 30) / SECTOR_SIZE;

    fn guids() -> (Uuid, [Uuid; 3]) {
        (
            Uuid::from_u128(0x11111111_2222_3333_4444_555555555555),
            [
                Uuid::from_u128(0xA1),
                Uuid::from_u128(0xA2),
                Uuid::from_u128(0xA3),
            ],
        )
    }

    #[test]
    fn the_layout_is_fixed_and_aligned() {
        assert_eq!(ESP_END_LBA, 528_383);
        assert_eq!(DATA_START_LBA, 528_384);
        for sectors in [
            MIN_DISK_BYTES / SECTOR_SIZE,
            8 * GIB_SECTORS,
            8 * GIB_SECTORS + 12_345,
            (1 << 40) / SECTOR_SIZE,
            (3 << 40) / SECTOR_SIZE + 7,
        ] {
            let plan = PartitionPlan::for_disk(sectors).expect("plan");
            let [bios, esp, data] = plan.partitions;
            assert_eq!((bios.first_lba, bios.last_lba), (2048, 4095));
            assert_eq!((esp.first_lba, esp.size_bytes()), (4096, 256 << 20));
            assert_eq!(data.first_lba % MIB_SECTORS, 0);
            assert_eq!((data.last_lba + 1) % MIB_SECTORS, 0, "{sectors}");
            assert!(data.last_lba < plan.backup_gpt_lba(), "{sectors}");
            assert!(
                plan.backup_gpt_lba() - data.last_lba <= MIB_SECTORS,
                "{sectors}: more than a MiB left unused"
            );
        }
    }

    #[test]
    fn disks_below_the_minimum_are_refused() {
        for sectors in [0, 1, 34 + 33, GIB_SECTORS, MIN_DISK_BYTES / SECTOR_SIZE - 1] {
            let err = PartitionPlan::for_disk(sectors).expect_err("too small");
            assert!(matches!(err, PlanError::TooSmall { .. }), "{sectors}");
        }
        let msg = PartitionPlan::for_disk(GIB_SECTORS)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "a disk of 1Gi is too small: CloudOS needs at least 4Gi"
        );
    }

    #[test]
    fn guids_must_be_distinct_and_set() {
        let plan = PartitionPlan::for_disk(8 * GIB_SECTORS).unwrap();
        let (disk, parts) = guids();
        let same = [parts[0], parts[0], parts[2]];
        let nil = [parts[0], Uuid::nil(), parts[2]];
        for (d, p) in [(disk, same), (disk, nil), (Uuid::nil(), parts)] {
            assert!(matches!(gpt_tables(&plan, d, p), Err(PlanError::BadGuids)));
        }
    }

    #[test]
    fn a_huge_disk_costs_no_memory() {
        // 16 TiB: a Cursor<Vec<u8>> could not hold it; the sparse disk keeps ~70 sectors.
        let plan = PartitionPlan::for_disk((16u64 << 40) / SECTOR_SIZE).unwrap();
        let (disk, parts) = guids();
        let tables = gpt_tables(&plan, disk, parts).expect("tables");
        assert_eq!(tables.primary.len(), 34 * 512);
        assert_eq!(tables.backup.len(), 33 * 512);
        assert_eq!(tables.backup_offset, (16u64 << 40) - 33 * 512);
        // The protective partition saturates at 2 TiB.
        assert_eq!(&tables.primary[446 + 12..446 + 16], &[0xFF; 4]);
    }

    #[test]
    fn the_mbr_keeps_boot_code_apart_from_its_table() {
        let plan = PartitionPlan::for_disk(8 * GIB_SECTORS).unwrap();
        let (disk, parts) = guids();
        let mut tables = gpt_tables(&plan, disk, parts).expect("tables");
        let before = tables.primary.clone();
        tables.set_boot_code(&[0xEB; 440]);
        assert_eq!(&tables.primary[..440], &[0xEB; 440]);
        assert_eq!(&tables.primary[440..], &before[440..]);
        // One protective record, type 0xEE from LBA 1, and the 0x55AA signature.
        assert_eq!(tables.primary[446 + 4], 0xEE);
        assert_eq!(&tables.primary[446 + 8..446 + 12], &1u32.to_le_bytes());
        assert_eq!(&tables.primary[510..512], &[0x55, 0xAA]);
        assert_eq!(&tables.primary[512..520], b"EFI PART");
        assert_eq!(&tables.backup[32 * 512..32 * 512 + 8], b"EFI PART");
    }

    fn sgdisk(args: &[&str]) -> String {
        let out = Command::new("sgdisk")
            .args(args)
            .output()
            .expect("sgdisk runs (install the gdisk package)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sgdisk {args:?}: {text}");
        text
    }

    #[test]
    fn sgdisk_reads_the_tables_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        let sectors = 8 * GIB_SECTORS;
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(sectors * SECTOR_SIZE).unwrap();
        let plan = PartitionPlan::for_disk(sectors).unwrap();
        let (disk, parts) = guids();
        let mut tables = gpt_tables(&plan, disk, parts).expect("tables");
        tables.set_boot_code(&[0x90; 440]);
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        tables.write_to(&mut file).unwrap();
        drop(file);
        let file = path.to_str().unwrap();

        let verify = sgdisk(&["-v", file]);
        assert!(verify.contains("No problems found"), "{verify}");

        let print = sgdisk(&["-p", file]);
        assert!(
            print.contains("Disk identifier (GUID): 11111111-2222-3333-4444-555555555555"),
            "{print}"
        );
        let rows: Vec<Vec<&str>> = print
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        let picked: Vec<(&str, &str, &str, &str, &str)> = rows
            .iter()
            .map(|r| (r[0], r[1], r[2], r[r.len() - 2], r[r.len() - 1]))
            .collect();
        assert_eq!(
            picked,
            [
                ("1", "2048", "4095", "EF02", "bios"),
                ("2", "4096", "528383", "EF00", "esp"),
                ("3", "528384", "16775167", "8300", "cloudos-data"),
            ],
            "{print}"
        );

        let info = sgdisk(&["-i", "3", file]);
        assert!(
            info.contains("Partition unique GUID: 00000000-0000-0000-0000-0000000000A3"),
            "{info}"
        );
        assert!(
            info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            "{info}"
        );

        // The same table made by sgdisk itself, as image/disk.sh makes the template's:
        // byte for byte the same MBR table, headers and entries.
        let theirs = tmp.path().join("sgdisk.img");
        std::fs::File::create(&theirs)
            .unwrap()
            .set_len(sectors * SECTOR_SIZE)
            .unwrap();
        let theirs = theirs.to_str().unwrap();
        let mut args = vec!["--disk-guid=11111111-2222-3333-4444-555555555555".to_owned()];
        for (p, guid) in plan.partitions.iter().zip(parts) {
            let n = p.number;
            args.push(format!("--new={n}:{}:{}", p.first_lba, p.last_lba));
            args.push(format!("--typecode={n}:{}", p.type_guid));
            args.push(format!("--change-name={n}:{}", p.name));
            args.push(format!("--partition-guid={n}:{guid}"));
        }
        args.push(theirs.to_owned());
        sgdisk(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut theirs = std::fs::File::open(theirs).unwrap();
        let mut read_at = |offset: u64, len: usize| {
            let mut buf = vec![0; len];
            theirs.seek(SeekFrom::Start(offset)).unwrap();
            theirs.read_exact(&mut buf).unwrap();
            buf
        };
        let primary = read_at(0, 34 * 512);
        let backup = read_at(tables.backup_offset, 33 * 512);
        assert_eq!(&tables.primary[446..], &primary[446..], "primary");
        assert_eq!(tables.backup, backup, "backup");
    }
}
