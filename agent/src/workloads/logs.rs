//! Tails a container's stdout and stderr files to the master as log chunks with byte
//! offsets, from where the master's copy ends (it says so after each connect).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::api::AgentMessage;
use cloudos_cluster::workload::{LogChunk, LogStream};
use cloudos_runtime::LogPaths;
use tokio::sync::watch;

use super::Shared;

/// How often the files are read.
const POLL: Duration = Duration::from_millis(200);
/// Largest chunk sent at once (the master's WebSocket accepts 64 KiB messages).
const CHUNK: usize = 16 * 1024;

/// Sends new output until `done` turns true, then sends what is left and returns.
pub(super) async fn tail(
    shared: Arc<Shared>,
    run: String,
    paths: LogPaths,
    mut master_has: watch::Receiver<(u64, u64)>,
    mut done: watch::Receiver<bool>,
) {
    let mut sent = *master_has.borrow();
    loop {
        if master_has.has_changed().unwrap_or(false) {
            sent = *master_has.borrow_and_update();
        }
        let finished = *done.borrow();
        for (stream, path, offset) in [
            (LogStream::Stdout, &paths.stdout, &mut sent.0),
            (LogStream::Stderr, &paths.stderr, &mut sent.1),
        ] {
            while let Some(data) = read_from(path, *offset) {
                let chunk = LogChunk {
                    run: run.clone(),
                    stream,
                    offset: *offset,
                    data: data.clone(),
                };
                *offset += data.len() as u64;
                if shared.outbox.send(AgentMessage::Log(chunk)).await.is_err() {
                    return;
                }
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = done.changed() => {}
        }
    }
}

/// Up to [`CHUNK`] bytes of `path` from `offset`, as text of the same length in bytes
/// (each byte of invalid UTF-8 becomes `?`, so offsets stay byte offsets of the file);
/// `None` when there is nothing new.
fn read_from(path: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len <= offset {
        return None;
    }
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; CHUNK.min((len - offset) as usize)];
    let n = file.read(&mut buf).ok()?;
    buf.truncate(n);
    if n == 0 {
        return None;
    }
    // Do not cut a UTF-8 sequence in two at the chunk's end.
    let cut = match std::str::from_utf8(&buf) {
        Ok(_) => n,
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
        Err(_) => n,
    };
    buf.truncate(cut);
    Some(same_length_text(&buf))
}

fn same_length_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let skip = e.error_len().unwrap_or(bad.len());
                out.extend(std::iter::repeat_n('?', skip));
                rest = &bad[skip..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_byte_length() {
        assert_eq!(same_length_text(b"ok\n"), "ok\n");
        let s = same_length_text(b"a\xffb\xc3\xa9");
        assert_eq!(s, "a?bé");
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn chunks_do_not_split_characters() {
        let dir = tempfile_dir();
        let path = dir.join("out");
        std::fs::write(&path, "é".repeat(CHUNK)).unwrap();
        let first = read_from(&path, 0).unwrap();
        assert!(first.len() <= CHUNK && first.chars().all(|c| c == 'é'));
        let second = read_from(&path, first.len() as u64).unwrap();
        assert!(second.chars().all(|c| c == 'é'));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nodeos-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
