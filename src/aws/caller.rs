//! `Caller`: every AWS call goes through it. It retries per `RetryPolicy` (honouring AMG's
//! `Retry-After`, which the SDK ignores; the SDK's own retries are off), paces through the
//! scope's rate limiter, and records each attempt in the AWS-call metrics. It never sees a key.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ApiError;
use super::ratelimit::RateLimiter;
use crate::daemon::metrics::{Label, Metrics, Succeeded};

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

/// Runs one logical AWS call: retries per the policy and records every attempt.
#[derive(Clone)]
pub struct Caller {
    pub service: &'static str,
    pub metrics: Arc<Metrics>,
    pub policy: RetryPolicy,
    pub limiter: Arc<RateLimiter>,
}

impl Caller {
    pub fn new(
        service: &'static str,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Caller {
            service,
            metrics,
            policy,
            limiter,
        }
    }

    /// A call that is safe to repeat: retried on throttling and on unavailability.
    pub async fn idempotent<T, F, Fut>(
        &self,
        operation: &'static str,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.run(operation, ApiError::is_retryable, call).await
    }

    /// A call that must not run twice (a create without an idempotency token): retried only
    /// when AWS surely did not act on it (throttled); an ambiguous failure goes to the caller.
    pub async fn once<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.run(operation, |e| matches!(e, ApiError::Throttled { .. }), call)
            .await
    }

    /// Whether `operation` waits for the limiter and adjusts it. Secrets Manager's reads
    /// (DescribeSecret, GetSecretValue) share a quota of 10,000 requests/s, two hundred times
    /// the 50/s its writes share: paced with the writes, they made the writes' budget the bound
    /// of a pass (measured in docs/PERFORMANCE.md: a first pass of 200 credentials, 1,000 calls
    /// at 40/s). A throttled read is still retried with backoff, honouring Retry-After.
    fn paced(&self, operation: &str) -> bool {
        !(self.service == "secretsmanager"
            && matches!(operation, "DescribeSecret" | "GetSecretValue"))
    }

    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        retryable: impl Fn(&ApiError) -> bool,
        mut call: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let paced = self.paced(operation);
        retry(&self.policy, retryable, || {
            let attempt = call();
            async move {
                let ticket = if paced {
                    Some(self.limiter.acquire().await)
                } else {
                    None
                };
                let started = Instant::now();
                let result = attempt.await;
                let outcome: &dyn Label = match &result {
                    Ok(_) => &Succeeded,
                    Err(e) => e,
                };
                match (&result, ticket) {
                    (Ok(_), Some(t)) => self.limiter.succeeded(t),
                    (Err(ApiError::Throttled { .. }), Some(t)) => self.limiter.throttled(t),
                    _ => {}
                }
                self.metrics
                    .aws_call(self.service, operation, outcome, started.elapsed());
                result
            }
        })
        .await
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
