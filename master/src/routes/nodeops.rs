//! Node operations over HTTP (admin certificate only): cordon, uncordon, drain (started
//! here, run by `nodeops::drain` in its own task, its progress read back with `GET`) and
//! reboot. The handlers only translate; the operations are `crate::nodeops`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::api::NodeInfo;
use cloudos_cluster::nodeops::{DrainPhase, DrainRequest, DrainStatus, RebootStarted};
use time::OffsetDateTime;

use super::caller::{AdminCaller, ViewerCaller};
use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;
use crate::nodeops::{self, DrainOptions, NodeOpError};

/// The longest drain timeout accepted: a day.
const MAX_DRAIN_TIMEOUT_SECS: u64 = 86_400;

/// `POST /v1/nodes/{name}/cordon`.
pub async fn cordon(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    log::info!("admin {} cordons node {name}", admin.name);
    Ok(Json(nodeops::set_cordon(&state, &name, true).await?))
}

/// `POST /v1/nodes/{name}/uncordon`.
pub async fn uncordon(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    log::info!("admin {} uncordons node {name}", admin.name);
    Ok(Json(nodeops::set_cordon(&state, &name, false).await?))
}

/// `POST /v1/nodes/{name}/drain`: starts a drain in its own task and answers at once with
/// its first status; a drain already under way is answered as it is.
pub async fn start_drain(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<DrainRequest>,
) -> Result<Json<DrainStatus>, ApiError> {
    if request.timeout_secs > MAX_DRAIN_TIMEOUT_SECS {
        return Err(ApiError::BadRequest(format!(
            "a drain timeout of {}s is more than a day ({MAX_DRAIN_TIMEOUT_SECS}s)",
            request.timeout_secs
        )));
    }
    if !state.roster.contains(&name) {
        return Err(NodeOpError::NoNode(name).into());
    }
    let status = DrainStatus::new(&name, request.timeout_secs, OffsetDateTime::now_utc());
    if let Some(running) = state.drains.begin(status.clone()) {
        return Ok(Json(running));
    }
    log::info!("admin {} drains node {name}", admin.name);
    let options = DrainOptions::with_timeout(Duration::from_secs(request.timeout_secs));
    let s = Arc::clone(&state);
    tokio::spawn(async move {
        let drains = &s.drains;
        let mut report = |status: &DrainStatus| drains.update(status);
        if let Err(e) = nodeops::drain(&s, &name, options, &mut report).await {
            // Failures before the first pass (the cordon's store write) have no status yet.
            if let Some(mut status) = drains.get(&name).filter(|st| !st.is_over()) {
                status.phase = DrainPhase::Failed;
                status.finished_at = Some(OffsetDateTime::now_utc());
                status.reason = Some(e.to_string());
                drains.update(&status);
            }
        }
    });
    Ok(Json(status))
}

/// `GET /v1/nodes/{name}/drain`: the node's drain under way, or the last one.
pub async fn drain_status(
    State(state): State<AppState>,
    _: ViewerCaller,
    Path(name): Path<String>,
) -> Result<Json<DrainStatus>, ApiError> {
    state.drains.get(&name).map(Json).ok_or_else(|| {
        ApiError::NotFound(format!(
            "node {} has not been drained since the master started; `cloudos node drain {}` drains it",
            crate::error::bounded(&name),
            crate::error::bounded(&name)
        ))
    })
}

/// `POST /v1/nodes/{name}/reboot`.
pub async fn reboot(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<RebootStarted>, ApiError> {
    let by = format!("admin {}", admin.name);
    Ok(Json(nodeops::reboot(&state, &name, &by)?))
}
