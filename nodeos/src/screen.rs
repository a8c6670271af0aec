//! The screen: the Linux virtual terminals (`tty1`…) behind the `tty0` console, as opposed
//! to serial lines. While the installer's wizard has the console (see
//! `diskinstall::boot::hold_console`) the screen belongs to the wizard: the kernel's
//! messages go to another virtual terminal ([`KERNEL_MESSAGES_VT`], Alt-F2 shows them),
//! PID 1's log lines stay off it (`logging::keep_off_screen`), and the wizard starts on a
//! cleared screen. The serial line and the log keep every line.
//!
//! Owns which terminal is a screen, the kernel-message redirect and the clearing; must
//! not decide when the wizard has the console (that is `diskinstall::boot`'s).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Where the kernel writes its messages while the wizard has the screen: a terminal a
/// person can switch to (Alt-F2) and back from (Alt-F1).
pub const KERNEL_MESSAGES_VT: u8 = 2;

/// `TIOCL_SETKMSGREDIRECT` of linux/tiocl.h: the subcode of `TIOCLINUX` that sends the
/// kernel's console messages to one virtual terminal (0: the one in front, the default).
const TIOCL_SETKMSGREDIRECT: u8 = 11;

/// What clears a Linux console and homes its cursor (also what `clear` sends for
/// `TERM=linux`).
pub const CLEAR: &[u8] = b"\x1b[H\x1b[2J";

/// Whether a console terminal's name (`tty0`, `tty1`, `ttyS0`) is the screen.
pub fn is_screen(tty: &str) -> bool {
    tty.strip_prefix("tty")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Clears the screen `tty` is on; nothing for a serial line, whose scrollback is the
/// record a person (or a test) reads.
pub fn clear_if_screen(tty: &str, out: &mut impl Write) {
    if is_screen(tty) {
        let _ = out.write_all(CLEAR).and_then(|()| out.flush());
    }
}

/// Gives the screen to the wizard (PID 1, when the wizard takes the console): kernel
/// messages to [`KERNEL_MESSAGES_VT`], PID 1's log lines off the screen.
pub fn hold() {
    crate::logging::keep_off_screen(true);
    if let Err(e) = redirect_kernel_messages(KERNEL_MESSAGES_VT) {
        log::debug!("kernel messages stay on the screen: {e}");
    }
}

/// Gives the screen back to the log (PID 1, when the wizard has ended).
pub fn release() {
    crate::logging::keep_off_screen(false);
    if let Err(e) = redirect_kernel_messages(0) {
        log::debug!("cannot send kernel messages back to the screen: {e}");
    }
}

/// Sends the kernel's messages for the screen to virtual terminal `vt` (0: the one in
/// front). The kernel redirects only to a terminal that exists, and opening it makes it.
fn redirect_kernel_messages(vt: u8) -> std::io::Result<()> {
    let tty = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/dev/tty{}", vt.max(1)))?;
    let mut arg = [TIOCL_SETKMSGREDIRECT, vt];
    // SAFETY: the fd is an open terminal; TIOCLINUX reads the two bytes we own.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCLINUX as _, arg.as_mut_ptr()) };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_terminals_are_the_screen_serial_lines_are_not() {
        for tty in ["tty0", "tty1", "tty12"] {
            assert!(is_screen(tty), "{tty}");
        }
        for tty in ["ttyS0", "ttyAMA0", "ttyS1", "tty", "console", "hvc0"] {
            assert!(!is_screen(tty), "{tty}");
        }
    }

    #[test]
    fn only_the_screen_is_cleared() {
        let mut out = Vec::new();
        clear_if_screen("ttyS0", &mut out);
        assert!(out.is_empty());
        clear_if_screen("tty1", &mut out);
        assert_eq!(out, CLEAR);
    }
}
