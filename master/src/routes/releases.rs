//! `/v1/releases`: admins upload and list signed update bundles; nodes (and admins)
//! download one over their mutual-TLS connection. The checks are `crate::releases`'s.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use cloudos_cluster::api::{
    MasterMessage, NodeUpgradeRequest, NodeUpgradeStarted, ReleaseInfo, ReleaseList,
};
use cloudos_cluster::client::MAX_TRANSFER_BYTES;

use super::caller::{AdminCaller, AnyCaller, ViewerCaller};
use super::upload::{receive, Upload};
use super::workloads::random_hex;
use super::AppState;
use crate::error::ApiError;
use crate::releases::ReleaseError;

pub async fn list(
    State(state): State<AppState>,
    _: ViewerCaller,
) -> Result<Json<ReleaseList>, ApiError> {
    let releases = state.blocking(|s| Ok(s.releases.list())).await?;
    Ok(Json(ReleaseList {
        releases,
        running: cloudos_release::version().to_string(),
        development_key: cloudos_release::trusts_development_key(),
    }))
}

pub async fn add(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ReleaseInfo>, ApiError> {
    let tag = random_hex(8)?;
    let path = state
        .releases
        .upload_path(&tag)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let upload = Upload(path);
    receive(&headers, body, &upload.0, MAX_TRANSFER_BYTES as u64).await?;
    let path = upload.0.clone();
    let info = state
        .blocking(move |s| {
            s.releases.add(&path).map_err(|e| match e {
                ReleaseError::Refused(e) => {
                    ApiError::BadRequest(format!("the bundle is refused: {e}"))
                }
                ReleaseError::Conflict { .. } => ApiError::Conflict(e.to_string()),
                e => ApiError::Internal(e.to_string()),
            })
        })
        .await?;
    upload.keep();
    log::info!(
        "release {} for {} added by {} (signed by key {})",
        info.version,
        info.arch,
        admin.name,
        info.key
    );
    Ok(Json(info))
}

pub async fn download(
    State(state): State<AppState>,
    _: AnyCaller,
    Path((version, arch)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = state
        .releases
        .path(&version, &arch)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))?;
    let length = file.metadata().await.ok().map(|m| m.len());
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-tar"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, length.into());
    }
    Ok(response)
}

/// `POST /v1/nodes/{name}/upgrade`: tells a connected node to install a kept release. The
/// node checks the bundle itself and reports how it went in its heartbeats; this answers as
/// soon as the node was told.
pub async fn upgrade_node(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
    super::extract::ApiJson(req): super::extract::ApiJson<NodeUpgradeRequest>,
) -> Result<Json<NodeUpgradeStarted>, ApiError> {
    let node = state
        .roster
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no node named {name}")))?;
    // A release this node already went back from is not tried again unless the admin says
    // so: the node reports its last upgrade in every heartbeat, so this survives restarts of
    // the master and of the node.
    if !req.retry_failed {
        if let Some(why) = crate::rollout::plan::failed_before(&node, &req.version) {
            return Err(ApiError::Conflict(format!(
                "node {name} already failed to upgrade to {}: {why}; fix the release, or pass --retry-failed to try it again",
                req.version
            )));
        }
    }
    // Refused here rather than on the node: the admin hears it at once.
    state
        .releases
        .path(&req.version, &node.arch)
        .map_err(|e| ApiError::NotFound(format!("{e}; add it with `cloudos release add`")))?;
    let id = crate::ids::request_id("u").map_err(ApiError::Internal)?;
    let message = MasterMessage::Upgrade {
        id: id.clone(),
        version: req.version.clone(),
        allow_downgrade: req.allow_downgrade,
    };
    if !state.roster.send(&name, message) {
        return Err(ApiError::Conflict(format!(
            "node {name} is not connected; it can only be upgraded while it is"
        )));
    }
    log::info!(
        "{} asked node {name} to upgrade to {}{} ({id})",
        admin.name,
        req.version,
        if req.allow_downgrade {
            " (downgrade allowed)"
        } else {
            ""
        }
    );
    Ok(Json(NodeUpgradeStarted {
        node: node.name,
        version: req.version,
        id,
    }))
}
