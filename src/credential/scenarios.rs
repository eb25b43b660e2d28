//! Scenarios: one managed credential through `reconcile`, against the in-memory fakes, one
//! branch of the rotation protocol per test (issue 12, item 3). Each test asserts what a user
//! would notice: what the secret's AWSCURRENT holds and whether its key opens Grafana, which
//! tokens or keys exist, the report's status and error, and what is tagged on the secret.
//! Scenarios that apply to both kinds are written once (`async fn`) and run for each.
//!
//! Time: `reconcile` reads the wall clock itself. A world takes its `now` from that clock before
//! each pass and hands the same instant to the fakes (the secret store's clock, the verifier's);
//! what happened before a scenario starts is seeded at times in the past. What must happen
//! *later* within a scenario cannot wait for the wall clock, so a grace period or orphan margin
//! is shortened to zero instead (the decision a pass that much later makes), and the
//! verification record on the secret is aged (`World::age_verification_record`).
//!
//! Races between two rotators are made deterministic by `Meddled`: what the other rotator does
//! runs just before this one's call of a named operation.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Duration as ChronoDuration;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::execute::Services;
use super::records::{self, VerifyBackoff, UNPUBLISHED_KEYS_TAG, VERIFICATION_TAG};
use super::{
    api_key, reconcile, token, AccountView, Credential, CredentialKind, CredentialReport, Mode,
    Status,
};
use crate::aws::fake::{
    ops, AccountSeed, Call, Failing, FakeGrafana, FakeSecrets, FakeVerifier, Fault, WorkspaceSeed,
};
use crate::aws::{ApiError, Grafana, SecretStore};
use crate::config::{Policy, Strategy};
use crate::daemon::metrics::Metrics;
use crate::model::{
    rfc3339, Binding, Key, NewApiKey, NewToken, PermissionChange, PermissionError, Role,
    SecretFormat, SecretSpec, ServiceAccount, Token, Workspace, AWSCURRENT, AWSPENDING,
    AWSPREVIOUS,
};

// ---- the world ----------------------------------------------------------------------------

const WS: &str = "g-0123456789";
/// The service account, or the API key's base name.
const NAME: &str = "terraform";
const SECRET: &str = "amg/g-0123456789/terraform";
const PREFIX: &str = "amgrot";
const ROLE: Role = Role::Admin;
const TTL: Duration = Duration::from_secs(30 * 86400);

/// Operations that change nothing: all a blocked credential or a plan may call.
const READS: &[&str] = &[
    ops::LIST_WORKSPACES,
    ops::DESCRIBE_WORKSPACE,
    ops::LIST_SERVICE_ACCOUNTS,
    ops::LIST_TOKENS,
    ops::LIST_PERMISSIONS,
    ops::DESCRIBE_SECRET,
    ops::GET_SECRET_VALUE,
    ops::LIST_SECRETS,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Token,
    ApiKey,
}

fn days(n: i64) -> ChronoDuration {
    ChronoDuration::days(n)
}

fn minutes(n: i64) -> ChronoDuration {
    ChronoDuration::minutes(n)
}

fn timed_out() -> ApiError {
    ApiError::Unavailable {
        message: "timed out".into(),
        retry_after: None,
    }
}

fn denied() -> ApiError {
    ApiError::AccessDenied("AccessDeniedException: not authorized".into())
}

fn throttled() -> ApiError {
    ApiError::Throttled {
        message: "ThrottlingException: Rate exceeded".into(),
        retry_after: None,
    }
}

/// The defaults of `config/example.toml`, without spread so due times are exact.
fn policy() -> Policy {
    Policy {
        strategy: Strategy::Overlap,
        token_ttl: TTL,
        rotate_before: Duration::from_secs(7 * 86400),
        rotation_spread: Duration::ZERO,
        grace_period: Duration::from_secs(3600),
        quiet_period: Duration::from_secs(7200),
        max_overlap: Duration::from_secs(3 * 86400),
        orphan_margin: Duration::from_secs(900),
        audit_interval: Duration::from_secs(3600),
        name_prefix: PREFIX.into(),
        secret_name: "amg/{workspace_id}/{service_account}".into(),
        secret_format: SecretFormat::Json,
        secret_description: "rotated by amg-token-rotator".into(),
        kms_key_id: None,
        secret_tags: BTreeMap::new(),
        verify: false,
        grafana_url: None,
        liveness_checks: false,
        delete_expired_foreign_tokens: false,
    }
}

/// A credential as the secret publishes it.
#[derive(Debug)]
struct Published {
    /// The token's or API key's name.
    name: String,
    key: Key,
    /// The secret version that holds it.
    version: String,
    /// What AMG addresses it by: a token's ID, an API key's name.
    id: String,
}

/// One workspace with the service account `terraform`, one secret store, the workspace's
/// Grafana, and the credential. The fakes are kept to seed and inspect; the rotator gets them
/// behind `Failing` (and `Meddled`), so a test can make any call fail.
struct World {
    kind: Kind,
    now: chrono::DateTime<chrono::Utc>,
    grafana: FakeGrafana,
    secrets: FakeSecrets,
    verifier: FakeVerifier,
    g: Meddled,
    s: Failing<FakeSecrets>,
    v: Failing<FakeVerifier>,
    metrics: Metrics,
    cred: Credential,
}

impl World {
    fn new(kind: Kind) -> World {
        World::of(
            kind,
            WorkspaceSeed::new(WS).with_service_account(AccountSeed::new(NAME, ROLE)),
        )
    }

    /// A world whose workspace has no service account yet.
    fn without_account() -> World {
        World::of(Kind::Token, WorkspaceSeed::new(WS))
    }

    fn of(kind: Kind, workspace: WorkspaceSeed) -> World {
        let now = chrono::Utc::now();
        let grafana = FakeGrafana::new().with_workspace(workspace);
        let secrets = FakeSecrets::new().with_now(now);
        let verifier = FakeVerifier::tied_to(&grafana, now);
        let cred = Credential {
            target: "targets[0]".into(),
            kind: match kind {
                Kind::Token => CredentialKind::Token { bootstrap: None },
                Kind::ApiKey => CredentialKind::ApiKey { role: ROLE },
            },
            workspace: grafana.workspace(WS).expect("seeded").into(),
            service_account: NAME.into(),
            secret: SecretSpec {
                name: SECRET.into(),
                format: SecretFormat::Json,
                kms_key_id: None,
                description: "rotated by amg-token-rotator".into(),
                tags: std::sync::Arc::new(
                    [("managed-by".to_string(), "amg-token-rotator".to_string())].into(),
                ),
            },
            policy: policy().into(),
            migrated_from: None,
            migrates_to: None,
        };
        World {
            kind,
            now,
            g: Meddled::new(Failing::new(grafana.clone())),
            s: Failing::new(secrets.clone()),
            v: Failing::new(verifier.clone()),
            grafana,
            secrets,
            verifier,
            metrics: Metrics::new(),
            cred,
        }
    }

    /// The credential's policy, to change for one scenario (it is shared, so copied first).
    fn policy_mut(&mut self) -> &mut Policy {
        std::sync::Arc::make_mut(&mut self.cred.policy)
    }

    /// New keys are proven against the workspace's Grafana before they are published.
    fn verifying(mut self) -> World {
        self.policy_mut().verify = true;
        self
    }

    fn recreating(mut self) -> World {
        self.policy_mut().strategy = Strategy::Recreate;
        self
    }

    // ---- passes ---------------------------------------------------------------------------

    async fn pass(&mut self) -> CredentialReport {
        self.reconcile(Mode::Apply).await
    }

    async fn plan(&mut self) -> CredentialReport {
        self.reconcile(Mode::Plan).await
    }

    /// One pass over the credential, as `Engine::pass` makes it: the workspace and service
    /// account as discovery reports them now, the fakes' clocks at the pass's time.
    async fn reconcile(&mut self, mode: Mode) -> CredentialReport {
        self.now = chrono::Utc::now();
        self.secrets.set_now(self.now);
        self.verifier.set_now(self.now);
        self.cred.workspace = self.grafana.workspace(WS).expect("seeded").into();
        let account = match self.kind {
            Kind::Token => Ok(AccountView::Listed(
                self.grafana
                    .service_accounts(WS)
                    .into_iter()
                    .find(|a| a.name == NAME),
            )),
            Kind::ApiKey => Ok(AccountView::Listed(None)),
        };
        let report = CredentialReport::new(&self.cred.target, self.cred.kind, WS, NAME);
        // Each reconcile is a pass of its own: a census of its own.
        let census = super::census::Census::new();
        let services = Services {
            grafana: &self.g,
            secrets: &self.s,
            census: &census,
            verifier: &self.v,
            metrics: &self.metrics,
        };
        reconcile(services, &self.cred, account, report, mode).await
    }

    // ---- faults and other rotators --------------------------------------------------------

    fn grafana_fails(&self, fault: Fault) {
        self.g.inner.add(fault);
    }

    fn secrets_fail(&self, fault: Fault) {
        self.s.add(fault);
    }

    /// Every service answers again.
    fn heal(&self) {
        self.g.inner.clear();
        self.s.clear();
        self.v.clear();
        self.verifier.heal();
    }

    /// What another rotator does just before this one next calls `operation`.
    fn before<F>(&self, operation: &'static str, meddling: F)
    where
        F: FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    {
        self.g
            .before
            .lock()
            .expect("meddling lock")
            .push((operation, Box::new(meddling)));
    }

    /// Handles on the fakes for seeding, also from inside a meddling.
    fn seeder(&self) -> Seeder {
        Seeder {
            kind: self.kind,
            grafana: self.grafana.clone(),
            secrets: self.secrets.clone(),
            cred: self.cred.clone(),
        }
    }

    /// Seeds what a pass `ago` left: the rotator's credential of that time (a token named
    /// with that time, or API key generation `generation`), published under `stages` (none:
    /// made, never published).
    async fn seed(&self, generation: u64, ago: ChronoDuration, stages: &[&str]) -> Published {
        let at = self.now - ago;
        let seeder = self.seeder();
        match self.kind {
            Kind::Token => {
                let name = token::token_name(PREFIX, NAME, &seeder.mark(at).await, at);
                seeder.token(at, &name, stages).await
            }
            Kind::ApiKey => seeder.key(at, generation, stages).await,
        }
    }

    /// Seeds a token of the recreate strategy's fixed name, made `ago`.
    async fn seed_fixed(&self, ago: ChronoDuration, stages: &[&str]) -> Published {
        let at = self.now - ago;
        let seeder = self.seeder();
        let name = seeder.fixed_name(at).await;
        seeder.token(at, &name, stages).await
    }

    /// As if the verification failure recorded on the secret had happened `by` earlier.
    async fn age_verification_record(&self, by: ChronoDuration) {
        let mut record = self.backoff().expect("a verification record");
        record.at -= by;
        self.secrets
            .tag(SECRET, VERIFICATION_TAG, &record.tag_value())
            .await
            .expect("tag");
    }

    // ---- what a user sees -----------------------------------------------------------------

    fn sa_id(&self) -> String {
        self.grafana.service_account_id(WS, NAME).expect("seeded")
    }

    /// The credentials that exist in the workspace: the service account's tokens, or the API
    /// keys, by name.
    fn live(&self) -> Vec<String> {
        let mut names: Vec<String> = match self.kind {
            Kind::Token => self
                .grafana
                .tokens(WS, &self.sa_id())
                .into_iter()
                .map(|t| t.name)
                .collect(),
            Kind::ApiKey => self
                .grafana
                .api_keys(WS)
                .into_iter()
                .map(|k| k.name)
                .collect(),
        };
        names.sort();
        names
    }

    /// What the version carrying `stage` publishes, read from the secret's JSON as a consumer
    /// reads it.
    fn published(&self, stage: &str) -> Option<Published> {
        let value = self.secrets.value(SECRET, stage)?;
        let doc: serde_json::Value = serde_json::from_str(&value).expect("the secret is JSON");
        let field = |k: &str| doc[k].as_str().map(str::to_owned);
        let name = field("tokenName")
            .or_else(|| field("keyName"))
            .expect("a name");
        Some(Published {
            id: field("tokenId").unwrap_or_else(|| name.clone()),
            key: Key::new(field("token").expect("a key")),
            version: self.secrets.version_with(SECRET, stage).expect("a version"),
            name,
        })
    }

    fn current(&self) -> Published {
        self.published(AWSCURRENT)
            .expect("AWSCURRENT holds a credential")
    }

    fn opens_grafana(&self, key: &Key) -> bool {
        self.grafana.key_works(WS, key, self.now)
    }

    fn backoff(&self) -> Option<VerifyBackoff> {
        VerifyBackoff::from_tags(&self.secrets.tags(SECRET))
    }

    fn unpublished_generations(&self) -> Vec<u64> {
        records::unpublished_keys(&self.secrets.tags(SECRET))
            .into_iter()
            .map(|u| u.generation)
            .collect()
    }

    /// Where the fakes' call logs are now.
    fn mark(&self) -> (usize, usize) {
        (self.grafana.calls().len(), self.secrets.calls().len())
    }

    /// The calls both fakes answered since `mark`.
    fn calls_since(&self, mark: (usize, usize)) -> Vec<Call> {
        let mut calls = self.grafana.calls().split_off(mark.0);
        calls.extend(self.secrets.calls().split_off(mark.1));
        calls
    }

    fn count_since(&self, mark: (usize, usize), operation: &str) -> usize {
        self.calls_since(mark)
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// The calls since `mark` that may have changed something.
    fn writes_since(&self, mark: (usize, usize)) -> Vec<String> {
        self.calls_since(mark)
            .into_iter()
            .filter(|c| !READS.contains(&c.operation))
            .map(|c| format!("{} {}", c.operation, c.target))
            .collect()
    }

    fn create_op(&self) -> &'static str {
        match self.kind {
            Kind::Token => ops::CREATE_TOKEN,
            Kind::ApiKey => ops::CREATE_API_KEY,
        }
    }
}

/// Seeds the fakes the way a rotator would have written them (through the fakes' own API, at
/// the time given).
#[derive(Clone)]
struct Seeder {
    kind: Kind,
    grafana: FakeGrafana,
    secrets: FakeSecrets,
    cred: Credential,
}

impl Seeder {
    /// Runs `f` with the secret store's clock at `at`, creating the secret first if missing.
    async fn at<T>(&self, at: chrono::DateTime<chrono::Utc>, f: impl AsyncFnOnce() -> T) -> T {
        let before = self.secrets.now();
        self.secrets.set_now(at);
        if !self.secrets.exists(SECRET) {
            self.secrets
                .create(&self.cred.secret, &[], None)
                .await
                .expect("create");
        }
        let out = f().await;
        self.secrets.set_now(before);
        out
    }

    /// The mark of the secret at the end of its token names.
    async fn mark(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        self.at(at, async || {
            let state = self.secrets.describe(SECRET).await.expect("describe");
            token::secret_mark(&state.expect("created"))
        })
        .await
    }

    async fn fixed_name(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        token::recreate_token_name(PREFIX, NAME, &self.mark(at).await)
    }

    /// A token named `name`, made at `at`, published under `stages`.
    async fn token(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        name: &str,
        stages: &[&str],
    ) -> Published {
        assert_eq!(self.kind, Kind::Token);
        let account = self
            .grafana
            .service_accounts(WS)
            .into_iter()
            .find(|a| a.name == NAME)
            .expect("seeded");
        let t = self
            .grafana
            .create_token(WS, &account.id, name, TTL, at)
            .await
            .expect("create token");
        let value =
            crate::model::secret_value(SecretFormat::Json, &self.cred.workspace, &account, &t);
        let version = token::version_id(WS, &account.id, &t.id, &t.name);
        self.publish(at, &version, &value, stages).await;
        Published {
            name: t.name,
            key: t.key,
            version,
            id: t.id,
        }
    }

    /// API key generation `generation`, made at `at`, published under `stages`.
    async fn key(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        generation: u64,
        stages: &[&str],
    ) -> Published {
        assert_eq!(self.kind, Kind::ApiKey);
        let name = api_key::key_name(PREFIX, NAME, generation);
        let k = self
            .grafana
            .create_api_key(WS, &name, ROLE, TTL, at)
            .await
            .expect("create API key");
        // What `ApiKeys::publication` writes, field by field: what consumers read.
        let value = serde_json::json!({
            "token": k.key.expose(),
            "grafanaUrl": self.cred.workspace.grafana_url(),
            "workspaceId": WS,
            "keyName": name,
            "keyRole": ROLE.as_str(),
            "expiresAt": rfc3339(k.expires_at),
            "createdAt": rfc3339(k.created_at),
        })
        .to_string();
        let version = api_key::key_version_id(WS, &name, k.created_at);
        self.publish(at, &version, &value, stages).await;
        Published {
            id: name.clone(),
            name,
            key: k.key,
            version,
        }
    }

    async fn publish(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        version: &str,
        value: &str,
        stages: &[&str],
    ) {
        self.at(at, async || {
            if !stages.is_empty() {
                self.secrets
                    .put_version(SECRET, version, value, stages)
                    .await
                    .expect("put");
            }
        })
        .await
    }
}

type Meddling = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// The rotator's Grafana: the fake behind `Failing`, and another rotator's moves, each run
/// once, just before this rotator's next call of the operation it names.
struct Meddled {
    inner: Failing<FakeGrafana>,
    before: Mutex<Vec<(&'static str, Meddling)>>,
}

impl Meddled {
    fn new(inner: Failing<FakeGrafana>) -> Meddled {
        Meddled {
            inner,
            before: Mutex::new(Vec::new()),
        }
    }

    async fn meddle(&self, operation: &'static str) {
        let due = {
            let mut before = self.before.lock().expect("meddling lock");
            let at = before.iter().position(|(op, _)| *op == operation);
            at.map(|i| before.remove(i).1)
        };
        if let Some(m) = due {
            m().await;
        }
    }
}

#[async_trait]
impl Grafana for Meddled {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError> {
        self.meddle(ops::LIST_WORKSPACES).await;
        self.inner.list_workspaces().await
    }

    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError> {
        self.meddle(ops::DESCRIBE_WORKSPACE).await;
        self.inner.describe_workspace(workspace_id).await
    }

    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError> {
        self.meddle(ops::LIST_SERVICE_ACCOUNTS).await;
        self.inner.list_service_accounts(workspace_id).await
    }

    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError> {
        self.meddle(ops::CREATE_SERVICE_ACCOUNT).await;
        self.inner
            .create_service_account(workspace_id, name, role)
            .await
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError> {
        self.meddle(ops::LIST_TOKENS).await;
        self.inner
            .list_tokens(workspace_id, service_account_id)
            .await
    }

    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewToken, ApiError> {
        self.meddle(ops::CREATE_TOKEN).await;
        self.inner
            .create_token(workspace_id, service_account_id, name, ttl, now)
            .await
    }

    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.meddle(ops::DELETE_TOKEN).await;
        self.inner
            .delete_token(workspace_id, service_account_id, token_id)
            .await
    }

    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewApiKey, ApiError> {
        self.meddle(ops::CREATE_API_KEY).await;
        self.inner
            .create_api_key(workspace_id, name, role, ttl, now)
            .await
    }

    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError> {
        self.meddle(ops::DELETE_API_KEY).await;
        self.inner.delete_api_key(workspace_id, name).await
    }

    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError> {
        self.meddle(ops::LIST_PERMISSIONS).await;
        self.inner.list_permissions(workspace_id).await
    }

    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError> {
        self.meddle(ops::UPDATE_PERMISSIONS).await;
        self.inner.update_permissions(workspace_id, changes).await
    }
}

/// Names, sorted as `World::live` lists them.
fn names<const N: usize>(names: [&str; N]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

fn did(report: &CredentialReport, needle: &str) -> bool {
    report.done.iter().any(|d| d.contains(needle))
}

// ---- first run ----------------------------------------------------------------------------

async fn first_run_publishes_a_working_credential(kind: Kind) {
    let mut w = World::new(kind);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert_eq!(r.error, None);
    assert!(did(&r, "create secret"), "{:?}", r.done);
    assert!(did(&r, "rotate (first_run)"), "{:?}", r.done);
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(w.live(), names([&current.name]));
    if kind == Kind::ApiKey {
        assert_eq!(current.name, "amgrot-terraform-1");
    }
    assert_eq!(
        w.secrets.tags(SECRET).get("managed-by").map(String::as_str),
        Some("amg-token-rotator")
    );
    assert_eq!(w.secrets.version_with(SECRET, AWSPENDING), None);
    let expires = r.expires_at.expect("the report names the expiry");
    assert!((expires - (w.now + days(30))).num_seconds().abs() <= 5);
}

#[tokio::test]
async fn first_run_creates_the_secret_and_publishes_a_working_token() {
    first_run_publishes_a_working_credential(Kind::Token).await;
}

#[tokio::test]
async fn first_run_creates_the_secret_and_publishes_a_working_api_key() {
    first_run_publishes_a_working_credential(Kind::ApiKey).await;
}

// ---- due rotation and grace ---------------------------------------------------------------

async fn a_due_credential_is_replaced_and_its_predecessor_kept_through_grace(kind: Kind) {
    let mut w = World::new(kind);
    // 25 days into its 30: within rotate_before (7 days) of its expiry.
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "rotate (due)"), "{:?}", r.done);
    let new = w.current();
    assert_ne!(new.name, old.name);
    assert!(w.opens_grafana(&new.key));
    // The old key stays AWSPREVIOUS and keeps working for consumers that cached it.
    assert_eq!(
        w.published(AWSPREVIOUS).map(|p| p.name),
        Some(old.name.clone())
    );
    assert!(w.opens_grafana(&old.key));
    assert_eq!(w.live(), names([&old.name, &new.name]));

    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    let notes = &r.plan.as_ref().expect("a plan").notes;
    assert!(notes.iter().any(|n| n.contains("grace")), "{notes:?}");
    assert!(w.live().contains(&old.name));

    // The grace period is over (shortened: `reconcile` reads the wall clock).
    w.policy_mut().grace_period = Duration::ZERO;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "superseded"), "{:?}", r.done);
    assert_eq!(w.live(), names([&new.name]));
    assert!(w.opens_grafana(&w.current().key));
    if kind == Kind::ApiKey {
        // The label was the key's only record: it goes with the key.
        assert!(w.published(AWSPREVIOUS).is_none());
    }
}

#[tokio::test]
async fn a_due_token_is_replaced_and_the_old_one_deleted_after_grace() {
    a_due_credential_is_replaced_and_its_predecessor_kept_through_grace(Kind::Token).await;
}

#[tokio::test]
async fn a_due_api_key_is_replaced_and_the_old_one_deleted_after_grace() {
    a_due_credential_is_replaced_and_its_predecessor_kept_through_grace(Kind::ApiKey).await;
}

// ---- publishing ---------------------------------------------------------------------------

async fn a_refused_publish_deletes_the_new_credential_again(kind: Kind) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, denied()));
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("PutSecretValue"),
        "{r:?}"
    );
    assert_eq!(w.count_since(mark, w.create_op()), 1);
    assert_eq!(w.live(), names([&old.name]), "the new one is deleted again");
    assert_eq!(w.current().name, old.name);
    assert!(w.opens_grafana(&old.key));
    assert_eq!(w.secrets.version_with(SECRET, AWSPENDING), None);
}

#[tokio::test]
async fn a_refused_publish_deletes_the_new_token_again() {
    a_refused_publish_deletes_the_new_credential_again(Kind::Token).await;
}

#[tokio::test]
async fn a_refused_publish_deletes_the_new_api_key_again() {
    a_refused_publish_deletes_the_new_credential_again(Kind::ApiKey).await;
}

async fn a_publish_that_timed_out_without_landing_deletes_the_new_credential(kind: Kind) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, timed_out()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    // The secret was looked at, the version is not there: nothing may hold the new key.
    assert_eq!(w.live(), names([&old.name]));
    assert_eq!(w.current().name, old.name);
    assert!(w.opens_grafana(&old.key));
}

#[tokio::test]
async fn a_publish_that_timed_out_without_landing_deletes_the_new_token() {
    a_publish_that_timed_out_without_landing_deletes_the_new_credential(Kind::Token).await;
}

#[tokio::test]
async fn a_publish_that_timed_out_without_landing_deletes_the_new_api_key() {
    a_publish_that_timed_out_without_landing_deletes_the_new_credential(Kind::ApiKey).await;
}

async fn a_publish_that_landed_but_lost_its_answer_is_published(kind: Kind) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, timed_out()).after_taking_effect());
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert_eq!(r.error, None);
    let new = w.current();
    assert_ne!(new.name, old.name);
    assert!(w.opens_grafana(&new.key), "published, and not deleted");
    assert_eq!(
        w.published(AWSPREVIOUS).map(|p| p.name),
        Some(old.name.clone())
    );
    assert_eq!(w.live(), names([&old.name, &new.name]));
}

#[tokio::test]
async fn a_put_secret_value_that_landed_but_lost_its_answer_publishes_the_token() {
    a_publish_that_landed_but_lost_its_answer_is_published(Kind::Token).await;
}

#[tokio::test]
async fn a_put_secret_value_that_landed_but_lost_its_answer_publishes_the_api_key() {
    a_publish_that_landed_but_lost_its_answer_is_published(Kind::ApiKey).await;
}

async fn a_publish_that_cannot_be_settled_keeps_the_new_credential_for_a_later_pass(kind: Kind) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    // The write times out and the secret cannot be read to see whether it landed (the first
    // DescribeSecret is the pass's own).
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, timed_out()));
    w.secrets_fail(Fault::new(ops::DESCRIBE_SECRET, 2, timed_out()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert_eq!(w.current().name, old.name);
    let kept: Vec<String> = w.live().into_iter().filter(|n| *n != old.name).collect();
    assert_eq!(kept.len(), 1, "the new credential may be published: kept");

    // The next pass finds it unpublished and rotates past it; it is left for the orphan sweep.
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let new = w.current();
    assert!(new.name != old.name && new.name != kept[0]);
    assert!(w.opens_grafana(&new.key));
    assert!(w.live().contains(&kept[0]));
}

#[tokio::test]
async fn a_publish_whose_outcome_cannot_be_settled_keeps_the_new_token() {
    a_publish_that_cannot_be_settled_keeps_the_new_credential_for_a_later_pass(Kind::Token).await;
}

#[tokio::test]
async fn a_publish_whose_outcome_cannot_be_settled_keeps_the_new_api_key() {
    a_publish_that_cannot_be_settled_keeps_the_new_credential_for_a_later_pass(Kind::ApiKey).await;
}

// ---- a missing secret made with its first version ------------------------------------------

/// The Secrets Manager operations called since `mark`, in order.
fn secrets_ops(w: &World, mark: (usize, usize)) -> Vec<&'static str> {
    w.secrets.calls()[mark.1..]
        .iter()
        .map(|c| c.operation)
        .collect()
}

/// The name of a token a pass minted `ago` for this secret before it was ever created: named
/// with the mark the secret will have where the store creates it.
async fn seed_token_of_an_uncreated_secret(w: &World, ago: ChronoDuration) -> Published {
    let location = w.secrets.location().await.expect("a known location");
    let at = w.now - ago;
    let name = token::token_name(PREFIX, NAME, &token::mark_at(Some(&location), SECRET), at);
    let account = w.sa_id();
    let t = w
        .grafana
        .create_token(WS, &account, &name, TTL, at)
        .await
        .expect("create token");
    Published {
        name: t.name,
        key: t.key,
        version: String::new(),
        id: t.id,
    }
}

#[tokio::test]
async fn a_first_token_is_published_by_creating_its_secret_with_it() {
    let mut w = World::new(Kind::Token);
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert_eq!(
        r.done,
        ["create secret", "rotate (first_run)"],
        "reported as before: the secret was created"
    );
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    // One write to Secrets Manager: the secret, its AWSCURRENT version and its records together.
    assert_eq!(
        secrets_ops(&w, mark),
        [ops::LIST_SECRETS, ops::DESCRIBE_SECRET, ops::CREATE_SECRET]
    );
    let tags = w.secrets.tags(SECRET);
    assert_eq!(
        tags.get("managed-by").map(String::as_str),
        Some("amg-token-rotator")
    );
    let promoted = records::Promotion::from_tags(&tags).expect("the promotion is recorded");
    assert_eq!(promoted.version, current.version);
    let audit = records::Audit::from_tags(&tags).expect("the first audit is recorded");
    assert_eq!(audit.token_id, current.id);
    // The name's mark, predicted before the secret existed, is the created secret's.
    let made = w.secrets.describe(SECRET).await.unwrap().expect("created");
    assert_eq!(
        token::mark_of(&current.name),
        Some(token::secret_mark(&made).as_str())
    );

    // So the next pass takes it for this secret's: steady, nothing written.
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
}

#[tokio::test]
async fn a_first_recreate_token_creates_its_secret_with_its_first_audit_record() {
    let mut w = World::new(Kind::Token).recreating();
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(
        secrets_ops(&w, mark),
        [ops::LIST_SECRETS, ops::DESCRIBE_SECRET, ops::CREATE_SECRET]
    );
    let audit = records::Audit::from_tags(&w.secrets.tags(SECRET)).expect("recorded");
    assert_eq!(audit.token_id, current.id);
    // The second pass plans over the record: no token listing, nothing written.
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.count_since(mark, ops::LIST_TOKENS), 0);
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
}

#[tokio::test]
async fn where_secrets_are_created_is_unknown_the_secret_is_made_before_its_token() {
    let mut w = World::new(Kind::Token);
    let _ = w.secrets.clone().with_unknown_location();
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(
        secrets_ops(&w, mark),
        [
            ops::LIST_SECRETS,
            ops::DESCRIBE_SECRET,
            ops::CREATE_SECRET,
            ops::TAG_RESOURCE,
            ops::PUT_SECRET_VALUE
        ]
    );
    let made = w.secrets.describe(SECRET).await.unwrap().expect("created");
    assert_eq!(
        token::mark_of(&current.name),
        Some(token::secret_mark(&made).as_str())
    );
}

#[tokio::test]
async fn a_token_minted_for_a_secret_never_created_is_its_orphan() {
    // A pass minted it and stopped before CreateSecret: no version will ever hold it.
    let mut w = World::new(Kind::Token);
    let young = seed_token_of_an_uncreated_secret(&w, minutes(1)).await;
    let old = seed_token_of_an_uncreated_secret(&w, minutes(20)).await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    // Older than orphan_margin (15 minutes): deleted; younger: kept, as another rotator's may
    // be about to be published. Neither is taken for another secret's and left to expire.
    assert!(did(&r, "(orphan)"), "{:?}", r.done);
    assert_eq!(w.live(), names([&young.name, &current.name]));
    let plan = r.plan.as_ref().expect("a plan");
    assert!(plan.left_behind.is_empty(), "{:?}", plan.left_behind);

    // Older than the current token, the young one is now taken for superseded by it: it goes
    // once the grace period is over (shortened: `reconcile` reads the wall clock).
    w.policy_mut().grace_period = Duration::ZERO;
    let r = w.pass().await;
    assert!(did(&r, "superseded"), "{:?}", r.done);
    assert_eq!(w.live(), names([&current.name]));
    assert!(!w.opens_grafana(&old.key) && !w.opens_grafana(&young.key));
}

#[tokio::test]
async fn a_secret_another_rotator_creates_meanwhile_is_left_to_it() {
    let mut w = World::new(Kind::Token);
    // Just before this rotator mints, another creates the secret (and will publish to it).
    let other = w.seeder();
    w.before(ops::CREATE_TOKEN, move || {
        async move {
            other
                .secrets
                .create(&other.cred.secret, &[], None)
                .await
                .expect("their create");
        }
        .boxed()
    });
    let r = w.pass().await;
    assert_ne!(r.status, Status::Failed, "{r:?}");
    assert_eq!(r.error, None, "{r:?}");
    assert!(did(&r, "left to another rotator"), "{:?}", r.done);
    assert_eq!(
        w.live(),
        Vec::<String>::new(),
        "the unpublished token is deleted"
    );
    assert_eq!(
        w.secrets.version_count(SECRET),
        0,
        "their secret is untouched"
    );

    // The next pass publishes into the secret that is there now.
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(w.opens_grafana(&w.current().key));
}

#[tokio::test]
async fn a_secret_create_that_landed_but_lost_its_answer_is_published() {
    let mut w = World::new(Kind::Token);
    w.secrets_fail(Fault::new(ops::CREATE_SECRET, 1, timed_out()).after_taking_effect());
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(w.live(), names([&current.name]));
}

#[tokio::test]
async fn a_secret_create_that_failed_deletes_the_new_token() {
    for fault in [denied(), timed_out()] {
        let mut w = World::new(Kind::Token);
        w.secrets_fail(Fault::new(ops::CREATE_SECRET, 1, fault.clone()));
        let r = w.pass().await;
        assert_eq!(r.status, Status::Failed, "{fault}: {r:?}");
        assert!(
            r.error.as_deref().unwrap_or("").contains("CreateSecret"),
            "{r:?}"
        );
        assert!(!w.secrets.exists(SECRET), "{fault}");
        assert_eq!(w.live(), Vec::<String>::new(), "{fault}: nothing holds it");
    }
}

#[tokio::test]
async fn a_first_token_that_fails_verification_leaves_an_empty_secret_holding_the_backoff() {
    let mut w = World::new(Kind::Token).verifying();
    w.verifier.fail_with_status(503);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert_eq!(
        w.live(),
        Vec::<String>::new(),
        "the unproven token is deleted"
    );
    assert_eq!(w.secrets.version_count(SECRET), 0, "no version");
    let record = w
        .backoff()
        .expect("the failure is recorded on the new secret");
    assert_eq!((record.failures, record.status), (1, Some(503)));

    // Without the record every pass would mint and delete again: it backs off instead.
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());

    w.age_verification_record(minutes(6)).await;
    w.heal();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(w.opens_grafana(&w.current().key));
    assert_eq!(w.backoff(), None);
}

// ---- an ambiguous create ------------------------------------------------------------------

async fn an_ambiguous_create_takes_the_next_name_and_its_credential_is_swept_later(kind: Kind) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    // The create takes effect, its answer is lost; the retry of the same name conflicts.
    w.grafana_fails(Fault::new(w.create_op(), 1, timed_out()).after_taking_effect());
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let new = w.current();
    assert!(w.opens_grafana(&new.key));
    let lost: Vec<String> = w
        .live()
        .into_iter()
        .filter(|n| *n != old.name && *n != new.name)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", w.live());
    let lost = lost[0].clone();
    match kind {
        Kind::Token => assert_eq!(new.name, format!("{lost}-2")),
        Kind::ApiKey => {
            assert_eq!(
                (lost.as_str(), new.name.as_str()),
                ("amgrot-terraform-2", "amgrot-terraform-3")
            );
            assert_eq!(w.unpublished_generations(), [2]);
        }
    }
    let conflicts = w
        .calls_since(mark)
        .iter()
        .filter(|c| c.operation == w.create_op() && c.outcome_label() == "conflict")
        .count();
    assert_eq!(conflicts, 1);

    // Young, it may be another rotator's: kept.
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert!(w.live().contains(&lost));

    // Older than orphan_margin (shortened: `reconcile` reads the wall clock), it is swept.
    w.policy_mut().orphan_margin = Duration::ZERO;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "(orphan)"), "{:?}", r.done);
    assert!(!w.live().contains(&lost));
    assert_eq!(w.current().name, new.name);
    assert!(w.unpublished_generations().is_empty());
}

#[tokio::test]
async fn an_ambiguous_token_create_then_a_conflict_takes_the_next_name_and_sweeps_the_lost_token_later(
) {
    an_ambiguous_create_takes_the_next_name_and_its_credential_is_swept_later(Kind::Token).await;
}

#[tokio::test]
async fn an_ambiguous_api_key_create_then_a_conflict_records_it_mints_the_next_and_sweeps_it_later()
{
    an_ambiguous_create_takes_the_next_name_and_its_credential_is_swept_later(Kind::ApiKey).await;
}

// ---- verification -------------------------------------------------------------------------

async fn a_failed_verification_publishes_nothing_and_backs_off(kind: Kind) {
    let mut w = World::new(kind).verifying();
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    // The workspace's Grafana answers 503 to everything (for API keys also to the check of the
    // current key, which the planner then takes for dead: a rotation either way).
    w.verifier.fail_with_status(503);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("verification of the new key failed"),
        "{error}"
    );
    assert!(error.contains("503"), "{error}");
    assert_eq!(w.current().name, old.name);
    assert!(w.opens_grafana(&old.key));
    assert_eq!(w.live(), names([&old.name]), "the unproven key is deleted");
    assert_eq!(w.secrets.version_count(SECRET), 1, "no version added");
    let record = w.backoff().expect("the failure is recorded on the secret");
    assert_eq!((record.failures, record.status), (1, Some(503)));

    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("failed 1 time(s) in a row"), "{error}");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());

    // Five minutes later the next attempt is allowed, and Grafana answers again.
    w.age_verification_record(minutes(6)).await;
    w.heal();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let new = w.current();
    assert_ne!(new.name, old.name);
    assert!(w.opens_grafana(&new.key));
    assert_eq!(w.backoff(), None, "a proven key clears the record");
}

#[tokio::test]
async fn a_token_that_fails_verification_is_not_published_and_the_next_attempt_backs_off() {
    a_failed_verification_publishes_nothing_and_backs_off(Kind::Token).await;
}

#[tokio::test]
async fn an_api_key_that_fails_verification_is_not_published_and_the_next_attempt_backs_off() {
    a_failed_verification_publishes_nothing_and_backs_off(Kind::ApiKey).await;
}

// ---- resuming an AWSPENDING ---------------------------------------------------------------

/// A verifying pass over a due credential whose promotion fails: AWSPENDING is left.
async fn interrupted_after_pending(kind: Kind) -> (World, Published, Published) {
    let mut w = World::new(kind).verifying();
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::UPDATE_SECRET_VERSION_STAGE, 1, throttled()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("UpdateSecretVersionStage"),
        "{r:?}"
    );
    assert_eq!(w.current().name, old.name);
    let pending = w.published(AWSPENDING).expect("AWSPENDING is left");
    w.heal();
    (w, old, pending)
}

async fn an_interrupted_promotion_is_verified_and_promoted_by_the_next_pass(kind: Kind) {
    let (mut w, old, pending) = interrupted_after_pending(kind).await;
    let asked = w.verifier.calls().len();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "resume pending"), "{:?}", r.done);
    assert_eq!(w.current().name, pending.name);
    assert!(w.opens_grafana(&w.current().key));
    assert_eq!(w.secrets.version_with(SECRET, AWSPENDING), None);
    assert_eq!(w.published(AWSPREVIOUS).map(|p| p.name), Some(old.name));
    // The pending key was proven before its promotion, and the current key sent nowhere.
    let proofs = w.verifier.calls().split_off(asked);
    assert_eq!(proofs.len(), 1, "{proofs:?}");
    assert!(proofs.iter().all(|c| c.status == Some(200)), "{proofs:?}");
    assert_eq!(w.live().len(), 2, "no second credential was minted");
}

#[tokio::test]
async fn an_interrupted_token_promotion_is_verified_and_promoted_by_the_next_pass() {
    an_interrupted_promotion_is_verified_and_promoted_by_the_next_pass(Kind::Token).await;
}

#[tokio::test]
async fn an_interrupted_api_key_promotion_is_verified_and_promoted_by_the_next_pass() {
    an_interrupted_promotion_is_verified_and_promoted_by_the_next_pass(Kind::ApiKey).await;
}

async fn a_pending_credential_that_fails_verification_is_deleted_and_cleared(kind: Kind) {
    let (mut w, old, pending) = interrupted_after_pending(kind).await;
    w.verifier.fail_with_status(401);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("verification of the new key failed"),
        "{r:?}"
    );
    assert!(!w.live().contains(&pending.name), "{:?}", w.live());
    assert_eq!(w.secrets.version_with(SECRET, AWSPENDING), None);
    assert_eq!(w.current().name, old.name);
    assert!(w.opens_grafana(&old.key));
    assert_eq!(w.backoff().map(|b| b.status), Some(Some(401)));
}

#[tokio::test]
async fn a_pending_token_that_fails_verification_is_deleted_and_its_label_cleared() {
    a_pending_credential_that_fails_verification_is_deleted_and_cleared(Kind::Token).await;
}

#[tokio::test]
async fn a_pending_api_key_that_fails_verification_is_deleted_and_its_label_cleared() {
    a_pending_credential_that_fails_verification_is_deleted_and_cleared(Kind::ApiKey).await;
}

// ---- API keys: the secret is their only record ----------------------------------------------

#[tokio::test]
async fn a_failed_deletion_of_the_only_record_of_a_key_postpones_a_due_promotion() {
    let mut w = World::new(Kind::ApiKey);
    // Generation 1 expired long ago and is still AWSPREVIOUS: its deletion keeps failing
    // (the role lacks grafana:DeleteWorkspaceApiKey). Generation 2 is due.
    let expired = w.seed(1, days(46), &[AWSCURRENT]).await;
    let current = w.seed(2, days(25), &[AWSCURRENT]).await;
    w.grafana_fails(Fault::new(ops::DELETE_API_KEY, 1, denied()).times(10));
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("postponed"), "{error}");
    assert!(error.contains(&expired.name), "{error}");
    assert_eq!(w.count_since(mark, ops::CREATE_API_KEY), 0, "no key minted");
    assert_eq!(
        w.published(AWSPREVIOUS).map(|p| p.name),
        Some(expired.name.clone())
    );
    assert_eq!(w.current().name, current.name);
    assert!(w.opens_grafana(&current.key));

    w.heal();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let new = w.current();
    assert_eq!(new.name, "amgrot-terraform-3");
    assert!(w.opens_grafana(&new.key));
    assert_eq!(w.live(), names([&current.name, &new.name]));
    assert_eq!(w.published(AWSPREVIOUS).map(|p| p.name), Some(current.name));
}

#[tokio::test]
async fn a_key_name_held_by_an_unpublished_key_is_recorded_and_the_next_generation_minted() {
    let mut w = World::new(Kind::ApiKey);
    let current = w.seed(1, days(25), &[AWSCURRENT]).await;
    // A pass three minutes ago created generation 2 and crashed before publishing it.
    let crashed = w.seed(2, minutes(3), &[]).await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let new = w.current();
    assert_eq!(new.name, "amgrot-terraform-3");
    assert!(w.opens_grafana(&new.key));
    // Not deleted at the conflict (it may be another rotator's), but recorded.
    assert!(w.live().contains(&crashed.name));
    assert_eq!(w.unpublished_generations(), [2]);
    let seen = records::unpublished_keys(&w.secrets.tags(SECRET))[0].seen_at;
    assert!((seen - w.now).num_seconds().abs() <= 5);

    // Still unpublished once older than orphan_margin (shortened): deleted, off the record.
    w.policy_mut().orphan_margin = Duration::ZERO;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(
        did(&r, "delete API key amgrot-terraform-2 (orphan)"),
        "{:?}",
        r.done
    );
    assert_eq!(w.live(), names([&current.name, &new.name]));
    assert!(!w.secrets.tags(SECRET).contains_key(UNPUBLISHED_KEYS_TAG));
}

#[tokio::test]
async fn a_key_name_taken_by_a_key_another_rotator_published_is_left_to_it() {
    let mut w = World::new(Kind::ApiKey);
    let current = w.seed(1, days(25), &[AWSCURRENT]).await;
    // Between this rotator's plan and its create, another one mints generation 2 and
    // publishes it.
    let (other, now) = (w.seeder(), w.now);
    w.before(ops::CREATE_API_KEY, move || {
        async move {
            other.key(now, 2, &[AWSCURRENT]).await;
        }
        .boxed()
    });
    let r = w.pass().await;
    assert_eq!(r.error, None, "{r:?}");
    assert_ne!(r.status, Status::Failed);
    assert!(did(&r, "left to another rotator"), "{:?}", r.done);
    let theirs = w.current();
    assert_eq!(theirs.name, "amgrot-terraform-2");
    assert!(w.opens_grafana(&theirs.key));
    assert_eq!(w.live(), names([&current.name, &theirs.name]));
    assert!(w.unpublished_generations().is_empty());
}

#[tokio::test]
async fn a_grafana_that_does_not_answer_is_not_taken_for_a_dead_api_key() {
    let mut w = World::new(Kind::ApiKey).verifying();
    // Generation 2 replaced generation 1 ten minutes ago: 1 is in its grace period (1h).
    let previous = w.seed(1, days(2), &[AWSCURRENT]).await;
    let current = w.seed(2, minutes(10), &[AWSCURRENT]).await;
    // The workspace's Grafana is down: it refuses no key, it answers nothing useful.
    w.verifier.fail_with_status(503);
    let mark = w.mark();
    let r = w.pass().await;
    assert!(
        w.live().contains(&previous.name),
        "the superseded key is deleted within its grace: {:?}",
        r.done
    );
    assert_eq!(
        w.published(AWSPREVIOUS).map(|p| p.name),
        Some(previous.name)
    );
    assert_eq!(w.count_since(mark, ops::CREATE_API_KEY), 0, "{:?}", r.plan);
    assert_eq!(w.current().name, current.name);
}

#[tokio::test]
async fn after_yielding_the_report_names_what_awscurrent_references() {
    let mut w = World::new(Kind::ApiKey);
    let superseded = w.seed(1, days(25), &[AWSCURRENT]).await;
    let (other, now) = (w.seeder(), w.now);
    w.before(ops::CREATE_API_KEY, move || {
        async move {
            other.key(now, 2, &[AWSCURRENT]).await;
        }
        .boxed()
    });
    let r = w.pass().await;
    assert!(did(&r, "left to another rotator"), "{:?}", r.done);
    assert_eq!(w.current().name, "amgrot-terraform-2");
    // Generation 2 was made now and lives 30 days; generation 1 expires in 5.
    let expires = r.expires_at.expect("an expiry");
    assert!(
        expires > w.now + days(29),
        "{expires} is {}'s expiry",
        superseded.name
    );
    assert!(!r.summary.contains(&superseded.name), "{}", r.summary);
    // A yield is neither a success nor a failure of this rotator's, and the credential is fine.
    assert_eq!(
        w.metric(
            "rotations_total",
            &[("outcome", "yielded"), ("reason", "due")]
        ),
        Some(1.0)
    );
    assert_eq!(w.metric("rotations_total", &[("outcome", "failure")]), None);
    assert!(!w.has_series("credential_failures_total"));
    assert_eq!(w.metric("credential_healthy", &[]), Some(1.0));
}

// ---- recreate -----------------------------------------------------------------------------

#[tokio::test]
async fn recreate_leaves_a_young_unpublished_token_of_the_fixed_name_to_its_maker() {
    let mut w = World::new(Kind::Token).recreating();
    let old = w.seed_fixed(days(25), &[AWSCURRENT]).await;
    // Another rotator, mid-recreate: it deleted the old token and made the new one five
    // seconds ago, not yet published.
    w.grafana
        .delete_token(WS, &w.sa_id(), &old.id)
        .await
        .expect("delete");
    let theirs = w.seed_fixed(ChronoDuration::seconds(5), &[]).await;
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.error, None, "{r:?}");
    assert_ne!(r.status, Status::Failed);
    assert!(did(&r, "left to another rotator"), "{:?}", r.done);
    assert_eq!(w.live(), names([&theirs.name]), "theirs is not deleted");
    assert_eq!(w.current().version, old.version, "nothing published");
    assert_eq!(w.count_since(mark, ops::DELETE_TOKEN), 0);
    assert_eq!(w.count_since(mark, ops::PUT_SECRET_VALUE), 0);
    // Not a failure, but what consumers read is still due: the credential needs attention.
    assert_eq!(w.metric("credential_healthy", &[]), Some(0.0));
}

#[tokio::test]
async fn recreate_yields_to_a_token_of_the_fixed_name_published_meanwhile() {
    let mut w = World::new(Kind::Token).recreating();
    let old = w.seed_fixed(days(25), &[AWSCURRENT]).await;
    // After this rotator deleted the old token, another one makes the fixed name and
    // publishes it before this one's create.
    let (other, now) = (w.seeder(), w.now);
    w.before(ops::CREATE_TOKEN, move || {
        async move {
            let name = other.fixed_name(now).await;
            other.token(now, &name, &[AWSCURRENT]).await;
        }
        .boxed()
    });
    let r = w.pass().await;
    assert_eq!(r.error, None, "{r:?}");
    assert_ne!(r.status, Status::Failed);
    assert!(did(&r, "left to another rotator"), "{:?}", r.done);
    let theirs = w.current();
    assert_eq!(theirs.name, old.name, "the fixed name");
    assert_ne!(theirs.version, old.version);
    assert!(w.opens_grafana(&theirs.key));
    assert_eq!(w.live(), names([&theirs.name]));
    assert!(!w.opens_grafana(&old.key));
}

// ---- blocked credentials ------------------------------------------------------------------

/// A due credential that `block` makes untouchable: blocked, and nothing is written. Returns
/// the world and where its call logs stood before the pass.
async fn blocked_and_untouched(
    kind: Kind,
    block: impl AsyncFnOnce(&World),
    expect: &str,
) -> (World, (usize, usize)) {
    let mut w = World::new(kind);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    block(&w).await;
    let live = w.live();
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains(expect), "{error}");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert_eq!(w.live(), live);
    assert_eq!(w.current().version, old.version);
    (w, mark)
}

async fn foreign_pending(w: &World) {
    w.secrets
        .put_version(
            SECRET,
            "5c3e4d1a-0000-4000-8000-000000000001",
            "{\"token\":\"theirs\"}",
            &[AWSPENDING],
        )
        .await
        .expect("put");
}

#[tokio::test]
async fn a_token_secret_with_a_foreign_pending_version_is_blocked_and_nothing_written() {
    blocked_and_untouched(Kind::Token, foreign_pending, "AWSPENDING version").await;
}

#[tokio::test]
async fn an_api_key_secret_with_a_foreign_pending_version_is_blocked_and_nothing_written() {
    blocked_and_untouched(Kind::ApiKey, foreign_pending, "AWSPENDING version").await;
}

#[tokio::test]
async fn a_token_secret_with_rotation_enabled_is_blocked_and_nothing_written() {
    let rotation_on = async |w: &World| w.secrets.set_rotation_enabled(SECRET, true);
    blocked_and_untouched(Kind::Token, rotation_on, "rotation is enabled").await;
}

#[tokio::test]
async fn an_api_key_secret_with_rotation_enabled_is_blocked_and_nothing_written() {
    let rotation_on = async |w: &World| w.secrets.set_rotation_enabled(SECRET, true);
    blocked_and_untouched(Kind::ApiKey, rotation_on, "rotation is enabled").await;
}

#[tokio::test]
async fn api_keys_on_grafana_twelve_are_blocked_and_nothing_is_called() {
    let upgrade = async |w: &World| w.grafana.set_grafana_version(WS, "12.4");
    let (w, mark) =
        blocked_and_untouched(Kind::ApiKey, upgrade, "API keys have been removed").await;
    assert_eq!(w.calls_since(mark), Vec::<Call>::new(), "not even a read");
}

// ---- plan mode ----------------------------------------------------------------------------

async fn plan_mode_writes_nothing(kind: Kind, due: bool) {
    let mut w = World::new(kind);
    let old = if due {
        Some(w.seed(1, days(25), &[AWSCURRENT]).await)
    } else {
        None
    };
    let mark = w.mark();
    let r = w.plan().await;
    assert_eq!(r.status, Status::Pending, "{r:?}");
    assert!(r.summary.starts_with("would "), "{}", r.summary);
    // What would be done, not what consumers read now (that is for a pass that did it).
    assert!(!r.summary.contains("; current "), "{}", r.summary);
    let wanted = if due {
        "rotate (due)"
    } else {
        "rotate (first_run)"
    };
    let actions: Vec<String> = r
        .plan
        .as_ref()
        .expect("a plan")
        .actions
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert!(actions.iter().any(|a| a.starts_with(wanted)), "{actions:?}");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert!(!w.calls_since(mark).is_empty(), "it did look");
    match old {
        Some(old) => {
            assert_eq!(w.live(), names([&old.name]));
            assert_eq!(w.current().version, old.version);
        }
        None => {
            assert!(w.live().is_empty());
            assert!(!w.secrets.exists(SECRET));
        }
    }
}

#[tokio::test]
async fn plan_mode_of_a_first_token_run_writes_nothing() {
    plan_mode_writes_nothing(Kind::Token, false).await;
}

#[tokio::test]
async fn plan_mode_of_a_first_api_key_run_writes_nothing() {
    plan_mode_writes_nothing(Kind::ApiKey, false).await;
}

#[tokio::test]
async fn plan_mode_of_a_due_token_writes_nothing() {
    plan_mode_writes_nothing(Kind::Token, true).await;
}

#[tokio::test]
async fn plan_mode_of_a_due_api_key_writes_nothing() {
    plan_mode_writes_nothing(Kind::ApiKey, true).await;
}

// ---- what the metrics and the summary say -------------------------------------------------

impl World {
    /// The value of the series of `amg_rotator_<family>` with these labels (and the
    /// credential's own) in a scrape, if the scrape has it.
    fn metric(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let kind = match self.kind {
            Kind::Token => "token",
            Kind::ApiKey => "api_key",
        };
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        wanted.push(format!("workspace=\"{WS}\""));
        wanted.push(format!("service_account=\"{NAME}\""));
        let per_account = [
            "service_account_tokens",
            "service_account_role_drift",
            "service_account_bootstraps_total",
        ];
        if !per_account.contains(&family) {
            wanted.push(format!("kind=\"{kind}\""));
        }
        let prefix = format!("amg_rotator_{family}{{");
        let text = self.metrics.render();
        let line = text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .find(|l| wanted.iter().all(|w| l.contains(w.as_str())))?;
        let (_, value) = line.rsplit_once(' ')?;
        Some(value.parse().expect("a number"))
    }

    fn has_series(&self, family: &str) -> bool {
        let prefix = format!("amg_rotator_{family}{{");
        self.metrics
            .render()
            .lines()
            .any(|l| l.starts_with(&prefix))
    }
}

async fn a_first_run_is_healthy_and_exports_its_expiry(kind: Kind) {
    let mut w = World::new(kind);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let expires = r.expires_at.expect("an expiry");
    assert_eq!(w.metric("credential_healthy", &[]), Some(1.0));
    assert_eq!(
        w.metric("credential_expiry_timestamp_seconds", &[]),
        Some(expires.timestamp() as f64)
    );
    assert_eq!(
        w.metric(
            "rotations_total",
            &[("outcome", "success"), ("reason", "first_run")]
        ),
        Some(1.0)
    );
    assert!(!w.has_series("credential_failures_total"));
    // Left-behind tokens are a service account's; API keys have none to report.
    assert_eq!(w.has_series("left_behind_tokens"), kind == Kind::Token);
    // The summary: what was done, then what consumers now read and when it expires.
    let current = w.current();
    assert!(
        r.summary.starts_with("create secret; rotate (first_run)"),
        "{}",
        r.summary
    );
    assert!(
        r.summary.ends_with(&format!(
            "; current {} expires {}",
            current.name,
            rfc3339(expires)
        )),
        "{}",
        r.summary
    );
    // A second pass has nothing to do and says so.
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert!(r.summary.starts_with("healthy; current "), "{}", r.summary);
    assert_eq!(w.metric("credential_healthy", &[]), Some(1.0));
}

#[tokio::test]
async fn a_first_token_run_is_healthy_and_exports_its_expiry() {
    a_first_run_is_healthy_and_exports_its_expiry(Kind::Token).await;
}

#[tokio::test]
async fn a_first_api_key_run_is_healthy_and_exports_its_expiry() {
    a_first_run_is_healthy_and_exports_its_expiry(Kind::ApiKey).await;
}

async fn a_refused_publish_counts_as_a_failed_rotation(kind: Kind) {
    let mut w = World::new(kind);
    w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, denied()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(r.summary.contains("; FAILED: "), "{}", r.summary);
    assert_eq!(w.metric("credential_healthy", &[]), Some(0.0));
    assert_eq!(
        w.metric("credential_failures_total", &[("stage", "rotate")]),
        Some(1.0)
    );
    assert_eq!(
        w.metric(
            "rotations_total",
            &[("outcome", "failure"), ("reason", "due")]
        ),
        Some(1.0)
    );
    assert_eq!(
        w.metric(
            "token_deletions_total",
            &[("reason", "rollback"), ("outcome", "success")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_refused_token_publish_counts_as_a_failed_rotation() {
    a_refused_publish_counts_as_a_failed_rotation(Kind::Token).await;
}

#[tokio::test]
async fn a_refused_api_key_publish_counts_as_a_failed_rotation() {
    a_refused_publish_counts_as_a_failed_rotation(Kind::ApiKey).await;
}

/// Only a deletion failed: the credential is published and valid, but the pass failed in
/// cleanup, and the credential needs attention.
#[tokio::test]
async fn a_failed_cleanup_counts_in_its_own_stage() {
    let mut w = World::new(Kind::Token);
    w.policy_mut().grace_period = Duration::ZERO;
    let old = w.seed(1, days(2), &[AWSPREVIOUS]).await;
    w.seed(1, days(1), &[AWSCURRENT]).await;
    w.grafana_fails(Fault::new(ops::DELETE_TOKEN, 1, throttled()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(w.live().contains(&old.name));
    assert_eq!(
        w.metric("credential_failures_total", &[("stage", "cleanup")]),
        Some(1.0)
    );
    assert_eq!(
        w.metric("credential_failures_total", &[("stage", "rotate")]),
        None
    );
    assert_eq!(w.metric("credential_healthy", &[]), Some(0.0));
}

async fn a_blocked_credential_is_unhealthy_when_applied_and_silent_when_planned(kind: Kind) {
    let mut w = World::new(kind);
    w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets.set_rotation_enabled(SECRET, true);
    let r = w.plan().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    assert!(r.summary.starts_with("blocked: "), "{}", r.summary);
    assert!(!w.has_series("credential_failures_total"));
    assert!(!w.has_series("credential_healthy"));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    assert_eq!(
        w.metric("credential_failures_total", &[("stage", "plan")]),
        Some(1.0)
    );
    assert_eq!(w.metric("credential_healthy", &[]), Some(0.0));
}

#[tokio::test]
async fn a_blocked_token_is_unhealthy_when_applied_and_silent_when_planned() {
    a_blocked_credential_is_unhealthy_when_applied_and_silent_when_planned(Kind::Token).await;
}

#[tokio::test]
async fn a_blocked_api_key_is_unhealthy_when_applied_and_silent_when_planned() {
    a_blocked_credential_is_unhealthy_when_applied_and_silent_when_planned(Kind::ApiKey).await;
}

/// The token gauge counts what the service account holds by state, as the pass found it;
/// expired tokens count against AMG's quota. A plan exports nothing.
#[tokio::test]
async fn tokens_are_counted_by_state() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(1), &[AWSCURRENT]).await;
    let made = w.now - days(40);
    w.grafana.add_token(
        WS,
        &w.sa_id(),
        crate::aws::fake::TokenSeed::new("from-the-ui", made, made + days(30)),
    );
    for name in ["forever-1", "forever-2"] {
        w.grafana.add_token(
            WS,
            &w.sa_id(),
            crate::aws::fake::TokenSeed::without_expiry(name, made),
        );
    }
    w.plan().await;
    assert!(!w.has_series("service_account_tokens"));
    assert!(!w.has_series("left_behind_tokens"));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    let state = |s: &str| w.metric("service_account_tokens", &[("state", s)]);
    assert_eq!(state("active"), Some(1.0));
    assert_eq!(state("expired"), Some(1.0));
    assert_eq!(state("no_expiry"), Some(2.0));
    assert_eq!(w.metric("left_behind_tokens", &[]), Some(0.0));
}

/// A bootstrapped service account whose role was changed in Grafana: drift is exported while
/// it lasts (AMG cannot change a role), and only when applying.
#[tokio::test]
async fn role_drift_is_exported_while_it_lasts() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(1), &[AWSCURRENT]).await;
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(Role::Viewer),
    };
    let drift = |w: &World| {
        w.metric(
            "service_account_role_drift",
            &[("declared", "VIEWER"), ("actual", "ADMIN")],
        )
    };
    w.plan().await;
    assert_eq!(drift(&w), None);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "drift is noted, not blocking: {r:?}");
    assert_eq!(drift(&w), Some(1.0));
    // The declared role changed to match: the drift is over, its series goes.
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(ROLE),
    };
    w.pass().await;
    assert!(!w.has_series("service_account_role_drift"));
    // Drifting again, then the credential leaves the configuration: its series goes too.
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(Role::Viewer),
    };
    w.pass().await;
    assert_eq!(drift(&w), Some(1.0));
    // What the daemon's passes do: this pass managed the credential, the next one does not.
    w.metrics.retain_credentials([w.cred.labels()].into());
    w.metrics.retain_credentials(Default::default());
    assert!(!w.has_series("service_account_role_drift"));
}

// ---- bootstrap ----------------------------------------------------------------------------

/// A missing service account with a declared role is created with that role, and its first
/// token published, in one pass.
#[tokio::test]
async fn a_missing_service_account_with_a_declared_role_is_created_and_its_token_published() {
    let mut w = World::without_account();
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(Role::Editor),
    };
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(
        did(&r, "create service account with role EDITOR"),
        "{:?}",
        r.done
    );
    let account = w.grafana.service_accounts(WS);
    assert_eq!(account.len(), 1);
    assert_eq!(account[0].role, Some(Role::Editor));
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(w.live(), names([&current.name]));
    assert_eq!(
        w.metric(
            "service_account_bootstraps_total",
            &[("outcome", "success")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_missing_service_account_without_a_role_is_reported_not_created() {
    let mut w = World::without_account();
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Blocked, "{r:?}");
    assert!(r.error.unwrap_or_default().contains("does not exist"));
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert!(w.grafana.service_accounts(WS).is_empty());
}

/// A bootstrap AMG refuses: the pass fails with what to do, nothing else is attempted, and the
/// bootstraps counter names the refusal.
async fn a_refused_bootstrap(refusal: ApiError, says: &str, label: &str) {
    let mut w = World::without_account();
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(Role::Editor),
    };
    w.grafana_fails(Fault::new(ops::CREATE_SERVICE_ACCOUNT, 1, refusal));
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let error = r.error.unwrap_or_default();
    assert!(error.contains(says), "{error}");
    assert_eq!(w.count_since(mark, ops::CREATE_TOKEN), 0);
    assert!(w.published(AWSCURRENT).is_none());
    assert_eq!(
        w.metric("service_account_bootstraps_total", &[("outcome", label)]),
        Some(1.0)
    );
    assert_eq!(
        w.metric("credential_failures_total", &[("stage", "rotate")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_bootstrap_whose_name_is_taken_says_so() {
    let taken = ApiError::Conflict("ConflictException: name taken".into());
    a_refused_bootstrap(taken, "already exists or the name is taken", "conflict").await;
}

#[tokio::test]
async fn a_bootstrap_over_the_quota_says_to_delete_unused_accounts() {
    let full = ApiError::QuotaExceeded("ServiceQuotaExceededException: full".into());
    a_refused_bootstrap(full, "delete unused service accounts", "quota_exceeded").await;
}

/// AMG stops reporting the current token's expiry: the planner assumes one from its birth and
/// the lifetime asked for, and the credential is as healthy as that assumption.
#[tokio::test]
async fn a_current_token_of_unknown_expiry_is_healthy_until_its_assumed_due_time() {
    let mut w = World::new(Kind::Token);
    let young = w.seed(1, days(1), &[AWSCURRENT]).await;
    w.grafana.set_token_expiry(WS, &w.sa_id(), &young.id, None);
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(r.expires_at, None);
    assert!(r.summary.ends_with("expires unknown"), "{}", r.summary);
    assert_eq!(w.metric("credential_healthy", &[]), Some(1.0));
    assert!(!w.has_series("credential_expiry_timestamp_seconds"));
}

// ---- retiring superseded tokens on evidence (issue 13) -----------------------------------

/// A consumer calling the workspace's Grafana with `key`, a second from now: after any
/// promotion the last pass made.
fn consumer_uses(w: &World, key: &Key) {
    let later = chrono::Utc::now() + ChronoDuration::seconds(1);
    assert_eq!(w.grafana.use_key(WS, key, later, true), Some(true));
}

fn fate(r: &CredentialReport) -> super::retire::Superseded {
    let plan = r.plan.as_ref().expect("a plan");
    assert_eq!(plan.superseded.len(), 1, "{:?}", plan.superseded);
    plan.superseded[0].clone()
}

/// The rotator records each promotion on the secret, and counts from it.
#[tokio::test]
async fn a_promotion_is_recorded_on_the_secret() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(25), &[AWSCURRENT]).await;
    let r = w.pass().await;
    assert!(did(&r, "rotate (due)"), "{:?}", r.done);
    let record = records::Promotion::from_tags(&w.secrets.tags(SECRET)).expect("a record");
    assert_eq!(record.version, w.current().version);
    assert!((record.at - w.now).num_seconds().abs() <= 5, "{record:?}");
    let r = w.pass().await;
    let promoted = r.plan.as_ref().and_then(|p| p.promoted).expect("promoted");
    assert!(promoted.recorded);
    assert_eq!(promoted.at, record.at);
    assert_eq!(
        w.metric(
            "credential_promotion_timestamp_seconds",
            &[("secret", SECRET)]
        ),
        Some(record.at.timestamp() as f64)
    );
}

/// Consumers that never re-read the secret keep calling with the old token: it is kept past
/// the grace period, reported as lagging, and deleted at the maximum overlap.
#[tokio::test]
async fn a_superseded_token_still_in_use_is_kept_until_the_maximum_overlap() {
    let mut w = World::new(Kind::Token);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.pass().await;
    consumer_uses(&w, &old.key);
    w.policy_mut().grace_period = Duration::ZERO;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert!(w.live().contains(&old.name), "kept past grace");
    let s = fate(&r);
    assert_eq!(
        (s.rule, s.delete),
        (super::retire::Rule::Quiet, false),
        "{s:?}"
    );
    assert!(s.lagging());
    assert!(
        s.detail.contains("kept, consumers have not moved"),
        "{}",
        s.detail
    );
    assert_eq!(w.metric("superseded_tokens", &[]), Some(1.0));
    let last_used = s.last_used_at.expect("a last use").timestamp() as f64;
    let gauge = "superseded_token_last_used_timestamp_seconds";
    assert_eq!(w.metric(gauge, &[("secret", SECRET)]), Some(last_used));

    w.policy_mut().max_overlap = Duration::ZERO;
    let r = w.pass().await;
    assert!(did(&r, "superseded"), "{:?}", r.done);
    assert!(!w.live().contains(&old.name));
    let s = fate(&r);
    assert_eq!(s.rule, super::retire::Rule::MaxOverlap, "{s:?}");
    assert!(
        s.detail.contains(&format!("must re-read secret {SECRET}")),
        "{}",
        s.detail
    );
    assert_eq!(w.metric("superseded_tokens", &[]), Some(0.0));
    assert_eq!(w.metric(gauge, &[("secret", SECRET)]), None);
}

/// Consumers moved to the new token: the old one, quiet since the promotion, goes once the
/// quiet period is over, not before.
#[tokio::test]
async fn a_superseded_token_goes_after_the_quiet_period_once_consumers_moved() {
    let mut w = World::new(Kind::Token);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.pass().await;
    consumer_uses(&w, &w.current().key);
    w.policy_mut().grace_period = Duration::ZERO;
    let r = w.pass().await;
    assert!(w.live().contains(&old.name));
    let s = fate(&r);
    assert_eq!(
        (s.rule, s.delete),
        (super::retire::Rule::Quiet, false),
        "{s:?}"
    );
    assert!(!s.lagging(), "not used since the promotion");
    assert!(
        s.detail.contains("kept for the quiet period"),
        "{}",
        s.detail
    );

    w.policy_mut().quiet_period = Duration::ZERO;
    let r = w.pass().await;
    assert!(!w.live().contains(&old.name));
    let s = fate(&r);
    assert_eq!(
        (s.rule, s.delete),
        (super::retire::Rule::Quiet, true),
        "{s:?}"
    );
    assert!(s.detail.contains("consumers have moved"), "{}", s.detail);
}

/// Nobody used any token of the account since the promotion: no evidence, time alone.
#[tokio::test]
async fn without_usage_data_a_superseded_token_goes_after_grace() {
    let mut w = World::new(Kind::Token);
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    w.pass().await;
    w.policy_mut().grace_period = Duration::ZERO;
    let r = w.pass().await;
    assert!(!w.live().contains(&old.name));
    let s = fate(&r);
    assert_eq!(s.rule, super::retire::Rule::NoUsageData, "{s:?}");
    assert!(s.detail.contains("deleted after grace"), "{}", s.detail);
}

/// A pass published the new token three hours ago and recorded its promotion, then died
/// before moving the label (Secrets Manager keeping LastChangedDate at the put, as moto does).
/// The pass that finishes the promotion records it again: the old token's grace runs from
/// then, not from three hours ago.
#[tokio::test]
async fn a_promotion_finished_late_counts_grace_from_when_it_finished() {
    let mut w = World::new(Kind::Token);
    let _ = w.secrets.clone().with_label_moves_keeping_last_changed();
    let old = w.seed(1, days(25), &[AWSCURRENT]).await;
    let new = w.seed(2, ChronoDuration::hours(3), &[AWSPENDING]).await;
    let stale = records::Promotion {
        version: new.version.clone(),
        at: w.now - ChronoDuration::hours(3),
    };
    w.secrets
        .tag(SECRET, records::PROMOTED_TAG, &stale.tag_value())
        .await
        .expect("tag");
    let r = w.pass().await;
    assert!(did(&r, "resume pending"), "{:?}", r.done);
    assert_eq!(w.current().version, new.version);
    let r = w.pass().await;
    assert!(
        w.live().contains(&old.name),
        "deleted within its grace: {r:?}"
    );
    let s = fate(&r);
    assert_eq!(
        (s.rule, s.delete),
        (super::retire::Rule::Grace, false),
        "{s:?}"
    );
    assert!((s.promoted_at - w.now).num_seconds().abs() <= 5, "{s:?}");
}

/// A secret promoted before the rotator kept records: its LastChangedDate stands in, and the
/// plan says it is not a record.
#[tokio::test]
async fn without_a_record_the_secrets_last_change_stands_in() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(2), &[AWSPREVIOUS]).await;
    w.seed(1, days(1), &[AWSCURRENT]).await;
    let r = w.plan().await;
    let promoted = r.plan.as_ref().and_then(|p| p.promoted).expect("promoted");
    assert!(!promoted.recorded);
    assert!(
        (promoted.at - (w.now - days(1))).num_seconds().abs() <= 5,
        "{promoted:?}"
    );
    assert_eq!(fate(&r).rule, super::retire::Rule::NoUsageData);
}

/// With liveness checks on, each pass proves the current API key: one Grafana refuses (401, the
/// key was deleted behind the rotator's back) is dead and replaced at once, not when due.
#[tokio::test]
async fn a_current_api_key_grafana_refuses_is_replaced_at_once() {
    let mut w = World::new(Kind::ApiKey).verifying();
    w.policy_mut().liveness_checks = true;
    let current = w.seed(1, days(1), &[AWSCURRENT]).await;
    w.grafana
        .delete_api_key(WS, &current.name)
        .await
        .expect("delete");
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "rotate (missing_token)"), "{:?}", r.done);
    let new = w.current();
    assert_ne!(new.name, current.name);
    assert!(w.opens_grafana(&new.key));
}

/// Without liveness checks, verification proves new keys only: a pass with nothing due sends
/// the current key nowhere, and so a key deleted behind the rotator's back waits for its due time.
#[tokio::test]
async fn without_liveness_checks_the_current_api_key_is_sent_nowhere() {
    let mut w = World::new(Kind::ApiKey).verifying();
    let current = w.seed(1, days(1), &[AWSCURRENT]).await;
    w.grafana
        .delete_api_key(WS, &current.name)
        .await
        .expect("delete");
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.verifier.calls(), vec![], "the current key was sent");
    assert_eq!(w.current().name, current.name);
}

/// A create AMG surely did not perform (access denied) is not retried: the pass fails with the
/// refusal and nothing is made.
#[tokio::test]
async fn a_refused_api_key_create_is_not_retried() {
    let mut w = World::new(Kind::ApiKey);
    w.grafana_fails(Fault::new(ops::CREATE_API_KEY, 1, denied()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(r.error.unwrap_or_default().contains("not authorized"));
    assert!(w.live().is_empty(), "{:?}", w.live());
}

/// A create whose outcome stays unknown is tried again under the same name, and after the
/// last attempt the pass reports what AMG answered, not a want of free names.
#[tokio::test]
async fn an_api_key_create_that_keeps_timing_out_reports_the_timeout() {
    let mut w = World::new(Kind::ApiKey);
    w.grafana_fails(Fault::new(ops::CREATE_API_KEY, 1, timed_out()).times(10));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let error = r.error.unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
    assert!(!error.contains("no free name"), "{error}");
    // And with one timeout, the second attempt of the same name makes the key.
    let mut w = World::new(Kind::ApiKey);
    w.grafana_fails(Fault::new(ops::CREATE_API_KEY, 1, timed_out()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert_eq!(w.current().name, "amgrot-terraform-1");
}

/// A token create AMG surely did not perform (access denied) is not retried, whatever the
/// strategy: the pass fails with the refusal and no token is made.
#[tokio::test]
async fn a_refused_token_create_is_not_retried() {
    for recreate in [false, true] {
        let mut w = World::new(Kind::Token);
        if recreate {
            w = w.recreating();
        }
        w.grafana_fails(Fault::new(ops::CREATE_TOKEN, 1, denied()));
        let r = w.pass().await;
        assert_eq!(r.status, Status::Failed, "recreate {recreate}: {r:?}");
        assert!(r.error.unwrap_or_default().contains("not authorized"));
        assert!(w.live().is_empty(), "recreate {recreate}: {:?}", w.live());
    }
}

/// With the raw format the pending version holds the bare key: a resume reads it back and
/// proves it before promoting.
#[tokio::test]
async fn a_raw_pending_token_is_read_back_proven_and_promoted() {
    let mut w = World::new(Kind::Token).verifying();
    w.cred.secret.format = SecretFormat::Raw;
    w.policy_mut().secret_format = SecretFormat::Raw;
    w.seed(1, days(25), &[AWSCURRENT]).await;
    w.secrets_fail(Fault::new(ops::UPDATE_SECRET_VERSION_STAGE, 1, throttled()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let pending = w
        .secrets
        .value(SECRET, AWSPENDING)
        .expect("AWSPENDING is left");
    assert!(!pending.starts_with('{'), "the raw key alone");
    w.heal();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "resume pending"), "{:?}", r.done);
    assert_eq!(
        w.secrets
            .value(SECRET, AWSCURRENT)
            .as_deref()
            .map(String::as_str),
        Some(pending.as_str())
    );
}

/// Recreate's create of the fixed name timed out without taking effect: it is tried again, and
/// the pass publishes a working token.
#[tokio::test]
async fn a_recreate_create_that_timed_out_is_tried_again() {
    let mut w = World::new(Kind::Token).recreating();
    w.grafana_fails(Fault::new(ops::CREATE_TOKEN, 1, timed_out()));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    let current = w.current();
    assert!(w.opens_grafana(&current.key));
    assert_eq!(w.live(), names([&current.name]));
}

/// A live token minted for another of the rotator's secrets (the credential's secret_name
/// changed) is kept, and named with the secret it was minted for.
#[tokio::test]
async fn a_token_left_behind_is_named_with_the_secret_it_was_minted_for() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(1), &[AWSCURRENT]).await;
    const OLD: &str = "old/g-0123456789/terraform";
    w.secrets
        .add_secret(crate::aws::fake::SecretSeed::new(OLD).managed());
    let old = w
        .secrets
        .describe(OLD)
        .await
        .expect("describe")
        .expect("added");
    let name = token::token_name(PREFIX, NAME, &token::secret_mark(&old), w.now - days(2));
    let made = w.now - days(2);
    w.grafana.add_token(
        WS,
        &w.sa_id(),
        crate::aws::fake::TokenSeed::new(&name, made, made + days(30)),
    );
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert!(w.live().contains(&name));
    let left = &r.plan.as_ref().expect("a plan").left_behind;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].secret.as_deref(), Some(OLD));
}

/// The secret carries AMG's own times for the token it holds, read back after the create.
#[tokio::test]
async fn the_secret_holds_amgs_times_of_the_new_token() {
    let mut w = World::new(Kind::Token);
    w.seed(1, days(25), &[AWSCURRENT]).await;
    let r = w.pass().await;
    assert!(did(&r, "rotate (due)"), "{:?}", r.done);
    let value = w.secrets.value(SECRET, AWSCURRENT).expect("a value");
    let doc: serde_json::Value = serde_json::from_str(&value).expect("JSON");
    let created: chrono::DateTime<chrono::Utc> = doc["createdAt"]
        .as_str()
        .expect("createdAt")
        .parse()
        .expect("RFC 3339");
    assert!((created - w.now).num_seconds().abs() <= 5, "{created}");
}

// ---- Grafana 12: an API key becomes a service account's tokens -----------------------------

/// The credential discovery makes of an API key once its workspace runs Grafana 12 or later
/// (`discover::migration_of`, default name: the key's base name): a token credential of that
/// service account, created with the key's role, in the key's secret.
fn migrated(w: &mut World) {
    w.kind = Kind::Token;
    w.cred.kind = CredentialKind::Token {
        bootstrap: Some(ROLE),
    };
    w.cred.migrated_from = Some(NAME.into());
    w.cred.migrates_to = None;
}

/// What the report's plan says of the migration, or "".
fn migration_line(r: &CredentialReport) -> String {
    r.plan
        .as_ref()
        .and_then(|p| p.migration.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn on_grafana_twelve_an_api_key_becomes_a_service_account_token_in_the_same_secret() {
    let mut w = World::of(Kind::ApiKey, WorkspaceSeed::new(WS));
    w.cred.migrates_to = Some(NAME.into());
    assert_eq!(w.pass().await.status, Status::Changed);
    let key = w.current();
    assert!(w.opens_grafana(&key.key));
    // On 10.4, plan says what an upgrade would do.
    let p = w.plan().await;
    let notes = migration_line(&p);
    assert!(
        notes.contains("will migrate this key to service account terraform"),
        "{notes}"
    );

    w.grafana.set_grafana_version(WS, "12.4");
    migrated(&mut w);
    let mark = w.mark();
    let p = w.plan().await;
    assert_eq!(p.status, Status::Pending, "{p:?}");
    assert!(
        p.summary.contains("rotate (api_key_migration)"),
        "{}",
        p.summary
    );
    let notes = migration_line(&p);
    assert!(
        notes.contains("API key terraform becomes service account terraform"),
        "{notes}"
    );
    assert_eq!(w.writes_since(mark), Vec::<String>::new(), "plan wrote");

    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    // The service account exists with the key's role, and its token is what the secret's
    // AWSCURRENT now holds: a working key, with the service-account fields a consumer may read.
    let sa = w
        .grafana
        .service_accounts(WS)
        .into_iter()
        .find(|a| a.name == NAME)
        .expect("the service account was created");
    assert_eq!(sa.role, Some(ROLE));
    let now = w.current();
    assert_ne!(now.version, key.version);
    assert!(w.opens_grafana(&now.key));
    let doc: serde_json::Value =
        serde_json::from_str(&w.secrets.value(SECRET, AWSCURRENT).unwrap()).unwrap();
    assert_eq!(doc["serviceAccountName"], NAME);
    assert_eq!(doc["serviceAccountId"], sa.id.as_str());
    assert!(doc["tokenId"].is_string(), "{doc}");
    // The key's version stays as AWSPREVIOUS.
    assert_eq!(
        w.secrets.version_with(SECRET, AWSPREVIOUS).as_deref(),
        Some(key.version.as_str())
    );
    assert_eq!(
        w.metric(
            "rotations_total",
            &[("outcome", "success"), ("reason", "api_key_migration")]
        ),
        Some(1.0)
    );
    // From then on it is a token credential like any other: nothing is due.
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.current().version, now.version);
}

#[tokio::test]
async fn a_migration_adopts_a_service_account_of_that_name() {
    // The workspace already holds a service account named as the key (the world's seed).
    let mut w = World::new(Kind::ApiKey);
    assert_eq!(w.pass().await.status, Status::Changed);
    let key = w.current();
    let before = w.grafana.service_accounts(WS);
    w.grafana.set_grafana_version(WS, "12.4");
    migrated(&mut w);
    assert_eq!(w.pass().await.status, Status::Changed);
    assert_eq!(w.grafana.service_accounts(WS), before, "no account created");
    assert_ne!(w.current().version, key.version);
    assert!(w.opens_grafana(&w.current().key));
}

// ---- audits (issue 18) ----------------------------------------------------------------------

impl World {
    /// The record of the last clean audit on the secret.
    fn audit_record(&self) -> Option<super::records::Audit> {
        super::records::Audit::from_tags(&self.secrets.tags(SECRET))
    }

    /// As if the credential's audit interval had gone by.
    async fn audit_now(&self) {
        let mut record = self.audit_record().expect("an audit record");
        record.next = self.now - minutes(1);
        let value = record.tag_value().expect("fits");
        self.secrets
            .tag(SECRET, super::records::AUDIT_TAG, &value)
            .await
            .expect("tag");
    }

    fn listings(&self) -> u32 {
        self.g.inner.calls(ops::LIST_TOKENS)
    }

    /// Brings the recorded token within a day of its expiry, in AMG and in the record (as time
    /// would: an audit would have read it so), and returns the record as it was.
    async fn make_due(&self) -> super::records::Audit {
        let record = self.audit_record().expect("a record");
        let soon = self.now + days(1);
        let sa = self.sa_id();
        self.grafana
            .set_token_expiry(WS, &sa, &record.token_id, Some(soon));
        let due = super::records::Audit {
            expires_at: soon,
            ..record.clone()
        };
        let value = due.tag_value().expect("fits");
        self.secrets
            .tag(SECRET, super::records::AUDIT_TAG, &value)
            .await
            .expect("tag");
        record
    }

    async fn delete_current_token(&self) {
        let current = self.current();
        self.grafana
            .delete_token(WS, &self.sa_id(), &current.id)
            .await
            .expect("delete");
    }
}

/// Without liveness checks, a token deleted behind the rotator's back is found by the next
/// audit: until then the record stands for the tokens and nothing is listed.
#[tokio::test]
async fn a_token_deleted_by_hand_is_replaced_at_the_next_audit() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    let record = w.audit_record().expect("the clean audit is recorded");
    assert_eq!(record.token_id, w.current().id);
    let listed = w.listings();

    w.delete_current_token().await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.listings(), listed, "a standing record lists nothing");
    assert_eq!(w.verifier.calls(), vec![], "the current key was sent");

    w.audit_now().await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "rotate (missing_token)"), "{:?}", r.done);
    assert!(w.opens_grafana(&w.current().key));
    // The rotation removed the record before it began; the next clean audit writes it again.
    assert_eq!(w.audit_record(), None);
    w.pass().await;
    assert_eq!(w.audit_record().map(|r| r.token_id), Some(w.current().id));
}

/// With liveness checks, a pass that trusts the record still proves the current key to the
/// workspace's Grafana, so a token deleted by hand is replaced at once.
#[tokio::test]
async fn with_liveness_checks_a_token_deleted_by_hand_is_replaced_at_once() {
    let mut w = World::new(Kind::Token).verifying();
    w.policy_mut().liveness_checks = true;
    w.seed(0, days(1), &[AWSCURRENT]).await;
    w.pass().await;
    assert!(w.audit_record().is_some());
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");

    w.delete_current_token().await;
    let r = w.pass().await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert!(did(&r, "rotate (missing_token)"), "{:?}", r.done);
    assert!(w.opens_grafana(&w.current().key));
}

/// A rotation that fails half-way (the publish) has removed the record first: the next pass
/// lists, finds what the failure left, and does not trust an audit that no longer holds.
#[tokio::test]
async fn a_rotation_that_fails_half_way_leaves_no_record() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    w.pass().await;
    assert!(w.audit_record().is_some());
    w.make_due().await;
    w.secrets_fail(Fault::new(ops::PUT_SECRET_VALUE, 1, denied()).times(10));
    let r = w.pass().await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert_eq!(w.audit_record(), None);
    w.heal();
    let listed = w.listings();
    let r = w.pass().await;
    assert!(w.listings() > listed, "the pass after the failure lists");
    assert_eq!(r.status, Status::Changed, "{r:?}");
}

/// A pass that trusts the record still reports the service account's tokens, as the audit saw
/// them: a fresh process (a `once` that pushes its metrics) shows the quota gauge without
/// listing anything.
#[tokio::test]
async fn a_pass_that_trusts_the_record_reports_the_audits_token_counts() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    // A token made by hand, which the audit counts.
    let sa = w.sa_id();
    w.grafana
        .create_token(WS, &sa, "made-by-hand", TTL, w.now)
        .await
        .expect("create");
    w.pass().await;
    assert!(w.audit_record().is_some());
    w.metrics = Metrics::new();
    let listed = w.listings();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.listings(), listed, "the record stood");
    assert_eq!(
        w.metric("service_account_tokens", &[("state", "active")]),
        Some(2.0)
    );
    assert_eq!(
        w.metric("service_account_tokens", &[("state", "expired")]),
        Some(0.0)
    );
    let text = w.metrics.render();
    assert!(
        text.contains("amg_rotator_token_credential_observations_total{source=\"record\"} 1"),
        "{text}"
    );
    assert!(!text.contains("source=\"listing\""), "{text}");
}

/// A pass that trusts the record reads the secret from the scope's one ListSecrets: no
/// DescribeSecret, no AMG call.
#[tokio::test]
async fn a_pass_that_trusts_the_record_reads_the_secret_from_the_census() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    w.pass().await;
    assert!(w.audit_record().is_some());
    let mark = w.mark();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    let calls: Vec<&str> = w.calls_since(mark).iter().map(|c| c.operation).collect();
    assert_eq!(calls, vec![ops::LIST_SECRETS], "{calls:?}");
}

/// ListSecrets "might not reflect changes from the last five minutes" (its API reference). A
/// stale listing that still shows a due token as current is read again with DescribeSecret
/// before anything is done, so a token rotated a moment ago is not rotated a second time.
#[tokio::test]
async fn a_stale_census_is_described_again_before_any_action() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    w.pass().await;
    let record = w.make_due().await;
    // The listing stops here: it will show the due token as current, with its record.
    w.secrets.freeze_listing();
    let r = w.pass().await;
    assert!(did(&r, "rotate"), "{:?}", r.done);
    let rotated = w.current();
    assert_ne!(rotated.id, record.token_id);

    let mark = w.mark();
    let r = w.pass().await;
    assert_ne!(r.status, Status::Failed, "{r:?}");
    assert_eq!(w.count_since(mark, ops::CREATE_TOKEN), 0, "{:?}", r.done);
    assert_eq!(w.count_since(mark, ops::DESCRIBE_SECRET), 1);
    assert_eq!(w.current().id, rotated.id);
    assert!(w.opens_grafana(&w.current().key));
}

/// A policy without ListSecrets (one written before the census) costs economy, not the pass:
/// the secret is described, and the record stands as before.
#[tokio::test]
async fn without_list_secrets_the_secret_is_described_and_the_record_still_stands() {
    let mut w = World::new(Kind::Token);
    w.seed(0, days(1), &[AWSCURRENT]).await;
    w.pass().await;
    assert!(w.audit_record().is_some());
    w.secrets_fail(Fault::new(ops::LIST_SECRETS, 1, denied()).times(10));
    let mark = w.mark();
    let listed = w.listings();
    let r = w.pass().await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(w.count_since(mark, ops::DESCRIBE_SECRET), 1);
    assert_eq!(w.listings(), listed, "the record stood");
}
