//! `/v1/rollout` and `/v1/nodes/{name}/rollback` (admin certificate only): start, follow,
//! resume and abort a rolling upgrade, and switch one node back to its other slot. The
//! handlers only translate; the rollout is `crate::rollout`.

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::rollout::{
    RollbackStarted, Rollout, RolloutRequest, RolloutResume, UpgradeStatus,
};

use super::caller::{AdminCaller, ViewerCaller};
use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;
use crate::rollout::{self, RolloutError};

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::BadVersion(_) | RolloutError::NoneAvailable | RolloutError::NoNodes => {
                ApiError::BadRequest(e.to_string())
            }
            RolloutError::Nothing(_) => ApiError::NotFound(e.to_string()),
            RolloutError::Store(e) => ApiError::Internal(e.to_string()),
            RolloutError::NothingToDo(_)
            | RolloutError::Refused(_)
            | RolloutError::Busy { .. }
            | RolloutError::NotResumable { .. } => ApiError::Conflict(e.to_string()),
        }
    }
}

/// `GET /v1/rollout`.
pub async fn status(State(state): State<AppState>, _: ViewerCaller) -> Json<UpgradeStatus> {
    Json(rollout::status(&state))
}

/// `POST /v1/rollout`.
pub async fn start(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    ApiJson(request): ApiJson<RolloutRequest>,
) -> Result<Json<Rollout>, ApiError> {
    let s = std::sync::Arc::clone(&state);
    let started = state
        .blocking(move |_| Ok(rollout::start(&s, request, &admin.name)?))
        .await?;
    Ok(Json(started))
}

/// `POST /v1/rollout/resume`.
pub async fn resume(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    ApiJson(request): ApiJson<RolloutResume>,
) -> Result<Json<Rollout>, ApiError> {
    let s = std::sync::Arc::clone(&state);
    let resumed = state
        .blocking(move |_| Ok(rollout::resume(&s, request.retry_failed, &admin.name)?))
        .await?;
    Ok(Json(resumed))
}

/// `POST /v1/rollout/abort`.
pub async fn abort(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
) -> Result<Json<Rollout>, ApiError> {
    let s = std::sync::Arc::clone(&state);
    let aborted = state
        .blocking(move |_| Ok(rollout::abort(&s, &admin.name)?))
        .await?;
    Ok(Json(aborted))
}

/// `POST /v1/nodes/{name}/rollback`: the node points its boot at its other slot (on trial,
/// so that a system that does not come up gives way to this one again) and reboots. Its
/// reports carry the answer's id.
pub async fn rollback_node(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<RollbackStarted>, ApiError> {
    if !state.roster.contains(&name) {
        return Err(ApiError::NotFound(format!(
            "no node named {name}; list nodes with `cloudos node list`"
        )));
    }
    if state.rollout.get().is_some_and(|r| {
        r.phase.is_active() && r.node(&name).is_some_and(|n| n.step.is_under_way())
    }) {
        return Err(ApiError::Conflict(format!(
            "node {name} is being upgraded by the rollout under way; abort it first (`cloudos upgrade abort`)"
        )));
    }
    let id = crate::ids::request_id("rb").map_err(ApiError::Internal)?;
    if !state
        .roster
        .send(&name, MasterMessage::Rollback { id: id.clone() })
    {
        return Err(ApiError::Conflict(format!(
            "node {name} is not connected; it can only be rolled back while it is"
        )));
    }
    log::info!(
        "{} asked node {name} to roll back to its other slot ({id})",
        admin.name
    );
    Ok(Json(RollbackStarted { node: name, id }))
}
