//! What every kind of credential plans with: the plan, its actions and their reasons, the
//! blockers, and the rules they share (when a credential falls due, what in the secret forbids
//! touching it, the verification backoff).
//!
//! No I/O and no clock: the kinds' planners (`token`, `api_key`) are pure functions of what was
//! observed, the policy and `now`, and return a `Plan` made of these `Action`s. The executor
//! performs any plan of either kind.

use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Policy;
use crate::credential::records::VerifyBackoff;
use crate::model::{Role, SecretState, AWSCURRENT, AWSPENDING};

/// What a reference points at: AMG addresses a token by its ID and an API key by its name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    #[default]
    Token,
    ApiKey,
}

impl What {
    /// How a sentence names one: `delete amgrot-x-…` for a token, `delete API key …` for a key.
    fn noun(self) -> &'static str {
        match self {
            What::Token => "",
            What::ApiKey => "API key ",
        }
    }
}

/// A token or API key as a plan refers to it. `id` is what AMG addresses it by: a token's ID,
/// or an API key's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredRef {
    pub what: What,
    pub id: String,
    pub name: String,
    /// `None`: AMG reports no expiry for it (or, for a key about to be made, not known yet).
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&crate::model::Token> for CredRef {
    fn from(t: &crate::model::Token) -> Self {
        CredRef {
            what: What::Token,
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
    /// An AWSPENDING version an interrupted pass left, promoted (the executor's label for a
    /// resumption; a plan says `Resume`).
    Resumed,
}

impl RotateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RotateReason::FirstRun => "first_run",
            RotateReason::Due => "due",
            RotateReason::Expired => "expired",
            RotateReason::MissingToken => "missing_token",
            RotateReason::Resumed => "resumed",
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
    /// A credential just minted that will not be used (its verification or publication
    /// failed): the executor's own deletion.
    Rollback,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Superseded => "superseded",
            DeleteReason::Orphan => "orphan",
            DeleteReason::ExpiredOwned => "expired_owned",
            DeleteReason::ExpiredForeign => "expired_foreign",
            DeleteReason::Recreate => "recreate",
            DeleteReason::Rollback => "rollback",
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
    /// overlap: mint, verify, publish as AWSPENDING, promote to AWSCURRENT. `to` is what the
    /// plan already names (an API key's next generation); a token is named when it is minted
    /// (a timestamp and the secret's mark).
    Rotate {
        reason: RotateReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaces: Option<CredRef>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<CredRef>,
    },
    /// recreate: delete `delete_first`, mint the secret's fixed-name token, verify, publish as
    /// AWSCURRENT.
    Recreate {
        reason: RotateReason,
        delete_first: Vec<CredRef>,
    },
    /// Promote the AWSPENDING version an interrupted pass left (verifying it first if asked).
    Resume {
        version_id: String,
        credential: CredRef,
    },
    /// Remove AWSPENDING from a version that is already current or whose credential is gone.
    ClearPending { version_id: String },
    /// Delete a token or key. `drop_previous` also removes AWSPREVIOUS from its version, so the
    /// next pass does not look for it again; `only_record` says that label is the only record
    /// of it (API keys cannot be listed), so a failed deletion holds back a promotion that
    /// would move the label; `forget` takes it off the unpublished-keys record.
    Delete {
        credential: CredRef,
        reason: DeleteReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        drop_previous: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        only_record: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        forget: bool,
    },
    /// An API key on the unpublished-keys record that a version names after all (another
    /// rotator published it): off the record, left alive.
    Forget { name: String },
}

impl crate::daemon::metrics::Label for RotateReason {
    fn label(&self) -> &'static str {
        self.as_str()
    }
}

impl crate::daemon::metrics::Label for DeleteReason {
    fn label(&self) -> &'static str {
        self.as_str()
    }
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

    /// A promotion that can wait a pass because the current credential still works (a due
    /// rotation, a resume): what a failed deletion of a credential's only record postpones.
    pub fn can_wait(&self) -> bool {
        matches!(
            self,
            Action::Rotate {
                reason: RotateReason::Due,
                ..
            } | Action::Resume { .. }
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
            Action::Rotate {
                reason,
                replaces,
                to,
            } => {
                write!(f, "rotate ({})", reason.as_str())?;
                match (to, replaces) {
                    (Some(new), _) => write!(f, " to {}{}", new.what.noun(), new.name),
                    (None, Some(old)) => write!(f, " replacing {}", old.name),
                    (None, None) => Ok(()),
                }
            }
            Action::Recreate { reason, .. } => write!(f, "recreate ({})", reason.as_str()),
            Action::Resume { credential, .. } => write!(f, "resume pending {}", credential.name),
            Action::ClearPending { .. } => write!(f, "clear stale AWSPENDING label"),
            Action::Delete {
                credential, reason, ..
            } => write!(
                f,
                "delete {}{} ({})",
                credential.what.noun(),
                credential.name,
                reason.as_str()
            ),
            Action::Forget { name } => write!(f, "forget {name}: a version records it"),
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
    pub token: CredRef,
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

/// What the planner decided for one credential, of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub actions: Vec<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocker>,
    /// What AWSCURRENT references now, if it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<CredRef>,
    /// When the current credential falls due (`None` without one).
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

    pub fn blocked(blocker: Blocker) -> Plan {
        Plan {
            blocked: Some(blocker),
            ..Plan::empty()
        }
    }

    pub fn empty() -> Plan {
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

    /// While verification keeps failing, nothing that would send a new key to Grafana is
    /// tried before the backoff recorded on the secret has passed (`records.rs`).
    pub fn with_backoff(
        mut self,
        policy: &Policy,
        secret: Option<&SecretState>,
        now: DateTime<Utc>,
    ) -> Plan {
        if self.blocked.is_none() {
            let verifies = self.actions.iter().any(Action::verifies);
            if let Some(b) = verification_backoff(policy, secret, verifies, now) {
                self.actions.clear();
                self.blocked = Some(b);
            }
        }
        self
    }
}

pub(crate) fn std_to_chrono(d: std::time::Duration) -> ChronoDuration {
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
