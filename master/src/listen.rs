//! The API's listening socket. `[::]` (the default) is one dual-stack socket, so the master
//! answers on IPv4 and IPv6 alike whatever the host's `bindv6only` says; on a kernel without
//! IPv6 it falls back to `0.0.0.0`. Peers reached over IPv4 show up as IPv4, never as
//! `::ffff:a.b.c.d` (see [`canonical_peer`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel keeps for us (the connection caps apply after accept).
const BACKLOG: u32 = 1024;

/// Binds `addr`; `[::]:PORT` as a dual-stack socket.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return TcpListener::bind(addr).await;
    }
    match dual_stack(addr) {
        Ok(listener) => Ok(listener),
        Err(e) if e.raw_os_error() == Some(libc_eafnosupport()) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            log::info!("IPv6 is off in this kernel: listening on {v4} only");
            TcpListener::bind(v4).await
        }
        Err(e) => Err(e),
    }
}

fn dual_stack(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v6()?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &false)
        .map_err(io::Error::from)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn libc_eafnosupport() -> i32 {
    nix::errno::Errno::EAFNOSUPPORT as i32
}

/// The peer as the rest of the master sees it: an IPv4 client of the dual-stack socket as
/// its IPv4 address, so that per-address limits and the node list name it as it is (and an
/// `::ffff:0:0/96` client is not lumped with every other IPv4 one into one IPv6 /64).
pub fn canonical_peer(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_socket_answers_ipv4_and_ipv6_and_ipv4_peers_look_like_ipv4() {
        let listener = bind("[::]:0".parse().expect("addr")).await.expect("bind");
        let port = listener.local_addr().expect("local").port();
        for dial in ["127.0.0.1", "::1"] {
            let ip: IpAddr = dial.parse().expect("ip");
            let client = tokio::net::TcpStream::connect((ip, port));
            let (accepted, client) = tokio::join!(listener.accept(), client);
            let (_, peer) = accepted.expect("accept");
            let _client = client.expect("connect");
            assert_eq!(canonical_peer(peer).ip(), ip, "{dial} seen as {peer}");
        }
    }

    #[test]
    fn ipv6_peers_stay_as_they_are() {
        let v6: SocketAddr = "[fd77::5]:40000".parse().expect("addr");
        assert_eq!(canonical_peer(v6), v6);
        let mapped: SocketAddr = "[::ffff:10.0.0.4]:40000".parse().expect("addr");
        assert_eq!(
            canonical_peer(mapped),
            "10.0.0.4:40000".parse().expect("addr")
        );
    }
}
