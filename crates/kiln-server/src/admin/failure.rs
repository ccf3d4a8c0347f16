//! An admin API error as HTTP: the status and the `{code, message, details}` body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_api::{ApiErrorBody, Detail};
use kiln_store::StoreError;

#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub body: ApiErrorBody,
}

impl Failure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            body: ApiErrorBody {
                code: code.into(),
                message: message.into(),
                details: Vec::new(),
            },
        }
    }
    pub fn with_details(mut self, details: Vec<Detail>) -> Failure {
        self.body.details = details;
        self
    }
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::NotFound(_) | StoreError::NoWorkflow => Failure::not_found(e.to_string()),
            StoreError::Busy { .. } | StoreError::Conflicts(_) => Failure::conflict(e.to_string()),
            StoreError::Invalid(_) => Failure::invalid(e.to_string()),
            e => {
                tracing::error!("admin API: store: {e}");
                Failure::internal(format!("the store failed: {e}"))
            }
        }
    }
}

impl From<crate::select::SelectError> for Failure {
    fn from(e: crate::select::SelectError) -> Failure {
        match e {
            crate::select::SelectError::NotEnrolled(_) => Failure::not_found(e.to_string()),
            _ => Failure::invalid(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Failure {
        Failure::internal(format!("the request's task failed: {e}"))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Where an admin API error body is documented.
pub type ApiResult<T> = Result<T, Failure>;
