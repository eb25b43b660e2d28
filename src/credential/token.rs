//! Service-account tokens: the main kind. What AMG reports of them (a listing with IDs,
//! names, creation and expiry times) lets the planner tell every token apart; the secret's
//! version IDs are derived from the identity of the token they hold (`version_id`), so one
//! DescribeSecret tells which token each staging label points at, without reading a value.
//!
//! Token names end with the mark of the secret they were minted for (`secret_mark`): a token
//! is an orphan or superseded only for its own secret. A live token the rotator minted for
//! another secret (the user renamed `secret_name`, a workspace or a service account, or moved
//! a target to another region or role) may still be what that secret's consumers use: it is
//! kept until it expires and reported as left behind.
//!
//! Safety rules the tests hold the planner to:
//! - with `overlap`, the token AWSCURRENT references is deleted only after a replacement is
//!   promoted in the same action list (and only when it has already expired);
//! - while an AWSPENDING version is resumable, no second token is created;
//! - tokens the rotator did not create are deleted only when known to be expired and the user
//!   opted in; a token whose expiry is unknown is never expired;
//! - a live token minted for another secret is never deleted.
//!
//! `plan` is pure; `Tokens` is the kind's part of the road (read, mint, delete, render).

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::execute::{CrashPoints, Decided, KindOps, Minted, Run, Services};
use super::plan::{
    due_at, promoted, secret_blocker, spread_offset, std_to_chrono, Action, Blocker, CredRef,
    DeleteReason, LeftBehind, Plan, RoleDrift, RotateReason, What,
};
use super::{audit, retire};
use super::{AccountView, Credential, CredentialKind, StepError};
use crate::aws::secrets::Location;
use crate::aws::ApiError;
use crate::config::{Policy, Strategy};
use crate::daemon::metrics::Observation;
use crate::failpoint;
use crate::model::{
    secret_value, Key, NewToken, Role, SecretFormat, SecretState, ServiceAccount, Token,
    AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};

/// Version IDs the rotator writes for tokens start with this; any other AWSCURRENT is foreign
/// content.
pub const VERSION_PREFIX: &str = "amgr2-";
/// Version IDs written before token names were hashed in (still recognised, never written).
pub const LEGACY_VERSION_PREFIX: &str = "amgr1-";
/// Hex characters of a secret's mark at the end of a token name.
pub const MARK_LEN: usize = 8;

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// The secret version ID (ClientRequestToken) for a token: deterministic, 46 characters. The
/// token's name is part of it, so a token ID that AMG hands out again (a recreated workspace)
/// names another version instead of wedging PutSecretValue on ResourceExistsException.
pub fn version_id(
    workspace_id: &str,
    service_account_id: &str,
    token_id: &str,
    token_name: &str,
) -> String {
    let d = digest(&[
        "amg-token-rotator-v2",
        workspace_id,
        service_account_id,
        token_id,
        token_name,
    ]);
    format!("{VERSION_PREFIX}{}", &d[..40])
}

/// The version ID of the first scheme, without the token's name.
fn legacy_version_id(workspace_id: &str, service_account_id: &str, token_id: &str) -> String {
    let d = digest(&[
        "amg-token-rotator",
        workspace_id,
        service_account_id,
        token_id,
    ]);
    format!("{LEGACY_VERSION_PREFIX}{}", &d[..40])
}

/// Whether version `vid` holds token `t` of service account `service_account_id`, under either
/// scheme.
pub fn holds(vid: &str, workspace_id: &str, service_account_id: &str, t: &Token) -> bool {
    vid == version_id(workspace_id, service_account_id, &t.id, &t.name)
        || vid == legacy_version_id(workspace_id, service_account_id, &t.id)
}

/// A version the rotator wrote, for a token or for the API key a migrated secret held.
fn is_rotator_or_key_version(id: &str) -> bool {
    is_rotator_version(id) || super::api_key::is_key_version(id)
}

pub fn is_rotator_version(id: &str) -> bool {
    id.starts_with(VERSION_PREFIX) || id.starts_with(LEGACY_VERSION_PREFIX)
}

/// The mark of a secret, carried at the end of the names of the tokens minted for it: a hash of
/// its partition, region and account (from its ARN) and its name, so the same name in another
/// region or account is another secret. Secrets Manager's random ARN suffix is left out: a
/// secret deleted and made again under the same name is read by the same consumers, and the
/// mark of a secret not yet made is known from where it will be (`mark_at`).
pub fn secret_mark(secret: &SecretState) -> String {
    mark_at(Location::of_arn(&secret.arn).as_ref(), &secret.name)
}

/// The mark of the secret named `name` at `location` (`None`: an ARN that names none).
pub fn mark_at(location: Option<&Location>, name: &str) -> String {
    let (partition, region, account) = location.map_or(("", "", ""), |l| {
        (l.partition.as_str(), l.region.as_str(), l.account.as_str())
    });
    digest(&["amg-token-rotator-secret", partition, region, account, name])[..MARK_LEN].to_owned()
}

/// The secret mark a token name ends with (before a collision suffix `-2`, `-3`…), if any.
/// Names made before marks existed end with a timestamp and have none.
pub fn mark_of(name: &str) -> Option<&str> {
    let is_mark = |s: &str| {
        s.len() == MARK_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (head, last) = name.rsplit_once('-')?;
    if is_mark(last) {
        return Some(last);
    }
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        let (_, m) = head.rsplit_once('-')?;
        if is_mark(m) {
            return Some(m);
        }
    }
    None
}

/// What was observed of one token credential.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub workspace_id: &'a str,
    /// The service account's name, as configured (it may not exist yet).
    pub service_account: &'a str,
    pub account: Option<&'a ServiceAccount>,
    pub tokens: &'a [Token],
    /// `None` when the secret does not exist.
    pub secret: Option<&'a SecretState>,
    /// The mark the missing secret will have where it is to be created (`mark_at`), when that
    /// is known: tokens minted for it by a pass that stopped before creating it are its orphans.
    pub predicted_mark: Option<&'a str>,
    /// The secret was an API key's, which this service account's tokens replace (Grafana 12):
    /// its key versions are the rotator's too, and one at AWSCURRENT is migrated.
    pub migrating: bool,
    /// With `migrating`: `<name_prefix>-<key base>-`, before the generation, the names of the
    /// keys the secret held. Grafana's own migration keeps a key's name on the token it
    /// becomes, so such a token in the account is the key itself.
    pub key_stem: Option<&'a str>,
}

impl Observed<'_> {
    /// The secret's mark: from its ARN, or as predicted while it does not exist.
    fn mark(&self) -> Option<String> {
        self.secret
            .map(secret_mark)
            .or_else(|| self.predicted_mark.map(str::to_owned))
    }
}

/// Names of tokens the rotator creates: `<prefix>-<service account>-<UTC timestamp>-<mark>`, at
/// most 128 characters. The timestamp keeps them unique in the workspace (a collision gets a
/// suffix); the mark says which secret they are for.
pub fn token_name(prefix: &str, service_account: &str, mark: &str, now: DateTime<Utc>) -> String {
    format!(
        "{prefix}-{}-{}-{mark}",
        name_part(prefix, service_account, 17 + 1 + MARK_LEN),
        now.format("%Y%m%dT%H%M%SZ")
    )
}

/// The fixed name the recreate strategy reuses: `<prefix>-<service account>-<mark>`.
pub fn recreate_token_name(prefix: &str, service_account: &str, mark: &str) -> String {
    format!(
        "{prefix}-{}-{mark}",
        name_part(prefix, service_account, 1 + MARK_LEN)
    )
}

/// The service-account part of a token name, shortened (with a hash kept for uniqueness) so the
/// whole name stays within 128 characters and leaves room for a collision suffix.
fn name_part(prefix: &str, service_account: &str, tail: usize) -> String {
    let room = 128 - prefix.len() - 1 - tail - 3;
    if service_account.len() <= room {
        return service_account.to_owned();
    }
    let hash = &hex::encode(Sha256::digest(service_account.as_bytes()))[..8];
    let mut cut = room - 9;
    while !service_account.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &service_account[..cut])
}

/// A token the rotator named (whichever secret it was minted for).
pub(super) fn owned_by_name(policy: &Policy, t: &Token) -> bool {
    t.name.starts_with(&format!("{}-", policy.name_prefix))
}

/// Decides what to do for one token credential. `bootstrap`: the role a missing service
/// account is created with (and an existing one is expected to have), when declared. Pure.
pub fn plan(
    policy: &Policy,
    bootstrap: Option<Role>,
    observed: &Observed<'_>,
    now: DateTime<Utc>,
) -> Plan {
    decide(policy, bootstrap, observed, now).with_backoff(policy, observed.secret, now)
}

/// A missing service account: created when a role is declared, otherwise reported.
fn bootstrap_account(
    policy: &Policy,
    bootstrap: Option<Role>,
    observed: &Observed<'_>,
    mut plan: Plan,
) -> Plan {
    let Some(role) = bootstrap else {
        plan.blocked = Some(Blocker::ServiceAccountMissing);
        return plan;
    };
    let current_vid = observed.secret.and_then(|s| s.version_with(AWSCURRENT));
    plan.actions.push(Action::CreateServiceAccount { role });
    if observed.secret.is_none() {
        plan.actions.push(Action::CreateSecret);
    }
    let reason = match current_vid {
        Some(vid) if observed.migrating && super::api_key::is_key_version(vid) => {
            RotateReason::ApiKeyMigration
        }
        Some(_) => RotateReason::MissingToken,
        None => RotateReason::FirstRun,
    };
    plan.actions.push(match policy.strategy {
        Strategy::Overlap => Action::Rotate {
            reason,
            replaces: None,
            to: None,
        },
        Strategy::Recreate => Action::Recreate {
            reason,
            delete_first: Vec::new(),
        },
    });
    plan
}

/// Which tokens the secret's labels point at, and what is to be resumed.
struct Labels<'a> {
    current_vid: Option<&'a str>,
    pending_vid: Option<&'a str>,
    current: Option<&'a Token>,
    previous: Option<&'a Token>,
    resume: Option<&'a Token>,
}

fn decide(
    policy: &Policy,
    bootstrap: Option<Role>,
    observed: &Observed<'_>,
    now: DateTime<Utc>,
) -> Plan {
    let ours = if observed.migrating {
        is_rotator_or_key_version
    } else {
        is_rotator_version
    };
    if let Some(b) = secret_blocker(observed.secret, ours) {
        return Plan::blocked(b);
    }
    let mut plan = Plan::empty();
    let Some(account) = observed.account else {
        return bootstrap_account(policy, bootstrap, observed, plan);
    };
    if account.is_disabled {
        plan.blocked = Some(Blocker::ServiceAccountDisabled);
        return plan;
    }
    if let (Some(declared), Some(actual)) = (bootstrap, account.role) {
        if declared != actual {
            plan.role_drift = Some(RoleDrift { declared, actual });
        }
    }
    let due = |t: &Token| due_at(policy, assumed_expiry(policy, t), offset(policy, observed));
    let labels = locate(policy, observed, account, now, &mut plan);
    plan.current = labels.current.map(CredRef::from);
    plan.due_at = labels.current.map(due);
    plan.promoted = promoted(observed.secret);
    if let Some(t) = labels.current.filter(|t| t.expires_at.is_none()) {
        plan.notes.push(format!(
            "AMG reports no expiry for the current token {}: assumed to expire token_ttl after its creation, at {}",
            t.name,
            crate::model::rfc3339(assumed_expiry(policy, t))
        ));
    }
    // Does the current token need replacing? A key AWSCURRENT still holds is replaced by a token
    // of the account at once (even when the key itself became one of its tokens), so the secret
    // names the account from the first pass on Grafana 12.
    let holds_key = observed.migrating
        && labels
            .current_vid
            .is_some_and(super::api_key::is_key_version);
    let reason = match (labels.resume, labels.current) {
        (Some(_), _) => None,
        (None, _) if holds_key => Some(RotateReason::ApiKeyMigration),
        (None, None) if labels.current_vid.is_none() => Some(RotateReason::FirstRun),
        (None, None) => Some(RotateReason::MissingToken),
        (None, Some(t)) if t.expired(now) => Some(RotateReason::Expired),
        (None, Some(t)) if due(t) <= now => Some(RotateReason::Due),
        (None, Some(_)) => None,
    };
    let (before, after) = sweep(policy, observed, &labels, reason.is_some(), now, &mut plan);
    // Order: free quota first, then the rotation, then what the rotation made useless.
    plan.actions.extend(before);
    if observed.secret.is_none() {
        plan.actions.push(Action::CreateSecret);
    }
    if let Some(t) = labels.resume {
        plan.actions.push(Action::Resume {
            version_id: labels
                .pending_vid
                .expect("resume implies a pending version")
                .to_owned(),
            credential: t.into(),
        });
    } else if let Some(reason) = reason {
        let rotation = rotation(policy, observed, account, &labels, reason, &plan, now);
        plan.actions.push(rotation);
    }
    plan.actions.extend(after);
    plan
}

/// The spread of this credential's renewal.
fn offset(policy: &Policy, observed: &Observed<'_>) -> ChronoDuration {
    spread_offset(policy, observed.workspace_id, observed.service_account)
}

/// A token the rotator minted always has an expiry; should AMG report none, assume the
/// longest it can be: the lifetime the rotator asks for.
fn assumed_expiry(policy: &Policy, t: &Token) -> DateTime<Utc> {
    t.expires_at
        .unwrap_or(t.created_at + std_to_chrono(policy.token_ttl))
}

/// Finds the tokens the labels point at; an AWSPENDING left by an interrupted pass is resumed
/// when its token is still good, otherwise cleared.
fn locate<'a>(
    policy: &Policy,
    observed: &Observed<'a>,
    account: &ServiceAccount,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> Labels<'a> {
    let tokens = observed.tokens;
    // Grafana's own migration keeps a key's name on the token it becomes (one key per
    // account), so a migrated secret's key versions refer to it. Times are not compared: AMG's
    // clock and the rotator's differ.
    let was_key = |vid: &str, t: &Token| {
        observed.migrating
            && super::api_key::is_key_version(vid)
            && observed.key_stem.is_some_and(|stem| {
                t.name
                    .strip_prefix(stem)
                    .is_some_and(|g| g.parse::<u64>().is_ok())
            })
    };
    let by_version = |vid: Option<&str>| -> Option<&'a Token> {
        let vid = vid?;
        tokens
            .iter()
            .find(|t| holds(vid, observed.workspace_id, &account.id, t) || was_key(vid, t))
    };
    let stage = |s: &str| observed.secret.and_then(|sec| sec.version_with(s));
    let (current_vid, pending_vid) = (stage(AWSCURRENT), stage(AWSPENDING));
    let mut resume = None;
    if let Some(pvid) = pending_vid {
        let due = |t: &Token| due_at(policy, assumed_expiry(policy, t), offset(policy, observed));
        match by_version(Some(pvid)) {
            Some(t)
                if Some(pvid) != current_vid
                    && due(t) > now
                    && policy.strategy == Strategy::Overlap =>
            {
                resume = Some(t)
            }
            _ => plan.actions.push(Action::ClearPending {
                version_id: pvid.to_owned(),
            }),
        }
    }
    Labels {
        current_vid,
        pending_vid,
        current: by_version(current_vid),
        previous: by_version(stage(AWSPREVIOUS)),
        resume,
    }
}

/// A token deletion of the sweep.
fn deletion(t: &Token, reason: DeleteReason) -> Action {
    Action::Delete {
        credential: t.into(),
        reason,
        drop_previous: None,
        only_record: false,
        forget: false,
    }
}

/// What to delete and what to keep among the tokens, beside the rotation: expired ones, the
/// superseded past grace, this secret's orphans past the margin, foreign expired ones when
/// opted in; left-behind tokens are reported. Returns (before, after) the rotation.
fn sweep(
    policy: &Policy,
    observed: &Observed<'_>,
    labels: &Labels<'_>,
    rotating: bool,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> (Vec<Action>, Vec<Action>) {
    let referenced: BTreeSet<&str> = [labels.current, labels.previous, labels.resume]
        .into_iter()
        .flatten()
        .map(|t| t.id.as_str())
        .collect();
    let owned = |t: &Token| owned_by_name(policy, t) || referenced.contains(t.id.as_str());
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for t in observed.tokens {
        let is_current = labels.current.is_some_and(|c| c.id == t.id);
        if labels.resume.is_some_and(|r| r.id == t.id) {
            continue;
        }
        if !owned(t) {
            if t.expired(now) && policy.delete_expired_foreign_tokens {
                before.push(deletion(t, DeleteReason::ExpiredForeign));
            } else if t.expires_at.is_none() && policy.delete_expired_foreign_tokens {
                plan.notes.push(format!(
                    "keeping {}: AMG reports no expiry for it, so it is never taken for expired",
                    t.name
                ));
            }
        } else if is_current {
            // Kept while current. An expired current token is useless: once the replacement is
            // promoted it goes, with no grace. The recreate strategy deletes it itself.
            let replaced = rotating || labels.resume.is_some();
            if t.expired(now) && policy.strategy == Strategy::Overlap && replaced {
                after.push(deletion(t, DeleteReason::ExpiredOwned));
            }
        } else if let Some(action) = owned_not_current(policy, observed, labels, t, now, plan) {
            before.push(action);
        }
    }
    (before, after)
}

/// The fate of a token the rotator is responsible for that AWSCURRENT does not hold: deleted
/// when expired, superseded past grace, or this secret's orphan past the margin; otherwise
/// kept (with a note), or reported as left behind when it was minted for another secret.
fn owned_not_current(
    policy: &Policy,
    observed: &Observed<'_>,
    labels: &Labels<'_>,
    t: &Token,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> Option<Action> {
    if t.expired(now) {
        // Useless to any secret that may still name it.
        return Some(deletion(t, DeleteReason::ExpiredOwned));
    }
    // Minted for this very secret: the only tokens that can be its orphans or superseded.
    let mark = observed.mark();
    let minted_here = mark.is_some() && mark_of(&t.name) == mark.as_deref();
    let superseded = labels.previous.is_some_and(|p| p.id == t.id)
        || (minted_here && labels.current.is_some_and(|c| t.created_at < c.created_at));
    if superseded {
        // Since the current version was promoted: the rotator's record, else the secret's last
        // change, else its token's birth, else this token's own.
        let promoted_at = plan
            .promoted
            .map(|p| p.at)
            .or(labels.current.map(|c| c.created_at))
            .unwrap_or(t.created_at);
        // Some token of the account used since: AMG is recording use, so silence means something.
        let evidence = observed
            .tokens
            .iter()
            .any(|u| u.last_used_at.is_some_and(|at| at > promoted_at));
        let secret = observed.secret.map_or("", |s| s.name.as_str());
        let fate = retire::decide(
            policy,
            t.into(),
            secret,
            promoted_at,
            t.last_used_at,
            evidence,
            now,
        );
        let delete = fate.delete;
        if !delete {
            plan.notes.push(fate.to_string());
        }
        plan.superseded.push(fate);
        if delete {
            return Some(deletion(t, DeleteReason::Superseded));
        }
    } else if !minted_here {
        plan.left_behind.push(LeftBehind {
            token: t.into(),
            mark: mark_of(&t.name).map(str::to_owned),
            secret: None,
        });
    } else if now - t.created_at >= std_to_chrono(policy.orphan_margin) {
        return Some(deletion(t, DeleteReason::Orphan));
    } else {
        plan.notes.push(format!(
            "keeping unreferenced {} until it is older than the orphan margin",
            t.name
        ));
    }
    None
}

/// The rotation itself: overlap's Rotate, or recreate's delete-then-create of the fixed name.
fn rotation(
    policy: &Policy,
    observed: &Observed<'_>,
    account: &ServiceAccount,
    labels: &Labels<'_>,
    reason: RotateReason,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Action {
    if policy.strategy == Strategy::Overlap {
        return Action::Rotate {
            reason,
            replaces: labels.current.map(CredRef::from),
            to: None,
        };
    }
    // The current token, and a leftover holding this secret's fixed name: a pass that crashed
    // after creating it, deleted once older than orphan_margin. A younger one that no version
    // names may be another rotator's, about to be published: deleting it would leave
    // AWSCURRENT on a deleted token, so it is left; the create then finds the name taken and
    // leaves the credential to that rotator.
    let fixed = observed
        .mark()
        .map(|m| recreate_token_name(&policy.name_prefix, &account.name, &m));
    let margin = std_to_chrono(policy.orphan_margin);
    let delete_first = observed
        .tokens
        .iter()
        .filter(|t| {
            let is_current = labels.current.is_some_and(|c| c.id == t.id);
            let already = plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Delete { credential, .. } if credential.id == t.id));
            let leftover =
                fixed.as_deref() == Some(t.name.as_str()) && now - t.created_at >= margin;
            (is_current || leftover) && !already
        })
        .map(CredRef::from)
        .collect();
    Action::Recreate {
        reason,
        delete_first,
    }
}

/// The key inside a value the token kind published.
fn key_of(format: SecretFormat, value: &str) -> Option<Key> {
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

/// The plan made over the record of the last clean audit on `secret`, when the record stands
/// and the plan does nothing (`audit.rs`); `None`: the tokens are to be listed. With
/// `liveness_checks`, the current key is proven to the workspace's Grafana first, and a key
/// Grafana refuses (deleted behind the rotator's back) sends the pass to the listing at once.
async fn from_record(
    services: Services<'_>,
    cred: &Credential,
    bootstrap: Option<Role>,
    known: audit::Known<'_>,
    secret: Option<SecretState>,
    now: DateTime<Utc>,
) -> Option<Decided> {
    let ws = &cred.workspace.id;
    let (token, account, held) = audit::trusted(&cred.policy, ws, known, secret.as_ref(), now)?;
    let plan = plan(
        &cred.policy,
        bootstrap,
        &Observed {
            workspace_id: ws,
            service_account: &cred.service_account,
            account: Some(&account),
            tokens: std::slice::from_ref(&token),
            secret: secret.as_ref(),
            predicted_mark: None,
            migrating: false,
            key_stem: None,
        },
        now,
    );
    if !audit::quiet(&plan) {
        return None;
    }
    if cred.policy.liveness_checks && !alive(services, cred).await {
        return None;
    }
    Some(Decided {
        plan,
        secret,
        account: Some(account),
        tokens: Some(held),
        record: None,
        observed: Some(Observation::Record),
    })
}

/// The current key as Grafana sees it: `false` only when Grafana refuses it, or it cannot be
/// read from the secret (either way the listing says what is true). Grafana not answering says
/// nothing, and the record stands.
async fn alive(services: Services<'_>, cred: &Credential) -> bool {
    let value = match services
        .secrets
        .get_value(&cred.secret.name, AWSCURRENT)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, error = %e, "could not read the current key to prove it; its tokens are listed instead");
            return false;
        }
    };
    let Some(key) = key_of(cred.secret.format, &value) else {
        return false;
    };
    let answer = services.verifier.verify(&cred.verify_url(), &key).await;
    let alive = super::api_key::liveness(&answer) != Some(false);
    if !alive {
        tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, secret = %cred.secret.name, "the workspace's Grafana refuses the current token; its tokens are listed now");
    }
    alive
}

/// The mark `cred`'s missing secret will have where its store creates it, if that is known.
async fn predicted_mark(services: Services<'_>, cred: &Credential) -> Option<String> {
    let location = services.secrets.location().await?;
    Some(mark_at(Some(&location), &cred.secret.name))
}

/// The token kind's part of the road.
pub struct Tokens;

#[async_trait]
impl KindOps for Tokens {
    async fn decide(
        &self,
        services: Services<'_>,
        cred: &Credential,
        account: AccountView,
        now: DateTime<Utc>,
        audit: bool,
    ) -> Result<Decided, StepError> {
        let ws = &cred.workspace.id;
        let bootstrap = match cred.kind {
            CredentialKind::Token { bootstrap } => bootstrap,
            CredentialKind::ApiKey { .. } => None,
        };
        let known = match &account {
            AccountView::Listed(a) => audit::Known::Listed(a.as_ref()),
            AccountView::Remembered(a, _) => audit::Known::Listed(Some(a)),
            AccountView::Deferred(_) => audit::Known::Unlisted(&cred.service_account),
        };
        let records =
            !audit && cred.migrated_from.is_none() && !cred.policy.audit_interval.is_zero();
        // The census may say there is nothing to do; only DescribeSecret may say what to do.
        let listed = match records {
            true => {
                services
                    .census
                    .take(services.secrets, &cred.secret.name)
                    .await
            }
            false => None,
        };
        if let Some(listed) = &listed {
            let d = from_record(services, cred, bootstrap, known, Some(listed.clone()), now);
            if let Some(decided) = d.await {
                return Ok(decided);
            }
        }
        let secret = services
            .secrets
            .describe(&cred.secret.name)
            .await
            .map_err(StepError::api("DescribeSecret"))?;
        // Fresher than the census: the record is asked again only if it may answer otherwise.
        let shown = match (&listed, &secret) {
            (Some(listed), Some(described)) => super::census::shows(listed, described),
            (listed, described) => listed.is_none() && described.is_none(),
        };
        if records && !shown {
            let d = from_record(services, cred, bootstrap, known, secret.clone(), now);
            if let Some(decided) = d.await {
                return Ok(decided);
            }
        }
        let account = match account {
            AccountView::Listed(a) => a,
            AccountView::Deferred(d) => d
                .account(&cred.service_account)
                .await
                .map_err(StepError::api("ListWorkspaceServiceAccounts"))?,
            AccountView::Remembered(_, d) => Some(
                d.account(&cred.service_account)
                    .await
                    .map_err(StepError::api("ListWorkspaceServiceAccounts"))?
                    .ok_or(StepError::AccountGone)?,
            ),
        };
        let tokens = match &account {
            Some(a) => services
                .grafana
                .list_tokens(ws, &a.id)
                .await
                .map_err(StepError::api("ListWorkspaceServiceAccountTokens"))?,
            None => Vec::new(),
        };
        let key_stem = cred
            .migrated_from
            .as_ref()
            .map(|base| format!("{}-{base}-", cred.policy.name_prefix));
        let predicted_mark = match &secret {
            Some(_) => None,
            None => predicted_mark(services, cred).await,
        };
        let mut plan = plan(
            &cred.policy,
            bootstrap,
            &Observed {
                workspace_id: ws,
                service_account: &cred.service_account,
                account: account.as_ref(),
                tokens: &tokens,
                secret: secret.as_ref(),
                predicted_mark: predicted_mark.as_deref(),
                migrating: cred.migrated_from.is_some(),
                key_stem: key_stem.as_deref(),
            },
            now,
        );
        if let Some(key) = &cred.migrated_from {
            plan.migration = Some(format!(
                "API key {key} becomes service account {}: the workspace runs Grafana {}, which has no API keys; its tokens are published to the key's secret, which consumers keep reading",
                cred.service_account, cred.workspace.grafana_version
            ));
        }
        name_left_behind(services, &mut plan.left_behind).await;
        let record = audit::to_record(
            &cred.policy,
            (ws, &cred.service_account),
            account.as_ref(),
            &tokens,
            secret.as_ref(),
            &plan,
            now,
        );
        Ok(Decided {
            plan,
            secret,
            account,
            tokens: Some(audit::held(&tokens, now)),
            record,
            observed: Some(Observation::Listing),
        })
    }

    async fn mint(
        &self,
        run: &mut Run<'_>,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<Minted, StepError> {
        let cred = run.cred;
        // A missing secret is created with this token's key (`execute::rotate`), where its
        // mark says it will be.
        let mark = match &run.secret {
            Some(secret) => secret_mark(secret),
            None => predicted_mark(run.services, cred)
                .await
                .ok_or_else(|| super::execute::missing_secret(cred))?,
        };
        let made = if matches!(action, Action::Recreate { .. }) {
            let name = recreate_token_name(&cred.policy.name_prefix, &run.account()?.name, &mark);
            create_fixed(run, &name, now).await?
        } else {
            let name = token_name(&cred.policy.name_prefix, &cred.service_account, &mark, now);
            create(run, &name, now).await?
        };
        failpoint::hit(if matches!(action, Action::Recreate { .. }) {
            "after_recreate_create"
        } else {
            "after_create_token"
        });
        let (made, listed) = with_amg_times(run, made).await;
        let first_record = match (run.account(), &listed) {
            (Ok(account), Some(tokens)) => audit::of_first(
                &cred.policy,
                (&cred.workspace.id, &cred.service_account),
                account,
                tokens,
                &made.id,
                now,
            ),
            _ => None,
        };
        Ok(Minted {
            credential: CredRef {
                what: What::Token,
                id: made.id.clone(),
                name: made.name.clone(),
                expires_at: Some(made.expires_at),
            },
            created_at: made.created_at,
            expires_at: made.expires_at,
            key: made.key,
            first_record,
        })
    }

    async fn delete(&self, run: &Run<'_>, credential: &CredRef) -> Result<(), StepError> {
        let cred = run.cred;
        match run
            .services
            .grafana
            .delete_token(&cred.workspace.id, &run.account()?.id, &credential.id)
            .await
        {
            // Already gone: the goal is reached.
            Ok(()) | Err(ApiError::NotFound(_)) => {
                failpoint::hit("after_delete_token");
                Ok(())
            }
            Err(e) => Err(StepError::api("DeleteWorkspaceServiceAccountToken")(e)),
        }
    }

    fn publication(
        &self,
        run: &Run<'_>,
        minted: &Minted,
    ) -> Result<(String, Zeroizing<String>), StepError> {
        let cred = run.cred;
        let account = run.account()?;
        let version = version_id(
            &cred.workspace.id,
            &account.id,
            &minted.credential.id,
            &minted.credential.name,
        );
        let token = NewToken {
            id: minted.credential.id.clone(),
            name: minted.credential.name.clone(),
            key: minted.key.clone(),
            created_at: minted.created_at,
            expires_at: minted.expires_at,
        };
        let value = secret_value(cred.secret.format, &cred.workspace, account, &token);
        Ok((version, value))
    }

    fn key_in(&self, run: &Run<'_>, value: &str) -> Option<Key> {
        key_of(run.cred.secret.format, value)
    }

    async fn forget(&self, _run: &mut Run<'_>, _name: &str) -> Result<(), StepError> {
        // Tokens can be listed: they need no record of their own.
        Ok(())
    }

    fn creates_with_first_version(&self) -> bool {
        true
    }

    fn crash_points(&self) -> CrashPoints {
        CrashPoints {
            after_pending: "after_pending",
            after_promote: "after_promote",
        }
    }
}

/// Creates a token named `base` (or `base-2`, `base-3`… when the name is taken). AMG takes no
/// idempotency token: after an ambiguous failure the same name is tried again, and if it then
/// turns out taken, the next name is tried. The token a lost attempt may have made is
/// referenced by no version; it carries this secret's mark, so the orphan sweep of a later
/// pass deletes it once it is older than `orphan_margin`. Deleting it here could delete
/// another rotator's token that is about to be published.
async fn create(run: &Run<'_>, base: &str, now: DateTime<Utc>) -> Result<NewToken, StepError> {
    let cred = run.cred;
    let ws = &cred.workspace.id;
    let sa = &run.account()?.id;
    const ATTEMPTS: u32 = 4;
    let mut suffix = 1;
    // The last failure, when it left the outcome unknown: if the attempts run out on it, it
    // is the cause to report (a name was not what was missing).
    let mut ambiguous: Option<ApiError> = None;
    for _ in 0..ATTEMPTS {
        let name = if suffix == 1 {
            base.to_owned()
        } else {
            format!("{base}-{suffix}")
        };
        match run
            .services
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

/// recreate: creates the secret's fixed-name token. The name is free once `delete_first` is
/// done, unless someone made a token of that name since the plan. The secret is looked at
/// again first: if a version holds it, another rotator published it and this one leaves the
/// credential to it; if none does, it is left to its maker while younger than orphan_margin,
/// and deleted as an orphan once older.
async fn create_fixed(
    run: &Run<'_>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<NewToken, StepError> {
    let cred = run.cred;
    let ws = &cred.workspace.id;
    let sa = run.account()?.id.clone();
    let grafana = run.services.grafana;
    // Up to three tries: a lost attempt, a leftover deleted, then the last word.
    for _ in 0..3 {
        match grafana
            .create_token(ws, &sa, name, cred.policy.token_ttl, now)
            .await
        {
            Ok(t) => {
                tracing::info!(workspace = %ws, service_account = %cred.service_account, token_id = %t.id, token_name = %t.name, "created token");
                return Ok(t);
            }
            Err(ApiError::Conflict(_)) => {}
            Err(e) if !e.surely_not_applied() => continue,
            Err(e) => return Err(StepError::api("CreateWorkspaceServiceAccountToken")(e)),
        }
        let tokens = grafana
            .list_tokens(ws, &sa)
            .await
            .map_err(StepError::api("ListWorkspaceServiceAccountTokens"))?;
        let Some(holder) = tokens.iter().find(|t| t.name == name) else {
            return Err(StepError::NoFreeName(1));
        };
        let secret = run
            .services
            .secrets
            .describe(&cred.secret.name)
            .await
            .map_err(StepError::api("DescribeSecret"))?;
        let published = secret
            .as_ref()
            .is_some_and(|s| s.versions.keys().any(|vid| holds(vid, ws, &sa, holder)));
        if published {
            return Err(StepError::Yielded(format!(
                "{name} was created and published meanwhile"
            )));
        }
        // Unpublished: another rotator about to publish it, or a pass that crashed after
        // creating it. Only its age tells them apart: younger than orphan_margin (the time a
        // pass may take between creating and publishing), it is left to its maker.
        let age = now - holder.created_at;
        if age < std_to_chrono(cred.policy.orphan_margin) {
            return Err(StepError::Yielded(format!(
                "{name} was created {}s ago and no version names it yet: another rotator may be publishing it (if a pass crashed instead, it is deleted once older than orphan_margin)",
                age.num_seconds().max(0)
            )));
        }
        match grafana.delete_token(ws, &sa, &holder.id).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {
                run.services.metrics.deletion(
                    &run.labels,
                    &DeleteReason::Orphan,
                    crate::daemon::metrics::StepOutcome::Success,
                );
            }
            Err(e) => return Err(StepError::api("DeleteWorkspaceServiceAccountToken")(e)),
        }
    }
    Err(StepError::NoFreeName(3))
}

/// AMG's own creation and expiry times of a token just made (Create returns none), from a
/// listing, returned with the listing (the evidence of a first version's record); the host's
/// estimate stays when the listing fails or lacks them.
async fn with_amg_times(run: &Run<'_>, mut token: NewToken) -> (NewToken, Option<Vec<Token>>) {
    let cred = run.cred;
    let Ok(sa) = run.account() else {
        return (token, None);
    };
    match run
        .services
        .grafana
        .list_tokens(&cred.workspace.id, &sa.id)
        .await
    {
        Ok(list) => {
            match list.iter().find(|t| t.id == token.id) {
                Some(t) => {
                    token.created_at = t.created_at;
                    if let Some(e) = t.expires_at {
                        token.expires_at = e;
                    }
                }
                None => {
                    tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, token_name = %token.name, "the new token is not listed yet; its times are the host's estimate")
                }
            }
            (token, Some(list))
        }
        Err(e) => {
            tracing::warn!(workspace = %cred.workspace.id, service_account = %cred.service_account, error = %e, "could not list the new token; its times are the host's estimate");
            (token, None)
        }
    }
}

/// Names the secrets that tokens were left behind for, from the marks in their names: the
/// rotator's secrets in this account and region (one ListSecrets, only when a credential has
/// such tokens, read page by page until every mark is named). A lookup that fails leaves the
/// rest unnamed; the tokens are kept either way.
async fn name_left_behind(services: Services<'_>, left: &mut [LeftBehind]) {
    if left.iter().all(|l| l.mark.is_none()) {
        return;
    }
    let named = super::census::each_managed(services.secrets, |s| {
        let mark = secret_mark(&s);
        for l in left
            .iter_mut()
            .filter(|l| l.mark.as_deref() == Some(mark.as_str()))
        {
            l.secret = Some(s.name.clone());
        }
        left.iter().any(|l| l.mark.is_some() && l.secret.is_none())
    });
    if let Err(e) = named.await {
        tracing::warn!(error = %e, "could not list the rotator's secrets to name the ones tokens were left behind for");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credential::plan::expiry_text;
    use crate::credential::records::VerifyBackoff;
    use crate::model::Role;
    use crate::model::{SecretFormat, AWSPREVIOUS};
    use std::collections::BTreeMap;
    use std::time::Duration;

    const WS: &str = "g-0123456789";
    const DAY: i64 = 86_400;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn secs(s: i64) -> ChronoDuration {
        ChronoDuration::seconds(s)
    }

    pub(crate) fn policy() -> Policy {
        Policy {
            strategy: Strategy::Overlap,
            token_ttl: Duration::from_secs(30 * DAY as u64),
            rotate_before: Duration::from_secs(7 * DAY as u64),
            rotation_spread: Duration::ZERO,
            grace_period: Duration::from_secs(3600),
            quiet_period: Duration::from_secs(7200),
            max_overlap: Duration::from_secs(3 * 86400),
            orphan_margin: Duration::from_secs(900),
            audit_interval: Duration::from_secs(3600),
            name_prefix: "amgrot".into(),
            secret_name: "s/{workspace_id}/{service_account}".into(),
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

    fn account() -> ServiceAccount {
        ServiceAccount {
            id: "3".into(),
            name: "terraform".into(),
            role: None,
            is_disabled: false,
        }
    }

    /// A token created `age` seconds ago that expires in `left` seconds.
    fn token(id: &str, name: &str, age: i64, left: i64) -> Token {
        Token {
            id: id.into(),
            name: name.into(),
            created_at: now() - secs(age),
            expires_at: Some(now() + secs(left)),
            last_used_at: None,
        }
    }

    /// The mark of the test secret (`SecretBuilder`).
    fn here() -> String {
        secret_mark(&SecretBuilder::new().build())
    }

    /// A token the rotator minted for the test secret.
    fn owned(id: &str, age: i64, left: i64) -> Token {
        token(id, &format!("amgrot-terraform-{id}-{}", here()), age, left)
    }

    /// A token the rotator minted for another secret (`mark`), or before marks (`None`).
    fn minted_elsewhere(id: &str, mark: Option<&str>, age: i64, left: i64) -> Token {
        let name = match mark {
            Some(m) => format!("amgrot-terraform-20261101T000000Z-{m}"),
            None => format!("amgrot-terraform-2026110{id}T000000Z"),
        };
        token(id, &name, age, left)
    }

    fn vid(t: &Token) -> String {
        version_id(WS, "3", &t.id, &t.name)
    }

    /// Builder for a secret's versions.
    struct SecretBuilder(SecretState);
    impl SecretBuilder {
        fn new() -> Self {
            SecretBuilder(SecretState {
                arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:s-AbCdEf".into(),
                name: "s".into(),
                last_changed: Some(now() - secs(10 * DAY)),
                ..SecretState::default()
            })
        }
        fn version(mut self, id: &str, stages: &[&str]) -> Self {
            self.0
                .versions
                .insert(id.into(), stages.iter().map(|s| s.to_string()).collect());
            self
        }
        fn changed_ago(mut self, s: i64) -> Self {
            self.0.last_changed = Some(now() - secs(s));
            self
        }
        fn build(self) -> SecretState {
            self.0
        }
    }

    fn run(policy: &Policy, tokens: &[Token], secret: Option<&SecretState>) -> Plan {
        let sa = account();
        plan(
            policy,
            None,
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens,
                secret,
                predicted_mark: None,
                migrating: false,
                key_stem: None,
            },
            now(),
        )
    }

    fn deletes(p: &Plan) -> Vec<(String, DeleteReason)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    credential, reason, ..
                } => Some((credential.id.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn rotates(p: &Plan) -> Vec<RotateReason> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Rotate { reason, .. } | Action::Recreate { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn version_ids_are_deterministic_and_valid_client_request_tokens() {
        let a = version_id(WS, "3", "10", "n");
        assert_eq!(a, version_id(WS, "3", "10", "n"));
        assert_ne!(a, version_id(WS, "3", "11", "n"));
        // A token ID handed out again, under another name, is another version.
        assert_ne!(a, version_id(WS, "3", "10", "m"));
        assert!(a.starts_with(VERSION_PREFIX) && is_rotator_version(&a));
        assert!((32..=64).contains(&a.len()));
        assert!(is_rotator_version(&a));
    }

    #[test]
    fn first_run_creates_the_secret_then_rotates() {
        let p = run(&policy(), &[], None);
        assert_eq!(
            p.actions,
            vec![
                Action::CreateSecret,
                Action::Rotate {
                    reason: RotateReason::FirstRun,
                    replaces: None,
                    to: None
                }
            ]
        );
    }

    #[test]
    fn an_existing_empty_secret_is_filled_without_being_recreated() {
        let s = SecretBuilder::new().build();
        let p = run(&policy(), &[], Some(&s));
        assert_eq!(rotates(&p), [RotateReason::FirstRun]);
        assert!(!p.actions.contains(&Action::CreateSecret));
    }

    #[test]
    fn healthy_credential_needs_nothing() {
        let cur = owned("10", DAY, 20 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert!(p.is_noop(), "{p:?}");
        assert_eq!(p.current.as_ref().unwrap().id, "10");
        assert_eq!(p.due_at, Some(cur.expires_at.unwrap() - secs(7 * DAY)));
    }

    #[test]
    fn renewals_spread_but_never_later_than_rotate_before() {
        let mut pol = policy();
        pol.rotation_spread = Duration::from_secs(2 * DAY as u64);
        let offsets: Vec<ChronoDuration> = (0..50)
            .map(|i| spread_offset(&pol, WS, &format!("svc-{i}")))
            .collect();
        assert!(offsets
            .iter()
            .all(|o| *o >= ChronoDuration::zero() && *o < secs(2 * DAY)));
        let distinct: std::collections::BTreeSet<_> =
            offsets.iter().map(|o| o.num_hours()).collect();
        assert!(
            distinct.len() > 20,
            "offsets spread over the window: {distinct:?}"
        );
        assert_eq!(
            spread_offset(&pol, WS, "svc-1"),
            spread_offset(&pol, WS, "svc-1")
        );
        // 8 days left: due for some credentials (offset > 1 day), never past 7 days left.
        let cur = owned("10", 22 * DAY, 8 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&pol, std::slice::from_ref(&cur), Some(&s));
        assert!(p.due_at.unwrap() <= cur.expires_at.unwrap() - secs(7 * DAY));
        // Exactly this credential's own point in the spread, which is not zero.
        let offset = spread_offset(&pol, WS, "terraform");
        assert!(offset > ChronoDuration::zero());
        assert_eq!(
            p.due_at,
            Some(cur.expires_at.unwrap() - secs(7 * DAY) - offset)
        );
    }

    /// While a pending token is resumed, the sweep still does its work on the others (an
    /// expired token goes) and leaves the resumed one alone.
    #[test]
    fn a_resume_sweeps_the_other_tokens_and_not_its_own() {
        let old = owned("10", 24 * DAY, 6 * DAY);
        let new = owned("11", 60, 30 * DAY - 60);
        let dead = owned("9", 40 * DAY, -DAY);
        let s = SecretBuilder::new()
            .version(&vid(&old), &[AWSCURRENT])
            .version(&vid(&new), &[AWSPENDING])
            .build();
        let p = run(&policy(), &[dead.clone(), old, new.clone()], Some(&s));
        let deleted: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { credential, .. } => Some(credential.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["9"], "{:?}", p.actions);
        assert!(p.actions.contains(&Action::Resume {
            version_id: vid(&new),
            credential: (&new).into()
        }));
    }

    /// AWSPREVIOUS is this secret's own record: the token it names is superseded (and goes
    /// after grace) even when its name carries no mark, from before marks existed.
    #[test]
    fn a_token_awsprevious_names_is_superseded_even_without_a_mark() {
        let prev = minted_elsewhere("5", None, 20 * DAY, 10 * DAY);
        let cur = owned("10", DAY, 20 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&prev), &[AWSPREVIOUS])
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), &[prev.clone(), cur], Some(&s));
        assert!(
            p.actions
                .contains(&deletion(&prev, DeleteReason::Superseded)),
            "{:?}",
            p.actions
        );
        assert!(p.left_behind.is_empty(), "{:?}", p.left_behind);
    }

    /// Only a user who opted in to deleting expired foreign tokens is told why one without an
    /// expiry is kept; one with an expiry needs no word.
    #[test]
    fn the_no_expiry_note_is_for_opted_in_foreign_tokens_only() {
        let cur = owned("10", DAY, 20 * DAY);
        let ui = Token {
            expires_at: None,
            ..token("7", "from-the-ui", DAY, 0)
        };
        let dated = token("8", "dated-from-the-ui", DAY, 5 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let tokens = [cur, ui, dated];
        let about = |p: &Plan| -> Vec<String> {
            p.notes
                .iter()
                .filter(|n| n.contains("never taken for expired"))
                .cloned()
                .collect()
        };
        assert!(about(&run(&policy(), &tokens, Some(&s))).is_empty());
        let mut opted = policy();
        opted.delete_expired_foreign_tokens = true;
        let notes = about(&run(&opted, &tokens, Some(&s)));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("keeping from-the-ui:"), "{notes:?}");
    }

    /// An AWSPENDING whose token is already due is not promoted (it would be replaced at
    /// once): the label is cleared and the rotation decided afresh.
    #[test]
    fn a_pending_token_due_now_is_cleared_not_resumed() {
        let old = owned("10", 24 * DAY, 6 * DAY);
        // Expires exactly rotate_before (7 days) from now: due now.
        let new = owned("11", 23 * DAY, 7 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&old), &[AWSCURRENT])
            .version(&vid(&new), &[AWSPENDING])
            .build();
        let p = run(&policy(), &[old.clone(), new.clone()], Some(&s));
        assert!(
            !p.actions.iter().any(|a| matches!(a, Action::Resume { .. })),
            "{:?}",
            p.actions
        );
        assert!(p.actions.contains(&Action::ClearPending {
            version_id: vid(&new)
        }));
    }

    #[test]
    fn due_token_is_rotated_and_kept() {
        let cur = owned("10", 24 * DAY, 6 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(
            p.actions,
            vec![Action::Rotate {
                reason: RotateReason::Due,
                replaces: Some((&cur).into()),
                to: None
            }]
        );
    }

    #[test]
    fn expired_token_is_rotated_then_deleted_without_grace() {
        let cur = owned("10", 31 * DAY, -DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(rotates(&p), [RotateReason::Expired]);
        assert!(
            matches!(p.actions.last(), Some(Action::Delete { reason: DeleteReason::ExpiredOwned, credential, .. }) if credential.id == "10")
        );
    }

    #[test]
    fn token_deleted_behind_our_back_is_replaced() {
        let s = SecretBuilder::new()
            .version(&version_id(WS, "3", "gone", "amgrot-gone"), &[AWSCURRENT])
            .build();
        let p = run(&policy(), &[], Some(&s));
        assert_eq!(rotates(&p), [RotateReason::MissingToken]);
    }

    #[test]
    fn pending_version_is_resumed_not_reminted() {
        let old = owned("10", 24 * DAY, 6 * DAY);
        let new = owned("11", 60, 30 * DAY - 60);
        let s = SecretBuilder::new()
            .version(&vid(&old), &[AWSCURRENT])
            .version(&vid(&new), &[AWSPENDING])
            .build();
        let p = run(&policy(), &[old.clone(), new.clone()], Some(&s));
        assert_eq!(
            p.actions,
            vec![Action::Resume {
                version_id: vid(&new),
                credential: (&new).into()
            }]
        );
    }

    #[test]
    fn pending_whose_token_is_gone_is_cleared_and_rotation_decided_afresh() {
        let cur = owned("10", 24 * DAY, 6 * DAY);
        let gone = version_id(WS, "3", "99", "amgrot-gone");
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .version(&gone, &[AWSPENDING])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert!(p
            .actions
            .contains(&Action::ClearPending { version_id: gone }));
        assert_eq!(rotates(&p), [RotateReason::Due]);
    }

    #[test]
    fn pending_label_left_on_the_current_version_is_cleared() {
        let cur = owned("10", DAY, 20 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT, AWSPENDING])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(
            p.actions,
            vec![Action::ClearPending {
                version_id: vid(&cur)
            }]
        );
    }

    #[test]
    fn superseded_token_waits_for_grace_then_goes() {
        let old = owned("10", 24 * DAY, 6 * DAY);
        let cur = owned("11", 600, 30 * DAY - 600);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .version(&vid(&old), &[AWSPREVIOUS]);
        let within = s.changed_ago(600).build();
        let p = run(&policy(), &[old.clone(), cur.clone()], Some(&within));
        assert!(p.actions.is_empty(), "{p:?}");
        assert!(p.notes[0].contains("grace"));

        let past = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .version(&vid(&old), &[AWSPREVIOUS])
            .changed_ago(7200)
            .build();
        let p = run(&policy(), &[old, cur], Some(&past));
        assert_eq!(deletes(&p), [("10".to_string(), DeleteReason::Superseded)]);
    }

    #[test]
    fn orphans_are_deleted_after_the_margin_only() {
        let cur = owned("10", DAY, 20 * DAY);
        let young = owned("12", 60, 30 * DAY);
        let old = owned("13", 3600, 30 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), &[cur, young, old], Some(&s));
        assert_eq!(deletes(&p), [("13".to_string(), DeleteReason::Orphan)]);
        assert!(p.notes.iter().any(|n| n.contains("amgrot-terraform-12")));
    }

    #[test]
    fn expired_owned_tokens_go_and_foreign_ones_only_on_opt_in() {
        let cur = owned("10", DAY, 20 * DAY);
        let dead_owned = owned("5", 40 * DAY, -10 * DAY);
        let dead_foreign = token("6", "someone-elses", 40 * DAY, -10 * DAY);
        let live_foreign = token("7", "terraform-manual", 40 * DAY, 10 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let all = [cur, dead_owned, dead_foreign, live_foreign];
        let p = run(&policy(), &all, Some(&s));
        assert_eq!(deletes(&p), [("5".to_string(), DeleteReason::ExpiredOwned)]);

        let mut opt_in = policy();
        opt_in.delete_expired_foreign_tokens = true;
        let p = run(&opt_in, &all, Some(&s));
        assert_eq!(
            deletes(&p),
            [
                ("5".to_string(), DeleteReason::ExpiredOwned),
                ("6".to_string(), DeleteReason::ExpiredForeign)
            ]
        );
    }

    #[test]
    fn quota_is_freed_before_the_rotation() {
        let mut opt_in = policy();
        opt_in.delete_expired_foreign_tokens = true;
        let dead_foreign = token("6", "someone-elses", 40 * DAY, -10 * DAY);
        let p = run(&opt_in, &[dead_foreign], None);
        assert!(matches!(p.actions[0], Action::Delete { .. }));
        assert!(matches!(p.actions.last(), Some(Action::Rotate { .. })));
    }

    #[test]
    fn missing_and_disabled_service_accounts_are_reported() {
        let p = plan(
            &policy(),
            None,
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: None,
                tokens: &[],
                secret: None,
                predicted_mark: None,
                migrating: false,
                key_stem: None,
            },
            now(),
        );
        assert_eq!(p.blocked, Some(Blocker::ServiceAccountMissing));
        let mut sa = account();
        sa.is_disabled = true;
        let cur = owned("10", 31 * DAY, -DAY);
        let p = plan(
            &policy(),
            None,
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens: std::slice::from_ref(&cur),
                secret: None,
                predicted_mark: None,
                migrating: false,
                key_stem: None,
            },
            now(),
        );
        assert_eq!(p.blocked, Some(Blocker::ServiceAccountDisabled));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn foreign_secret_content_is_left_untouched() {
        let s = SecretBuilder::new()
            .version("11111111-2222-3333-4444-555555555555", &[AWSCURRENT])
            .build();
        let p = run(&policy(), &[], Some(&s));
        assert!(matches!(p.blocked, Some(Blocker::ForeignSecret { .. })));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn recreate_deletes_then_creates_with_the_same_name() {
        let mut pol = policy();
        pol.strategy = Strategy::Recreate;
        let cur = token("10", "amgrot-terraform", 24 * DAY, 6 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&pol, std::slice::from_ref(&cur), Some(&s));
        assert_eq!(
            p.actions,
            vec![Action::Recreate {
                reason: RotateReason::Due,
                delete_first: vec![(&cur).into()]
            }]
        );
    }

    #[test]
    fn a_missing_service_account_is_bootstrapped_only_when_a_role_is_declared() {
        let observed = |secret| Observed {
            workspace_id: WS,
            service_account: "terraform",
            account: None,
            tokens: &[],
            secret,
            predicted_mark: None,
            migrating: false,
            key_stem: None,
        };
        let pol = policy();
        let editor = Some(Role::Editor);
        let p = plan(&pol, editor, &observed(None), now());
        assert_eq!(
            p.actions,
            vec![
                Action::CreateServiceAccount { role: Role::Editor },
                Action::CreateSecret,
                Action::Rotate {
                    reason: RotateReason::FirstRun,
                    replaces: None,
                    to: None
                }
            ]
        );
        let p = plan(&policy(), None, &observed(None), now());
        assert_eq!(p.blocked, Some(Blocker::ServiceAccountMissing));
        // Recreated after deletion: the secret names a token of the old account.
        let s = SecretBuilder::new()
            .version(
                &version_id(WS, "old", "1", "amgrot-terraform-x"),
                &[AWSCURRENT],
            )
            .build();
        let p = plan(&pol, editor, &observed(Some(&s)), now());
        assert_eq!(rotates(&p), [RotateReason::MissingToken]);
    }

    #[test]
    fn role_drift_is_noted_not_blocking() {
        let pol = policy();
        let mut sa = account();
        sa.role = Some(Role::Viewer);
        let p = plan(
            &pol,
            Some(Role::Admin),
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens: &[],
                secret: None,
                predicted_mark: None,
                migrating: false,
                key_stem: None,
            },
            now(),
        );
        assert_eq!(
            p.role_drift,
            Some(RoleDrift {
                declared: Role::Admin,
                actual: Role::Viewer
            })
        );
        assert_eq!(rotates(&p), [RotateReason::FirstRun]);
    }

    #[test]
    fn token_names_fit_and_stay_distinct() {
        let long = "x".repeat(128);
        let other = format!("{}y", "x".repeat(127));
        let mark = here();
        let prefix = "p".repeat(32);
        let a = token_name(&prefix, &long, &mark, now());
        let b = token_name(&prefix, &other, &mark, now());
        assert!(a.len() + 3 <= 128, "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(mark_of(&a), Some(mark.as_str()));
        assert_eq!(
            token_name("amgrot", "terraform", "0123abcd", now()),
            "amgrot-terraform-20261122T120000Z-0123abcd"
        );
        let fixed = recreate_token_name(&prefix, &long, &mark);
        assert!(fixed.len() <= 125, "{}", fixed.len());
        assert_eq!(mark_of(&fixed), Some(mark.as_str()));
        assert_eq!(
            recreate_token_name("amgrot", "terraform", "0123abcd"),
            "amgrot-terraform-0123abcd"
        );
    }

    /// AMG refuses a name over 128 characters; the rotator keeps 3 for a collision suffix. A
    /// service account that fits is kept whole; one character more and it is cut, with a hash
    /// of the whole name, to exactly 125.
    #[test]
    fn token_names_are_cut_to_exactly_what_fits() {
        let mark = here();
        let prefix = "amgrot";
        // 125 = prefix, "-", the part, "-", 16 of timestamp, "-", the mark.
        let room = 125 - prefix.len() - 1 - 17 - 1 - MARK_LEN;
        let fits = "s".repeat(room);
        let name = token_name(prefix, &fits, &mark, now());
        assert_eq!(name.len(), 125);
        assert!(name.contains(&fits), "{name}");
        let over = "s".repeat(room + 1);
        let cut = token_name(prefix, &over, &mark, now());
        assert_eq!(cut.len(), 125, "{cut}");
        assert!(!cut.contains(&over), "{cut}");
        assert_eq!(mark_of(&cut), Some(mark.as_str()));
        // The fixed name of recreate: the same budget without the timestamp.
        let room = 125 - prefix.len() - 1 - 1 - MARK_LEN;
        assert_eq!(
            recreate_token_name(prefix, &"s".repeat(room), &mark).len(),
            125
        );
        let cut = recreate_token_name(prefix, &"s".repeat(room + 1), &mark);
        assert_eq!(cut.len(), 125, "{cut}");
        // Multi-byte characters are cut on a character boundary, never inside one.
        let wide = "é".repeat(100);
        let cut = token_name(prefix, &wide, &mark, now());
        assert!(cut.len() <= 125 && cut.len() >= 124, "{}", cut.len());
        assert!(cut.starts_with("amgrot-éé"), "{cut}");
    }

    #[test]
    fn a_mark_is_eight_lower_case_hex_digits() {
        assert_eq!(
            mark_of("amgrot-sa-20261122T120000Z-9abcdef0"),
            Some("9abcdef0")
        );
        assert_eq!(
            mark_of("amgrot-sa-20261122T120000Z-ffffffff"),
            Some("ffffffff")
        );
        for not in [
            "amgrot-sa-20261122T120000Z-0123ABCD",
            "amgrot-sa-20261122T120000Z-0123abc",
            "amgrot-sa-20261122T120000Z-0123abcde",
            "amgrot-sa-20261122T120000Z-0123abcg",
            // A trailing dash, or a tail that is not a number, is no collision suffix.
            "amgrot-sa-0123abcd-",
            "amgrot-sa-0123abcd-x",
        ] {
            assert_eq!(mark_of(not), None, "{not}");
        }
    }

    #[test]
    fn marks_name_the_secret_by_account_region_and_name() {
        let s = |arn: &str, name: &str| {
            secret_mark(&SecretState {
                arn: arn.into(),
                name: name.into(),
                ..SecretState::default()
            })
        };
        let a = s(
            "arn:aws:secretsmanager:us-east-1:111111111111:secret:a/x-AbCdEf",
            "a/x",
        );
        assert_eq!(a.len(), MARK_LEN);
        // Deleted and made again under the same name: the same secret to its consumers.
        assert_eq!(
            a,
            s(
                "arn:aws:secretsmanager:us-east-1:111111111111:secret:a/x-ZzZzZz",
                "a/x"
            )
        );
        for other in [
            s(
                "arn:aws:secretsmanager:us-east-1:111111111111:secret:b/x-AbCdEf",
                "b/x",
            ),
            s(
                "arn:aws:secretsmanager:eu-west-1:111111111111:secret:a/x-AbCdEf",
                "a/x",
            ),
            s(
                "arn:aws:secretsmanager:us-east-1:222222222222:secret:a/x-AbCdEf",
                "a/x",
            ),
        ] {
            assert_ne!(a, other);
        }
        assert_eq!(
            mark_of("amgrot-sa-20261122T120000Z-0123abcd"),
            Some("0123abcd")
        );
        assert_eq!(
            mark_of("amgrot-sa-20261122T120000Z-0123abcd-2"),
            Some("0123abcd")
        );
        assert_eq!(mark_of("amgrot-sa-0123abcd"), Some("0123abcd"));
        assert_eq!(mark_of("amgrot-sa-20261122T120000Z"), None);
        assert_eq!(mark_of("amgrot-sa-20261122T120000Z-2"), None);
        assert_eq!(mark_of("amgrot-sa"), None);
    }

    #[test]
    fn versions_of_the_first_scheme_are_still_recognised() {
        let cur = owned("10", DAY, 20 * DAY);
        let s = SecretBuilder::new()
            .version(&legacy_version_id(WS, "3", "10"), &[AWSCURRENT])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert!(p.is_noop(), "{p:?}");
        assert_eq!(p.current.as_ref().map(|c| c.id.as_str()), Some("10"));
    }

    #[test]
    fn tokens_minted_for_a_renamed_secret_are_kept_until_they_expire_and_reported() {
        // secret_name changed: the new secret has its own current token; the old secret's
        // tokens are older than it and past every margin, and one has expired.
        let cur = owned("20", 60, 30 * DAY);
        let old_current = minted_elsewhere("10", Some("0badc0de"), 10 * DAY, 20 * DAY);
        let old_previous = minted_elsewhere("9", Some("0badc0de"), 20 * DAY, 10 * DAY);
        let unmarked = minted_elsewhere("8", None, 5 * DAY, 25 * DAY);
        let dead = minted_elsewhere("7", Some("0badc0de"), 40 * DAY, -DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .changed_ago(7 * DAY)
            .build();
        let all = [cur, old_current, old_previous, unmarked, dead];
        let p = run(&policy(), &all, Some(&s));
        assert_eq!(deletes(&p), [("7".to_string(), DeleteReason::ExpiredOwned)]);
        let kept: Vec<&str> = p.left_behind.iter().map(|l| l.token.id.as_str()).collect();
        assert_eq!(kept, ["10", "9", "8"]);
        assert_eq!(p.left_behind[0].mark.as_deref(), Some("0badc0de"));
        assert_eq!(p.left_behind[2].mark, None);
        let text = p.left_behind[0].to_string();
        assert!(text.contains("kept until it expires"), "{text}");
        let named = LeftBehind {
            secret: Some("a/g-0123456789/terraform".into()),
            ..p.left_behind[0].clone()
        };
        assert!(named
            .to_string()
            .contains("minted for secret a/g-0123456789/terraform"));
    }

    #[test]
    fn a_new_secret_takes_nothing_of_the_old_one_for_its_orphans() {
        // The first pass for a new secret_name: no secret yet, the old secret's tokens live.
        let old = minted_elsewhere("10", Some("0badc0de"), 10 * DAY, 20 * DAY);
        let p = run(&policy(), std::slice::from_ref(&old), None);
        assert!(deletes(&p).is_empty(), "{:?}", p.actions);
        assert_eq!(rotates(&p), [RotateReason::FirstRun]);
        assert_eq!(p.left_behind.len(), 1);
    }

    #[test]
    fn an_unknown_expiry_is_never_expired_and_shown_as_unknown() {
        let mut opt_in = policy();
        opt_in.delete_expired_foreign_tokens = true;
        let cur = owned("10", DAY, 20 * DAY);
        let mut ui_made = token("6", "made-in-the-ui", 400 * DAY, 0);
        ui_made.expires_at = None;
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&opt_in, &[cur, ui_made], Some(&s));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("made-in-the-ui") && n.contains("no expiry")));
        assert_eq!(expiry_text(None), "unknown");

        // A current token without an expiry: due token_ttl after its creation, less rotate_before.
        let mut cur = owned("10", 25 * DAY, 0);
        cur.expires_at = None;
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(p.current.as_ref().unwrap().expires_at, None);
        assert_eq!(p.due_at, Some(cur.created_at + secs(23 * DAY)));
        assert_eq!(rotates(&p), [RotateReason::Due]);
        assert!(deletes(&p).is_empty());
    }

    #[test]
    fn secrets_another_tool_rotates_are_left_alone() {
        let cur = owned("10", DAY, 3 * DAY);
        let mut s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        s.rotation_enabled = true;
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(p.blocked, Some(Blocker::RotationEnabled));
        assert!(p.actions.is_empty());
        assert!(Blocker::RotationEnabled
            .to_string()
            .contains("rotation function"));

        let pending = "5c3e4d1a-0000-4000-8000-000000000001";
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .version(pending, &[AWSPENDING])
            .build();
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(
            p.blocked,
            Some(Blocker::ForeignPending {
                version_id: pending.into()
            })
        );
        assert!(p.actions.is_empty(), "no ClearPending: {:?}", p.actions);
    }

    #[test]
    fn a_failing_verification_backs_off_on_the_secrets_record() {
        let mut pol = policy();
        pol.verify = true;
        let cur = owned("10", 24 * DAY, 6 * DAY);
        let with_record = |failed_ago: i64, failures: u32| {
            let mut s = SecretBuilder::new()
                .version(&vid(&cur), &[AWSCURRENT])
                .build();
            let b = VerifyBackoff {
                failures,
                at: now() - secs(failed_ago),
                status: Some(503),
            };
            s.tags.insert(
                crate::credential::records::VERIFICATION_TAG.into(),
                b.tag_value(),
            );
            s
        };
        // Third failure 10 minutes ago: the next attempt is 20 minutes after it.
        let s = with_record(600, 3);
        let p = run(&pol, std::slice::from_ref(&cur), Some(&s));
        match &p.blocked {
            Some(Blocker::VerificationBackoff {
                failures,
                last_answer,
                next_attempt,
            }) => {
                assert_eq!(*failures, 3);
                assert_eq!(last_answer, "HTTP 503");
                assert_eq!(*next_attempt, now() + secs(600));
            }
            other => panic!("{other:?}"),
        }
        assert!(p.actions.is_empty());
        // Past it: try again.
        let p = run(
            &pol,
            std::slice::from_ref(&cur),
            Some(&with_record(1300, 3)),
        );
        assert_eq!(rotates(&p), [RotateReason::Due]);
        // Verification switched off: the record no longer matters.
        let p = run(&policy(), std::slice::from_ref(&cur), Some(&s));
        assert_eq!(rotates(&p), [RotateReason::Due]);
        // Nothing to verify: a healthy credential is not blocked by an old record.
        let fresh = owned("10", DAY, 20 * DAY);
        let mut s = with_record(60, 1);
        s.versions = [(vid(&fresh), vec![AWSCURRENT.to_string()])].into();
        let p = run(&pol, std::slice::from_ref(&fresh), Some(&s));
        assert!(p.is_noop(), "{p:?}");
    }

    #[test]
    fn recreate_leaves_a_young_unpublished_token_of_its_name_to_whoever_made_it() {
        let mut pol = policy();
        pol.strategy = Strategy::Recreate;
        let fixed = recreate_token_name("amgrot", "terraform", &here());
        let cur = token("10", &fixed, 24 * DAY, 6 * DAY);
        // What another rotator made a moment ago under the fixed name (the old one is gone).
        let theirs = token("12", &fixed, 5, 30 * DAY);
        let s = SecretBuilder::new()
            .version(&vid(&cur), &[AWSCURRENT])
            .build();
        let p = run(&pol, std::slice::from_ref(&theirs), Some(&s));
        assert_eq!(
            p.actions,
            vec![Action::Recreate {
                reason: RotateReason::MissingToken,
                delete_first: vec![]
            }]
        );
        assert!(p.notes.iter().any(|n| n.contains(&fixed)), "{:?}", p.notes);
        // Older than the orphan margin, it is a crashed pass's leftover: it goes first.
        let leftover = token("12", &fixed, 3600, 30 * DAY);
        let p = run(&pol, std::slice::from_ref(&leftover), Some(&s));
        assert_eq!(deletes(&p), [("12".to_string(), DeleteReason::Orphan)]);
        assert!(matches!(p.actions.last(), Some(Action::Recreate { .. })));
    }

    mod properties {
        use super::*;
        use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, ProptestConfig};
        use proptest::strategy::Strategy as _;

        /// The name of token `i`: foreign, minted for the test secret, for another secret, or
        /// before marks existed. A function of `i` alone, so labels can name token `i`.
        fn name_of(i: u8) -> String {
            match i % 4 {
                0 => format!("other-{i}"),
                1 => format!("amgrot-terraform-{i}-{}", here()),
                2 => format!("amgrot-terraform-20261101T00000{i}Z-0badc0de"),
                _ => format!("amgrot-terraform-20261101T00000{i}Z"),
            }
        }

        /// The expiry the planner assumes (token_ttl after creation when AMG reports none).
        fn assumed(t: &Token) -> DateTime<Utc> {
            t.expires_at.unwrap_or(t.created_at + secs(30 * DAY))
        }

        /// A random observed state: up to 6 tokens (foreign or the rotator's, for this secret or
        /// another, of any age and expiry, known or not) and a secret whose labels point at any of
        /// them (under either version scheme), at a missing token, or at nothing.
        fn state(
        ) -> impl proptest::strategy::Strategy<Value = (Vec<Token>, Option<SecretState>, bool)>
        {
            let tok = (0..6u8, 0i64..40, -10i64..32).prop_map(|(i, age, left)| {
                let mut t = token(&format!("{i}"), &name_of(i), age * DAY + 1, left * DAY);
                if left == 31 {
                    t.expires_at = None;
                }
                t
            });
            let tokens = proptest::collection::vec(tok, 0..6).prop_map(|mut v| {
                v.sort_by(|a, b| a.id.cmp(&b.id));
                v.dedup_by(|a, b| a.id == b.id);
                v
            });
            // For each stage: None, a token index (maybe missing), and whether the secret exists.
            let label = proptest::option::of(0u8..8);
            (
                tokens,
                label.clone(),
                label.clone(),
                label,
                any::<bool>(),
                0i64..(3 * DAY),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(tokens, cur, pen, prev, exists, changed, recreate, legacy)| {
                        let secret = exists.then(|| {
                            let mut s = SecretBuilder::new().changed_ago(changed);
                            for (stage, idx) in
                                [(AWSCURRENT, cur), (AWSPENDING, pen), (AWSPREVIOUS, prev)]
                            {
                                if let Some(i) = idx {
                                    let id = if legacy {
                                        legacy_version_id(WS, "3", &i.to_string())
                                    } else {
                                        version_id(WS, "3", &i.to_string(), &name_of(i))
                                    };
                                    let mut stages = s.0.versions.remove(&id).unwrap_or_default();
                                    stages.push(stage.to_string());
                                    s.0.versions.insert(id, stages);
                                }
                            }
                            s.build()
                        });
                        (tokens, secret, recreate)
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn current_token_survives_until_a_replacement_is_promoted((tokens, secret, _r) in state()) {
                let p = run(&policy(), &tokens, secret.as_ref());
                if let Some(cur) = &p.current {
                    for (i, a) in p.actions.iter().enumerate() {
                        if let Action::Delete { credential: token, .. } = a {
                            if token.id == cur.id {
                                let promoted_before = p.actions[..i].iter().any(|b| matches!(b, Action::Rotate { .. } | Action::Resume { .. }));
                                prop_assert!(promoted_before, "deleted current without promotion: {:?}", p.actions);
                                prop_assert!(cur.expires_at.is_some_and(|e| e <= now()), "deleted a live current token: {:?}", p.actions);
                            }
                        }
                    }
                }
            }

            #[test]
            fn no_second_token_while_pending_is_resumable((tokens, secret, _r) in state()) {
                let p = run(&policy(), &tokens, secret.as_ref());
                let resumable = secret.as_ref().and_then(|s| {
                    let pv = s.version_with(AWSPENDING)?;
                    if Some(pv) == s.version_with(AWSCURRENT) { return None; }
                    tokens.iter().find(|t| holds(pv, WS, "3", t)).filter(|t| assumed(t) - secs(7 * DAY) > now())
                });
                if resumable.is_some() && p.blocked.is_none() {
                    prop_assert!(!p.actions.iter().any(|a| matches!(a, Action::Rotate { .. } | Action::Recreate { .. })), "{:?}", p.actions);
                    prop_assert!(p.actions.iter().any(|a| matches!(a, Action::Resume { .. })), "{:?}", p.actions);
                }
            }

            #[test]
            fn foreign_tokens_are_deleted_only_when_expired_and_opted_in((tokens, secret, recreate) in state(), opt_in in any::<bool>()) {
                let mut pol = policy();
                pol.delete_expired_foreign_tokens = opt_in;
                if recreate { pol.strategy = Strategy::Recreate; }
                let p = run(&pol, &tokens, secret.as_ref());
                let referenced: Vec<String> = secret.iter().flat_map(|s| s.versions.keys().cloned()).collect();
                for a in &p.actions {
                    let doomed: Vec<&CredRef> = match a {
                        Action::Delete { credential, .. } => vec![credential],
                        Action::Recreate { delete_first, .. } => delete_first.iter().collect(),
                        _ => vec![],
                    };
                    for d in doomed {
                        let t = tokens.iter().find(|t| t.id == d.id).unwrap();
                        let ours = t.name.starts_with("amgrot-") || referenced.iter().any(|v| holds(v, WS, "3", t));
                        prop_assert!(ours || (opt_in && t.expired(now())), "deleted foreign {t:?}: {:?}", p.actions);
                    }
                }
            }

            #[test]
            fn live_tokens_minted_for_other_secrets_are_never_deleted((tokens, secret, recreate) in state()) {
                let mut pol = policy();
                if recreate { pol.strategy = Strategy::Recreate; }
                let p = run(&pol, &tokens, secret.as_ref());
                let labelled: Vec<&String> = secret.iter().flat_map(|s| s.versions.keys()).collect();
                let mark = secret.as_ref().map(secret_mark);
                for a in &p.actions {
                    let doomed: Vec<&CredRef> = match a {
                        Action::Delete { credential, .. } => vec![credential],
                        Action::Recreate { delete_first, .. } => delete_first.iter().collect(),
                        _ => vec![],
                    };
                    for d in doomed {
                        let t = tokens.iter().find(|t| t.id == d.id).unwrap();
                        let here = mark.is_some() && mark_of(&t.name) == mark.as_deref();
                        let named = labelled.iter().any(|v| holds(v, WS, "3", t));
                        let foreign = !t.name.starts_with("amgrot-");
                        prop_assert!(here || named || foreign || t.expired(now()), "deleted {t:?}, minted for another secret: {:?}", p.actions);
                    }
                }
                for lb in &p.left_behind {
                    let deleted = p.actions.iter().any(|a| matches!(a, Action::Delete { credential, .. } if credential.id == lb.token.id));
                    prop_assert!(!deleted, "{:?}", p.actions);
                }
            }

            #[test]
            fn a_plan_never_rotates_twice_or_deletes_twice((tokens, secret, recreate) in state()) {
                let mut pol = policy();
                if recreate { pol.strategy = Strategy::Recreate; }
                let p = run(&pol, &tokens, secret.as_ref());
                let rotations = p.actions.iter().filter(|a| matches!(a, Action::Rotate { .. } | Action::Recreate { .. } | Action::Resume { .. })).count();
                prop_assert!(rotations <= 1);
                let mut ids: Vec<String> = deletes(&p).into_iter().map(|(id, _)| id).collect();
                if let Some(Action::Recreate { delete_first, .. }) = p.actions.iter().find(|a| matches!(a, Action::Recreate { .. })) {
                    ids.extend(delete_first.iter().map(|t| t.id.clone()));
                }
                let n = ids.len();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(n, ids.len(), "{:?}", p.actions);
            }

            #[test]
            fn after_the_plan_a_valid_current_exists_or_is_being_made((tokens, secret, _r) in state()) {
                let p = run(&policy(), &tokens, secret.as_ref());
                if p.blocked.is_none() {
                    let healthy = p.current.as_ref().and_then(|c| tokens.iter().find(|t| t.id == c.id)).is_some_and(|t| assumed(t) - secs(7 * DAY) > now());
                    let making = p.actions.iter().any(|a| matches!(a, Action::Rotate { .. } | Action::Resume { .. }));
                    prop_assert!(healthy || making, "{:?}", p);
                }
            }
        }
    }
}
