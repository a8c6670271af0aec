//! The SNTP server a master runs on UDP 123, so that its nodes (and anything else on a LAN
//! without internet) agree on the time with it.
//!
//! It answers only well-formed client requests (a full header, version 1 to 4, mode 3) and
//! its answer is one 48-byte header, never longer than the request: it cannot be used to
//! amplify a spoofed flood. It keeps no state per client. It serves its own clock at a
//! fixed stratum: a master whose clock is itself kept by an upstream server is no worse
//! for it, and one on an isolated LAN is the reference its nodes follow.

use std::net::{SocketAddr, UdpSocket};
use std::time::SystemTime;

use crate::wire::{NtpTimestamp, Packet, MODE_CLIENT, MODE_SERVER, PACKET_LEN};

/// The stratum a master announces: a local clock, as ntpd's and chrony's `local stratum
/// 10`, low enough for any client to accept, high enough to lose to a real reference.
pub const LOCAL_STRATUM: u8 = 10;
/// 2^-20 s, about a microsecond: what the kernel's clock reads to.
const PRECISION: i8 = -20;

/// The answer to `request`, received at `received`, sent at `now`; `None` for anything
/// that is not a client's request.
pub fn answer(request: &[u8], received: SystemTime, now: SystemTime) -> Option<[u8; PACKET_LEN]> {
    let asked = Packet::decode(request).ok()?;
    if asked.mode != MODE_CLIENT || !(1..=4).contains(&asked.version) {
        return None;
    }
    let reply = Packet {
        leap: 0,
        version: asked.version,
        mode: MODE_SERVER,
        stratum: LOCAL_STRATUM,
        poll: asked.poll,
        precision: PRECISION,
        root_delay: 0,
        root_dispersion: 0,
        reference_id: *b"LOCL",
        reference: NtpTimestamp::from_system(received),
        origin: asked.transmit,
        receive: NtpTimestamp::from_system(received),
        transmit: NtpTimestamp::from_system(now),
    };
    Some(reply.encode())
}

/// Serves on `socket` until it fails (never, in practice). Blocking: run it on its own
/// thread.
pub fn serve(socket: UdpSocket) -> std::io::Error {
    let mut buf = [0u8; 1024];
    loop {
        let (n, from): (usize, SocketAddr) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        let received = SystemTime::now();
        let Some(request) = buf.get(..n) else {
            continue;
        };
        if let Some(reply) = answer(request, received, SystemTime::now()) {
            if let Err(e) = socket.send_to(&reply, from) {
                log::debug!("sntp: cannot answer {from}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_client_requests_get_an_answer_and_it_is_never_longer() {
        let now = SystemTime::now();
        let request = Packet::request(NtpTimestamp(42)).encode();
        let reply = answer(&request, now, now).expect("a client request is answered");
        assert_eq!(reply.len(), request.len());
        let reply = Packet::decode(&reply).expect("decodes");
        assert_eq!((reply.mode, reply.version), (MODE_SERVER, 4));
        assert_eq!(
            reply.origin,
            NtpTimestamp(42),
            "echoes the client's transmit"
        );
        assert_eq!(reply.stratum, LOCAL_STRATUM);
        // What is not a client request gets nothing: servers' answers (no loops between
        // two servers), control (6) and private (7, the old monlist) modes, broadcasts,
        // version 0 or 5+, and anything shorter than a header.
        for (what, bytes) in [
            (
                "a server answer",
                Packet {
                    mode: 4,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            (
                "mode 6",
                Packet {
                    mode: 6,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            (
                "mode 7",
                Packet {
                    mode: 7,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            (
                "broadcast",
                Packet {
                    mode: 5,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            (
                "version 0",
                Packet {
                    version: 0,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            (
                "version 5",
                Packet {
                    version: 5,
                    ..Packet::request(NtpTimestamp(1))
                }
                .encode()
                .to_vec(),
            ),
            ("a short datagram", request[..12].to_vec()),
            ("nothing", Vec::new()),
        ] {
            assert!(answer(&bytes, now, now).is_none(), "{what} was answered");
        }
        // A request with extension fields is answered with the bare header: smaller.
        let mut long = request.to_vec();
        long.extend_from_slice(&[0u8; 64]);
        assert_eq!(answer(&long, now, now).map(|r| r.len()), Some(PACKET_LEN));
    }

    /// The client against this server over real UDP on loopback: the offset it measures is
    /// the server's own (zero here: one clock), and a server that only sends garbage gives
    /// a timeout, not a time.
    #[tokio::test(flavor = "current_thread")]
    async fn our_client_gets_the_time_from_our_server_on_loopback() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        std::thread::spawn(move || serve(socket));
        let sample = crate::client::query(&addr.to_string(), Duration::from_secs(2))
            .await
            .expect("a time from our server");
        assert!(sample.offset_nanos.abs() < 50_000_000, "{sample:?}");
        assert!(sample.delay() < Duration::from_millis(200), "{sample:?}");
        assert_eq!(sample.stratum, LOCAL_STRATUM);

        // A "server" that answers every datagram with a client request of its own.
        let rogue = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rogue_addr = rogue.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = rogue.recv_from(&mut buf) {
                let _ = rogue.send_to(&Packet::request(NtpTimestamp(7)).encode(), from);
            }
        });
        let err = crate::client::query(&rogue_addr.to_string(), Duration::from_millis(300))
            .await
            .expect_err("no time from a server that does not answer our request");
        assert!(
            matches!(err, crate::client::SntpError::Timeout { .. }),
            "{err}"
        );
    }
}
