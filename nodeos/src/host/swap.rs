//! Which file is `nodeos`: the upgrade puts a checked new binary in place keeping the
//! running one as `nodeos.previous`, and the roll-back puts the previous one back keeping
//! the failed one as `nodeos.failed`.
//!
//! Every step is a hard link or a rename within one directory, so at every moment
//! `nodeos` is a whole binary (the old or the new one, never a missing or half-written
//! file): a power cut or a crash midway leaves a host that starts. The directory is synced
//! after each swap. Pure file operations on a [`Layout`]; no process, no systemd.

use std::fs;
use std::io;
use std::path::Path;

use super::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("there is no previous binary ({0}) to go back to: no upgrade happened since the install, or it was rolled back already")]
    NoPrevious(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> SwapError {
    move |source| SwapError::Io { what, source }
}

/// `to` becomes another name of `from`, replacing what `to` was (a link to a temporary
/// name, then a rename over `to`).
fn keep_as(layout: &Layout, from: &Path, to: &Path) -> Result<(), SwapError> {
    let tmp = layout.swap_tmp();
    let _ = fs::remove_file(&tmp);
    fs::hard_link(from, &tmp).map_err(io_err(format!(
        "keep {} as {}",
        from.display(),
        to.display()
    )))?;
    fs::rename(&tmp, to).map_err(io_err(format!("rename {}", tmp.display())))
}

fn sync_dir(dir: &Path) -> Result<(), SwapError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("sync {}", dir.display())))
}

/// The staged binary (`nodeos.new`, written and synced) becomes `nodeos`; the running one
/// stays as `nodeos.previous`.
pub fn install_staged(layout: &Layout) -> Result<(), SwapError> {
    use std::os::unix::fs::PermissionsExt;
    let staged = layout.staged();
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("make {} executable", staged.display())))?;
    keep_as(layout, &layout.nodeos(), &layout.previous())?;
    fs::rename(&staged, layout.nodeos()).map_err(io_err(format!(
        "put {} in place of {}",
        staged.display(),
        layout.nodeos().display()
    )))?;
    sync_dir(&layout.bin_dir)
}

/// `nodeos.previous` becomes `nodeos` again; the binary that failed stays as
/// `nodeos.failed`. Afterwards there is no previous binary: a second roll-back for the
/// same upgrade finds nothing to do ([`SwapError::NoPrevious`]) instead of looping.
pub fn roll_back(layout: &Layout) -> Result<(), SwapError> {
    let previous = layout.previous();
    if !previous.exists() {
        return Err(SwapError::NoPrevious(previous.display().to_string()));
    }
    keep_as(layout, &layout.nodeos(), &layout.failed())?;
    fs::rename(&previous, layout.nodeos()).map_err(io_err(format!(
        "put {} back in place of {}",
        previous.display(),
        layout.nodeos().display()
    )))?;
    sync_dir(&layout.bin_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, Layout) {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        fs::create_dir_all(&layout.bin_dir).unwrap();
        fs::write(layout.nodeos(), "v1").unwrap();
        (root, layout)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn an_upgrade_keeps_the_previous_binary_and_a_roll_back_restores_it_once() {
        let (_root, layout) = host();
        fs::write(layout.staged(), "v2").unwrap();
        install_staged(&layout).unwrap();
        assert_eq!(read(&layout.nodeos()), "v2");
        assert_eq!(read(&layout.previous()), "v1");
        assert!(!layout.staged().exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(layout.nodeos()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        roll_back(&layout).unwrap();
        assert_eq!(read(&layout.nodeos()), "v1");
        assert_eq!(read(&layout.failed()), "v2", "kept for diagnosis");
        assert!(!layout.previous().exists());
        // Twice: nothing to go back to, and the good binary stays.
        assert!(matches!(roll_back(&layout), Err(SwapError::NoPrevious(_))));
        assert_eq!(read(&layout.nodeos()), "v1");
        let left: Vec<_> = fs::read_dir(&layout.bin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_second_upgrade_replaces_the_previous_binary_with_the_confirmed_one() {
        let (_root, layout) = host();
        fs::write(layout.staged(), "v2").unwrap();
        install_staged(&layout).unwrap();
        fs::write(layout.staged(), "v3").unwrap();
        install_staged(&layout).unwrap();
        assert_eq!(read(&layout.nodeos()), "v3");
        assert_eq!(read(&layout.previous()), "v2");
    }

    #[test]
    fn without_a_staged_binary_nothing_moves() {
        let (_root, layout) = host();
        assert!(install_staged(&layout).is_err());
        assert_eq!(read(&layout.nodeos()), "v1");
        assert!(!layout.previous().exists());
    }
}
