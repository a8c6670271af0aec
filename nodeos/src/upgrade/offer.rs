//! A master offers the release it runs: its own bundle is among the kept releases, so
//! that nodes can be brought to the master's version without anyone uploading it (a node
//! installed from an older ISO, a node rolled back).
//!
//! The system the master booted is a directory holding its kernel, its initramfs and the
//! release's signed manifest: its system slot on the ESP (the installer and the slot writer
//! put them there), or the live medium's `/boot` (iso/build.sh). The running `nodeos` is the
//! third part. `Releases::offer` assembles the bundle and checks it in full, as an upload.

use std::path::Path;

use cloudos_cluster::api::ReleaseInfo;
use cloudos_master::releases::Releases;

use super::slot;
use crate::diskinstall::medium;
use crate::init::bootslot;
use crate::settings::Slot;

/// The running binary: on the appliance the initramfs's `/init`, byte for byte the
/// bundle's `nodeos` part.
const SELF_EXE: &str = "/proc/self/exe";

/// Keeps the release this master runs among its releases, from the slot it booted (or the
/// live medium when it booted none). `None` when it is kept already.
pub fn offer_running(data_dir: &Path, booted: Option<Slot>) -> anyhow::Result<Option<ReleaseInfo>> {
    let releases = Releases::new(&data_dir.join("master"), cloudos_release::trusted());
    // Kept since an earlier boot of this release (every boot but its first): nothing to
    // mount or read.
    if let Some(arch) = cloudos_release::Arch::running() {
        if releases
            .path(&cloudos_release::version().to_string(), arch.as_str())
            .is_ok()
        {
            return Ok(None);
        }
    }
    let nodeos = Path::new(SELF_EXE);
    let offered = match booted {
        Some(booted) => {
            let esp = bootslot::mount_esp()
                .map_err(|e| anyhow::anyhow!("cannot reach the boot partition: {e}"))?;
            releases.offer(&slot::slot_dir(esp.path(), booted), nodeos)?
        }
        // Booted by a boot loader's -kernel, or from the network: no system to offer.
        None if !medium::appears() => {
            log::info!("this master booted neither a slot nor a CloudOS medium: it offers no release of its own");
            None
        }
        None => {
            let medium = medium::mount_medium()?;
            releases.offer(&medium.dir.join(medium::SYSTEM_DIR), nodeos)?
        }
    };
    Ok(offered)
}

/// [`offer_running`] in the background, said in the log: a master serves at once, and one
/// that cannot offer its release (a slot installed before slots kept their manifest, a
/// build without a release key) still serves.
pub fn offer_in_background(data_dir: &Path, booted: Option<Slot>) {
    let data_dir = data_dir.to_owned();
    let spawned = std::thread::Builder::new()
        .name("offer-release".into())
        .spawn(move || match offer_running(&data_dir, booted) {
            Ok(Some(info)) => log::info!(
                "offering the release this master runs: {} for {} ({} bytes)",
                info.version,
                info.arch,
                info.size
            ),
            Ok(None) => log::debug!("the release this master runs is kept already"),
            Err(e) => log::warn!("this master does not offer the release it runs: {e:#}"),
        });
    if let Err(e) = spawned {
        log::warn!("cannot start offering the release this master runs: {e}");
    }
}
