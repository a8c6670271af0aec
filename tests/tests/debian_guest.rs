//! Self-test of the Debian guest (`cloudos_tests::debian`): it boots on the
//! test LAN, systemd finishes, DHCP gives it an address, `curl` reaches a web
//! server on the bridge's host side, and what it wrote survives a
//! `systemctl reboot` and a poweroff followed by a fresh boot of its overlay.
//!
//! Ignored by default (a few minutes under TCG; the cloud install tests boot the same
//! guest): `scripts/debian-guest.sh --check` runs it after building the guest. Needs root
//! (namespaces, taps) and `scripts/build.sh` first.

use std::time::{Duration, Instant};

use cloudos_tests::{scaled, DebianGuest, TestNet};

fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

#[test]
#[ignore = "harness self-test, boots a Debian guest under TCG (minutes): scripts/debian-guest.sh --check"]
fn debian_guest_reaches_the_lan_and_survives_reboots() {
    let _guests = cloudos_tests::guests::reserve(1);
    let total = Instant::now();
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");

    // A web server on the host side of the bridge, as the installer's download site.
    let www = tempfile::tempdir().expect("temp dir");
    std::fs::write(www.path().join("hello.txt"), "hello from the bridge\n").expect("write");
    let mut httpd = net.command("busybox");
    httpd
        .args(["httpd", "-f", "-p"])
        .arg(format!("{}:8080", net.host_ip()))
        .arg("-h")
        .arg(www.path());
    let httpd = net.spawn(httpd).expect("busybox httpd");

    let t = Instant::now();
    let mut guest = DebianGuest::boot(net.vm_network().expect("tap")).expect("booting the guest");
    eprintln!("boot to root shell: {}", secs(t));
    let command = scaled(Duration::from_secs(30));

    let t = Instant::now();
    let ready = guest
        .wait_ready(scaled(Duration::from_secs(180)))
        .expect("systemd up and an address");
    eprintln!(
        "system {} at {} after another {}",
        ready.state,
        ready.ipv4,
        secs(t)
    );
    assert!(ready.ipv4.starts_with("10.77.0."), "{ready:?}");
    let state = guest
        .run("systemctl is-system-running", command)
        .expect("systemctl")
        .1;
    assert!(state == "running" || state == "degraded", "{state:?}");
    if state == "degraded" {
        eprintln!(
            "degraded; failed units:\n{}",
            guest
                .run("systemctl --failed --no-legend", command)
                .unwrap()
                .1
        );
    }

    // The shell is the Debian one a curl|sh installer meets.
    assert_eq!(
        guest.run_ok("readlink -f /bin/sh", command).unwrap(),
        "/usr/bin/dash"
    );
    assert_eq!(guest.run_ok("hostname", command).unwrap(), "debian-guest");
    // Exit status, stderr, multi-line commands and a long line come back intact.
    let (code, out) = guest.run("echo to-stderr >&2; false", command).unwrap();
    assert_eq!((code, out.as_str()), (1, "to-stderr"));
    let (code, out) = guest
        .run("for i in 1 2 3; do\n echo line $i\ndone", command)
        .unwrap();
    assert_eq!((code, out.as_str()), (0, "line 1\nline 2\nline 3"));
    let long = guest.run_ok("printf 'x%.0s' $(seq 3000)", command).unwrap();
    assert_eq!(long, "x".repeat(3000));

    // A command that outlives its timeout: the shell gets back in step.
    assert!(guest.run("sleep 3", Duration::from_secs(1)).is_err());
    assert_eq!(guest.run_ok("echo after", command).unwrap(), "after");

    let url = format!("http://{}:8080/hello.txt", net.host_ip());
    let body = guest
        .run_ok(&format!("curl -fsS --max-time 20 {url}"), command)
        .expect("curl from the guest to the bridge");
    assert_eq!(body, "hello from the bridge");

    // A reboot keeps the disk: QEMU resets the same VM.
    guest
        .run_ok("echo kept > /root/mark && sync", command)
        .unwrap();
    let t = Instant::now();
    guest.reboot().expect("reboot");
    eprintln!("systemctl reboot to root shell: {}", secs(t));
    assert_eq!(guest.run_ok("cat /root/mark", command).unwrap(), "kept");
    let ready = guest
        .wait_ready(scaled(Duration::from_secs(180)))
        .expect("up again after the reboot");
    let again = guest
        .run_ok(&format!("curl -fsS --max-time 20 {url}"), command)
        .expect("curl after the reboot");
    assert_eq!(again, "hello from the bridge", "{ready:?}");

    // Powered off and booted again: a new QEMU on the same overlay.
    let t = Instant::now();
    guest
        .poweroff(scaled(Duration::from_secs(90)))
        .expect("poweroff");
    eprintln!("poweroff: {}", secs(t));
    let t = Instant::now();
    guest.start().expect("fresh boot of the same overlay");
    eprintln!("fresh boot to root shell: {}", secs(t));
    assert_eq!(guest.run_ok("cat /root/mark", command).unwrap(), "kept");

    drop(guest);
    net.kill(httpd);
    eprintln!("total: {}", secs(total));
}
