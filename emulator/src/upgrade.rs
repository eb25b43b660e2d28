//! The Grafana-version upgrade of a workspace: which versions AMG offers and a workspace may move
//! to, and what becomes of its API keys when it moves to Grafana 12 or later.
//!
//! Used by UpdateWorkspaceConfiguration (`grafanaVersion`), ListVersions, and the test-side
//! `Emulator::upgrade_workspace`. Pure functions of the state and one clock reading; nothing here
//! touches HTTP, faults or the call log.
//!
//! Facts: "Can only be used to upgrade (for example, from 8.4 to 9.4), not downgrade" (API
//! reference, UpdateWorkspaceConfiguration,
//! https://docs.aws.amazon.com/grafana/latest/APIReference/API_UpdateWorkspaceConfiguration.html);
//! "You can only update the version to a newer version of Grafana. You can't downgrade" and "The
//! update process is irreversible" (user guide, "Update your workspace version",
//! https://docs.aws.amazon.com/grafana/latest/userguide/AMG-workspace-version-update.html).
//! Assumed: the upgrade takes effect at once (AMG's takes up to 10 minutes, the workspace being
//! read-only meanwhile); any newer offered version may be chosen, major versions may be skipped;
//! naming the current version changes nothing and is not an error.

use crate::errors::{AwsError, ValidationReason};
use crate::model::{ApiKeyUpgrade, ServiceAccount, State, Token, Workspace};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The prefix Grafana gives the service account it makes of an API key
/// (`CreateServiceAccountFromApikey`: `Name: fmt.Sprintf("%v-%v", prefix, key.Name)`).
pub const MIGRATED_SERVICE_ACCOUNT_PREFIX: &str = "sa-autogen";

/// How often Grafana retries with a suffix (`-001` .. `-010`) when the name is taken.
const MIGRATION_ATTEMPTS: u32 = 10;

/// A version string as numbers (`"10.4"` → `[10, 4]`), trailing zeros dropped so that `13` and
/// `13.0` are equal; `None` when it is not dot-separated digits.
pub fn parse_version(version: &str) -> Option<Vec<u32>> {
    let mut parts = version
        .split('.')
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u32>>>()?;
    while parts.len() > 1 && parts.last() == Some(&0) {
        parts.pop();
    }
    Some(parts)
}

/// Orders two versions; `None` when either does not parse.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_version(a)?.cmp(&parse_version(b)?))
}

/// A sort key for pagination that orders like the versions do.
pub fn version_sort_key(version: &str) -> String {
    match parse_version(version) {
        Some(parts) => parts
            .iter()
            .map(|p| format!("{p:010}"))
            .collect::<Vec<_>>()
            .join("."),
        None => version.to_string(),
    }
}

/// The offered versions a workspace on `current` may move to: every newer one. A current version
/// that does not parse (a seed may set anything) may move to any.
pub fn upgrades_from<'s>(offered: &'s [String], current: &str) -> Vec<&'s String> {
    offered
        .iter()
        .filter(|v| compare_versions(v, current).is_none_or(|o| o == Ordering::Greater))
        .collect()
}

/// What an upgrade did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeReport {
    pub workspace_id: String,
    pub from_version: String,
    pub to_version: String,
    /// The behaviour in force; it acted only if the upgrade took away API keys (from 10 or older
    /// to 12 or later) and the workspace held some.
    pub api_keys_at_upgrade: ApiKeyUpgrade,
    /// Names of the keys that stopped working and vanished.
    pub invalidated_api_keys: Vec<String>,
    /// The keys that became service-account tokens.
    pub migrated_api_keys: Vec<MigratedApiKey>,
}

/// One API key turned into a service-account token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigratedApiKey {
    pub key_name: String,
    pub service_account_id: String,
    pub service_account_name: String,
    pub token_id: String,
}

/// Checks that `workspace_id` may move to `to`, in the order the operation checks: the workspace
/// exists (404), `to` is offered and not older than the current version (400), the workspace is
/// ACTIVE (409). `Ok(false)`: `to` is the current version, nothing to do.
pub(crate) fn check(state: &State, workspace_id: &str, to: Option<&str>) -> Result<bool, AwsError> {
    let ws = state.workspace(workspace_id).ok_or_else(|| {
        AwsError::not_found(
            "WORKSPACE",
            workspace_id,
            format!("Workspace {workspace_id} not found."),
        )
    })?;
    let changes = match to {
        None => false,
        Some(to) => {
            let current = &ws.grafana_version;
            let upgrades = upgrades_from(&state.grafana_versions, current);
            let same = compare_versions(to, current) == Some(Ordering::Equal) || to == current;
            if !same && !upgrades.iter().any(|v| v.as_str() == to) {
                let offered = state.grafana_versions.iter().any(|v| v == to);
                let list = |vs: Vec<&String>| {
                    if vs.is_empty() {
                        "none".to_string()
                    } else {
                        vs.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                    }
                };
                let message = if offered {
                    format!(
                        "Workspace {workspace_id} runs Grafana {current}: it can only be upgraded, \
                         not downgraded to {to}. Versions it can be upgraded to: {}.",
                        list(upgrades)
                    )
                } else {
                    format!(
                        "Grafana version {to} is not supported. Supported versions: {}.",
                        list(state.grafana_versions.iter().collect())
                    )
                };
                return Err(AwsError::validation(ValidationReason::Other, message));
            }
            !same
        }
    };
    if ws.status != "ACTIVE" {
        return Err(AwsError::conflict(
            "WORKSPACE",
            workspace_id,
            format!(
                "Workspace {workspace_id} is in status {}, not ACTIVE.",
                ws.status
            ),
        ));
    }
    Ok(changes)
}

/// Moves the workspace to `to` (already checked) and, if that takes its API keys away, applies
/// `mode` to them.
pub(crate) fn apply(ws: &mut Workspace, to: &str, mode: ApiKeyUpgrade, now: i64) -> UpgradeReport {
    let had_api_keys = ws.supports_api_keys();
    let mut report = UpgradeReport {
        workspace_id: ws.id.clone(),
        from_version: ws.grafana_version.clone(),
        to_version: to.to_string(),
        api_keys_at_upgrade: mode,
        invalidated_api_keys: Vec::new(),
        migrated_api_keys: Vec::new(),
    };
    ws.grafana_version = to.to_string();
    ws.modified = now;
    if !had_api_keys || ws.supports_api_keys() {
        return report;
    }
    for key in std::mem::take(&mut ws.api_keys) {
        let name = match mode {
            ApiKeyUpgrade::Invalidate => None,
            ApiKeyUpgrade::Migrate => migrated_name(ws, &key.key_name),
        };
        let Some(name) = name else {
            report.invalidated_api_keys.push(key.key_name);
            continue;
        };
        let service_account_id = ws.allocate_service_account_id();
        // The key's own row becomes the token: Grafana sets its service_account_id and
        // changes nothing else (assignApiKeyToServiceAccount).
        let token_id = if key.id.is_empty() {
            ws.allocate_key_id()
        } else {
            key.id.clone()
        };
        ws.service_accounts.push(ServiceAccount {
            id: service_account_id.clone(),
            name: name.clone(),
            grafana_role: key.key_role,
            is_disabled: false,
            tokens: vec![Token {
                id: token_id.clone(),
                name: key.key_name.clone(),
                key: key.key,
                created_at: key.created_at,
                expires_at: Some(key.expires_at),
                last_used_at: key.last_used_at,
            }],
        });
        report.migrated_api_keys.push(MigratedApiKey {
            key_name: key.key_name,
            service_account_id,
            service_account_name: name,
            token_id,
        });
    }
    report
}

/// `sa-autogen-<keyName>`, or with `-001` .. `-010` when taken, as Grafana retries; `None` when
/// all are taken (Grafana then fails that key; the emulator drops it, as Invalidate would). Grafana
/// puts the suffix in the login and keeps the name; the emulator, whose service-account names are
/// unique in the workspace as CreateWorkspaceServiceAccount makes them, puts it in the name.
fn migrated_name(ws: &Workspace, key_name: &str) -> Option<String> {
    let base = format!("{MIGRATED_SERVICE_ACCOUNT_PREFIX}-{key_name}");
    std::iter::once(base.clone())
        .chain((1..=MIGRATION_ATTEMPTS).map(|i| format!("{base}-{i:03}")))
        .find(|name| ws.service_account_by_name(name).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApiKey, Role};

    fn workspace_with_keys(version: &str) -> Workspace {
        let mut ws = Workspace::new("g-0123456789", "us-east-1", 0);
        ws.grafana_version = version.to_string();
        for (name, role) in [("ci", Role::Editor), ("old", Role::Viewer)] {
            let id = ws.allocate_key_id();
            ws.api_keys.push(ApiKey {
                id,
                key_name: name.to_string(),
                key_role: role,
                key: format!("key-{name}"),
                created_at: 100,
                expires_at: 5_000,
                last_used_at: Some(200),
            });
        }
        ws
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("10.4"), Some(vec![10, 4]));
        assert_eq!(parse_version("13.0"), Some(vec![13]));
        assert_eq!(parse_version("13"), Some(vec![13]));
        assert_eq!(parse_version("v10"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("10..4"), None);
        assert_eq!(compare_versions("9.4", "10.4"), Some(Ordering::Less));
        assert_eq!(compare_versions("13.0", "13"), Some(Ordering::Equal));
        assert!(version_sort_key("9.4") < version_sort_key("10.4"));
        assert!(version_sort_key("12.4") < version_sort_key("13.0"));
    }

    #[test]
    fn upgrades_are_the_newer_offered_versions() {
        let offered: Vec<String> = ["9.4", "10.4", "12.4", "13.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names = |current: &str| -> Vec<String> {
            upgrades_from(&offered, current)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(names("8.4"), ["9.4", "10.4", "12.4", "13.0"]);
        assert_eq!(names("10.4"), ["12.4", "13.0"]);
        assert_eq!(names("10.3"), ["10.4", "12.4", "13.0"]);
        assert_eq!(names("13.0"), Vec::<String>::new());
        assert_eq!(names(""), ["9.4", "10.4", "12.4", "13.0"]);
    }

    #[test]
    fn invalidate_drops_the_keys() {
        let mut ws = workspace_with_keys("10.4");
        let report = apply(&mut ws, "12.4", ApiKeyUpgrade::Invalidate, 7);
        assert!(ws.api_keys.is_empty());
        assert!(ws.service_accounts.is_empty());
        assert_eq!(report.invalidated_api_keys, ["ci", "old"]);
        assert_eq!((ws.grafana_version.as_str(), ws.modified), ("12.4", 7));
    }

    #[test]
    fn migrate_turns_each_key_into_a_service_account_token() {
        let mut ws = workspace_with_keys("9.4");
        let report = apply(&mut ws, "13.0", ApiKeyUpgrade::Migrate, 7);
        assert!(ws.api_keys.is_empty());
        let sa = ws.service_account_by_name("sa-autogen-ci").unwrap();
        assert_eq!((sa.id.as_str(), sa.grafana_role), ("2", Role::Editor));
        assert_eq!(
            sa.tokens,
            [Token {
                id: "1".to_string(),
                name: "ci".to_string(),
                key: "key-ci".to_string(),
                created_at: 100,
                expires_at: Some(5_000),
                last_used_at: Some(200),
            }]
        );
        let old = ws.service_account_by_name("sa-autogen-old").unwrap();
        assert_eq!(old.grafana_role, Role::Viewer);
        assert_eq!(old.tokens[0].id, "2");
        assert_eq!(report.migrated_api_keys.len(), 2);
        assert_eq!(report.migrated_api_keys[1].service_account_id, "3");
    }

    #[test]
    fn a_taken_name_gets_grafanas_suffix() {
        let mut ws = workspace_with_keys("10.4");
        for name in ["sa-autogen-ci", "sa-autogen-ci-001"] {
            let id = ws.allocate_service_account_id();
            ws.service_accounts.push(ServiceAccount {
                id,
                name: name.to_string(),
                grafana_role: Role::Admin,
                is_disabled: false,
                tokens: Vec::new(),
            });
        }
        let report = apply(&mut ws, "12.4", ApiKeyUpgrade::Migrate, 7);
        assert_eq!(
            report.migrated_api_keys[0].service_account_name,
            "sa-autogen-ci-002"
        );
    }

    #[test]
    fn an_upgrade_that_keeps_api_keys_keeps_them() {
        let mut ws = workspace_with_keys("9.4");
        let report = apply(&mut ws, "10.4", ApiKeyUpgrade::Invalidate, 7);
        assert_eq!(ws.api_keys.len(), 2);
        assert!(report.invalidated_api_keys.is_empty());
    }
}
