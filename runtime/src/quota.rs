//! Size limits on directory trees: the project quotas of ext4 (and XFS). Named volumes
//! are directories on a node's data partition (decision 64); a volume with a size gets a
//! project of its own and a hard block limit on it, so a container that fills it gets
//! `EDQUOT` ("Disk quota exceeded") while the node's other state keeps its room.
//!
//! The project id is the directory's own inode number: unique on its file system while
//! the directory exists, found again from the directory alone, and needing no table of
//! ids on the node. A volume deleted and its inode reused start from no usage, since the
//! old files went with it.
//!
//! Needs a file system with the feature (`mkfs.ext4 -O quota,project`) mounted with
//! `prjquota`; anything else is [`QuotaError::Unsupported`], said plainly rather than
//! run without the limit the user asked for.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};

/// `PRJQUOTA` from `<linux/quota.h>`: the third quota type, after users and groups.
const PRJQUOTA: i32 = 2;
/// The unit of `dqb_bhardlimit` (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;
/// `FS_XFLAG_PROJINHERIT`: what is made in the directory takes its project.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// `struct fsxattr` from `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "the file system of {} keeps no size limits: it needs project quotas (an ext4 made \
         with `-O quota,project`, mounted with `prjquota`); {why}",
        path.display()
    )]
    Unsupported { path: PathBuf, why: Errno },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a directory's project holds now, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: u64,
    /// `None`: no limit.
    pub limit_bytes: Option<u64>,
}

/// Limits the tree under `dir` to `limit` bytes (rounded up to KiB), or lifts its limit
/// (`None`). The first limit on a directory that already holds files gives them its
/// project too, so that what is there counts. Lifting the limit of a directory that
/// never had one touches nothing, so it works on any file system.
pub fn set_limit(dir: &Path, limit: Option<u64>) -> Result<(), QuotaError> {
    let io = |action| {
        move |source: std::io::Error| QuotaError::Io {
            action,
            path: dir.to_owned(),
            source,
        }
    };
    let file = File::open(dir).map_err(io("open"))?;
    let project = project_of(&file, dir)?;
    let attr = match get_xattr(file.as_fd()) {
        Ok(attr) => attr,
        Err(errno) => {
            return match limit {
                None => Ok(()),
                Some(_) => Err(unsupported(dir, errno)),
            }
        }
    };
    let tagged = attr.projid == project && attr.xflags & FS_XFLAG_PROJINHERIT != 0;
    if !tagged {
        if limit.is_none() {
            return Ok(());
        }
        tag_tree(file.as_fd(), project, dir)?;
    }
    let mut block = libc::dqblk {
        dqb_bhardlimit: limit.map_or(0, |bytes| bytes.div_ceil(QUOTA_BLOCK)),
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: libc::QIF_BLIMITS,
    };
    quotactl(&file, libc::Q_SETQUOTA, project, &mut block).map_err(|e| unsupported(dir, e))
}

/// What the tree under `dir` uses and may use; `None` when it has no project of its own
/// (no limit was ever set) or the file system keeps no quotas.
pub fn usage(dir: &Path) -> Option<Usage> {
    let file = File::open(dir).ok()?;
    let project = project_of(&file, dir).ok()?;
    if get_xattr(file.as_fd()).ok()?.projid != project {
        return None;
    }
    // SAFETY: all-zero is a valid `dqblk` (plain integers).
    let mut block: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl(&file, libc::Q_GETQUOTA, project, &mut block).ok()?;
    Some(Usage {
        used_bytes: block.dqb_curspace,
        limit_bytes: (block.dqb_bhardlimit != 0).then(|| block.dqb_bhardlimit * QUOTA_BLOCK),
    })
}

fn unsupported(dir: &Path, why: Errno) -> QuotaError {
    QuotaError::Unsupported {
        path: dir.to_owned(),
        why,
    }
}

/// The directory's project id: its inode number, which ext4 keeps in 32 bits.
fn project_of(file: &File, dir: &Path) -> Result<u32, QuotaError> {
    let meta = file.metadata().map_err(|source| QuotaError::Io {
        action: "read",
        path: dir.to_owned(),
        source,
    })?;
    u32::try_from(meta.ino())
        .ok()
        .filter(|&id| id != 0)
        .ok_or_else(|| unsupported(dir, Errno::EOVERFLOW))
}

/// `quotactl_fd(2)` (Linux 5.14): the file system is named by an open file on it, so
/// neither the block device nor the mount table is needed.
fn quotactl(file: &File, cmd: i32, project: u32, block: &mut libc::dqblk) -> Result<(), Errno> {
    // SAFETY: the fd is open for the call; `block` is a live `struct if_dqblk`, read for
    // Q_SETQUOTA and written for Q_GETQUOTA.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            file.as_raw_fd(),
            libc::QCMD(cmd, PRJQUOTA),
            project,
            block as *mut libc::dqblk,
        )
    };
    Errno::result(ret).map(drop)
}

/// Gives `dir` and everything in it project `project`, directories with the inherit
/// flag. Walked by file descriptor, each name opened with `O_NOFOLLOW` relative to its
/// parent, so a container that swaps a directory for a link while this runs cannot lead
/// it out of the tree. Only directories and regular files are opened (opening a device
/// or a FIFO can have effects of its own); the others keep project 0 and their few
/// bytes go uncounted.
fn tag_tree(dir: BorrowedFd<'_>, project: u32, path: &Path) -> Result<(), QuotaError> {
    set_project(dir, project, true).map_err(|e| unsupported(path, e))?;
    let walk = |source: Errno| QuotaError::Io {
        action: "walk",
        path: path.to_owned(),
        source: source.into(),
    };
    // A second descriptor for the listing: nix's Dir takes ownership of the one it reads.
    let listing = openat(
        dir,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(walk)?;
    let mut entries = nix::dir::Dir::from_fd(listing).map_err(walk)?;
    for entry in entries.iter() {
        let entry = entry.map_err(walk)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let Some(kind) = kind_of(dir, name) else {
            continue;
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let Ok(fd) = openat(dir, name, flags, Mode::empty()) else {
            // Gone since the listing, or replaced: nothing of ours to tag.
            continue;
        };
        // What was opened must still be what was listed.
        if fstat(&fd).map(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT) != Ok(kind) {
            continue;
        }
        let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        if kind == SFlag::S_IFDIR {
            tag_tree(fd.as_fd(), project, &child)?;
        } else {
            set_project(fd.as_fd(), project, false).map_err(|e| unsupported(&child, e))?;
        }
    }
    Ok(())
}

/// A directory or a regular file, as `name` in `dir` is now (not following a link).
fn kind_of(dir: BorrowedFd<'_>, name: &CStr) -> Option<SFlag> {
    let stat = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    (kind == SFlag::S_IFDIR || kind == SFlag::S_IFREG).then_some(kind)
}

/// The file's `struct fsxattr` (`FS_IOC_FSGETXATTR`).
fn get_xattr(fd: BorrowedFd<'_>) -> Result<FsXattr, Errno> {
    let mut attr = FsXattr::default();
    // SAFETY: `attr` is a live `struct fsxattr` the kernel fills.
    unsafe { fs_get_xattr(fd.as_raw_fd(), &mut attr) }?;
    Ok(attr)
}

fn set_project(fd: BorrowedFd<'_>, project: u32, inherit: bool) -> Result<(), Errno> {
    let mut attr = get_xattr(fd)?;
    attr.projid = project;
    if inherit {
        attr.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: `attr` is a live `struct fsxattr` the kernel reads.
    unsafe { fs_set_xattr(fd.as_raw_fd(), &attr) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lifting a limit that was never set touches nothing, on any file system; setting one
    /// where the file system keeps no project quotas is refused, saying what it needs.
    /// (The limit itself is proven on a real node's ext4, in the QEMU workloads test:
    /// this machine's test kernel has no quota support.)
    #[test]
    fn a_limit_on_a_file_system_without_project_quotas_is_refused_plainly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        set_limit(dir.path(), None).unwrap();
        let support = set_limit(dir.path(), Some(1 << 20));
        match support {
            Err(e @ QuotaError::Unsupported { .. }) => {
                let text = e.to_string();
                assert!(text.contains("-O quota,project"), "{text}");
                assert!(text.contains("prjquota"), "{text}");
            }
            // A test machine whose /tmp keeps project quotas: then the limit reads back.
            Ok(()) => assert_eq!(usage(dir.path()).and_then(|u| u.limit_bytes), Some(1 << 20)),
            Err(e) => panic!("{e}"),
        }
    }
}
