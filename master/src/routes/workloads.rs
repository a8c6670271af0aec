//! The workload API: tasks (`cloudos run`, `ps`, `logs`, `cancel`, `output`), services
//! (`deploy`, `scale`, `rollback`, `delete`) with an admin certificate, and the nodes'
//! `/output` uploads with a node certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cloudos_cluster::client::MAX_TRANSFER_BYTES;
use cloudos_cluster::revision::{RollbackRequest, ServiceDeployRequest};
use cloudos_cluster::workload::{
    validate_request_id, validate_service_name, validate_timeout, LogLine, LogStream, ScaleRequest,
    ServiceCreateRequest, ServiceInfo, TaskCreateRequest, TaskInfo, WorkloadList, MAX_RETRIES,
};
use serde::Deserialize;
use time::OffsetDateTime;

use cloudos_cluster::workload::HideEnv;

use super::caller::{NodeCaller, OperatorCaller, ViewerCaller};
use super::extract::ApiJson;
use super::upload::{receive, Upload};
use super::AppState;
use crate::error::ApiError;
use crate::state::MasterState;
use crate::workloads::{self, book};

/// How often a followed log looks for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Largest piece of a log file sent as one line.
const LOG_PIECE: usize = 16 * 1024;

fn no_task(id: &str) -> ApiError {
    ApiError::NotFound(format!("no task {id}; `cloudos ps` lists them"))
}

fn task_of(state: &MasterState, id: &str) -> Result<TaskInfo, ApiError> {
    let mut task = state
        .workloads
        .book()
        .shown(id)
        .ok_or_else(|| no_task(id))?;
    state.workloads.usage.fill(&mut task);
    Ok(task)
}

/// A task id nobody has: `t-` and 10 hex digits from the OS's randomness.
fn new_task_id(state: &MasterState) -> Result<String, ApiError> {
    loop {
        let id = format!("t-{}", random_hex(5)?);
        if state.workloads.book().task(&id).is_none() {
            return Ok(id);
        }
    }
}

/// [`crate::ids::random_hex`] as the API's error.
pub(super) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    crate::ids::random_hex(bytes).map_err(ApiError::Internal)
}

/// What a caller sees of workloads: environment values only if they are an admin
/// ([`WorkloadSpec::hide_env`](cloudos_cluster::workload::WorkloadSpec::hide_env)).
fn shown<T: HideEnv>(caller: &cloudos_cluster::NodeIdentity, mut shown: T) -> T {
    if caller.role != cloudos_cluster::Role::Admin {
        shown.hide_env();
    }
    shown
}

pub async fn list(
    State(state): State<AppState>,
    ViewerCaller(caller): ViewerCaller,
) -> Result<Json<WorkloadList>, ApiError> {
    // Sizes come from the disk: read off the async workers.
    let workloads = state
        .blocking(|s| {
            let book = s.workloads.book();
            let mut w = book.workloads();
            w.retention = Some(s.workloads.retention_info(&book));
            drop(book);
            s.workloads.usage.fill_list(&mut w);
            Ok(w)
        })
        .await?;
    Ok(Json(shown(&caller, workloads)))
}

pub async fn list_tasks(
    State(state): State<AppState>,
    ViewerCaller(caller): ViewerCaller,
) -> Json<Vec<TaskInfo>> {
    let mut tasks = state.workloads.book().workloads().tasks;
    tasks.iter_mut().for_each(|t| state.workloads.usage.fill(t));
    Json(shown(&caller, tasks))
}

pub async fn create_task(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    ApiJson(mut request): ApiJson<TaskCreateRequest>,
) -> Result<Json<TaskInfo>, ApiError> {
    request.spec.validate()?;
    super::inputs::check(&state, &request.spec, true)?;
    if let Some(id) = &request.request_id {
        validate_request_id(id)?;
    }
    if let Some(secs) = request.timeout_secs {
        validate_timeout(secs)?;
    }
    request.spec.platforms = platforms_of(&state, &request.spec.image).await;
    if request.retries > MAX_RETRIES {
        return Err(ApiError::BadRequest(format!(
            "retries must be at most {MAX_RETRIES}, not {}",
            request.retries
        )));
    }
    let task = state
        .blocking(move |s| {
            let id = new_task_id(s)?;
            workloads::commit(s, |book| {
                secrets_exist(s, &request.spec)?;
                Ok::<_, ApiError>(book.create_task(id, request, OffsetDateTime::now_utc())?)
            })
        })
        .await?;
    log::info!("task {} queued: {}", task.id, task.spec.image);
    Ok(Json(shown(&caller, task)))
}

pub async fn get_task(
    State(state): State<AppState>,
    ViewerCaller(caller): ViewerCaller,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, ApiError> {
    Ok(Json(shown(&caller, task_of(&state, &id)?)))
}

pub async fn cancel_task(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, ApiError> {
    let task = state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                Ok::<_, ApiError>(book.cancel(&id, OffsetDateTime::now_utc())?)
            })
        })
        .await?;
    log::info!("task {} cancelled", task.id);
    Ok(Json(shown(&caller, task)))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// Newline-delimited [`LogLine`]s: what the master holds, and with `follow=true` what
/// arrives until the task has ended and its last output is in.
pub async fn task_logs(
    State(state): State<AppState>,
    _: ViewerCaller,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    task_of(&state, &id)?;
    let follower = LogFollower {
        state,
        id,
        follow: query.follow,
        offsets: [0, 0],
        quiet_after_end: 0,
    };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let piece = f.next_piece().await?;
        Some((Ok::<Bytes, std::io::Error>(piece), f))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct LogFollower {
    state: Arc<MasterState>,
    id: String,
    follow: bool,
    offsets: [u64; 2],
    /// Polls with nothing new since the task ended: the agent's last chunks may still be
    /// on their way, so a follower waits a little before it ends.
    quiet_after_end: u32,
}

impl LogFollower {
    /// The next lines to send; `None` at the end.
    async fn next_piece(&mut self) -> Option<Bytes> {
        loop {
            let mut out = Vec::new();
            for (i, stream) in [LogStream::Stdout, LogStream::Stderr]
                .into_iter()
                .enumerate()
            {
                let path = self.state.workloads.log_path(&self.id, stream);
                if let Some(data) = read_piece(&path, self.offsets[i]) {
                    self.offsets[i] += data.len() as u64;
                    let line = LogLine { stream, data };
                    if let Ok(mut json) = serde_json::to_vec(&line) {
                        json.push(b'\n');
                        out.extend(json);
                    }
                }
            }
            if !out.is_empty() {
                self.quiet_after_end = 0;
                return Some(Bytes::from(out));
            }
            if !self.follow {
                return None;
            }
            let ended = self
                .state
                .workloads
                .book()
                .task(&self.id)
                .is_none_or(|t| t.state.is_final());
            if ended {
                self.quiet_after_end += 1;
                if self.quiet_after_end > 4 {
                    return None;
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Up to [`LOG_PIECE`] bytes of `path` from `offset`, cut at a character boundary (the
/// master's log files hold the agents' text, which is valid UTF-8).
fn read_piece(path: &std::path::Path, offset: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; LOG_PIECE];
    let n = file.read(&mut buf).ok()?;
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    match String::from_utf8(buf) {
        Ok(s) => Some(s),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
        }
    }
}

/// The tar archive of what the task wrote to `/output`.
pub async fn task_output(
    State(state): State<AppState>,
    _: ViewerCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = task_of(&state, &id)?;
    let path = state.workloads.output_path(&id);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = if task.state.is_final() {
                format!("task {id} wrote nothing to /output (or its node could not hand it in)")
            } else {
                format!(
                    "task {id} is {}; its /output is collected when it ends",
                    task.state
                )
            };
            return Err(ApiError::NotFound(why));
        }
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], bytes).into_response())
}

/// A node hands in the `/output` archive of a run assigned to it. Who may upload is decided
/// from the path and the certificate alone, before a byte of the body is read; the body then
/// goes to a file, never into memory, and is cut off at [`MAX_TRANSFER_BYTES`].
pub async fn upload_output(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.workloads.book().is_current_run(&node.name, &run) {
        return Err(ApiError::Forbidden(format!(
            "run {run} is not assigned to node {}",
            node.name
        )));
    }
    let tag = random_hex(8)?;
    let upload = Upload(workloads::output_upload_path(&state, &run, &tag));
    let size = receive(&headers, body, &upload.0, MAX_TRANSFER_BYTES as u64).await?;
    let size = state
        .blocking(move |s| {
            let stored =
                workloads::store_output(s, &run, &upload.0, size).map_err(|e| match e {
                    workloads::OutputError::Store(e) => ApiError::Store(e),
                    e => ApiError::Internal(format!("cannot store the output: {e}")),
                })?;
            upload.keep();
            Ok(stored)
        })
        .await?;
    Ok(Json(serde_json::json!({ "bytes": size })))
}

pub async fn list_services(
    State(state): State<AppState>,
    ViewerCaller(caller): ViewerCaller,
) -> Json<Vec<ServiceInfo>> {
    let mut services = state.workloads.book().workloads().services;
    services
        .iter_mut()
        .for_each(|s| state.workloads.usage.fill_service(s));
    Json(shown(&caller, services))
}

fn service_of(state: &MasterState, name: &str) -> Result<ServiceInfo, ApiError> {
    let mut service = state
        .workloads
        .book()
        .service(name)
        .ok_or_else(|| book::BookError::NoService(name.to_owned()))?;
    state.workloads.usage.fill_service(&mut service);
    Ok(service)
}

pub async fn create_service(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    ApiJson(mut request): ApiJson<ServiceCreateRequest>,
) -> Result<Json<ServiceInfo>, ApiError> {
    validate_service_name(&request.name)?;
    request.spec.validate()?;
    super::inputs::check(&state, &request.spec, false)?;
    if let Some(id) = &request.request_id {
        validate_request_id(id)?;
    }
    request.spec.platforms = platforms_of(&state, &request.spec.image).await;
    let name = request.name.clone();
    let service = state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                secrets_exist(s, &request.spec)?;
                let effects = book.create_service(request, OffsetDateTime::now_utc())?;
                Ok::<_, ApiError>(((), effects))
            })?;
            service_of(s, &name)
        })
        .await?;
    log::info!(
        "service {} deployed: {} × {}",
        service.name,
        service.replicas,
        service.spec.image
    );
    Ok(Json(shown(&caller, service)))
}

/// `PUT /v1/services/{name}`: makes the service, or starts its update to the new spec.
pub async fn deploy_service(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    Path(name): Path<String>,
    ApiJson(mut request): ApiJson<ServiceDeployRequest>,
) -> Result<Json<ServiceInfo>, ApiError> {
    validate_service_name(&name)?;
    request.spec.validate()?;
    super::inputs::check(&state, &request.spec, false)?;
    if let Some(id) = &request.request_id {
        validate_request_id(id)?;
    }
    request.spec.platforms = platforms_of(&state, &request.spec.image).await;
    let image = request.spec.image.clone();
    let (deployed, service) = state
        .blocking(move |s| {
            let deployed = workloads::commit(s, |book| {
                secrets_exist(s, &request.spec)?;
                let (deployed, effects) = book.deploy(&name, request, OffsetDateTime::now_utc())?;
                Ok::<_, ApiError>((deployed, effects))
            })?;
            Ok::<_, ApiError>((deployed, service_of(s, &name)?))
        })
        .await?;
    let name = &service.name;
    match deployed {
        book::Deployed::Created => {
            log::info!("service {name} deployed: {} × {image}", service.replicas)
        }
        book::Deployed::Updating { from, to } => {
            log::info!("service {name}: updating from revision {from} to {to} ({image})")
        }
        book::Deployed::Unchanged => {}
    }
    Ok(Json(shown(&caller, service)))
}

/// `POST /v1/services/{name}/rollback`: an update back to an earlier revision's spec.
pub async fn rollback_service(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> Result<Json<ServiceInfo>, ApiError> {
    let service = state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                book.roll_back(&name, request.to, OffsetDateTime::now_utc())
                    .map_err(ApiError::from)
            })?;
            service_of(s, &name)
        })
        .await?;
    let back = service.revisions.last().map(|r| r.cause.clone());
    log::info!(
        "service {}: revision {} ({})",
        service.name,
        service.revision,
        back.unwrap_or_default()
    );
    Ok(Json(shown(&caller, service)))
}

/// The architectures `image` is published for, read with the cluster's credentials for
/// its registry when it has some.
async fn platforms_of(state: &AppState, image: &str) -> Vec<String> {
    let registry = cloudos_cluster::registry::registry_of(image).to_owned();
    let auth = state
        .blocking(move |s| Ok::<_, ApiError>(crate::registries::credentials_for(s, &registry)))
        .await
        .ok()
        .flatten();
    state.workloads.platforms.architectures(image, auth).await
}

/// Every secret `spec` names exists: work never starts without one it needs. Called in
/// the book's change, under its lock, as `secret rm` checks and deletes: no secret goes
/// between the check and the work that names it.
fn secrets_exist(
    s: &MasterState,
    spec: &cloudos_cluster::workload::WorkloadSpec,
) -> Result<(), ApiError> {
    for name in spec.secret_names() {
        if s.store.get_secret(name)?.is_none() {
            return Err(ApiError::BadRequest(format!(
                "no secret {name}; `cloudos secret create {name} -f FILE` makes it"
            )));
        }
    }
    Ok(())
}

pub async fn get_service(
    State(state): State<AppState>,
    ViewerCaller(caller): ViewerCaller,
    Path(name): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(shown(&caller, service_of(&state, &name)?)))
}

pub async fn scale_service(
    State(state): State<AppState>,
    OperatorCaller(caller): OperatorCaller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ScaleRequest>,
) -> Result<Json<ServiceInfo>, ApiError> {
    let service = state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                let effects = book.scale(&name, request.replicas, OffsetDateTime::now_utc())?;
                Ok::<_, ApiError>(((), effects))
            })?;
            service_of(s, &name)
        })
        .await?;
    log::info!("service {} scaled to {}", service.name, service.replicas);
    Ok(Json(shown(&caller, service)))
}

pub async fn delete_service(
    State(state): State<AppState>,
    _: OperatorCaller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .blocking(move |s| {
            workloads::commit(s, |book| {
                let effects = book.delete_service(&name, OffsetDateTime::now_utc())?;
                Ok::<_, ApiError>(((), effects))
            })?;
            log::info!("service {name} deleted");
            Ok(())
        })
        .await?;
    Ok(Json(serde_json::json!({})))
}
