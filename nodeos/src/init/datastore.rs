//! Where the node's state lives: the data partition (`blockdev::datapart`) mounted
//! at /var/lib/cloudos and grown to the end of its disk (`blockdev::grow`), or,
//! without one (the live ISO), a tmpfs there.
//!
//! Owns that choice and what the boot logs about it; finding and growing the partition
//! are `blockdev`'s.

use nix::mount::{mount, MsFlags};

use crate::blockdev::datapart::{self, DATA_DIR, DATA_LABEL};
use crate::blockdev::ext4;
use crate::kmod::Loader;

/// Where the state lives, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStore {
    Disk(String),
    Memory,
}

impl std::fmt::Display for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataStore::Disk(dev) => write!(f, "{dev} ({DATA_LABEL})"),
            DataStore::Memory => f.write_str("memory (no CLOUDOS-DATA partition)"),
        }
    }
}

pub fn mount_data(loader: Option<&Loader>) -> DataStore {
    let _ = std::fs::create_dir_all(DATA_DIR);
    if let Some(device) = datapart::find() {
        let quotas = has_project_quotas(&device);
        if let Some(loader) = loader {
            // The quota format is a module in Debian's kernel; without it a file system
            // with quota inodes does not mount at all.
            let modules: &[&str] = if quotas {
                &["ext4", "quota_v2"]
            } else {
                &["ext4"]
            };
            for module in modules {
                if let Err(e) = loader.load(module) {
                    log::warn!("cannot load {module}: {e}");
                }
            }
        }
        // Limits are enforced only when asked at mount; a file system made before volume
        // size limits existed mounts as before, and a volume with a limit is refused there
        // with its reason (decision 64).
        let options = quotas.then_some("prjquota");
        match mount(
            Some(device.as_str()),
            DATA_DIR,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            options,
        ) {
            Ok(()) => {
                grow(&device);
                return DataStore::Disk(device);
            }
            Err(e) => {
                log::error!("cannot mount {device} at {DATA_DIR}: {e}; keeping state in memory")
            }
        }
    }
    if let Err(e) = mount(
        Some("cloudos-data"),
        DATA_DIR,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    ) {
        log::error!("cannot mount a tmpfs at {DATA_DIR}: {e}");
    }
    DataStore::Memory
}

/// Whether the file system on `device` keeps project quotas (volume size limits).
fn has_project_quotas(device: &str) -> bool {
    let superblock = std::fs::File::open(device).and_then(|mut f| ext4::read(&mut f));
    match superblock {
        Ok(Some(sb)) => sb.has_project_quotas(),
        _ => false,
    }
}

/// Moves the state from memory to the data partition on `device`, found
/// after the boot had started on memory (a disk that probed late). The
/// services are stopped, so nothing holds the memory store: what they kept
/// there is dropped, the disk's state is what counts.
pub fn adopt_late(device: &str, loader: Option<&Loader>) -> DataStore {
    if let Err(e) = nix::mount::umount2(DATA_DIR, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("cannot unmount the memory store at {DATA_DIR}: {e}");
    }
    let store = mount_data(loader);
    if store == DataStore::Memory {
        log::error!("the data partition {device} is gone again; state stays in memory");
    }
    store
}

/// Grows the mounted data partition into free space after it; a failure only
/// costs the space, never the data, so it is logged and boot goes on.
fn grow(device: &str) {
    const MIB: u64 = 1024 * 1024;
    match crate::blockdev::grow::grow_to_fill(device, std::path::Path::new(DATA_DIR)) {
        Ok(Some(g)) => log::info!(
            "grew the data partition {} from {} MiB to {} MiB",
            g.device,
            g.old_bytes / MIB,
            g.new_bytes / MIB
        ),
        Ok(None) => {}
        Err(e) => log::warn!("cannot grow the data partition {device}: {e}"),
    }
}
