//! The backup format's promises: a round trip gives back every table and file; a wrong
//! passphrase, a file cut short anywhere, a changed byte, a newer format or schema and a
//! data directory that holds a cluster are each refused with their reason and nothing
//! written; the file shows no secret without the passphrase.

use std::path::{Path, PathBuf};

use cloudos_cluster::ClusterCa;
use cloudos_store::{ClusterMeta, KeyRange, RedbStore, Store, Table};
use time::OffsetDateTime;

use super::archive::{self, Manifest};
use super::create::create_with;
use super::{restore_file, BackupError, Passphrase};

/// Fast scrypt for tests; the format is the same.
const TEST_LOG_N: u8 = 8;

fn passphrase() -> Passphrase {
    Passphrase::new("correct horse battery staple").expect("passphrase")
}

/// A data directory with a cluster (a real CA), records in every table, task logs and a
/// release bundle.
struct Source {
    _dir: tempfile::TempDir,
    data: PathBuf,
    store: RedbStore,
    ca_key_pem: String,
}

fn source() -> Source {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("master/workloads/logs/t-1")).expect("dirs");
    std::fs::create_dir_all(data.join("master/releases/0.2.0")).expect("dirs");
    std::fs::write(data.join("master/workloads/logs/t-1/stdout"), b"hello\n").expect("log");
    std::fs::write(
        data.join("master/releases/0.2.0/bundle"),
        vec![7u8; 200_000],
    )
    .expect("release");
    let store = RedbStore::open(data.join("master/state.redb")).expect("store");
    let now = OffsetDateTime::now_utc();
    let ca = ClusterCa::create("lab", now).expect("ca");
    store
        .init_cluster_meta(&ClusterMeta {
            name: "lab".into(),
            ca_cert_pem: ca.cert_pem().to_owned(),
            ca_key_pem: ca.key_pem(),
            created_at: now,
        })
        .expect("meta");
    for table in Table::ALL {
        if table != Table::Meta {
            store.put_raw(table, "k", br#"{"x":1}"#).expect("put");
        }
    }
    Source {
        _dir: dir,
        data,
        store,
        ca_key_pem: ca.key_pem(),
    }
}

fn backup_bytes(src: &Source) -> Vec<u8> {
    let (bytes, made) =
        create_with(&src.store, &src.data, &passphrase(), TEST_LOG_N, Vec::new()).expect("backup");
    assert_eq!(made.manifest.cluster, "lab");
    assert_eq!(made.files.files, 2);
    bytes
}

fn everything(s: &dyn Store) -> Vec<Vec<(String, Vec<u8>)>> {
    Table::ALL
        .iter()
        .map(|&t| s.range_raw(t, KeyRange::All).expect("range"))
        .collect()
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root").to_owned();
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Restores `bytes` into a fresh data directory.
fn restore_bytes(
    bytes: &[u8],
    pass: &Passphrase,
) -> (tempfile::TempDir, Result<super::Restored, BackupError>) {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("backup.age");
    std::fs::write(&file, bytes).expect("write");
    let result = restore_file(&file, pass, &dir.path().join("data"), false);
    (dir, result)
}

fn assert_nothing_restored(dir: &tempfile::TempDir) {
    let data = dir.path().join("data");
    assert_eq!(files(&data), vec![], "nothing written");
    assert!(!data.join("master").exists());
}

#[test]
fn a_round_trip_gives_back_every_table_and_file() {
    let src = source();
    let bytes = backup_bytes(&src);
    let (dir, result) = restore_bytes(&bytes, &passphrase());
    let restored = result.expect("restore");
    assert_eq!(restored.manifest.cluster, "lab");
    assert_eq!(restored.files.files, 2);
    assert_eq!(restored.replaced, None);
    let data = dir.path().join("data");
    let store = RedbStore::open(data.join("master/state.redb")).expect("open restored");
    assert_eq!(everything(&store), everything(&src.store));
    let want: Vec<_> = files(&src.data)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("state.redb"))
        .collect();
    let got: Vec<_> = files(&data)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("state.redb"))
        .collect();
    assert_eq!(got, want);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("master/releases/0.2.0/bundle"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "restored files are private");
}

#[test]
fn the_file_shows_no_secret_without_the_passphrase() {
    let src = source();
    let bytes = backup_bytes(&src);
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    let text = String::from_utf8_lossy(&bytes);
    for line in src.ca_key_pem.lines().filter(|l| l.len() > 8) {
        assert!(!text.contains(line), "a line of the CA key is in clear");
    }
    for clear in ["PRIVATE KEY", "cloudos-backup.json", "store.json", "hello"] {
        assert!(!text.contains(clear), "{clear} is in clear");
    }
}

#[test]
fn a_wrong_passphrase_is_refused_and_nothing_is_written() {
    let bytes = backup_bytes(&source());
    let (dir, result) = restore_bytes(&bytes, &Passphrase::for_restore("not the passphrase"));
    let err = result.expect_err("wrong passphrase");
    assert!(matches!(err, BackupError::WrongPassphrase { .. }), "{err}");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    assert_nothing_restored(&dir);
}

#[test]
fn a_file_cut_short_anywhere_is_refused_and_nothing_is_written() {
    let bytes = backup_bytes(&source());
    // In the header, in the first chunk, mid-way, and one byte short of the end.
    for cut in [20, 200, bytes.len() / 2, bytes.len() - 1] {
        let (dir, result) = restore_bytes(&bytes[..cut], &passphrase());
        let err = result.expect_err("truncated");
        assert!(
            matches!(err, BackupError::Damaged { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("nothing was restored"), "{err}");
        assert_nothing_restored(&dir);
    }
}

#[test]
fn a_changed_byte_is_refused_and_nothing_is_written() {
    let bytes = backup_bytes(&source());
    let header_end = bytes
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("header end");
    // The header's MAC, the payload's first chunk, its last chunk.
    for at in [header_end + 10, header_end + 200, bytes.len() - 5] {
        let mut changed = bytes.clone();
        changed[at] ^= 0x01;
        let (dir, result) = restore_bytes(&changed, &passphrase());
        let err = result.expect_err("tampered");
        assert!(
            matches!(err, BackupError::Damaged { .. }),
            "byte {at}: {err}"
        );
        assert_nothing_restored(&dir);
    }
}

#[test]
fn something_else_is_not_a_backup() {
    let (dir, result) = restore_bytes(b"PK\x03\x04 a zip file, say", &passphrase());
    let err = result.expect_err("not age");
    assert!(matches!(err, BackupError::NotABackup { .. }), "{err}");
    assert_nothing_restored(&dir);
}

/// A backup whose manifest says something else than this code writes.
fn backup_with(
    src: &Source,
    change: impl FnOnce(&mut Manifest, &mut cloudos_store::Snapshot),
) -> Vec<u8> {
    let mut snapshot = src.store.snapshot().expect("snapshot");
    let mut manifest = Manifest::new("lab", "pin", &snapshot, OffsetDateTime::now_utc());
    change(&mut manifest, &mut snapshot);
    archive::write(
        Vec::new(),
        &passphrase(),
        TEST_LOG_N,
        &manifest,
        &snapshot,
        &src.data,
    )
    .expect("write")
    .0
}

#[test]
fn a_newer_format_or_schema_is_refused_and_nothing_is_written() {
    let src = source();
    let newer_format = backup_with(&src, |m, _| m.version = archive::FORMAT_VERSION + 1);
    let (dir, result) = restore_bytes(&newer_format, &passphrase());
    let err = result.expect_err("newer format");
    assert!(matches!(err, BackupError::NewerFormat { .. }), "{err}");
    assert_nothing_restored(&dir);

    let newer_schema = backup_with(&src, |m, s| {
        m.schema_version = cloudos_store::SCHEMA_VERSION + 1;
        s.schema_version = cloudos_store::SCHEMA_VERSION + 1;
    });
    let (dir, result) = restore_bytes(&newer_schema, &passphrase());
    let err = result.expect_err("newer schema");
    assert!(err.to_string().contains("newer than"), "{err}");
    assert!(
        matches!(
            err,
            BackupError::Store(cloudos_store::StoreError::SnapshotNewer { .. })
        ),
        "{err}"
    );
    assert_nothing_restored(&dir);
}

#[test]
fn a_data_dir_with_a_cluster_is_refused_unless_forced() {
    let src = source();
    let bytes = backup_bytes(&src);
    let other = source();
    let file = other.data.join("backup.age");
    std::fs::write(&file, &bytes).expect("write");
    let before = everything(&other.store);
    drop(other.store);

    let err = restore_file(&file, &passphrase(), &other.data, false).expect_err("holds a cluster");
    assert!(
        matches!(err, BackupError::HoldsCluster { ref name, .. } if name == "lab"),
        "{err}"
    );
    assert!(err.to_string().contains("--force-restore"), "{err}");
    let store = RedbStore::open(other.data.join("master/state.redb")).expect("open");
    assert_eq!(everything(&store), before, "unchanged");
    drop(store);

    let restored = restore_file(&file, &passphrase(), &other.data, true).expect("forced");
    let aside = restored.replaced.expect("kept aside");
    assert!(aside.join("state.redb").exists());
    let store = RedbStore::open(other.data.join("master/state.redb")).expect("open");
    assert_eq!(everything(&store), everything(&src.store));
}

#[test]
fn the_passphrase_is_never_shown_and_must_be_long_enough() {
    let p = passphrase();
    assert!(!format!("{p:?}").contains("horse"));
    assert!(matches!(
        Passphrase::new("short"),
        Err(BackupError::ShortPassphrase { .. })
    ));
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pass");
    std::fs::write(&file, "correct horse battery staple\nignored\n").expect("write");
    assert!(Passphrase::from_file(&file, true).is_ok());
}

#[test]
fn paths_outside_the_file_trees_are_not_unpacked() {
    use std::path::Path;
    for bad in [
        "files/../etc/passwd",
        "files/master/workloads/../../x",
        "files/master/state.redb",
        "files//etc/shadow",
        "elsewhere/releases/x",
    ] {
        assert_eq!(archive::file_path_for_test(Path::new(bad)), None, "{bad}");
    }
    assert_eq!(
        archive::file_path_for_test(Path::new("files/master/releases/0.2.0/bundle")),
        Some(PathBuf::from("master/releases/0.2.0/bundle"))
    );
}

/// The installer's check before it erases a disk: the whole file read and authenticated,
/// its manifest and counts given back, and not one file written anywhere.
#[test]
fn inspecting_reads_the_whole_backup_and_writes_nothing() {
    let src = source();
    let bytes = backup_bytes(&src);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("backup.age");
    std::fs::write(&file, &bytes).expect("write");

    let opened = super::inspect(&file, &passphrase()).expect("inspect");
    assert_eq!(opened.manifest.cluster, "lab");
    assert_eq!(opened.files.files, 2);
    assert_eq!(opened.files.bytes, 200_006);
    assert_eq!(opened.manifest.records.get("nodes"), Some(&1));
    assert_eq!(files(dir.path()).len(), 1, "only the backup itself");

    let err = super::inspect(&file, &Passphrase::for_restore("guess")).expect_err("wrong");
    assert!(matches!(err, BackupError::WrongPassphrase { .. }), "{err}");
    let mut cut = bytes.clone();
    cut.truncate(bytes.len() - 1);
    std::fs::write(&file, &cut).expect("write");
    let err = super::inspect(&file, &passphrase()).expect_err("cut short");
    assert!(matches!(err, BackupError::Damaged { .. }), "{err}");
}

/// Older backups have no master addresses; they still read.
#[test]
fn a_manifest_without_master_addresses_reads() {
    let m: Manifest = serde_json::from_str(
        r#"{"format":"cloudos-backup","version":1,"created_at":"2026-12-01T10:00:00Z",
            "cluster":"lab","ca_pin":"sha256:00","schema_version":1,"store_revision":3,
            "nodeos_version":"0.1.0","records":{}}"#,
    )
    .expect("old manifest");
    assert!(m.master_addresses.is_empty());
}
