//! The HTTPS client of the master's API, shared by the agent (inside `nodeos`) and the
//! `cloudos` CLI.
//!
//! - [`join`]: first contact with a token. The connection uses `tls::client_config_pinned`,
//!   so the token's secret is only sent once the master's CA matched the token's pin; the key
//!   is made here and never leaves the caller.
//! - [`master_time`]: the master's clock, read over a connection checked against the
//!   token's pin at a time inside the master's certificates' validity, for a node whose own
//!   clock is wrong at first contact; nothing secret is sent.
//! - [`ApiClient`]: every later call, over mTLS with the identity [`join`] returned: the admin
//!   endpoints, certificate renewal, and the raw TLS stream the agent runs its WebSocket on.
//!
//! Each call opens its own connection (HTTP/1.1 over rustls, TLS 1.3): the CLI makes one or
//! two calls per run and the agent's long-lived traffic goes over its WebSocket, so pooling
//! would buy nothing. Errors are [`ClientError`]s whose messages say what to do; the master's
//! own [`ErrorBody`] messages are passed through.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

mod body;
use body::RequestBody;

use crate::api::{
    paths, BackupRequest, BackupSummary, ClusterStatus, ErrorBody, ErrorCode, JoinRequest,
    JoinResponse, NodeInfo, NodeLabelRequest, RenewRequest, TimeResponse, TokenCheckRequest,
    TokenCheckResponse, TokenCreateRequest, TokenCreateResponse, TokenInfo, UserInfo,
    BACKUP_SUMMARY_HEADER,
};
use crate::identity::Role;
use crate::pki::{self, CaPin, NodeKey, PkiError};
use crate::tls::{self, TlsError};
use crate::token::Token;
use crate::workload::{
    LogLine, ScaleRequest, ServiceCreateRequest, ServiceInfo, TaskCreateRequest, TaskInfo,
    WorkloadList,
};

/// The master's API port when an address names only a host.
pub const DEFAULT_API_PORT: u16 = 9443;
/// How long to wait for the TCP connection and, separately, for the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, from sending to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger answers are refused: a node list of thousands of nodes is a few MiB.
const MAX_RESPONSE_BYTES: usize = 32 << 20;
/// Largest `/output` archive moved between node, master and CLI.
pub const MAX_TRANSFER_BYTES: usize = 256 << 20;
/// Deadline for moving an `/output` archive.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of the API client. The messages are meant to be shown as they are.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{input}` is not a master address: {why}; use host:port, such as 10.0.0.5:9443")]
    Address { input: String, why: String },
    #[error("master unreachable at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The `TlsError::PinMismatch` message, with the address that answered.
    #[error("{message} (master at {addr})")]
    PinMismatch { addr: String, message: String },
    #[error("TLS with the master at {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// The master's message, which says which token and when (`ErrorCode::TokenInvalid`).
    #[error("{message}")]
    TokenInvalid { message: String },
    #[error("the master refused: {message}")]
    Refused {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("the master at {addr} sent an unexpected answer: {why}")]
    Protocol { addr: String, why: String },
    #[error("the token is for the {got} role, not {expected}; create one with `cloudos token create --role {expected}`")]
    WrongRole { expected: Role, got: Role },
    #[error("`{value}` cannot be used in a request path; names use letters, digits, `-` and `.`")]
    PathSegment { value: String },
    #[error("bad credentials: {0}")]
    Credentials(#[from] PkiError),
    #[error(transparent)]
    Config(#[from] TlsError),
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether trying again later may succeed (the master is down or overloaded), as opposed
    /// to an answer that will not change (wrong pin, bad token, refused).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Tls { .. } => true,
            ClientError::Protocol { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The error code from the master's answer, when there was one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => *code,
            ClientError::TokenInvalid { .. } => Some(ErrorCode::TokenInvalid),
            _ => None,
        }
    }

    /// Classifies an error of a connection to `addr` (connect, handshake, or a read later on,
    /// which is where TLS 1.3 reports that the server refused our client certificate).
    pub fn from_transport(addr: &str, err: &(dyn StdError + 'static)) -> ClientError {
        let addr = addr.to_owned();
        if let Some(mismatch) = tls::pin_mismatch(err) {
            return ClientError::PinMismatch {
                addr,
                message: mismatch.to_string(),
            };
        }
        if let Some(tls_err) = find_in_chain::<rustls::Error>(err) {
            return ClientError::Tls {
                addr,
                reason: tls_err.to_string(),
            };
        }
        let reason = match find_in_chain::<std::io::Error>(err) {
            Some(io) => io.to_string(),
            None => err.to_string(),
        };
        ClientError::Unreachable { addr, reason }
    }
}

/// The first error of type `T` in `err`'s chain, looking inside `io::Error` payloads too.
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
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

/// The error for a non-2xx answer: the master's [`ErrorBody`] when it sent one.
pub fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            code: ErrorCode::TokenInvalid,
            message,
        }) => ClientError::TokenInvalid { message },
        Ok(ErrorBody { code, message }) => ClientError::Refused {
            status,
            code: Some(code),
            message,
        },
        Err(_) => {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            let text = text.trim();
            ClientError::Refused {
                status,
                code: None,
                message: if text.is_empty() {
                    format!("HTTP status {status}")
                } else {
                    format!("HTTP status {status}: {text}")
                },
            }
        }
    }
}

/// A master's `host:port`. Parsed from `host`, `host:port`, `[v6]:port`, a bare IPv6
/// address, or any of these after `https://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAddr {
    /// Without brackets.
    pub host: String,
    pub port: u16,
}

impl FromStr for MasterAddr {
    type Err = ClientError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ClientError::Address {
            input: input.to_owned(),
            why: why.to_owned(),
        };
        let s = input.trim();
        let s = s.strip_prefix("https://").unwrap_or(s);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.contains('/') || s.contains('@') || s.chars().any(char::is_whitespace) {
            return Err(err("it must be only a host and a port"));
        }
        let parse_port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(err("the port must be a number from 1 to 65535")),
            Ok(port) => Ok(port),
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| err("`[` without `]`"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, parse_port(p)?),
                None if after.is_empty() => (host, DEFAULT_API_PORT),
                None => return Err(err("unexpected text after `]`")),
            }
        } else if s.parse::<IpAddr>().is_ok() {
            (s, DEFAULT_API_PORT)
        } else {
            match s.rsplit_once(':') {
                Some((host, p)) => (host, parse_port(p)?),
                None => (s, DEFAULT_API_PORT),
            }
        };
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        if ServerName::try_from(host).is_err() {
            return Err(err("the host is neither an IP address nor a DNS name"));
        }
        Ok(MasterAddr {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_owned()).map_err(|_| ClientError::Address {
        input: name.to_owned(),
        why: "the master's name is neither an IP address nor a DNS name".to_owned(),
    })
}

/// What a successful join (or renewal) leaves the caller: its own key and certificate, the
/// cluster CA, and where and under which name to reach the master from now on.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinedIdentity {
    /// PKCS#8 PEM of the key made for this join; it never left this process.
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub cluster_name: String,
    pub role: Role,
    pub renew_after: OffsetDateTime,
    /// `host:port` the master answered on.
    pub master_addr: String,
    /// The name to verify the master's certificate against on mTLS connections: the
    /// address's host when the serving certificate names it, else a name it does carry (a
    /// master behind NAT is reached by an address its certificate cannot know).
    pub master_name: String,
}

impl fmt::Debug for JoinedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinedIdentity")
            .field("key_pem", &"<redacted>")
            .field("cluster_name", &self.cluster_name)
            .field("role", &self.role)
            .field("renew_after", &self.renew_after)
            .field("master_addr", &self.master_addr)
            .field("master_name", &self.master_name)
            .finish_non_exhaustive()
    }
}

/// Joins the cluster of the master at `master` (`host:port`) with `token`: checks the
/// master's CA against the token's pin, makes a key, sends a CSR for `node_name`, and checks
/// that the token granted `expect_role` when given.
pub async fn join(
    master: &str,
    token: &Token,
    node_name: &str,
    arch: &str,
    labels: &BTreeMap<String, String>,
    expect_role: Option<Role>,
) -> Result<JoinedIdentity, ClientError> {
    let addr: MasterAddr = master.parse()?;
    let key = NodeKey::generate()?;
    let request = JoinRequest {
        token_id: token.id().clone(),
        token_secret: token.secret().to_owned(),
        csr_pem: key.csr_pem(node_name)?,
        node_name: node_name.to_owned(),
        arch: arch.to_owned(),
        labels: labels.clone(),
    };
    let config = Arc::new(tls::client_config_pinned(token.pin())?);
    let stream = connect(&addr, config, server_name(&addr.host)?).await?;
    let master_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| name_to_verify(&addr.host, leaf))
        .unwrap_or_else(|| addr.host.clone());
    let body = serde_json::to_vec(&request).map_err(|e| protocol(&addr, e))?;
    let (status, answer) = exchange(stream, &addr, Method::POST, paths::JOIN, Some(body)).await?;
    let response: JoinResponse = decode(&addr, status, &answer)?;
    let identity = joined(&addr, master_name, key, response, Some(token.pin()))?;
    match expect_role {
        Some(expected) if expected != identity.role => Err(ClientError::WrongRole {
            expected,
            got: identity.role,
        }),
        _ => Ok(identity),
    }
}

/// Joins the masters of the cluster at `master` (`host:port`) with a master `token`: the
/// connection is checked against the token's pin before the token is sent, as for
/// [`join`]. The request carries the joining master's name, address and etcd CSR.
pub async fn join_masters(
    master: &str,
    token: &Token,
    request: &crate::api::MasterJoinRequest,
) -> Result<crate::api::MasterJoinResponse, ClientError> {
    let addr: MasterAddr = master.parse()?;
    let config = Arc::new(tls::client_config_pinned(token.pin())?);
    let stream = connect(&addr, config, server_name(&addr.host)?).await?;
    let body = serde_json::to_vec(request).map_err(|e| protocol(&addr, e))?;
    let (status, answer) =
        exchange(stream, &addr, Method::POST, paths::MASTER_JOIN, Some(body)).await?;
    decode(&addr, status, &answer)
}

/// How far this machine's clock is from its master's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterTime {
    /// Add this to the local clock to get the master's (negative: the local clock is ahead).
    pub offset: time::Duration,
    /// The request's round trip; the offset is right to within half of it.
    pub round_trip: Duration,
}

/// The master's clock, for a node that cannot check certificates at its own time (a board
/// without a real-time clock in 1970, a machine years ahead). The connection is pinned to
/// `pin` like a join's, but the validity dates are checked at a time when the master's
/// certificates are valid instead of at this machine's clock
/// ([`tls::client_config_pinned_any_clock`]): only a server holding a serving certificate
/// of the pinned CA can answer. Nothing secret is sent. The caller sets its clock, then
/// joins with the normal checks.
pub async fn master_time(master: &str, pin: CaPin) -> Result<MasterTime, ClientError> {
    let addr: MasterAddr = master.parse()?;
    let config = Arc::new(tls::client_config_pinned_any_clock(pin)?);
    let stream = connect(&addr, config, server_name(&addr.host)?).await?;
    let sent = std::time::Instant::now();
    let (status, answer) = exchange(stream, &addr, Method::GET, paths::TIME, None).await?;
    let round_trip = sent.elapsed();
    let received = OffsetDateTime::now_utc();
    let response: TimeResponse = decode(&addr, status, &answer)?;
    // The master read its clock about half way through the round trip.
    let master_now = response.now + round_trip / 2;
    Ok(MasterTime {
        offset: master_now - received,
        round_trip,
    })
}

/// Asks the master at `master` whether a join with `token` would be admitted now, without
/// using the token up. The connection is pinned to the token's CA, so the secret only goes
/// to a master of the token's cluster; another cluster's master is
/// [`ClientError::PinMismatch`].
pub async fn check_token(master: &str, token: &Token) -> Result<TokenCheckResponse, ClientError> {
    let addr: MasterAddr = master.parse()?;
    let request = TokenCheckRequest {
        token_id: token.id().clone(),
        token_secret: token.secret().to_owned(),
    };
    let config = Arc::new(tls::client_config_pinned(token.pin())?);
    let stream = connect(&addr, config, server_name(&addr.host)?).await?;
    let body = serde_json::to_vec(&request).map_err(|e| protocol(&addr, e))?;
    let (status, answer) =
        exchange(stream, &addr, Method::POST, paths::JOIN_CHECK, Some(body)).await?;
    decode(&addr, status, &answer)
}

/// Builds the identity from the master's answer. With `pin`, the CA in the answer must be
/// the pinned one: it becomes the only trust anchor, so a master cannot swap it.
fn joined(
    addr: &MasterAddr,
    master_name: String,
    key: NodeKey,
    response: JoinResponse,
    pin: Option<CaPin>,
) -> Result<JoinedIdentity, ClientError> {
    let ca = pki::cert_from_pem(&response.ca_pem, "cluster CA in the join answer")?;
    if let Some(pin) = pin {
        let got = CaPin::of_cert(&ca)?;
        if got != pin {
            return Err(protocol(
                addr,
                format!("its answer carries CA {got}, not the pinned {pin}"),
            ));
        }
    }
    pki::cert_from_pem(&response.cert_pem, "certificate in the join answer")?;
    Ok(JoinedIdentity {
        key_pem: key.to_pem(),
        cert_pem: response.cert_pem,
        ca_pem: response.ca_pem,
        cluster_name: response.cluster_name,
        role: response.role,
        renew_after: response.renew_after,
        master_addr: addr.to_string(),
        master_name,
    })
}

/// The name to verify a serving certificate against later: the master's own DNS name,
/// else `host` when the certificate carries it, else its first IP address.
fn name_to_verify(host: &str, leaf_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &sans.value.general_names {
        match name {
            GeneralName::DNSName(d) if !d.starts_with('*') => dns.push(d.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                ips.extend(ip);
            }
            _ => {}
        }
    }
    // The master's own name (its first DNS name besides localhost) stays
    // valid when its addresses change (a new DHCP lease, a move), so it is
    // what later connections verify; the dialled host is the fallback.
    if let Some(own) = dns.iter().find(|d| d.as_str() != "localhost") {
        return Some(own.clone());
    }
    let named = match host.parse::<IpAddr>() {
        Ok(ip) => ips.contains(&ip),
        Err(_) => dns.iter().any(|d| d.eq_ignore_ascii_case(host)),
    };
    if named {
        return Some(host.to_owned());
    }
    dns.into_iter()
        .next()
        .or_else(|| ips.first().map(IpAddr::to_string))
}

/// An mTLS client of the master's API.
#[derive(Clone)]
pub struct ApiClient {
    addr: MasterAddr,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    ca_pem: String,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr.to_string())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the master at `master` (`host:port`) whose certificate must carry
    /// `master_name`, trusting only `ca_pem`, presenting `cert_pem` with `key_pem`.
    pub fn new(
        master: &str,
        master_name: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, ClientError> {
        let addr: MasterAddr = master.parse()?;
        let ca = pki::cert_from_pem(ca_pem, "cluster CA certificate")?;
        let chain = pki::certs_from_pem(cert_pem, "client certificate")?;
        let key = pki::key_from_pem(key_pem, "client key")?;
        let config = tls::client_config_mtls(&ca, chain, key)?;
        Ok(ApiClient {
            addr,
            server_name: server_name(master_name)?,
            config: Arc::new(config),
            ca_pem: ca_pem.to_owned(),
        })
    }

    /// The client for an identity [`join`] returned.
    pub fn from_identity(id: &JoinedIdentity) -> Result<Self, ClientError> {
        ApiClient::new(
            &id.master_addr,
            &id.master_name,
            &id.ca_pem,
            &id.cert_pem,
            &id.key_pem,
        )
    }

    /// `host:port` of the master.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// A new mTLS connection to the master, for protocols other than plain requests (the
    /// agent's WebSocket). The TLS 1.3 handshake is done; a refused client certificate shows
    /// on the first read, classify it with [`ClientError::from_transport`].
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, ClientError> {
        connect(
            &self.addr,
            Arc::clone(&self.config),
            self.server_name.clone(),
        )
        .await
    }

    /// [`connect`](Self::connect) from a chosen local address: a load generator spreads
    /// its simulated agents over loopback addresses, as real agents come from many hosts
    /// (the master caps connections per source).
    pub async fn connect_from(
        &self,
        from: std::net::IpAddr,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        connect_tcp(
            &self.addr,
            Arc::clone(&self.config),
            self.server_name.clone(),
            Some(from),
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let stream = self.connect().await?;
        let (status, answer) = exchange(stream, &self.addr, method, path, body).await?;
        decode(&self.addr, status, &answer)
    }

    /// A call whose successful answer has no body worth reading.
    async fn call_no_answer(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let stream = self.connect().await?;
        let (status, answer) = exchange(stream, &self.addr, method, path, None).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(refusal(status, &answer))
        }
    }

    fn json(&self, value: &impl Serialize) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| protocol(&self.addr, e))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        self.call(Method::GET, paths::STATUS, None).await
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        self.call(Method::GET, paths::NODES, None).await
    }

    /// `GET /v1/nodes/<name>`.
    pub async fn node(&self, name: &str) -> Result<NodeInfo, ClientError> {
        let path = format!("{}/{}", paths::NODES, path_segment(name)?);
        self.call(Method::GET, &path, None).await
    }

    /// `DELETE /v1/nodes/<name>`: evicts the node and revokes its certificate.
    pub async fn remove_node(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::NODES, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `POST /v1/nodes/<name>/labels`: sets, removes or approves the labels selectors
    /// match.
    pub async fn label_node(
        &self,
        name: &str,
        request: &NodeLabelRequest,
    ) -> Result<NodeInfo, ClientError> {
        let path = format!("{}/{}/labels", paths::NODES, path_segment(name)?);
        let body = self.json(request)?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `GET /v1/users`.
    pub async fn users(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.call(Method::GET, paths::USERS, None).await
    }

    /// `PUT /v1/password`: the caller's own dashboard password.
    pub async fn set_password(&self, password: &str) -> Result<UserInfo, ClientError> {
        let body = self.json(&crate::api::PasswordRequest {
            password: password.to_owned(),
        })?;
        self.call(Method::PUT, paths::PASSWORD, Some(body)).await
    }

    /// `POST /v1/dashboard/link`: a one-time dashboard login.
    pub async fn dashboard_link(&self) -> Result<crate::api::DashboardLink, ClientError> {
        self.call(Method::POST, paths::DASHBOARD_LINK, None).await
    }

    /// `POST /v1/users`: a one-use login token for a new user.
    pub async fn add_user(
        &self,
        request: &crate::api::UserAddRequest,
    ) -> Result<TokenCreateResponse, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::USERS, Some(body)).await
    }

    /// `PUT /v1/users/<name>`: a user's new role.
    pub async fn set_user_role(&self, name: &str, role: Role) -> Result<UserInfo, ClientError> {
        let path = format!("{}/{}", paths::USERS, path_segment(name)?);
        let body = self.json(&crate::api::UserRoleRequest { role })?;
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `DELETE /v1/users/<name>`: revokes every certificate of that user.
    pub async fn remove_user(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::USERS, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `GET /v1/apikeys`.
    pub async fn api_keys(&self) -> Result<Vec<crate::api::ApiKeyInfo>, ClientError> {
        self.call(Method::GET, paths::API_KEYS, None).await
    }

    /// `POST /v1/apikeys`.
    pub async fn create_api_key(
        &self,
        request: &crate::api::ApiKeyCreateRequest,
    ) -> Result<crate::api::ApiKeyCreateResponse, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::API_KEYS, Some(body)).await
    }

    /// `DELETE /v1/apikeys/<id>`.
    pub async fn revoke_api_key(&self, id: &str) -> Result<crate::api::ApiKeyInfo, ClientError> {
        let path = format!("{}/{}", paths::API_KEYS, path_segment(id)?);
        self.call(Method::DELETE, &path, None).await
    }

    /// `GET /v1/audit?since=&user=&limit=`.
    pub async fn audit(
        &self,
        since: Option<&str>,
        user: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<crate::api::AuditEntry>, ClientError> {
        let mut query = Vec::new();
        for (key, value) in [("since", since), ("user", user)] {
            if let Some(value) = value {
                query.push(format!("{key}={}", percent_encode(value)));
            }
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let path = match query.is_empty() {
            true => paths::AUDIT.to_owned(),
            false => format!("{}?{}", paths::AUDIT, query.join("&")),
        };
        self.call(Method::GET, &path, None).await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(
        &self,
        request: &TokenCreateRequest,
    ) -> Result<TokenCreateResponse, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::TOKENS, Some(body)).await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, paths::TOKENS, None).await
    }

    /// `DELETE /v1/tokens/<id>`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::TOKENS, path_segment(id)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `POST /v1/tasks`.
    pub async fn create_task(&self, request: &TaskCreateRequest) -> Result<TaskInfo, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::TASKS, Some(body)).await
    }

    /// `GET /v1/tasks/<id>`.
    pub async fn task(&self, id: &str) -> Result<TaskInfo, ClientError> {
        let path = format!("{}/{}", paths::TASKS, path_segment(id)?);
        self.call(Method::GET, &path, None).await
    }

    /// `POST /v1/tasks/<id>/cancel`: the task as it is after the cancel.
    pub async fn cancel_task(&self, id: &str) -> Result<TaskInfo, ClientError> {
        let path = format!("{}/{}/cancel", paths::TASKS, path_segment(id)?);
        self.call(Method::POST, &path, None).await
    }

    /// `GET /v1/workloads`: tasks and services, as `cloudos ps` shows them.
    pub async fn workloads(&self) -> Result<WorkloadList, ClientError> {
        self.call(Method::GET, paths::WORKLOADS, None).await
    }

    /// `POST /v1/services`.
    pub async fn create_service(
        &self,
        request: &ServiceCreateRequest,
    ) -> Result<ServiceInfo, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::SERVICES, Some(body)).await
    }

    /// `PUT /v1/services/<name>`: `cloudos deploy`, which makes the service or starts its
    /// update to a new spec.
    pub async fn deploy_service(
        &self,
        name: &str,
        request: &crate::revision::ServiceDeployRequest,
    ) -> Result<ServiceInfo, ClientError> {
        let path = format!("{}/{}", paths::SERVICES, path_segment(name)?);
        let body = self.json(request)?;
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `POST /v1/services/<name>/rollback`.
    pub async fn rollback_service(
        &self,
        name: &str,
        to: Option<u32>,
    ) -> Result<ServiceInfo, ClientError> {
        let path = format!("{}/{}/rollback", paths::SERVICES, path_segment(name)?);
        let body = self.json(&crate::revision::RollbackRequest { to })?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `POST /v1/secrets`.
    pub async fn create_secret(
        &self,
        request: &crate::secret::SecretCreateRequest,
    ) -> Result<crate::secret::SecretInfo, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::SECRETS, Some(body)).await
    }

    /// `GET /v1/secrets`: names and sizes, never values.
    pub async fn secrets(&self) -> Result<crate::secret::SecretList, ClientError> {
        self.call(Method::GET, paths::SECRETS, None).await
    }

    /// `DELETE /v1/secrets/<name>`.
    pub async fn remove_secret(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::SECRETS, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `POST /v1/registries`: the cluster logs in to a registry (again: replaces).
    pub async fn registry_login(
        &self,
        login: &crate::registry::RegistryLogin,
    ) -> Result<crate::registry::RegistryInfo, ClientError> {
        let body = self.json(login)?;
        self.call(Method::POST, paths::REGISTRIES, Some(body)).await
    }

    /// `GET /v1/registries`: registries and user names, never a password.
    pub async fn registries(&self) -> Result<crate::registry::RegistryList, ClientError> {
        self.call(Method::GET, paths::REGISTRIES, None).await
    }

    /// `DELETE /v1/registries/<registry>`.
    pub async fn registry_logout(&self, registry: &str) -> Result<(), ClientError> {
        // A registry has a `:` before its port, which a path segment may hold.
        crate::registry::validate_registry(registry).map_err(|_| ClientError::PathSegment {
            value: registry.to_owned(),
        })?;
        let path = format!("{}/{registry}", paths::REGISTRIES);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `GET /v1/volumes`.
    pub async fn volumes(&self) -> Result<crate::volume::VolumeList, ClientError> {
        self.call(Method::GET, paths::VOLUMES, None).await
    }

    /// `PUT /v1/volumes/<name>`: makes the volume, or sets its size limit.
    pub async fn set_volume(
        &self,
        name: &str,
        request: &crate::volume::VolumeRequest,
    ) -> Result<crate::volume::VolumeChange, ClientError> {
        let path = format!("{}/{}", paths::VOLUMES, path_segment(name)?);
        let body = self.json(request)?;
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `DELETE /v1/masters/<name>`: removes a master from the masters (its etcd member
    /// leaves; it stops).
    pub async fn remove_master(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::MASTERS, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `DELETE /v1/volumes/<name>`: forgets the volume; its node deletes its data.
    pub async fn remove_volume(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::VOLUMES, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `GET /v1/services/<name>`.
    pub async fn service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        let path = format!("{}/{}", paths::SERVICES, path_segment(name)?);
        self.call(Method::GET, &path, None).await
    }

    /// `POST /v1/services/<name>/scale`.
    pub async fn scale_service(
        &self,
        name: &str,
        replicas: u32,
    ) -> Result<ServiceInfo, ClientError> {
        let path = format!("{}/{}/scale", paths::SERVICES, path_segment(name)?);
        let body = self.json(&ScaleRequest { replicas })?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `DELETE /v1/services/<name>`: stops its replicas and forgets it.
    pub async fn delete_service(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", paths::SERVICES, path_segment(name)?);
        self.call_no_answer(Method::DELETE, &path).await
    }

    /// `GET /v1/tasks/<id>/output`: the tar archive of the task's `/output`.
    pub async fn task_output(&self, id: &str) -> Result<Bytes, ClientError> {
        let path = format!("{}/{}/output", paths::TASKS, path_segment(id)?);
        self.transfer(Method::GET, &path, None).await
    }

    /// `GET /install.sh`: the cloud installer this master serves, read over this verified
    /// connection so the install line can pin its digest.
    pub async fn install_script(&self) -> Result<Bytes, ClientError> {
        self.transfer(Method::GET, "/install.sh", None).await
    }

    /// `GET /v1/releases`.
    pub async fn releases(&self) -> Result<crate::api::ReleaseList, ClientError> {
        self.call(Method::GET, paths::RELEASES, None).await
    }

    /// `POST /v1/releases`: uploads a signed update bundle, streamed from its file.
    pub async fn add_release(
        &self,
        bundle: &std::path::Path,
    ) -> Result<crate::api::ReleaseInfo, ClientError> {
        let body = RequestBody::file(bundle)
            .await
            .map_err(|e| ClientError::Io {
                what: format!("the bundle {}", bundle.display()),
                source: e,
            })?;
        let answer = self
            .transfer(Method::POST, paths::RELEASES, Some(body))
            .await?;
        serde_json::from_slice(&answer).map_err(|e| protocol(&self.addr, e))
    }

    /// `POST /v1/nodes/<name>/upgrade`.
    pub async fn upgrade_node(
        &self,
        name: &str,
        request: &crate::api::NodeUpgradeRequest,
    ) -> Result<crate::api::NodeUpgradeStarted, ClientError> {
        let path = format!("{}/{}/upgrade", paths::NODES, path_segment(name)?);
        let body = self.json(request)?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `POST /v1/runs/<run>/output`: a node hands in a finished run's `/output` archive.
    pub async fn upload_output(&self, run: &str, tar: Vec<u8>) -> Result<(), ClientError> {
        let path = format!("{}/{}/output", paths::RUNS, path_segment(run)?);
        self.transfer(Method::POST, &path, Some(RequestBody::bytes(tar)))
            .await?;
        Ok(())
    }

    /// [`ApiClient::upload_output`] from an archive file, streamed: never more than a
    /// chunk of it in memory.
    pub async fn upload_output_file(
        &self,
        run: &str,
        archive: &std::path::Path,
    ) -> Result<(), ClientError> {
        let path = format!("{}/{}/output", paths::RUNS, path_segment(run)?);
        let body = RequestBody::file(archive)
            .await
            .map_err(|e| ClientError::Io {
                what: format!("the archive {}", archive.display()),
                source: e,
            })?;
        self.transfer(Method::POST, &path, Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/inputs`: a task's input files, as a tar archive; the master keeps it by
    /// digest (the same files uploaded twice are kept once).
    pub async fn upload_input(
        &self,
        tar: Vec<u8>,
    ) -> Result<crate::workload::InputInfo, ClientError> {
        let answer = self
            .transfer(Method::POST, paths::INPUTS, Some(RequestBody::bytes(tar)))
            .await?;
        serde_json::from_slice(&answer).map_err(|e| protocol(&self.addr, e))
    }

    /// `GET /v1/runs/<run>/input`: a node fetches the input archive of a run assigned to it.
    pub async fn download_input(&self, run: &str) -> Result<Bytes, ClientError> {
        let path = format!("{}/{}/input", paths::RUNS, path_segment(run)?);
        self.transfer(Method::GET, &path, None).await
    }

    /// A request that moves a tar archive (either way), with the transfer size and deadline.
    async fn transfer(
        &self,
        method: Method,
        path: &str,
        tar: Option<RequestBody>,
    ) -> Result<Bytes, ClientError> {
        let stream = self.connect().await?;
        let body = tar.map(|t| (t, "application/x-tar"));
        let (status, answer) = exchange_with(
            stream,
            &self.addr,
            method,
            path,
            body,
            MAX_TRANSFER_BYTES,
            TRANSFER_TIMEOUT,
        )
        .await?;
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(refusal(status, &answer))
        }
    }

    /// `GET /v1/tasks/<id>/logs[?follow=true]`: calls `each` with every log line as it
    /// arrives; with `follow`, until the task has ended and its last output is in.
    pub async fn task_logs(
        &self,
        id: &str,
        follow: bool,
        mut each: impl FnMut(LogLine),
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}/{}/logs?follow={follow}",
            paths::TASKS,
            path_segment(id)?
        );
        let shown = self.addr.to_string();
        let transport = |e: &(dyn StdError + 'static)| ClientError::from_transport(&shown, e);
        let response = self
            .open_stream(
                Method::GET,
                &path,
                "application/x-ndjson",
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        let mut body = response.into_body();
        // Lines can be split across frames: keep the unfinished tail.
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(&e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                let parsed: LogLine = serde_json::from_slice(line)
                    .map_err(|e| protocol(&self.addr, format!("bad log line ({e})")))?;
                each(parsed);
            }
        }
        Ok(())
    }

    /// `POST /v1/backup`: the master's encrypted backup, streamed into `out` as it arrives
    /// (never all in memory); what it holds. On an error `out` may hold part of it: the
    /// caller writes to a temporary file and renames it only on success.
    pub async fn create_backup(
        &self,
        passphrase: &str,
        out: &mut impl std::io::Write,
    ) -> Result<BackupSummary, ClientError> {
        let body = self.json(&BackupRequest {
            passphrase: passphrase.to_owned(),
        })?;
        // The master writes the whole backup before it answers.
        let response = self
            .open_stream(
                Method::POST,
                paths::BACKUP,
                "application/octet-stream",
                Some((RequestBody::bytes(body), "application/json")),
                TRANSFER_TIMEOUT,
            )
            .await?;
        let summary = response
            .headers()
            .get(BACKUP_SUMMARY_HEADER)
            .and_then(|v| serde_json::from_slice::<BackupSummary>(v.as_bytes()).ok());
        let summary =
            summary.ok_or_else(|| protocol(&self.addr, "the backup came without its summary"))?;
        self.save_body(response, out, "the backup").await?;
        Ok(summary)
    }

    /// `GET /v1/releases/<version>/<arch>`: a kept bundle, streamed into `out` as it
    /// arrives (tens of MB; a node never holds it in memory). The caller checks it
    /// (`cloudos_release::bundle::open`); this connection only proves which master sent it.
    /// The byte count.
    pub async fn release_bundle_to(
        &self,
        version: &str,
        arch: &str,
        out: &mut impl std::io::Write,
    ) -> Result<u64, ClientError> {
        let path = format!(
            "{}/{}/{}",
            paths::RELEASES,
            path_segment(version)?,
            path_segment(arch)?
        );
        let response = self
            .open_stream(
                Method::GET,
                &path,
                "application/x-tar",
                None,
                TRANSFER_TIMEOUT,
            )
            .await?;
        self.save_body(response, out, "the release bundle").await
    }

    /// Copies a streamed answer's body into `out`; a stall of [`TRANSFER_TIMEOUT`] between
    /// two pieces is an error. The byte count.
    async fn save_body(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        out: &mut impl std::io::Write,
        what: &str,
    ) -> Result<u64, ClientError> {
        let shown = self.addr.to_string();
        let transport = |e: &(dyn StdError + 'static)| ClientError::from_transport(&shown, e);
        let write_err = |e: std::io::Error| ClientError::Io {
            what: what.to_owned(),
            source: e,
        };
        let mut body = response.into_body();
        let mut bytes = 0u64;
        loop {
            let frame = tokio::time::timeout(TRANSFER_TIMEOUT, body.frame())
                .await
                .map_err(|_| {
                    unreachable(
                        &self.addr,
                        &format!("{what} stalled for {}s", TRANSFER_TIMEOUT.as_secs()),
                    )
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| transport(&e))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).map_err(write_err)?;
                bytes += data.len() as u64;
            }
        }
        out.flush().map_err(write_err)?;
        Ok(bytes)
    }

    /// A request whose answer is read as it arrives (logs that follow, a backup file): sent on
    /// a new connection; the response once its head came within `deadline`, or the master's
    /// refusal.
    async fn open_stream(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(RequestBody, &str)>,
        deadline: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let shown = self.addr.to_string();
        let transport = |e: &(dyn StdError + 'static)| ClientError::from_transport(&shown, e);
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, shown.clone())
            .header(ACCEPT, accept);
        let body = match body {
            Some((body, content_type)) => {
                request = request.header(CONTENT_TYPE, content_type);
                body
            }
            None => RequestBody::bytes(Vec::new()),
        };
        let request = request.body(body).map_err(|e| protocol(&self.addr, e))?;
        let response = tokio::time::timeout(deadline, sender.send_request(request))
            .await
            .map_err(|_| {
                unreachable(
                    &self.addr,
                    &format!("no answer within {}s", deadline.as_secs()),
                )
            })?
            .map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let answer = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(refusal(status, &answer));
        }
        Ok(response)
    }

    /// `POST /v1/renew` with a CSR for a new key: the identity to use from now on.
    pub async fn renew(&self, node_name: &str) -> Result<JoinedIdentity, ClientError> {
        let key = NodeKey::generate()?;
        let body = self.json(&RenewRequest {
            csr_pem: key.csr_pem(node_name)?,
        })?;
        let response: JoinResponse = self.call(Method::POST, paths::RENEW, Some(body)).await?;
        // The CA must stay the one this client trusts: renewal is not a way to swap it.
        let pin = CaPin::of_cert(&pki::cert_from_pem(&self.ca_pem, "cluster CA")?)?;
        let name = match &self.server_name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
            _ => self.addr.host.clone(),
        };
        joined(&self.addr, name, key, response, Some(pin))
    }

    /// `/v1/nodes/<name>/<operation>`.
    fn node_op_path(name: &str, operation: &str) -> Result<String, ClientError> {
        Ok(format!(
            "{}/{}/{operation}",
            paths::NODES,
            path_segment(name)?
        ))
    }

    /// `POST /v1/nodes/<name>/cordon` (`cordon: true`) or `…/uncordon`.
    pub async fn cordon_node(&self, name: &str, cordon: bool) -> Result<NodeInfo, ClientError> {
        let op = if cordon {
            paths::NODE_CORDON
        } else {
            paths::NODE_UNCORDON
        };
        let path = Self::node_op_path(name, op)?;
        self.call(Method::POST, &path, Some(b"{}".to_vec())).await
    }

    /// `POST /v1/nodes/<name>/drain`: starts draining (or finds the drain under way).
    pub async fn drain_node(
        &self,
        name: &str,
        request: &crate::nodeops::DrainRequest,
    ) -> Result<crate::nodeops::DrainStatus, ClientError> {
        let path = Self::node_op_path(name, paths::NODE_DRAIN)?;
        let body = self.json(request)?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `GET /v1/nodes/<name>/drain`: how the node's drain is going.
    pub async fn drain_status(
        &self,
        name: &str,
    ) -> Result<crate::nodeops::DrainStatus, ClientError> {
        let path = Self::node_op_path(name, paths::NODE_DRAIN)?;
        self.call(Method::GET, &path, None).await
    }

    /// `POST /v1/nodes/<name>/reboot`.
    pub async fn reboot_node(
        &self,
        name: &str,
    ) -> Result<crate::nodeops::RebootStarted, ClientError> {
        let path = Self::node_op_path(name, paths::NODE_REBOOT)?;
        self.call(Method::POST, &path, Some(b"{}".to_vec())).await
    }

    /// `POST /v1/nodes/<name>/rollback`.
    pub async fn rollback_node(
        &self,
        name: &str,
    ) -> Result<crate::rollout::RollbackStarted, ClientError> {
        let path = Self::node_op_path(name, paths::NODE_ROLLBACK)?;
        self.call(Method::POST, &path, Some(b"{}".to_vec())).await
    }

    /// `GET /v1/rollout`.
    pub async fn upgrade_status(&self) -> Result<crate::rollout::UpgradeStatus, ClientError> {
        self.call(Method::GET, paths::ROLLOUT, None).await
    }

    /// `POST /v1/rollout`.
    pub async fn start_rollout(
        &self,
        request: &crate::rollout::RolloutRequest,
    ) -> Result<crate::rollout::Rollout, ClientError> {
        let body = self.json(request)?;
        self.call(Method::POST, paths::ROLLOUT, Some(body)).await
    }

    /// `POST /v1/rollout/resume`.
    pub async fn resume_rollout(
        &self,
        request: &crate::rollout::RolloutResume,
    ) -> Result<crate::rollout::Rollout, ClientError> {
        let body = self.json(request)?;
        let path = format!("{}/resume", paths::ROLLOUT);
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `POST /v1/rollout/abort`.
    pub async fn abort_rollout(&self) -> Result<crate::rollout::Rollout, ClientError> {
        let path = format!("{}/abort", paths::ROLLOUT);
        self.call(Method::POST, &path, Some(b"{}".to_vec())).await
    }
}

/// Node names and token ids go into paths as they are: refuse anything that would need
/// escaping or change the path.
/// `value` as a query string value: unreserved characters as they are, the rest as `%XX`
/// (RFC 3986), so a time's `+` and `:` arrive as sent.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path_segment(value: &str) -> Result<&str, ClientError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(value)
    } else {
        Err(ClientError::PathSegment {
            value: value.to_owned(),
        })
    }
}

fn protocol(addr: &MasterAddr, why: impl fmt::Display) -> ClientError {
    ClientError::Protocol {
        addr: addr.to_string(),
        why: why.to_string(),
    }
}

fn unreachable(addr: &MasterAddr, reason: &str) -> ClientError {
    ClientError::Unreachable {
        addr: addr.to_string(),
        reason: reason.to_owned(),
    }
}

/// TCP, then the TLS handshake, each with [`CONNECT_TIMEOUT`].
async fn connect(
    addr: &MasterAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    connect_tcp(addr, config, name, None).await
}

/// [`connect`], from the local address `from` when given.
async fn connect_tcp(
    addr: &MasterAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    from: Option<std::net::IpAddr>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let shown = addr.to_string();
    let dial = async {
        let Some(from) = from else {
            return TcpStream::connect((addr.host.as_str(), addr.port)).await;
        };
        let target = tokio::net::lookup_host((addr.host.as_str(), addr.port))
            .await?
            .find(|t| t.is_ipv4() == from.is_ipv4())
            .ok_or_else(|| std::io::Error::other("no address of the local one's family"))?;
        let socket = if from.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(from, 0))?;
        socket.connect(target).await
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial)
        .await
        .map_err(|_| unreachable(addr, "no answer within 10s"))?
        .map_err(|e| ClientError::from_transport(&shown, &e))?;
    // Requests are small and each waits for its answer: do not let Nagle delay them.
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| unreachable(addr, "the TLS handshake did not finish within 10s"))?
    .map_err(|e| ClientError::from_transport(&shown, &e))
}

/// One HTTP/1.1 request on `stream`: the status and the whole body of the answer.
async fn exchange(
    stream: TlsStream<TcpStream>,
    addr: &MasterAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ClientError> {
    let body = body.map(|b| (RequestBody::bytes(b), "application/json"));
    exchange_with(
        stream,
        addr,
        method,
        path,
        body,
        MAX_RESPONSE_BYTES,
        REQUEST_TIMEOUT,
    )
    .await
}

/// [`exchange`] with a body of any type, an answer of up to `limit` bytes and a deadline.
async fn exchange_with(
    stream: TlsStream<TcpStream>,
    addr: &MasterAddr,
    method: Method,
    path: &str,
    body: Option<(RequestBody, &str)>,
    limit: usize,
    deadline: Duration,
) -> Result<(u16, Bytes), ClientError> {
    let shown = addr.to_string();
    let transport = |e: &(dyn StdError + 'static)| ClientError::from_transport(&shown, e);
    let work = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        // The connection future does the I/O; it ends when the answer is read and the
        // sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(ACCEPT, "application/json");
        let body = match body {
            Some((body, content_type)) => {
                request = request.header(CONTENT_TYPE, content_type);
                body
            }
            None => RequestBody::bytes(Vec::new()),
        };
        let request = request.body(body).map_err(|e| protocol(addr, e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(hyper_err) => transport(hyper_err.as_ref()),
                Err(other) => protocol(addr, other),
            })?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        unreachable(
            addr,
            &format!("no complete answer within {}s", deadline.as_secs()),
        )
    })?
}

fn decode<T: DeserializeOwned>(
    addr: &MasterAddr,
    status: u16,
    body: &[u8],
) -> Result<T, ClientError> {
    if !(200..300).contains(&status) {
        return Err(refusal(status, body));
    }
    serde_json::from_slice(body).map_err(|e| protocol(addr, format!("bad JSON ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeIdentity;
    use crate::pki::NodeKey;
    use crate::pki::{ClusterCa, NODE_CERT_LIFETIME, SERVING_CERT_LIFETIME};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn addresses() {
        let ok = [
            ("10.0.0.5:9443", "10.0.0.5", 9443),
            ("10.0.0.5", "10.0.0.5", DEFAULT_API_PORT),
            ("Master-1.lan:8443", "master-1.lan", 8443),
            ("https://master-1/", "master-1", DEFAULT_API_PORT),
            ("[::1]:9000", "::1", 9000),
            ("[fe80::1]", "fe80::1", DEFAULT_API_PORT),
            ("::1", "::1", DEFAULT_API_PORT),
        ];
        for (input, host, port) in ok {
            let addr: MasterAddr = input.parse().expect(input);
            assert_eq!((addr.host.as_str(), addr.port), (host, port), "{input}");
        }
        assert_eq!(
            "[::1]:9000".parse::<MasterAddr>().expect("v6").to_string(),
            "[::1]:9000"
        );
        let bad = [
            ("", "empty"),
            ("host:0", "port"),
            ("host:99999", "port"),
            ("host:abc", "port"),
            (":9443", "host is empty"),
            ("https://host/v1", "only a host"),
            ("[::1", "without `]`"),
            ("a b:1", "only a host"),
        ];
        for (input, want) in bad {
            let err = input.parse::<MasterAddr>().expect_err(input).to_string();
            assert!(
                err.contains(want) && err.contains("host:port"),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn refusals_carry_the_masters_message() {
        let body = |code: &str, msg: &str| format!(r#"{{"code":"{code}","message":"{msg}"}}"#);
        let expired = refusal(
            403,
            body(
                "token_invalid",
                "token abcdef expired at 2026-03-01T10:00:00Z",
            )
            .as_bytes(),
        );
        assert_eq!(
            expired.to_string(),
            "token abcdef expired at 2026-03-01T10:00:00Z"
        );
        assert!(!expired.is_retryable());
        assert_eq!(expired.code(), Some(ErrorCode::TokenInvalid));

        let wrong = refusal(401, body("unauthenticated", "wrong secret").as_bytes());
        assert_eq!(wrong.to_string(), "the master refused: wrong secret");
        assert_eq!(wrong.code(), Some(ErrorCode::Unauthenticated));

        let broken = refusal(502, b"<html>bad gateway</html>");
        assert_eq!(
            broken.to_string(),
            "the master refused: HTTP status 502: <html>bad gateway</html>"
        );
        assert!(broken.is_retryable());
        assert_eq!(
            refusal(404, b"").to_string(),
            "the master refused: HTTP status 404"
        );
    }

    #[test]
    fn transport_errors_are_classified() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = ClientError::from_transport("10.0.0.5:9443", &refused);
        assert!(
            err.to_string()
                .starts_with("master unreachable at 10.0.0.5:9443: "),
            "{err}"
        );
        assert!(err.is_retryable());

        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
        );
        let err = ClientError::from_transport("m:1", &tls);
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("2026-12-07T12:00:00+01:00"),
            "2026-12-07T12%3A00%3A00%2B01%3A00"
        );
        assert_eq!(percent_encode("key:ci deploy"), "key%3Aci%20deploy");
    }

    #[test]
    fn path_segments_are_checked() {
        assert!(path_segment("rack1-n3").is_ok());
        assert!(path_segment("abcdef").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b", "%2e"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }

    /// A one-route-at-a-time HTTPS server for the tests: reads one request per connection
    /// and answers with what `handler` returns for (method, path, body, client identity).
    type Handler =
        Arc<dyn Fn(&str, &str, &[u8], Option<NodeIdentity>) -> (u16, String) + Send + Sync>;

    struct TestMaster {
        ca: ClusterCa,
        addr: String,
    }

    async fn test_master(handler: Handler) -> TestMaster {
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
        let config =
            tls::server_config_pem(&serving.chain_pem, &serving.key_pem, Some(ca.cert_pem()))
                .expect("server config");
        let addr = serve(config, handler).await;
        TestMaster { ca, addr }
    }

    /// Serves `handler` over TLS with `config` on a loopback port; its address.
    async fn serve(config: rustls::ServerConfig, handler: Handler) -> String {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = tls::peer_identity(tls.get_ref().1).and_then(Result::ok);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (pos + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut first = head.split_whitespace();
                    let method = first.next().unwrap_or_default().to_owned();
                    let path = first.next().unwrap_or_default().to_owned();
                    let (status, body) =
                        handler(&method, &path, &buf[head_end..head_end + length], peer);
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    /// A master that signs join and renew CSRs for the role given, and answers status.
    fn signing_handler(ca_cert: String, ca_key: String, role: Role) -> Handler {
        Arc::new(move |method, path, body, peer| {
            let ca = ClusterCa::load(&ca_cert, &ca_key).expect("ca");
            let (name, csr) = match (method, path) {
                ("POST", "/v1/join") => {
                    let req: JoinRequest = serde_json::from_slice(body).expect("join json");
                    (req.node_name, req.csr_pem)
                }
                ("POST", "/v1/renew") => {
                    let Some(peer) = peer else {
                        return (
                            401,
                            r#"{"code":"unauthenticated","message":"no cert"}"#.into(),
                        );
                    };
                    let req: RenewRequest = serde_json::from_slice(body).expect("renew json");
                    (peer.name, req.csr_pem)
                }
                ("GET", "/v1/status") => {
                    let who = peer.map(|p| p.name).unwrap_or_default();
                    let status = ClusterStatus {
                        cluster_name: "lab".into(),
                        ca_pin: ca.pin().to_string(),
                        master_name: who,
                        master_version: "0.1.0".into(),
                        api_address: "127.0.0.1".into(),
                        uptime_secs: 1,
                        nodes_total: 0,
                        nodes_ready: 0,
                        masters: Vec::new(),
                        etcd: Vec::new(),
                    };
                    return (200, serde_json::to_string(&status).expect("json"));
                }
                _ => return (404, r#"{"code":"not_found","message":"no route"}"#.into()),
            };
            let now = OffsetDateTime::now_utc();
            let id = NodeIdentity::new(name, role).expect("id");
            let issued = ca
                .sign_csr(&csr, &id, NODE_CERT_LIFETIME, now)
                .expect("sign");
            let response = JoinResponse {
                cert_pem: issued.cert_pem,
                ca_pem: ca.cert_pem().to_owned(),
                cluster_name: "lab".into(),
                role,
                renew_after: issued.info.renew_at(),
            };
            (200, serde_json::to_string(&response).expect("json"))
        })
    }

    async fn signing_master(role: Role) -> TestMaster {
        // The handler needs the CA the server was built with; build the server first with a
        // placeholder, then swap in a handler that knows the CA.
        let slot: Arc<std::sync::Mutex<Option<Handler>>> = Arc::default();
        let inner = Arc::clone(&slot);
        let master = test_master(Arc::new(move |m, p, b, peer| {
            let handler = inner.lock().expect("lock").clone().expect("handler set");
            handler(m, p, b, peer)
        }))
        .await;
        *slot.lock().expect("lock") = Some(signing_handler(
            master.ca.cert_pem().to_owned(),
            master.ca.key_pem(),
            role,
        ));
        master
    }

    /// A server that answers `GET /v1/time` with `master_now` and counts every request that
    /// reaches it (an attacker's server hears nothing if the client refuses it first).
    fn time_handler(master_now: OffsetDateTime, heard: Arc<AtomicUsize>) -> Handler {
        Arc::new(move |method, path, _, _| {
            heard.fetch_add(1, Ordering::SeqCst);
            match (method, path) {
                ("GET", "/v1/time") => (
                    200,
                    serde_json::to_string(&TimeResponse { now: master_now }).expect("json"),
                ),
                _ => (404, r#"{"code":"not_found","message":"no route"}"#.into()),
            }
        })
    }

    /// A node whose clock is years off its master's: here the master lives in 2006 (its CA
    /// made in 2005, valid ten years; its serving certificate from January 2006) and the
    /// node's clock, this machine's, is years after all of it expired. The normal pinned
    /// check refuses the master; `master_time` checks everything but the clock and reads
    /// the master's time. Then the attackers, each with real TLS on loopback: a server of
    /// another CA, one presenting a leaf of another CA under a copy of the pinned CA's
    /// (public) certificate, and one presenting a node certificate the pinned CA really
    /// issued. None moves the clock, and none hears a request.
    #[tokio::test(flavor = "current_thread")]
    async fn only_the_pinned_master_can_tell_a_node_with_a_wrong_clock_the_time() {
        let y2005 = time::macros::datetime!(2005-01-01 00:00 UTC);
        let y2006 = time::macros::datetime!(2006-01-01 00:00 UTC);
        let master_now = time::macros::datetime!(2006-02-01 12:00 UTC);
        let ca = ClusterCa::create("lab", y2005).expect("ca");
        let ip = ["127.0.0.1".parse().expect("ip")];
        let serve_chain = |chain: &str, key: &str, heard: &Arc<AtomicUsize>| {
            let config = tls::server_config_pem(chain, key, None).expect("server config");
            serve(config, time_handler(master_now, Arc::clone(heard)))
        };

        let heard = Arc::new(AtomicUsize::new(0));
        let serving = ca
            .issue_serving_cert(&["master.lan".into()], &ip, SERVING_CERT_LIFETIME, y2006)
            .expect("serving");
        let master = serve_chain(&serving.chain_pem, &serving.key_pem, &heard).await;
        let token = Token::generate(ca.pin()).expect("token");
        let refused = join(&master, &token, "n1", "x86_64", &BTreeMap::new(), None)
            .await
            .expect_err("a join at this clock must fail the validity check");
        assert!(refused.to_string().contains("expired"), "{refused}");
        assert_eq!(heard.load(Ordering::SeqCst), 0, "no token was sent");

        let told = master_time(&master, ca.pin())
            .await
            .expect("the master's time");
        let expected = master_now - OffsetDateTime::now_utc();
        assert!(
            (told.offset - expected).abs() < time::Duration::seconds(5),
            "offset {} expected {expected}",
            told.offset
        );
        assert_eq!(heard.load(Ordering::SeqCst), 1);

        // An attacker with a CA of its own, made in the same years.
        let other = ClusterCa::create("lab", y2005).expect("other ca");
        let theirs = other
            .issue_serving_cert(&["master.lan".into()], &ip, SERVING_CERT_LIFETIME, y2006)
            .expect("their cert");
        let heard_by_attacker = Arc::new(AtomicUsize::new(0));
        let rogue = serve_chain(&theirs.chain_pem, &theirs.key_pem, &heard_by_attacker).await;
        let err = master_time(&rogue, ca.pin()).await.expect_err("another CA");
        assert!(matches!(err, ClientError::PinMismatch { .. }), "{err:?}");

        // The same attacker sends the pinned CA's certificate (it is public) after its leaf.
        let forged = format!("{}{}", theirs.cert_pem, ca.cert_pem());
        let rogue = serve_chain(&forged, &theirs.key_pem, &heard_by_attacker).await;
        let err = master_time(&rogue, ca.pin())
            .await
            .expect_err("a forged chain");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");

        // A node of the cluster posing as its master, with the certificate the pinned CA
        // gave it (clientAuth only, no master marker).
        let key = NodeKey::generate().expect("key");
        let node = ca
            .sign_csr(
                &key.csr_pem("master.lan").expect("csr"),
                &NodeIdentity::new("master.lan", Role::Compute).expect("id"),
                NODE_CERT_LIFETIME,
                y2006,
            )
            .expect("node cert");
        let chain = format!("{}{}", node.cert_pem, ca.cert_pem());
        let rogue = serve_chain(&chain, &key.to_pem(), &heard_by_attacker).await;
        let err = master_time(&rogue, ca.pin())
            .await
            .expect_err("a node certificate");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        assert_eq!(
            heard_by_attacker.load(Ordering::SeqCst),
            0,
            "no attacker got a request, so none could answer with a time"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn join_then_mtls_calls_and_renewal() {
        let master = signing_master(Role::Admin).await;
        let token = Token::generate(master.ca.pin()).expect("token");
        let id = join(
            &master.addr,
            &token,
            "alice-laptop",
            "x86_64",
            &BTreeMap::new(),
            Some(Role::Admin),
        )
        .await
        .expect("join");
        assert_eq!((id.cluster_name.as_str(), id.role), ("lab", Role::Admin));
        assert_eq!(
            id.master_name, "master.lan",
            "the master's own name outlives its address"
        );
        assert!(id.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));

        let api = ApiClient::from_identity(&id).expect("client");
        let status = api.status().await.expect("status");
        assert_eq!(
            status.master_name, "alice-laptop",
            "the server saw our identity"
        );

        let renewed = api.renew("alice-laptop").await.expect("renew");
        assert_ne!(renewed.key_pem, id.key_pem, "renewal makes a new key");
        assert_eq!(renewed.master_addr, id.master_addr);
        let api2 = ApiClient::from_identity(&renewed).expect("client");
        assert!(api2.status().await.is_ok());

        let missing = api.node("ghost").await.expect_err("404");
        assert_eq!(missing.to_string(), "the master refused: no route");
        assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn join_checks_the_role() {
        let master = signing_master(Role::Compute).await;
        let token = Token::generate(master.ca.pin()).expect("token");
        let err = join(
            &master.addr,
            &token,
            "n1",
            "x86_64",
            &BTreeMap::new(),
            Some(Role::Admin),
        )
        .await
        .expect_err("role");
        assert_eq!(
            err.to_string(),
            "the token is for the compute role, not admin; create one with `cloudos token create --role admin`"
        );
    }

    /// The attacker joined the cluster with a compute token, so it holds a certificate the
    /// cluster CA signed. It serves that certificate (with the genuine CA behind it) on the
    /// LAN, waiting for a joining node, the installer's token check or `cloudos login` to
    /// send it their tokens, and for the CLI and agents to call it. Every client refuses
    /// the handshake: not one request reaches the attacker.
    #[tokio::test(flavor = "current_thread")]
    async fn a_node_posing_as_the_master_receives_no_token_and_no_call() {
        let master = signing_master(Role::Compute).await;
        let token = Token::generate(master.ca.pin()).expect("token");
        let joined = join(
            &master.addr,
            &token,
            "rogue",
            "x86_64",
            &BTreeMap::new(),
            None,
        )
        .await
        .expect("the attacker joins");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        // The attacker's own key and certificate, as a join gives them.
        let key_pem = joined.key_pem.clone();
        let chain_pem = format!("{}{}", joined.cert_pem, joined.ca_pem);
        let config = tls::server_config_pem(&chain_pem, &key_pem, None).expect("rogue config");
        let rogue = serve(
            config,
            Arc::new(move |_, _, _, _| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (200, "{}".into())
            }),
        )
        .await;

        let victim_token = Token::generate(master.ca.pin()).expect("token");
        let err = join(
            &rogue,
            &victim_token,
            "n2",
            "x86_64",
            &BTreeMap::new(),
            None,
        )
        .await
        .expect_err("a joiner must refuse the rogue");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        let err = check_token(&rogue, &victim_token)
            .await
            .expect_err("the token check must refuse the rogue");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        // An agent or the CLI, mTLS with the cluster CA, told the rogue's name.
        let api = ApiClient::new(
            &rogue,
            "rogue",
            &joined.ca_pem,
            &joined.cert_pem,
            &joined.key_pem,
        )
        .expect("client");
        let err = api.status().await.expect_err("mTLS must refuse the rogue");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no request (and no token) reached the attacker"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn wrong_pin_sends_nothing() {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let master = test_master(Arc::new(move |_, _, _, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (200, "{}".into())
        }))
        .await;
        let other = ClusterCa::create("other", OffsetDateTime::now_utc()).expect("ca");
        let token = Token::generate(other.pin()).expect("token");
        let err = join(&master.addr, &token, "n1", "x86_64", &BTreeMap::new(), None)
            .await
            .expect_err("pin");
        let msg = err.to_string();
        assert!(
            msg.starts_with("CA pin mismatch: this is not the master your token was made for"),
            "{msg}"
        );
        assert!(
            msg.ends_with(&format!("(master at {})", master.addr)),
            "{msg}"
        );
        assert!(!err.is_retryable());
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expired_token_shows_the_masters_message() {
        let master = test_master(Arc::new(|_, _, _, _| {
            (
                403,
                r#"{"code":"token_invalid","message":"token abcdef expired at 2026-03-01T10:00:00Z; create a new one with `cloudos token create`"}"#.into(),
            )
        }))
        .await;
        let token = Token::generate(master.ca.pin()).expect("token");
        let err = join(&master.addr, &token, "n1", "x86_64", &BTreeMap::new(), None)
            .await
            .expect_err("expired");
        assert!(
            err.to_string().starts_with("token abcdef expired at"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_master_is_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let pin = ClusterCa::create("x", OffsetDateTime::now_utc())
            .expect("ca")
            .pin();
        let token = Token::generate(pin).expect("token");
        let addr = format!("127.0.0.1:{port}");
        let err = join(&addr, &token, "n1", "x86_64", &BTreeMap::new(), None)
            .await
            .expect_err("down");
        assert!(
            err.to_string()
                .starts_with(&format!("master unreachable at {addr}: ")),
            "{err}"
        );
        assert!(err.is_retryable());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_from_another_cluster_is_refused() {
        let master = signing_master(Role::Admin).await;
        let token = Token::generate(master.ca.pin()).expect("token");
        let id = join(&master.addr, &token, "a1", "x86_64", &BTreeMap::new(), None)
            .await
            .expect("join");
        // Same CA to trust, but a client certificate from a rogue CA.
        let rogue = ClusterCa::create("rogue", OffsetDateTime::now_utc()).expect("ca");
        let key = NodeKey::generate().expect("key");
        let cert = rogue
            .sign_csr(
                &key.csr_pem("a1").expect("csr"),
                &NodeIdentity::new("a1", Role::Admin).expect("id"),
                NODE_CERT_LIFETIME,
                OffsetDateTime::now_utc(),
            )
            .expect("sign");
        let api = ApiClient::new(
            &id.master_addr,
            &id.master_name,
            &id.ca_pem,
            &cert.cert_pem,
            &key.to_pem(),
        )
        .expect("client");
        let err = api.status().await.expect_err("refused");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    }
}
