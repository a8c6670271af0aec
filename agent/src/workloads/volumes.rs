//! Volumes on the node (decision 64): a named volume is the directory
//! `<data>/volumes/<name>`, made by the first run that mounts it and deleted when the
//! master says (`cloudos volume rm`); a host path is mounted only under a prefix the
//! node's admin allowed (`volume_host_paths`), and never the node's own data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cloudos_cluster::units::format_bytes;
use cloudos_cluster::volume::{host_path_allowed, validate_volume_name, VolumeMount};
use cloudos_runtime::{quota, Bind};

/// Where named volumes live under the data directory.
const VOLUMES_DIR: &str = "volumes";

/// The directory of named volume `name`.
pub(super) fn volume_dir(data_dir: &Path, name: &str) -> Result<PathBuf, String> {
    validate_volume_name(name).map_err(|e| e.to_string())?;
    Ok(data_dir.join(VOLUMES_DIR).join(name))
}

/// The binds of a run's volumes: named ones made if new and given their size limit
/// (`limits`, by name; one without is unlimited), host paths checked against `allowed`.
/// An error says which volume and why, for the run's failure.
pub(super) fn binds(
    data_dir: &Path,
    allowed: &[String],
    mounts: &[VolumeMount],
    limits: &BTreeMap<String, u64>,
) -> Result<Vec<Bind>, String> {
    mounts
        .iter()
        .map(|m| {
            let source = match m.volume() {
                Some(name) => {
                    let dir = volume_dir(data_dir, name)?;
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        format!("cannot make volume {name} at {}: {e}", dir.display())
                    })?;
                    limit(&dir, name, limits.get(name).copied())?;
                    dir
                }
                None => host_path(data_dir, allowed, &m.source)?,
            };
            Ok(Bind {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
            })
        })
        .collect()
}

/// `path` of the node, resolved (symbolic links followed: what it names is what is
/// checked), if its admin allows it; the node's data directory (its keys, its
/// identity, other runs' volumes) is never mounted, whatever the prefixes say.
fn host_path(data_dir: &Path, allowed: &[String], path: &str) -> Result<PathBuf, String> {
    let refused = |why: String| format!("host path {path} is refused: {why}");
    let real = std::fs::canonicalize(path).map_err(|e| refused(e.to_string()))?;
    if !host_path_allowed(&real, allowed) {
        let set = if allowed.is_empty() {
            "none is allowed".to_owned()
        } else {
            format!("only paths under {} are", allowed.join(", "))
        };
        return Err(refused(format!(
            "{set} on this node (its setting volume_host_paths)"
        )));
    }
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    if real.starts_with(&data) || data.starts_with(&real) {
        return Err(refused(format!(
            "it holds or is inside the node's data directory {}",
            data.display()
        )));
    }
    if !real.is_dir() {
        return Err(refused("it is not a directory".into()));
    }
    Ok(real)
}

/// Gives volume `name` (at `dir`) its size limit; `None` lifts one it had.
fn limit(dir: &Path, name: &str, bytes: Option<u64>) -> Result<(), String> {
    quota::set_limit(dir, bytes).map_err(|e| match bytes {
        Some(bytes) => format!(
            "volume {name} cannot be limited to {}: {e}",
            format_bytes(bytes)
        ),
        None => format!("volume {name}: cannot lift its size limit: {e}"),
    })
}

/// `cloudos volume resize` for a volume this node holds: applied now, so a running
/// container meets the new limit at its next write. A volume not made here yet takes it
/// when work first mounts it (the assignment carries it).
pub(super) fn set_limit(data_dir: &Path, name: &str, bytes: Option<u64>) -> Result<bool, String> {
    let dir = volume_dir(data_dir, name)?;
    if !dir.is_dir() {
        return Ok(false);
    }
    limit(&dir, name, bytes).map(|()| true)
}

/// Bytes used by each volume here that has a size limit: one `quotactl` each, cheap
/// enough for every heartbeat. Volumes without a limit have no project to count them.
pub fn usage(data_dir: &Path) -> BTreeMap<String, u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(VOLUMES_DIR)) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let used = quota::usage(&entry.path())?;
            used.limit_bytes.map(|_| (name, used.used_bytes))
        })
        .collect()
}

/// Deletes named volume `name` and its data. `false` if it was not there.
pub(super) fn remove(data_dir: &Path, name: &str) -> Result<bool, String> {
    let dir = volume_dir(data_dir, name)?;
    // Its limit goes too: the quota file would keep it for the project id (the inode
    // number), which a later directory may get.
    if let Err(e) = quota::set_limit(&dir, None) {
        log::debug!("volume {name}: its limit was not lifted before deletion: {e}");
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot delete volume {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::volume::parse_volume;

    #[test]
    fn named_volumes_are_made_and_host_paths_need_a_prefix_outside_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let srv = root.path().join("srv");
        std::fs::create_dir_all(srv.join("media")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let allowed = vec![srv.to_string_lossy().into_owned()];

        let named = parse_volume("db:/var/lib/db").unwrap();
        let made = binds(&data, &allowed, &[named], &BTreeMap::new()).unwrap();
        assert_eq!(made[0].source, data.join("volumes/db"));
        assert!(made[0].source.is_dir());

        let media = parse_volume(&format!("{}/media:/media:ro", srv.display())).unwrap();
        let bound = binds(
            &data,
            &allowed,
            std::slice::from_ref(&media),
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(bound[0].read_only);
        let err = binds(&data, &[], &[media], &BTreeMap::new()).unwrap_err();
        assert!(err.contains("none is allowed"), "{err}");

        // A link under an allowed prefix that leads out of it is what it leads to.
        std::os::unix::fs::symlink("/etc", srv.join("escape")).unwrap();
        let escape = parse_volume(&format!("{}/escape:/x", srv.display())).unwrap();
        let err = binds(&data, &allowed, &[escape], &BTreeMap::new()).unwrap_err();
        assert!(err.contains("only paths under"), "{err}");

        // The data directory, even when a prefix allows it.
        let everything = vec![root.path().to_string_lossy().into_owned()];
        let keys = parse_volume(&format!("{}:/keys", data.display())).unwrap();
        let err = binds(&data, &everything, &[keys], &BTreeMap::new()).unwrap_err();
        assert!(err.contains("data directory"), "{err}");

        assert!(remove(&data, "db").unwrap());
        assert!(!remove(&data, "db").unwrap());
        assert!(!data.join("volumes/db").exists());
        assert!(remove(&data, "../x").is_err());
    }
}
