//! The one error type of the HTTP layer (authority errors map onto it by their code) and extractors whose rejections use it, so that
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
use smith_api::ErrorCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

/// The HTTP status of each error code: the only place statuses are chosen.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::InvalidInput
        | C::InvalidName
        | C::InvalidGecos
        | C::InvalidShell
        | C::InvalidTtl
        | C::InvalidCidr
        | C::InvalidTimeWindow
        | C::InvalidReason
        | C::InvalidGrantOption
        | C::InvalidPublicKey
        | C::InvalidCsr
        | C::InvalidHostKey
        | C::IdOutOfRange => StatusCode::BAD_REQUEST,
        C::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        C::NotFound | C::UnknownGroup | C::NotAMember | C::OidcNotConfigured | C::NoSuchHost => {
            StatusCode::NOT_FOUND
        }
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::MissingToken
        | C::InvalidToken
        | C::TokenExpired
        | C::TokenUsed
        | C::TokenRevoked
        | C::OidcTokenTooOld
        | C::OidcSignInTooOld
        | C::ClientCertRequired
        | C::ClientCertExpired
        | C::ClientCertNotYetValid
        | C::ClientCertSuperseded
        | C::OidcMalformed
        | C::OidcBadAlgorithm
        | C::OidcWrongIssuer
        | C::OidcUnknownKey
        | C::OidcBadSignature
        | C::OidcWrongAudience
        | C::OidcExpired
        | C::OidcNotYetValid
        | C::OidcNonceMismatch => StatusCode::UNAUTHORIZED,
        C::AdminOnly
        | C::NotAUser
        | C::WrongTokenKind
        | C::UnknownHost
        | C::WrongHost
        | C::HostRemoved
        | C::SshNameNotAllowed
        | C::HostNameNotAllowed
        | C::UnknownUser
        | C::UserDisabled
        | C::NoMatchingGrant
        | C::ConditionFailed
        | C::GrantsConflict
        | C::OidcInvalidUsername
        | C::OidcSubjectMismatch
        | C::OidcNotBound
        | C::OidcNotAdmin
        | C::NotScimManaged
        | C::DisabledByAdmin => StatusCode::FORBIDDEN,
        C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        C::HostExists
        | C::SshNameTaken
        | C::UserExists
        | C::GroupExists
        | C::NameConflict
        | C::IdConflict
        | C::AuditChainBroken
        | C::AuditReplay
        | C::HostIdentityForked
        | C::AmbiguousHost => StatusCode::CONFLICT,
        C::RenewTooSoon => StatusCode::TOO_MANY_REQUESTS,
        C::IdExhausted
        | C::OidcUnavailable
        | C::Overloaded
        | C::ShuttingDown
        | C::Unavailable
        | C::SignerUnavailable
        | C::UpgradeRequired => StatusCode::SERVICE_UNAVAILABLE,
        // ErrorCode is non_exhaustive for clients; the server answers 500 for anything
        // it did not name above.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }
    /// Logs `e` and answers 500 without details.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{context}");
        ApiError::new(
            ErrorCode::Internal,
            format!("internal error while {context}; the CA's log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            code: self.code.as_str().to_string(),
            error: self.message,
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<crate::authority::Error> for ApiError {
    fn from(e: crate::authority::Error) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<crate::authority::IssueError> for ApiError {
    fn from(e: crate::authority::IssueError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(ErrorCode::TooLarge, "request body is larger than 64 KiB");
        }
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            );
        }
        let text = r.body_text();
        if text.contains("length limit exceeded") {
            return ApiError::new(ErrorCode::TooLarge, "request body is larger than 64 KiB");
        }
        ApiError::new(ErrorCode::InvalidInput, text)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, r.body_text())
    }
}

/// How long a request body may take to arrive, whatever its size (bodies are at most
/// 4 MiB): a client that trickles bytes holds its connection this long at most.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The refusal of a body that did not arrive within [`BODY_DEADLINE`].
pub fn body_timeout() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "the request body did not arrive within {} s",
            BODY_DEADLINE.as_secs()
        ),
    )
}

/// `Json` whose rejection is an [`ApiError`], read within [`BODY_DEADLINE`]. As the last
/// extractor of a handler, it reads the body only after the credential extractors before
/// it accepted the caller.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) =
            tokio::time::timeout(BODY_DEADLINE, axum::Json::<T>::from_request(req, state))
                .await
                .map_err(|_| body_timeout())??;
        Ok(ApiJson(v))
    }
}

/// The raw body as bytes, read within [`BODY_DEADLINE`].
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let b = tokio::time::timeout(BODY_DEADLINE, axum::body::Bytes::from_request(req, state))
            .await
            .map_err(|_| body_timeout())?
            .map_err(|_| {
                ApiError::new(ErrorCode::TooLarge, "request body is larger than 64 KiB")
            })?;
        Ok(ApiBytes(b))
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
