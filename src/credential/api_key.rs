//! Legacy API keys, for workspaces on Grafana 9 and 10 (8 where one still runs). "API keys
//! have been removed in Amazon Managed Grafana version 12": there, an API-key credential is
//! blocked and nothing is attempted.
//!
//! Keys cannot be listed, so the secret is the record of which key is live: each version's
//! JSON names its key (`keyName`, `expiresAt`). Rotation follows the shared protocol: create a
//! new key, verify, publish it as AWSPENDING, promote, delete the old key after grace.
//! Key names are deterministic, `<prefix>-<base>-<generation>`, one generation past the newest
//! the secret records. A key created by a pass that crashed before publishing is found on the
//! next attempt, because its creation conflicts: if no version of the secret names it, its
//! generation is recorded on the secret (`records.rs`) and the next generation is minted; a
//! recorded key still unpublished after `orphan_margin` is deleted. It is never deleted at the
//! conflict itself, since it may be another rotator's key, about to be published.
//! `plan` is pure; `ApiKeys` is the kind's part of the road.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::execute::{CrashPoints, Decided, KindOps, Minted, Run, Services};
use super::plan::{
    due_at, secret_blocker, spread_offset, std_to_chrono, Action, Blocker, CredRef, DeleteReason,
    Plan, RotateReason, What,
};
use super::records::{self, Unpublished, UNPUBLISHED_KEYS_TAG};
use super::{Credential, CredentialKind, StepError};
use crate::aws::ApiError;
use crate::config::Policy;
use crate::failpoint;
use crate::model::{rfc3339, Key, SecretState, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

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

pub fn is_key_version(vid: &str) -> bool {
    vid.starts_with(KEY_VERSION_PREFIX)
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

    /// The key as a plan refers to it: AMG addresses a key by its name.
    pub fn credential(&self) -> CredRef {
        key_ref(&self.key_name, Some(self.expires_at))
    }
}

fn key_ref(name: &str, expires_at: Option<DateTime<Utc>>) -> CredRef {
    CredRef {
        what: What::ApiKey,
        id: name.to_owned(),
        name: name.to_owned(),
        expires_at,
    }
}

/// The generation in a key name `<prefix>-<base>-<n>`; 0 when the name has another shape.
fn generation_of(key_name: &str) -> u64 {
    key_name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn key_name(prefix: &str, base: &str, generation: u64) -> String {
    format!("{prefix}-{base}-{generation}")
}

/// The fields of a key secret's JSON. The key moves straight into a zeroizing `Key`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyDocument {
    token: String,
    key_name: String,
    expires_at: String,
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

impl KeyObserved<'_> {
    fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        [&self.current, &self.pending, &self.previous]
            .into_iter()
            .flatten()
    }
}

/// Decides what to do for one managed key. Pure.
pub fn plan(policy: &Policy, base: &str, o: &KeyObserved<'_>, now: DateTime<Utc>) -> Plan {
    if let Some(b) = secret_blocker(o.secret, is_key_version) {
        return Plan::blocked(b);
    }
    decide(policy, base, o, now).with_backoff(policy, o.secret, now)
}

fn decide(policy: &Policy, base: &str, o: &KeyObserved<'_>, now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::empty();
    plan.current = o.current.as_ref().map(KeyRecord::credential);
    let offset = spread_offset(policy, "", base);
    let due = |r: &KeyRecord| due_at(policy, r.expires_at, offset);
    plan.due_at = o.current.as_ref().map(due);
    let unpublished = o
        .secret
        .map(|s| records::unpublished_keys(&s.tags))
        .unwrap_or_default();
    let next_generation = o
        .records()
        .map(KeyRecord::generation)
        .chain(unpublished.iter().map(|u| u.generation))
        .max()
        .unwrap_or(0)
        + 1;
    sweep_unpublished(policy, base, o, &unpublished, now, &mut plan);
    if o.secret.is_none() {
        plan.actions.push(Action::CreateSecret);
    }
    if resume_or_clear(o, &due, now, &mut plan) {
        let plan = with_previous(plan, policy, o, now);
        return unless_forgotten(plan, o);
    }
    let current_vid = o.secret.and_then(|s| s.version_with(AWSCURRENT));
    let reason = match &o.current {
        None if current_vid.is_some() => Some(RotateReason::MissingToken),
        None => Some(RotateReason::FirstRun),
        Some(_) if o.current_alive == Some(false) => Some(RotateReason::MissingToken),
        Some(c) if c.expires_at <= now => Some(RotateReason::Expired),
        Some(c) if due(c) <= now => Some(RotateReason::Due),
        Some(_) => None,
    };
    let mut plan = with_previous(plan, policy, o, now);
    if let Some(reason) = reason {
        let name = key_name(&policy.name_prefix, base, next_generation);
        plan.actions.push(Action::Rotate {
            reason,
            replaces: None,
            to: Some(key_ref(&name, None)),
        });
        if let Some(c) = o.current.as_ref().filter(|c| c.expires_at <= now) {
            plan.actions
                .push(delete(c, DeleteReason::ExpiredOwned, None, false));
        }
    }
    unless_forgotten(plan, o)
}

fn delete(
    r: &KeyRecord,
    reason: DeleteReason,
    drop_previous: Option<String>,
    only_record: bool,
) -> Action {
    Action::Delete {
        credential: r.credential(),
        reason,
        drop_previous,
        only_record,
        forget: false,
    }
}

/// Keys made but not published when last seen: still unpublished past the orphan margin,
/// they are deleted; once a version names one, it is only taken off the record.
fn sweep_unpublished(
    policy: &Policy,
    base: &str,
    o: &KeyObserved<'_>,
    unpublished: &[Unpublished],
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    let margin = std_to_chrono(policy.orphan_margin);
    for u in unpublished {
        let name = key_name(&policy.name_prefix, base, u.generation);
        if o.records().any(|r| r.key_name == name) {
            plan.actions.push(Action::Forget { name });
        } else if now - u.seen_at >= margin {
            plan.actions.push(Action::Delete {
                credential: key_ref(&name, None),
                reason: DeleteReason::Orphan,
                drop_previous: None,
                only_record: false,
                forget: true,
            });
        } else {
            plan.notes.push(format!(
                "keeping unpublished API key {name} until it is older than the orphan margin"
            ));
        }
    }
}

/// An AWSPENDING left by an interrupted pass: resumed while its key is good (returns true),
/// else deleted and cleared; a stale AWSPENDING on the current version is cleared.
fn resume_or_clear(
    o: &KeyObserved<'_>,
    due: &dyn Fn(&KeyRecord) -> DateTime<Utc>,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> bool {
    let stage = |s: &str| o.secret.and_then(|sec| sec.version_with(s));
    let current_vid = stage(AWSCURRENT);
    if let Some(pvid) = stage(AWSPENDING).filter(|p| Some(*p) == current_vid) {
        plan.actions.push(Action::ClearPending {
            version_id: pvid.to_owned(),
        });
    }
    let Some(p) = o
        .pending
        .as_ref()
        .filter(|p| Some(p.version_id.as_str()) != current_vid)
    else {
        return false;
    };
    if due(p) > now {
        plan.actions.push(Action::Resume {
            version_id: p.version_id.clone(),
            credential: p.credential(),
        });
        return true;
    }
    // Its label is its only record: a failed deletion must not let a promotion forget it.
    plan.actions
        .push(delete(p, DeleteReason::Orphan, None, true));
    plan.actions.push(Action::ClearPending {
        version_id: p.version_id.clone(),
    });
    false
}

/// A promotion moves AWSPREVIOUS to the version it replaces, and AWSPREVIOUS is the only record
/// of a superseded key (keys cannot be listed). A superseded key still in its grace period when
/// another promotion comes (a second rotation within grace: the current key was found dead, or
/// a pending one is resumed) would be forgotten alive, so it is deleted first, like one past
/// its grace: superseded twice, its grace ends early. (Before the promotion, not after, so a
/// crash in between leaves it recorded.)
fn unless_forgotten(mut plan: Plan, o: &KeyObserved<'_>) -> Plan {
    let Some(prev) = &o.previous else { return plan };
    let promotes = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Rotate { .. } | Action::Resume { .. }));
    let handled = plan.actions.iter().any(
        |a| matches!(a, Action::Delete { credential, .. } if credential.name == prev.key_name),
    );
    let is_current = o
        .current
        .as_ref()
        .is_some_and(|c| c.key_name == prev.key_name);
    if promotes && !handled && !is_current {
        plan.notes.retain(|n| !n.contains(&prev.key_name));
        let drop = Some(prev.version_id.clone());
        plan.actions
            .insert(0, delete(prev, DeleteReason::Superseded, drop, true));
    }
    plan
}

/// Deletes the superseded key once its grace period has passed since the promotion.
fn with_previous(mut plan: Plan, policy: &Policy, o: &KeyObserved<'_>, now: DateTime<Utc>) -> Plan {
    plan.promoted = super::plan::promoted(o.secret);
    let Some(prev) = &o.previous else { return plan };
    if o.current
        .as_ref()
        .is_some_and(|c| c.key_name == prev.key_name)
    {
        return plan;
    }
    // API keys cannot be listed, so nothing says whether consumers still use one: time alone,
    // from the promotion as the rotator recorded it (else the secret's last change).
    let promoted = plan.promoted.map_or(now, |p| p.at);
    let until = promoted + std_to_chrono(policy.grace_period);
    if prev.expires_at <= now || now >= until {
        let drop = Some(prev.version_id.clone());
        plan.actions
            .insert(0, delete(prev, DeleteReason::Superseded, drop, true));
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
/// key is checked against Grafana only with `liveness_checks` on.
async fn observe(
    services: Services<'_>,
    cred: &Credential,
) -> Result<(Option<SecretState>, KeyObserved<'static>), StepError> {
    let secret = services
        .secrets
        .describe(&cred.secret.name)
        .await
        .map_err(StepError::api("DescribeSecret"))?;
    let mut observed = KeyObserved::default();
    let Some(s) = &secret else {
        return Ok((None, observed));
    };
    for stage in [AWSCURRENT, AWSPENDING, AWSPREVIOUS] {
        let Some(vid) = s.version_with(stage).filter(|v| is_key_version(v)) else {
            continue;
        };
        if stage == AWSPENDING && Some(vid) == s.version_with(AWSCURRENT) {
            continue;
        }
        let value = services
            .secrets
            .get_value(&cred.secret.name, stage)
            .await
            .map_err(StepError::api("GetSecretValue"))?;
        let Some((record, key)) = parse_value(vid, &value) else {
            continue;
        };
        match stage {
            AWSCURRENT => {
                if cred.policy.liveness_checks {
                    let answer = services.verifier.verify(&cred.verify_url(), &key).await;
                    observed.current_alive = liveness(&answer);
                }
                observed.current = Some(record);
            }
            AWSPENDING => observed.pending = Some(record),
            _ => observed.previous = Some(record),
        }
    }
    Ok((secret, observed))
}

/// What a proof of the current key says of it: alive when Grafana accepts it, dead only when
/// Grafana answers that it does not (401, 403). A Grafana that does not answer (5xx, a timeout,
/// unreachable) says nothing: taking an outage for a dead key would delete the superseded key
/// within its grace and mint keys that cannot be proven either.
pub(super) fn liveness(answer: &Result<(), crate::aws::verify::VerifyError>) -> Option<bool> {
    match answer {
        Ok(()) => Some(true),
        Err(e) if matches!(e.status, Some(401 | 403)) => Some(false),
        Err(e) => {
            tracing::warn!(url = %e.url, error = %e, "the workspace's Grafana did not answer the proof of the current API key; it is taken for neither alive nor dead");
            None
        }
    }
}

/// The API-key kind's part of the road.
pub struct ApiKeys;

#[async_trait]
impl KindOps for ApiKeys {
    async fn decide(
        &self,
        services: Services<'_>,
        cred: &Credential,
        _account: super::AccountView,
        now: DateTime<Utc>,
        _audit: bool,
    ) -> Result<Decided, StepError> {
        let plan_of = |plan| Decided {
            plan,
            secret: None,
            account: None,
            tokens: None,
            record: None,
            observed: None,
        };
        if !cred.workspace.supports_api_keys() {
            // Nothing to read or attempt: AMG refuses API keys there.
            return Ok(plan_of(Plan::blocked(Blocker::ApiKeysRemoved {
                grafana_version: cred.workspace.grafana_version.clone(),
            })));
        }
        let (secret, observed) = observe(services, cred).await?;
        let observed = KeyObserved {
            secret: secret.as_ref(),
            ..observed
        };
        let mut plan = plan(&cred.policy, &cred.service_account, &observed, now);
        if let Some(sa) = &cred.migrates_to {
            plan.migration = Some(format!(
                "an upgrade of this workspace to Grafana 12 or later (API keys removed) will migrate this key to service account {sa}, whose tokens then go to the same secret (migrate_api_keys = false to do it by hand)"
            ));
        }
        Ok(Decided {
            secret,
            ..plan_of(plan)
        })
    }

    async fn mint(
        &self,
        run: &mut Run<'_>,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<Minted, StepError> {
        let Action::Rotate { to: Some(to), .. } = action else {
            return Err(StepError::NoFreeName(0));
        };
        let made = create(run, &to.name, now).await?;
        failpoint::hit("after_create_key");
        Ok(Minted {
            credential: key_ref(&made.name, Some(made.expires_at)),
            created_at: made.created_at,
            expires_at: made.expires_at,
            key: made.key,
            // API keys cannot be listed: their records are the secret's own (`records.rs`).
            first_record: None,
        })
    }

    async fn delete(&self, run: &Run<'_>, credential: &CredRef) -> Result<(), StepError> {
        match run
            .services
            .grafana
            .delete_api_key(&run.cred.workspace.id, &credential.name)
            .await
        {
            Ok(()) | Err(ApiError::NotFound(_)) => {
                failpoint::hit("after_delete_key");
                Ok(())
            }
            Err(e) => Err(StepError::api("DeleteWorkspaceApiKey")(e)),
        }
    }

    fn publication(
        &self,
        run: &Run<'_>,
        minted: &Minted,
    ) -> Result<(String, Zeroizing<String>), StepError> {
        let cred = run.cred;
        let CredentialKind::ApiKey { role } = cred.kind else {
            return Err(StepError::NoServiceAccount);
        };
        let name = &minted.credential.name;
        let doc = KeyDocumentOut {
            token: minted.key.expose(),
            grafana_url: cred.workspace.grafana_url(),
            workspace_id: &cred.workspace.id,
            key_name: name,
            key_role: role.as_str(),
            expires_at: rfc3339(minted.expires_at),
            created_at: rfc3339(minted.created_at),
        };
        let value = Zeroizing::new(serde_json::to_string(&doc).expect("strings serialize"));
        Ok((
            key_version_id(&cred.workspace.id, name, minted.created_at),
            value,
        ))
    }

    fn key_in(&self, _run: &Run<'_>, value: &str) -> Option<Key> {
        parse_value("", value).map(|(_, key)| key)
    }

    async fn forget(&self, run: &mut Run<'_>, name: &str) -> Result<(), StepError> {
        set_unpublished(run, name, None).await
    }

    fn crash_points(&self) -> CrashPoints {
        CrashPoints {
            after_pending: "after_key_pending",
            after_promote: "after_key_promote",
        }
    }
}

/// Puts `key_name` on the unpublished-keys record (`Some(seen_at)`) or takes it off (`None`).
async fn set_unpublished(
    run: &mut Run<'_>,
    key_name: &str,
    seen_at: Option<DateTime<Utc>>,
) -> Result<(), StepError> {
    let generation = generation_of(key_name);
    let mut list = run
        .secret
        .as_ref()
        .map(|s| records::unpublished_keys(&s.tags))
        .unwrap_or_default();
    list.retain(|u| u.generation != generation);
    if let Some(seen_at) = seen_at {
        list.push(Unpublished {
            generation,
            seen_at,
        });
    }
    let name = &run.cred.secret.name;
    let secrets = run.services.secrets;
    let value = records::unpublished_value(&list);
    match &value {
        Some(v) => secrets
            .tag(name, UNPUBLISHED_KEYS_TAG, v)
            .await
            .map_err(StepError::api("TagResource"))?,
        None => secrets
            .untag(name, UNPUBLISHED_KEYS_TAG)
            .await
            .map_err(StepError::api("UntagResource"))?,
    }
    if let Some(s) = run.secret.as_mut() {
        match value {
            Some(v) => s.tags.insert(UNPUBLISHED_KEYS_TAG.into(), v),
            None => s.tags.remove(UNPUBLISHED_KEYS_TAG),
        };
    }
    Ok(())
}

/// Whether a version of the secret records `key_name` (values read by stage).
async fn recorded(run: &Run<'_>, key_name: &str) -> Result<bool, StepError> {
    let secrets = run.services.secrets;
    let name = &run.cred.secret.name;
    let Some(s) = secrets
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
        let value = secrets
            .get_value(name, stage)
            .await
            .map_err(StepError::api("GetSecretValue"))?;
        if parse_value(vid, &value).is_some_and(|(r, _)| r.key_name == key_name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates `key_name`, or a later generation when a key holds the name. Such a key comes from
/// a pass that crashed before publishing it, or from another rotator at work right now: if a
/// version records it, the other rotator published it and this one yields; if not, it is put
/// on the unpublished-keys record (deleted by a later pass once older than `orphan_margin`,
/// unless a version names it by then) and the next generation is tried.
async fn create(
    run: &mut Run<'_>,
    key_name: &str,
    now: DateTime<Utc>,
) -> Result<crate::model::NewApiKey, StepError> {
    let cred = run.cred;
    let CredentialKind::ApiKey { role } = cred.kind else {
        return Err(StepError::NoServiceAccount);
    };
    let ws = &cred.workspace.id;
    let stem = key_name
        .rsplit_once('-')
        .map_or(key_name, |(head, _)| head)
        .to_owned();
    let mut generation = generation_of(key_name);
    let mut name = key_name.to_owned();
    for attempt in 0..4 {
        match run
            .services
            .grafana
            .create_api_key(ws, &name, role, cred.policy.token_ttl, now)
            .await
        {
            Ok(k) => {
                tracing::info!(workspace = %ws, api_key = %cred.service_account, key_name = %name, expires_at = %rfc3339(k.expires_at), "created API key");
                return Ok(k);
            }
            Err(ApiError::Conflict(_)) => {
                if recorded(run, &name).await? {
                    return Err(StepError::Yielded(format!(
                        "API key {name} was created and published meanwhile"
                    )));
                }
                tracing::warn!(workspace = %ws, api_key = %cred.service_account, key_name = %name, "an API key holds the name and no version records it; recorded as unpublished, trying the next generation");
                set_unpublished(run, &name, Some(now)).await?;
                generation += 1;
                name = format!("{stem}-{generation}");
            }
            // The outcome is unknown: the same name again; a conflict then is handled above.
            Err(e) if !e.surely_not_applied() && attempt < 3 => {}
            Err(e) => return Err(StepError::api("CreateWorkspaceApiKey")(e)),
        }
    }
    Err(StepError::NoFreeName(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::model::SecretFormat;
    use chrono::Duration as ChronoDuration;
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
            quiet_period: Duration::from_secs(7200),
            max_overlap: Duration::from_secs(3 * 86400),
            orphan_margin: Duration::from_secs(900),
            audit_interval: Duration::from_secs(3600),
            name_prefix: "amgrot".into(),
            secret_name: "s/{key_name}".into(),
            secret_format: SecretFormat::Json,
            secret_description: "d".into(),
            kms_key_id: None,
            secret_tags: BTreeMap::new(),
            verify: false,
            grafana_url: None,
            liveness_checks: false,
            delete_expired_foreign_tokens: false,
        }
    }

    fn record(vid: &str, generation: u64, days_left: i64) -> KeyRecord {
        KeyRecord {
            version_id: vid.into(),
            key_name: key_name("amgrot", "legacy", generation),
            expires_at: now() + ChronoDuration::days(days_left),
        }
    }

    fn rotate(reason: RotateReason, name: &str) -> Action {
        Action::Rotate {
            reason,
            replaces: None,
            to: Some(key_ref(name, None)),
        }
    }

    /// The superseded key's deletion: AWSPREVIOUS, its only record, goes with it.
    fn superseded(r: KeyRecord) -> Action {
        Action::Delete {
            credential: r.credential(),
            reason: DeleteReason::Superseded,
            drop_previous: Some(r.version_id.clone()),
            only_record: true,
            forget: false,
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
                Action::CreateSecret,
                rotate(RotateReason::FirstRun, "amgrot-legacy-1")
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
                superseded(record("amgk1-a", 3, 20)),
                rotate(RotateReason::Due, "amgrot-legacy-5")
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
                superseded(record("amgk1-a", 3, 20)),
                rotate(RotateReason::Due, "amgrot-legacy-5")
            ]
        );
        // And the plan no longer says it is kept for its grace period.
        assert!(
            !p.notes.iter().any(|n| n.contains("amgrot-legacy-3")),
            "{:?}",
            p.notes
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
            vec![Action::Resume {
                version_id: "amgk1-c".into(),
                credential: record("amgk1-c", 2, 30).credential()
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
            vec![rotate(RotateReason::MissingToken, "amgrot-legacy-2")]
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
                Action::Delete {
                    credential: key_ref("amgrot-legacy-5", None),
                    reason: DeleteReason::Orphan,
                    drop_previous: None,
                    only_record: false,
                    forget: true
                },
                rotate(RotateReason::Due, "amgrot-legacy-7")
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
            vec![Action::Forget {
                name: "amgrot-legacy-5".into()
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

    fn reason_of(p: &Plan) -> Option<RotateReason> {
        p.actions.iter().find_map(|a| match a {
            Action::Rotate { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    /// Why a key is replaced, as the metrics and plan say it: an AWSCURRENT whose key record
    /// cannot be read is a missing key, not a first run; an expired key is expired, not due.
    #[test]
    fn the_rotation_reason_tells_missing_and_expired_from_first_and_due() {
        let s = secret(&[("amgk1-b", AWSCURRENT)], 60);
        let unreadable = KeyObserved {
            secret: Some(&s),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &unreadable, now());
        assert_eq!(reason_of(&p), Some(RotateReason::MissingToken), "{p:?}");
        let expired = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, -1)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &expired, now());
        assert_eq!(reason_of(&p), Some(RotateReason::Expired), "{p:?}");
    }

    /// A pending key already due (expiring within rotate_before) is not promoted: it would be
    /// replaced at once. It is deleted as the orphan it is, and a new one minted.
    #[test]
    fn a_pending_key_due_now_is_not_resumed() {
        let s = secret(&[("amgk1-b", AWSCURRENT), ("amgk1-c", AWSPENDING)], 60);
        let o = KeyObserved {
            secret: Some(&s),
            current: Some(record("amgk1-b", 1, 3)),
            // Expires exactly rotate_before (7 days) from now: due now.
            pending: Some(record("amgk1-c", 2, 7)),
            ..KeyObserved::default()
        };
        let p = plan(&policy(), "legacy", &o, now());
        assert!(
            !p.actions.iter().any(|a| matches!(a, Action::Resume { .. })),
            "{:?}",
            p.actions
        );
        assert!(
            p.actions.iter().any(|a| matches!(
                a,
                Action::Delete { credential, reason: DeleteReason::Orphan, .. }
                    if credential.name == "amgrot-legacy-2"
            )),
            "{:?}",
            p.actions
        );
    }
}
