//! Hosts on a [`TestNet`] bridge: one network namespace per host, attached to `br0` by a
//! veth pair, so a master and agents run as real processes, each with its own address on
//! one LAN, and mDNS crosses the bridge as it would cross a switch.
//!
//! The namespace is named after the bridge's (`<net>-h<N>`), so a test process killed
//! before its `Drop` ran has it removed by the next [`TestNet::new`] like the bridge's
//! own. Deleting the namespace deletes its end of the veth pair, and with it the other.

use std::io;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{run_ip, NetError, TestNet};

/// Where the veth pair ends inside a host's namespace.
pub const HOST_LINK: &str = "eth0";

/// A host `10.77.0.N` (the bridge's /24 with the last byte `N`) in its own namespace.
#[derive(Debug)]
pub struct NetHost {
    name: String,
    ip: String,
}

impl NetHost {
    /// Creates the namespace, a veth pair `vethN` (on `br0`) / `eth0` (here) with
    /// `<bridge /24>.N/24` and a route for multicast, and waits for the link's carrier.
    /// `n` must differ from the bridge's own last byte and from other hosts'.
    pub fn new(net: &TestNet, n: u8) -> Result<NetHost, NetError> {
        let prefix = net
            .host_ip()
            .rsplit_once('.')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_else(|| "10.77.0".to_owned());
        let host = NetHost::plugged(net, n, format!("{prefix}.{n}"))?;
        host.ip_cmd(&["addr", "add", &format!("{}/24", host.ip), "dev", HOST_LINK])?;
        host.wait_carrier(Duration::from_secs(5))?;
        Ok(host)
    }

    /// Host `n`'s namespace, its end of a veth on the bridge `br0` of `net`, `lo` and the
    /// link up, and the multicast route: without one, multicast sends fail with
    /// ENETUNREACH (there is no default route), and libmdns gives up its IPv4 side when it
    /// cannot join 224.0.0.251, even on an IPv6-only LAN (the node's net service adds
    /// the same route).
    fn plugged(net: &TestNet, n: u8, ip: String) -> Result<NetHost, NetError> {
        let host = NetHost {
            name: format!("{}-h{n}", net.name()),
            ip,
        };
        run_ip(&["netns", "add", &host.name])?;
        // From here on an error drops `host`, which deletes the namespace.
        let bridge_end = format!("veth{n}");
        run_ip(&[
            "link",
            "add",
            &bridge_end,
            "netns",
            net.name(),
            "type",
            "veth",
            "peer",
            "name",
            HOST_LINK,
            "netns",
            &host.name,
        ])?;
        net.ip(&["link", "set", &bridge_end, "master", "br0"])?;
        net.ip(&["link", "set", &bridge_end, "up"])?;
        host.ip_cmd(&["link", "set", "lo", "up"])?;
        host.ip_cmd(&["link", "set", HOST_LINK, "up"])?;
        host.ip_cmd(&["route", "add", "224.0.0.0/4", "dev", HOST_LINK])?;
        Ok(host)
    }

    /// A host on an IPv6-only LAN (a bridge made with [`crate::netns::IPV6_BRIDGE_ADDR`] and
    /// router advertisements): no IPv4 address; its address is the one the kernel makes
    /// by SLAAC from the advertised prefix, waited for up to `timeout`.
    pub fn ipv6_only(net: &TestNet, n: u8, timeout: Duration) -> Result<NetHost, NetError> {
        let mut host = NetHost::plugged(net, n, String::new())?;
        host.wait_carrier(Duration::from_secs(5))?;
        let deadline = Instant::now() + timeout;
        host.ip = loop {
            if let Some(ip) = host.global_ipv6()? {
                break ip;
            }
            if Instant::now() >= deadline {
                return Err(NetError::Spawn {
                    command: format!("waiting for a SLAAC address in {}", host.name),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("none within {timeout:?}"),
                    ),
                });
            }
            thread::sleep(Duration::from_millis(100));
        };
        Ok(host)
    }

    /// The first global (or unique-local) IPv6 address of the host's link that has passed
    /// duplicate address detection.
    pub fn global_ipv6(&self) -> Result<Option<String>, NetError> {
        let out = self.ip_cmd(&[
            "-6", "-o", "addr", "show", "dev", HOST_LINK, "scope", "global",
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("tentative"))
            .find_map(|l| {
                let cidr = l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
                Some(cidr.split('/').next()?.to_owned())
            }))
    }

    /// `ip:port`, the IP in brackets when it is IPv6.
    pub fn addr(&self, port: u16) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{port}", self.ip)
        } else {
            format!("{}:{port}", self.ip)
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address without prefix length, e.g. `10.77.0.2`.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// Runs `ip -n NAME <args>`.
    pub fn ip_cmd(&self, args: &[&str]) -> Result<std::process::Output, NetError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// A `Command` that runs `program` in this host's namespace
    /// (`ip netns exec NAME program`, which execs `program` in place: the child's PID is
    /// the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Like [`NetHost::command`], but only the network namespace changes: `ip netns exec`
    /// also mounts a sysfs of the namespace over /sys, which hides the cgroup hierarchy a
    /// container runtime needs. `nsenter --net` keeps the machine's mounts, as a compute
    /// node's agent sees them.
    pub fn command_with_host_mounts(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Mdns-sd and the kernel drop packets on a link without carrier: wait for `state UP`.
    fn wait_carrier(&self, timeout: Duration) -> Result<(), NetError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ip_cmd(&["-o", "link", "show", HOST_LINK])?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("state UP") || Instant::now() >= deadline {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cloudos-tests: could not delete netns {}: {e}", self.name);
        }
    }
}

/// Spawns `cmd` so that it is SIGKILLed if the test process dies without running `Drop`
/// (see the spawner module). The caller still owns the child and must stop it.
pub fn spawn_tied(cmd: Command) -> io::Result<Child> {
    crate::spawner::spawn_tied(cmd)
}
