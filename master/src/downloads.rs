//! What the master hands out to machines that install themselves with `install.sh`: the
//! `nodeos` and `cloudos` binaries per architecture and their SHA-256 digests.
//!
//! The files come from a downloads directory (`--downloads`, default `<data>/downloads`),
//! named `nodeos-<arch>` / `cloudos-<arch>` (arch as `uname -m` prints it). When that
//! directory holds a `SHA256SUMS` made by the build, its digests are the ones served, so a
//! binary changed on the master's disk after the build no longer matches what clients
//! check; files it does not list are hashed once, at the first request for a download (not
//! at start: hashing the master's own binary must not delay a boot). The master's own
//! executable is served as `nodeos-<its arch>` unless the directory has one.
//!
//! Owns reading and hashing those files; it serves nothing itself (see `routes::install`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The digest list's file name, as `sha256sum` tools expect it.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// One file that can be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
}

/// Every file the master serves under `/install/`, by name.
#[derive(Debug, Default, Clone)]
pub struct Downloads {
    files: BTreeMap<String, Download>,
}

impl Downloads {
    /// Reads `dir` (a missing directory is an empty one) and adds `own` (the running
    /// binary under its download name) unless `dir` has a file of that name. Blocking: it
    /// hashes files. Problems with single files are logged and the file left out; a
    /// master always starts.
    pub fn scan(dir: &Path, own: Option<(String, PathBuf)>) -> Downloads {
        let listed = read_sums(&dir.join(SUMS_FILE));
        let mut files = BTreeMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name == SUMS_FILE || !is_download_name(&name) {
                        continue;
                    }
                    let path = entry.path();
                    if !path.is_file() {
                        continue;
                    }
                    if let Some(download) = describe(&name, path, listed.get(&name)) {
                        files.insert(name, download);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot read the downloads in {}: {e}", dir.display()),
        }
        if let Some((name, path)) = own {
            if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(name) {
                if let Some(download) = describe(slot.key(), path, None) {
                    slot.insert(download);
                }
            }
        }
        if !files.is_empty() {
            log::info!(
                "serving install.sh and {}",
                files.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Downloads { files }
    }

    pub fn get(&self, name: &str) -> Option<&Download> {
        self.files.get(name)
    }

    /// The `SHA256SUMS` text: `<hex>  <name>` per line, sorted by name.
    pub fn sums(&self) -> String {
        self.files
            .iter()
            .map(|(name, d)| format!("{}  {name}\n", d.sha256))
            .collect()
    }
}

/// The download name of this program for this machine: `nodeos-x86_64`, `nodeos-aarch64`.
pub fn own_name() -> String {
    format!("nodeos-{}", std::env::consts::ARCH)
}

/// The file behind the running program, if the kernel can say.
pub fn own_path() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/exe").ok()
}

fn describe(name: &str, path: PathBuf, listed: Option<&String>) -> Option<Download> {
    let actual = match sha256_file(&path) {
        Ok(digest) => digest,
        Err(e) => {
            log::warn!("not serving {name}: cannot read {}: {e}", path.display());
            return None;
        }
    };
    let sha256 = match listed {
        Some(listed) if *listed != actual => {
            // Serve the build's digest: clients then refuse the changed file, which is the
            // point of the list. Say so here too, where an operator looks first.
            log::warn!(
                "{} does not match its digest in {SUMS_FILE} (listed {listed}, file {actual}); \
                 installs will refuse it until it is replaced",
                path.display()
            );
            listed.clone()
        }
        Some(listed) => listed.clone(),
        None => actual,
    };
    Some(Download { path, sha256 })
}

/// Names a client may ask for: plain file names, no paths, nothing hidden.
pub fn is_download_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `sha256sum` output (`<hex>  <name>` or `<hex> *<name>`) as name → digest; unreadable or
/// malformed lines are skipped with a warning.
fn read_sums(path: &Path) -> BTreeMap<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_sums(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            log::warn!("ignoring {}: {e}", path.display());
            BTreeMap::new()
        }
    }
}

pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line.split_once(' ').and_then(|(hex, rest)| {
            let name = rest.trim_start_matches([' ', '*']);
            let hex = hex.to_ascii_lowercase();
            let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            (valid && is_download_name(name)).then(|| (name.to_owned(), hex))
        });
        match parsed {
            Some((name, hex)) => {
                sums.insert(name, hex);
            }
            None => log::warn!("ignoring a malformed line in {SUMS_FILE}: {line:?}"),
        }
    }
    sums
}

/// The SHA-256 of a file, lowercase hex, read in 64 KiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_are_plain_files() {
        for good in ["nodeos-x86_64", "cloudos-aarch64", "a.b_c"] {
            assert!(is_download_name(good), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "../etc/passwd",
            "a/b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!is_download_name(bad), "{bad}");
        }
    }

    #[test]
    fn sums_parse_like_sha256sum_writes_them() {
        let text = format!(
            "{EMPTY_SHA256}  nodeos-x86_64\n{} *cloudos-x86_64\nnot a line\n{EMPTY_SHA256}  ../x\n",
            EMPTY_SHA256.to_uppercase()
        );
        let sums = parse_sums(&text);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert_eq!(sums["nodeos-x86_64"], EMPTY_SHA256);
        assert_eq!(sums["cloudos-x86_64"], EMPTY_SHA256);
    }

    #[test]
    fn listed_digests_win_over_the_file_and_the_own_binary_fills_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodeos-x86_64"), b"tampered").unwrap();
        std::fs::write(dir.path().join("cloudos-x86_64"), b"").unwrap();
        std::fs::write(dir.path().join(".partial"), b"x").unwrap();
        std::fs::write(
            dir.path().join(SUMS_FILE),
            format!("{EMPTY_SHA256}  nodeos-x86_64\n"),
        )
        .unwrap();
        let own = dir.path().join("self");
        std::fs::write(&own, b"").unwrap();
        let downloads =
            Downloads::scan(dir.path(), Some(("nodeos-aarch64".to_owned(), own.clone())));
        // The build's digest of nodeos, not the changed file's.
        assert_eq!(downloads.get("nodeos-x86_64").unwrap().sha256, EMPTY_SHA256);
        assert_eq!(
            downloads.get("cloudos-x86_64").unwrap().sha256,
            EMPTY_SHA256
        );
        assert_eq!(downloads.get("nodeos-aarch64").unwrap().path, own);
        assert!(downloads.get(".partial").is_none());
        assert!(
            downloads.get("self").is_some(),
            "any plain file in the directory"
        );
        assert_eq!(
            downloads.sums().lines().next().unwrap(),
            format!("{EMPTY_SHA256}  cloudos-x86_64")
        );
    }

    #[test]
    fn a_missing_directory_serves_only_the_own_binary() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("nodeos");
        std::fs::write(&own, b"").unwrap();
        let downloads = Downloads::scan(
            &dir.path().join("nope"),
            Some(("nodeos-x86_64".to_owned(), own)),
        );
        assert_eq!(downloads.sums(), format!("{EMPTY_SHA256}  nodeos-x86_64\n"));
    }
}
