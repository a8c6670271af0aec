//! People and automation (admin only): users (list, add with a one-use login token,
//! change role, remove = revoke every certificate of theirs), API keys (list, create
//! shown once, revoke), and the audit log.

use axum::extract::{Path, Query, State};
use axum::Json;
use cloudos_cluster::api::{
    ApiKeyCreateRequest, ApiKeyCreateResponse, ApiKeyInfo, AuditEntry, TokenCreateResponse,
    TokenInfo, UserAddRequest, UserInfo, UserRoleRequest,
};
use cloudos_cluster::apikey::{ApiKey, ApiKeyRecord};
use cloudos_cluster::token::{parse_ttl, TokenRecord};
use cloudos_cluster::{NodeIdentity, Role, Token};
use cloudos_store::{PeopleStore, StoreError};
use time::{Duration, OffsetDateTime};

use super::caller::{AdminCaller, CertifiedUser, ViewerCaller};
use super::AppState;
use crate::audit::AuditQuery;
use crate::error::{bounded, ApiError};
use crate::state::MasterState;

/// How long a login made by `cloudos user add` stays valid when no `--ttl` is given.
const LOGIN_TTL: Duration = Duration::hours(24);

/// `GET /v1/users`: every user on record.
pub async fn list_users(State(state): State<AppState>, _: AdminCaller) -> Json<Vec<UserInfo>> {
    Json(state.users.list().iter().map(UserInfo::from).collect())
}

/// `POST /v1/users`: a one-use login token that only `name` can log in with, as `role`.
pub async fn add_user(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    super::extract::ApiJson(req): super::extract::ApiJson<UserAddRequest>,
) -> Result<Json<TokenCreateResponse>, ApiError> {
    user_role(req.role)?;
    // The name a person logs in under is a certificate name, checked as a node's is.
    NodeIdentity::new(req.name.clone(), req.role)?;
    let ttl = match req.ttl.as_deref() {
        Some(ttl) => parse_ttl(ttl)?,
        None => LOGIN_TTL,
    };
    let response = state
        .blocking(move |s| {
            let token = Token::generate(s.ca.pin())?;
            let mut record = TokenRecord::new(
                &token,
                req.role,
                OffsetDateTime::now_utc(),
                Some(ttl),
                Some(1),
                format!("login of user {}", req.name),
            )?;
            record.user = Some(req.name.clone());
            s.store.put_token(&record)?;
            log::info!(
                "admin {} made a login for user {} as {} (token {})",
                admin.name,
                req.name,
                req.role,
                record.id
            );
            Ok(TokenCreateResponse {
                token: token.to_string(),
                info: TokenInfo::from(&record),
            })
        })
        .await?;
    Ok(Json(response))
}

/// `PUT /v1/users/{name}`: a new role for a user, from their next request.
pub async fn set_role(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
    super::extract::ApiJson(req): super::extract::ApiJson<UserRoleRequest>,
) -> Result<Json<UserInfo>, ApiError> {
    user_role(req.role)?;
    let record = state
        .blocking(move |s| {
            let mut user = s.users.get(&name).ok_or_else(|| no_user(&name))?;
            if req.role != Role::Admin {
                keep_an_admin(s, &name)?;
            }
            user.role = req.role;
            s.store.put_user(&user)?;
            s.users.put(user.clone());
            log::info!("admin {} made user {name} {}", admin.name, req.role);
            Ok(user)
        })
        .await?;
    Ok(Json(UserInfo::from(&record)))
}

/// `DELETE /v1/users/{name}`: revokes every certificate of a user (a lost laptop, a
/// person who left) and forgets them.
pub async fn remove_user(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let why = format!("removed by admin {}", caller.name);
    let who = name.clone();
    let record = state
        .blocking(move |s| {
            if s.users.get(&who).is_some() {
                keep_an_admin(s, &who)?;
            }
            let (record, revoked) = match s.store.evict_user(&who, &why, OffsetDateTime::now_utc())
            {
                Err(StoreError::NotFound { .. }) => return Err(no_user(&who)),
                other => other?,
            };
            s.users.remove(&record.name);
            s.sessions.close_user(&record.name);
            for r in revoked {
                s.mark_revoked(r.serial);
            }
            Ok(record)
        })
        .await?;
    log::info!(
        "user {name} removed by admin {}; their certificates no longer work",
        caller.name
    );
    Ok(Json(UserInfo::from(&record)))
}

/// `PUT /v1/password`: the caller sets their own dashboard password (a user with a
/// certificate; not a key, not a session: whoever holds a borrowed browser must not lock
/// its owner out). Their sessions end.
pub async fn set_password(
    State(state): State<AppState>,
    CertifiedUser(me): CertifiedUser,
    super::extract::ApiJson(req): super::extract::ApiJson<cloudos_cluster::api::PasswordRequest>,
) -> Result<Json<UserInfo>, ApiError> {
    let record = state
        .blocking(move |s| {
            let hash = crate::passwords::hash(&req.password)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let mut user = s.users.get(&me.name).ok_or_else(|| no_user(&me.name))?;
            user.password_hash = Some(hash);
            s.store.put_user(&user)?;
            s.users.put(user.clone());
            s.sessions.close_user(&me.name);
            log::info!("user {} set a dashboard password", me.name);
            Ok(user)
        })
        .await?;
    Ok(Json(UserInfo::from(&record)))
}

/// `POST /v1/dashboard/link`: a one-time link that logs the caller into the dashboard
/// (`cloudos dashboard` opens it), good for two minutes.
pub async fn dashboard_link(
    State(state): State<AppState>,
    ViewerCaller(me): ViewerCaller,
) -> Result<Json<cloudos_cluster::api::DashboardLink>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let token = state
        .sessions
        .link(&me.name, now)
        .ok_or_else(|| ApiError::Internal("no randomness for a link".to_owned()))?;
    Ok(Json(cloudos_cluster::api::DashboardLink {
        path: format!("/ui/link/{token}"),
        expires_at: now + crate::dashboard::session::LINK_TTL,
    }))
}

/// Refuses to leave the cluster without an admin: nobody could manage people again.
fn keep_an_admin(state: &MasterState, leaving: &str) -> Result<(), ApiError> {
    let others = state
        .users
        .list()
        .iter()
        .any(|u| u.role == Role::Admin && u.name != leaving);
    let leaving_is_admin = state
        .users
        .get(leaving)
        .is_some_and(|u| u.role == Role::Admin);
    if leaving_is_admin && !others {
        return Err(ApiError::Conflict(format!(
            "{leaving} is the last admin; make another user admin first"
        )));
    }
    Ok(())
}

fn no_user(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no user named {}; list users with `cloudos user list`",
        bounded(name)
    ))
}

fn user_role(role: Role) -> Result<(), ApiError> {
    if role.is_user() {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "a user's role is admin, operator or viewer, not {role}"
    )))
}

/// `GET /v1/apikeys`.
pub async fn list_keys(State(state): State<AppState>, _: AdminCaller) -> Json<Vec<ApiKeyInfo>> {
    Json(state.api_keys.list().iter().map(ApiKeyInfo::from).collect())
}

/// `POST /v1/apikeys`: a new key, shown in this answer only.
pub async fn create_key(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    super::extract::ApiJson(req): super::extract::ApiJson<ApiKeyCreateRequest>,
) -> Result<Json<ApiKeyCreateResponse>, ApiError> {
    let response = state
        .blocking(move |s| {
            let key = ApiKey::generate().map_err(cloudos_cluster::apikey::ApiKeyError::from)?;
            let record = ApiKeyRecord::new(
                &key,
                &req.name,
                req.role,
                &admin.name,
                &req.ttl,
                OffsetDateTime::now_utc(),
            )?;
            s.store.put_api_key(&record)?;
            s.api_keys.put(record.clone());
            log::info!(
                "admin {} created API key {} ({}) as {} until {}",
                admin.name,
                record.id,
                record.name,
                record.role,
                record.expires_at
            );
            Ok(ApiKeyCreateResponse {
                key: key.reveal(),
                info: ApiKeyInfo::from(&record),
            })
        })
        .await?;
    Ok(Json(response))
}

/// `DELETE /v1/apikeys/{id}`: the key stops working at once (the record stays, revoked,
/// so the audit log's `key:<name>` entries keep their meaning).
pub async fn revoke_key(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    let record = state
        .blocking(move |s| {
            let mut record = s.api_keys.get(&id).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no API key {}; list them with `cloudos apikey list`",
                    bounded(&id)
                ))
            })?;
            record.revoked = true;
            s.store.put_api_key(&record)?;
            s.api_keys.put(record.clone());
            log::info!(
                "admin {} revoked API key {} ({})",
                admin.name,
                record.id,
                record.name
            );
            Ok(record)
        })
        .await?;
    Ok(Json(ApiKeyInfo::from(&record)))
}

/// `GET /v1/audit`.
pub async fn audit(
    State(state): State<AppState>,
    _: AdminCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let entries = state
        .blocking(move |s| {
            query
                .run(s.store.as_ref(), OffsetDateTime::now_utc())
                .map_err(ApiError::BadRequest)
        })
        .await?;
    Ok(Json(entries))
}
