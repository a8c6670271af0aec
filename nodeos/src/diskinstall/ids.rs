//! Fresh file-system ids for each install. The template's ESP volume id and data UUID are
//! fixed (so the template builds byte for byte); copied as they are, every CloudOS disk
//! would carry the same ones, and two of them in one machine (a disk moved between nodes)
//! would be told apart by nothing. GRUB and nodeos find both partitions by label, so a new
//! id changes nothing for the boot.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use anyhow::Context as _;

/// Where FAT32 keeps its volume id (BS_VolID) in the boot sector.
const FAT32_VOLUME_ID_OFFSET: u64 = 0x43;
/// Where FAT32 says its backup boot sector is (BPB_BkBootSec), in sectors.
const FAT32_BACKUP_SECTOR_FIELD: usize = 0x32;

/// Writes `volume_id` into the FAT32 file system on `esp` (not mounted): its boot sector
/// and the backup copy the BPB names.
pub fn set_fat32_volume_id(esp: &File, volume_id: [u8; 4]) -> anyhow::Result<()> {
    let mut boot = [0u8; 512];
    esp.read_exact_at(&mut boot, 0)
        .context("reading the ESP's boot sector")?;
    for offset in volume_id_offsets(&boot)? {
        esp.write_all_at(&volume_id, offset)
            .context("writing the ESP's volume id")?;
    }
    esp.sync_all().context("syncing the ESP")?;
    Ok(())
}

/// The byte offsets of the volume id in the boot sector and its backup.
pub fn volume_id_offsets(boot: &[u8; 512]) -> anyhow::Result<Vec<u64>> {
    anyhow::ensure!(
        boot[510..512] == [0x55, 0xAA] && &boot[82..87] == b"FAT32",
        "the ESP is not a FAT32 file system"
    );
    let bytes_per_sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let backup = u64::from(u16::from_le_bytes([
        boot[FAT32_BACKUP_SECTOR_FIELD],
        boot[FAT32_BACKUP_SECTOR_FIELD + 1],
    ]));
    let mut offsets = vec![FAT32_VOLUME_ID_OFFSET];
    // 0 (and 0xFFFF) mean "no backup".
    if backup != 0 && backup != 0xFFFF {
        offsets.push(backup * bytes_per_sector + FAT32_VOLUME_ID_OFFSET);
    }
    Ok(offsets)
}

/// `struct fsuuid` with room for a 16-byte UUID (linux/ext4.h).
#[repr(C)]
pub struct FsUuid {
    len: u32,
    flags: u32,
    uuid: [u8; 16],
}

// EXT4_IOC_SETFSUUID = _IOW('f', 44, struct fsuuid): the size in the number is the
// header's (8 bytes); the UUID follows it.
nix::ioctl_write_ptr_bad!(
    ext4_set_fs_uuid,
    nix::request_code_write!(b'f', 44, 8),
    FsUuid
);

/// Gives the mounted ext4 file system at `dir` a new UUID, online (Linux 6.0+; the
/// template is made with `metadata_csum_seed`, so no checksum has to be rewritten).
pub fn set_ext4_uuid(dir: &File, uuid: [u8; 16]) -> anyhow::Result<()> {
    let arg = FsUuid {
        len: 16,
        flags: 0,
        uuid,
    };
    // SAFETY: `arg` is a valid fsuuid with a 16-byte UUID, alive across the call.
    unsafe { ext4_set_fs_uuid(dir.as_raw_fd(), &arg) }
        .context("EXT4_IOC_SETFSUUID (needs Linux 6.0 and metadata_csum_seed)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_id_is_in_the_boot_sector_and_its_backup() {
        let mut boot = [0u8; 512];
        boot[11..13].copy_from_slice(&512u16.to_le_bytes());
        boot[0x32..0x34].copy_from_slice(&6u16.to_le_bytes());
        boot[82..87].copy_from_slice(b"FAT32");
        boot[510] = 0x55;
        boot[511] = 0xAA;
        assert_eq!(volume_id_offsets(&boot).unwrap(), [0x43, 6 * 512 + 0x43]);
        boot[0x32..0x34].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(volume_id_offsets(&boot).unwrap(), [0x43]);
        boot[82..87].copy_from_slice(b"FAT16");
        assert!(volume_id_offsets(&boot).is_err());
    }

    #[test]
    fn the_ioctl_number_is_the_kernels() {
        // EXT4_IOC_SETFSUUID from linux/ext4.h on x86_64 and aarch64.
        assert_eq!(nix::request_code_write!(b'f', 44, 8), 0x4008_662c);
    }
}
