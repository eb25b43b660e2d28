//! AWS plumbing shared by the Grafana and Secrets Manager implementations: the SDK
//! configuration for a region and role, and `Caller`, which wraps every call attempt in
//! the retry loop and the AWS-call metrics.
//!
//! The standard credential chain, region resolution and `AWS_ENDPOINT_URL_*` overrides
//! all come from aws-config untouched, so the rotator runs unchanged against emulators.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::api::{retry, ApiError, RetryPolicy};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// AMG's service-account and token rates are not published: a conservative default.
pub const DEFAULT_GRAFANA_RATE: f64 = 10.0;
/// Under Secrets Manager's 50 requests/s shared by PutSecretValue, UpdateSecret and
/// UpdateSecretVersionStage.
pub const DEFAULT_SECRETSMANAGER_RATE: f64 = 40.0;

/// How the rotator reaches AWS: timeouts and retrying, from `[aws]` in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    /// Client-side request rates per account and region (0 = unlimited).
    pub grafana_rate: f64,
    pub secretsmanager_rate: f64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(20),
            retry: RetryPolicy::default(),
            grafana_rate: DEFAULT_GRAFANA_RATE,
            secretsmanager_rate: DEFAULT_SECRETSMANAGER_RATE,
        }
    }
}

/// Loads the SDK configuration: the standard chain, with the region and role a target names.
/// The SDK's own retries are off: `Caller` retries, honouring `Retry-After`.
pub async fn sdk_config(
    settings: &AwsSettings,
    region: Option<&str>,
    role_arn: Option<&str>,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .build(),
        );
    if let Some(r) = region.or(settings.region.as_deref()) {
        loader = loader.region(Region::new(r.to_owned()));
    }
    let base = loader.load().await;
    match role_arn {
        None => base,
        Some(arn) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("amg-token-rotator")
                .configure(&base)
                .build()
                .await;
            base.into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
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
                let outcome = match &result {
                    Ok(_) => "success",
                    Err(e) => e.metric_label(),
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
