//! One pass: discover what AWS reports, claim each credential once, reconcile each with
//! bounded concurrency (unless a shutdown stops new ones from starting), audit permissions,
//! and report.
//!
//! One credential's failure never stops the others. A shutdown signal stops new credentials
//! from starting; those in hand finish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::aws::connect::Scope;
use crate::aws::{Connector, Services, Verifier};
use crate::config::{render_template, secret_name_problem, Config, Policy, Target};
use crate::coordination::guard::Guarded;
use crate::coordination::Coordinator;
use crate::credential::census::Census;
use crate::credential::{self, execute, Credential, CredentialReport, Status};
use crate::daemon::metrics::{Metrics, PassMode, PassOutcome, Stage};
use crate::discover::{self, PassProblem, Selected};
use crate::model::{SecretSpec, SecretTags, Workspace};
use crate::permissions::PermissionReport;

pub use crate::credential::Mode;

#[cfg(test)]
mod scenarios;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub credentials: Vec<CredentialReport>,
    /// Problems that are not one credential's: a tag query that failed, a glob with no workspace.
    #[serde(serialize_with = "as_strings")]
    pub problems: Vec<PassProblem>,
    /// The permission audit of each managed workspace, when `[permissions]` asks for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<PermissionReport>,
}

/// Problems read as sentences in JSON, as in the text outputs.
fn as_strings<S: Serializer>(problems: &[PassProblem], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(problems.iter().map(|p| p.to_string()))
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

    /// Success, partial or failure, for the pass metrics and the daemon's readiness.
    pub fn outcome(&self) -> PassOutcome {
        let failed = self.failed();
        if failed == 0 {
            PassOutcome::Success
        } else if failed >= self.credentials.len() + self.problems.len() {
            PassOutcome::Failure
        } else {
            PassOutcome::Partial
        }
    }
}

/// Everything a pass needs, built once by the caller.
pub struct Engine {
    pub connector: Arc<dyn Connector>,
    pub verifier: Arc<dyn Verifier>,
    pub metrics: Arc<Metrics>,
    /// With `[coordination]`: the leases that say which workspaces this replica works on.
    pub coordinator: Option<Arc<Coordinator>>,
    /// The service-account listings of pattern workspaces, remembered between this process's
    /// passes (`discover::remembered`); a reload forgets them. `None` for a process of one
    /// pass (`once`, `plan`), which would remember them for nothing.
    pub listings: Option<Arc<discover::Listings>>,
}

/// The shard of a selected credential's workspace.
fn shard(s: &Selected) -> String {
    crate::coordination::shard_of(s.scope.0.as_deref(), &s.workspace.id)
}

/// With several replicas: claims this replica's share of the shards the pass discovered, and
/// keeps the credentials of the shards it holds. The others are another replica's: not
/// planned, not reported, not exported here. A round that fails keeps what is still held.
async fn held_only(c: &Coordinator, selected: Vec<Selected>) -> Vec<Selected> {
    let shards: BTreeSet<String> = selected.iter().map(shard).collect();
    let all = shards.len();
    if let Err(e) = c.claim(shards).await {
        tracing::warn!(replica = %c.me(), error = %e, "could not read the lease table; this pass works only on the shards still held");
    }
    let held = c.held();
    tracing::info!(replica = %c.me(), held = held.len(), shards = all, members = c.members(), "shards of this pass");
    selected
        .into_iter()
        .filter(|s| held.contains(&shard(s)))
        .collect()
}

/// A claimed credential, waiting for its turn. Held for every credential at once, so it holds
/// only what its selection found, moved in: its `Credential` (the secret's name and settings,
/// the target's label and policy) is made when its turn comes (`Claims::credential`), and so
/// is its report.
struct Work {
    /// Index into `config.targets`.
    target: usize,
    kind: credential::CredentialKind,
    workspace: Arc<Workspace>,
    name: String,
    account: Result<credential::AccountView, discover::Problem>,
    migrated_from: Option<String>,
}

/// What a claimed credential's target decides, one copy per target however many credentials it
/// selects: its policy and its secrets' tags.
struct Claims<'c> {
    config: &'c Config,
    shared: Vec<(Arc<Policy>, SecretTags)>,
}

impl<'c> Claims<'c> {
    fn new(config: &'c Config) -> Claims<'c> {
        let shared = config
            .targets
            .iter()
            .map(|t| (Arc::new(t.policy.clone()), Arc::new(secret_tags(&t.policy))))
            .collect();
        Claims { config, shared }
    }

    /// The secret of target `ti`'s credential `name` in `ws`, or why its name does not render.
    fn secret(
        &self,
        ti: usize,
        ws: &Workspace,
        name: &str,
        migrated_from: Option<&str>,
    ) -> Result<SecretSpec, String> {
        // A migrated API key keeps the key's secret.
        let secret_of = migrated_from.unwrap_or(name);
        secret_spec(&self.config.targets[ti], ws, secret_of, &self.shared[ti].1)
    }

    /// The credential `w` is; `Err`: its secret name does not render (reported at the claim).
    fn credential(&self, w: &Work) -> Result<Credential, String> {
        let target = &self.config.targets[w.target];
        let policy = &self.shared[w.target].0;
        let secret = self.secret(w.target, &w.workspace, &w.name, w.migrated_from.as_deref())?;
        let migrates_to = match w.kind {
            credential::CredentialKind::ApiKey { .. } => {
                discover::migration_name(target, &w.workspace, &w.name)
            }
            credential::CredentialKind::Token { .. } => None,
        };
        Ok(Credential {
            target: target.label.clone(),
            kind: w.kind,
            workspace: w.workspace.clone(),
            service_account: w.name.clone(),
            secret,
            policy: policy.clone(),
            migrated_from: w.migrated_from.clone(),
            migrates_to,
        })
    }
}

/// The claimed credentials by scope, with the scope's services, each scope's in selection
/// order. Boxed, so each one's memory is freed when it is done rather than with the whole
/// scope's list at the pass's end.
type ByScope = BTreeMap<crate::aws::connect::Scope, (Services, Vec<Box<Work>>)>;

/// The order of a pass's reports: by workspace and service account, then what tells two
/// credentials of one service account apart.
fn report_key(r: &CredentialReport) -> (&str, &str, &str, &str, Option<&str>) {
    (
        &r.workspace_id,
        &r.service_account,
        r.kind,
        &r.target,
        r.secret_name.as_deref(),
    )
}

/// A credential's report before it is examined (status Failed until it is).
fn new_report(cred: &Credential) -> CredentialReport {
    let mut report = CredentialReport::new(
        &cred.target,
        cred.kind,
        &cred.workspace.id,
        &cred.service_account,
    );
    report.secret_name = Some(cred.secret.name.clone());
    report
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
            Mode::Apply => PassMode::Apply,
            Mode::Plan => PassMode::Plan,
        });
        // `plan` lists everything: what it shows is what AWS says now.
        let memory = self.listings.as_ref().filter(|_| mode == Mode::Apply);
        let (inventory, scopes) =
            discover::fetch(config, self.connector.as_ref(), memory, started_at).await;
        let (selected, mut problems) = discover::select(config, &inventory);
        let selected = match (&self.coordinator, mode) {
            (Some(c), Mode::Apply) => held_only(c, selected).await,
            _ => selected,
        };
        // What was listed is in the selection now: its memory serves the pass's reports.
        drop(inventory);
        let managed: BTreeMap<String, Services> = selected
            .iter()
            .filter(|s| crate::config::is_workspace_id(&s.workspace.id))
            .map(|s| (s.workspace.id.clone(), scopes[&s.scope].clone()))
            .collect();
        let claims = Claims::new(config);
        let (work, unclaimed) = claim(&claims, selected, &scopes);
        let mut reports = self
            .reconcile_all(&claims, work, unclaimed, mode, shutdown)
            .await;
        // In place (a stable sort would copy half the reports aside); no two reports share a key.
        reports.sort_unstable_by(|a, b| report_key(a).cmp(&report_key(b)));
        // Reports that failed before reaching `reconcile` (claims, templates) still count.
        for r in reports
            .iter()
            .filter(|r| r.status == Status::Failed && r.summary.is_empty())
        {
            let error = r.error.as_deref().unwrap_or("");
            tracing::error!(workspace = %r.workspace_id, service_account = %r.service_account, error, "credential failed");
            self.metrics.credential_failure(&r.labels(), Stage::Config);
            self.metrics.set_healthy(&r.labels(), false);
        }
        for p in &problems {
            tracing::error!(problem = %p, "discovery problem");
        }
        problems.sort_by_key(|p| p.to_string());
        let permissions = self.permissions(config, &managed, mode, shutdown).await;
        let report = PassReport {
            started_at,
            finished_at: Utc::now(),
            credentials: reports,
            problems,
            permissions,
        };
        if mode == Mode::Apply {
            self.record(&report);
        }
        report
    }

    /// Reconciles the claimed credentials, `daemon.concurrency` at a time *per scope* (region
    /// and role: each has its own AMG and Secrets Manager rate limiters and quotas), all scopes
    /// at once, so N accounts take about as long as the slowest one and a throttled or slow
    /// scope holds up only its own credentials. Once `shutdown` turns, credentials not yet
    /// started are skipped. Each credential's report is added to `reports`.
    async fn reconcile_all(
        &self,
        claims: &Claims<'_>,
        by_scope: ByScope,
        mut reports: Vec<CredentialReport>,
        mode: Mode,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<CredentialReport> {
        let one = |w: Box<Work>, scope: Arc<(Scope, Services, Census)>| async move {
            let cred = match claims.credential(&w) {
                Ok(cred) => cred,
                Err(e) => {
                    let target = &claims.config.targets[w.target].label;
                    let mut report =
                        CredentialReport::new(target, w.kind, &w.workspace.id, &w.name);
                    report.error = Some(e);
                    return report;
                }
            };
            let report = new_report(&cred);
            if *shutdown.borrow() {
                return CredentialReport {
                    status: Status::Skipped,
                    summary: "skipped: shutting down".into(),
                    ..report
                };
            }
            let (at, scoped, census) = scope.as_ref();
            // With several replicas, every change first asks whether the shard is still held.
            let lease = match (&self.coordinator, mode) {
                (Some(c), Mode::Apply) => Some((
                    c.clone(),
                    crate::coordination::shard_of(at.0.as_deref(), &cred.workspace.id),
                )),
                _ => None,
            };
            let grafana = Guarded::new(scoped.grafana.as_ref(), lease.clone());
            let secrets = Guarded::new(scoped.secrets.as_ref(), lease);
            let services = execute::Services {
                grafana: &grafana,
                secrets: &secrets,
                census,
                verifier: self.verifier.as_ref(),
                metrics: &self.metrics,
            };
            let mut report = credential::reconcile(
                services,
                &cred,
                w.account.map_err(|p| p.to_string()),
                report,
                mode,
            )
            .await;
            // A pass that acts prints of a plan only what its summary lines name (tokens left
            // behind or superseded, a migration; `report.rs`): the rest, which `plan` prints,
            // would be held for every credential until the pass ends, for nothing.
            if mode == Mode::Apply && report.plan.as_ref().is_some_and(|p| p.nothing_to_print()) {
                report.plan = None;
            }
            report
        };
        // Not reserved up front: the reports grow as the work they replace is freed, and the
        // pass's peak (the claimed work and the scopes' censuses, at its start) holds none.
        let mut done =
            futures::stream::select_all(by_scope.into_iter().map(|(at, (services, work))| {
                // One census of the scope's secrets a pass, shared by its credentials.
                let scope = Arc::new((at, services, Census::new()));
                futures::stream::iter(work)
                    .map(move |w| one(w, scope.clone()))
                    .buffer_unordered(claims.config.daemon.concurrency.max(1))
            }));
        while let Some(report) = done.next().await {
            reports.push(report);
        }
        reports.shrink_to_fit();
        reports
    }

    /// The permission audit of each managed workspace, when asked for.
    async fn permissions(
        &self,
        config: &Config,
        managed: &BTreeMap<String, Services>,
        mode: Mode,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<PermissionReport> {
        let mut out = Vec::new();
        if !config.permissions.audit || *shutdown.borrow() {
            return out;
        }
        for (ws, services) in managed {
            out.push(
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
        out
    }

    /// The pass's metrics: which credentials are still managed, and how the pass went.
    fn record(&self, report: &PassReport) {
        let seen = report
            .credentials
            .iter()
            .map(CredentialReport::labels)
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
}

/// One credential per (workspace, service account), and one per secret: a secret is its name
/// in one account and region (the same name elsewhere is another secret). What cannot be
/// claimed, or whose secret name does not render, is reported as failed at once. Pure.
fn claim(
    claims: &Claims<'_>,
    selected: Vec<Selected>,
    scopes: &std::collections::HashMap<crate::aws::connect::Scope, Services>,
) -> (ByScope, Vec<CredentialReport>) {
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut secrets_claimed: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let (mut work, mut reports) = (ByScope::new(), Vec::new());
    for s in selected {
        let target = &claims.config.targets[s.target];
        let failed = |error: String, secret_name: Option<String>| CredentialReport {
            error: Some(error),
            secret_name,
            ..CredentialReport::new(&target.label, s.kind, &s.workspace.id, &s.name)
        };
        let key = (s.workspace.id.clone(), s.name.clone());
        if let Some(first) = claimed.get(&key) {
            let e = format!("also selected by {first}; that target manages it");
            reports.push(failed(e, None));
            continue;
        }
        claimed.insert(key, target.label.clone());
        // Rendered here to check it, and again at its turn (`Claims::credential`).
        let secret =
            match claims.secret(s.target, &s.workspace, &s.name, s.migrated_from.as_deref()) {
                Ok(spec) => spec.name,
                Err(e) => {
                    reports.push(failed(e, None));
                    continue;
                }
            };
        let where_ = (
            account_of(target.role_arn.as_deref()),
            s.scope.0.clone().unwrap_or_default(),
            secret,
        );
        if let Some(other) = secrets_claimed.get(&where_) {
            let e = format!(
                "secret {} is already used by {other}; make secret_name unique",
                where_.2
            );
            reports.push(failed(e, Some(where_.2.clone())));
            continue;
        }
        secrets_claimed.insert(where_, format!("{}/{}", s.workspace.id, s.name));
        let scoped = work
            .entry(s.scope)
            .or_insert_with_key(|at| (scopes[at].clone(), Vec::new()));
        scoped.1.push(Box::new(Work {
            target: s.target,
            kind: s.kind,
            workspace: s.workspace,
            name: s.name,
            account: s.account,
            migrated_from: s.migrated_from,
        }));
    }
    (work, reports)
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

/// The tags of every secret a target's credentials publish to.
fn secret_tags(p: &Policy) -> BTreeMap<String, String> {
    let mut tags = p.secret_tags.clone();
    tags.entry("managed-by".into())
        .or_insert_with(|| "amg-token-rotator".into());
    tags
}

/// The secret a credential publishes to, from its target's template; `tags` are its target's.
fn secret_spec(
    target: &Target,
    ws: &Workspace,
    service_account: &str,
    tags: &SecretTags,
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
    Ok(SecretSpec {
        name,
        format: p.secret_format,
        kms_key_id: p.kms_key_id.clone(),
        description: p.secret_description.clone(),
        tags: tags.clone(),
    })
}
