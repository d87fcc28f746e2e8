//! The web UI: three static files compiled into the binary (no CDN, no
//! build step, works offline), and `/v1/upload`, which shares a file the
//! browser sends.
//!
//! The assets hold no secret and need no token; the page asks for the
//! token once, keeps it in the browser's localStorage, and sends it as a
//! bearer header on every API call. The browser rules apply as everywhere.

use axum::{
    Json,
    body::Body,
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::Deserialize;
use spore_store::ImportMode;
use tokio::io::AsyncWriteExt;

use crate::{ApiError, AppState, routes::AddResponse};

const INDEX: &str = include_str!("../ui/index.html");
const APP: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP)
}

pub(crate) async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct UploadQuery {
    /// The file's name (one path component).
    name: String,
}

/// Shares the request body as a file named `name` (copied into the store).
#[utoipa::path(post, path = "/v1/upload", security(("token" = [])), params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = AddResponse), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Json<AddResponse>, ApiError> {
    let name = spore_core::RelativePath::new(query.name.clone())
        .ok()
        .filter(|p| !p.as_str().contains('/'))
        .ok_or_else(|| ApiError::bad_request(format!("{:?} is not a file name", query.name)))?;
    let dir = state
        .node
        .home()
        .data
        .join("uploads")
        .join(format!("{:016x}", rand_id()));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name.as_str());
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
        drop(file);
        crate::routes::add_path(&state, path.clone(), ImportMode::Copy).await
    }
    .await;
    // copied into the store (or failed): the staging file goes either way
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result.map(Json)
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
