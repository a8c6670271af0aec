//! One TLS handshake on an accepted TCP connection, and who the client is: anonymous (no
//! certificate, allowed only by the join and OpenAPI endpoints), a node or admin whose
//! certificate the cluster CA signed and that is not revoked, or refused. The result is
//! attached to every request of the connection as a [`Peer`] extension.

use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::pki::{authorize_peer, CertSerial, PkiError};
use cloudos_cluster::NodeIdentity;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::state::MasterState;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is calling, as established by the TLS handshake.
#[derive(Debug, Clone)]
pub enum Peer {
    /// No client certificate.
    Anonymous,
    /// A verified certificate with a cluster identity.
    Node {
        identity: NodeIdentity,
        serial: CertSerial,
    },
    /// A certificate the CA signed but that is revoked or carries no identity.
    Refused(Arc<PkiError>),
}

fn peer_of(conn: &ServerConnection, state: &MasterState) -> Peer {
    let Some(leaf) = conn.peer_certificates().and_then(|certs| certs.first()) else {
        return Peer::Anonymous;
    };
    match authorize_peer(leaf, |serial| state.is_revoked(serial)) {
        Ok((identity, info)) => Peer::Node {
            identity,
            serial: info.serial,
        },
        Err(e) => Peer::Refused(Arc::new(e)),
    }
}

/// The TLS handshake with the current serving certificate; `None` (logged at debug level)
/// when it fails, e.g. plain HTTP, TLS 1.2, a certificate from another CA.
pub async fn handshake(
    state: &MasterState,
    tcp: TcpStream,
) -> Option<(TlsStream<TcpStream>, Peer)> {
    let peer_addr = tcp.peer_addr().ok();
    let config = state.tls_config()?;
    let accept = TlsAcceptor::from(config).accept(tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => {
            let peer = peer_of(tls.get_ref().1, state);
            Some((tls, peer))
        }
        Ok(Err(e)) => {
            log::debug!("TLS handshake with {peer_addr:?} failed: {e}");
            None
        }
        Err(_) => {
            log::debug!("TLS handshake with {peer_addr:?} timed out");
            None
        }
    }
}
