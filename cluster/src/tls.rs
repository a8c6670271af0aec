//! rustls configurations for the cluster, TLS 1.3 only, on the `ring` provider.
//!
//! - [`server_config`]: the master's HTTPS server. Client certificates are optional but, when
//!   sent, verified against the cluster CA: the join endpoint works without one, and every
//!   other handler reads the caller's identity with [`peer_identity`] and refuses anonymous
//!   callers itself.
//! - [`client_config_pinned`]: the first contact of a joining node, of `cloudos login` and of
//!   the installer's token check. It trusts no public CA; it accepts the master iff the last
//!   certificate of the chain the master sends is a CA whose pin equals the token's, the leaf
//!   is validly signed by that CA for serverAuth, and the leaf carries the master marker
//!   (`pki::MASTER_URI`). The host name is not checked: the pin and the marker are the
//!   identity, and a master is often reached by an address that is not in its certificate
//!   (DHCP, NAT, a cloud's public IP).
//! - [`client_config_pinned_any_clock`]: the same checks as [`client_config_pinned`], made
//!   at a time inside the validity of every certificate the master sends instead of at this
//!   machine's clock. Only for reading the master's time (`client::master_time`) when the
//!   clock is wrong at first contact (years behind or ahead); no secret is sent over it.
//! - [`client_config_mtls`]: every later connection of a node or the CLI: normal WebPKI
//!   verification (names included) against the cluster CA, the master marker, and the
//!   client's certificate.
//!
//! Why the marker: every node and admin holds a certificate the cluster CA signed. Those are
//! issued for clientAuth only, but a certificate issued before that (clientAuth and
//! serverAuth) stays valid for days; the marker is what only the master's own issuance sets,
//! so no certificate a token can buy ever passes as the master.
//!
//! The master must therefore send its serving certificate followed by the CA certificate
//! (`pki::IssuedCert::chain_pem`).

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};

use crate::identity::NodeIdentity;
use crate::pki::{self, CaPin, PkiError};

/// The only protocol version the cluster speaks.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Errors building TLS configurations, and the pin mismatch seen during a handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA pin mismatch: this is not the master your token was made for (expected {expected}, got {got})")]
    PinMismatch { expected: CaPin, got: CaPin },
    #[error("the master sent only its own certificate, without its CA; it must send the chain from `IssuedCert::chain_pem`")]
    NoCaInChain,
    #[error("the master's certificates have no time in common when all are valid (leaf and CA do not overlap)")]
    NoCommonValidity,
    #[error("the CA certificate cannot be a trust anchor: {0}")]
    BadCa(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The `ring` crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn roots_with(ca: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| TlsError::BadCa(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// The master's server configuration. `chain` is the serving certificate followed by the CA;
/// with `client_ca`, client certificates signed by it are requested and verified, but a
/// client without one may still connect (for the join endpoint).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&CertificateDer<'_>>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(PROTOCOL_VERSIONS)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots_with(ca)?, provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// [`server_config`] from PEM texts.
pub fn server_config_pem(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<ServerConfig, TlsError> {
    let chain = pki::certs_from_pem(chain_pem, "serving certificate chain")?;
    let key = pki::key_from_pem(key_pem, "serving key")?;
    let ca = client_ca_pem
        .map(|pem| pki::cert_from_pem(pem, "client CA certificate"))
        .transpose()?;
    server_config(chain, key, ca.as_ref())
}

/// The verified identity of the client on a server connection: `None` when the client sent
/// no certificate (only the join endpoint accepts that), an error when the certificate has no
/// node identity. Check the serial against the revoked list with [`pki::authorize_peer`].
pub fn peer_identity(conn: &ServerConnection) -> Option<Result<NodeIdentity, PkiError>> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| pki::identity_from_cert(leaf))
}

/// The client configuration for the first contact with a master: see the module comment.
pub fn client_config_pinned(pin: CaPin) -> Result<ClientConfig, TlsError> {
    pinned(pin, Clock::Local)
}

/// [`client_config_pinned`] checked at a time when the master's certificates are valid,
/// whatever this machine's clock says: see the module comment. Everything but the time is
/// checked (the pin, the chain's signatures, serverAuth, the master marker), so only a
/// holder of a serving certificate the pinned CA issued passes.
pub fn client_config_pinned_any_clock(pin: CaPin) -> Result<ClientConfig, TlsError> {
    pinned(pin, Clock::InsideValidity)
}

fn pinned(pin: CaPin, clock: Clock) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        pin,
        clock,
        provider: Arc::clone(&provider),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The client configuration for mTLS with the master: the cluster CA as the only root, and
/// the client's certificate chain and key.
pub fn client_config_mtls(
    ca: &CertificateDer<'_>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let webpki =
        WebPkiServerVerifier::builder_with_provider(roots_with(ca)?, Arc::clone(&provider))
            .build()?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MasterVerifier { webpki }))
        .with_client_auth_cert(chain, key)?)
}

/// Finds a [`TlsError::PinMismatch`] inside a handshake error, whether it comes as a
/// `rustls::Error` or wrapped in an `io::Error` by a stream, so the agent and CLI can print
/// its message instead of rustls's generic one.
pub fn pin_mismatch<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return matches!(tls, TlsError::PinMismatch { .. }).then_some(tls);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) =
            e.downcast_ref::<rustls::Error>()
        {
            return pin_mismatch(inner.as_ref());
        }
        // io::Error::source skips the payload of io::Error::new, so look at it directly.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// WebPKI verification against the cluster CA (chain, names, validity, EKU serverAuth),
/// then the master marker. See the module comment.
#[derive(Debug)]
struct MasterVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for MasterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        pki::require_master_cert(end_entity).map_err(|e| other(TlsError::Pki(e)))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts a server chain whose last certificate is a CA with the pinned SPKI and whose leaf
/// that CA signed. See the module comment for why names are not checked.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: CaPin,
    clock: Clock,
    provider: Arc<CryptoProvider>,
}

/// At what time a [`PinnedCaVerifier`] checks validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// This machine's clock, as rustls passes it.
    Local,
    /// The latest `notBefore` of the chain the master sent: a time when each of its
    /// certificates is valid, if there is one.
    InsideValidity,
}

/// The latest `notBefore` among `certs`, when it is before every `notAfter`.
fn inside_validity(certs: &[&CertificateDer<'_>]) -> Result<UnixTime, TlsError> {
    let mut start = time::OffsetDateTime::UNIX_EPOCH;
    let mut end: Option<time::OffsetDateTime> = None;
    for cert in certs {
        let info = pki::inspect_cert(cert)?;
        start = start.max(info.not_before);
        end = Some(end.map_or(info.not_after, |e| e.min(info.not_after)));
    }
    let secs = u64::try_from(start.unix_timestamp()).map_err(|_| TlsError::NoCommonValidity)?;
    match end {
        Some(end) if start <= end => Ok(UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(secs),
        )),
        _ => Err(TlsError::NoCommonValidity),
    }
}

fn other(err: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (ca, between) = intermediates
            .split_last()
            .ok_or_else(|| other(TlsError::NoCaInChain))?;
        let got = CaPin::of_cert(ca).map_err(|e| other(TlsError::Pki(e)))?;
        if got != self.pin {
            return Err(other(TlsError::PinMismatch {
                expected: self.pin,
                got,
            }));
        }
        let roots = roots_with(ca).map_err(other)?;
        let leaf = ParsedCertificate::try_from(end_entity)?;
        let now = match self.clock {
            Clock::Local => now,
            Clock::InsideValidity => {
                let chain: Vec<&CertificateDer<'_>> =
                    std::iter::once(end_entity).chain(intermediates).collect();
                inside_validity(&chain).map_err(other)?
            }
        };
        // Checks the chain, the validity period and EKU serverAuth.
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &roots,
            between,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        pki::require_master_cert(end_entity).map_err(|e| other(TlsError::Pki(e)))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use crate::pki::{ClusterCa, NodeKey, NODE_CERT_LIFETIME, SERVING_CERT_LIFETIME};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration as StdDuration;
    use time::OffsetDateTime;

    struct Cluster {
        ca: ClusterCa,
        server: ServerConfig,
    }

    fn cluster() -> Cluster {
        let now = OffsetDateTime::now_utc();
        let ca = ClusterCa::create("lab", now).expect("ca");
        let serving = ca
            .issue_serving_cert(
                &["master.lan".into()],
                &["127.0.0.1".parse().expect("ip")],
                SERVING_CERT_LIFETIME,
                now,
            )
            .expect("serving");
        let server = server_config_pem(&serving.chain_pem, &serving.key_pem, Some(ca.cert_pem()))
            .expect("server config");
        Cluster { ca, server }
    }

    /// An mTLS client with a certificate for `name` issued by `issuer`, trusting `trusted`.
    fn node_client_from(
        issuer: &ClusterCa,
        trusted: &ClusterCa,
        name: &str,
        role: Role,
    ) -> ClientConfig {
        let key = NodeKey::generate().expect("key");
        let id = NodeIdentity::new(name, role).expect("id");
        let issued = issuer
            .sign_csr(
                &key.csr_pem(name).expect("csr"),
                &id,
                NODE_CERT_LIFETIME,
                OffsetDateTime::now_utc(),
            )
            .expect("sign");
        let chain = pki::certs_from_pem(&issued.cert_pem, "test").expect("chain");
        client_config_mtls(trusted.cert_der(), chain, key.private_key_der()).expect("mtls config")
    }

    fn node_client(ca: &ClusterCa, name: &str, role: Role) -> ClientConfig {
        node_client_from(ca, ca, name, role)
    }

    /// What the server saw of a connection that completed its handshake.
    #[derive(Debug)]
    struct Accepted {
        identity: Option<Result<NodeIdentity, String>>,
        version: Option<rustls::ProtocolVersion>,
    }

    /// Runs one TLS handshake over loopback TCP and exchanges a byte each way.
    fn handshake(
        server: ServerConfig,
        client: ClientConfig,
        name: &str,
    ) -> (Result<(), std::io::Error>, Result<Accepted, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Arc::new(server);
        let server_side = std::thread::spawn(move || -> Result<Accepted, String> {
            let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
            tcp.set_read_timeout(Some(StdDuration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let conn = ServerConnection::new(server).map_err(|e| e.to_string())?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
            tls.write_all(b"k").map_err(|e| e.to_string())?;
            tls.flush().map_err(|e| e.to_string())?;
            Ok(Accepted {
                identity: peer_identity(&tls.conn).map(|r| r.map_err(|e| e.to_string())),
                version: tls.conn.protocol_version(),
            })
        });
        let client_result = (|| {
            let tcp = TcpStream::connect(addr)?;
            tcp.set_read_timeout(Some(StdDuration::from_secs(10)))?;
            let server_name =
                ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
            let conn = rustls::ClientConnection::new(Arc::new(client), server_name)
                .map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"p")?;
            tls.flush()?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte)?;
            Ok(())
        })();
        let server_result = server_side
            .join()
            .unwrap_or_else(|_| Err("server thread panicked".into()));
        (client_result, server_result)
    }

    #[test]
    fn pinned_client_accepts_the_right_master_under_any_name() {
        let c = cluster();
        // A name not in the serving certificate: the pin, not the name, identifies the master.
        for name in ["master.lan", "some-other-name.example"] {
            let client = client_config_pinned(c.ca.pin()).expect("pinned config");
            let (client_res, server_res) = handshake(c.server.clone(), client, name);
            assert!(client_res.is_ok(), "{name}: {client_res:?}");
            let accepted = server_res.expect("server");
            assert!(
                accepted.identity.is_none(),
                "no client cert on first contact"
            );
            assert_eq!(accepted.version, Some(rustls::ProtocolVersion::TLSv1_3));
        }
    }

    #[test]
    fn pinned_client_refuses_another_cluster() {
        let c = cluster();
        let wrong = ClusterCa::create("other", OffsetDateTime::now_utc())
            .expect("other ca")
            .pin();
        let client = client_config_pinned(wrong).expect("pinned config");
        let (client_res, server_res) = handshake(c.server.clone(), client, "master.lan");
        let err = client_res.expect_err("must fail");
        let mismatch = pin_mismatch(&err).expect("a pin mismatch inside the io error");
        let msg = mismatch.to_string();
        assert_eq!(
            msg,
            format!(
                "CA pin mismatch: this is not the master your token was made for (expected {wrong}, got {})",
                c.ca.pin()
            )
        );
        assert!(server_res.is_err());
    }

    #[test]
    fn pinned_client_refuses_a_leaf_not_signed_by_the_pinned_ca() {
        // A server that sends the genuine CA certificate (it is public) with a leaf from
        // another CA: the pin matches, the signature does not.
        let c = cluster();
        let now = OffsetDateTime::now_utc();
        let rogue = ClusterCa::create("rogue", now).expect("rogue");
        let leaf = rogue
            .issue_serving_cert(&["master.lan".into()], &[], SERVING_CERT_LIFETIME, now)
            .expect("leaf");
        let chain_pem = format!("{}{}", leaf.cert_pem, c.ca.cert_pem());
        let server = server_config_pem(&chain_pem, &leaf.key_pem, None).expect("server");
        let client = client_config_pinned(c.ca.pin()).expect("pinned");
        let (client_res, _) = handshake(server, client, "master.lan");
        let err = client_res.expect_err("must fail");
        assert!(pin_mismatch(&err).is_none());
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
    }

    #[test]
    fn pinned_client_needs_the_ca_in_the_chain() {
        let c = cluster();
        let now = OffsetDateTime::now_utc();
        let leaf =
            c.ca.issue_serving_cert(&["master.lan".into()], &[], SERVING_CERT_LIFETIME, now)
                .expect("leaf");
        let server = server_config_pem(&leaf.cert_pem, &leaf.key_pem, None).expect("server");
        let (client_res, _) = handshake(
            server,
            client_config_pinned(c.ca.pin()).expect("pinned"),
            "master.lan",
        );
        let err = client_res.expect_err("must fail");
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
    }

    /// The attacker: a machine that joined with a compute (or admin) token. It holds a
    /// certificate the cluster CA signed and serves it, with the genuine CA behind it, on
    /// the LAN under the master's name, hoping joiners and `cloudos login` send it their
    /// tokens. Neither client kind accepts it: today's node certificates lack serverAuth,
    /// and those issued before (with serverAuth) lack the master marker.
    #[test]
    fn a_node_certificate_served_by_an_attacker_is_not_the_master() {
        let c = cluster();
        for (role, legacy) in [
            (Role::Compute, false),
            (Role::Compute, true),
            (Role::Admin, false),
            (Role::Admin, true),
        ] {
            let key = NodeKey::generate().expect("key");
            let id = NodeIdentity::new("master.lan", role).expect("id");
            let csr = key.csr_pem("master.lan").expect("csr");
            let issued = if legacy {
                c.ca.sign_csr_with_server_auth(&csr, &id)
                    .expect("legacy cert")
            } else {
                c.ca.sign_csr(&csr, &id, NODE_CERT_LIFETIME, OffsetDateTime::now_utc())
                    .expect("cert")
            };
            let chain_pem = format!("{}{}", issued.cert_pem, c.ca.cert_pem());
            let rogue = server_config_pem(&chain_pem, &key.to_pem(), None).expect("rogue");

            let pinned = client_config_pinned(c.ca.pin()).expect("pinned");
            let (res, _) = handshake(rogue.clone(), pinned, "master.lan");
            let err = res.expect_err("a pinned client must refuse a node certificate");
            // Refused for the missing marker (legacy) or for the missing serverAuth.
            assert_eq!(
                legacy_marker(&err),
                legacy,
                "{role} legacy={legacy}: {err:?}"
            );
            assert!(
                err.to_string().contains("invalid peer certificate"),
                "{err}"
            );

            let mtls = node_client(&c.ca, "victim", Role::Compute);
            let (res, _) = handshake(rogue, mtls, "master.lan");
            let err = res.expect_err("an mTLS client must refuse a node certificate");
            assert!(
                err.to_string().contains("invalid peer certificate"),
                "{err}"
            );
        }
    }

    /// Whether a handshake error is the missing master marker.
    fn legacy_marker(err: &std::io::Error) -> bool {
        format!("{err:?}").contains("NotTheMaster")
    }

    #[test]
    fn the_masters_serving_certificate_carries_the_marker_and_node_certificates_do_not() {
        let c = cluster();
        let now = OffsetDateTime::now_utc();
        let serving =
            c.ca.issue_serving_cert(&["m".into()], &[], SERVING_CERT_LIFETIME, now)
                .expect("serving");
        let der = pki::cert_from_pem(&serving.cert_pem, "serving").expect("der");
        assert!(pki::require_master_cert(&der).is_ok());
        let key = NodeKey::generate().expect("key");
        let node =
            c.ca.sign_csr(
                &key.csr_pem("n1").expect("csr"),
                &NodeIdentity::new("n1", Role::Compute).expect("id"),
                NODE_CERT_LIFETIME,
                now,
            )
            .expect("node");
        let der = pki::cert_from_pem(&node.cert_pem, "node").expect("der");
        let err = pki::require_master_cert(&der).expect_err("no marker");
        assert!(
            err.to_string()
                .contains("not the master's serving certificate"),
            "{err}"
        );
    }

    #[test]
    fn mtls_client_is_identified_by_the_server() {
        let c = cluster();
        let client = node_client(&c.ca, "rack1-n3", Role::Compute);
        let (client_res, server_res) = handshake(c.server.clone(), client, "master.lan");
        assert!(client_res.is_ok(), "{client_res:?}");
        let accepted = server_res.expect("server");
        assert_eq!(
            accepted.identity,
            Some(Ok(NodeIdentity::new("rack1-n3", Role::Compute).expect("id")))
        );
    }

    #[test]
    fn mtls_client_checks_the_server_name() {
        let c = cluster();
        let client = node_client(&c.ca, "n1", Role::Compute);
        let (client_res, _) = handshake(c.server.clone(), client, "not-the-master.lan");
        assert!(client_res.is_err());
    }

    #[test]
    fn server_refuses_a_client_cert_from_another_ca() {
        let c = cluster();
        let other = ClusterCa::create("other", OffsetDateTime::now_utc()).expect("other");
        // The client trusts our CA for the server but presents a cert from another CA.
        let client = node_client_from(&other, &c.ca, "n1", Role::Admin);
        let (_, server_res) = handshake(c.server.clone(), client, "master.lan");
        assert!(server_res.is_err(), "{server_res:?}");
    }

    #[test]
    fn tls12_only_client_is_refused() {
        let c = cluster();
        let provider = provider();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("tls12 versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                pin: c.ca.pin(),
                clock: Clock::Local,
                provider: super::provider(),
            }))
            .with_no_client_auth();
        let (client_res, server_res) = handshake(c.server.clone(), client, "master.lan");
        assert!(client_res.is_err());
        let err = server_res.expect_err("server must refuse");
        assert!(err.contains("peer is incompatible"), "{err}");
    }

    #[test]
    fn pinned_and_mtls_clients_refuse_a_tls12_only_server() {
        let c = cluster();
        let now = OffsetDateTime::now_utc();
        let serving =
            c.ca.issue_serving_cert(&["master.lan".into()], &[], SERVING_CERT_LIFETIME, now)
                .expect("serving");
        let tls12_server = || {
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .expect("tls12 versions")
                .with_no_client_auth()
                .with_single_cert(
                    pki::certs_from_pem(&serving.chain_pem, "test").expect("chain"),
                    pki::key_from_pem(&serving.key_pem, "test").expect("key"),
                )
                .expect("tls12 server")
        };
        let clients = [
            client_config_pinned(c.ca.pin()).expect("pinned"),
            node_client(&c.ca, "n1", Role::Compute),
        ];
        for client in clients {
            let (client_res, server_res) = handshake(tls12_server(), client, "master.lan");
            assert!(client_res.is_err() && server_res.is_err());
        }
    }
}
