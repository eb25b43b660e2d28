//! Passes in proportion to what is due (issue 18): a token credential's tokens are listed in
//! an audit, every `audit_interval`, or when something may be due; in between, the record of
//! its last clean audit (`records::Audit`, a tag the one DescribeSecret already returns) stands
//! for them.
//!
//! - A record is written only after a listing found the credential clean: the rotator's only
//!   token of that service account is the one AWSCURRENT holds, nothing is pending, superseded,
//!   left behind or backing off. It names that token (ID, name, AMG's expiry).
//! - A record stands for the tokens while AWSCURRENT is on the version it names, that version
//!   is the hash of the token it names (`token::holds`), no other label or backoff appeared,
//!   and its `next` audit has not come. The pass then plans over the recorded token alone;
//!   a plan that would do anything (the token falls due) is thrown away and the tokens are
//!   listed for real, so every action is decided on a listing.
//! - The executor removes the record before a plan's first step, so a pass that crashes
//!   half-way leaves no record hiding what it left behind.
//! - The first audit after a record was missing sets the next one a hash-chosen share of the
//!   interval later, so a fleet rotated together is not audited in the same pass ever after.
//!
//! What a record cannot see until the next audit: a token deleted behind the rotator's back (at
//! once with `liveness_checks`, which prove the current key to the workspace's Grafana at no
//! AMG cost), tokens made by hand in the service account, a foreign token's expiry. A deleted
//! or disabled service account, a moved label and a due token are seen on every pass.
//! Everything here is pure.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::plan::{hash_share, std_to_chrono, Plan};
use super::records::{Audit, VerifyBackoff, AUDIT_TAG};
use crate::config::Policy;
use crate::model::{SecretState, ServiceAccount, Token, AWSCURRENT, AWSPENDING};

/// What the pass knows of a credential's service account before it reads the secret.
#[derive(Debug, Clone, Copy)]
pub enum Known<'a> {
    /// Discovery listed the workspace's service accounts: this one, or `None` (missing).
    Listed(Option<&'a ServiceAccount>),
    /// Not listed (every target names its accounts exactly): only its name. A record stands
    /// for its ID too; without one the workspace is listed.
    Unlisted(&'a str),
}

/// The token a record stands for, and the service account it is of, and the account's tokens
/// by state as the audit saw them, when it may: see the module's rules. `None`: list.
pub fn trusted(
    policy: &Policy,
    workspace_id: &str,
    known: Known<'_>,
    secret: Option<&SecretState>,
    now: DateTime<Utc>,
) -> Option<(Token, ServiceAccount, [usize; 3])> {
    if policy.audit_interval.is_zero() {
        return None;
    }
    let secret = secret?;
    let record = Audit::from_tags(&secret.tags)?;
    let account = match known {
        Known::Listed(account) => account?.clone(),
        // What a listing said at the audit; a deleted or disabled account is seen at the next.
        Known::Unlisted(name) => ServiceAccount {
            id: record.account_id.clone(),
            name: name.to_owned(),
            role: None,
            is_disabled: false,
        },
    };
    let token = Token {
        id: record.token_id,
        name: record.token_name,
        created_at: record.expires_at - std_to_chrono(policy.token_ttl),
        expires_at: Some(record.expires_at),
        last_used_at: None,
    };
    let stands = record.next > now
        && !account.is_disabled
        && account.id == record.account_id
        && secret.version_with(AWSCURRENT) == Some(record.version.as_str())
        && super::token::holds(&record.version, workspace_id, &account.id, &token)
        && secret.version_with(AWSPENDING).is_none()
        && VerifyBackoff::from_tags(&secret.tags).is_none();
    stands.then_some((token, account, record.held))
}

/// What a pass that listed the tokens records, when the listing found the credential clean and
/// the record on the secret does not already say so. `None`: write nothing.
pub fn to_record(
    policy: &Policy,
    ids: (&str, &str),
    account: Option<&ServiceAccount>,
    tokens: &[Token],
    secret: Option<&SecretState>,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Option<Audit> {
    if policy.audit_interval.is_zero() || !quiet(plan) {
        return None;
    }
    let (secret, account) = (secret?, account?);
    let version = secret.version_with(AWSCURRENT)?;
    let current = plan.current.as_ref()?;
    let expires_at = current.expires_at?;
    let alone = tokens
        .iter()
        .all(|t| t.id == current.id || !super::token::owned_by_name(policy, t));
    if !alone
        || secret.version_with(AWSPENDING).is_some()
        || VerifyBackoff::from_tags(&secret.tags).is_some()
    {
        return None;
    }
    let before = Audit::from_tags(&secret.tags);
    let interval = std_to_chrono(policy.audit_interval);
    let next = match &before {
        Some(_) => now + interval,
        None => now + first_share(interval, ids),
    };
    let record = Audit {
        version: version.to_owned(),
        token_id: current.id.clone(),
        account_id: account.id.clone(),
        token_name: current.name.clone(),
        expires_at,
        next,
        held: held(tokens, now),
    };
    let unchanged = before.is_some_and(|b| {
        b.next > now
            && Audit {
                next: b.next,
                held: b.held,
                ..record.clone()
            } == b
    });
    (!unchanged).then_some(record)
}

/// The record a credential's first version carries, written with it (`execute::rotate`), so a
/// first run is also the credential's first audit: when the listing made right after the
/// create (for AMG's own times) shows the new token `new_id`, with its expiry, alone among the
/// rotator's tokens of the account. The version it names is the one the new token is published
/// as; it stands only once AWSCURRENT is on that version. `None`: the next pass lists and
/// records, as after any rotation.
pub fn of_first(
    policy: &Policy,
    ids: (&str, &str),
    account: &ServiceAccount,
    tokens: &[Token],
    new_id: &str,
    now: DateTime<Utc>,
) -> Option<Audit> {
    if policy.audit_interval.is_zero() {
        return None;
    }
    let new = tokens.iter().find(|t| t.id == new_id)?;
    let alone = tokens
        .iter()
        .all(|t| t.id == new_id || !super::token::owned_by_name(policy, t));
    if !alone {
        return None;
    }
    Some(Audit {
        version: super::token::version_id(ids.0, &account.id, &new.id, &new.name),
        token_id: new.id.clone(),
        account_id: account.id.clone(),
        token_name: new.name.clone(),
        expires_at: new.expires_at?,
        next: now + first_share(std_to_chrono(policy.audit_interval), ids),
        held: held(tokens, now),
    })
}

/// A service account's tokens by state: active, expired, with no expiry (the quota metrics).
pub fn held(tokens: &[Token], now: DateTime<Utc>) -> [usize; 3] {
    let expired = tokens.iter().filter(|t| t.expired(now)).count();
    let unknown = tokens.iter().filter(|t| t.expires_at.is_none()).count();
    [tokens.len() - expired - unknown, expired, unknown]
}

/// A plan with nothing to do, wait for or report: the only kind a listing records, and the only
/// kind a plan made over a record may be (otherwise the pass lists).
pub fn quiet(plan: &Plan) -> bool {
    plan.actions.is_empty()
        && plan.blocked.is_none()
        && plan.superseded.is_empty()
        && plan.left_behind.is_empty()
        && plan.migration.is_none()
}

/// The record's tag on `secret`, if it carries one (the executor removes it first).
pub fn carries_record(secret: Option<&SecretState>) -> bool {
    secret.is_some_and(|s| s.tags.contains_key(AUDIT_TAG))
}

/// A point in `(0, interval]` chosen by a hash of the credential: when the audit after a
/// missing record comes.
fn first_share(
    interval: ChronoDuration,
    (workspace_id, service_account): (&str, &str),
) -> ChronoDuration {
    let ms = interval.num_milliseconds().max(1) as u64;
    let share = hash_share(
        &["amg-token-rotator-audit", workspace_id, service_account],
        ms,
    );
    ChronoDuration::milliseconds((share + 1) as i64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::credential::plan::{CredRef, What};
    use crate::credential::records::Audit;
    use crate::credential::token::version_id;
    use crate::model::Role;

    const WS: &str = "g-1234567890";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap()
    }

    fn policy() -> Policy {
        let mut p = crate::credential::token::tests::policy();
        p.audit_interval = Duration::from_secs(3600);
        p
    }

    fn account() -> ServiceAccount {
        ServiceAccount {
            id: "7".into(),
            name: "ci".into(),
            role: Some(Role::Editor),
            is_disabled: false,
        }
    }

    fn token() -> Token {
        Token {
            id: "42".into(),
            name: "amgrot-ci-20261203T000000Z-0a1b2c3d".into(),
            created_at: now() - ChronoDuration::days(1),
            expires_at: Some(now() + ChronoDuration::days(29)),
            last_used_at: None,
        }
    }

    fn vid() -> String {
        let t = token();
        version_id(WS, "7", &t.id, &t.name)
    }

    fn record(next: DateTime<Utc>) -> Audit {
        let t = token();
        Audit {
            version: vid(),
            token_id: t.id,
            account_id: "7".into(),
            token_name: t.name,
            expires_at: t.expires_at.unwrap(),
            next,
            held: [1, 0, 0],
        }
    }

    fn secret(stages: &[(&str, &str)], tags: &[(&str, String)]) -> SecretState {
        let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (v, s) in stages {
            versions
                .entry(v.to_string())
                .or_default()
                .push(s.to_string());
        }
        SecretState {
            name: "grafana/ci".into(),
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:grafana/ci-AbCdEf".into(),
            versions,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            last_changed: Some(now() - ChronoDuration::days(1)),
            ..SecretState::default()
        }
    }

    fn recorded(next: DateTime<Utc>) -> SecretState {
        let v = vid();
        secret(
            &[(&v, AWSCURRENT)],
            &[(AUDIT_TAG, record(next).tag_value().unwrap())],
        )
    }

    /// What `trusted` makes of `s` for the listed `account()`, now.
    fn trust(s: &SecretState) -> Option<(Token, ServiceAccount, [usize; 3])> {
        trusted(
            &policy(),
            WS,
            Known::Listed(Some(&account())),
            Some(s),
            now(),
        )
    }

    /// What `to_record` makes of a listing of `tokens` for `secret` and `plan`, now.
    fn record_of(tokens: &[Token], secret: &SecretState, plan: &Plan) -> Option<Audit> {
        to_record(
            &policy(),
            (WS, "ci"),
            Some(&account()),
            tokens,
            Some(secret),
            plan,
            now(),
        )
    }

    fn clean_plan() -> Plan {
        let t = token();
        let mut p = Plan::empty();
        p.current = Some(CredRef {
            what: What::Token,
            id: t.id,
            name: t.name,
            expires_at: t.expires_at,
        });
        p
    }

    #[test]
    fn a_record_stands_for_the_token_the_label_holds_until_its_audit() {
        let s = recorded(now() + ChronoDuration::minutes(30));
        assert_eq!(trust(&s).map(|(t, _, _)| t.id), Some("42".into()));
        // The audit has come.
        let due = recorded(now());
        assert_eq!(trust(&due), None);
        // Audits every pass.
        let mut every = policy();
        every.audit_interval = Duration::ZERO;
        assert_eq!(
            trusted(&every, WS, Known::Listed(Some(&account())), Some(&s), now()),
            None
        );
    }

    #[test]
    fn a_record_stands_for_nothing_once_the_world_moved() {
        let next = now() + ChronoDuration::minutes(30);
        let tag = (AUDIT_TAG, record(next).tag_value().unwrap());
        let v = vid();
        let cases = [
            // AWSCURRENT moved to another version.
            (
                "label moved",
                secret(&[("amgr2-other", AWSCURRENT)], std::slice::from_ref(&tag)),
            ),
            // A pending version appeared (a rotation under way elsewhere).
            (
                "pending",
                secret(
                    &[(&v, AWSCURRENT), ("amgr2-p", AWSPENDING)],
                    std::slice::from_ref(&tag),
                ),
            ),
            // A verification is backing off.
            (
                "backoff",
                secret(
                    &[(&v, AWSCURRENT)],
                    &[
                        tag.clone(),
                        (
                            crate::credential::records::VERIFICATION_TAG,
                            "failures=1 at=1780000000 status=503".into(),
                        ),
                    ],
                ),
            ),
            // A record whose token is not the one the version holds (edited by hand).
            (
                "forged",
                secret(
                    &[(&v, AWSCURRENT)],
                    &[(
                        AUDIT_TAG,
                        Audit {
                            token_id: "43".into(),
                            ..record(next)
                        }
                        .tag_value()
                        .unwrap(),
                    )],
                ),
            ),
            ("no record", secret(&[(&v, AWSCURRENT)], &[])),
        ];
        for (what, s) in cases {
            assert_eq!(trust(&s), None, "{what}");
        }
        let s = recorded(next);
        // The service account was recreated (another ID) or disabled, or is gone.
        let other = ServiceAccount {
            id: "8".into(),
            ..account()
        };
        assert_eq!(
            trusted(&policy(), WS, Known::Listed(Some(&other)), Some(&s), now()),
            None
        );
        let disabled = ServiceAccount {
            is_disabled: true,
            ..account()
        };
        assert_eq!(
            trusted(
                &policy(),
                WS,
                Known::Listed(Some(&disabled)),
                Some(&s),
                now()
            ),
            None
        );
        assert_eq!(
            trusted(&policy(), WS, Known::Listed(None), Some(&s), now()),
            None
        );
        // Unlisted: the record stands for the account's ID too.
        let (_, a, held) = trusted(&policy(), WS, Known::Unlisted("ci"), Some(&s), now()).unwrap();
        assert_eq!(held, [1, 0, 0]);
        assert_eq!((a.id.as_str(), a.name.as_str()), ("7", "ci"));
        let old = recorded(now() - ChronoDuration::minutes(1));
        assert_eq!(
            trusted(&policy(), WS, Known::Unlisted("ci"), Some(&old), now()),
            None
        );
    }

    #[test]
    fn a_clean_listing_is_recorded_and_anything_else_is_not() {
        let v = vid();
        let bare = secret(&[(&v, AWSCURRENT)], &[]);
        let r = record_of(&[token()], &bare, &clean_plan()).unwrap();
        assert_eq!(
            (r.version.as_str(), r.token_id.as_str()),
            (v.as_str(), "42")
        );
        // The first record's audit comes within one interval, at a share chosen by the hash.
        assert!(
            r.next > now() && r.next <= now() + ChronoDuration::hours(1),
            "{r:?}"
        );
        // Audits on every pass record nothing.
        let mut every = policy();
        every.audit_interval = Duration::ZERO;
        assert_eq!(
            to_record(
                &every,
                (WS, "ci"),
                Some(&account()),
                &[token()],
                Some(&bare),
                &clean_plan(),
                now()
            ),
            None
        );
        // Another owned token is alive (superseded, an orphan): no record.
        let other = Token {
            id: "41".into(),
            name: "amgrot-ci-20261101T000000Z-0a1b2c3d".into(),
            ..token()
        };
        assert_eq!(record_of(&[other, token()], &bare, &clean_plan()), None);
        // A foreign token does not matter.
        let foreign = Token {
            id: "9".into(),
            name: "made-by-hand".into(),
            ..token()
        };
        assert!(record_of(&[foreign, token()], &bare, &clean_plan()).is_some());
        // Something to do: no record.
        let mut busy = clean_plan();
        busy.actions
            .push(crate::credential::plan::Action::CreateSecret);
        assert_eq!(record_of(&[token()], &bare, &busy), None);
    }

    #[test]
    fn a_standing_record_is_not_rewritten_and_an_old_one_moves_a_whole_interval() {
        let standing = recorded(now() + ChronoDuration::minutes(5));
        assert_eq!(record_of(&[token()], &standing, &clean_plan()), None);
        let old = recorded(now() - ChronoDuration::minutes(5));
        let r = record_of(&[token()], &old, &clean_plan()).unwrap();
        assert_eq!(r.next, now() + ChronoDuration::hours(1));
    }

    /// A fleet whose records all went missing together (one rotation) is audited next at
    /// shares spread over the interval, not all in one pass.
    #[test]
    fn first_audits_spread_over_the_interval() {
        let hour = ChronoDuration::hours(1);
        let mut buckets = [0usize; 12];
        for i in 0..1200 {
            let share = first_share(hour, (WS, &format!("svc-{i}")));
            assert!(share > ChronoDuration::zero() && share <= hour);
            buckets[(share.num_milliseconds() * 12 / (hour.num_milliseconds() + 1)) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|n| (60..=140).contains(n)),
            "{buckets:?}"
        );
    }

    /// A first run's record: made from the listing after the create, it names the version the
    /// new token is published as, and stands once AWSCURRENT is on it.
    #[test]
    fn a_first_version_carries_its_first_audit_when_the_new_token_is_alone() {
        let new = token();
        let hand_made = Token {
            id: "43".into(),
            name: "made-in-the-ui".into(),
            ..token()
        };
        let r = of_first(
            &policy(),
            (WS, "ci"),
            &account(),
            &[new.clone(), hand_made.clone()],
            &new.id,
            now(),
        )
        .expect("alone among the rotator's tokens");
        assert_eq!(r.version, vid());
        assert_eq!((r.token_id.as_str(), r.account_id.as_str()), ("42", "7"));
        assert_eq!(
            r.held,
            [2, 0, 0],
            "every token of the account counts for the quota"
        );
        assert!(r.next > now() && r.next <= now() + ChronoDuration::hours(1));
        let published = secret(
            &[(&vid(), AWSCURRENT)],
            &[(AUDIT_TAG, r.tag_value().unwrap())],
        );
        assert!(
            trust(&published).is_some(),
            "stands once AWSCURRENT holds the token"
        );
        let unpublished = secret(&[], &[(AUDIT_TAG, r.tag_value().unwrap())]);
        assert!(
            trust(&unpublished).is_none(),
            "a crash before the write leaves it standing for nothing"
        );

        // Another token of the rotator's (an orphan, a token left behind for another secret):
        // the next pass lists and decides.
        let other = Token {
            id: "44".into(),
            name: "amgrot-ci-20261101T000000Z-99999999".into(),
            ..token()
        };
        assert_eq!(
            of_first(
                &policy(),
                (WS, "ci"),
                &account(),
                &[new.clone(), other],
                &new.id,
                now()
            ),
            None
        );
        // The new token not listed yet, or listed without an expiry, or audits off: no record.
        assert_eq!(
            of_first(
                &policy(),
                (WS, "ci"),
                &account(),
                &[hand_made],
                &new.id,
                now()
            ),
            None
        );
        let endless = Token {
            expires_at: None,
            ..new.clone()
        };
        assert_eq!(
            of_first(
                &policy(),
                (WS, "ci"),
                &account(),
                &[endless],
                &new.id,
                now()
            ),
            None
        );
        let mut every_pass = policy();
        every_pass.audit_interval = Duration::ZERO;
        assert_eq!(
            of_first(
                &every_pass,
                (WS, "ci"),
                &account(),
                std::slice::from_ref(&new),
                &new.id,
                now()
            ),
            None
        );
    }
}
