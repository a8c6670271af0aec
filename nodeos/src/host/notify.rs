//! `sd_notify(3)` without libsystemd: one datagram to `$NOTIFY_SOCKET`, which systemd sets
//! for `Type=notify` units. Outside systemd it does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells systemd the service is up (`READY=1`), with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")));
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send("STOPPING=1");
}

fn send(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = socket.to_string_lossy().into_owned();
    let result = address(&socket).and_then(|addr| {
        let datagram = UnixDatagram::unbound()?;
        datagram.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = result {
        log::warn!("cannot notify systemd at {socket}: {e}");
    }
}

/// A path, or `@name` for an abstract socket.
fn address(socket: &str) -> std::io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(socket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = address(path.to_str().unwrap()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
        assert!(address("@cloudos-test").is_ok());
    }
}
