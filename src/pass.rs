//! One pass: discover what AWS reports, plan each credential, execute (unless planning only),
//! and record, with bounded concurrency.
//!
//! Discovery caches within the pass only (one describe or listing per workspace, one listing of
//! service accounts per workspace); nothing survives to the next pass, which rebuilds the world.
//! One credential's failure never stops the others. A shutdown signal stops new credentials from
//! starting; those in hand finish.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::aws::error::ApiError;
use crate::aws::verify::Verifier;
use crate::aws::{Connector, Services};
use crate::config::{render_template, secret_name_problem, Config, Target, WorkspaceSelector};
use crate::credential::api_key::{self as apikeys, KeyObserved};
use crate::credential::execute::{Credential, CredentialKind, Executor};
use crate::credential::plan::{self, Blocker, LeftBehind, Observed, Plan, TokenRef};
use crate::daemon::metrics::{CredentialLabels, Metrics};
use crate::model::{rfc3339, SecretSpec, ServiceAccount, Workspace};
use crate::permissions::PermissionReport;

/// A region and a role to assume (`None`: the defaults).
type Scope = (Option<String>, Option<String>);

/// Discovery's caches within one pass: workspace listings by scope; workspaces described and
/// service-account listings by region and workspace ID.
type Listings = HashMap<Scope, Result<Vec<Workspace>, ApiError>>;
type Described = HashMap<(Option<String>, String), Result<Workspace, ApiError>>;
type Accounts = HashMap<(Option<String>, String), Result<Vec<ServiceAccount>, ApiError>>;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// The plan of a legacy API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_plan: Option<apikeys::KeyPlan>,
    pub done: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The expiry of the token AWSCURRENT references after the pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub credentials: Vec<CredentialReport>,
    /// Problems that are not one credential's: a tag query that failed, a glob with no workspace.
    pub problems: Vec<String>,
    /// The permission audit of each managed workspace, when `[permissions]` asks for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<PermissionReport>,
}

impl PassReport {
    pub fn failed(&self) -> usize {
        self.credentials
            .iter()
            .filter(|c| matches!(c.status, Status::Failed | Status::Blocked))
            .count()
            + self.problems.len()
            + self
                .permissions
                .iter()
                .map(PermissionReport::problems)
                .sum::<usize>()
    }

    /// `success`, `partial` or `failure`, for the pass metrics.
    pub fn outcome(&self) -> &'static str {
        let failed = self.failed();
        if failed == 0 {
            "success"
        } else if failed >= self.credentials.len() + self.problems.len() {
            "failure"
        } else {
            "partial"
        }
    }
}

/// Everything a pass needs, built once by the caller.
pub struct Engine {
    pub connector: Arc<dyn Connector>,
    pub verifier: Arc<dyn Verifier>,
    pub metrics: Arc<Metrics>,
}

/// A credential found by discovery, or the reason it could not be examined.
struct Found {
    target: usize,
    kind: CredentialKind,
    services: Services,
    workspace: Workspace,
    service_account: String,
    account: Result<Option<ServiceAccount>, String>,
}

impl Engine {
    /// Runs one pass over every target of `config`.
    pub async fn pass(
        &self,
        config: &Config,
        mode: Mode,
        shutdown: &watch::Receiver<bool>,
    ) -> PassReport {
        let started_at = Utc::now();
        let _timer = self.metrics.pass_timer(match mode {
            Mode::Apply => "apply",
            Mode::Plan => "plan",
        });
        let (found, mut problems) = self.discover(config).await;
        let managed: BTreeMap<String, Services> = found
            .iter()
            .map(|f| (f.workspace.id.clone(), f.services.clone()))
            .filter(|(id, _)| crate::config::is_workspace_id(id))
            .collect();

        // One credential per (workspace, service account) and per secret. A secret is its name
        // in one account and region: the same name elsewhere is another secret.
        let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut secrets_claimed: BTreeMap<(String, String, String), String> = BTreeMap::new();
        let mut work = Vec::new();
        let mut reports = Vec::new();
        for f in found {
            let target = &config.targets[f.target];
            let mut report = CredentialReport {
                target: target.label.clone(),
                kind: match f.kind {
                    CredentialKind::Token => "token",
                    CredentialKind::ApiKey(_) => "api_key",
                },
                workspace_id: f.workspace.id.clone(),
                service_account: f.service_account.clone(),
                secret_name: None,
                status: Status::Failed,
                summary: String::new(),
                plan: None,
                key_plan: None,
                done: Vec::new(),
                error: None,
                expires_at: None,
            };
            let key = (f.workspace.id.clone(), f.service_account.clone());
            if let Some(first) = claimed.get(&key) {
                report.error = Some(format!("also selected by {first}; that target manages it"));
                reports.push(report);
                continue;
            }
            claimed.insert(key, target.label.clone());
            let secret = match secret_spec(target, &f.workspace, &f.service_account) {
                Ok(s) => s,
                Err(e) => {
                    report.error = Some(e);
                    reports.push(report);
                    continue;
                }
            };
            report.secret_name = Some(secret.name.clone());
            let where_ = (
                account_of(target.role_arn.as_deref()),
                target
                    .region
                    .clone()
                    .or(config.aws.region.clone())
                    .unwrap_or_default(),
                secret.name.clone(),
            );
            if let Some(other) = secrets_claimed.get(&where_) {
                report.error = Some(format!(
                    "secret {} is already used by {other}; make secret_name unique",
                    secret.name
                ));
                reports.push(report);
                continue;
            }
            secrets_claimed.insert(where_, format!("{}/{}", f.workspace.id, f.service_account));
            let cred = Credential {
                target: target.label.clone(),
                kind: f.kind,
                workspace: f.workspace.clone(),
                service_account: f.service_account.clone(),
                secret,
                policy: target.policy.clone(),
            };
            work.push((cred, f.services, f.account, report));
        }

        let concurrency = config.daemon.concurrency.max(1);
        let done: Vec<CredentialReport> = futures::stream::iter(work)
            .map(|(cred, services, account, report)| async move {
                if *shutdown.borrow() {
                    return CredentialReport {
                        status: Status::Skipped,
                        summary: "skipped: shutting down".into(),
                        ..report
                    };
                }
                self.credential(&cred, &services, account, report, mode)
                    .await
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        reports.extend(done);
        reports.sort_by(|a, b| {
            (&a.workspace_id, &a.service_account).cmp(&(&b.workspace_id, &b.service_account))
        });
        // Reports that failed before reaching `credential` (claims, templates) still count.
        for r in reports
            .iter()
            .filter(|r| r.status == Status::Failed && r.summary.is_empty())
        {
            let error = r.error.as_deref().unwrap_or("");
            tracing::error!(workspace = %r.workspace_id, service_account = %r.service_account, error, "credential failed");
            let labels = labels_of(r);
            self.metrics.credential_failure(&labels, "config");
            self.metrics.set_healthy(&labels, false);
        }
        for p in &problems {
            tracing::error!(problem = %p, "discovery problem");
        }
        problems.sort();

        let mut permissions = Vec::new();
        if config.permissions.audit && !*shutdown.borrow() {
            for (ws, services) in &managed {
                permissions.push(
                    crate::permissions::reconcile(
                        services.grafana.as_ref(),
                        &self.metrics,
                        &config.permissions,
                        ws,
                        mode == Mode::Apply,
                    )
                    .await,
                );
            }
        }

        let report = PassReport {
            started_at,
            finished_at: Utc::now(),
            credentials: reports,
            problems,
            permissions,
        };
        if mode == Mode::Apply {
            let seen = report
                .credentials
                .iter()
                .map(labels_of)
                .collect::<BTreeSet<_>>();
            if report.problems.is_empty() {
                self.metrics.retain_credentials(seen);
            } else {
                // A glob's credentials go unseen when their workspace cannot be listed: an
                // outage must not make them vanish from /metrics.
                self.metrics.keep_unseen_unhealthy(seen);
            }
            self.metrics
                .pass_finished(report.outcome(), report.finished_at);
        }
        report
    }

    /// Finds every credential the targets select.
    async fn discover(&self, config: &Config) -> (Vec<Found>, Vec<String>) {
        let mut found = Vec::new();
        let mut problems = Vec::new();
        // Within one pass: one listing or describe per workspace, one SA listing per workspace.
        let mut listings: HashMap<Scope, Result<Vec<Workspace>, ApiError>> = HashMap::new();
        let mut described: HashMap<(Option<String>, String), Result<Workspace, ApiError>> =
            HashMap::new();
        let mut accounts: HashMap<(Option<String>, String), Result<Vec<ServiceAccount>, ApiError>> =
            HashMap::new();
        self.prefetch(config, &mut listings, &mut described, &mut accounts)
            .await;

        for (ti, target) in config.targets.iter().enumerate() {
            let region = target.region.clone().or(config.aws.region.clone());
            let services = self
                .connector
                .services(region.as_deref(), target.role_arn.as_deref())
                .await;
            let scope = (region.clone(), target.role_arn.clone());

            let mut workspaces: Vec<Result<Workspace, (String, String)>> = Vec::new();
            match &target.workspaces {
                WorkspaceSelector::Ids(ids) => {
                    for id in ids {
                        let key = (region.clone(), id.clone());
                        if !described.contains_key(&key) {
                            let r = services.grafana.describe_workspace(id).await;
                            described.insert(key.clone(), r);
                        }
                        workspaces.push(match &described[&key] {
                            Ok(w) => Ok(w.clone()),
                            Err(e) => Err((id.clone(), format!("DescribeWorkspace: {e}"))),
                        });
                    }
                }
                WorkspaceSelector::Tags(tags) => {
                    if !listings.contains_key(&scope) {
                        let r = services.grafana.list_workspaces().await;
                        listings.insert(scope.clone(), r);
                    }
                    match &listings[&scope] {
                        Ok(all) => {
                            let selected: Vec<_> = all
                                .iter()
                                .filter(|w| tags.iter().all(|(k, v)| w.tags.get(k) == Some(v)))
                                .cloned()
                                .collect();
                            if selected.is_empty() {
                                problems.push(format!(
                                    "{}: no workspace carries the tags {}",
                                    target.label,
                                    tags.iter()
                                        .map(|(k, v)| format!("{k}={v}"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ));
                            }
                            workspaces.extend(selected.into_iter().map(Ok));
                        }
                        Err(e) => {
                            problems.push(format!("{}: ListWorkspaces: {e}", target.label));
                        }
                    }
                }
            }

            for ws in workspaces {
                let ws = match ws {
                    Ok(ws) => ws,
                    Err((id, error)) => {
                        // Every exactly named account of the workspace fails, so it is seen.
                        let placeholder = Workspace {
                            id: id.clone(),
                            name: String::new(),
                            endpoint: String::new(),
                            grafana_version: String::new(),
                            status: String::new(),
                            tags: BTreeMap::new(),
                        };
                        push_exact(
                            &mut found,
                            &mut problems,
                            ti,
                            target,
                            &services,
                            &placeholder,
                            &error,
                        );
                        continue;
                    }
                };
                if let Some(error) = unusable(&ws, target) {
                    push_exact(
                        &mut found,
                        &mut problems,
                        ti,
                        target,
                        &services,
                        &ws,
                        &error,
                    );
                    continue;
                }
                if !target.api_keys.is_empty() {
                    // Keys cannot be listed: each configured key is a credential.
                    for name in &target.api_keys {
                        found.push(Found {
                            target: ti,
                            kind: CredentialKind::ApiKey(target.api_key_role),
                            services: services.clone(),
                            workspace: ws.clone(),
                            service_account: name.clone(),
                            account: Ok(None),
                        });
                    }
                    continue;
                }
                let key = (region.clone(), ws.id.clone());
                if !accounts.contains_key(&key) {
                    let r = services.grafana.list_service_accounts(&ws.id).await;
                    accounts.insert(key.clone(), r);
                }
                match &accounts[&key] {
                    Err(e) => {
                        let error = format!("ListWorkspaceServiceAccounts: {e}");
                        push_exact(
                            &mut found,
                            &mut problems,
                            ti,
                            target,
                            &services,
                            &ws,
                            &error,
                        );
                    }
                    Ok(list) => {
                        let mut names = BTreeSet::new();
                        for sa in list
                            .iter()
                            .filter(|sa| target.matches_service_account(&sa.name))
                        {
                            names.insert(sa.name.clone());
                            found.push(Found {
                                target: ti,
                                kind: CredentialKind::Token,
                                services: services.clone(),
                                workspace: ws.clone(),
                                service_account: sa.name.clone(),
                                account: Ok(Some(sa.clone())),
                            });
                        }
                        for name in target.exact_service_accounts() {
                            if !names.contains(name) {
                                found.push(Found {
                                    target: ti,
                                    kind: CredentialKind::Token,
                                    services: services.clone(),
                                    workspace: ws.clone(),
                                    service_account: name.to_owned(),
                                    account: Ok(None),
                                });
                            }
                        }
                    }
                }
            }
        }
        (found, problems)
    }

    /// Fills discovery's caches with what its loop will read, `daemon.concurrency` calls at a
    /// time: first every describe and listing of workspaces, then the service accounts of every
    /// usable workspace a token target selects. Measured (docs/PERFORMANCE.md): one call after
    /// another, discovery alone took most of a steady pass of 40 workspaces at 50 ms a call.
    /// The calls are the same ones; the loop still fetches anything this did not foresee.
    async fn prefetch(
        &self,
        config: &Config,
        listings: &mut Listings,
        described: &mut Described,
        accounts: &mut Accounts,
    ) {
        enum Fetched {
            Described((Option<String>, String), Result<Workspace, ApiError>),
            Listed(Scope, Result<Vec<Workspace>, ApiError>),
        }
        let concurrency = config.daemon.concurrency.max(1);
        let mut targets = Vec::new();
        for target in &config.targets {
            let region = target.region.clone().or(config.aws.region.clone());
            let services = self
                .connector
                .services(region.as_deref(), target.role_arn.as_deref())
                .await;
            targets.push((target, region, services));
        }

        let mut describe: Vec<((Option<String>, String), Services)> = Vec::new();
        let mut list: Vec<(Scope, Services)> = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut seen_scopes = HashSet::new();
        for (target, region, services) in &targets {
            match &target.workspaces {
                WorkspaceSelector::Ids(ids) => {
                    for id in ids {
                        if seen_ids.insert((region.clone(), id.clone())) {
                            describe.push(((region.clone(), id.clone()), services.clone()));
                        }
                    }
                }
                WorkspaceSelector::Tags(_) => {
                    let scope = (region.clone(), target.role_arn.clone());
                    if seen_scopes.insert(scope.clone()) {
                        list.push((scope, services.clone()));
                    }
                }
            }
        }
        let jobs = describe
            .into_iter()
            .map(|(key, services)| {
                async move {
                    let r = services.grafana.describe_workspace(&key.1).await;
                    Fetched::Described(key, r)
                }
                .boxed()
            })
            .chain(list.into_iter().map(|(scope, services)| {
                async move { Fetched::Listed(scope, services.grafana.list_workspaces().await) }
                    .boxed()
            }));
        let fetched: Vec<Fetched> = futures::stream::iter(jobs)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for f in fetched {
            match f {
                Fetched::Described(key, r) => {
                    described.insert(key, r);
                }
                Fetched::Listed(scope, r) => {
                    listings.insert(scope, r);
                }
            }
        }

        let mut wanted: Vec<((Option<String>, String), Services)> = Vec::new();
        let mut seen = HashSet::new();
        for (target, region, services) in &targets {
            if !target.api_keys.is_empty() {
                continue;
            }
            let selected: Vec<&Workspace> = match &target.workspaces {
                WorkspaceSelector::Ids(ids) => ids
                    .iter()
                    .filter_map(|id| described.get(&(region.clone(), id.clone()))?.as_ref().ok())
                    .collect(),
                WorkspaceSelector::Tags(tags) => {
                    match listings.get(&(region.clone(), target.role_arn.clone())) {
                        Some(Ok(all)) => all
                            .iter()
                            .filter(|w| tags.iter().all(|(k, v)| w.tags.get(k) == Some(v)))
                            .collect(),
                        _ => Vec::new(),
                    }
                }
            };
            for ws in selected {
                let key = (region.clone(), ws.id.clone());
                if unusable(ws, target).is_none() && seen.insert(key.clone()) {
                    wanted.push((key, services.clone()));
                }
            }
        }
        let fetched: Vec<_> = futures::stream::iter(wanted)
            .map(|(key, services)| async move {
                let r = services.grafana.list_service_accounts(&key.1).await;
                (key, r)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        accounts.extend(fetched);
    }

    /// Observes, plans and (in apply mode) executes one credential.
    async fn credential(
        &self,
        cred: &Credential,
        services: &Services,
        account: Result<Option<ServiceAccount>, String>,
        mut report: CredentialReport,
        mode: Mode,
    ) -> CredentialReport {
        let labels = cred.labels();
        let ws = &cred.workspace.id;
        let sa_name = &cred.service_account;
        let account = match account {
            Ok(a) => a,
            Err(e) => return self.failed(report, &labels, "discover", e),
        };
        if let CredentialKind::ApiKey(role) = cred.kind {
            return self.api_key(cred, role, services, report, mode).await;
        }
        let tokens = match &account {
            Some(a) => match services.grafana.list_tokens(ws, &a.id).await {
                Ok(t) => t,
                Err(e) => {
                    return self.failed(
                        report,
                        &labels,
                        "discover",
                        format!("ListWorkspaceServiceAccountTokens: {e}"),
                    )
                }
            },
            None => Vec::new(),
        };
        let secret = match services.secrets.describe(&cred.secret.name).await {
            Ok(s) => s,
            Err(e) => {
                return self.failed(
                    report,
                    &labels,
                    "discover",
                    format!("DescribeSecret {}: {e}", cred.secret.name),
                )
            }
        };
        // The pass reads the clock; the planner is handed the time.
        let now = Utc::now();
        if mode == Mode::Apply {
            let expired = tokens.iter().filter(|t| t.expired(now)).count();
            let unknown = tokens.iter().filter(|t| t.expires_at.is_none()).count();
            self.metrics.set_tokens(
                ws,
                sa_name,
                [tokens.len() - expired - unknown, expired, unknown],
            );
        }
        let plan = plan::plan(
            &cred.policy,
            &Observed {
                workspace_id: ws,
                service_account: sa_name,
                account: account.as_ref(),
                tokens: &tokens,
                secret: secret.as_ref(),
            },
            now,
        );
        if let (Some(declared), Some(actual)) = (
            cred.policy.service_account_role,
            account.as_ref().and_then(|a| a.role),
        ) {
            let drifted = plan.role_drift.is_some();
            if drifted {
                tracing::warn!(workspace = %ws, service_account = %sa_name, declared = %declared, actual = %actual, "service account role differs from the declared one; AMG cannot change it: recreate the service account to fix it");
            }
            if mode == Mode::Apply {
                self.metrics
                    .set_role_drift(&labels, declared.as_str(), actual.as_str(), drifted);
            }
        }
        let mut plan = plan;
        self.name_left_behind(services, &mut plan.left_behind).await;
        for lb in &plan.left_behind {
            tracing::warn!(workspace = %ws, service_account = %sa_name, secret = %cred.secret.name, token_name = %lb.token.name, left_behind_for = lb.secret.as_deref().unwrap_or("-"), detail = %lb, "token left behind by another secret");
        }
        if mode == Mode::Apply {
            self.metrics
                .set_left_behind(&labels, plan.left_behind.len());
        }
        for note in &plan.notes {
            tracing::debug!(workspace = %ws, service_account = %sa_name, note = %note, "waiting");
        }
        report.expires_at = plan.current.as_ref().and_then(|t| t.expires_at);

        if let Some(blocker) = &plan.blocked {
            let mut report = self.blocked(report, &labels, blocker, mode);
            report.plan = Some(plan);
            return report;
        }
        let decided: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        tracing::info!(
            workspace = %ws,
            service_account = %sa_name,
            secret = %cred.secret.name,
            current = plan.current.as_ref().map(|t| t.name.as_str()).unwrap_or("-"),
            due_at = plan.due_at.map(rfc3339).unwrap_or_default(),
            actions = %if decided.is_empty() { "none".to_owned() } else { decided.join("; ") },
            "decided"
        );

        match mode {
            Mode::Plan => {
                report.status = if plan.actions.is_empty() {
                    Status::Ok
                } else {
                    Status::Pending
                };
                report.summary = summary_line(&decided, plan.current.as_ref(), "would");
                report.plan = Some(plan);
                report
            }
            Mode::Apply => {
                let executor = Executor {
                    grafana: services.grafana.as_ref(),
                    secrets: services.secrets.as_ref(),
                    verifier: self.verifier.as_ref(),
                    metrics: &self.metrics,
                };
                let outcome = executor
                    .execute(cred, account.as_ref(), secret.as_ref(), &plan, now)
                    .await;
                report.done = outcome.done.clone();
                report.expires_at = outcome.current.as_ref().and_then(|t| t.expires_at);
                if let Some(e) = report.expires_at {
                    self.metrics.set_expiry(&labels, e);
                }
                // An unknown expiry (AMG reports none) is as healthy as the plan's assumption.
                let rotate_before =
                    chrono::Duration::from_std(cred.policy.rotate_before).unwrap_or_default();
                let healthy_after = outcome
                    .current
                    .as_ref()
                    .is_some_and(|t| match t.expires_at {
                        Some(e) => e - rotate_before > now,
                        None => plan.due_at.is_some_and(|d| d > now),
                    });
                match &outcome.error {
                    Some(e) => {
                        report.status = Status::Failed;
                        report.error = Some(e.to_string());
                        report.summary = outcome.to_string();
                        let stage = if plan.actions.iter().any(|a| a.is_rotation()) {
                            "rotate"
                        } else {
                            "cleanup"
                        };
                        self.metrics.credential_failure(&labels, stage);
                    }
                    None => {
                        report.status = if outcome.done.is_empty() {
                            Status::Ok
                        } else {
                            Status::Changed
                        };
                        report.summary =
                            summary_line(&outcome.done, outcome.current.as_ref(), "did");
                    }
                }
                self.metrics
                    .set_healthy(&labels, outcome.error.is_none() && healthy_after);
                report.plan = Some(plan);
                report
            }
        }
    }

    /// Observes, plans and (in apply mode) executes one legacy API key.
    async fn api_key(
        &self,
        cred: &Credential,
        role: crate::model::Role,
        services: &Services,
        mut report: CredentialReport,
        mode: Mode,
    ) -> CredentialReport {
        let labels = cred.labels();
        if !cred.workspace.supports_api_keys() {
            // Nothing to attempt: AMG refuses API keys there. Said once per pass.
            let blocker = Blocker::ApiKeysRemoved {
                grafana_version: cred.workspace.grafana_version.clone(),
            };
            return self.blocked(report, &labels, &blocker, mode);
        }
        let (secret, observed) =
            match apikeys::observe(services.secrets.as_ref(), self.verifier.as_ref(), cred).await {
                Ok(o) => o,
                Err(e) => return self.failed(report, &labels, "discover", e.to_string()),
            };
        let now = Utc::now();
        let plan = apikeys::plan(
            &cred.policy,
            &cred.service_account,
            &KeyObserved {
                secret: secret.as_ref(),
                ..observed
            },
            now,
        );
        report.expires_at = plan.current.as_ref().map(|c| c.expires_at);
        let decided: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        if let Some(blocker) = &plan.blocked {
            let mut report = self.blocked(report, &labels, blocker, mode);
            report.key_plan = Some(plan);
            return report;
        }
        tracing::info!(
            workspace = %cred.workspace.id,
            api_key = %cred.service_account,
            secret = %cred.secret.name,
            current = plan.current.as_ref().map(|c| c.key_name.as_str()).unwrap_or("-"),
            actions = %if decided.is_empty() { "none".to_owned() } else { decided.join("; ") },
            "decided"
        );
        if mode == Mode::Plan {
            report.status = if plan.actions.is_empty() {
                Status::Ok
            } else {
                Status::Pending
            };
            report.summary = if decided.is_empty() {
                "healthy".into()
            } else {
                format!("would {}", decided.join("; "))
            };
            report.key_plan = Some(plan);
            return report;
        }
        let executor = apikeys::KeyExecutor {
            grafana: services.grafana.as_ref(),
            secrets: services.secrets.as_ref(),
            verifier: self.verifier.as_ref(),
            metrics: &self.metrics,
        };
        let outcome = executor
            .execute(cred, role, secret.as_ref(), &plan, now)
            .await;
        report.done = outcome.done.clone();
        report.expires_at = outcome
            .current
            .as_ref()
            .and_then(|t| t.expires_at)
            .or(report.expires_at);
        let rotate_before =
            chrono::Duration::from_std(cred.policy.rotate_before).unwrap_or_default();
        let healthy =
            outcome.error.is_none() && report.expires_at.is_some_and(|e| e - rotate_before > now);
        match &outcome.error {
            Some(e) => {
                report.status = Status::Failed;
                report.error = Some(e.to_string());
                report.summary = outcome.to_string();
                self.metrics.credential_failure(&labels, "rotate");
            }
            None => {
                report.status = if outcome.done.is_empty() {
                    Status::Ok
                } else {
                    Status::Changed
                };
                report.summary = if outcome.done.is_empty() {
                    "healthy".into()
                } else {
                    outcome.done.join("; ")
                };
                if let Some(e) = report.expires_at {
                    report
                        .summary
                        .push_str(&format!("; current key expires {}", rfc3339(e)));
                }
            }
        }
        self.metrics.set_healthy(&labels, healthy);
        report.key_plan = Some(plan);
        report
    }

    /// Names the secrets that tokens were left behind for, from the marks in their names: the
    /// rotator's secrets in this account and region (one ListSecrets, only when a credential
    /// has such tokens). A lookup that fails leaves them unnamed; the tokens are kept either way.
    async fn name_left_behind(&self, services: &Services, left: &mut [LeftBehind]) {
        if left.iter().all(|l| l.mark.is_none()) {
            return;
        }
        let secrets = match services.secrets.list_managed().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the rotator's secrets to name the ones tokens were left behind for");
                return;
            }
        };
        for l in left.iter_mut() {
            l.secret = secrets
                .iter()
                .find(|(name, arn)| {
                    let s = crate::model::SecretState {
                        arn: arn.clone(),
                        name: name.clone(),
                        ..Default::default()
                    };
                    l.mark.as_deref() == Some(plan::secret_mark(&s).as_str())
                })
                .map(|(name, _)| name.clone());
        }
    }

    /// A credential reported, not acted on: one warning, and (applying) unhealthy.
    fn blocked(
        &self,
        mut report: CredentialReport,
        labels: &CredentialLabels,
        blocker: &Blocker,
        mode: Mode,
    ) -> CredentialReport {
        tracing::warn!(workspace = %labels.workspace, service_account = %labels.service_account, kind = labels.kind, problem = %blocker, "credential blocked");
        if mode == Mode::Apply {
            self.metrics.credential_failure(labels, "plan");
            self.metrics.set_healthy(labels, false);
        }
        report.status = Status::Blocked;
        report.summary = format!("blocked: {blocker}");
        report.error = Some(blocker.to_string());
        report
    }

    fn failed(
        &self,
        mut report: CredentialReport,
        labels: &CredentialLabels,
        stage: &str,
        error: String,
    ) -> CredentialReport {
        tracing::error!(workspace = %labels.workspace, service_account = %labels.service_account, error = %error, "credential failed");
        self.metrics.credential_failure(labels, stage);
        self.metrics.set_healthy(labels, false);
        report.status = Status::Failed;
        report.summary = format!("FAILED: {error}");
        report.error = Some(error);
        report
    }
}

fn summary_line(actions: &[String], current: Option<&TokenRef>, verb: &str) -> String {
    let what = if actions.is_empty() {
        "healthy".to_owned()
    } else if verb == "would" {
        format!("would {}", actions.join("; "))
    } else {
        actions.join("; ")
    };
    match current {
        Some(t) if actions.is_empty() || verb == "did" => {
            format!(
                "{what}; current {} expires {}",
                t.name,
                crate::credential::plan::expiry_text(t.expires_at)
            )
        }
        _ => what,
    }
}

/// The account a role ARN (`arn:aws:iam::123456789012:role/x`) belongs to; `""` stands for the
/// account of the default credentials. Two targets that reach one account through the default
/// credentials and a role are not told apart: the rotator does not call STS to learn it.
fn account_of(role_arn: Option<&str>) -> String {
    role_arn
        .and_then(|arn| arn.split(':').nth(4))
        .unwrap_or_default()
        .to_owned()
}

fn labels_of(r: &CredentialReport) -> CredentialLabels {
    CredentialLabels {
        workspace: r.workspace_id.clone(),
        service_account: r.service_account.clone(),
        kind: r.kind,
    }
}

/// Why a workspace cannot serve the target's credentials, if it cannot.
fn unusable(ws: &Workspace, target: &Target) -> Option<String> {
    if matches!(
        ws.status.as_str(),
        "CREATING" | "DELETING" | "FAILED" | "CREATION_FAILED" | "DELETION_FAILED"
    ) {
        return Some(format!("workspace is {}, not usable", ws.status));
    }
    (target.api_keys.is_empty() && !ws.supports_service_accounts()).then(|| {
        format!(
            "workspace runs Grafana {}, which has no service accounts (Grafana 9 or later is needed; manage it with api_keys)",
            ws.grafana_version
        )
    })
}

/// Records a workspace-level error against each service account the target names exactly (so
/// they show up as failed credentials), or as a pass problem when it names only globs.
fn push_exact(
    found: &mut Vec<Found>,
    problems: &mut Vec<String>,
    ti: usize,
    target: &Target,
    services: &Services,
    ws: &Workspace,
    error: &str,
) {
    let mut any = false;
    let kind = if target.api_keys.is_empty() {
        CredentialKind::Token
    } else {
        CredentialKind::ApiKey(target.api_key_role)
    };
    for name in target.exact_names() {
        any = true;
        found.push(Found {
            target: ti,
            kind,
            services: services.clone(),
            workspace: ws.clone(),
            service_account: name.to_owned(),
            account: Err(error.to_owned()),
        });
    }
    if !any {
        problems.push(format!("{}: workspace {}: {error}", target.label, ws.id));
    }
}

/// The secret a credential publishes to, from its target's template.
fn secret_spec(
    target: &Target,
    ws: &Workspace,
    service_account: &str,
) -> Result<SecretSpec, String> {
    let p = &target.policy;
    // The endpoint names the workspace's region: `<id>.grafana-workspace.<region>.amazonaws.com`.
    let region = target.region.clone().unwrap_or_else(|| {
        ws.endpoint
            .split('.')
            .skip_while(|part| *part != "grafana-workspace")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    });
    let name = render_template(
        &p.secret_name,
        &[
            ("workspace_id", &ws.id),
            ("workspace_name", &ws.name),
            ("service_account", service_account),
            ("key_name", service_account),
            ("region", &region),
        ],
    );
    if let Some(problem) = secret_name_problem(&name) {
        return Err(format!(
            "secret_name {:?} yields {name:?} here, and {problem}",
            p.secret_name
        ));
    }
    let mut tags = p.secret_tags.clone();
    tags.entry("managed-by".into())
        .or_insert_with(|| "amg-token-rotator".into());
    Ok(SecretSpec {
        name,
        format: p.secret_format,
        kms_key_id: p.kms_key_id.clone(),
        description: p.secret_description.clone(),
        tags,
    })
}
