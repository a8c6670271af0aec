//! The accept loop: each TCP connection gets a slot (see `connlimit`), then a task that does
//! the TLS handshake, attaches the caller's [`Peer`] and address to every request of the
//! connection, and serves HTTP/1.1 and HTTP/2 (with upgrades, for the agents' WebSocket)
//! through the axum router.
//!
//! Nothing a client does can hold a connection for free: the handshake, the request headers
//! and every pause between requests are timed, and a request body must keep arriving at a
//! minimum rate. What the handlers do with a request is not this module's business.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::connlimit::{self, Permit, Pool};
use super::state::MasterState;
use super::tls_accept::{self, Peer};

/// A client must send a request's headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight for this long is closed (this also bounds the
/// HTTP/1 versus HTTP/2 sniff at the start of a connection).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// After asking an idle connection to close, how long it may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 pings a quiet connection this often and drops it when the answer takes longer
/// than [`H2_PING_TIMEOUT`]: a peer that vanished leaves no half-open connection behind.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one HTTP/2 connection may have in flight.
const H2_MAX_STREAMS: u32 = 32;
/// A request body may take this long before [`BODY_MIN_RATE`] applies.
const BODY_GRACE: Duration = Duration::from_secs(30);
/// Bytes per second a request body must average after [`BODY_GRACE`].
const BODY_MIN_RATE: u64 = 64 * 1024;

/// The address a connection came in on (this master's side of it): a master on its own
/// learns from it where a joining master reaches it.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Accepts connections until the task is cancelled; cancelling it ends every connection.
/// Requests go to `router`: the API's (`routes::router`) on a master that serves, the
/// forwarding one on a master that follows (`ha::forward`).
pub async fn accept_loop(state: Arc<MasterState>, listener: Arc<TcpListener>, router: Router) {
    let pools = Pools {
        unverified: Pool::new(connlimit::UNVERIFIED),
        verified: Pool::new(connlimit::VERIFIED),
    };
    let mut connections = JoinSet::new();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok((tcp, addr)) => (tcp, super::listen::canonical_peer(addr)),
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Some(permit) = pools.unverified.try_acquire(addr.ip()) else {
            log::debug!("too many connections from {addr} or in all; closed");
            continue;
        };
        connections.spawn(serve(
            Arc::clone(&state),
            router.clone(),
            Arc::clone(&pools.verified),
            tcp,
            permit,
            addr,
        ));
    }
}

struct Pools {
    unverified: Arc<Pool>,
    verified: Arc<Pool>,
}

async fn serve(
    state: Arc<MasterState>,
    router: Router,
    verified: Arc<Pool>,
    tcp: TcpStream,
    permit: Permit,
    addr: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .ok()
        .map(|a| LocalAddr(super::listen::canonical_peer(a)));
    let Some((tls, peer)) = tls_accept::handshake(&state, tcp).await else {
        return;
    };
    // Only the revocation check of forwarded callers needs the state from here on; a
    // connection does not keep a stopped master's state alive.
    let weak_state = Arc::downgrade(&state);
    drop(state);
    // A certified caller leaves the crowd of handshakes and anonymous callers.
    let permit = match &peer {
        Peer::Node { identity, .. } => match verified.try_acquire(addr.ip()) {
            Some(slot) => slot,
            None => {
                log::warn!("too many certified connections from {addr} ({identity}); closed");
                return;
            }
        },
        Peer::Anonymous | Peer::Refused(_) => permit,
    };
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        let revoked = move |serial: &cloudos_cluster::pki::CertSerial| {
            weak_state
                .upgrade()
                .is_none_or(|state| state.is_revoked(serial))
        };
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = activity.begin();
            let mut req = req.map(|body| Body::new(TimedBody::new(body)));
            // A request another master forwards stands for its caller (see `ha::forward`).
            let (peer, addr) = super::ha::forward::accept_forwarded(
                req.headers_mut(),
                peer.clone(),
                addr,
                |serial| revoked(serial),
            );
            req.extensions_mut().insert::<Peer>(peer);
            req.extensions_mut().insert(ConnectInfo(addr));
            if let Some(local) = local {
                req.extensions_mut().insert(local);
            }
            let router = router.clone();
            async move {
                let response = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                // The request counts as in flight until its answer is sent or dropped.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let io = TokioIo::new(Held {
        io: tls,
        _permit: permit,
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = activity.idle_for(IDLE_TIMEOUT) => {
            log::debug!("connection from {addr} idle for {}s; closing", IDLE_TIMEOUT.as_secs());
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        log::debug!("connection from {addr} ended: {e}");
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    quiet_since: Mutex<Instant>,
}

/// One request in flight; dropped when its answer is done.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    fn quiet_since(&self) -> Instant {
        *self.quiet_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                let quiet = self.quiet_since().elapsed();
                if quiet >= idle {
                    return;
                }
                idle - quiet
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Stamp the time before the count drops, so a watcher never sees an old stamp.
        *self.0.quiet_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket with its connection slot: the slot goes when the socket closes, also after an
/// upgrade has handed the socket to a WebSocket.
struct Held<S> {
    io: S,
    _permit: Permit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that fails once it falls behind: after [`BODY_GRACE`], at least
/// [`BODY_MIN_RATE`] bytes per second on average, so a client trickling a byte now and then
/// cannot hold a request (and its connection slot) open forever.
struct TimedBody {
    inner: Incoming,
    started: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming) -> TimedBody {
        let started = Instant::now();
        TimedBody {
            inner,
            started,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + BODY_GRACE)),
        }
    }

    fn due(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / BODY_MIN_RATE as f64);
        self.started + BODY_GRACE + earned
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly (under {} KiB/s after {} s)",
    BODY_MIN_RATE / 1024,
    BODY_GRACE.as_secs()
)]
struct TooSlow;

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let due = self.due();
                    self.deadline.as_mut().reset(due);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(TooSlow.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let idle = Duration::from_millis(300);
        let activity = Arc::new(Activity::new());
        let busy = activity.begin();
        let watch = activity.idle_for(idle);
        tokio::pin!(watch);
        // A long request keeps the connection in use.
        assert!(tokio::time::timeout(idle * 3, watch.as_mut())
            .await
            .is_err());
        drop(busy);
        let quiet = Instant::now();
        watch.await;
        assert!(quiet.elapsed() >= idle);
        assert!(quiet.elapsed() < idle * 3);
    }
}
