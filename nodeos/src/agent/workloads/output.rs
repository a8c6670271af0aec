//! A finished run's `/output`: packed as a tar archive and handed to the master, which keeps
//! it for `cloudos output`. Nothing is sent when the task wrote nothing there.

use std::path::Path;
use std::sync::Arc;

use cloudos_cluster::client::MAX_TRANSFER_BYTES;

use super::Shared;

/// Uploads the archive of `dir`; its size when the master has it.
pub(super) async fn collect(shared: &Arc<Shared>, run: &str, dir: &Path) -> Option<u64> {
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        return None;
    }
    let packed = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || pack(&dir)).await
    };
    let tar = match packed {
        Ok(Ok(tar)) => tar,
        Ok(Err(e)) => {
            log::warn!("cannot pack /output of {run}: {e}");
            return None;
        }
        Err(e) => {
            log::warn!("packing /output of {run} failed: {e}");
            return None;
        }
    };
    if tar.len() > MAX_TRANSFER_BYTES {
        log::warn!(
            "/output of {run} is {} bytes, over the {} the master accepts; not collected",
            tar.len(),
            MAX_TRANSFER_BYTES
        );
        return None;
    }
    let Some(api) = shared.api() else {
        log::warn!("/output of {run} not collected: no connection to the master yet");
        return None;
    };
    let size = tar.len() as u64;
    match api.upload_output(run, tar).await {
        Ok(()) => Some(size),
        Err(e) => {
            log::warn!("cannot hand /output of {run} to the master: {e}");
            None
        }
    }
}

/// The directory as a tar archive of its contents (paths relative to it; symlinks kept as
/// links, never followed out of it).
fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}
