//! Interoperability with avahi, the mDNS stack of most Linux desktops: a master
//! advertised by this crate (libmdns) in one namespace must be shown and resolved
//! by `avahi-browse -rtp _cloudos._tcp` in the other.
//!
//! Self-contained: a private D-Bus system bus (a unix socket in the test's own
//! directory) and an avahi-daemon confined to the peer namespace, with its own
//! runtime directory, so a host's avahi is neither needed nor touched. Needs root
//! and the avahi-daemon, avahi-utils and dbus packages (scripts/deps.sh): skipped
//! without them, or failed under `CLOUDOS_STRICT=1` (scripts/test.sh).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudos_discovery::{pin_prefix, Advertiser, MasterAd};
use cloudos_testkit::require;
use support::{run, wait_for, Lan, ADDR_A, LINK};

const PIN: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Browsing only: no publishing, IPv4 on the test link only.
fn avahi_config() -> String {
    format!(
        "[server]\nhost-name=avahi-peer\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces={LINK}\n\
         enable-dbus=yes\n[publish]\ndisable-publishing=yes\n[reflector]\nenable-reflector=no\n"
    )
}

/// Undoes avahi-browse's parsable-output escaping (`\032` is a space, `\.` a dot).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match (bytes[i], digits) {
            (b'\\', Some(d)) => {
                let code = std::str::from_utf8(d)
                    .ok()
                    .and_then(|d| d.parse::<u8>().ok());
                out.push(code.expect("avahi escape is a decimal byte"));
                i += 4;
            }
            (b'\\', None) if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn avahi_browse_shows_and_resolves_the_master() {
    require!(support::lan_host());
    for tool in ["avahi-daemon", "avahi-browse", "dbus-daemon"] {
        require!(cloudos_testkit::program(
            tool,
            "apt-get install avahi-daemon avahi-utils dbus (scripts/deps.sh)"
        ));
    }
    support::init_log();

    let mut lan = Lan::new("avahi");
    let bus_socket = lan.dir.join("bus");
    let bus_address = format!("unix:path={}", bus_socket.display());
    let bus_conf = lan.dir.join("bus.conf");
    let avahi_conf = lan.dir.join("avahi.conf");
    std::fs::write(&bus_conf, bus_config(&bus_socket)).expect("write bus.conf");
    std::fs::write(&avahi_conf, avahi_config()).expect("write avahi.conf");

    // A unix socket on the file system works across network namespaces.
    lan.spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg("--nofork")
            .arg("--nopidfile")
            .arg(format!("--config-file={}", bus_conf.display())),
    );
    let bus_up = wait_for(Duration::from_secs(5), || bus_socket.exists().then_some(()));
    assert!(
        bus_up.is_some(),
        "dbus-daemon did not listen: {}",
        lan.log("dbus-daemon")
    );

    // avahi-daemon keeps its pid file and socket in /run/avahi-daemon: give it a
    // private one in a mount namespace of its own. Every step execs, so the pid
    // we hold is avahi-daemon's.
    let script = "mkdir -p /run/avahi-daemon && mount -t tmpfs avahi-test /run/avahi-daemon && \
                  exec avahi-daemon --no-drop-root --no-chroot --no-rlimits --no-proc-title -f \"$1\"";
    lan.spawn(
        "avahi-daemon",
        Command::new("ip")
            .args([
                "netns", "exec", &lan.b, "unshare", "--mount", "sh", "-c", script, "sh",
            ])
            .arg(&avahi_conf)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address),
    );

    let handle = lan
        .in_ns(&lan.a, || {
            Advertiser::new().host("master-a").start(&MasterAd {
                instance: "cloudos lab master-a".to_owned(),
                cluster: "lab".to_owned(),
                pin_prefix: pin_prefix(PIN).expect("test pin"),
                port: 6443,
                version: "0.1.0-test".to_owned(),
            })
        })
        .expect("advertise");

    // Retried: the daemon needs a moment before it answers on the bus, and -t ends
    // a browse once avahi thinks its cache is complete.
    let mut last = String::new();
    let resolved = wait_for(Duration::from_secs(20), || {
        // In the peer namespace, where avahi's interface index names the test link.
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.b,
                "avahi-browse",
                "-rtp",
                "_cloudos._tcp",
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
            .output()
            .expect("run avahi-browse");
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last.lines()
            .find(|l| l.starts_with("=;"))
            .map(|l| l.split(';').map(unescape).collect::<Vec<_>>())
    });
    let Some(fields) = resolved else {
        panic!(
            "avahi-browse did not resolve the master in 20 s; last output:\n{last}\navahi-daemon log:\n{}",
            lan.log("avahi-daemon")
        );
    };
    eprintln!("avahi-browse: {}", fields.join(";"));
    assert!(
        last.lines().any(|l| l.starts_with("+;")),
        "no browse (+) line: {last}"
    );

    // =;iface;proto;instance;type;domain;host;address;port;txt
    assert_eq!(fields.len(), 10, "{fields:?}");
    assert_eq!(fields[1], LINK);
    assert_eq!(fields[2], "IPv4");
    assert_eq!(fields[3], "cloudos lab master-a");
    assert_eq!(fields[4], "_cloudos._tcp");
    assert_eq!(fields[5], "local");
    assert_eq!(fields[6], "master-a.local");
    assert_eq!(fields[7], ADDR_A.to_string());
    assert_eq!(fields[8], "6443");
    let mut txt: Vec<&str> = fields[9].split(' ').map(|s| s.trim_matches('"')).collect();
    txt.sort_unstable();
    assert_eq!(
        txt,
        [
            "cluster=lab",
            "pin=9f86d081884c7d65",
            "port=6443",
            "txtvers=1",
            "version=0.1.0-test"
        ]
    );

    // The host name resolves on its own too (an A query, as ssh or curl would send).
    let out = run(Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.b,
            "avahi-resolve",
            "-4",
            "-n",
            "master-a.local",
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["master-a.local", &ADDR_A.to_string()]
    );

    // Withdrawal: a running avahi-browse sees the goodbye (`-` line) long before
    // the 60 s TTL would run out.
    lan.spawn(
        "avahi-watch",
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.b,
                "avahi-browse",
                "-p",
                "_cloudos._tcp",
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address),
    );
    let seen = wait_for(Duration::from_secs(10), || {
        lan.log("avahi-watch").contains("+;").then_some(())
    });
    assert!(
        seen.is_some(),
        "avahi-browse did not show the master: {}",
        lan.log("avahi-watch")
    );
    let stopped = std::time::Instant::now();
    handle.stop();
    let gone = wait_for(Duration::from_secs(5), || {
        lan.log("avahi-watch").contains("-;").then_some(())
    });
    assert!(
        gone.is_some(),
        "avahi-browse did not see the master go: {}",
        lan.log("avahi-watch")
    );
    eprintln!(
        "avahi saw the withdrawal {:?} after stop",
        stopped.elapsed()
    );
}
