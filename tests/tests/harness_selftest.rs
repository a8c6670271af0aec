//! Tests of the test harness itself: network namespaces clean up (also on
//! panic), console waits behave, and one real boot of the floor initramfs.
//! Runs as root (namespaces, taps).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use cloudos_tests::netns::{list_namespaces, netns_exists};
use cloudos_tests::{artifacts, scaled, Arch, Console, ConsoleError, Pattern, TestNet, VmBuilder};

const SHORT: Duration = Duration::from_secs(5);

// ---------- netns ----------

#[test]
fn netns_is_created_with_bridge_and_taps_and_deleted_on_drop() {
    let name;
    {
        let net = TestNet::new().expect("creating the test namespace");
        name = net.name().to_string();
        assert!(netns_exists(&name), "{name} missing from `ip netns list`");

        let tap = net.add_tap().expect("adding a tap");
        assert_eq!(tap, "tap0");
        let link = net.exec(&["ip", "-o", "link", "show", &tap]).unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains("master br0"), "tap not on the bridge: {link}");

        let addr = net
            .exec(&["ip", "-o", "addr", "show", "dev", "br0"])
            .unwrap();
        assert!(String::from_utf8_lossy(&addr.stdout).contains("10.77.0.1/24"));
        let routes = net.exec(&["ip", "route", "show"]).unwrap();
        assert!(String::from_utf8_lossy(&routes.stdout).contains("224.0.0.0/4 dev br0"));

        // A failing command inside the namespace is an error carrying its stderr.
        let err = net
            .exec(&["ip", "link", "show", "nonexistent0"])
            .unwrap_err();
        assert!(err.to_string().contains("nonexistent0"), "{err}");
    }
    assert!(!netns_exists(&name), "{name} still listed after drop");
}

#[test]
fn netns_and_its_processes_are_removed_when_the_owner_panics() {
    let mut seen: Option<(String, u32)> = None;
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let net = TestNet::with_bridge_addr("10.78.0.1/24").unwrap();
        let mut sleeper = net.command("sleep");
        sleeper.arg("1000");
        let pid = net.spawn(sleeper).unwrap();
        seen = Some((net.name().to_string(), pid));
        panic!("simulated test failure");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (name, pid) = seen.expect("the namespace was created");
    assert!(
        !list_namespaces().contains(&name),
        "{name} leaked after a panic"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} spawned in the namespace survived"
    );
}

// ---------- console, on a fake stream ----------

/// A console over one end of a socket pair; the test writes the "guest" side.
fn fake_console() -> (Console, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = ours.try_clone().unwrap();
    (Console::from_stream(reader, ours), theirs)
}

#[test]
fn console_waits_move_forward() {
    let (console, mut guest) = fake_console();
    guest
        .write_all(b"boot: one\r\nboot: two\r\nready\r\n")
        .unwrap();

    let m = console.wait_for("boot:", SHORT).unwrap();
    assert_eq!(m.line, "boot: one");
    // The cursor moved past the first match: the next wait finds the second line.
    let m = console.wait_for("boot:", SHORT).unwrap();
    assert_eq!(m.line, "boot: two");
    console.wait_for("ready", SHORT).unwrap();
    // Everything is consumed now; an old line is not found again.
    let err = console
        .wait_for("boot: one", Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, ConsoleError::Timeout { .. }), "{err}");
}

#[test]
fn console_matches_output_arriving_later_and_regex_groups() {
    let (console, mut guest) = fake_console();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        guest.write_all(b"node joined: id=42 ").unwrap();
        thread::sleep(Duration::from_millis(50));
        guest.write_all(b"arch=x86_64\n").unwrap();
        guest
    });
    let re = Pattern::regex(r"joined: id=(\d+) arch=(\S+)").unwrap();
    let m = console.wait_for(re, SHORT).unwrap();
    assert_eq!(m.group(1), Some("42"));
    assert_eq!(m.group(2), Some("x86_64"));
    let _guest = writer.join().unwrap();

    // A `regex::Regex` works too.
    let (console, mut guest) = fake_console();
    guest.write_all(b"exit code 17\n").unwrap();
    let m = console
        .wait_for(regex::Regex::new(r"exit code (\d+)").unwrap(), SHORT)
        .unwrap();
    assert_eq!(m.group(1), Some("17"));
}

#[test]
fn console_strips_ansi_and_matches_an_unterminated_prompt() {
    let (console, mut guest) = fake_console();
    guest
        .write_all(
            b"\x1b[1;32mOK\x1b[0m started\r\n\x1b[2K\r? Hostname \x1b[36m\xe2\x80\xba\x1b[0m ",
        )
        .unwrap();
    assert_eq!(
        console.wait_for("OK started", SHORT).unwrap().line,
        "OK started"
    );
    // The prompt has no newline: it still matches once the stream is quiet.
    let m = console.wait_for("? Hostname", SHORT).unwrap();
    assert_eq!(m.line, "? Hostname › ");
    assert!(console.contents().contains("OK started\n"));
    assert!(console.raw().starts_with(b"\x1b[1;32mOK"));
}

#[test]
fn console_wait_for_any_reports_which_pattern() {
    let (console, mut guest) = fake_console();
    guest
        .write_all(b"starting\nKernel panic - not syncing\nlogin:\n")
        .unwrap();
    let m = console
        .wait_for_any(&["login:", "Kernel panic"], SHORT)
        .unwrap();
    // The earliest line wins, whatever the pattern order.
    assert_eq!(m.pattern_index, 1);
    assert_eq!(m.line, "Kernel panic - not syncing");
    let m = console
        .wait_for_any(&["login:", "Kernel panic"], SHORT)
        .unwrap();
    assert_eq!(m.pattern_index, 0);
}

#[test]
fn console_timeout_error_names_pattern_and_shows_last_40_lines() {
    let (console, mut guest) = fake_console();
    for i in 0..100 {
        writeln!(guest, "line {i}").unwrap();
    }
    console.wait_for("line 99", SHORT).unwrap();
    let started = Instant::now();
    let err = console
        .wait_for("never printed", Duration::from_millis(400))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let text = err.to_string();
    assert!(text.contains("\"never printed\""), "{text}");
    assert!(text.contains("timed out after 400ms"), "{text}");
    assert!(text.contains("line 60\n"), "{text}");
    assert!(text.ends_with("line 99"), "{text}");
    assert!(!text.contains("line 59\n"), "more than 40 lines: {text}");
}

#[test]
fn console_reports_a_closed_stream_at_once() {
    let (console, guest) = fake_console();
    drop(guest);
    let started = Instant::now();
    let err = console
        .wait_for("anything", Duration::from_secs(30))
        .unwrap_err();
    assert!(matches!(err, ConsoleError::Closed { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn console_send_reaches_the_guest() {
    let (console, mut guest) = fake_console();
    console.send(b"\x1b[B").unwrap();
    console.send_line("root").unwrap();
    let mut got = [0u8; 8];
    guest.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"\x1b[Broot\r");

    let read_only = Console::from_reader(std::io::empty());
    assert!(matches!(
        read_only.send(b"x"),
        Err(ConsoleError::NotWritable)
    ));
}

// ---------- one real boot ----------

/// Boots the distribution kernel with the busybox "floor" initramfs: proves
/// QEMU, the kernel and the harness work, independent of nodeos.
#[test]
fn boots_floor_initramfs_and_powers_off() {
    let _guests = cloudos_tests::guests::reserve(1);
    let kernel = artifacts::kernel(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let initrd = artifacts::floor_initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .kernel(kernel, initrd, "console=ttyS0,115200 panic=-1")
        .spawn()
        .expect("starting QEMU");

    // The monitor answers while the guest boots.
    let status = vm.monitor("info status").expect("monitor");
    assert!(status.contains("VM status: running"), "{status:?}");

    // ~4 s on an idle host; a loaded 2-core host has taken ~40 s.
    vm.serial()
        .wait_for("floor: userland up", scaled(Duration::from_secs(180)))
        .expect("floor userland did not come up");
    let exit = vm
        .wait_exit(scaled(Duration::from_secs(60)))
        .expect("QEMU did not exit after the guest powered off");
    assert!(
        exit.success(),
        "QEMU exited with {exit}: {}",
        vm.qemu_stderr()
    );
    assert!(vm.log_path().is_file());
}
