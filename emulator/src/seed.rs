//! Seed data: the JSON format of `--seed FILE`, `POST /_emulator/seed` and `Emulator::add_seed`.
//!
//! A seed describes settings and workspaces with their service accounts, tokens, API keys and
//! permissions; times are relative to the moment the seed is applied. Applying a seed merges it
//! into the state: a workspace whose ID exists is updated (members given replace members held), a
//! service account whose name exists in the workspace is reused, and everything else is added.
//! A seed is applied whole or not at all: any error leaves the state untouched.

use crate::clock::Now;
use crate::faults::Faults;
use crate::model::{
    endpoint_for, new_key, ApiKey, ApiKeyUpgrade, Permission, Role, ServiceAccount, SsoDirectory,
    State, Token, User, UserType, Workspace,
};
use crate::upgrade::parse_version;
use crate::validate::is_workspace_id;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The workspace statuses of the model.
const WORKSPACE_STATUSES: &[&str] = &[
    "ACTIVE",
    "CREATING",
    "DELETING",
    "FAILED",
    "UPDATING",
    "UPGRADING",
    "DELETION_FAILED",
    "CREATION_FAILED",
    "UPDATE_FAILED",
    "UPGRADE_FAILED",
    "LICENSE_REMOVAL_FAILED",
    "VERSION_UPDATING",
    "VERSION_UPDATE_FAILED",
    "DEGRADED",
];

/// Seed data and settings. Every member is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Seed {
    /// The region of workspace endpoints (default `us-east-1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Tokens a service account may hold, expired included (default 99).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_quota_per_service_account: Option<u32>,
    /// Page size of List calls without `maxResults` (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_page_size: Option<u32>,
    /// Replaces the fault configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<Faults>,
    /// Replaces the directory of known IAM Identity Center users and groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sso_directory: Option<SsoDirectory>,
    /// Replaces the Grafana versions AMG offers (default `9.4`, `10.4`, `12.4`, `13.0`): each
    /// dot-separated digits, no two equal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grafana_versions: Option<Vec<String>>,
    /// What an upgrade to Grafana 12 or later does to API keys: `"migrate"` (default) or
    /// `"invalidate"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_at_upgrade: Option<ApiKeyUpgrade>,
    pub workspaces: Vec<WorkspaceSeed>,
}

/// A workspace to create, or to update when its ID exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSeed {
    /// Must match `g-[0-9a-f]{10}`.
    pub id: String,
    /// Default: the ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default `10.4`. Below 9, service accounts and tokens are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana_version: Option<String>,
    /// Default `ACTIVE`; any other status makes service-account, token and API-key calls answer
    /// ConflictException.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountSeed>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySeed>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// A service account to create, or to update when its name exists in the workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountSeed {
    pub name: String,
    /// Default `ADMIN` for a new service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana_role: Option<Role>,
    /// `true`/`false`, or the strings `"true"`/`"false"` as the API writes them. Default false.
    #[serde(
        default,
        deserialize_with = "bool_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_disabled: Option<bool>,
    #[serde(default)]
    pub tokens: Vec<TokenSeed>,
}

/// A service-account token, with times relative to when the seed is applied.
///
/// In JSON, `expiresInSeconds` is required and `null` means "no expiry" (`no_expiry` here): a
/// token as the workspace's own Grafana UI can make it, which the AWS API cannot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "TokenSeedDoc", into = "TokenSeedDoc")]
pub struct TokenSeed {
    /// Unique in the workspace across tokens and API keys.
    pub name: String,
    /// Seconds from now to expiry; negative for an already expired token. Must be 0 when
    /// `no_expiry` is set.
    pub expires_in_seconds: i64,
    /// The token never expires (JSON: `"expiresInSeconds": null`). Default false.
    pub no_expiry: bool,
    /// Default 0.
    pub created_seconds_ago: i64,
    pub last_used_seconds_ago: Option<i64>,
    /// The secret; default a new Grafana-shaped key.
    pub key: Option<String>,
}

/// The JSON form of a `TokenSeed`: `expiresInSeconds` must be present, and may be `null`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenSeedDoc {
    name: String,
    #[serde(deserialize_with = "present_or_null")]
    expires_in_seconds: Option<i64>,
    #[serde(default)]
    created_seconds_ago: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_seconds_ago: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// A member that must be given but may be `null`. (A plain `Option` member may also be left out:
/// serde's `deserialize_with` turns that leniency off, so a forgotten expiry stays an error.)
fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<i64>::deserialize(d)
}

impl From<TokenSeedDoc> for TokenSeed {
    fn from(doc: TokenSeedDoc) -> TokenSeed {
        TokenSeed {
            name: doc.name,
            expires_in_seconds: doc.expires_in_seconds.unwrap_or_default(),
            no_expiry: doc.expires_in_seconds.is_none(),
            created_seconds_ago: doc.created_seconds_ago,
            last_used_seconds_ago: doc.last_used_seconds_ago,
            key: doc.key,
        }
    }
}

impl From<TokenSeed> for TokenSeedDoc {
    fn from(seed: TokenSeed) -> TokenSeedDoc {
        TokenSeedDoc {
            name: seed.name,
            expires_in_seconds: (!seed.no_expiry).then_some(seed.expires_in_seconds),
            created_seconds_ago: seed.created_seconds_ago,
            last_used_seconds_ago: seed.last_used_seconds_ago,
            key: seed.key,
        }
    }
}

/// A legacy API key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySeed {
    /// Unique in the workspace across tokens and API keys.
    pub key_name: String,
    /// Default `ADMIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_role: Option<Role>,
    pub expires_in_seconds: i64,
    #[serde(default)]
    pub created_seconds_ago: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(Flag::Text(t)) => match t.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "isDisabled must be true or false, not {other:?}"
            ))),
        },
    }
}

/// Why a seed was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedError(pub String);

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid seed: {}", self.0)
    }
}

impl std::error::Error for SeedError {}

impl From<SeedError> for std::io::Error {
    fn from(e: SeedError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl Seed {
    pub fn new() -> Seed {
        Seed::default()
    }

    /// Parses and checks a seed document.
    pub fn from_json_str(json: &str) -> Result<Seed, SeedError> {
        let seed: Seed = serde_json::from_str(json).map_err(|e| SeedError(e.to_string()))?;
        seed.validate()?;
        Ok(seed)
    }

    /// Reads, parses and checks a seed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, SeedError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SeedError(format!("{}: {e}", path.display())))?;
        Seed::from_json_str(&text)
    }

    pub fn with_workspace(mut self, workspace: WorkspaceSeed) -> Seed {
        self.workspaces.push(workspace);
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> Seed {
        self.faults = Some(faults);
        self
    }

    pub fn with_token_quota(mut self, quota: u32) -> Seed {
        self.token_quota_per_service_account = Some(quota);
        self
    }

    pub fn with_default_page_size(mut self, size: u32) -> Seed {
        self.default_page_size = Some(size);
        self
    }

    pub fn with_region(mut self, region: &str) -> Seed {
        self.region = Some(region.to_string());
        self
    }

    /// What an upgrade to Grafana 12 or later does to the workspace's API keys.
    pub fn with_api_key_upgrade(mut self, behaviour: ApiKeyUpgrade) -> Seed {
        self.api_keys_at_upgrade = Some(behaviour);
        self
    }

    /// The Grafana versions AMG offers, replacing the default list.
    pub fn with_grafana_versions(mut self, versions: &[&str]) -> Seed {
        self.grafana_versions = Some(versions.iter().map(|v| v.to_string()).collect());
        self
    }

    pub fn with_sso_directory(mut self, users: &[&str], groups: &[&str]) -> Seed {
        self.sso_directory = Some(SsoDirectory {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// The checks that need no state: patterns, lengths, enums, ranges.
    pub fn validate(&self) -> Result<(), SeedError> {
        let fail = |msg: String| Err(SeedError(msg));
        if self.region.as_deref() == Some("") {
            return fail("region must not be empty".into());
        }
        if self.default_page_size == Some(0) {
            return fail("defaultPageSize must be at least 1".into());
        }
        if let Some(faults) = &self.faults {
            faults.validate().map_err(SeedError)?;
        }
        if let Some(versions) = &self.grafana_versions {
            if versions.is_empty() {
                return fail("grafanaVersions must not be empty".into());
            }
            for (i, v) in versions.iter().enumerate() {
                let Some(parsed) = parse_version(v).filter(|_| v.len() <= 255) else {
                    return fail(format!(
                        "grafanaVersions: {v:?} is not a version such as 12.4"
                    ));
                };
                if versions[..i]
                    .iter()
                    .any(|w| parse_version(w) == Some(parsed.clone()))
                {
                    return fail(format!("grafanaVersions: {v:?} is given twice"));
                }
            }
        }
        for ws in &self.workspaces {
            if !is_workspace_id(&ws.id) {
                return fail(format!(
                    "workspace id {:?} does not match g-[0-9a-f]{{10}}",
                    ws.id
                ));
            }
            if let Some(status) = &ws.status {
                if !WORKSPACE_STATUSES.contains(&status.as_str()) {
                    return fail(format!("workspace {}: unknown status {status}", ws.id));
                }
            }
            for sa in &ws.service_accounts {
                check_length(&format!("service account name in {}", ws.id), &sa.name, 128)?;
                for token in &sa.tokens {
                    check_length(&format!("token name in {}", ws.id), &token.name, 128)?;
                    if token.key.as_deref() == Some("") {
                        return fail(format!("token {}: key must not be empty", token.name));
                    }
                    if token.no_expiry && token.expires_in_seconds != 0 {
                        return fail(format!(
                            "token {}: no_expiry with expires_in_seconds {}: give one",
                            token.name, token.expires_in_seconds
                        ));
                    }
                }
            }
            for key in &ws.api_keys {
                check_length(&format!("API key name in {}", ws.id), &key.key_name, 100)?;
                if key.key.as_deref() == Some("") {
                    return fail(format!("API key {}: key must not be empty", key.key_name));
                }
            }
            for p in &ws.permissions {
                check_length(&format!("permission user id in {}", ws.id), &p.user.id, 47)?;
            }
        }
        Ok(())
    }
}

fn check_length(what: &str, value: &str, max: usize) -> Result<(), SeedError> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(SeedError(format!(
            "{what}: {value:?} must have 1 to {max} characters"
        )));
    }
    Ok(())
}

impl WorkspaceSeed {
    pub fn new(id: &str) -> WorkspaceSeed {
        WorkspaceSeed {
            id: id.to_string(),
            ..WorkspaceSeed::default()
        }
    }

    pub fn with_name(mut self, name: &str) -> WorkspaceSeed {
        self.name = Some(name.to_string());
        self
    }

    pub fn with_grafana_version(mut self, version: &str) -> WorkspaceSeed {
        self.grafana_version = Some(version.to_string());
        self
    }

    pub fn with_status(mut self, status: &str) -> WorkspaceSeed {
        self.status = Some(status.to_string());
        self
    }

    pub fn with_tag(mut self, key: &str, value: &str) -> WorkspaceSeed {
        self.tags
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_service_account(mut self, sa: ServiceAccountSeed) -> WorkspaceSeed {
        self.service_accounts.push(sa);
        self
    }

    pub fn with_api_key(mut self, key: ApiKeySeed) -> WorkspaceSeed {
        self.api_keys.push(key);
        self
    }

    pub fn with_permission(mut self, role: Role, user_type: UserType, id: &str) -> WorkspaceSeed {
        self.permissions.push(Permission {
            role,
            user: User {
                id: id.to_string(),
                user_type,
            },
        });
        self
    }
}

impl ServiceAccountSeed {
    pub fn new(name: &str, role: Role) -> ServiceAccountSeed {
        ServiceAccountSeed {
            name: name.to_string(),
            grafana_role: Some(role),
            ..ServiceAccountSeed::default()
        }
    }

    pub fn disabled(mut self) -> ServiceAccountSeed {
        self.is_disabled = Some(true);
        self
    }

    pub fn with_token(mut self, token: TokenSeed) -> ServiceAccountSeed {
        self.tokens.push(token);
        self
    }
}

impl TokenSeed {
    pub fn new(name: &str, expires_in_seconds: i64) -> TokenSeed {
        TokenSeed {
            name: name.to_string(),
            expires_in_seconds,
            ..TokenSeed::default()
        }
    }

    /// A token that never expires, as Grafana's own UI can make one (the AWS API cannot).
    pub fn without_expiry(name: &str) -> TokenSeed {
        TokenSeed {
            name: name.to_string(),
            no_expiry: true,
            ..TokenSeed::default()
        }
    }

    pub fn created_seconds_ago(mut self, seconds: i64) -> TokenSeed {
        self.created_seconds_ago = seconds;
        self
    }

    pub fn with_key(mut self, key: &str) -> TokenSeed {
        self.key = Some(key.to_string());
        self
    }
}

impl ApiKeySeed {
    pub fn new(key_name: &str, role: Role, expires_in_seconds: i64) -> ApiKeySeed {
        ApiKeySeed {
            key_name: key_name.to_string(),
            key_role: Some(role),
            expires_in_seconds,
            ..ApiKeySeed::default()
        }
    }

    pub fn with_key(mut self, key: &str) -> ApiKeySeed {
        self.key = Some(key.to_string());
        self
    }
}

/// Merges a seed into the state (not its faults, which the caller applies). All or nothing.
pub fn apply(
    state: &mut State,
    seed: &Seed,
    now: Now,
    rng: &mut fastrand::Rng,
) -> Result<(), SeedError> {
    seed.validate()?;
    let now = now.epoch_secs();
    let mut next = state.clone();
    if let Some(region) = &seed.region {
        next.region = region.clone();
        for ws in &mut next.workspaces {
            ws.endpoint = endpoint_for(&ws.id, region);
        }
    }
    if let Some(quota) = seed.token_quota_per_service_account {
        next.token_quota_per_service_account = quota;
    }
    if let Some(size) = seed.default_page_size {
        next.default_page_size = size;
    }
    if let Some(directory) = &seed.sso_directory {
        next.sso_directory = Some(directory.clone());
    }
    if let Some(versions) = &seed.grafana_versions {
        next.grafana_versions = versions.clone();
    }
    if let Some(mode) = seed.api_keys_at_upgrade {
        next.api_keys_at_upgrade = mode;
    }
    for ws_seed in &seed.workspaces {
        apply_workspace(&mut next, ws_seed, now, rng)?;
    }
    *state = next;
    Ok(())
}

fn apply_workspace(
    state: &mut State,
    seed: &WorkspaceSeed,
    now: i64,
    rng: &mut fastrand::Rng,
) -> Result<(), SeedError> {
    if state.workspace(&seed.id).is_none() {
        let ws = Workspace::new(&seed.id, &state.region, now);
        let at = state.workspaces.partition_point(|w| w.id < seed.id);
        state.workspaces.insert(at, ws);
    }
    let ws = state.workspace_mut(&seed.id).expect("inserted above");
    if let Some(name) = &seed.name {
        ws.name = name.clone();
    }
    if let Some(version) = &seed.grafana_version {
        ws.grafana_version = version.clone();
    }
    if let Some(status) = &seed.status {
        ws.status = status.clone();
    }
    if let Some(tags) = &seed.tags {
        ws.tags = tags.clone();
    }
    if !seed.service_accounts.is_empty() && !ws.supports_service_accounts() {
        return Err(SeedError(format!(
            "workspace {} runs Grafana {}: service accounts need Grafana 9 or later",
            ws.id, ws.grafana_version
        )));
    }
    if !seed.api_keys.is_empty() && !ws.supports_api_keys() {
        return Err(SeedError(format!(
            "workspace {} runs Grafana {}: API keys have been removed in Grafana 12",
            ws.id, ws.grafana_version
        )));
    }
    for sa_seed in &seed.service_accounts {
        apply_service_account(ws, sa_seed, now, rng)?;
    }
    for key_seed in &seed.api_keys {
        if let Some(holder) = ws.key_name_holder(&key_seed.key_name) {
            return Err(SeedError(format!(
                "workspace {}: the name {} is already used by a {holder}",
                ws.id, key_seed.key_name
            )));
        }
        let key = seed_key(ws, key_seed.key.as_deref(), rng)?;
        let id = ws.allocate_key_id();
        ws.api_keys.push(ApiKey {
            id,
            key_name: key_seed.key_name.clone(),
            key_role: key_seed.key_role.unwrap_or(Role::Admin),
            key,
            created_at: now - key_seed.created_seconds_ago,
            expires_at: now + key_seed.expires_in_seconds,
            last_used_at: None,
        });
    }
    for permission in &seed.permissions {
        match ws
            .permissions
            .iter_mut()
            .find(|p| p.user == permission.user)
        {
            Some(existing) => existing.role = permission.role,
            None => ws.permissions.push(permission.clone()),
        }
    }
    Ok(())
}

fn apply_service_account(
    ws: &mut Workspace,
    seed: &ServiceAccountSeed,
    now: i64,
    rng: &mut fastrand::Rng,
) -> Result<(), SeedError> {
    if ws.service_account_by_name(&seed.name).is_none() {
        let id = ws.allocate_service_account_id();
        ws.service_accounts.push(ServiceAccount {
            id,
            name: seed.name.clone(),
            grafana_role: Role::Admin,
            is_disabled: false,
            tokens: Vec::new(),
        });
    }
    let mut tokens = Vec::new();
    for token_seed in &seed.tokens {
        let taken_by_batch = tokens.iter().any(|t: &Token| t.name == token_seed.name);
        if let Some(holder) = ws.key_name_holder(&token_seed.name) {
            return Err(SeedError(format!(
                "workspace {}: the name {} is already used by a {holder}",
                ws.id, token_seed.name
            )));
        }
        if taken_by_batch {
            return Err(SeedError(format!(
                "workspace {}: two tokens are named {}",
                ws.id, token_seed.name
            )));
        }
        let key = seed_key(ws, token_seed.key.as_deref(), rng)?;
        if tokens.iter().any(|t: &Token| t.key == key) {
            return Err(SeedError(format!(
                "workspace {}: a key is given twice",
                ws.id
            )));
        }
        tokens.push(Token {
            id: ws.allocate_key_id(),
            name: token_seed.name.clone(),
            key,
            created_at: now - token_seed.created_seconds_ago,
            expires_at: (!token_seed.no_expiry).then_some(now + token_seed.expires_in_seconds),
            last_used_at: token_seed.last_used_seconds_ago.map(|ago| now - ago),
        });
    }
    let sa = ws
        .service_accounts
        .iter_mut()
        .find(|sa| sa.name == seed.name)
        .expect("created above");
    if let Some(role) = seed.grafana_role {
        sa.grafana_role = role;
    }
    if let Some(disabled) = seed.is_disabled {
        sa.is_disabled = disabled;
    }
    sa.tokens.extend(tokens);
    Ok(())
}

/// The given key, if no token or API key of the workspace has it, or a new one.
fn seed_key(
    ws: &Workspace,
    given: Option<&str>,
    rng: &mut fastrand::Rng,
) -> Result<String, SeedError> {
    match given {
        Some(key) if ws.has_key(key) => Err(SeedError(format!(
            "workspace {}: the key {key} is already in use",
            ws.id
        ))),
        Some(key) => Ok(key.to_string()),
        None => loop {
            let key = new_key(rng);
            if !ws.has_key(&key) {
                return Ok(key);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    const WS: &str = "g-0123456789";

    #[test]
    fn parses_the_documented_example() {
        let seed = Seed::from_json_str(include_str!("../examples/seed.json")).unwrap();
        assert!(!seed.workspaces.is_empty());
    }

    #[test]
    fn rejects_typos_and_bad_ids() {
        assert!(Seed::from_json_str(r#"{"workspace": []}"#).is_err());
        assert!(Seed::from_json_str(r#"{"workspaces": [{"id": "g-XYZ"}]}"#).is_err());
        assert!(Seed::from_json_str(
            r#"{"workspaces": [{"id": "g-0123456789", "status": "NAP"}]}"#
        )
        .is_err());
    }

    #[test]
    fn is_disabled_accepts_bool_and_string() {
        let seed = Seed::from_json_str(
            r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [
                {"name": "a", "isDisabled": "true"}, {"name": "b", "isDisabled": false}]}]}"#,
        )
        .unwrap();
        let sas = &seed.workspaces[0].service_accounts;
        assert_eq!(sas[0].is_disabled, Some(true));
        assert_eq!(sas[1].is_disabled, Some(false));
    }

    #[test]
    fn applies_relative_times_and_merges() {
        let mut state = State::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let now = clock::now();
        let seed = Seed::new().with_workspace(
            WorkspaceSeed::new(WS).with_service_account(
                ServiceAccountSeed::new("rotator", Role::Admin)
                    .with_token(TokenSeed::new("old", -60).created_seconds_ago(3600)),
            ),
        );
        apply(&mut state, &seed, now, &mut rng).unwrap();
        let more = Seed::new().with_workspace(WorkspaceSeed::new(WS).with_service_account(
            ServiceAccountSeed::new("rotator", Role::Admin).with_token(TokenSeed::new("new", 60)),
        ));
        apply(&mut state, &more, now, &mut rng).unwrap();
        let ws = state.workspace(WS).unwrap();
        assert_eq!(ws.service_accounts.len(), 1);
        let sa = &ws.service_accounts[0];
        assert_eq!(sa.id, "2");
        let ids: Vec<_> = sa.tokens.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(sa.tokens[0].expires_at, Some(now.epoch_secs() - 60));
        assert_eq!(sa.tokens[0].created_at, now.epoch_secs() - 3600);
        assert_eq!(
            ws.endpoint,
            "g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn a_null_expiry_means_no_expiry_and_a_missing_one_is_refused() {
        let seed = Seed::from_json_str(
            r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [{"name": "a",
                "tokens": [{"name": "ui", "expiresInSeconds": null},
                           {"name": "api", "expiresInSeconds": 60}]}]}]}"#,
        )
        .unwrap();
        let tokens = &seed.workspaces[0].service_accounts[0].tokens;
        assert_eq!(tokens[0], TokenSeed::without_expiry("ui"));
        assert_eq!(tokens[1], TokenSeed::new("api", 60));
        // The JSON form round-trips, null included.
        let json = serde_json::to_value(&seed).unwrap();
        assert_eq!(
            json["workspaces"][0]["serviceAccounts"][0]["tokens"][0]["expiresInSeconds"],
            serde_json::Value::Null
        );
        assert_eq!(
            Seed::from_json_str(&json.to_string()).unwrap(),
            seed,
            "{json}"
        );

        let missing = Seed::from_json_str(
            r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [{"name": "a",
                "tokens": [{"name": "t"}]}]}]}"#,
        );
        assert!(
            missing.unwrap_err().0.contains("expiresInSeconds"),
            "a forgotten expiry is an error"
        );
        let typo = Seed::from_json_str(
            r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [{"name": "a",
                "tokens": [{"name": "t", "expiresInSeconds": 1, "expires": 2}]}]}]}"#,
        );
        assert!(typo.is_err());

        let mut both = TokenSeed::without_expiry("x");
        both.expires_in_seconds = 5;
        let seed = Seed::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(ServiceAccountSeed::new("a", Role::Admin).with_token(both)),
        );
        assert!(seed.validate().is_err());
    }

    #[test]
    fn a_token_seeded_without_expiry_has_none() {
        let mut state = State::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let seed = Seed::new().with_workspace(WorkspaceSeed::new(WS).with_service_account(
            ServiceAccountSeed::new("a", Role::Admin).with_token(TokenSeed::without_expiry("ui")),
        ));
        apply(&mut state, &seed, clock::now(), &mut rng).unwrap();
        let ws = state.workspace(WS).unwrap();
        assert_eq!(ws.service_accounts[0].tokens[0].expires_at, None);
    }

    #[test]
    fn api_keys_cannot_be_seeded_on_grafana_12() {
        let mut state = State::default();
        let mut rng = fastrand::Rng::with_seed(3);
        for version in ["12.4", "13.0"] {
            let seed = Seed::new().with_workspace(
                WorkspaceSeed::new(WS)
                    .with_grafana_version(version)
                    .with_api_key(ApiKeySeed::new("k", Role::Admin, 60)),
            );
            let err = apply(&mut state, &seed, clock::now(), &mut rng).unwrap_err();
            assert!(err.0.contains(version), "{err}");
            assert_eq!(state, State::default());
        }
    }

    #[test]
    fn a_failing_seed_changes_nothing() {
        let mut state = State::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let seed = Seed::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(
                    ServiceAccountSeed::new("a", Role::Admin).with_token(TokenSeed::new("dup", 60)),
                )
                .with_api_key(ApiKeySeed::new("dup", Role::Admin, 60)),
        );
        assert!(apply(&mut state, &seed, clock::now(), &mut rng).is_err());
        assert_eq!(state, State::default());
    }
}
