//! How a target's credentials are rotated: the strategy, and the timings that must nest inside
//! one another (grace period ≤ maximum overlap < rotate-before window < token lifetime ≤ AMG's
//! 30 days; quiet period < maximum overlap), checked against how far apart the daemon's passes
//! can be.

use std::time::Duration;

use super::check::{quote, show, Checker};
use crate::config::load::RawScope;
use crate::config::{Strategy, MAX_TOKEN_TTL};

/// The durations of a target's `Policy`.
pub(super) struct Timings {
    pub(super) token_ttl: Duration,
    pub(super) rotate_before: Duration,
    pub(super) rotation_spread: Duration,
    pub(super) grace_period: Duration,
    pub(super) quiet_period: Duration,
    pub(super) max_overlap: Duration,
    pub(super) orphan_margin: Duration,
    pub(super) audit_interval: Duration,
}

/// Grafana records a token's use at most every 5 minutes (since Grafana 11.3, grafana/grafana
/// PR 92598): a quiet period shorter than twice that can take the gap for silence.
const SHORTEST_SAFE_QUIET: Duration = Duration::from_secs(600);
const DEFAULT_GRACE: Duration = Duration::from_secs(2 * 3600);
const DEFAULT_MAX_OVERLAP: Duration = Duration::from_secs(3 * 86400);

pub(super) fn strategy(c: &mut Checker, at: &str, s: &RawScope) -> Strategy {
    let strategy_text = s.strategy.clone().unwrap_or_else(|| "overlap".into());
    match strategy_text.as_str() {
        "overlap" => Strategy::Overlap,
        "recreate" => Strategy::Recreate,
        _ => {
            c.fail(
                format!("{at}.strategy"),
                quote(&strategy_text),
                "must be \"overlap\" or \"recreate\"",
            );
            Strategy::Overlap
        }
    }
}

pub(super) fn timings(c: &mut Checker, at: &str, s: &RawScope) -> Timings {
    let key = |k: &str| format!("{at}.{k}");
    let token_ttl = c.duration(&key("token_ttl"), s.token_ttl.as_deref(), "30d");
    let rotate_before = c.duration(&key("rotate_before"), s.rotate_before.as_deref(), "7d");
    // A key set, or the default derived from what it must fit in.
    let mut or = |k: &str, raw: &Option<String>, derived: Duration| match raw.as_deref() {
        Some(text) => c.duration(&key(k), Some(text), "0s"),
        None => derived,
    };
    // An hourly consumer (External Secrets Operator's default refresh) moves within the hour:
    // two hours of grace keep it working where AMG gives no usage data, as many quiet hours
    // (the quiet period defaults to the grace period) tell a consumer that moved from one that
    // uses the token rarely, and three days bound how long one that never re-reads (a key in
    // an environment variable) holds a second token. Each shrinks to fit a short rotate-before
    // window.
    let grace_period = or(
        "grace_period",
        &s.grace_period,
        DEFAULT_GRACE.min(rotate_before / 2),
    );
    let max_overlap = or(
        "max_overlap",
        &s.max_overlap,
        grace_period.max(DEFAULT_MAX_OVERLAP.min(rotate_before / 2)),
    );
    let quiet_period = or(
        "quiet_period",
        &s.quiet_period,
        grace_period.min(max_overlap),
    );
    // Default: a quarter of the rotate-before window, and never so much that a new token is due
    // as soon as it is made.
    let rotation_spread = match s.rotation_spread.as_deref() {
        Some(text) => c.duration(&key("rotation_spread"), Some(text), "0s"),
        None => (rotate_before / 4).min(token_ttl.saturating_sub(rotate_before) / 2),
    };
    if s.rotation_spread.is_some() && rotate_before + rotation_spread >= token_ttl {
        c.fail(
            key("rotation_spread"),
            quote(&show(rotation_spread)),
            format!(
                "rotate_before + rotation_spread must be shorter than token_ttl ({}), or new tokens would be due at once",
                show(token_ttl)
            ),
        );
    }
    let orphan_margin = c.duration(&key("orphan_margin"), s.orphan_margin.as_deref(), "15m");
    // Default: four hours, shrunk to fit a short rotate-before window.
    let audit_interval = match s.audit_interval.as_deref() {
        Some(text) => c.duration(&key("audit_interval"), Some(text), "0s"),
        None => crate::config::DEFAULT_AUDIT_INTERVAL.min(rotate_before / 2),
    };
    if audit_interval > rotate_before {
        c.fail(
            key("audit_interval"),
            quote(&show(audit_interval)),
            format!(
                "must not be longer than rotate_before ({}): every token is audited at least once before it falls due",
                show(rotate_before)
            ),
        );
    }
    let timings = Timings {
        token_ttl,
        rotate_before,
        rotation_spread,
        grace_period,
        quiet_period,
        max_overlap,
        orphan_margin,
        audit_interval,
    };
    check_windows(c, at, s, &timings);
    timings
}

/// The token's lifetime within AMG's bounds, and each window shorter than the one it sits in.
fn check_windows(c: &mut Checker, at: &str, s: &RawScope, t: &Timings) {
    let key = |k: &str| format!("{at}.{k}");
    let ttl_text = s.token_ttl.clone().unwrap_or_else(|| "30d".into());
    if t.token_ttl > MAX_TOKEN_TTL {
        c.fail(
            key("token_ttl"),
            quote(&ttl_text),
            "AMG tokens live at most 30 days (secondsToLive 2592000)",
        );
    } else if t.token_ttl < Duration::from_secs(1) {
        c.fail(
            key("token_ttl"),
            quote(&ttl_text),
            "must be at least one second",
        );
    }
    if t.rotate_before >= t.token_ttl {
        c.fail(
            key("rotate_before"),
            quote(&show(t.rotate_before)),
            format!("must be shorter than token_ttl ({}), or every token would be due as soon as it is made", show(t.token_ttl)),
        );
    }
    if t.grace_period >= t.rotate_before {
        c.fail(
            key("grace_period"),
            quote(&show(t.grace_period)),
            format!("must be shorter than rotate_before ({}), so the old token is deleted before it expires", show(t.rotate_before)),
        );
    } else if t.grace_period > t.max_overlap {
        c.fail(
            key("grace_period"),
            quote(&show(t.grace_period)),
            format!(
                "must not be longer than max_overlap ({}), the longest a superseded token is kept",
                show(t.max_overlap)
            ),
        );
    }
    if t.max_overlap >= t.rotate_before {
        c.fail(
            key("max_overlap"),
            quote(&show(t.max_overlap)),
            format!("must be shorter than rotate_before ({}), so a superseded token is gone before its successor falls due", show(t.rotate_before)),
        );
    }
    if t.quiet_period > t.max_overlap {
        c.fail(
            key("quiet_period"),
            quote(&show(t.quiet_period)),
            format!("must not be longer than max_overlap ({}), or consumers' silence would never decide", show(t.max_overlap)),
        );
    } else if s.quiet_period.is_some() && t.quiet_period < SHORTEST_SAFE_QUIET {
        c.warn(
            key("quiet_period"),
            quote(&show(t.quiet_period)),
            "is shorter than 10m: Grafana records a token's use at most every 5 minutes, so a consumer still using the superseded token can look quiet",
        );
    }
}

/// A warning, not a problem: passes further apart than the rotate-before window can let a token
/// expire unrotated. `pass_gap` is the schedule's longest gap (`daemon::longest_gap`).
pub(super) fn warn_if_passes_too_sparse(
    c: &mut Checker,
    at: &str,
    pass_gap: Option<Duration>,
    rotate_before: Duration,
) {
    if let Some(gap) = pass_gap.filter(|gap| *gap >= rotate_before) {
        c.warn(
            "daemon.schedule",
            "",
            format!(
                "passes can be {} apart, but {at} rotates {} before expiry: a token can pass its whole rotate-before window between two passes",
                show(gap),
                show(rotate_before)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::{has, load_str, problems, MINIMAL};

    #[test]
    fn window_ordering_is_enforced() {
        let p = problems(&format!(
            "{MINIMAL}token_ttl = \"1d\"\nrotate_before = \"2d\"\n"
        ));
        assert!(
            has(&p, "targets[0].rotate_before", "shorter than token_ttl"),
            "{p:?}"
        );
        let p = problems(&format!("{MINIMAL}grace_period = \"8d\"\n"));
        assert!(
            has(&p, "targets[0].grace_period", "shorter than rotate_before"),
            "{p:?}"
        );
    }

    #[test]
    fn retirement_windows_nest_inside_rotate_before() {
        let p = problems(&format!("{MINIMAL}max_overlap = \"7d\"\n"));
        assert!(
            has(&p, "targets[0].max_overlap", "shorter than rotate_before"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{MINIMAL}grace_period = \"5h\"\nmax_overlap = \"4h\"\n"
        ));
        assert!(
            has(
                &p,
                "targets[0].grace_period",
                "not be longer than max_overlap"
            ),
            "{p:?}"
        );
        let p = problems(&format!("{MINIMAL}quiet_period = \"4d\"\n"));
        assert!(
            has(
                &p,
                "targets[0].quiet_period",
                "not be longer than max_overlap"
            ),
            "{p:?}"
        );
        let cfg = load_str(&format!("{MINIMAL}quiet_period = \"1m\"\n")).unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.key == "targets[0].quiet_period" && w.reason.contains("5 minutes")),
            "{:?}",
            cfg.warnings
        );
    }

    /// Unset, the retirement windows fit whatever rotate_before is: a short window takes
    /// smaller defaults instead of an error about keys the user never wrote.
    #[test]
    fn retirement_defaults_fit_a_short_rotate_before() {
        let cfg = load_str(&format!(
            "{MINIMAL}token_ttl = \"1h\"\nrotate_before = \"30m\"\n"
        ))
        .unwrap();
        let p = &cfg.targets[0].policy;
        assert_eq!(p.grace_period, Duration::from_secs(15 * 60));
        assert_eq!(p.max_overlap, Duration::from_secs(15 * 60));
        assert_eq!(p.quiet_period, Duration::from_secs(15 * 60));
        assert_eq!(p.audit_interval, Duration::from_secs(15 * 60));
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let cfg = load_str(MINIMAL).unwrap();
        let p = &cfg.targets[0].policy;
        assert_eq!(p.grace_period, Duration::from_secs(2 * 3600));
        assert_eq!(p.quiet_period, Duration::from_secs(2 * 3600));
        assert_eq!(p.max_overlap, Duration::from_secs(3 * 86400));
        // A short grace period set by hand: the quiet period follows it.
        let cfg = load_str(&format!("{MINIMAL}grace_period = \"1s\"\n")).unwrap();
        assert_eq!(cfg.targets[0].policy.quiet_period, Duration::from_secs(1));
    }

    /// Four hours by default; zero (list on every pass) is allowed; longer than the
    /// rotate-before window is not, since a token must be audited before it falls due.
    #[test]
    fn audit_interval_defaults_to_four_hours_and_fits_rotate_before() {
        let cfg = load_str(MINIMAL).unwrap();
        assert_eq!(
            cfg.targets[0].policy.audit_interval,
            Duration::from_secs(4 * 3600)
        );
        let cfg = load_str(&format!("{MINIMAL}audit_interval = \"0s\"\n")).unwrap();
        assert_eq!(cfg.targets[0].policy.audit_interval, Duration::ZERO);
        let p = problems(&format!("{MINIMAL}audit_interval = \"8d\"\n"));
        assert!(
            has(
                &p,
                "targets[0].audit_interval",
                "not be longer than rotate_before (7days)"
            ),
            "{p:?}"
        );
        let p = problems(&format!("{MINIMAL}audit_interval = \"often\"\n"));
        assert!(
            p.iter().any(|p| p.key == "targets[0].audit_interval"),
            "{p:?}"
        );
    }

    #[test]
    fn sparse_schedule_warns() {
        // Once a day at 03:00, but rotate only 6 hours before expiry.
        let cfg = load_str(&format!(
            "[daemon]\nschedule = \"0 0 3 * * *\"\n{MINIMAL}token_ttl = \"2d\"\nrotate_before = \"6h\"\ngrace_period = \"1h\"\n"
        ))
        .unwrap();
        assert!(
            cfg.warnings.iter().any(|w| w.key == "daemon.schedule"),
            "{:?}",
            cfg.warnings
        );
        let cfg = load_str(MINIMAL).unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }
}
