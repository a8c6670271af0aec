//! Certificates for callers: `POST /v1/join` (a token and a CSR, no client certificate) and
//! `POST /v1/renew` (a valid certificate and a fresh CSR).
//!
//! A join changes nothing unless it succeeds: the name, the token (without using it up) and
//! the CSR are checked first, and the token's use is taken atomically at the end. The
//! certificate's identity is the request's `node_name` (validated) with the token's role;
//! whatever the CSR asks for is ignored.
//!
//! Names: the name becomes a DNS name in a certificate the cluster CA signs, so the master's
//! own names, its `--tls-san` names, `localhost` and address-like names are refused
//! (`identity::validate_join_name`). A name that a registered node holds is refused (409)
//! unless the request comes with that node's own valid certificate (the same node joining
//! again). To reuse the name of a machine that is gone, remove it first (`cloudos node
//! remove NAME`), which also revokes its certificates.
//!
//! Every certificate is recorded: a node's in its node record, an admin's in an admin
//! record (`cloudos user list`). A join again revokes every certificate the previous
//! record held; a renewal's certificate is pending until first used (see `credentials`).
//!
//! Labels: what the node asks for is kept as its reported labels; the labels selectors
//! match come from the token, which an admin made.
//!
//! Failed joins count against the source address (see `ratelimit`).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::Json;
use cloudos_cluster::api::{
    ErrorCode, JoinRequest, JoinResponse, RenewRequest, TokenCheckRequest, TokenCheckResponse,
};
use cloudos_cluster::identity::validate_join_name;
use cloudos_cluster::pki::IssuedCert;
use cloudos_cluster::token::{self, TokenError, TokenId, TokenRecord};
use cloudos_cluster::{NodeIdentity, Role};
use cloudos_store::ops::REJOIN_REASON;
use cloudos_store::{NodeRecord, NodeState, RevokedCert, TokenUse, UserRecord};
use time::OffsetDateTime;

use super::caller::{AnyCaller, MaybeCaller};
use super::extract::ApiJson;
use super::AppState;
use crate::credentials::revoke;
use crate::error::ApiError;
use crate::state::MasterState;

const MAX_ARCH_LEN: usize = 32;

pub async fn join(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    MaybeCaller(caller): MaybeCaller,
    body: Result<ApiJson<JoinRequest>, ApiError>,
) -> Result<Json<JoinResponse>, ApiError> {
    let ip = addr.ip();
    refuse_if_limited(&state, ip, "join")?;
    let result = match body {
        Ok(ApiJson(request)) => {
            state
                .blocking(move |s| admit(s, request, caller, addr))
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        note_refusal(&state, ip, "join", e);
    }
    result.map(Json)
}

/// Too many failed joins (or token checks) from `ip` lately: refused before any work.
pub(super) fn refuse_if_limited(
    state: &AppState,
    ip: std::net::IpAddr,
    what: &str,
) -> Result<(), ApiError> {
    state
        .join_limiter
        .check(ip, Instant::now())
        .map_err(|retry_after| {
            log::warn!("{what} from {ip} refused: too many failed attempts");
            ApiError::RateLimited { retry_after }
        })
}

/// Counts a refusal against `ip` (not our own failures) and logs why.
pub(super) fn note_refusal(state: &AppState, ip: std::net::IpAddr, what: &str, e: &ApiError) {
    let body = e.body();
    if body.code != ErrorCode::Internal {
        state.join_limiter.record_failure(ip, Instant::now());
    }
    // Malformed bodies may echo what was sent (a secret in the wrong field): not logged.
    let why = match e {
        ApiError::BadRequest(_) => "malformed request".to_owned(),
        _ => body.message,
    };
    log::warn!("{what} from {ip} refused: {why}");
}

/// `POST /v1/join/check`: would a join with this token be admitted now? The token is
/// checked as `admit` checks it and not used up. A refusal counts against the caller's
/// address like a failed join, so this is no cheaper way to guess secrets.
pub async fn check_token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<ApiJson<TokenCheckRequest>, ApiError>,
) -> Result<Json<TokenCheckResponse>, ApiError> {
    let ip = addr.ip();
    refuse_if_limited(&state, ip, "token check")?;
    let result = match body {
        Ok(ApiJson(request)) => state.blocking(move |s| verify_token(s, &request)).await,
        Err(e) => Err(e),
    };
    match &result {
        Ok(answer) => log::info!(
            "token check from {ip}: a join would be admitted as {}",
            answer.role
        ),
        Err(e) => note_refusal(&state, ip, "token check", e),
    }
    result.map(Json)
}

fn verify_token(
    state: &MasterState,
    req: &TokenCheckRequest,
) -> Result<TokenCheckResponse, ApiError> {
    let record = valid_token(
        state,
        &req.token_id,
        &req.token_secret,
        OffsetDateTime::now_utc(),
    )?;
    Ok(TokenCheckResponse {
        cluster_name: state.cluster_name.clone(),
        role: record.role,
    })
}

/// The stored token `id` if `secret` is its secret and it may be used now (not expired,
/// used up or revoked): what a join and a token check both ask. Nothing is used up.
fn valid_token(
    state: &MasterState,
    id: &TokenId,
    secret: &str,
    now: OffsetDateTime,
) -> Result<TokenRecord, ApiError> {
    let id = id.as_str();
    let record = state
        .store
        .get_token(id)?
        .ok_or_else(|| TokenError::UnknownId { id: id.to_owned() })?;
    token::verify(&record, secret, now)?;
    Ok(record)
}

fn lifetime(state: &MasterState) -> time::Duration {
    time::Duration::try_from(state.config.cert_lifetime).unwrap_or(time::Duration::DAY)
}

fn response(state: &MasterState, issued: &IssuedCert, role: Role) -> JoinResponse {
    JoinResponse {
        cert_pem: issued.cert_pem.clone(),
        ca_pem: state.ca.cert_pem().to_owned(),
        cluster_name: state.cluster_name.clone(),
        role,
        renew_after: issued.info.renew_at(),
    }
}

fn check_arch(arch: &str) -> Result<(), ApiError> {
    let ok = !arch.is_empty()
        && arch.len() <= MAX_ARCH_LEN
        && arch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "arch `{}` is not an architecture name like x86_64 or aarch64",
        arch.escape_debug()
    )))
}

/// Names a joiner may not take: the master's own name and its `--tls-san` names, which
/// clients trust as the master's.
fn reserved_names(state: &MasterState) -> Vec<String> {
    std::iter::once(state.config.node_name.clone())
        .chain(state.config.tls_san.iter().cloned())
        .collect()
}

/// The name a joiner asks for: never one of the master's names, except the master's own
/// node (a master that runs workloads), which joins under the master's name and no other.
fn check_name(state: &MasterState, name: &str, token: &TokenRecord) -> Result<(), ApiError> {
    if let Some(user) = token.user.as_deref().filter(|u| *u != name) {
        return Err(ApiError::Forbidden(format!(
            "this login token was made for user {user}; log in as {user}, or ask an admin for \
             your own: `cloudos user add NAME`"
        )));
    }
    if token.role.is_user() && token.user.is_none() {
        // A plain token of a user's role must not take over someone else's account (their
        // certificates would be revoked, and their role replaced).
        if let Some(existing) = state.users.get(name).filter(|u| u.role != token.role) {
            return Err(ApiError::Conflict(format!(
                "user {name} exists with role {}; log in under another name, or ask an admin \
                 for a login made for {name}: `cloudos user add {name} --role ROLE`",
                existing.role
            )));
        }
    }
    if !token.own_node {
        validate_join_name(name, &reserved_names(state))?;
        return Ok(());
    }
    validate_join_name(name, &state.config.tls_san)?;
    if name != state.config.node_name {
        return Err(ApiError::Forbidden(format!(
            "this token joins the master's own machine, as {}, and nothing else",
            state.config.node_name
        )));
    }
    Ok(())
}

fn admit(
    state: &MasterState,
    req: JoinRequest,
    caller: Option<NodeIdentity>,
    addr: SocketAddr,
) -> Result<JoinResponse, ApiError> {
    let now = OffsetDateTime::now_utc();
    check_arch(&req.arch)?;
    let id = req.token_id.as_str();
    let record = valid_token(state, &req.token_id, &req.token_secret, now)?;
    check_name(state, &req.node_name, &record)?;
    let identity = NodeIdentity::new(req.node_name.clone(), record.role)?;
    // The master's own node may take its old record back (its identity was lost): no
    // other machine can hold that name.
    let same_node = caller.as_ref() == Some(&identity) || record.own_node;
    if !identity.role.is_user() && state.roster.contains(&identity.name) && !same_node {
        return Err(ApiError::Conflict(format!(
            "node name {} is already taken by a registered node; give this machine another \
             host name, or remove the old node with `cloudos node remove {}` first",
            identity.name, identity.name
        )));
    }
    let issued = state
        .ca
        .sign_csr(&req.csr_pem, &identity, lifetime(state), now)?;
    let token = TokenUse {
        id,
        secret: &req.token_secret,
        now,
        role: Some(record.role),
    };

    if identity.role.is_user() {
        let admin = UserRecord {
            name: identity.name.clone(),
            role: identity.role,
            address: addr.ip().to_string(),
            cert_serial: issued.info.serial.clone(),
            pending_serial: None,
            token_id: id.to_owned(),
            joined_at: now,
            // A new login starts afresh: a dashboard password is set again after it.
            password_hash: None,
        };
        // Token use, admin record and the revocation of what a same-named admin held, in
        // one transaction; memory follows the store.
        let revoked = state
            .store
            .admit_user(&token, &admin, "the admin logged in again")?;
        state.users.put(admin);
        for r in revoked {
            state.mark_revoked(r.serial);
        }
        log::info!(
            "user {} ({}) logged in from {} (token {id})",
            identity.name,
            identity.role,
            addr.ip()
        );
        return Ok(response(state, &issued, identity.role));
    }
    let node = NodeRecord {
        name: identity.name.clone(),
        role: identity.role,
        address: addr.ip().to_string(),
        arch: req.arch,
        labels: record.labels.clone(),
        reported_labels: req.labels,
        cert_serial: issued.info.serial.clone(),
        pending_serial: None,
        joined_at: now,
        last_seen: now,
        telemetry: None,
        state: NodeState::NotReady,
        unschedulable: false,
        boot: None,
        // Given at its first hello (routes/agent.rs).
        subnet: None,
    };
    // The serials the registry holds are revoked with those the store holds (they differ
    // only if a renewal's store write failed).
    let revoke: Vec<RevokedCert> = state
        .roster
        .serials_of(&identity.name)
        .into_iter()
        .filter(|serial| *serial != node.cert_serial)
        .map(|serial| RevokedCert {
            serial,
            node: Some(identity.name.clone()),
            revoked_at: now,
            reason: REJOIN_REASON.to_owned(),
        })
        .collect();
    // Token use, node record and revocations in one transaction; memory follows the store.
    let admission = state.store.admit_node(&token, &node, &revoke)?;
    for revoked in admission.revoked {
        state.mark_revoked(revoked.serial);
    }
    state.roster.insert(node);
    log::info!(
        "node {} joined as {} from {} (token {id})",
        identity.name,
        identity.role,
        addr.ip()
    );
    Ok(response(state, &issued, identity.role))
}

/// `POST /v1/renew`: a new certificate for the caller's new key. It is the holder's
/// pending certificate until first used (see `credentials`); a pending one it replaces was
/// never used and is revoked.
pub async fn renew(
    State(state): State<AppState>,
    AnyCaller(identity): AnyCaller,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    let response = state
        .blocking(move |s| {
            let now = OffsetDateTime::now_utc();
            let issued = s.ca.sign_csr(&req.csr_pem, &identity, lifetime(s), now)?;
            let serial = issued.info.serial.clone();
            let name = &identity.name;
            let replaced = if identity.role.is_user() {
                let mut admin = s.users.get(name).ok_or_else(|| {
                    ApiError::Forbidden(format!("admin {name} is not on record; log in again"))
                })?;
                let replaced = admin.pending_serial.replace(serial.clone());
                s.store.put_user(&admin)?;
                s.users.put(admin);
                replaced
            } else {
                if !s.roster.contains(name) {
                    return Err(ApiError::NodeRemoved(format!(
                        "node {name} is not registered (it was removed); join it again with a new token"
                    )));
                }
                // The store first: memory follows only what is stored.
                s.store.update_node(name, &mut |stored| {
                    stored.pending_serial = Some(serial.clone());
                    Ok(())
                })?;
                s.roster
                    .set_pending_serial(name, serial.clone())
                    .and_then(|(_, replaced)| replaced)
            };
            if let Some(unused) = replaced {
                revoke(s, unused, name, "replaced by a newer renewal before it was used")?;
            }
            log::info!(
                "renewed the certificate of {identity} until {}",
                issued.info.not_after
            );
            Ok(response(s, &issued, identity.role))
        })
        .await?;
    Ok(Json(response))
}
