//! The emulated world: workspaces, their service accounts, tokens, API keys and permissions.
//!
//! These types are both the live state (kept behind one mutex in `lib.rs`) and the typed snapshot
//! handed to tests (`StateSnapshot`, the same JSON as `GET /_emulator/state`, keys included). They
//! hold data and small lookups only: the rules of the AWS operations live in `ops`, and nothing
//! here reads the clock.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Grafana role, as the model's `Role` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Admin,
    Editor,
    Viewer,
}

impl Role {
    pub const VALUES: &'static [&'static str] = &["ADMIN", "EDITOR", "VIEWER"];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ADMIN" => Some(Role::Admin),
            "EDITOR" => Some(Role::Editor),
            "VIEWER" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Editor => "EDITOR",
            Role::Viewer => "VIEWER",
        }
    }
}

/// An IAM Identity Center principal kind, as the model's `UserType` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UserType {
    #[serde(rename = "SSO_USER")]
    SsoUser,
    #[serde(rename = "SSO_GROUP")]
    SsoGroup,
}

impl UserType {
    pub const VALUES: &'static [&'static str] = &["SSO_USER", "SSO_GROUP"];

    pub fn parse(s: &str) -> Option<UserType> {
        match s {
            "SSO_USER" => Some(UserType::SsoUser),
            "SSO_GROUP" => Some(UserType::SsoGroup),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            UserType::SsoUser => "SSO_USER",
            UserType::SsoGroup => "SSO_GROUP",
        }
    }
}

/// What becomes of a workspace's API keys when an upgrade takes it from Grafana 10 or older to
/// 12 or later. AMG's behaviour is unverified (shared/reference/aws-facts.md): the emulator can do
/// either, and a test chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyUpgrade {
    /// The keys stop working and vanish: the Grafana stand-in answers 401 for them.
    Invalidate,
    /// What Grafana's own migration does (grafana/grafana `pkg/services/serviceaccounts/database`
    /// `CreateServiceAccountFromApikey`, run for every key at startup since PR 96924): each key
    /// becomes a token of a new service account `sa-autogen-<keyName>` with the key's role; the
    /// token is the key's own row, so it keeps its ID, name, secret, creation, expiry and last use.
    /// The default, being what Grafana 12 itself does.
    #[default]
    Migrate,
}

impl ApiKeyUpgrade {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiKeyUpgrade::Invalidate => "invalidate",
            ApiKeyUpgrade::Migrate => "migrate",
        }
    }
}

/// The whole emulated account in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub region: String,
    /// Tokens a service account may hold, expired ones included.
    pub token_quota_per_service_account: u32,
    /// Page size of the List operations when the request has no `maxResults`.
    pub default_page_size: u32,
    /// Known IAM Identity Center users and groups; `None` accepts any ID in UpdatePermissions.
    pub sso_directory: Option<SsoDirectory>,
    /// The Grafana versions AMG offers (ListVersions, UpdateWorkspaceConfiguration), oldest first.
    #[serde(default = "default_grafana_versions")]
    pub grafana_versions: Vec<String>,
    /// What an upgrade to Grafana 12 or later does to the workspace's API keys.
    #[serde(default)]
    pub api_keys_at_upgrade: ApiKeyUpgrade,
    /// Sorted by workspace ID.
    pub workspaces: Vec<Workspace>,
}

impl Default for State {
    fn default() -> Self {
        State {
            region: "us-east-1".to_string(),
            token_quota_per_service_account: 99,
            default_page_size: 100,
            sso_directory: None,
            grafana_versions: default_grafana_versions(),
            api_keys_at_upgrade: ApiKeyUpgrade::default(),
            workspaces: Vec::new(),
        }
    }
}

/// The versions AMG offers, as `grafanaVersion` strings, oldest first. Sources: the AMG user
/// guide's version pages ("Working in Grafana version 9/10/12/13", which say 9.x, 10.x, 12.x and
/// 13.x, https://docs.aws.amazon.com/grafana/latest/userguide/using-grafana-v13.html); Grafana 8
/// is no longer offered (aws/amazon-managed-grafana-roadmap#59) and there is no 11. The strings
/// `9.4` and `10.4` are documented (UpdateWorkspaceConfiguration: "from 8.4 to 9.4";
/// CreateWorkspace: "the latest version (for example, 10.4)"); `12.4` and `13.0` are assumed:
/// the pages name only the major versions. A seed's `grafanaVersions` replaces the list.
pub const OFFERED_GRAFANA_VERSIONS: &[&str] = &["9.4", "10.4", "12.4", "13.0"];

fn default_grafana_versions() -> Vec<String> {
    OFFERED_GRAFANA_VERSIONS
        .iter()
        .map(|v| v.to_string())
        .collect()
}

impl State {
    pub fn workspace(&self, id: &str) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.id == id)
    }

    pub fn workspace_mut(&mut self, id: &str) -> Option<&mut Workspace> {
        self.workspaces.iter_mut().find(|w| w.id == id)
    }
}

/// The IAM Identity Center users and groups UpdatePermissions accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SsoDirectory {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl SsoDirectory {
    pub fn knows(&self, user_type: UserType, id: &str) -> bool {
        let ids = match user_type {
            UserType::SsoUser => &self.users,
            UserType::SsoGroup => &self.groups,
        };
        ids.iter().any(|known| known == id)
    }
}

/// One AMG workspace, which is one Grafana organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub grafana_version: String,
    pub status: String,
    pub tags: BTreeMap<String, String>,
    /// `<id>.grafana-workspace.<region>.amazonaws.com`, a bare host name as AMG returns it.
    pub endpoint: String,
    pub created: i64,
    pub modified: i64,
    /// The workspace's configuration JSON, as UpdateWorkspaceConfiguration last set it.
    #[serde(default = "empty_configuration")]
    pub configuration: String,
    /// Sorted by numeric ID.
    pub service_accounts: Vec<ServiceAccount>,
    /// In creation order.
    pub api_keys: Vec<ApiKey>,
    /// At most one entry per principal (a user or group has one role in a workspace).
    pub permissions: Vec<Permission>,
    /// The next service-account ID. Grafana keeps service accounts in its user table, where the
    /// workspace's own admin is user 1, so the first service account gets 2. IDs are never reused.
    #[serde(default)]
    pub next_service_account_id: u64,
    /// The next token ID. Tokens and API keys are rows of one Grafana table, so they share it.
    #[serde(default)]
    pub next_key_id: u64,
}

impl Workspace {
    pub fn new(id: &str, region: &str, now_secs: i64) -> Workspace {
        Workspace {
            id: id.to_string(),
            name: id.to_string(),
            grafana_version: "10.4".to_string(),
            status: "ACTIVE".to_string(),
            tags: BTreeMap::new(),
            endpoint: endpoint_for(id, region),
            created: now_secs,
            modified: now_secs,
            configuration: empty_configuration(),
            service_accounts: Vec::new(),
            api_keys: Vec::new(),
            permissions: Vec::new(),
            next_service_account_id: 2,
            next_key_id: 1,
        }
    }

    /// The major Grafana version, when `grafanaVersion` starts with a number.
    pub fn grafana_major_version(&self) -> Option<u32> {
        let digits: String = self
            .grafana_version
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    }

    /// Service accounts need Grafana 9 or later. An unparsable version is taken as recent.
    pub fn supports_service_accounts(&self) -> bool {
        self.grafana_major_version().is_none_or(|major| major >= 9)
    }

    /// API keys exist up to Grafana 10 (AMG offers no 11): "API keys have been removed in Amazon
    /// Managed Grafana version 12" (AMG user guide, service accounts page). An unparsable version
    /// keeps them, as before this rule existed.
    pub fn supports_api_keys(&self) -> bool {
        self.grafana_major_version()
            .is_none_or(|major| major < FIRST_VERSION_WITHOUT_API_KEYS)
    }

    pub fn service_account(&self, id: &str) -> Option<&ServiceAccount> {
        self.service_accounts.iter().find(|sa| sa.id == id)
    }

    pub fn service_account_mut(&mut self, id: &str) -> Option<&mut ServiceAccount> {
        self.service_accounts.iter_mut().find(|sa| sa.id == id)
    }

    pub fn service_account_by_name(&self, name: &str) -> Option<&ServiceAccount> {
        self.service_accounts.iter().find(|sa| sa.name == name)
    }

    pub fn api_key(&self, name: &str) -> Option<&ApiKey> {
        self.api_keys.iter().find(|k| k.key_name == name)
    }

    /// What already holds `name` in the workspace-wide namespace that tokens and API keys share
    /// (Grafana's unique index on organization + name): `"SERVICE_ACCOUNT_TOKEN"` or `"API_KEY"`.
    pub fn key_name_holder(&self, name: &str) -> Option<&'static str> {
        if self
            .service_accounts
            .iter()
            .any(|sa| sa.tokens.iter().any(|t| t.name == name))
        {
            Some("SERVICE_ACCOUNT_TOKEN")
        } else if self.api_key(name).is_some() {
            Some("API_KEY")
        } else {
            None
        }
    }

    /// Whether any token or API key of the workspace already has this secret.
    pub fn has_key(&self, key: &str) -> bool {
        self.service_accounts
            .iter()
            .any(|sa| sa.tokens.iter().any(|t| t.key == key))
            || self.api_keys.iter().any(|k| k.key == key)
    }

    pub(crate) fn allocate_service_account_id(&mut self) -> String {
        let id = self.next_service_account_id;
        self.next_service_account_id += 1;
        id.to_string()
    }

    pub(crate) fn allocate_key_id(&mut self) -> String {
        let id = self.next_key_id;
        self.next_key_id += 1;
        id.to_string()
    }
}

fn empty_configuration() -> String {
    "{}".to_string()
}

/// The first Grafana major version on which AMG has no API keys.
pub const FIRST_VERSION_WITHOUT_API_KEYS: u32 = 12;

/// The host name AMG gives a workspace.
pub fn endpoint_for(workspace_id: &str, region: &str) -> String {
    format!("{workspace_id}.grafana-workspace.{region}.amazonaws.com")
}

/// A Grafana service account of a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    /// A numeric string, unique in the workspace.
    pub id: String,
    pub name: String,
    pub grafana_role: Role,
    pub is_disabled: bool,
    /// Sorted by numeric ID. Expired tokens stay until deleted.
    pub tokens: Vec<Token>,
}

impl ServiceAccount {
    pub fn token(&self, id: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.id == id)
    }

    pub fn token_by_name(&self, name: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.name == name)
    }
}

/// A service-account token, with its secret (which the AWS API returns only at creation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// A numeric string, unique in the workspace.
    pub id: String,
    pub name: String,
    pub key: String,
    pub created_at: i64,
    /// `None`: the token never expires. Grafana allows such tokens (one made in the workspace's
    /// own Grafana UI may have none), although the AWS model marks `expiresAt` as required and
    /// CreateWorkspaceServiceAccountToken always sets one; ListWorkspaceServiceAccountTokens then
    /// leaves `expiresAt` out of the token's summary.
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl Token {
    /// Grafana treats a key as expired from its expiry second on; a token without expiry never is.
    pub fn is_expired(&self, now_secs: i64) -> bool {
        self.expires_at.is_some_and(|at| now_secs >= at)
    }
}

/// A legacy Grafana API key of a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// A numeric string from the sequence tokens share (one Grafana table). The AWS API never
    /// shows it; a key migrated at an upgrade keeps it as its token ID.
    #[serde(default)]
    pub id: String,
    pub key_name: String,
    pub key_role: Role,
    pub key: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    pub fn is_expired(&self, now_secs: i64) -> bool {
        now_secs >= self.expires_at
    }
}

/// One principal and the role it has in a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub role: Role,
    pub user: User,
}

/// An IAM Identity Center user or group, as the model's `User`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(rename = "type")]
    pub user_type: UserType,
}

/// Makes a key in the shape Grafana gives service-account tokens: `glsa_`, 32 alphanumerics, `_`,
/// and 8 lowercase hex digits (the CRC-32 of what precedes, as Grafana computes its checksum).
pub fn new_key(rng: &mut fastrand::Rng) -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let secret: String = (0..32)
        .map(|_| ALPHANUMERIC[rng.usize(..ALPHANUMERIC.len())] as char)
        .collect();
    let body = format!("glsa_{secret}");
    format!("{body}_{:08x}", crc32(body.as_bytes()))
}

/// CRC-32 (IEEE 802.3, reflected), bit by bit: keys are short, speed does not matter.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn keys_have_grafana_shape() {
        let mut rng = fastrand::Rng::with_seed(1);
        let key = new_key(&mut rng);
        assert_eq!(key.len(), 5 + 32 + 1 + 8);
        assert!(key.starts_with("glsa_"));
        assert!(key[5..37].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(&key[37..38], "_");
        assert!(key[38..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn grafana_versions() {
        let mut ws = Workspace::new("g-0123456789", "us-east-1", 0);
        for (version, ok) in [("8.4", false), ("9.4", true), ("10.4", true), ("", true)] {
            ws.grafana_version = version.to_string();
            assert_eq!(ws.supports_service_accounts(), ok, "{version}");
        }
        for (version, ok) in [
            ("8.4", true),
            ("9.4", true),
            ("10.4", true),
            ("12.4", false),
            ("13.0", false),
            ("", true),
        ] {
            ws.grafana_version = version.to_string();
            assert_eq!(ws.supports_api_keys(), ok, "{version}");
        }
    }

    #[test]
    fn a_token_without_expiry_never_expires() {
        let mut token = Token {
            id: "1".to_string(),
            name: "ui-made".to_string(),
            key: "k".to_string(),
            created_at: 0,
            expires_at: None,
            last_used_at: None,
        };
        assert!(!token.is_expired(i64::MAX));
        token.expires_at = Some(10);
        assert!(!token.is_expired(9));
        assert!(token.is_expired(10));
    }
}
