//! Item 14 of issue 16: what the master and the agent write is theirs alone. Someone with
//! a shell on the host (another user, a service account) must not read the CA's key in the
//! store, a node's key, task logs or outputs.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Every file and directory under `root` whose mode gives group or other any access,
/// except those `allowed` names (public certificates).
fn open_to_others(root: &Path, allowed: &[&str]) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let public = name.is_some_and(|n| allowed.contains(&n.as_str()));
        if mode & 0o077 != 0 && !public && path != root {
            found.push((path.clone(), mode));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                todo.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// Someone else on the host looks for keys: the master's store (holding the CA key), its
/// task logs and outputs, the node's key. A real master and agent run in a temp dir
/// under umask 022 (the appliance's), then the tree is walked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_the_store_are_private_to_their_owner() {
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let j = joined("modes", Duration::from_secs(3600)).await;
    let master = j.dir.join("master");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&master.join("master")), 0o700);
    assert_eq!(mode(&master.join("master/state.redb")), 0o600);
    assert_eq!(mode(&master.join("master/workloads/logs")), 0o700);
    assert_eq!(mode(&j.data.join("agent")), 0o700);
    assert_eq!(mode(&j.data.join("agent/node.key")), 0o600);
    assert_eq!(open_to_others(&master.join("master"), &[]), vec![]);
    // Certificates are public; the directory that holds them with the key is not.
    assert_eq!(
        open_to_others(
            &j.data.join("agent"),
            &["node.crt", "ca.crt", "identity.json"]
        ),
        vec![]
    );
    j.task.abort();
    let mut m = j.master;
    let addr = m.addr;
    m.stop();

    // An install made before this fix: everything readable by all. The next start of
    // master and agent takes the group and other bits off.
    for (path, m) in [
        (master.join("master"), 0o755),
        (master.join("master/state.redb"), 0o644),
        (j.data.join("agent"), 0o755),
        (j.data.join("agent/node.key"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    let mut m = start_master(&master, addr, Duration::from_secs(3600));
    let api = j.api;
    let task = spawn_agent(agent_config(&j.data, m.addr, None));
    wait_node(&api, "n1", NodeState::Ready).await;
    assert_eq!(mode(&master.join("master")), 0o700);
    assert_eq!(mode(&master.join("master/state.redb")), 0o600);
    assert_eq!(mode(&j.data.join("agent")), 0o700);
    assert_eq!(mode(&j.data.join("agent/node.key")), 0o600);
    task.abort();
    m.stop();
    nix::sys::stat::umask(old_umask);
    let _ = std::fs::remove_dir_all(&j.dir);
}
