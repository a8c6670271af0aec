//! The maintenance console: a few commands typed on the serial line or the
//! screen of a node (there is no shell in the image). It only reads what PID 1
//! serves on its control socket and asks PID 1 to power off or reboot; it
//! never changes state itself. The installer takes the console over on the
//! live ISO later; on an installed node this is what an operator meets.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::init::shutdown::ShutdownKind;

use crate::status::{self, CONTROL_SOCKET};

const HELP: &str = "commands: status, logs [N], poweroff, reboot, help";

/// A line typed at the console, understood.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleCommand {
    Nothing,
    Help,
    Status,
    Logs(usize),
    Poweroff,
    Reboot,
    Unknown(String),
}

pub fn parse(line: &str) -> ConsoleCommand {
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else {
        return ConsoleCommand::Nothing;
    };
    let rest: Vec<&str> = words.collect();
    match (first, rest.as_slice()) {
        ("help" | "?", []) => ConsoleCommand::Help,
        ("status", []) => ConsoleCommand::Status,
        ("logs", []) => ConsoleCommand::Logs(50),
        ("logs", [n]) => match n.parse() {
            Ok(n) => ConsoleCommand::Logs(n),
            Err(_) => ConsoleCommand::Unknown(line.trim().to_string()),
        },
        ("poweroff", []) => ConsoleCommand::Poweroff,
        ("reboot", []) => ConsoleCommand::Reboot,
        _ => ConsoleCommand::Unknown(line.trim().to_string()),
    }
}

/// The text a command prints; poweroff and reboot also signal PID 1.
fn execute(command: ConsoleCommand) -> String {
    match command {
        ConsoleCommand::Nothing => String::new(),
        ConsoleCommand::Help => format!("{HELP}\n"),
        ConsoleCommand::Status => match status::fetch_status(CONTROL_SOCKET) {
            Ok(report) => report.render(),
            Err(e) => format!("status: {e}\n"),
        },
        ConsoleCommand::Logs(n) => match status::fetch_logs(CONTROL_SOCKET, n) {
            Ok(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
            Err(e) => format!("logs: {e}\n"),
        },
        ConsoleCommand::Poweroff => signal_init(ShutdownKind::Poweroff, "poweroff"),
        ConsoleCommand::Reboot => signal_init(ShutdownKind::Reboot, "reboot"),
        ConsoleCommand::Unknown(line) => format!("unknown command {line:?}; {HELP}\n"),
    }
}

fn signal_init(kind: ShutdownKind, what: &str) -> String {
    log::info!("{what} asked for on the console");
    match crate::init::shutdown::ask_pid1(kind) {
        Ok(()) => format!("{what} in progress\n"),
        Err(e) => format!("{what}: cannot signal PID 1: {e}\n"),
    }
}

/// The terminals behind the kernel's consoles: `tty0` means the screen's
/// foreground terminal, which reads from the keyboard as `tty1`.
pub fn console_ttys() -> Vec<String> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut ttys: Vec<String> = active
        .split_whitespace()
        .map(|t| {
            if t == "tty0" {
                "tty1".to_string()
            } else {
                t.to_string()
            }
        })
        .collect();
    ttys.dedup();
    ttys
}

pub fn run() -> anyhow::Result<()> {
    // Ready at once: the node works while the installer has the console.
    crate::supervisor::ready::report();
    wait_while_the_installer_has_the_console();
    let ttys = console_ttys();
    let mut readers = Vec::new();
    for tty in ttys {
        let path = Path::new("/dev").join(&tty);
        match (File::open(&path), File::options().write(true).open(&path)) {
            (Ok(input), Ok(output)) => {
                readers.push(std::thread::spawn(move || serve(input, output)));
            }
            (Err(e), _) | (_, Err(e)) => log::warn!("console {}: {e}", path.display()),
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    // No console to read (or all closed): stay up so the supervisor does not
    // restart us in a loop for a machine without a keyboard.
    loop {
        std::thread::park();
    }
}

fn wait_while_the_installer_has_the_console() {
    let held = Path::new(crate::diskinstall::boot::CONSOLE_HELD);
    if !held.exists() {
        return;
    }
    log::info!("waiting for the installer to give the console back");
    while held.exists() {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn serve(input: File, mut output: File) {
    let _ = output.write_all(format!("CloudOS console ready; {HELP}\n").as_bytes());
    let mut lines = BufReader::new(input).lines();
    while let Some(Ok(line)) = lines.next() {
        let answer = execute(parse(&line));
        if !answer.is_empty() {
            let _ = output.write_all(answer.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_understood() {
        let cases = [
            ("", ConsoleCommand::Nothing),
            ("   ", ConsoleCommand::Nothing),
            ("help", ConsoleCommand::Help),
            ("status", ConsoleCommand::Status),
            (" status \r", ConsoleCommand::Status),
            ("logs", ConsoleCommand::Logs(50)),
            ("logs 7", ConsoleCommand::Logs(7)),
            ("logs many", ConsoleCommand::Unknown("logs many".into())),
            ("poweroff", ConsoleCommand::Poweroff),
            ("reboot now", ConsoleCommand::Unknown("reboot now".into())),
            ("rm -rf /", ConsoleCommand::Unknown("rm -rf /".into())),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), expected, "{line:?}");
        }
    }

    #[test]
    fn an_unknown_command_lists_the_known_ones() {
        assert!(execute(ConsoleCommand::Unknown("ls".into())).contains("status, logs"));
    }
}
