//! The error every external call returns, and the retry loop around calls.
//!
//! Errors come in two tiers: the modelled ones a caller acts on (not found, conflict,
//! throttled with its retry-after, quota, access denied, invalid) and everything else.
//! Messages are AWS's own; they never contain a key because no request the rotator
//! makes echoes one back. The SDK's retries are switched off (`aws.rs`) so that this
//! one loop owns retrying: it honours AMG's `Retry-After`, which the SDK ignores.

use std::future::Future;
use std::time::{Duration, Instant};

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

/// How hard to retry one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff ceiling; doubles each attempt.
    pub base_delay: Duration,
    /// Ceiling of one backoff.
    pub max_delay: Duration,
    /// The whole time one call may spend waiting between attempts.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            budget: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, given the error of attempt `attempt` (1-based).
    /// Full jitter below an exponential ceiling, but never shorter than the server's Retry-After.
    pub fn delay(&self, attempt: u32, err: &ApiError, unit_random: f64) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let jittered = ceiling.mul_f64(unit_random.clamp(0.0, 1.0));
        match err.retry_after() {
            Some(after) => after.max(jittered),
            None => jittered,
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or the policy's attempts or budget run out.
/// `retryable` decides which errors are worth another attempt (usually `ApiError::is_retryable`).
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    retryable: impl Fn(&ApiError) -> bool,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.max_attempts && retryable(&e) => {
                let wait = policy.delay(attempt, &e, fastrand::f64());
                if started.elapsed() + wait > policy.budget {
                    return Err(e);
                }
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn throttled(after: Option<u64>) -> ApiError {
        ApiError::Throttled {
            message: "slow down".into(),
            retry_after: after.map(Duration::from_millis),
        }
    }

    #[test]
    fn delay_honours_retry_after_and_caps_backoff() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(30),
        };
        assert_eq!(
            p.delay(1, &throttled(None), 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.delay(3, &throttled(None), 1.0),
            Duration::from_millis(400)
        );
        assert_eq!(p.delay(9, &throttled(None), 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(9, &throttled(None), 0.0), Duration::ZERO);
        assert_eq!(
            p.delay(1, &throttled(Some(2_000)), 0.5),
            Duration::from_secs(2)
        );
    }

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

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_attempts_and_on_permanent_errors() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(5),
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&p, ApiError::is_retryable, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(throttled(None))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry(&p, ApiError::is_retryable, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ApiError::NotFound("x".into()))
        })
        .await;
        assert_eq!(r, Err(ApiError::NotFound("x".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let r = retry(&p, ApiError::is_retryable, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(throttled(Some(5)))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_when_retry_after_exceeds_budget() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(5),
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&p, ApiError::is_retryable, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(throttled(Some(60_000)))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
