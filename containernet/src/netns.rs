//! Network namespaces kept as files: a new namespace is bind-mounted on a file (as
//! `ip netns add` does), so it outlives the thread that made it, a container joins it by
//! path (the OCI spec's namespace `path`), and removing the file's mount lets it go once
//! nothing runs in it.
//!
//! Work inside one runs on a thread of its own that enters it (`setns`): a thread's
//! namespace is its own, so the rest of the process stays where it is.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_owned();
    move |source| NetError::Io {
        action,
        path,
        source,
    }
}

/// Runs `work` on a new thread; its result, or why the thread died.
fn on_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map_err(|e| NetError::Thread(format!("cannot start a thread: {e}")))?
        .join()
        .map_err(|_| NetError::Thread(format!("the {name} thread panicked")))?
}

/// Makes a new, empty network namespace (only a loopback, down) kept at `path`.
pub fn create(path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    File::create(path).map_err(io("creating", path))?;
    let target = path.to_owned();
    let made = on_thread("netns-create", move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetError::Sys {
            action: "unsharing the network namespace".into(),
            source,
        })?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetError::Sys {
            action: format!("keeping the namespace at {}", target.display()),
            source,
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Lets the namespace at `path` go (it ends once no process is in it) and removes the
/// file. One that is gone already is fine.
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetError::Sys {
                action: format!("releasing the namespace at {}", path.display()),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Runs `work` inside the namespace at `path`, on a thread of its own with a runtime of
/// its own (netlink sockets belong to the namespace of the thread that opens them).
pub fn within<T: Send + 'static, F>(path: &Path, work: F) -> Result<T, NetError>
where
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, NetError>>>>
        + Send
        + 'static,
{
    let ns = File::open(path).map_err(io("opening", path))?;
    let shown: PathBuf = path.to_owned();
    on_thread("netns-within", move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetError::Sys {
            action: format!("entering the namespace at {}", shown.display()),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetError::Thread(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(work())
    })
}
