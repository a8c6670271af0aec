//! The admin API (admin certificate only): cluster status, join tokens (list, create,
//! revoke) and nodes (list, show, remove = evict and revoke its certificate).

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::api::{
    ClusterStatus, NodeInfo, TokenCreateRequest, TokenCreateResponse, TokenInfo,
};
use cloudos_cluster::store::StoreError;
use cloudos_cluster::token::{parse_ttl, TokenRecord};
use cloudos_cluster::Token;
use time::OffsetDateTime;

use super::caller::AdminCaller;
use super::AppState;
use crate::master::error::ApiError;
use crate::master::registry::Control;

const MAX_DESCRIPTION: usize = 200;

pub async fn status(State(state): State<AppState>, _: AdminCaller) -> Json<ClusterStatus> {
    let (nodes_total, nodes_ready) = state.registry.counts();
    Json(ClusterStatus {
        cluster_name: state.cluster_name.clone(),
        ca_pin: state.ca.pin().to_string(),
        master_name: state.config.node_name.clone(),
        master_version: env!("CARGO_PKG_VERSION").to_owned(),
        api_address: state.local_addr.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        nodes_total,
        nodes_ready,
    })
}

pub async fn list_tokens(
    State(state): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = state.blocking(|s| Ok(s.store.list_tokens()?)).await?;
    Ok(Json(tokens.iter().map(TokenInfo::from).collect()))
}

pub async fn create_token(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    super::extract::ApiJson(req): super::extract::ApiJson<TokenCreateRequest>,
) -> Result<Json<TokenCreateResponse>, ApiError> {
    let ttl = req.ttl.as_deref().map(parse_ttl).transpose()?;
    if req.uses == Some(0) {
        return Err(ApiError::BadRequest(
            "uses must be at least 1 (leave it out for unlimited uses)".to_owned(),
        ));
    }
    if req.description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::BadRequest(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    let response = state
        .blocking(move |s| {
            let token = Token::generate(s.ca.pin())?;
            let record = TokenRecord::new(
                &token,
                req.role,
                OffsetDateTime::now_utc(),
                ttl,
                req.uses,
                req.description,
            )?;
            s.store.put_token(&record)?;
            log::info!(
                "admin {} created token {} for role {}",
                admin.name,
                record.id,
                record.role
            );
            Ok(TokenCreateResponse {
                token: token.to_string(),
                info: TokenInfo::from(&record),
            })
        })
        .await?;
    Ok(Json(response))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let record = state
        .blocking(move |s| match s.store.revoke_token(&id) {
            Ok(record) => Ok(record),
            Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound(format!(
                "no token with id {id}; list tokens with `cloudos token list`"
            ))),
            Err(e) => Err(e.into()),
        })
        .await?;
    log::info!("admin {} revoked token {}", admin.name, record.id);
    Ok(Json(TokenInfo::from(&record)))
}

pub async fn list_nodes(State(state): State<AppState>, _: AdminCaller) -> Json<Vec<NodeInfo>> {
    Json(state.registry.list())
}

fn no_node(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no node named {name}; list nodes with `cloudos node list`"
    ))
}

pub async fn get_node(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    state
        .registry
        .get(&name)
        .map(Json)
        .ok_or_else(|| no_node(&name))
}

/// Evicts a node: forgets it, revokes its certificate, tells its open connection. The store
/// changes first, in one transaction; memory follows only once it is committed.
pub async fn remove_node(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    // The serial in memory is revoked too, should it differ from the stored one.
    let held = state
        .registry
        .cert_serial_of(&name)
        .ok_or_else(|| no_node(&name))?;
    let reason = format!("removed from the cluster by {}", admin.name);
    let (n, why) = (name.clone(), reason.clone());
    let (record, revoked) = state
        .blocking(move |s| {
            match s
                .store
                .evict_node(&n, &why, OffsetDateTime::now_utc(), &[held])
            {
                Err(StoreError::NotFound { .. }) => Err(no_node(&n)),
                other => Ok(other?),
            }
        })
        .await?;
    for r in &revoked {
        state.mark_revoked(r.serial.clone());
    }
    // Memory's record has the live state (last heartbeat, telemetry) to show.
    let (live, conn) = state.registry.remove(&name).unzip();
    let info = NodeInfo::from(live.as_ref().unwrap_or(&record));
    if let Some(conn) = conn.flatten() {
        // A full channel means an eviction is already queued.
        let _ = conn.control.try_send(Control::Evict { reason });
    }
    let serials: Vec<String> = revoked.iter().map(|r| r.serial.to_string()).collect();
    log::info!(
        "node {name} removed by admin {}; certificates {} revoked",
        admin.name,
        serials.join(", ")
    );
    Ok(Json(info))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(
    State(state): State<AppState>,
    _: AdminCaller,
) -> impl axum::response::IntoResponse {
    let body = state.metrics.render(&state.registry.list());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
