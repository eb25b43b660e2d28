//! The service-account listings a long-running process remembers between passes, for the
//! workspaces whose accounts a token target selects by pattern (issue 18).
//!
//! Only a listing says which accounts `svc-*` matches, and listing each such workspace on every
//! pass was most of a steady pass's AMG calls (40 of 42 for 40 workspaces). The daemon keeps
//! each listing for the workspace's `audit_interval` — the first one a process makes for a
//! hash-chosen share of it, so a fleet listed together at start-up is not listed again in one
//! pass — and a pass in between selects from what it remembers.
//!
//! A remembered listing decides only two things: which credentials the pass takes up, and,
//! with the credential's audit record, that one whose record stands has nothing to do (the
//! same trust an exactly named account gets, `Deferred`). A credential whose record does not
//! stand (due, audited, changed) lists its workspace afresh, once a pass, before anything is
//! decided, and that fresh listing is remembered in its turn. So a remembered listing never
//! drives an action, and what it can hide is what it is named for: a new account a pattern
//! matches waits for the workspace's next listing, at most `audit_interval` (sooner when any
//! of the workspace's credentials is audited), and a deleted or disabled one for the same.
//!
//! Nothing here must survive a restart: a new process, and every `once`, starts with nothing
//! remembered and lists every workspace. A reload (SIGHUP) forgets everything, so a reload is
//! also how an operator makes the next pass list every workspace now. Holds nothing but what
//! ListWorkspaceServiceAccounts returns: no key, no token.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::WorkspaceAt;
use crate::credential::plan::{hash_share, std_to_chrono};
use crate::model::ServiceAccount;

/// A workspace's listing and the time until which it stands for a new one.
struct Listing {
    accounts: Box<[ServiceAccount]>,
    until: DateTime<Utc>,
}

/// What a process remembers, by workspace (in the scope it is reached through).
#[derive(Default)]
pub struct Listings {
    remembered: Mutex<HashMap<WorkspaceAt, Listing>>,
}

impl Listings {
    pub fn new() -> Listings {
        Listings::default()
    }

    /// The accounts listed for `at`, while the listing still stands at `now`.
    pub fn recall(&self, at: &WorkspaceAt, now: DateTime<Utc>) -> Option<Vec<ServiceAccount>> {
        let remembered = self.remembered.lock().expect("listings lock");
        let listing = remembered.get(at).filter(|l| now < l.until)?;
        Some(listing.accounts.to_vec())
    }

    /// Remembers a listing of `at` made at `now`, to stand for `interval` (the first one this
    /// process makes of the workspace: for its share of it). A zero interval remembers nothing.
    pub fn remember(
        &self,
        at: &WorkspaceAt,
        accounts: &[ServiceAccount],
        now: DateTime<Utc>,
        interval: Duration,
    ) {
        if interval.is_zero() {
            return;
        }
        let mut remembered = self.remembered.lock().expect("listings lock");
        let until = now + stands_for(remembered.contains_key(at), at, interval);
        remembered.insert(
            at.clone(),
            Listing {
                accounts: accounts.into(),
                until,
            },
        );
    }

    /// Forgets every workspace but `kept` (those a pattern still selects).
    pub fn retain(&self, kept: &BTreeSet<WorkspaceAt>) {
        let mut remembered = self.remembered.lock().expect("listings lock");
        remembered.retain(|at, _| kept.contains(at));
        remembered.shrink_to_fit();
    }

    /// Forgets everything: the next pass lists every workspace.
    pub fn forget_all(&self) {
        self.remembered.lock().expect("listings lock").clear();
    }
}

/// How long a listing stands: the whole interval, or, for the first listing of the workspace,
/// a share of it in `(0, interval]` chosen by a hash of the workspace, so the listings a
/// process makes at its start come due spread over the interval, not in one pass.
fn stands_for(
    listed_before: bool,
    (scope, id): &WorkspaceAt,
    interval: Duration,
) -> chrono::Duration {
    let interval = std_to_chrono(interval);
    if listed_before {
        return interval;
    }
    let ms = interval.num_milliseconds().max(1) as u64;
    let region = scope.0.as_deref().unwrap_or_default();
    let share = hash_share(&["amg-token-rotator-listing", region, id], ms);
    chrono::Duration::milliseconds((share + 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap()
    }

    fn at(id: &str) -> WorkspaceAt {
        ((Some("us-east-1".into()), None), id.into())
    }

    fn account(name: &str) -> ServiceAccount {
        ServiceAccount {
            id: format!("id-{name}"),
            name: name.into(),
            role: None,
            is_disabled: false,
        }
    }

    #[test]
    fn a_listing_stands_until_its_share_then_for_a_whole_interval() {
        let l = Listings::new();
        let ws = at("g-0000000001");
        assert_eq!(l.recall(&ws, now()), None, "nothing remembered yet");
        l.remember(&ws, &[account("svc-1")], now(), HOUR);
        let first = stands_for(false, &ws, HOUR);
        assert!(first > chrono::Duration::zero() && first <= std_to_chrono(HOUR));
        let names = |v: Option<Vec<ServiceAccount>>| {
            v.map(|v| v.into_iter().map(|a| a.name).collect::<Vec<_>>())
        };
        assert_eq!(
            names(l.recall(&ws, now() + first - chrono::Duration::milliseconds(1))),
            Some(vec!["svc-1".to_owned()])
        );
        assert_eq!(l.recall(&ws, now() + first), None, "its share has gone by");
        // Listed again: a whole interval from then.
        let later = now() + first;
        l.remember(&ws, &[account("svc-1"), account("svc-2")], later, HOUR);
        assert_eq!(
            names(l.recall(&ws, later + chrono::Duration::minutes(59))).map(|v| v.len()),
            Some(2)
        );
        assert_eq!(l.recall(&ws, later + chrono::Duration::minutes(60)), None);
    }

    #[test]
    fn first_listings_come_due_spread_over_the_interval() {
        // 400 workspaces listed at one start: no twelfth of the interval gets more than twice
        // its even share, and every twelfth gets some.
        let mut twelfths = [0usize; 12];
        for i in 0..400 {
            let share = stands_for(false, &at(&format!("g-{i:010}")), HOUR);
            let k = ((share.num_milliseconds() - 1) * 12 / 3_600_000) as usize;
            twelfths[k] += 1;
        }
        assert!(
            twelfths.iter().all(|&n| n > 0 && n < 2 * 400 / 12),
            "{twelfths:?}"
        );
    }

    #[test]
    fn zero_remembers_nothing_and_retain_and_forget_drop_listings() {
        let l = Listings::new();
        let (a, b) = (at("g-000000000a"), at("g-000000000b"));
        l.remember(&a, &[account("x")], now(), Duration::ZERO);
        assert_eq!(
            l.recall(&a, now()),
            None,
            "audit_interval 0s: list every pass"
        );
        l.remember(&a, &[account("x")], now(), HOUR);
        l.remember(&b, &[account("y")], now(), HOUR);
        // Ask just after: both first shares are at least a millisecond.
        let soon = now();
        assert!(l.recall(&a, soon).is_some() && l.recall(&b, soon).is_some());
        l.retain(&[b.clone()].into());
        assert_eq!(l.recall(&a, soon), None, "no longer selected by a pattern");
        assert!(l.recall(&b, soon).is_some());
        l.forget_all();
        assert_eq!(l.recall(&b, soon), None);
    }

    #[test]
    fn the_same_workspace_in_another_scope_is_another_listing() {
        let l = Listings::new();
        let here = at("g-0000000001");
        let there = ((Some("eu-west-1".into()), None), "g-0000000001".to_owned());
        l.remember(&here, &[account("x")], now(), HOUR);
        assert_eq!(l.recall(&there, now()), None);
    }
}
