//! A packet capture on a link of a test's namespace, as `tcpdump -i LINK` would take it:
//! an `AF_PACKET` socket opened by a thread that entered the namespace, keeping every frame
//! until stopped. For tests that must show what crosses a wire (the mesh carries only
//! WireGuard between nodes), without a capture tool on the machine.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames kept at most: enough for a test's exchange, bounded if something floods.
const MAX_FRAMES: usize = 200_000;

/// A running capture; [`Capture::stop`] ends it and hands over the frames.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Vec<Vec<u8>>>>,
}

impl Capture {
    /// Starts capturing on `link` in the namespace `netns` (a name under `/run/netns`).
    pub fn start(netns: &str, link: &str) -> std::io::Result<Capture> {
        let ns = File::open(format!("/run/netns/{netns}"))?;
        let link = std::ffi::CString::new(link).map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let opened = open(&ns, &link);
            let socket = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.kind()));
                    return Err(e);
                }
            };
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: `buf` is valid for its length; the socket is ours.
                let n = unsafe {
                    libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n > 0 && frames.len() < MAX_FRAMES {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            Ok(frames)
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Capture { stop, thread }),
            Ok(Err(kind)) => Err(std::io::Error::new(kind, "cannot open the capture")),
            Err(_) => Err(std::io::Error::other("the capture thread died")),
        }
    }

    /// Ends the capture; every frame seen.
    pub fn stop(self) -> std::io::Result<Vec<Vec<u8>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("the capture thread panicked"))?
    }
}

/// On this thread: enter the namespace, open a packet socket bound to the link, with a
/// short receive timeout so that a stop is seen.
fn open(ns: &File, link: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let all = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(link.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are what bind needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all as u16;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: a timeval of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(socket)
}

/// An IPv4 packet in an Ethernet frame: `(source, destination, protocol, payload)`.
pub fn ipv4(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let header = usize::from(ip[0] & 0x0f) * 4;
    if ip.len() < header || header < 20 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((src, dst, ip[9], &ip[header..]))
}

/// The UDP ports of an IPv4 payload of protocol 17: `(source, destination)`.
pub fn udp_ports(payload: &[u8]) -> Option<(u16, u16)> {
    (payload.len() >= 8).then(|| {
        (
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_as_ipv4_and_udp() {
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend([192, 0, 2, 1, 192, 0, 2, 2]);
        ip.extend([0xca, 0x6c, 0xca, 0x6c, 0, 8, 0, 0]);
        frame.extend(ip);
        let (src, dst, proto, payload) = ipv4(&frame).expect("ipv4");
        assert_eq!(
            (src, dst, proto),
            (
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                17
            )
        );
        assert_eq!(udp_ports(payload), Some((51820, 51820)));
        frame[12] = 0x86;
        assert!(ipv4(&frame).is_none(), "IPv6 is not IPv4");
    }
}
