//! `POST /v1/masters/join`: a master joins the masters (see `ha::grow`). Anonymous with a
//! master token, rate-limited per address like a node's join.
//! `DELETE /v1/masters/{name}`: an admin removes a master (see `ha::shrink`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::{Extension, Json};
use cloudos_cluster::api::{MasterJoinRequest, MasterJoinResponse};

use super::caller::AdminCaller;
use super::extract::ApiJson;
use super::join::{note_refusal, refuse_if_limited};
use super::AppState;
use crate::error::ApiError;
use crate::ha::grow;
use crate::server::LocalAddr;

pub async fn join(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    local: Option<Extension<LocalAddr>>,
    body: Result<ApiJson<MasterJoinRequest>, ApiError>,
) -> Result<Json<MasterJoinResponse>, ApiError> {
    let ip = addr.ip();
    refuse_if_limited(&state, ip, "master join")?;
    let local_ip = local.map(|Extension(LocalAddr(local))| local.ip());
    let result = match body {
        Ok(ApiJson(request)) => {
            state
                .blocking(move |s| grow::admit(s, request, local_ip))
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(admitted) => {
            if admitted.restart {
                grow::restart_soon();
            }
            Ok(Json(admitted.response))
        }
        Err(e) => {
            note_refusal(&state, ip, "master join", &e);
            Err(e)
        }
    }
}

pub async fn remove(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let left = state
        .blocking(move |s| crate::ha::shrink::remove(s, &name))
        .await?;
    Ok(Json(serde_json::json!({ "masters_left": left })))
}
