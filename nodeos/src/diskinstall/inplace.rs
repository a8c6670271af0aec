//! Setting up the medium the system runs from (a Raspberry Pi's SD card): the wizard
//! without its disk step, whose answers become `config.toml` on the mounted data
//! partition. Nothing is partitioned or formatted; the card keeps its data, and the node
//! restarts to take the new settings.

use std::path::Path;

use anyhow::{bail, Context as _};
use cloudos_installer::{Setup, Target};

use crate::blockdev::datapart::{self, DATA_DIR, DATA_LABEL};
use crate::blockdev::devices::{self, CLASS_BLOCK};
use crate::settings::CONFIG_FILE;

/// The wizard's target: the disk holding the mounted data partition. Refused when the
/// state lives in memory, where the settings would be gone at the restart.
pub fn target() -> anyhow::Result<Target> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let Some(partition) = datapart::mounted_device(&mounts) else {
        bail!(
            "no {DATA_LABEL} partition is mounted at {DATA_DIR}: settings written now would be \
             lost at the restart; nothing was written"
        );
    };
    let name = partition.trim_start_matches("/dev/");
    let disk = devices::disk_of(Path::new(CLASS_BLOCK), name).unwrap_or_else(|| name.to_owned());
    Ok(Target::InPlace {
        medium: describe(&disk),
        device: format!("/dev/{disk}"),
    })
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
    fn the_medium_is_named_for_a_person() {
        assert_eq!(describe("mmcblk0"), "this SD card (/dev/mmcblk0)");
        assert!(describe("sda").contains("/dev/sda"));
    }
}
