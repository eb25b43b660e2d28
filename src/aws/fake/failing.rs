//! `Failing<T>`: wraps a `Grafana`, a `SecretStore` or a `Verifier` (a fake or any other) and
//! fails calls on purpose, so the rotator's error branches are tested in process.
//!
//! A `Fault` names an operation by its AWS name (`ops::PUT_SECRET_VALUE` = `PutSecretValue`;
//! `ops::GET_CURRENT_ORG` for the verifier; `*` for every call), the 1-based number of the call to
//! fail, how many calls in a row, and the `ApiError` to answer. By default the failing call never
//! reaches the inner service (a throttle, a refusal). `after_taking_effect` performs it first and
//! then answers the error anyway: the answer is lost, as with a PutSecretValue that landed or a
//! create that timed out after it took effect (AMG takes no idempotency token: facts; the
//! emulator adds latency after the effect for the same reason).
//!
//! Every call counts once for its operation and once under `*`, whatever answers it, as the
//! emulator's `failNth` counts. The first fault that matches a call answers it. `injected()`
//! lists what was injected. The verifier has no `ApiError`: an injected error becomes the HTTP
//! answer it stands for (AMG's statuses, facts: 400 invalid, 402 quota, 403 denied, 404, 409,
//! 429 throttled, 500 other), and `Unavailable` becomes no answer at all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::ops;
use super::verifier::{answered, failed};
use crate::aws::error::ApiError;
use crate::aws::grafana::Grafana;
use crate::aws::secrets::{FirstVersion, Location, SecretPage, SecretStore};
use crate::aws::verify::org_url;
use crate::aws::verify::{Verifier, VerifyError};
use crate::model::{
    Binding, Key, NewApiKey, NewToken, PermissionChange, PermissionError, Role, SecretSpec,
    SecretState, ServiceAccount, Token, Workspace,
};

/// Which calls to fail, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    operation: String,
    nth: u32,
    times: u32,
    error: ApiError,
    after_effect: bool,
}

impl Fault {
    /// Fails the `nth` call (1-based) of `operation` with `error`, once, without performing it.
    /// Panics on an operation name the fakes do not know (`ops::ALL` or `*`) and on `nth` 0,
    /// so a typo fails loudly; a name of another service's operation is accepted and never
    /// fires.
    pub fn new(operation: &str, nth: u32, error: ApiError) -> Self {
        assert!(
            operation == "*" || ops::ALL.contains(&operation),
            "Fault: unknown operation {operation:?}; use an ops:: name"
        );
        assert!(nth >= 1, "Fault: calls are counted from 1");
        Fault {
            operation: operation.to_owned(),
            nth,
            times: 1,
            error,
            after_effect: false,
        }
    }

    /// Fails calls `nth` to `nth + times - 1`.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Performs the call on the inner service, then answers the error anyway: the answer is lost.
    pub fn after_taking_effect(mut self) -> Self {
        self.after_effect = true;
        self
    }

    fn covers(&self, call: u32) -> bool {
        call >= self.nth && call - self.nth < self.times
    }
}

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub operation: &'static str,
    /// Which call of the operation it was (1-based).
    pub call: u32,
    pub error: ApiError,
    /// `None`: the call never reached the inner service. `Some(ok)`: it was performed (the
    /// answer lost), and the inner service answered `Ok` or not.
    pub performed: Option<bool>,
}

pub struct Failing<T> {
    inner: T,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    counts: HashMap<&'static str, u32>,
    all: u32,
    faults: Vec<Fault>,
    injected: Vec<Injection>,
}

/// The fault that answers one call.
struct Decision {
    call: u32,
    error: ApiError,
    after_effect: bool,
}

impl<T> Failing<T> {
    /// Passes every call through until faults are added.
    pub fn new(inner: T) -> Self {
        Failing {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    pub fn with(self, fault: Fault) -> Self {
        self.add(fault);
        self
    }

    /// Fails the `nth` call of `operation` with `error` without performing it.
    pub fn fail_nth(self, operation: &str, nth: u32, error: ApiError) -> Self {
        self.with(Fault::new(operation, nth, error))
    }

    /// Performs the `nth` call of `operation`, then answers `error`.
    pub fn lose_answer(self, operation: &str, nth: u32, error: ApiError) -> Self {
        self.with(Fault::new(operation, nth, error).after_taking_effect())
    }

    /// Adds a fault while the wrapper is in use; calls already made still count.
    pub fn add(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Removes every fault; the counts go on.
    pub fn clear(&self) {
        self.state().faults.clear();
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// What was injected, in order.
    pub fn injected(&self) -> Vec<Injection> {
        self.state().injected.clone()
    }

    /// Calls made to `operation` (`*`: all calls), failed ones included.
    pub fn calls(&self, operation: &str) -> u32 {
        let s = self.state();
        if operation == "*" {
            s.all
        } else {
            s.counts.get(operation).copied().unwrap_or(0)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("Failing lock")
    }

    /// Counts the call and finds the fault that answers it, if any.
    fn decide(&self, operation: &'static str) -> Option<Decision> {
        let mut s = self.state();
        s.all += 1;
        let all = s.all;
        let n = {
            let n = s.counts.entry(operation).or_insert(0);
            *n += 1;
            *n
        };
        s.faults.iter().find_map(|f| {
            let call = if f.operation == "*" {
                all
            } else if f.operation == operation {
                n
            } else {
                return None;
            };
            f.covers(call).then(|| Decision {
                call,
                error: f.error.clone(),
                after_effect: f.after_effect,
            })
        })
    }

    fn log(&self, operation: &'static str, d: &Decision, performed: Option<bool>) {
        self.state().injected.push(Injection {
            operation,
            call: d.call,
            error: d.error.clone(),
            performed,
        });
    }

    /// Runs one call of `operation` on the inner service unless a fault answers it.
    async fn call<R, F, Fut>(&self, operation: &'static str, f: F) -> Result<R, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, ApiError>>,
    {
        let Some(d) = self.decide(operation) else {
            return f().await;
        };
        let performed = if d.after_effect {
            Some(f().await.is_ok())
        } else {
            None
        };
        self.log(operation, &d, performed);
        Err(d.error)
    }
}

/// The HTTP answer an injected `ApiError` stands for, for the verifier.
fn as_verify_error(e: &ApiError, base_url: &str) -> VerifyError {
    let url = org_url(base_url);
    let status = match e {
        ApiError::Unavailable { message, .. } => return failed(&url, message),
        ApiError::Invalid(_) => 400,
        ApiError::QuotaExceeded(_) => 402,
        ApiError::AccessDenied(_) => 403,
        ApiError::NotFound(_) => 404,
        ApiError::Conflict(_) => 409,
        ApiError::Throttled { .. } => 429,
        ApiError::Other(_) => 500,
    };
    answered(&url, status)
}

#[async_trait]
impl<T: Grafana> Grafana for Failing<T> {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError> {
        self.call(ops::LIST_WORKSPACES, || self.inner.list_workspaces())
            .await
    }

    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError> {
        self.call(ops::DESCRIBE_WORKSPACE, || {
            self.inner.describe_workspace(workspace_id)
        })
        .await
    }

    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError> {
        self.call(ops::LIST_SERVICE_ACCOUNTS, || {
            self.inner.list_service_accounts(workspace_id)
        })
        .await
    }

    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError> {
        self.call(ops::CREATE_SERVICE_ACCOUNT, || {
            self.inner.create_service_account(workspace_id, name, role)
        })
        .await
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError> {
        self.call(ops::LIST_TOKENS, || {
            self.inner.list_tokens(workspace_id, service_account_id)
        })
        .await
    }

    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewToken, ApiError> {
        self.call(ops::CREATE_TOKEN, || {
            self.inner
                .create_token(workspace_id, service_account_id, name, ttl, now)
        })
        .await
    }

    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.call(ops::DELETE_TOKEN, || {
            self.inner
                .delete_token(workspace_id, service_account_id, token_id)
        })
        .await
    }

    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewApiKey, ApiError> {
        self.call(ops::CREATE_API_KEY, || {
            self.inner
                .create_api_key(workspace_id, name, role, ttl, now)
        })
        .await
    }

    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError> {
        self.call(ops::DELETE_API_KEY, || {
            self.inner.delete_api_key(workspace_id, name)
        })
        .await
    }

    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError> {
        self.call(ops::LIST_PERMISSIONS, || {
            self.inner.list_permissions(workspace_id)
        })
        .await
    }

    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError> {
        self.call(ops::UPDATE_PERMISSIONS, || {
            self.inner.update_permissions(workspace_id, changes)
        })
        .await
    }
}

#[async_trait]
impl<T: SecretStore> SecretStore for Failing<T> {
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError> {
        self.call(ops::DESCRIBE_SECRET, || self.inner.describe(name))
            .await
    }

    async fn create(
        &self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError> {
        self.call(ops::CREATE_SECRET, || {
            self.inner.create(spec, records, first)
        })
        .await
    }

    async fn location(&self) -> Option<Location> {
        self.inner.location().await
    }

    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError> {
        self.call(ops::PUT_SECRET_VALUE, || {
            self.inner.put_version(name, version_id, value, stages)
        })
        .await
    }

    async fn get_value(&self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError> {
        self.call(ops::GET_SECRET_VALUE, || self.inner.get_value(name, stage))
            .await
    }

    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), ApiError> {
        self.call(ops::UPDATE_SECRET_VERSION_STAGE, || {
            self.inner.move_stage(name, stage, to_version, from_version)
        })
        .await
    }

    async fn tag_all(&self, name: &str, tags: &[(&str, &str)]) -> Result<(), ApiError> {
        self.call(ops::TAG_RESOURCE, || self.inner.tag_all(name, tags))
            .await
    }

    async fn untag(&self, name: &str, key: &str) -> Result<(), ApiError> {
        self.call(ops::UNTAG_RESOURCE, || self.inner.untag(name, key))
            .await
    }

    async fn list_managed(&self, page: Option<String>) -> Result<SecretPage, ApiError> {
        self.call(ops::LIST_SECRETS, || self.inner.list_managed(page))
            .await
    }
}

#[async_trait]
impl<T: Verifier> Verifier for Failing<T> {
    async fn verify(&self, base_url: &str, key: &Key) -> Result<(), VerifyError> {
        let Some(d) = self.decide(ops::GET_CURRENT_ORG) else {
            return self.inner.verify(base_url, key).await;
        };
        let performed = if d.after_effect {
            Some(self.inner.verify(base_url, key).await.is_ok())
        } else {
            None
        };
        self.log(ops::GET_CURRENT_ORG, &d, performed);
        Err(as_verify_error(&d.error, base_url))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::fake::{
        epoch, AccountSeed, FakeGrafana, FakeSecrets, FakeVerifier, WorkspaceSeed,
    };
    use crate::model::{SecretFormat, AWSCURRENT, AWSPENDING};

    const WS: &str = "g-0123456789";
    const NAME: &str = "amg/prod/terraform";
    const V1: &str = "amgrot-v1-00000000000000000000000000000001";
    const V2: &str = "amgrot-v1-00000000000000000000000000000002";
    const HOUR: Duration = Duration::from_secs(3600);

    fn throttled() -> ApiError {
        ApiError::Throttled {
            message: "ThrottlingException: Rate exceeded".into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    fn timed_out() -> ApiError {
        ApiError::Unavailable {
            message: "timed out".into(),
            retry_after: None,
        }
    }

    fn grafana() -> FakeGrafana {
        FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS).with_service_account(AccountSeed::new("terraform", Role::Admin)),
        )
    }

    fn spec() -> SecretSpec {
        SecretSpec {
            name: NAME.into(),
            format: SecretFormat::Json,
            kms_key_id: None,
            description: String::new(),
            tags: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_kth_call_of_an_operation_fails_for_the_times_asked() {
        let g = Failing::new(grafana()).with(Fault::new(ops::LIST_TOKENS, 2, throttled()).times(2));
        let outcomes = [
            g.list_tokens(WS, "2").await.is_ok(),
            g.list_tokens(WS, "2").await.is_ok(),
            g.list_tokens(WS, "2").await.is_ok(),
            g.list_tokens(WS, "2").await.is_ok(),
        ];
        assert_eq!(outcomes, [true, false, false, true]);
        // Other operations are not touched, and have their own count.
        g.list_service_accounts(WS).await.unwrap();
        assert_eq!(g.calls(ops::LIST_TOKENS), 4);
        assert_eq!(g.calls("*"), 5);
        let injected = g.injected();
        assert_eq!(injected.len(), 2);
        assert_eq!((injected[0].call, injected[1].call), (2, 3));
        assert_eq!(injected[0].error, throttled());
        assert_eq!(injected[0].performed, None);
        // A refused call never reached the fake.
        assert_eq!(g.inner().count(ops::LIST_TOKENS), 2);
    }

    #[tokio::test]
    async fn a_star_fault_counts_every_call() {
        let g = Failing::new(grafana()).fail_nth("*", 2, timed_out());
        g.list_workspaces().await.unwrap();
        assert!(g.describe_workspace(WS).await.is_err());
        g.describe_workspace(WS).await.unwrap();
        assert_eq!(g.injected()[0].operation, ops::DESCRIBE_WORKSPACE);
    }

    #[tokio::test]
    async fn a_put_secret_value_that_landed_can_lose_its_answer() {
        let store = FakeSecrets::new();
        let s = Failing::new(store.clone()).lose_answer(ops::PUT_SECRET_VALUE, 2, timed_out());
        s.create(&spec(), &[], None).await.unwrap();
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        let r = s.put_version(NAME, V2, "two", &[AWSPENDING]).await;
        assert_eq!(r, Err(timed_out()));
        // It landed: the rotator settles the doubt by describing the secret.
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert_eq!(d.version_with(AWSPENDING), Some(V2));
        assert_eq!(store.value(NAME, AWSPENDING).unwrap().as_str(), "two");
        assert_eq!(s.injected()[0].performed, Some(true));
        // Repeating it is safe: same id, same value.
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
    }

    #[tokio::test]
    async fn a_create_that_timed_out_after_taking_effect_leaves_its_token() {
        let fake = grafana();
        let g: Arc<dyn Grafana> =
            Arc::new(Failing::new(fake.clone()).lose_answer(ops::CREATE_TOKEN, 1, timed_out()));
        let r = g
            .create_token(WS, "2", "amgrot-terraform-x", HOUR, epoch())
            .await;
        assert!(matches!(r, Err(ApiError::Unavailable { .. })));
        assert!(!r.unwrap_err().surely_not_applied());
        // The token exists, its key lost; a blind retry meets the name.
        assert_eq!(fake.tokens(WS, "2").len(), 1);
        let again = g
            .create_token(WS, "2", "amgrot-terraform-x", HOUR, epoch())
            .await;
        assert!(matches!(again, Err(ApiError::Conflict(_))));
    }

    #[tokio::test]
    async fn an_answer_lost_on_a_failing_call_records_that_the_inner_call_failed() {
        let s = Failing::new(FakeSecrets::new()).lose_answer(ops::CREATE_SECRET, 2, timed_out());
        s.create(&spec(), &[], None).await.unwrap();
        assert_eq!(s.create(&spec(), &[], None).await.unwrap_err(), timed_out());
        assert_eq!(s.injected()[0].performed, Some(false));
    }

    #[tokio::test]
    async fn faults_can_be_added_and_cleared_while_in_use() {
        let s = Failing::new(FakeSecrets::new());
        s.create(&spec(), &[], None).await.unwrap();
        s.add(Fault::new(
            ops::DESCRIBE_SECRET,
            1,
            ApiError::AccessDenied("AccessDeniedException: no".into()),
        ));
        assert!(matches!(
            s.describe(NAME).await,
            Err(ApiError::AccessDenied(_))
        ));
        s.add(Fault::new(ops::DESCRIBE_SECRET, 2, throttled()));
        assert!(s.describe(NAME).await.is_err());
        s.clear();
        s.describe(NAME).await.unwrap();
        assert_eq!(s.calls(ops::DESCRIBE_SECRET), 3);
    }

    #[tokio::test]
    async fn the_verifier_fails_with_the_http_answer_an_error_stands_for() {
        let g = grafana();
        let t = g.create_token(WS, "2", "t", HOUR, epoch()).await.unwrap();
        let v = Failing::new(FakeVerifier::tied_to(&g, epoch()))
            .fail_nth(ops::GET_CURRENT_ORG, 1, throttled())
            .fail_nth(ops::GET_CURRENT_ORG, 2, timed_out());
        let url = format!("https://{WS}.grafana-workspace.us-east-1.amazonaws.com");
        let e = v.verify(&url, &t.key).await.unwrap_err();
        assert_eq!(e.status, Some(429));
        assert_eq!(e.url, format!("{url}/api/org/"));
        assert_eq!(v.verify(&url, &t.key).await.unwrap_err().status, None);
        v.verify(&url, &t.key).await.unwrap();
        assert_eq!(
            v.inner().calls().len(),
            1,
            "refused calls never reached Grafana"
        );
    }

    #[test]
    #[should_panic(expected = "unknown operation")]
    fn a_misspelt_operation_fails_loudly() {
        Fault::new("PutSecret", 1, throttled());
    }
}
