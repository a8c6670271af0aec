//! The admin's `cloudos` CLI as the tests drive it: run in a test network's namespace (the
//! bridge's side, as from a laptop) with its own `--config` directory, its answers parsed.
//!
//! Owns running the CLI and reading its JSON; starting masters and agents is the
//! [`crate::lab`]'s. A failure names the command and what it printed, followed by the
//! output of the test's processes when the admin belongs to a [`crate::lab::Lab`].

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use cloudos_cluster::api::{NodeInfo, NodeState};

use crate::process::Logs;
use crate::{scaled, TestNet};

/// The admin's `cloudos`, run in the test network's namespace with its own config dir.
pub struct Admin<'a> {
    pub net: &'a TestNet,
    pub cli: PathBuf,
    pub config: PathBuf,
    /// `--name` at login (the admin's certificate name); the CLI's default without it.
    name: Option<String>,
    /// The processes whose output a failure shows (a lab's masters and agents).
    logs: Option<&'a Logs>,
    /// How often [`Admin::wait`] asks again.
    poll: Duration,
}

impl<'a> Admin<'a> {
    /// `cli` with its config in `config`, polling once a second: the QEMU tests' admin,
    /// whose master is slow to answer under emulation.
    pub fn new(net: &'a TestNet, cli: PathBuf, config: PathBuf) -> Admin<'a> {
        Admin {
            net,
            cli,
            config,
            name: None,
            logs: None,
            poll: Duration::from_secs(1),
        }
    }

    /// The admin `name` of a namespace lab: it logs in as `name`, polls every 200 ms and
    /// shows `logs` when something fails.
    pub(crate) fn of_lab(
        net: &'a TestNet,
        cli: PathBuf,
        config: PathBuf,
        name: &str,
        logs: &'a Logs,
    ) -> Admin<'a> {
        Admin {
            name: Some(name.to_owned()),
            logs: Some(logs),
            poll: Duration::from_millis(200),
            ..Admin::new(net, cli, config)
        }
    }

    /// Logs in to the master at `address` (host:port) with its bootstrap token.
    pub fn login(
        net: &'a TestNet,
        dir: &std::path::Path,
        master: &crate::lab::HostMaster,
        address: &str,
    ) -> Admin<'a> {
        let admin = Admin::new(net, crate::lab::debug_binary("cloudos"), dir.to_path_buf());
        admin.log_in(&master.admin_token(), address);
        admin
    }

    /// Panics with `msg` and, for a lab's admin, every process's output.
    pub fn fail(&self, msg: &str) -> ! {
        match self.logs {
            Some(logs) => panic!("{msg}\n{}", logs.dump()),
            None => panic!("{msg}"),
        }
    }

    /// Runs `cloudos ARGS` to completion, whatever its exit.
    pub fn run(&self, args: &[&str]) -> Output {
        self.net
            .command(self.cli.to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run cloudos: {e}"))
    }

    /// Runs `cloudos ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeeded(args, self.run(args))
    }

    /// The stdout of `cloudos ARGS`, which ended as `out`; a failure fails the test.
    fn succeeded(&self, args: &[&str], out: Output) -> String {
        if !out.status.success() {
            self.fail(&format!(
                "cloudos {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cloudos ARGS` with `input` on its standard input, which must succeed; its
    /// stdout.
    pub fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        use std::io::Write as _;
        let mut child = self
            .net
            .command(self.cli.to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run cloudos: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("cloudos's stdin");
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot run cloudos: {e}"));
        self.succeeded(args, out)
    }

    /// Runs `cloudos ARGS`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if out.status.success() {
            self.fail(&format!(
                "cloudos {} succeeded but should have failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Waits until the master offers the release it runs for `arch` (it puts the bundle
    /// together in the background after it starts): that release's version and the
    /// bundle's size.
    pub fn offered_release(&self, arch: &str, timeout: Duration) -> (String, u64) {
        self.wait("the master offering the release it runs", timeout, || {
            let list = self.json(&["release", "list", "-o", "json"]);
            let running = list["running"].as_str()?;
            let kept = list["releases"]
                .as_array()?
                .iter()
                .find(|r| r["version"] == running && r["arch"] == arch)?;
            Some((running.to_owned(), kept["size"].as_u64()?))
        })
    }

    /// `cloudos ARGS` (with `-o json` among them), which must succeed, its stdout parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            self.fail(&format!(
                "cloudos {} is not JSON ({e}): {out}",
                args.join(" ")
            ))
        })
    }

    /// `cloudos login` to the master at `master` (host:port) with `token`, which must work.
    pub fn log_in(&self, token: &str, master: &str) {
        self.log_in_to(token, Some(master));
    }

    /// `cloudos login` with `token` to `master`, or without it to the master mDNS finds;
    /// must work. What the CLI said.
    pub fn log_in_to(&self, token: &str, master: Option<&str>) -> String {
        let mut args = vec!["login", "--token", token];
        if let Some(name) = &self.name {
            args.extend(["--name", name]);
        }
        if let Some(master) = master {
            args.extend(["--master", master]);
        }
        self.ok(&args)
    }

    /// A new token (`cloudos token create --role ROLE EXTRA…`), the bare token from stdout.
    pub fn token(&self, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--role", role];
        args.extend_from_slice(extra);
        self.ok(&args).trim().to_owned()
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

    /// `cloudos status -o json`.
    pub fn status(&self) -> serde_json::Value {
        self.json(&["status", "-o", "json"])
    }

    /// `cloudos ps -a -o json`: every task and service.
    pub fn ps(&self) -> serde_json::Value {
        self.json(&["ps", "-a", "-o", "json"])
    }

    /// `cloudos run ARGS`: the new task's id.
    pub fn run_task(&self, args: &[&str]) -> String {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_owned()
    }

    /// Task `id` as `ps` shows it.
    pub fn task(&self, id: &str) -> serde_json::Value {
        let ps = self.ps();
        ps["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id).cloned())
            .unwrap_or_else(|| self.fail(&format!("task {id} is not in ps: {ps}")))
    }

    /// Service `name` as `ps` shows it.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let ps = self.json(&["ps", "-o", "json"]);
        ps["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| self.fail(&format!("service {name} is not in ps: {ps}")))
    }

    /// Polls `f` until it returns `Some` or `timeout` (scaled) passes; the failure shows
    /// what `ps` says.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                let ps = self.run(&["ps", "-a", "-o", "json"]);
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}: {}",
                    String::from_utf8_lossy(&ps.stdout)
                ));
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Polls until task `id` is in one of `states`.
    pub fn wait_task(&self, id: &str, states: &[&str], timeout: Duration) -> serde_json::Value {
        self.wait(&format!("task {id} to be {states:?}"), timeout, || {
            let task = self.task(id);
            states.iter().any(|s| task["state"] == *s).then_some(task)
        })
    }

    /// `cloudos node list -o json`.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let out = self.ok(&["node", "list", "-o", "json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| self.fail(&format!("node list is not JSON ({e}): {out}")))
    }

    /// Polls until node `name` is in `state`.
    pub fn wait_node(&self, name: &str, state: NodeState, timeout: Duration) -> NodeInfo {
        self.wait(&format!("{name} to be {state:?}"), timeout, || {
            self.nodes()
                .into_iter()
                .find(|n| n.name == name && n.state == state)
        })
    }

    /// The state (`ready`, `not_ready`, …) of node `name`, if the master knows it.
    pub fn node_state(&self, name: &str) -> Option<String> {
        self.nodes().iter().find(|n| n.name == name).map(state_name)
    }

    /// `(name, state)` of every node (`ready`, `not_ready`).
    pub fn node_states(&self) -> Vec<(String, String)> {
        self.nodes()
            .iter()
            .map(|n| (n.name.clone(), state_name(n)))
            .collect()
    }

    /// Polls the node list every 2 s until `node` is in `state` (`timeout` as given, not
    /// scaled).
    pub fn wait_for_state(&self, node: &str, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.node_states();
            if states.iter().any(|(n, s)| n == node && s == state) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("{node} not {state} after {timeout:?}: {states:?}"));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Whether the master lists node `name` as Ready.
    pub fn is_ready(&self, name: &str) -> bool {
        self.node_state(name).is_some_and(|s| s == "ready")
    }

    /// How many nodes are Ready.
    pub fn ready_nodes(&self) -> usize {
        self.nodes()
            .iter()
            .filter(|n| state_name(n) == "ready")
            .count()
    }
}

/// A node's state as the API's JSON spells it (`ready`, `not_ready`, `cordoned`).
pub fn state_name(node: &NodeInfo) -> String {
    serde_json::to_value(node.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
