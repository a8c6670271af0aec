//! A malicious image's layers against the real unpacker, as root: each test writes the
//! tar stream an attacker would publish, unpacks it into a real store, and checks that
//! the attack was refused (or landed inside the layer) and that the host tree beside the
//! store is byte-for-byte, mode-for-mode and mtime-for-mtime what it was.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cloudos_oci::{Digest, Limits, UnpackError};
use common::{assert_unchanged, gzip, LongNames, Scene, Tar};

/// Unpacks `tar` in `scene`, checking that nothing outside the store changed whatever
/// the outcome.
fn unpack(scene: &Scene, tar: &[u8]) -> (Digest, Result<std::path::PathBuf, UnpackError>) {
    let before = scene.snapshot();
    let digest = scene.store.put_bytes(tar).unwrap();
    let result = scene.store.unpack_layer(&digest);
    assert_unchanged(&before, &scene.snapshot(), &format!("{result:?}"));
    (digest, result)
}

fn refused(scene: &Scene, tar: &[u8], reason: &str) {
    let (digest, result) = unpack(scene, tar);
    let err = result.expect_err("the layer was unpacked");
    assert!(
        matches!(err, UnpackError::PathEscape { .. }),
        "{err} is not a refusal"
    );
    assert!(err.to_string().contains(reason), "{err}");
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    assert!(!scene.store.layer_dir(&digest).exists());
    assert_eq!(
        fs::read_dir(scene.store.root().join("tmp"))
            .unwrap()
            .count(),
        0,
        "a refused layer leaves nothing behind"
    );
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// The attack of issue 16: a directory member with setuid, setgid and world-write bits,
/// then a symlink member at the same name pointing at a host file. The old unpacker set
/// directory modes at the end with a path, following the symlink: the host file became
/// setuid root and world-writable.
#[test]
fn malicious_layer_cannot_chmod_host_file_through_dir_symlink_swap() {
    let scene = Scene::new();
    let host = scene.host_str();
    for (name, target) in [
        ("abs-file", format!("{host}/tool")),
        ("abs-dir", format!("{host}/etc")),
        // From store/tmp/layer-X (and store/layers/X): three levels up is the scratch.
        ("rel-file", "../../../host/tool".to_string()),
        ("via-host-link", format!("{host}/etc-link")),
    ] {
        let tar = Tar::new().dir(name, 0o6777).symlink(name, &target).finish();
        let (_, result) = unpack(&scene, &tar);
        let layer = result.expect("later members replace earlier ones; the layer is valid");
        // The symlink stands in the layer; its target was never touched.
        assert_eq!(fs::read_link(layer.join(name)).unwrap(), Path::new(&target));
    }
    // Nested: the subdirectory's deferred mode must not land below the host path either.
    let host_etc = format!("{host}/etc");
    let tar = Tar::new()
        .dir("n", 0o755)
        .dir("n/passwd", 0o4777)
        .symlink("n", &host_etc)
        .finish();
    let (_, result) = unpack(&scene, &tar);
    result.unwrap();
    assert_eq!(mode(&scene.host().join("tool")), 0o755, "no setuid bit");
    assert_eq!(mode(&scene.host().join("etc")), 0o755);
    assert_eq!(mode(&scene.host().join("etc/passwd")), 0o644);
}

/// A symlink member to a host file, then a device node, FIFO and file of the same name
/// with owner and mode: each replaces the symlink; none reaches the host file.
#[test]
fn malicious_layer_cannot_chown_or_chmod_host_file_through_a_symlink_member() {
    let scene = Scene::new();
    let passwd = format!("{}/etc/passwd", scene.host_str());
    let mut tar = Tar::new();
    tar.symlink("a", &passwd)
        .member(tar::EntryType::Fifo, b"a", b"", 0o6777, b"")
        .symlink("b", &passwd)
        .file("b", b"attacker", 0o4755)
        .symlink("c", &passwd);
    let (_, result) = unpack(&scene, &tar.finish());
    let layer = result.unwrap();
    assert!(fs::symlink_metadata(layer.join("a"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(layer.join("b")).unwrap(), b"attacker");
    assert_eq!(
        mode(&layer.join("b")),
        0o4755,
        "setuid inside the layer is the image's"
    );
    assert_eq!(fs::read_link(layer.join("c")).unwrap(), Path::new(&passwd));
}

#[test]
fn malicious_layer_cannot_write_through_a_symlinked_directory() {
    let scene = Scene::new();
    let host = scene.host_str();
    refused(
        &scene,
        &Tar::new()
            .symlink("x", &format!("{host}/etc"))
            .file("x/passwd", b"pwned", 0o644)
            .finish(),
        "is a symlink",
    );
    refused(
        &scene,
        &Tar::new()
            .dir("d", 0o755)
            .symlink("d", "../../../host")
            .dir("d/etc/newdir", 0o777)
            .finish(),
        "is a symlink",
    );
    refused(
        &scene,
        &Tar::new()
            .symlink("x", &host)
            .member(tar::EntryType::Fifo, b"x/etc/fifo", b"", 0o666, b"")
            .finish(),
        "is a symlink",
    );
}

#[test]
fn malicious_layer_cannot_climb_out_with_dot_dot() {
    let scene = Scene::new();
    for name in [
        "../evil",
        "../../../host/etc/passwd",
        "a/../../evil",
        "./../evil",
    ] {
        refused(
            &scene,
            &Tar::new().file(name, b"pwned", 0o644).finish(),
            "contains ..",
        );
    }
}

/// An absolute name is a name inside the layer (as in `docker export`), never the host's.
#[test]
fn absolute_names_land_inside_the_layer() {
    let scene = Scene::new();
    let target = format!("{}/etc/passwd", scene.host_str());
    let (_, result) = unpack(&scene, &Tar::new().file(&target, b"inside", 0o600).finish());
    let layer = result.unwrap();
    let inside = layer.join(target.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"inside");
}

#[test]
fn malicious_hard_links_cannot_reach_outside() {
    let scene = Scene::new();
    let host = scene.host_str();
    refused(
        &scene,
        &Tar::new()
            .hard_link("evil", "../../../host/etc/shadow")
            .finish(),
        "contains ..",
    );
    refused(
        &scene,
        &Tar::new()
            .symlink("h", &format!("{host}/etc"))
            .hard_link("evil", "h/shadow")
            .finish(),
        "is a symlink",
    );
    // An absolute target names a path inside the layer, which does not exist there.
    let (_, result) = unpack(
        &scene,
        &Tar::new()
            .hard_link("evil", &format!("{host}/etc/shadow"))
            .finish(),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, UnpackError::BadHardLink { .. }), "{err}");
    // A hard link to a symlink links the symlink itself, and writing to the name later
    // replaces it instead of writing through.
    let (_, result) = unpack(
        &scene,
        &Tar::new()
            .symlink("s", &format!("{host}/etc/shadow"))
            .hard_link("evil", "s")
            .file("evil", b"pwned", 0o644)
            .finish(),
    );
    let layer = result.unwrap();
    assert_eq!(fs::read(layer.join("evil")).unwrap(), b"pwned");
    assert_eq!(
        fs::metadata(scene.host().join("etc/shadow"))
            .unwrap()
            .nlink(),
        1
    );
}

/// The same escapes, with the names in GNU long-name and PAX records (which the tar crate
/// folds in before the unpacker sees the member).
#[test]
fn long_names_cannot_smuggle_an_escape() {
    let scene = Scene::new();
    let deep = format!("{}evil", "../".repeat(60));
    let host = scene.host_str();
    for long in [LongNames::Gnu, LongNames::Pax] {
        let file = |path: &str| {
            Tar::new()
                .member_with(
                    tar::EntryType::Regular,
                    path.as_bytes(),
                    b"",
                    0o644,
                    b"x",
                    long,
                )
                .finish()
        };
        refused(&scene, &file(&deep), "contains ..");
        let link = Tar::new()
            .member_with(
                tar::EntryType::Link,
                b"l",
                deep.as_bytes(),
                0o644,
                b"",
                long,
            )
            .finish();
        refused(&scene, &link, "contains ..");
        // A long name through a symlink the layer made.
        let padded = format!("x/{}/passwd", "p".repeat(150));
        let through = Tar::new()
            .symlink("x", &host)
            .member_with(
                tar::EntryType::Regular,
                padded.as_bytes(),
                b"",
                0o644,
                b"x",
                long,
            )
            .finish();
        refused(&scene, &through, "is a symlink");
        // A long name that stays inside works.
        let inside = format!("{}/file", "d".repeat(200));
        let (_, result) = unpack(&scene, &file(&inside));
        assert_eq!(fs::read(result.unwrap().join(&inside)).unwrap(), b"x");
    }
    // A PAX path overrides the header's harmless name.
    let tar = Tar::new()
        .pax(&[("path", b"../../../host/etc/passwd")])
        .file("harmless", b"pwned", 0o644)
        .finish();
    refused(&scene, &tar, "contains ..");
}

#[test]
fn duplicate_members_replace_each_other_inside_the_layer() {
    let scene = Scene::new();
    let host = scene.host_str();
    let tar = Tar::new()
        .file("a", b"one", 0o644)
        .dir("a", 0o700)
        .file("a/inner", b"two", 0o644)
        .symlink("a", &host)
        .file("a", b"three", 0o640)
        .dir("b", 0o711)
        .dir("b", 0o750)
        .finish();
    let (_, result) = unpack(&scene, &tar);
    let layer = result.unwrap();
    assert_eq!(fs::read(layer.join("a")).unwrap(), b"three");
    assert_eq!(mode(&layer.join("a")), 0o640);
    assert_eq!(
        mode(&layer.join("b")),
        0o750,
        "the last directory member wins"
    );
}

#[test]
fn malicious_whiteouts_cannot_delete_or_mark_through_a_symlink() {
    let scene = Scene::new();
    let host = scene.host_str();
    refused(
        &scene,
        &Tar::new()
            .symlink("x", &format!("{host}/etc"))
            .file("x/.wh.passwd", b"", 0o644)
            .finish(),
        "is a symlink",
    );
    refused(
        &scene,
        &Tar::new()
            .symlink("x", &format!("{host}/etc"))
            .file("x/.wh..wh..opq", b"", 0o644)
            .finish(),
        "is a symlink",
    );
    refused(
        &scene,
        &Tar::new().file("../.wh.host", b"", 0o644).finish(),
        "contains ..",
    );
    // Whiting out the symlink itself removes the symlink, not what it points at.
    let (_, result) = unpack(
        &scene,
        &Tar::new()
            .symlink("x", &format!("{host}/etc"))
            .file(".wh.x", b"", 0o644)
            .finish(),
    );
    let layer = result.unwrap();
    let x = fs::symlink_metadata(layer.join("x")).unwrap();
    assert!(x.file_type().is_char_device());
}

#[test]
fn directory_modes_and_times_are_the_layers() {
    let scene = Scene::new();
    let tar = Tar::new()
        .dir("ro", 0o555)
        .file("ro/file", b"x", 0o4711)
        .dir("sticky", 0o1777)
        .finish();
    let (_, result) = unpack(&scene, &tar);
    let layer = result.unwrap();
    assert_eq!(mode(&layer.join("ro")), 0o555);
    assert_eq!(mode(&layer.join("ro/file")), 0o4711);
    assert_eq!(mode(&layer.join("sticky")), 0o1777);
    for path in ["ro", "ro/file", "sticky"] {
        assert_eq!(
            fs::symlink_metadata(layer.join(path)).unwrap().mtime(),
            1_000_000_000
        );
    }
}

// ---- image bombs -------------------------------------------------------------------

/// 64 MiB of zeros gzip to about 64 KiB: the cap stops the unpack at 8 MiB.
#[test]
fn gzip_bomb_layer_is_refused_by_the_unpacked_cap() {
    let limit = 8 << 20;
    let scene = Scene::with_limits(Limits {
        max_layer_unpacked_bytes: limit,
        ..Limits::default()
    });
    let bomb = gzip(
        &Tar::new()
            .file("zeros", &vec![0u8; 64 << 20], 0o644)
            .finish(),
    );
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    let (digest, result) = unpack(&scene, &bomb);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { layer, limit: l } if *layer == digest && *l == limit),
        "{err}"
    );
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    assert!(!scene.store.layer_dir(&digest).exists());
    assert_eq!(
        fs::read_dir(scene.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// The defaults are generous, but a stream exactly at the cap still passes.
#[test]
fn a_layer_right_at_the_cap_unpacks() {
    let tar = Tar::new().file("f", &[7u8; 4096], 0o644).finish();
    let scene = Scene::with_limits(Limits {
        max_layer_unpacked_bytes: tar.len() as u64,
        ..Limits::default()
    });
    let (_, result) = unpack(&scene, &gzip(&tar));
    assert_eq!(fs::read(result.unwrap().join("f")).unwrap(), [7u8; 4096]);
}

#[test]
fn entry_count_bomb_is_refused() {
    let scene = Scene::with_limits(Limits {
        max_layer_entries: 1000,
        ..Limits::default()
    });
    let mut tar = Tar::new();
    for i in 0..5000 {
        tar.file(&format!("f{i}"), b"", 0o644);
    }
    let (digest, result) = unpack(&scene, &gzip(&tar.finish()));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooManyEntries { layer, limit: 1000 } if *layer == digest),
        "{err}"
    );
    assert!(!scene.store.layer_dir(&digest).exists());
}

/// A PAX record or GNU long name declaring gigabytes is refused before it is read: the
/// old unpacker read such records into memory whole.
#[test]
fn giant_pax_and_long_name_records_are_refused_before_reading() {
    let scene = Scene::new();
    let limit = Limits::default().max_header_record_bytes;
    for (kind, name) in [
        (tar::EntryType::XHeader, "PAX record"),
        (tar::EntryType::GNULongName, "GNU long name"),
        (tar::EntryType::GNULongLink, "GNU long link name"),
        (tar::EntryType::XGlobalHeader, "PAX global record"),
    ] {
        // Declares 8 GiB - 1 (the largest octal size) and carries a few bytes.
        let declared = 0o77777777777;
        let tar = Tar::new()
            .record(kind, declared, b"30 path=aaaaaaaaaaaaaaaaaaaa\n")
            .unfinished();
        let (_, result) = unpack(&scene, &gzip(&tar));
        let err = result.unwrap_err();
        assert!(
            matches!(&err, UnpackError::RecordTooLarge { kind, size, limit: l, .. }
                if *kind == name && *size == declared && *l == limit),
            "{err}"
        );
        // And one really 2 MiB long.
        let big = vec![b'a'; 2 << 20];
        let tar = Tar::new().record(kind, big.len() as u64, &big).finish();
        let (_, result) = unpack(&scene, &gzip(&tar));
        assert!(
            matches!(result, Err(UnpackError::RecordTooLarge { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn sparse_members_and_lying_pax_sizes_are_refused() {
    let scene = Scene::new();
    let sparse = Tar::new()
        .member(tar::EntryType::GNUSparse, b"holes", b"", 0o644, b"")
        .finish();
    let (_, result) = unpack(&scene, &sparse);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("sparse"), "{err}");
    let lying = Tar::new()
        .pax(&[("size", b"999999999")])
        .file("f", b"short", 0o644)
        .finish();
    let (_, result) = unpack(&scene, &lying);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("PAX size"), "{err}");
}
