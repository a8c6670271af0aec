//! A file system on a block device, mounted for as long as a value lives: the disk
//! installer's short-lived mounts of the live medium, the answer file's partition and
//! the new disk's partitions.
//!
//! Owns only the mount and its undo. PID 1's own mounts (`init::mounts`) and the data
//! partition's (`init::datastore`) last for the whole boot and are not made here.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};

/// A file system mounted for the time this value lives.
pub struct Mounted {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    pub fn new(device: &str, dir: &Path, fstype: &str, flags: MsFlags) -> nix::Result<Mounted> {
        std::fs::create_dir_all(dir)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        mount(
            Some(device),
            dir,
            Some(fstype),
            flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts now, so that a failure is seen (dropping only logs it).
    pub fn unmount(mut self) -> nix::Result<()> {
        self.mounted = false;
        umount(&self.dir)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = umount(&self.dir) {
                log::warn!("cannot unmount {}: {e}", self.dir.display());
            }
        }
    }
}
