//! Named volumes (`cloudos volume create|resize|list|rm`), with an admin certificate.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::volume::{VolumeChange, VolumeList, VolumeRequest};

use super::caller::{OperatorCaller, ViewerCaller};
use super::AppState;
use crate::error::ApiError;
use crate::workloads;

/// `GET /v1/volumes`, with what each limited volume holds as its node last said.
pub async fn list(State(state): State<AppState>, _: ViewerCaller) -> Json<VolumeList> {
    let mut list = state.workloads.book().volumes();
    let mut reported: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    state.roster.each(|node, telemetry| {
        if let Some(t) = telemetry {
            reported.insert(node.name.clone(), t.volumes.clone());
        }
    });
    for v in &mut list.volumes {
        v.used_bytes = v
            .node
            .as_ref()
            .and_then(|node| reported.get(node)?.get(&v.name).copied());
    }
    Json(list)
}

/// Whether `node` can be told now; `None`: it is no longer in the cluster.
fn connected(s: &crate::state::MasterState, node: &str) -> Option<bool> {
    s.roster.contains(node).then(|| s.roster.is_connected(node))
}

/// `PUT /v1/volumes/{name}`: makes the volume, or sets the size limit of the one there
/// is (its node applies it at once when connected, else when work next mounts it).
pub async fn put(
    State(state): State<AppState>,
    _: OperatorCaller,
    Path(name): Path<String>,
    Json(request): Json<VolumeRequest>,
) -> Result<Json<VolumeChange>, ApiError> {
    let change = state
        .blocking(move |s| {
            let now = time::OffsetDateTime::now_utc();
            workloads::commit(s, |book| {
                book.set_volume(&name, request.size_limit, now, &|node| connected(s, node))
                    .map_err(ApiError::from)
            })
        })
        .await?;
    log::info!(
        "volume {} {}, size limit {}",
        change.volume.name,
        if change.created { "created" } else { "changed" },
        change
            .volume
            .size_limit
            .map_or("none".to_owned(), |b| b.to_string())
    );
    Ok(Json(change))
}

/// `DELETE /v1/volumes/{name}`: forgets the volume and has its node delete its data.
pub async fn remove(
    State(state): State<AppState>,
    _: OperatorCaller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                book.remove_volume(&name, &|node| connected(s, node))
                    .map_err(ApiError::from)
            })
        })
        .await?;
    match record.node {
        Some(node) => log::info!(
            "volume {} removed; node {node} deletes its data",
            record.name
        ),
        None => log::info!("volume {} removed (it was on no node)", record.name),
    }
    Ok(Json(serde_json::json!({})))
}
