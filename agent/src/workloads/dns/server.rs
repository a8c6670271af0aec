//! The sockets of the node's DNS: UDP and TCP on port 53 of the bridge's gateway address,
//! and the forwarding of other names to the resolvers in the node's `resolv.conf` (read
//! at each forward: DHCP may change them). A forwarded query goes out as it came and its
//! answer comes back as it was given; the node keeps no cache.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::{answer, failure, Names, Reply};

/// DNS's port.
const PORT: u16 = 53;
/// How long one resolver has to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay silent between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Forwards in flight over UDP, and TCP connections, at most: a container that floods
/// the node's DNS gets refused, the node's memory does not grow.
const MAX_FORWARDS: usize = 128;
const MAX_TCP: usize = 64;
/// The largest UDP message taken (EDNS's usual limit).
const UDP_MAX: usize = 4096;
/// At most this many of resolv.conf's resolvers are asked, as libc does.
const MAX_RESOLVERS: usize = 3;

/// The node's DNS, serving until dropped.
pub struct DnsServer {
    address: Ipv4Addr,
    names: Arc<RwLock<Names>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Listens on `address`:53 (an address of this node: the bridge's), answering from
    /// `names` and forwarding to the resolvers listed in `resolv`.
    pub async fn start(
        address: Ipv4Addr,
        names: Names,
        resolv: PathBuf,
    ) -> std::io::Result<DnsServer> {
        let udp = Arc::new(UdpSocket::bind((address, PORT)).await?);
        let tcp = TcpListener::bind((address, PORT)).await?;
        let names = Arc::new(RwLock::new(names));
        let resolv = Arc::new(Upstream {
            resolv,
            own: address,
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&names), Arc::clone(&resolv))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&names), resolv)),
        ];
        log::info!("DNS for containers on {address}:{PORT}");
        Ok(DnsServer {
            address,
            names,
            tasks,
        })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Answers from `names` from now on.
    pub fn set_names(&self, names: Names) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where other names go.
struct Upstream {
    resolv: PathBuf,
    /// This server's own address, never asked (a resolv.conf naming it would loop).
    own: Ipv4Addr,
}

impl Upstream {
    fn resolvers(&self) -> Vec<SocketAddr> {
        resolvers(&self.resolv)
            .into_iter()
            .filter(|ip| *ip != IpAddr::V4(self.own))
            .take(MAX_RESOLVERS)
            .map(|ip| SocketAddr::new(ip, PORT))
            .collect()
    }

    /// The first answer of a resolver to `query` over UDP.
    async fn ask_udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.ask(query, "udp", udp_exchange).await
    }

    /// The first answer of a resolver to `query` over TCP.
    async fn ask_tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.ask(query, "tcp", tcp_exchange).await
    }

    /// Asks each resolver in turn with `exchange`, each for [`UPSTREAM_TIMEOUT`].
    async fn ask<'q, F, Fut>(&self, query: &'q [u8], how: &str, exchange: F) -> Option<Vec<u8>>
    where
        F: Fn(SocketAddr, &'q [u8]) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Vec<u8>>>,
    {
        for resolver in self.resolvers() {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(resolver, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => log::debug!("DNS resolver {resolver} ({how}): {e}"),
                Err(_) => log::debug!("DNS resolver {resolver} ({how}): no answer"),
            }
        }
        None
    }
}

/// The `nameserver` lines of a resolv.conf; none when it cannot be read.
pub(super) fn resolvers(path: &Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
        .collect()
}

async fn udp_exchange(resolver: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = if resolver.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(resolver).await?;
    socket.send(query).await?;
    let mut buf = vec![0; UDP_MAX];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this query (its id): a stray datagram is not it.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(resolver: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(resolver).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

/// A TCP DNS message: two bytes of length, then the message.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// What to do with `query`, by the names as they are now (the lock is held only for
/// the answer, never across a wait).
fn reply_to(query: &[u8], names: &RwLock<Names>) -> Reply {
    answer(query, &names.read().unwrap_or_else(|e| e.into_inner()))
}

async fn serve_udp(socket: Arc<UdpSocket>, names: Arc<RwLock<Names>>, upstream: Arc<Upstream>) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0; UDP_MAX];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                log::warn!("DNS: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        match reply_to(&query, &names) {
            Reply::Answer(bytes) => {
                let _ = socket.send_to(&bytes, from).await;
            }
            Reply::Ignore => {}
            Reply::Forward => {
                let Ok(permit) = Arc::clone(&forwards).try_acquire_owned() else {
                    continue;
                };
                let (socket, upstream) = (Arc::clone(&socket), Arc::clone(&upstream));
                tokio::spawn(async move {
                    let bytes = match upstream.ask_udp(&query).await {
                        Some(bytes) => Some(bytes),
                        None => failure(&query),
                    };
                    if let Some(bytes) = bytes {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, names: Arc<RwLock<Names>>, upstream: Arc<Upstream>) {
    let connections = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            continue;
        };
        let (names, upstream) = (Arc::clone(&names), Arc::clone(&upstream));
        tokio::spawn(async move {
            serve_connection(stream, &names, &upstream).await;
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, names: &RwLock<Names>, upstream: &Upstream) {
    loop {
        let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else {
            return;
        };
        let bytes = match reply_to(&query, names) {
            Reply::Answer(bytes) => bytes,
            Reply::Ignore => return,
            Reply::Forward => match upstream.ask_tcp(&query).await.or_else(|| failure(&query)) {
                Some(bytes) => bytes,
                None => return,
            },
        };
        if write_framed(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_are_the_nameserver_lines_that_hold_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# by DHCP\nsearch lan\nnameserver 192.0.2.53\nnameserver   fd00::53\nnameserver bogus\noptions ndots:2\n",
        )
        .unwrap();
        assert_eq!(
            resolvers(&path),
            [
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "fd00::53".parse().unwrap()
            ]
        );
        assert!(resolvers(&dir.path().join("missing")).is_empty());
    }
}
