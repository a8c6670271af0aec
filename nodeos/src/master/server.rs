//! The accept loop: each TCP connection gets a task that does the TLS handshake, attaches
//! the caller's [`Peer`] and address to every request, and serves HTTP/1.1 and HTTP/2 (with
//! upgrades, for the agents' WebSocket) through the axum router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::routes;
use super::state::MasterState;
use super::tls_accept::{self, Peer};

/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the task is cancelled; cancelling it ends every connection.
pub async fn accept_loop(state: Arc<MasterState>, listener: TcpListener) {
    let router = routes::router(Arc::clone(&state));
    let mut connections = JoinSet::new();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve(Arc::clone(&state), router.clone(), tcp, addr));
    }
}

async fn serve(state: Arc<MasterState>, router: Router, tcp: TcpStream, addr: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some((tls, peer)) = tls_accept::handshake(&state, tcp).await else {
        return;
    };
    drop(state);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert::<Peer>(peer.clone());
        req.extensions_mut().insert(ConnectInfo(addr));
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        log::debug!("connection from {addr} ended: {e}");
    }
}
