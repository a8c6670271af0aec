//! `POST /v1/backup` (admin certificate only): an encrypted backup of the master's state,
//! made with the passphrase in the request and streamed back. The backup is written to a
//! private temporary file on the data partition first (so a failure is a clean error, not
//! a cut-off body), which is unlinked at once and read back through its open handle. The
//! passphrase is never logged.

use std::io::{Seek, SeekFrom};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use cloudos_cluster::api::{BackupRequest, BackupSummary, BACKUP_SUMMARY_HEADER};

use super::caller::AdminCaller;
use super::extract::ApiJson;
use super::AppState;
use crate::backup::{self, BackupError, Passphrase};
use crate::error::ApiError;

pub async fn create(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    ApiJson(request): ApiJson<BackupRequest>,
) -> Result<Response, ApiError> {
    let passphrase = Passphrase::new(request.passphrase).map_err(api_error)?;
    let (file, made) = state
        .blocking(move |s| {
            let dir = s.config.data_dir.join("master");
            let tmp = dir.join(format!(
                ".backup-{}.partial",
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ));
            let file = backup::create::private_file(&tmp).map_err(api_error)?;
            // Unlinked now: nothing is left behind whatever happens next, and the open
            // handle still reads it.
            let _ = std::fs::remove_file(&tmp);
            let (writer, made) = backup::create(
                s.store.as_ref(),
                &s.config.data_dir,
                &passphrase,
                std::io::BufWriter::new(file),
            )
            .map_err(api_error)?;
            let mut file = writer
                .into_inner()
                .map_err(|e| ApiError::Internal(format!("cannot write the backup: {e}")))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| ApiError::Internal(format!("cannot read the backup back: {e}")))?;
            Ok((file, made))
        })
        .await?;
    log::info!(
        "admin {} made a backup of cluster {:?} ({} records, {} files)",
        admin.name,
        made.manifest.cluster,
        made.manifest.records.values().sum::<usize>(),
        made.files.files
    );
    let summary = BackupSummary {
        cluster: made.manifest.cluster,
        ca_pin: made.manifest.ca_pin,
        created_at: made.manifest.created_at,
        schema_version: made.manifest.schema_version,
        records: made.manifest.records,
        files: made.files.files,
        file_bytes: made.files.bytes,
    };
    let summary = serde_json::to_string(&summary)
        .ok()
        .and_then(|s| HeaderValue::from_str(&s).ok())
        .ok_or_else(|| ApiError::Internal("cannot encode the backup's summary".to_owned()))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(BACKUP_SUMMARY_HEADER),
                summary,
            ),
        ],
        body,
    )
        .into_response())
}

fn api_error(e: BackupError) -> ApiError {
    match e {
        BackupError::ShortPassphrase { .. } => ApiError::BadRequest(e.to_string()),
        other => ApiError::Internal(format!("backup: {other}")),
    }
}
