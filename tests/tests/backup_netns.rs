//! Backup and restore of a master, as separate processes on the namespace lab's bridge
//! (real TCP and TLS 1.3, the real `nodeos` and `cloudos` binaries; see `cluster_netns`):
//!
//! - the master's data directory is wiped; a new master restored from `cloudos backup
//!   create`'s file takes the same address; the compute node reconnects with the
//!   certificate it holds (its one-use token is used up, its serial unchanged) and runs a
//!   task; the admin's CLI credentials still work; old task logs are back; a wrong
//!   passphrase is refused first with nothing written;
//! - scheduled backups: written by the master itself, private, pruned to the newest N;
//! - attacks: a compute node's certificate asking for a backup is refused (real mTLS), and
//!   the backup file holds no secret in clear (checked in the first test).
//!
//! Needs root (network namespaces), `docker-registry` and busybox for the task: skipped
//! with a message without them, or failed under `CLOUDOS_STRICT=1`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cloudos_cluster::api::NodeState;
use cloudos_cluster::pki;
use cloudos_tests::lab::{busybox_registry, debug_binary, Admin, Cluster, Lab};
use cloudos_tests::process::Proc;
use cloudos_tests::NetHost;

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";
const PASSPHRASE: &str = "correct horse battery staple";

/// The serial of the certificate an agent keeps in `data/agent/node.crt`.
fn cert_serial(data: &Path) -> String {
    let pem = std::fs::read_to_string(data.join("agent/node.crt")).expect("agent certificate");
    let der = pki::cert_from_pem(&pem, "node").expect("certificate");
    pki::inspect_cert(&der)
        .expect("certificate")
        .serial
        .as_str()
        .to_owned()
}

/// A compute agent that pulls from the test registry, waited for until Ready.
fn compute(cluster: &Cluster<'_>, name: &str, host: &NetHost, token: &str) -> Proc {
    let lab = cluster.lab;
    let agent = lab.agent_with(
        name,
        host,
        &lab.path(name),
        Some(token),
        Some(&cluster.master.addr),
        &["--insecure-registry", REGISTRY, "--no-metrics"],
    );
    cluster
        .alice
        .wait_node(name, NodeState::Ready, Duration::from_secs(30));
    agent
}

fn write_passphrase(lab: &Lab, name: &str, text: &str) -> String {
    let path = lab.path(name);
    std::fs::write(&path, format!("{text}\n")).expect("passphrase file");
    path.to_string_lossy().into_owned()
}

/// The whole story of the issue: wipe, restore on the same address, nodes come back.
#[test]
fn a_master_restored_from_a_backup_takes_over_and_its_node_comes_back_without_its_token() {
    let Some(lab) = Lab::new() else { return };
    let _registry = busybox_registry(&lab.net, REGISTRY);
    let master_flags = ["--insecure-registry", REGISTRY];
    let mut cluster = lab.cluster(&master_flags);
    let pin = cluster.alice.status()["ca_pin"].clone();
    // One use: the node joins with it, and it can never join again.
    let token = cluster.alice.token("compute", &["--uses", "1"]);
    let h3 = lab.host(3);
    let _node = compute(&cluster, "node-3", &h3, &token);
    let serial = cert_serial(&lab.path("node-3"));
    let before = cluster
        .alice
        .run_task(&[BUSYBOX, "--", "sh", "-c", "echo before the backup"]);
    cluster
        .alice
        .wait_task(&before, &["succeeded"], Duration::from_secs(60));

    let pass = write_passphrase(&lab, "pass", PASSPHRASE);
    let file = lab.path("cluster.age");
    let file_arg = file.to_string_lossy().into_owned();
    let said = cluster
        .alice
        .ok(&["backup", "create", &file_arg, "--passphrase-file", &pass]);
    assert!(said.contains("backup of cluster lab"), "{said}");
    assert!(said.contains("1 nodes, 1 admins"), "{said}");
    let mode = std::fs::metadata(&file)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup file is private");
    let bytes = std::fs::read(&file).expect("backup");
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    let text = String::from_utf8_lossy(&bytes);
    for clear in ["PRIVATE KEY", "BEGIN", "before the backup", "node-3"] {
        assert!(
            !text.contains(clear),
            "{clear:?} readable without the passphrase"
        );
    }
    assert!(
        !cluster.master.log().contains(PASSPHRASE),
        "the passphrase reached the master's log"
    );

    // The master's disk is lost.
    let addr = cluster.master.addr.clone();
    cluster.master.proc.stop_with(libc::SIGKILL);
    std::fs::remove_dir_all(lab.path("master")).expect("wipe the master's data");

    // A wrong passphrase is refused, and nothing is written.
    let wrong = write_passphrase(&lab, "wrong", "not the right passphrase");
    let data = lab.path("master");
    let data_arg = data.to_string_lossy().into_owned();
    let mut refused = lab.spawn(
        "restore-wrong",
        &cluster.host,
        &[
            "master",
            "--data-dir",
            &data_arg,
            "--restore",
            &file_arg,
            "--passphrase-file",
            &wrong,
            "--no-mdns",
        ],
    );
    let status = refused
        .wait_exit(cloudos_tests::scaled(Duration::from_secs(60)))
        .unwrap_or_else(|| lab.fail("a restore with a wrong passphrase did not end"));
    assert!(!status.success());
    assert!(
        refused.stderr().contains("wrong passphrase"),
        "{}",
        refused.stderr()
    );
    assert!(!data.join("master").exists(), "nothing restored");

    // The new master, restored, on the same address.
    cluster.master = lab.master(
        "master-1",
        &cluster.host,
        &data,
        &[
            "--insecure-registry",
            REGISTRY,
            "--restore",
            &file_arg,
            "--passphrase-file",
            &pass,
        ],
    );
    assert_eq!(cluster.master.addr, addr);
    assert!(
        cluster.master.log().contains("restored cluster \"lab\""),
        "{}",
        cluster.master.log()
    );
    assert_eq!(cluster.master.printed_token(), None, "its admins are back");
    let alice = &cluster.alice;
    assert_eq!(
        alice.status()["ca_pin"],
        pin,
        "same CA, and alice's login works"
    );
    alice.wait_node("node-3", NodeState::Ready, Duration::from_secs(40));
    assert_eq!(
        cert_serial(&lab.path("node-3")),
        serial,
        "the node came back with its certificate, not by joining again"
    );
    let logs = alice.ok(&["logs", &before]);
    assert_eq!(logs, "before the backup\n");
    let after = alice.run_task(&[BUSYBOX, "--", "sh", "-c", "echo after the restore"]);
    let task = alice.wait_task(&after, &["succeeded"], Duration::from_secs(60));
    assert_eq!(task["node"], "node-3", "{task}");
    assert_eq!(alice.ok(&["logs", &after]), "after the restore\n");
}

/// The master writes its own backups on a schedule, private, keeping the newest N.
#[test]
fn scheduled_backups_are_written_and_pruned() {
    let Some(lab) = Lab::new() else { return };
    let pass = write_passphrase(&lab, "pass", PASSPHRASE);
    let dir = lab.path("backups");
    let dir_arg = dir.to_string_lossy().into_owned();
    let cluster = lab.cluster(&[
        "--backup-dir",
        &dir_arg,
        "--backup-passphrase-file",
        &pass,
        "--backup-interval",
        "1s",
        "--backup-keep",
        "2",
    ]);
    let listed = || -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };
    lab.wait_for("three scheduled backups", Duration::from_secs(60), || {
        (cluster.master.log().matches("backup: wrote").count() >= 3).then_some(())
    });
    // Pruning follows each write at once; poll past the moment between the two.
    let files = lab.wait_for("the newest 2 kept", Duration::from_secs(10), || {
        let files = listed();
        (files.len() == 2).then_some(files)
    });
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            name.starts_with("cloudos-backup-") && name.ends_with(".age"),
            "{name}"
        );
        let meta = std::fs::metadata(file).expect("backup");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        let bytes = std::fs::read(file).expect("backup");
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "),
            "{name}"
        );
    }
    assert!(cluster.master.log().contains("backup: removed"));
    assert!(!cluster.master.log().contains(PASSPHRASE));

    // A scheduled backup is a whole one: another master restores it.
    let copy = lab.path("scheduled.age");
    std::fs::copy(&files[1], &copy).expect("copy a backup");
    let restored = lab.master(
        "master-2",
        &lab.host(4),
        &lab.path("restored"),
        &[
            "--restore",
            &copy.to_string_lossy(),
            "--passphrase-file",
            &pass,
        ],
    );
    assert!(
        restored.log().contains("restored cluster \"lab\""),
        "{}",
        restored.log()
    );
    assert_eq!(
        restored.printed_token(),
        None,
        "its admin came back with it"
    );
}

/// Attack: a compute node (a certificate the cluster CA signed, role compute) asks the
/// master for a backup over real mTLS: its key and certificate copied into a `cloudos`
/// config. Refused as the wrong role; no backup file, nothing left on the master.
#[test]
fn a_compute_nodes_certificate_cannot_take_a_backup() {
    let Some(lab) = Lab::new() else { return };
    let cluster = lab.cluster(&[]);
    let token = cluster.alice.token("compute", &[]);
    let h3 = lab.host(3);
    let _node = cluster.ready_agent("n3", &h3, &lab.path("n3"), Some(&token));

    // The attacker holds the node's key and certificate.
    let agent = lab.path("n3").join("agent");
    let read = |name: &str| std::fs::read_to_string(agent.join(name)).expect("identity file");
    let meta: serde_json::Value =
        serde_json::from_str(&read("identity.json")).expect("identity.json");
    let stolen = lab.path("stolen-config");
    std::fs::create_dir_all(&stolen).expect("config dir");
    std::fs::set_permissions(&stolen, std::fs::Permissions::from_mode(0o700)).expect("0700");
    let config = serde_json::json!({
        "endpoint": cluster.master.addr,
        "master_name": meta["master_name"],
        "cluster_name": "lab",
        "ca_pin": cluster.alice.status()["ca_pin"],
        "user": "n3",
    });
    std::fs::write(stolen.join("config.json"), config.to_string()).expect("config");
    std::fs::write(stolen.join("ca.crt"), read("ca.crt")).expect("ca");
    std::fs::write(stolen.join("client.crt"), read("node.crt")).expect("cert");
    std::fs::write(stolen.join("client.key"), read("node.key")).expect("key");
    std::fs::set_permissions(
        stolen.join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("0600");
    let attacker = Admin::new(&lab.net, debug_binary("cloudos"), stolen);
    let pass = write_passphrase(&lab, "pass", PASSPHRASE);
    let file = lab.path("stolen.age");
    let err = attacker.fails(&[
        "backup",
        "create",
        &file.to_string_lossy(),
        "--passphrase-file",
        &pass,
    ]);
    assert!(err.contains("admin"), "refused as the wrong role: {err}");
    assert!(!file.exists(), "no backup file");
    let master_dir = lab.path("master").join("master");
    let left: Vec<_> = std::fs::read_dir(&master_dir)
        .expect("master dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".backup-"))
        .collect();
    assert!(left.is_empty(), "nothing left on the master: {left:?}");
    let partial: Vec<_> = std::fs::read_dir(lab.path(""))
        .expect("lab dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("stolen.age"))
        .collect();
    assert!(partial.is_empty(), "no partial file: {partial:?}");
}
