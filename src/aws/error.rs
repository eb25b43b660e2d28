//! The error every external call returns.
//!
//! Errors come in two tiers: the modelled ones a caller acts on (not found, conflict,
//! throttled with its retry-after, quota, access denied, invalid) and everything else.
//! Messages are AWS's own; they never contain a key because no request the rotator
//! makes echoes one back. Retrying them is `caller.rs`'s job.

use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("throttled: {message}")]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A 5xx, a timeout or a connection failure: the call may or may not have taken effect.
    #[error("service unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// Worth another attempt: the failure is transient.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Throttled { .. } | ApiError::Unavailable { .. }
        )
    }

    /// The server did not act on the request, so repeating a non-idempotent call is safe.
    pub fn surely_not_applied(&self) -> bool {
        !matches!(self, ApiError::Unavailable { .. } | ApiError::Other(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Throttled { retry_after, .. } | ApiError::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The `outcome` label of the AWS-call metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Throttled { .. } => "throttled",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::AccessDenied(_) => "access_denied",
            ApiError::Invalid(_) => "invalid",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Other(_) => "error",
        }
    }

    /// Classifies an SDK error by its modelled error code, HTTP status and headers.
    pub fn from_sdk<E>(err: SdkError<E, Response>) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::TimeoutError(_) => ApiError::Unavailable {
                message: "timed out".into(),
                retry_after: None,
            },
            SdkError::DispatchFailure(_) => ApiError::Unavailable {
                message: format!("could not reach the service: {}", source_chain(&err)),
                retry_after: None,
            },
            SdkError::ResponseError(r) => {
                let status = r.raw().status().as_u16();
                let message = format!("unreadable response (HTTP {status})");
                if status >= 500 {
                    ApiError::Unavailable {
                        message,
                        retry_after: retry_after_header(r.raw()),
                    }
                } else {
                    ApiError::Other(message)
                }
            }
            SdkError::ServiceError(se) => {
                let raw = se.raw();
                let status = raw.status().as_u16();
                let code = se.err().code().unwrap_or("").to_owned();
                let message = match se.err().message() {
                    Some(m) if !code.is_empty() => format!("{code}: {m}"),
                    Some(m) => m.to_owned(),
                    None if !code.is_empty() => code.clone(),
                    None => format!("HTTP {status}"),
                };
                let retry_after = retry_after_header(raw);
                classify(&code, status, message, retry_after)
            }
            _ => ApiError::Other(source_chain(&err)),
        }
    }
}

impl crate::daemon::metrics::Label for ApiError {
    fn label(&self) -> &'static str {
        self.metric_label()
    }
}

fn classify(code: &str, status: u16, message: String, retry_after: Option<Duration>) -> ApiError {
    match code {
        "ResourceNotFoundException" => ApiError::NotFound(message),
        "ConflictException" | "ResourceExistsException" => ApiError::Conflict(message),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" => ApiError::Throttled {
            message,
            retry_after,
        },
        "ServiceQuotaExceededException" | "LimitExceededException" => {
            ApiError::QuotaExceeded(message)
        }
        "AccessDeniedException" | "AccessDenied" | "UnrecognizedClientException" => {
            ApiError::AccessDenied(message)
        }
        "ValidationException"
        | "InvalidParameterException"
        | "InvalidRequestException"
        | "MalformedPolicyDocumentException" => ApiError::Invalid(message),
        _ if status == 429 => ApiError::Throttled {
            message,
            retry_after,
        },
        _ if status == 403 => ApiError::AccessDenied(message),
        _ if status == 404 => ApiError::NotFound(message),
        _ if status >= 500 => ApiError::Unavailable {
            message,
            retry_after,
        },
        _ => ApiError::Other(message),
    }
}

/// AMG sends `Retry-After` (seconds); other services may send `x-amz-retry-after` (milliseconds).
fn retry_after_header(raw: &Response) -> Option<Duration> {
    let headers = raw.headers();
    if let Some(secs) = headers
        .get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    headers
        .get("x-amz-retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.min(3_600_000)))
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_codes_then_status() {
        let c = |code, status| classify(code, status, "m".into(), None);
        assert_eq!(
            c("ResourceNotFoundException", 404),
            ApiError::NotFound("m".into())
        );
        assert_eq!(c("ConflictException", 409), ApiError::Conflict("m".into()));
        assert!(matches!(
            c("ThrottlingException", 429),
            ApiError::Throttled { .. }
        ));
        assert!(matches!(c("", 503), ApiError::Unavailable { .. }));
        assert!(matches!(
            c("InternalServerException", 500),
            ApiError::Unavailable { .. }
        ));
        assert_eq!(
            c("ServiceQuotaExceededException", 402),
            ApiError::QuotaExceeded("m".into())
        );
        assert_eq!(
            c("AccessDeniedException", 403),
            ApiError::AccessDenied("m".into())
        );
        assert_eq!(c("ValidationException", 400), ApiError::Invalid("m".into()));
        assert!(!c("ValidationException", 400).is_retryable());
        assert!(c("", 500).is_retryable());
    }
}
