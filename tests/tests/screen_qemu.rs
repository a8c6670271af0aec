//! The screen and keyboard (issue 18): the x86_64 ISO on SeaBIOS with QEMU's standard VGA
//! in text mode, "Install CloudOS" picked in GRUB, and then only what a person at the
//! screen sees and types: the VGA text screen read through the monitor, keys pressed on
//! the PS/2 keyboard. The serial line is watched only to know when the machine has
//! logged something, which must then not be on the screen.
//!
//! One VM; `--test-threads=1`.

use std::time::{Duration, Instant};

use cloudos_tests::checks::{assert_no_kernel_panic, step, DOWN, ENTER, PRESS_ENTER};
use cloudos_tests::guest::{boot_timeout, line_timeout};
use cloudos_tests::screen::{self, Screen};
use cloudos_tests::{artifacts, Arch, BootSource, Firmware, GuestNetwork, Vm, VmBuilder};

/// A line of the node's log as it is printed (`[   12.345] INFO  net: …`).
fn is_log_line(row: &str) -> bool {
    let Some(rest) = row.trim_start().strip_prefix('[') else {
        return false;
    };
    rest.split_once(']')
        .is_some_and(|(secs, _)| secs.trim().parse::<f64>().is_ok())
}

/// Reads the screen until `text` is on it (the guest draws at its own pace).
fn wait_for_screen(vm: &Vm, text: &str, timeout: Duration) -> Screen {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = screen::read(vm).expect("reading the screen");
        if seen.find(text).is_some() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never reached the screen, which shows:\n{}",
            seen.text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// No log line on the screen, and every cell a character the console font has.
fn assert_clean(seen: &Screen, when: &str) {
    let logs: Vec<String> = seen.rows().into_iter().filter(|r| is_log_line(r)).collect();
    assert!(
        logs.is_empty(),
        "{when}: log lines on the screen: {logs:#?}\n{}",
        seen.text()
    );
    assert_printable(seen, when);
}

/// Every cell a character the console font has, in printable ASCII.
fn assert_printable(seen: &Screen, when: &str) {
    assert!(
        seen.unprintable().is_empty(),
        "{when}: glyphs outside printable ASCII at (row, column, code) {:?}\n{}",
        seen.unprintable(),
        seen.text()
    );
}

/// The wizard on the screen: the installer's question stays alone on a screen that log
/// lines (a pulled cable's, a new lease's) do not reach; Enter on the keyboard starts the
/// wizard on a cleared screen; its network check reads "Checking the network..." in the
/// font's own characters; and the log lines meanwhile still reach the serial line.
#[test]
fn the_wizard_owns_a_clean_screen_that_log_lines_do_not_reach() {
    let _guests = cloudos_tests::guests::reserve(1);
    let started = Instant::now();
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .name("screen-wizard")
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .network(GuestNetwork::User { hostfwd: vec![] })
        .extra_args(["-vga", "std"])
        .spawn()
        .expect("starting QEMU");
    let serial = vm.serial();

    // GRUB's menu is on the serial line too: pick "Install CloudOS" there.
    serial
        .wait_for("Install CloudOS", boot_timeout())
        .expect("no GRUB menu");
    serial.send(DOWN).expect("typing on the serial line");
    std::thread::sleep(Duration::from_millis(300));
    serial.send(ENTER).expect("typing on the serial line");
    serial
        .wait_for(PRESS_ENTER, boot_timeout())
        .expect("the installer did not ask for Enter");

    // 1. The question, alone on the screen, and it stays there while the node logs.
    let seen = wait_for_screen(&vm, PRESS_ENTER, step());
    assert_clean(&seen, "asking for Enter");
    vm.monitor("set_link n0 off").expect("monitor");
    serial
        .wait_for("eth0: link down", line_timeout())
        .expect("the pulled cable was not logged on the serial line");
    vm.monitor("set_link n0 on").expect("monitor");
    serial
        .wait_for("eth0: dhcp lease", line_timeout())
        .expect("the new lease was not logged on the serial line");
    let seen = screen::read(&vm).expect("reading the screen");
    assert!(
        seen.rows().iter().any(|r| r.trim() == PRESS_ENTER),
        "the question left the screen while the node logged:\n{}",
        seen.text()
    );
    assert_clean(&seen, "after the cable was pulled and a new lease taken");
    assert!(
        !seen.text().contains("eth0"),
        "the log reached the screen:\n{}",
        seen.text()
    );

    // 2. Enter on the keyboard: the wizard's first question on a cleared screen.
    screen::press(&vm, "ret").expect("pressing Enter");
    serial
        .wait_for("install: the wizard runs on tty1", step())
        .expect("the wizard did not take the screen (its log line goes to the serial line)");
    // The prompt is drawn before its items: wait for the last item, or the screen can be
    // read between the two (seen once under TCG).
    let seen = wait_for_screen(&vm, "Try live", step());
    let question = seen.find("What do you want to do?").unwrap_or_default();
    assert!(
        question <= 1,
        "the first question is drawn below old lines, at row {question}:\n{}",
        seen.text()
    );
    assert!(
        seen.find(PRESS_ENTER).is_none(),
        "the screen was not cleared:\n{}",
        seen.text()
    );
    assert!(
        seen.find("Install as master").is_some() && seen.find("Try live").is_some(),
        "the first menu is not on the screen:\n{}",
        seen.text()
    );
    assert_clean(&seen, "the first question");

    // 3. Compute node, a host name typed on the keyboard, DHCP: the network check, in ASCII.
    std::thread::sleep(Duration::from_secs(1));
    screen::press(&vm, "down").expect("typing");
    std::thread::sleep(Duration::from_millis(300));
    screen::press(&vm, "ret").expect("typing");
    wait_for_screen(&vm, "Host name of this node", step());
    std::thread::sleep(Duration::from_secs(1));
    screen::type_text(&vm, "screen-1").expect("typing");
    screen::press(&vm, "ret").expect("typing");
    wait_for_screen(&vm, "Network", step());
    std::thread::sleep(Duration::from_secs(1));
    screen::press(&vm, "ret").expect("typing");
    let seen = wait_for_screen(&vm, "Checking the network", step());
    let row = seen.find("Checking the network").unwrap_or_default();
    assert_eq!(
        seen.row(row).trim(),
        "Checking the network...",
        "the network check is not drawn in the font's characters:\n{}",
        seen.text()
    );
    assert_clean(&seen, "checking the network");

    // 4. While the wizard runs, the node's log goes to the serial line, not over it.
    serial.skip_to_end();
    vm.monitor("set_link n0 off").expect("monitor");
    serial
        .wait_for("eth0: link down", line_timeout())
        .expect("the pulled cable was not logged on the serial line during the wizard");
    vm.monitor("set_link n0 on").expect("monitor");
    serial
        .wait_for("eth0: link up", line_timeout())
        .expect("the cable put back was not logged on the serial line during the wizard");
    std::thread::sleep(Duration::from_secs(2));
    let seen = screen::read(&vm).expect("reading the screen");
    assert_clean(&seen, "the wizard, after the cable was pulled and put back");
    assert!(
        !seen.text().contains("eth0"),
        "the log reached the wizard's screen:\n{}",
        seen.text()
    );
    assert_no_kernel_panic(&vm);
    eprintln!("whole test {:.1}s", started.elapsed().as_secs_f64());
}

/// The other side of the same reading: a normal boot (GRUB's default entry) keeps its log
/// on the screen, scrolled to its last line ("nodeos ready"), in plain ASCII. Without the
/// wizard nothing hides the log, and the reader finds it where the console scrolled it.
#[test]
fn a_normal_boot_shows_its_log_on_the_screen() {
    let _guests = cloudos_tests::guests::reserve(1);
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .name("screen-log")
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .extra_args(["-vga", "std"])
        .spawn()
        .expect("starting QEMU");
    vm.serial()
        .wait_for("nodeos ready in", boot_timeout())
        .expect("nodeos did not report ready");
    let seen = wait_for_screen(&vm, "nodeos ready in", step());
    let logs = seen.rows().iter().filter(|r| is_log_line(r)).count();
    assert!(
        logs >= 10,
        "the boot log is not on the screen ({logs} log lines):\n{}",
        seen.text()
    );
    assert_printable(&seen, "a normal boot");
    assert_no_kernel_panic(&vm);
}
