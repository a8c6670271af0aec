use std::collections::BTreeMap;

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::volume::parse_volume;
use cloudos_cluster::workload::{TaskCreateRequest, TaskState, WorkloadSpec};
use cloudos_scheduler::Resources;
use time::macros::datetime;
use time::OffsetDateTime;

use super::super::tests::{assigned, scheduler, spec};
use super::super::{Book, BookError, NodeFacts};

const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);

fn nodes(ready: &[bool]) -> Vec<NodeFacts> {
    ready
        .iter()
        .enumerate()
        .map(|(i, &ready)| NodeFacts {
            name: format!("n{}", i + 1),
            arch: "x86_64".into(),
            labels: BTreeMap::new(),
            ready,
            cordoned: false,
            capacity: Resources::new(4000, 4 << 30),
        })
        .collect()
}

fn with(volumes: &[&str]) -> WorkloadSpec {
    WorkloadSpec {
        volumes: volumes.iter().map(|v| parse_volume(v).unwrap()).collect(),
        ..spec()
    }
}

fn task(book: &mut Book, id: &str, spec: WorkloadSpec) {
    let request = TaskCreateRequest {
        spec,
        retries: 0,
        request_id: None,
        timeout_secs: None,
    };
    book.create_task(id.into(), request, NOW).expect("task");
}

/// The first run that names a volume puts it on its node; every later one goes there,
/// even where spread would choose the emptier node, and waits for it (saying so) while it
/// is down; work whose volumes are on two nodes goes nowhere and says why.
#[test]
fn work_goes_to_the_node_that_holds_its_volume() {
    let mut book = Book::default();
    task(&mut book, "t-1", with(&["db:/data"]));
    let effects = book.schedule(&scheduler(), &nodes(&[true, true]), NOW);
    let first = assigned(&effects)[0].0.clone();
    assert_eq!(effects.save_volumes.len(), 1);
    assert_eq!(
        effects.save_volumes[0].node.as_deref(),
        Some(first.as_str())
    );

    // The other node is empty, t-1 still runs on the first: spread would pick the other.
    task(&mut book, "t-2", with(&["db:/data:ro"]));
    let effects = book.schedule(&scheduler(), &nodes(&[true, true]), NOW);
    assert_eq!(assigned(&effects)[0].0, first);
    assert!(effects.save_volumes.is_empty());

    let down: Vec<bool> = ["n1", "n2"].iter().map(|n| *n != first).collect();
    task(&mut book, "t-3", with(&["db:/x"]));
    let effects = book.schedule(&scheduler(), &nodes(&down), NOW);
    assert!(assigned(&effects).is_empty());
    let why = book
        .task("t-3")
        .and_then(|t| t.reason.clone())
        .unwrap_or_default();
    assert!(
        why.starts_with(&format!(
            "waits for node {first}, which holds its volume db:"
        )),
        "{why}"
    );

    // A second volume, made on the other node; then work that needs both.
    let other = if first == "n1" { "n2" } else { "n1" };
    let only_other: Vec<bool> = ["n1", "n2"].iter().map(|n| *n == other).collect();
    task(&mut book, "t-4", with(&["logs:/logs"]));
    book.schedule(&scheduler(), &nodes(&only_other), NOW);
    assert_eq!(
        book.task("t-4").and_then(|t| t.node.clone()).as_deref(),
        Some(other)
    );
    task(&mut book, "t-5", with(&["db:/a", "logs:/b"]));
    book.schedule(&scheduler(), &nodes(&[true, true]), NOW);
    let t5 = book.task("t-5").expect("t-5");
    assert_eq!(t5.state, TaskState::Queued);
    assert!(
        t5.reason
            .as_deref()
            .unwrap_or_default()
            .contains("its volumes are on two nodes"),
        "{t5:?}"
    );
}

/// A volume in use cannot be removed; one whose node is away neither (its data would
/// outlive the record); otherwise the record goes and its node is told to delete it.
#[test]
fn a_volume_is_removed_only_when_nothing_uses_it_and_its_node_can_be_told() {
    let mut book = Book::default();
    task(&mut book, "t-1", with(&["db:/data"]));
    book.schedule(&scheduler(), &nodes(&[true]), NOW);
    let listed = book.volumes();
    assert_eq!(listed.volumes[0].used_by, ["t-1"]);
    let busy = book.remove_volume("db", &|_| Some(true)).unwrap_err();
    assert!(matches!(busy, BookError::VolumeInUse { .. }), "{busy}");
    assert!(busy.to_string().contains("in use by t-1"), "{busy}");

    book.cancel("t-1", NOW).expect("cancel");
    let away = book.remove_volume("db", &|_| Some(false)).unwrap_err();
    assert!(away.to_string().contains("not connected"), "{away}");
    let (record, effects) = book.remove_volume("db", &|_| Some(true)).expect("removed");
    assert_eq!(record.node.as_deref(), Some("n1"));
    assert_eq!(effects.delete_volumes, ["db"]);
    assert!(matches!(
        &effects.messages[..],
        [(node, MasterMessage::RemoveVolume { name })] if node == "n1" && name == "db"
    ));
    assert!(book.volumes().volumes.is_empty());
    let gone = book.remove_volume("db", &|_| Some(true)).unwrap_err();
    assert!(matches!(gone, BookError::NoVolume(_)), "{gone}");
}

/// The limits of the volumes a run mounts, from its assignment.
fn limits_sent(effects: &super::super::Effects) -> Vec<BTreeMap<String, u64>> {
    effects
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            MasterMessage::Assign(a) => Some(a.volume_limits.clone()),
            _ => None,
        })
        .collect()
}

/// `volume create --size` makes a volume on no node, which the first run that names it
/// places (and carries its limit to the node); `resize` tells the node at once when it is
/// connected and every later assignment carries the new limit; a limit below 1 MiB or a
/// bad name is refused and changes nothing; removing a volume on no node tells nobody.
#[test]
fn a_volume_made_with_a_size_limit_carries_it_to_its_node() {
    let mut book = Book::default();
    let (made, effects) = book
        .set_volume("db", Some(64 << 20), NOW, &|_| Some(true))
        .expect("created");
    assert!(made.created && !made.sent, "{made:?}");
    assert_eq!(made.volume.node, None);
    assert_eq!(effects.save_volumes[0].size_limit, Some(64 << 20));
    assert!(effects.messages.is_empty());

    let small = book
        .set_volume("db", Some(1000), NOW, &|_| Some(true))
        .unwrap_err();
    assert!(
        small.to_string().contains("below the least, 1Mi"),
        "{small}"
    );
    let bad = book
        .set_volume("../x", None, NOW, &|_| Some(true))
        .unwrap_err();
    assert!(matches!(bad, BookError::BadVolume(_)), "{bad}");
    assert_eq!(book.volumes().volumes.len(), 1);
    assert_eq!(book.volumes().volumes[0].size_limit, Some(64 << 20));

    // An unplaced volume pins nothing: the first run goes anywhere and puts it there.
    task(&mut book, "t-1", with(&["db:/data", "scratch:/tmp/s"]));
    let effects = book.schedule(&scheduler(), &nodes(&[true, true]), NOW);
    let node = assigned(&effects)[0].0.clone();
    assert_eq!(
        limits_sent(&effects),
        [BTreeMap::from([("db".to_owned(), 64 << 20)])]
    );
    let placed: Vec<_> = effects
        .save_volumes
        .iter()
        .map(|v| (v.name.as_str(), v.node.as_deref(), v.size_limit))
        .collect();
    assert_eq!(
        placed,
        [
            ("db", Some(node.as_str()), Some(64 << 20)),
            ("scratch", Some(node.as_str()), None)
        ]
    );

    // Resized: sent now to a connected node, not to one away; the next run carries it.
    let (changed, effects) = book
        .set_volume("db", Some(1 << 30), NOW, &|_| Some(true))
        .expect("resized");
    assert!(!changed.created && changed.sent);
    assert!(matches!(
        &effects.messages[..],
        [(to, MasterMessage::SetVolumeLimit { name, size_limit: Some(limit) })]
            if *to == node && name == "db" && *limit == 1 << 30
    ));
    let (away, effects) = book
        .set_volume("db", None, NOW, &|_| Some(false))
        .expect("lifted");
    assert!(!away.sent && effects.messages.is_empty());
    book.set_volume("db", Some(2 << 30), NOW, &|_| Some(false))
        .expect("resized");
    task(&mut book, "t-2", with(&["db:/data"]));
    let effects = book.schedule(&scheduler(), &nodes(&[true, true]), NOW);
    assert_eq!(
        limits_sent(&effects),
        [BTreeMap::from([("db".to_owned(), 2 << 30)])]
    );

    let (_, effects) = book
        .set_volume("later", None, NOW, &|_| Some(true))
        .expect("created");
    assert!(effects.messages.is_empty());
    let (record, effects) = book.remove_volume("later", &|_| None).expect("removed");
    assert_eq!(record.node, None);
    assert!(effects.messages.is_empty());
    assert_eq!(effects.delete_volumes, ["later"]);
}
