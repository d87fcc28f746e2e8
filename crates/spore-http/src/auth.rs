//! Who may call the API: requests must carry `Authorization: Bearer <token>`,
//! and browsers may only call it from the API's own origin (so a web page on
//! another site cannot drive the node, even with the user's cookies or a
//! guessed token).

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, AppState};

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    // constant time in the length of the expected token
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The browser rules, for every route (the gateway and the UI included):
/// - `Host` must be an IP address or `localhost`: a DNS name that
///   resolves to 127.0.0.1 is how DNS rebinding reaches a local server;
/// - a browser's `Origin` must be the API's own;
/// - `Sec-Fetch-Site: cross-site` (sent by browsers even where no
///   `Origin` is, as for `<video src>`) is refused.
pub(crate) fn check_browser(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(host) = headers.get(header::HOST) {
        let ok = host.to_str().is_ok_and(host_is_local_name);
        if !ok {
            return Err(ApiError::forbidden(
                "the Host header must be an IP address or localhost",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| state.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(ApiError::forbidden(
                "requests from other web origins are refused",
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
    {
        return Err(ApiError::forbidden("cross-site requests are refused"));
    }
    Ok(())
}

/// `localhost`, or an IP literal, with or without a port.
fn host_is_local_name(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The browser rules alone: for the gateway and the web UI's assets.
pub(crate) async fn require_same_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_browser(&state, request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

/// Refuses cross-origin browser requests, then checks the bearer token.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_browser(&state, request.headers()) {
        return e.into_response();
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

#[cfg(test)]
mod tests {
    use super::host_is_local_name;

    #[test]
    fn hosts_that_cannot_be_rebound() {
        for ok in [
            "127.0.0.1:5323",
            "localhost:5323",
            "LOCALHOST",
            "[::1]:80",
            "10.1.2.3",
            "::1",
        ] {
            assert!(host_is_local_name(ok), "{ok}");
        }
        for bad in [
            "evil.example:5323",
            "evil.example",
            "127.0.0.1.nip.io:80",
            "[nope]:1",
            "",
        ] {
            assert!(!host_is_local_name(bad), "{bad}");
        }
    }
}
