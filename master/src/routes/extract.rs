//! JSON request bodies with the master's errors: malformed JSON is a 400 that says what is
//! wrong, a body over the limit a 413, both as an `ErrorBody`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::BODY_LIMIT;
use crate::error::ApiError;

/// A JSON body of type `T`, whatever the content type says.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::BadRequest(format!(
                    "cannot read the request body: {}",
                    rejection.body_text()
                ))
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let what = std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("value");
            ApiError::BadRequest(format!(
                "the request body is not a valid {what} in JSON: {e}"
            ))
        })
    }
}
