//! What the boot tests watch on a booted guest from outside: console lines waited for in
//! order (by text or regex), the address its DHCP lease names, pings from the test bridge,
//! and an orderly power-off that leaves QEMU exited cleanly and the console free of panics.
//!
//! The timeouts here are the ones several tests share; a test whose guest is slower or
//! faster keeps its own next to it.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::checks::assert_no_panic;
use crate::{scaled, Console, Pattern, TestNet, Vm};

/// A guest master's setting under emulation: TCG guests stall for seconds when the host
/// is busy, which the default node timeout (2 s) would take for dead nodes.
pub const TCG_NODE_TIMEOUT: &str = "node_timeout = \"6s\"\n";

/// The same for a master on the host whose nodes are TCG guests.
pub const TCG_NOT_READY_AFTER: [&str; 2] = ["--not-ready-after", "6s"];

/// An ISO or an installed disk through firmware, GRUB and the kernel to ready, under TCG
/// on a busy host.
pub fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(300))
}

/// How long a console line may take to follow the one before it, once the guest is up.
pub fn line_timeout() -> Duration {
    scaled(Duration::from_secs(60))
}

/// A regex to wait for on a console; a bad one is a bug in the test.
pub fn re(pattern: &str) -> Pattern {
    Pattern::regex(pattern).expect("a valid regex")
}

/// Waits for each `(pattern, what)` of `lines` in turn on `console`, each within
/// `timeout`; panics with `what` (and why) on the first that does not come.
pub fn expect_lines<P>(console: &Console, timeout: Duration, lines: &[(P, &str)])
where
    P: Clone + Into<Pattern>,
{
    for (pattern, what) in lines {
        if let Err(e) = console.wait_for(pattern.clone(), timeout) {
            panic!("{what}: {e:?}");
        }
    }
}

/// The address the guest's `eth0: dhcp lease` line names (a lease from the test bridge's
/// server, with its gateway and DNS).
pub fn leased_address(vm: &Vm, timeout: Duration) -> String {
    let lease = vm
        .serial()
        .wait_for(
            re(r"eth0: dhcp lease (10\.77\.0\.\d+)/24 gateway 10\.77\.0\.1 dns 10\.77\.0\.1 for \d+s"),
            timeout,
        )
        .expect("no DHCP lease from the bridge's server");
    lease.group(1).expect("address group").to_string()
}

fn ping(net: &TestNet, address: &str) -> bool {
    net.command("ping")
        .args(["-c", "1", "-W", "3", address])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings `address` from the test bridge until it answers (true) or `timeout` passes.
pub fn answers_ping(net: &TestNet, address: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ping(net, address) {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

/// Waits (up to `timeout`) for QEMU to exit after a power-off; it must exit with success.
pub fn assert_powered_off(vm: &Vm, timeout: Duration) {
    let exit = wait_poweroff_exit(vm, timeout);
    assert!(exit.success(), "QEMU exited with {exit}");
}

/// Waits (up to `timeout`) for QEMU to exit after a power-off; its exit status.
pub fn wait_poweroff_exit(vm: &Vm, timeout: Duration) -> ExitStatus {
    vm.wait_exit(timeout)
        .expect("QEMU still running after poweroff")
}

/// Presses the ACPI power button and checks the orderly shutdown: `lines` on the console
/// in turn (the button seen, the power-off), then QEMU's clean exit and no panic.
pub fn power_button_off(vm: &Vm, timeout: Duration, lines: &[(&str, &str)]) {
    vm.monitor("system_powerdown").expect("monitor");
    expect_lines(vm.serial(), timeout, lines);
    assert_powered_off(vm, timeout);
    assert_no_panic(vm);
}

/// Types `poweroff` at the maintenance console and waits for the orderly shutdown's
/// `shutdown: powering off now`.
pub fn poweroff_from_console(vm: &Vm, timeout: Duration) {
    let console = vm.serial();
    console
        .send_line("poweroff")
        .expect("typing on the console");
    console
        .wait_for("shutdown: powering off now", timeout)
        .expect("no orderly shutdown");
}
