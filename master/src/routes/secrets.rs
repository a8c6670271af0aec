//! Secrets (`cloudos secret create|list|rm`), with an admin certificate. The value comes
//! in once and never goes out: not in an answer, a log line or an error.

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::secret::{validate_secret_name, SecretCreateRequest, SecretInfo, SecretList};
use time::OffsetDateTime;

use super::caller::{OperatorCaller, ViewerCaller};
use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;

/// `POST /v1/secrets`.
pub async fn create(
    State(state): State<AppState>,
    caller: OperatorCaller,
    ApiJson(request): ApiJson<SecretCreateRequest>,
) -> Result<Json<SecretInfo>, ApiError> {
    request.validate()?;
    let info = state
        .blocking(move |s| {
            let record = s
                .sealer
                .seal(&request.name, &request.value, OffsetDateTime::now_utc())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if !s.store.create_secret(&record)? {
                return Err(ApiError::Conflict(format!(
                    "a secret named {} exists already: secrets do not change; remove it (once nothing uses it) and create it again, or use another name",
                    record.name
                )));
            }
            Ok(SecretInfo {
                name: record.name,
                created_at: record.created_at,
                bytes: record.bytes,
                used_by: Vec::new(),
            })
        })
        .await?;
    log::info!(
        "admin {} created secret {} ({} bytes)",
        caller.0.name,
        info.name,
        info.bytes
    );
    Ok(Json(info))
}

/// `GET /v1/secrets`: names, sizes and users; never a value.
pub async fn list(
    State(state): State<AppState>,
    _: ViewerCaller,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state
        .blocking(|s| {
            // A registry's credentials are sealed here too, under names no user secret
            // takes; `cloudos registry list` shows those.
            let records = s
                .store
                .list_secrets()?
                .into_iter()
                .filter(|r| validate_secret_name(&r.name).is_ok());
            let book = s.workloads.book();
            let secrets = records
                .into_iter()
                .map(|r| SecretInfo {
                    used_by: book.secret_users(&r.name),
                    name: r.name,
                    created_at: r.created_at,
                    bytes: r.bytes,
                })
                .collect();
            Ok::<_, ApiError>(secrets)
        })
        .await?;
    Ok(Json(SecretList { secrets }))
}

/// `DELETE /v1/secrets/{name}`: refused while work names it.
pub async fn remove(
    State(state): State<AppState>,
    caller: OperatorCaller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Only a secret's name: never a registry's credentials (`cloudos registry logout`).
    validate_secret_name(&name)?;
    let removed = {
        let name = name.clone();
        state
            .blocking(move |s| {
                // Checked and deleted under the book's lock, which work that names a
                // secret is made under too: nothing comes to use it in between.
                let book = s.workloads.book();
                let users = book.secret_users(&name);
                if !users.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "secret {name} is in use by {}; remove or change those first",
                        users.join(", ")
                    )));
                }
                let removed = s.store.delete_secret(&name)?;
                drop(book);
                Ok::<_, ApiError>(removed)
            })
            .await?
    };
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no secret {name}; `cloudos secret list` lists them"
        )));
    }
    log::info!("admin {} removed secret {name}", caller.0.name);
    Ok(Json(serde_json::json!({})))
}
