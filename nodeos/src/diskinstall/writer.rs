//! Writes a checked [`Plan`] to its disk: the template's partitions, slot A, the node's
//! settings, then the partition table.
//!
//! The order is what makes a power cut harmless: until the very last step the disk has
//! no partition table at all, so firmware finds nothing to boot and the kernel no
//! partitions; the table (backup first, then the primary with GRUB's boot code) goes on
//! only once everything it points at is complete and synced.
//!
//! 1. zero the first 34 and the last 33 sectors (any old MBR/GPT), sync, re-read;
//! 2. stream the gzip'd template onto the disk for the regions of p1, p2 and p3 only;
//! 3. tell the kernel about p2 and p3 at their planned places (BLKPG, no table), copy the
//!    kernel and initramfs into /slot-a on p2, grow p3's ext4 to the planned size and
//!    write config.toml on it (and, for a restored master, restore its backup there: the
//!    passphrase stays in memory, no copy of the backup is left); forget the partitions
//!    again;
//! 4. write the GPT and the protective MBR with GRUB's boot code, sync, re-read.
//!
//! Nothing is written before step 1: every input is opened and checked first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use cloudos_installer::plan::{
    self, PartitionPlan, BACKUP_GPT_SECTORS, BIOS_BOOT_START_LBA, DATA_START_LBA,
    PRIMARY_GPT_SECTORS, SECTOR_SIZE,
};
use cloudos_installer::Plan;
use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::mount::MsFlags;
use uuid::Uuid;

use crate::blockdev::devices::{partition_path, wait_for_node};
use crate::blockdev::mount::Mounted;
use crate::blockdev::{blkpg, ext4};

/// Where the target's partitions are mounted while they are filled.
const WORK_DIR: &str = "/run/cloudos/install";
/// The template is read in pieces of this size.
const CHUNK: usize = 1 << 20;
/// Everything before p1 in the template: the MBR, the primary GPT and the gap.
const HEAD_BYTES: usize = (BIOS_BOOT_START_LBA * SECTOR_SIZE) as usize;

/// What goes onto the disk besides the plan: files on the live medium.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `disk-template.img.gz` (image/disk.sh, gzip'd by iso/build.sh).
    pub template_gz: PathBuf,
    /// Slot A's kernel and initramfs: the ones the live system booted.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The etcd pack a master among several runs etcd from (roles/etcd_pack.rs), when the
    /// medium has one.
    pub etcd_pack: Option<PathBuf>,
    /// The release's signed manifest and signature, when the medium has them (an ISO of a
    /// signed build): slot A keeps them so that a master installed from it offers its
    /// release (upgrade/offer.rs).
    pub signed: Option<[PathBuf; 2]>,
}

/// The template's head, checked against the plan.
struct Template {
    stream: GzDecoder<File>,
    boot_code: [u8; 440],
    /// The first byte after the template's p3 (its data file system).
    copy_end: u64,
}

/// One GPT entry's first and last LBA.
fn entry_lbas(head: &[u8], index: usize) -> (u64, u64) {
    let at = 2 * SECTOR_SIZE as usize + index * 128;
    let le = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or([0; 8]));
    (le(at + 32), le(at + 40))
}

/// Opens the template and checks that its layout is the plan's: boot code in LBA 0, p1
/// and p2 where the plan puts them, p3 starting where the plan's does and no bigger.
fn open_template(path: &Path, plan: &PartitionPlan) -> anyhow::Result<Template> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut stream = GzDecoder::new(file);
    let mut head = vec![0u8; HEAD_BYTES];
    stream
        .read_exact(&mut head)
        .with_context(|| format!("{} is not a gzip'd disk template", path.display()))?;
    ensure!(
        head[510..512] == [0x55, 0xAA] && &head[512..520] == b"EFI PART",
        "{} is not a GPT disk image",
        path.display()
    );
    // PCs boot from the MBR's code (BIOS); ARM64 machines boot UEFI only, and their
    // template has none.
    ensure!(
        !cfg!(target_arch = "x86_64") || head[..440].windows(4).any(|w| w == b"GRUB"),
        "{} has no GRUB boot code in its MBR",
        path.display()
    );
    let [bios, esp, data] = [0, 1, 2].map(|i| entry_lbas(&head, i));
    let planned = |p: &plan::PlannedPartition| (p.first_lba, p.last_lba);
    ensure!(
        bios == planned(plan.bios_boot()) && esp == planned(plan.esp()),
        "the template's partitions (p1 {bios:?}, p2 {esp:?}) are not where the installer \
         puts them ({:?}, {:?}): rebuild it with image/disk.sh",
        planned(plan.bios_boot()),
        planned(plan.esp())
    );
    ensure!(
        data.0 == DATA_START_LBA && data.1 >= data.0 && data.1 <= plan.data().last_lba,
        "the template's data partition {data:?} does not fit the plan's {:?}",
        planned(plan.data())
    );
    let mut boot_code = [0u8; 440];
    boot_code.copy_from_slice(&head[..440]);
    Ok(Template {
        stream,
        boot_code,
        copy_end: (data.1 + 1) * SECTOR_SIZE,
    })
}

fn random_guid() -> anyhow::Result<Uuid> {
    Ok(uuid::Builder::from_random_bytes(random_bytes()?).into_uuid())
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for this disk's ids"))?;
    Ok(bytes)
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(2));
    if let Ok(style) = ProgressStyle::with_template(
        // Under 80 columns: a wrapped bar on a serial console redraws as two lines.
        "{msg} [{bar:24}] {bytes:>10}/{total_bytes:<10} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Writes `plan` to its disk with `inputs`; `settings` is the text of config.toml.
pub fn write(plan: &Plan, inputs: &Inputs, settings: &str) -> anyhow::Result<()> {
    let disk_path = plan.disk.path.as_str();
    let parts = &plan.partitions;

    // Everything read and checked before the first write.
    let mut template = open_template(&inputs.template_gz, parts)?;
    for file in [&inputs.kernel, &inputs.initramfs] {
        let meta = std::fs::metadata(file)
            .with_context(|| format!("cannot read {} for slot A", file.display()))?;
        ensure!(meta.len() > 0, "{} is empty", file.display());
    }
    let mut tables = plan::gpt_tables(
        parts,
        random_guid()?,
        [random_guid()?, random_guid()?, random_guid()?],
    )?;
    tables.set_boot_code(&template.boot_code);
    // O_EXCL on a whole disk fails while any of its partitions is mounted or in use.
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(disk_path)
        .with_context(|| {
            format!("cannot open {disk_path} for writing (is one of its partitions mounted?)")
        })?;
    let size = disk
        .seek(SeekFrom::End(0))
        .with_context(|| format!("cannot find the size of {disk_path}"))?;
    ensure!(
        size == parts.disk_sectors * SECTOR_SIZE,
        "{disk_path} is {size} bytes now, not the {} it had when the install was planned",
        parts.disk_sectors * SECTOR_SIZE
    );

    // 1. No partition table any more.
    log::info!("install: erasing the partition tables of {disk_path}");
    let zeros = vec![0u8; (PRIMARY_GPT_SECTORS * SECTOR_SIZE) as usize];
    let write_at = |disk: &mut File, offset: u64, bytes: &[u8]| -> std::io::Result<()> {
        disk.seek(SeekFrom::Start(offset))?;
        disk.write_all(bytes)
    };
    write_at(&mut disk, 0, &zeros)
        .and_then(|_| {
            write_at(
                &mut disk,
                parts.backup_gpt_lba() * SECTOR_SIZE,
                &zeros[..(BACKUP_GPT_SECTORS * SECTOR_SIZE) as usize],
            )
        })
        .and_then(|_| disk.sync_all())
        .with_context(|| format!("cannot erase the partition tables of {disk_path}"))?;
    blkpg::reread_partitions(&disk).with_context(|| {
        format!("the kernel cannot drop the old partitions of {disk_path} (one is in use)")
    })?;

    // 2. The template's p1, p2 and p3.
    let start = BIOS_BOOT_START_LBA * SECTOR_SIZE;
    let total = template.copy_end - start;
    log::info!(
        "install: writing the system partitions to {disk_path} ({} MiB)",
        total >> 20
    );
    let bar = progress_bar(total, "system");
    disk.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut next_mark = 25;
    while done < total {
        let n = usize::try_from((total - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        template
            .stream
            .read_exact(&mut buf[..n])
            .with_context(|| format!("{} ends early", inputs.template_gz.display()))?;
        disk.write_all(&buf[..n])
            .with_context(|| format!("writing {disk_path} at byte {}", start + done))?;
        done += n as u64;
        bar.set_position(done);
        let percent = done * 100 / total;
        if percent >= next_mark {
            // A line per quarter for the log (the bar only redraws itself).
            bar.suspend(|| log::info!("install: system partitions {percent}% written"));
            next_mark += 25;
        }
    }
    disk.sync_all()
        .with_context(|| format!("cannot sync {disk_path}"))?;
    bar.finish_and_clear();
    drop(disk);

    // 3. Slot A and the settings, on partitions only the kernel knows about.
    let disk = File::open(disk_path).with_context(|| format!("cannot open {disk_path}"))?;
    let filled = fill_partitions(&disk, disk_path, plan, inputs, settings);
    for number in [3, 2] {
        if let Err(e) = blkpg::del_partition(&disk, number) {
            log::debug!("forgetting partition {number} of {disk_path}: {e}");
        }
    }
    filled?;

    // 4. The partition table: from now on the disk is installed.
    log::info!("install: writing the partition table of {disk_path}");
    let mut disk = OpenOptions::new()
        .write(true)
        .open(disk_path)
        .with_context(|| format!("cannot open {disk_path}"))?;
    tables
        .write_to(&mut disk)
        .and_then(|_| disk.sync_all())
        .with_context(|| format!("cannot write the partition table of {disk_path}"))?;
    if let Err(e) = blkpg::reread_partitions(&disk) {
        // The table is on the disk; the next boot reads it.
        log::warn!("the kernel did not re-read {disk_path}'s partitions: {e}");
    }
    Ok(())
}

/// Step 3: slot A on the ESP, the grown data file system and its config.toml.
fn fill_partitions(
    disk: &File,
    disk_path: &str,
    plan: &Plan,
    inputs: &Inputs,
    settings: &str,
) -> anyhow::Result<()> {
    let parts = &plan.partitions;
    for p in [parts.esp(), parts.data()] {
        blkpg::add_partition(disk, p.number, p.offset_bytes(), p.size_bytes()).with_context(
            || {
                format!(
                    "cannot tell the kernel about partition {} of {disk_path}",
                    p.number
                )
            },
        )?;
    }
    let esp_dev = partition_path(disk_path, parts.esp().number);
    let data_dev = partition_path(disk_path, parts.data().number);
    for dev in [&esp_dev, &data_dev] {
        ensure!(
            wait_for_node(dev, Duration::from_secs(10)),
            "{dev} did not appear"
        );
    }

    // This disk's own ids (see `ids`), before anything mounts the file systems.
    let esp_file = File::options()
        .read(true)
        .write(true)
        .open(&esp_dev)
        .with_context(|| format!("cannot open {esp_dev}"))?;
    super::ids::set_fat32_volume_id(&esp_file, random_bytes()?)
        .with_context(|| format!("on {esp_dev}"))?;
    drop(esp_file);

    // Slot A: the kernel and initramfs this live system runs.
    let esp = Mounted::new(
        &esp_dev,
        &Path::new(WORK_DIR).join("esp"),
        "vfat",
        MsFlags::MS_NOEXEC,
    )
    .with_context(|| format!("cannot mount the new ESP {esp_dev}"))?;
    let slot = esp.dir.join("slot-a");
    ensure!(slot.is_dir(), "the template's ESP has no /slot-a");
    log::info!("install: copying the kernel and initramfs into slot A");
    for (from, name) in [
        (&inputs.kernel, "vmlinuz"),
        (&inputs.initramfs, "initramfs.img"),
    ] {
        copy_synced(from, &slot.join(name))?;
    }
    if let Some(pack) = &inputs.etcd_pack {
        copy_synced(pack, &slot.join(cloudos_release::ETCD_PACK))?;
    }
    if let Some([manifest, signature]) = &inputs.signed {
        copy_synced(manifest, &slot.join(cloudos_release::bundle::MANIFEST))?;
        copy_synced(signature, &slot.join(cloudos_release::bundle::SIGNATURE))?;
    }
    // What a later rollback to slot A says it goes back to.
    std::fs::write(
        slot.join(crate::upgrade::slot::VERSION_FILE),
        cloudos_release::version().to_string(),
    )
    .context("cannot write slot A's version")?;
    esp.unmount()
        .with_context(|| format!("cannot unmount the ESP {esp_dev}"))?;

    // The data partition: grown to the plan's size, with the node's settings.
    let superblock = File::open(&data_dev)
        .and_then(|mut part| ext4::read(&mut part))
        .with_context(|| format!("cannot read the superblock of {data_dev}"))?;
    let Some(block_size) = superblock.and_then(|sb| sb.block_size()) else {
        bail!("{data_dev} holds no ext4 file system after the template was written");
    };
    let data = Mounted::new(
        &data_dev,
        &Path::new(WORK_DIR).join("data"),
        "ext4",
        MsFlags::empty(),
    )
    .with_context(|| format!("cannot mount the new data partition {data_dev}"))?;
    let new_blocks = parts.data().size_bytes() / block_size;
    log::info!(
        "install: growing the data file system to {} MiB",
        parts.data().size_bytes() >> 20
    );
    let dir = File::open(&data.dir).with_context(|| format!("opening {}", data.dir.display()))?;
    ext4::resize(&dir, new_blocks)
        .with_context(|| format!("cannot grow the ext4 file system on {data_dev}"))?;
    super::ids::set_ext4_uuid(&dir, *random_guid()?.as_bytes())
        .with_context(|| format!("cannot give {data_dev} a new UUID"))?;
    drop(dir);
    let config = data.dir.join("config.toml");
    cloudos_cluster::files::write_private(&config, settings.as_bytes())
        .with_context(|| format!("cannot write {}", config.display()))?;
    if let Some(restore) = &plan.restore {
        log::info!(
            "install: restoring cluster {:?} from {} into the new data partition",
            restore.info.cluster,
            restore.backup
        );
        let passphrase =
            cloudos_master::backup::Passphrase::for_restore(restore.passphrase.expose());
        crate::roles::restore::into_new_data_partition(&restore.backup, &passphrase, &data.dir)
            .context("the backup was not restored; the disk has no partition table yet")?;
    }
    nix::unistd::sync();
    data.unmount()
        .with_context(|| format!("cannot unmount the data partition {data_dev}"))?;
    Ok(())
}

fn copy_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .and_then(|_| File::open(to)?.sync_all())
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_entries_are_read_from_the_head() {
        let mut head = vec![0u8; HEAD_BYTES];
        let at = 2 * 512 + 128 * 2;
        head[at + 32..at + 40].copy_from_slice(&528_384u64.to_le_bytes());
        head[at + 40..at + 48].copy_from_slice(&659_455u64.to_le_bytes());
        assert_eq!(entry_lbas(&head, 2), (528_384, 659_455));
        assert_eq!(entry_lbas(&head, 0), (0, 0));
    }

    #[test]
    fn the_installers_copy_starts_at_p1() {
        assert_eq!(HEAD_BYTES as u64, 2048 * 512);
        assert_eq!(plan::ESP_START_LBA, 4096);
    }
}
