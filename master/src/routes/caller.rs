//! Who may call what: extractors that read the TLS [`Peer`] of the request and admit a
//! node (compute or master), an admin, or any identity. No certificate is a 401; a revoked
//! or replaced certificate, or the wrong role, a 403. Revocation and the serial on record
//! are checked again per request, so a connection opened before an eviction cannot keep
//! using the certificate.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Extensions;
use cloudos_cluster::pki::PkiError;
use cloudos_cluster::{NodeIdentity, Role};

use super::AppState;
use crate::credentials;
use crate::error::ApiError;
use crate::roster::SerialStatus;
use crate::tls_accept::Peer;

/// The caller's identity: a certificate the CA signed, not revoked, and the one on record
/// for its holder (see `credentials`).
pub async fn verify(extensions: &Extensions, state: &AppState) -> Result<NodeIdentity, ApiError> {
    let (identity, serial) = match extensions.get::<Peer>() {
        Some(Peer::Node { identity, serial }) => (identity.clone(), serial.clone()),
        Some(Peer::Refused(e)) => return Err(ApiError::Refused(std::sync::Arc::clone(e))),
        Some(Peer::Anonymous) | None => return Err(ApiError::NoClientCert),
    };
    if state.is_revoked(&serial) {
        return Err(ApiError::Pki(PkiError::Revoked {
            serial,
            name: identity.name,
        }));
    }
    // Every check is in memory; only the first use of a renewed certificate writes the
    // store, off the async workers.
    if credentials::status(state, &identity, &serial)? == SerialStatus::Pending {
        let who = identity.clone();
        state
            .blocking(move |s| credentials::promote(s, &who, &serial))
            .await?;
    }
    Ok(identity)
}

/// The caller as the router's guard verified it, so handlers do not check twice.
#[derive(Debug, Clone)]
pub struct Verified(pub NodeIdentity);

async fn identity(parts: &Parts, state: &AppState) -> Result<NodeIdentity, ApiError> {
    match parts.extensions.get::<Verified>() {
        Some(Verified(identity)) => Ok(identity.clone()),
        None => verify(&parts.extensions, state).await,
    }
}

async fn with_role(
    parts: &Parts,
    state: &AppState,
    allowed: &[Role],
    needed: &'static str,
) -> Result<NodeIdentity, ApiError> {
    let id = identity(parts, state).await?;
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
        .await
        .map(NodeCaller)
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, &[Role::Admin], "admin")
            .await
            .map(AdminCaller)
    }
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        identity(parts, state).await.map(AnyCaller)
    }
}

/// The caller's identity when it has a valid one (joins accept anyone).
pub struct MaybeCaller(pub Option<NodeIdentity>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeCaller(identity(parts, state).await.ok()))
    }
}
