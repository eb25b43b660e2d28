//! The collector every validator writes to, and the small value helpers they share.
//!
//! A validator never returns early on a bad value: it records a `Problem` (key, value, reason)
//! and carries on with the default, so one run reports every mistake in the file. The order in
//! which validators call `fail` is the order of the messages the user reads.

use std::time::Duration;

use crate::config::Problem;
use crate::model::Role;

pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Checker {
    pub(super) fn new() -> Checker {
        Checker {
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn fail(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn warn(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.warnings.push(Problem {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        });
    }

    /// `value` (or `default` when unset) as a duration; a bad one is a problem and yields `default`.
    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match parse_duration(text) {
            Ok(d) => d,
            Err(reason) => {
                self.fail(key, quote(text), reason);
                parse_duration(default).expect("defaults parse")
            }
        }
    }
}

pub(super) fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Human durations: `30d`, `12h`, `90s`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("not a duration ({e}); write a number and a unit, like \"30d\", \"12h\", \"15m\" or \"90s\"")
    })
}

pub(super) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every role name Grafana accepts, for messages.
pub fn role_names() -> [&'static str; 3] {
    [
        Role::Admin.as_str(),
        Role::Editor.as_str(),
        Role::Viewer.as_str(),
    ]
}
