//! A cluster's host-side parts on a [`TestNet`] bridge: `nodeos master` and `nodeos agent`
//! processes and the admin's `cloudos` CLI ([`Admin`]) run from the bridge's side as from
//! a laptop.
//!
//! - [`HostMaster`]: one master process, for the QEMU tests (docs/design.md decision 42
//!   allows the master as a process on the bridge's host side, which keeps this host at two guests).
//! - [`Lab`]: the namespace lab of `cluster_netns`, where masters and agents are all
//!   processes, each on its own host of the bridge ([`NetHost`]), and a failure shows the
//!   output of every process the test started.
//!
//! They run the debug builds (`cargo build -p nodeos -p cloudos-cli`); a missing binary is a
//! panic that says how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use cloudos_cluster::api::NodeState;
use cloudos_testkit::require;

pub use crate::admin::Admin;
use crate::process::{Logs, Proc};
use crate::{artifacts, scaled, NetHost, TestNet};

/// The master's API port when `--listen` does not say otherwise.
pub const API_PORT: u16 = 9443;

/// A debug binary of the workspace, which must have been built.
pub fn debug_binary(name: &str) -> PathBuf {
    let path = artifacts::target_dir().join("debug").join(name);
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
    busybox_registry_with(net, addr, &[])
}

/// [`busybox_registry`] with `extra` files (path, content) in a second layer of the image.
pub fn busybox_registry_with(
    net: &TestNet,
    addr: &str,
    extra: &[(&str, &[u8])],
) -> crate::registry::Registry {
    use crate::registry::{host_busybox, Image, Registry};
    let in_net = |program: &str| net.command(program);
    let registry = Registry::start(&in_net, addr).unwrap_or_else(|e| panic!("{e}"));
    let image = Image::busybox("amd64", &host_busybox(), extra).expect("test image");
    registry
        .push(&in_net, "lab/busybox", "1", &image)
        .unwrap_or_else(|e| panic!("{e}"));
    registry
}

/// The port of `--listen ADDR` in `args`, else [`API_PORT`].
fn listen_port(args: &[&str]) -> u16 {
    args.windows(2)
        .find(|pair| pair[0] == "--listen")
        .and_then(|pair| pair[1].rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or(API_PORT)
}

/// A `nodeos master` process and what it printed at its start; stopped when dropped
/// (SIGTERM, then SIGKILL).
pub struct HostMaster {
    pub proc: Proc,
    /// `IP:PORT` (`[IP]:PORT` for IPv6) where the test reaches it: its namespace's address
    /// on the bridge and the port it listens on.
    pub addr: String,
}

impl HostMaster {
    /// Starts a master in the test network's own namespace, keeping its state and output
    /// in `dir`, with `extra` arguments, and waits until it listens. Defaults unless
    /// `extra` says otherwise: `--cluster-name lab --name master-1`; always `--no-mdns`.
    pub fn start(net: &TestNet, dir: &Path, extra: &[&str]) -> HostMaster {
        let mut cmd = net.command(debug_binary("nodeos").to_str().expect("utf-8 path"));
        cmd.arg("master");
        for (flag, default) in [("--cluster-name", "lab"), ("--name", "master-1")] {
            if !extra.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        // NotReady after 6 s, not the default 2 s: a TCG guest pulling an image is slow
        // enough to fall silent for longer.
        if !extra.contains(&"--not-ready-after") {
            cmd.args(crate::guest::TCG_NOT_READY_AFTER);
        }
        cmd.arg("--no-mdns");
        HostMaster::launch(cmd, net.host_ip(), dir, extra)
    }

    /// Starts a master on `host` (its own namespace on the bridge) with exactly the
    /// arguments `extra` besides its data dir, keeping its state and output in `dir`; it
    /// advertises itself by mDNS unless told `--no-mdns`. Waits until it listens.
    pub fn start_on(host: &NetHost, dir: &Path, extra: &[&str]) -> HostMaster {
        let mut cmd = host.command(debug_binary("nodeos"));
        cmd.arg("master");
        HostMaster::launch(cmd, host.ip(), dir, extra)
    }

    /// Runs `cmd` (`nodeos master …` in the namespace whose address is `ip`) with its state
    /// and output in `dir` and `extra` arguments last, and waits until it listens.
    fn launch(mut cmd: Command, ip: &str, dir: &Path, extra: &[&str]) -> HostMaster {
        std::fs::create_dir_all(dir).expect("master dir");
        cmd.arg("--data-dir").arg(dir.join("state")).args(extra);
        let (out, err) = (dir.join("master.out"), dir.join("master.err"));
        let proc = Proc::start("master", cmd, out, err);
        let port = listen_port(extra);
        let addr = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        HostMaster::listening(proc, addr, Duration::from_secs(30), None)
    }

    /// Waits (`timeout`, scaled) until the starting master `proc` logs that it listens;
    /// a failure shows its log, and `logs` when given.
    fn listening(
        mut proc: Proc,
        addr: String,
        timeout: Duration,
        logs: Option<&Logs>,
    ) -> HostMaster {
        let fail = |msg: String| -> ! {
            match logs {
                Some(logs) => panic!("{msg}\n{}", logs.dump()),
                None => panic!("{msg}"),
            }
        };
        let deadline = Instant::now() + scaled(timeout);
        while !proc.stderr().contains("master listening on") {
            if !proc.running() {
                fail(format!(
                    "{} exited before it listened: {}",
                    proc.what(),
                    proc.stderr()
                ));
            }
            if Instant::now() >= deadline {
                fail(format!(
                    "{} did not listen within {timeout:?}: {}",
                    proc.what(),
                    proc.stderr()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        HostMaster { proc, addr }
    }

    /// What it logged so far (stderr).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// What follows `label` up to a space or comma in its stdout.
    fn printed(&self, label: &str) -> Option<String> {
        self.proc
            .stdout()
            .lines()
            .find_map(|l| l.split(label).nth(1))
            .and_then(|rest| rest.split([' ', ',']).next())
            .map(str::to_owned)
    }

    /// The one-use admin token it printed on stdout at its first start; none on a restart
    /// (an admin exists).
    pub fn printed_token(&self) -> Option<String> {
        self.printed("admin token: ")
    }

    /// The CA pin (`sha256:…`) it printed next to the admin token.
    pub fn printed_pin(&self) -> Option<String> {
        self.printed("CA pin ")
    }

    /// The one-use admin token it printed on stdout at start, which must be there.
    pub fn admin_token(&self) -> String {
        self.printed_token().unwrap_or_else(|| {
            panic!(
                "no admin token on the master's stdout: {}",
                self.proc.stdout()
            )
        })
    }
}

/// The namespace lab: the bridge (the admin's laptop is at 10.77.0.1), hosts on it each in
/// its own namespace, a temp directory for data dirs, configs and logs, and the output of
/// every process started, which [`Lab::fail`] shows. Processes are tied to the test
/// process and namespaces are removed on drop, so a failing or killed test leaves nothing.
pub struct Lab {
    pub net: TestNet,
    dir: tempfile::TempDir,
    logs: Logs,
    nodeos: PathBuf,
    cloudos: PathBuf,
}

impl Drop for Lab {
    /// Agents stopped without their own cleanup (killed at the test's end, or a failed
    /// test) leave their containers' network namespaces bind-mounted under the lab's
    /// directory, which then cannot be deleted; every leaked mount also slows each later
    /// read of the host's mount table (container starts read it several times). Detached
    /// here, deepest first, before the directory goes.
    fn drop(&mut self) {
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut under: Vec<PathBuf> = table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mount_point)
            .filter(|at| at.starts_with(self.dir.path()))
            .collect();
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for at in under {
            let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline and backslash
/// as octal escapes (`\040`).
fn unescape_mount_point(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

impl Lab {
    /// A new lab; `None` when not root (namespaces need it): the test is then skipped, or
    /// failed under `CLOUDOS_STRICT=1` (see `cloudos_testkit`).
    pub fn new() -> Option<Lab> {
        require!(cloudos_testkit::root("network namespaces"));
        let (nodeos, cloudos) = (debug_binary("nodeos"), debug_binary("cloudos"));
        Some(Lab {
            net: TestNet::new().expect("test network"),
            dir: tempfile::Builder::new()
                .prefix("cloudos-netns-")
                .tempdir()
                .expect("temp dir"),
            logs: Logs::default(),
            nodeos,
            cloudos,
        })
    }

    /// The debug `nodeos` the lab runs.
    pub fn nodeos(&self) -> &Path {
        &self.nodeos
    }

    /// Host `10.77.0.n` in its own namespace on the bridge.
    pub fn host(&self, n: u8) -> NetHost {
        NetHost::new(&self.net, n).expect("host namespace")
    }

    /// A lab on an IPv6-only LAN: the bridge at [`crate::netns::IPV6_BRIDGE_ADDR`] sending
    /// router advertisements as `ra` says; no IPv4 address anywhere. Hosts: [`Lab::host6`].
    pub fn ipv6_only(ra: crate::netns::RaMode) -> Option<Lab> {
        require!(cloudos_testkit::root("network namespaces"));
        let (nodeos, cloudos) = (debug_binary("nodeos"), debug_binary("cloudos"));
        let net = TestNet::with_bridge_addr(crate::netns::IPV6_BRIDGE_ADDR).expect("test network");
        net.start_router_advertisements(ra)
            .expect("dnsmasq sending router advertisements");
        Some(Lab {
            net,
            dir: tempfile::Builder::new()
                .prefix("cloudos-netns6-")
                .tempdir()
                .expect("temp dir"),
            logs: Logs::default(),
            nodeos,
            cloudos,
        })
    }

    /// Host `n` on an IPv6-only lab's bridge, with the address SLAAC gave it.
    pub fn host6(&self, n: u8) -> NetHost {
        NetHost::ipv6_only(&self.net, n, scaled(Duration::from_secs(30)))
            .unwrap_or_else(|e| self.fail(&format!("host {n} got no IPv6 address: {e}")))
    }

    /// `name` in the lab's temp directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `nodeos ARGS` in `host`'s namespace.
    pub fn spawn(&self, what: &str, host: &NetHost, args: &[&str]) -> Proc {
        self.spawn_in(what, host.command(&self.nodeos), args)
    }

    /// Starts `cmd ARGS` (`nodeos` in some host's namespace), its output listed for
    /// [`Lab::dump`].
    pub fn spawn_in(&self, what: &str, mut cmd: Command, args: &[&str]) -> Proc {
        cmd.args(args);
        self.logs.start(what, cmd, self.dir.path())
    }

    /// Every process's output so far, for a failure message.
    pub fn dump(&self) -> String {
        self.logs.dump()
    }

    /// Panics with `msg` and every process's output.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.dump())
    }

    /// Polls `f` every 200 ms until it returns `Some` or `timeout` (scaled) passes.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `nodeos master` on `host` with its state in `data` (cluster `lab`, 1 s heartbeats,
    /// NotReady after 3 s unless `extra` sets either, `extra` flags added), waited for
    /// until it listens.
    pub fn master(&self, what: &str, host: &NetHost, data: &Path, extra: &[&str]) -> HostMaster {
        let data_arg = data.to_string_lossy();
        let mut args = vec![
            "master",
            "--data-dir",
            &data_arg,
            "--cluster-name",
            "lab",
            "--name",
            what,
        ];
        // Unless `extra` sets the times itself (a benchmark of the defaults does).
        let timed = ["--heartbeat-interval", "--not-ready-after"];
        if !extra.iter().any(|a| timed.contains(a)) {
            args.extend_from_slice(&["--heartbeat-interval", "1s", "--not-ready-after", "3s"]);
        }
        args.extend_from_slice(extra);
        let proc = self.spawn(what, host, &args);
        let addr = host.addr(listen_port(extra));
        HostMaster::listening(proc, addr, Duration::from_secs(20), Some(&self.logs))
    }

    /// `nodeos agent --name NAME` on `host`; without `master` it browses mDNS.
    pub fn agent(
        &self,
        name: &str,
        host: &NetHost,
        data: &Path,
        token: Option<&str>,
        master: Option<&str>,
    ) -> Proc {
        self.agent_with(name, host, data, token, master, &[])
    }

    /// [`Lab::agent`] with `extra` flags. With `--insecure-registry` among them it is a
    /// compute node, started with the machine's mounts (see
    /// [`NetHost::command_with_host_mounts`]).
    pub fn agent_with(
        &self,
        name: &str,
        host: &NetHost,
        data: &Path,
        token: Option<&str>,
        master: Option<&str>,
        extra: &[&str],
    ) -> Proc {
        let data_arg = data.to_string_lossy();
        let mut args = vec![
            "agent",
            "--data-dir",
            &data_arg,
            "--name",
            name,
            "--discover-timeout",
            "2s",
        ];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        if let Some(master) = master {
            args.extend(["--master", master]);
        }
        args.extend_from_slice(extra);
        if extra.contains(&"--insecure-registry") {
            // A compute node: its containers need the machine's cgroup mounts.
            let cmd = host.command_with_host_mounts(&self.nodeos);
            return self.spawn_in(name, cmd, &args);
        }
        self.spawn(name, host, &args)
    }

    /// An admin's `cloudos` with its own `--config` directory, run on the bridge
    /// (10.77.0.1), logging in as `name`.
    pub fn admin(&self, name: &str) -> Admin<'_> {
        Admin::of_lab(
            &self.net,
            self.cloudos.clone(),
            self.path(&format!("config-{name}")),
            name,
            &self.logs,
        )
    }

    /// A master `master-1` on 10.77.0.2 (`extra` flags added) and the admin alice logged
    /// in to it by address with its bootstrap token.
    pub fn cluster(&self, extra: &[&str]) -> Cluster<'_> {
        let host = self.host(2);
        let master = self.master("master-1", &host, &self.path("master"), extra);
        let alice = self.admin("alice");
        alice.log_in(&master.admin_token(), &master.addr);
        Cluster {
            lab: self,
            host,
            master,
            alice,
        }
    }
}

/// A lab's master on its host, and alice, its admin.
pub struct Cluster<'a> {
    pub lab: &'a Lab,
    pub master: HostMaster,
    pub alice: Admin<'a>,
    // Last: the namespace goes once the master has been stopped.
    pub host: NetHost,
}

impl Cluster<'_> {
    /// An agent given the master's address, waited for until it is Ready.
    pub fn ready_agent(
        &self,
        name: &str,
        host: &NetHost,
        data: &Path,
        token: Option<&str>,
    ) -> Proc {
        let agent = self
            .lab
            .agent(name, host, data, token, Some(&self.master.addr));
        self.alice
            .wait_node(name, NodeState::Ready, Duration::from_secs(20));
        agent
    }

    /// A compute agent joined with `token` that pulls over plain HTTP from `registries`,
    /// waited for until it is Ready.
    pub fn compute(&self, name: &str, host: &NetHost, token: &str, registries: &[&str]) -> Proc {
        self.compute_with(name, host, token, registries, &[])
    }

    /// [`Cluster::compute`] with more of the agent's flags.
    pub fn compute_with(
        &self,
        name: &str,
        host: &NetHost,
        token: &str,
        registries: &[&str],
        flags: &[&str],
    ) -> Proc {
        let lab = self.lab;
        let mut extra = vec!["--no-metrics"];
        for registry in registries {
            extra.extend(["--insecure-registry", registry]);
        }
        extra.extend(flags);
        let agent = lab.agent_with(
            name,
            host,
            &lab.path(name),
            Some(token),
            Some(&self.master.addr),
            &extra,
        );
        self.alice
            .wait_node(name, NodeState::Ready, Duration::from_secs(20));
        agent
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

/// Containers an agent's runtime still holds (directories under its state root).
pub fn containers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("containers"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Presses the power button of `vm` and waits for QEMU to exit.
pub fn power_off(vm: &crate::Vm) {
    vm.monitor("system_powerdown").expect("monitor");
    vm.wait_exit(scaled(Duration::from_secs(90)))
        .expect("VM did not power off");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_unescape_as_the_kernel_escapes_them() {
        // (field as mountinfo writes it, path)
        let cases = [
            ("/tmp/lab/netns/c1", "/tmp/lab/netns/c1"),
            ("/tmp/a\\040b", "/tmp/a b"),
            ("/tmp/tab\\011x\\134y", "/tmp/tab\tx\\y"),
            // Not an escape: kept as it is.
            ("/tmp/x\\9", "/tmp/x\\9"),
        ];
        for (field, path) in cases {
            assert_eq!(unescape_mount_point(field), PathBuf::from(path), "{field}");
        }
    }
}
