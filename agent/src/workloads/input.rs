//! A task's input files (`cloudos run --input`): the archive the master keeps, fetched over
//! the node's mTLS connection for the run assigned here, checked against the digest its
//! spec names, and unpacked into `<data>/inputs/<run>`, which the container sees at
//! `/input` (a copy of its own: it may change it). Removed when the run ends, and any
//! left by an earlier agent when the agent starts.
//!
//! The archive comes from an admin, but it is unpacked by root on the node: only plain
//! files and directories, with relative paths that stay inside, are taken; anything else
//! (links, devices, `..`) fails the run saying which entry.

use std::path::{Component, Path, PathBuf};

use cloudos_cluster::workload::{INPUT_DIR, MAX_INPUT_BYTES};
use cloudos_runtime::Bind;

use super::Shared;

/// Where runs' inputs are unpacked under the data directory.
const DIR: &str = "inputs";
/// Most entries an input archive may hold.
const MAX_ENTRIES: usize = 10_000;

fn run_dir(data_dir: &Path, run: &str) -> PathBuf {
    data_dir.join(DIR).join(run)
}

/// Fetches, checks and unpacks run `run`'s input (`digest`), owned by `owner`; the bind
/// that shows it at `/input`.
pub(super) async fn fetch(
    shared: &Shared,
    run: &str,
    digest: &str,
    owner: (u32, u32),
) -> Result<Bind, String> {
    let api = shared
        .api()
        .ok_or_else(|| "no connection to the master to fetch the input".to_owned())?;
    let bytes = api
        .download_input(run)
        .await
        .map_err(|e| format!("cannot fetch the input {digest}: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "the input is {} bytes, over {MAX_INPUT_BYTES}",
            bytes.len()
        ));
    }
    let got = sha256(&bytes);
    if got != digest {
        return Err(format!(
            "the input fetched is {got}, not the {digest} the task names; refused"
        ));
    }
    let dir = run_dir(&shared.config.data_dir, run);
    let unpacked = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || unpack(&bytes, &dir, owner))
            .await
            .map_err(|e| format!("unpacking the input failed: {e}"))?
    };
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Bind {
        source: dir,
        target: INPUT_DIR.to_owned(),
        read_only: false,
    })
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Unpacks `archive` into a fresh `dir`, plain files and directories only, each given to
/// `owner`.
fn unpack(archive: &[u8], dir: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(false);
    tar.set_unpack_xattrs(false);
    let entries = tar
        .entries()
        .map_err(|e| format!("the input is not a tar archive: {e}"))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(format!("the input holds more than {MAX_ENTRIES} entries"));
        }
        let mut entry = entry.map_err(|e| format!("the input archive is damaged: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("an input entry has no usable name: {e}"))?
            .into_owned();
        let shown = path.display().to_string();
        let inside = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(format!("input entry {shown:?} leaves /input; refused"));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(format!(
                "input entry {shown:?} is not a file or a directory (a link or a device); refused"
            ));
        }
        let unpacked = entry
            .unpack_in(dir)
            .map_err(|e| format!("cannot unpack input entry {shown:?}: {e}"))?;
        if !unpacked {
            return Err(format!("input entry {shown:?} leaves /input; refused"));
        }
        let target = dir.join(&path);
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(|e| {
            format!("cannot give input entry {shown:?} to the container's user: {e}")
        })?;
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give the input to the container's user: {e}"))
}

/// Removes run `run`'s input.
pub(super) fn remove(data_dir: &Path, run: &str) {
    let dir = run_dir(data_dir, run);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            log::warn!("cannot remove the input of run {run}: {e}");
        }
    }
}

/// Removes every run's input: at the agent's start no run is under way here.
pub(super) fn remove_all(data_dir: &Path) {
    let dir = data_dir.join(DIR);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            log::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o4755);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/shadow").unwrap();
            }
            // Written raw: the builder itself refuses `..`, an attacker's tool would not.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_and_directories_unpack_and_anything_else_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("r-1");
        let good = archive(&[
            ("data", tar::EntryType::Directory, b""),
            ("data/rows.csv", tar::EntryType::Regular, b"a,b\n"),
            ("run.sh", tar::EntryType::Regular, b"echo hi\n"),
        ]);
        unpack(&good, &dir, (0, 0)).unwrap();
        assert_eq!(std::fs::read(dir.join("data/rows.csv")).unwrap(), b"a,b\n");
        // No set-uid bit survives.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7000, 0, "{mode:o}");

        for (bad, why) in [
            (
                archive(&[("../escape", tar::EntryType::Regular, b"x")]),
                "leaves /input",
            ),
            (
                archive(&[("link", tar::EntryType::Symlink, b"")]),
                "not a file or a directory",
            ),
        ] {
            let e = unpack(&bad, &dir, (0, 0)).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(!root.path().join("escape").exists());
        assert!(unpack(b"not a tar at all, just text", &dir, (0, 0)).is_err());
    }

    #[test]
    fn digests_are_sha256() {
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
