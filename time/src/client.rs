//! Asks one SNTP server for the time: one request, one answer, checked (RFC 4330 §5) before
//! its offset is believed. Changes nothing; the caller decides what to do with the offset.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;

use crate::wire::{NtpTimestamp, Packet, Sample, LEAP_UNSYNCHRONISED, MODE_SERVER};

/// Why a server gave no usable time.
#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    #[error("cannot resolve {server}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("no answer from {server} within {}ms", timeout.as_millis())]
    Timeout { server: String, timeout: Duration },
    #[error("{server}: {source}")]
    Io {
        server: String,
        source: std::io::Error,
    },
    #[error("{server} answered but is not usable: {why}")]
    Unusable { server: String, why: String },
}

/// Asks `server` (`host:port`) once, within `timeout`. Answers from other addresses, and
/// answers that do not echo our request, are ignored while waiting.
pub async fn query(server: &str, timeout: Duration) -> Result<Sample, SntpError> {
    let addr = resolve(server).await?;
    let io = |source| SntpError::Io {
        server: server.to_owned(),
        source,
    };
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(addr).await.map_err(io)?;
    let t1 = NtpTimestamp::from_system(SystemTime::now());
    socket
        .send(&Packet::request(t1).encode())
        .await
        .map_err(io)?;
    let wait = async {
        let mut buf = [0u8; 512];
        loop {
            let n = socket.recv(&mut buf).await?;
            let t4 = NtpTimestamp::from_system(SystemTime::now());
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            match check_answer(datagram, t1) {
                Ok(reply) => {
                    return Ok(Ok(Sample::from_times(
                        t1,
                        reply.receive,
                        reply.transmit,
                        t4,
                        reply.stratum,
                    )))
                }
                // Not our answer (a late one to an earlier request): keep waiting.
                Err(Refusal::NotOurs) => continue,
                Err(Refusal::Unusable(why)) => return Ok(Err(why)),
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => Err(SntpError::Timeout {
            server: server.to_owned(),
            timeout,
        }),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(Err(why))) => Err(SntpError::Unusable {
            server: server.to_owned(),
            why,
        }),
        Ok(Ok(Ok(sample))) => Ok(sample),
    }
}

async fn resolve(server: &str) -> Result<SocketAddr, SntpError> {
    let err = |reason: String| SntpError::Resolve {
        server: server.to_owned(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no address".to_owned()))
}

enum Refusal {
    NotOurs,
    Unusable(String),
}

/// RFC 4330 §5's checks on a server's answer to our request sent at `sent`.
fn check_answer(datagram: &[u8], sent: NtpTimestamp) -> Result<Packet, Refusal> {
    let reply = Packet::decode(datagram).map_err(|_| Refusal::NotOurs)?;
    if reply.mode != MODE_SERVER || reply.origin != sent {
        return Err(Refusal::NotOurs);
    }
    if reply.stratum == 0 {
        let code = String::from_utf8_lossy(&reply.reference_id).into_owned();
        return Err(Refusal::Unusable(format!("kiss-o'-death {code:?}")));
    }
    if reply.stratum > 15 || reply.leap == LEAP_UNSYNCHRONISED {
        return Err(Refusal::Unusable("its clock is not synchronised".into()));
    }
    if !(1..=4).contains(&reply.version) {
        return Err(Refusal::Unusable(format!("version {}", reply.version)));
    }
    if reply.transmit == NtpTimestamp::ZERO {
        return Err(Refusal::Unusable("no transmit time".into()));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sent: NtpTimestamp) -> Packet {
        Packet {
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            origin: sent,
            receive: NtpTimestamp(5 << 32),
            transmit: NtpTimestamp(5 << 32),
            ..Packet::default()
        }
    }

    #[test]
    fn answers_are_checked_before_they_are_believed() {
        let sent = NtpTimestamp(77 << 32);
        assert!(check_answer(&answer(sent).encode(), sent).is_ok());
        let cases: [(&str, Packet, bool); 6] = [
            ("another request's answer", answer(NtpTimestamp(1)), false),
            (
                "a client packet",
                Packet {
                    mode: 3,
                    ..answer(sent)
                },
                false,
            ),
            (
                "kiss-o'-death",
                Packet {
                    stratum: 0,
                    reference_id: *b"RATE",
                    ..answer(sent)
                },
                true,
            ),
            (
                "unsynchronised",
                Packet {
                    leap: 3,
                    ..answer(sent)
                },
                true,
            ),
            (
                "stratum 16",
                Packet {
                    stratum: 16,
                    ..answer(sent)
                },
                true,
            ),
            (
                "no transmit time",
                Packet {
                    transmit: NtpTimestamp::ZERO,
                    ..answer(sent)
                },
                true,
            ),
        ];
        for (what, packet, unusable) in cases {
            match check_answer(&packet.encode(), sent) {
                Ok(_) => panic!("{what}: accepted"),
                Err(Refusal::NotOurs) => assert!(!unusable, "{what}: ignored, not refused"),
                Err(Refusal::Unusable(why)) => assert!(unusable, "{what}: refused ({why})"),
            }
        }
        assert!(matches!(
            check_answer(&[0u8; 20], sent),
            Err(Refusal::NotOurs)
        ));
    }
}
