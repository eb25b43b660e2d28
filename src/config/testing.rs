//! Fixtures for the configuration's unit tests: a minimal valid file, and loading from text.

use std::collections::BTreeMap;

use super::{from_sources, Config, ConfigError, Policy, Problem};

pub(super) const MINIMAL: &str = r#"
[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]
"#;

pub(super) fn load_str(text: &str) -> Result<Config, ConfigError> {
    from_sources(text, &BTreeMap::new(), "test.toml")
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    load_str(text).expect_err("should be refused").problems()
}

pub(super) fn has(problems: &[Problem], key: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.key == key && (p.reason.contains(needle) || p.value.contains(needle)))
}

/// The policy a minimal configuration gets: the documented defaults.
pub(crate) fn policy() -> Policy {
    load_str(MINIMAL).expect("MINIMAL loads").targets[0]
        .policy
        .clone()
}
