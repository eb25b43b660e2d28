//! What a target manages: service accounts (names or globs) or legacy API keys, never both, and
//! the roles it gives them.

use super::check::{quote, role_names, Checker};
use crate::config::load::RawScope;
use crate::config::{is_glob, Strategy};
use crate::model::{Role, SecretFormat};

/// The credentials of one target, as `Target` holds them.
pub(super) struct Credentials {
    pub(super) service_accounts: Vec<String>,
    pub(super) api_keys: Vec<String>,
    pub(super) api_key_role: Role,
    pub(super) service_account_role: Option<Role>,
}

pub(super) fn credentials(c: &mut Checker, at: &str, s: &RawScope) -> Credentials {
    let service_accounts = s.service_accounts.clone().unwrap_or_default();
    let api_keys = api_keys(c, at, s, &service_accounts);
    let (api_key_role, service_account_role) = roles(c, at, s, &api_keys);
    check_service_accounts(c, at, &service_accounts, &api_keys);
    Credentials {
        service_accounts,
        api_keys,
        api_key_role,
        service_account_role,
    }
}

fn api_keys(c: &mut Checker, at: &str, s: &RawScope, service_accounts: &[String]) -> Vec<String> {
    let api_keys = s.api_keys.clone().unwrap_or_default();
    if !service_accounts.is_empty() && !api_keys.is_empty() {
        c.fail(
            format!("{at}.api_keys"),
            "",
            "a target manages service accounts or API keys, not both: split it in two targets",
        );
    }
    for (j, k) in api_keys.iter().enumerate() {
        if k.is_empty() || k.len() > 60 || is_glob(k) {
            c.fail(
                format!("{at}.api_keys[{j}]"),
                quote(k),
                "an API key base name is 1 to 60 characters, no globs (keys cannot be listed)",
            );
        }
    }
    api_keys
}

/// `api_key_role` (required with API keys; Viewer when absent) and `service_account_role`.
fn roles(c: &mut Checker, at: &str, s: &RawScope, api_keys: &[String]) -> (Role, Option<Role>) {
    let key = |k: &str| format!("{at}.{k}");
    let api_key_role = role_of(c, key("api_key_role"), &s.api_key_role).unwrap_or(Role::Viewer);
    if !api_keys.is_empty() && s.api_key_role.is_none() {
        c.fail(
            key("api_key_role"),
            "",
            format!(
                "API-key targets need the role of the keys they mint: one of {}",
                role_names().join(", ")
            ),
        );
    }
    let service_account_role = role_of(c, key("service_account_role"), &s.service_account_role);
    (api_key_role, service_account_role)
}

fn role_of(c: &mut Checker, key: String, v: &Option<String>) -> Option<Role> {
    let v = v.as_ref()?;
    let r = Role::parse(v);
    if r.is_none() {
        c.fail(
            key,
            quote(v),
            format!("must be one of {}", role_names().join(", ")),
        );
    }
    r
}

fn check_service_accounts(
    c: &mut Checker,
    at: &str,
    service_accounts: &[String],
    api_keys: &[String],
) {
    if service_accounts.is_empty() && api_keys.is_empty() {
        c.fail(
            format!("{at}.service_accounts"),
            "",
            "names no service account: list names or globs such as \"ci-*\"",
        );
    }
    for (j, p) in service_accounts.iter().enumerate() {
        if p.is_empty() || p.len() > 128 {
            c.fail(
                format!("{at}.service_accounts[{j}]"),
                quote(p),
                "a service-account name is 1 to 128 characters",
            );
        } else if is_glob(p) && glob::Pattern::new(p).is_err() {
            c.fail(
                format!("{at}.service_accounts[{j}]"),
                quote(p),
                "not a valid glob",
            );
        }
    }
}

/// What API keys cannot do: be published raw (the secret's JSON is the only record of the live
/// key) or be recreated.
pub(super) fn api_key_limits(
    c: &mut Checker,
    at: &str,
    api_keys: &[String],
    secret_format: SecretFormat,
    strategy: Strategy,
) {
    if api_keys.is_empty() {
        return;
    }
    if secret_format == SecretFormat::Raw {
        c.fail(
            format!("{at}.secret_format"),
            "\"raw\"",
            "API keys cannot be listed, so the secret's JSON is the record of the live key: use \"json\"",
        );
    }
    if strategy == Strategy::Recreate {
        c.fail(
            format!("{at}.strategy"),
            "\"recreate\"",
            "API keys are rotated with \"overlap\" only",
        );
    }
}
