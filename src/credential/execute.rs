//! The executor: performs one credential's plan, of either kind, in protocol order,
//! idempotently. One loop, one verify, one publish, one promote, one resume; what a kind does
//! its own way (mint, delete, render the secret's value) is its `KindOps`.
//!
//! Rotate: mint → verify → PutSecretValue as AWSPENDING (a version ID derived from what was
//! minted) → promote to AWSCURRENT (the old version becomes AWSPREVIOUS) → drop AWSPENDING; a
//! secret's first version is written as AWSCURRENT at once (it would be anyway), and a token
//! credential's missing secret is created with it, records and all, in one CreateSecret.
//! Recreate: delete → mint the fixed name → verify → PutSecretValue as AWSCURRENT.
//! Nothing is published before it is proven: a key that fails verification adds no secret
//! version, is deleted again, and the failure is recorded on the secret (`records.rs`) so the
//! next attempts back off, across processes. A new credential that could not be published is
//! deleted again, unless the write that failed may have landed (it is looked for first). A
//! failure after AWSPENDING is written leaves it for the next pass to resume. A name taken by
//! another rotator's credential is left to it (`StepError::Yielded`). Nothing here decides what
//! to do: that is the planners'. A key lives only in `Key` / `Zeroizing` values and never
//! reaches a log line or an error.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::plan::{Action, CredRef, DeleteReason, RotateReason};
use super::records::{Promotion, VerifyBackoff, AUDIT_TAG, PROMOTED_TAG, VERIFICATION_TAG};
use super::{Credential, Outcome, StepError};
use crate::aws::secrets::FirstVersion;
use crate::aws::{ApiError, Grafana, SecretStore, Verifier};
use crate::daemon::metrics::{CredentialLabels, Label, Metrics, StepOutcome, Succeeded};
use crate::failpoint;
use crate::model::{Key, SecretState, ServiceAccount, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// A token or key just minted: the only moment its key is known.
#[derive(Debug)]
pub struct Minted {
    /// With the id AMG addresses it by and AMG's own expiry.
    pub credential: CredRef,
    pub key: Key,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The audit record the credential's first version carries, when the listing after the
    /// create showed it clean (`audit::of_first`; tokens only).
    pub first_record: Option<super::records::Audit>,
}

/// The crash points (test-only, `failpoint.rs`) a kind names in the shared protocol.
pub struct CrashPoints {
    pub after_pending: &'static str,
    pub after_promote: &'static str,
}

/// What the kind read and decided: the plan, and what the executor and the metrics need of
/// what was observed.
pub struct Decided {
    pub plan: super::plan::Plan,
    pub secret: Option<SecretState>,
    /// The service account, when the kind has one and it exists.
    pub account: Option<ServiceAccount>,
    /// The service account's tokens by state (active, expired, no expiry) for the quota metrics:
    /// as this pass listed them, or as the last audit did when its record stood for them
    /// (`audit.rs`); `None` for a kind without a listing.
    pub tokens: Option<[usize; 3]>,
    /// The record of a clean audit this pass should write on the secret.
    pub record: Option<super::records::Audit>,
    /// How the tokens were observed (token credentials).
    pub observed: Option<crate::daemon::metrics::Observation>,
}

/// What one kind of credential does its own way; the executor and `reconcile` do the rest.
#[async_trait]
pub trait KindOps: Send + Sync {
    /// Reads what AWS reports of the credential and plans (the planning itself is pure: a
    /// function of what was read, the policy and `now`). Only reads. `audit`: read everything,
    /// trusting no record of an earlier audit (`plan`, and a look after another rotator).
    async fn decide(
        &self,
        services: Services<'_>,
        cred: &Credential,
        account: super::AccountView,
        now: DateTime<Utc>,
        audit: bool,
    ) -> Result<Decided, StepError>;
    /// Mints what `action` (Rotate or Recreate) asks for, named the kind's way; a name taken
    /// by a credential another rotator published is `StepError::Yielded`.
    async fn mint(
        &self,
        run: &mut Run<'_>,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<Minted, StepError>;
    /// Deletes it; already gone counts as done.
    async fn delete(&self, run: &Run<'_>, credential: &CredRef) -> Result<(), StepError>;
    /// The secret version ID and value that publish `minted`. The value holds the key.
    fn publication(
        &self,
        run: &Run<'_>,
        minted: &Minted,
    ) -> Result<(String, Zeroizing<String>), StepError>;
    /// The key inside a value this kind published (to verify a pending version).
    fn key_in(&self, run: &Run<'_>, value: &str) -> Option<Key>;
    /// Takes `name` off the kind's own records on the secret (API keys made but unpublished).
    async fn forget(&self, run: &mut Run<'_>, name: &str) -> Result<(), StepError>;
    /// Whether its mint can name a secret that does not exist yet (where the secret will be
    /// is enough: tokens), so a missing secret is created with the first version, in one call.
    fn creates_with_first_version(&self) -> bool {
        false
    }
    fn crash_points(&self) -> CrashPoints;
}

/// The services a plan is performed with.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    pub grafana: &'a dyn Grafana,
    pub secrets: &'a dyn SecretStore,
    /// The scope's secrets as this pass's one ListSecrets shows them.
    pub census: &'a super::census::Census,
    pub verifier: &'a dyn Verifier,
    pub metrics: &'a Metrics,
}

/// The state an executing plan carries from one action to the next.
pub struct Run<'c> {
    pub cred: &'c Credential,
    pub services: Services<'c>,
    /// `None` until a bootstrap creates the missing service account (tokens only).
    pub account: Option<ServiceAccount>,
    /// The secret as last seen: its ARN and name give the mark of new token names, its tags
    /// the rotator's records. `None` until `CreateSecret` makes it, or, when it is made with
    /// its first version, until the rotation publishes.
    pub secret: Option<SecretState>,
    pub labels: CredentialLabels,
    /// The version AWSCURRENT is on, so a promotion can name it in RemoveFromVersionId.
    pub current_version: Option<String>,
    pub outcome: Outcome,
}

impl Run<'_> {
    pub fn account(&self) -> Result<&ServiceAccount, StepError> {
        self.account.as_ref().ok_or(StepError::NoServiceAccount)
    }

    pub fn secret(&self) -> Result<&SecretState, StepError> {
        self.secret
            .as_ref()
            .ok_or_else(|| missing_secret(self.cred))
    }
}

/// The error of a step that needs `cred`'s secret while it does not exist.
pub fn missing_secret(cred: &Credential) -> StepError {
    StepError::Api {
        step: "DescribeSecret",
        source: ApiError::NotFound(format!("secret {}", cred.secret.name)),
    }
}

/// Performs `plan` for `cred`: each action in order; a failed rotation step stops the rest;
/// a failed deletion of a credential's only record holds back a promotion that can wait.
pub async fn execute(
    services: Services<'_>,
    cred: &Credential,
    account: Option<&ServiceAccount>,
    secret: Option<&SecretState>,
    plan: &super::plan::Plan,
    now: DateTime<Utc>,
) -> Outcome {
    let mut run = Run {
        cred,
        services,
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
    let ops = cred.kind.ops();
    // The record of the last clean audit goes before anything changes: a pass that stops
    // half-way must not leave it hiding what it made (`audit.rs`).
    if !plan.actions.is_empty() && super::audit::carries_record(secret) {
        if let Err(e) = services.secrets.untag(&cred.secret.name, AUDIT_TAG).await {
            tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, error = %e, "could not remove the audit record from the secret; nothing is changed this pass");
            run.outcome.error = Some(StepError::api("UntagResource")(e));
            return run.outcome;
        }
    }
    // A credential whose deletion failed while a label is its only record (API keys cannot be
    // listed): a promotion now would move that label and forget it alive.
    let mut unrecorded: Option<String> = None;
    for action in &plan.actions {
        if let Some(name) = unrecorded.as_ref().filter(|_| action.can_wait()) {
            let e = StepError::Postponed(format!(
                "{action} postponed: deleting {name} failed, and a promotion now would lose the only record of it; the current key is still valid, so this waits for the next pass"
            ));
            tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, action = %action, error = %e, "action postponed");
            run.outcome.error = Some(e);
            break;
        }
        if matches!(action, Action::CreateSecret) && creates_on_publish(ops, &run, plan).await {
            continue;
        }
        match perform(ops, &mut run, action, now).await {
            Ok(()) => run.outcome.done.push(action.to_string()),
            Err(StepError::Yielded(why)) => {
                tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, action = %action, reason = %why, "left to another rotator");
                run.outcome
                    .done
                    .push(format!("left to another rotator: {why}"));
                run.outcome.yielded = true;
                break;
            }
            Err(e) => {
                if let Action::Delete {
                    credential,
                    only_record: true,
                    ..
                } = action
                {
                    unrecorded = Some(credential.name.clone());
                }
                tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, action = %action, error = %e, "action failed");
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

/// Whether the missing secret is left for the rotation to create with its first version
/// (`rotate`): one CreateSecret instead of CreateSecret, TagResource and PutSecretValue. Only
/// when the kind's mint can name a secret not yet made and where it will be is known.
async fn creates_on_publish(ops: &dyn KindOps, run: &Run<'_>, plan: &super::plan::Plan) -> bool {
    ops.creates_with_first_version()
        && plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Rotate { .. } | Action::Recreate { .. }))
        && run.services.secrets.location().await.is_some()
}

async fn perform(
    ops: &dyn KindOps,
    run: &mut Run<'_>,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let cred = run.cred;
    let metrics = run.services.metrics;
    match action {
        Action::CreateServiceAccount { role } => bootstrap(run, *role).await,
        Action::CreateSecret => {
            run.secret = Some(create_secret(run.services.secrets, cred, &[]).await?);
            Ok(())
        }
        Action::Rotate { reason, .. } | Action::Recreate { reason, .. } => {
            let result = rotate(ops, run, action, now).await;
            metrics.rotation(&run.labels, rotation_outcome(&result), reason);
            result
        }
        Action::Resume {
            version_id,
            credential,
        } => {
            let result = resume(ops, run, version_id, credential, now).await;
            metrics.rotation(
                &run.labels,
                rotation_outcome(&result),
                &RotateReason::Resumed,
            );
            result
        }
        Action::ClearPending { version_id } => run
            .services
            .secrets
            .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
            .await
            .map_err(StepError::api("UpdateSecretVersionStage")),
        Action::Delete {
            credential,
            reason,
            drop_previous,
            forget,
            ..
        } => {
            delete(ops, run, credential, *reason).await?;
            if let Some(vid) = drop_previous {
                run.services
                    .secrets
                    .move_stage(&cred.secret.name, AWSPREVIOUS, None, Some(vid))
                    .await
                    .map_err(StepError::api("UpdateSecretVersionStage"))?;
            }
            if *forget {
                ops.forget(run, &credential.name).await?;
            }
            Ok(())
        }
        Action::Forget { name } => ops.forget(run, name).await,
    }
}

/// Deletes a credential through its kind, counting the deletion by reason and outcome.
async fn delete(
    ops: &dyn KindOps,
    run: &Run<'_>,
    credential: &CredRef,
    reason: DeleteReason,
) -> Result<(), StepError> {
    let result = ops.delete(run, credential).await;
    let outcome = if result.is_ok() {
        StepOutcome::Success
    } else {
        StepOutcome::Failure
    };
    run.services.metrics.deletion(&run.labels, &reason, outcome);
    if result.is_ok() {
        tracing::info!(workspace = %run.cred.workspace.id, service_account = %run.cred.service_account, id = %credential.id, name = %credential.name, reason = reason.as_str(), "deleted");
    }
    result
}

/// Deletes what was just minted and will not be used, reporting but not failing on error: a
/// later pass finds it (the orphan sweep, or the name conflict of API keys).
async fn roll_back(ops: &dyn KindOps, run: &Run<'_>, minted: &Minted) {
    if let Err(e) = delete(ops, run, &minted.credential, DeleteReason::Rollback).await {
        tracing::warn!(workspace = %run.cred.workspace.id, service_account = %run.cred.service_account, name = %minted.credential.name, error = %e, "could not delete the unused new credential; a later pass will");
    }
}

/// Rotate and Recreate: (recreate: delete first) → mint → verify → publish → (promote).
async fn rotate(
    ops: &dyn KindOps,
    run: &mut Run<'_>,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let cred = run.cred;
    let recreate = matches!(action, Action::Recreate { .. });
    if let Action::Recreate { delete_first, .. } = action {
        for old in delete_first {
            delete(ops, run, old, DeleteReason::Recreate).await?;
        }
        failpoint::hit("after_recreate_delete");
    }
    let minted = ops.mint(run, action, now).await?;
    if let Err(e) = verify(run, &minted.key, now).await {
        roll_back(ops, run, &minted).await;
        return Err(e);
    }
    failpoint::hit("after_verify");
    let (version, value) = ops.publication(run, &minted)?;
    // A secret with no version yet (made by this pass, or empty), or none at all: its first
    // version is AWSCURRENT whatever it is written as, so it is written as such, recorded first
    // as any promotion is, and there is nothing to promote or to clear (no describe, no label
    // moves). A missing secret is made with it, records and all, in one call.
    let creating = run.secret.is_none();
    let first = !recreate && run.secret.as_ref().is_none_or(|s| s.versions.is_empty());
    let stage = if recreate || first {
        AWSCURRENT
    } else {
        AWSPENDING
    };
    // The records a first version is written with: its promotion, and its first audit's (it
    // stands only once the label is on that version). Recreate promotes nothing, but a secret
    // it creates carries the audit's record too: it costs no call there.
    let promotion = first.then(|| Promotion {
        version: version.clone(),
        at: Utc::now(),
    });
    let promoted = promotion.as_ref().map(Promotion::tag_value);
    let audited = (first || creating)
        .then(|| minted.first_record.as_ref().and_then(|a| a.tag_value()))
        .flatten();
    let tags: Vec<(&str, &str)> = [(PROMOTED_TAG, &promoted), (AUDIT_TAG, &audited)]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_deref()?)))
        .collect();
    if first && !creating {
        record(run, &tags).await;
        failpoint::hit("after_first_record");
    }
    let write = match creating {
        true => Write::Create(&tags),
        false => Write::Put(stage),
    };
    match publish(run.services.secrets, cred, &version, &value, write).await {
        Ok(made) => {
            if let Some(made) = made.filter(|_| creating) {
                tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, "created secret");
                run.outcome.done.push(Action::CreateSecret.to_string());
                run.secret = Some(made);
            }
        }
        Err(failure) => {
            if failure.may_have_landed {
                // A credential a version may hold is not deleted: if the write landed, the next
                // pass resumes it; if not, it is an orphan that pass finds.
                tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, name = %minted.credential.name, "the new credential may be published: kept for the next pass to settle");
            } else {
                roll_back(ops, run, &minted).await;
            }
            return Err(failure.error);
        }
    }
    let recorded = promotion.map(|p| p.at);
    tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, version_id = %version, stage, "published");
    let points = ops.crash_points();
    if recreate {
        run.current_version = Some(version);
        failpoint::hit("after_recreate_publish");
    } else if let Some(at) = recorded {
        run.current_version = Some(version);
        run.outcome.promoted = Some(at);
        failpoint::hit(points.after_pending);
        failpoint::hit(points.after_promote);
    } else {
        failpoint::hit(points.after_pending);
        promote(run, &version, points.after_promote).await?;
    }
    // Each kind's mint names AMG's own expiry in the reference.
    run.outcome.current = Some(minted.credential);
    Ok(())
}

/// Promotes the AWSPENDING version an interrupted pass left, proving its key first when
/// verification is on (a key that fails is deleted and its label cleared).
async fn resume(
    ops: &dyn KindOps,
    run: &mut Run<'_>,
    version_id: &str,
    credential: &CredRef,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let cred = run.cred;
    tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, name = %credential.name, "resuming the AWSPENDING version an earlier pass left");
    if cred.policy.verify {
        let value = run
            .services
            .secrets
            .get_value(&cred.secret.name, AWSPENDING)
            .await
            .map_err(StepError::api("GetSecretValue"))?;
        let key = ops
            .key_in(run, &value)
            .ok_or(StepError::UnreadablePending)?;
        if let Err(e) = verify(run, &key, now).await {
            delete(ops, run, credential, DeleteReason::Rollback)
                .await
                .ok();
            let _ = run
                .services
                .secrets
                .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
                .await;
            return Err(e);
        }
    }
    promote(run, version_id, ops.crash_points().after_promote).await?;
    run.outcome.current = Some(credential.clone());
    Ok(())
}

/// Creates the missing service account with the declared role (bootstrap).
async fn bootstrap(run: &mut Run<'_>, role: crate::model::Role) -> Result<(), StepError> {
    let cred = run.cred;
    let made = run
        .services
        .grafana
        .create_service_account(&cred.workspace.id, &cred.service_account, role)
        .await;
    let outcome: &dyn Label = match &made {
        Ok(_) => &Succeeded,
        Err(e) => e,
    };
    run.services
        .metrics
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

/// The `outcome` label of a rotation.
fn rotation_outcome(r: &Result<(), StepError>) -> StepOutcome {
    match r {
        Ok(()) => StepOutcome::Success,
        Err(e) => e.outcome(),
    }
}

/// Creates the credential's secret (no value yet) with `records` (the rotator's tags), or finds
/// the one another replica created meanwhile and records them on it.
async fn create_secret(
    secrets: &dyn SecretStore,
    cred: &Credential,
    records: &[(&str, &str)],
) -> Result<SecretState, StepError> {
    let made = match secrets.create(&cred.secret, records, None).await {
        Ok(s) => s,
        Err(ApiError::Conflict(_)) => {
            let mut found = secrets
                .describe(&cred.secret.name)
                .await
                .map_err(StepError::api("DescribeSecret"))?
                .ok_or_else(|| missing_secret(cred))?;
            if !records.is_empty() {
                secrets
                    .tag_all(&cred.secret.name, records)
                    .await
                    .map_err(StepError::api("TagResource"))?;
                found.tags.extend(crate::aws::secrets::owned(records));
            }
            found
        }
        Err(e) => return Err(StepError::api("CreateSecret")(e)),
    };
    tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, "created secret");
    Ok(made)
}

/// Verifies `key` when the policy asks for it, and keeps the record of consecutive failures on
/// the secret (`records.rs`): one more on failure, none once a key is proven (or verification
/// is off). A record that cannot be written is reported, not fatal: the failure it counts is
/// what the caller reports.
async fn verify(run: &mut Run<'_>, key: &Key, now: DateTime<Utc>) -> Result<(), StepError> {
    let cred = run.cred;
    let secrets = run.services.secrets;
    let previous = run
        .secret
        .as_ref()
        .and_then(|s| VerifyBackoff::from_tags(&s.tags));
    let result = if cred.policy.verify {
        run.services.verifier.verify(&cred.verify_url(), key).await
    } else {
        Ok(())
    };
    let name = &cred.secret.name;
    match result {
        Ok(()) => {
            if cred.policy.verify {
                tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, url = %cred.verify_url(), "verified the new key");
            }
            if previous.is_some() {
                match secrets.untag(name, VERIFICATION_TAG).await {
                    Ok(()) => {
                        if let Some(s) = run.secret.as_mut() {
                            s.tags.remove(VERIFICATION_TAG);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %name, error = %e, "could not clear the verification record")
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            let record = VerifyBackoff::after(previous, now, e.status);
            tracing::error!(workspace = %cred.workspace.id, service_account = %cred.service_account, url = %e.url, status = e.status.unwrap_or(0), failures = record.failures, next_attempt = %crate::model::rfc3339(record.next_attempt()), error = %e, "verification failed; nothing published, backing off");
            let value = record.tag_value();
            // A secret to be created with the first version is created without it, to hold
            // the record: without one, every pass would mint and delete again.
            let recorded = match run.secret.as_mut() {
                Some(s) => secrets
                    .tag(name, VERIFICATION_TAG, &value)
                    .await
                    .map(|()| {
                        s.tags.insert(VERIFICATION_TAG.into(), value.clone());
                    })
                    .map_err(|e| e.to_string()),
                None => create_secret(secrets, cred, &[(VERIFICATION_TAG, &value)])
                    .await
                    .map(|made| {
                        run.outcome.done.push(Action::CreateSecret.to_string());
                        run.secret = Some(made);
                    })
                    .map_err(|e| e.to_string()),
            };
            if let Err(te) = recorded {
                tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %name, error = %te, "could not record the verification failure; the next pass tries again without backing off")
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
struct PublishFailure {
    error: StepError,
    /// The outcome is unknown and the secret could not be read to settle it.
    may_have_landed: bool,
}

/// How a version is written: into the secret with a label (PutSecretValue), or as the first
/// version of the secret, created with it and these tags (CreateSecret).
#[derive(Clone, Copy)]
enum Write<'a> {
    Put(&'a str),
    Create(&'a [(&'a str, &'a str)]),
}

/// Writes `value` as version `version_id`. A failure whose outcome is unknown (a timeout, a
/// 5xx) is settled by looking at the secret: a version that landed is a success, so what it
/// holds is not deleted under it. A create that finds the name taken looks too: an earlier
/// attempt of its own may have made it; otherwise another rotator (or a person) made the
/// secret meanwhile, and the credential is left to it (`StepError::Yielded`). Returns the
/// secret a create made.
async fn publish(
    secrets: &dyn SecretStore,
    cred: &Credential,
    version_id: &str,
    value: &str,
    write: Write<'_>,
) -> Result<Option<SecretState>, PublishFailure> {
    let name = &cred.secret.name;
    let (attempt, step) = match write {
        Write::Put(stage) => (
            secrets
                .put_version(name, version_id, value, &[stage])
                .await
                .map(|()| None),
            "PutSecretValue",
        ),
        Write::Create(tags) => {
            let first = FirstVersion { version_id, value };
            (
                secrets
                    .create(&cred.secret, tags, Some(first))
                    .await
                    .map(Some),
                "CreateSecret",
            )
        }
    };
    let e = match attempt {
        Ok(made) => return Ok(made),
        Err(e) => e,
    };
    let taken = matches!(write, Write::Create(_)) && matches!(e, ApiError::Conflict(_));
    let error = match taken {
        true => StepError::Yielded(format!(
            "secret {name} was created by someone else while this pass minted its first token"
        )),
        false => StepError::api(step)(e.clone()),
    };
    if e.surely_not_applied() && !taken {
        return Err(PublishFailure {
            error,
            may_have_landed: false,
        });
    }
    match secrets.describe(name).await {
        Ok(Some(s)) if s.versions.contains_key(version_id) => {
            tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %name, version_id, error = %e, "{step} reported a failure but its version is there: published");
            Ok(Some(s))
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

/// Writes the rotator's records on the secret, in one call. A record that cannot be written is
/// reported, not fatal: a promotion's grace is then counted from the secret's LastChangedDate.
async fn record(run: &Run<'_>, tags: &[(&str, &str)]) {
    let cred = run.cred;
    let name = &cred.secret.name;
    if let Err(e) = run.services.secrets.tag_all(name, tags).await {
        tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %name, error = %e, "could not record the promotion on the secret; its superseded credential's grace is counted from the secret's LastChangedDate");
    }
}

/// Records on the secret that `version_id` is promoted now, just before its label moves (see
/// `records::PROMOTED_TAG`); returns the time recorded.
async fn record_promotion(run: &Run<'_>, version_id: &str) -> DateTime<Utc> {
    let promotion = Promotion {
        version: version_id.to_owned(),
        at: Utc::now(),
    };
    record(run, &[(PROMOTED_TAG, &promotion.tag_value())]).await;
    promotion.at
}

/// Moves AWSCURRENT to `version_id` (from the version it is on, which it then names), then
/// drops AWSPENDING from it. `crash_point` names the test-only failpoint after the promotion.
async fn promote(
    run: &mut Run<'_>,
    version_id: &str,
    crash_point: &'static str,
) -> Result<(), StepError> {
    let cred = run.cred;
    let secrets = run.services.secrets;
    let name = &cred.secret.name;
    if run.current_version.is_none() {
        // Secrets Manager puts AWSCURRENT on a secret's first version by itself, so look.
        run.current_version = secrets
            .describe(name)
            .await
            .map_err(StepError::api("DescribeSecret"))?
            .and_then(|s| s.version_with(AWSCURRENT).map(str::to_owned));
    }
    // The record first: a crash between the two leaves a record of a version that is not
    // current, which counts for nothing, never a promotion that looks older than it is.
    let at = record_promotion(run, version_id).await;
    if run.current_version.as_deref() != Some(version_id) {
        secrets
            .move_stage(
                name,
                AWSCURRENT,
                Some(version_id),
                run.current_version.as_deref(),
            )
            .await
            .map_err(StepError::api("UpdateSecretVersionStage"))?;
    }
    run.current_version = Some(version_id.to_owned());
    run.outcome.promoted = Some(at);
    tracing::info!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %name, version_id, "promoted to AWSCURRENT");
    failpoint::hit(crash_point);
    // Tidy only: a label left here is cleared by the next pass.
    if let Err(e) = secrets
        .move_stage(name, AWSPENDING, None, Some(version_id))
        .await
    {
        tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, error = %e, "could not clear AWSPENDING after promotion");
    }
    Ok(())
}
