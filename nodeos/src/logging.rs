//! Logging for PID 1 and its services.
//!
//! PID 1 writes each line, with the seconds since boot and a level, to every
//! active console (serial and screen), to `/dev/kmsg` and into an in-memory
//! ring that `nodeos logs`/the control socket serve later. Services are child
//! processes: they write a tab-separated record to stderr, which PID 1 reads
//! from a pipe and re-logs under the service's name, so the ring holds
//! everything and nothing fights over the console. Under systemd (the cloud
//! install) records go to the journal instead.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Lines kept for later retrieval; at ~100 bytes each, about 200 KiB.
const RING_LINES: usize = 2000;

static RING: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static LOGGER: OnceLock<NodeLogger> = OnceLock::new();
/// While set, lines are not written to the screen's consoles (the wizard has the screen;
/// see `crate::screen`); the serial lines, the kernel log and the ring still get them.
static OFF_SCREEN: AtomicBool = AtomicBool::new(false);

/// A console we write to, and whether it is the screen.
struct Console {
    file: File,
    screen: bool,
}

enum Sink {
    /// Human-readable lines to the consoles and the kernel log. The kernel
    /// itself prints kernel-log records below its console level to every
    /// console, so those lines are not written to the consoles a second time.
    Consoles {
        consoles: Vec<Console>,
        kmsg: Option<File>,
        kernel_echoes_below: u8,
    },
    /// Machine-readable records for the supervising PID 1.
    ToSupervisor,
    /// Plain lines on stderr (tools run by a person, tests).
    Stderr,
    /// systemd's journal, with priority and fields (nodeos as a host service).
    Journal(systemd_journal_logger::JournalLog),
}

struct NodeLogger {
    sink: Mutex<Sink>,
}

/// Seconds since boot, as the kernel's own log shows them.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// PID 1: log to the consoles the kernel was told to use, and to /dev/kmsg.
pub fn init_for_pid1(debug: bool) {
    install(console_sink(), debug);
}

fn console_sink() -> Sink {
    // The kernel rate-limits writes to /dev/kmsg (10 lines per 5 s) unless told
    // otherwise; PID 1 owns the machine's log, so it turns that off. Where it
    // cannot (printk.devkmsg= on the command line locks it), the consoles get
    // every line from us and the kernel's copy is best effort.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let kmsg = File::options().write(true).open("/dev/kmsg").ok();
    let unlimited =
        std::fs::read_to_string("/proc/sys/kernel/printk_devkmsg").is_ok_and(|v| v.trim() == "on");
    let kernel_echoes_below = if kmsg.is_some() && unlimited {
        console_loglevel()
    } else {
        0
    };
    Sink::Consoles {
        consoles: open_consoles(),
        kmsg,
        kernel_echoes_below,
    }
}

/// The kernel prints records with a level below this on its consoles
/// (`quiet` makes it 4, `loglevel=N` sets it); 0 if unknown.
fn console_loglevel() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Re-open the console devices, after /dev and /sys are mounted.
pub fn reopen_consoles() {
    if let Some(logger) = LOGGER.get() {
        if let Ok(mut sink) = logger.sink.lock() {
            *sink = console_sink();
        }
    }
}

/// Keeps lines off the screen (or puts them back on it): see `crate::screen`.
pub fn keep_off_screen(off: bool) {
    OFF_SCREEN.store(off, Ordering::Relaxed);
}

/// The installer's wizard on the screen: its log lines go to the serial consoles and
/// the kernel log, as PID 1's do, and never over the dialog.
pub fn init_off_screen(debug: bool) {
    keep_off_screen(true);
    install(console_sink(), debug);
}

/// A service process: records go to PID 1 through stderr.
pub fn init_for_service(debug: bool) {
    install(Sink::ToSupervisor, debug);
}

/// A command run by a person.
pub fn init_for_tool(debug: bool) {
    install(Sink::Stderr, debug);
}

/// A command that may run as a systemd service: to the journal when systemd
/// connected our stderr to it (`JOURNAL_STREAM`), else like [`init_for_tool`].
/// Returns whether the journal is used.
pub fn init_for_host(debug: bool) -> bool {
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten()
        .map(|journal| journal.with_syslog_identifier("nodeos".to_owned()));
    let used = journal.is_some();
    install(journal.map_or(Sink::Stderr, Sink::Journal), debug);
    used
}

pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

fn install(sink: Sink, debug: bool) {
    let logger = LOGGER.get_or_init(|| NodeLogger {
        sink: Mutex::new(Sink::Stderr),
    });
    if let Ok(mut current) = logger.sink.lock() {
        *current = sink;
    }
    let _ = log::set_logger(logger);
    set_debug(debug);
}

/// `/sys/class/tty/console/active` names the consoles of `console=` (for
/// example `tty0 ttyS0`); /dev/console alone reaches only the last of them.
fn open_consoles() -> Vec<Console> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut consoles: Vec<Console> = active
        .split_whitespace()
        .filter_map(|name| {
            let file = File::options()
                .write(true)
                .open(format!("/dev/{name}"))
                .ok()?;
            Some(Console {
                file,
                screen: crate::screen::is_screen(name),
            })
        })
        .collect();
    if consoles.is_empty() {
        consoles.extend(
            File::options()
                .write(true)
                .open("/dev/console")
                .ok()
                .map(|file| Console {
                    file,
                    screen: false,
                }),
        );
    }
    consoles
}

impl Log for NodeLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries that trace every step at info level (zbus's spans) are heard only when
        // something goes wrong, unless debugging.
        let chatty = metadata.target().starts_with("zbus") || metadata.target() == "tracing::span";
        let limit = if chatty && log::max_level() < LevelFilter::Debug {
            LevelFilter::Warn
        } else {
            log::max_level()
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = short_target(record.target());
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        match &mut *sink {
            Sink::ToSupervisor => {
                let message = record.args().to_string().replace(['\n', '\t'], " ");
                let _ = writeln!(
                    std::io::stderr(),
                    "{}\t{}\t{}",
                    record.level(),
                    target,
                    message
                );
            }
            Sink::Consoles {
                consoles,
                kmsg,
                kernel_echoes_below,
            } => {
                let line = Line {
                    level: record.level(),
                    target,
                    message: &record.args().to_string(),
                };
                emit(consoles, kmsg.as_mut(), *kernel_echoes_below, &line);
            }
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{}: {}", target, record.args());
            }
            Sink::Journal(journal) => journal.log(record),
        }
    }

    fn flush(&self) {}
}

/// Re-logs a line a service wrote to its stderr. A line that is not one of
/// our records (a panic message, say) is kept as a warning, never dropped.
pub fn relay_service_line(service: &str, line: &str) {
    let mut parts = line.splitn(3, '\t');
    let (level, target, message) = match (parts.next(), parts.next(), parts.next()) {
        (Some(level), Some(target), Some(message)) => match level.parse::<Level>() {
            Ok(level) => (level, target, message),
            Err(_) => (Level::Warn, service, line),
        },
        _ => (Level::Warn, service, line),
    };
    if level > log::max_level() {
        return;
    }
    let target = if target == service {
        service.to_string()
    } else {
        format!("{service}/{target}")
    };
    log::logger().log(
        &Record::builder()
            .level(level)
            .target(&target)
            .args(format_args!("{message}"))
            .build(),
    );
}

struct Line<'a> {
    level: Level,
    target: &'a str,
    message: &'a str,
}

fn kernel_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

fn emit(consoles: &mut [Console], kmsg: Option<&mut File>, kernel_echoes_below: u8, line: &Line) {
    let Line {
        level,
        target,
        message,
    } = *line;
    let text = format!("[{:>9.3}] {:<5} {}: {}", uptime(), level, target, message);
    let priority = kernel_priority(level);
    let kernel_prints_it = kmsg.is_some() && priority < kernel_echoes_below;
    if !kernel_prints_it {
        let off_screen = OFF_SCREEN.load(Ordering::Relaxed);
        for console in consoles.iter_mut().filter(|c| !(c.screen && off_screen)) {
            // Serial lines want CR LF; a write error (console gone) is not ours to fix.
            let _ = console.file.write_all(format!("{text}\r\n").as_bytes());
        }
    }
    if let Some(kmsg) = kmsg {
        let _ =
            kmsg.write_all(format!("<{priority}>nodeos: {level} {target}: {message}\n").as_bytes());
    }
    push_ring(text);
}

fn push_ring(line: String) {
    if let Ok(mut ring) = RING.lock() {
        if ring.len() == RING_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }
}

/// The most recent `max` lines of the ring, oldest first.
pub fn recent(max: usize) -> Vec<String> {
    RING.lock()
        .map(|ring| {
            ring.iter()
                .skip(ring.len().saturating_sub(max))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// `nodeos::init::mounts` → `mounts`: module paths are noise on a console.
fn short_target(target: &str) -> &str {
    let trimmed = target.strip_prefix("nodeos::").unwrap_or(target);
    trimmed.rsplit("::").next().unwrap_or(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shortened() {
        assert_eq!(short_target("nodeos::init::mounts"), "mounts");
        assert_eq!(short_target("mozim::dhcpv4"), "dhcpv4");
        assert_eq!(short_target("net"), "net");
    }

    #[test]
    fn ring_keeps_the_newest_lines() {
        for i in 0..(RING_LINES + 5) {
            push_ring(format!("line {i}"));
        }
        let recent = recent(3);
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[2], format!("line {}", RING_LINES + 4));
    }
}
