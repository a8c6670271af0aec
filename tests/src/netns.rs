//! A private virtual LAN for a test: a network namespace holding a bridge
//! (with a host address, so processes in the namespace can act as the admin's
//! laptop, a registry or an HTTP server) and one tap per VM.
//!
//! Everything is done with the `ip` command (iproute2): it is what an operator
//! would type, and its errors are readable. Nothing here touches the host's
//! own network namespace, so tests cannot disturb the host or send traffic
//! beyond it.
//!
//! `Drop` kills the processes spawned through [`TestNet::spawn`] and deletes
//! the namespace, which deletes its bridge and taps. Namespaces left by a test
//! process that was SIGKILLed (so its `Drop` never ran) are removed by the next
//! `TestNet::new`, recognised by the dead PID in their name.

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use std::time::Duration;

use crate::qemu::GuestNetwork;

/// Prefix of every namespace the harness creates: `cloudos-t<pid>-<n>`.
pub const NETNS_PREFIX: &str = "cloudos-t";

/// The default bridge address (host side of the test LAN).
pub const DEFAULT_BRIDGE_ADDR: &str = "10.77.0.1/24";

/// The bridge's address on an IPv6-only test LAN (`TestNet::with_bridge_addr`), in the
/// unique-local /64 its router advertisements announce.
pub const IPV6_BRIDGE_ADDR: &str = "fd77::1/64";

/// What the router advertisements of [`TestNet::start_router_advertisements`] say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaMode {
    /// The prefix with the A flag: hosts make their own addresses (SLAAC); the bridge as
    /// DNS server in the RDNSS option.
    Slaac,
    /// The M flag and a DHCPv6 range (`…::100`–`…::1ff`), the prefix without the A flag:
    /// addresses only from DHCPv6, with the bridge as DNS server.
    Managed,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Errors setting up or using a test network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// A network namespace with a bridge `br0`, deleted on drop.
#[derive(Debug)]
pub struct TestNet {
    name: String,
    bridge_addr: String,
    taps: Mutex<u32>,
    children: Mutex<Vec<Child>>,
}

impl TestNet {
    /// A namespace with `br0` at [`DEFAULT_BRIDGE_ADDR`].
    pub fn new() -> Result<TestNet, NetError> {
        TestNet::with_bridge_addr(DEFAULT_BRIDGE_ADDR)
    }

    /// A namespace with `br0` at `addr` (CIDR, e.g. `10.78.0.1/24`). Each
    /// namespace is its own world, so several tests may use the same subnet.
    pub fn with_bridge_addr(addr: &str) -> Result<TestNet, NetError> {
        remove_stale_namespaces();
        let name = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name])?;
        // From here on `net` owns the namespace: an error below drops it, which deletes it.
        let net = TestNet {
            name,
            bridge_addr: addr.to_string(),
            taps: Mutex::new(0),
            children: Mutex::new(Vec::new()),
        };
        net.ip(&["link", "set", "lo", "up"])?;
        net.ip(&["link", "add", "br0", "type", "bridge"])?;
        if addr.contains(':') {
            // An IPv6 address stays tentative (unusable, even from this namespace) until
            // duplicate address detection ran, which waits for a port with carrier.
            net.ip(&["addr", "add", addr, "dev", "br0", "nodad"])?;
        } else {
            net.ip(&["addr", "add", addr, "dev", "br0"])?;
        }
        net.ip(&["link", "set", "br0", "up"])?;
        // Multicast (mDNS) sends fail with ENETUNREACH without a route: there is no default route here.
        net.ip(&["route", "add", "224.0.0.0/4", "dev", "br0"])?;
        Ok(net)
    }

    /// Runs `work` on a thread that entered this namespace, and waits for it: sockets the
    /// thread opens (a test's own client) are inside, next to the lab's processes.
    pub fn inside<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        inside_namespace(&self.name, work)
    }

    /// The namespace's name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge address with its prefix length, e.g. `10.77.0.1/24`.
    pub fn bridge_addr(&self) -> &str {
        &self.bridge_addr
    }

    /// The bridge address without the prefix length, e.g. `10.77.0.1`.
    pub fn host_ip(&self) -> &str {
        self.bridge_addr
            .split('/')
            .next()
            .unwrap_or(&self.bridge_addr)
    }

    /// Runs `ip -n NAME <args>` (an iproute2 command inside the namespace).
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Adds a tap `tapN` enslaved to `br0` and up; returns its name.
    pub fn add_tap(&self) -> Result<String, NetError> {
        let tap = {
            let mut n = self.taps.lock().unwrap_or_else(|e| e.into_inner());
            let tap = format!("tap{n}");
            *n += 1;
            tap
        };
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Adds a tap and returns the [`GuestNetwork`] for a VM with this MAC: a
    /// machine that boots again keeps its MAC, and so its DHCP lease.
    pub fn vm_network_with_mac(&self, mac: &str) -> Result<GuestNetwork, NetError> {
        Ok(GuestNetwork::Tap {
            netns: self.name.clone(),
            tap_name: self.add_tap()?,
            mac: mac.to_string(),
        })
    }

    /// Adds a tap and returns the [`GuestNetwork`] for a VM on it, with a MAC
    /// unique within this namespace (`52:54:00:77:<ns>:<tap>`).
    pub fn vm_network(&self) -> Result<GuestNetwork, NetError> {
        let tap = self.add_tap()?;
        let index: u32 = tap.trim_start_matches("tap").parse().unwrap_or(0);
        let ns: u32 = self
            .name
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(GuestNetwork::Tap {
            netns: self.name.clone(),
            tap_name: tap,
            mac: format!("52:54:00:77:{:02x}:{:02x}", ns & 0xff, index & 0xff),
        })
    }

    /// A `Command` that runs `program` inside the namespace
    /// (`ip netns exec NAME program`). Configure it, then run it yourself or
    /// hand it to [`TestNet::spawn`] so it is killed with the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args[0] args[1..]` inside the namespace to completion; an error
    /// if it exits non-zero (with its stderr in the message).
    pub fn exec(&self, args: &[&str]) -> Result<Output, NetError> {
        let (program, rest) = args.split_first().expect("exec needs a program");
        let mut cmd = self.command(program);
        cmd.args(rest);
        run(cmd)
    }

    /// Starts a long-running process (a server in the namespace). It is killed
    /// (SIGTERM, then SIGKILL) when the `TestNet` is dropped. Returns its PID.
    pub fn spawn(&self, mut cmd: Command) -> Result<u32, NetError> {
        let child = cmd.spawn().map_err(|source| NetError::Spawn {
            command: describe(&cmd),
            source,
        })?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Makes this network a home LAN behind a NAT router on `wan`: a veth pair joins this
    /// namespace (as `wan0`, address `<wan /24>.N`) to `wan`'s bridge, and this namespace
    /// routes its bridge's /24 out through it, masquerading as a home router does (with
    /// the nodes' own NAT table, `cloudos-containernet`, `wan0` in the place of a node's
    /// bridge the other way round: what leaves by any link but `br0` is masqueraded). The
    /// machines here reach `wan`; nothing on `wan` reaches them. Of the router itself they
    /// reach only its DHCP server (the table's guard closes the rest).
    pub fn route_through(&self, wan: &TestNet, n: u8) -> Result<(), NetError> {
        let wan_prefix = wan
            .host_ip()
            .rsplit_once('.')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        let wan_end = format!("home{n}");
        run_ip(&[
            "link", "add", &wan_end, "netns", &wan.name, "type", "veth", "peer", "name", "wan0",
            "netns", &self.name,
        ])?;
        wan.ip(&["link", "set", &wan_end, "master", "br0"])?;
        wan.ip(&["link", "set", &wan_end, "up"])?;
        self.ip(&[
            "addr",
            "add",
            &format!("{wan_prefix}.{n}/24"),
            "dev",
            "wan0",
        ])?;
        self.ip(&["link", "set", "wan0", "up"])?;
        self.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        let lan: ipnet::Ipv4Net = self
            .bridge_addr
            .parse::<ipnet::Ipv4Net>()
            .map(|n| n.trunc())
            .map_err(|e| NetError::Failed {
                command: format!("reading {}", self.bridge_addr),
                status: std::process::ExitStatus::default(),
                stderr: e.to_string(),
            })?;
        let rules = cloudos_containernet::nat::Rules {
            bridge: "br0".to_owned(),
            subnet: lan,
            forwards: Vec::new(),
            mesh_link: None,
            // The table closes the router to its LAN but for these ports: the machines
            // here lease their addresses from this namespace's dnsmasq (DHCP, port 67).
            node_ports: vec![(cloudos_containernet::nat::Protocol::Udp, 67)],
            blocked: Vec::new(),
            balances: Vec::new(),
        };
        let path = std::path::PathBuf::from(format!("/run/netns/{}", self.name));
        cloudos_containernet::netns::within(&path, move || {
            Box::pin(async move { cloudos_containernet::nat::apply(&rules) })
        })
        .map_err(|e| NetError::Failed {
            command: format!("masquerading {lan} in {}", self.name),
            status: std::process::ExitStatus::default(),
            stderr: e.to_string(),
        })
    }

    /// Starts a DHCP server (dnsmasq, DNS off) on the bridge, handing out
    /// `.100`-`.199` of the bridge's /24 with the bridge as router and DNS
    /// server, and leases of `lease_secs` (dnsmasq's minimum is 120) so that
    /// tests can watch renewals. Returns its PID; it dies with the namespace.
    pub fn start_dhcp_server(&self, lease_secs: u32) -> Result<u32, NetError> {
        let host = self.host_ip().to_string();
        let net = host
            .rsplit_once('.')
            .map(|(n, _)| n.to_string())
            .unwrap_or(host.clone());
        let lease_file = std::env::temp_dir().join(format!("{}.leases", self.name));
        let mut cmd = self.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--user=root",
            "--log-dhcp",
            "--log-facility=-",
        ])
        .arg(format!("--dhcp-leasefile={}", lease_file.display()))
        .arg(format!(
            "--pid-file={}",
            std::env::temp_dir()
                .join(format!("{}.dnsmasq.pid", self.name))
                .display()
        ))
        .arg(format!(
            "--dhcp-range={net}.100,{net}.199,255.255.255.0,{lease_secs}"
        ))
        .arg(format!("--dhcp-option=option:router,{host}"))
        .arg(format!("--dhcp-option=option:dns-server,{host}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.spawn(cmd)
    }

    /// Starts a DNS server (dnsmasq, DHCP off) on the bridge's address, port 53, that knows
    /// only `records` (`(name, IPv4 address)`) and asks no one else: a LAN's resolver for
    /// the names a node's DNS forwards. Returns its PID; it dies with the namespace.
    pub fn start_dns_server(&self, records: &[(&str, &str)]) -> Result<u32, NetError> {
        let mut cmd = self.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--interface=br0",
            "--bind-interfaces",
            "--user=root",
            "--log-facility=-",
        ])
        .arg(format!(
            "--pid-file={}",
            std::env::temp_dir()
                .join(format!("{}.dns.pid", self.name))
                .display()
        ));
        for (name, address) in records {
            cmd.arg(format!("--address=/{name}/{address}"));
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.spawn(cmd)
    }

    /// Starts dnsmasq (DNS off) sending router advertisements on `br0` for `fd77::/64` (the
    /// bridge at [`IPV6_BRIDGE_ADDR`]), as `mode` says. See
    /// [`TestNet::start_router_advertisements_on`].
    pub fn start_router_advertisements(&self, mode: RaMode) -> Result<u32, NetError> {
        self.start_router_advertisements_on("br0", "fd77", mode)
    }

    /// Starts dnsmasq (DNS off) sending router advertisements on `bridge` (which has
    /// `<prefix>::1/64`) for `<prefix>::/64` every few seconds, with the bridge as default
    /// router, as `mode` says; a Managed range is `<prefix>::100`–`<prefix>::1ff` with the
    /// bridge as DNS server. Returns its PID; it dies with the namespace.
    pub fn start_router_advertisements_on(
        &self,
        bridge: &str,
        prefix: &str,
        mode: RaMode,
    ) -> Result<u32, NetError> {
        let mut cmd = self.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            "--user=root",
            "--log-dhcp",
            "--log-facility=-",
            "--enable-ra",
        ])
        .arg(format!("--interface={bridge}"))
        // Every 4 s (so a late host need not wait), router lifetime 30 min: without a
        // default route of its own dnsmasq would announce lifetime 0, "not a router".
        .arg(format!("--ra-param={bridge},4,1800"))
        .arg(format!(
            "--pid-file={}",
            std::env::temp_dir()
                .join(format!("{}.{bridge}.dnsmasq6.pid", self.name))
                .display()
        ))
        .arg(format!(
            "--dhcp-leasefile={}",
            std::env::temp_dir()
                .join(format!("{}.{bridge}.leases6", self.name))
                .display()
        ));
        match mode {
            RaMode::Slaac => cmd
                .arg(format!("--dhcp-range={prefix}::,ra-only,64"))
                .arg(format!("--dhcp-option=option6:dns-server,[{prefix}::1]")),
            RaMode::Managed => cmd
                .arg(format!("--dhcp-range={prefix}::100,{prefix}::1ff,64,600"))
                .arg(format!("--dhcp-option=option6:dns-server,[{prefix}::1]")),
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.spawn(cmd)
    }

    /// Stops one process started by [`TestNet::spawn`] (no-op for other PIDs).
    pub fn kill(&self, pid: u32) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(i);
            stop_child(&mut child, Duration::from_secs(2));
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let children = std::mem::take(self.children.get_mut().unwrap_or_else(|e| e.into_inner()));
        for mut child in children {
            stop_child(&mut child, Duration::from_secs(2));
        }
        // Deleting the namespace deletes the bridge and the taps in it. A QEMU
        // still running in it keeps the namespace alive (unnamed) until it exits.
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cloudos-tests: could not delete netns {}: {e}", self.name);
        }
    }
}

/// Whether a namespace with this exact name exists (`ip netns list`).
pub fn netns_exists(name: &str) -> bool {
    list_namespaces().iter().any(|n| n == name)
}

/// Names from `ip netns list` (whose lines look like `NAME (id: 3)`).
pub fn list_namespaces() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes `cloudos-t<pid>-*` namespaces whose creating process is gone.
fn remove_stale_namespaces() {
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_ip(&["netns", "del", &name]);
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaps the child.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    crate::process::stop(child, libc::SIGTERM, grace);
}

pub(crate) fn run_ip(args: &[&str]) -> Result<Output, NetError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd)
}

fn run(mut cmd: Command) -> Result<Output, NetError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn {
            command: describe(&cmd),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(NetError::Failed {
            command: describe(&cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// [`TestNet::inside`] for the namespace named `name`.
pub fn inside_namespace<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let ns = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns).expect("the lab's namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter it");
        work()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
