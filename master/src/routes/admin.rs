//! The cluster API: status (viewers), join tokens (list for viewers; create and revoke
//! for admins), nodes (list and show for viewers; label and remove = evict and revoke its
//! certificates for admins), and the metrics.

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::api::{
    ClusterStatus, NodeInfo, NodeLabelRequest, TokenCreateRequest, TokenCreateResponse, TokenInfo,
};
use cloudos_cluster::token::{parse_ttl, TokenRecord};
use cloudos_cluster::workload::{is_label_text, MAX_LABEL_LEN};
use cloudos_cluster::Token;
use cloudos_store::StoreError;
use time::OffsetDateTime;

use super::caller::{AdminCaller, ViewerCaller};
use super::AppState;
use crate::error::ApiError;
use crate::roster::Control;

const MAX_DESCRIPTION: usize = 200;

pub async fn status(State(state): State<AppState>, _: ViewerCaller) -> Json<ClusterStatus> {
    let (nodes_total, nodes_ready) = state.roster.counts();
    let etcd = crate::ha::health::members(&state).await;
    Json(ClusterStatus {
        cluster_name: state.cluster_name.clone(),
        ca_pin: state.ca.pin().to_string(),
        master_name: state.config.node_name.clone(),
        master_version: cloudos_release::version().to_string(),
        api_address: state.local_addr.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        nodes_total,
        nodes_ready,
        masters: state.masters.read().map(|m| m.clone()).unwrap_or_default(),
        etcd,
    })
}

pub async fn list_tokens(
    State(state): State<AppState>,
    _: ViewerCaller,
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
    check_labels(&req.labels)?;
    if req.description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::BadRequest(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    let response = state
        .blocking(move |s| {
            let token = Token::generate(s.ca.pin())?;
            let mut record = TokenRecord::new(
                &token,
                req.role,
                OffsetDateTime::now_utc(),
                ttl,
                req.uses,
                req.description,
            )?;
            record.labels = req.labels;
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

pub async fn list_nodes(State(state): State<AppState>, _: ViewerCaller) -> Json<Vec<NodeInfo>> {
    Json(state.roster.list())
}

fn no_node(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no node named {name}; list nodes with `cloudos node list`"
    ))
}

pub async fn get_node(
    State(state): State<AppState>,
    _: ViewerCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    state
        .roster
        .get(&name)
        .map(Json)
        .ok_or_else(|| no_node(&name))
}

/// Evicts a node: forgets it, revokes every certificate it holds, tells its open
/// connection. The store changes first, in one transaction; memory follows only once it is
/// committed.
pub async fn remove_node(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    // The serials in memory are revoked too, should they differ from the stored ones.
    let held = state.roster.serials_of(&name);
    if held.is_empty() {
        return Err(no_node(&name));
    }
    let reason = format!("removed from the cluster by {}", admin.name);
    let (n, why) = (name.clone(), reason.clone());
    let (record, revoked) = state
        .blocking(move |s| {
            match s
                .store
                .evict_node(&n, &why, OffsetDateTime::now_utc(), &held)
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
    let (live, conn) = state.roster.remove(&name).unzip();
    state.drains.forget(&name);
    state.workloads.usage.forget(&name);
    // Its peer goes from every node now: its key stops working with its certificate.
    crate::mesh::announce(&state.roster, &state.config.node_name);
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

/// Labels an admin sets: the node settings' rule, with empty values allowed.
fn check_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ApiError> {
    for (k, v) in labels {
        if !is_label_text(k) || !(v.is_empty() || is_label_text(v)) {
            return Err(ApiError::BadRequest(format!(
                "label `{}={}` is not valid: keys and values are at most {MAX_LABEL_LEN} of \
                 letters, digits, `-`, `_`, `.` and `/`",
                crate::error::bounded(k),
                crate::error::bounded(v)
            )));
        }
    }
    Ok(())
}

/// `POST /v1/nodes/{name}/labels`: sets and removes the labels selectors match, or
/// approves the ones the node reports.
pub async fn label_node(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
    super::extract::ApiJson(req): super::extract::ApiJson<NodeLabelRequest>,
) -> Result<Json<NodeInfo>, ApiError> {
    check_labels(&req.set)?;
    let record = state
        .roster
        .relabel(&name, |record| {
            if req.approve_reported {
                let reported = record.reported_labels.clone();
                record.labels.extend(reported);
            }
            record.labels.extend(req.set.clone());
            for key in &req.remove {
                record.labels.remove(key);
            }
        })
        .ok_or_else(|| no_node(&name))?;
    let labels = record.labels.clone();
    let who = name.clone();
    state
        .blocking(move |s| {
            s.store.update_node(&who, &mut |stored| {
                stored.labels = labels.clone();
                Ok(())
            })?;
            Ok(())
        })
        .await?;
    log::info!(
        "admin {} set the labels of node {name} to {:?}",
        admin.name,
        record.labels
    );
    Ok(Json(NodeInfo::from(&record)))
}

#[derive(serde::Deserialize)]
pub struct HistoryQuery {
    /// RFC 3339, or a span back from now such as `1h` (the default) or `30d`.
    since: Option<String>,
}

/// `GET /v1/nodes/{name}/history`: the node's measurements over time (see `history`).
pub async fn node_history(
    State(state): State<AppState>,
    _: ViewerCaller,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HistoryQuery>,
) -> Result<Json<cloudos_cluster::api::NodeHistory>, ApiError> {
    if state.roster.get(&name).is_none() {
        return Err(ApiError::NotFound(format!(
            "no node named {}; list nodes with `cloudos node list`",
            crate::error::bounded(&name)
        )));
    }
    let now = OffsetDateTime::now_utc();
    let since = crate::since::parse(query.since.as_deref().unwrap_or("1h"), now)
        .map_err(ApiError::BadRequest)?;
    let history = state
        .blocking(move |s| {
            Ok(crate::history::node_history(
                s.store.as_ref(),
                &name,
                since,
                now,
            )?)
        })
        .await?;
    Ok(Json(history))
}

/// `GET /metrics`: OpenMetrics to a scraper that asks for it, else the Prometheus text
/// format (`cloudos_cluster::exposition`).
pub async fn metrics(
    State(state): State<AppState>,
    _: ViewerCaller,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let mut tasks: Vec<_> = {
        let book = state.workloads.book();
        book.tasks()
            .filter(|t| t.state == cloudos_cluster::workload::TaskState::Running)
            .cloned()
            .collect()
    };
    tasks.iter_mut().for_each(|t| state.workloads.usage.fill(t));
    let body = state.metrics.render(&state.roster.list(), &tasks);
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = cloudos_cluster::exposition::negotiate(accept, body);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
}
