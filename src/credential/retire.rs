//! When a superseded token goes: on evidence that its consumers have moved, within bounds.
//!
//! AMG reports each token's `lastUsedAt`. A superseded token is deleted once the grace period
//! (the minimum) has passed since the promotion and it has not been used for `quiet_period`
//! since then; while its consumers still use it, it is kept up to `max_overlap` after the
//! promotion, and never to within `expiry_margin` of its own expiry. Where the workspace gives
//! no evidence (no token of the service account used since the promotion: nobody has called
//! yet, or Grafana does not record use, as 10.1 and 10.2 did not: grafana/grafana#78375), time
//! alone decides: deleted after grace. API keys cannot be listed, so they retire by time alone.
//!
//! Pure: the planner hands it what was observed and `now`.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use crate::config::Policy;
use crate::credential::plan::{std_to_chrono, CredRef};
use crate::model::rfc3339;

/// A superseded token about to expire is deleted this long before it does, whatever its
/// consumers do: keeping it longer saves none of them, and deleting it is the rotator's
/// decision, reported, rather than an expiry nobody sees. An hour, or a quarter of
/// `rotate_before` when that is shorter (short-lived tokens).
pub fn expiry_margin(policy: &Policy) -> ChronoDuration {
    ChronoDuration::hours(1).min(std_to_chrono(policy.rotate_before / 4))
}

/// The rule that decided a superseded token's fate this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Kept: the grace period since the promotion is not over.
    Grace,
    /// Deleted after grace: no token of the service account was used since the promotion, so
    /// there is no evidence either way.
    NoUsageData,
    /// Not used for the quiet period since the promotion: its consumers have moved (deleted),
    /// or used within it: they have not (kept).
    Quiet,
    /// Still used, but kept for `max_overlap` since the promotion: deleted, its consumers
    /// must re-read the secret.
    MaxOverlap,
    /// Within `expiry_margin` of its own expiry: deleted.
    NearExpiry,
}

/// What the planner decided for one superseded token, for people (plan, logs) and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Superseded {
    pub token: CredRef,
    /// The secret it was superseded in (what its consumers must re-read).
    pub secret: String,
    pub promoted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    pub rule: Rule,
    pub delete: bool,
    /// Kept: when the next rule can decide (the end of grace, of the quiet period, or the
    /// maximum overlap), at the latest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The sentence people read, as of the pass.
    pub detail: String,
}

impl Superseded {
    /// Used after the promotion, and kept: its consumers have not moved.
    pub fn lagging(&self) -> bool {
        !self.delete && self.used_since_promotion()
    }

    fn used_since_promotion(&self) -> bool {
        self.last_used_at.is_some_and(|u| u > self.promoted_at)
    }
}

impl std::fmt::Display for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "superseded {}: {}", self.token.name, self.detail)
    }
}

/// Decides the fate of `token`, superseded in `secret` by the promotion at `promoted_at`.
/// `evidence`: some token of the service account was used after the promotion, so usage is
/// being recorded.
pub fn decide(
    policy: &Policy,
    token: CredRef,
    secret: &str,
    promoted_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    evidence: bool,
    now: DateTime<Utc>,
) -> Superseded {
    let grace_end = promoted_at + std_to_chrono(policy.grace_period);
    let margin = expiry_margin(policy);
    let mut deadline = promoted_at + std_to_chrono(policy.max_overlap);
    if let Some(e) = token.expires_at {
        deadline = deadline.min(e - margin);
    }
    // Quiet since the promotion, or since its last use after it.
    let quiet_from = last_used_at.map_or(promoted_at, |u| u.max(promoted_at));
    let quiet_end = quiet_from + std_to_chrono(policy.quiet_period);
    let used = last_used_at.filter(|u| *u > promoted_at);
    let ago = |u: DateTime<Utc>| ago(now, u);
    let (rule, delete, until, detail) = if now >= deadline {
        if let Some(e) = token.expires_at.filter(|e| now >= *e - margin) {
            let detail = format!("expires at {}: deleted before it does", rfc3339(e));
            (Rule::NearExpiry, true, None, detail)
        } else {
            let detail = match used {
                Some(u) => format!(
                    "last used {} ago, but kept max_overlap since the promotion: deleted; its consumers must re-read secret {secret}",
                    ago(u)
                ),
                None => "kept max_overlap since the promotion: deleted".to_owned(),
            };
            (Rule::MaxOverlap, true, None, detail)
        }
    } else if now < grace_end {
        let detail = format!("kept for its grace period, until {}", rfc3339(grace_end));
        (Rule::Grace, false, Some(grace_end.min(deadline)), detail)
    } else if !evidence {
        let detail = "no usage data since the promotion: deleted after grace".to_owned();
        (Rule::NoUsageData, true, None, detail)
    } else if now >= quiet_end {
        let detail = match used {
            Some(u) => format!("last used {} ago: consumers have moved, deleted", ago(u)),
            None => "not used since the promotion: consumers have moved, deleted".to_owned(),
        };
        (Rule::Quiet, true, None, detail)
    } else {
        let until = quiet_end.min(deadline);
        let detail = match used {
            Some(u) => format!(
                "last used {} ago: kept, consumers have not moved (until {} at the latest)",
                ago(u),
                rfc3339(until)
            ),
            None => format!(
                "not used since the promotion: kept for the quiet period, until {}",
                rfc3339(until)
            ),
        };
        (Rule::Quiet, false, Some(until), detail)
    };
    Superseded {
        token,
        secret: secret.to_owned(),
        promoted_at,
        last_used_at,
        rule,
        delete,
        until,
        detail,
    }
}

/// "4m 12s": how long before `now`, to the second.
fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::plan::What;

    const H: i64 = 3600;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_657_000 + s, 0).unwrap()
    }

    /// Grace 2h, quiet 2h, at most 3 days; promoted at 0; the token expires in 20 days.
    fn policy() -> Policy {
        let mut p = crate::config::testing::policy();
        p.grace_period = std::time::Duration::from_secs(2 * 3600);
        p.quiet_period = std::time::Duration::from_secs(2 * 3600);
        p.max_overlap = std::time::Duration::from_secs(3 * 86400);
        p
    }

    fn token(expires: i64) -> CredRef {
        CredRef {
            what: What::Token,
            id: "7".into(),
            name: "amgrot-sa-old".into(),
            expires_at: Some(at(expires)),
        }
    }

    fn fate(last_used: Option<i64>, evidence: bool, now: i64) -> Superseded {
        decide(
            &policy(),
            token(20 * 24 * H),
            "amg/ws/sa",
            at(0),
            last_used.map(at),
            evidence,
            at(now),
        )
    }

    #[test]
    fn the_grace_period_is_the_minimum_whatever_the_evidence() {
        for (last_used, evidence) in [(None, false), (Some(-H), true), (Some(60), true)] {
            let s = fate(last_used, evidence, 2 * H - 1);
            assert_eq!((s.rule, s.delete), (Rule::Grace, false), "{s:?}");
            assert_eq!(s.until, Some(at(2 * H)));
        }
    }

    #[test]
    fn without_usage_data_time_alone_decides() {
        let s = fate(None, false, 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::NoUsageData, true));
        assert!(s.detail.contains("no usage data"), "{}", s.detail);
        // A last use from before the promotion, and nothing since: no evidence either.
        let s = fate(Some(-60), false, 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::NoUsageData, true));
    }

    /// The hourly consumer: it moved 55 minutes after the promotion; the token goes two quiet
    /// hours after that last use, not at the end of grace.
    #[test]
    fn a_consumer_that_moved_lets_the_token_go_after_the_quiet_period() {
        let last = 55 * 60;
        let s = fate(Some(last), true, 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::Quiet, false), "{s:?}");
        assert_eq!(s.until, Some(at(last + 2 * H)));
        assert!(s.lagging());
        assert!(
            s.detail
                .starts_with("last used 1h 5m ago: kept, consumers have not moved"),
            "{}",
            s.detail
        );
        let s = fate(Some(last), true, last + 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::Quiet, true), "{s:?}");
        assert!(s.detail.contains("consumers have moved"), "{}", s.detail);
        assert!(!s.lagging());
    }

    #[test]
    fn a_token_unused_since_the_promotion_goes_when_quiet_and_graced() {
        // Others' use is the evidence; this one was last used before the promotion.
        let s = fate(Some(-H), true, 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::Quiet, true), "{s:?}");
        assert!(
            s.detail.starts_with("not used since the promotion"),
            "{}",
            s.detail
        );
        let s = fate(None, true, 2 * H);
        assert_eq!((s.rule, s.delete), (Rule::Quiet, true));
        assert!(!s.lagging());
    }

    #[test]
    fn a_consumer_that_never_moves_keeps_it_until_the_maximum_overlap() {
        let max = 3 * 24 * H;
        let s = fate(Some(max - 60), true, max - 1);
        assert_eq!((s.rule, s.delete), (Rule::Quiet, false), "{s:?}");
        assert_eq!(s.until, Some(at(max)), "never past the maximum");
        let s = fate(Some(max - 60), true, max);
        assert_eq!((s.rule, s.delete), (Rule::MaxOverlap, true), "{s:?}");
        assert!(
            s.detail.contains("must re-read secret amg/ws/sa"),
            "{}",
            s.detail
        );
    }

    #[test]
    fn a_token_near_its_expiry_goes_whatever_its_consumers_do() {
        let s = decide(
            &policy(),
            token(5 * H),
            "amg/ws/sa",
            at(0),
            Some(at(4 * H - 60)),
            true,
            at(4 * H),
        );
        assert_eq!((s.rule, s.delete), (Rule::NearExpiry, true), "{s:?}");
        // And before that, it is kept no later than an hour before it expires.
        let s = decide(
            &policy(),
            token(5 * H),
            "amg/ws/sa",
            at(0),
            Some(at(3 * H)),
            true,
            at(3 * H + 60),
        );
        assert_eq!(s.until, Some(at(4 * H)));
    }

    #[test]
    fn the_expiry_margin_is_an_hour_or_a_quarter_of_a_short_rotate_before() {
        assert_eq!(expiry_margin(&policy()), ChronoDuration::hours(1));
        let mut short = policy();
        short.rotate_before = std::time::Duration::from_secs(30 * 60);
        assert_eq!(expiry_margin(&short), ChronoDuration::seconds(450));
    }
}
