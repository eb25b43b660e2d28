//! One `[[targets]]` entry, with `[defaults]` already layered under it: the workspaces it names,
//! then each part of its policy in the order of the checks below, then where it connects.

use super::check::{quote, Checker};
use super::names::is_workspace_id;
use super::{credentials, names, rotation, secret};
use crate::config::load::RawScope;
use crate::config::{Manages, Policy, Target, WorkspaceSelector};

/// `at` is the entry's key (`targets[0]`), the prefix of every problem found in it.
pub(super) fn validate_target(
    c: &mut Checker,
    at: &str,
    s: &RawScope,
    pass_gap: Option<std::time::Duration>,
) -> Target {
    let label = s.name.clone().unwrap_or_else(|| at.to_owned());
    let workspaces = workspaces(c, at, s);
    let credentials = credentials::credentials(c, at, s);
    let strategy = rotation::strategy(c, at, s);
    let timings = rotation::timings(c, at, s);
    rotation::warn_if_passes_too_sparse(c, at, pass_gap, timings.rotate_before);
    let name_prefix = names::name_prefix(c, at, s);
    let secret_name = names::secret_name(c, at, s);
    let secret_format = secret::secret_format(c, at, s);
    credentials::api_key_limits(c, at, &credentials.api_keys, secret_format, strategy);
    let secret_tags = secret::secret_tags(c, at, s);
    endpoints(c, at, s);

    Target {
        label,
        workspaces,
        manages: if credentials.api_keys.is_empty() {
            Manages::ServiceAccounts {
                names: credentials.service_accounts,
                bootstrap: credentials.service_account_role,
            }
        } else {
            Manages::ApiKeys {
                names: credentials.api_keys,
                role: credentials.api_key_role,
                migrate_to: credentials::migration(c, at, s),
            }
        },
        region: s.region.clone(),
        role_arn: s.role_arn.clone(),
        policy: Policy {
            strategy,
            token_ttl: timings.token_ttl,
            rotate_before: timings.rotate_before,
            rotation_spread: timings.rotation_spread,
            grace_period: timings.grace_period,
            quiet_period: timings.quiet_period,
            max_overlap: timings.max_overlap,
            orphan_margin: timings.orphan_margin,
            audit_interval: timings.audit_interval,
            name_prefix,
            secret_name,
            secret_format,
            secret_description: s.secret_description.clone().unwrap_or_else(|| {
                "Amazon Managed Grafana service-account token, rotated by amg-token-rotator".into()
            }),
            kms_key_id: s.kms_key_id.clone(),
            secret_tags,
            verify: s.verify.unwrap_or(false),
            grafana_url: s.grafana_url.clone(),
            liveness_checks: s.liveness_checks.unwrap_or(false),
            delete_expired_foreign_tokens: s.delete_expired_foreign_tokens.unwrap_or(false),
        },
    }
}

/// `workspace_ids` or `workspace_tags`, exactly one of them, and not an empty one.
fn workspaces(c: &mut Checker, at: &str, s: &RawScope) -> WorkspaceSelector {
    let key = |k: &str| format!("{at}.{k}");
    match (&s.workspace_ids, &s.workspace_tags) {
        (Some(_), Some(_)) => {
            c.fail(
                key("workspace_ids"),
                "",
                "give workspace_ids or workspace_tags, not both",
            );
            WorkspaceSelector::Ids(Vec::new())
        }
        (Some(ids), None) => {
            if ids.is_empty() {
                c.fail(key("workspace_ids"), "[]", "lists no workspace");
            }
            for (j, id) in ids.iter().enumerate() {
                if !is_workspace_id(id) {
                    c.fail(
                        format!("{at}.workspace_ids[{j}]"),
                        quote(id),
                        "not a workspace ID: AMG IDs are \"g-\" and 10 lowercase hex digits, like \"g-0123456789\"",
                    );
                }
            }
            WorkspaceSelector::Ids(ids.clone())
        }
        (None, Some(tags)) => {
            if tags.is_empty() {
                c.fail(
                    key("workspace_tags"),
                    "{}",
                    "an empty tag filter would select every workspace; list the workspaces instead",
                );
            }
            WorkspaceSelector::Tags(tags.clone())
        }
        (None, None) => {
            c.fail(
                at,
                "",
                "names no workspace: set workspace_ids or workspace_tags",
            );
            WorkspaceSelector::Ids(Vec::new())
        }
    }
}

/// Why a key may not be sent to `template` (`verify::key_destination`), judged on the URL its
/// placeholders make for a sample workspace: https://, or http:// to a loopback host only. The
/// host may hold `{workspace_id}` (AMG's `g-` and hex digits) and no other placeholder: a
/// workspace's name is whatever its owner typed, and would choose where its keys are sent.
fn grafana_url_problem(template: &str) -> Result<(), String> {
    let authority = template
        .split_once("://")
        .map_or(template, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    if authority.replace("{workspace_id}", "").contains('{') {
        return Err(
            "the host may hold only the placeholder {workspace_id}: a name such as \
             {workspace_name} would let whoever names a workspace choose where its keys are sent"
                .into(),
        );
    }
    let sample = names::render_template(
        template,
        &[
            ("workspace_id", "g-0123456789"),
            ("workspace_name", "sample"),
            ("service_account", "sample"),
            ("key_name", "sample"),
        ],
    );
    crate::aws::verify::key_destination(&crate::aws::verify::org_url(&sample)).map(|_| ())
}

/// Where the target connects, when it overrides the defaults: `grafana_url`, `region`, `role_arn`.
fn endpoints(c: &mut Checker, at: &str, s: &RawScope) {
    let key = |k: &str| format!("{at}.{k}");
    if let Some(url) = &s.grafana_url {
        if let Err(why) = grafana_url_problem(url) {
            c.fail(key("grafana_url"), quote(url), &why);
        }
    }
    if let Some(region) = &s.region {
        if region.is_empty()
            || !region
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        {
            c.fail(
                key("region"),
                quote(region),
                "not a region name such as \"eu-west-1\"",
            );
        }
    }
    if let Some(arn) = &s.role_arn {
        if !arn.starts_with("arn:") || !arn.contains(":role/") {
            c.fail(
                key("role_arn"),
                quote(arn),
                "not an IAM role ARN such as \"arn:aws:iam::123456789012:role/rotator\"",
            );
        }
    }
}
