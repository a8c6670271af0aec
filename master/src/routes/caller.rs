//! Who may call what: extractors that read the TLS [`Peer`] of the request (or its API
//! key) and admit a node (compute or master), a user of at least some role, or any
//! identity. No credential is a 401; a revoked or replaced certificate, or too small a
//! role, a 403. Revocation and the serial on record are checked again per request, so a
//! connection opened before an eviction cannot keep using the certificate.
//!
//! A user's role is the one on their record, not the one their certificate names: a role
//! changed with `cloudos user role` applies from the next request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap};
use cloudos_cluster::apikey::{ApiKey, ApiKeyError};
use cloudos_cluster::pki::PkiError;
use cloudos_cluster::{NodeIdentity, Role};
use time::OffsetDateTime;

use super::AppState;
use crate::credentials;
use crate::error::ApiError;
use crate::roster::SerialStatus;
use crate::tls_accept::Peer;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A client certificate the cluster CA signed.
    Certificate,
    /// An API key (`Authorization: Bearer`): a user's rights, never a node's, and no
    /// certificate renewal.
    Key,
    /// A dashboard session cookie: a user's rights, like a key; `csrf` says whether the
    /// request carried the session's CSRF token, which a change must
    /// (`crate::dashboard::session`).
    Session { csrf: bool },
}

/// The caller's identity and how it proved it. A certificate wins over a key: a request
/// that shows both is judged by its certificate.
pub async fn verify(
    extensions: &Extensions,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<(NodeIdentity, Proof), ApiError> {
    let (identity, serial) = match extensions.get::<Peer>() {
        Some(Peer::Node { identity, serial }) => (identity.clone(), serial.clone()),
        Some(Peer::Refused(e)) => return Err(ApiError::Refused(std::sync::Arc::clone(e))),
        Some(Peer::Anonymous) | None => {
            if let Some(key) = bearer(headers) {
                return api_key(state, key).map(|id| (id, Proof::Key));
            }
            return match crate::dashboard::session::cookie(headers) {
                Some(cookie) => session(state, headers, cookie),
                None => Err(ApiError::NoClientCert),
            };
        }
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
    let identity = match identity.role.is_user() {
        true => NodeIdentity {
            role: credentials::user_role(state, &identity.name)?,
            ..identity
        },
        false => identity,
    };
    Ok((identity, Proof::Certificate))
}

/// The key of an `Authorization: Bearer <key>` header, if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

/// The identity an API key acts as: `key:<name>` with the key's role.
fn api_key(state: &AppState, text: &str) -> Result<NodeIdentity, ApiError> {
    let key = ApiKey::parse(text)?;
    let record = state
        .api_keys
        .get(key.id())
        .ok_or_else(|| ApiKeyError::Unknown {
            id: key.id().to_owned(),
        })?;
    record.verify(&key, OffsetDateTime::now_utc())?;
    Ok(NodeIdentity {
        name: record.caller_name(),
        role: record.role,
    })
}

/// The user a dashboard session cookie stands for, with the role on their record.
fn session(
    state: &AppState,
    headers: &HeaderMap,
    cookie: &str,
) -> Result<(NodeIdentity, Proof), ApiError> {
    let gone = || {
        ApiError::Unauthenticated(
            "the dashboard session ended (logged out, idle, or the master changed); log in again"
                .to_owned(),
        )
    };
    let session = state
        .sessions
        .get(cookie, OffsetDateTime::now_utc())
        .ok_or_else(gone)?;
    let role = credentials::user_role(state, &session.user)?;
    let csrf = crate::dashboard::session::csrf_ok(headers, &session);
    Ok((
        NodeIdentity {
            name: session.user,
            role,
        },
        Proof::Session { csrf },
    ))
}

/// The caller as the router's guard verified it, so handlers do not check twice.
#[derive(Debug, Clone)]
pub struct Verified(pub NodeIdentity, pub Proof);

async fn identity(parts: &Parts, state: &AppState) -> Result<(NodeIdentity, Proof), ApiError> {
    match parts.extensions.get::<Verified>() {
        Some(Verified(identity, proof)) => Ok((identity.clone(), *proof)),
        None => verify(&parts.extensions, &parts.headers, state).await,
    }
}

/// A user whose role grants `needed` (admin ⊇ operator ⊇ viewer).
async fn user(parts: &Parts, state: &AppState, needed: Role) -> Result<NodeIdentity, ApiError> {
    let (id, _) = identity(parts, state).await?;
    if !id.role.grants(needed) {
        return Err(ApiError::WrongRole {
            role: id.role,
            needed: needed.as_str(),
        });
    }
    Ok(id)
}

/// A compute or master node.
pub struct NodeCaller(pub NodeIdentity);
/// A user of role admin (people, tokens, nodes, releases).
pub struct AdminCaller(pub NodeIdentity);
/// A user of role operator or admin (runs and stops work).
pub struct OperatorCaller(pub NodeIdentity);
/// Any user (reads).
pub struct ViewerCaller(pub NodeIdentity);
/// Any identity that holds a certificate.
pub struct AnyCaller(pub NodeIdentity);
/// A user who shows their own certificate (not a key, not a session).
pub struct CertifiedUser(pub NodeIdentity);

impl FromRequestParts<AppState> for CertifiedUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identity(parts, state).await? {
            (id, Proof::Certificate) if id.role.is_user() => Ok(CertifiedUser(id)),
            (id, _) => Err(ApiError::WrongRole {
                role: id.role,
                needed: "a user's own certificate (`cloudos`, not an API key or a session)",
            }),
        }
    }
}

impl FromRequestParts<AppState> for NodeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (id, proof) = identity(parts, state).await?;
        if proof != Proof::Certificate || !matches!(id.role, Role::Compute | Role::Master) {
            return Err(ApiError::WrongRole {
                role: id.role,
                needed: "compute or master",
            });
        }
        Ok(NodeCaller(id))
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        user(parts, state, Role::Admin).await.map(AdminCaller)
    }
}

impl FromRequestParts<AppState> for OperatorCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        user(parts, state, Role::Operator).await.map(OperatorCaller)
    }
}

impl FromRequestParts<AppState> for ViewerCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        user(parts, state, Role::Viewer).await.map(ViewerCaller)
    }
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match identity(parts, state).await? {
            (id, Proof::Certificate) => Ok(AnyCaller(id)),
            (id, _) => Err(ApiError::WrongRole {
                role: id.role,
                needed: "a certificate (an API key cannot renew one)",
            }),
        }
    }
}

/// The caller's identity when it has a valid one (joins accept anyone).
pub struct MaybeCaller(pub Option<NodeIdentity>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeCaller(
            identity(parts, state).await.ok().map(|(id, _)| id),
        ))
    }
}
