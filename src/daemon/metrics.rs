//! The one `Metrics` struct: it owns the Prometheus registry and records through small methods.
//!
//! Built once, shared by `Arc`. Every label value is bounded by the number of managed
//! credentials (workspace ID and service-account name) or by a fixed set (outcome, reason,
//! service, operation). A key never becomes a label or a value.
//!
//! The families are a table, one `Family` row each (name, labels, help; its collector type is
//! its kind), which `Metrics::new` registers in catalog order. The README's metrics table and
//! the tests that compare it with a scrape depend on every row: change one only with both.
//!
//! The series of each credential live in one small struct per credential (`store`), rendered
//! when scraped, so a fleet's metrics cost a few hundred bytes a credential rather than the
//! `prometheus` crate's 600 bytes a series; the families of a bounded set of series (passes,
//! AWS calls, permissions) are the crate's own collectors.

mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use store::{Count, Read, Shared, Stored};

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

/// One credential's gauges, read back from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialValues {
    pub workspace: String,
    pub service_account: String,
    pub kind: String,
    /// `amg_rotator_credential_expiry_timestamp_seconds`, when set.
    pub expires_at: Option<i64>,
    /// `amg_rotator_credential_healthy`, when set.
    pub healthy: Option<bool>,
}

/// One registered metric family, as the README documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

/// The families of the table below, in catalog order (and `build_info`, which only `new` sets).
pub struct Metrics {
    registry: Registry,
    /// The series of every credential: expiry, health, rotations, deletions, tokens, left
    /// behind, superseded, their last use, promotion, failures.
    store: Shared,
    pass_duration: HistogramVec,
    passes: IntCounterVec,
    last_success: Gauge,
    last_pass_end: Gauge,
    pass_in_progress: IntGauge,
    passes_delayed: IntCounter,
    aws_calls: IntCounterVec,
    aws_latency: HistogramVec,
    observations: IntCounterVec,
    role_drift: IntGaugeVec,
    bootstraps: IntCounterVec,
    permissions: IntGaugeVec,
    permission_drift: IntGaugeVec,
    permission_updates: IntCounterVec,
    rate_limit: GaugeVec,
    shard_held: IntGaugeVec,
    shards: IntGauge,
    members: IntGauge,
    handovers: IntCounterVec,
    lease_round_failures: IntCounter,
    /// The (declared, actual) roles of each (workspace, service account) whose drift is
    /// exported, so the series goes when the drift ends however it ends (the account
    /// recreated, or the declared role changed to match).
    drifting: Mutex<BTreeMap<(String, String), (String, String)>>,
    /// Every registered family, in registration order.
    catalog: Vec<MetricInfo>,
}

/// A metric label value: every label of a bounded set is an enum (or an error) that names its
/// own value, so no call site spells one.
pub trait Label {
    fn label(&self) -> &'static str;
}

/// How a step ended, for `rotations_total` and `token_deletions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Success,
    Failure,
    /// Another rotator was doing it (rotations only).
    Yielded,
}

impl Label for StepOutcome {
    fn label(&self) -> &'static str {
        match self {
            StepOutcome::Success => "success",
            StepOutcome::Failure => "failure",
            StepOutcome::Yielded => "yielded",
        }
    }
}

/// How a pass observed a token credential, for `token_credential_observations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Its tokens were listed.
    Listing,
    /// The record of its last clean audit stood for them.
    Record,
}

impl Label for Observation {
    fn label(&self) -> &'static str {
        match self {
            Observation::Listing => "listing",
            Observation::Record => "record",
        }
    }
}

/// Where a credential failed, for `credential_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Its workspace, service account, tokens or secret could not be read.
    Discover,
    /// Blocked: reported, not acted on.
    Plan,
    /// The rotation itself failed.
    Rotate,
    /// A deletion or a tidy step failed, the credential is valid.
    Cleanup,
    /// Its claim or its secret name's template failed.
    Config,
}

impl Label for Stage {
    fn label(&self) -> &'static str {
        match self {
            Stage::Discover => "discover",
            Stage::Plan => "plan",
            Stage::Rotate => "rotate",
            Stage::Cleanup => "cleanup",
            Stage::Config => "config",
        }
    }
}

/// How a pass went, for `passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// Every credential fine.
    Success,
    /// Some failed.
    Partial,
    /// None could be examined.
    Failure,
}

impl Label for PassOutcome {
    fn label(&self) -> &'static str {
        match self {
            PassOutcome::Success => "success",
            PassOutcome::Partial => "partial",
            PassOutcome::Failure => "failure",
        }
    }
}

/// Whether a pass changes things, for `pass_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassMode {
    Apply,
    Plan,
}

impl Label for PassMode {
    fn label(&self) -> &'static str {
        match self {
            PassMode::Apply => "apply",
            PassMode::Plan => "plan",
        }
    }
}

/// What became of permission changes sent, for `permission_updates_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionOutcome {
    Applied,
    Refused,
    Failed,
}

impl Label for PermissionOutcome {
    fn label(&self) -> &'static str {
        match self {
            PermissionOutcome::Applied => "applied",
            PermissionOutcome::Refused => "refused",
            PermissionOutcome::Failed => "failed",
        }
    }
}

/// `success`: the label of a call or step that went well, beside the errors' own labels.
pub struct Succeeded;

impl Label for Succeeded {
    fn label(&self) -> &'static str {
        "success"
    }
}

/// The `state` label values of `service_account_tokens`, in `set_tokens` order.
const TOKEN_STATES: [&str; 3] = ["active", "expired", "no_expiry"];

const NAMESPACE: &str = "amg_rotator";

/// One row of the families' table: what a scrape and the README show of a family. `C`, the
/// collector, is its kind: `IntCounterVec`, `IntCounter` and `StoredCounter` are counters,
/// `HistogramVec` a histogram, the others gauges.
struct Family<C> {
    /// Without the `amg_rotator_` namespace.
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    /// A histogram's bucket bounds; empty for the other kinds.
    buckets: &'static [f64],
    collector: PhantomData<fn() -> C>,
}

impl<C> Family<C> {
    const fn new(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        Family {
            name,
            labels,
            help,
            buckets: &[],
            collector: PhantomData,
        }
    }

    const fn buckets(self, buckets: &'static [f64]) -> Self {
        Family { buckets, ..self }
    }

    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help).namespace(NAMESPACE)
    }

    /// The options of a family without labels, which its collector type cannot take.
    fn unlabelled(&self) -> Opts {
        assert!(self.labels.is_empty(), "{} takes no labels", self.name);
        self.opts()
    }
}

// The table, in catalog order. A new family is a row here, a field of `Metrics`, its line in
// `Metrics::new`, and a row in the README.

const EXPIRY: Family<StoredGauge> = Family::new(
    "credential_expiry_timestamp_seconds",
    &CREDENTIAL,
    "Unix time at which the token or key behind the credential's AWSCURRENT secret version expires.",
);
const CREDENTIAL_HEALTHY: Family<StoredGauge> = Family::new(
    "credential_healthy",
    &CREDENTIAL,
    "1 when the last pass left the credential valid and not due, 0 when it failed or needs attention.",
);
const ROTATIONS: Family<StoredCounter> = Family::new(
    "rotations_total",
    &["workspace", "service_account", "kind", "outcome", "reason"],
    "Rotations attempted, by outcome (success, failure, yielded: another rotator was doing it) and reason (first_run, due, expired, missing_token, resumed, recreate).",
);
const DELETIONS: Family<StoredCounter> = Family::new(
    "token_deletions_total",
    &["workspace", "service_account", "kind", "reason", "outcome"],
    "Tokens or keys deleted, by reason (superseded, orphan, expired_owned, expired_foreign, recreate, rollback) and outcome.",
);
const TOKENS: Family<StoredGauge> = Family::new(
    "service_account_tokens",
    &["workspace", "service_account", "state"],
    "Tokens a managed service account holds, by state (active, expired, no_expiry); expired ones still count against AMG's quota, and no_expiry ones (made in Grafana's UI) are never taken for expired.",
);
const LEFT_BEHIND: Family<StoredGauge> = Family::new(
    "left_behind_tokens",
    &CREDENTIAL,
    "Live tokens the rotator minted for another secret (secret_name, a workspace or service-account name, the region or the role changed) that this credential's service account still holds; kept until they expire. Retire the old secret, then delete them.",
);
const SUPERSEDED: Family<StoredGauge> = Family::new(
    "superseded_tokens",
    &CREDENTIAL,
    "Superseded tokens the service account still holds after the pass: kept while the grace period runs or their consumers still use them (AMG's lastUsedAt), at most max_overlap after the promotion.",
);
const SUPERSEDED_LAST_USED: Family<StoredGauge> = Family::new(
    "superseded_token_last_used_timestamp_seconds",
    &["workspace", "service_account", "kind", "secret"],
    "Unix time at which a superseded token still held was last used (AMG's lastUsedAt; the latest of them). Later than the promotion: consumers still use the old token and should re-read the secret.",
);
const PROMOTION: Family<StoredGauge> = Family::new(
    "credential_promotion_timestamp_seconds",
    &["workspace", "service_account", "kind", "secret"],
    "Unix time at which the version AWSCURRENT holds was promoted: the rotator's record on the secret, else the secret's LastChangedDate.",
);
const PASS_DURATION: Family<HistogramVec> = Family::new(
    "pass_duration_seconds",
    &["mode"],
    "Wall time of one reconciliation pass.",
)
.buckets(&[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
]);
const PASSES: Family<IntCounterVec> = Family::new(
    "passes_total",
    &["outcome"],
    "Passes finished, by outcome (success: every credential fine; partial: some failed; failure: none could be examined).",
);
const LAST_SUCCESS: Family<Gauge> = Family::new(
    "last_success_timestamp_seconds",
    &[],
    "Unix time at which the last pass in which every credential succeeded ended.",
);
const LAST_PASS_END: Family<Gauge> = Family::new(
    "last_pass_timestamp_seconds",
    &[],
    "Unix time at which the last pass ended, whatever its outcome.",
);
const PASS_IN_PROGRESS: Family<IntGauge> =
    Family::new("pass_in_progress", &[], "1 while a pass is running.");
const PASSES_DELAYED: Family<IntCounter> = Family::new(
    "passes_delayed_total",
    &[],
    "Scheduled passes that started late or were skipped because the previous pass was still running.",
);
const AWS_CALLS: Family<IntCounterVec> = Family::new(
    "aws_calls_total",
    &["service", "operation", "outcome"],
    "Calls to AWS, by service, operation and outcome (success, throttled, unavailable, not_found, conflict, ...).",
);
const AWS_LATENCY: Family<HistogramVec> = Family::new(
    "aws_call_duration_seconds",
    &["service", "operation"],
    "Latency of one call to AWS, one attempt.",
)
.buckets(&[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
const OBSERVATIONS: Family<IntCounterVec> = Family::new(
    "token_credential_observations_total",
    &["source"],
    "Token credentials observed by passes, by source: listing (their tokens listed: an audit, something due, no standing record) or record (the record of the last clean audit stood for them).",
);
const CREDENTIAL_FAILURES: Family<StoredCounter> = Family::new(
    "credential_failures_total",
    &["workspace", "service_account", "kind", "stage"],
    "Passes in which a credential could not be brought to a valid state, by stage (discover, plan, rotate, cleanup, config).",
);
const ROLE_DRIFT: Family<IntGaugeVec> = Family::new(
    "service_account_role_drift",
    &["workspace", "service_account", "declared", "actual"],
    "1 when a managed service account's Grafana role differs from the declared one (AMG cannot change it; recreate the account).",
);
const BOOTSTRAPS: Family<IntCounterVec> = Family::new(
    "service_account_bootstraps_total",
    &["workspace", "service_account", "outcome"],
    "Missing service accounts created, by outcome (success, conflict, quota_exceeded, ...).",
);
const PERMISSIONS: Family<IntGaugeVec> = Family::new(
    "workspace_permissions",
    &["workspace", "role", "type"],
    "Users and groups holding each Grafana role in a managed workspace, by role and principal type.",
);
const PERMISSION_DRIFT: Family<IntGaugeVec> = Family::new(
    "workspace_permission_drift",
    &["workspace", "change"],
    "Bindings that differ from the declared ones, by change (add, revoke).",
);
const PERMISSION_UPDATES: Family<IntCounterVec> = Family::new(
    "permission_updates_total",
    &["workspace", "outcome"],
    "Permission changes sent with UpdatePermissions, by outcome (applied, refused, failed).",
);
const RATE_LIMIT: Family<GaugeVec> = Family::new(
    "aws_rate_limit_requests_per_second",
    &["service", "account", "region"],
    "The client-side request rate the rotator currently allows itself, per service, account (default: its own credentials') and region; lowered after throttling.",
);
const SHARD_HELD: Family<IntGaugeVec> = Family::new(
    "coordination_shard_held",
    &["shard"],
    "1 for each shard (region/workspace) this replica holds the lease of ([coordination]); a shard it does not hold has no series here.",
);
const SHARDS: Family<IntGauge> = Family::new(
    "coordination_shards",
    &[],
    "Shards (workspaces) of the work, as this replica's last pass discovered them.",
);
const MEMBERS: Family<IntGauge> = Family::new(
    "coordination_members",
    &[],
    "Replicas alive as this one sees them in the lease table, itself included.",
);
const HANDOVERS: Family<IntCounterVec> = Family::new(
    "coordination_handovers_total",
    &["change"],
    "Shards this replica took (taken) or stopped holding (given_up: handed back, released, or lost when it could not renew).",
);
const LEASE_ROUND_FAILURES: Family<IntCounter> = Family::new(
    "coordination_round_failures_total",
    &[],
    "Rounds against the lease table that failed to read it: what is held runs out a lease duration after the last good one.",
);
const BUILD_INFO: Family<IntGaugeVec> = Family::new(
    "build_info",
    &["version"],
    "Always 1; the labels name the running build.",
);

/// The kinds of the families whose series live in the store.
struct StoredGauge;
struct StoredCounter;

trait StoredKind {
    const KIND: MetricType;
}

impl StoredKind for StoredGauge {
    const KIND: MetricType = MetricType::GAUGE;
}

impl StoredKind for StoredCounter {
    const KIND: MetricType = MetricType::COUNTER;
}

/// A collector made from its row: the small helper of each kind.
trait FromFamily: Collector + Clone + Sized + 'static {
    fn from_family(family: &Family<Self>) -> prometheus::Result<Self>;
}

impl FromFamily for IntCounterVec {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        IntCounterVec::new(f.opts(), f.labels)
    }
}

impl FromFamily for IntCounter {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        IntCounter::with_opts(f.unlabelled())
    }
}

impl FromFamily for GaugeVec {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        GaugeVec::new(f.opts(), f.labels)
    }
}

impl FromFamily for Gauge {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        Gauge::with_opts(f.unlabelled())
    }
}

impl FromFamily for IntGaugeVec {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        IntGaugeVec::new(f.opts(), f.labels)
    }
}

impl FromFamily for IntGauge {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        IntGauge::with_opts(f.unlabelled())
    }
}

impl FromFamily for HistogramVec {
    fn from_family(f: &Family<Self>) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(f.name, f.help)
            .namespace(NAMESPACE)
            .buckets(f.buckets.to_vec());
        HistogramVec::new(opts, f.labels)
    }
}

/// Registers families in the order it is given them, and writes each into the catalog.
struct Registrar {
    registry: Registry,
    catalog: Vec<MetricInfo>,
}

impl Registrar {
    fn add<C: FromFamily>(&mut self, family: &Family<C>) -> C {
        let collector = C::from_family(family).expect("every row makes a valid family");
        self.register(collector.clone());
        collector
    }

    /// A family whose series `read` takes from the store.
    fn stored<K: StoredKind>(&mut self, family: &Family<K>, store: &Shared, read: Read) {
        let labels = family.labels.iter().map(|l| l.to_string()).collect();
        let name = format!("{NAMESPACE}_{}", family.name);
        let desc = Desc::new(name, family.help.to_owned(), labels, Default::default())
            .expect("every row makes a valid family");
        self.register(Stored::new(desc, K::KIND, store, read));
    }

    fn register<C: Collector + 'static>(&mut self, collector: C) {
        for (desc, collected) in collector.desc().into_iter().zip(collector.collect()) {
            self.catalog.push(MetricInfo {
                name: desc.fq_name.clone(),
                kind: kind_name(collected.type_()),
                labels: desc.variable_labels.clone(),
                help: desc.help.clone(),
            });
        }
        self.registry
            .register(Box::new(collector))
            .expect("metric names are unique");
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registrar {
            registry: Registry::new(),
            catalog: Vec::new(),
        };
        // Registered in the order written: this order is the catalog's.
        let store = Shared::default();
        r.stored(&EXPIRY, &store, store::Store::expiry);
        r.stored(&CREDENTIAL_HEALTHY, &store, store::Store::healthy);
        r.stored(&ROTATIONS, &store, store::Store::rotations);
        r.stored(&DELETIONS, &store, store::Store::deletions);
        r.stored(&TOKENS, &store, store::Store::tokens);
        r.stored(&LEFT_BEHIND, &store, store::Store::left_behind);
        r.stored(&SUPERSEDED, &store, store::Store::superseded);
        r.stored(
            &SUPERSEDED_LAST_USED,
            &store,
            store::Store::superseded_last_used,
        );
        r.stored(&PROMOTION, &store, store::Store::promotion);
        let pass_duration = r.add(&PASS_DURATION);
        let passes = r.add(&PASSES);
        let last_success = r.add(&LAST_SUCCESS);
        let last_pass_end = r.add(&LAST_PASS_END);
        let pass_in_progress = r.add(&PASS_IN_PROGRESS);
        let passes_delayed = r.add(&PASSES_DELAYED);
        let aws_calls = r.add(&AWS_CALLS);
        let aws_latency = r.add(&AWS_LATENCY);
        r.stored(&CREDENTIAL_FAILURES, &store, store::Store::failures);
        let observations = r.add(&OBSERVATIONS);
        let role_drift = r.add(&ROLE_DRIFT);
        let bootstraps = r.add(&BOOTSTRAPS);
        let permissions = r.add(&PERMISSIONS);
        let permission_drift = r.add(&PERMISSION_DRIFT);
        let permission_updates = r.add(&PERMISSION_UPDATES);
        let rate_limit = r.add(&RATE_LIMIT);
        let shard_held = r.add(&SHARD_HELD);
        let shards = r.add(&SHARDS);
        let members = r.add(&MEMBERS);
        let handovers = r.add(&HANDOVERS);
        let lease_round_failures = r.add(&LEASE_ROUND_FAILURES);
        let mut metrics = Metrics {
            registry: r.registry.clone(),
            store,
            pass_duration,
            passes,
            last_success,
            last_pass_end,
            pass_in_progress,
            passes_delayed,
            aws_calls,
            aws_latency,
            observations,
            role_drift,
            bootstraps,
            permissions,
            permission_drift,
            permission_updates,
            rate_limit,
            shard_held,
            shards,
            members,
            handovers,
            lease_round_failures,
            drifting: Mutex::new(BTreeMap::new()),
            catalog: Vec::new(),
        };
        let build_info: IntGaugeVec = r.add(&BUILD_INFO);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.catalog = r.catalog;
        metrics
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

    /// Each credential's expiry gauge and health gauge as `/metrics` shows them, for the
    /// exporters that are not Prometheus (`export::emf`).
    pub fn credential_values(&self) -> Vec<CredentialValues> {
        self.store.lock().credential_values()
    }

    pub fn set_expiry(&self, c: &CredentialLabels, expires_at: chrono::DateTime<chrono::Utc>) {
        self.store.lock().series(c).expiry = Some(expires_at.timestamp());
    }

    pub fn set_healthy(&self, c: &CredentialLabels, healthy: bool) {
        self.store.lock().series(c).healthy = Some(healthy);
    }

    pub fn rotation(&self, c: &CredentialLabels, outcome: StepOutcome, reason: &dyn Label) {
        let which = Count::Rotation(outcome.label(), reason.label());
        self.store.lock().series(c).count(which);
    }

    pub fn deletion(&self, c: &CredentialLabels, reason: &dyn Label, outcome: StepOutcome) {
        let which = Count::Deletion(reason.label(), outcome.label());
        self.store.lock().series(c).count(which);
    }

    pub fn observed(&self, how: Observation) {
        self.observations.with_label_values(&[how.label()]).inc();
    }

    pub fn credential_failure(&self, c: &CredentialLabels, stage: Stage) {
        let which = Count::Failure(stage.label());
        self.store.lock().series(c).count(which);
    }

    /// Tokens of a token credential's service account by state: `active`, `expired`,
    /// `no_expiry` (AMG reports none).
    pub fn set_tokens(&self, c: &CredentialLabels, by_state: [usize; 3]) {
        let by_state = by_state.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        self.store.lock().series(c).tokens = Some(by_state);
    }

    /// What the retirement of a credential's superseded tokens looks like after a pass: when
    /// its current version was promoted, how many superseded tokens are held, and when they
    /// were last used (`None`: none held was ever used, or it is not a service account's).
    pub fn set_retirement(
        &self,
        c: &CredentialLabels,
        secret: &str,
        promoted: Option<chrono::DateTime<chrono::Utc>>,
        held: Option<usize>,
        last_used: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let mut store = self.store.lock();
        let series = store.series(c);
        series.set_secret(secret);
        series.set_promotion(promoted.map(|at| at.timestamp()));
        if let Some(n) = held {
            series.superseded = Some(n);
        }
        series.set_superseded_last_used(last_used.map(|at| at.timestamp()));
    }

    /// A promotion this pass made, as soon as it is made.
    pub fn set_promotion(
        &self,
        c: &CredentialLabels,
        secret: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let mut store = self.store.lock();
        let series = store.series(c);
        series.set_secret(secret);
        series.set_promotion(Some(at.timestamp()));
    }

    pub fn set_left_behind(&self, c: &CredentialLabels, n: usize) {
        self.store.lock().series(c).left_behind = Some(n);
    }

    /// Exports the drift of a service account's role while it lasts: one series per account,
    /// removed when the roles agree again.
    pub fn set_role_drift(
        &self,
        c: &CredentialLabels,
        declared: &str,
        actual: &str,
        drifted: bool,
    ) {
        let account = (c.workspace.clone(), c.service_account.clone());
        let mut drifting = self.drifting.lock().expect("metrics lock");
        let roles = (declared.to_owned(), actual.to_owned());
        if let Some(was) = drifting
            .get(&account)
            .filter(|was| !drifted || **was != roles)
        {
            let _ = self
                .role_drift
                .remove_label_values(&[&account.0, &account.1, &was.0, &was.1]);
            drifting.remove(&account);
        }
        if drifted {
            self.role_drift
                .with_label_values(&[&account.0, &account.1, declared, actual])
                .set(1);
            drifting.insert(account, roles);
        }
    }

    /// `outcome`: success, or the AWS error's label (conflict, quota_exceeded, …).
    pub fn bootstrap(&self, workspace: &str, service_account: &str, outcome: &dyn Label) {
        self.bootstraps
            .with_label_values(&[workspace, service_account, outcome.label()])
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

    pub fn permission_updates(&self, workspace: &str, outcome: PermissionOutcome, n: usize) {
        self.permission_updates
            .with_label_values(&[workspace, outcome.label()])
            .inc_by(n as u64);
    }

    pub fn set_rate_limit(&self, service: &str, account: &str, region: &str, per_second: f64) {
        self.rate_limit
            .with_label_values(&[service, account, region])
            .set(per_second);
    }

    /// Records one AWS call attempt.
    /// `outcome`: success, or the AWS error's label (throttled, unavailable, …).
    pub fn aws_call(&self, service: &str, operation: &str, outcome: &dyn Label, elapsed: Duration) {
        self.aws_calls
            .with_label_values(&[service, operation, outcome.label()])
            .inc();
        self.aws_latency
            .with_label_values(&[service, operation])
            .observe(elapsed.as_secs_f64());
    }

    /// A guard that marks a pass in progress and observes its duration when dropped.
    pub fn pass_timer(&self, mode: PassMode) -> PassTimer<'_> {
        self.pass_in_progress.set(1);
        PassTimer {
            metrics: self,
            mode,
            started: Instant::now(),
        }
    }

    pub fn pass_finished(&self, outcome: PassOutcome, now: chrono::DateTime<chrono::Utc>) {
        self.passes.with_label_values(&[outcome.label()]).inc();
        self.last_pass_end.set(now.timestamp() as f64);
        if outcome == PassOutcome::Success {
            self.last_success.set(now.timestamp() as f64);
        }
    }

    /// What a round against the lease table left: the shards held (gained and lost since the
    /// last round are counted as handovers), of how many, among how many members.
    pub fn set_coordination(
        &self,
        gained: &[&String],
        lost: &[&String],
        shards: usize,
        members: usize,
    ) {
        for shard in gained {
            self.shard_held.with_label_values(&[shard.as_str()]).set(1);
            self.handovers.with_label_values(&["taken"]).inc();
        }
        for shard in lost {
            let _ = self.shard_held.remove_label_values(&[shard.as_str()]);
            self.handovers.with_label_values(&["given_up"]).inc();
        }
        self.shards.set(i64::try_from(shards).unwrap_or(i64::MAX));
        self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
    }

    pub fn lease_round_failed(&self) {
        self.lease_round_failures.inc();
    }

    pub fn pass_delayed(&self) {
        self.passes_delayed.inc();
    }

    /// Forgets the per-credential series of credentials no longer managed (their counters
    /// stay, as counters do).
    pub fn retain_credentials(&self, current: BTreeSet<CredentialLabels>) {
        let gone = self.store.lock().retain(current);
        let mut drifting = self.drifting.lock().expect("metrics lock");
        for gone in gone {
            let account = (gone.workspace, gone.service_account);
            if let Some((declared, actual)) = drifting.remove(&account) {
                let _ = self
                    .role_drift
                    .remove_label_values(&[&account.0, &account.1, &declared, &actual]);
            }
        }
    }

    /// What a pass that could not discover everything (a workspace or a target failed) does
    /// instead of `retain_credentials`: credentials known from earlier passes and missing from
    /// this one may be behind that failure, so their series stay, marked unhealthy, rather than
    /// vanish from the alerts while an outage lasts.
    pub fn keep_unseen_unhealthy(&self, seen: BTreeSet<CredentialLabels>) {
        self.store.lock().keep_unseen_unhealthy(seen);
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
    mode: PassMode,
    started: Instant,
}

impl Drop for PassTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .pass_duration
            .with_label_values(&[self.mode.label()])
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
    fn a_credential_gone_keeps_its_counters_and_a_renamed_secret_moves_its_series() {
        let m = Metrics::new();
        let a = CredentialLabels {
            workspace: "g-0123456789".into(),
            service_account: "a".into(),
            kind: "token",
        };
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        m.rotation(&a, StepOutcome::Success, &Succeeded);
        m.rotation(&a, StepOutcome::Success, &Succeeded);
        m.set_tokens(&a, [2, 1, 0]);
        m.set_retirement(&a, "old", Some(at), Some(1), Some(at));
        m.retain_credentials([a.clone()].into());
        m.set_promotion(&a, "new", at);
        let text = m.render();
        assert!(text.contains("amg_rotator_credential_promotion_timestamp_seconds{kind=\"token\",secret=\"new\",service_account=\"a\",workspace=\"g-0123456789\"} 1700000000\n"), "{text}");
        assert!(!text.contains("secret=\"old\""), "{text}");
        assert!(text.contains("amg_rotator_service_account_tokens{service_account=\"a\",state=\"expired\",workspace=\"g-0123456789\"} 1\n"), "{text}");

        m.retain_credentials(BTreeSet::new());
        let text = m.render();
        let series: Vec<_> = text
            .lines()
            .filter(|l| l.contains("service_account=\"a\""))
            .collect();
        assert_eq!(
            series,
            ["amg_rotator_rotations_total{kind=\"token\",outcome=\"success\",reason=\"success\",service_account=\"a\",workspace=\"g-0123456789\"} 2"],
            "{text}"
        );
        assert!(text.contains("# TYPE amg_rotator_service_account_tokens gauge\n"));
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
