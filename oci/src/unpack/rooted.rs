//! File operations confined to a layer's directory. Every path is resolved from the
//! directory's file descriptor with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`, and
//! every change is made through a descriptor or an `*at` call on a name in a directory
//! already opened that way, never following a link: a symlink the layer made (or swapped
//! in for a directory it made earlier) is an error here, not a way out.
//!
//! Owns the how; what to create comes from the unpacker. The unpacker is the only writer
//! of its private temporary directory, so nothing changes a name between two calls here
//! except the layer's own entries, which come one at a time.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

/// Symlinks, magic links and mount crossings all refuse; `..` stays inside (the unpacker
/// refuses `..` before it gets here, this is the second wall).
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a trailing symlink too, with ELOOP, where
/// O_NOFOLLOW would say ENOTDIR and hide why.
const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

/// Mode of a directory made because a member lies below it without naming it first.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// The directory a layer is unpacked into.
pub(super) struct Root {
    fd: OwnedFd,
}

/// Ownership and times to give what was created.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    /// `None` when not running as root: ownership is left as it is.
    pub owner: Option<(Option<u32>, Option<u32>)>,
    pub mtime: i64,
}

impl Root {
    /// Opens `path`, which must be a directory and not a symlink.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(path, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Self { fd })
    }

    /// The directory `rel` (`""` for the root itself), made with its missing parents
    /// when `create`. ELOOP means a component is a symlink, ENOTDIR that one is not a
    /// directory.
    pub fn dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.fd.try_clone();
        }
        match open_dir(&self.fd, rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {}
            other => return other,
        }
        let mut at = self.fd.try_clone()?;
        for part in rel.iter() {
            at = match open_dir(&at, Path::new(part)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match rustix::fs::mkdirat(&at, part, Mode::from_raw_mode(IMPLICIT_DIR_MODE)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_dir(&at, Path::new(part))?
                }
                other => other?,
            };
        }
        Ok(at)
    }

    /// The directory `rel` if it still is one; `None` when a later member removed it or
    /// put something else (a symlink, say) in its place.
    pub fn existing_dir(&self, rel: &Path) -> io::Result<Option<OwnedFd>> {
        match self.dir(rel, false) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether an error means the name is not (or no longer) a directory reachable
/// without links.
pub(super) fn gone(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)
    )
}

fn open_dir(at: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        at,
        rel,
        DIR_FLAGS,
        Mode::empty(),
        RESOLVE,
    )?)
}

/// What [`clear`] found at a name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cleared {
    Nothing,
    /// A directory was kept (a directory member over an existing directory).
    KeptDir,
    /// Something was removed; `was_dir` when it was a directory tree.
    Removed {
        was_dir: bool,
    },
}

/// Clears `name` in `parent` for a new member: a later member replaces an earlier one,
/// except that a directory member keeps an existing directory and its contents.
pub(super) fn clear(parent: &OwnedFd, name: &OsStr, keep_dir: bool) -> io::Result<Cleared> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(Cleared::Nothing),
        Err(e) => return Err(e.into()),
    };
    let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    if is_dir && keep_dir {
        return Ok(Cleared::KeptDir);
    }
    if is_dir {
        remove_tree(parent, name)?;
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
    }
    Ok(Cleared::Removed { was_dir: is_dir })
}

/// Removes the directory `name` of `parent` and everything in it, descending only into
/// real directories (a symlink inside is unlinked, never followed).
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let dir = open_dir(parent, Path::new(name))?;
    let mut children = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push((child.to_vec(), entry.file_type()));
        }
    }
    for (child, file_type) in children {
        let child = OsStr::from_bytes(&child);
        let file_type = match file_type {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(&dir, child, AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
            ),
            known => known,
        };
        if file_type == FileType::Directory {
            remove_tree(&dir, child)?;
        } else {
            rustix::fs::unlinkat(&dir, child, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Creates the directory `name` in `parent` unless it is there, and opens it.
pub(super) fn make_dir(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_dir(parent, Path::new(name))
}

/// Creates the regular file `name` in `parent`, which must not exist, for writing.
pub(super) fn create_file(parent: &OwnedFd, name: &OsStr) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(parent, name, flags, Mode::from_raw_mode(0o600), RESOLVE)?;
    Ok(std::fs::File::from(fd))
}

pub(super) fn symlink(parent: &OwnedFd, name: &OsStr, target: &Path) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, parent, name)?)
}

/// A hard link `name` in `parent` to `target_name` in `target_parent` (both opened inside
/// the root); a symlink target is linked itself, not followed.
pub(super) fn hard_link(
    target_parent: &OwnedFd,
    target_name: &OsStr,
    parent: &OwnedFd,
    name: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        target_parent,
        target_name,
        parent,
        name,
        AtFlags::empty(),
    )?)
}

/// A device node, FIFO or whiteout (a 0/0 character device) with permission bits `mode`.
pub(super) fn make_node(
    parent: &OwnedFd,
    name: &OsStr,
    file_type: FileType,
    mode: u32,
    device: (u32, u32),
) -> io::Result<()> {
    rustix::fs::mknodat(
        parent,
        name,
        file_type,
        Mode::empty(),
        rustix::fs::makedev(device.0, device.1),
    )?;
    // mknod's mode passes through the umask, so the bits are set afterwards; fchmodat
    // cannot refuse links, so the name is checked to be the node just made.
    let made = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(made.st_mode) != file_type {
        return Err(io::Error::other("the node just made changed type"));
    }
    Ok(rustix::fs::chmodat(
        parent,
        name,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

/// Sets owner and mtime of `name` in `parent` without following it (symlinks, nodes).
pub(super) fn set_meta_at(parent: &OwnedFd, name: &OsStr, meta: Meta) -> io::Result<()> {
    if let Some((uid, gid)) = meta.owner {
        rustix::fs::chownat(
            parent,
            name,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(rustix::fs::utimensat(
        parent,
        name,
        &times(meta.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Sets owner, then mode (a chown clears setuid and setgid), then mtime, on an open file
/// or directory. `mode` is `None` for a directory whose mode comes at the end.
pub(super) fn set_meta(fd: impl AsFd, meta: Meta, mode: Option<u32>) -> io::Result<()> {
    if let Some((uid, gid)) = meta.owner {
        rustix::fs::fchown(
            &fd,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
        )?;
    }
    if let Some(mode) = mode {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    }
    Ok(rustix::fs::futimens(&fd, &times(meta.mtime))?)
}

/// A directory's mode and mtime, given once all its members are in.
pub(super) fn finish_dir(fd: impl AsFd, mode: u32, mtime: i64) -> io::Result<()> {
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(rustix::fs::futimens(&fd, &times(mtime))?)
}

fn times(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Marks the directory as opaque for overlayfs.
pub(super) fn mark_opaque(dir: &OwnedFd) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        dir,
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )?)
}
