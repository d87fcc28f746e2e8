//! Who may call the API: requests must carry `Authorization: Bearer <token>`,
//! and browsers may only call it from the API's own origin (so a web page on
//! another site cannot drive the node, even with the user's cookies or a
//! guessed token).

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, AppState};

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    // constant time in the length of the expected token
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses cross-origin browser requests, then checks the bearer token.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| state.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return ApiError::forbidden("requests from other web origins are refused")
                .into_response();
        }
    }
    if request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return ApiError::forbidden("cross-site requests are refused").into_response();
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return ApiError::unauthorized(
            "missing `Authorization: Bearer <token>`; the token is in <home>/config/api-token",
        )
        .into_response();
    };
    let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            .into_response();
    };
    if !same_bytes(token.trim_ascii(), state.token.as_bytes()) {
        return ApiError::unauthorized("wrong API token").into_response();
    }
    next.run(request).await
}
