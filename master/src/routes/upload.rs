//! Uploads into a file: streamed to disk as they arrive (never whole in memory), refused
//! past a cap (first by the declared length, then by what actually came), and removed
//! unless the handler keeps them.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// A partly received upload, removed unless it was stored.
pub(super) struct Upload(pub(super) PathBuf);

impl Upload {
    /// It was stored (renamed away): nothing to remove.
    pub(super) fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Writes `body` to `path` as it arrives; its size, or why it was refused.
pub(super) async fn receive(
    headers: &HeaderMap,
    body: Body,
    path: &Path,
    cap: u64,
) -> Result<u64, ApiError> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let too_large = || ApiError::TooLarge {
        limit: cap as usize,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(too_large());
    }
    let disk =
        |e: std::io::Error| ApiError::Internal(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(disk)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("the upload broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > cap {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(disk)?;
    }
    file.flush().await.map_err(disk)?;
    Ok(size)
}
