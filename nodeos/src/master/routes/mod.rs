//! The HTTP API: which handler serves which method and path, the body limit, and the
//! fallback. Handlers live in one module per area; `caller` and `extract` hold what they
//! share (who is calling, JSON bodies). The table here is also what the OpenAPI document
//! is checked against.

mod admin;
mod agent;
mod caller;
mod extract;
mod install;
mod join;
mod openapi;
mod workloads;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use cloudos_cluster::api::paths;

use super::error::ApiError;
use super::state::MasterState;

type AppState = Arc<MasterState>;

/// Largest request body accepted (JSON with a CSR is a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// `DELETE` revokes the token.
const TOKEN: &str = "/v1/tokens/{id}";
/// `GET` shows the node, `DELETE` evicts it.
const NODE: &str = "/v1/nodes/{name}";
const TASK: &str = "/v1/tasks/{id}";
const TASK_CANCEL: &str = "/v1/tasks/{id}/cancel";
const TASK_LOGS: &str = "/v1/tasks/{id}/logs";
const TASK_OUTPUT: &str = "/v1/tasks/{id}/output";
const SERVICE: &str = "/v1/services/{name}";
const SERVICE_SCALE: &str = "/v1/services/{name}/scale";
const RUN_OUTPUT: &str = "/v1/runs/{run}/output";
/// The cloud installer and what it downloads, outside the versioned API so the documented
/// curl line stays short.
const INSTALL_SCRIPT: &str = "/install.sh";
const INSTALL_CA: &str = "/install/ca.pem";
const INSTALL_FILE: &str = "/install/{file}";

/// The router and the `(method, path)` pairs it serves.
struct Routes {
    router: Router<AppState>,
    served: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        self.served.push((method, path));
        self.router = self.router.route(path, route);
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        served: Vec::new(),
    }
    .add("post", paths::JOIN, post(join::join))
    .add("post", paths::JOIN_CHECK, post(join::check_token))
    .add("post", paths::RENEW, post(join::renew))
    .add("get", paths::AGENT_CONNECT, get(agent::connect))
    .add("post", paths::HEARTBEAT, post(agent::heartbeat))
    .add("get", paths::STATUS, get(admin::status))
    .add("get", paths::TOKENS, get(admin::list_tokens))
    .add("post", paths::TOKENS, post(admin::create_token))
    .add("delete", TOKEN, delete(admin::revoke_token))
    .add("get", paths::NODES, get(admin::list_nodes))
    .add("get", NODE, get(admin::get_node))
    .add("delete", NODE, delete(admin::remove_node))
    .add("get", paths::WORKLOADS, get(workloads::list))
    .add("get", paths::TASKS, get(workloads::list_tasks))
    .add("post", paths::TASKS, post(workloads::create_task))
    .add("get", TASK, get(workloads::get_task))
    .add("post", TASK_CANCEL, post(workloads::cancel_task))
    .add("get", TASK_LOGS, get(workloads::task_logs))
    .add("get", TASK_OUTPUT, get(workloads::task_output))
    .add(
        "post",
        RUN_OUTPUT,
        post(workloads::upload_output).layer(DefaultBodyLimit::max(
            cloudos_cluster::client::MAX_TRANSFER_BYTES,
        )),
    )
    .add("get", paths::SERVICES, get(workloads::list_services))
    .add("post", paths::SERVICES, post(workloads::create_service))
    .add("get", SERVICE, get(workloads::get_service))
    .add("delete", SERVICE, delete(workloads::delete_service))
    .add("post", SERVICE_SCALE, post(workloads::scale_service))
    .add("get", paths::OPENAPI, get(openapi::document))
    .add("get", METRICS, get(admin::metrics))
    .add("get", INSTALL_SCRIPT, get(install::script))
    .add("get", INSTALL_CA, get(install::ca))
    .add("get", INSTALL_FILE, get(install::file))
}

/// Prometheus's conventional path, outside the versioned API.
pub const METRICS: &str = "/metrics";

/// The API's router, ready to serve.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_request,
        ))
        .with_state(state)
}

/// Counts every request by method, matched route and status; joins also by outcome.
async fn count_request(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.request(&method, &route, status);
    if route == paths::JOIN {
        state.metrics.join(join_outcome(status));
    }
    response
}

/// The outcome label of a join from its HTTP status (see `ErrorCode::http_status`).
fn join_outcome(status: u16) -> &'static str {
    match status {
        200 => "joined",
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "refused",
        409 => "name_taken",
        413 => "too_large",
        429 => "rate_limited",
        _ => "error",
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no endpoint {}; see {} for the API",
        uri.path(),
        paths::OPENAPI
    ))
}
