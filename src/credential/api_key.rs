//! Legacy API keys, for workspaces on Grafana 9 and 10 (8 where one still runs). "API keys
//! have been removed in Amazon Managed Grafana version 12": there, an API-key credential is
//! blocked (the pass says so) and nothing is attempted.
//!
//! Keys cannot be listed, so the secret is the record of which key is live: each version's
//! JSON names its key (`keyName`, `expiresAt`). Rotation follows the token protocol: create a
//! new key, verify, publish it as AWSPENDING, promote, delete the old key after grace.
//! Key names are deterministic, `<prefix>-<base>-<generation>`, one generation past the newest
//! the secret records. A key created by a pass that crashed before publishing is found on the
//! next attempt, because its creation conflicts: if no version of the secret names it, its
//! generation is recorded on the secret (`records.rs`) and the next generation is minted; a
//! recorded key still unpublished after `orphan_margin` is deleted. It is never deleted at the
//! conflict itself, since it may be another rotator's key, about to be published.
//! `plan` is pure; `KeyExecutor` acts.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::aws::error::ApiError;
use crate::aws::grafana::Grafana;
use crate::aws::secrets::SecretStore;
use crate::aws::verify::Verifier;
use crate::config::Policy;
use crate::credential::execute::{self, Credential, Outcome, StepError};
use crate::credential::plan::{Blocker, RotateReason};
use crate::credential::records::{self, Unpublished, UNPUBLISHED_KEYS_TAG};
use crate::daemon::metrics::Metrics;
use crate::failpoint;
use crate::model::{
    rfc3339, Key, NewApiKey, Role, SecretState, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};

/// Version IDs of API-key secrets start with this.
pub const KEY_VERSION_PREFIX: &str = "amgk1-";

pub fn key_version_id(workspace_id: &str, key_name: &str, created_at: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    for part in [
        "amg-token-rotator-key",
        workspace_id,
        key_name,
        &created_at.timestamp().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("{KEY_VERSION_PREFIX}{}", &hex::encode(h.finalize())[..40])
}

/// What a secret version says about its key (the key itself is not kept here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub version_id: String,
    pub key_name: String,
    pub expires_at: DateTime<Utc>,
}

impl KeyRecord {
    /// The generation in `<prefix>-<base>-<n>`; 0 when the name has another shape.
    pub fn generation(&self) -> u64 {
        generation_of(&self.key_name)
    }
}

/// The fields of a key secret's JSON. The key moves straight into a zeroizing `Key`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyDocument {
    token: String,
    key_name: String,
    expires_at: String,
}

/// The generation in a key name `<prefix>-<base>-<n>`; 0 when the name has another shape.
fn generation_of(key_name: &str) -> u64 {
    key_name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The promotion `action` would make, when it can wait a pass because the current key still
/// works (a due rotation, a resume); `None` when it cannot wait (no valid key) or promotes nothing.
fn postponable(action: &KeyAction) -> Option<&'static str> {
    match action {
        KeyAction::Rotate {
            reason: RotateReason::Due,
            ..
        } => Some("rotation postponed"),
        KeyAction::Resume { .. } => Some("resume postponed"),
        _ => None,
    }
}

/// Parses a key secret's value into its record and key.
pub fn parse_value(version_id: &str, value: &str) -> Option<(KeyRecord, Key)> {
    let doc: KeyDocument = serde_json::from_str(value).ok()?;
    let key = Key::new(doc.token);
    let expires_at = DateTime::parse_from_rfc3339(&doc.expires_at)
        .ok()?
        .with_timezone(&Utc);
    Some((
        KeyRecord {
            version_id: version_id.to_owned(),
            key_name: doc.key_name,
            expires_at,
        },
        key,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyDocumentOut<'a> {
    token: &'a str,
    grafana_url: String,
    workspace_id: &'a str,
    key_name: &'a str,
    key_role: &'a str,
    expires_at: String,
    created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyDeleteReason {
    Superseded,
    /// Expired and replaced.
    Expired,
    /// Created by a pass that never published it.
    Unpublished,
}

impl KeyDeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyDeleteReason::Superseded => "superseded",
            KeyDeleteReason::Expired => "expired_owned",
            KeyDeleteReason::Unpublished => "orphan",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum KeyAction {
    CreateSecret,
    /// Create `key_name`, publish as AWSPENDING, verify, promote.
    Rotate {
        reason: RotateReason,
        key_name: String,
    },
    /// Promote the AWSPENDING version an interrupted pass left.
    Resume {
        record: KeyRecord,
    },
    ClearPending {
        version_id: String,
    },
    /// Delete the key; `drop_previous` also removes AWSPREVIOUS from its version, so the next
    /// pass does not look for it again; `forget` removes it from the unpublished-keys record.
    DeleteKey {
        key_name: String,
        reason: KeyDeleteReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        drop_previous: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        forget: bool,
    },
    /// A key on the unpublished-keys record that a version names after all (another rotator
    /// published it): off the record, left alive.
    Forget {
        key_name: String,
    },
}

impl std::fmt::Display for KeyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAction::CreateSecret => write!(f, "create secret"),
            KeyAction::Rotate { reason, key_name } => {
                write!(f, "rotate ({}) to API key {key_name}", reason.as_str())
            }
            KeyAction::Resume { record } => write!(f, "resume pending {}", record.key_name),
            KeyAction::ClearPending { .. } => write!(f, "clear stale AWSPENDING label"),
            KeyAction::DeleteKey {
                key_name, reason, ..
            } => write!(f, "delete API key {key_name} ({})", reason.as_str()),
            KeyAction::Forget { key_name } => {
                write!(f, "forget {key_name}: a version records it")
            }
        }
    }
}

impl KeyAction {
    fn is_rotation(&self) -> bool {
        matches!(
            self,
            KeyAction::CreateSecret | KeyAction::Rotate { .. } | KeyAction::Resume { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPlan {
    pub actions: Vec<KeyAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocker>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<KeyRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    pub notes: Vec<String>,
}

/// What was observed of one managed key.
#[derive(Debug, Clone, Default)]
pub struct KeyObserved<'a> {
    pub secret: Option<&'a SecretState>,
    pub current: Option<KeyRecord>,
    pub pending: Option<KeyRecord>,
    pub previous: Option<KeyRecord>,
    /// Whether Grafana accepts the current key (`None` when not checked: verification is off).
    pub current_alive: Option<bool>,
}

fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

pub fn key_name(prefix: &str, base: &str, generation: u64) -> String {
    format!("{prefix}-{base}-{generation}")
}

/// Decides what to do for one managed key. Pure.
pub fn plan(policy: &Policy, base: &str, o: &KeyObserved<'_>, now: DateTime<Utc>) -> KeyPlan {
    let mut plan = KeyPlan {
        actions: Vec::new(),
        blocked: None,
        current: o.current.clone(),
        due_at: None,
        notes: Vec::new(),
    };
    if let Some(b) = crate::credential::plan::secret_blocker(o.secret, is_key_version) {
        plan.blocked = Some(b);
        return plan;
    }
    let mut plan = decide(policy, base, o, now, plan);
    let verifies = plan
        .actions
        .iter()
        .any(|a| matches!(a, KeyAction::Rotate { .. } | KeyAction::Resume { .. }));
    if let Some(b) = crate::credential::plan::verification_backoff(policy, o.secret, verifies, now)
    {
        plan.actions.clear();
        plan.blocked = Some(b);
    }
    plan
}

fn is_key_version(vid: &str) -> bool {
    vid.starts_with(KEY_VERSION_PREFIX)
}

fn decide(
    policy: &Policy,
    base: &str,
    o: &KeyObserved<'_>,
    now: DateTime<Utc>,
    mut plan: KeyPlan,
) -> KeyPlan {
    let stage = |s: &str| o.secret.and_then(|sec| sec.version_with(s));
    let current_vid = stage(AWSCURRENT);
    let offset = crate::credential::plan::spread_offset(policy, "", base);
    let due = |r: &KeyRecord| crate::credential::plan::due_at(policy, r.expires_at, offset);
    plan.due_at = o.current.as_ref().map(due);
    let unpublished = o
        .secret
        .map(|s| records::unpublished_keys(&s.tags))
        .unwrap_or_default();
    let records = [&o.current, &o.pending, &o.previous];
    let next_generation = records
        .into_iter()
        .flatten()
        .map(KeyRecord::generation)
        .chain(unpublished.iter().map(|u| u.generation))
        .max()
        .unwrap_or(0)
        + 1;
    let new_name = key_name(&policy.name_prefix, base, next_generation);

    // Keys made but not published when last seen: still unpublished past the orphan margin,
    // they are deleted; once a version names one, it is only taken off the record.
    let margin = chrono(policy.orphan_margin);
    for u in &unpublished {
        let name = key_name(&policy.name_prefix, base, u.generation);
        let recorded = records.into_iter().flatten().any(|r| r.key_name == name);
        if recorded {
            plan.actions.push(KeyAction::Forget { key_name: name });
        } else if now - u.seen_at >= margin {
            plan.actions.push(KeyAction::DeleteKey {
                key_name: name,
                reason: KeyDeleteReason::Unpublished,
                drop_previous: None,
                forget: true,
            });
        } else {
            plan.notes.push(format!(
                "keeping unpublished API key {name} until it is older than the orphan margin"
            ));
        }
    }

    if o.secret.is_none() {
        plan.actions.push(KeyAction::CreateSecret);
    }
    let pending = o
        .pending
        .as_ref()
        .filter(|p| Some(p.version_id.as_str()) != current_vid);
    if let Some(pvid) = stage(AWSPENDING).filter(|p| Some(*p) == current_vid) {
        plan.actions.push(KeyAction::ClearPending {
            version_id: pvid.to_owned(),
        });
    }
    if let Some(p) = pending {
        if due(p) > now {
            plan.actions.push(KeyAction::Resume { record: p.clone() });
            return unless_forgotten(with_previous(plan, policy, o, now), o);
        }
        plan.actions.push(KeyAction::DeleteKey {
            key_name: p.key_name.clone(),
            reason: KeyDeleteReason::Unpublished,
            drop_previous: None,
            forget: false,
        });
        plan.actions.push(KeyAction::ClearPending {
            version_id: p.version_id.clone(),
        });
    }
    let reason = match &o.current {
        None if current_vid.is_some() => Some(RotateReason::MissingToken),
        None => Some(RotateReason::FirstRun),
        Some(_) if o.current_alive == Some(false) => Some(RotateReason::MissingToken),
        Some(c) if c.expires_at <= now => Some(RotateReason::Expired),
        Some(c) if due(c) <= now => Some(RotateReason::Due),
        Some(_) => None,
    };
    let plan = with_previous(plan, policy, o, now);
    let mut plan = plan;
    if let Some(reason) = reason {
        plan.actions.push(KeyAction::Rotate {
            reason,
            key_name: new_name,
        });
        if let Some(c) = o.current.as_ref().filter(|c| c.expires_at <= now) {
            plan.actions.push(KeyAction::DeleteKey {
                key_name: c.key_name.clone(),
                reason: KeyDeleteReason::Expired,
                drop_previous: None,
                forget: false,
            });
        }
    }
    unless_forgotten(plan, o)
}

/// A promotion moves AWSPREVIOUS to the version it replaces, and AWSPREVIOUS is the only record
/// of a superseded key (keys cannot be listed). A superseded key still in its grace period when
/// another promotion comes (a second rotation within grace: the current key was found dead, or
/// a pending one is resumed) would be forgotten alive, so it is deleted first, like one past
/// its grace: superseded twice, its grace ends early. (Before the promotion, not after, so a
/// crash in between leaves it recorded.)
fn unless_forgotten(mut plan: KeyPlan, o: &KeyObserved<'_>) -> KeyPlan {
    let Some(prev) = &o.previous else { return plan };
    let promotes = plan
        .actions
        .iter()
        .any(|a| matches!(a, KeyAction::Rotate { .. } | KeyAction::Resume { .. }));
    let handled = plan
        .actions
        .iter()
        .any(|a| matches!(a, KeyAction::DeleteKey { key_name, .. } if *key_name == prev.key_name));
    let is_current = o
        .current
        .as_ref()
        .is_some_and(|c| c.key_name == prev.key_name);
    if promotes && !handled && !is_current {
        plan.notes.retain(|n| !n.contains(&prev.key_name));
        plan.actions.insert(
            0,
            KeyAction::DeleteKey {
                key_name: prev.key_name.clone(),
                reason: KeyDeleteReason::Superseded,
                drop_previous: Some(prev.version_id.clone()),
                forget: false,
            },
        );
    }
    plan
}

/// Deletes the superseded key once its grace period has passed since the promotion.
fn with_previous(
    mut plan: KeyPlan,
    policy: &Policy,
    o: &KeyObserved<'_>,
    now: DateTime<Utc>,
) -> KeyPlan {
    let Some(prev) = &o.previous else { return plan };
    if o.current
        .as_ref()
        .is_some_and(|c| c.key_name == prev.key_name)
    {
        return plan;
    }
    let promoted = o.secret.and_then(|s| s.last_changed).unwrap_or(now);
    let until = promoted + chrono(policy.grace_period);
    if prev.expires_at <= now || now >= until {
        plan.actions.insert(
            0,
            KeyAction::DeleteKey {
                key_name: prev.key_name.clone(),
                reason: KeyDeleteReason::Superseded,
                drop_previous: Some(prev.version_id.clone()),
                forget: false,
            },
        );
    } else {
        plan.notes.push(format!(
            "keeping superseded API key {} for its grace period, until {}",
            prev.key_name,
            rfc3339(until)
        ));
    }
    plan
}

/// Reads what the planner needs: the secret's versions and the records they hold. The current
/// key is checked against Grafana only when verification is on.
pub async fn observe(
    secrets: &dyn SecretStore,
    verifier: &dyn Verifier,
    cred: &Credential,
) -> Result<(Option<SecretState>, KeyObserved<'static>), StepError> {
    let secret = secrets
        .describe(&cred.secret.name)
        .await
        .map_err(StepError::api("DescribeSecret"))?;
    let mut observed = KeyObserved::default();
    let Some(s) = &secret else {
        return Ok((None, observed));
    };
    for stage in [AWSCURRENT, AWSPENDING, AWSPREVIOUS] {
        let Some(vid) = s.version_with(stage) else {
            continue;
        };
        if !vid.starts_with(KEY_VERSION_PREFIX) {
            continue;
        }
        if stage == AWSPENDING && Some(vid) == s.version_with(AWSCURRENT) {
            continue;
        }
        let value = secrets
            .get_value(&cred.secret.name, stage)
            .await
            .map_err(StepError::api("GetSecretValue"))?;
        let Some((record, key)) = parse_value(vid, &value) else {
            continue;
        };
        match stage {
            AWSCURRENT => {
                if cred.policy.verify {
                    observed.current_alive =
                        Some(verifier.verify(&cred.verify_url(), &key).await.is_ok());
                }
                observed.current = Some(record);
            }
            AWSPENDING => observed.pending = Some(record),
            _ => observed.previous = Some(record),
        }
    }
    Ok((secret, observed))
}

pub struct KeyExecutor<'a> {
    pub grafana: &'a dyn Grafana,
    pub secrets: &'a dyn SecretStore,
    pub verifier: &'a dyn Verifier,
    pub metrics: &'a Metrics,
}

/// The state an executing key plan carries from one action to the next.
struct KeyRun<'c> {
    cred: &'c Credential,
    role: Role,
    /// The secret as last seen: its tags hold the verification and unpublished-keys records.
    secret: Option<SecretState>,
    current_version: Option<String>,
}

impl KeyRun<'_> {
    fn unpublished(&self) -> Vec<Unpublished> {
        self.secret
            .as_ref()
            .map(|s| records::unpublished_keys(&s.tags))
            .unwrap_or_default()
    }
}

impl KeyExecutor<'_> {
    pub async fn execute(
        &self,
        cred: &Credential,
        role: Role,
        secret: Option<&SecretState>,
        plan: &KeyPlan,
        now: DateTime<Utc>,
    ) -> Outcome {
        let labels = cred.labels();
        let mut run = KeyRun {
            cred,
            role,
            secret: secret.cloned(),
            current_version: secret
                .and_then(|s| s.version_with(AWSCURRENT))
                .map(str::to_owned),
        };
        let mut outcome = Outcome::default();
        let mut expiry = plan.current.as_ref().map(|c| c.expires_at);
        // A key whose deletion failed while its label is its only record (keys cannot be
        // listed): a promotion now would move that label and forget the key alive.
        let mut unrecorded: Option<String> = None;
        for action in &plan.actions {
            if let (Some(key), Some(why)) = (&unrecorded, postponable(action)) {
                let e = StepError::Postponed(format!(
                    "{why}: deleting {key} failed, and a promotion now would lose the only record of it; the current key is still valid, so this waits for the next pass"
                ));
                tracing::warn!(workspace = %cred.workspace.id, api_key = %cred.service_account, action = %action, error = %e, "action postponed");
                outcome.error = Some(e);
                break;
            }
            let result = match action {
                KeyAction::CreateSecret => execute::create_secret(self.secrets, cred)
                    .await
                    .map(|s| run.secret = Some(s)),
                KeyAction::Rotate { reason, key_name } => {
                    let r = self.rotate(&mut run, key_name, now).await;
                    if let Ok(exp) = &r {
                        expiry = Some(*exp);
                    }
                    self.metrics
                        .rotation(&labels, outcome_label(&r), reason.as_str());
                    r.map(|_| ())
                }
                KeyAction::Resume { record } => {
                    let r = self.resume(&mut run, record, now).await;
                    if r.is_ok() {
                        expiry = Some(record.expires_at);
                    }
                    self.metrics.rotation(&labels, outcome_label(&r), "resumed");
                    r
                }
                KeyAction::ClearPending { version_id } => self
                    .secrets
                    .move_stage(&cred.secret.name, AWSPENDING, None, Some(version_id))
                    .await
                    .map_err(StepError::api("UpdateSecretVersionStage")),
                KeyAction::DeleteKey {
                    key_name,
                    reason,
                    drop_previous,
                    forget,
                } => {
                    let r = self.delete(cred, key_name, reason.as_str()).await;
                    match (r, drop_previous) {
                        (Ok(()), Some(vid)) => self
                            .secrets
                            .move_stage(&cred.secret.name, AWSPREVIOUS, None, Some(vid))
                            .await
                            .map_err(StepError::api("UpdateSecretVersionStage")),
                        (Ok(()), None) if *forget => {
                            self.set_unpublished(&mut run, key_name, None).await
                        }
                        (r, _) => r,
                    }
                }
                KeyAction::Forget { key_name } => {
                    self.set_unpublished(&mut run, key_name, None).await
                }
            };
            match result {
                Ok(()) => outcome.done.push(action.to_string()),
                Err(StepError::Yielded(why)) => {
                    tracing::warn!(workspace = %cred.workspace.id, api_key = %cred.service_account, action = %action, reason = %why, "left to another rotator");
                    outcome.done.push(format!("left to another rotator: {why}"));
                    break;
                }
                Err(e) => {
                    if let KeyAction::DeleteKey {
                        key_name,
                        reason,
                        drop_previous,
                        forget,
                    } = action
                    {
                        // A key on the unpublished record stays recorded when its deletion fails.
                        if drop_previous.is_some()
                            || (*reason == KeyDeleteReason::Unpublished && !forget)
                        {
                            unrecorded = Some(key_name.clone());
                        }
                    }
                    tracing::warn!(workspace = %cred.workspace.id, api_key = %cred.service_account, action = %action, error = %e, "action failed");
                    let stop = action.is_rotation();
                    if outcome.error.is_none() || stop {
                        outcome.error = Some(e);
                    }
                    if stop {
                        break;
                    }
                }
            }
        }
        if let Some(exp) = expiry {
            self.metrics.set_expiry(&labels, exp);
            outcome.current = Some(crate::credential::plan::TokenRef {
                id: String::new(),
                name: String::new(),
                expires_at: Some(exp),
            });
        }
        outcome
    }

    async fn delete(
        &self,
        cred: &Credential,
        key_name: &str,
        reason: &str,
    ) -> Result<(), StepError> {
        let r = match self
            .grafana
            .delete_api_key(&cred.workspace.id, key_name)
            .await
        {
            Ok(()) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(StepError::api("DeleteWorkspaceApiKey")(e)),
        };
        self.metrics.deletion(
            &cred.labels(),
            reason,
            if r.is_ok() { "success" } else { "failure" },
        );
        if r.is_ok() {
            failpoint::hit("after_delete_key");
            tracing::info!(workspace = %cred.workspace.id, api_key = %cred.service_account, key_name, reason, "deleted API key");
        }
        r
    }

    /// Puts `key_name` on the unpublished-keys record (`Some(seen_at)`) or takes it off (`None`).
    async fn set_unpublished(
        &self,
        run: &mut KeyRun<'_>,
        key_name: &str,
        seen_at: Option<DateTime<Utc>>,
    ) -> Result<(), StepError> {
        let generation = generation_of(key_name);
        let mut list = run.unpublished();
        list.retain(|u| u.generation != generation);
        if let Some(seen_at) = seen_at {
            list.push(Unpublished {
                generation,
                seen_at,
            });
        }
        let name = &run.cred.secret.name;
        let value = records::unpublished_value(&list);
        match &value {
            Some(v) => self.secrets.tag(name, UNPUBLISHED_KEYS_TAG, v).await,
            None => self.secrets.untag(name, UNPUBLISHED_KEYS_TAG).await,
        }
        .map_err(StepError::api(if value.is_some() {
            "TagResource"
        } else {
            "UntagResource"
        }))?;
        if let Some(s) = run.secret.as_mut() {
            match value {
                Some(v) => s.tags.insert(UNPUBLISHED_KEYS_TAG.into(), v),
                None => s.tags.remove(UNPUBLISHED_KEYS_TAG),
            };
        }
        Ok(())
    }

    /// Whether a version of the secret records `key_name` (values read by stage).
    async fn recorded(&self, cred: &Credential, key_name: &str) -> Result<bool, StepError> {
        let name = &cred.secret.name;
        let Some(s) = self
            .secrets
            .describe(name)
            .await
            .map_err(StepError::api("DescribeSecret"))?
        else {
            return Ok(false);
        };
        for stage in [AWSCURRENT, AWSPENDING, AWSPREVIOUS] {
            let Some(vid) = s.version_with(stage).filter(|v| is_key_version(v)) else {
                continue;
            };
            let value = self
                .secrets
                .get_value(name, stage)
                .await
                .map_err(StepError::api("GetSecretValue"))?;
            if parse_value(vid, &value).is_some_and(|(r, _)| r.key_name == key_name) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Creates `key_name`, or a later generation when a key holds the name. Such a key comes
    /// from a pass that crashed before publishing it, or from another rotator at work right
    /// now: if a version records it, the other rotator published it and this one yields; if
    /// not, it is put on the unpublished-keys record (deleted by a later pass once older than
    /// `orphan_margin`, unless a version names it by then) and the next generation is tried.
    async fn create(
        &self,
        run: &mut KeyRun<'_>,
        key_name: &str,
        now: DateTime<Utc>,
    ) -> Result<NewApiKey, StepError> {
        let cred = run.cred;
        let ws = &cred.workspace.id;
        let prefix_and_base = key_name
            .rsplit_once('-')
            .map_or(key_name, |(head, _)| head)
            .to_owned();
        let mut generation = generation_of(key_name);
        let mut name = key_name.to_owned();
        for attempt in 0..4 {
            match self
                .grafana
                .create_api_key(ws, &name, run.role, cred.policy.token_ttl, now)
                .await
            {
                Ok(k) => {
                    tracing::info!(workspace = %ws, api_key = %cred.service_account, key_name = %name, expires_at = %rfc3339(k.expires_at), "created API key");
                    return Ok(k);
                }
                Err(ApiError::Conflict(_)) => {
                    if self.recorded(cred, &name).await? {
                        return Err(StepError::Yielded(format!(
                            "API key {name} was created and published meanwhile"
                        )));
                    }
                    tracing::warn!(workspace = %ws, api_key = %cred.service_account, key_name = %name, "an API key holds the name and no version records it; recorded as unpublished, trying the next generation");
                    self.set_unpublished(run, &name, Some(now)).await?;
                    generation += 1;
                    name = format!("{prefix_and_base}-{generation}");
                }
                // The outcome is unknown: the same name again; a conflict then is handled above.
                Err(e) if !e.surely_not_applied() && attempt < 3 => {}
                Err(e) => return Err(StepError::api("CreateWorkspaceApiKey")(e)),
            }
        }
        Err(StepError::NoFreeName(4))
    }

    async fn rotate(
        &self,
        run: &mut KeyRun<'_>,
        key_name: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StepError> {
        let cred = run.cred;
        let made = self.create(run, key_name, now).await?;
        failpoint::hit("after_create_key");
        let version = key_version_id(&cred.workspace.id, &made.name, made.created_at);
        let doc = KeyDocumentOut {
            token: made.key.expose(),
            grafana_url: cred.workspace.grafana_url(),
            workspace_id: &cred.workspace.id,
            key_name: &made.name,
            key_role: run.role.as_str(),
            expires_at: rfc3339(made.expires_at),
            created_at: rfc3339(made.created_at),
        };
        let value = Zeroizing::new(serde_json::to_string(&doc).expect("strings serialize"));
        // Proven before it is published: nothing is lost if it fails, the key is deleted.
        if let Err(e) = self.verify(run, &made.key, now).await {
            let _ = self.delete(cred, &made.name, "rollback").await;
            return Err(e);
        }
        if let Err(failure) =
            execute::publish(self.secrets, cred, &version, &value, AWSPENDING).await
        {
            if failure.may_have_landed {
                // A key a version may hold is not deleted: if the write landed, the next pass
                // resumes it; if not, its generation comes round again and the conflict finds it.
                tracing::warn!(workspace = %cred.workspace.id, api_key = %cred.service_account, key_name = %made.name, "the new key may be published: kept for the next pass to settle");
            } else {
                let _ = self.delete(cred, &made.name, "rollback").await;
            }
            return Err(failure.error);
        }
        failpoint::hit("after_key_pending");
        execute::promote(
            self.secrets,
            cred,
            &version,
            &mut run.current_version,
            "after_key_promote",
        )
        .await?;
        Ok(made.expires_at)
    }

    async fn verify(
        &self,
        run: &mut KeyRun<'_>,
        key: &Key,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        execute::verify_recorded(
            self.secrets,
            self.verifier,
            run.cred,
            &mut run.secret,
            key,
            now,
        )
        .await
    }

    async fn resume(
        &self,
        run: &mut KeyRun<'_>,
        record: &KeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let cred = run.cred;
        if cred.policy.verify {
            let value = self
                .secrets
                .get_value(&cred.secret.name, AWSPENDING)
                .await
                .map_err(StepError::api("GetSecretValue"))?;
            let (_, key) =
                parse_value(&record.version_id, &value).ok_or(StepError::UnreadablePending)?;
            if let Err(e) = self.verify(run, &key, now).await {
                let _ = self.delete(cred, &record.key_name, "rollback").await;
                let _ = self
                    .secrets
                    .move_stage(
                        &cred.secret.name,
                        AWSPENDING,
                        None,
                        Some(&record.version_id),
                    )
                    .await;
                return Err(e);
            }
        }
        execute::promote(
            self.secrets,
            cred,
            &record.version_id,
            &mut run.current_version,
            "after_key_promote",
        )
        .await
    }
}

fn outcome_label<T>(r: &Result<T, StepError>) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(StepError::Yielded(_)) => "yielded",
        Err(_) => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::model::SecretFormat;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy() -> Policy {
        Policy {
            strategy: Strategy::Overlap,
            token_ttl: Duration::from_secs(30 * 86400),
            rotate_before: Duration::from_secs(7 * 86400),
            rotation_spread: Duration::ZERO,
            grace_period: Duration::from_secs(3600),
            orphan_margin: Duration::from_secs(900),
            name_prefix: "amgrot".into(),
            secret_name: "s/{key_name}".into(),
            secret_format: SecretFormat::Json,
            secret_description: "d".into(),
            kms_key_id: None,
            secret_tags: BTreeMap::new(),
            verify: false,
            grafana_url: None,
            delete_expired_foreign_tokens: false,
            service_account_role: None,
        }
    }

    fn record(vid: &str, generation: u64, days_left: i64) -> KeyRecord {
        KeyRecord {
            version_id: vid.into(),
            key_name: key_name("amgrot", "legacy", generation),
            expires_at: now() + ChronoDuration::days(days_left),
        }
    }

    fn secret(stages: &[(&str, &str)], changed_ago_s: i64) -> SecretState {
        let mut s = SecretState {
            last_changed: Some(now() - ChronoDuration::seconds(changed_ago_s)),
            ..SecretState::default()
        };
        for (vid, stage) in stages {
            s.versions
                .entry(vid.to_string())
                .or_default()
                .push(stage.to_string());
        }
        s
    }

    #[test]
    fn first_run_mints_generation_one() {
        let p = plan(&policy(), "legacy", &KeyObserved::default(), now());
        assert_eq!(
            p.actions,
            vec![
                KeyAction::CreateSecret,
                KeyAction::Rotate {
                    reason: RotateReason::FirstRun,
                    key_name: "amgrot-legacy-1".into()
                }
            ]
        );
    }

    #[test]
    fn a_due_key_gets_the_next_generation_and_the_previous_goes_after_grace() {
        let s = secret(&[("amgk1-a", AWSPREVIOUS), ("amgk1-b", AWSCURRENT)], 7200);
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 4, 3)),
            previous: Some(record("amgk1-a", 3, 20)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert_eq!(
            p.actions,
            vec![
                KeyAction::DeleteKey {
                    key_name: "amgrot-legacy-3".into(),
                    reason: KeyDeleteReason::Superseded,
                    drop_previous: Some("amgk1-a".into()),
                    forget: false
                },
                KeyAction::Rotate {
                    reason: RotateReason::Due,
                    key_name: "amgrot-legacy-5".into()
                }
            ]
        );
        let recent = secret(&[("amgk1-a", AWSPREVIOUS), ("amgk1-b", AWSCURRENT)], 60);
        let o = KeyObserved {
            secret: Some(&recent),
            ..o
        };
        let p = plan(&policy(), "legacy", &o, now());
        // Within grace, the superseded key lives until another key is to be promoted; then
        // it goes first, because the promotion moves AWSPREVIOUS, its only record.
        assert_eq!(
            p.actions,
            vec![
                KeyAction::DeleteKey {
                    key_name: "amgrot-legacy-3".into(),
                    reason: KeyDeleteReason::Superseded,
                    drop_previous: Some("amgk1-a".into()),
                    forget: false
                },
                KeyAction::Rotate {
                    reason: RotateReason::Due,
                    key_name: "amgrot-legacy-5".into()
                }
            ]
        );
        let settled = KeyObserved {
            current: Some(record("amgk1-b", 4, 20)),
            ..o
        };
        let p = plan(&policy(), "legacy", &settled, now());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.notes[0].contains("grace"));
    }

    #[test]
    fn a_pending_key_is_resumed_and_a_dead_current_key_replaced() {
        let s = secret(&[("amgk1-b", AWSCURRENT), ("amgk1-c", AWSPENDING)], 60);
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, 3)),
            pending: Some(record("amgk1-c", 2, 30)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert_eq!(
            p.actions,
            vec![KeyAction::Resume {
                record: record("amgk1-c", 2, 30)
            }]
        );

        let s = secret(&[("amgk1-b", AWSCURRENT)], 60);
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, 20)),
            current_alive: Some(false),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert_eq!(
            p.actions,
            vec![KeyAction::Rotate {
                reason: RotateReason::MissingToken,
                key_name: "amgrot-legacy-2".into()
            }]
        );
    }

    fn with_unpublished(mut s: SecretState, entries: &[(u64, i64)]) -> SecretState {
        let list: Vec<Unpublished> = entries
            .iter()
            .map(|(generation, ago)| Unpublished {
                generation: *generation,
                seen_at: now() - ChronoDuration::seconds(*ago),
            })
            .collect();
        s.tags.insert(
            UNPUBLISHED_KEYS_TAG.into(),
            records::unpublished_value(&list).unwrap(),
        );
        s
    }

    #[test]
    fn unpublished_keys_are_deleted_past_the_margin_and_never_reused() {
        // Generation 5 was found unpublished 20 minutes ago, 6 a minute ago; 4 is current.
        let s = with_unpublished(
            secret(&[("amgk1-b", AWSCURRENT)], 7200),
            &[(5, 1200), (6, 60)],
        );
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 4, 3)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert_eq!(
            p.actions,
            vec![
                KeyAction::DeleteKey {
                    key_name: "amgrot-legacy-5".into(),
                    reason: KeyDeleteReason::Unpublished,
                    drop_previous: None,
                    forget: true
                },
                KeyAction::Rotate {
                    reason: RotateReason::Due,
                    key_name: "amgrot-legacy-7".into()
                }
            ]
        );
        assert!(p.notes.iter().any(|n| n.contains("amgrot-legacy-6")));
    }

    #[test]
    fn an_unpublished_key_a_version_records_is_only_forgotten() {
        // Another rotator published generation 5 after this one found it unpublished.
        let s = with_unpublished(secret(&[("amgk1-c", AWSCURRENT)], 60), &[(5, 7200)]);
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-c", 5, 30)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert_eq!(
            p.actions,
            vec![KeyAction::Forget {
                key_name: "amgrot-legacy-5".into()
            }]
        );
    }

    #[test]
    fn secrets_another_tool_rotates_are_left_alone() {
        let mut s = secret(&[("amgk1-b", AWSCURRENT)], 60);
        s.rotation_enabled = true;
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, 3)),
            ..KeyObserved::default()
        };
        assert_eq!(
            plan(&policy(), "legacy", &o, now()).blocked,
            Some(Blocker::RotationEnabled)
        );
        let s = secret(
            &[("amgk1-b", AWSCURRENT), ("v-by-a-lambda", AWSPENDING)],
            60,
        );
        let o = KeyObserved {
            secret: Some(&s),
            ..o
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert!(
            matches!(p.blocked, Some(Blocker::ForeignPending { .. })),
            "{p:?}"
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_failing_verification_backs_off() {
        let mut pol = policy();
        pol.verify = true;
        let mut s = secret(&[("amgk1-b", AWSCURRENT)], 60);
        let failed = records::VerifyBackoff {
            failures: 1,
            at: now() - ChronoDuration::seconds(60),
            status: None,
        };
        s.tags
            .insert(records::VERIFICATION_TAG.into(), failed.tag_value());
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, 3)),
            ..KeyObserved::default()
        };
        let p = plan(&pol, "legacy", &o, now());
        assert!(
            matches!(
                p.blocked,
                Some(Blocker::VerificationBackoff { failures: 1, .. })
            ),
            "{p:?}"
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn foreign_content_blocks() {
        let s = secret(&[("11111111-2222-3333-4444-555555555555", AWSCURRENT)], 60);
        let o = KeyObserved {
            secret: Some(&s),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert!(matches!(p.blocked, Some(Blocker::ForeignSecret { .. })));
        assert!(p.actions.is_empty());
    }
}
