//! Named volumes (`cloudos volume list|rm`), with an admin certificate.

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::volume::VolumeList;

use super::caller::AdminCaller;
use super::AppState;
use crate::error::ApiError;
use crate::workloads;

/// `GET /v1/volumes`.
pub async fn list(State(state): State<AppState>, _: AdminCaller) -> Json<VolumeList> {
    Json(state.workloads.book().volumes())
}

/// `DELETE /v1/volumes/{name}`: forgets the volume and has its node delete its data.
pub async fn remove(
    State(state): State<AppState>,
    _: AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = state
        .blocking(move |s| {
            // Whether the node can be told now; `None`: it is no longer in the cluster.
            let connected =
                |node: &str| s.roster.contains(node).then(|| s.roster.is_connected(node));
            workloads::commit(s, |book| {
                book.remove_volume(&name, &connected)
                    .map_err(ApiError::from)
            })
        })
        .await?;
    log::info!(
        "volume {} removed; node {} deletes its data",
        record.name,
        record.node
    );
    Ok(Json(serde_json::json!({})))
}
