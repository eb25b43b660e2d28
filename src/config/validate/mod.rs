//! Validation: from the raw shapes `load` reads to the typed `Config`, one small validator per
//! concern.
//!
//! Every validator writes to one `Checker`, which collects each problem with its key, value and
//! reason instead of stopping at the first; on a bad value a validator records it and carries on
//! with the default. The sections are checked in the order of the file ([daemon], [log], [aws],
//! [defaults], each [[targets]] entry, [permissions], [export], [coordination]), and that order is the order of the
//! messages: tests compare them exactly. Validators never read the file or the environment
//! (that is `load`'s job) and never talk to AWS.

mod aws;
mod check;
mod coordination;
mod credentials;
mod daemon;
mod export;
mod names;
mod permissions;
mod rotation;
mod secret;
mod target;

pub use check::{parse_duration, role_names};
pub use credentials::MIGRATED_DEFAULT;
pub use daemon::parse_cron;
pub use names::{is_workspace_id, render_template, secret_name_problem, TEMPLATE_VARS};

use super::load::{RawConfig, RawScope};
use super::{Config, ConfigError};
use check::Checker;

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut c = Checker::new();
    let (daemon, cron) = daemon::daemon_section(&mut c, &raw.daemon);
    let log = daemon::log_section(&mut c, &raw.log);
    let aws = aws::aws_section(&mut c, &raw.aws);
    refuse_target_keys(&mut c, &raw.defaults);

    if raw.targets.is_empty() {
        c.fail(
            "targets",
            "",
            "no [[targets]]: name at least one workspace and service account to manage",
        );
    }
    // Walking a year of the schedule costs milliseconds: once, not per target.
    let gap = cron.as_ref().and_then(daemon::longest_gap);
    let mut targets = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let at = format!("targets[{i}]");
        let s = t.over(&raw.defaults);
        targets.push(target::validate_target(&mut c, &at, &s, gap));
    }

    let permissions = permissions::validate_permissions(&mut c, &raw.permissions);
    let export = export::export_section(&mut c, &raw.export);
    let coordination = coordination::coordination_section(&mut c, &raw.coordination);

    if c.problems.is_empty() {
        Ok(Config {
            daemon,
            log,
            aws,
            targets,
            permissions,
            export,
            coordination,
            warnings: c.warnings,
        })
    } else {
        Err(ConfigError::Invalid(c.problems))
    }
}

/// `[defaults]` shares its shape with `[[targets]]`, but what a target manages is its own.
fn refuse_target_keys(c: &mut Checker, defaults: &RawScope) {
    for (key, set) in [
        ("name", defaults.name.is_some()),
        ("workspace_ids", defaults.workspace_ids.is_some()),
        ("workspace_tags", defaults.workspace_tags.is_some()),
        ("service_accounts", defaults.service_accounts.is_some()),
        ("api_keys", defaults.api_keys.is_some()),
    ] {
        if set {
            c.fail(
                format!("defaults.{key}"),
                "",
                "belongs in a [[targets]] entry, not in [defaults]",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{has, load_str, problems, MINIMAL};
    use crate::config::{Strategy, DEFAULT_LISTEN};
    use crate::model::SecretFormat;
    use std::time::Duration;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let cfg = load_str(MINIMAL).unwrap();
        let p = &cfg.targets[0].policy;
        assert_eq!(p.strategy, Strategy::Overlap);
        assert_eq!(p.token_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(p.rotate_before, Duration::from_secs(7 * 86400));
        assert_eq!(p.grace_period, Duration::from_secs(2 * 3600));
        assert_eq!(p.secret_format, SecretFormat::Json);
        assert_eq!(cfg.daemon.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(cfg.daemon.concurrency, 8);
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
    fn an_api_key_migrates_by_default_under_its_own_name_and_a_bad_name_is_refused() {
        use crate::config::Manages;
        let keys = "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\napi_keys = [\"sync\"]\napi_key_role = \"EDITOR\"\n";
        let cfg = load_str(keys).unwrap();
        let Manages::ApiKeys { migrate_to, .. } = &cfg.targets[0].manages else {
            panic!("api keys")
        };
        assert_eq!(migrate_to.as_deref(), Some("{key_name}"));
        let off = load_str(&format!("{keys}migrate_api_keys = false\n")).unwrap();
        assert!(matches!(
            off.targets[0].manages,
            Manages::ApiKeys {
                migrate_to: None,
                ..
            }
        ));
        let p = problems(&format!("{keys}migrated_service_account = \"{{sa}}-x\"\n"));
        assert!(
            has(
                &p,
                "targets[0].migrated_service_account",
                "{sa} is no placeholder"
            ),
            "{p:?}"
        );
        let p = problems(&format!(
            "{keys}migrated_service_account = \"{}\"\n",
            "x".repeat(129)
        ));
        assert!(
            has(&p, "targets[0].migrated_service_account", "1 to 128"),
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
}
