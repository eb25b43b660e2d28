//! The executor: performs one credential's plan, in protocol order, idempotently.
//!
//! overlap: create token → PutSecretValue as AWSPENDING (version ID derived from the token) →
//! verify → promote to AWSCURRENT (the old version becomes AWSPREVIOUS) → drop AWSPENDING.
//! recreate: delete → create with the same name → verify → PutSecretValue as AWSCURRENT.
//! A new token that could not be published, or failed verification, is deleted again. A failure
//! after AWSPENDING is written leaves it for the next pass to resume. Nothing here decides what
//! to do: that is `plan`. A key lives only in `NewToken` / `Zeroizing` values and never reaches
//! a log line or an error.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::api::ApiError;
use crate::config::Policy;
use crate::failpoint;
use crate::grafana::Grafana;
use crate::metrics::{CredentialLabels, Metrics};
use crate::model::{
    secret_value, Key, NewToken, Role, SecretFormat, SecretSpec, SecretState, ServiceAccount,
    Workspace, AWSCURRENT, AWSPENDING,
};
use crate::plan::{self, Action, DeleteReason, TokenRef};
use crate::secrets::SecretStore;
use crate::verify::Verifier;

/// What a credential rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service account's tokens.
    Token,
    /// A legacy API key of this role (Grafana 8); `service_account` holds the key's base name.
    ApiKey(Role),
}

/// One managed credential: a service account (or legacy API key) in a workspace, bound to a secret.
#[derive(Debug, Clone)]
pub struct Credential {
    pub target: String,
    pub kind: CredentialKind,
    pub workspace: Workspace,
    /// The service account's name, or the API key's base name.
    pub service_account: String,
    pub secret: SecretSpec,
    pub policy: Policy,
}

impl Credential {
    pub fn labels(&self) -> CredentialLabels {
        CredentialLabels {
            workspace: self.workspace.id.clone(),
            service_account: self.service_account.clone(),
            kind: match self.kind {
                CredentialKind::Token => "token",
                CredentialKind::ApiKey(_) => "api_key",
            },
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
    #[error("verification of the new token failed ({0}); AWSCURRENT left as it was")]
    Verification(String),
    #[error("the pending version holds no readable key")]
    UnreadablePending,
    #[error("no free token name after {0} attempts")]
    NoFreeName(u32),
    #[error("{0}")]
    Postponed(String),
    #[error("service-account bootstrap: {0}")]
    Bootstrap(String),
    #[error("the service account does not exist")]
    NoServiceAccount,
}

impl StepError {
    pub fn api(step: &'static str) -> impl FnOnce(ApiError) -> StepError {
        move |source| StepError::Api { step, source }
    }
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each action done, described for people.
    pub done: Vec<String>,
    pub error: Option<StepError>,
    /// The token AWSCURRENT references afterwards, when known.
    pub current: Option<TokenRef>,
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

pub struct Executor<'a> {
    pub grafana: &'a dyn Grafana,
    pub secrets: &'a dyn SecretStore,
    pub verifier: &'a dyn Verifier,
    pub metrics: &'a Metrics,
}

/// The state an executing plan carries from one action to the next.
struct Run<'c> {
    cred: &'c Credential,
    /// `None` until a bootstrap creates the missing service account.
    account: Option<ServiceAccount>,
    labels: CredentialLabels,
    /// The version AWSCURRENT is on, so a promotion can name it in RemoveFromVersionId.
    current_version: Option<String>,
    outcome: Outcome,
}

impl Run<'_> {
    fn account(&self) -> Result<&ServiceAccount, StepError> {
        self.account.as_ref().ok_or(StepError::NoServiceAccount)
    }
}

impl Executor<'_> {
    pub async fn execute(
        &self,
        cred: &Credential,
        account: Option<&ServiceAccount>,
        secret: Option<&SecretState>,
        plan: &plan::Plan,
        now: DateTime<Utc>,
    ) -> Outcome {
        let mut run = Run {
            cred,
            account: account.cloned(),
            labels: cred.labels(),
            current_version: secret
                .and_then(|s| s.version_with(AWSCURRENT))
                .map(str::to_owned),
            outcome: Outcome {
                current: plan.current.clone(),
                ..Outcome::default()
            },
        };
        for action in &plan.actions {
            let result = self.perform(&mut run, action, now).await;
            match result {
                Ok(()) => run.outcome.done.push(action.to_string()),
                Err(e) => {
                    tracing::warn!(
                        workspace = %cred.workspace.id,
                        service_account = %cred.service_account,
                        action = %action,
                        error = %e,
                        "action failed"
                    );
                    let stop = action.is_rotation();
                    if run.outcome.error.is_none() || stop {
                        run.outcome.error = Some(e);
                    }
                    if stop {
                        break;
                    }
                }
            }
        }
        run.outcome
    }

    async fn perform(
        &self,
        run: &mut Run<'_>,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        match action {
            Action::CreateServiceAccount { role } => {
                let made = self
                    .grafana
                    .create_service_account(&cred.workspace.id, &cred.service_account, *role)
                    .await;
                let outcome = match &made {
                    Ok(_) => "success",
                    Err(e) => e.metric_label(),
                };
                self.metrics
                    .bootstrap(&cred.workspace.id, &cred.service_account, outcome);
                match made {
                    Ok(sa) => {
                        tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, service_account_id = %sa.id, role = %role, "created service account");
                        run.account = Some(sa);
                        Ok(())
                    }
                    Err(ApiError::Conflict(m)) => Err(StepError::Bootstrap(format!(
                        "a service account named {:?} already exists or the name is taken ({m}); it is looked up again next pass",
                        cred.service_account
                    ))),
                    Err(ApiError::QuotaExceeded(m)) => Err(StepError::Bootstrap(format!(
                        "the workspace's service-account quota is full ({m}); delete unused service accounts"
                    ))),
                    Err(e) => Err(StepError::api("CreateWorkspaceServiceAccount")(e)),
                }
            }
            Action::CreateSecret => {
                match self.secrets.create(&cred.secret).await {
                    // Created meanwhile by someone else (another replica): fine, it is there.
                    Ok(_) | Err(ApiError::Conflict(_)) => {}
                    Err(e) => return Err(StepError::api("CreateSecret")(e)),
                }
                tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, "created secret");
                Ok(())
            }
            Action::Rotate { reason, .. } => {
                let result = self.rotate_overlap(run, now).await;
                let outcome = if result.is_ok() { "success" } else { "failure" };
                self.metrics.rotation(&run.labels, outcome, reason.as_str());
                result
            }
            Action::Recreate {
                reason,
                token_name,
                delete_first,
            } => {
                let result = self.recreate(run, token_name, delete_first, now).await;
                let outcome = if result.is_ok() { "success" } else { "failure" };
                self.metrics.rotation(&run.labels, outcome, reason.as_str());
                result
            }
            Action::Resume { version_id, token } => {
                let result = self.resume(run, version_id, token).await;
                let outcome = if result.is_ok() { "success" } else { "failure" };
                self.metrics.rotation(&run.labels, outcome, "resumed");
                result
            }
            Action::ClearPending { version_id } => self
                .secrets
                .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
                .await
                .map_err(StepError::api("UpdateSecretVersionStage")),
            Action::DeleteToken { token, reason } => self.delete_token(run, token, *reason).await,
        }
    }

    async fn delete_token(
        &self,
        run: &Run<'_>,
        token: &TokenRef,
        reason: DeleteReason,
    ) -> Result<(), StepError> {
        self.delete_token_id(run, &token.id, &token.name, reason.as_str())
            .await
    }

    async fn delete_token_id(
        &self,
        run: &Run<'_>,
        id: &str,
        name: &str,
        reason: &str,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        let result = match self
            .grafana
            .delete_token(&cred.workspace.id, &run.account()?.id, id)
            .await
        {
            // Already gone: the goal is reached.
            Ok(()) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(StepError::api("DeleteWorkspaceServiceAccountToken")(e)),
        };
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.metrics.deletion(&run.labels, reason, outcome);
        if result.is_ok() {
            failpoint::hit("after_delete_token");
            tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, token_id = %id, token_name = %name, reason, "deleted token");
        }
        result
    }

    /// Creates a token named `base` (or `base-2`, `base-3`… when the name is taken). AMG takes no
    /// idempotency token: after an ambiguous failure the same name is tried again, and if it then
    /// turns out taken, the token the lost attempt made is found and deleted (its key is lost).
    async fn create_token(
        &self,
        run: &Run<'_>,
        base: &str,
        now: DateTime<Utc>,
        fixed_name: bool,
    ) -> Result<NewToken, StepError> {
        let cred = run.cred;
        let ws = &cred.workspace.id;
        let sa = &run.account()?.id;
        const ATTEMPTS: u32 = 4;
        let mut suffix = 1;
        // The last failure, when it left the outcome unknown: if the attempts run out on it,
        // it is the cause to report (a name was not what was missing).
        let mut ambiguous: Option<ApiError> = None;
        for _ in 0..ATTEMPTS {
            let name = if suffix == 1 {
                base.to_owned()
            } else {
                format!("{base}-{suffix}")
            };
            match self
                .grafana
                .create_token(ws, sa, &name, cred.policy.token_ttl, now)
                .await
            {
                Ok(t) => {
                    tracing::info!(workspace = %ws, service_account = %cred.service_account, token_id = %t.id, token_name = %t.name, expires_at = %crate::model::rfc3339(t.expires_at), "created token");
                    return Ok(t);
                }
                Err(ApiError::Conflict(_)) if ambiguous.is_some() || fixed_name => {
                    // Ours from the lost attempt, or (recreate) a leftover holding the name.
                    let tokens = self
                        .grafana
                        .list_tokens(ws, sa)
                        .await
                        .map_err(StepError::api("ListWorkspaceServiceAccountTokens"))?;
                    match tokens.iter().find(|t| t.name == name) {
                        Some(t) => {
                            self.delete_token_id(run, &t.id, &t.name, "orphan").await?;
                        }
                        // Taken by an API key or another service account's token.
                        None => suffix += 1,
                    }
                    ambiguous = None;
                }
                Err(ApiError::Conflict(_)) => suffix += 1,
                Err(e) if !e.surely_not_applied() => ambiguous = Some(e),
                Err(e) => return Err(StepError::api("CreateWorkspaceServiceAccountToken")(e)),
            }
        }
        Err(match ambiguous {
            Some(e) => StepError::api("CreateWorkspaceServiceAccountToken")(e),
            None => StepError::NoFreeName(ATTEMPTS),
        })
    }

    /// Deletes a token just created that will not be used, reporting but not failing on error:
    /// the orphan sweep of a later pass deletes it if this does not.
    async fn roll_back(&self, run: &Run<'_>, token: &NewToken) {
        if let Err(e) = self
            .delete_token_id(run, &token.id, &token.name, "rollback")
            .await
        {
            tracing::warn!(workspace = %run.cred.workspace.id, service_account = %run.cred.service_account, token_name = %token.name, error = %e, "could not delete the unused new token; a later pass will");
        }
    }

    async fn verify(&self, run: &Run<'_>, key: &Key) -> Result<(), StepError> {
        if !run.cred.policy.verify {
            return Ok(());
        }
        let url = run.cred.verify_url();
        self.verifier
            .verify(&url, key)
            .await
            .map_err(StepError::Verification)?;
        tracing::info!(workspace = %run.cred.workspace.id, service_account = %run.cred.service_account, url = %url, "verified the new token");
        Ok(())
    }

    async fn promote(&self, run: &mut Run<'_>, version_id: &str) -> Result<(), StepError> {
        promote(
            self.secrets,
            run.cred,
            version_id,
            &mut run.current_version,
            "after_promote",
        )
        .await
    }

    async fn rotate_overlap(&self, run: &mut Run<'_>, now: DateTime<Utc>) -> Result<(), StepError> {
        let cred = run.cred;
        let name = plan::token_name(&cred.policy.name_prefix, &cred.service_account, now);
        let token = self.create_token(run, &name, now, false).await?;
        failpoint::hit("after_create_token");
        // A secret's first version becomes AWSCURRENT as soon as it is written: with no current
        // version to protect, prove the token before publishing rather than after.
        let first_version = run.current_version.is_none();
        if first_version {
            if let Err(e) = self.verify(run, &token.key).await {
                self.roll_back(run, &token).await;
                return Err(e);
            }
        }
        let version = plan::version_id(&cred.workspace.id, &run.account()?.id, &token.id);
        let value = secret_value(cred.secret.format, &cred.workspace, run.account()?, &token);
        if let Err(e) = self
            .secrets
            .put_version(&cred.secret.name, &version, &value, &[AWSPENDING])
            .await
        {
            self.roll_back(run, &token).await;
            return Err(StepError::api("PutSecretValue")(e));
        }
        tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, version_id = %version, "published as AWSPENDING");
        failpoint::hit("after_pending");
        let verified = if first_version {
            Ok(())
        } else {
            self.verify(run, &token.key).await
        };
        if let Err(e) = verified {
            self.roll_back(run, &token).await;
            let _ = self
                .secrets
                .move_stage(&cred.secret.name, AWSPENDING, None, Some(&version))
                .await;
            return Err(e);
        }
        failpoint::hit("after_verify");
        self.promote(run, &version).await?;
        run.outcome.current = Some((&token.summary()).into());
        Ok(())
    }

    async fn recreate(
        &self,
        run: &mut Run<'_>,
        token_name: &str,
        delete_first: &[TokenRef],
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        for old in delete_first {
            self.delete_token_id(run, &old.id, &old.name, DeleteReason::Recreate.as_str())
                .await?;
        }
        failpoint::hit("after_recreate_delete");
        let token = self.create_token(run, token_name, now, true).await?;
        failpoint::hit("after_recreate_create");
        if let Err(e) = self.verify(run, &token.key).await {
            self.roll_back(run, &token).await;
            return Err(e);
        }
        let version = plan::version_id(&cred.workspace.id, &run.account()?.id, &token.id);
        let value = secret_value(cred.secret.format, &cred.workspace, run.account()?, &token);
        if let Err(e) = self
            .secrets
            .put_version(&cred.secret.name, &version, &value, &[AWSCURRENT])
            .await
        {
            self.roll_back(run, &token).await;
            return Err(StepError::api("PutSecretValue")(e));
        }
        run.current_version = Some(version.clone());
        tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, version_id = %version, "published as AWSCURRENT");
        failpoint::hit("after_recreate_publish");
        run.outcome.current = Some((&token.summary()).into());
        Ok(())
    }

    async fn resume(
        &self,
        run: &mut Run<'_>,
        version_id: &str,
        token: &TokenRef,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, token_name = %token.name, "resuming the AWSPENDING version an earlier pass left");
        if cred.policy.verify {
            let value = self
                .secrets
                .get_value(&cred.secret.name, AWSPENDING)
                .await
                .map_err(StepError::api("GetSecretValue"))?;
            let key =
                key_from_value(cred.secret.format, &value).ok_or(StepError::UnreadablePending)?;
            if let Err(e) = self.verify(run, &key).await {
                self.delete_token_id(run, &token.id, &token.name, "rollback")
                    .await
                    .ok();
                let _ = self
                    .secrets
                    .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
                    .await;
                return Err(e);
            }
        }
        self.promote(run, version_id).await?;
        run.outcome.current = Some(token.clone());
        Ok(())
    }
}

/// Moves AWSCURRENT to `version_id` (from `current`, which it then names), then drops AWSPENDING
/// from it. Shared by tokens and API keys; `crash_point` names the test-only failpoint after the
/// promotion.
pub(crate) async fn promote(
    secrets: &dyn SecretStore,
    cred: &Credential,
    version_id: &str,
    current: &mut Option<String>,
    crash_point: &'static str,
) -> Result<(), StepError> {
    let name = &cred.secret.name;
    if current.is_none() {
        // Secrets Manager puts AWSCURRENT on a secret's first version by itself, so look.
        *current = secrets
            .describe(name)
            .await
            .map_err(StepError::api("DescribeSecret"))?
            .and_then(|s| s.version_with(AWSCURRENT).map(str::to_owned));
    }
    if current.as_deref() != Some(version_id) {
        secrets
            .move_stage(name, AWSCURRENT, Some(version_id), current.as_deref())
            .await
            .map_err(StepError::api("UpdateSecretVersionStage"))?;
    }
    *current = Some(version_id.to_owned());
    tracing::info!(workspace = %cred.workspace.id, credential = %cred.service_account, secret = %name, version_id, "promoted to AWSCURRENT");
    failpoint::hit(crash_point);
    // Tidy only: a label left here is cleared by the next pass.
    if let Err(e) = secrets
        .move_stage(name, AWSPENDING, None, Some(version_id))
        .await
    {
        tracing::warn!(workspace = %cred.workspace.id, credential = %cred.service_account, error = %e, "could not clear AWSPENDING after promotion");
    }
    Ok(())
}

/// The key inside a secret value of the given format.
fn key_from_value(format: SecretFormat, value: &str) -> Option<Key> {
    match format {
        SecretFormat::Raw => (!value.is_empty()).then(|| Key::new(value.to_owned())),
        SecretFormat::Json => {
            #[derive(serde::Deserialize)]
            struct Doc {
                token: String,
            }
            // The key moves straight into `Key`, which zeroizes it.
            let doc: Doc = serde_json::from_str(value).ok()?;
            Some(Key::new(doc.token))
        }
    }
}
