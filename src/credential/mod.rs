//! One managed credential's road: observe what AWS reports, plan purely, perform, report.
//!
//! `reconcile` is the unit of work: the same for every kind. What a kind does its own way is
//! its `KindOps` (`token`, `api_key`): how it reads and decides, mints, names and deletes, and
//! renders the secret's value. `plan` holds what every plan is made of; `execute` performs any
//! plan; `records` are what the rotator writes on the secret itself (tags). A new kind is one
//! module implementing `KindOps` and one arm of `CredentialKind`.

pub mod api_key;
pub mod audit;
pub mod census;
pub mod execute;
pub mod plan;
pub mod records;
pub mod retire;
pub mod token;

#[cfg(test)]
mod scenarios;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::ApiError;
use crate::config::Policy;
use crate::daemon::metrics::{CredentialLabels, Label, Stage, StepOutcome};
use crate::model::{Role, SecretSpec, ServiceAccount, Workspace};
use execute::{Decided, KindOps, Services};
use plan::{Blocker, CredRef, Plan};

/// What discovery found of a credential's service account.
#[derive(Debug, Clone)]
pub enum AccountView {
    /// Listed: this account, or `None` (it does not exist, or the kind has none).
    Listed(Option<ServiceAccount>),
    /// Not listed: the workspace's accounts are listed on demand, once per pass, when the
    /// credential's audit record does not stand for its account (`audit.rs`).
    Deferred(std::sync::Arc<crate::discover::Deferred>),
    /// Matched by a pattern in a listing an earlier pass made (`discover::remembered`): it
    /// stands with the audit record; otherwise the workspace is listed afresh, on demand, and
    /// an account no longer there is no longer the target's.
    Remembered(ServiceAccount, std::sync::Arc<crate::discover::Deferred>),
}

/// What a credential rotates: the kinds, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service account's tokens; a missing account is created with `bootstrap` when set.
    Token { bootstrap: Option<Role> },
    /// A legacy API key of this role (Grafana 9 and 10); the credential's name is the key's
    /// base name.
    ApiKey { role: Role },
}

impl CredentialKind {
    /// The part of the road this kind walks its own way.
    pub fn ops(&self) -> &'static dyn KindOps {
        match self {
            CredentialKind::Token { .. } => &token::Tokens,
            CredentialKind::ApiKey { .. } => &api_key::ApiKeys,
        }
    }

    /// The `kind` label of metrics and reports.
    pub fn label(&self) -> &'static str {
        match self {
            CredentialKind::Token { .. } => "token",
            CredentialKind::ApiKey { .. } => "api_key",
        }
    }
}

/// One managed credential: a service account (or legacy API key) in a workspace, bound to a
/// secret.
#[derive(Debug, Clone)]
pub struct Credential {
    pub target: String,
    pub kind: CredentialKind,
    /// Shared by the workspace's credentials.
    pub workspace: std::sync::Arc<Workspace>,
    /// The service account's name, or the API key's base name.
    pub service_account: String,
    pub secret: SecretSpec,
    /// The target's: one copy shared by all its credentials.
    pub policy: std::sync::Arc<Policy>,
    /// The API key (its base name) whose secret this token credential took over when the
    /// workspace moved to Grafana 12 or later (`discover::migration_of`).
    pub migrated_from: Option<String>,
    /// An API key's: the service account it becomes when its workspace moves to Grafana 12
    /// (`None`: the target opted out), which `plan` announces on 9 and 10.
    pub migrates_to: Option<String>,
}

impl Credential {
    pub fn labels(&self) -> CredentialLabels {
        CredentialLabels {
            workspace: self.workspace.id.clone(),
            service_account: self.service_account.clone(),
            kind: self.kind.label(),
        }
    }

    /// Where a new key is proven: the override template, or the workspace's own Grafana.
    pub fn verify_url(&self) -> String {
        match &self.policy.grafana_url {
            Some(t) => crate::config::render_template(
                t,
                &[
                    ("workspace_id", &self.workspace.id),
                    ("workspace_name", &self.workspace.name),
                    ("service_account", &self.service_account),
                    ("key_name", &self.service_account),
                ],
            ),
            None => self.workspace.grafana_url(),
        }
    }
}

/// Why an action failed. Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{step}: {source}")]
    Api {
        step: &'static str,
        #[source]
        source: ApiError,
    },
    #[error("verification of the new key failed ({0}); nothing was published, AWSCURRENT left as it was")]
    Verification(String),
    #[error("the pending version holds no readable key")]
    UnreadablePending,
    #[error("no free name after {0} attempts")]
    NoFreeName(u32),
    #[error("{0}")]
    Postponed(String),
    #[error("service-account bootstrap: {0}")]
    Bootstrap(String),
    #[error("the service account does not exist")]
    NoServiceAccount,
    /// A service account a pattern matched in a remembered listing is not in the fresh one:
    /// deleted (or renamed) since. Not a failure: it is no longer selected.
    #[error("the service account no longer exists: it is no longer selected")]
    AccountGone,
    /// Another rotator is doing this credential's rotation right now: not a failure, the rest
    /// of this plan was made against a world that has changed, so it stops.
    #[error("{0}")]
    Yielded(String),
}

impl StepError {
    pub fn api(step: &'static str) -> impl FnOnce(ApiError) -> StepError {
        move |source| StepError::Api { step, source }
    }

    /// How a step that failed with this error counts: yielded to another rotator, or failed.
    pub fn outcome(&self) -> StepOutcome {
        match self {
            StepError::Yielded(_) => StepOutcome::Yielded,
            _ => StepOutcome::Failure,
        }
    }
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each action done, described for people.
    pub done: Vec<String>,
    pub error: Option<StepError>,
    /// What AWSCURRENT references afterwards, when known.
    pub current: Option<CredRef>,
    /// The plan stopped because another rotator was doing the same work.
    pub yielded: bool,
    /// When this pass promoted a version, as recorded on the secret.
    pub promoted: Option<DateTime<Utc>>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.done.is_empty() {
            write!(f, "nothing to do")?;
        } else {
            write!(f, "{}", self.done.join("; "))?;
        }
        if let Some(e) = &self.error {
            write!(f, "; FAILED: {e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Change things.
    Apply,
    /// Decide only: read, plan, report.
    Plan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Valid and not due; nothing was needed.
    Ok,
    /// Changes were made (or, in plan mode, would be) and all went well.
    Changed,
    /// Plan mode: changes would be made.
    Pending,
    /// Reported, not acted on (missing or disabled service account, foreign secret…).
    Blocked,
    Failed,
    /// Not started because the process is shutting down.
    Skipped,
}

/// The result of one credential in one pass, for people (`once`, `plan`) and machines (JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialReport {
    pub target: String,
    /// `token` or `api_key`.
    pub kind: &'static str,
    pub workspace_id: String,
    pub service_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// Boxed: a report is held for every credential until the pass ends, most of them while
    /// their turn has not come and they have no plan yet. A performed plan keeps no actions:
    /// `done` says what was performed of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<Plan>>,
    pub done: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The expiry of what AWSCURRENT references after the pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl CredentialReport {
    /// A report for `kind` in `workspace_id`, not yet examined (status Failed until it is).
    pub fn new(target: &str, kind: CredentialKind, workspace_id: &str, name: &str) -> Self {
        CredentialReport {
            target: target.to_owned(),
            kind: kind.label(),
            workspace_id: workspace_id.to_owned(),
            service_account: name.to_owned(),
            secret_name: None,
            status: Status::Failed,
            summary: String::new(),
            plan: None,
            done: Vec::new(),
            error: None,
            expires_at: None,
        }
    }

    pub fn labels(&self) -> CredentialLabels {
        CredentialLabels {
            workspace: self.workspace_id.clone(),
            service_account: self.service_account.clone(),
            kind: self.kind,
        }
    }
}

/// Observes, plans and (in apply mode) performs one credential: the unit of work of a pass.
/// `account` is what discovery found of the service account (tokens), or why it could not
/// look.
pub async fn reconcile(
    services: Services<'_>,
    cred: &Credential,
    account: Result<AccountView, String>,
    report: CredentialReport,
    mode: Mode,
) -> CredentialReport {
    let labels = cred.labels();
    let account = match account {
        Ok(a) => a,
        Err(e) => return failed(services, report, &labels, Stage::Discover, e),
    };
    // The pass reads the clock; the planners are handed the time.
    let now = Utc::now();
    let decided = match cred
        .kind
        .ops()
        .decide(services, cred, account, now, mode == Mode::Plan)
        .await
    {
        Ok(d) => d,
        Err(StepError::AccountGone) => {
            tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, "the service account is gone since its workspace was last listed; no longer selected");
            return CredentialReport {
                status: Status::Skipped,
                summary: format!("skipped: {}", StepError::AccountGone),
                ..report
            };
        }
        Err(e) => return failed(services, report, &labels, Stage::Discover, e.to_string()),
    };
    observe(services, cred, &decided, mode);
    let mut report = report;
    let plan = &decided.plan;
    report.expires_at = plan.current.as_ref().and_then(|c| c.expires_at);
    if let Some(blocker) = &plan.blocked {
        let mut report = blocked(services, report, &labels, blocker, mode);
        report.plan = Some(decided.plan.kept());
        return report;
    }
    let decided_text: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        workspace = %cred.workspace.id,
        service_account = %cred.service_account,
        kind = labels.kind,
        secret = %cred.secret.name,
        current = plan.current.as_ref().map(|t| t.name.as_str()).unwrap_or("-"),
        due_at = plan.due_at.map(crate::model::rfc3339).unwrap_or_default(),
        observed = decided.observed.map(|o| o.label()).unwrap_or("-"),
        actions = %if decided_text.is_empty() { "none".to_owned() } else { decided_text.join("; ") },
        "decided"
    );
    if mode == Mode::Plan {
        report.status = if plan.actions.is_empty() {
            Status::Ok
        } else {
            Status::Pending
        };
        report.summary = summary_line(&decided_text, plan.current.as_ref(), "would");
        report.plan = Some(decided.plan.kept());
        return report;
    }
    if let Some(record) = &decided.record {
        write_record(services, cred, record).await;
    }
    let mut outcome = execute::execute(
        services,
        cred,
        decided.account.as_ref(),
        decided.secret.as_ref(),
        plan,
        now,
    )
    .await;
    if outcome.yielded {
        // The world moved under the plan: what AWSCURRENT references now is the other
        // rotator's work, read again (reads only).
        if let Ok(again) = cred
            .kind
            .ops()
            .decide(
                services,
                cred,
                AccountView::Listed(decided.account.clone()),
                Utc::now(),
                true,
            )
            .await
        {
            outcome.current = again.plan.current;
        }
    }
    performed(services, cred, decided, outcome, report, now)
}

/// Writes the record of a clean audit on the secret. A failure costs only economy: the next
/// pass lists the tokens again.
async fn write_record(services: Services<'_>, cred: &Credential, record: &records::Audit) {
    let Some(value) = record.tag_value() else {
        tracing::debug!(secret = %cred.secret.name, token_name = %record.token_name, "the token's name does not fit a tag value: this credential's tokens are listed on every pass");
        return;
    };
    match services
        .secrets
        .tag(&cred.secret.name, records::AUDIT_TAG, &value)
        .await
    {
        Ok(()) => {
            tracing::debug!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, next_audit = %crate::model::rfc3339(record.next), "audit recorded")
        }
        Err(e) => {
            tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, error = %e, "could not record the audit on the secret; the next pass lists the tokens again")
        }
    }
}

/// The metrics and logs of what was observed: tokens by state, role drift, left-behind tokens.
fn observe(services: Services<'_>, cred: &Credential, d: &Decided, mode: Mode) {
    let labels = cred.labels();
    let (ws, name) = (&cred.workspace.id, &cred.service_account);
    let apply = mode == Mode::Apply;
    if let (Some(by_state), true) = (d.tokens, apply) {
        services.metrics.set_tokens(&labels, by_state);
    }
    if let (Some(how), true) = (d.observed, apply) {
        services.metrics.observed(how);
    }
    if let CredentialKind::Token {
        bootstrap: Some(declared),
    } = cred.kind
    {
        if let Some(actual) = d.account.as_ref().and_then(|a| a.role) {
            let drifted = d.plan.role_drift.is_some();
            if drifted {
                tracing::warn!(workspace = %ws, service_account = %name, declared = %declared, actual = %actual, "service account role differs from the declared one; AMG cannot change it: recreate the service account to fix it");
            }
            if apply {
                services.metrics.set_role_drift(
                    &labels,
                    declared.as_str(),
                    actual.as_str(),
                    drifted,
                );
            }
        }
    }
    for lb in &d.plan.left_behind {
        tracing::warn!(workspace = %ws, service_account = %name, secret = %cred.secret.name, token_name = %lb.token.name, left_behind_for = lb.secret.as_deref().unwrap_or("-"), detail = %lb, "token left behind by another secret");
    }
    let tokens = matches!(cred.kind, CredentialKind::Token { .. });
    if apply && tokens {
        services
            .metrics
            .set_left_behind(&labels, d.plan.left_behind.len());
    }
    if apply {
        let held = d.plan.superseded.iter().filter(|s| !s.delete);
        let last_used = held.clone().filter_map(|s| s.last_used_at).max();
        services.metrics.set_retirement(
            &labels,
            &cred.secret.name,
            d.plan.promoted.map(|p| p.at),
            tokens.then(|| held.count()),
            last_used,
        );
    }
    for s in &d.plan.superseded {
        if s.delete {
            tracing::info!(workspace = %ws, service_account = %name, secret = %s.secret, token_name = %s.token.name, rule = ?s.rule, detail = %s.detail, "retiring superseded token");
        } else if s.lagging() {
            tracing::info!(workspace = %ws, service_account = %name, secret = %s.secret, token_name = %s.token.name, detail = %s.detail, "consumers still use the superseded token");
        }
    }
    no_promotion_record_once(&cred.secret.name, &d.plan);
    for note in &d.plan.notes {
        tracing::debug!(workspace = %ws, service_account = %name, note = %note, "waiting");
    }
}

/// Says once per process and secret that its superseded credential is retired by the secret's
/// LastChangedDate, for want of the rotator's own record (secrets a version before records
/// promoted): the next promotion records itself.
fn no_promotion_record_once(secret: &str, plan: &Plan) {
    let Some(last_changed) = plan
        .promoted
        .filter(|p| !p.recorded && !plan.superseded.is_empty())
        .map(|p| p.at)
    else {
        return;
    };
    static SAID: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = SAID
        .lock()
        .map(|mut said| said.insert(secret.to_owned()))
        .unwrap_or(false);
    if first {
        tracing::info!(secret, last_changed = %crate::model::rfc3339(last_changed), "no promotion record on the secret (promoted by an earlier version of the rotator): its superseded credential's grace counts from the secret's LastChangedDate until the next promotion records itself");
    }
}

/// The report, metrics and health of a performed plan.
fn performed(
    services: Services<'_>,
    cred: &Credential,
    decided: Decided,
    outcome: Outcome,
    mut report: CredentialReport,
    now: DateTime<Utc>,
) -> CredentialReport {
    let labels = cred.labels();
    let plan = &decided.plan;
    report.done = outcome.done.clone();
    report.expires_at = outcome.current.as_ref().and_then(|c| c.expires_at);
    if let Some(e) = report.expires_at {
        services.metrics.set_expiry(&labels, e);
    }
    if let Some(at) = outcome.promoted {
        services
            .metrics
            .set_promotion(&labels, &cred.secret.name, at);
    }
    // An unknown expiry (AMG reports none) is as healthy as the plan's assumption.
    let rotate_before = plan::std_to_chrono(cred.policy.rotate_before);
    let healthy_after = outcome
        .current
        .as_ref()
        .is_some_and(|c| match c.expires_at {
            Some(e) => e - rotate_before > now,
            None => plan.due_at.is_some_and(|d| d > now),
        });
    match &outcome.error {
        Some(e) => {
            report.status = Status::Failed;
            report.error = Some(e.to_string());
            report.summary = outcome.to_string();
            let stage = if plan.actions.iter().any(|a| a.is_rotation()) {
                Stage::Rotate
            } else {
                Stage::Cleanup
            };
            services.metrics.credential_failure(&labels, stage);
        }
        None => {
            // A yield alone changed nothing here.
            let changed = outcome.done.len() > usize::from(outcome.yielded);
            report.status = if changed { Status::Changed } else { Status::Ok };
            report.summary = summary_line(&outcome.done, outcome.current.as_ref(), "did");
        }
    }
    services
        .metrics
        .set_healthy(&labels, outcome.error.is_none() && healthy_after);
    // What was performed of the actions is `done`; the rest of the plan is what the summary
    // reads (left-behind and superseded tokens, a migration).
    let mut plan = decided.plan;
    plan.actions = Vec::new();
    report.plan = Some(plan.kept());
    report
}

/// A credential reported, not acted on: one warning, and (applying) unhealthy.
pub fn blocked(
    services: Services<'_>,
    mut report: CredentialReport,
    labels: &CredentialLabels,
    blocker: &Blocker,
    mode: Mode,
) -> CredentialReport {
    tracing::warn!(workspace = %labels.workspace, service_account = %labels.service_account, kind = labels.kind, problem = %blocker, "credential blocked");
    if mode == Mode::Apply {
        services.metrics.credential_failure(labels, Stage::Plan);
        services.metrics.set_healthy(labels, false);
    }
    report.status = Status::Blocked;
    report.summary = format!("blocked: {blocker}");
    report.error = Some(blocker.to_string());
    report
}

fn failed(
    services: Services<'_>,
    mut report: CredentialReport,
    labels: &CredentialLabels,
    stage: Stage,
    error: String,
) -> CredentialReport {
    tracing::error!(workspace = %labels.workspace, service_account = %labels.service_account, error = %error, "credential failed");
    services.metrics.credential_failure(labels, stage);
    services.metrics.set_healthy(labels, false);
    report.status = Status::Failed;
    report.summary = format!("FAILED: {error}");
    report.error = Some(error);
    report
}

fn summary_line(actions: &[String], current: Option<&CredRef>, verb: &str) -> String {
    let what = if actions.is_empty() {
        "healthy".to_owned()
    } else if verb == "would" {
        format!("would {}", actions.join("; "))
    } else {
        actions.join("; ")
    };
    match current {
        Some(c) if actions.is_empty() || verb == "did" => {
            let name = if c.name.is_empty() {
                String::new()
            } else {
                format!(" {}", c.name)
            };
            format!(
                "{what}; current{name} expires {}",
                plan::expiry_text(c.expires_at)
            )
        }
        _ => what,
    }
}
