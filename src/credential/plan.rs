//! The pure planner: what AWS reports about one credential + its policy + `now` → actions,
//! each with its reason.
//!
//! No I/O and no clock. Every decision is re-derived from what is observed, so a pass that
//! crashed anywhere is resumed or repaired by the next one. The secret's version IDs are
//! derived from the identity of the token they hold (`version_id`), so the planner can tell
//! which token each staging label points at from DescribeSecret alone, without reading values.
//!
//! Token names end with the mark of the secret they were minted for (`secret_mark`): a token
//! is an orphan or superseded only for its own secret. A live token the rotator minted for
//! another secret (the user renamed `secret_name`, a workspace or a service account, or moved
//! a target to another region or role) may still be what that secret's consumers use: it is
//! kept until it expires and reported as left behind.
//!
//! Safety rules the tests hold it to:
//! - with `overlap`, the token AWSCURRENT references is deleted only after a replacement is
//!   promoted in the same action list (and only when it has already expired);
//! - while an AWSPENDING version is resumable, no second token is created;
//! - tokens the rotator did not create are deleted only when known to be expired and the user
//!   opted in; a token whose expiry is unknown is never expired;
//! - a live token minted for another secret is never deleted.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Policy, Strategy};
use crate::credential::records::VerifyBackoff;
use crate::model::{Role, SecretState, ServiceAccount, Token, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

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

pub fn is_rotator_version(id: &str) -> bool {
    id.starts_with(VERSION_PREFIX) || id.starts_with(LEGACY_VERSION_PREFIX)
}

/// The mark of a secret, carried at the end of the names of the tokens minted for it: a hash of
/// its partition, region and account (from its ARN) and its name, so the same name in another
/// region or account is another secret. Secrets Manager's random ARN suffix is left out: a
/// secret deleted and made again under the same name is read by the same consumers.
pub fn secret_mark(secret: &SecretState) -> String {
    // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX
    let mut f = secret.arn.split(':');
    let (partition, region, account) = match (f.next(), f.next(), f.next(), f.next(), f.next()) {
        (Some("arn"), Some(p), Some(_), Some(r), Some(a)) => (p, r, a),
        _ => ("", "", ""),
    };
    digest(&[
        "amg-token-rotator-secret",
        partition,
        region,
        account,
        &secret.name,
    ])[..MARK_LEN]
        .to_owned()
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

/// A token as the plan refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    pub id: String,
    pub name: String,
    /// `None`: AMG reports no expiry for it.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&Token> for TokenRef {
    fn from(t: &Token) -> Self {
        TokenRef {
            id: t.id.clone(),
            name: t.name.clone(),
            expires_at: t.expires_at,
        }
    }
}

/// An expiry for people: RFC 3339, or "unknown".
pub fn expiry_text(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "unknown".to_owned(), crate::model::rfc3339)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotateReason {
    /// No secret value yet.
    FirstRun,
    /// The current token is within `rotate_before` of its expiry.
    Due,
    /// The current token has expired.
    Expired,
    /// AWSCURRENT names a token that no longer exists.
    MissingToken,
}

impl RotateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RotateReason::FirstRun => "first_run",
            RotateReason::Due => "due",
            RotateReason::Expired => "expired",
            RotateReason::MissingToken => "missing_token",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Replaced by a newer token and past its grace period.
    Superseded,
    /// Minted for this secret, referenced by no version of it, older than the orphan margin.
    Orphan,
    /// Created by the rotator and expired.
    ExpiredOwned,
    /// Not created by the rotator, expired, and the user opted in to free quota.
    ExpiredForeign,
    /// The recreate strategy deletes before it creates.
    Recreate,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Superseded => "superseded",
            DeleteReason::Orphan => "orphan",
            DeleteReason::ExpiredOwned => "expired_owned",
            DeleteReason::ExpiredForeign => "expired_foreign",
            DeleteReason::Recreate => "recreate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Bootstrap: create the missing service account with the declared role.
    CreateServiceAccount { role: Role },
    /// Create the secret (no value yet) with the configured KMS key, description and tags.
    CreateSecret,
    /// overlap: create a token, verify it, publish it as AWSPENDING, promote to AWSCURRENT.
    Rotate {
        reason: RotateReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaces: Option<TokenRef>,
    },
    /// recreate: delete `delete_first`, create the secret's fixed-name token, verify, publish
    /// as AWSCURRENT. (The name carries the secret's mark, known once the secret exists.)
    Recreate {
        reason: RotateReason,
        delete_first: Vec<TokenRef>,
    },
    /// Promote the AWSPENDING version an interrupted pass left (verifying it first if asked).
    Resume { version_id: String, token: TokenRef },
    /// Remove AWSPENDING from a version that is already current or whose token is gone.
    ClearPending { version_id: String },
    DeleteToken {
        token: TokenRef,
        reason: DeleteReason,
    },
}

impl Action {
    /// Actions that are the rotation itself: if one fails, what follows it must not run.
    pub fn is_rotation(&self) -> bool {
        matches!(
            self,
            Action::CreateServiceAccount { .. }
                | Action::CreateSecret
                | Action::Rotate { .. }
                | Action::Recreate { .. }
                | Action::Resume { .. }
        )
    }

    /// Actions that send a key to Grafana to prove it, when verification is on.
    pub fn verifies(&self) -> bool {
        matches!(
            self,
            Action::Rotate { .. } | Action::Recreate { .. } | Action::Resume { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateServiceAccount { role } => {
                write!(f, "create service account with role {role}")
            }
            Action::CreateSecret => write!(f, "create secret"),
            Action::Rotate { reason, replaces } => match replaces {
                Some(old) => write!(f, "rotate ({}) replacing {}", reason.as_str(), old.name),
                None => write!(f, "rotate ({})", reason.as_str()),
            },
            Action::Recreate { reason, .. } => write!(f, "recreate ({})", reason.as_str()),
            Action::Resume { token, .. } => write!(f, "resume pending {}", token.name),
            Action::ClearPending { .. } => write!(f, "clear stale AWSPENDING label"),
            Action::DeleteToken { token, reason } => {
                write!(f, "delete {} ({})", token.name, reason.as_str())
            }
        }
    }
}

/// Why a credential cannot be handled this pass; reported, never acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Blocker {
    ServiceAccountMissing,
    ServiceAccountDisabled,
    /// AWSCURRENT holds a version the rotator did not write: left untouched.
    ForeignSecret {
        version_id: String,
    },
    /// AWSPENDING holds a version the rotator did not write: another tool is rotating it.
    ForeignPending {
        version_id: String,
    },
    /// Secrets Manager rotation is enabled: a rotation function owns the secret.
    RotationEnabled,
    SecretScheduledForDeletion,
    /// Verification of new keys keeps failing: the next attempt waits.
    VerificationBackoff {
        failures: u32,
        last_answer: String,
        next_attempt: DateTime<Utc>,
    },
    /// An API-key credential in a workspace on Grafana 12 or later, where keys are gone.
    ApiKeysRemoved {
        grafana_version: String,
    },
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::ServiceAccountMissing => write!(f, "the service account does not exist"),
            Blocker::ServiceAccountDisabled => {
                write!(f, "the service account is disabled; its tokens are left alone")
            }
            Blocker::ForeignSecret { version_id } => write!(
                f,
                "the secret's AWSCURRENT version {version_id} was not written by amg-token-rotator; left untouched (delete the secret or point secret_name elsewhere to let the rotator manage it)"
            ),
            Blocker::ForeignPending { version_id } => write!(
                f,
                "the secret's AWSPENDING version {version_id} was not written by amg-token-rotator (another tool is rotating this secret); left untouched: finish or cancel that rotation, or point secret_name elsewhere"
            ),
            Blocker::RotationEnabled => write!(
                f,
                "Secrets Manager rotation is enabled on the secret, so a rotation function owns it; left untouched: cancel that rotation (CancelRotateSecret) or point secret_name elsewhere"
            ),
            Blocker::SecretScheduledForDeletion => write!(
                f,
                "the secret is scheduled for deletion; restore it or choose another secret_name"
            ),
            Blocker::VerificationBackoff {
                failures,
                last_answer,
                next_attempt,
            } => write!(
                f,
                "verification of a new key failed {failures} time(s) in a row (last: {last_answer}); nothing is published until a key is proven, next attempt at {} (check that the rotator reaches the workspace's Grafana, or set verify = false)",
                crate::model::rfc3339(*next_attempt)
            ),
            Blocker::ApiKeysRemoved { grafana_version } => write!(
                f,
                "the workspace runs Grafana {grafana_version}, and API keys have been removed in Amazon Managed Grafana version 12: nothing is rotated; manage this credential as a service account and its tokens (service_accounts) instead of api_keys"
            ),
        }
    }
}

/// A live token the rotator minted for another secret, kept until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftBehind {
    pub token: TokenRef,
    /// The mark in its name; `None` for names from before marks existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
    /// The secret the mark names, when the pass found it (the rotator's secrets in this
    /// account and region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = match (&self.mark, &self.secret) {
            (_, Some(secret)) => format!("minted for secret {secret}"),
            (Some(mark), None) => format!(
                "minted for another secret (mark {mark}; none of this account and region's amg-token-rotator secrets has it: one in another region or account, or deleted)"
            ),
            (None, None) => {
                "minted before token names carried their secret's mark, so any secret may hold it"
                    .to_owned()
            }
        };
        write!(
            f,
            "{} is {whose}; kept until it expires ({}): retire that secret once its consumers read the new one, then delete the token",
            self.token.name,
            expiry_text(self.token.expires_at)
        )
    }
}

/// What the planner decided for one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub actions: Vec<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocker>,
    /// The token AWSCURRENT references now, if it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<TokenRef>,
    /// When the current token falls due (`None` without a current token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// Decisions to wait, for people: grace periods running, young unreferenced tokens.
    pub notes: Vec<String>,
    /// The service account's role differs from the declared one; AMG cannot change it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_drift: Option<RoleDrift>,
    /// Live tokens minted for other secrets: what a renamed secret left behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_behind: Vec<LeftBehind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoleDrift {
    pub declared: Role,
    pub actual: Role,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty() && self.blocked.is_none()
    }

    fn blocked(blocker: Blocker) -> Plan {
        Plan {
            blocked: Some(blocker),
            ..Plan::empty()
        }
    }

    fn empty() -> Plan {
        Plan {
            actions: Vec::new(),
            blocked: None,
            current: None,
            due_at: None,
            notes: Vec::new(),
            role_drift: None,
            left_behind: Vec::new(),
        }
    }
}

/// What was observed of one credential.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub workspace_id: &'a str,
    /// The service account's name, as configured (it may not exist yet).
    pub service_account: &'a str,
    pub account: Option<&'a ServiceAccount>,
    pub tokens: &'a [Token],
    /// `None` when the secret does not exist.
    pub secret: Option<&'a SecretState>,
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

fn owned_by_name(policy: &Policy, t: &Token) -> bool {
    t.name.starts_with(&format!("{}-", policy.name_prefix))
}

fn std_to_chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

/// How much earlier than `rotate_before` this credential renews: a deterministic point in
/// `[0, rotation_spread)` from a hash of the credential, so renewals of credentials minted
/// together spread out. Never later than `rotate_before`.
pub fn spread_offset(policy: &Policy, workspace_id: &str, name: &str) -> ChronoDuration {
    let spread = policy.rotation_spread.as_millis() as u64;
    if spread == 0 {
        return ChronoDuration::zero();
    }
    let mut h = Sha256::new();
    h.update(workspace_id.as_bytes());
    h.update([0u8]);
    h.update(name.as_bytes());
    let digest = h.finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    ChronoDuration::milliseconds((n % spread) as i64)
}

/// When a token expiring at `expires_at` falls due for rotation.
pub fn due_at(policy: &Policy, expires_at: DateTime<Utc>, offset: ChronoDuration) -> DateTime<Utc> {
    expires_at - std_to_chrono(policy.rotate_before) - offset
}

/// What in the secret itself forbids touching it, whatever the tokens are.
pub fn secret_blocker(secret: Option<&SecretState>, ours: fn(&str) -> bool) -> Option<Blocker> {
    let s = secret?;
    if s.deleted.is_some() {
        return Some(Blocker::SecretScheduledForDeletion);
    }
    if s.rotation_enabled {
        return Some(Blocker::RotationEnabled);
    }
    let current = s.version_with(AWSCURRENT);
    if let Some(vid) = current.filter(|v| !ours(v)) {
        return Some(Blocker::ForeignSecret {
            version_id: vid.to_owned(),
        });
    }
    s.version_with(AWSPENDING)
        .filter(|v| !ours(v) && Some(*v) != current)
        .map(|vid| Blocker::ForeignPending {
            version_id: vid.to_owned(),
        })
}

/// While verification keeps failing, nothing that would send a new key to Grafana is tried
/// before the backoff recorded on the secret has passed (`records.rs`).
pub fn verification_backoff(
    policy: &Policy,
    secret: Option<&SecretState>,
    wants_to_verify: bool,
    now: DateTime<Utc>,
) -> Option<Blocker> {
    if !policy.verify || !wants_to_verify {
        return None;
    }
    let b = VerifyBackoff::from_tags(&secret?.tags)?;
    (now < b.next_attempt()).then(|| Blocker::VerificationBackoff {
        failures: b.failures,
        last_answer: b.last_answer(),
        next_attempt: b.next_attempt(),
    })
}

/// A missing service account: created when a role is declared, otherwise reported.
fn bootstrap(policy: &Policy, observed: &Observed<'_>, mut plan: Plan) -> Plan {
    let Some(role) = policy.service_account_role else {
        plan.blocked = Some(Blocker::ServiceAccountMissing);
        return plan;
    };
    let current_vid = observed.secret.and_then(|s| s.version_with(AWSCURRENT));
    plan.actions.push(Action::CreateServiceAccount { role });
    if observed.secret.is_none() {
        plan.actions.push(Action::CreateSecret);
    }
    let reason = if current_vid.is_some() {
        RotateReason::MissingToken
    } else {
        RotateReason::FirstRun
    };
    plan.actions.push(match policy.strategy {
        Strategy::Overlap => Action::Rotate {
            reason,
            replaces: None,
        },
        Strategy::Recreate => Action::Recreate {
            reason,
            delete_first: Vec::new(),
        },
    });
    plan
}

/// Decides what to do for one credential.
pub fn plan(policy: &Policy, observed: &Observed<'_>, now: DateTime<Utc>) -> Plan {
    let mut plan = decide(policy, observed, now);
    if plan.blocked.is_none() {
        let verifies = plan.actions.iter().any(Action::verifies);
        if let Some(b) = verification_backoff(policy, observed.secret, verifies, now) {
            plan.actions.clear();
            plan.blocked = Some(b);
        }
    }
    plan
}

fn decide(policy: &Policy, observed: &Observed<'_>, now: DateTime<Utc>) -> Plan {
    if let Some(b) = secret_blocker(observed.secret, is_rotator_version) {
        return Plan::blocked(b);
    }
    let mut plan = Plan::empty();
    let Some(account) = observed.account else {
        return bootstrap(policy, observed, plan);
    };
    if account.is_disabled {
        plan.blocked = Some(Blocker::ServiceAccountDisabled);
        return plan;
    }
    if let (Some(declared), Some(actual)) = (policy.service_account_role, account.role) {
        if declared != actual {
            plan.role_drift = Some(RoleDrift { declared, actual });
        }
    }

    let tokens = observed.tokens;
    let by_version = |vid: Option<&str>| -> Option<&Token> {
        let vid = vid?;
        tokens
            .iter()
            .find(|t| holds(vid, observed.workspace_id, &account.id, t))
    };
    let stage = |s: &str| observed.secret.and_then(|sec| sec.version_with(s));
    let current_vid = stage(AWSCURRENT);
    let pending_vid = stage(AWSPENDING);
    let previous_vid = stage(AWSPREVIOUS);

    let current = by_version(current_vid);
    let previous = by_version(previous_vid);
    let offset = spread_offset(policy, observed.workspace_id, observed.service_account);
    // A token the rotator minted always has an expiry; should AMG report none, assume the
    // longest it can be: the lifetime the rotator asks for.
    let expiry = |t: &Token| {
        t.expires_at
            .unwrap_or(t.created_at + std_to_chrono(policy.token_ttl))
    };
    let due = |t: &Token| due_at(policy, expiry(t), offset);
    plan.current = current.map(TokenRef::from);
    plan.due_at = current.map(due);
    if let Some(t) = current.filter(|t| t.expires_at.is_none()) {
        plan.notes.push(format!(
            "AMG reports no expiry for the current token {}: assumed to expire token_ttl after its creation, at {}",
            t.name,
            crate::model::rfc3339(expiry(t))
        ));
    }

    // An AWSPENDING version left by an interrupted pass: resume it when its token is still good.
    let mut resume: Option<&Token> = None;
    if let Some(pvid) = pending_vid {
        if Some(pvid) == current_vid {
            plan.actions.push(Action::ClearPending {
                version_id: pvid.to_owned(),
            });
        } else {
            match by_version(Some(pvid)) {
                Some(t) if due(t) > now && policy.strategy == Strategy::Overlap => {
                    resume = Some(t);
                }
                _ => plan.actions.push(Action::ClearPending {
                    version_id: pvid.to_owned(),
                }),
            }
        }
    }

    // Does the current token need replacing?
    let rotate_reason = if resume.is_some() {
        None
    } else {
        match current {
            None if current_vid.is_none() => Some(RotateReason::FirstRun),
            None => Some(RotateReason::MissingToken),
            Some(t) if t.expired(now) => Some(RotateReason::Expired),
            Some(t) if due(t) <= now => Some(RotateReason::Due),
            Some(_) => None,
        }
    };

    // Tokens the rotator is responsible for: its name prefix, or referenced by one of its versions.
    let referenced: BTreeSet<&str> = [current, previous, resume]
        .into_iter()
        .flatten()
        .map(|t| t.id.as_str())
        .collect();
    let owned = |t: &Token| owned_by_name(policy, t) || referenced.contains(t.id.as_str());
    // Minted for this very secret: the only tokens that can be its orphans or superseded.
    let mark = observed.secret.map(secret_mark);
    let minted_here = |t: &Token| mark.is_some() && mark_of(&t.name) == mark.as_deref();

    // When the current version was promoted: the secret's last change, else its token's birth.
    let promoted_at = observed
        .secret
        .and_then(|s| s.last_changed)
        .or(current.map(|t| t.created_at));
    let grace = std_to_chrono(policy.grace_period);
    let margin = std_to_chrono(policy.orphan_margin);

    let mut before = Vec::new();
    let mut after = Vec::new();
    for t in tokens {
        let is_current = current.is_some_and(|c| c.id == t.id);
        let is_resumed = resume.is_some_and(|r| r.id == t.id);
        if is_resumed {
            continue;
        }
        if !owned(t) {
            if t.expired(now) && policy.delete_expired_foreign_tokens {
                before.push(Action::DeleteToken {
                    token: t.into(),
                    reason: DeleteReason::ExpiredForeign,
                });
            } else if t.expires_at.is_none() && policy.delete_expired_foreign_tokens {
                plan.notes.push(format!(
                    "keeping {}: AMG reports no expiry for it, so it is never taken for expired",
                    t.name
                ));
            }
            continue;
        }
        if is_current {
            // Kept while current. An expired current token is useless: once the replacement is
            // promoted it goes, with no grace. The recreate strategy deletes it itself.
            if t.expired(now)
                && policy.strategy == Strategy::Overlap
                && (rotate_reason.is_some() || resume.is_some())
            {
                after.push(Action::DeleteToken {
                    token: t.into(),
                    reason: DeleteReason::ExpiredOwned,
                });
            }
            continue;
        }
        if t.expired(now) {
            // Useless to any secret that may still name it.
            before.push(Action::DeleteToken {
                token: t.into(),
                reason: DeleteReason::ExpiredOwned,
            });
            continue;
        }
        let superseded = previous.is_some_and(|p| p.id == t.id)
            || (minted_here(t) && current.is_some_and(|c| t.created_at < c.created_at));
        if superseded {
            let since = promoted_at.unwrap_or(t.created_at);
            if now >= since + grace {
                before.push(Action::DeleteToken {
                    token: t.into(),
                    reason: DeleteReason::Superseded,
                });
            } else {
                plan.notes.push(format!(
                    "keeping superseded {} for its grace period, until {}",
                    t.name,
                    crate::model::rfc3339(since + grace)
                ));
            }
        } else if !minted_here(t) {
            plan.left_behind.push(LeftBehind {
                token: t.into(),
                mark: mark_of(&t.name).map(str::to_owned),
                secret: None,
            });
        } else if now - t.created_at >= margin {
            before.push(Action::DeleteToken {
                token: t.into(),
                reason: DeleteReason::Orphan,
            });
        } else {
            plan.notes.push(format!(
                "keeping unreferenced {} until it is older than the orphan margin",
                t.name
            ));
        }
    }

    // Order: free quota first, then the rotation, then what the rotation made useless.
    plan.actions.extend(before);
    if observed.secret.is_none() {
        plan.actions.push(Action::CreateSecret);
    }
    if let Some(t) = resume {
        plan.actions.push(Action::Resume {
            version_id: pending_vid
                .expect("resume implies a pending version")
                .to_owned(),
            token: t.into(),
        });
    } else if let Some(reason) = rotate_reason {
        match policy.strategy {
            Strategy::Overlap => plan.actions.push(Action::Rotate {
                reason,
                replaces: current.map(TokenRef::from),
            }),
            Strategy::Recreate => {
                // The current token, and a leftover holding this secret's fixed name: a pass
                // that crashed after creating it, deleted once older than orphan_margin. A
                // younger one that no version names may be another rotator's, about to be
                // published: deleting it would leave AWSCURRENT on a deleted token, so it is
                // left; the create then finds the name taken and leaves the credential to that
                // rotator (execute.rs).
                let fixed = mark
                    .as_deref()
                    .map(|m| recreate_token_name(&policy.name_prefix, &account.name, m));
                let mut delete_first: Vec<TokenRef> = Vec::new();
                for t in tokens {
                    let is_current = current.is_some_and(|c| c.id == t.id);
                    let already = plan.actions.iter().any(
                        |a| matches!(a, Action::DeleteToken { token, .. } if token.id == t.id),
                    );
                    let leftover =
                        fixed.as_deref() == Some(t.name.as_str()) && now - t.created_at >= margin;
                    if (is_current || leftover) && !already {
                        delete_first.push(t.into());
                    }
                }
                plan.actions.push(Action::Recreate {
                    reason,
                    delete_first,
                });
            }
        }
    }
    plan.actions.extend(after);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn policy() -> Policy {
        Policy {
            strategy: Strategy::Overlap,
            token_ttl: Duration::from_secs(30 * DAY as u64),
            rotate_before: Duration::from_secs(7 * DAY as u64),
            rotation_spread: Duration::ZERO,
            grace_period: Duration::from_secs(3600),
            orphan_margin: Duration::from_secs(900),
            name_prefix: "amgrot".into(),
            secret_name: "s/{workspace_id}/{service_account}".into(),
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
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens,
                secret,
            },
            now(),
        )
    }

    fn deletes(p: &Plan) -> Vec<(String, DeleteReason)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteToken { token, reason } => Some((token.id.clone(), *reason)),
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
                    replaces: None
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
                replaces: Some((&cur).into())
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
            matches!(p.actions.last(), Some(Action::DeleteToken { reason: DeleteReason::ExpiredOwned, token }) if token.id == "10")
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
                token: (&new).into()
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
        assert!(matches!(p.actions[0], Action::DeleteToken { .. }));
        assert!(matches!(p.actions.last(), Some(Action::Rotate { .. })));
    }

    #[test]
    fn missing_and_disabled_service_accounts_are_reported() {
        let p = plan(
            &policy(),
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: None,
                tokens: &[],
                secret: None,
            },
            now(),
        );
        assert_eq!(p.blocked, Some(Blocker::ServiceAccountMissing));
        let mut sa = account();
        sa.is_disabled = true;
        let cur = owned("10", 31 * DAY, -DAY);
        let p = plan(
            &policy(),
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens: std::slice::from_ref(&cur),
                secret: None,
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
        };
        let mut pol = policy();
        pol.service_account_role = Some(Role::Editor);
        let p = plan(&pol, &observed(None), now());
        assert_eq!(
            p.actions,
            vec![
                Action::CreateServiceAccount { role: Role::Editor },
                Action::CreateSecret,
                Action::Rotate {
                    reason: RotateReason::FirstRun,
                    replaces: None
                }
            ]
        );
        let p = plan(&policy(), &observed(None), now());
        assert_eq!(p.blocked, Some(Blocker::ServiceAccountMissing));
        // Recreated after deletion: the secret names a token of the old account.
        let s = SecretBuilder::new()
            .version(
                &version_id(WS, "old", "1", "amgrot-terraform-x"),
                &[AWSCURRENT],
            )
            .build();
        let p = plan(&pol, &observed(Some(&s)), now());
        assert_eq!(rotates(&p), [RotateReason::MissingToken]);
    }

    #[test]
    fn role_drift_is_noted_not_blocking() {
        let mut pol = policy();
        pol.service_account_role = Some(Role::Admin);
        let mut sa = account();
        sa.role = Some(Role::Viewer);
        let p = plan(
            &pol,
            &Observed {
                workspace_id: WS,
                service_account: "terraform",
                account: Some(&sa),
                tokens: &[],
                secret: None,
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
                        if let Action::DeleteToken { token, .. } = a {
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
                    let doomed: Vec<&TokenRef> = match a {
                        Action::DeleteToken { token, .. } => vec![token],
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
                    let doomed: Vec<&TokenRef> = match a {
                        Action::DeleteToken { token, .. } => vec![token],
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
                    let deleted = p.actions.iter().any(|a| matches!(a, Action::DeleteToken { token, .. } if token.id == lb.token.id));
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
