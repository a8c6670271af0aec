//! The HTTP API: which handler serves which method and path, who may call it, the body
//! limit, and the fallback. Handlers live in one module per area; `caller` and `extract`
//! hold what they share (who is calling, JSON bodies). The table here is also what the
//! OpenAPI document is checked against.
//!
//! Deny by default: every route states its [`Access`] in the table, and one layer checks
//! it before any handler runs (and before a body is read). A route is open to anonymous
//! callers only when the table says [`Access::Public`]; the handlers' own extractors check
//! the role again.

mod admin;
mod agent;
mod backup;
mod caller;
mod extract;
mod inputs;
mod install;
mod join;
mod masters;
mod nodeops;
mod openapi;
mod people;
mod registries;
mod releases;
mod rollout;
mod secrets;
mod upload;
mod volumes;
mod workloads;

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use cloudos_cluster::api::paths;
use cloudos_cluster::Role;

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
const SERVICE_ROLLBACK: &str = "/v1/services/{name}/rollback";
/// `PUT` makes a named volume or sets its size limit; `DELETE` removes it.
const VOLUME: &str = "/v1/volumes/{name}";
const MASTER: &str = "/v1/masters/{name}";
/// `DELETE` removes a secret.
const SECRET: &str = "/v1/secrets/{name}";
const REGISTRY: &str = "/v1/registries/{registry}";
const RUN_OUTPUT: &str = "/v1/runs/{run}/output";
const RUN_INPUT: &str = "/v1/runs/{run}/input";
/// The cloud installer and what it downloads, outside the versioned API so the documented
/// curl line stays short.
const INSTALL_SCRIPT: &str = "/install.sh";
const INSTALL_CA: &str = "/install/ca.pem";
const INSTALL_FILE: &str = "/install/{file}";

/// `PUT` changes a user's role; `DELETE` removes the user.
const USER: &str = "/v1/users/{name}";
/// `DELETE` revokes an API key.
const API_KEY: &str = "/v1/apikeys/{id}";
const NODE_LABELS: &str = "/v1/nodes/{name}/labels";
/// `GET ?since=` the node's metric history.
const NODE_HISTORY: &str = "/v1/nodes/{name}/history";
/// `POST` installs a kept release on the node.
const NODE_UPGRADE: &str = "/v1/nodes/{name}/upgrade";
/// `GET` a kept bundle.
const RELEASE: &str = "/v1/releases/{version}/{arch}";
/// Node operations (`crate::nodeops`).
const NODE_CORDON: &str = "/v1/nodes/{name}/cordon";
const NODE_UNCORDON: &str = "/v1/nodes/{name}/uncordon";
const NODE_DRAIN: &str = "/v1/nodes/{name}/drain";
const NODE_REBOOT: &str = "/v1/nodes/{name}/reboot";
/// Rolling upgrades (`crate::rollout`).
const ROLLOUT_RESUME: &str = "/v1/rollout/resume";
const ROLLOUT_ABORT: &str = "/v1/rollout/abort";
const NODE_ROLLBACK: &str = "/v1/nodes/{name}/rollback";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a credential: joins and token checks (the token is the credential),
    /// the OpenAPI document and the installer's downloads.
    Public,
    /// A node's certificate (role compute or master).
    Node,
    /// A user or API key of role admin: people, tokens, nodes, releases, masters, backups.
    Admin,
    /// A user or API key of role operator or admin: running and stopping work.
    Operator,
    /// Any user or API key: reading.
    Viewer,
    /// Any certificate on record (renewal).
    Any,
}

impl Access {
    /// Whether a caller of `role`, proved by `proof`, may call the route.
    fn admits(self, role: Role, proof: caller::Proof) -> bool {
        let certificate = proof == caller::Proof::Certificate;
        match self {
            Access::Public => true,
            Access::Any => certificate,
            Access::Node => certificate && matches!(role, Role::Compute | Role::Master),
            Access::Admin => role.grants(Role::Admin),
            Access::Operator => role.grants(Role::Operator),
            Access::Viewer => role.grants(Role::Viewer),
        }
    }

    /// The role the route needs, for the refusal message.
    fn needed(self) -> &'static str {
        match self {
            Access::Public => "any",
            Access::Any => "any certificate",
            Access::Node => "compute or master",
            Access::Admin => "admin",
            Access::Operator => "operator or admin",
            Access::Viewer => "viewer, operator or admin",
        }
    }

    /// How the OpenAPI document's `x-cloudos-auth` starts for such a route.
    #[cfg(test)]
    fn documented(self) -> &'static str {
        match self {
            Access::Public => "none",
            Access::Node => "node certificate",
            Access::Admin => "admin",
            Access::Operator => "operator",
            Access::Viewer => "viewer",
            Access::Any => "any cluster certificate",
        }
    }
}

/// Who may call each `(METHOD, path)`.
type AccessTable = HashMap<(String, &'static str), Access>;

/// The router, the `(method, path)` pairs it serves and who may call each.
struct Routes {
    router: Router<AppState>,
    served: Vec<(&'static str, &'static str)>,
    access: AccessTable,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        route: MethodRouter<AppState>,
    ) -> Self {
        self.served.push((method, path));
        self.access
            .insert((method.to_ascii_uppercase(), path), access);
        self.router = self.router.route(path, route);
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        served: Vec::new(),
        access: HashMap::new(),
    }
    .add("post", paths::JOIN, Access::Public, post(join::join))
    .add(
        "post",
        paths::JOIN_CHECK,
        Access::Public,
        post(join::check_token),
    )
    .add("post", paths::RENEW, Access::Any, post(join::renew))
    .add(
        "post",
        paths::MASTER_JOIN,
        Access::Public,
        post(masters::join),
    )
    .add("delete", MASTER, Access::Admin, delete(masters::remove))
    .add(
        "get",
        paths::AGENT_CONNECT,
        Access::Node,
        get(agent::connect),
    )
    .add(
        "post",
        paths::HEARTBEAT,
        Access::Node,
        post(agent::heartbeat),
    )
    .add("get", paths::STATUS, Access::Viewer, get(admin::status))
    .add(
        "get",
        paths::TOKENS,
        Access::Viewer,
        get(admin::list_tokens),
    )
    .add(
        "post",
        paths::TOKENS,
        Access::Admin,
        post(admin::create_token),
    )
    .add("delete", TOKEN, Access::Admin, delete(admin::revoke_token))
    .add("get", paths::NODES, Access::Viewer, get(admin::list_nodes))
    .add("get", NODE, Access::Viewer, get(admin::get_node))
    .add("delete", NODE, Access::Admin, delete(admin::remove_node))
    .add("post", NODE_LABELS, Access::Admin, post(admin::label_node))
    .add(
        "get",
        NODE_HISTORY,
        Access::Viewer,
        get(admin::node_history),
    )
    .add("get", paths::USERS, Access::Admin, get(people::list_users))
    .add("post", paths::USERS, Access::Admin, post(people::add_user))
    .add("put", USER, Access::Admin, put(people::set_role))
    .add("delete", USER, Access::Admin, delete(people::remove_user))
    .add(
        "get",
        paths::API_KEYS,
        Access::Admin,
        get(people::list_keys),
    )
    .add(
        "post",
        paths::API_KEYS,
        Access::Admin,
        post(people::create_key),
    )
    .add("delete", API_KEY, Access::Admin, delete(people::revoke_key))
    .add("get", paths::AUDIT, Access::Admin, get(people::audit))
    .add(
        "put",
        paths::PASSWORD,
        Access::Viewer,
        put(people::set_password),
    )
    .add(
        "post",
        paths::DASHBOARD_LINK,
        Access::Viewer,
        post(people::dashboard_link),
    )
    .add(
        "get",
        paths::WORKLOADS,
        Access::Viewer,
        get(workloads::list),
    )
    .add(
        "get",
        paths::TASKS,
        Access::Viewer,
        get(workloads::list_tasks),
    )
    .add(
        "post",
        paths::TASKS,
        Access::Operator,
        post(workloads::create_task),
    )
    .add("get", TASK, Access::Viewer, get(workloads::get_task))
    .add(
        "post",
        TASK_CANCEL,
        Access::Operator,
        post(workloads::cancel_task),
    )
    .add("get", TASK_LOGS, Access::Viewer, get(workloads::task_logs))
    .add(
        "get",
        TASK_OUTPUT,
        Access::Viewer,
        get(workloads::task_output),
    )
    .add(
        "post",
        RUN_OUTPUT,
        Access::Node,
        post(workloads::upload_output).layer(DefaultBodyLimit::max(
            cloudos_cluster::client::MAX_TRANSFER_BYTES,
        )),
    )
    .add("get", RUN_INPUT, Access::Node, get(inputs::for_run))
    .add(
        "post",
        paths::INPUTS,
        Access::Operator,
        post(inputs::upload).layer(DefaultBodyLimit::max(
            cloudos_cluster::workload::MAX_INPUT_BYTES as usize,
        )),
    )
    .add(
        "get",
        paths::SERVICES,
        Access::Viewer,
        get(workloads::list_services),
    )
    .add(
        "post",
        paths::SERVICES,
        Access::Operator,
        post(workloads::create_service),
    )
    .add("get", SERVICE, Access::Viewer, get(workloads::get_service))
    .add(
        "delete",
        SERVICE,
        Access::Operator,
        delete(workloads::delete_service),
    )
    .add(
        "put",
        SERVICE,
        Access::Operator,
        put(workloads::deploy_service),
    )
    .add(
        "post",
        SERVICE_SCALE,
        Access::Operator,
        post(workloads::scale_service),
    )
    .add(
        "post",
        SERVICE_ROLLBACK,
        Access::Operator,
        post(workloads::rollback_service),
    )
    .add("get", paths::VOLUMES, Access::Viewer, get(volumes::list))
    .add("put", VOLUME, Access::Operator, put(volumes::put))
    .add("delete", VOLUME, Access::Operator, delete(volumes::remove))
    .add("get", paths::SECRETS, Access::Viewer, get(secrets::list))
    .add(
        "post",
        paths::SECRETS,
        Access::Operator,
        post(secrets::create),
    )
    .add("delete", SECRET, Access::Operator, delete(secrets::remove))
    .add(
        "get",
        paths::REGISTRIES,
        Access::Viewer,
        get(registries::list),
    )
    .add(
        "post",
        paths::REGISTRIES,
        Access::Operator,
        post(registries::login),
    )
    .add(
        "delete",
        REGISTRY,
        Access::Operator,
        delete(registries::logout),
    )
    .add(
        "get",
        paths::OPENAPI,
        Access::Public,
        get(openapi::document),
    )
    .add("get", paths::TIME, Access::Public, get(clock))
    .add("get", paths::RELEASES, Access::Viewer, get(releases::list))
    .add(
        "post",
        paths::RELEASES,
        Access::Admin,
        post(releases::add).layer(DefaultBodyLimit::max(
            cloudos_cluster::client::MAX_TRANSFER_BYTES,
        )),
    )
    .add("get", RELEASE, Access::Any, get(releases::download))
    .add(
        "post",
        NODE_UPGRADE,
        Access::Admin,
        post(releases::upgrade_node),
    )
    .add("get", METRICS, Access::Viewer, get(admin::metrics))
    .add("get", INSTALL_SCRIPT, Access::Public, get(install::script))
    .add("get", INSTALL_CA, Access::Public, get(install::ca))
    .add("get", INSTALL_FILE, Access::Public, get(install::file))
    .add("post", paths::BACKUP, Access::Admin, post(backup::create))
    .add("post", NODE_CORDON, Access::Admin, post(nodeops::cordon))
    .add(
        "post",
        NODE_UNCORDON,
        Access::Admin,
        post(nodeops::uncordon),
    )
    .add(
        "post",
        NODE_DRAIN,
        Access::Admin,
        post(nodeops::start_drain),
    )
    .add(
        "get",
        NODE_DRAIN,
        Access::Viewer,
        get(nodeops::drain_status),
    )
    .add("post", NODE_REBOOT, Access::Admin, post(nodeops::reboot))
    .add("get", paths::ROLLOUT, Access::Viewer, get(rollout::status))
    .add("post", paths::ROLLOUT, Access::Admin, post(rollout::start))
    .add("post", ROLLOUT_RESUME, Access::Admin, post(rollout::resume))
    .add("post", ROLLOUT_ABORT, Access::Admin, post(rollout::abort))
    .add(
        "post",
        NODE_ROLLBACK,
        Access::Admin,
        post(rollout::rollback_node),
    )
}

/// `GET /v1/time`: this master's clock, for a joining node whose own is wrong. Public: a
/// node that cannot check certificates at its own time has no certificate to show yet;
/// what it reads here it trusts only because the connection was checked against its
/// token's CA pin (`cloudos_cluster::client::master_time`).
async fn clock() -> axum::Json<cloudos_cluster::api::TimeResponse> {
    axum::Json(cloudos_cluster::api::TimeResponse {
        now: time::OffsetDateTime::now_utc(),
    })
}

/// The cloud installer script every master serves (the dashboard shows its line).
pub fn install_script() -> &'static str {
    install::SCRIPT
}

/// Prometheus's conventional path, outside the versioned API.
pub const METRICS: &str = "/metrics";

/// The API's router, ready to serve.
pub fn router(state: AppState) -> Router {
    let Routes { router, access, .. } = routes();
    let access = Arc::new(access);
    router
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            (Arc::clone(&state), Arc::clone(&access)),
            guard,
        ))
        .layer(middleware::from_fn_with_state(
            (Arc::clone(&state), access),
            audit,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_request,
        ))
        .with_state(state)
}

/// The deny-by-default check: the caller must be one the route's [`Access`] admits, or
/// the request ends here, before its handler and its body. The verified caller is handed
/// to the handler's extractors (see `caller`).
async fn guard(
    State((state, access)): State<(AppState, Arc<AccessTable>)>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    // No matched route: the fallback's 404. A matched path with another method: axum's 405.
    // Neither runs a handler.
    let Some(wanted) = matched
        .as_ref()
        .and_then(|m| access.get(&(request.method().as_str().to_owned(), m.as_str())))
        .copied()
    else {
        return next.run(request).await;
    };
    if wanted != Access::Public {
        let safe = matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
        match caller::verify(request.extensions(), request.headers(), &state).await {
            Ok((_, caller::Proof::Session { csrf: false })) if !safe => {
                return ApiError::Forbidden(
                    "a change made with a dashboard session needs the session's CSRF token \
                     (the x-cloudos-csrf header)"
                        .to_owned(),
                )
                .into_response()
            }
            Ok((identity, proof)) if wanted.admits(identity.role, proof) => {
                request
                    .extensions_mut()
                    .insert(caller::Verified(identity, proof));
            }
            Ok((identity, _)) => {
                return ApiError::WrongRole {
                    role: identity.role,
                    needed: wanted.needed(),
                }
                .into_response()
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

/// Records every change in the audit log (see `crate::audit` for what counts): who, from
/// where, what and the answer. Runs outside the guard, so refused attempts are kept too;
/// the entry is written after the answer, off the async workers.
async fn audit(
    State((state, access)): State<(AppState, Arc<AccessTable>)>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let changes = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    let route_access = matched
        .as_ref()
        .and_then(|m| access.get(&(method.clone(), m.as_str())))
        .copied();
    if !changes || route_access == Some(Access::Node) || route_access.is_none() {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let from = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    // Who, as the credential says; the guard decides whether that is enough.
    let who = caller::verify(request.extensions(), request.headers(), &state)
        .await
        .ok()
        .map(|(identity, _)| identity);
    let response = next.run(request).await;
    let at = time::OffsetDateTime::now_utc();
    let entry = cloudos_cluster::api::AuditEntry {
        id: state.audit.next_id(at),
        at,
        who: who
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |w| w.name.clone()),
        role: who.map(|w| w.role),
        from,
        method,
        path,
        status: response.status().as_u16(),
    };
    let writer = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = writer.audit.append(writer.store.as_ref(), &entry) {
            log::error!(
                "audit log: could not keep {} {}: {e}",
                entry.method,
                entry.path
            );
        }
    });
    response
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
