//! How a target's credentials are rotated: the strategy, and the timings that must nest inside
//! one another (grace period < rotate-before window < token lifetime ≤ AMG's 30 days), checked
//! against how far apart the daemon's passes can be.

use std::time::Duration;

use super::check::{quote, show, Checker};
use super::daemon::longest_gap;
use crate::config::load::RawScope;
use crate::config::{Strategy, MAX_TOKEN_TTL};

/// The durations of a target's `Policy`.
pub(super) struct Timings {
    pub(super) token_ttl: Duration,
    pub(super) rotate_before: Duration,
    pub(super) rotation_spread: Duration,
    pub(super) grace_period: Duration,
    pub(super) orphan_margin: Duration,
}

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
    let grace_period = c.duration(&key("grace_period"), s.grace_period.as_deref(), "1h");
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
    let timings = Timings {
        token_ttl,
        rotate_before,
        rotation_spread,
        grace_period,
        orphan_margin,
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
    }
}

/// A warning, not a problem: passes further apart than the rotate-before window can let a token
/// expire unrotated.
pub(super) fn warn_if_passes_too_sparse(
    c: &mut Checker,
    at: &str,
    cron: Option<&croner::Cron>,
    rotate_before: Duration,
) {
    if let Some(cron) = cron {
        if let Some(gap) = longest_gap(cron) {
            if gap >= rotate_before {
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
    }
}

#[cfg(test)]
mod tests {
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
