//! The content gateway: `GET`/`HEAD /b/{id}` and `/c/{collection}/{path}`.
//!
//! Serves verified bytes of any blob over HTTP with single-range requests,
//! so that media players, browsers, `curl` and `ffmpeg` can read content
//! by id. Content that is not complete here is fetched on demand: the
//! request's range becomes the download's playhead (the scheduler fetches
//! the window after it first) and bytes go out as soon as their chunk
//! groups verify ([`spore_node::transfer::BlobStream`]). Nothing unverified
//! is ever sent: a failure mid-body aborts the response.
//!
//! **No token.** A media player or `<video src>` cannot send a bearer
//! header, so the gateway is open like kubo's: it serves content by id
//! and nothing else (no listing of the store, no control). What protects
//! it is the same-origin rule ([`crate::auth::same_origin`]): a web page
//! on another site cannot make the user's node fetch or serve anything,
//! and DNS rebinding is refused by the `Host` check.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_range_header::parse_range_header;
use serde::Deserialize;
use spore_core::{Collection, ContentKind, Hash, Ticket};
use spore_node::transfer::{BlobStream, DownloadRequest, Keep, StreamError};

use crate::{ApiError, AppState};

/// Bytes read from the stream per body chunk.
const CHUNK: usize = 256 * 1024;
/// Collection manifests the gateway will fetch and decode, at most.
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;
/// Bytes sniffed for a Content-Type when the name does not say.
const SNIFF: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct GatewayQuery {
    /// A file name whose extension gives the Content-Type (`?filename=talk.mp4`),
    /// also sent back in `Content-Disposition`.
    filename: Option<String>,
    /// `?download=1`: `Content-Disposition: attachment`.
    #[serde(default)]
    download: Option<String>,
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        let message = e.to_string();
        match e {
            StreamError::Failed { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "fetch_failed", message)
            }
            StreamError::Cancelled(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", message)
            }
            StreamError::Shutdown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            StreamError::OutOfRange { .. } => {
                Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "bad_range", message)
            }
            StreamError::Store(_) => Self::internal(message),
        }
    }
}

fn parse(id: &str) -> Result<Ticket, ApiError> {
    Ticket::from_ticket_or_id(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The gateway reads a collection's manifest as one blob: not a download of
/// the whole directory (what a user's collection download is), and not
/// listed or tagged on its own. A blob is fetched as the user's download.
fn request_for(ticket: &Ticket, hash: Hash, kind: ContentKind) -> DownloadRequest {
    let providers = ticket
        .providers
        .iter()
        .filter_map(|h| spore_net::from_hint(h).ok())
        .collect();
    DownloadRequest {
        keep: match kind {
            ContentKind::Collection => Keep::Untagged,
            ContentKind::Blob => Keep::Tagged,
        },
        ..DownloadRequest::new(hash, kind, providers)
    }
}

/// A blob by content id or ticket, with Range requests; fetched from the
/// network on demand, the requested range first. No token (see the module docs).
#[utoipa::path(get, path = "/b/{id}", tag = "gateway",
    params(("id" = String, Path, description = "content id (64 hex digits) or ticket"),
        ("filename" = Option<String>, Query, description = "names the Content-Type and Content-Disposition"),
        ("download" = Option<String>, Query, description = "any value: Content-Disposition attachment"),
        ("Range" = Option<String>, Header, description = "one range: `bytes=a-b`, `bytes=a-`, `bytes=-n`")),
    responses((status = 200, description = "the whole content", content_type = "application/octet-stream"),
        (status = 206, description = "the requested range"),
        (status = 304, description = "If-None-Match matched the ETag (the content id)"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 416, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)))]
pub(crate) async fn blob(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    Query(query): Query<GatewayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ticket = parse(&id)?;
    let request = request_for(&ticket, ticket.hash, ticket.kind);
    let stream = state.node.transfer().open_stream(request).await?;
    serve(stream, &method, &headers, query.filename.as_deref(), &query).await
}

/// A file of a collection by its path, with Range requests (as `/b/{id}`).
#[utoipa::path(get, path = "/c/{collection}/{path}", tag = "gateway",
    params(("collection" = String, Path, description = "collection id or ticket"),
        ("path" = String, Path, description = "the file's path in the collection")),
    responses((status = 200, description = "the whole file", content_type = "application/octet-stream"),
        (status = 206, description = "the requested range"),
        (status = 404, body = crate::error::ErrorBody), (status = 416, body = crate::error::ErrorBody)))]
pub(crate) async fn collection_file(
    State(state): State<AppState>,
    method: Method,
    Path((id, path)): Path<(String, String)>,
    Query(query): Query<GatewayQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ticket = parse(&id)?;
    let collection = manifest(&state, &ticket).await?;
    let path = path.trim_end_matches('/');
    let Some(entry) = collection.find(path) else {
        return Err(ApiError::not_found(format!(
            "collection {} has no file {path:?}",
            ticket.hash
        )));
    };
    let request = request_for(&ticket, entry.hash, ContentKind::Blob);
    let stream = state.node.transfer().open_stream(request).await?;
    let name = query
        .filename
        .clone()
        .or_else(|| path.rsplit('/').next().map(str::to_string));
    serve(stream, &method, &headers, name.as_deref(), &query).await
}

/// `GET /c/{collection}/`: an HTML index of the collection's files.
pub(crate) async fn collection_index(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ticket = parse(&id)?;
    let collection = manifest(&state, &ticket).await?;
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let link = |path: &str| {
        path.split('/')
            .map(|seg| {
                seg.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>{0}</title><h1>collection {0}</h1><ul>",
        ticket.hash.short()
    );
    for entry in collection.entries() {
        let path = entry.path.as_str();
        html.push_str(&format!(
            "<li><a href=\"/c/{}/{}\">{}</a> ({} bytes)</li>",
            ticket.hash.to_hex(),
            link(path),
            escape(path),
            entry.size
        ));
    }
    html.push_str("</ul>");
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
        ],
        html,
    )
        .into_response())
}

async fn manifest(state: &AppState, ticket: &Ticket) -> Result<Collection, ApiError> {
    let request = request_for(ticket, ticket.hash, ContentKind::Collection);
    let mut stream = state.node.transfer().open_stream(request).await?;
    let bytes = stream.read_to_end(MAX_MANIFEST).await?;
    Collection::decode(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{} is not a collection: {e}", ticket.hash)))
}

/// The byte range a request asks for: `None` for the whole blob.
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // If-Range: the range only holds for this very representation.
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range.as_bytes() != etag.as_bytes()
    {
        return Ok(None);
    }
    let parsed = match parse_range_header(value) {
        Ok(parsed) => parsed,
        // Not a bytes range we understand: ignore it (RFC 9110 §14.2).
        Err(_) => return Ok(None),
    };
    let ranges = parsed.validate(size).map_err(|_| ())?;
    match ranges.as_slice() {
        [one] => Ok(Some(*one.start()..one.end() + 1)),
        // Several ranges: the whole content answers them all (RFC 9110 §14.2).
        _ => Ok(None),
    }
}

fn content_type(name: Option<&str>, sniffed: &[u8]) -> String {
    if let Some(mime) = name.and_then(|n| mime_guess::from_path(n).first()) {
        return mime.essence_str().to_string();
    }
    if let Some(kind) = infer::get(sniffed) {
        return kind.mime_type().to_string();
    }
    if !sniffed.is_empty() && std::str::from_utf8(sniffed).is_ok() {
        return "text/plain; charset=utf-8".to_string();
    }
    "application/octet-stream".to_string()
}

async fn serve(
    mut stream: BlobStream,
    method: &Method,
    headers: &HeaderMap,
    name: Option<&str>,
    query: &GatewayQuery,
) -> Result<Response, ApiError> {
    let size = stream.size();
    let etag = format!("\"{}\"", stream.hash().to_hex());
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    out.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Some(inm) = headers.get(header::IF_NONE_MATCH)
        && inm
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = match requested_range(headers, &etag, size) {
        Ok(r) => r,
        Err(()) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                out.insert(header::CONTENT_RANGE, v);
            }
            let body = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the range is outside the content ({size} bytes)"),
            );
            return Ok((out, body).into_response());
        }
    };
    let (status, range) = match range {
        Some(r) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
            {
                out.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r)
        }
        None => (StatusCode::OK, 0..size),
    };

    // Content-Type: the name's extension, else the first bytes, when they
    // are at hand (here, or the very bytes this response starts with).
    let mut first = Bytes::new();
    let sniffable = name
        .and_then(|n| mime_guess::from_path(n).first())
        .is_none()
        && (stream.is_local() || range.start == 0);
    if sniffable && size > 0 {
        first = stream.read_at(0, SNIFF).await?;
    }
    let mime = content_type(name, &first);
    if let Ok(v) = HeaderValue::from_str(&mime) {
        out.insert(header::CONTENT_TYPE, v);
    }
    if let Some(name) = name {
        let kind = if query.download.is_some() {
            "attachment"
        } else {
            "inline"
        };
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("{kind}; filename*=UTF-8''{encoded}")) {
            out.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    out.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    if method == Method::HEAD {
        return Ok((status, out).into_response());
    }
    // Bytes already read for sniffing start the body when they fit.
    let head = if range.start == 0 {
        first.slice(..first.len().min((range.end - range.start) as usize))
    } else {
        Bytes::new()
    };
    let start = range.start + head.len() as u64;
    let body = futures::stream::unfold(
        (stream, start, range.end, Some(head)),
        |(mut stream, pos, end, head)| async move {
            if let Some(head) = head.filter(|h| !h.is_empty()) {
                return Some((Ok(head), (stream, pos, end, None)));
            }
            if pos >= end {
                return None;
            }
            let want = ((end - pos) as usize).min(CHUNK);
            match stream.read_at(pos, want).await {
                Ok(bytes) if bytes.is_empty() => None,
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    Some((Ok(bytes), (stream, next, end, None)))
                }
                Err(e) => {
                    tracing::debug!(hash = %stream.hash(), "gateway body aborted: {e}");
                    Some((Err(std::io::Error::other(e)), (stream, end, end, None)))
                }
            }
        },
    );
    Ok((status, out, Body::from_stream(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::RANGE,
            HeaderValue::from_str(range).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn ranges_open_ended_suffix_and_unsatisfiable() {
        let e = "\"x\"";
        assert_eq!(
            requested_range(&headers("bytes=0-9"), e, 100),
            Ok(Some(0..10))
        );
        assert_eq!(
            requested_range(&headers("bytes=90-"), e, 100),
            Ok(Some(90..100))
        );
        assert_eq!(
            requested_range(&headers("bytes=-10"), e, 100),
            Ok(Some(90..100))
        );
        assert_eq!(
            requested_range(&headers("bytes=95-200"), e, 100),
            Ok(Some(95..100))
        );
        assert_eq!(requested_range(&headers("bytes=100-"), e, 100), Err(()));
        assert_eq!(requested_range(&headers("bytes=0-1,5-6"), e, 100), Ok(None));
        assert_eq!(requested_range(&headers("items=0-1"), e, 100), Ok(None));
        assert_eq!(requested_range(&HeaderMap::new(), e, 100), Ok(None));
    }

    #[test]
    fn if_range_with_another_etag_means_the_whole_content() {
        let mut h = headers("bytes=0-9");
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&h, "\"x\"", 100), Ok(None));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"x\""));
        assert_eq!(requested_range(&h, "\"x\"", 100), Ok(Some(0..10)));
    }

    #[test]
    fn content_type_from_name_then_sniffing() {
        assert_eq!(content_type(Some("a.mp4"), b""), "video/mp4");
        assert_eq!(
            content_type(None, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "image/png"
        );
        assert_eq!(content_type(None, b"hello"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type(None, &[0xff, 0xfe, 0x00, 0x01]),
            "application/octet-stream"
        );
    }
}
