//! The file systems PID 1 mounts, and the re-rooting that lets containers
//! `pivot_root` later.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {target} ({fstype}): {errno}")]
    Mount {
        target: String,
        fstype: String,
        errno: nix::errno::Errno,
    },
    #[error("re-rooting the initramfs: {step}: {errno}")]
    Reroot {
        step: &'static str,
        errno: nix::errno::Errno,
    },
}

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

fn base_mounts() -> Vec<Mount> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Mount {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("gid=5,mode=0620,ptmxmode=0666"),
        },
        Mount {
            source: "shm",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
        Mount {
            source: "run",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755"),
        },
        Mount {
            source: "tmp",
            target: "/tmp",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
        Mount {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: nosuid_nodev_noexec,
            data: Some("nsdelegate"),
        },
    ]
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and cgroup2.
/// Returns the failures; the rest is mounted regardless.
pub fn mount_base() -> Vec<MountError> {
    let mut errors = Vec::new();
    for m in base_mounts() {
        let _ = std::fs::create_dir_all(m.target);
        // devtmpfs may already be there (CONFIG_DEVTMPFS_MOUNT); that is fine.
        if is_mountpoint(m.target) {
            continue;
        }
        if let Err(errno) = mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            errors.push(MountError::Mount {
                target: m.target.into(),
                fstype: m.fstype.into(),
                errno,
            });
        }
    }
    errors
}

/// The kernel cannot `pivot_root` away from the initramfs's rootfs, which
/// container runtimes need. Binding the root onto a directory, moving that
/// mount over `/` and chrooting into it leaves us on a real mount (FACTS.md).
pub fn reroot() -> Result<(), MountError> {
    let step = |step: &'static str| move |errno| MountError::Reroot { step, errno };
    let new_root = "/.root";
    let _ = std::fs::create_dir_all(new_root);
    mount(
        Some("/"),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("bind / onto /.root"))?;
    chdir(new_root).map_err(step("chdir /.root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("move /.root onto /"))?;
    chroot(".").map_err(step("chroot"))?;
    chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

pub fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|l| l.split_whitespace().nth(4) == Some(path))
        })
        .unwrap_or(false)
}

/// Mount points, deepest first: the order to unmount them in.
pub fn unmount_order(mountinfo: &str) -> Vec<String> {
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(unescape))
        .filter(|p| p != "/")
        .collect();
    // Later mounts may sit on earlier ones; reverse mount order handles that.
    points.reverse();
    points.dedup();
    points
}

/// /proc/self/mountinfo escapes spaces and the like as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything it can; what stays busy is detached and remounted
/// read-only, so the data partition is clean at poweroff.
pub fn unmount_all() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in unmount_order(&info) {
        if point == "/proc" || point == "/dev" || point == "/sys" {
            continue; // needed until the very end, and hold no data
        }
        if umount2(Path::new(&point), MntFlags::empty()).is_err() {
            let _ = mount(
                None::<&str>,
                Path::new(&point),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            let _ = umount2(Path::new(&point), MntFlags::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounts_deepest_first_and_keeps_root() {
        let info = "\
22 1 0:20 / / rw - rootfs rootfs rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:5 / /dev rw - devtmpfs devtmpfs rw
25 24 0:22 / /dev/pts rw - devpts devpts rw
30 22 8:3 / /var/lib/cloudos rw - ext4 /dev/vda3 rw
31 30 0:40 / /var/lib/cloudos/my\\040dir rw - tmpfs tmpfs rw
";
        assert_eq!(
            unmount_order(info),
            [
                "/var/lib/cloudos/my dir",
                "/var/lib/cloudos",
                "/dev/pts",
                "/dev",
                "/proc"
            ]
        );
    }
}
