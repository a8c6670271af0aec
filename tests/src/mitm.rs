//! A man in the middle of the cloud install, for the tests that attack `install.sh`: a proxy
//! in front of a real master, on the path between the installing host and it, with a CA of
//! its own (made with the cluster's own PKI, so it looks like any cluster's CA).
//!
//! In an [`Attack`] mode it ends TLS itself with a certificate from its CA for the address
//! it listens on, answers what the attack changes, and fetches everything else from the
//! real master (`curl -k`, as an attacker would). With [`Attack::None`] it forwards the TCP
//! bytes untouched, so the honest path through the same proxy shows the proxy works.
//!
//! What it forges: `SHA256SUMS` and `nodeos-<arch>` become a script that appends its
//! arguments to a marker file on the victim; a forged `install.sh` writes that marker first.
//! A marker on the victim after an attack means the attacker ran code there as root.
//!
//! Owns the proxy's threads and sockets; the tests own the victim.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cloudos_cluster::pki::{self, ClusterCa};

/// What the man in the middle does to the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Nothing: every connection is forwarded to the master as it is (the honest network).
    None,
    /// `ca.pem` is the master's CA followed by the attacker's: the token's pin matches the
    /// first, and `curl --cacert` trusts both. Downloads forged.
    ExtraCa,
    /// As [`Attack::ExtraCa`], with the attacker's CA as a `TRUSTED CERTIFICATE` block,
    /// which OpenSSL (so curl) trusts too and a count of `BEGIN CERTIFICATE` lines misses.
    ExtraTrustedCa,
    /// `ca.pem` is the master's, untouched; downloads forged under the attacker's
    /// certificate. Works where the victim trusts the attacker's CA for the web (the test
    /// puts it in the victim's system store): a public or corporate CA in real life.
    ForgedDownloads,
    /// `install.sh` itself has a line of the attacker's.
    Script,
}

/// The running proxy; stopped when dropped.
pub struct Mitm {
    addr: SocketAddr,
    ca_pem: String,
    served: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The attacker's side, shared by the connection threads.
struct Plan {
    attack: Attack,
    upstream: SocketAddr,
    ca_pem: String,
    /// The forged `nodeos-<arch>` (a shell script) and its name.
    binary: (String, Vec<u8>),
    /// The path on the victim the forged code writes.
    marker: String,
    served: Arc<Mutex<Vec<String>>>,
}

impl Mitm {
    /// Listens on `listen` (inside network namespace `netns` when given, as the master
    /// there) and sits in front of the master at `upstream`. `arch` names the binary it
    /// forges (`nodeos-<arch>`), `marker` the file on the victim its code writes.
    pub fn start(
        netns: Option<&str>,
        listen: SocketAddr,
        upstream: SocketAddr,
        attack: Attack,
        arch: &str,
        marker: &str,
    ) -> io::Result<Mitm> {
        let now = time::OffsetDateTime::now_utc();
        let ca = ClusterCa::create("mitm", now).map_err(io::Error::other)?;
        let served = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Plan {
            attack,
            upstream,
            ca_pem: ca.cert_pem().to_owned(),
            binary: (
                format!("nodeos-{arch}"),
                format!("#!/bin/sh\necho \"$@\" >>{marker}\n").into_bytes(),
            ),
            marker: marker.to_owned(),
            served: Arc::clone(&served),
        });
        let leaf = ca
            .issue_serving_cert(&[], &[listen.ip()], time::Duration::days(1), now)
            .map_err(io::Error::other)?;
        let chain = pki::certs_from_pem(&leaf.chain_pem, "mitm chain").map_err(io::Error::other)?;
        let key = pki::key_from_pem(&leaf.key_pem, "mitm key").map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(io::Error::other)?;
        let tls = Arc::new(tls);

        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = mpsc::channel();
        let netns = netns.map(str::to_owned);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Sockets and children of this thread (and the threads it starts) live in
                // the namespace it joins.
                let listener = netns
                    .as_deref()
                    .map_or(Ok(()), enter_netns)
                    .and_then(|()| TcpListener::bind(listen))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l));
                let listener = match listener {
                    Ok(l) => {
                        let _ = bound_tx.send(l.local_addr());
                        l
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (plan, tls) = (Arc::clone(&plan), Arc::clone(&tls));
                            std::thread::spawn(move || {
                                if let Err(e) = connection(stream, &plan, tls) {
                                    eprintln!("mitm: connection ended: {e}");
                                }
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => eprintln!("mitm: accept: {e}"),
                    }
                }
            })
        };
        let addr = bound_rx
            .recv()
            .map_err(|_| io::Error::other("the proxy thread ended before binding"))??;
        Ok(Mitm {
            addr,
            ca_pem: ca.cert_pem().to_owned(),
            served,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The attacker's CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// What it answered with forged content so far, e.g. `forged /install/ca.pem`: the
    /// proof that an attack was really put to the victim.
    pub fn served(&self) -> Vec<String> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter_netns(name: &str) -> io::Result<()> {
    let file = std::fs::File::open(Path::new("/run/netns").join(name))?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace fd; CLONE_NEWNET only moves this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn connection(client: TcpStream, plan: &Plan, tls: Arc<rustls::ServerConfig>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    if plan.attack == Attack::None {
        return forward_tcp(client, plan.upstream);
    }
    let conn = rustls::ServerConnection::new(tls).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, client);
    let path = request_path(&mut stream)?;
    let (status, body) = plan.answer(&path);
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// Copies bytes both ways between `client` and the master until either side closes.
fn forward_tcp(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let _ = io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// The path of the one HTTP/1.1 request on `stream` (curl's GETs have no body).
fn request_path(stream: &mut impl Read) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Err(io::Error::other("no complete request"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("not a request: {head:?}")))
}

impl Plan {
    fn answer(&self, path: &str) -> (&'static str, Vec<u8>) {
        let forged = match (self.attack, path) {
            (Attack::Script, "/install.sh") => Some(self.upstream(path).map(|script| {
                let evil = format!("#!/bin/sh\necho install.sh >>{}\n", self.marker);
                let script = String::from_utf8_lossy(&script).replacen("#!/bin/sh\n", &evil, 1);
                script.into_bytes()
            })),
            (Attack::ExtraCa, "/install/ca.pem") => Some(
                self.upstream(path)
                    .map(|real| [real, self.ca_pem.clone().into_bytes()].concat()),
            ),
            (Attack::ExtraTrustedCa, "/install/ca.pem") => Some(self.upstream(path).map(|real| {
                let trusted = self.ca_pem.replace("CERTIFICATE", "TRUSTED CERTIFICATE");
                [real, trusted.into_bytes()].concat()
            })),
            (Attack::ExtraCa | Attack::ExtraTrustedCa | Attack::ForgedDownloads, _) => {
                let (name, binary) = &self.binary;
                if path == "/install/SHA256SUMS" {
                    Some(Ok(format!("{}  {name}\n", sha256_hex(binary)).into_bytes()))
                } else if path.strip_prefix("/install/") == Some(name.as_str()) {
                    Some(Ok(binary.clone()))
                } else {
                    None
                }
            }
            _ => None,
        };
        let answer = match forged {
            Some(body) => {
                if let Ok(mut served) = self.served.lock() {
                    served.push(format!("forged {path}"));
                }
                body
            }
            None => self.upstream(path),
        };
        match answer {
            Ok(body) => ("200 OK", body),
            Err(e) => ("502 Bad Gateway", format!("mitm: {e}\n").into_bytes()),
        }
    }

    /// `path` from the real master, fetched as the attacker would: `curl -k`.
    fn upstream(&self, path: &str) -> io::Result<Vec<u8>> {
        let url = format!("https://{}{path}", self.upstream);
        Command::new("curl")
            .args(["-fsSk", "--max-time", "20", &url])
            .output()
            .and_then(|out| {
                if out.status.success() {
                    Ok(out.stdout)
                } else {
                    Err(io::Error::other(format!(
                        "curl {url}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )))
                }
            })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
