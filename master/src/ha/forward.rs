//! A master that is not the leader answers every request by forwarding it to the leader
//! (the model of Swarm's managers): the leader alone holds the live state (roster,
//! workloads' book), and callers need not know which master leads.
//!
//! The follower terminates the caller's TLS as any master does, then sends the request
//! on to the leader over mTLS with its own master certificate, adding who the caller is
//! ([`FORWARDED_PEER`]: anonymous, or the identity and serial of its verified certificate)
//! and where it came from ([`FORWARDED_FOR`]). The leader believes these two headers only
//! from a connection whose certificate is a master's, and drops them from anyone else's
//! ([`accept_forwarded`]). Upgrades (the agents' WebSocket) are forwarded too: once both
//! sides switched protocols, the follower copies bytes both ways.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cloudos_cluster::client::ApiClient;
use cloudos_cluster::pki::{CertSerial, NodeKey, PkiError};
use cloudos_cluster::{ClusterCa, NodeIdentity, Role};
use hyper_util::rt::TokioIo;

use crate::error::{ApiError, MasterError};
use crate::tls_accept::Peer;

/// Who the caller of a forwarded request is: `anonymous`, `refused`, or
/// `node <identity URI> <serial>`.
pub const FORWARDED_PEER: &str = "x-cloudos-forwarded-peer";
/// The caller's address as the follower saw it (`ip:port`).
pub const FORWARDED_FOR: &str = "x-cloudos-forwarded-for";

/// The leader as the election names it: its node name (which its serving certificate
/// carries) and its API address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAddr {
    pub name: String,
    pub addr: String,
}

impl LeaderAddr {
    /// The value a master campaigns with: `<name> <host:port>`.
    pub fn to_value(&self) -> String {
        format!("{} {}", self.name, self.addr)
    }

    pub fn from_value(value: &str) -> Option<LeaderAddr> {
        let (name, addr) = value.split_once(' ')?;
        Some(LeaderAddr {
            name: name.to_owned(),
            addr: addr.to_owned(),
        })
    }
}

/// A follower's own certificate (role master, to reach the leader) is made again after
/// this long; it is valid for [`FORWARDING_CERT_LIFETIME`].
const FORWARDING_CERT_RENEW: Duration = Duration::from_secs(3600);
const FORWARDING_CERT_LIFETIME: time::Duration = time::Duration::days(1);

/// What a follower needs to reach the leader.
pub struct Forwarder {
    /// The current leader, kept by the follower's election watcher.
    leader: tokio::sync::watch::Receiver<Option<LeaderAddr>>,
    /// The cluster CA: every master holds it, and makes its own forwarding certificate.
    ca: ClusterCa,
    name: String,
    /// This master's certificate (role master) and key (PEM), and when they were made.
    identity: Mutex<((String, String), Instant)>,
}

impl Forwarder {
    /// A forwarder for master `name`, with a certificate of role master made with `ca`.
    pub fn new(
        leader: tokio::sync::watch::Receiver<Option<LeaderAddr>>,
        ca: &ClusterCa,
        name: &str,
    ) -> Result<Forwarder, MasterError> {
        let ca = ClusterCa::load(ca.cert_pem(), &ca.key_pem())?;
        let identity = forwarding_identity(&ca, name)?;
        Ok(Forwarder {
            leader,
            ca,
            name: name.to_owned(),
            identity: Mutex::new((identity, Instant::now())),
        })
    }

    /// A client of the leader, with this master's certificate (made again once it is
    /// [`FORWARDING_CERT_RENEW`] old).
    fn client(&self, leader: &LeaderAddr) -> Result<ApiClient, String> {
        let mut identity = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        if identity.1.elapsed() > FORWARDING_CERT_RENEW {
            *identity = (
                forwarding_identity(&self.ca, &self.name).map_err(|e| e.to_string())?,
                Instant::now(),
            );
        }
        let (cert, key) = &identity.0;
        ApiClient::new(&leader.addr, &leader.name, self.ca.cert_pem(), cert, key)
            .map_err(|e| e.to_string())
    }
}

/// A certificate of role master for master `name` (certificate and key PEM).
fn forwarding_identity(ca: &ClusterCa, name: &str) -> Result<(String, String), MasterError> {
    let key = NodeKey::generate()?;
    let csr = key.csr_pem(name)?;
    let identity = NodeIdentity::new(name, Role::Master).map_err(PkiError::from)?;
    let cert = ca.sign_csr(
        &csr,
        &identity,
        FORWARDING_CERT_LIFETIME,
        time::OffsetDateTime::now_utc(),
    )?;
    Ok((cert.cert_pem, key.to_pem()))
}

/// The follower's router: every path is forwarded.
pub fn router(forwarder: Arc<Forwarder>) -> Router {
    Router::new().fallback(forward).with_state(forwarder)
}

async fn forward(
    State(fwd): State<Arc<Forwarder>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    mut req: Request<Body>,
) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or(Peer::Anonymous);
    let (leader, tls) = match reach_leader(&fwd).await {
        Ok(reached) => reached,
        Err(response) => return response,
    };
    let unavailable = |why: String| {
        ApiError::Unavailable(format!(
            "this master lost the leader {} at {} while forwarding: {why}; try again",
            leader.name, leader.addr
        ))
        .into_response()
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
            Ok(pair) => pair,
            Err(e) => return unavailable(e.to_string()),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            log::debug!("forwarded connection ended: {e}");
        }
    });

    let caller_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return ApiError::BadRequest("bad request path".into()).into_response(),
    };
    parts.version = hyper::Version::HTTP_11;
    mark(&mut parts.headers, &peer, from);
    if let Ok(host) = HeaderValue::from_str(&leader.addr) {
        parts.headers.insert(hyper::header::HOST, host);
    }
    let upstream = Request::from_parts(parts, body);
    let mut answer = match sender.send_request(upstream).await {
        Ok(answer) => answer,
        Err(e) => return unavailable(e.to_string()),
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let leader_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (Ok(caller), Ok(leader)) = tokio::join!(caller_upgrade, leader_upgrade) else {
                return;
            };
            let (mut caller, mut leader) = (TokioIo::new(caller), TokioIo::new(leader));
            let _ = tokio::io::copy_bidirectional(&mut caller, &mut leader).await;
        });
    }
    answer.map(Body::new)
}

/// A connection to the leader. While the leader named last cannot be reached (it just
/// died, and the masters are electing the next), waits for the election to name another,
/// up to [`FIND_LEADER_FOR`]: nothing was sent yet, so trying the next one is safe.
async fn reach_leader(
    fwd: &Forwarder,
) -> Result<
    (
        LeaderAddr,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ),
    Response,
> {
    let mut watch = fwd.leader.clone();
    let deadline = tokio::time::Instant::now() + FIND_LEADER_FOR;
    loop {
        let current = watch.borrow_and_update().clone();
        let why = match &current {
            None => "the masters are choosing a leader".to_owned(),
            Some(leader) => match fwd.client(leader) {
                Err(e) => e,
                Ok(client) => match client.connect().await {
                    Ok(tls) => return Ok((leader.clone(), tls)),
                    Err(e) => format!("the leader {} at {}: {e}", leader.name, leader.addr),
                },
            },
        };
        let unavailable = || {
            ApiError::Unavailable(format!(
                "this master cannot reach the leader ({why}); try again in a few seconds, or ask another master"
            ))
            .into_response()
        };
        // Wait for the election to name a leader (again), then try that one.
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(unavailable()),
        }
    }
}

/// How long a forwarded request waits for the masters to elect a leader it can reach.
const FIND_LEADER_FOR: Duration = Duration::from_secs(8);

/// Writes the forwarding headers, replacing any the caller sent: a caller cannot speak for
/// someone else through a follower.
fn mark(headers: &mut HeaderMap, peer: &Peer, from: SocketAddr) {
    let value = match peer {
        Peer::Anonymous => "anonymous".to_owned(),
        Peer::Refused(_) => "refused".to_owned(),
        Peer::Node { identity, serial } => format!("node {} {}", identity.to_uri(), serial),
    };
    headers.remove(FORWARDED_PEER);
    headers.remove(FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(FORWARDED_PEER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&from.to_string()) {
        headers.insert(FORWARDED_FOR, value);
    }
}

/// On the leader: the caller and address a request stands for. A connection from
/// another master (a certificate of role master) speaks for the caller it forwards; from
/// anyone else the forwarding headers are dropped unread and the connection's own peer
/// stands. `is_revoked` checks a forwarded serial as the handshake checks a direct one.
pub fn accept_forwarded(
    headers: &mut HeaderMap,
    peer: Peer,
    addr: SocketAddr,
    is_revoked: impl FnOnce(&CertSerial) -> bool,
) -> (Peer, SocketAddr) {
    let claimed = headers.remove(FORWARDED_PEER);
    let claimed_addr = headers.remove(FORWARDED_FOR);
    let from_master = matches!(&peer, Peer::Node { identity, .. } if identity.role == Role::Master);
    let Some(claimed) = claimed.filter(|_| from_master) else {
        return (peer, addr);
    };
    let addr = claimed_addr
        .and_then(|v| v.to_str().ok().and_then(|v| SocketAddr::from_str(v).ok()))
        .unwrap_or(addr);
    let forwarded = match claimed
        .to_str()
        .unwrap_or("")
        .split(' ')
        .collect::<Vec<_>>()[..]
    {
        ["anonymous"] => Peer::Anonymous,
        ["node", uri, serial] => {
            match (NodeIdentity::from_uri(uri), serial.parse::<CertSerial>()) {
                (Ok(identity), Ok(serial)) if is_revoked(&serial) => {
                    Peer::Refused(Arc::new(PkiError::Revoked {
                        serial,
                        name: identity.name,
                    }))
                }
                (Ok(identity), Ok(serial)) => Peer::Node { identity, serial },
                _ => Peer::Anonymous,
            }
        }
        // `refused`, or anything a master would not send: no identity.
        _ => Peer::Refused(Arc::new(refused_upstream())),
    };
    (forwarded, addr)
}

/// What a caller the follower refused (or that a master described in a way it never
/// would) is told.
fn refused_upstream() -> PkiError {
    PkiError::NotANodeCertificate {
        subject: "the certificate the forwarding master refused".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role) -> Peer {
        Peer::Node {
            identity: NodeIdentity::new(name, role).expect("identity"),
            serial: "0a0b".parse().expect("serial"),
        }
    }

    fn headers_for(peer: &Peer, from: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        mark(&mut headers, peer, from.parse().expect("addr"));
        headers
    }

    #[test]
    fn a_master_speaks_for_the_caller_it_forwards() {
        let admin = node("alice", Role::Admin);
        let mut headers = headers_for(&admin, "192.0.2.7:4000");
        let (peer, addr) = accept_forwarded(
            &mut headers,
            node("m2", Role::Master),
            "10.0.0.2:5000".parse().expect("addr"),
            |_| false,
        );
        assert!(
            matches!(&peer, Peer::Node { identity, .. } if identity.name == "alice" && identity.role == Role::Admin),
            "{peer:?}"
        );
        assert_eq!(addr.to_string(), "192.0.2.7:4000");
        assert!(
            headers.get(FORWARDED_PEER).is_none(),
            "the headers are consumed"
        );
    }

    #[test]
    fn nobody_but_a_master_can_claim_to_forward() {
        // A compute node (and an admin) sending the headers to the leader directly, to
        // pass as an admin: the headers are dropped and its own identity stands.
        for (direct, role) in [
            (node("n1", Role::Compute), Role::Compute),
            (node("bob", Role::Admin), Role::Admin),
        ] {
            let mut headers = headers_for(&node("alice", Role::Admin), "192.0.2.7:4000");
            let (peer, addr) = accept_forwarded(
                &mut headers,
                direct,
                "10.0.0.9:5000".parse().expect("addr"),
                |_| false,
            );
            assert!(
                matches!(&peer, Peer::Node { identity, .. } if identity.role == role && identity.name != "alice"),
                "{peer:?}"
            );
            assert_eq!(addr.to_string(), "10.0.0.9:5000");
            assert!(headers.get(FORWARDED_PEER).is_none());
        }
        let mut headers = headers_for(&node("alice", Role::Admin), "192.0.2.7:4000");
        let (peer, _) = accept_forwarded(
            &mut headers,
            Peer::Anonymous,
            "10.0.0.9:5000".parse().expect("addr"),
            |_| false,
        );
        assert!(matches!(peer, Peer::Anonymous), "{peer:?}");
    }

    #[test]
    fn a_forwarded_revoked_serial_or_a_refused_caller_gets_no_identity() {
        let mut headers = headers_for(&node("alice", Role::Admin), "192.0.2.7:4000");
        let (peer, _) = accept_forwarded(
            &mut headers,
            node("m2", Role::Master),
            "10.0.0.2:5000".parse().expect("addr"),
            |_| true,
        );
        assert!(
            matches!(&peer, Peer::Refused(e) if matches!(e.as_ref(), PkiError::Revoked { .. })),
            "{peer:?}"
        );
        let refused = Peer::Refused(Arc::new(refused_upstream()));
        let mut headers = headers_for(&refused, "192.0.2.7:4000");
        let (peer, _) = accept_forwarded(
            &mut headers,
            node("m2", Role::Master),
            "10.0.0.2:5000".parse().expect("addr"),
            |_| false,
        );
        assert!(matches!(peer, Peer::Refused(_)), "{peer:?}");
    }

    #[test]
    fn the_election_value_names_the_leader() {
        let leader = LeaderAddr {
            name: "m1".into(),
            addr: "10.0.0.1:9443".into(),
        };
        assert_eq!(LeaderAddr::from_value(&leader.to_value()), Some(leader));
        assert_eq!(LeaderAddr::from_value("nospace"), None);
    }
}
