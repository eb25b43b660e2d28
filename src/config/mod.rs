//! The configuration: one typed struct, loaded and validated once, then passed down.
//!
//! A TOML file (default `/etc/amg-token-rotator/config.toml`) is layered with environment
//! variables `AMG_ROTATOR__SECTION__KEY` through the `config` crate, deserialized into raw
//! string-typed structs that refuse unknown keys, then validated into `Config`. Validation
//! collects every problem with its key, value and reason instead of stopping at the first.
//!
//! - this file: the types the rest of the crate reads, and the public functions;
//! - `load`: reading the file and the environment, and layering `[defaults]` under each target;
//! - `validate/`: one small validator per concern, all writing to one collector of problems.
//!
//! This is the only module that reads the environment, and within it only `load` does: nowhere
//! else in the crate calls `std::env::var`, so every setting of the daemon's own comes from the
//! file or a variable read here (the AWS SDK still reads its own, such as credentials). The
//! configuration never talks to AWS, and a bad value never panics or exits: it becomes a
//! `Problem` for the caller to show.

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
    MIGRATED_DEFAULT, TEMPLATE_VARS,
};

pub const DEFAULT_PATH: &str = "/etc/amg-token-rotator/config.toml";
pub const ENV_PREFIX: &str = "AMG_ROTATOR";
/// Outside the 9100–9999 range the Prometheus wiki allocates to exporters, so it collides with none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8947";
/// AMG's ceiling on secondsToLive.
/// How often each token credential's tokens are listed although nothing is due (and, in the
/// daemon, how long a workspace's service-account listing is remembered when a target selects
/// its accounts by pattern): the longest a change that only a listing shows goes unseen. Four
/// hours keeps a steady pass of the 5-minute schedule at a 48th of the fleet's listings (about
/// 2,700 AMG calls a day for 200 credentials, against 69,000 for a script that lists
/// everything); what it leaves unseen that long is bounded elsewhere: a current token deleted
/// by hand is found at once with `liveness_checks`, and the quota drift an audit reports (an
/// orphan, tokens made by hand, a foreign token expiring) cannot approach AMG's 99 tokens in
/// hours. docs/PERFORMANCE.md has the table of what is seen when. Shrunk to half of
/// `rotate_before` when that is shorter; `0s` lists every credential on every pass.
pub const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

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
    /// The least time a superseded token or key is kept after the promotion, and, where AMG
    /// gives no usage data (API keys; tokens nobody used since), all the time it is kept.
    pub grace_period: Duration,
    /// A superseded token is deleted once its consumers have not used it for this long since
    /// the promotion (AMG's `lastUsedAt`), the grace period being over.
    pub quiet_period: Duration,
    /// The longest a superseded token that is still used is kept after the promotion.
    pub max_overlap: Duration,
    /// An owned token that no secret version references is deleted once older than this.
    pub orphan_margin: Duration,
    /// How often a token credential's tokens are listed when nothing is due (a full audit);
    /// between audits a pass trusts the record of the last clean one (`records::Audit`).
    /// Zero: every pass lists.
    pub audit_interval: Duration,
    pub name_prefix: String,
    pub secret_name: String,
    pub secret_format: SecretFormat,
    pub secret_description: String,
    pub kms_key_id: Option<String>,
    pub secret_tags: BTreeMap<String, String>,
    pub verify: bool,
    /// Overrides `https://<endpoint>` as the base URL used to verify new tokens.
    pub grafana_url: Option<String>,
    /// Also prove the *current* key on every pass, so a key deleted behind the rotator's back
    /// is replaced at once instead of when due (API keys) or at the next audit (tokens, on a
    /// pass that trusts the audit record). Off: the current key is sent nowhere.
    pub liveness_checks: bool,
    pub delete_expired_foreign_tokens: bool,
}

/// What a target manages: the kinds of credential, as data. A target manages service accounts
/// or API keys, never both, and each kind carries only what applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manages {
    /// Service accounts, by exact name or glob, and their tokens.
    ServiceAccounts {
        names: Vec<String>,
        /// Create a missing service account (named exactly) with this role, and report one
        /// whose role differs. `None`: a missing service account is only reported.
        bootstrap: Option<Role>,
    },
    /// Legacy API keys (Grafana 9 and 10 workspaces; removed in 12) by base name: keys cannot
    /// be listed, so no globs.
    ApiKeys {
        names: Vec<String>,
        role: Role,
        /// Where a key goes when its workspace runs Grafana 12 or later: the name template of
        /// the service account (`{key_name}`, `{workspace_id}`) whose tokens then take the
        /// key's place in the same secret. `None`: such a key is blocked (migrated by hand).
        migrate_to: Option<String>,
    },
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
    pub manages: Manages,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub policy: Policy,
}

impl Target {
    /// Whether a service account of this name is one the target manages (by name or glob).
    pub fn matches_service_account(&self, name: &str) -> bool {
        let Manages::ServiceAccounts { names, .. } = &self.manages else {
            return false;
        };
        names.iter().any(|p| {
            if is_glob(p) {
                glob::Pattern::new(p).is_ok_and(|g| g.matches(name))
            } else {
                p == name
            }
        })
    }

    /// The credentials named exactly: API keys, or service accounts not given by glob.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        let names = match &self.manages {
            Manages::ServiceAccounts { names, .. } | Manages::ApiKeys { names, .. } => names,
        };
        let keys = matches!(self.manages, Manages::ApiKeys { .. });
        names
            .iter()
            .filter(move |p| keys || !is_glob(p))
            .map(String::as_str)
    }

    /// A service-account target that names every account exactly (no glob): its accounts are
    /// known without a listing.
    pub fn names_every_service_account(&self) -> bool {
        match &self.manages {
            Manages::ServiceAccounts { names, .. } => !names.iter().any(|p| is_glob(p)),
            Manages::ApiKeys { .. } => false,
        }
    }

    /// Service accounts named exactly (not by glob): their absence is a problem to report.
    pub fn exact_service_accounts(&self) -> impl Iterator<Item = &str> {
        let names: &[String] = match &self.manages {
            Manages::ServiceAccounts { names, .. } => names,
            Manages::ApiKeys { .. } => &[],
        };
        names.iter().filter(|p| !is_glob(p)).map(String::as_str)
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

/// `[export]`: where `once` sends its pass's metrics, for deployments that run it on a
/// schedule and so have no `/metrics` to scrape. Each is off unless configured; `run` ignores
/// them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSettings {
    pub pushgateway: Option<PushgatewaySettings>,
    pub textfile: Option<TextfileSettings>,
    pub emf: Option<EmfSettings>,
}

/// A Prometheus Pushgateway: the pass's metrics replace the group `job`/`instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushgatewaySettings {
    /// The base URL, e.g. `http://pushgateway:9091`, without a trailing slash.
    pub url: String,
    pub job: String,
    pub instance: String,
}

/// node_exporter's textfile collector: `dir/name`, replaced atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextfileSettings {
    pub dir: std::path::PathBuf,
    pub name: String,
}

/// CloudWatch embedded metric format on stdout: one line per credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmfSettings {
    pub namespace: String,
    /// Dimension sets, each of credential labels (`EMF_LABELS`) and static dimension names.
    pub dimensions: Vec<Vec<String>>,
    pub static_dimensions: BTreeMap<String, String>,
}

/// The credential labels an EMF dimension set may name.
pub const EMF_LABELS: [&str; 3] = ["workspace", "service_account", "kind"];

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

/// `[coordination]`: one replica (`Off`), or several sharing the work through leases in a
/// DynamoDB table (`src/coordination`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Coordination {
    #[default]
    Off,
    DynamoDb(LeaseSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub table: String,
    /// The table's region; `None`: `[aws] region`, or the standard chain's.
    pub region: Option<String>,
    /// How long a replica that stops renewing keeps its shards.
    pub lease_duration: std::time::Duration,
    /// How often a replica renews what it holds.
    pub heartbeat: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub log: LogSettings,
    pub aws: AwsSettings,
    pub targets: Vec<Target>,
    pub permissions: PermissionSettings,
    pub export: ExportSettings,
    pub coordination: Coordination,
    /// Things that work but are probably not what the user meant.
    pub warnings: Vec<Problem>,
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use crate::config::testing::load_str;
    use crate::config::Manages;
    use crate::model::Role;

    #[test]
    fn a_target_manages_one_kind_with_what_applies_to_it() {
        let cfg = load_str(
            "[defaults]\nservice_account_role = \"EDITOR\"\n\n[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"ci-*\", \"terraform\"]\n\n[[targets]]\nworkspace_ids = [\"g-0123456789\"]\napi_keys = [\"sync\"]\napi_key_role = \"VIEWER\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.targets[0].manages,
            Manages::ServiceAccounts {
                names: vec!["ci-*".into(), "terraform".into()],
                bootstrap: Some(Role::Editor)
            }
        );
        assert_eq!(
            cfg.targets[1].manages,
            Manages::ApiKeys {
                names: vec!["sync".into()],
                role: Role::Viewer,
                migrate_to: Some("{key_name}".into()),
            }
        );
        assert_eq!(cfg.targets[1].exact_names().collect::<Vec<_>>(), ["sync"]);
        assert_eq!(
            cfg.targets[0].exact_names().collect::<Vec<_>>(),
            ["terraform"]
        );
        assert!(!cfg.targets[1].matches_service_account("sync"));
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
