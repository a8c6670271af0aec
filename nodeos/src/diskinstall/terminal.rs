//! Which terminal the wizard runs on. The live system's kernel writes to the screen and
//! the serial line alike (`console=tty0 console=ttyS0`), but a dialog can only be answered
//! on one of them: the wizard asks, on every console terminal, for Enter, and takes the
//! first where someone presses it, as a person at the screen or at the serial line would
//! expect. With a single console it starts there at once.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::mpsc;

use anyhow::Context as _;

/// What each console terminal shows while no one has chosen it yet.
pub const PRESS_ENTER: &str = "Press Enter to start the CloudOS installer on this console.";

/// Makes this process's standard input, output and error the terminal the wizard runs
/// on. Returns its name (`ttyS0`) for the log.
pub fn take_wizard_terminal() -> anyhow::Result<String> {
    let ttys = crate::services::console::console_ttys();
    let chosen = match ttys.as_slice() {
        // PID 1 already gave us /dev/console: that one terminal.
        [] | [_] => {
            let only = ttys.first().cloned().unwrap_or_else(|| "console".into());
            take_screen_if_it_is(&only, &mut std::io::stderr());
            return Ok(only);
        }
        several => first_to_press_enter(several)?,
    };
    let path = Path::new("/dev").join(&chosen);
    let tty = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    for dup in [
        nix::unistd::dup2_stdin::<&File>,
        nix::unistd::dup2_stdout::<&File>,
        nix::unistd::dup2_stderr::<&File>,
    ] {
        dup(&tty)
            .with_context(|| format!("cannot make {} the wizard's terminal", path.display()))?;
    }
    take_screen_if_it_is(&chosen, &mut std::io::stderr());
    Ok(chosen)
}

/// The wizard on the screen starts on a cleared one, and its own log lines go to the
/// serial line and the kernel log instead (see `crate::screen`).
fn take_screen_if_it_is(tty: &str, out: &mut impl Write) {
    if crate::screen::is_screen(tty) {
        crate::logging::init_off_screen(false);
        crate::screen::clear_if_screen(tty, out);
    }
}

/// Asks on each terminal and waits for the first Enter. The other terminals' readers stay
/// blocked until this process ends, which is harmless: nothing else reads them meanwhile
/// (the maintenance console waits for the installer).
fn first_to_press_enter(ttys: &[String]) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    for name in ttys {
        let path = Path::new("/dev").join(name);
        let (Ok(input), Ok(mut output)) =
            (File::open(&path), File::options().write(true).open(&path))
        else {
            log::warn!("console {} cannot be opened", path.display());
            continue;
        };
        // On the screen, the question alone on it (log lines are kept off meanwhile).
        crate::screen::clear_if_screen(name, &mut output);
        let _ = writeln!(output, "\n{PRESS_ENTER}");
        let tx = tx.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            if BufReader::new(input)
                .read_line(&mut line)
                .is_ok_and(|n| n > 0)
            {
                let _ = tx.send(name);
            }
        });
    }
    drop(tx);
    rx.recv()
        .context("no console terminal can be read: nowhere to run the wizard")
}
