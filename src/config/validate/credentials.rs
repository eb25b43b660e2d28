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

/// `migrate_api_keys` (default on) and `migrated_service_account` (default `{key_name}`): the
/// service account an API key becomes on Grafana 12 or later, checked on a sample key.
pub(super) fn migration(c: &mut Checker, at: &str, s: &RawScope) -> Option<String> {
    let key = |k: &str| format!("{at}.{k}");
    let template = s
        .migrated_service_account
        .clone()
        .unwrap_or_else(|| MIGRATED_DEFAULT.into());
    if let Err(why) = migrated_name_problem(&template) {
        c.fail(key("migrated_service_account"), quote(&template), why);
    }
    if s.migrate_api_keys == Some(false) {
        if s.migrated_service_account.is_some() {
            c.warn(
                key("migrated_service_account"),
                quote(&template),
                "does nothing with migrate_api_keys = false",
            );
        }
        return None;
    }
    Some(template)
}

/// The default name of the service account an API key becomes: the key's base name.
pub const MIGRATED_DEFAULT: &str = "{key_name}";

/// The placeholders a migrated service account's name may hold.
const MIGRATED_VARS: [&str; 2] = ["key_name", "workspace_id"];

fn migrated_name_problem(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err("has a '{' without its '}'".into());
        };
        let var = &rest[open + 1..open + close];
        if !MIGRATED_VARS.contains(&var) {
            return Err(format!(
                "{{{var}}} is no placeholder here: use {{key_name}} and {{workspace_id}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    let sample = super::names::render_template(
        template,
        &[
            ("key_name", "dashboards-sync"),
            ("workspace_id", "g-0123456789"),
        ],
    );
    if sample.trim().is_empty() || sample.len() > 128 {
        return Err("a service-account name is 1 to 128 characters".into());
    }
    Ok(())
}
