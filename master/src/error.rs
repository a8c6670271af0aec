//! The master's errors: [`MasterError`] for starting up, [`ApiError`] for requests. This is
//! the one place a request's failure becomes an HTTP status and an `ErrorBody`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cloudos_cluster::api::{ErrorBody, ErrorCode};
use cloudos_cluster::identity::{IdentityError, Role};
use cloudos_cluster::pki::PkiError;
use cloudos_cluster::tls::TlsError;
use cloudos_cluster::token::TokenError;
use cloudos_store::StoreError;

use super::workloads::book::BookError;

/// Why a master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot create the master's data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}; is another master running, or is the port taken?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the token of this machine's own node to {path}: {source}")]
    OwnNodeToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Workloads(#[from] super::workloads::WorkloadsError),
    #[error("scheduled backups: {0}")]
    Backup(#[from] super::backup::BackupError),
    #[error("cannot start the master's async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    HaFile(#[from] super::ha::file::HaFileError),
    #[error("this master lost its leadership (its lease ran out: it was paused, or cut off from the other masters); it stops, and starts again as a follower")]
    LostLeadership,
    #[error("this master was removed from the cluster's masters (`cloudos master remove`): it stops, and does not start again on its ha.json")]
    Removed,
    #[error("the container_range {containers} and the service_range {services} overlap: a service's address would be a container's; choose ranges apart")]
    Ranges {
        containers: cloudos_cluster::subnets::ClusterRange,
        services: cloudos_cluster::subnets::ClusterRange,
    },
}

/// Why a request failed. Messages say what to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Spec(#[from] cloudos_cluster::workload::SpecError),
    #[error(transparent)]
    Book(#[from] super::workloads::book::BookError),
    #[error(transparent)]
    NodeOp(#[from] super::nodeops::NodeOpError),
    #[error(transparent)]
    ApiKey(#[from] cloudos_cluster::apikey::ApiKeyError),
    /// A credential that names no one (a dashboard session that ended).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this endpoint needs a client certificate; join the cluster first (`cloudos login` for people, a join token for nodes)")]
    NoClientCert,
    #[error("a caller of role {role} cannot use this endpoint; it needs role {needed}")]
    WrongRole { role: Role, needed: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too many failed attempts from this address; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The handshake's certificate was refused (revoked, or no identity in it).
    #[error("{0}")]
    Refused(std::sync::Arc<PkiError>),
    /// The caller's node is no longer registered: like a revoked certificate, final.
    #[error("{0}")]
    NodeRemoved(String),
    #[error("{0}")]
    Internal(String),
    /// The cluster cannot answer now (no leader, no quorum); a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Longest piece of caller-supplied text an error message repeats.
const MAX_ECHO: usize = 64;

/// Caller-supplied text as an error message may repeat it (see `cloudos_cluster::excerpt`).
pub fn bounded(text: &str) -> String {
    cloudos_cluster::excerpt(text, MAX_ECHO)
}

impl ApiError {
    /// The code and message a client sees.
    pub fn body(&self) -> ErrorBody {
        let code = match self {
            ApiError::Token(e) => return e.into(),
            ApiError::Pki(e) => return e.into(),
            ApiError::Store(e) => return e.into(),
            ApiError::Spec(e) => return e.into(),
            ApiError::Book(e) => match e {
                BookError::NoTask(_)
                | BookError::NoService(_)
                | BookError::NoRevision { .. }
                | BookError::NoVolume(_) => ErrorCode::NotFound,
                BookError::ServiceExists(_)
                | BookError::VolumeInUse { .. }
                | BookError::VolumeNodeAway { .. }
                | BookError::NothingToRollBack { .. }
                | BookError::RunsThatSpec { .. }
                | BookError::RequestReused { .. }
                | BookError::NoServiceAddress { .. }
                | BookError::PortPublished { .. } => ErrorCode::Conflict,
                BookError::IsReplica { .. }
                | BookError::Replicas { .. }
                | BookError::Policy(_)
                | BookError::BadVolume(_) => ErrorCode::BadRequest,
            },
            ApiError::NodeOp(e) => {
                use super::nodeops::NodeOpError as E;
                match e {
                    E::Store(e) => return e.into(),
                    E::NoNode(_) => ErrorCode::NotFound,
                    E::NotConnected { .. }
                    | E::HostInstall { .. }
                    | E::NoBootReport { .. }
                    | E::NotSent { .. }
                    | E::DrainFailed { .. } => ErrorCode::Conflict,
                    E::Task(_) => ErrorCode::Internal,
                }
            }
            ApiError::ApiKey(e) => {
                use cloudos_cluster::apikey::ApiKeyError as E;
                match e {
                    E::Malformed
                    | E::Unknown { .. }
                    | E::WrongSecret { .. }
                    | E::Revoked { .. }
                    | E::Expired { .. } => ErrorCode::Unauthenticated,
                    E::NotAUserRole { .. } | E::Ttl(_) | E::TtlTooLong | E::BadName => {
                        ErrorCode::BadRequest
                    }
                    E::Random(_) => ErrorCode::Internal,
                }
            }
            ApiError::Identity(_) | ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::NoClientCert | ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::WrongRole { .. } | ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NodeRemoved(_) => ErrorCode::Revoked,
            ApiError::Refused(e) => match e.as_ref() {
                PkiError::Revoked { .. } => ErrorCode::Revoked,
                _ => ErrorCode::Forbidden,
            },
            ApiError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::RateLimited { .. } => ErrorCode::TooManyRequests,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
        };
        ErrorBody::new(code, self.to_string())
    }

    /// A blocking task that died (panicked or was cancelled).
    pub fn task(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("a master task failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let status = StatusCode::from_u16(body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            log::error!("request failed: {body}");
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after } = &self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::NoClientCert, 401),
            (
                ApiError::WrongRole {
                    role: Role::Compute,
                    needed: "admin",
                },
                403,
            ),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::TooLarge { limit: 10 }, 413),
            (
                ApiError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                429,
            ),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::Token(TokenError::UsedUp { id: "a".into() }), 403),
        ];
        for (err, status) in cases {
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status);
            if status == 429 {
                assert_eq!(
                    response.headers().get(header::RETRY_AFTER),
                    Some(&HeaderValue::from_static("2"))
                );
            }
        }
    }
}
