//! The container's root filesystem: an overlayfs of the image's unpacked
//! layers with a private upper dir, and finding the command inside it before
//! anything starts (so "not found" is a clear error, not a failed exec deep
//! inside libcontainer).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts `layers` (bottom first) at `target` with `upper`/`work` for writes.
/// The upper layer is used even for a read-only root: libcontainer creates
/// mount points (/proc, /dev, /output ...) that the image may lack, and they
/// must land in the container's own layer, never in a shared image layer.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), String> {
    for d in [upper, work, target] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    // overlayfs wants the top layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // The option string is one page at most.
    if opts.len() >= 4096 - ",volatile".len() {
        return Err(format!(
            "{} layers make an overlayfs option string of {} bytes, over the 4095 the kernel takes; flatten the image",
            layers.len(),
            opts.len()
        ));
    }
    // `volatile` (Linux 5.10+): no sync of the upper layer on unmount. The
    // upper dir is thrown away with the container, and a sync per container
    // exit cost tens of milliseconds on a busy disk. Older kernels refuse the
    // option; mount without it there.
    let volatile = format!("{opts},volatile");
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(volatile.as_str()),
    )
    .or_else(|_| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
    })
    .map_err(|e| format!("cannot mount the overlay root at {}: {e}", target.display()))
}

pub fn unmount(target: &Path) {
    // Lazy: a process that still holds a file there must not keep us from
    // tearing down; the kernel frees the mount when the last user goes.
    let _ = umount2(target, MntFlags::MNT_DETACH);
}

/// Resolves `path` (absolute, inside the container) under `root`, following
/// symlinks as the container would see them: absolute targets and `..` stay
/// inside `root`. `None` when something along the way does not exist.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::new(); // relative to root
    let mut hops = 0;
    // A stack of component lists so a symlink's target is walked before the rest.
    let mut stack: Vec<std::vec::IntoIter<PathBuf>> = Vec::new();
    let comps = |p: &Path| -> Vec<PathBuf> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(PathBuf::from(n)),
                Component::ParentDir => Some(PathBuf::from("..")),
                _ => None,
            })
            .collect()
    };
    stack.push(comps(path).into_iter());
    while let Some(top) = stack.last_mut() {
        let Some(c) = top.next() else {
            stack.pop();
            continue;
        };
        if c.as_os_str() == OsStr::new("..") {
            current.pop();
            continue;
        }
        let candidate = current.join(&c);
        let meta = fs::symlink_metadata(root.join(&candidate)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(root.join(&candidate)).ok()?;
            if target.is_absolute() {
                current = PathBuf::new();
            }
            stack.push(comps(&target).into_iter());
        } else {
            current = candidate;
        }
    }
    Some(root.join(current))
}

/// Creates the working directory `path` inside `root` when the image lacks
/// it, as runc does (images often name a WORKDIR they never create). Only
/// plain directories are walked or made: a symlink on the way could point
/// the host's mkdir out of the container's root, so it is refused instead.
pub fn ensure_dir_in_root(root: &Path, path: &Path) -> Result<(), String> {
    let mut current = root.to_path_buf();
    for c in path.components() {
        let name = match c {
            Component::Normal(n) => n,
            Component::RootDir | Component::CurDir => continue,
            _ => return Err(format!("working directory {} contains ..", path.display())),
        };
        current.push(name);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                // A link that resolves to a directory inside the root is fine.
                let rel = Path::new("/").join(current.strip_prefix(root).unwrap_or(Path::new("")));
                match resolve_in_root(root, &rel) {
                    Some(target) if target.is_dir() => current = target,
                    _ => {
                        return Err(format!(
                            "working directory {}: {} is a symlink that leads to no directory in the image",
                            path.display(),
                            rel.display()
                        ))
                    }
                }
            }
            Ok(_) => {
                return Err(format!(
                    "working directory {} runs into a file in the image",
                    path.display()
                ))
            }
            Err(_) => fs::create_dir(&current).map_err(|e| {
                format!(
                    "cannot create the working directory {}: {e}",
                    path.display()
                )
            })?,
        }
    }
    Ok(())
}

/// Finds the file `command` names inside the container's root the way
/// execvp would: a name with a `/` is taken as a path (relative to `cwd`),
/// a bare name is searched in `PATH`. Returns the host path of an
/// executable regular file.
pub fn find_command(root: &Path, command: &str, path_var: &str, cwd: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let candidates: Vec<PathBuf> = if command.contains('/') {
        vec![Path::new(cwd).join(command)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(cwd).join(d).join(command))
            .collect()
    };
    candidates
        .iter()
        .filter_map(|c| resolve_in_root(root, c))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn image() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("bin")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("bin/busybox"), b"x").unwrap();
        fs::set_permissions(r.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(r.join("bin/data"), b"x").unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        symlink("/bin/busybox", r.join("usr/bin/env")).unwrap();
        symlink("../../bin/busybox", r.join("usr/bin/rel")).unwrap();
        symlink("/../../../etc/passwd", r.join("bin/escape")).unwrap();
        symlink("loop", r.join("bin/loop")).unwrap();
        d
    }

    #[test]
    fn finds_commands_like_execvp() {
        let d = image();
        let r = d.path();
        let path = "/usr/local/bin:/usr/bin:/bin";
        assert_eq!(
            find_command(r, "sh", path, "/"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_command(r, "env", path, "/"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_command(r, "rel", path, "/"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_command(r, "/bin/sh", path, "/"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_command(r, "./sh", path, "/bin"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(find_command(r, "nope", path, "/"), None);
        assert_eq!(find_command(r, "/bin/nope", path, "/"), None);
        // Not executable, escaping the root, and symlink loops are not found.
        assert_eq!(find_command(r, "data", path, "/"), None);
        assert_eq!(find_command(r, "escape", path, "/"), None);
        assert_eq!(find_command(r, "loop", path, "/"), None);
    }

    #[test]
    fn working_directories_are_made_inside_the_root() {
        let d = image();
        let r = d.path();
        symlink("/usr", r.join("u")).unwrap();
        ensure_dir_in_root(r, Path::new("/work/dir")).unwrap();
        assert!(r.join("work/dir").is_dir());
        ensure_dir_in_root(r, Path::new("/u/new")).unwrap();
        assert!(r.join("usr/new").is_dir());
        ensure_dir_in_root(r, Path::new("/bin")).unwrap();
        assert!(ensure_dir_in_root(r, Path::new("/bin/busybox/x")).is_err());
        assert!(ensure_dir_in_root(r, Path::new("/bin/escape/x")).is_err());
        assert!(ensure_dir_in_root(r, Path::new("/a/../b")).is_err());
    }
}
