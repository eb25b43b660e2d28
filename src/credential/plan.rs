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
use crate::credential::records::{Promotion, VerifyBackoff};
use crate::credential::retire::Superseded;
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
    /// AWSCURRENT holds an API key, and the workspace now runs Grafana 12 or later, which has
    /// none: a service account's token takes its place in the same secret.
    ApiKeyMigration,
}

impl RotateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RotateReason::FirstRun => "first_run",
            RotateReason::Due => "due",
            RotateReason::Expired => "expired",
            RotateReason::MissingToken => "missing_token",
            RotateReason::Resumed => "resumed",
            RotateReason::ApiKeyMigration => "api_key_migration",
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
                "the workspace runs Grafana {grafana_version}, and API keys have been removed in Amazon Managed Grafana version 12: nothing is rotated, as migrate_api_keys = false asks; manage this credential as a service account and its tokens (service_accounts) instead of api_keys, or set migrate_api_keys = true"
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
    /// When AWSCURRENT's version was promoted, when the secret says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Promoted>,
    /// Superseded tokens still alive, and the rule that decided each one's fate this pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
    /// An API key's move to a service account on Grafana 12: happening (a token credential that
    /// took over a key's secret), or what an upgrade would do (a key on 9 or 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
}

/// When the version AWSCURRENT holds was promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    pub at: DateTime<Utc>,
    /// `false`: the rotator has no record of this promotion (a secret written by a version
    /// before records, or a record that could not be written): `at` is the secret's
    /// LastChangedDate, which Secrets Manager documents only as "modified in any way".
    pub recorded: bool,
}

/// The promotion of AWSCURRENT's version: the rotator's own record when it names that version,
/// else the secret's LastChangedDate.
pub fn promoted(secret: Option<&SecretState>) -> Option<Promoted> {
    let s = secret?;
    let current = s.version_with(AWSCURRENT)?;
    match Promotion::from_tags(&s.tags).filter(|p| p.version == current) {
        Some(p) => Some(Promoted {
            at: p.at,
            recorded: true,
        }),
        None => s.last_changed.map(|at| Promoted {
            at,
            recorded: false,
        }),
    }
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

    /// The plan as a report keeps it until the pass ends, boxed and with its lists sized to
    /// fit (an action is 136 bytes, and a list grows four at a time).
    /// Nothing a pass that acts prints of a plan: no token left behind or superseded, no
    /// migration (`report.rs`).
    pub fn nothing_to_print(&self) -> bool {
        self.left_behind.is_empty() && self.superseded.is_empty() && self.migration.is_none()
    }

    pub fn kept(mut self) -> Box<Plan> {
        self.actions.shrink_to_fit();
        self.notes.shrink_to_fit();
        self.left_behind.shrink_to_fit();
        self.superseded.shrink_to_fit();
        Box::new(self)
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
            promoted: None,
            superseded: Vec::new(),
            migration: None,
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
    ChronoDuration::milliseconds(hash_share(&[workspace_id, name], spread) as i64)
}

/// A deterministic point in `[0, span)` from a hash of `parts` (each followed by a NUL but the
/// last), spread evenly over the span: where in a window a credential falls.
pub fn hash_share(parts: &[&str], span: u64) -> u64 {
    let mut h = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(part.as_bytes());
    }
    let n = u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"));
    n % span.max(1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::metrics::Label;

    fn key(name: &str) -> CredRef {
        CredRef {
            what: What::ApiKey,
            id: name.into(),
            name: name.into(),
            expires_at: None,
        }
    }

    fn token(name: &str) -> CredRef {
        CredRef {
            what: What::Token,
            id: "7".into(),
            name: name.into(),
            expires_at: None,
        }
    }

    fn delete(credential: CredRef, reason: DeleteReason) -> Action {
        Action::Delete {
            credential,
            reason,
            drop_previous: None,
            only_record: false,
            forget: false,
        }
    }

    fn rotate(reason: RotateReason) -> Action {
        Action::Rotate {
            reason,
            replaces: None,
            to: None,
        }
    }

    /// The JSON name serde gives a reason: what `plan --format json` prints.
    fn json_name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A dashboard filters `amg_rotator_rotations_total{reason=...}` by the words `plan` prints:
    /// every metric label is the reason's JSON name, and no two reasons share one.
    #[test]
    fn reason_labels_are_the_names_plan_prints() {
        let rotate = [
            RotateReason::FirstRun,
            RotateReason::Due,
            RotateReason::Expired,
            RotateReason::MissingToken,
            RotateReason::Resumed,
            RotateReason::ApiKeyMigration,
        ];
        for r in rotate {
            assert_eq!(r.label(), json_name(r));
            assert_eq!(r.as_str(), r.label());
        }
        let delete = [
            DeleteReason::Superseded,
            DeleteReason::Orphan,
            DeleteReason::ExpiredOwned,
            DeleteReason::ExpiredForeign,
            DeleteReason::Recreate,
            DeleteReason::Rollback,
        ];
        for r in delete {
            assert_eq!(r.label(), json_name(r));
            assert_eq!(r.as_str(), r.label());
        }
        let mut all: Vec<&str> = rotate.iter().map(|r| r.as_str()).collect();
        all.extend(delete.iter().map(|r| r.as_str()));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "two reasons share a label: {all:?}");
    }

    /// The lines `plan` prints, one per action: what an operator reads before letting it run.
    #[test]
    fn actions_read_as_plan_lines() {
        let lines = [
            (
                Action::CreateServiceAccount { role: Role::Editor },
                "create service account with role EDITOR",
            ),
            (Action::CreateSecret, "create secret"),
            (rotate(RotateReason::FirstRun), "rotate (first_run)"),
            (
                Action::Rotate {
                    reason: RotateReason::Due,
                    replaces: Some(token("amgrot-sa-old")),
                    to: None,
                },
                "rotate (due) replacing amgrot-sa-old",
            ),
            (
                Action::Rotate {
                    reason: RotateReason::Expired,
                    replaces: Some(key("old-key")),
                    to: Some(key("new-key")),
                },
                "rotate (expired) to API key new-key",
            ),
            (
                Action::Recreate {
                    reason: RotateReason::MissingToken,
                    delete_first: vec![token("amgrot-sa-x")],
                },
                "recreate (missing_token)",
            ),
            (
                Action::Resume {
                    version_id: "v".into(),
                    credential: token("amgrot-sa-pending"),
                },
                "resume pending amgrot-sa-pending",
            ),
            (
                Action::ClearPending {
                    version_id: "v".into(),
                },
                "clear stale AWSPENDING label",
            ),
            (
                delete(token("amgrot-sa-old"), DeleteReason::Superseded),
                "delete amgrot-sa-old (superseded)",
            ),
            (
                delete(key("old-key"), DeleteReason::ExpiredForeign),
                "delete API key old-key (expired_foreign)",
            ),
            (
                Action::Forget { name: "k-2".into() },
                "forget k-2: a version records it",
            ),
        ];
        for (action, line) in lines {
            assert_eq!(action.to_string(), line);
        }
    }

    /// Which actions stop the rest of a plan when they fail (the rotation itself), which send a
    /// key to Grafana to prove it, and which a failed deletion of an only record may postpone.
    #[test]
    fn actions_know_what_they_are() {
        let pending = Action::Resume {
            version_id: "v".into(),
            credential: token("t"),
        };
        let recreate = Action::Recreate {
            reason: RotateReason::Due,
            delete_first: Vec::new(),
        };
        let clear = Action::ClearPending {
            version_id: "v".into(),
        };
        let forget = Action::Forget { name: "k".into() };
        let del = delete(token("t"), DeleteReason::Orphan);
        // (action, is_rotation, verifies, can_wait)
        let table = [
            (
                Action::CreateServiceAccount { role: Role::Admin },
                true,
                false,
                false,
            ),
            (Action::CreateSecret, true, false, false),
            (rotate(RotateReason::Due), true, true, true),
            (rotate(RotateReason::Expired), true, true, false),
            (rotate(RotateReason::FirstRun), true, true, false),
            (rotate(RotateReason::MissingToken), true, true, false),
            (recreate, true, true, false),
            (pending, true, true, true),
            (clear, false, false, false),
            (del, false, false, false),
            (forget, false, false, false),
        ];
        for (action, rotation, verifies, can_wait) in table {
            assert_eq!(action.is_rotation(), rotation, "is_rotation: {action}");
            assert_eq!(action.verifies(), verifies, "verifies: {action}");
            assert_eq!(action.can_wait(), can_wait, "can_wait: {action}");
        }
    }

    /// A plan with nothing to do and nothing in the way is a no-op; a blocked one is not (it
    /// is reported), nor is one with actions.
    #[test]
    fn only_an_empty_unblocked_plan_is_a_noop() {
        assert!(Plan::empty().is_noop());
        assert!(!Plan::blocked(Blocker::RotationEnabled).is_noop());
        let mut p = Plan::empty();
        p.actions.push(Action::CreateSecret);
        assert!(!p.is_noop());
        p.notes.push("a note is not an action".into());
        p.actions.clear();
        assert!(p.is_noop());
    }

    /// A blocker is reported, never acted on: its text names what was found and what to do.
    #[test]
    fn blockers_say_what_is_in_the_way_and_what_to_do() {
        let at = "2026-11-22T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let cases = [
            (Blocker::ServiceAccountMissing, vec!["does not exist"]),
            (Blocker::ServiceAccountDisabled, vec!["disabled"]),
            (
                Blocker::ForeignSecret {
                    version_id: "v-1".into(),
                },
                vec!["AWSCURRENT version v-1", "secret_name"],
            ),
            (
                Blocker::ForeignPending {
                    version_id: "v-2".into(),
                },
                vec!["AWSPENDING version v-2", "secret_name"],
            ),
            (Blocker::RotationEnabled, vec!["CancelRotateSecret"]),
            (Blocker::SecretScheduledForDeletion, vec!["restore it"]),
            (
                Blocker::VerificationBackoff {
                    failures: 3,
                    last_answer: "HTTP 401".into(),
                    next_attempt: at,
                },
                vec![
                    "failed 3 time(s)",
                    "HTTP 401",
                    "2026-11-22T12:00:00Z",
                    "verify = false",
                ],
            ),
            (
                Blocker::ApiKeysRemoved {
                    grafana_version: "12.4".into(),
                },
                vec!["Grafana 12.4", "service_accounts"],
            ),
        ];
        for (blocker, words) in cases {
            let text = blocker.to_string();
            for w in words {
                assert!(text.contains(w), "{w:?} not in {text:?}");
            }
        }
    }

    /// What a renamed secret left behind names the secret it was minted for, when known.
    #[test]
    fn left_behind_tokens_name_their_secret() {
        let t = CredRef {
            expires_at: Some("2026-12-01T00:00:00Z".parse().unwrap()),
            ..token("amgrot-sa-x-0123abcd")
        };
        let line = |mark: Option<&str>, secret: Option<&str>| {
            LeftBehind {
                token: t.clone(),
                mark: mark.map(str::to_owned),
                secret: secret.map(str::to_owned),
            }
            .to_string()
        };
        let known = line(Some("0123abcd"), Some("a/ws/sa"));
        assert!(known.starts_with("amgrot-sa-x-0123abcd is minted for secret a/ws/sa;"));
        assert!(known.contains("kept until it expires (2026-12-01T00:00:00Z)"));
        assert!(line(Some("0123abcd"), None).contains("mark 0123abcd"));
        assert!(line(None, None).contains("any secret may hold it"));
    }

    /// A failed verification holds back the next attempt until exactly its recorded time.
    #[test]
    fn verification_waits_until_the_next_attempt_and_no_longer() {
        let mut policy = crate::config::testing::policy();
        policy.verify = true;
        let at = "2026-11-22T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let record = VerifyBackoff {
            failures: 1,
            at,
            status: Some(503),
        };
        let secret = SecretState {
            tags: [(
                crate::credential::records::VERIFICATION_TAG.to_owned(),
                record.tag_value(),
            )]
            .into(),
            ..SecretState::default()
        };
        let next = record.next_attempt();
        let blocked = |now| verification_backoff(&policy, Some(&secret), true, now);
        assert!(matches!(
            blocked(next - ChronoDuration::seconds(1)),
            Some(Blocker::VerificationBackoff { failures: 1, .. })
        ));
        assert_eq!(blocked(next), None);
        // Nothing to verify, or verification off: no wait.
        assert_eq!(
            verification_backoff(
                &policy,
                Some(&secret),
                false,
                next - ChronoDuration::seconds(1)
            ),
            None
        );
    }
}
