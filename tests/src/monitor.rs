//! A client for QEMU's human monitor (HMP) on a unix socket.
//!
//! HMP is what a person would type (`system_powerdown`, `set_link n0 off`,
//! `info status`), which keeps tests readable; QMP's JSON handshake buys
//! nothing for these few commands. QEMU's readline echoes every keystroke with
//! cursor-movement escapes, so the reply is taken to be everything after the
//! first line end, up to the next `(qemu) ` prompt.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const PROMPT: &[u8] = b"(qemu) ";

/// How long one monitor command may take before it is considered hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to an HMP monitor socket (QEMU accepts one client at a time).
#[derive(Debug)]
pub(crate) struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects, retrying until QEMU has created the socket, and reads the banner.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> io::Result<Monitor> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut m = Monitor { stream };
        m.read_until_prompt()?;
        Ok(m)
    }

    /// Sends one command and returns its output (without echo and prompt).
    /// `quit` closes the connection; its (empty) reply is returned as such.
    pub(crate) fn command(&mut self, cmd: &str) -> io::Result<String> {
        self.stream.write_all(cmd.trim_end().as_bytes())?;
        self.stream.write_all(b"\n")?;
        let raw = self.read_until_prompt()?;
        // Line 1 is the echo (with escapes); the reply follows.
        let reply = match raw.windows(2).position(|w| w == b"\r\n") {
            Some(i) => &raw[i + 2..],
            None => &[][..],
        };
        let reply = reply.strip_suffix(PROMPT).unwrap_or(reply);
        Ok(String::from_utf8_lossy(reply)
            .replace("\r\n", "\n")
            .trim()
            .to_string())
    }

    /// Reads until the buffer ends with the prompt, or EOF (QEMU quit).
    fn read_until_prompt(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(buf);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(PROMPT) {
                return Ok(buf);
            }
        }
    }
}
