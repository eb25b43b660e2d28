//! Reading the configuration: the TOML file, the process environment, and their layering.
//!
//! The file is layered with `AMG_ROTATOR__SECTION__KEY` variables through the `config` crate and
//! deserialized into raw, string-typed shapes that refuse unknown keys; `validate` turns those
//! into `Config`. This file is the only place in the crate that reads the environment: the
//! daemon's own variables, systemd's (`systemd_env`) and the test-only failpoint
//! (`failpoint_env`). It never decides whether a value is acceptable: that is validation's job,
//! so that every problem is reported with its key, in one list.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::validate::validate;
use super::{Config, ConfigError, Problem, ENV_PREFIX};

// ---------------------------------------------------------------------------------------------
// Raw shapes: what the file and the environment may say. Strings where the value needs parsing,
// so that validation can name the key and show the value.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) aws: RawAws,
    #[serde(default)]
    pub(super) defaults: RawScope,
    #[serde(default)]
    pub(super) targets: Vec<RawScope>,
    #[serde(default)]
    pub(super) permissions: RawPermissions,
    #[serde(default)]
    pub(super) export: RawExport,
    #[serde(default)]
    pub(super) coordination: RawCoordination,
}

/// `[coordination]`: how several replicas share the work.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoordination {
    pub(super) mode: Option<String>,
    pub(super) table: Option<String>,
    pub(super) region: Option<String>,
    pub(super) lease_duration: Option<String>,
    pub(super) heartbeat: Option<String>,
}

/// `[export]`: where `once` sends the metrics of its pass.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    pub(super) pushgateway_url: Option<String>,
    pub(super) pushgateway_job: Option<String>,
    pub(super) pushgateway_instance: Option<String>,
    pub(super) textfile_dir: Option<String>,
    pub(super) textfile_name: Option<String>,
    pub(super) emf_namespace: Option<String>,
    pub(super) emf_dimensions: Option<Vec<Vec<String>>>,
    pub(super) emf_static_dimensions: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPermissions {
    pub(super) audit: Option<bool>,
    pub(super) enforce: Option<bool>,
    #[serde(default)]
    pub(super) bindings: Vec<RawBindings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBindings {
    pub(super) workspace_ids: Option<Vec<String>>,
    pub(super) role: Option<String>,
    #[serde(default)]
    pub(super) users: Vec<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) schedule: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) listen: Option<String>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) concurrency: Option<i64>,
    pub(super) stale_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) region: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) attempt_timeout: Option<String>,
    pub(super) max_attempts: Option<i64>,
    pub(super) retry_budget: Option<String>,
    pub(super) grafana_requests_per_second: Option<f64>,
    pub(super) secretsmanager_requests_per_second: Option<f64>,
}

/// `[defaults]` and each `[[targets]]` share one shape; the target-only keys are refused in
/// `[defaults]` by validation.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScope {
    // Target-only.
    pub(super) name: Option<String>,
    pub(super) workspace_ids: Option<Vec<String>>,
    pub(super) workspace_tags: Option<BTreeMap<String, String>>,
    pub(super) service_accounts: Option<Vec<String>>,
    pub(super) api_keys: Option<Vec<String>>,
    // Either.
    pub(super) api_key_role: Option<String>,
    pub(super) service_account_role: Option<String>,
    pub(super) region: Option<String>,
    pub(super) role_arn: Option<String>,
    pub(super) strategy: Option<String>,
    pub(super) token_ttl: Option<String>,
    pub(super) rotate_before: Option<String>,
    pub(super) rotation_spread: Option<String>,
    pub(super) grace_period: Option<String>,
    pub(super) quiet_period: Option<String>,
    pub(super) max_overlap: Option<String>,
    pub(super) orphan_margin: Option<String>,
    pub(super) audit_interval: Option<String>,
    pub(super) name_prefix: Option<String>,
    pub(super) secret_name: Option<String>,
    pub(super) secret_format: Option<String>,
    pub(super) secret_description: Option<String>,
    pub(super) kms_key_id: Option<String>,
    pub(super) secret_tags: Option<BTreeMap<String, String>>,
    pub(super) verify: Option<bool>,
    pub(super) grafana_url: Option<String>,
    pub(super) liveness_checks: Option<bool>,
    pub(super) delete_expired_foreign_tokens: Option<bool>,
    pub(super) migrate_api_keys: Option<bool>,
    pub(super) migrated_service_account: Option<String>,
}

impl RawScope {
    /// This scope's keys over `base`'s.
    pub(super) fn over(&self, base: &RawScope) -> RawScope {
        macro_rules! pick {
            ($($f:ident),*) => { RawScope { $($f: self.$f.clone().or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            name,
            workspace_ids,
            workspace_tags,
            service_accounts,
            api_keys,
            api_key_role,
            service_account_role,
            region,
            role_arn,
            strategy,
            token_ttl,
            rotate_before,
            rotation_spread,
            grace_period,
            quiet_period,
            max_overlap,
            orphan_margin,
            audit_interval,
            name_prefix,
            secret_name,
            secret_format,
            secret_description,
            kms_key_id,
            secret_tags,
            verify,
            grafana_url,
            liveness_checks,
            delete_expired_foreign_tokens,
            migrate_api_keys,
            migrated_service_account
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Loads `path` layered with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    from_sources(&text, &env, &path.display().to_string())
}

/// Parses TOML text layered with the given `AMG_ROTATOR__*` variables. Pure: tests use it.
pub fn from_sources(
    toml_text: &str,
    env: &BTreeMap<String, String>,
    origin: &str,
) -> Result<Config, ConfigError> {
    let env_map: std::collections::HashMap<String, String> =
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let built = config::Config::builder()
        .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .try_parsing(true)
                .source(Some(env_map)),
        )
        .build()
        .map_err(|e| {
            ConfigError::Invalid(vec![Problem {
                key: origin.into(),
                value: String::new(),
                reason: format!("not valid TOML: {e}"),
            }])
        })?;
    let raw: RawConfig = serde_path_to_error::deserialize(built).map_err(|e| {
        let key = e.path().to_string();
        let env_name = env_name_of(&key);
        let origin = if env.contains_key(&env_name) {
            format!("environment variable {env_name}")
        } else {
            origin.to_owned()
        };
        ConfigError::Invalid(vec![Problem {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            value: String::new(),
            reason: format!("{} (in {origin})", e.inner()),
        }])
    })?;
    validate(raw)
}

/// `defaults.token_ttl` → `AMG_ROTATOR__DEFAULTS__TOKEN_TTL`.
fn env_name_of(key: &str) -> String {
    let mut name = ENV_PREFIX.to_owned();
    for part in key.split('.') {
        name.push_str("__");
        name.push_str(&part.to_ascii_uppercase());
    }
    name
}

// ---------------------------------------------------------------------------------------------
// What other programs say through the environment.

/// `AMG_ROTATOR_FAILPOINT=<name>[:<n>]`, read by the test-only crash points.
#[cfg(feature = "failpoints")]
pub fn failpoint_env() -> Option<(String, u32)> {
    let v = std::env::var("AMG_ROTATOR_FAILPOINT").ok()?;
    let (name, nth) = v.split_once(':').unwrap_or((&v, "1"));
    Some((name.to_owned(), nth.parse().unwrap_or(1)))
}

/// What systemd tells a service through its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdEnv {
    /// `NOTIFY_SOCKET`: where to send READY=1, WATCHDOG=1 and STOPPING=1.
    pub notify_socket: Option<String>,
    /// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID` unset or ours).
    pub watchdog: Option<Duration>,
}

/// Reads systemd's variables; outside systemd both are `None`.
pub fn systemd_env() -> SystemdEnv {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let for_us = var("WATCHDOG_PID").is_none_or(|p| p == std::process::id().to_string());
    SystemdEnv {
        notify_socket: var("NOTIFY_SOCKET"),
        watchdog: var("WATCHDOG_USEC")
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_sources;
    use crate::config::testing::{load_str, problems, MINIMAL};
    use std::collections::BTreeMap;
    use std::time::Duration;

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
}
