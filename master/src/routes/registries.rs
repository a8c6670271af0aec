//! Registry credentials (`cloudos registry login|list|logout`), with an admin certificate:
//! sealed like secrets, under names no user secret can take
//! (`cloudos_cluster::registry::SECRET_PREFIX`). The password or token comes in once and
//! never goes out but to a node that pulls from that registry.

use axum::extract::{Path, State};
use axum::Json;
use cloudos_cluster::registry::{
    secret_name, validate_registry, RegistryInfo, RegistryList, RegistryLogin, SECRET_PREFIX,
};
use cloudos_cluster::secret::SecretValue;
use time::OffsetDateTime;

use super::caller::{OperatorCaller, ViewerCaller};
use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;
use crate::registries::open;

/// `POST /v1/registries`: logging in again replaces, in one write.
pub async fn login(
    State(state): State<AppState>,
    caller: OperatorCaller,
    ApiJson(request): ApiJson<RegistryLogin>,
) -> Result<Json<RegistryInfo>, ApiError> {
    request.validate()?;
    let info = state
        .blocking(move |s| {
            let value =
                serde_json::to_vec(&request.auth).map_err(|e| ApiError::Internal(e.to_string()))?;
            let record = s
                .sealer
                .seal(
                    &secret_name(&request.registry),
                    &SecretValue(value),
                    OffsetDateTime::now_utc(),
                )
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            s.store.put_secret(&record)?;
            Ok::<_, ApiError>(RegistryInfo {
                registry: request.registry,
                username: request.auth.username().map(str::to_owned),
                created_at: record.created_at,
            })
        })
        .await?;
    log::info!(
        "admin {} logged the cluster in to registry {}",
        caller.0.name,
        info.registry
    );
    Ok(Json(info))
}

/// `GET /v1/registries`: registries and user names.
pub async fn list(
    State(state): State<AppState>,
    _: ViewerCaller,
) -> Result<Json<RegistryList>, ApiError> {
    let registries = state
        .blocking(|s| {
            let mut found = Vec::new();
            for record in s.store.list_secrets()? {
                let Some(registry) = record.name.strip_prefix(SECRET_PREFIX) else {
                    continue;
                };
                let username = match open(&s.sealer, &record) {
                    Ok(auth) => auth.username().map(str::to_owned),
                    Err(why) => {
                        log::error!("{why}");
                        None
                    }
                };
                found.push(RegistryInfo {
                    registry: registry.to_owned(),
                    username,
                    created_at: record.created_at,
                });
            }
            Ok::<_, ApiError>(found)
        })
        .await?;
    Ok(Json(RegistryList { registries }))
}

/// `DELETE /v1/registries/{registry}`: nodes pull from it anonymously again (or with
/// their own `registries.toml`).
pub async fn logout(
    State(state): State<AppState>,
    caller: OperatorCaller,
    Path(registry): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    validate_registry(&registry)?;
    let removed = {
        let name = secret_name(&registry);
        state
            .blocking(move |s| Ok::<_, ApiError>(s.store.delete_secret(&name)?))
            .await?
    };
    if !removed {
        return Err(ApiError::NotFound(format!(
            "the cluster is not logged in to {registry}; `cloudos registry list` lists them"
        )));
    }
    log::info!(
        "admin {} logged the cluster out of registry {registry}",
        caller.0.name
    );
    Ok(Json(serde_json::json!({})))
}
