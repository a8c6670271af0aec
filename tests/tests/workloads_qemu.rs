//! Workloads on real ISO boots: two compute VMs (cgroup v2, nodeos as PID 1, the runtime's
//! shim re-executing nodeos) on a private bridge, with the master and a `docker-registry`
//! as processes on the bridge's host side (two VMs at most run at once on this host's two
//! cores, so the master is the host-side process DESIGN.md allows). The admin's `cloudos`
//! runs a task whose logs stream while it runs and whose /output downloads, sees an OOM kill
//! reported as such, and deploys a service whose two replicas stay two when a compute VM
//! is powered off.
//!
//! Needs root (namespaces, taps), `scripts/build.sh` (the ISO) and
//! `cargo build -p nodeos -p cloudos-cli` (the host-side master and CLI).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use cloudos_tests::nodes::spawn_tied;
use cloudos_tests::registry::{host_busybox, Image, Registry};
use cloudos_tests::{images, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";
const MASTER: &str = "10.77.0.1:9443";

fn debug_binary(name: &str) -> PathBuf {
    let path = images::target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p nodeos -p cloudos-cli` first",
        path.display()
    );
    path
}

/// The host-side master; killed when dropped.
struct HostMaster {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl HostMaster {
    fn start(net: &TestNet, dir: &Path) -> HostMaster {
        let stdout = dir.join("master.out");
        let stderr = dir.join("master.err");
        let data = dir.join("master");
        let mut cmd = net.command(debug_binary("nodeos").to_str().expect("utf-8 path"));
        cmd.args(["master", "--cluster-name", "lab", "--name", "master-1"])
            // The default heartbeats (2 s, NotReady after 6 s): a TCG guest pulling an
            // image is slow enough to miss tighter ones.
            .arg("--no-mdns")
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = spawn_tied(cmd).expect("starting nodeos master");
        let master = HostMaster {
            child,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while !master.log().contains("master listening on") {
            assert!(
                Instant::now() < deadline,
                "master did not start: {}",
                master.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        master
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn admin_token(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        out.lines()
            .find_map(|l| l.split("admin token: ").nth(1))
            .and_then(|rest| rest.split([' ', ',']).next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no admin token on the master's stdout: {out}"))
    }
}

impl Drop for HostMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Admin<'a> {
    net: &'a TestNet,
    cli: PathBuf,
    config: PathBuf,
}

impl Admin<'_> {
    fn run(&self, args: &[&str]) -> Output {
        self.net
            .command(self.cli.to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running cloudos")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cloudos {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ps(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ps", "-a", "-o", "json"])).expect("ps is JSON")
    }

    fn task(&self, id: &str) -> serde_json::Value {
        let ps = self.ps();
        ps["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} not in ps: {ps}"))
    }

    /// Polls `f` every second until it returns `Some`.
    fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.ps()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn wait_task(&self, id: &str, states: &[&str], timeout: Duration) -> serde_json::Value {
        self.wait(&format!("{id} to be {states:?}"), timeout, || {
            let task = self.task(id);
            states.iter().any(|s| task["state"] == *s).then_some(task)
        })
    }

    fn ready_nodes(&self) -> usize {
        let nodes: serde_json::Value =
            serde_json::from_str(&self.ok(&["node", "list", "-o", "json"])).expect("JSON");
        nodes
            .as_array()
            .map(|n| {
                n.iter()
                    .filter(|n| {
                        n["state"]
                            .as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

fn compute_config(name: &str, token: &str) -> String {
    format!(
        "role = \"compute\"\nhostname = \"{name}\"\ntoken = \"{token}\"\nmaster = \"{MASTER}\"\ninsecure_registries = \"{REGISTRY}\"\n"
    )
}

fn boot(net: &TestNet, name: &str, disk: &Path, mac: &str) -> Vm {
    let iso = images::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(disk.to_path_buf())
        .network(net.vm_network_with_mac(mac).expect("tap"))
        .spawn()
        .expect("starting QEMU")
}

/// The node's own metrics, scraped from the bridge.
fn node_metrics(admin: &Admin, node: &str) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", node, "-o", "json"])).expect("JSON");
    let address = info["address"].as_str().unwrap_or_default();
    let out = admin
        .net
        .command("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://{address}:9101/metrics"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The nodes the running replicas of `web` are on, sorted.
fn replica_nodes(admin: &Admin) -> Vec<String> {
    let ps = admin.ps();
    let mut nodes: Vec<String> = ps["services"][0]["instances"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter(|r| r["state"] == "running")
                .filter_map(|r| r["node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}

#[test]
fn compute_vms_run_tasks_and_keep_a_service_running() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: namespaces and taps need root");
        return;
    }
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let dir = tempfile::tempdir().expect("temp dir");
    let in_net = |program: &str| net.command(program);
    let registry = Registry::start(&in_net, REGISTRY).unwrap_or_else(|e| panic!("{e}"));
    let image = Image::busybox("amd64", &host_busybox(), &[]).expect("test image");
    registry
        .push(&in_net, "lab/busybox", "1", &image)
        .unwrap_or_else(|e| panic!("{e}"));

    let master = HostMaster::start(&net, dir.path());
    let admin = Admin {
        net: &net,
        cli: debug_binary("cloudos"),
        config: dir.path().join("admin"),
    };
    admin.ok(&[
        "login",
        "--token",
        &master.admin_token(),
        "--master",
        MASTER,
    ]);
    let token = admin
        .ok(&["token", "create", "--role", "compute", "--uses", "2"])
        .trim()
        .to_owned();

    let disk1 = images::data_disk(&compute_config("node-1", &token), 128).expect("disk");
    let disk2 = images::data_disk(&compute_config("node-2", &token), 128).expect("disk");
    let node1 = boot(&net, "node-1", &disk1, "52:54:00:c2:00:01");
    let node2 = boot(&net, "node-2", &disk2, "52:54:00:c2:00:02");
    admin.wait("both compute VMs Ready", Duration::from_secs(300), || {
        (admin.ready_nodes() == 2).then_some(())
    });

    // A task: its logs arrive while it runs; its exit code and /output come back.
    let script = "echo started; sleep 4; echo 42 > /output/answer; echo oops >&2; exit 3";
    let id = admin
        .ok(&["run", BUSYBOX, "--", "sh", "-c", script])
        .trim()
        .to_owned();
    admin.wait(
        "the task's first line while it runs",
        Duration::from_secs(180),
        || {
            let logs = admin.ok(&["logs", &id]);
            (logs.contains("started") && admin.task(&id)["state"] == "running").then_some(())
        },
    );
    let task = admin.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(60));
    assert_eq!(task["exit_code"], 3, "{task}");
    let logs = admin.run(&["logs", &id]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "started\n");
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "oops\n");
    let out = dir.path().join("out");
    admin.ok(&["output", &id, out.to_str().expect("utf-8 path")]);
    assert_eq!(
        std::fs::read_to_string(out.join("answer")).unwrap_or_default(),
        "42\n"
    );

    // Under cgroup v2 a task over its memory limit is OOM-killed and reported so.
    let hog = "x=a; while true; do x=$x$x; done";
    let id = admin
        .ok(&["run", "--memory", "16Mi", BUSYBOX, "--", "sh", "-c", hog])
        .trim()
        .to_owned();
    let task = admin.wait_task(&id, &["failed"], Duration::from_secs(120));
    assert_eq!(task["oom_killed"], true, "{task}");
    assert!(
        task["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("out of memory"),
        "{task}"
    );

    // A pids limit holds: the shell cannot fork past it and says so.
    let forks = "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; wait";
    let id = admin
        .ok(&["run", "--pids", "6", BUSYBOX, "--", "sh", "-c", forks])
        .trim()
        .to_owned();
    admin.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(120));
    let logs = admin.run(&["logs", &id]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("fork"),
        "no fork failure under --pids 6: {logs:?}"
    );

    // Cancel ends a running container (its shell ignores SIGTERM as PID 1: SIGKILL follows).
    let id = admin
        .ok(&["run", BUSYBOX, "--", "sleep", "1000"])
        .trim()
        .to_owned();
    admin.wait_task(&id, &["running"], Duration::from_secs(120));
    admin.ok(&["cancel", &id]);
    assert_eq!(admin.task(&id)["state"], "cancelled");

    // 50 short tasks, then nothing left on either node: no container state, no cgroup
    // (as the nodes' own metrics count them).
    let ids: Vec<String> = (0..50)
        .map(|_| admin.ok(&["run", BUSYBOX, "--", "true"]).trim().to_owned())
        .collect();
    admin.wait("50 tasks to succeed", Duration::from_secs(600), || {
        let ps = admin.ps();
        let tasks = ps["tasks"].as_array()?;
        let done = ids
            .iter()
            .filter(|id| {
                tasks
                    .iter()
                    .any(|t| t["id"] == id.as_str() && t["state"] == "succeeded")
            })
            .count();
        (done == ids.len()).then_some(())
    });
    for node in ["node-1", "node-2"] {
        admin.wait(
            &format!("{node} to hold no containers"),
            Duration::from_secs(60),
            || {
                let m = node_metrics(&admin, node);
                (m.contains("cloudos_node_containers 0")
                    && m.contains("cloudos_node_container_cgroups 0"))
                .then_some(())
            },
        );
    }

    // A service of two replicas, one per node; one node powered off; two again.
    admin.ok(&[
        "deploy",
        "web",
        "--replicas",
        "2",
        BUSYBOX,
        "--",
        "sleep",
        "100000",
    ]);
    admin.wait("2 replicas on 2 nodes", Duration::from_secs(120), || {
        (replica_nodes(&admin) == ["node-1", "node-2"]).then_some(())
    });
    node1.monitor("system_powerdown").expect("monitor");
    node1
        .wait_exit(scaled(Duration::from_secs(90)))
        .expect("node-1 did not power off");
    admin.wait("both replicas on node-2", Duration::from_secs(120), || {
        (replica_nodes(&admin) == ["node-2", "node-2"]).then_some(())
    });
    assert!(
        !node2.serial().contents().contains("panicked"),
        "{}",
        node2.serial().tail(40)
    );
    node2.monitor("system_powerdown").expect("monitor");
    node2
        .wait_exit(scaled(Duration::from_secs(90)))
        .expect("node-2 did not power off");
    drop(master);
    drop(registry);
}
