//! What the packet tests share: TCP servers and callers in namespaces (threads that enter
//! them, no program), links brought up and addressed, and namespaces let go when a test
//! ends, also when an assertion failed.
#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cloudos_containernet::bridge::required_index;
use cloudos_containernet::{netns, NetError};
use ipnet::Ipv4Net;
use nix::sched::{setns, CloneFlags};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

/// How long a connection may take to open and answer; a refused one fails at once.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// How long to wait for a connection that should never open (its packets are dropped):
/// between namespaces of one machine an open one takes well under a millisecond.
pub const NO_ANSWER: Duration = Duration::from_secs(1);

/// A TCP server on `port` in a namespace: tells each caller the address it sees the
/// caller from, and hangs up.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(netns: &Path, port: u16) -> Server {
        Server::start_at(netns, (Ipv4Addr::UNSPECIFIED, port).into())
    }

    /// The same on `address`: `[::]` takes IPv4 too (as the master's API listens), and the
    /// callers it tells are IPv4's as they are.
    pub fn start_at(netns: &Path, address: SocketAddr) -> Server {
        Server::serve_at(netns, address, |mut stream, peer| {
            let _ = stream.write_all(peer.ip().to_canonical().to_string().as_bytes());
        })
    }

    /// A server on `port` in a namespace that hands each connection to `answer`.
    pub fn serve(
        netns: &Path,
        port: u16,
        answer: impl Fn(TcpStream, SocketAddr) + Send + 'static,
    ) -> Server {
        Server::serve_at(netns, (Ipv4Addr::UNSPECIFIED, port).into(), answer)
    }

    fn serve_at(
        netns: &Path,
        address: SocketAddr,
        answer: impl Fn(TcpStream, SocketAddr) + Send + 'static,
    ) -> Server {
        let ns = File::open(netns).expect("the namespace file");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready, listening) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let listener = TcpListener::bind(address).expect("listening");
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_read_timeout(Some(PATIENCE)).unwrap();
                        answer(stream, peer)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accepting: {e}"),
                }
            }
        });
        listening.recv().expect("the server listens");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `work` on a thread in the namespace at `from` (None: the calling thread's).
pub fn from<T: Send + 'static>(
    from: Option<&Path>,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let ns = from.map(|p| File::open(p).expect("the namespace file"));
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
        }
        work()
    })
    .join()
    .expect("the caller's thread")
}

/// A TCP connection to `to` from the namespace at `from` (None: the calling thread's):
/// the address the server saw it from, or why it did not open.
pub fn call(from: Option<&Path>, to: Ipv4Addr, port: u16) -> std::io::Result<IpAddr> {
    call_within(from, to, port, PATIENCE)
}

/// A call that must open within `patience`, as [`call`].
pub fn call_within(
    from: Option<&Path>,
    to: Ipv4Addr,
    port: u16,
    patience: Duration,
) -> std::io::Result<IpAddr> {
    self::from(from, move || {
        let to = SocketAddr::V4(SocketAddrV4::new(to, port));
        let mut stream = TcpStream::connect_timeout(&to, patience)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        seen.parse()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{seen:?}: {e}")))
    })
}

/// The address the server at `to` saw a call from `from` come from; the call must open.
pub fn seen(from: Option<&Path>, to: Ipv4Addr, port: u16) -> IpAddr {
    call(from, to, port).unwrap_or_else(|e| panic!("{from:?} calling {to}:{port}: {e}"))
}

pub fn refused(result: std::io::Result<IpAddr>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// Asserts that a call from `from` to `to` goes unanswered for [`NO_ANSWER`]: dropped on
/// the way. Opening, a refusal or any other failure is not that; `what` says why it
/// should be.
pub fn assert_unanswered(from: Option<&Path>, to: Ipv4Addr, port: u16, what: &str) {
    match call_within(from, to, port, NO_ANSWER) {
        Err(e) if e.kind() == ErrorKind::TimedOut => {}
        other => panic!("{what}: {from:?} calling {to}:{port}: {other:?}, not unanswered"),
    }
}

pub async fn up(handle: &Handle, index: u32) -> Result<(), NetError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("bringing link {index} up: {e}")))
}

pub async fn address(handle: &Handle, index: u32, net: &str) -> Result<(), NetError> {
    let net: Ipv4Net = net.parse().unwrap();
    handle
        .address()
        .add(index, IpAddr::V4(net.addr()), net.prefix_len())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("adding {net}: {e}")))
}

/// A veth pair, `near` here and `far` moved into the namespace at `ns`: a wire between
/// two namespaces (a LAN).
pub async fn veth_to(handle: &Handle, near: &str, far: &str, ns: &Path) -> Result<(), NetError> {
    handle
        .link()
        .add(LinkVeth::new(near, far).build())
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("adding the veth pair {near}: {e}")))?;
    let index = required_index(handle, far).await?;
    let ns = File::open(ns).unwrap();
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetError::Thread(format!("moving {far} into its namespace: {e}")))
}

/// Lets the namespaces at these paths go when dropped, also when an assertion failed
/// (their links go with them); a namespace a thread plays ends with its thread.
pub struct Namespaces(pub Vec<PathBuf>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = netns::remove(path);
        }
    }
}
