//! `[aws]`: the SDK's timeouts, retries and the request rates the daemon allows itself.

use super::check::Checker;
use crate::aws::caller::RetryPolicy;
use crate::aws::connect::AwsSettings;
use crate::config::load::RawAws;

pub(super) fn aws_section(c: &mut Checker, a: &RawAws) -> AwsSettings {
    let max_attempts = a.max_attempts.unwrap_or(6);
    if !(1..=20).contains(&max_attempts) {
        c.fail(
            "aws.max_attempts",
            max_attempts.to_string(),
            "must be from 1 to 20",
        );
    }
    let grafana_rate = rate(
        c,
        "aws.grafana_requests_per_second",
        a.grafana_requests_per_second,
        crate::aws::connect::DEFAULT_GRAFANA_RATE,
    );
    let secretsmanager_rate = rate(
        c,
        "aws.secretsmanager_requests_per_second",
        a.secretsmanager_requests_per_second,
        crate::aws::connect::DEFAULT_SECRETSMANAGER_RATE,
    );
    AwsSettings {
        grafana_rate,
        secretsmanager_rate,
        region: a.region.clone(),
        connect_timeout: c.duration("aws.connect_timeout", a.connect_timeout.as_deref(), "5s"),
        attempt_timeout: c.duration("aws.attempt_timeout", a.attempt_timeout.as_deref(), "20s"),
        retry: RetryPolicy {
            max_attempts: max_attempts.clamp(1, 20) as u32,
            budget: c.duration("aws.retry_budget", a.retry_budget.as_deref(), "60s"),
            ..RetryPolicy::default()
        },
    }
}

/// Requests per second, 0 for no limit; a bad one is a problem and yields `default`.
fn rate(c: &mut Checker, key: &str, v: Option<f64>, default: f64) -> f64 {
    let r = v.unwrap_or(default);
    if !(0.0..=10_000.0).contains(&r) || r.is_nan() {
        c.fail(
            key,
            r.to_string(),
            "must be from 0 (no limit) to 10000 requests per second",
        );
        return default;
    }
    r
}
