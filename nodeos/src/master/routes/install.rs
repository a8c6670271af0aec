//! The cloud install's downloads (no certificate needed: nothing here is secret):
//! `GET /install.sh`, the cluster CA it checks against the token's pin, the digest list and
//! the binaries (see `master::downloads`).
//!
//! `install.sh` is served with the address the caller used filled in as its default
//! master, so `curl -fsSLk https://MASTER:PORT/install.sh | sh -s - --token …` needs no
//! `--master`. Everything the script trusts is checked by the script itself: the CA
//! against the pin, then the binaries against digests fetched over TLS verified by that CA.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::master::downloads::{is_download_name, SUMS_FILE};

/// The installer script, compiled in from `scripts/install.sh`.
pub const SCRIPT: &str = include_str!("../../../../scripts/install.sh");

/// The line of the script that carries the default master.
const MASTER_PLACEHOLDER: &str = "@CLOUDOS_MASTER@";

pub async fn script(headers: HeaderMap, uri: Uri) -> Response {
    let master = requested_authority(&headers, &uri).unwrap_or_default();
    text(
        "text/x-shellscript; charset=utf-8",
        SCRIPT.replace(MASTER_PLACEHOLDER, &master),
    )
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

/// `host[:port]` as the client asked for it (HTTP/1.1 Host, HTTP/2 :authority), if it is
/// safe to paste into a shell script: letters, digits and `.-:[]` only.
fn requested_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))?;
    let safe = !authority.is_empty()
        && authority.len() <= 255
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    safe.then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_one_place_for_the_master() {
        assert_eq!(SCRIPT.matches(MASTER_PLACEHOLDER).count(), 1);
        assert!(SCRIPT.starts_with("#!/bin/sh"));
    }

    #[test]
    fn only_shell_safe_authorities_are_filled_in() {
        let uri: Uri = "/install.sh".parse().unwrap();
        let with_host = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            requested_authority(&headers, &uri)
        };
        assert_eq!(with_host("10.0.0.1:9443").as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(
            with_host("[fd00::1]:9443").as_deref(),
            Some("[fd00::1]:9443")
        );
        assert_eq!(with_host("master.local").as_deref(), Some("master.local"));
        assert_eq!(with_host("x$(reboot)"), None);
        assert_eq!(with_host("a'b"), None);
        let h2: Uri = "https://m.example:9443/install.sh".parse().unwrap();
        assert_eq!(
            requested_authority(&HeaderMap::new(), &h2).as_deref(),
            Some("m.example:9443")
        );
    }
}
