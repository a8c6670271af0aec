//! The cgroup v2 subtree systemd delegates to the unit (`Delegate=yes`): the agent moves
//! itself (and so the shims it starts) into `<unit>/agent` and points the runtime at
//! `<unit>/containers`, so containers sit under the service's own slice and cgroup v2's
//! no-internal-processes rule holds (a cgroup that hands controllers to children holds no
//! processes itself). Touches nothing outside the unit's cgroup.

use std::fs;
use std::path::{Path, PathBuf};

/// The cgroup v2 mount.
const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("this host has no cgroup v2 hierarchy at {ROOT}; containers use the v1 controllers under cloudos/")]
    NotV2,
    #[error("cannot tell this process's cgroup from /proc/self/cgroup")]
    Unknown,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Sets up `<own cgroup>/agent` (holding this process) and `<own cgroup>/containers`, with
/// the controllers containers need enabled down to it, and returns the runtime's parent
/// (relative to the v2 root), e.g. `cloudos.slice/cloudos-node.service/containers`.
pub fn delegate() -> Result<String, DelegationError> {
    if !Path::new(ROOT).join("cgroup.controllers").is_file() {
        return Err(DelegationError::NotV2);
    }
    let text = fs::read_to_string("/proc/self/cgroup").map_err(|_| DelegationError::Unknown)?;
    let own = own_v2_cgroup(&text).ok_or(DelegationError::Unknown)?;
    let base = Path::new(ROOT).join(own.trim_start_matches('/'));
    // After a restart the main process lands in the unit's cgroup again; `agent/` exists.
    let agent = base.join("agent");
    create(&agent)?;
    write(&agent.join("cgroup.procs"), &std::process::id().to_string())?;
    let controllers = enable_controllers(&base)?;
    let containers = base.join("containers");
    create(&containers)?;
    for controller in &controllers {
        // The runtime (libcontainer) enables them again on its way down; this keeps the
        // subtree usable even for a container whose limits name only some of them.
        let _ = fs::write(
            containers.join("cgroup.subtree_control"),
            format!("+{controller}"),
        );
    }
    let parent = format!("{}/containers", own.trim_matches('/'));
    log::info!(
        "containers go under {ROOT}/{parent} (controllers: {})",
        controllers.join(" ")
    );
    Ok(parent)
}

/// The v2 entry of `/proc/self/cgroup` (`0::/path`).
pub fn own_v2_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
        .filter(|p| p.starts_with('/'))
}

/// Enables in `base`'s subtree every controller containers use that `base` has.
fn enable_controllers(base: &Path) -> Result<Vec<String>, DelegationError> {
    let path = base.join("cgroup.controllers");
    let available = fs::read_to_string(&path).map_err(|source| DelegationError::Io {
        action: "read",
        path,
        source,
    })?;
    let wanted = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];
    let mut enabled = Vec::new();
    for controller in available.split_whitespace().filter(|c| wanted.contains(c)) {
        match fs::write(
            base.join("cgroup.subtree_control"),
            format!("+{controller}"),
        ) {
            Ok(()) => enabled.push(controller.to_owned()),
            Err(e) => log::warn!(
                "cannot enable the {controller} controller below {}: {e}",
                base.display()
            ),
        }
    }
    Ok(enabled)
}

fn create(path: &Path) -> Result<(), DelegationError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DelegationError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), DelegationError> {
    fs::write(path, text).map_err(|source| DelegationError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_entry() {
        let text = "12:memory:/x\n0::/cloudos.slice/cloudos-node.service\n";
        assert_eq!(
            own_v2_cgroup(text).as_deref(),
            Some("/cloudos.slice/cloudos-node.service")
        );
        assert_eq!(own_v2_cgroup("4:pids:/a\n"), None);
    }
}
