//! Validation: from the raw shapes to `Config`, collecting every problem.

use std::net::SocketAddr;
use std::time::Duration;

use super::load::{RawConfig, RawPermissions, RawScope};
use super::{
    is_glob, Config, ConfigError, DaemonSettings, DeclaredBindings, LogFormat, LogSettings,
    PermissionSettings, Policy, Problem, Strategy, Target, WorkspaceSelector, DEFAULT_LISTEN,
    MAX_TOKEN_TTL,
};
use crate::aws::caller::RetryPolicy;
use crate::aws::connect::AwsSettings;
use crate::model::{Role, SecretFormat};

struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker {
    fn fail(
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

    fn warn(
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

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
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

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Human durations: `30d`, `12h`, `90s`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("not a duration ({e}); write a number and a unit, like \"30d\", \"12h\", \"15m\" or \"90s\"")
    })
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub fn is_workspace_id(id: &str) -> bool {
    id.len() == 12
        && id.starts_with("g-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The placeholders a secret-name template may use.
pub const TEMPLATE_VARS: [&str; 5] = [
    "workspace_id",
    "workspace_name",
    "service_account",
    "key_name",
    "region",
];

/// Fills `{name}` placeholders. Unknown placeholders are left as they are (validation refuses them).
pub fn render_template(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Why `name` cannot be a Secrets Manager secret name, if it cannot.
pub fn secret_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 512 {
        return Some(format!(
            "a secret name is 1 to 512 characters, this is {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        return Some(format!(
            "a secret name may contain only letters, digits and /_+=.@-, not {c:?}"
        ));
    }
    None
}

fn check_template(c: &mut Checker, key: &str, template: &str) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            c.fail(key, quote(template), "an unclosed '{' in the template");
            return;
        };
        let var = &after[..close];
        if !TEMPLATE_VARS.contains(&var) {
            c.fail(
                key,
                quote(template),
                format!(
                    "unknown placeholder {{{var}}}; use {}",
                    TEMPLATE_VARS.map(|v| format!("{{{v}}}")).join(", ")
                ),
            );
            return;
        }
        rest = &after[close + 1..];
    }
    // Worst-case-long but valid values, to catch literal characters and length.
    let sample = render_template(
        template,
        &[
            ("workspace_id", "g-0123456789"),
            ("workspace_name", "workspace"),
            ("service_account", "service-account"),
            ("key_name", "key-name"),
            ("region", "us-east-1"),
        ],
    );
    if let Some(reason) = secret_name_problem(&sample) {
        c.fail(
            key,
            quote(template),
            format!("yields {sample:?}, and {reason}"),
        );
    } else if !template.contains("{service_account}") && !template.contains("{key_name}") {
        c.fail(
            key,
            quote(template),
            "must contain {service_account} (or {key_name}), or every credential of the target would share one secret",
        );
    } else if !template.contains("{workspace_id}") && !template.contains("{workspace_name}") {
        c.warn(
            key,
            quote(template),
            "has neither {workspace_id} nor {workspace_name}: two workspaces with a service account of the same name would share a secret (such clashes are refused at run time)",
        );
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut c = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
    };

    // [daemon]
    let d = &raw.daemon;
    let schedule = d.schedule.clone().unwrap_or_else(|| "0 */5 * * * *".into());
    let cron = match parse_cron(&schedule) {
        Ok(cron) => Some(cron),
        Err(reason) => {
            c.fail("daemon.schedule", quote(&schedule), reason);
            None
        }
    };
    let listen_text = d.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.fail(
            "daemon.listen",
            quote(&listen_text),
            "not an address and port such as \"0.0.0.0:8947\" or \"127.0.0.1:8947\"",
        );
        DEFAULT_LISTEN.parse().expect("default parses")
    });
    let concurrency = d.concurrency.unwrap_or(8);
    if !(1..=256).contains(&concurrency) {
        c.fail(
            "daemon.concurrency",
            concurrency.to_string(),
            "must be from 1 to 256",
        );
    }
    let daemon = DaemonSettings {
        schedule,
        jitter: c.duration("daemon.jitter", d.jitter.as_deref(), "0s"),
        listen,
        shutdown_timeout: c.duration(
            "daemon.shutdown_timeout",
            d.shutdown_timeout.as_deref(),
            "60s",
        ),
        concurrency: concurrency.clamp(1, 256) as usize,
        stale_after: c.duration("daemon.stale_after", d.stale_after.as_deref(), "2h"),
    };

    // [log]
    let format_text = raw.log.format.clone().unwrap_or_else(|| "auto".into());
    let format = match format_text.to_ascii_lowercase().as_str() {
        "auto" => LogFormat::Auto,
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            c.fail(
                "log.format",
                quote(&format_text),
                "must be \"auto\", \"text\" or \"json\"",
            );
            LogFormat::Auto
        }
    };
    let level = raw.log.level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::builder()
        .parse(&level)
        .is_err()
    {
        c.fail(
            "log.level",
            quote(&level),
            "not a level or filter; use error, warn, info, debug or trace, or a directive like \"amg_token_rotator=debug\"",
        );
    }
    let log = LogSettings { format, level };

    // [aws]
    let a = &raw.aws;
    let max_attempts = a.max_attempts.unwrap_or(6);
    if !(1..=20).contains(&max_attempts) {
        c.fail(
            "aws.max_attempts",
            max_attempts.to_string(),
            "must be from 1 to 20",
        );
    }
    let rate = |c: &mut Checker, key: &str, v: Option<f64>, default: f64| -> f64 {
        let r = v.unwrap_or(default);
        if !(0.0..=10_000.0).contains(&r) || r.is_nan() {
            c.fail(
                key,
                r.to_string(),
                "must be from 0 (no limit) to 10000 requests per second",
            );
            return default;
        }
        r
    };
    let grafana_rate = rate(
        &mut c,
        "aws.grafana_requests_per_second",
        a.grafana_requests_per_second,
        crate::aws::connect::DEFAULT_GRAFANA_RATE,
    );
    let secretsmanager_rate = rate(
        &mut c,
        "aws.secretsmanager_requests_per_second",
        a.secretsmanager_requests_per_second,
        crate::aws::connect::DEFAULT_SECRETSMANAGER_RATE,
    );
    let aws = AwsSettings {
        grafana_rate,
        secretsmanager_rate,
        region: a.region.clone(),
        connect_timeout: c.duration("aws.connect_timeout", a.connect_timeout.as_deref(), "5s"),
        attempt_timeout: c.duration("aws.attempt_timeout", a.attempt_timeout.as_deref(), "20s"),
        retry: RetryPolicy {
            max_attempts: max_attempts.clamp(1, 20) as u32,
            budget: c.duration("aws.retry_budget", a.retry_budget.as_deref(), "60s"),
            ..RetryPolicy::default()
        },
    };

    // [defaults]
    for (key, set) in [
        ("name", raw.defaults.name.is_some()),
        ("workspace_ids", raw.defaults.workspace_ids.is_some()),
        ("workspace_tags", raw.defaults.workspace_tags.is_some()),
        ("service_accounts", raw.defaults.service_accounts.is_some()),
        ("api_keys", raw.defaults.api_keys.is_some()),
    ] {
        if set {
            c.fail(
                format!("defaults.{key}"),
                "",
                "belongs in a [[targets]] entry, not in [defaults]",
            );
        }
    }

    // [[targets]]
    if raw.targets.is_empty() {
        c.fail(
            "targets",
            "",
            "no [[targets]]: name at least one workspace and service account to manage",
        );
    }
    let mut targets = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let at = format!("targets[{i}]");
        let s = t.over(&raw.defaults);
        targets.push(validate_target(&mut c, &at, &s, cron.as_ref()));
    }

    let permissions = validate_permissions(&mut c, &raw.permissions);

    if c.problems.is_empty() {
        Ok(Config {
            daemon,
            log,
            aws,
            targets,
            permissions,
            warnings: c.warnings,
        })
    } else {
        Err(ConfigError::Invalid(c.problems))
    }
}

fn validate_target(c: &mut Checker, at: &str, s: &RawScope, cron: Option<&croner::Cron>) -> Target {
    let key = |k: &str| format!("{at}.{k}");
    let label = s.name.clone().unwrap_or_else(|| at.to_owned());

    let workspaces = match (&s.workspace_ids, &s.workspace_tags) {
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
    };

    let service_accounts = s.service_accounts.clone().unwrap_or_default();
    let api_keys = s.api_keys.clone().unwrap_or_default();
    if !service_accounts.is_empty() && !api_keys.is_empty() {
        c.fail(
            key("api_keys"),
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
    let role_of = |c: &mut Checker, k: &str, v: &Option<String>| -> Option<Role> {
        let v = v.as_ref()?;
        let r = Role::parse(v);
        if r.is_none() {
            c.fail(
                key(k),
                quote(v),
                format!("must be one of {}", role_names().join(", ")),
            );
        }
        r
    };
    let api_key_role = role_of(c, "api_key_role", &s.api_key_role).unwrap_or(Role::Viewer);
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
    let service_account_role = role_of(c, "service_account_role", &s.service_account_role);
    if service_accounts.is_empty() && api_keys.is_empty() {
        c.fail(
            key("service_accounts"),
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

    let strategy_text = s.strategy.clone().unwrap_or_else(|| "overlap".into());
    let strategy = match strategy_text.as_str() {
        "overlap" => Strategy::Overlap,
        "recreate" => Strategy::Recreate,
        _ => {
            c.fail(
                key("strategy"),
                quote(&strategy_text),
                "must be \"overlap\" or \"recreate\"",
            );
            Strategy::Overlap
        }
    };
    let token_ttl = c.duration(&key("token_ttl"), s.token_ttl.as_deref(), "30d");
    let rotate_before = c.duration(&key("rotate_before"), s.rotate_before.as_deref(), "7d");
    let grace_period = c.duration(&key("grace_period"), s.grace_period.as_deref(), "1h");
    // Default: a quarter of the rotate-before window, and never so much that a new token is due
    // as soon as it is made.
    let rotation_spread = match s.rotation_spread.as_deref() {
        Some(text) => c.duration(&key("rotation_spread"), Some(text), "0s"),
        None => (rotate_before / 4).min(token_ttl.saturating_sub(rotate_before) / 2),
    };
    if s.rotation_spread.is_some() && rotate_before + rotation_spread >= token_ttl {
        c.fail(
            key("rotation_spread"),
            quote(&show(rotation_spread)),
            format!(
                "rotate_before + rotation_spread must be shorter than token_ttl ({}), or new tokens would be due at once",
                show(token_ttl)
            ),
        );
    }
    let orphan_margin = c.duration(&key("orphan_margin"), s.orphan_margin.as_deref(), "15m");
    let ttl_text = s.token_ttl.clone().unwrap_or_else(|| "30d".into());
    if token_ttl > MAX_TOKEN_TTL {
        c.fail(
            key("token_ttl"),
            quote(&ttl_text),
            "AMG tokens live at most 30 days (secondsToLive 2592000)",
        );
    } else if token_ttl < Duration::from_secs(1) {
        c.fail(
            key("token_ttl"),
            quote(&ttl_text),
            "must be at least one second",
        );
    }
    if rotate_before >= token_ttl {
        c.fail(
            key("rotate_before"),
            quote(&show(rotate_before)),
            format!("must be shorter than token_ttl ({}), or every token would be due as soon as it is made", show(token_ttl)),
        );
    }
    if grace_period >= rotate_before {
        c.fail(
            key("grace_period"),
            quote(&show(grace_period)),
            format!("must be shorter than rotate_before ({}), so the old token is deleted before it expires", show(rotate_before)),
        );
    }
    if let Some(cron) = cron {
        if let Some(gap) = longest_gap(cron) {
            if gap >= rotate_before {
                c.warn(
                    "daemon.schedule",
                    "",
                    format!(
                        "passes can be {} apart, but {at} rotates {} before expiry: a token can pass its whole rotate-before window between two passes",
                        show(gap),
                        show(rotate_before)
                    ),
                );
            }
        }
    }

    let name_prefix = s.name_prefix.clone().unwrap_or_else(|| "amgrot".into());
    if name_prefix.is_empty()
        || name_prefix.len() > 32
        || !name_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.fail(
            key("name_prefix"),
            quote(&name_prefix),
            "must be 1 to 32 letters, digits, '-' or '_'",
        );
    }

    let secret_name = s
        .secret_name
        .clone()
        .unwrap_or_else(|| "amg-token-rotator/{workspace_id}/{service_account}".into());
    check_template(c, &key("secret_name"), &secret_name);

    let format_text = s.secret_format.clone().unwrap_or_else(|| "json".into());
    let secret_format = match format_text.as_str() {
        "json" => SecretFormat::Json,
        "raw" => SecretFormat::Raw,
        _ => {
            c.fail(
                key("secret_format"),
                quote(&format_text),
                "must be \"json\" or \"raw\"",
            );
            SecretFormat::Json
        }
    };
    if !api_keys.is_empty() {
        if secret_format == SecretFormat::Raw {
            c.fail(
                key("secret_format"),
                "\"raw\"",
                "API keys cannot be listed, so the secret's JSON is the record of the live key: use \"json\"",
            );
        }
        if strategy == Strategy::Recreate {
            c.fail(
                key("strategy"),
                "\"recreate\"",
                "API keys are rotated with \"overlap\" only",
            );
        }
    }
    let secret_tags = s.secret_tags.clone().unwrap_or_default();
    for (k, v) in &secret_tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            c.fail(
                format!("{at}.secret_tags.{k}"),
                quote(v),
                "a tag key is 1 to 128 characters and not \"aws:\"-prefixed; a value at most 256",
            );
        }
    }
    if let Some(url) = &s.grafana_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            c.fail(
                key("grafana_url"),
                quote(url),
                "must start with http:// or https://",
            );
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

    Target {
        label,
        workspaces,
        service_accounts,
        api_keys: api_keys.clone(),
        api_key_role,
        region: s.region.clone(),
        role_arn: s.role_arn.clone(),
        policy: Policy {
            strategy,
            token_ttl,
            rotate_before,
            rotation_spread,
            grace_period,
            orphan_margin,
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
            delete_expired_foreign_tokens: s.delete_expired_foreign_tokens.unwrap_or(false),
            service_account_role,
        },
    }
}

fn validate_permissions(c: &mut Checker, raw: &RawPermissions) -> PermissionSettings {
    let mut bindings = Vec::new();
    for (i, b) in raw.bindings.iter().enumerate() {
        let at = format!("permissions.bindings[{i}]");
        let role = match b.role.as_deref().map(|r| (r, Role::parse(r))) {
            Some((_, Some(role))) => role,
            Some((r, None)) => {
                c.fail(
                    format!("{at}.role"),
                    quote(r),
                    format!("must be one of {}", role_names().join(", ")),
                );
                Role::Viewer
            }
            None => {
                c.fail(
                    format!("{at}.role"),
                    "",
                    format!("missing: one of {}", role_names().join(", ")),
                );
                Role::Viewer
            }
        };
        if b.users.is_empty() && b.groups.is_empty() {
            c.fail(&at, "", "names no user or group");
        }
        for (field, ids) in [("users", &b.users), ("groups", &b.groups)] {
            for (j, id) in ids.iter().enumerate() {
                if id.is_empty() || id.len() > 47 {
                    c.fail(
                        format!("{at}.{field}[{j}]"),
                        quote(id),
                        "an IAM Identity Center ID is 1 to 47 characters",
                    );
                }
            }
        }
        if let Some(ids) = &b.workspace_ids {
            for (j, id) in ids.iter().enumerate() {
                if !is_workspace_id(id) {
                    c.fail(
                        format!("{at}.workspace_ids[{j}]"),
                        quote(id),
                        "not a workspace ID (\"g-\" and 10 lowercase hex digits)",
                    );
                }
            }
        }
        bindings.push(DeclaredBindings {
            workspace_ids: b.workspace_ids.clone(),
            role,
            users: b.users.clone(),
            groups: b.groups.clone(),
        });
    }
    let enforce = raw.enforce.unwrap_or(false);
    if enforce && bindings.is_empty() {
        c.fail(
            "permissions.enforce",
            "true",
            "enforcement needs [[permissions.bindings]] to enforce",
        );
    }
    PermissionSettings {
        audit: raw.audit.unwrap_or(false) || enforce,
        enforce,
        bindings,
    }
}

/// Cron with seconds, as tokio-cron-scheduler reads it: `sec min hour day-of-month month day-of-week`.
pub fn parse_cron(schedule: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map_err(|e| {
            format!("not a cron schedule ({e}); six fields are needed, seconds first: \"0 */5 * * * *\" runs every five minutes")
        })
}

/// The longest wait between two consecutive runs over the next year (bounded in steps).
fn longest_gap(cron: &croner::Cron) -> Option<Duration> {
    let start = chrono::Utc::now();
    let horizon = start + chrono::Duration::days(366);
    let mut prev = start;
    let mut longest = chrono::Duration::zero();
    for t in cron.iter_after(start).take(20_000) {
        longest = longest.max(t - prev);
        prev = t;
        if t > horizon {
            break;
        }
    }
    longest.to_std().ok()
}

/// Every role name Grafana accepts, for messages.
pub fn role_names() -> [&'static str; 3] {
    [
        Role::Admin.as_str(),
        Role::Editor.as_str(),
        Role::Viewer.as_str(),
    ]
}
