//! Showing the bootstrap admin token to the person at the master, and to no one else.
//!
//! Under PID 1 the log goes to the consoles *and* to `/dev/kmsg` and the ring that `logs`
//! serves over the network-facing status socket, so the token must not go through the
//! `log` crate: it is written straight to the console devices. On a host it goes to stdout
//! (the log is on stderr).

use std::fs::File;
use std::io::Write;

use cloudos_cluster::Token;

use super::bootstrap::{BOOTSTRAP_TTL, BOOTSTRAP_USES};
use super::state::MasterState;

/// Where the bootstrap token is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutput {
    /// `nodeos master` on a host.
    Stdout,
    /// The master service under PID 1: the active consoles (serial and screen).
    Consoles,
    /// A master under systemd (cloud install): a file only root can read, never the
    /// journal; the installer shows it once.
    File,
}

/// Where [`TokenOutput::File`] puts the token, below the data directory.
pub fn token_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("master").join("admin-token")
}

/// The lines shown; the token follows `admin token: ` and ends at whitespace.
pub fn bootstrap_lines(cluster: &str, token: &Token) -> Vec<String> {
    vec![
        format!(
            "cloudos master: cluster {cluster:?}, CA pin {}",
            token.pin()
        ),
        format!(
            "cloudos master: admin token: {token} (role admin, valid {}h, {BOOTSTRAP_USES} use)",
            BOOTSTRAP_TTL.whole_hours()
        ),
    ]
}

pub fn show_bootstrap_token(output: TokenOutput, state: &MasterState, token: &Token) {
    let lines = bootstrap_lines(&state.cluster_name, token);
    match output {
        TokenOutput::Stdout => {
            let mut out = std::io::stdout().lock();
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
        TokenOutput::Consoles => {
            let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            let mut shown = 0;
            for mut console in console_devices() {
                if console.write_all(text.as_bytes()).is_ok() {
                    shown += 1;
                }
            }
            if shown == 0 {
                log::error!("no console could be opened to show the admin token; restart the master with a console attached");
            }
        }
        TokenOutput::File => {
            let path = token_file(&state.config.data_dir);
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            match cloudos_cluster::files::write_private(&path, text.as_bytes()) {
                Ok(()) => log::info!(
                    "the admin token is in {} (root only; one use)",
                    path.display()
                ),
                Err(e) => log::error!("cannot write the admin token to {}: {e}", path.display()),
            }
        }
    }
}

/// The devices named in `/sys/class/tty/console/active` (`tty0 ttyS0`), else `/dev/console`.
fn console_devices() -> Vec<File> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let named: Vec<File> = active
        .split_whitespace()
        .filter_map(|tty| File::options().write(true).open(format!("/dev/{tty}")).ok())
        .collect();
    if !named.is_empty() {
        return named;
    }
    File::options()
        .write(true)
        .open("/dev/console")
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::CaPin;

    #[test]
    fn lines_carry_token_and_pin() {
        let pin = CaPin::from_hex(&"ab".repeat(32)).expect("pin");
        let token = Token::generate(pin).expect("token");
        let lines = bootstrap_lines("lab", &token);
        assert!(lines[0].contains(&pin.to_string()));
        let shown = lines[1]
            .split("admin token: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("token after the label");
        assert_eq!(shown.parse::<Token>().ok(), Some(token));
    }
}
