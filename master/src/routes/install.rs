//! The cloud install's downloads (no certificate needed: nothing here is secret):
//! `GET /install.sh`, the cluster CA it checks against the token's pin, the digest list and
//! the binaries (see `master::downloads`).
//!
//! `install.sh` is served as compiled in, the same bytes to every caller: the line
//! `cloudos token create` prints pins the script's SHA-256 (the CLI reads it here over its
//! verified connection) and passes `--master` itself, so nothing in the script may depend on
//! the request. Everything the script trusts after that it checks itself: the CA (exactly
//! one certificate) against the token's pin, then the binaries against digests fetched over
//! TLS verified by that CA alone.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::downloads::{is_download_name, SUMS_FILE};

/// The installer script, compiled in from `scripts/cloud-install.sh` (served as `/install.sh`).
pub const SCRIPT: &str = include_str!("../../../scripts/cloud-install.sh");

pub async fn script() -> Response {
    text("text/x-shellscript; charset=utf-8", SCRIPT.to_owned())
}

pub async fn ca(State(state): State<AppState>) -> Response {
    text("application/x-pem-file", state.ca.cert_pem().to_owned())
}

pub async fn file(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let downloads = state.downloads().await;
    if name == SUMS_FILE {
        return text("text/plain; charset=utf-8", downloads.sums());
    }
    let Some(download) = is_download_name(&name)
        .then(|| downloads.get(&name))
        .flatten()
    else {
        let known = downloads.sums();
        let message = if known.is_empty() {
            format!("{name} is not served: this master has no downloads")
        } else {
            format!("{name} is not served here; see /install/{SUMS_FILE} for what is")
        };
        return (StatusCode::NOT_FOUND, message + "\n").into_response();
    };
    match tokio::fs::File::open(&download.path).await {
        Ok(file) => {
            let length = file.metadata().await.ok().map(|m| m.len());
            let mut response =
                Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(length) = length {
                headers.insert(header::CONTENT_LENGTH, length.into());
            }
            response
        }
        Err(e) => {
            log::warn!("cannot serve {}: {e}", download.path.display());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{name} cannot be read on the master\n"),
            )
                .into_response()
        }
    }
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_served_as_compiled_in() {
        // The printed line pins these bytes: no placeholder may be filled in per request,
        // and the line's `printf "%s\n" "$s"` gives back exactly one final newline.
        assert!(SCRIPT.starts_with("#!/bin/sh\n"));
        assert!(!SCRIPT.contains("@CLOUDOS_"), "a per-request placeholder");
        assert!(SCRIPT.ends_with("exit 0\n") && !SCRIPT.ends_with("\n\n"));
    }
}
