//! Who may call what: extractors that read the TLS [`Peer`] of the request and admit a
//! node (compute or master), an admin, or any identity. No certificate is a 401; a revoked
//! certificate or the wrong role a 403. Revocation is checked again per request, so a
//! connection opened before an eviction cannot keep using the certificate.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cloudos_cluster::pki::PkiError;
use cloudos_cluster::{NodeIdentity, Role};

use super::AppState;
use crate::master::error::ApiError;
use crate::master::tls_accept::Peer;

fn identity(parts: &Parts, state: &AppState) -> Result<NodeIdentity, ApiError> {
    match parts.extensions.get::<Peer>() {
        Some(Peer::Node { identity, serial }) => {
            if state.is_revoked(serial) {
                return Err(ApiError::Pki(PkiError::Revoked {
                    serial: serial.clone(),
                    name: identity.name.clone(),
                }));
            }
            Ok(identity.clone())
        }
        Some(Peer::Refused(e)) => Err(ApiError::Refused(std::sync::Arc::clone(e))),
        Some(Peer::Anonymous) | None => Err(ApiError::NoClientCert),
    }
}

fn with_role(
    parts: &Parts,
    state: &AppState,
    allowed: &[Role],
    needed: &'static str,
) -> Result<NodeIdentity, ApiError> {
    let id = identity(parts, state)?;
    if !allowed.contains(&id.role) {
        return Err(ApiError::WrongRole {
            role: id.role,
            needed,
        });
    }
    Ok(id)
}

/// A compute or master node.
pub struct NodeCaller(pub NodeIdentity);
/// An admin (a person with `cloudos`).
pub struct AdminCaller(pub NodeIdentity);
/// Any valid identity.
pub struct AnyCaller(pub NodeIdentity);

impl FromRequestParts<AppState> for NodeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(
            parts,
            state,
            &[Role::Compute, Role::Master],
            "compute or master",
        )
        .map(NodeCaller)
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, &[Role::Admin], "admin").map(AdminCaller)
    }
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        identity(parts, state).map(AnyCaller)
    }
}

/// The caller's identity when it has a valid one (joins accept anyone).
pub struct MaybeCaller(pub Option<NodeIdentity>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeCaller(identity(parts, state).ok()))
    }
}
