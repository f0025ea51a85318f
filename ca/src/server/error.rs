//! The one error type of the HTTP layer and extractors whose rejections use it, so that
//! every non-2xx answer is a `smith_api::ErrorBody {code, error}` with a fitting status.
//!
//! Must never: leak internal details (SQL, file paths) to clients: internal errors are
//! logged here and answered with a generic message.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use smith_api::ErrorBody;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_string(),
            message: message.into(),
        }
    }
    pub fn bad_request(code: &str, m: impl Into<String>) -> ApiError {
        ApiError::new(400, code, m)
    }
    pub fn unauthorized(code: &str, m: impl Into<String>) -> ApiError {
        ApiError::new(401, code, m)
    }
    pub fn forbidden(code: &str, m: impl Into<String>) -> ApiError {
        ApiError::new(403, code, m)
    }
    pub fn not_found(code: &str, m: impl Into<String>) -> ApiError {
        ApiError::new(404, code, m)
    }
    pub fn conflict(code: &str, m: impl Into<String>) -> ApiError {
        ApiError::new(409, code, m)
    }
    /// Logs `e` and answers 500 without details.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{context}");
        ApiError::new(
            500,
            "internal",
            format!("internal error while {context}; the CA's log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            error: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::db::StoreError> for ApiError {
    fn from(e: crate::db::StoreError) -> ApiError {
        ApiError::internal("writing to the CA database", e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(413, "too_large", "request body is larger than 64 KiB");
        }
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            );
        }
        let text = r.body_text();
        if text.contains("length limit exceeded") {
            return ApiError::new(413, "too_large", "request body is larger than 64 KiB");
        }
        ApiError::bad_request("invalid_input", text)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request("invalid_input", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_input", r.body_text())
    }
}

/// `Json` whose rejection is an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// `Query` whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// `Path` whose rejection is an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}
