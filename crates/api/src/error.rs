//! API errors: a stable code, a message a person can act on, the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use policy::{DecisionError, FileError, GrantError};
use store::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str, id: i64) -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id {id}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let message = e.to_string();
        match e {
            ServiceError::Store(_) => {
                tracing::error!(error = %message, "state store failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the state store is unavailable; nothing was changed",
                )
            }
            ServiceError::NotFound(what, id) => ApiError::not_found(what, id),
            ServiceError::Contended => ApiError::new(StatusCode::CONFLICT, "contended", message),
            ServiceError::File(FileError::NotRequester(_)) => ApiError::forbidden(message),
            ServiceError::File(_) => ApiError::bad_request(message),
            ServiceError::Decision(DecisionError::NotPending(_) | DecisionError::Expired) => {
                ApiError::new(StatusCode::CONFLICT, "request_closed", message)
            }
            ServiceError::Decision(DecisionError::AlreadyDecided) => {
                ApiError::new(StatusCode::CONFLICT, "already_decided", message)
            }
            ServiceError::Decision(_) => ApiError::forbidden(message),
            ServiceError::Grant(GrantError::NotActive(_)) => {
                ApiError::new(StatusCode::CONFLICT, "grant_closed", message)
            }
            ServiceError::Grant(GrantError::NotHolder) => ApiError::forbidden(message),
            ServiceError::Grant(GrantError::NotApproved(_)) => ApiError::bad_request(message),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        ServiceError::Store(e).into()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> ApiError {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body is larger than 64 KiB",
            ),
            _ => ApiError::bad_request(format!("malformed JSON body: {}", e.body_text())),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::bad_request(format!("bad query string: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> ApiError {
        ApiError::bad_request(format!("bad path: {}", e.body_text()))
    }
}
