//! Connecting: the SDK configuration for a region and role, and the services (`Grafana`,
//! `SecretStore`) built on it once per (region, role) scope, each with its own `Caller` and rate
//! limiter.
//!
//! The standard credential chain, region resolution and `AWS_ENDPOINT_URL_*` overrides
//! all come from aws-config untouched, so the rotator runs unchanged against emulators.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::Mutex;

use super::caller::{Caller, RetryPolicy};
use super::grafana::Grafana;
use super::grafana_sdk::AwsGrafana;
use super::identity::Identity;
use super::ratelimit::{LimiterScope, RateLimiter};
use super::secrets::SecretStore;
use super::secrets_sdk::AwsSecrets;
use crate::daemon::metrics::Metrics;

/// A region and a role to assume (`None`: the defaults).
pub type Scope = (Option<String>, Option<String>);

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

/// Loads the SDK configuration once: the standard chain (credentials, region, endpoint
/// overrides) and the HTTP client, which every scope shares. The SDK's own retries are off:
/// `Caller` retries, honouring `Retry-After`.
pub async fn base_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .build(),
        );
    if let Some(r) = settings.region.as_deref() {
        loader = loader.region(Region::new(r.to_owned()));
    }
    loader.load().await
}

/// The base configuration for the region and role a target names. Nothing is loaded again:
/// one HTTP client and one credentials cache serve every scope, so a configuration of 20
/// regions starts as fast as one.
pub async fn scoped_config(
    base: &SdkConfig,
    region: Option<&str>,
    role_arn: Option<&str>,
) -> SdkConfig {
    let mut regional = base.to_builder();
    if let Some(r) = region {
        regional.set_region(Some(Region::new(r.to_owned())));
    }
    let regional = regional.build();
    match role_arn {
        None => regional,
        Some(arn) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("amg-token-rotator")
                .configure(&regional)
                .build()
                .await;
            regional
                .into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

/// The two services, for one region and role.
#[derive(Clone)]
pub struct Services {
    pub grafana: Arc<dyn Grafana>,
    pub secrets: Arc<dyn SecretStore>,
}

/// Hands out the services for a target's region and role.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn services(&self, region: Option<&str>, role_arn: Option<&str>) -> Services;
}

/// Builds AWS clients once per (region, role) and keeps them across passes.
pub struct AwsConnector {
    settings: AwsSettings,
    metrics: Arc<Metrics>,
    base: tokio::sync::OnceCell<SdkConfig>,
    cache: Mutex<HashMap<Scope, Services>>,
}

impl AwsConnector {
    pub fn new(settings: AwsSettings, metrics: Arc<Metrics>) -> Self {
        AwsConnector {
            settings,
            metrics,
            base: tokio::sync::OnceCell::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Connector for AwsConnector {
    async fn services(&self, region: Option<&str>, role_arn: Option<&str>) -> Services {
        let key = (region.map(str::to_owned), role_arn.map(str::to_owned));
        let mut cache = self.cache.lock().await;
        if let Some(s) = cache.get(&key) {
            return s.clone();
        }
        let base = self.base.get_or_init(|| base_config(&self.settings)).await;
        let sdk = scoped_config(base, region, role_arn).await;
        let policy = self.settings.retry;
        let scope = LimiterScope::new(sdk.region().map(|r| r.as_ref()), role_arn);
        let limiter = |service, rate| {
            Arc::new(RateLimiter::new(
                service,
                scope.clone(),
                rate,
                self.metrics.clone(),
            ))
        };
        let services = Services {
            grafana: Arc::new(AwsGrafana::new(
                aws_sdk_grafana::Client::new(&sdk),
                Caller::new(
                    "grafana",
                    self.metrics.clone(),
                    policy,
                    limiter("grafana", self.settings.grafana_rate),
                ),
            )),
            secrets: Arc::new(AwsSecrets::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                Caller::new(
                    "secretsmanager",
                    self.metrics.clone(),
                    policy,
                    limiter("secretsmanager", self.settings.secretsmanager_rate),
                ),
                // Asked once, and only an optimisation: one retry at most, so an unreachable
                // STS (a closed VPC without its endpoint) costs seconds, not a minute.
                Identity::new(
                    aws_sdk_sts::Client::new(&sdk),
                    Caller::new(
                        "sts",
                        self.metrics.clone(),
                        RetryPolicy {
                            max_attempts: 2,
                            ..policy
                        },
                        limiter("sts", 0.0),
                    ),
                    sdk.region().map(|r| r.as_ref().to_owned()),
                ),
            )),
        };
        cache.insert(key, services.clone());
        services
    }
}
