//! Bad input, each with a clear message naming the key or value and a documented exit code
//! (README "Commands": 0 ok, 1 a credential failed or is blocked, 2 invalid configuration,
//! 3 the daemon could not start):
//!
//! - configuration (exit 2, every command): malformed TOML, unknown keys (file and environment),
//!   bad durations, invalid workspace IDs, no targets, a TTL above 30 days, secret-name templates
//!   that cannot yield a valid name;
//! - at run time (exit 1, per credential): a template that yields an invalid name for one
//!   workspace, unreachable endpoints, AccessDenied from AMG and from Secrets Manager, a secret
//!   holding foreign content (left untouched, reported, never overwritten), a secret scheduled
//!   for deletion;
//! - the daemon's listen address taken (exit 3);
//! - a property test of `config::from_sources`: whatever the text or the values, it never
//!   panics, and every problem it reports names a key.

mod reliability_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use amg_emulator::{FailRule, Faults, Seed, WorkspaceSeed};
use reliability_support::{closed_port, once, run_bin, write_config, Exit};
use support::{config_for, workspace, Bed};

const WS: &str = "g-1111111111";

// ---------------------------------------------------------------------------------------------
// Configuration: exit code 2, the key and the value named.

/// Runs the binary on `text` with a clean environment plus `env`.
fn with_config(text: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amg-token-rotator"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TARGET: &str =
    "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"terraform\"]\n";

/// Every command refuses `text` with exit code 2 and says each of `needles`.
fn refused(text: &str, env: &[(&str, &str)], needles: &[&str]) {
    for cmd in ["check-config", "once", "plan", "run"] {
        let (code, stdout, stderr) = with_config(text, &[cmd], env);
        assert_eq!(
            code,
            Some(2),
            "{cmd} must refuse:\n{text}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            stderr.contains("bad.toml") && stderr.contains("is not usable"),
            "{cmd}: {stderr}"
        );
        for n in needles {
            assert!(stderr.contains(n), "{cmd}: missing {n:?} in:\n{stderr}");
        }
    }
}

#[test]
fn malformed_toml_is_refused_with_where() {
    for (text, at) in [
        ("[[targets]\n", "line 1"),
        ("[defaults]\ntoken_ttl = \"30d\n", "line 2"),
        (
            "[defaults]\ntoken_ttl = \"1d\"\ntoken_ttl = \"2d\"\n",
            "line 3",
        ),
        ("[defaults]\ntoken_ttl = \n", "line 2"),
        ("\u{0}garbage", "line 1"),
    ] {
        refused(text, &[], &["not valid TOML", at]);
    }
}

/// The verification sends a key: never in the clear to another host, never to a URL that
/// carries credentials or a query. Loopback hosts (the tests, the demo) may use http://.
#[test]
fn a_grafana_url_that_would_expose_the_key_is_refused() {
    for (url, needle) in [
        (
            "http://grafana.example.com",
            "http:// would send the key in the clear: use https://",
        ),
        (
            "http://{workspace_id}.grafana.internal",
            "http:// would send the key in the clear",
        ),
        (
            "https://admin:pw@grafana.example.com",
            "must not carry a user name or password",
        ),
        ("ftp://grafana.example.com", "scheme ftp:// is not https://"),
        ("grafana.example.com", "not a URL"),
        (
            "https://{workspace_name}.grafana.example.com",
            "the host may hold only the placeholder {workspace_id}",
        ),
        (
            "https://grafana.example.com:{service_account}/x",
            "the host may hold only the placeholder {workspace_id}",
        ),
    ] {
        refused(
            &format!("{TARGET}grafana_url = \"{url}\"\n"),
            &[],
            &["targets[0].grafana_url", url, needle],
        );
    }
    for url in [
        "https://grafana.example.com",
        "https://{workspace_id}.grafana-workspace.eu-west-1.amazonaws.com",
        "http://127.0.0.1:3000/_grafana/{workspace_id}",
        "http://localhost:3000",
        "https://grafana.example.com/{workspace_name}/{service_account}",
    ] {
        let (code, _, stderr) = with_config(
            &format!("{TARGET}grafana_url = \"{url}\"\n"),
            &["check-config"],
            &[],
        );
        assert_eq!(code, Some(0), "{url}: {stderr}");
    }
}

#[test]
fn unknown_keys_are_refused_not_ignored() {
    refused(
        &format!("[defaults]\ntoken_tll = \"1d\"\n\n{TARGET}"),
        &[],
        &["defaults", "unknown field `token_tll`"],
    );
    refused(
        &format!("[deamon]\nschedule = \"0 * * * * *\"\n\n{TARGET}"),
        &[],
        &["unknown field `deamon`"],
    );
    refused(
        &TARGET.replace("service_accounts", "service_acounts"),
        &[],
        &["targets[0]", "unknown field `service_acounts`"],
    );
    refused(
        TARGET,
        &[("AMG_ROTATOR__AWS__RETRY_BUGDET", "5s")],
        &[
            "unknown field `retry_bugdet`",
            "AMG_ROTATOR__AWS__RETRY_BUGDET",
        ],
    );
}

#[test]
fn bad_durations_name_the_key_and_the_value() {
    for (line, needle) in [
        (
            "grace_period = \"soon\"",
            "targets[0].grace_period = \"soon\": not a duration",
        ),
        (
            "token_ttl = \"30\"",
            "targets[0].token_ttl = \"30\": not a duration",
        ),
        (
            "rotate_before = \"-1h\"",
            "targets[0].rotate_before = \"-1h\": not a duration",
        ),
        (
            "orphan_margin = \"1 fortnight\"",
            "targets[0].orphan_margin = \"1 fortnight\"",
        ),
    ] {
        refused(&format!("[defaults]\n{line}\n\n{TARGET}"), &[], &[needle]);
    }
    refused(
        TARGET,
        &[("AMG_ROTATOR__AWS__RETRY_BUDGET", "forever")],
        &["aws.retry_budget = \"forever\": not a duration"],
    );
    refused(
        &format!("[daemon]\nshutdown_timeout = \"10 parsecs\"\n\n{TARGET}"),
        &[],
        &["daemon.shutdown_timeout = \"10 parsecs\""],
    );
}

#[test]
fn invalid_workspace_ids_are_named_one_by_one() {
    refused(
        "[[targets]]\nworkspace_ids = [\"g-12\", \"G-0123456789\", \"g-0123456789a\", \"g-012345678z\"]\nservice_accounts = [\"a\"]\n",
        &[],
        &[
            "targets[0].workspace_ids[0] = \"g-12\": not a workspace ID",
            "targets[0].workspace_ids[1] = \"G-0123456789\"",
            "targets[0].workspace_ids[2] = \"g-0123456789a\"",
            "targets[0].workspace_ids[3] = \"g-012345678z\"",
        ],
    );
}

#[test]
fn no_targets_is_refused() {
    for text in ["", "[defaults]\ntoken_ttl = \"30d\"\n", "targets = []\n"] {
        refused(text, &[], &["targets: no [[targets]]"]);
    }
    refused(
        "[[targets]]\nservice_accounts = [\"a\"]\n",
        &[],
        &["targets[0]: names no workspace"],
    );
    refused(
        "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\n",
        &[],
        &["targets[0].service_accounts: names no service account"],
    );
}

#[test]
fn a_ttl_above_30_days_is_refused() {
    refused(
        &format!("[defaults]\ntoken_ttl = \"31d\"\n\n{TARGET}"),
        &[],
        &["targets[0].token_ttl = \"31d\": AMG tokens live at most 30 days"],
    );
    refused(
        TARGET,
        &[("AMG_ROTATOR__DEFAULTS__TOKEN_TTL", "720h 1s")],
        &["targets[0].token_ttl = \"720h 1s\""],
    );
}

#[test]
fn secret_name_templates_that_cannot_yield_a_valid_name_are_refused() {
    for (template, needle) in [
        (
            "bad name/{service_account}",
            "may contain only letters, digits and /_+=.@-, not ' '",
        ),
        ("{workspace_id}/{sa}", "unknown placeholder {sa}"),
        ("x/{service_account", "an unclosed '{'"),
        ("rotator/{workspace_id}", "must contain {service_account}"),
    ] {
        refused(
            &format!("[defaults]\nsecret_name = {template:?}\n\n{TARGET}"),
            &[],
            &[&format!("targets[0].secret_name = {template:?}"), needle],
        );
    }
    let long = format!("{}/{{service_account}}", "x".repeat(520));
    refused(
        &format!("[defaults]\nsecret_name = {long:?}\n\n{TARGET}"),
        &[],
        &["a secret name is 1 to 512 characters"],
    );
}

// ---------------------------------------------------------------------------------------------
// At run time: exit code 1, per credential, the cause named.

fn seed(workspaces: Vec<WorkspaceSeed>) -> Seed {
    Seed {
        workspaces,
        ..Seed::default()
    }
}

/// `once` with a short retry budget (unreachable endpoints are retried up to it).
async fn pass(bed: &Bed, cfg: &Path, env: &[(&str, &str)]) -> Exit {
    let mut all = vec![("AMG_ROTATOR__AWS__RETRY_BUDGET", "2s")];
    all.extend_from_slice(env);
    let r = once(bed, cfg, &all).await;
    assert!(
        r.elapsed < Duration::from_secs(30),
        "a failing pass must end promptly: {:?}\n{}",
        r.elapsed,
        r.all_output()
    );
    r
}

/// The `once` line of one credential.
fn line_of<'a>(r: &'a Exit, ws: &str, sa: &str) -> &'a str {
    let marker = format!(" {ws} {sa} -> ");
    r.stdout
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("no line for {sa}:\n{}", r.all_output()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_invalid_for_one_workspace_fails_that_credential_only() {
    let mut odd = workspace("g-2222222222", &[("terraform", &[])]);
    odd.name = Some("team a".into()); // a space: not allowed in a secret name
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])]), odd])).await;
    let cfg = write_config(
        &bed,
        "template",
        &config_for(
            &[WS, "g-2222222222"],
            &["terraform"],
            "secret_name = \"{workspace_name}/{service_account}\"",
        ),
    );
    let r = pass(&bed, &cfg, &[]).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    let bad = line_of(&r, "g-2222222222", "terraform");
    assert!(
        bad.starts_with("FAILED")
            && bad.contains(
                "secret_name \"{workspace_name}/{service_account}\" yields \"team a/terraform\""
            ),
        "{bad}"
    );
    assert!(
        line_of(&r, WS, "terraform").starts_with("changed"),
        "{}",
        r.stdout
    );
    assert!(bed.versions("ws-1111/terraform").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoints_fail_each_credential_promptly() {
    let bed = Bed::start(seed(vec![workspace(WS, &[("a", &[]), ("b", &[])])])).await;
    let cfg = write_config(&bed, "unreachable", &config_for(&[WS], &["a", "b"], ""));
    let closed = format!("http://127.0.0.1:{}", closed_port());
    for var in [
        "AWS_ENDPOINT_URL_GRAFANA",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    ] {
        let r = pass(&bed, &cfg, &[(var, closed.as_str())]).await;
        assert_eq!(r.code(), Some(1), "{var}: {}", r.all_output());
        for sa in ["a", "b"] {
            let line = line_of(&r, WS, sa);
            assert!(
                line.starts_with("FAILED") && line.contains("could not reach the service"),
                "{var}: {line}"
            );
        }
        println!(
            "bad input {var} unreachable: pass {:.2} s",
            r.elapsed.as_secs_f64()
        );
    }
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_from_amg_or_secrets_manager_is_reported_per_credential() {
    let bed = Bed::start(seed(vec![workspace(WS, &[("a", &[]), ("b", &[])])])).await;
    let cfg = write_config(&bed, "denied", &config_for(&[WS], &["a", "b"], ""));

    bed.amg.set_faults(Faults {
        fail_nth: vec![FailRule::new("*", 1, "AccessDeniedException").times(10_000)],
        ..Faults::default()
    });
    let r = pass(&bed, &cfg, &[]).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    for sa in ["a", "b"] {
        let line = line_of(&r, WS, sa);
        assert!(
            line.starts_with("FAILED") && line.contains("access denied"),
            "AMG: {line}"
        );
    }
    assert!(bed.proxy.calls().iter().all(|op| op != "PutSecretValue"));

    bed.amg.set_faults(Faults::default());
    bed.amg.clear_calls();
    bed.proxy.fail("*", u32::MAX, 400, "AccessDeniedException");
    let r = pass(&bed, &cfg, &[]).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    for sa in ["a", "b"] {
        let line = line_of(&r, WS, sa);
        assert!(
            line.starts_with("FAILED") && line.contains("access denied"),
            "Secrets Manager: {line}"
        );
    }
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken"),
        0,
        "nothing is minted when the secret cannot be read"
    );
    bed.proxy.clear_faults();
    let r = pass(&bed, &cfg, &[]).await;
    assert_eq!(r.code(), Some(0), "{}", r.all_output());
}

/// Everything moto holds for `name`: version IDs with their stages, and the current value.
async fn snapshot(bed: &Bed, name: &str) -> (BTreeMap<String, Vec<String>>, String) {
    let versions = bed.versions(name).await.expect("the secret exists");
    let value = bed
        .sm
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap_or_default()
        .to_owned();
    (versions, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_with_foreign_content_is_left_untouched_and_reported() {
    let legacy = WorkspaceSeed {
        id: "g-8888888888".into(),
        name: Some("legacy".into()),
        grafana_version: Some("10.4".into()),
        ..WorkspaceSeed::default()
    };
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])]), legacy])).await;
    let token_secret = format!("amg-token-rotator/{WS}/terraform");
    let key_secret = "amg-token-rotator/g-8888888888/dashboards";
    for (name, value) in [
        (token_secret.as_str(), "a value someone else put here"),
        (
            key_secret,
            "{\"username\":\"admin\",\"password\":\"hunter2\"}",
        ),
    ] {
        bed.sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
    let before = (
        snapshot(&bed, &token_secret).await,
        snapshot(&bed, key_secret).await,
    );
    let cfg = write_config(
        &bed,
        "foreign",
        &format!(
            "{}\n[[targets]]\nworkspace_ids = [\"g-8888888888\"]\napi_keys = [\"dashboards\"]\napi_key_role = \"VIEWER\"\n",
            config_for(&[WS], &["terraform"], "")
        ),
    );
    for cmd in [
        &["once"][..],
        &["plan"][..],
        &["plan", "--output", "json"][..],
    ] {
        bed.proxy.clear_calls();
        let r = run_bin(&bed, &cfg, cmd, &[], None, Duration::from_secs(60)).await;
        assert_eq!(r.code(), Some(1), "{cmd:?}: {}", r.all_output());
        assert!(
            r.stdout
                .matches("was not written by amg-token-rotator; left untouched")
                .count()
                >= 2,
            "{cmd:?}: both credentials are reported blocked:\n{}",
            r.stdout
        );
        if cmd == ["once"] {
            assert_eq!(
                r.stdout
                    .lines()
                    .filter(|l| l.starts_with("blocked"))
                    .count(),
                2,
                "{}",
                r.stdout
            );
            assert!(r.stderr.contains("credential blocked"), "{}", r.stderr);
        }
        let writes: Vec<String> = bed
            .proxy
            .calls()
            .into_iter()
            .filter(|op| {
                !matches!(
                    op.as_str(),
                    "DescribeSecret" | "GetSecretValue" | "ListSecrets"
                )
            })
            .collect();
        assert!(
            writes.is_empty(),
            "{cmd:?} wrote to Secrets Manager: {writes:?}"
        );
    }
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken")
            + bed.count_calls("CreateWorkspaceApiKey"),
        0,
        "nothing is minted for a secret the rotator may not write"
    );
    let after = (
        snapshot(&bed, &token_secret).await,
        snapshot(&bed, key_secret).await,
    );
    assert_eq!(before, after, "foreign secrets are never overwritten");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_scheduled_for_deletion_is_reported_not_recreated() {
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])])])).await;
    let cfg = write_config(&bed, "deleted", &config_for(&[WS], &["terraform"], ""));
    assert_eq!(pass(&bed, &cfg, &[]).await.code(), Some(0));
    let name = format!("amg-token-rotator/{WS}/terraform");
    bed.sm
        .delete_secret()
        .secret_id(&name)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    bed.amg.clear_calls();
    let r = pass(&bed, &cfg, &[]).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    let line = line_of(&r, WS, "terraform");
    assert!(
        line.starts_with("blocked") && line.contains("scheduled for deletion"),
        "{line}"
    );
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_listen_address_is_exit_code_3_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])])])).await;
    let cfg = write_config(&bed, "listen", &config_for(&[WS], &["terraform"], ""));
    let r = run_bin(
        &bed,
        &cfg,
        &["run"],
        &[("AMG_ROTATOR__DAEMON__LISTEN", addr.as_str())],
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.code(), Some(3), "{}", r.all_output());
    assert!(
        r.stderr
            .contains(&format!("daemon.listen = {addr}: cannot listen")),
        "{}",
        r.stderr
    );
    drop(taken);
}

// ---------------------------------------------------------------------------------------------
// The loader under arbitrary input.

mod loader {
    use std::collections::BTreeMap;

    use amg_token_rotator::config::{from_sources, ConfigError};
    use proptest::prelude::*;

    /// Keys of `[defaults]` / `[[targets]]`.
    const SCOPE_KEYS: &[&str] = &[
        "name",
        "workspace_ids",
        "workspace_tags",
        "service_accounts",
        "api_keys",
        "api_key_role",
        "service_account_role",
        "region",
        "role_arn",
        "strategy",
        "token_ttl",
        "rotate_before",
        "rotation_spread",
        "grace_period",
        "orphan_margin",
        "name_prefix",
        "secret_name",
        "secret_format",
        "secret_description",
        "kms_key_id",
        "secret_tags",
        "verify",
        "grafana_url",
        "liveness_checks",
        "delete_expired_foreign_tokens",
        "migrate_api_keys",
        "migrated_service_account",
    ];
    const SECTION_KEYS: &[(&str, &str)] = &[
        ("daemon", "schedule"),
        ("daemon", "jitter"),
        ("daemon", "listen"),
        ("daemon", "shutdown_timeout"),
        ("daemon", "concurrency"),
        ("daemon", "stale_after"),
        ("log", "format"),
        ("log", "level"),
        ("aws", "region"),
        ("aws", "connect_timeout"),
        ("aws", "attempt_timeout"),
        ("aws", "max_attempts"),
        ("aws", "retry_budget"),
        ("aws", "grafana_requests_per_second"),
        ("aws", "secretsmanager_requests_per_second"),
        ("permissions", "audit"),
        ("permissions", "enforce"),
        ("export", "pushgateway_url"),
        ("export", "pushgateway_job"),
        ("export", "pushgateway_instance"),
        ("export", "textfile_dir"),
        ("export", "textfile_name"),
        ("export", "emf_namespace"),
        ("export", "emf_dimensions"),
        ("export", "emf_static_dimensions"),
    ];
    const BASE: &str =
        "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"terraform\"]\n";

    /// Cases per property: `AMG_FUZZ_CASES`, default 128 (a few seconds in all).
    fn cases() -> u32 {
        std::env::var("AMG_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128)
    }

    /// A TOML basic string holding `s`.
    fn toml_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("\\u{:04X}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A TOML value of any type, biased toward what the keys expect.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>().prop_map(|s| toml_string(&s)),
            "-?[0-9]{0,12} ?(ms|s|m|h|d|w|y|fortnight|)".prop_map(|s| toml_string(&s)),
            "(g-)?[0-9a-fA-Z]{0,14}".prop_map(|s| toml_string(&s)),
            "[a-z{}_/ .@-]{0,40}".prop_map(|s| toml_string(&s)),
            "(\\*|[0-9/,-]{1,5})( (\\*|[0-9/,-]{1,5})){0,6}".prop_map(|s| toml_string(&s)),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1.0e12f64..1.0e12).prop_map(|f| format!("{f:e}")),
            any::<bool>().prop_map(|b| b.to_string()),
            proptest::collection::vec("[a-zA-Z0-9*?_-]{0,10}", 0..4).prop_map(|v| format!(
                "[{}]",
                v.iter()
                    .map(|s| toml_string(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            proptest::collection::btree_map("[a-z:]{0,6}", "[a-z]{0,6}", 0..3).prop_map(|m| {
                format!(
                    "{{ {} }}",
                    m.iter()
                        .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        ]
    }

    /// Keys whose problem a bad value of `key` may show up under instead (relations between
    /// keys are checked on the later one, e.g. rotate_before against token_ttl).
    fn related(key: &str) -> &'static [&'static str] {
        match key {
            "token_ttl" => &["rotate_before"],
            "rotate_before" => &["grace_period", "daemon.schedule"],
            "workspace_tags" => &["workspace_ids"],
            "api_keys" => &["api_key_role", "secret_format", "strategy"],
            "secret_format" | "strategy" => &["api_keys"],
            "enforce" => &["permissions.enforce"],
            _ => &[],
        }
    }

    /// Every problem names a key and says why; the message shows every one of them.
    fn check_names(result: &Result<amg_token_rotator::config::Config, ConfigError>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(e) => {
                let text = e.to_string();
                let problems = e.problems();
                assert!(!problems.is_empty(), "an error without problems: {text}");
                for p in &problems {
                    assert!(!p.key.trim().is_empty(), "a problem names no key: {p:?}");
                    assert!(
                        !p.reason.trim().is_empty(),
                        "a problem gives no reason: {p:?}"
                    );
                    assert!(text.contains(&p.key), "{text}");
                }
                problems.iter().map(|p| p.key.clone()).collect()
            }
        }
    }

    fn assert_names(keys: &[String], key: &str, text: &str) {
        let leaf = key.rsplit('.').next().unwrap();
        let ok = keys
            .iter()
            .any(|k| k.contains(leaf) || related(leaf).iter().any(|r| k.contains(r)));
        assert!(
            ok,
            "the problems {keys:?} do not name {key} (or a key it relates to):\n{text}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// A value of any type for a key of `[defaults]` or of the target.
        #[test]
        fn a_bad_scope_value_is_named(
            key in proptest::sample::select(SCOPE_KEYS),
            value in value(),
            in_target in any::<bool>(),
        ) {
            let mut target = vec![
                ("workspace_ids", "[\"g-0123456789\"]".to_owned()),
                ("service_accounts", "[\"terraform\"]".to_owned()),
            ];
            let mut defaults = String::new();
            if in_target {
                target.retain(|(k, _)| *k != key);
                target.push((key, value));
            } else {
                defaults = format!("{key} = {value}\n");
            }
            let lines: Vec<String> = target.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let text = format!("[defaults]\n{defaults}\n[[targets]]\n{}\n", lines.join("\n"));
            let result = from_sources(&text, &BTreeMap::new(), "fuzz.toml");
            let keys = check_names(&result);
            if !keys.is_empty() {
                assert_names(&keys, key, &text);
            }
        }

        /// A value of any type for a key of `[daemon]`, `[log]`, `[aws]` or `[permissions]`.
        #[test]
        fn a_bad_section_value_is_named(
            (section, key) in proptest::sample::select(SECTION_KEYS),
            value in value(),
        ) {
            let text = format!("[{section}]\n{key} = {value}\n\n{BASE}");
            let result = from_sources(&text, &BTreeMap::new(), "fuzz.toml");
            let keys = check_names(&result);
            if !keys.is_empty() {
                assert_names(&keys, &format!("{section}.{key}"), &text);
            }
        }

        /// Any string in an `AMG_ROTATOR__*` variable, for a known key or not.
        #[test]
        fn a_bad_environment_value_is_named(
            key in proptest::sample::select(SCOPE_KEYS),
            unknown in any::<bool>(),
            value in any::<String>(),
        ) {
            let key = if unknown { format!("{key}x") } else { key.to_owned() };
            let var = format!("AMG_ROTATOR__DEFAULTS__{}", key.to_ascii_uppercase());
            let env: BTreeMap<String, String> = [(var.clone(), value)].into();
            let result = from_sources(BASE, &env, "fuzz.toml");
            let keys = check_names(&result);
            if unknown {
                prop_assert!(result.is_err(), "an unknown variable {var} was accepted");
                let text = result.err().unwrap().to_string();
                prop_assert!(text.contains(&var), "the unknown variable is not named: {text}");
            }
            if !keys.is_empty() && !unknown {
                assert_names(&keys, &key, "");
            }
        }

        /// Arbitrary TOML-ish text: headers, known and unknown keys, values of any type, junk.
        #[test]
        fn arbitrary_text_never_panics_and_every_problem_names_a_key(
            lines in proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(&[
                        "[defaults]", "[[targets]]", "[aws]", "[daemon]", "[log]",
                        "[permissions]", "[[permissions.bindings]]", "[targets]", "[[defaults]]",
                    ][..]).prop_map(str::to_owned),
                    (proptest::sample::select(SCOPE_KEYS), value())
                        .prop_map(|(k, v)| format!("{k} = {v}")),
                    (proptest::sample::select(SECTION_KEYS), value())
                        .prop_map(|((_, k), v)| format!("{k} = {v}")),
                    "[a-z_.\\[\\]=\"' 0-9{},#-]{0,40}",
                ],
                0..14,
            ),
        ) {
            let text = lines.join("\n");
            let result = from_sources(&text, &BTreeMap::new(), "fuzz.toml");
            check_names(&result);
        }
    }
}
