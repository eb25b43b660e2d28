//! The configuration: one typed struct, loaded and validated once, then passed down.
//!
//! A TOML file (default `/etc/amg-token-rotator/config.toml`) is layered with environment
//! variables `AMG_ROTATOR__SECTION__KEY` through the `config` crate, deserialized into raw
//! string-typed structs that refuse unknown keys, then validated into `Config`. Validation
//! collects every problem with its key, value and reason instead of stopping at the first.
//! This is the only module that reads the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::aws::connect::AwsSettings;
use crate::model::{Role, SecretFormat};

mod load;
mod validate;

#[cfg(feature = "failpoints")]
pub use load::failpoint_env;
pub use load::{from_sources, load, systemd_env, SystemdEnv};
pub use validate::{
    is_workspace_id, parse_cron, parse_duration, render_template, role_names, secret_name_problem,
    TEMPLATE_VARS,
};

pub const DEFAULT_PATH: &str = "/etc/amg-token-rotator/config.toml";
pub const ENV_PREFIX: &str = "AMG_ROTATOR";
/// Outside the 9100–9999 range the Prometheus wiki allocates to exporters, so it collides with none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8947";
/// AMG's ceiling on secondsToLive.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// One problem in the configuration: where, what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.key, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.key, self.value, self.reason)
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Unreadable { path, reason } => vec![Problem {
                key: "--config".into(),
                value: path.clone(),
                reason: reason.clone(),
            }],
            ConfigError::Invalid(p) => p.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Create the new token, publish, promote, delete the old one after the grace period.
    Overlap,
    /// Delete the token, create one with the same name, publish: a window with no valid key.
    Recreate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// How every credential of a target is rotated and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub strategy: Strategy,
    pub token_ttl: Duration,
    pub rotate_before: Duration,
    /// Renewals are spread over this much time before `rotate_before` (by a hash of the
    /// credential), so tokens minted together do not all fall due in the same pass.
    pub rotation_spread: Duration,
    pub grace_period: Duration,
    /// An owned token that no secret version references is deleted once older than this.
    pub orphan_margin: Duration,
    pub name_prefix: String,
    pub secret_name: String,
    pub secret_format: SecretFormat,
    pub secret_description: String,
    pub kms_key_id: Option<String>,
    pub secret_tags: BTreeMap<String, String>,
    pub verify: bool,
    /// Overrides `https://<endpoint>` as the base URL used to verify new tokens.
    pub grafana_url: Option<String>,
    pub delete_expired_foreign_tokens: bool,
    /// Create a missing service account with this role (bootstrap), and report one whose role
    /// differs. `None`: a missing service account is only reported.
    pub service_account_role: Option<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceSelector {
    Ids(Vec<String>),
    Tags(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `targets[i]` or the target's `name`.
    pub label: String,
    pub workspaces: WorkspaceSelector,
    /// Exact names or globs.
    pub service_accounts: Vec<String>,
    /// Legacy API keys (Grafana 9 and 10 workspaces; removed in 12) by base name; a target manages either service
    /// accounts or API keys.
    pub api_keys: Vec<String>,
    /// The role of the API keys the target mints.
    pub api_key_role: Role,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub policy: Policy,
}

impl Target {
    pub fn matches_service_account(&self, name: &str) -> bool {
        self.service_accounts.iter().any(|p| {
            if is_glob(p) {
                glob::Pattern::new(p).is_ok_and(|g| g.matches(name))
            } else {
                p == name
            }
        })
    }

    /// The credentials named exactly: API keys, or service accounts not given by glob.
    pub fn exact_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        if self.api_keys.is_empty() {
            Box::new(self.exact_service_accounts())
        } else {
            Box::new(self.api_keys.iter().map(String::as_str))
        }
    }

    /// Service accounts named exactly (not by glob): their absence is a problem to report.
    pub fn exact_service_accounts(&self) -> impl Iterator<Item = &str> {
        self.service_accounts
            .iter()
            .filter(|p| !is_glob(p))
            .map(String::as_str)
    }
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    pub schedule: String,
    pub jitter: Duration,
    pub listen: SocketAddr,
    pub shutdown_timeout: Duration,
    pub concurrency: usize,
    /// `/readyz` fails when the last successful pass is older than this.
    pub stale_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// One declared binding set: these users and groups hold `role` in these workspaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredBindings {
    /// `None`: every managed workspace.
    pub workspace_ids: Option<Vec<String>>,
    pub role: Role,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSettings {
    /// List every managed workspace's permissions each pass and export counts.
    pub audit: bool,
    /// Apply the drift from `bindings` with UpdatePermissions. In a workspace that `bindings`
    /// covers, the declared set is the whole truth: other users and groups are revoked.
    pub enforce: bool,
    pub bindings: Vec<DeclaredBindings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub log: LogSettings,
    pub aws: AwsSettings,
    pub targets: Vec<Target>,
    pub permissions: PermissionSettings,
    /// Things that work but are probably not what the user meant.
    pub warnings: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]
"#;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        from_sources(text, &BTreeMap::new(), "test.toml")
    }

    fn problems(text: &str) -> Vec<Problem> {
        load_str(text).expect_err("should be refused").problems()
    }

    fn has(problems: &[Problem], key: &str, needle: &str) -> bool {
        problems
            .iter()
            .any(|p| p.key == key && (p.reason.contains(needle) || p.value.contains(needle)))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let cfg = load_str(MINIMAL).unwrap();
        let p = &cfg.targets[0].policy;
        assert_eq!(p.strategy, Strategy::Overlap);
        assert_eq!(p.token_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(p.rotate_before, Duration::from_secs(7 * 86400));
        assert_eq!(p.grace_period, Duration::from_secs(3600));
        assert_eq!(p.secret_format, SecretFormat::Json);
        assert_eq!(cfg.daemon.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(cfg.daemon.concurrency, 8);
    }

    #[test]
    fn targets_override_defaults() {
        let cfg = load_str(
            r#"
[defaults]
token_ttl = "7d"
rotate_before = "2d"
grace_period = "30m"
[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["a"]
[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["b"]
token_ttl = "1d"
rotate_before = "6h"
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.targets[0].policy.token_ttl,
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(cfg.targets[1].policy.token_ttl, Duration::from_secs(86400));
        assert_eq!(
            cfg.targets[1].policy.grace_period,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let p = problems(&format!("{MINIMAL}\n[daemon]\nshedule = \"0 * * * * *\"\n"));
        assert!(p[0].key.contains("daemon"), "{p:?}");
        assert!(p[0].reason.contains("unknown field `shedule`"), "{p:?}");
        let p = problems(
            "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\ntoken_tll = \"1d\"\n",
        );
        assert!(p[0].key.starts_with("targets[0]"), "{p:?}");
        assert!(p[0].reason.contains("token_tll"), "{p:?}");
    }

    #[test]
    fn malformed_toml_is_reported() {
        let p = problems("[[targets]\nworkspace_ids = 3");
        assert!(p[0].reason.contains("not valid TOML"), "{p:?}");
    }

    #[test]
    fn each_bad_value_is_named() {
        let p = problems(
            r#"
[daemon]
schedule = "every minute"
listen = "localhost"
[[targets]]
workspace_ids = ["g-XYZ"]
service_accounts = ["a"]
token_ttl = "31d"
rotate_before = "forever"
secret_name = "grafana/{workspace_id}/{sa}"
strategy = "yolo"
"#,
        );
        assert!(has(&p, "daemon.schedule", "cron"), "{p:?}");
        assert!(has(&p, "daemon.listen", "localhost"), "{p:?}");
        assert!(has(&p, "targets[0].workspace_ids[0]", "g-XYZ"), "{p:?}");
        assert!(has(&p, "targets[0].token_ttl", "30 days"), "{p:?}");
        assert!(
            has(&p, "targets[0].rotate_before", "not a duration"),
            "{p:?}"
        );
        assert!(has(&p, "targets[0].secret_name", "{sa}"), "{p:?}");
        assert!(has(&p, "targets[0].strategy", "yolo"), "{p:?}");
    }

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
    fn secret_templates_must_yield_valid_names() {
        let p = problems(&format!(
            "{MINIMAL}secret_name = \"grafana tokens/{{service_account}}\"\n"
        ));
        assert!(has(&p, "targets[0].secret_name", "' '"), "{p:?}");
        let p = problems(&format!(
            "{MINIMAL}secret_name = \"grafana/{{workspace_id}}\"\n"
        ));
        assert!(
            has(&p, "targets[0].secret_name", "{service_account}"),
            "{p:?}"
        );
    }

    #[test]
    fn no_targets_is_an_error() {
        let p = problems("[daemon]\nconcurrency = 4\n");
        assert!(has(&p, "targets", "no [[targets]]"), "{p:?}");
    }

    #[test]
    fn target_only_keys_are_refused_in_defaults() {
        let p = problems(&format!(
            "{MINIMAL}\n[defaults]\nservice_accounts = [\"x\"]\n"
        ));
        assert!(has(&p, "defaults.service_accounts", "[[targets]]"), "{p:?}");
    }

    #[test]
    fn environment_layers_over_the_file() {
        let env: BTreeMap<String, String> = [
            (
                "AMG_ROTATOR__DAEMON__CONCURRENCY".to_string(),
                "3".to_string(),
            ),
            (
                "AMG_ROTATOR__DEFAULTS__GRACE_PERIOD".to_string(),
                "5m".to_string(),
            ),
        ]
        .into();
        let cfg = from_sources(MINIMAL, &env, "t.toml").unwrap();
        assert_eq!(cfg.daemon.concurrency, 3);
        assert_eq!(cfg.targets[0].policy.grace_period, Duration::from_secs(300));

        let env: BTreeMap<String, String> =
            [("AMG_ROTATOR__DAEMON__NOPE".to_string(), "1".to_string())].into();
        let p = from_sources(MINIMAL, &env, "t.toml")
            .unwrap_err()
            .problems();
        assert!(
            p[0].reason.contains("AMG_ROTATOR__DAEMON__NOPE") || p[0].reason.contains("nope"),
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

    #[test]
    fn globs_match_service_accounts() {
        let cfg = load_str(
            "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"ci-*\", \"terraform\"]\n",
        )
        .unwrap();
        let t = &cfg.targets[0];
        assert!(t.matches_service_account("ci-deploy"));
        assert!(t.matches_service_account("terraform"));
        assert!(!t.matches_service_account("terraform2"));
        assert_eq!(
            t.exact_service_accounts().collect::<Vec<_>>(),
            ["terraform"]
        );
    }
}
