//! Three masters on etcd, one of them a VM booted from the ISO, and a compute VM: the
//! appliance's own etcd (the pack on the live medium, run through its own loader and libc
//! on a system that has no libc) in a cluster with two master processes on the bridge.
//!
//! The issue asks for two master VMs, a third master process and a compute VM; this machine
//! runs two guests at most, so the second master VM is a process too (as docs/design.md
//! decision 42 allows for masters). What is checked is what an admin would see:
//! - a master on its own (m2, a process) grows to three: the VM joins it as a master from
//!   its settings alone (`role = "master"`, a master token, the master's address), then m3;
//! - the leader's death moves leadership to the VM, deterministically: the oldest
//!   candidate leads, and the VM campaigned before m3;
//! - the leader VM's plug pulled (QEMU killed): the compute VM stays Ready throughout and
//!   runs a new task through a surviving master, and nothing the cluster held is lost.
//!
//! Needs root (namespaces, taps), `scripts/build.sh` (the ISO),
//! `cargo build -p nodeos -p cloudos-cli` and the pinned etcd (`scripts/fetch-inputs.sh`).

use std::time::{Duration, Instant};

use cloudos_cluster::api::NodeState;
use cloudos_testkit::require;
use cloudos_tests::admin::Admin;
use cloudos_tests::lab::{busybox_registry, HostMaster, Lab};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Vm, VmBuilder};

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";
/// The leader's lease of every master: an emulated master stalls for longer than the
/// default second (its etcd's timing follows the lease).
const LEASE: &str = "5s";

/// A VM booted from the ISO with a data disk holding `config`; the disk lives as long as
/// the VM.
struct DiskVm {
    vm: Vm,
    _disk: tempfile::TempPath,
}

fn boot(lab: &Lab, name: &str, config: &str, mac: &str) -> DiskVm {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let disk = artifacts::data_disk(config, 256).expect("data disk");
    let vm = VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(1024)
        .boot(BootSource::Cdrom(iso))
        .disk(disk.to_path_buf())
        .network(lab.net.vm_network_with_mac(mac).expect("tap"))
        .spawn()
        .expect("starting QEMU");
    DiskVm { vm, _disk: disk }
}

/// `nodeos master` as `name` on the lab's host `n`, running its member with `etcd`.
fn master(lab: &Lab, name: &str, n: u8, etcd: &str, extra: &[&str]) -> HostMaster {
    let host = lab.host(n);
    let mut args = vec![
        "--etcd-binary",
        etcd,
        "--ha-lease",
        LEASE,
        "--insecure-registry",
        REGISTRY,
        // A TCG guest pulling an image falls silent for longer than the lab's 3 s.
        "--not-ready-after",
        "6s",
        "--heartbeat-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    lab.master(name, &host, &lab.path(name), &args)
}

/// `cloudos status -o json`; `Null` while no master answers (one restarting, a failover).
fn status(admin: &Admin) -> serde_json::Value {
    let out = admin.run(&["status", "-o", "json"]);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The master that answers the admin: followers forward every request, so it is the
/// leader. Empty while none answers.
fn leader(admin: &Admin) -> String {
    status(admin)["master_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Node `name`'s state (`ready`, `not_ready`) as the masters see it; `None` while no
/// master answers.
fn node_state(admin: &Admin, name: &str) -> Option<String> {
    let out = admin.run(&["node", "list", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let nodes: Vec<cloudos_cluster::api::NodeInfo> = serde_json::from_slice(&out.stdout).ok()?;
    nodes
        .iter()
        .find(|n| n.name == name)
        .map(cloudos_tests::admin::state_name)
}

/// How many masters campaign (the addresses `status` lists).
fn masters_listed(admin: &Admin) -> usize {
    status(admin)["masters"].as_array().map_or(0, Vec::len)
}

/// The etcd members that answer, by name.
fn answering(admin: &Admin) -> Vec<String> {
    let mut names: Vec<String> = status(admin)["etcd"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter(|m| m["answering"] == true)
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_leader_vms_plug_pulled_the_compute_vm_stays_ready_and_runs_a_task_through_another_master() {
    let _guests = cloudos_tests::guests::reserve(2);
    let Some(lab) = Lab::new() else { return };
    let etcd = require!(cloudos_store::etcd::fixture::etcd_binary());
    let etcd = etcd.to_str().expect("utf-8").to_owned();
    lab.net.start_dhcp_server(600).expect("dnsmasq");
    let _registry = busybox_registry(&lab.net, REGISTRY);

    // A master on its own, an admin, tokens.
    let m2 = master(&lab, "m2", 2, &etcd, &[]);
    let alice = lab.admin("alice");
    alice.log_in(&m2.admin_token(), &m2.addr);
    let masters = alice.token("master", &["--uses", "2", "--ttl", "2h"]);
    let compute = alice.token("compute", &["--uses", "2"]);

    // The master VM joins from its settings alone; m2 moves its state into etcd.
    let vm_master = boot(
        &lab,
        "mvm",
        &format!(
            "role = \"master\"\nhostname = \"mvm\"\ntoken = \"{masters}\"\nmaster = \"{}\"\n\
             ha_lease = \"{LEASE}\"\ninsecure_registries = \"{REGISTRY}\"\n{}",
            m2.addr,
            cloudos_tests::guest::TCG_NODE_TIMEOUT
        ),
        "52:54:00:a1:00:01",
    );
    alice.wait(
        "the VM's etcd member (run from the ISO's pack) answering",
        Duration::from_secs(420),
        || answering(&alice).contains(&"mvm".to_owned()).then_some(()),
    );
    // The VM campaigns once it serves (a candidate is listed among the masters); m3
    // joins only after it has.
    alice.wait(
        "the VM master campaigning",
        Duration::from_secs(180),
        || (masters_listed(&alice) == 2).then_some(()),
    );
    let m3 = master(
        &lab,
        "m3",
        3,
        &etcd,
        &["--join", &masters, "--master", &m2.addr],
    );
    alice.wait(
        "three etcd members answering",
        Duration::from_secs(180),
        || (answering(&alice) == ["m2", "m3", "mvm"]).then_some(()),
    );

    // The compute VM joins through m2.
    let node = boot(
        &lab,
        "cvm",
        &format!(
            "role = \"compute\"\nhostname = \"cvm\"\ntoken = \"{compute}\"\nmaster = \"{}\"\n\
             insecure_registries = \"{REGISTRY}\"\n",
            m2.addr
        ),
        "52:54:00:a1:00:02",
    );
    alice.wait_node("cvm", NodeState::Ready, Duration::from_secs(300));

    // m2 leads (it founded the cluster); its death hands leadership to the VM.
    assert_eq!(leader(&alice), "m2");
    let mut m2 = m2;
    m2.proc.stop_with(libc::SIGKILL);
    alice.wait("the VM leading", Duration::from_secs(120), || {
        let now = leader(&alice);
        (!now.is_empty() && now != "m2").then_some(now)
    });
    assert_eq!(
        leader(&alice),
        "mvm",
        "the oldest candidate after m2 is the VM, which campaigned before m3 joined"
    );
    drop(m2);
    // m2 comes back (the youngest candidate now).
    let m2 = master(&lab, "m2", 2, &etcd, &[]);
    alice.wait("m2's member back", Duration::from_secs(120), || {
        (answering(&alice) == ["m2", "m3", "mvm"]).then_some(())
    });
    alice.wait_node("cvm", NodeState::Ready, Duration::from_secs(120));

    // The leader VM's plug pulled: QEMU is killed, nothing is shut down in order.
    let pulled = Instant::now();
    vm_master.vm.stop().expect("stopping the master VM");
    let mut not_ready = Vec::new();
    let new_leader = alice.wait("another leader", Duration::from_secs(120), || {
        if node_state(&alice, "cvm").is_some_and(|s| s != "ready") {
            not_ready.push(pulled.elapsed());
        }
        let now = leader(&alice);
        (!now.is_empty() && now != "mvm").then_some(now)
    });
    assert_eq!(new_leader, "m3", "the oldest candidate left is m3");
    let id = alice.run_task(&[BUSYBOX, "--", "sh", "-c", "echo served-after-failover"]);
    let deadline = Instant::now() + scaled(Duration::from_secs(240));
    let task = loop {
        if node_state(&alice, "cvm").is_some_and(|s| s != "ready") {
            not_ready.push(pulled.elapsed());
        }
        let task = alice.task(&id);
        if task["state"] == "succeeded" || task["state"] == "failed" {
            break task;
        }
        assert!(Instant::now() < deadline, "the task did not finish: {task}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["node"], "cvm", "{task}");
    // The node keeps its work throughout; it may be seen NotReady for a moment while its
    // agent leaves the dead master (once in a CI run, 11.7 s after the pull, under TCG:
    // issue 22's note), but never for long.
    eprintln!("NotReady samples after the plug was pulled: {not_ready:?}");
    let span = not_ready
        .last()
        .zip(not_ready.first())
        .map_or(Duration::ZERO, |(last, first)| last.saturating_sub(*first));
    assert!(
        span <= scaled(Duration::from_secs(10)),
        "the compute VM was not Ready for {span:?} after the leader's plug was pulled: {not_ready:?}"
    );
    let logs = alice.ok(&["logs", &id]);
    assert!(logs.contains("served-after-failover"), "{logs}");
    // Nothing lost: the compute token (one use left) and both admins' tokens listed.
    let tokens = alice.ok(&["token", "list"]);
    let compute_id = compute.split('_').nth(1).unwrap_or(&compute);
    assert!(tokens.contains(compute_id), "{tokens}");
    drop((node, m2, m3));
}
