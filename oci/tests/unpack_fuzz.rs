//! Property run of the unpacker against random and adversarial tar streams: members at
//! `..`, absolute and long names (GNU and PAX), symlinks to the host swapped in for
//! directories, hard links out, whiteouts through symlinks, duplicates, records with
//! lying sizes, cut-off streams and flipped bytes, plain or gzip'd. For each stream:
//! no panic, nothing outside the store changes (a host tree beside it is compared
//! before and after), a refused layer leaves nothing behind.
//!
//! A small run is part of `cargo test`; a long one is a fuzz run:
//! `CLOUDOS_FUZZ_CASES=20000 cargo test -p cloudos-oci --release --test unpack_fuzz`.
//! It prints the cases run, the time taken, and how many layers unpacked or were refused.

mod common;

use std::cell::{Cell, RefCell};
use std::fs;
use std::time::Instant;

use cloudos_oci::Limits;
use common::{assert_unchanged, gzip, LongNames, Scene, Tar};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const DEFAULT_CASES: u32 = 48;

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink,
    Link,
    Fifo,
    Char,
    /// A long-name or PAX record on its own, declaring `size` bytes.
    Record(u8, u64),
}

#[derive(Debug, Clone)]
struct Member {
    kind: Kind,
    path: String,
    link: String,
    mode: u32,
    data: Vec<u8>,
    long: LongNames,
}

#[derive(Debug, Clone)]
struct Layer {
    members: Vec<Member>,
    finished: bool,
    /// A byte to flip: (position, xor mask).
    flip: Option<(usize, u8)>,
    gzip: bool,
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string),
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(".wh.a".to_string()),
        1 => Just(".wh..wh..opq".to_string()),
        1 => Just("l".repeat(150)),
    ]
}

fn path(host: String) -> impl Strategy<Value = String> {
    let rel = prop::collection::vec(component(), 1..4).prop_map(|parts| parts.join("/"));
    (rel, 0..4u8).prop_map(move |(rel, prefix)| match prefix {
        0 => format!("/{rel}"),
        1 => format!("{host}/{rel}"),
        _ => rel,
    })
}

fn link(host: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("{host}/etc")),
        Just(format!("{host}/tool")),
        Just(format!("{host}/etc/passwd")),
        Just("../../../host".to_string()),
        Just("../../../host/etc/passwd".to_string()),
        Just("/".to_string()),
        Just("..".to_string()),
        path(host),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        12 => Just(Kind::File),
        12 => Just(Kind::Dir),
        12 => Just(Kind::Symlink),
        6 => Just(Kind::Link),
        3 => Just(Kind::Fifo),
        3 => Just(Kind::Char),
        // Rare: most streams should get past their records to the files.
        1 => (prop::sample::select(vec![b'L', b'K', b'x', b'g']), 0u64..(1 << 34))
            .prop_map(|(t, size)| Kind::Record(t, size)),
    ]
}

fn member(host: String) -> impl Strategy<Value = Member> {
    (
        kind(),
        path(host.clone()),
        link(host),
        prop::sample::select(vec![0o644, 0o755, 0o7777, 0o6777, 0o4755, 0o000, 0o1777]),
        prop::collection::vec(any::<u8>(), 0..600),
        any::<bool>(),
    )
        .prop_map(|(kind, path, link, mode, data, pax)| Member {
            kind,
            path,
            link,
            mode,
            data,
            long: if pax { LongNames::Pax } else { LongNames::Gnu },
        })
}

fn layer(host: String) -> impl Strategy<Value = Layer> {
    (
        prop::collection::vec(member(host), 1..12),
        prop::bool::weighted(0.95),
        prop::option::weighted(0.05, (any::<usize>(), 1u8..=255)),
        any::<bool>(),
    )
        .prop_map(|(members, finished, flip, gzip)| Layer {
            members,
            finished,
            flip,
            gzip,
        })
}

fn bytes(layer: &Layer) -> Vec<u8> {
    let mut tar = Tar::new();
    for m in &layer.members {
        let (path, link) = (m.path.as_bytes(), m.link.as_bytes());
        let entry_type = match m.kind {
            Kind::File => tar::EntryType::Regular,
            Kind::Dir => tar::EntryType::Directory,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Link => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
            Kind::Char => tar::EntryType::Char,
            Kind::Record(t, size) => {
                tar.record(tar::EntryType::new(t), size, &m.data);
                continue;
            }
        };
        let data = if entry_type == tar::EntryType::Regular {
            &m.data[..]
        } else {
            &[]
        };
        tar.member_with(entry_type, path, link, m.mode, data, m.long);
    }
    let mut out = if layer.finished {
        tar.finish()
    } else {
        tar.unfinished()
    };
    if let Some((at, mask)) = layer.flip {
        let len = out.len();
        if len > 0 {
            out[at % len] ^= mask;
        }
    }
    if layer.gzip {
        gzip(&out)
    } else {
        out
    }
}

#[test]
fn unpack_fuzz() {
    let cases = std::env::var("CLOUDOS_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    // Small caps, so that the record, entry and size caps are hit too.
    let scene = Scene::with_limits(Limits {
        max_layer_unpacked_bytes: 6 << 10,
        max_layer_entries: 8,
        max_header_record_bytes: 1024,
        ..Limits::default()
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (unpacked, refused) = (Cell::new(0u64), Cell::new(0u64));
    let reasons = RefCell::new(std::collections::BTreeMap::new());
    let started = Instant::now();
    let result = runner.run(&layer(scene.host_str()), |layer| {
        let tar = bytes(&layer);
        let before = scene.snapshot();
        let digest = scene.store.put_bytes(&tar).unwrap();
        let result = scene.store.unpack_layer(&digest);
        assert_unchanged(
            &before,
            &scene.snapshot(),
            &format!("{layer:?}: {result:?}"),
        );
        match &result {
            Ok(dir) => {
                prop_assert!(dir.is_dir());
                prop_assert_eq!(dir, &scene.store.layer_dir(&digest));
                unpacked.set(unpacked.get() + 1);
            }
            Err(e) => {
                prop_assert!(!scene.store.layer_dir(&digest).exists(), "{}", e);
                refused.set(refused.get() + 1);
                let why = format!("{e:?}");
                let why = why.split([' ', '{', '(']).next().unwrap_or("").to_string();
                *reasons.borrow_mut().entry(why).or_insert(0u64) += 1;
            }
        }
        let left = fs::read_dir(scene.store.root().join("tmp"))
            .unwrap()
            .count();
        prop_assert_eq!(left, 0, "the unpack left work in tmp/");
        Ok(())
    });
    eprintln!(
        "unpack_fuzz: {} cases in {:.1} s: {} unpacked, {} refused {:?}, crashes {}",
        unpacked.get() + refused.get(),
        started.elapsed().as_secs_f64(),
        unpacked.get(),
        refused.get(),
        reasons.borrow(),
        u8::from(result.is_err()),
    );
    result.unwrap();
}
