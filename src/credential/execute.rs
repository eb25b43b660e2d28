//! The executor: performs one credential's plan, in protocol order, idempotently.
//!
//! overlap: create token → verify → PutSecretValue as AWSPENDING (version ID derived from the
//! token) → promote to AWSCURRENT (the old version becomes AWSPREVIOUS) → drop AWSPENDING.
//! recreate: delete → create with the same name → verify → PutSecretValue as AWSCURRENT.
//! Nothing is published before it is proven: a key that fails verification adds no secret
//! version, is deleted again, and the failure is recorded on the secret (`records.rs`) so the
//! next attempts back off, across processes. A new token that could not be published is
//! deleted again, unless the write that failed landed after all (it is looked for first). A
//! failure after AWSPENDING is written leaves it for the next pass to resume. A name taken
//! under our feet by another rotator is left to it. Nothing here decides what to do: that is
//! `plan`. A key lives only in `NewToken` / `Zeroizing` values and never reaches a log line or
//! an error.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::aws::error::ApiError;
use crate::aws::grafana::Grafana;
use crate::aws::secrets::SecretStore;
use crate::aws::verify::Verifier;
use crate::config::Policy;
use crate::credential::plan::{self, Action, DeleteReason, TokenRef};
use crate::credential::records::{VerifyBackoff, VERIFICATION_TAG};
use crate::daemon::metrics::{CredentialLabels, Metrics};
use crate::failpoint;
use crate::model::{
    secret_value, Key, NewToken, Role, SecretFormat, SecretSpec, SecretState, ServiceAccount,
    Workspace, AWSCURRENT, AWSPENDING,
};

/// What a credential rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service account's tokens.
    Token,
    /// A legacy API key of this role (Grafana 9 and 10); `service_account` holds the key's
    /// base name.
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
    #[error("verification of the new key failed ({0}); nothing was published, AWSCURRENT left as it was")]
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
    /// Another rotator is doing this credential's rotation right now: not a failure, the rest
    /// of this plan was made against a world that has changed, so it stops.
    #[error("{0}")]
    Yielded(String),
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
    /// The secret as last seen: its ARN and name give the mark of new token names, its tags
    /// the verification record. `None` until `CreateSecret` makes it.
    secret: Option<SecretState>,
    labels: CredentialLabels,
    /// The version AWSCURRENT is on, so a promotion can name it in RemoveFromVersionId.
    current_version: Option<String>,
    outcome: Outcome,
}

impl Run<'_> {
    fn account(&self) -> Result<&ServiceAccount, StepError> {
        self.account.as_ref().ok_or(StepError::NoServiceAccount)
    }

    /// The mark new token names carry: the secret's, known once the secret exists.
    fn mark(&self) -> Result<String, StepError> {
        self.secret
            .as_ref()
            .map(plan::secret_mark)
            .ok_or_else(|| StepError::Api {
                step: "DescribeSecret",
                source: ApiError::NotFound(format!("secret {}", self.cred.secret.name)),
            })
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
            secret: secret.cloned(),
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
                Err(StepError::Yielded(why)) => {
                    tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, action = %action, reason = %why, "left to another rotator");
                    run.outcome
                        .done
                        .push(format!("left to another rotator: {why}"));
                    break;
                }
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
                run.secret = Some(create_secret(self.secrets, cred).await?);
                Ok(())
            }
            Action::Rotate { reason, .. } => {
                let result = self.rotate_overlap(run, now).await;
                self.metrics
                    .rotation(&run.labels, rotation_outcome(&result), reason.as_str());
                result
            }
            Action::Recreate {
                reason,
                delete_first,
            } => {
                let result = self.recreate(run, delete_first, now).await;
                self.metrics
                    .rotation(&run.labels, rotation_outcome(&result), reason.as_str());
                result
            }
            Action::Resume { version_id, token } => {
                let result = self.resume(run, version_id, token, now).await;
                self.metrics
                    .rotation(&run.labels, rotation_outcome(&result), "resumed");
                result
            }
            Action::ClearPending { version_id } => self
                .secrets
                .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
                .await
                .map_err(StepError::api("UpdateSecretVersionStage")),
            Action::DeleteToken { token, reason } => {
                self.delete_token_id(run, &token.id, &token.name, reason.as_str())
                    .await
            }
        }
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
    /// turns out taken, the next name is tried. The token a lost attempt may have made is
    /// referenced by no version; it carries this secret's mark, so the orphan sweep of a later
    /// pass deletes it once it is older than `orphan_margin`. Deleting it here could delete
    /// another rotator's token that is about to be published.
    async fn create_token(
        &self,
        run: &Run<'_>,
        base: &str,
        now: DateTime<Utc>,
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
                    tracing::info!(workspace = %ws, service_account = %cred.service_account, token_id = %t.id, token_name = %t.name, "created token");
                    return Ok(t);
                }
                Err(ApiError::Conflict(_)) => {
                    suffix += 1;
                    ambiguous = None;
                }
                Err(e) if !e.surely_not_applied() => ambiguous = Some(e),
                Err(e) => return Err(StepError::api("CreateWorkspaceServiceAccountToken")(e)),
            }
        }
        Err(match ambiguous {
            Some(e) => StepError::api("CreateWorkspaceServiceAccountToken")(e),
            None => StepError::NoFreeName(ATTEMPTS),
        })
    }

    /// recreate: creates the secret's fixed-name token. The name is free once `delete_first`
    /// is done, unless someone made a token of that name since the plan. The secret is looked
    /// at again first: if a version holds it, another rotator published it and this one leaves
    /// the credential to it; if none does, it is left to its maker while younger than
    /// orphan_margin, and deleted as an orphan once older.
    async fn create_fixed(
        &self,
        run: &Run<'_>,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<NewToken, StepError> {
        let cred = run.cred;
        let ws = &cred.workspace.id;
        let sa = run.account()?.id.clone();
        let create = || async {
            self.grafana
                .create_token(ws, &sa, name, cred.policy.token_ttl, now)
                .await
        };
        // Up to three tries: a lost attempt, a leftover deleted, then the last word.
        for _ in 0..3 {
            match create().await {
                Ok(t) => {
                    tracing::info!(workspace = %ws, service_account = %cred.service_account, token_id = %t.id, token_name = %t.name, "created token");
                    return Ok(t);
                }
                Err(ApiError::Conflict(_)) => {}
                Err(e) if !e.surely_not_applied() => continue,
                Err(e) => return Err(StepError::api("CreateWorkspaceServiceAccountToken")(e)),
            }
            let tokens = self
                .grafana
                .list_tokens(ws, &sa)
                .await
                .map_err(StepError::api("ListWorkspaceServiceAccountTokens"))?;
            let Some(holder) = tokens.iter().find(|t| t.name == name) else {
                return Err(StepError::NoFreeName(1));
            };
            // Look at the secret again before deleting anything.
            let secret = self
                .secrets
                .describe(&cred.secret.name)
                .await
                .map_err(StepError::api("DescribeSecret"))?;
            let published = secret.as_ref().is_some_and(|s| {
                s.versions
                    .keys()
                    .any(|vid| plan::holds(vid, ws, &sa, holder))
            });
            if published {
                return Err(StepError::Yielded(format!(
                    "{name} was created and published meanwhile"
                )));
            }
            // Unpublished: another rotator about to publish it, or a pass that crashed after
            // creating it. Only its age tells them apart: younger than orphan_margin (the time
            // a pass may take between creating and publishing), it is left to its maker.
            let age = now - holder.created_at;
            let margin = chrono::Duration::from_std(cred.policy.orphan_margin).unwrap_or_default();
            if age < margin {
                return Err(StepError::Yielded(format!(
                    "{name} was created {}s ago and no version names it yet: another rotator may be publishing it (if a pass crashed instead, it is deleted once older than orphan_margin)",
                    age.num_seconds().max(0)
                )));
            }
            self.delete_token_id(run, &holder.id, &holder.name, DeleteReason::Orphan.as_str())
                .await?;
        }
        Err(StepError::NoFreeName(3))
    }

    /// AMG's own creation and expiry times of a token just made (Create returns none), from a
    /// listing; the host's estimate stays when the listing fails or lacks them.
    async fn with_amg_times(&self, run: &Run<'_>, mut token: NewToken) -> NewToken {
        let cred = run.cred;
        let Ok(sa) = run.account() else { return token };
        match self.grafana.list_tokens(&cred.workspace.id, &sa.id).await {
            Ok(list) => match list.iter().find(|t| t.id == token.id) {
                Some(t) => {
                    token.created_at = t.created_at;
                    if let Some(e) = t.expires_at {
                        token.expires_at = e;
                    }
                }
                None => {
                    tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, token_name = %token.name, "the new token is not listed yet; its times are the host's estimate")
                }
            },
            Err(e) => {
                tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, error = %e, "could not list the new token; its times are the host's estimate")
            }
        }
        token
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

    async fn verify(
        &self,
        run: &mut Run<'_>,
        key: &Key,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        verify_recorded(
            self.secrets,
            self.verifier,
            run.cred,
            &mut run.secret,
            key,
            now,
        )
        .await
    }

    /// Proves the new token, then publishes it under its version: the token is deleted again if
    /// either fails (unless the write landed after all).
    async fn prove_and_publish(
        &self,
        run: &mut Run<'_>,
        token: &NewToken,
        stage: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StepError> {
        let cred = run.cred;
        if let Err(e) = self.verify(run, &token.key, now).await {
            self.roll_back(run, token).await;
            return Err(e);
        }
        failpoint::hit("after_verify");
        let account = run.account()?;
        let version = plan::version_id(&cred.workspace.id, &account.id, &token.id, &token.name);
        let value = secret_value(cred.secret.format, &cred.workspace, account, token);
        if let Err(e) = publish(self.secrets, cred, &version, &value, stage).await {
            self.roll_back(run, token).await;
            return Err(e.error);
        }
        tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, version_id = %version, stage, "published");
        Ok(version)
    }

    async fn rotate_overlap(&self, run: &mut Run<'_>, now: DateTime<Utc>) -> Result<(), StepError> {
        let cred = run.cred;
        let name = plan::token_name(
            &cred.policy.name_prefix,
            &cred.service_account,
            &run.mark()?,
            now,
        );
        let token = self.create_token(run, &name, now).await?;
        failpoint::hit("after_create_token");
        let token = self.with_amg_times(run, token).await;
        let version = self.prove_and_publish(run, &token, AWSPENDING, now).await?;
        failpoint::hit("after_pending");
        promote(
            self.secrets,
            cred,
            &version,
            &mut run.current_version,
            "after_promote",
        )
        .await?;
        run.outcome.current = Some((&token.summary()).into());
        Ok(())
    }

    async fn recreate(
        &self,
        run: &mut Run<'_>,
        delete_first: &[TokenRef],
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        let name =
            plan::recreate_token_name(&cred.policy.name_prefix, &run.account()?.name, &run.mark()?);
        for old in delete_first {
            self.delete_token_id(run, &old.id, &old.name, DeleteReason::Recreate.as_str())
                .await?;
        }
        failpoint::hit("after_recreate_delete");
        let token = self.create_fixed(run, &name, now).await?;
        failpoint::hit("after_recreate_create");
        let token = self.with_amg_times(run, token).await;
        let version = self.prove_and_publish(run, &token, AWSCURRENT, now).await?;
        run.current_version = Some(version);
        failpoint::hit("after_recreate_publish");
        run.outcome.current = Some((&token.summary()).into());
        Ok(())
    }

    async fn resume(
        &self,
        run: &mut Run<'_>,
        version_id: &str,
        token: &TokenRef,
        now: DateTime<Utc>,
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
            if let Err(e) = self.verify(run, &key, now).await {
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
        promote(
            self.secrets,
            cred,
            version_id,
            &mut run.current_version,
            "after_promote",
        )
        .await?;
        run.outcome.current = Some(token.clone());
        Ok(())
    }
}

/// The `outcome` label of a rotation.
fn rotation_outcome(r: &Result<(), StepError>) -> &'static str {
    match r {
        Ok(()) => "success",
        Err(StepError::Yielded(_)) => "yielded",
        Err(_) => "failure",
    }
}

/// Creates the credential's secret (no value yet), or finds the one another replica created
/// meanwhile. Shared by tokens and API keys.
pub(crate) async fn create_secret(
    secrets: &dyn SecretStore,
    cred: &Credential,
) -> Result<SecretState, StepError> {
    let made = match secrets.create(&cred.secret).await {
        Ok(s) => s,
        Err(ApiError::Conflict(_)) => secrets
            .describe(&cred.secret.name)
            .await
            .map_err(StepError::api("DescribeSecret"))?
            .ok_or_else(|| StepError::Api {
                step: "DescribeSecret",
                source: ApiError::NotFound(format!("secret {}", cred.secret.name)),
            })?,
        Err(e) => return Err(StepError::api("CreateSecret")(e)),
    };
    tracing::info!(workspace = %cred.workspace.id, credential = %cred.service_account, secret = %cred.secret.name, "created secret");
    Ok(made)
}

/// Verifies `key` when the policy asks for it, and keeps the record of consecutive failures on
/// the secret (`records.rs`): one more on failure, none once a key is proven (or verification
/// is off). A record that cannot be written is reported, not fatal: the failure it counts is
/// what the caller reports. Shared by tokens and API keys.
pub(crate) async fn verify_recorded(
    secrets: &dyn SecretStore,
    verifier: &dyn Verifier,
    cred: &Credential,
    secret: &mut Option<SecretState>,
    key: &Key,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let previous = secret
        .as_ref()
        .and_then(|s| VerifyBackoff::from_tags(&s.tags));
    let result = if cred.policy.verify {
        verifier.verify(&cred.verify_url(), key).await
    } else {
        Ok(())
    };
    let name = &cred.secret.name;
    match result {
        Ok(()) => {
            if cred.policy.verify {
                tracing::info!(workspace = %cred.workspace.id, credential = %cred.service_account, url = %cred.verify_url(), "verified the new key");
            }
            if previous.is_some() {
                match secrets.untag(name, VERIFICATION_TAG).await {
                    Ok(()) => {
                        if let Some(s) = secret.as_mut() {
                            s.tags.remove(VERIFICATION_TAG);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %cred.workspace.id, credential = %cred.service_account, secret = %name, error = %e, "could not clear the verification record")
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            let record = VerifyBackoff::after(previous, now, e.status);
            tracing::error!(workspace = %cred.workspace.id, credential = %cred.service_account, url = %e.url, status = e.status.unwrap_or(0), failures = record.failures, next_attempt = %crate::model::rfc3339(record.next_attempt()), error = %e, "verification failed; nothing published, backing off");
            match secrets
                .tag(name, VERIFICATION_TAG, &record.tag_value())
                .await
            {
                Ok(()) => {
                    if let Some(s) = secret.as_mut() {
                        s.tags.insert(VERIFICATION_TAG.into(), record.tag_value());
                    }
                }
                Err(te) => {
                    tracing::warn!(workspace = %cred.workspace.id, credential = %cred.service_account, secret = %name, error = %te, "could not record the verification failure; the next pass tries again without backing off")
                }
            }
            Err(StepError::Verification(format!(
                "{e}; failure {} in a row, next attempt after {}",
                record.failures,
                crate::model::rfc3339(record.next_attempt())
            )))
        }
    }
}

/// A PutSecretValue that failed, and whether its version may exist anyway.
pub(crate) struct PublishFailure {
    pub error: StepError,
    /// The outcome is unknown and the secret could not be read to settle it.
    pub may_have_landed: bool,
}

/// Writes `value` as version `version_id` with `stage`. A failure whose outcome is unknown (a
/// timeout, a 5xx) is settled by looking at the secret: a version that landed is a success, so
/// what it holds is not deleted under it. Shared by tokens and API keys.
pub(crate) async fn publish(
    secrets: &dyn SecretStore,
    cred: &Credential,
    version_id: &str,
    value: &str,
    stage: &str,
) -> Result<(), PublishFailure> {
    let name = &cred.secret.name;
    let e = match secrets.put_version(name, version_id, value, &[stage]).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let error = StepError::api("PutSecretValue")(e.clone());
    if e.surely_not_applied() {
        return Err(PublishFailure {
            error,
            may_have_landed: false,
        });
    }
    match secrets.describe(name).await {
        Ok(Some(s)) if s.versions.contains_key(version_id) => {
            tracing::info!(workspace = %cred.workspace.id, credential = %cred.service_account, secret = %name, version_id, error = %e, "PutSecretValue reported a failure but its version is there: published");
            Ok(())
        }
        Ok(_) => Err(PublishFailure {
            error,
            may_have_landed: false,
        }),
        Err(_) => Err(PublishFailure {
            error,
            may_have_landed: true,
        }),
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
