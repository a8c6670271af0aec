//! For tests of the master and of what talks to it (feature `testing`): a real master on its own runtime and thread (so
//! stopping it drops every connection it held), with its state in a temp directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Master, MasterConfig};
use cloudos_cluster::{CaPin, Token};

pub struct TestMaster {
    pub addr: SocketAddr,
    /// The first admin's token, printed only on a first start.
    pub admin_token: Option<Token>,
    pub pin: CaPin,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fresh directory `cloudos-<name>-<pid>` under the temp dir (not created).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cloudos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A master `master-1` of cluster `lab` keeping its state in `dir`, on `listen`, with
/// `heartbeat` and `not_ready_after`, without mDNS. Tests change the rest as they need.
pub fn config(
    dir: &Path,
    listen: SocketAddr,
    heartbeat: Duration,
    not_ready_after: Duration,
) -> MasterConfig {
    let mut config = MasterConfig::new(dir, "master-1");
    config.listen = listen;
    config.cluster_name = "lab".to_owned();
    config.heartbeat_interval = heartbeat;
    config.not_ready_after = not_ready_after;
    config.cert_lifetime = Duration::from_secs(3600);
    config.mdns = false;
    config
}

impl TestMaster {
    /// Opens the master on its own runtime (`workers` threads) and thread; returns once it
    /// listens.
    pub fn start(config: MasterConfig, workers: usize) -> TestMaster {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut master = Master::open(config).await.expect("master opens");
                let token = master.take_bootstrap_token();
                let _ = ready_tx.send((master.local_addr(), token, master.ca_pin()));
                master
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("master runs");
            });
        });
        let (addr, admin_token, pin) = ready_rx.recv().expect("master started");
        TestMaster {
            addr,
            admin_token,
            pin,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the master and waits until its store is closed.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request over an established connection (usually TLS to a test master):
/// status, headers and body. Panics on a transport failure, as a test wants.
pub async fn http_request<S>(
    stream: S,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    http_request_with(stream, method, path, &[], body).await
}

/// [`http_request`] with extra headers (an `Authorization: Bearer` key).
pub async fn http_request_with<S>(
    stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(hyper::body::Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes.to_vec())
}
