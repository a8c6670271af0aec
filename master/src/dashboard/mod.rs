//! The web dashboard, served by the master on its API port: pages rendered from the live
//! state (`pages`), one stylesheet and one script embedded in the binary (no CDN: it works
//! on a LAN without internet), and browser sessions (`session`).
//!
//! The pages only read. Every change a page offers is sent by the script to the same JSON
//! API the CLI uses, which checks the role of the session's user and the session's CSRF
//! token; so a viewer who forges a request gets the API's 403, whatever the page showed.
//!
//! Every answer carries a content security policy that allows nothing from elsewhere and
//! no inline script, and tells browsers not to frame the pages or guess types.

pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use cloudos_cluster::api::{ApiKeyInfo, TokenInfo, UserInfo};
use cloudos_cluster::Role;
use maud::Markup;
use time::OffsetDateTime;

use crate::state::MasterState;

type AppState = Arc<MasterState>;

/// What the browser may load and from where: this master only, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The dashboard's routes: `/` and everything under `/ui/`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/ui/nodes", get(nodes))
        .route("/ui/nodes/{name}", get(node))
        .route("/ui/workloads", get(workloads))
        .route("/ui/tasks/{id}", get(task))
        .route("/ui/tokens", get(tokens))
        .route("/ui/upgrades", get(upgrades))
        .route("/ui/people", get(people))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/link/{token}", get(link))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The user behind the request's session, with the role on their record and the
/// session's CSRF token; `None` sends the browser to the login page.
struct SignedIn {
    name: String,
    role: Role,
    csrf: String,
}

impl SignedIn {
    fn of(state: &MasterState, headers: &HeaderMap) -> Option<SignedIn> {
        let id = session::cookie(headers)?;
        let s = state.sessions.get(id, OffsetDateTime::now_utc())?;
        let role = state.users.get(&s.user)?.role;
        Some(SignedIn {
            name: s.user,
            role,
            csrf: s.csrf,
        })
    }

    fn viewer(&self) -> pages::Viewer<'_> {
        pages::Viewer {
            name: &self.name,
            role: self.role,
            csrf: &self.csrf,
        }
    }
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    let tasks = state.workloads.book().workloads().tasks;
    let now = OffsetDateTime::now_utc();
    html(pages::overview(
        &me.viewer(),
        &state.cluster_name,
        &state.roster.list(),
        &tasks,
        now,
    ))
}

async fn nodes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    html(pages::nodes(
        &me.viewer(),
        &state.roster.list(),
        OffsetDateTime::now_utc(),
    ))
}

#[derive(serde::Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn node(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RangeQuery>,
) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    let Some(info) = state.roster.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            html(pages::not_found(
                &me.viewer(),
                &format!("There is no node {name}."),
            )),
        )
            .into_response();
    };
    let range = match query.range.as_deref() {
        Some(r @ ("1h" | "24h" | "30d")) => r.to_owned(),
        _ => "1h".to_owned(),
    };
    let now = OffsetDateTime::now_utc();
    let (r, n) = (range.clone(), name.clone());
    let history = state
        .blocking(move |s| {
            let since = crate::since::parse(&r, now).map_err(crate::error::ApiError::BadRequest)?;
            Ok(crate::history::node_history(
                s.store.as_ref(),
                &n,
                since,
                now,
            )?)
        })
        .await;
    match history {
        Ok(history) => html(pages::node(&me.viewer(), &info, &history, &range, now)),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            html(pages::not_found(
                &me.viewer(),
                &format!("The history cannot be read now: {e}"),
            )),
        )
            .into_response(),
    }
}

async fn workloads(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    let list = state.workloads.book().workloads();
    html(pages::workloads(&me.viewer(), &list.tasks, &list.services))
}

async fn task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    match state.workloads.book().task(&id) {
        Some(task) => html(pages::task(&me.viewer(), task)),
        None => (
            StatusCode::NOT_FOUND,
            html(pages::not_found(
                &me.viewer(),
                &format!("There is no task {id}."),
            )),
        )
            .into_response(),
    }
}

/// An admin's page, or a 403 page for anyone else (they have no link to it).
fn admin_only(me: &SignedIn) -> Option<Response> {
    (!me.role.grants(Role::Admin)).then(|| {
        (
            StatusCode::FORBIDDEN,
            html(pages::not_found(&me.viewer(), "This page is for admins.")),
        )
            .into_response()
    })
}

async fn tokens(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    if let Some(refused) = admin_only(&me) {
        return refused;
    }
    let listed = state.blocking(|s| Ok(s.store.list_tokens()?)).await;
    let tokens: Vec<TokenInfo> = listed
        .unwrap_or_default()
        .iter()
        .map(TokenInfo::from)
        .collect();
    // The address the browser reached this master at is the one to give the machine.
    let master = authority(&uri, &headers).unwrap_or_default();
    let line = cloudos_cluster::install_line::install_line(
        &master,
        "",
        crate::routes::install_script().as_bytes(),
    );
    html(pages::tokens(
        &me.viewer(),
        &tokens,
        &line,
        OffsetDateTime::now_utc(),
    ))
}

async fn upgrades(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    // Listing reads the releases' directory: off the async workers.
    let kept = state
        .blocking(|s| Ok(s.releases.list()))
        .await
        .unwrap_or_default();
    let releases = cloudos_cluster::api::ReleaseList {
        releases: kept,
        running: cloudos_release::version().to_string(),
        development_key: cloudos_release::trusts_development_key(),
    };
    let status = crate::rollout::status(&state);
    html(pages::upgrades(&me.viewer(), &releases, &status))
}

async fn people(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(me) = SignedIn::of(&state, &headers) else {
        return to_login();
    };
    if let Some(refused) = admin_only(&me) {
        return refused;
    }
    let users: Vec<UserInfo> = state.users.list().iter().map(UserInfo::from).collect();
    let keys: Vec<ApiKeyInfo> = state.api_keys.list().iter().map(ApiKeyInfo::from).collect();
    let now = OffsetDateTime::now_utc();
    let audit = state
        .blocking(move |s| {
            let query = crate::audit::AuditQuery {
                since: Some("7d".into()),
                limit: Some(200),
                user: None,
            };
            query
                .run(s.store.as_ref(), now)
                .map_err(crate::error::ApiError::Internal)
        })
        .await
        .unwrap_or_default();
    html(pages::people(&me.viewer(), &users, &keys, &audit, now))
}

async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

/// The login page with a fresh login token in its form and in a cookie.
fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let Some(token) = session::login_token() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a login form",
        )
            .into_response();
    };
    (
        status,
        [(header::SET_COOKIE, session::set_login_cookie(&token))],
        html(pages::login(&token, error)),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    /// The login page's own token (see `session::login_cookie`).
    #[serde(default)]
    login: String,
}

/// The `host[:port]` the browser asked for: HTTP/1.1's `Host` header, or HTTP/2's
/// `:authority`, which arrives in the request's URI.
fn authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

/// Whether a form post comes from a page of this master: a browser sends `Origin` with a
/// POST (`null` in some cases, which proves nothing either way), and another site's page
/// cannot make it ours.
fn foreign_origin(uri: &Uri, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    match (origin, authority(uri, headers)) {
        (None | Some("null"), _) => false,
        (Some(origin), Some(host)) => origin != format!("https://{host}"),
        (Some(_), None) => true,
    }
}

async fn login(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<std::net::SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // Login CSRF: the form's hidden field must match the cookie the login page set (a
    // SameSite=Strict cookie another site can neither read nor send), and a browser's
    // `Origin`, when it names one, must be this master.
    let cookie_ok =
        session::login_cookie(&headers).is_some_and(|c| session::same_secret(c, &form.login));
    if !cookie_ok || foreign_origin(&uri, &headers) {
        return login_form(
            StatusCode::FORBIDDEN,
            Some("Log in from this master's own page."),
        );
    }
    if let Err(wait) = state
        .login_limiter
        .check(from.ip(), std::time::Instant::now())
    {
        let message = format!(
            "Too many failed attempts; try again in {} s.",
            wait.as_secs().max(1)
        );
        return login_form(StatusCode::TOO_MANY_REQUESTS, Some(&message));
    }
    let name = form.name.trim().to_owned();
    let checked = {
        let user = state.users.get(&name);
        let password = form.password;
        tokio::task::spawn_blocking(move || {
            user.is_some_and(|u| crate::passwords::verify(u.password_hash.as_deref(), &password))
        })
        .await
        .unwrap_or(false)
    };
    if !checked {
        state
            .login_limiter
            .record_failure(from.ip(), std::time::Instant::now());
        log::warn!(
            "dashboard login as {} from {} refused",
            crate::error::bounded(&name),
            from.ip()
        );
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some("That name and password do not match a user with a password."),
        );
    }
    start_session(&state, &name, from)
}

async fn link(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    match state.sessions.use_link(&token, OffsetDateTime::now_utc()) {
        Some(user) if state.users.get(&user).is_some() => start_session(&state, &user, from),
        _ => login_form(
            StatusCode::UNAUTHORIZED,
            Some("That link was used already or is too old; run cloudos dashboard again."),
        ),
    }
}

fn start_session(state: &MasterState, user: &str, from: std::net::SocketAddr) -> Response {
    let Some(id) = state.sessions.open(user, OffsetDateTime::now_utc()) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session",
        )
            .into_response();
    };
    log::info!("dashboard session for {user} from {}", from.ip());
    (
        [(header::SET_COOKIE, session::set_cookie(&id))],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(id) = session::cookie(&headers) {
        let matches = state
            .sessions
            .get(id, OffsetDateTime::now_utc())
            .is_some_and(|s| session::same_secret(&s.csrf, &form.csrf));
        if !matches {
            return (
                StatusCode::FORBIDDEN,
                "logging out needs the page's CSRF token",
            )
                .into_response();
        }
        state.sessions.close(id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
