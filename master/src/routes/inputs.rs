//! Tasks' input archives: an admin uploads one (`POST /v1/inputs`, before `cloudos run
//! --input` creates its task), and the node a run of that task is assigned to fetches it
//! (`GET /v1/runs/{run}/input`). Nobody else reads it back.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cloudos_cluster::workload::{InputInfo, WorkloadSpec, MAX_INPUT_BYTES};

use super::caller::{NodeCaller, OperatorCaller};
use super::upload::{receive, Upload};
use super::workloads::random_hex;
use super::AppState;
use crate::error::ApiError;
use crate::workloads::book;

/// `POST /v1/inputs`: streamed to a file, kept under its sha256.
pub async fn upload(
    State(state): State<AppState>,
    _: OperatorCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InputInfo>, ApiError> {
    let tmp = Upload(state.workloads.input_upload_path(&random_hex(8)?));
    if let Some(dir) = tmp.0.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ApiError::Internal(format!("cannot make {}: {e}", dir.display())))?;
    }
    let size = receive(&headers, body, &tmp.0, MAX_INPUT_BYTES).await?;
    let info = state
        .blocking(move |s| {
            let kept = s
                .workloads
                .store_input(&tmp.0, size)
                .map_err(|e| ApiError::Internal(format!("cannot keep the input: {e}")))?;
            tmp.keep();
            Ok::<_, ApiError>(kept)
        })
        .await?;
    log::info!("input {} kept ({} bytes)", info.digest, info.bytes);
    Ok(Json(info))
}

/// `GET /v1/runs/{run}/input`: only for the node the run is assigned to, as the output.
pub async fn for_run(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    Path(run): Path<String>,
) -> Result<Response, ApiError> {
    let digest = {
        let book = state.workloads.book();
        if !book.is_current_run(&node.name, &run) {
            return Err(ApiError::Forbidden(format!(
                "run {run} is not assigned to node {}",
                node.name
            )));
        }
        book.task(book::task_of_run(&run))
            .and_then(|t| t.spec.input.clone())
            .ok_or_else(|| ApiError::NotFound(format!("run {run} has no input")))?
    };
    let path = state.workloads.input_path(&digest);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::NotFound(format!("the input {digest} of run {run} is gone: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], bytes).into_response())
}

/// A task's input must have been uploaded; a service takes none.
pub fn check(state: &AppState, spec: &WorkloadSpec, task: bool) -> Result<(), ApiError> {
    let Some(digest) = &spec.input else {
        return Ok(());
    };
    if !task {
        return Err(ApiError::BadRequest(
            "a service has no input files: --input is for tasks (cloudos run)".into(),
        ));
    }
    if !state.workloads.input_path(digest).is_file() {
        return Err(ApiError::BadRequest(format!(
            "no input {digest}: upload it first (cloudos run --input does)"
        )));
    }
    Ok(())
}
