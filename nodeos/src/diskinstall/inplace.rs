//! Setting up the medium the system runs from (a Raspberry Pi's SD card): the wizard
//! without its disk step, whose answers become `config.toml` on the mounted data
//! partition. Nothing is partitioned or formatted; the card keeps its data, and the node
//! restarts to take the new settings.

use std::path::Path;

use anyhow::{bail, Context as _};
use cloudos_installer::{Setup, Target};

use crate::init::datapart::{DATA_DIR, DATA_LABEL};
use crate::settings::CONFIG_FILE;

/// The wizard's target: the disk holding the mounted data partition. Refused when the
/// state lives in memory, where the settings would be gone at the restart.
pub fn target() -> anyhow::Result<Target> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let Some(partition) = data_device(&mounts) else {
        bail!(
            "no {DATA_LABEL} partition is mounted at {DATA_DIR}: settings written now would be \
             lost at the restart; nothing was written"
        );
    };
    let name = partition.trim_start_matches("/dev/");
    let disk = disk_of(Path::new("/sys/class/block"), name).unwrap_or_else(|| name.to_owned());
    Ok(Target::InPlace {
        medium: describe(&disk),
        device: format!("/dev/{disk}"),
    })
}

/// The block device mounted at the data directory, from `/proc/self/mounts`; `None` for
/// the tmpfs a node without a data partition keeps its state in.
pub fn data_device(mounts: &str) -> Option<String> {
    mounts
        .lines()
        // The last mount at a path is the one in effect.
        .rev()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        })
        .find(|(_, at)| *at == DATA_DIR)
        .map(|(device, _)| device)
        .filter(|device| device.starts_with("/dev/"))
        .map(str::to_owned)
}

/// The disk a partition belongs to (`mmcblk0p2` → `mmcblk0`), from sysfs, where
/// `/sys/class/block/<part>` links into `…/block/<disk>/<part>`. `None` for a whole disk.
pub fn disk_of(class_block: &Path, name: &str) -> Option<String> {
    let sys = class_block.join(name);
    if !sys.join("partition").exists() {
        return None;
    }
    let real = std::fs::canonicalize(&sys).ok()?;
    real.parent()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// How the wizard names the medium to a person.
pub fn describe(disk: &str) -> String {
    if disk.starts_with("mmcblk") {
        format!("this SD card (/dev/{disk})")
    } else {
        format!("the disk this system runs from (/dev/{disk})")
    }
}

/// Writes the checked settings as `config.toml` on the data partition: readable by root
/// only (a compute node's carries its join token), replaced atomically and synced, so a
/// power cut leaves the old settings or the new ones.
pub fn write_settings(setup: &Setup) -> anyhow::Result<()> {
    let text = super::settings_text(&setup.answers);
    cloudos_cluster::files::write_private(CONFIG_FILE, text.as_bytes())
        .with_context(|| format!("cannot write {CONFIG_FILE}"))?;
    // The rename is durable once the directory is.
    std::fs::File::open(DATA_DIR)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {DATA_DIR}"))?;
    log::info!(
        "setup: {} as {}: settings written to {CONFIG_FILE}",
        setup.answers.hostname,
        setup.answers.role.name()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_device_is_the_block_device_mounted_at_the_data_dir() {
        let card = "/dev/root / ext4 rw 0 0\n\
                    /dev/mmcblk0p2 /var/lib/cloudos ext4 rw,nosuid,nodev 0 0\n";
        assert_eq!(data_device(card).as_deref(), Some("/dev/mmcblk0p2"));
        let live = "cloudos-data /var/lib/cloudos tmpfs rw,nosuid,nodev,mode=700 0 0\n";
        assert_eq!(data_device(live), None);
        assert_eq!(data_device("proc /proc proc rw 0 0\n"), None);
        // Mounted over: the later line wins.
        let over = "/dev/sda3 /var/lib/cloudos ext4 rw 0 0\n\
                    cloudos-data /var/lib/cloudos tmpfs rw 0 0\n";
        assert_eq!(data_device(over), None);
    }

    #[test]
    fn a_partition_names_its_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = dir.path().join("devices/mmc/block/mmcblk0");
        std::fs::create_dir_all(disk.join("mmcblk0p2")).expect("sysfs");
        std::fs::write(disk.join("mmcblk0p2/partition"), "2\n").expect("sysfs");
        let class = dir.path().join("class/block");
        std::fs::create_dir_all(&class).expect("sysfs");
        std::os::unix::fs::symlink(disk.join("mmcblk0p2"), class.join("mmcblk0p2")).expect("link");
        std::os::unix::fs::symlink(&disk, class.join("mmcblk0")).expect("link");
        assert_eq!(disk_of(&class, "mmcblk0p2").as_deref(), Some("mmcblk0"));
        assert_eq!(disk_of(&class, "mmcblk0"), None);
        assert_eq!(describe("mmcblk0"), "this SD card (/dev/mmcblk0)");
        assert!(describe("sda").contains("/dev/sda"));
    }
}
