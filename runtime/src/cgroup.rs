//! The container's cgroup as seen from outside libcontainer: where it is on
//! every mounted hierarchy (v1 controllers, the v2 tree, or both on a hybrid
//! host), whether the OOM killer fired in it, and removing what a dead shim
//! left behind. libcontainer creates and deletes the cgroup in the normal
//! case; this is for reading the OOM count before that and for recovery.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The parent of every container cgroup, on each hierarchy, unless
/// [`PARENT_ENV`] names another.
pub const DEFAULT_PARENT: &str = "cloudos";

/// Names the parent cgroup (relative to each hierarchy's root) when the runtime
/// lives in a cgroup delegated to it, as under a systemd unit with `Delegate=yes`.
/// An environment variable because shims are separate processes started by the
/// agent: they inherit it, and every process agrees on one parent.
pub const PARENT_ENV: &str = "CLOUDOS_CGROUP_PARENT";

/// The parent of every container cgroup (`cloudos`, or [`PARENT_ENV`]'s value).
pub fn parent() -> &'static str {
    static PARENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PARENT.get_or_init(|| {
        std::env::var(PARENT_ENV)
            .ok()
            .map(|p| p.trim_matches('/').to_owned())
            .filter(|p| !p.is_empty() && !p.split('/').any(|c| c == ".." || c == "."))
            .unwrap_or_else(|| DEFAULT_PARENT.to_owned())
    })
}

/// Creates the parent cgroup on every hierarchy. libcontainer creates what is missing of a
/// container's cgroup path itself, checking for each directory and then making it, so two
/// containers starting at once on a fresh node race on the parent: one of them failed with
/// "File exists" (seen with 50 tasks on two nodes). Made once, before any container
/// starts, there is nothing left to race on.
pub fn ensure_parent() -> Result<(), (PathBuf, std::io::Error)> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(parent());
        fs::create_dir_all(&dir).map_err(|e| (dir, e))?;
    }
    Ok(())
}

/// The OCI `cgroupsPath` of a container.
pub fn cgroups_path(id: &str) -> String {
    format!("/{}/{id}", parent())
}

/// Mount points of all cgroup (v1) and cgroup2 filesystems.
pub fn hierarchies() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        // "... mount_point options - fstype source super_options"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = left.split_whitespace().nth(4) {
            out.push(PathBuf::from(unescape_mount_path(mp)));
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container's cgroup directories that exist now.
pub fn dirs(id: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(parent()).join(id))
        .filter(|d| d.is_dir())
        .collect()
}

/// How many times the OOM killer killed a process in the cgroup: v2
/// `memory.events`, or v1 `memory.oom_control` (its `oom_kill` line, kernel
/// 4.13+), falling back to v1 `under_oom`.
pub fn oom_kills(dirs: &[PathBuf]) -> u64 {
    let mut kills = 0;
    for d in dirs {
        for file in ["memory.events", "memory.oom_control"] {
            if let Ok(text) = fs::read_to_string(d.join(file)) {
                kills += parse_key(&text, "oom_kill").unwrap_or(0);
                kills += parse_key(&text, "under_oom").unwrap_or(0);
            }
        }
    }
    kills
}

/// What a container has used, from its cgroup: CPU time and I/O since it started, memory
/// now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usec: u64,
    pub memory_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// The container's usage from its cgroup directories: v2 (`cpu.stat`, `memory.current`,
/// `io.stat`) or v1 (`cpuacct.usage`, `memory.usage_in_bytes`,
/// `blkio.throttle.io_service_bytes`), whichever the node has. `None` when no directory
/// says anything (the container is gone).
pub fn usage(dirs: &[PathBuf]) -> Option<Usage> {
    let read = |d: &Path, file: &str| fs::read_to_string(d.join(file)).ok();
    let mut usage = Usage::default();
    let mut found = false;
    for d in dirs {
        if let Some(text) = read(d, "cpu.stat") {
            usage.cpu_usec += parse_key(&text, "usage_usec").unwrap_or(0);
            found = true;
        }
        if let Some(ns) = read(d, "cpuacct.usage").and_then(|t| t.trim().parse::<u64>().ok()) {
            usage.cpu_usec += ns / 1000;
            found = true;
        }
        for file in ["memory.current", "memory.usage_in_bytes"] {
            if let Some(bytes) = read(d, file).and_then(|t| t.trim().parse::<u64>().ok()) {
                usage.memory_bytes += bytes;
                found = true;
            }
        }
        if let Some(text) = read(d, "io.stat") {
            let (r, w) = parse_io_stat(&text);
            usage.io_read_bytes += r;
            usage.io_write_bytes += w;
        }
        if let Some(text) = read(d, "blkio.throttle.io_service_bytes") {
            let (r, w) = parse_blkio(&text);
            usage.io_read_bytes += r;
            usage.io_write_bytes += w;
        }
    }
    found.then_some(usage)
}

/// v2 `io.stat`: a line per device, `8:0 rbytes=1 wbytes=2 rios=3 …`; summed.
fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "rbytes" => sum.0 += value,
            "wbytes" => sum.1 += value,
            _ => {}
        }
    }
    sum
}

/// v1 `blkio.throttle.io_service_bytes`: `8:0 Read 4096` lines (and a `Total`); summed.
fn parse_blkio(text: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match op {
            "Read" => sum.0 += value,
            "Write" => sum.1 += value,
            _ => {}
        }
    }
    sum
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process left in the container's cgroups and removes them.
/// Returns the directories it could not remove.
pub fn kill_and_remove(id: &str, timeout: Duration) -> Vec<PathBuf> {
    let dirs = dirs(id);
    if dirs.is_empty() {
        return dirs;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = 0;
        for d in &dirs {
            // A frozen cgroup would keep its processes from dying: thaw it.
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            for pid in procs(d) {
                left += 1;
                // SAFETY: plain kill(2); the pids come from the container's own
                // cgroup, which holds nothing but the container's processes.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if left == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stuck = Vec::new();
    for d in dirs {
        // rmdir fails with EBUSY for a moment while the last exits complete.
        let ok = loop {
            match fs::remove_dir(&d) {
                Ok(()) => break true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break true,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break false,
            }
        };
        if !ok {
            stuck.push(d);
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counts() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_key(v2, "oom_kill"), Some(1));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_key(v1, "oom_kill"), Some(3));
        assert_eq!(parse_key(v1, "nope"), None);
    }

    #[test]
    fn usage_from_v2_and_v1_files() {
        let dir = std::env::temp_dir().join(format!("cloudos-usage-{}", std::process::id()));
        let (v2, v1) = (dir.join("v2"), dir.join("v1"));
        fs::create_dir_all(&v2).unwrap();
        fs::create_dir_all(&v1).unwrap();
        fs::write(
            v2.join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\n",
        )
        .unwrap();
        fs::write(v2.join("memory.current"), "4194304\n").unwrap();
        let io = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                  253:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        fs::write(v2.join("io.stat"), io).unwrap();
        assert_eq!(
            usage(std::slice::from_ref(&v2)),
            Some(Usage {
                cpu_usec: 1_500_000,
                memory_bytes: 4 << 20,
                io_read_bytes: 4196,
                io_write_bytes: 8192,
            })
        );
        fs::write(v1.join("cpuacct.usage"), "2000000000\n").unwrap();
        fs::write(v1.join("memory.usage_in_bytes"), "1024\n").unwrap();
        let blkio = "8:0 Read 512\n8:0 Write 1024\n8:0 Sync 0\n8:0 Total 1536\nTotal 1536\n";
        fs::write(v1.join("blkio.throttle.io_service_bytes"), blkio).unwrap();
        let v1_usage = usage(std::slice::from_ref(&v1)).unwrap();
        assert_eq!(
            (v1_usage.cpu_usec, v1_usage.memory_bytes),
            (2_000_000, 1024)
        );
        assert_eq!(
            (v1_usage.io_read_bytes, v1_usage.io_write_bytes),
            (512, 1024)
        );
        assert_eq!(usage(&[dir.join("gone")]), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }
}
