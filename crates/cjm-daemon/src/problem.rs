//! The API's errors: a status, and a JSON body `{error, category, detail}` whose
//! category is one the jobs use (`user_input`, `transient`, `resource`, `fatal`).

use cjm_manager::jobs::JobsError;
use cjm_manager::{ErrorCategory, ManagerError};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};

/// A refused or failed request.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// A short, stable name of what went wrong (`invalid_json`, `unknown_plugin`).
    pub(crate) error: &'static str,
    pub(crate) category: ErrorCategory,
    /// What was wrong with which input, in words.
    pub(crate) detail: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        category: ErrorCategory,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error,
            category,
            detail: detail.into(),
        }
    }

    /// The caller's mistake (400).
    pub(crate) fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            error,
            ErrorCategory::UserInput,
            detail,
        )
    }

    pub(crate) fn not_found(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            error,
            ErrorCategory::UserInput,
            detail,
        )
    }

    /// The daemon is stopping: nothing new starts.
    pub(crate) fn stopping() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            ErrorCategory::Transient,
            "the daemon is stopping: it takes no new jobs or loads",
        )
    }

    pub(crate) fn response(&self) -> Response<Body> {
        body::json(
            self.status,
            &json!({
                "error": self.error,
                "category": self.category.as_str(),
                "detail": self.detail,
            }),
        )
    }
}

impl From<ManagerError> for ApiError {
    fn from(err: ManagerError) -> Self {
        let detail = cjm_interface::ErrorChain(&err).to_string();
        let (status, error) = match &err {
            ManagerError::NotDiscovered { .. } => (StatusCode::NOT_FOUND, "unknown_plugin"),
            ManagerError::NotLoaded { .. } => (StatusCode::CONFLICT, "plugin_not_loaded"),
            ManagerError::AlreadyLoaded { .. } => (StatusCode::CONFLICT, "already_loaded"),
            ManagerError::Disabled { .. } => (StatusCode::CONFLICT, "plugin_disabled"),
            // Well-formed JSON the schema refuses: the validator's words, 422.
            ManagerError::InvalidConfig { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config")
            }
            ManagerError::Plugin(_) => (StatusCode::BAD_GATEWAY, "worker_failed"),
            _ => match err.category() {
                Some(ErrorCategory::UserInput) => (StatusCode::BAD_REQUEST, "refused"),
                Some(ErrorCategory::Transient) | Some(ErrorCategory::Resource) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
            },
        };
        let category = err.category().unwrap_or(ErrorCategory::Fatal);
        ApiError::new(status, error, category, detail)
    }
}

impl From<JobsError> for ApiError {
    fn from(err: JobsError) -> Self {
        let detail = cjm_interface::ErrorChain(&err).to_string();
        match err {
            JobsError::Manager(err) => err.into(),
            JobsError::QueueFull { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                ErrorCategory::Transient,
                detail,
            ),
            JobsError::UnknownJob { .. } => ApiError::not_found("unknown_job", detail),
            JobsError::Closed => ApiError::stopping(),
            JobsError::NotPending { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "not_pending",
                ErrorCategory::UserInput,
                detail,
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                ErrorCategory::Fatal,
                detail,
            ),
        }
    }
}
