//! What the rotator records on the secret itself, as tags, because it keeps no state of its
//! own and separate `once` processes must agree: when it promoted the current version, the
//! verification backoff, and the API keys it made but could not show were published.
//!
//! Tags, not versions: a tag write is not a PutSecretValue, so it adds no secret version (real
//! Secrets Manager keeps every version younger than 24 hours and refuses more past its limit).
//! Values use only the characters Secrets Manager allows in a tag value (letters, digits,
//! spaces and `_ . : / = + - @`). Parsing is pure and lenient: a value the rotator cannot
//! read is treated as absent, so a hand-edited tag never blocks a credential. Nothing here
//! holds a key.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

/// Consecutive verification failures: `failures=N at=EPOCH status=503|unreachable`.
pub const VERIFICATION_TAG: &str = "amg-token-rotator:verification";
/// API-key generations that were created but that no version recorded when seen:
/// `GEN@EPOCH GEN@EPOCH`.
pub const UNPUBLISHED_KEYS_TAG: &str = "amg-token-rotator:unpublished-keys";

/// When the rotator promoted a version: `version=VERSION_ID at=EPOCH`. Written just before the
/// label moves, so a crash between the two leaves a record of a version that is not current
/// (ignored; the pass that finishes the promotion writes it again) and never one that makes a
/// promotion look older than it is.
pub const PROMOTED_TAG: &str = "amg-token-rotator:promoted";

/// What the last audit of a token credential saw, when it was clean (only the current token
/// left of the rotator's, nothing pending, nothing to retire): `version=VERSION_ID token=ID
/// account=SERVICE_ACCOUNT_ID expires=EPOCH next=EPOCH held=ACTIVE.EXPIRED.NO_EXPIRY
/// name=TOKEN_NAME` (`held`: the account's tokens by state, for the quota metrics). While AWSCURRENT stays on `version` and `next` has
/// not come, a pass trusts it instead of listing the tokens (issue 18): the version ID is a hash
/// of the token's ID and name, so a record can only stand for the token the label holds.
/// Removed before any step that changes the credential, so a crash mid-rotation never leaves a
/// record that hides what the crash left behind.
pub const AUDIT_TAG: &str = "amg-token-rotator:audited";

/// The first wait after a failed verification; each further failure doubles it.
pub const BACKOFF_BASE: Duration = Duration::minutes(5);
/// The longest wait between two attempts: with `rotate_before` at its 7-day default, a
/// credential whose verification keeps failing is still tried about 28 times before expiry.
pub const BACKOFF_MAX: Duration = Duration::hours(6);

/// Verification of new keys failed `failures` times in a row, the last at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyBackoff {
    pub failures: u32,
    pub at: DateTime<Utc>,
    /// The HTTP status of the last answer; `None` when Grafana could not be reached.
    pub status: Option<u16>,
}

impl VerifyBackoff {
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<VerifyBackoff> {
        let value = tags.get(VERIFICATION_TAG)?;
        let mut failures = None;
        let mut at = None;
        let mut status = None;
        for part in value.split_whitespace() {
            match part.split_once('=')? {
                ("failures", n) => failures = n.parse::<u32>().ok().filter(|n| *n > 0),
                ("at", t) => at = DateTime::from_timestamp(t.parse().ok()?, 0),
                ("status", "unreachable") => status = None,
                ("status", s) => status = Some(s.parse().ok()?),
                _ => {}
            }
        }
        Some(VerifyBackoff {
            failures: failures?,
            at: at?,
            status,
        })
    }

    /// The record after one more failure at `now`.
    pub fn after(previous: Option<VerifyBackoff>, now: DateTime<Utc>, status: Option<u16>) -> Self {
        VerifyBackoff {
            failures: previous.map_or(0, |p| p.failures).saturating_add(1),
            at: now,
            status,
        }
    }

    /// When the next attempt may be made: 5 minutes after the first failure, doubling, at
    /// most 6 hours.
    pub fn next_attempt(&self) -> DateTime<Utc> {
        let doublings = self.failures.saturating_sub(1).min(16);
        let wait = BACKOFF_BASE
            .checked_mul(1 << doublings)
            .unwrap_or(BACKOFF_MAX)
            .min(BACKOFF_MAX);
        self.at + wait
    }

    pub fn tag_value(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
        format!(
            "failures={} at={} status={status}",
            self.failures,
            self.at.timestamp()
        )
    }

    /// For people: what failed last.
    pub fn last_answer(&self) -> String {
        match self.status {
            Some(s) => format!("HTTP {s}"),
            None => "no answer".to_owned(),
        }
    }
}

/// The rotator's record of a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub version: String,
    pub at: DateTime<Utc>,
}

impl Promotion {
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Promotion> {
        let value = tags.get(PROMOTED_TAG)?;
        let (mut version, mut at) = (None, None);
        for part in value.split_whitespace() {
            match part.split_once('=')? {
                ("version", v) if !v.is_empty() => version = Some(v.to_owned()),
                ("at", t) => at = DateTime::from_timestamp(t.parse().ok()?, 0),
                _ => {}
            }
        }
        Some(Promotion {
            version: version?,
            at: at?,
        })
    }

    pub fn tag_value(&self) -> String {
        format!("version={} at={}", self.version, self.at.timestamp())
    }
}

/// The rotator's record of a clean audit of a token credential (`AUDIT_TAG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The version AWSCURRENT was on.
    pub version: String,
    /// The token that version holds: AMG's ID, name and expiry, and its service account's ID.
    pub token_id: String,
    pub account_id: String,
    pub token_name: String,
    pub expires_at: DateTime<Utc>,
    /// When the next audit is due.
    pub next: DateTime<Utc>,
    /// The service account's tokens the audit saw: active, expired, with no expiry.
    pub held: [usize; 3],
}

impl Audit {
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Audit> {
        let value = tags.get(AUDIT_TAG)?;
        let (mut version, mut token_id, mut account_id, mut expires_at, mut next, mut token_name) =
            (None, None, None, None, None, None);
        let mut held = None;
        for part in value.split(' ') {
            match part.split_once('=')? {
                ("version", v) if !v.is_empty() => version = Some(v.to_owned()),
                ("token", v) if !v.is_empty() => token_id = Some(v.to_owned()),
                ("account", v) if !v.is_empty() => account_id = Some(v.to_owned()),
                ("expires", t) => expires_at = DateTime::from_timestamp(t.parse().ok()?, 0),
                ("next", t) => next = DateTime::from_timestamp(t.parse().ok()?, 0),
                ("name", v) if !v.is_empty() => token_name = Some(v.to_owned()),
                ("held", v) => {
                    let n: Vec<usize> = v
                        .split('.')
                        .map(|n| n.parse().ok())
                        .collect::<Option<_>>()?;
                    held = <[usize; 3]>::try_from(n).ok();
                }
                _ => {}
            }
        }
        Some(Audit {
            version: version?,
            token_id: token_id?,
            account_id: account_id?,
            token_name: token_name?,
            expires_at: expires_at?,
            next: next?,
            held: held?,
        })
    }

    /// The tag value, or `None` when the record cannot be one: a field holds a space or a
    /// character a tag value may not, or the whole is longer than a tag value's 256 characters.
    /// Such a credential is then audited on every pass, as before records.
    pub fn tag_value(&self) -> Option<String> {
        let fits = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || "_.:/=+-@".contains(c))
        };
        if ![
            &self.version,
            &self.token_id,
            &self.account_id,
            &self.token_name,
        ]
        .iter()
        .all(|s| fits(s))
        {
            return None;
        }
        let value = format!(
            "version={} token={} account={} expires={} next={} held={}.{}.{} name={}",
            self.version,
            self.token_id,
            self.account_id,
            self.expires_at.timestamp(),
            self.next.timestamp(),
            self.held[0],
            self.held[1],
            self.held[2],
            self.token_name
        );
        (value.chars().count() <= 256).then_some(value)
    }
}

/// An API key generation created but not recorded by any version when last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unpublished {
    pub generation: u64,
    pub seen_at: DateTime<Utc>,
}

pub fn unpublished_keys(tags: &BTreeMap<String, String>) -> Vec<Unpublished> {
    let Some(value) = tags.get(UNPUBLISHED_KEYS_TAG) else {
        return Vec::new();
    };
    let mut out: Vec<Unpublished> = value
        .split_whitespace()
        .filter_map(|part| {
            let (generation, at) = part.split_once('@')?;
            Some(Unpublished {
                generation: generation.parse().ok()?,
                seen_at: DateTime::from_timestamp(at.parse().ok()?, 0)?,
            })
        })
        .collect();
    out.sort();
    out.dedup_by_key(|u| u.generation);
    out
}

/// The tag value for `list`, or `None` when it is empty (the tag is removed). A tag value is
/// at most 256 characters: the oldest entries give way, which at worst leaves a key alive
/// until it expires (it is never deleted without a record).
pub fn unpublished_value(list: &[Unpublished]) -> Option<String> {
    let mut parts: Vec<String> = list
        .iter()
        .map(|u| format!("{}@{}", u.generation, u.seen_at.timestamp()))
        .collect();
    while parts.join(" ").len() > 256 {
        parts.remove(0);
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_657_000 + s, 0).unwrap()
    }

    fn tags(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_owned(), v.to_owned())])
    }

    #[test]
    fn backoff_round_trips_and_doubles_to_a_ceiling() {
        let first = VerifyBackoff::after(None, at(0), Some(503));
        assert_eq!(first.failures, 1);
        let read = VerifyBackoff::from_tags(&tags(VERIFICATION_TAG, &first.tag_value())).unwrap();
        assert_eq!(read, first);
        assert_eq!(first.next_attempt(), at(300));
        let third = VerifyBackoff::after(
            Some(VerifyBackoff::after(Some(first), at(0), None)),
            at(0),
            None,
        );
        assert_eq!(third.failures, 3);
        assert_eq!(third.next_attempt(), at(1200));
        assert_eq!(third.last_answer(), "no answer");
        let many = VerifyBackoff {
            failures: 40,
            ..third
        };
        assert_eq!(many.next_attempt(), at(6 * 3600));
        assert!(tags(VERIFICATION_TAG, &many.tag_value()).values().all(|v| v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " =".contains(c))));
    }

    #[test]
    fn unreadable_records_are_absent() {
        for v in ["", "failures=x at=1", "failures=0 at=1", "at=1", "junk"] {
            assert_eq!(
                VerifyBackoff::from_tags(&tags(VERIFICATION_TAG, v)),
                None,
                "{v}"
            );
        }
        assert_eq!(VerifyBackoff::from_tags(&BTreeMap::new()), None);
        assert!(unpublished_keys(&tags(UNPUBLISHED_KEYS_TAG, "x@1 3@y")).is_empty());
    }

    #[test]
    fn unpublished_keys_round_trip_sorted_and_bounded() {
        let list = vec![
            Unpublished {
                generation: 7,
                seen_at: at(60),
            },
            Unpublished {
                generation: 5,
                seen_at: at(0),
            },
        ];
        let value = unpublished_value(&list).unwrap();
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(
            unpublished_keys(&tags(UNPUBLISHED_KEYS_TAG, &value)),
            sorted
        );
        assert_eq!(unpublished_value(&[]), None);
        let long: Vec<Unpublished> = (0..100)
            .map(|g| Unpublished {
                generation: 1_000_000 + g,
                seen_at: at(g as i64),
            })
            .collect();
        let v = unpublished_value(&long).unwrap();
        assert!(v.len() <= 256);
        assert!(v.ends_with(&format!("1000099@{}", at(99).timestamp())));
    }

    /// A tag value holds at most 256 characters: a list of exactly that length is kept whole,
    /// one character more and the oldest entry gives way.
    #[test]
    fn unpublished_keys_fill_a_tag_value_exactly() {
        let list = |first: u64| -> Vec<Unpublished> {
            std::iter::once(first)
                .chain(std::iter::repeat_n(5, 18))
                .map(|generation| Unpublished {
                    generation,
                    seen_at: at(0),
                })
                .collect()
        };
        // 11 + 11 characters, then 18 of 1 + 11, and 18 spaces: 256.
        let full = unpublished_value(&list(10_000_000_000)).unwrap();
        assert_eq!(full.len(), 256);
        assert!(full.starts_with("10000000000@"), "{full}");
        let over = unpublished_value(&list(100_000_000_000)).unwrap();
        assert_eq!(over.split(' ').count(), 18);
        assert!(!over.contains("100000000000@"), "{over}");
    }

    fn audit() -> Audit {
        Audit {
            version: format!("amgr2-{}", "0".repeat(40)),
            token_id: "17".into(),
            account_id: "3".into(),
            token_name: "amg-rotator-ci-20261203T010203Z-0a1b2c3d".into(),
            expires_at: at(30 * 86_400),
            next: at(3600),
            held: [2, 1, 0],
        }
    }

    #[test]
    fn audits_round_trip_and_a_bad_record_is_absent() {
        let a = audit();
        let value = a.tag_value().unwrap();
        assert_eq!(Audit::from_tags(&tags(AUDIT_TAG, &value)), Some(a.clone()));
        // Each field is needed; a damaged one makes the whole record absent.
        for field in [
            "version=", "token=", "account=", "expires=", "next=", "held=", "name=",
        ] {
            let without: Vec<&str> = value.split(' ').filter(|p| !p.starts_with(field)).collect();
            assert_eq!(
                Audit::from_tags(&tags(AUDIT_TAG, &without.join(" "))),
                None,
                "{field}"
            );
        }
        for v in [
            "",
            "junk",
            &value.replace("expires=", "expires=x"),
            &value.replace("held=2.1.0", "held=2.1"),
        ] {
            assert_eq!(Audit::from_tags(&tags(AUDIT_TAG, v)), None, "{v}");
        }
    }

    /// A token name a tag value cannot hold (a space, a character outside its set, too long)
    /// makes no record rather than a wrong one.
    #[test]
    fn an_audit_a_tag_cannot_hold_is_not_written() {
        for name in ["with space", "semi;colon", &"n".repeat(200)] {
            let a = Audit {
                token_name: name.to_owned(),
                ..audit()
            };
            assert_eq!(a.tag_value(), None, "{name}");
        }
        let longest = Audit {
            token_name: "n".repeat(128),
            ..audit()
        };
        assert!(longest.tag_value().unwrap().len() <= 256);
    }

    #[test]
    fn promotions_round_trip_and_a_bad_record_is_absent() {
        let p = Promotion {
            version: "amgr2-0123456789abcdef".into(),
            at: at(42),
        };
        let value = p.tag_value();
        assert_eq!(Promotion::from_tags(&tags(PROMOTED_TAG, &value)), Some(p));
        assert!(value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " =-".contains(c)));
        for v in ["", "version= at=1", "version=v", "at=1", "version=v at=x"] {
            assert_eq!(Promotion::from_tags(&tags(PROMOTED_TAG, v)), None, "{v}");
        }
    }
}
