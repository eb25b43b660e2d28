//! Domain types: workspaces, service accounts, tokens, secrets and the redacting `Key`.
//!
//! These types speak the rotator's language, not the SDK's. Nothing here performs I/O.
//! A `Key` must never be formatted into text that leaves the process except the secret's
//! value itself: it has no `Display`, its `Debug` is redacted and it is zeroized on drop.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

/// A Grafana token or API key. Redacted in `Debug`, zeroized on drop, never `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<String>);

impl Key {
    pub fn new(key: String) -> Self {
        Key(Zeroizing::new(key))
    }

    /// The key itself, for the one place that needs it: the secret value or a Bearer header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The Grafana role of a service account or API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Admin,
    Editor,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Editor => "EDITOR",
            Role::Viewer => "VIEWER",
        }
    }

    /// Parses the AWS spelling, case-insensitively.
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_uppercase().as_str() {
            "ADMIN" => Some(Role::Admin),
            "EDITOR" => Some(Role::Editor),
            "VIEWER" => Some(Role::Viewer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AMG workspace as ListWorkspaces / DescribeWorkspace report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    /// Bare host name; `https://` + endpoint reaches the workspace's Grafana.
    pub endpoint: String,
    pub grafana_version: String,
    pub status: String,
    pub tags: BTreeMap<String, String>,
}

impl Workspace {
    pub fn grafana_url(&self) -> String {
        format!("https://{}", self.endpoint)
    }

    /// The Grafana major version, when `grafana_version` starts with one.
    pub fn grafana_major(&self) -> Option<u32> {
        self.grafana_version.split('.').next()?.parse().ok()
    }

    /// Service accounts exist only on Grafana 9 and later.
    pub fn supports_service_accounts(&self) -> bool {
        // An unparseable version is assumed modern: AMG offers 9, 10, 12 and 13 (8 where an
        // old workspace still runs).
        self.grafana_major().is_none_or(|m| m >= 9)
    }

    /// API keys exist up to Grafana 10: "API keys have been removed in Amazon Managed Grafana
    /// version 12" (AMG user guide, service accounts page; there is no 11). An unparseable
    /// version is given the benefit of the doubt: AMG itself then answers.
    pub fn supports_api_keys(&self) -> bool {
        self.grafana_major().is_none_or(|m| m < 12)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: String,
    pub name: String,
    pub role: Option<Role>,
    pub is_disabled: bool,
}

/// A service-account token as listed: everything but the key, which AMG never shows twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// `None` when AMG reports no expiry (a token made in the workspace's own Grafana UI may
    /// have none; aws-sdk-grafana hands a missing timestamp over as the epoch). Unknown is not
    /// "expired long ago": nothing is deleted on it.
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Token {
    /// Known to have expired by `now`; a token whose expiry is unknown never has.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A token just created: the only moment its key is known.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub key: Key,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewToken {
    pub fn summary(&self) -> Token {
        Token {
            id: self.id.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            expires_at: Some(self.expires_at),
            last_used_at: None,
        }
    }
}

/// A legacy API key just created (Grafana 9 and 10 workspaces): its key is known only now.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub key: Key,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Whether a permission names an IAM Identity Center user or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrincipalType {
    SsoUser,
    SsoGroup,
}

impl PrincipalType {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::SsoUser => "SSO_USER",
            PrincipalType::SsoGroup => "SSO_GROUP",
        }
    }
}

/// One role binding of a workspace: a user or group and its Grafana role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub role: Role,
    pub principal_type: PrincipalType,
    pub principal_id: String,
}

/// Add or revoke a role for a principal, as UpdatePermissions takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PermissionChange {
    Add,
    Revoke,
}

/// One entry UpdatePermissions refused, with the instruction that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionError {
    pub code: i32,
    pub message: String,
    pub change: Option<PermissionChange>,
    pub binding: Option<Binding>,
}

/// Secrets Manager staging labels the rotator uses.
pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// What DescribeSecret tells about a secret: enough to plan without reading any value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretState {
    pub arn: String,
    pub name: String,
    /// Version id → staging labels.
    pub versions: BTreeMap<String, Vec<String>>,
    pub tags: BTreeMap<String, String>,
    /// When the secret last changed in any way; a promotion is such a change.
    pub last_changed: Option<DateTime<Utc>>,
    /// Set when the secret is scheduled for deletion.
    pub deleted: Option<DateTime<Utc>>,
    /// Secrets Manager rotation is on: a rotation function owns the secret.
    pub rotation_enabled: bool,
}

impl SecretState {
    /// The version carrying `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }
}

/// The tags a target puts on its secrets: one map, shared by all its credentials' specs.
pub type SecretTags = std::sync::Arc<BTreeMap<String, String>>;

/// Where a credential's secret lives and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub format: SecretFormat,
    pub kms_key_id: Option<String>,
    pub description: String,
    pub tags: SecretTags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretFormat {
    /// SecretString is the JSON document PRODUCT.md describes.
    Json,
    /// SecretString is the key alone.
    Raw,
}

/// The fields a consumer reads from a JSON secret. Built only to be serialized into the value.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretDocument<'a> {
    token: &'a str,
    grafana_url: String,
    workspace_id: &'a str,
    service_account_id: &'a str,
    service_account_name: &'a str,
    token_id: &'a str,
    token_name: &'a str,
    expires_at: String,
    created_at: String,
}

/// Renders the secret's value for a new token. The result holds the key: zeroized on drop.
pub fn secret_value(
    format: SecretFormat,
    workspace: &Workspace,
    account: &ServiceAccount,
    token: &NewToken,
) -> Zeroizing<String> {
    match format {
        SecretFormat::Raw => Zeroizing::new(token.key.expose().to_owned()),
        SecretFormat::Json => {
            let doc = SecretDocument {
                token: token.key.expose(),
                grafana_url: workspace.grafana_url(),
                workspace_id: &workspace.id,
                service_account_id: &account.id,
                service_account_name: &account.name,
                token_id: &token.id,
                token_name: &token.name,
                expires_at: rfc3339(token.expires_at),
                created_at: rfc3339(token.created_at),
            };
            Zeroizing::new(serde_json::to_string(&doc).expect("a struct of strings serializes"))
        }
    }
}

/// RFC 3339 in UTC with a `Z`, to the second.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_is_redacted() {
        let key = Key::new("glsa_secretsecret_0123abcd".into());
        let shown = format!("{key:?} {:?}", Some(&key));
        assert!(!shown.contains("secretsecret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn grafana_nine_and_later_support_service_accounts() {
        let mut ws = Workspace {
            id: "g-0123456789".into(),
            name: "w".into(),
            endpoint: "g-0123456789.grafana-workspace.us-east-1.amazonaws.com".into(),
            grafana_version: "8.4".into(),
            status: "ACTIVE".into(),
            tags: BTreeMap::new(),
        };
        assert!(!ws.supports_service_accounts());
        ws.grafana_version = "9.4".into();
        assert!(ws.supports_service_accounts());
        ws.grafana_version = "10.4".into();
        assert!(ws.supports_service_accounts());
    }

    #[test]
    fn api_keys_end_with_grafana_ten() {
        let mut ws = Workspace {
            id: "g-0123456789".into(),
            name: "w".into(),
            endpoint: "g-0123456789.grafana-workspace.us-east-1.amazonaws.com".into(),
            grafana_version: "9.4".into(),
            status: "ACTIVE".into(),
            tags: BTreeMap::new(),
        };
        assert!(ws.supports_api_keys());
        ws.grafana_version = "10.4".into();
        assert!(ws.supports_api_keys());
        for removed in ["12.4", "13.0", "12"] {
            ws.grafana_version = removed.into();
            assert!(!ws.supports_api_keys(), "{removed}");
            assert!(ws.supports_service_accounts(), "{removed}");
        }
    }

    #[test]
    fn an_unknown_expiry_is_never_expired() {
        let t = Token {
            id: "1".into(),
            name: "made-in-the-ui".into(),
            created_at: DateTime::UNIX_EPOCH,
            expires_at: None,
            last_used_at: None,
        };
        assert!(!t.expired(Utc::now()));
        let t = Token {
            expires_at: Some(DateTime::UNIX_EPOCH),
            ..t
        };
        assert!(t.expired(Utc::now()));
    }

    #[test]
    fn json_secret_has_every_documented_field() {
        let ws = Workspace {
            id: "g-0123456789".into(),
            name: "w".into(),
            endpoint: "g-0123456789.grafana-workspace.us-east-1.amazonaws.com".into(),
            grafana_version: "10.4".into(),
            status: "ACTIVE".into(),
            tags: BTreeMap::new(),
        };
        let sa = ServiceAccount {
            id: "7".into(),
            name: "terraform".into(),
            role: Some(Role::Admin),
            is_disabled: false,
        };
        let created = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let token = NewToken {
            id: "42".into(),
            name: "amgrot-terraform-20261101T000000Z".into(),
            key: Key::new("glsa_k".into()),
            created_at: created,
            expires_at: created + chrono::Duration::days(30),
        };
        let value = secret_value(SecretFormat::Json, &ws, &sa, &token);
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(v["token"], "glsa_k");
        assert_eq!(
            v["grafanaUrl"],
            "https://g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
        assert_eq!(v["workspaceId"], "g-0123456789");
        assert_eq!(v["serviceAccountId"], "7");
        assert_eq!(v["serviceAccountName"], "terraform");
        assert_eq!(v["tokenId"], "42");
        assert_eq!(v["tokenName"], "amgrot-terraform-20261101T000000Z");
        assert_eq!(v["createdAt"], "2026-11-01T00:00:00Z");
        assert_eq!(v["expiresAt"], "2026-12-01T00:00:00Z");
        assert_eq!(v.as_object().unwrap().len(), 9);
        let raw = secret_value(SecretFormat::Raw, &ws, &sa, &token);
        assert_eq!(raw.as_str(), "glsa_k");
    }
}
