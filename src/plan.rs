//! The pure planner: what AWS reports about one credential + its policy + `now` → actions,
//! each with its reason.
//!
//! No I/O and no clock. Every decision is re-derived from what is observed, so a pass that
//! crashed anywhere is resumed or repaired by the next one. The secret's version IDs are
//! derived from the identity of the token they hold (`version_id`), so the planner can tell
//! which token each staging label points at from DescribeSecret alone, without reading values.
//!
//! Safety rules the tests hold it to:
//! - with `overlap`, the token AWSCURRENT references is deleted only after a replacement is
//!   promoted in the same action list (and only when it has already expired);
//! - while an AWSPENDING version is resumable, no second token is created;
//! - tokens the rotator did not create are deleted only when expired and the user opted in.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Policy, Strategy};
use crate::model::{Role, SecretState, ServiceAccount, Token, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// Version IDs the rotator writes start with this; any other AWSCURRENT is foreign content.
pub const VERSION_PREFIX: &str = "amgr1-";

/// The secret version ID (ClientRequestToken) for a token: deterministic, 46 characters.
pub fn version_id(workspace_id: &str, service_account_id: &str, token_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        "amg-token-rotator",
        workspace_id,
        service_account_id,
        token_id,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = hex::encode(h.finalize());
    format!("{VERSION_PREFIX}{}", &digest[..40])
}

pub fn is_rotator_version(id: &str) -> bool {
    id.starts_with(VERSION_PREFIX)
}

/// A token as the plan refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    pub id: String,
    pub name: String,
    pub expires_at: DateTime<Utc>,
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
    /// Created by the rotator, referenced by no secret version, older than the orphan margin.
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
    /// overlap: create a token, publish it as AWSPENDING, verify, promote to AWSCURRENT.
    Rotate {
        reason: RotateReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaces: Option<TokenRef>,
    },
    /// recreate: delete `delete_first`, create a token named `token_name`, publish as AWSCURRENT.
    Recreate {
        reason: RotateReason,
        token_name: String,
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
            Action::Recreate {
                reason, token_name, ..
            } => write!(f, "recreate {token_name} ({})", reason.as_str()),
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
    SecretScheduledForDeletion,
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
            Blocker::SecretScheduledForDeletion => write!(
                f,
                "the secret is scheduled for deletion; restore it or choose another secret_name"
            ),
        }
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

/// Names of tokens the rotator creates: `<prefix>-<service account>-<UTC timestamp>`, at most 128
/// characters. The timestamp keeps them unique in the workspace; a collision gets a suffix.
pub fn token_name(prefix: &str, service_account: &str, now: DateTime<Utc>) -> String {
    format!(
        "{prefix}-{}-{}",
        name_part(prefix, service_account, 17),
        now.format("%Y%m%dT%H%M%SZ")
    )
}

/// The fixed name the recreate strategy reuses: `<prefix>-<service account>`.
pub fn recreate_token_name(prefix: &str, service_account: &str) -> String {
    format!("{prefix}-{}", name_part(prefix, service_account, 0))
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

/// A missing service account: created when a role is declared, otherwise reported.
fn bootstrap(policy: &Policy, observed: &Observed<'_>, mut plan: Plan) -> Plan {
    let Some(role) = policy.service_account_role else {
        plan.blocked = Some(Blocker::ServiceAccountMissing);
        return plan;
    };
    let current_vid = observed.secret.and_then(|s| s.version_with(AWSCURRENT));
    if let Some(vid) = current_vid.filter(|v| !is_rotator_version(v)) {
        plan.blocked = Some(Blocker::ForeignSecret {
            version_id: vid.to_owned(),
        });
        return plan;
    }
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
            token_name: recreate_token_name(&policy.name_prefix, observed.service_account),
            delete_first: Vec::new(),
        },
    });
    plan
}

/// Decides what to do for one credential.
pub fn plan(policy: &Policy, observed: &Observed<'_>, now: DateTime<Utc>) -> Plan {
    let mut plan = Plan {
        actions: Vec::new(),
        blocked: None,
        current: None,
        due_at: None,
        notes: Vec::new(),
        role_drift: None,
    };
    if observed.secret.is_some_and(|s| s.deleted.is_some()) {
        plan.blocked = Some(Blocker::SecretScheduledForDeletion);
        return plan;
    }
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
            .find(|t| version_id(observed.workspace_id, &account.id, &t.id) == vid)
    };
    let stage = |s: &str| observed.secret.and_then(|sec| sec.version_with(s));
    let current_vid = stage(AWSCURRENT);
    let pending_vid = stage(AWSPENDING);
    let previous_vid = stage(AWSPREVIOUS);

    if let Some(vid) = current_vid {
        if !is_rotator_version(vid) {
            plan.blocked = Some(Blocker::ForeignSecret {
                version_id: vid.to_owned(),
            });
            return plan;
        }
    }
    let current = by_version(current_vid);
    let previous = by_version(previous_vid);
    let offset = spread_offset(policy, observed.workspace_id, observed.service_account);
    let due = |t: &Token| due_at(policy, t.expires_at, offset);
    plan.current = current.map(TokenRef::from);
    plan.due_at = current.map(due);

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
            Some(t) if t.expires_at <= now => Some(RotateReason::Expired),
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
            if t.expires_at <= now && policy.delete_expired_foreign_tokens {
                before.push(Action::DeleteToken {
                    token: t.into(),
                    reason: DeleteReason::ExpiredForeign,
                });
            }
            continue;
        }
        if is_current {
            // Kept while current. An expired current token is useless: once the replacement is
            // promoted it goes, with no grace. The recreate strategy deletes it itself.
            if t.expires_at <= now
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
        if t.expires_at <= now {
            before.push(Action::DeleteToken {
                token: t.into(),
                reason: DeleteReason::ExpiredOwned,
            });
            continue;
        }
        let superseded = previous.is_some_and(|p| p.id == t.id)
            || current.is_some_and(|c| t.created_at < c.created_at);
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
                let token_name = recreate_token_name(&policy.name_prefix, &account.name);
                let mut delete_first: Vec<TokenRef> = Vec::new();
                for t in tokens {
                    let is_current = current.is_some_and(|c| c.id == t.id);
                    let already = plan.actions.iter().any(
                        |a| matches!(a, Action::DeleteToken { token, .. } if token.id == t.id),
                    );
                    if (is_current || t.name == token_name) && !already {
                        delete_first.push(t.into());
                    }
                }
                plan.actions.push(Action::Recreate {
                    reason,
                    token_name,
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
            expires_at: now() + secs(left),
            last_used_at: None,
        }
    }

    fn owned(id: &str, age: i64, left: i64) -> Token {
        token(id, &format!("amgrot-terraform-{id}"), age, left)
    }

    fn vid(t: &Token) -> String {
        version_id(WS, "3", &t.id)
    }

    /// Builder for a secret's versions.
    struct SecretBuilder(SecretState);
    impl SecretBuilder {
        fn new() -> Self {
            SecretBuilder(SecretState {
                arn: "arn".into(),
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
        let a = version_id(WS, "3", "10");
        assert_eq!(a, version_id(WS, "3", "10"));
        assert_ne!(a, version_id(WS, "3", "11"));
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
        assert_eq!(p.due_at, Some(cur.expires_at - secs(7 * DAY)));
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
        assert!(p.due_at.unwrap() <= cur.expires_at - secs(7 * DAY));
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
            .version(&version_id(WS, "3", "gone"), &[AWSCURRENT])
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
        let gone = version_id(WS, "3", "99");
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
                token_name: "amgrot-terraform".into(),
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
            .version(&version_id(WS, "old", "1"), &[AWSCURRENT])
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
        let a = token_name("amgrot", &long, now());
        let b = token_name("amgrot", &other, now());
        assert!(a.len() + 3 <= 128, "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(
            token_name("amgrot", "terraform", now()),
            "amgrot-terraform-20261122T120000Z"
        );
        assert!(recreate_token_name("amgrot", &long).len() <= 125);
    }

    mod properties {
        use super::*;
        use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, ProptestConfig};
        use proptest::strategy::Strategy as _;

        /// A random observed state: up to 6 tokens (owned or foreign, of any age and expiry) and
        /// a secret whose labels point at any of them, at a missing token, or at nothing.
        fn state(
        ) -> impl proptest::strategy::Strategy<Value = (Vec<Token>, Option<SecretState>, bool)>
        {
            let tok =
                (0..6u8, any::<bool>(), 0i64..40, -10i64..31).prop_map(|(i, own, age, left)| {
                    let name = if own {
                        format!("amgrot-terraform-{i}")
                    } else {
                        format!("other-{i}")
                    };
                    token(&format!("{i}"), &name, age * DAY + 1, left * DAY)
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
            )
                .prop_map(|(tokens, cur, pen, prev, exists, changed, recreate)| {
                    let secret = exists.then(|| {
                        let mut s = SecretBuilder::new().changed_ago(changed);
                        for (stage, idx) in
                            [(AWSCURRENT, cur), (AWSPENDING, pen), (AWSPREVIOUS, prev)]
                        {
                            if let Some(i) = idx {
                                let id = version_id(WS, "3", &i.to_string());
                                let mut stages = s.0.versions.remove(&id).unwrap_or_default();
                                stages.push(stage.to_string());
                                s.0.versions.insert(id, stages);
                            }
                        }
                        s.build()
                    });
                    (tokens, secret, recreate)
                })
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
                                prop_assert!(cur.expires_at <= now(), "deleted a live current token: {:?}", p.actions);
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
                    tokens.iter().find(|t| vid(t) == pv).filter(|t| t.expires_at - secs(7 * DAY) > now())
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
                        let ours = t.name.starts_with("amgrot-") || referenced.contains(&vid(t));
                        prop_assert!(ours || (opt_in && t.expires_at <= now()), "deleted foreign {t:?}: {:?}", p.actions);
                    }
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
                    let healthy = p.current.as_ref().is_some_and(|c| c.expires_at - secs(7 * DAY) > now());
                    let making = p.actions.iter().any(|a| matches!(a, Action::Rotate { .. } | Action::Resume { .. }));
                    prop_assert!(healthy || making, "{:?}", p);
                }
            }
        }
    }
}
