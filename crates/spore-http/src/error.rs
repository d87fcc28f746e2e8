//! The one error shape of the API: `{"error": {"code": "...", "message": "..."}}`
//! with the matching HTTP status.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use spore_node::NodeError;
use spore_store::StoreError;
use utoipa::ToSchema;

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `bad_request`, `not_found`, ...
    code: String,
    /// For people.
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The full cause chain, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl From<spore_node::transfer::ControlError> for ApiError {
    fn from(e: spore_node::transfer::ControlError) -> Self {
        use spore_node::transfer::ControlError;
        match e {
            ControlError::NotFound(_) => Self::not_found(e.to_string()),
            ControlError::Finished(_) | ControlError::NotPaused(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ControlError::Store { .. } => Self::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = chain(&e);
        match e {
            StoreError::NotFound(_) => Self::not_found(message),
            StoreError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Self::bad_request(message)
            }
            StoreError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            StoreError::Broken { .. } | StoreError::Corrupt { .. } => {
                Self::new(StatusCode::CONFLICT, "broken", message)
            }
            StoreError::UnsupportedFileType { .. } | StoreError::ChangedDuringImport { .. } => {
                Self::bad_request(message)
            }
            ref e if e.is_disk_full() => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message)
            }
            _ => Self::internal(message),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Store(e) => e.into(),
            NodeError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            other => Self::internal(chain(&other)),
        }
    }
}

impl From<spore_net::NetError> for ApiError {
    fn from(e: spore_net::NetError) -> Self {
        use spore_net::NetError;
        let message = e.to_string();
        match e {
            NetError::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
            NetError::Dial(_) => Self::new(StatusCode::BAD_GATEWAY, "dial_failed", message),
            NetError::NotConnected(_) => Self::not_found(message),
            NetError::NoKnownPeers => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_peers", message)
            }
            NetError::Shutdown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
