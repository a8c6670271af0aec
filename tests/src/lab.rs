//! A cluster's host-side parts on a [`TestNet`] bridge, for the QEMU tests: a `nodeos master`
//! process (docs/design.md decision 42 allows the master as a process on the bridge's host
//! side, which keeps this host at two guests) and the admin's `cloudos` CLI logged in to it.
//!
//! They run the debug builds (`cargo build -p nodeos -p cloudos-cli`); a missing binary is a
//! panic that says how to build it.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::nodes::spawn_tied;
use crate::{images, scaled, TestNet};

/// A debug binary of the workspace, which must have been built.
pub fn debug_binary(name: &str) -> PathBuf {
    let path = images::target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p nodeos -p cloudos-cli` first",
        path.display()
    );
    path
}

/// A `docker-registry` on the bridge at `addr` (host:port) holding a busybox image for
/// the host's architecture as `<addr>/lab/busybox:1`.
pub fn busybox_registry(net: &TestNet, addr: &str) -> crate::registry::Registry {
    use crate::registry::{host_busybox, Image, Registry};
    let in_net = |program: &str| net.command(program);
    let registry = Registry::start(&in_net, addr).unwrap_or_else(|e| panic!("{e}"));
    let image = Image::busybox("amd64", &host_busybox(), &[]).expect("test image");
    registry
        .push(&in_net, "lab/busybox", "1", &image)
        .unwrap_or_else(|e| panic!("{e}"));
    registry
}

/// A `nodeos master` in the test network's namespace; killed when dropped.
pub struct HostMaster {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl HostMaster {
    /// Starts a master keeping its state and output in `dir`, with `extra` arguments, and
    /// waits until it listens. Defaults unless `extra` says otherwise: `--cluster-name lab
    /// --name master-1`; always `--no-mdns`.
    pub fn start(net: &TestNet, dir: &Path, extra: &[&str]) -> HostMaster {
        std::fs::create_dir_all(dir).expect("master dir");
        let stdout = dir.join("master.out");
        let stderr = dir.join("master.err");
        let mut cmd = net.command(debug_binary("nodeos").to_str().expect("utf-8 path"));
        cmd.arg("master");
        for (flag, default) in [("--cluster-name", "lab"), ("--name", "master-1")] {
            if !extra.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        // The default heartbeats (2 s, NotReady after 6 s): a TCG guest pulling an
        // image is slow enough to miss tighter ones.
        cmd.arg("--no-mdns")
            .arg("--data-dir")
            .arg(dir.join("state"))
            .args(extra)
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

    /// What it logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The one-use admin token it printed on stdout at start.
    pub fn admin_token(&self) -> String {
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

/// The admin's `cloudos`, run in the test network's namespace with its own config dir.
pub struct Admin<'a> {
    pub net: &'a TestNet,
    pub cli: PathBuf,
    pub config: PathBuf,
}

impl<'a> Admin<'a> {
    /// Logs in to the master at `master` (host:port) with its bootstrap token.
    pub fn login(net: &'a TestNet, dir: &Path, master: &HostMaster, address: &str) -> Admin<'a> {
        let admin = Admin {
            net,
            cli: debug_binary("cloudos"),
            config: dir.to_path_buf(),
        };
        admin.log_in(&master.admin_token(), address);
        admin
    }

    /// `cloudos login` to the master at `master` (host:port) with `token`, which must work.
    pub fn log_in(&self, token: &str, master: &str) {
        self.ok(&["login", "--token", token, "--master", master]);
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.net
            .command(self.cli.to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running cloudos")
    }

    /// Runs `cloudos ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cloudos {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cloudos token create --role compute`: the token (stdout) and the install line it
    /// prints (stderr), as a person would copy them.
    pub fn create_compute_token(&self) -> (String, String) {
        let out = self.run(&["token", "create", "--role", "compute"]);
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("sh -c "))
            .unwrap_or_else(|| panic!("no install line in: {stderr}"))
            .to_owned();
        assert!(line.contains(&token), "{line}");
        (token, line)
    }

    pub fn ps(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ps", "-a", "-o", "json"])).expect("ps is JSON")
    }

    pub fn task(&self, id: &str) -> serde_json::Value {
        let ps = self.ps();
        ps["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} not in ps: {ps}"))
    }

    /// Polls `f` every second until it returns `Some`.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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

    pub fn wait_task(&self, id: &str, states: &[&str], timeout: Duration) -> serde_json::Value {
        self.wait(&format!("{id} to be {states:?}"), timeout, || {
            let task = self.task(id);
            states.iter().any(|s| task["state"] == *s).then_some(task)
        })
    }

    /// `cloudos node list -o json`.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["node", "list", "-o", "json"])).expect("node list JSON")
    }

    /// The state (`ready`, `not_ready`, …) of node `name`, if the master knows it.
    pub fn node_state(&self, name: &str) -> Option<String> {
        self.nodes()
            .into_iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["state"].as_str().map(str::to_owned))
    }

    /// `(name, state)` of every node, states lowercased (`ready`, `not_ready`).
    pub fn node_states(&self) -> Vec<(String, String)> {
        self.nodes()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or_default().to_owned(),
                    n["state"].as_str().unwrap_or_default().to_ascii_lowercase(),
                )
            })
            .collect()
    }

    /// Polls the node list every 2 s until `node` is in `state` (lowercase).
    pub fn wait_for_state(&self, node: &str, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.node_states();
            if states.iter().any(|(n, s)| n == node && s == state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node} not {state} after {timeout:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Whether the master lists node `name` as Ready.
    pub fn is_ready(&self, name: &str) -> bool {
        self.node_state(name)
            .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
    }

    pub fn ready_nodes(&self) -> usize {
        self.nodes()
            .iter()
            .filter(|n| {
                n["state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
            })
            .count()
    }
}

/// The first group of the first console line of `vm` matching `pattern`, anywhere in the
/// output so far or still to come (up to `timeout`); for lines whose order depends on
/// timing (DHCP, the master's start).
pub fn first_capture(vm: &crate::Vm, pattern: &str, what: &str, timeout: Duration) -> String {
    let regex = regex::Regex::new(pattern).expect("a valid regex");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = regex.captures(&vm.serial().contents()) {
            return found[1].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{what}:\n{}",
            vm.serial().tail(40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Presses the power button of `vm` and waits for QEMU to exit.
pub fn power_off(vm: &crate::Vm) {
    vm.monitor("system_powerdown").expect("monitor");
    vm.wait_exit(scaled(Duration::from_secs(90)))
        .expect("VM did not power off");
}
