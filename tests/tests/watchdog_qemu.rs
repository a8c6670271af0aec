//! The hardware watchdog (issue 18), on QEMU's Intel 6300ESB: the x86_64 ISO arms it and
//! `status` says so; a PID 1 that hangs (`cloudos.fault=hang:pid1:N`) stops feeding it and
//! the machine is reset and boots again; an orderly poweroff stops it first and powers off
//! without a reset.
//!
//! QEMU's 6300ESB does nothing until the guest arms it, and then resets the machine
//! (`-action watchdog=reset`) when it is not fed. The builder's `-no-reboot` would make
//! that reset end QEMU, like a poweroff; `-action reboot=reset` (later on the command line,
//! so it wins) makes it a reset, so a reset reads as a second boot on the serial console
//! and a poweroff as QEMU's clean exit. Settings come from `config.toml` on a data disk:
//! the ISO's GRUB menu is used as it is. One VM per test: `--test-threads=1`.

use std::time::{Duration, Instant};

use cloudos_tests::checks::{assert_no_kernel_panic, assert_no_panic};
use cloudos_tests::guest::{boot_timeout, expect_lines, line_timeout, re};
use cloudos_tests::{artifacts, Arch, BootSource, Firmware, Vm, VmBuilder};

/// GRUB's line when it boots the ISO's default entry: one per boot of the machine.
const GRUB_BOOTS: &str = "Booting `CloudOS'";

/// The ISO from a CD on SeaBIOS with a 6300ESB and a data disk holding `config`.
fn watched_machine(name: &str, config: &str) -> (Vm, tempfile::TempPath) {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let data = artifacts::data_disk(config, 32).expect("data disk");
    let vm = VmBuilder::new(Arch::X86_64)
        .name(name)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .disk(data.to_path_buf())
        .extra_args([
            "-device",
            "i6300esb",
            "-action",
            "watchdog=reset",
            // Later than the builder's -no-reboot, so it wins: a reset boots again.
            "-action",
            "reboot=reset",
        ])
        .spawn()
        .expect("starting QEMU");
    (vm, data)
}

/// Boots to ready and checks, as an operator would, that `status` says the watchdog is
/// armed on the 6300ESB with `timeout`.
fn boot_and_see_it_armed(vm: &Vm, timeout: u32) {
    let console = vm.serial();
    let from_start = console.clone();
    expect_lines(
        console,
        boot_timeout(),
        &[
            (GRUB_BOOTS, "GRUB did not boot the default entry"),
            (
                "state is kept on /dev/vda (CLOUDOS-DATA)",
                "the data disk with the settings was not mounted",
            ),
            ("nodeos ready in", "nodeos did not report ready"),
        ],
    );
    from_start
        .wait_for("CloudOS console ready", line_timeout())
        .expect("no maintenance console");
    console.send_line("status").expect("typing on the console");
    let armed = format!("watchdog armed: /dev/watchdog0 (i6300ESB timer), timeout {timeout}s");
    console
        .wait_for(armed.as_str(), line_timeout())
        .unwrap_or_else(|e| panic!("status does not say {armed:?}: {e}"));
}

/// A hung PID 1 is reset: the fault blocks PID 1's event loop 40 s after ready, feeding
/// stops, and within the 20 s timeout the 6300ESB resets the machine, which boots again
/// (GRUB and nodeos a second time), with no orderly shutdown in between.
#[test]
fn a_hung_pid1_is_reset_by_the_watchdog_and_boots_again() {
    let _guests = cloudos_tests::guests::reserve(1);
    let started = Instant::now();
    let (vm, _data) = watched_machine(
        "watchdog-hang",
        "watchdog = \"20\"\nfault = \"hang:pid1:40\"\n",
    );
    boot_and_see_it_armed(&vm, 20);
    let console = vm.serial();
    console
        .wait_for(
            "hanging on purpose (cloudos.fault=hang:pid1)",
            boot_timeout(),
        )
        .expect("PID 1 did not hang on purpose");
    let hung = Instant::now();
    let after_hang = console.clone();
    console
        .wait_for(GRUB_BOOTS, boot_timeout())
        .expect("the machine was not reset: no second boot");
    let reset_after = hung.elapsed();
    // The last feed was at most a third of the timeout before the hang: the reset comes
    // 13-20 s of guest time later, never at once (that would be something else).
    assert!(
        reset_after >= Duration::from_secs(10),
        "reset {reset_after:?} after the hang: too soon to be the watchdog"
    );
    let text = console.contents();
    let between = text
        .get(after_hang.position()..console.position())
        .unwrap_or(&text);
    for orderly in ["shutdown:", "rebooting now", "powering off"] {
        assert!(
            !between.contains(orderly),
            "an orderly shutdown ({orderly:?}) came between the hang and the reset:\n{between}"
        );
    }
    console
        .wait_for(re(r"CloudOS nodeos \S+ starting on Linux"), boot_timeout())
        .expect("nodeos did not start again after the reset");
    console
        .wait_for("nodeos ready in", boot_timeout())
        .expect("the machine did not come up again after the reset");
    assert_no_kernel_panic(&vm);
    eprintln!(
        "reset {:.1}s after the hang; whole test {:.1}s",
        reset_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// An orderly poweroff with the watchdog armed stops it before the disks are synced and
/// unmounted, and the machine powers off: QEMU exits cleanly, and boots nothing again.
#[test]
fn an_orderly_poweroff_stops_the_watchdog_and_powers_off_without_a_reset() {
    let _guests = cloudos_tests::guests::reserve(1);
    let started = Instant::now();
    let (vm, _data) = watched_machine("watchdog-poweroff", "watchdog = \"10\"\n");
    boot_and_see_it_armed(&vm, 10);
    let console = vm.serial();
    console
        .send_line("poweroff")
        .expect("typing on the console");
    expect_lines(
        console,
        line_timeout(),
        &[
            (
                "watchdog: stopped for the shutdown",
                "the watchdog was not stopped for the poweroff",
            ),
            ("syncing and unmounting", "no orderly shutdown"),
            ("shutdown: powering off now", "no power-off"),
        ],
    );
    let exit = vm
        .wait_exit(line_timeout())
        .expect("QEMU still running after the poweroff");
    assert!(exit.success(), "QEMU exited with {exit}");
    let text = console.contents();
    let after = text.get(console.position()..).unwrap_or(&text);
    assert!(
        !after.contains(GRUB_BOOTS),
        "the machine booted again after its poweroff:\n{after}"
    );
    assert_no_panic(&vm);
    eprintln!("whole test {:.1}s", started.elapsed().as_secs_f64());
}
