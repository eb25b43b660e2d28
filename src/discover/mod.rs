//! Discovery: what AWS reports about the targets' workspaces and service accounts, fetched
//! once per pass and concurrently (`fetch`), and the credentials the targets select from it
//! (`select`, pure: it reads only the inventory and the configuration).
//!
//! One ListWorkspaces per region and role that a tag target uses or that names more than one
//! workspace by ID, one DescribeWorkspace per other workspace named by ID (or missing from its
//! listing), one ListWorkspaceServiceAccounts per usable workspace a token target selects by
//! pattern. A workspace whose token targets all name their service accounts exactly is listed
//! only when one of its credentials needs it (`Deferred`): a credential whose audit record
//! stands needs no listing at all. A long-running process remembers the listings of pattern
//! workspaces for their `audit_interval` (`remembered`); nothing else survives the pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;

use crate::aws::connect::Scope;
use crate::aws::Grafana;
use crate::aws::{ApiError, Connector, Services};
use crate::config::{Config, Manages, Target, WorkspaceSelector};
use crate::credential::{AccountView, CredentialKind};
use crate::model::{ServiceAccount, Workspace};

pub mod remembered;

pub use remembered::Listings;

/// A region (`None`: the default) and a workspace ID.
pub type WorkspaceKey = (Option<String>, String);
/// A workspace ID in the scope (region and role) it is reached through.
pub type WorkspaceAt = (Scope, String);

/// The service accounts of a workspace discovery did not list — every token target that
/// selects it names its service accounts exactly, or its listing is remembered from an earlier
/// pass — listed on demand, at most once per pass, and only if a credential needs them (its
/// audit record does not stand, `credential::audit`).
pub struct Deferred {
    grafana: std::sync::Arc<dyn Grafana>,
    workspace_id: String,
    listed: tokio::sync::OnceCell<Result<Vec<ServiceAccount>, ApiError>>,
    /// Where a fresh listing is remembered, for a workspace whose listing was.
    memory: Option<Memory>,
}

/// A remembered workspace's place in the process's `Listings`.
struct Memory {
    listings: Arc<Listings>,
    at: WorkspaceAt,
    interval: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
}

impl Deferred {
    pub fn new(grafana: std::sync::Arc<dyn Grafana>, workspace_id: &str) -> Deferred {
        Deferred {
            grafana,
            workspace_id: workspace_id.to_owned(),
            listed: tokio::sync::OnceCell::new(),
            memory: None,
        }
    }

    /// The service account named `name` (`None`: there is none), listing the workspace's
    /// service accounts the first time any credential asks (and remembering that listing, for
    /// a workspace whose listing was remembered).
    pub async fn account(&self, name: &str) -> Result<Option<ServiceAccount>, ApiError> {
        let listed = self
            .listed
            .get_or_init(|| async {
                let listed = self.grafana.list_service_accounts(&self.workspace_id).await;
                if let (Ok(accounts), Some(m)) = (&listed, &self.memory) {
                    m.listings.remember(&m.at, accounts, m.now, m.interval);
                }
                listed
            })
            .await;
        match listed {
            Ok(list) => Ok(list.iter().find(|a| a.name == name).cloned()),
            Err(e) => Err(e.clone()),
        }
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deferred({})", self.workspace_id)
    }
}

/// What AWS reported, once per pass.
#[derive(Default)]
pub struct Inventory {
    /// ListWorkspaces per (region, role) that a tag target uses.
    pub listings: HashMap<Scope, Result<Vec<Workspace>, ApiError>>,
    /// DescribeWorkspace per workspace a target names by ID.
    pub described: HashMap<WorkspaceKey, Result<Workspace, ApiError>>,
    /// ListWorkspaceServiceAccounts per usable workspace a token target selects by pattern
    /// (made this pass, or remembered from an earlier one).
    pub accounts: HashMap<WorkspaceKey, Result<Vec<ServiceAccount>, ApiError>>,
    /// The workspaces whose token targets all name their service accounts exactly.
    pub deferred: HashMap<WorkspaceKey, std::sync::Arc<Deferred>>,
    /// The workspaces whose `accounts` are remembered, not listed this pass: listed afresh,
    /// once, when a credential needs it.
    pub remembered: HashMap<WorkspaceKey, std::sync::Arc<Deferred>>,
}

/// Why a workspace (or a target) could not be examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Describe(ApiError),
    ListWorkspaces(ApiError),
    NoTaggedWorkspace(BTreeMap<String, String>),
    /// The workspace is being created, deleted, or failed.
    Unusable {
        status: String,
    },
    /// A token target on a workspace older than Grafana 9.
    NoServiceAccounts {
        grafana_version: String,
    },
    ListServiceAccounts(ApiError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Describe(e) => write!(f, "DescribeWorkspace: {e}"),
            Problem::ListWorkspaces(e) => write!(f, "ListWorkspaces: {e}"),
            Problem::NoTaggedWorkspace(tags) => write!(
                f,
                "no workspace carries the tags {}",
                tags.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Problem::Unusable { status } => write!(f, "workspace is {status}, not usable"),
            Problem::NoServiceAccounts { grafana_version } => write!(
                f,
                "workspace runs Grafana {grafana_version}, which has no service accounts (Grafana 9 or later is needed; manage it with api_keys)"
            ),
            Problem::ListServiceAccounts(e) => write!(f, "ListWorkspaceServiceAccounts: {e}"),
        }
    }
}

/// A problem that is no one credential's: a target selects nothing it can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassProblem {
    pub target: String,
    pub workspace: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for PassProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.workspace {
            Some(ws) => write!(f, "{}: workspace {ws}: {}", self.target, self.problem),
            None => write!(f, "{}: {}", self.target, self.problem),
        }
    }
}

/// A credential a target selects, with what discovery found of its service account.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Index into `config.targets`.
    pub target: usize,
    pub kind: CredentialKind,
    pub scope: Scope,
    /// Shared by the workspace's credentials.
    pub workspace: Arc<Workspace>,
    /// The service account's name, or the API key's base name.
    pub name: String,
    /// The service account (listed, or to be listed on demand), or why the workspace could not
    /// be examined.
    pub account: Result<AccountView, Problem>,
    /// The API key (its base name) this service account's tokens replace, on a workspace that
    /// runs Grafana 12 or later: its secret is the key's (`migration`).
    pub migrated_from: Option<String>,
}

/// On Grafana 12 or later an API-key target's key becomes a service account: its name, from
/// the target's `migrated_service_account` template. `None`: no migration applies.
pub fn migration_of(target: &Target, ws: &Workspace, key: &str) -> Option<String> {
    (!ws.supports_api_keys() && ws.supports_service_accounts())
        .then(|| migration_name(target, ws, key))
        .flatten()
}

/// The name Grafana's API-key migration gives the service account a key becomes, before the
/// key's name (grafana/grafana `pkg/services/serviceaccounts/database/store.go`,
/// `CreateServiceAccountFromApikey`).
pub const GRAFANA_MIGRATION_PREFIX: &str = "sa-autogen-";

/// The service account the key `key` becomes once `ws` runs Grafana 12 or later, whatever it
/// runs now; `None` when the target opted out (`migrate_api_keys = false`).
pub fn migration_name(target: &Target, ws: &Workspace, key: &str) -> Option<String> {
    let Manages::ApiKeys {
        migrate_to: Some(template),
        ..
    } = &target.manages
    else {
        return None;
    };
    Some(crate::config::render_template(
        template,
        &[("key_name", key), ("workspace_id", &ws.id)],
    ))
}

/// The region and role a target's calls go to.
pub fn scope_of(config: &Config, target: &Target) -> Scope {
    (
        target.region.clone().or(config.aws.region.clone()),
        target.role_arn.clone(),
    )
}

/// The kind of the credentials a target manages.
pub fn kind_of(target: &Target) -> CredentialKind {
    match &target.manages {
        Manages::ServiceAccounts { bootstrap, .. } => CredentialKind::Token {
            bootstrap: *bootstrap,
        },
        Manages::ApiKeys { role, .. } => CredentialKind::ApiKey { role: *role },
    }
}

/// Why a workspace cannot serve the target's credentials, if it cannot.
fn unusable(ws: &Workspace, kind: CredentialKind) -> Option<Problem> {
    if matches!(
        ws.status.as_str(),
        "CREATING" | "DELETING" | "FAILED" | "CREATION_FAILED" | "DELETION_FAILED"
    ) {
        return Some(Problem::Unusable {
            status: ws.status.clone(),
        });
    }
    (matches!(kind, CredentialKind::Token { .. }) && !ws.supports_service_accounts()).then(|| {
        Problem::NoServiceAccounts {
            grafana_version: ws.grafana_version.clone(),
        }
    })
}

/// A workspace a target selects, or the ID and the problem of one that could not be described.
type Chosen = Result<Workspace, (String, Problem)>;

/// The workspaces a target selects, as far as the inventory tells; a failed listing or an
/// empty tag match is a target problem.
fn workspaces_of(target: &Target, scope: &Scope, inv: &Inventory) -> Result<Vec<Chosen>, Problem> {
    match &target.workspaces {
        WorkspaceSelector::Ids(ids) => Ok(ids
            .iter()
            .map(
                |id| match inv.described.get(&(scope.0.clone(), id.clone())) {
                    Some(Ok(w)) => Ok(w.clone()),
                    Some(Err(e)) => Err((id.clone(), Problem::Describe(e.clone()))),
                    None => Err((
                        id.clone(),
                        Problem::Describe(ApiError::Other("not fetched".into())),
                    )),
                },
            )
            .collect()),
        WorkspaceSelector::Tags(tags) => match inv.listings.get(scope) {
            Some(Ok(all)) => {
                let selected: Vec<_> = all
                    .iter()
                    .filter(|w| tags.iter().all(|(k, v)| w.tags.get(k) == Some(v)))
                    .cloned()
                    .map(Ok)
                    .collect();
                if selected.is_empty() {
                    Err(Problem::NoTaggedWorkspace(tags.clone()))
                } else {
                    Ok(selected)
                }
            }
            Some(Err(e)) => Err(Problem::ListWorkspaces(e.clone())),
            None => Err(Problem::ListWorkspaces(ApiError::Other(
                "not fetched".into(),
            ))),
        },
    }
}

/// The credentials the targets select from what was fetched, and the problems that are no
/// credential's own. Pure.
pub fn select(config: &Config, inv: &Inventory) -> (Vec<Selected>, Vec<PassProblem>) {
    let mut found = Vec::new();
    let mut migrations = Vec::new();
    let mut problems = Vec::new();
    for (ti, target) in config.targets.iter().enumerate() {
        let scope = scope_of(config, target);
        let kind = kind_of(target);
        let workspaces = match workspaces_of(target, &scope, inv) {
            Ok(w) => w,
            Err(problem) => {
                problems.push(PassProblem {
                    target: target.label.clone(),
                    workspace: None,
                    problem,
                });
                continue;
            }
        };
        let mut select_one = |ws: Arc<Workspace>, name: &str, account| {
            found.push(Selected {
                target: ti,
                kind,
                scope: scope.clone(),
                workspace: ws,
                name: name.to_owned(),
                account,
                migrated_from: None,
            })
        };
        for ws in workspaces {
            // A workspace-level problem fails each exactly named credential, so it is seen;
            // a target that names only globs reports it as a pass problem.
            let problem = match ws.map(Arc::new) {
                Err((id, problem)) => Some((Arc::new(placeholder(&id)), problem)),
                Ok(ws) => match unusable(&ws, kind) {
                    Some(problem) => Some((ws, problem)),
                    None => match accounts_in(target, kind, &scope, &ws, inv) {
                        Ok(accounts) => {
                            for (name, account) in accounts {
                                match migration_of(target, &ws, &name) {
                                    None => select_one(ws.clone(), &name, Ok(account)),
                                    Some(sa) => migrations
                                        .push(migrated(ti, target, &scope, &ws, &name, sa, inv)),
                                }
                            }
                            None
                        }
                        Err(problem) => Some((ws, problem)),
                    },
                },
            };
            let Some((ws, problem)) = problem else {
                continue;
            };
            let mut any = false;
            for name in target.exact_names() {
                any = true;
                select_one(ws.clone(), name, Err(problem.clone()));
            }
            if !any {
                problems.push(PassProblem {
                    target: target.label.clone(),
                    workspace: Some(ws.id.clone()),
                    problem,
                });
            }
        }
    }
    found.extend(migrations);
    (found, problems)
}

/// The credentials of one usable workspace: each API key named; each service account a
/// pattern matches, and each one named exactly that does not exist (to bootstrap or report).
fn accounts_in(
    target: &Target,
    kind: CredentialKind,
    scope: &Scope,
    ws: &Workspace,
    inv: &Inventory,
) -> Result<Vec<(String, AccountView)>, Problem> {
    if let CredentialKind::ApiKey { .. } = kind {
        // Keys cannot be listed: each configured key is a credential.
        return Ok(target
            .exact_names()
            .map(|n| (n.to_owned(), AccountView::Listed(None)))
            .collect());
    }
    let key = (scope.0.clone(), ws.id.clone());
    if let (None, Some(d)) = (inv.accounts.get(&key), inv.deferred.get(&key)) {
        return Ok(target
            .exact_service_accounts()
            .map(|n| (n.to_owned(), AccountView::Deferred(d.clone())))
            .collect());
    }
    let list = listed(scope, ws, inv)?;
    if let Some(fresh) = inv.remembered.get(&key) {
        return Ok(remembered_accounts(target, list, fresh));
    }
    let mut out: Vec<(String, AccountView)> = list
        .iter()
        .filter(|sa| target.matches_service_account(&sa.name))
        .map(|sa| (sa.name.clone(), AccountView::Listed(Some(sa.clone()))))
        .collect();
    let present: BTreeSet<String> = out.iter().map(|(n, _)| n.clone()).collect();
    for name in target.exact_service_accounts() {
        if !present.contains(name) {
            out.push((name.to_owned(), AccountView::Listed(None)));
        }
    }
    Ok(out)
}

/// The credentials of a workspace whose listing is remembered: each account the remembered
/// listing shows a pattern matching, and each account named exactly (present or not), which is
/// looked up afresh when its record does not stand, as for a target that names every account.
fn remembered_accounts(
    target: &Target,
    list: &[ServiceAccount],
    fresh: &Arc<Deferred>,
) -> Vec<(String, AccountView)> {
    let named: BTreeSet<&str> = target.exact_service_accounts().collect();
    let mut out: Vec<(String, AccountView)> = list
        .iter()
        .filter(|sa| !named.contains(sa.name.as_str()) && target.matches_service_account(&sa.name))
        .map(|sa| {
            let view = AccountView::Remembered(sa.clone(), fresh.clone());
            (sa.name.clone(), view)
        })
        .collect();
    out.extend(
        named
            .into_iter()
            .map(|n| (n.to_owned(), AccountView::Deferred(fresh.clone()))),
    );
    out
}

/// An API key on Grafana 12 or later, as the token credential of the service account `sa` that
/// takes its place (created with the key's role when missing) in the key's secret.
fn migrated(
    ti: usize,
    target: &Target,
    scope: &Scope,
    ws: &Arc<Workspace>,
    key: &str,
    sa: String,
    inv: &Inventory,
) -> Selected {
    let role = match &target.manages {
        Manages::ApiKeys { role, .. } => *role,
        Manages::ServiceAccounts { .. } => unreachable!("only API keys migrate"),
    };
    // The account of that name; else the one the workspace's own upgrade made of the live key
    // (`grafana_migrated`), adopted; else none: created.
    let listing = listed(scope, ws, inv);
    let (sa, account) = match listing {
        Ok(list) => {
            let named = |n: &str| list.iter().find(|a| a.name == n).cloned();
            // A name of the user's own is created if missing; Grafana's account is adopted
            // only under the default name.
            let grafanas = match &target.manages {
                Manages::ApiKeys {
                    migrate_to: Some(t),
                    ..
                } if t == crate::config::MIGRATED_DEFAULT => {
                    grafana_migrated(list, &target.policy.name_prefix, key)
                }
                _ => None,
            };
            match (named(&sa), grafanas) {
                (Some(a), _) => (sa, Ok(AccountView::Listed(Some(a)))),
                (None, Some(a)) => (a.name.clone(), Ok(AccountView::Listed(Some(a)))),
                (None, None) => (sa, Ok(AccountView::Listed(None))),
            }
        }
        Err(problem) => (sa, Err(problem)),
    };
    Selected {
        target: ti,
        kind: CredentialKind::Token {
            bootstrap: Some(role),
        },
        scope: scope.clone(),
        workspace: ws.clone(),
        name: sa,
        account,
        migrated_from: Some(key.to_owned()),
    }
}

/// The account Grafana's own migration made of this credential's key: `sa-autogen-<key name>`,
/// a key name being `<prefix>-<base>-<generation>`; of several (older generations kept for
/// their grace period), the newest generation's.
fn grafana_migrated(list: &[ServiceAccount], prefix: &str, base: &str) -> Option<ServiceAccount> {
    let stem = format!("{GRAFANA_MIGRATION_PREFIX}{prefix}-{base}-");
    list.iter()
        .filter_map(|a| {
            let generation: u64 = a.name.strip_prefix(&stem)?.parse().ok()?;
            Some((generation, a))
        })
        .max_by_key(|(generation, _)| *generation)
        .map(|(_, a)| a.clone())
}

/// The service accounts fetched for a workspace.
fn listed<'a>(
    scope: &Scope,
    ws: &Workspace,
    inv: &'a Inventory,
) -> Result<&'a Vec<ServiceAccount>, Problem> {
    match inv.accounts.get(&(scope.0.clone(), ws.id.clone())) {
        Some(Ok(list)) => Ok(list),
        Some(Err(e)) => Err(Problem::ListServiceAccounts(e.clone())),
        None => Err(Problem::ListServiceAccounts(ApiError::Other(
            "not fetched".into(),
        ))),
    }
}

/// A workspace that could not be described: only its ID is known.
fn placeholder(id: &str) -> Workspace {
    Workspace {
        id: id.to_owned(),
        name: String::new(),
        endpoint: String::new(),
        grafana_version: String::new(),
        status: String::new(),
        tags: BTreeMap::new(),
    }
}

/// Fetches what `select` will read, `concurrency` calls at a time: first every describe and
/// listing of workspaces, then the service accounts of every usable workspace a token target
/// selects, but those `memory` remembers (a long-running process's; `None` for a pass that must
/// list everything, `plan`). Returns the inventory and the services of every scope the targets
/// use.
pub async fn fetch(
    config: &Config,
    connector: &dyn Connector,
    memory: Option<&Arc<Listings>>,
    now: chrono::DateTime<chrono::Utc>,
) -> (Inventory, HashMap<Scope, Services>) {
    let concurrency = config.daemon.concurrency.max(1);
    let mut scopes: HashMap<Scope, Services> = HashMap::new();
    for target in &config.targets {
        let scope = scope_of(config, target);
        if let std::collections::hash_map::Entry::Vacant(slot) = scopes.entry(scope) {
            let (region, role) = slot.key().clone();
            slot.insert(connector.services(region.as_deref(), role.as_deref()).await);
        }
    }
    let mut inv = Inventory::default();
    let (named, list) = workspace_calls(config);
    let listed = per_scope(
        list.into_iter().map(|scope| (scope, ())).collect(),
        concurrency,
        |scope, ()| {
            let s = scopes[&scope].clone();
            async move {
                let r = s.grafana.list_workspaces().await;
                (scope, r)
            }
        },
    )
    .await;
    inv.listings.extend(listed);
    // A workspace named by ID is read from its scope's listing when there is one; described
    // when there is none, or the listing failed or does not hold it (so a missing workspace
    // gets DescribeWorkspace's own answer).
    let mut describe = Vec::new();
    for (scope, id) in named {
        let found = match inv.listings.get(&scope) {
            Some(Ok(all)) => all.iter().find(|w| w.id == id).cloned(),
            _ => None,
        };
        match found {
            Some(ws) => {
                inv.described.insert((scope.0, id), Ok(ws));
            }
            None => describe.push((scope, id)),
        }
    }
    let described = per_scope(describe, concurrency, |scope, id| {
        let s = scopes[&scope].clone();
        async move {
            let r = s.grafana.describe_workspace(&id).await;
            ((scope.0, id), r)
        }
    })
    .await;
    inv.described.extend(described);
    let (wanted, deferred) = account_calls(config, &inv);
    for (scope, id) in deferred {
        let d = Deferred::new(scopes[&scope].grafana.clone(), &id);
        inv.deferred.insert((scope.0, id), std::sync::Arc::new(d));
    }
    if let Some(memory) = memory {
        memory.retain(&wanted.keys().cloned().collect());
    }
    let mut to_list = Vec::new();
    for (at, interval) in wanted {
        let recalled = memory
            .zip(interval)
            .and_then(|(m, interval)| Some((m, interval, m.recall(&at, now)?)));
        let Some((m, interval, accounts)) = recalled else {
            to_list.push((at.0.clone(), (at.1, interval)));
            continue;
        };
        let mut fresh = Deferred::new(scopes[&at.0].grafana.clone(), &at.1);
        let key = (at.0 .0.clone(), at.1.clone());
        fresh.memory = Some(Memory {
            listings: m.clone(),
            at,
            interval,
            now,
        });
        inv.remembered.insert(key.clone(), Arc::new(fresh));
        inv.accounts.insert(key, Ok(accounts));
    }
    if memory.is_some() {
        tracing::debug!(
            listed = to_list.len(),
            remembered = inv.remembered.len(),
            "service-account listings of the workspaces patterns select"
        );
    }
    let fetched = per_scope(to_list, concurrency, |scope, (id, interval)| {
        let s = scopes[&scope].clone();
        async move {
            let r = s.grafana.list_service_accounts(&id).await;
            if let (Some(m), Some(interval), Ok(accounts)) = (memory, interval, &r) {
                m.remember(&(scope.clone(), id.clone()), accounts, now, interval);
            }
            ((scope.0, id), r)
        }
    })
    .await;
    inv.accounts.extend(fetched);
    (inv, scopes)
}

/// Runs `call` over `items`, `concurrency` at a time per scope and every scope at once, as the
/// pass reconciles: each scope has its own limiters, so 20 regions are discovered in about the
/// time of one, and a slow or throttled scope holds up only its own calls.
async fn per_scope<I, T, F, Fut>(items: Vec<(Scope, I)>, concurrency: usize, call: F) -> Vec<T>
where
    F: Fn(Scope, I) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut by_scope: BTreeMap<Scope, Vec<I>> = BTreeMap::new();
    for (scope, item) in items {
        by_scope.entry(scope).or_default().push(item);
    }
    let call = &call;
    let scopes = by_scope.into_iter().map(|(scope, items)| {
        futures::stream::iter(items)
            .map(move |item| call(scope.clone(), item))
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
    });
    futures::future::join_all(scopes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The scopes whose workspaces a pass lists (ListWorkspaces), for the IAM policy.
pub fn listed_scopes(config: &Config) -> BTreeSet<Scope> {
    workspace_calls(config).1.into_iter().collect()
}

/// The workspaces named by ID (scope, workspace ID) and the listings (scope) the targets need,
/// each once. A scope is listed when a tag target needs it, or when it names more than one
/// workspace: one ListWorkspaces then stands for their DescribeWorkspace calls (a page holds
/// 100 workspaces; AMG's default quota is 5 per account and region).
fn workspace_calls(config: &Config) -> (Vec<(Scope, String)>, Vec<Scope>) {
    let mut named = Vec::new();
    let mut seen_ids = BTreeSet::new();
    let mut lists = BTreeSet::new();
    let mut per_scope: BTreeMap<Scope, usize> = BTreeMap::new();
    for target in &config.targets {
        let scope = scope_of(config, target);
        match &target.workspaces {
            WorkspaceSelector::Ids(ids) => {
                for id in ids {
                    if seen_ids.insert((scope.0.clone(), id.clone())) {
                        named.push((scope.clone(), id.clone()));
                        *per_scope.entry(scope.clone()).or_default() += 1;
                    }
                }
            }
            WorkspaceSelector::Tags(_) => {
                lists.insert(scope);
            }
        }
    }
    lists.extend(
        per_scope
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(scope, _)| scope),
    );
    (named, lists.into_iter().collect())
}

/// How long a listing of a workspace may be remembered: the shortest `audit_interval` of the
/// token targets that select its accounts by pattern; `None` (list every pass) when one of them
/// audits on every pass, or an API key becomes a service account there (whether that account
/// exists decides a creation: only a listing made now may say).
type Remember = Option<std::time::Duration>;

/// The service-account listings the targets need: each usable workspace a token target selects
/// by pattern (its accounts are known only from a listing) or where an API key becomes a
/// service account, once per region, with how long its listing may be remembered; and the
/// workspaces whose token targets all name their accounts exactly, whose listing is deferred
/// (`Deferred`).
fn account_calls(
    config: &Config,
    inv: &Inventory,
) -> (BTreeMap<WorkspaceAt, Remember>, Vec<WorkspaceAt>) {
    let mut wanted: BTreeMap<WorkspaceAt, Remember> = BTreeMap::new();
    let mut deferred = BTreeSet::new();
    for target in &config.targets {
        let kind = kind_of(target);
        let scope = scope_of(config, target);
        let Ok(workspaces) = workspaces_of(target, &scope, inv) else {
            continue;
        };
        for ws in workspaces.into_iter().flatten() {
            // A token target's workspaces, and those where an API key becomes a service account.
            let lists = match kind {
                CredentialKind::Token { .. } => unusable(&ws, kind).is_none(),
                CredentialKind::ApiKey { .. } => target
                    .exact_names()
                    .any(|key| migration_of(target, &ws, key).is_some()),
            };
            let exact = target.names_every_service_account();
            if !lists {
                continue;
            }
            if exact {
                deferred.insert((scope.clone(), ws.id));
                continue;
            }
            let interval = &target.policy.audit_interval;
            let remember = match kind {
                CredentialKind::Token { .. } => Some(*interval).filter(|i| !i.is_zero()),
                CredentialKind::ApiKey { .. } => None,
            };
            wanted
                .entry((scope.clone(), ws.id))
                .and_modify(|r| *r = r.zip(remember).map(|(a, b)| a.min(b)))
                .or_insert(remember);
        }
    }
    let deferred = deferred
        .into_iter()
        .filter(|key| !wanted.contains_key(key))
        .collect();
    (wanted, deferred)
}
