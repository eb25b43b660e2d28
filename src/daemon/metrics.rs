//! The one `Metrics` struct: it owns the Prometheus registry and records through small methods.
//!
//! Built once, shared by `Arc`. Every label value is bounded by the number of managed
//! credentials (workspace ID and service-account name) or by a fixed set (outcome, reason,
//! service, operation). A key never becomes a label or a value.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Identifies one managed credential in metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialLabels {
    pub workspace: String,
    pub service_account: String,
    /// `token` or `api_key`.
    pub kind: &'static str,
}

impl CredentialLabels {
    fn values(&self) -> [&str; 3] {
        [&self.workspace, &self.service_account, self.kind]
    }
}

const CREDENTIAL: [&str; 3] = ["workspace", "service_account", "kind"];

/// One registered metric family, as the README documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

pub struct Metrics {
    registry: Registry,
    expiry: GaugeVec,
    credential_healthy: IntGaugeVec,
    rotations: IntCounterVec,
    deletions: IntCounterVec,
    tokens: IntGaugeVec,
    left_behind: IntGaugeVec,
    pass_duration: HistogramVec,
    passes: IntCounterVec,
    last_success: prometheus::Gauge,
    last_pass_end: prometheus::Gauge,
    pass_in_progress: IntGauge,
    passes_delayed: prometheus::IntCounter,
    aws_calls: IntCounterVec,
    aws_latency: HistogramVec,
    credential_failures: IntCounterVec,
    role_drift: IntGaugeVec,
    bootstraps: IntCounterVec,
    permissions: IntGaugeVec,
    permission_drift: IntGaugeVec,
    permission_updates: IntCounterVec,
    rate_limit: GaugeVec,
    /// Credentials seen in the last pass, so the series of one that left the config are removed.
    known: Mutex<BTreeSet<CredentialLabels>>,
    /// Every registered family, in registration order.
    catalog: Vec<MetricInfo>,
}

/// The `state` label values of `service_account_tokens`, in `set_tokens` order.
const TOKEN_STATES: [&str; 3] = ["active", "expired", "no_expiry"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("amg_rotator")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let expiry = GaugeVec::new(
            opts(
                "credential_expiry_timestamp_seconds",
                "Unix time at which the token or key behind the credential's AWSCURRENT secret version expires.",
            ),
            &CREDENTIAL,
        )
        .unwrap();
        let credential_healthy = IntGaugeVec::new(
            opts(
                "credential_healthy",
                "1 when the last pass left the credential valid and not due, 0 when it failed or needs attention.",
            ),
            &CREDENTIAL,
        )
        .unwrap();
        let rotations = IntCounterVec::new(
            opts(
                "rotations_total",
                "Rotations attempted, by outcome (success, failure, yielded: another rotator was doing it) and reason (first_run, due, expired, missing_token, resumed, recreate).",
            ),
            &["workspace", "service_account", "kind", "outcome", "reason"],
        )
        .unwrap();
        let deletions = IntCounterVec::new(
            opts(
                "token_deletions_total",
                "Tokens or keys deleted, by reason (superseded, orphan, expired_owned, expired_foreign, recreate, rollback) and outcome.",
            ),
            &["workspace", "service_account", "kind", "reason", "outcome"],
        )
        .unwrap();
        let tokens = IntGaugeVec::new(
            opts(
                "service_account_tokens",
                "Tokens a managed service account holds, by state (active, expired, no_expiry); expired ones still count against AMG's quota, and no_expiry ones (made in Grafana's UI) are never taken for expired.",
            ),
            &["workspace", "service_account", "state"],
        )
        .unwrap();
        let left_behind = IntGaugeVec::new(
            opts(
                "left_behind_tokens",
                "Live tokens the rotator minted for another secret (secret_name, a workspace or service-account name, the region or the role changed) that this credential's service account still holds; kept until they expire. Retire the old secret, then delete them.",
            ),
            &CREDENTIAL,
        )
        .unwrap();
        let pass_duration = HistogramVec::new(
            HistogramOpts::new(
                "pass_duration_seconds",
                "Wall time of one reconciliation pass.",
            )
            .namespace("amg_rotator")
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["mode"],
        )
        .unwrap();
        let passes = IntCounterVec::new(
            opts(
                "passes_total",
                "Passes finished, by outcome (success: every credential fine; partial: some failed; failure: none could be examined).",
            ),
            &["outcome"],
        )
        .unwrap();
        let last_success = prometheus::Gauge::with_opts(opts(
            "last_success_timestamp_seconds",
            "Unix time at which the last pass in which every credential succeeded ended.",
        ))
        .unwrap();
        let last_pass_end = prometheus::Gauge::with_opts(opts(
            "last_pass_timestamp_seconds",
            "Unix time at which the last pass ended, whatever its outcome.",
        ))
        .unwrap();
        let pass_in_progress =
            IntGauge::with_opts(opts("pass_in_progress", "1 while a pass is running.")).unwrap();
        let passes_delayed = prometheus::IntCounter::with_opts(opts(
            "passes_delayed_total",
            "Scheduled passes that started late or were skipped because the previous pass was still running.",
        ))
        .unwrap();
        let aws_calls = IntCounterVec::new(
            opts(
                "aws_calls_total",
                "Calls to AWS, by service, operation and outcome (success, throttled, unavailable, not_found, conflict, ...).",
            ),
            &["service", "operation", "outcome"],
        )
        .unwrap();
        let aws_latency = HistogramVec::new(
            HistogramOpts::new(
                "aws_call_duration_seconds",
                "Latency of one call to AWS, one attempt.",
            )
            .namespace("amg_rotator")
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["service", "operation"],
        )
        .unwrap();
        let credential_failures = IntCounterVec::new(
            opts(
                "credential_failures_total",
                "Passes in which a credential could not be brought to a valid state, by stage (discover, plan, rotate, cleanup, config).",
            ),
            &["workspace", "service_account", "kind", "stage"],
        )
        .unwrap();
        let role_drift = IntGaugeVec::new(
            opts(
                "service_account_role_drift",
                "1 when a managed service account's Grafana role differs from the declared one (AMG cannot change it; recreate the account).",
            ),
            &["workspace", "service_account", "declared", "actual"],
        )
        .unwrap();
        let bootstraps = IntCounterVec::new(
            opts(
                "service_account_bootstraps_total",
                "Missing service accounts created, by outcome (success, conflict, quota_exceeded, ...).",
            ),
            &["workspace", "service_account", "outcome"],
        )
        .unwrap();
        let permissions = IntGaugeVec::new(
            opts(
                "workspace_permissions",
                "Users and groups holding each Grafana role in a managed workspace, by role and principal type.",
            ),
            &["workspace", "role", "type"],
        )
        .unwrap();
        let permission_drift = IntGaugeVec::new(
            opts(
                "workspace_permission_drift",
                "Bindings that differ from the declared ones, by change (add, revoke).",
            ),
            &["workspace", "change"],
        )
        .unwrap();
        let permission_updates = IntCounterVec::new(
            opts(
                "permission_updates_total",
                "Permission changes sent with UpdatePermissions, by outcome (applied, refused, failed).",
            ),
            &["workspace", "outcome"],
        )
        .unwrap();
        let rate_limit = GaugeVec::new(
            opts(
                "aws_rate_limit_requests_per_second",
                "The client-side request rate the rotator currently allows itself, per service; lowered after throttling.",
            ),
            &["service"],
        )
        .unwrap();
        let build_info = IntGaugeVec::new(
            opts("build_info", "Always 1; the labels name the running build."),
            &["version"],
        )
        .unwrap();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let mut catalog = Vec::new();
        for c in [
            Box::new(expiry.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(credential_healthy.clone()),
            Box::new(rotations.clone()),
            Box::new(deletions.clone()),
            Box::new(tokens.clone()),
            Box::new(left_behind.clone()),
            Box::new(pass_duration.clone()),
            Box::new(passes.clone()),
            Box::new(last_success.clone()),
            Box::new(last_pass_end.clone()),
            Box::new(pass_in_progress.clone()),
            Box::new(passes_delayed.clone()),
            Box::new(aws_calls.clone()),
            Box::new(aws_latency.clone()),
            Box::new(credential_failures.clone()),
            Box::new(role_drift.clone()),
            Box::new(bootstraps.clone()),
            Box::new(permissions.clone()),
            Box::new(permission_drift.clone()),
            Box::new(permission_updates.clone()),
            Box::new(rate_limit.clone()),
            Box::new(build_info),
        ] {
            for (desc, family) in c.desc().into_iter().zip(c.collect()) {
                catalog.push(MetricInfo {
                    name: desc.fq_name.clone(),
                    kind: kind_name(family.type_()),
                    labels: desc.variable_labels.clone(),
                    help: desc.help.clone(),
                });
            }
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            expiry,
            credential_healthy,
            rotations,
            deletions,
            tokens,
            left_behind,
            pass_duration,
            passes,
            last_success,
            last_pass_end,
            pass_in_progress,
            passes_delayed,
            aws_calls,
            aws_latency,
            credential_failures,
            role_drift,
            bootstraps,
            permissions,
            permission_drift,
            permission_updates,
            rate_limit,
            known: Mutex::new(BTreeSet::new()),
            catalog,
        }
    }

    /// Every registered metric family, whether or not it has a series yet.
    pub fn catalog(&self) -> &[MetricInfo] {
        &self.catalog
    }

    /// The text exposition format 0.0.4.
    ///
    /// A labelled family with no series yet (no bootstrap, no permissions configured) is still
    /// named with its `# HELP` and `# TYPE` lines, which the format allows: a scrape then shows
    /// every metric the rotator can export, and dashboards and alerts can be checked against it.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("encoding to a Vec cannot fail");
        let mut text = String::from_utf8(buf).expect("the text format is UTF-8");
        let present: BTreeSet<&str> = families.iter().map(|f| f.name()).collect();
        for m in self
            .catalog
            .iter()
            .filter(|m| !present.contains(m.name.as_str()))
        {
            let help = m.help.replace('\\', "\\\\").replace('\n', "\\n");
            text.push_str(&format!(
                "# HELP {} {help}\n# TYPE {} {}\n",
                m.name, m.name, m.kind
            ));
        }
        text
    }

    pub fn set_expiry(&self, c: &CredentialLabels, expires_at: chrono::DateTime<chrono::Utc>) {
        self.expiry
            .with_label_values(&c.values())
            .set(expires_at.timestamp() as f64);
    }

    pub fn set_healthy(&self, c: &CredentialLabels, healthy: bool) {
        self.credential_healthy
            .with_label_values(&c.values())
            .set(healthy as i64);
    }

    pub fn rotation(&self, c: &CredentialLabels, outcome: &str, reason: &str) {
        let [w, s, k] = c.values();
        self.rotations
            .with_label_values(&[w, s, k, outcome, reason])
            .inc();
    }

    pub fn deletion(&self, c: &CredentialLabels, reason: &str, outcome: &str) {
        let [w, s, k] = c.values();
        self.deletions
            .with_label_values(&[w, s, k, reason, outcome])
            .inc();
    }

    pub fn credential_failure(&self, c: &CredentialLabels, stage: &str) {
        let [w, s, k] = c.values();
        self.credential_failures
            .with_label_values(&[w, s, k, stage])
            .inc();
    }

    /// Tokens of a service account by state: `active`, `expired`, `no_expiry` (AMG reports none).
    pub fn set_tokens(&self, workspace: &str, service_account: &str, by_state: [usize; 3]) {
        for (state, n) in TOKEN_STATES.iter().zip(by_state) {
            self.tokens
                .with_label_values(&[workspace, service_account, state])
                .set(n as i64);
        }
    }

    pub fn set_left_behind(&self, c: &CredentialLabels, n: usize) {
        self.left_behind
            .with_label_values(&c.values())
            .set(n as i64);
    }

    pub fn set_role_drift(
        &self,
        c: &CredentialLabels,
        declared: &str,
        actual: &str,
        drifted: bool,
    ) {
        let labels = [
            c.workspace.as_str(),
            c.service_account.as_str(),
            declared,
            actual,
        ];
        if drifted {
            self.role_drift.with_label_values(&labels).set(1);
        } else {
            let _ = self.role_drift.remove_label_values(&labels);
        }
    }

    pub fn bootstrap(&self, workspace: &str, service_account: &str, outcome: &str) {
        self.bootstraps
            .with_label_values(&[workspace, service_account, outcome])
            .inc();
    }

    pub fn set_permissions(&self, workspace: &str, role: &str, principal_type: &str, count: usize) {
        self.permissions
            .with_label_values(&[workspace, role, principal_type])
            .set(count as i64);
    }

    pub fn set_permission_drift(&self, workspace: &str, to_add: usize, to_revoke: usize) {
        self.permission_drift
            .with_label_values(&[workspace, "add"])
            .set(to_add as i64);
        self.permission_drift
            .with_label_values(&[workspace, "revoke"])
            .set(to_revoke as i64);
    }

    pub fn permission_updates(&self, workspace: &str, outcome: &str, n: usize) {
        self.permission_updates
            .with_label_values(&[workspace, outcome])
            .inc_by(n as u64);
    }

    pub fn set_rate_limit(&self, service: &str, per_second: f64) {
        self.rate_limit
            .with_label_values(&[service])
            .set(per_second);
    }

    /// Records one AWS call attempt.
    pub fn aws_call(&self, service: &str, operation: &str, outcome: &str, elapsed: Duration) {
        self.aws_calls
            .with_label_values(&[service, operation, outcome])
            .inc();
        self.aws_latency
            .with_label_values(&[service, operation])
            .observe(elapsed.as_secs_f64());
    }

    /// A guard that marks a pass in progress and observes its duration when dropped.
    pub fn pass_timer(&self, mode: &'static str) -> PassTimer<'_> {
        self.pass_in_progress.set(1);
        PassTimer {
            metrics: self,
            mode,
            started: Instant::now(),
        }
    }

    pub fn pass_finished(&self, outcome: &str, now: chrono::DateTime<chrono::Utc>) {
        self.passes.with_label_values(&[outcome]).inc();
        self.last_pass_end.set(now.timestamp() as f64);
        if outcome == "success" {
            self.last_success.set(now.timestamp() as f64);
        }
    }

    pub fn pass_delayed(&self) {
        self.passes_delayed.inc();
    }

    /// Forgets the per-credential series of credentials no longer managed.
    pub fn retain_credentials(&self, current: BTreeSet<CredentialLabels>) {
        let mut known = self.known.lock().expect("metrics lock");
        for gone in known.difference(&current) {
            let _ = self.expiry.remove_label_values(&gone.values());
            let _ = self.credential_healthy.remove_label_values(&gone.values());
            let _ = self.left_behind.remove_label_values(&gone.values());
            for state in TOKEN_STATES {
                let _ = self.tokens.remove_label_values(&[
                    &gone.workspace,
                    &gone.service_account,
                    state,
                ]);
            }
        }
        *known = current;
    }

    /// What a pass that could not discover everything (a workspace or a target failed) does
    /// instead of `retain_credentials`: credentials known from earlier passes and missing from
    /// this one may be behind that failure, so their series stay, marked unhealthy, rather than
    /// vanish from the alerts while an outage lasts.
    pub fn keep_unseen_unhealthy(&self, seen: BTreeSet<CredentialLabels>) {
        let mut known = self.known.lock().expect("metrics lock");
        for missing in known.difference(&seen) {
            self.credential_healthy
                .with_label_values(&missing.values())
                .set(0);
        }
        known.extend(seen);
    }
}

fn kind_name(t: prometheus::proto::MetricType) -> &'static str {
    use prometheus::proto::MetricType;
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub struct PassTimer<'a> {
    metrics: &'a Metrics,
    mode: &'static str,
    started: Instant,
}

impl Drop for PassTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .pass_duration
            .with_label_values(&[self.mode])
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.pass_in_progress.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_credentials_lose_their_series() {
        let m = Metrics::new();
        let a = CredentialLabels {
            workspace: "g-0123456789".into(),
            service_account: "a".into(),
            kind: "token",
        };
        let b = CredentialLabels {
            service_account: "b".into(),
            ..a.clone()
        };
        m.set_expiry(&a, chrono::Utc::now());
        m.set_expiry(&b, chrono::Utc::now());
        m.retain_credentials([a.clone(), b.clone()].into());
        m.retain_credentials([a.clone()].into());
        let text = m.render();
        assert!(text.contains("service_account=\"a\""));
        assert!(!text.contains("service_account=\"b\""), "{text}");
        assert!(text.contains("amg_rotator_build_info"));

        // A pass whose discovery failed does not see `a`: it stays, unhealthy.
        m.set_healthy(&a, true);
        m.keep_unseen_unhealthy(BTreeSet::new());
        let text = m.render();
        assert!(
            text.contains("amg_rotator_credential_healthy{kind=\"token\",service_account=\"a\",workspace=\"g-0123456789\"} 0"),
            "{text}"
        );
        assert!(text.contains("amg_rotator_credential_expiry_timestamp_seconds{kind=\"token\",service_account=\"a\""), "{text}");
    }

    #[test]
    fn idle_families_are_named_with_help_and_type() {
        let m = Metrics::new();
        let text = m.render();
        for info in m.catalog() {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", info.name, info.kind)),
                "{} missing from\n{text}",
                info.name
            );
            assert_eq!(
                text.matches(&format!("# HELP {} ", info.name)).count(),
                1,
                "{}",
                info.name
            );
        }
        let rotations = m
            .catalog()
            .iter()
            .find(|i| i.name == "amg_rotator_rotations_total")
            .unwrap();
        assert_eq!(rotations.kind, "counter");
        assert_eq!(
            rotations.labels,
            ["workspace", "service_account", "kind", "outcome", "reason"]
        );
    }
}
