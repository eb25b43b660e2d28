//! `FakeGrafana`: Amazon Managed Grafana's control plane in memory, behaving as AMG does where
//! the rotator depends on it.
//!
//! Sources: shared/reference/aws-facts.md (cited as "facts") and the project's wire-level
//! emulator (emulator/README.md, "Rules, in the order they are checked", cited as "emulator
//! rule N"), whose choices on unverified points this fake shares so the two never disagree.
//! Checks run in the emulator's order: input validation, the workspace (404), the Grafana
//! version, the workspace status, the service account / token / key (404), then names and quota.
//!
//! What it must never do: read a clock (times come from the `now` the trait methods take, or from
//! seeds), draw randomness (keys derive from a counter), or show a key (keys live in `Key`, the
//! call log names ids and names only).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{ops, Call, CallLog};
use crate::aws::error::ApiError;
use crate::aws::grafana::Grafana;
use crate::model::{
    Binding, Key, NewApiKey, NewToken, PermissionChange, PermissionError, PrincipalType, Role,
    ServiceAccount, Token, Workspace,
};

/// The most seconds a token or API key may live: 30 days (facts: `secondsToLive` 1..2592000).
pub const MAX_SECONDS_TO_LIVE: u64 = 2_592_000;
/// Tokens per service account, expired ones included: users report 99 (facts,
/// aws/amazon-managed-grafana-roadmap#93; emulator rule 10).
pub const DEFAULT_TOKEN_QUOTA: usize = 99;
/// Changes one UpdatePermissions takes (facts: `updateInstructionBatch` 0..20).
pub const MAX_PERMISSION_CHANGES: usize = 20;

/// AMG's control plane in memory. `Clone` shares the state: keep one handle to seed and inspect.
#[derive(Clone, Default)]
pub struct FakeGrafana {
    state: Arc<Mutex<State>>,
    calls: CallLog,
}

struct State {
    region: String,
    token_quota: usize,
    /// When set, UpdatePermissions refuses (per entry) principals not in it (emulator's
    /// `ssoDirectory`); when `None` any principal is accepted.
    directory: Option<BTreeSet<(PrincipalType, String)>>,
    workspaces: BTreeMap<String, Ws>,
    /// Keys minted so far, the input of the next key: deterministic, never random.
    keys_minted: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            region: "us-east-1".into(),
            token_quota: DEFAULT_TOKEN_QUOTA,
            directory: None,
            workspaces: BTreeMap::new(),
            keys_minted: 0,
        }
    }
}

struct Ws {
    info: Workspace,
    /// Service-account ids start at 2: Grafana keeps service accounts in its user table, where
    /// the workspace's admin is user 1 (emulator, "Responses").
    next_account_id: u64,
    /// One sequence for tokens and API keys, which are rows of one Grafana table (facts); ids
    /// are never reused.
    next_key_id: u64,
    accounts: BTreeMap<u64, Account>,
    api_keys: BTreeMap<String, StoredApiKey>,
    /// One role per principal (emulator: ADD replaces the role a principal had).
    permissions: BTreeMap<(PrincipalType, String), Role>,
}

struct Account {
    info: ServiceAccount,
    tokens: BTreeMap<u64, StoredToken>,
}

struct StoredToken {
    summary: Token,
    key: Key,
}

struct StoredApiKey {
    role: Role,
    key: Key,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// What a test may know of an API key: everything but the key (AMG cannot even list them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySummary {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Ws {
    /// Which kind of credential holds `name`: token and API-key names share one namespace per
    /// workspace (facts: Grafana's `ErrDuplicateToken`; emulator rule 9).
    fn name_holder(&self, name: &str) -> Option<&'static str> {
        if self.api_keys.contains_key(name) {
            return Some("an API key");
        }
        self.accounts
            .values()
            .flat_map(|a| a.tokens.values())
            .any(|t| t.summary.name == name)
            .then_some("a service account token")
    }

    fn holds_key(&self, key: &str) -> bool {
        self.api_keys.values().any(|k| k.key.expose() == key)
            || self
                .accounts
                .values()
                .flat_map(|a| a.tokens.values())
                .any(|t| t.key.expose() == key)
    }

    fn account_mut(&mut self, id: &str) -> Result<&mut Account, ApiError> {
        id.parse::<u64>()
            .ok()
            .and_then(|n| self.accounts.get_mut(&n))
            .ok_or_else(|| not_found(format!("Service account {id} not found.")))
    }

    fn allocate_key_id(&mut self) -> u64 {
        let id = self.next_key_id;
        self.next_key_id += 1;
        id
    }
}

/// A key shaped like Grafana's (`glsa_` + 32 alphanumerics + `_` + 8 hex digits, emulator
/// "Responses"), derived from a counter and unique in the workspace.
fn mint_key(counter: &mut u64, ws: &Ws) -> Key {
    loop {
        *counter += 1;
        let mut h = Sha256::new();
        h.update(b"fake-grafana-key\0");
        h.update(ws.info.id.as_bytes());
        h.update(counter.to_be_bytes());
        let hex = hex::encode(h.finalize());
        let key = format!("glsa_{}_{}", &hex[..32], &hex[32..40]);
        if !ws.holds_key(&key) {
            return Key::new(key);
        }
    }
}

// ---- errors, worded as AMG words them (the SDK implementation prefixes the error code) -------

fn not_found(message: String) -> ApiError {
    ApiError::NotFound(format!("ResourceNotFoundException: {message}"))
}

fn conflict(message: String) -> ApiError {
    ApiError::Conflict(format!("ConflictException: {message}"))
}

fn invalid(message: String) -> ApiError {
    ApiError::Invalid(format!("ValidationException: {message}"))
}

fn check_workspace_id(id: &str) -> Result<(), ApiError> {
    // facts: `workspaceId` matches `g-[0-9a-f]{10}` everywhere.
    let ok = id.len() == 12
        && id.starts_with("g-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{id}' at 'workspaceId' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: g-[0-9a-f]{{10}}"
        )))
    }
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have length between 1 and {max}, inclusive"
        )))
    }
}

/// `secondsToLive` is 1..2592000 (facts). The SDK implementation sends whole seconds.
fn check_ttl(ttl: Duration) -> Result<i64, ApiError> {
    let secs = ttl.as_secs();
    if (1..=MAX_SECONDS_TO_LIVE).contains(&secs) {
        Ok(secs as i64)
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{secs}' at 'secondsToLive' failed to satisfy \
             constraint: Member must have value between 1 and {MAX_SECONDS_TO_LIVE}, inclusive"
        )))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ServiceAccounts,
    ApiKeys,
}

/// The workspace of a service-account, token or API-key call: it must exist (emulator rule 5),
/// run a Grafana that has what the call works on (rule 6) and be ACTIVE (rule 7).
fn gate<'s>(state: &'s mut State, id: &str, kind: Kind) -> Result<&'s mut Ws, ApiError> {
    let ws = find(state, id)?;
    let version = &ws.info.grafana_version;
    // facts: service accounts exist only on workspaces compatible with Grafana 9 and above.
    if kind == Kind::ServiceAccounts && !ws.info.supports_service_accounts() {
        return Err(invalid(format!(
            "Service accounts are only available for workspaces that are compatible with \
             Grafana version 9 and above. Workspace {id} runs Grafana {version}."
        )));
    }
    // facts: "API keys have been removed in Amazon Managed Grafana version 12"; the error
    // itself is unverified: the emulator's choice, a ValidationException naming the version.
    if kind == Kind::ApiKeys && !ws.info.supports_api_keys() {
        return Err(invalid(format!(
            "API keys have been removed in Amazon Managed Grafana version 12. Workspace {id} \
             runs Grafana {version}: use service accounts and tokens."
        )));
    }
    // Unknown in the facts; the emulator's choice.
    if ws.info.status != "ACTIVE" {
        return Err(conflict(format!(
            "Workspace {id} is in status {}, not ACTIVE.",
            ws.info.status
        )));
    }
    Ok(ws)
}

fn find<'s>(state: &'s mut State, id: &str) -> Result<&'s mut Ws, ApiError> {
    check_workspace_id(id)?;
    state
        .workspaces
        .get_mut(id)
        .ok_or_else(|| not_found(format!("Workspace {id} not found.")))
}

// ---- the operations: plain functions of the state ---------------------------------------------

fn create_service_account(
    state: &mut State,
    ws_id: &str,
    name: &str,
    role: Role,
) -> Result<ServiceAccount, ApiError> {
    check_workspace_id(ws_id)?;
    check_length("name", name, 128)?;
    let ws = gate(state, ws_id, Kind::ServiceAccounts)?;
    // facts: the name is unique in the workspace.
    if ws.accounts.values().any(|a| a.info.name == name) {
        return Err(conflict(format!(
            "A service account named '{name}' already exists in workspace {ws_id}."
        )));
    }
    let id = ws.next_account_id;
    ws.next_account_id += 1;
    let info = ServiceAccount {
        id: id.to_string(),
        name: name.to_owned(),
        role: Some(role),
        is_disabled: false,
    };
    ws.accounts.insert(
        id,
        Account {
            info: info.clone(),
            tokens: BTreeMap::new(),
        },
    );
    Ok(info)
}

fn create_token(
    state: &mut State,
    ws_id: &str,
    sa_id: &str,
    name: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<NewToken, ApiError> {
    check_workspace_id(ws_id)?;
    check_length("name", name, 128)?;
    let secs = check_ttl(ttl)?;
    let quota = state.token_quota;
    let mut counter = state.keys_minted;
    let ws = gate(state, ws_id, Kind::ServiceAccounts)?;
    let held = ws.account_mut(sa_id)?.tokens.len();
    // Name before quota: the emulator's choice (which comes first is unknown).
    if let Some(holder) = ws.name_holder(name) {
        return Err(conflict(format!(
            "The name '{name}' is already used by {holder} in workspace {ws_id}: token and API \
             key names are unique in the workspace."
        )));
    }
    // facts: the quota "includes active and expired tokens"; AMG never removes expired ones.
    if held >= quota {
        return Err(ApiError::QuotaExceeded(format!(
            "ServiceQuotaExceededException: Service account {sa_id} already has {held} tokens \
             (quota {quota}, expired tokens included). Delete tokens to create new ones."
        )));
    }
    let key = mint_key(&mut counter, ws);
    let id = ws.allocate_key_id();
    let expires_at = now + chrono::Duration::seconds(secs);
    let token = NewToken {
        id: id.to_string(),
        name: name.to_owned(),
        key: key.clone(),
        created_at: now,
        expires_at,
    };
    ws.account_mut(sa_id)?.tokens.insert(
        id,
        StoredToken {
            summary: token.summary(),
            key,
        },
    );
    state.keys_minted = counter;
    Ok(token)
}

fn delete_token(
    state: &mut State,
    ws_id: &str,
    sa_id: &str,
    token_id: &str,
) -> Result<(), ApiError> {
    let ws = gate(state, ws_id, Kind::ServiceAccounts)?;
    let account = ws.account_mut(sa_id)?;
    // A token is found only under its own service account (emulator rule 8).
    token_id
        .parse::<u64>()
        .ok()
        .and_then(|n| account.tokens.remove(&n))
        .map(|_| ())
        .ok_or_else(|| {
            not_found(format!(
                "Token {token_id} not found in service account {sa_id}."
            ))
        })
}

fn create_api_key(
    state: &mut State,
    ws_id: &str,
    name: &str,
    role: Role,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<NewApiKey, ApiError> {
    check_workspace_id(ws_id)?;
    check_length("keyName", name, 100)?;
    let secs = check_ttl(ttl)?;
    let mut counter = state.keys_minted;
    let ws = gate(state, ws_id, Kind::ApiKeys)?;
    if let Some(holder) = ws.name_holder(name) {
        return Err(conflict(format!(
            "The name '{name}' is already used by {holder} in workspace {ws_id}: token and API \
             key names are unique in the workspace."
        )));
    }
    let key = mint_key(&mut counter, ws);
    // An API key takes an id from the tokens' sequence although AMG never shows it.
    ws.allocate_key_id();
    let expires_at = now + chrono::Duration::seconds(secs);
    ws.api_keys.insert(
        name.to_owned(),
        StoredApiKey {
            role,
            key: key.clone(),
            created_at: now,
            expires_at,
        },
    );
    state.keys_minted = counter;
    Ok(NewApiKey {
        name: name.to_owned(),
        key,
        created_at: now,
        expires_at,
    })
}

fn delete_api_key(state: &mut State, ws_id: &str, name: &str) -> Result<(), ApiError> {
    check_workspace_id(ws_id)?;
    check_length("keyName", name, 100)?;
    // On 12 and later the refusal comes before the lookup: no 404 (emulator rule 6).
    let ws = gate(state, ws_id, Kind::ApiKeys)?;
    ws.api_keys
        .remove(name)
        .map(|_| ())
        .ok_or_else(|| not_found(format!("API key '{name}' not found in workspace {ws_id}.")))
}

fn update_permissions(
    state: &mut State,
    ws_id: &str,
    changes: &[(PermissionChange, Binding)],
) -> Result<Vec<PermissionError>, ApiError> {
    check_workspace_id(ws_id)?;
    if changes.len() > MAX_PERMISSION_CHANGES {
        return Err(invalid(format!(
            "1 validation error detected: Value at 'updateInstructionBatch' failed to satisfy \
             constraint: Member must have length less than or equal to {MAX_PERMISSION_CHANGES}"
        )));
    }
    let directory = state.directory.clone();
    let ws = find(state, ws_id)?;
    let mut errors = Vec::new();
    for (change, b) in changes {
        let who = (b.principal_type, b.principal_id.clone());
        if directory.as_ref().is_some_and(|d| !d.contains(&who)) {
            // The emulator's per-entry answer for a principal the directory lacks.
            errors.push(PermissionError {
                code: 404,
                message: format!(
                    "{} {} was not found in IAM Identity Center.",
                    match b.principal_type {
                        PrincipalType::SsoUser => "User",
                        PrincipalType::SsoGroup => "Group",
                    },
                    b.principal_id
                ),
                change: Some(*change),
                binding: Some(b.clone()),
            });
            continue;
        }
        match change {
            // One role per principal: ADD replaces the role it had.
            PermissionChange::Add => {
                ws.permissions.insert(who, b.role);
            }
            // REVOKE removes the entry only if the principal has that role.
            PermissionChange::Revoke => {
                if ws.permissions.get(&who) == Some(&b.role) {
                    ws.permissions.remove(&who);
                }
            }
        }
    }
    Ok(errors)
}

fn binding_list(ws: &Ws) -> Vec<Binding> {
    ws.permissions
        .iter()
        .map(|((principal_type, principal_id), role)| Binding {
            role: *role,
            principal_type: *principal_type,
            principal_id: principal_id.clone(),
        })
        .collect()
}

// ---- seeds ------------------------------------------------------------------------------------

/// A workspace to seed. Defaults: name = id, Grafana `10.4`, status `ACTIVE`, no tags (as the
/// emulator's seeds).
#[derive(Clone)]
pub struct WorkspaceSeed {
    id: String,
    name: Option<String>,
    grafana_version: String,
    status: String,
    tags: BTreeMap<String, String>,
    accounts: Vec<AccountSeed>,
    api_keys: Vec<ApiKeySeed>,
}

impl WorkspaceSeed {
    /// `id` must match `g-[0-9a-f]{10}`.
    pub fn new(id: &str) -> Self {
        WorkspaceSeed {
            id: id.to_owned(),
            name: None,
            grafana_version: "10.4".into(),
            status: "ACTIVE".into(),
            tags: BTreeMap::new(),
            accounts: Vec::new(),
            api_keys: Vec::new(),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn grafana_version(mut self, version: &str) -> Self {
        self.grafana_version = version.to_owned();
        self
    }

    pub fn status(mut self, status: &str) -> Self {
        self.status = status.to_owned();
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Service accounts get ids 2, 3, … in the order they are added.
    pub fn with_service_account(mut self, account: AccountSeed) -> Self {
        self.accounts.push(account);
        self
    }

    pub fn with_api_key(mut self, key: ApiKeySeed) -> Self {
        self.api_keys.push(key);
        self
    }
}

/// A service account to seed, enabled unless `disabled()`.
#[derive(Clone)]
pub struct AccountSeed {
    name: String,
    role: Role,
    disabled: bool,
    tokens: Vec<TokenSeed>,
}

impl AccountSeed {
    pub fn new(name: &str, role: Role) -> Self {
        AccountSeed {
            name: name.to_owned(),
            role,
            disabled: false,
            tokens: Vec::new(),
        }
    }

    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// Tokens get ids from the workspace's one sequence (1, 2, …) in seeding order.
    pub fn with_token(mut self, token: TokenSeed) -> Self {
        self.tokens.push(token);
        self
    }
}

/// A token to seed. Seeds may do what the API cannot: an already expired token, or one with no
/// expiry at all (made in the workspace's own Grafana UI; facts, "The AMG of today").
#[derive(Clone)]
pub struct TokenSeed {
    name: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    key: Option<Key>,
}

impl TokenSeed {
    pub fn new(name: &str, created_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Self {
        TokenSeed {
            name: name.to_owned(),
            created_at,
            expires_at: Some(expires_at),
            last_used_at: None,
            key: None,
        }
    }

    /// A token AMG reports without `expiresAt`: it never expires, and counts toward the quota.
    pub fn without_expiry(name: &str, created_at: DateTime<Utc>) -> Self {
        TokenSeed {
            expires_at: None,
            ..TokenSeed::new(name, created_at, created_at)
        }
    }

    pub fn last_used(mut self, at: DateTime<Utc>) -> Self {
        self.last_used_at = Some(at);
        self
    }

    /// The key, when a test needs to know it (say, to seed a secret holding it); otherwise one
    /// is minted.
    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }
}

/// An API key to seed (Grafana 8 to 10 only, as the emulator's seeds).
#[derive(Clone)]
pub struct ApiKeySeed {
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    key: Option<Key>,
}

impl ApiKeySeed {
    pub fn new(
        name: &str,
        role: Role,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        ApiKeySeed {
            name: name.to_owned(),
            role,
            created_at,
            expires_at,
            key: None,
        }
    }

    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }
}

/// A seed that breaks one of AMG's rules is a bug in the test: say which, loudly.
fn refuse(what: String) -> ! {
    panic!("FakeGrafana seed refused: {what}")
}

impl State {
    fn ws(&mut self, id: &str) -> &mut Ws {
        match self.workspaces.get_mut(id) {
            Some(ws) => ws,
            None => refuse(format!("no workspace {id}")),
        }
    }

    fn seed_workspace(&mut self, seed: WorkspaceSeed) {
        if check_workspace_id(&seed.id).is_err() {
            refuse(format!("workspace id {} is not g-[0-9a-f]{{10}}", seed.id));
        }
        if self.workspaces.contains_key(&seed.id) {
            refuse(format!("workspace {} exists", seed.id));
        }
        let ws = Ws {
            info: Workspace {
                id: seed.id.clone(),
                name: seed.name.unwrap_or_else(|| seed.id.clone()),
                endpoint: format!(
                    "{}.grafana-workspace.{}.amazonaws.com",
                    seed.id, self.region
                ),
                grafana_version: seed.grafana_version,
                status: seed.status,
                tags: seed.tags,
            },
            next_account_id: 2,
            next_key_id: 1,
            accounts: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            permissions: BTreeMap::new(),
        };
        self.workspaces.insert(seed.id.clone(), ws);
        for account in seed.accounts {
            self.seed_account(&seed.id, account);
        }
        for key in seed.api_keys {
            self.seed_api_key(&seed.id, key);
        }
    }

    fn seed_account(&mut self, ws_id: &str, seed: AccountSeed) -> String {
        let ws = self.ws(ws_id);
        if !ws.info.supports_service_accounts() {
            refuse(format!(
                "workspace {ws_id} runs Grafana {}: no service accounts before 9",
                ws.info.grafana_version
            ));
        }
        if ws.accounts.values().any(|a| a.info.name == seed.name) {
            refuse(format!("service account {} exists in {ws_id}", seed.name));
        }
        let id = ws.next_account_id;
        ws.next_account_id += 1;
        ws.accounts.insert(
            id,
            Account {
                info: ServiceAccount {
                    id: id.to_string(),
                    name: seed.name,
                    role: Some(seed.role),
                    is_disabled: seed.disabled,
                },
                tokens: BTreeMap::new(),
            },
        );
        for token in seed.tokens {
            self.seed_token(ws_id, &id.to_string(), token);
        }
        id.to_string()
    }

    fn seed_token(&mut self, ws_id: &str, sa_id: &str, seed: TokenSeed) -> String {
        let mut counter = self.keys_minted;
        let ws = self.ws(ws_id);
        if let Some(holder) = ws.name_holder(&seed.name) {
            refuse(format!("the name {} is {holder}'s in {ws_id}", seed.name));
        }
        let key = match seed.key {
            Some(k) if ws.holds_key(k.expose()) => {
                refuse(format!("token {}: its key is held already", seed.name))
            }
            Some(k) => k,
            None => mint_key(&mut counter, ws),
        };
        let id = ws.allocate_key_id();
        let Ok(account) = ws.account_mut(sa_id) else {
            refuse(format!("no service account {sa_id} in {ws_id}"))
        };
        account.tokens.insert(
            id,
            StoredToken {
                summary: Token {
                    id: id.to_string(),
                    name: seed.name,
                    created_at: seed.created_at,
                    expires_at: seed.expires_at,
                    last_used_at: seed.last_used_at,
                },
                key,
            },
        );
        self.keys_minted = counter;
        id.to_string()
    }

    fn seed_api_key(&mut self, ws_id: &str, seed: ApiKeySeed) {
        let mut counter = self.keys_minted;
        let ws = self.ws(ws_id);
        if !ws.info.supports_api_keys() {
            refuse(format!(
                "workspace {ws_id} runs Grafana {}: no API keys from 12 on (upgrade with \
                 set_grafana_version to keep one)",
                ws.info.grafana_version
            ));
        }
        if let Some(holder) = ws.name_holder(&seed.name) {
            refuse(format!("the name {} is {holder}'s in {ws_id}", seed.name));
        }
        let key = match seed.key {
            Some(k) if ws.holds_key(k.expose()) => {
                refuse(format!("API key {}: its key is held already", seed.name))
            }
            Some(k) => k,
            None => mint_key(&mut counter, ws),
        };
        ws.allocate_key_id();
        ws.api_keys.insert(
            seed.name,
            StoredApiKey {
                role: seed.role,
                key,
                created_at: seed.created_at,
                expires_at: seed.expires_at,
            },
        );
        self.keys_minted = counter;
    }
}

impl FakeGrafana {
    /// No workspaces, region `us-east-1`, a token quota of 99.
    pub fn new() -> Self {
        FakeGrafana::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("FakeGrafana lock")
    }

    /// The region in the endpoints of workspaces seeded from now on.
    pub fn with_region(self, region: &str) -> Self {
        self.state().region = region.to_owned();
        self
    }

    /// Tokens per service account, expired ones included (default 99).
    pub fn with_token_quota(self, quota: usize) -> Self {
        self.state().token_quota = quota;
        self
    }

    /// The IAM Identity Center users and groups UpdatePermissions accepts; others fail per entry.
    pub fn with_directory(self, principals: &[(PrincipalType, &str)]) -> Self {
        self.state().directory = Some(
            principals
                .iter()
                .map(|(t, id)| (*t, (*id).to_owned()))
                .collect(),
        );
        self
    }

    /// Seeds a workspace with its service accounts, tokens and API keys. Panics on a seed that
    /// breaks AMG's rules (a duplicate name or key, service accounts before Grafana 9, API keys
    /// on 12 and later); seeds may exceed the token quota, as the emulator's may.
    pub fn with_workspace(self, seed: WorkspaceSeed) -> Self {
        self.add_workspace(seed);
        self
    }

    pub fn add_workspace(&self, seed: WorkspaceSeed) {
        self.state().seed_workspace(seed);
    }

    /// Seeds a service account into an existing workspace; returns its id.
    pub fn add_service_account(&self, workspace_id: &str, seed: AccountSeed) -> String {
        self.state().seed_account(workspace_id, seed)
    }

    /// Seeds a token; returns its id.
    pub fn add_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        seed: TokenSeed,
    ) -> String {
        self.state()
            .seed_token(workspace_id, service_account_id, seed)
    }

    pub fn add_api_key(&self, workspace_id: &str, seed: ApiKeySeed) {
        self.state().seed_api_key(workspace_id, seed);
    }

    // ---- changes made behind the rotator's back ----------------------------------------------

    /// An upgrade (UpdateWorkspaceConfiguration `grafanaVersion`). API keys the workspace holds
    /// stay and still open Grafana, but DeleteWorkspaceApiKey refuses them on 12 and later: the
    /// emulator's choice, what becomes of them being unverified (facts).
    pub fn set_grafana_version(&self, workspace_id: &str, version: &str) {
        self.state().ws(workspace_id).info.grafana_version = version.to_owned();
    }

    pub fn set_status(&self, workspace_id: &str, status: &str) {
        self.state().ws(workspace_id).info.status = status.to_owned();
    }

    pub fn set_disabled(&self, workspace_id: &str, service_account_id: &str, disabled: bool) {
        let mut state = self.state();
        match state.ws(workspace_id).account_mut(service_account_id) {
            Ok(a) => a.info.is_disabled = disabled,
            Err(_) => refuse(format!("no service account {service_account_id}")),
        }
    }

    /// Deletes a service account and its tokens (DeleteWorkspaceServiceAccount, by hand).
    pub fn remove_service_account(&self, workspace_id: &str, service_account_id: &str) {
        let removed = service_account_id
            .parse::<u64>()
            .ok()
            .and_then(|n| self.state().ws(workspace_id).accounts.remove(&n));
        if removed.is_none() {
            refuse(format!("no service account {service_account_id}"));
        }
    }

    /// Sets a token's expiry (`None`: no expiry), as the emulator's expiry route does.
    pub fn set_token_expiry(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) {
        let mut state = self.state();
        let token = state
            .ws(workspace_id)
            .account_mut(service_account_id)
            .ok()
            .and_then(|a| {
                token_id
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| a.tokens.get_mut(&n))
            });
        match token {
            Some(t) => t.summary.expires_at = expires_at,
            None => refuse(format!("no token {token_id} in {service_account_id}")),
        }
    }

    // ---- inspection ---------------------------------------------------------------------------

    pub fn workspace(&self, workspace_id: &str) -> Option<Workspace> {
        self.state()
            .workspaces
            .get(workspace_id)
            .map(|w| w.info.clone())
    }

    pub fn service_accounts(&self, workspace_id: &str) -> Vec<ServiceAccount> {
        self.state()
            .workspaces
            .get(workspace_id)
            .map(|w| w.accounts.values().map(|a| a.info.clone()).collect())
            .unwrap_or_default()
    }

    /// The id of the service account named `name`.
    pub fn service_account_id(&self, workspace_id: &str, name: &str) -> Option<String> {
        self.service_accounts(workspace_id)
            .into_iter()
            .find(|a| a.name == name)
            .map(|a| a.id)
    }

    /// The tokens of a service account, by id, without their keys (as ListWorkspaceServiceAccountTokens).
    pub fn tokens(&self, workspace_id: &str, service_account_id: &str) -> Vec<Token> {
        let state = self.state();
        let account = state.workspaces.get(workspace_id).and_then(|w| {
            service_account_id
                .parse::<u64>()
                .ok()
                .and_then(|n| w.accounts.get(&n))
        });
        account
            .map(|a| a.tokens.values().map(|t| t.summary.clone()).collect())
            .unwrap_or_default()
    }

    /// The API keys of a workspace, by name, without their keys.
    pub fn api_keys(&self, workspace_id: &str) -> Vec<ApiKeySummary> {
        self.state()
            .workspaces
            .get(workspace_id)
            .map(|w| {
                w.api_keys
                    .iter()
                    .map(|(name, k)| ApiKeySummary {
                        name: name.clone(),
                        role: k.role,
                        created_at: k.created_at,
                        expires_at: k.expires_at,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the workspace's Grafana accepts `key` at `now`: an unexpired token of an enabled
    /// service account, or an unexpired API key, of that workspace (the emulator's Grafana
    /// stand-in). A key is expired from its `expiresAt` second on; one without expiry never is.
    pub fn key_works(&self, workspace_id: &str, key: &Key, now: DateTime<Utc>) -> bool {
        self.use_key(workspace_id, key, now, false).unwrap_or(false)
    }

    /// `key_works`, and when `touch` records the use on the token (`lastUsedAt`), as Grafana
    /// does. `None` when there is no such workspace.
    pub(crate) fn use_key(
        &self,
        workspace_id: &str,
        key: &Key,
        now: DateTime<Utc>,
        touch: bool,
    ) -> Option<bool> {
        let mut state = self.state();
        let ws = state.workspaces.get_mut(workspace_id)?;
        let key = key.expose();
        if ws
            .api_keys
            .values()
            .any(|k| k.key.expose() == key && k.expires_at > now)
        {
            return Some(true);
        }
        for account in ws.accounts.values_mut() {
            for t in account.tokens.values_mut() {
                if t.key.expose() == key {
                    let ok = !account.info.is_disabled && !t.summary.expired(now);
                    if ok && touch {
                        t.summary.last_used_at = Some(now);
                    }
                    return Some(ok);
                }
            }
        }
        Some(false)
    }

    /// The workspace whose id appears in `url` (its endpoint starts with it; a Grafana URL
    /// template names it), for the verifier.
    pub(crate) fn workspace_in_url(&self, url: &str) -> Option<String> {
        self.state()
            .workspaces
            .keys()
            .find(|id| url.contains(id.as_str()))
            .cloned()
    }

    pub fn permissions(&self, workspace_id: &str) -> Vec<Binding> {
        self.state()
            .workspaces
            .get(workspace_id)
            .map(binding_list)
            .unwrap_or_default()
    }

    /// Every call answered, in order, with its outcome.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.all()
    }

    /// How many times `operation` (an `ops` name) was called.
    pub fn count(&self, operation: &str) -> usize {
        self.calls.count(operation)
    }

    /// Runs one operation on the state and logs it.
    fn run<T>(
        &self,
        operation: &'static str,
        target: String,
        op: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let result = op(&mut self.state());
        self.calls.record(operation, target, &result);
        result
    }
}

#[async_trait]
impl Grafana for FakeGrafana {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError> {
        self.run(ops::LIST_WORKSPACES, String::new(), |s| {
            Ok(s.workspaces.values().map(|w| w.info.clone()).collect())
        })
    }

    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError> {
        self.run(ops::DESCRIBE_WORKSPACE, workspace_id.into(), |s| {
            find(s, workspace_id).map(|w| w.info.clone())
        })
    }

    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError> {
        self.run(ops::LIST_SERVICE_ACCOUNTS, workspace_id.into(), |s| {
            let ws = gate(s, workspace_id, Kind::ServiceAccounts)?;
            Ok(ws.accounts.values().map(|a| a.info.clone()).collect())
        })
    }

    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError> {
        self.run(
            ops::CREATE_SERVICE_ACCOUNT,
            format!("{workspace_id} {name}"),
            |s| create_service_account(s, workspace_id, name, role),
        )
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError> {
        self.run(
            ops::LIST_TOKENS,
            format!("{workspace_id}/{service_account_id}"),
            |s| {
                let ws = gate(s, workspace_id, Kind::ServiceAccounts)?;
                let account = ws.account_mut(service_account_id)?;
                Ok(account.tokens.values().map(|t| t.summary.clone()).collect())
            },
        )
    }

    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewToken, ApiError> {
        self.run(
            ops::CREATE_TOKEN,
            format!("{workspace_id}/{service_account_id} {name}"),
            |s| create_token(s, workspace_id, service_account_id, name, ttl, now),
        )
    }

    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.run(
            ops::DELETE_TOKEN,
            format!("{workspace_id}/{service_account_id}/{token_id}"),
            |s| delete_token(s, workspace_id, service_account_id, token_id),
        )
    }

    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewApiKey, ApiError> {
        self.run(ops::CREATE_API_KEY, format!("{workspace_id} {name}"), |s| {
            create_api_key(s, workspace_id, name, role, ttl, now)
        })
    }

    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError> {
        self.run(ops::DELETE_API_KEY, format!("{workspace_id} {name}"), |s| {
            delete_api_key(s, workspace_id, name)
        })
    }

    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError> {
        // Permissions work on every Grafana version and status (emulator rule 6).
        self.run(ops::LIST_PERMISSIONS, workspace_id.into(), |s| {
            find(s, workspace_id).map(|w| binding_list(w))
        })
    }

    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError> {
        self.run(ops::UPDATE_PERMISSIONS, workspace_id.into(), |s| {
            update_permissions(s, workspace_id, changes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::epoch;

    const WS: &str = "g-0123456789";
    const OTHER: &str = "g-abcdef0123";
    const DAY: Duration = Duration::from_secs(86_400);

    fn hours(h: i64) -> chrono::Duration {
        chrono::Duration::hours(h)
    }

    /// One Grafana 10 workspace with the service account `terraform` (id 2) and no tokens.
    fn one_account() -> FakeGrafana {
        FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS).with_service_account(AccountSeed::new("terraform", Role::Admin)),
        )
    }

    fn is_conflict<T>(r: &Result<T, ApiError>) -> bool {
        matches!(r, Err(ApiError::Conflict(_)))
    }

    fn is_invalid<T>(r: &Result<T, ApiError>) -> bool {
        matches!(r, Err(ApiError::Invalid(_)))
    }

    fn is_not_found<T>(r: &Result<T, ApiError>) -> bool {
        matches!(r, Err(ApiError::NotFound(_)))
    }

    #[tokio::test]
    async fn a_workspace_reports_what_discovery_reads() {
        let g = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .name("prod")
                .grafana_version("12.4")
                .tag("team", "obs"),
        );
        let ws = g.describe_workspace(WS).await.unwrap();
        assert_eq!(ws.name, "prod");
        assert_eq!(ws.grafana_version, "12.4");
        assert_eq!(ws.status, "ACTIVE");
        assert_eq!(ws.tags.get("team").map(String::as_str), Some("obs"));
        // facts: the endpoint is a bare host name.
        assert_eq!(
            ws.endpoint,
            "g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
        assert_eq!(g.list_workspaces().await.unwrap(), vec![ws]);
    }

    #[tokio::test]
    async fn service_account_ids_start_at_two_and_names_are_unique_in_the_workspace() {
        let g = FakeGrafana::new()
            .with_workspace(WorkspaceSeed::new(WS))
            .with_workspace(WorkspaceSeed::new(OTHER));
        let a = g
            .create_service_account(WS, "ci", Role::Editor)
            .await
            .unwrap();
        let b = g
            .create_service_account(WS, "grafana-terraform", Role::Admin)
            .await
            .unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("2", "3"));
        assert!(!a.is_disabled);
        assert!(is_conflict(
            &g.create_service_account(WS, "ci", Role::Viewer).await
        ));
        // Another workspace is another namespace.
        assert_eq!(
            g.create_service_account(OTHER, "ci", Role::Viewer)
                .await
                .unwrap()
                .id,
            "2"
        );
        assert_eq!(g.list_service_accounts(WS).await.unwrap(), vec![a, b]);
    }

    #[tokio::test]
    async fn a_disabled_service_account_is_listed_as_disabled() {
        let g = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(AccountSeed::new("old", Role::Viewer).disabled()),
        );
        assert!(g.list_service_accounts(WS).await.unwrap()[0].is_disabled);
    }

    #[tokio::test]
    async fn token_ids_are_one_sequence_with_api_keys_and_never_reused() {
        let g = one_account();
        let now = epoch();
        let t1 = g.create_token(WS, "2", "a", DAY, now).await.unwrap();
        g.create_api_key(WS, "legacy", Role::Admin, DAY, now)
            .await
            .unwrap();
        g.delete_token(WS, "2", &t1.id).await.unwrap();
        let t3 = g.create_token(WS, "2", "b", DAY, now).await.unwrap();
        assert_eq!((t1.id.as_str(), t3.id.as_str()), ("1", "3"));
        assert_eq!(t3.created_at, now);
        assert_eq!(t3.expires_at, now + hours(24));
        let listed = g.list_tokens(WS, "2").await.unwrap();
        assert_eq!(listed, vec![t3.summary()]);
    }

    #[tokio::test]
    async fn only_create_returns_the_key_and_it_opens_grafana_until_deleted() {
        let g = one_account();
        let now = epoch();
        let t = g.create_token(WS, "2", "a", DAY, now).await.unwrap();
        let u = g.create_token(WS, "2", "b", DAY, now).await.unwrap();
        assert_ne!(t.key, u.key);
        assert!(t.key.expose().starts_with("glsa_"));
        assert!(g.key_works(WS, &t.key, now));
        // The listing has no key to give: `Token` carries none.
        assert_eq!(g.tokens(WS, "2").len(), 2);
        g.delete_token(WS, "2", &t.id).await.unwrap();
        assert!(!g.key_works(WS, &t.key, now));
        assert!(g.key_works(WS, &u.key, now));
    }

    #[tokio::test]
    async fn the_same_calls_mint_the_same_keys() {
        let (a, b) = (one_account(), one_account());
        let ka = a
            .create_token(WS, "2", "t", DAY, epoch())
            .await
            .unwrap()
            .key;
        let kb = b
            .create_token(WS, "2", "t", DAY, epoch())
            .await
            .unwrap()
            .key;
        assert_eq!(ka, kb, "deterministic, no randomness");
    }

    #[tokio::test]
    async fn token_names_are_unique_across_the_workspace_with_api_keys() {
        let g = FakeGrafana::new()
            .with_workspace(
                WorkspaceSeed::new(WS)
                    .grafana_version("9.4")
                    .with_service_account(AccountSeed::new("a", Role::Admin))
                    .with_service_account(AccountSeed::new("b", Role::Admin)),
            )
            .with_workspace(
                WorkspaceSeed::new(OTHER).with_service_account(AccountSeed::new("a", Role::Admin)),
            );
        let now = epoch();
        g.create_token(WS, "2", "amgrot-x", DAY, now).await.unwrap();
        // Another service account of the same workspace: one Grafana organization.
        assert!(is_conflict(
            &g.create_token(WS, "3", "amgrot-x", DAY, now).await
        ));
        assert!(is_conflict(
            &g.create_api_key(WS, "amgrot-x", Role::Admin, DAY, now)
                .await
        ));
        g.create_api_key(WS, "legacy", Role::Admin, DAY, now)
            .await
            .unwrap();
        assert!(is_conflict(
            &g.create_token(WS, "2", "legacy", DAY, now).await
        ));
        assert!(is_conflict(
            &g.create_api_key(WS, "legacy", Role::Admin, DAY, now).await
        ));
        // Another workspace is independent.
        g.create_token(OTHER, "2", "amgrot-x", DAY, now)
            .await
            .unwrap();
        // A deleted token frees its name.
        g.delete_token(WS, "2", "1").await.unwrap();
        g.create_token(WS, "3", "amgrot-x", DAY, now).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_token_keeps_its_name() {
        let now = epoch();
        let g = FakeGrafana::new().with_workspace(WorkspaceSeed::new(WS).with_service_account(
            AccountSeed::new("a", Role::Admin).with_token(TokenSeed::new(
                "old",
                now - hours(48),
                now - hours(24),
            )),
        ));
        assert!(is_conflict(&g.create_token(WS, "2", "old", DAY, now).await));
    }

    #[tokio::test]
    async fn seconds_to_live_is_one_second_to_thirty_days() {
        let g = one_account();
        let now = epoch();
        for bad in [0, MAX_SECONDS_TO_LIVE + 1] {
            let ttl = Duration::from_secs(bad);
            assert!(is_invalid(
                &g.create_token(WS, "2", &format!("t{bad}"), ttl, now).await
            ));
            assert!(is_invalid(
                &g.create_api_key(WS, &format!("k{bad}"), Role::Admin, ttl, now)
                    .await
            ));
        }
        // Less than a second is sent as 0 seconds.
        assert!(is_invalid(
            &g.create_token(WS, "2", "ms", Duration::from_millis(900), now)
                .await
        ));
        let max = Duration::from_secs(MAX_SECONDS_TO_LIVE);
        let t = g.create_token(WS, "2", "max", max, now).await.unwrap();
        assert_eq!(t.expires_at, now + chrono::Duration::days(30));
        g.create_token(WS, "2", "min", Duration::from_secs(1), now)
            .await
            .unwrap();
        // A refused create left nothing behind.
        assert_eq!(g.tokens(WS, "2").len(), 2);
    }

    #[tokio::test]
    async fn names_longer_than_the_model_allows_are_invalid() {
        let g = one_account();
        let now = epoch();
        assert!(is_invalid(&g.create_token(WS, "2", "", DAY, now).await));
        assert!(is_invalid(
            &g.create_token(WS, "2", &"n".repeat(129), DAY, now).await
        ));
        g.create_token(WS, "2", &"n".repeat(128), DAY, now)
            .await
            .unwrap();
        assert!(is_invalid(
            &g.create_api_key(WS, &"k".repeat(101), Role::Admin, DAY, now)
                .await
        ));
        assert!(is_invalid(
            &g.create_service_account(WS, &"s".repeat(129), Role::Admin)
                .await
        ));
    }

    #[tokio::test]
    async fn the_quota_counts_expired_tokens_until_they_are_deleted() {
        let now = epoch();
        let expired = |n: &str| TokenSeed::new(n, now - hours(72), now - hours(48));
        let g = FakeGrafana::new().with_token_quota(2).with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(
                    AccountSeed::new("a", Role::Admin)
                        .with_token(expired("e1"))
                        .with_token(expired("e2")),
                )
                .with_service_account(AccountSeed::new("b", Role::Admin)),
        );
        let r = g.create_token(WS, "2", "new", DAY, now).await;
        assert!(matches!(r, Err(ApiError::QuotaExceeded(_))), "{r:?}");
        // Per service account: another one still has room.
        g.create_token(WS, "3", "new", DAY, now).await.unwrap();
        g.delete_token(WS, "2", "1").await.unwrap();
        g.create_token(WS, "2", "new-2", DAY, now).await.unwrap();
    }

    #[tokio::test]
    async fn the_default_quota_is_ninety_nine_tokens() {
        let g = one_account();
        let now = epoch();
        for i in 0..DEFAULT_TOKEN_QUOTA {
            g.create_token(WS, "2", &format!("t{i}"), DAY, now)
                .await
                .unwrap();
        }
        let r = g.create_token(WS, "2", "one-too-many", DAY, now).await;
        assert!(matches!(r, Err(ApiError::QuotaExceeded(_))));
    }

    #[tokio::test]
    async fn a_token_without_expiry_never_expires_and_counts_toward_the_quota() {
        let now = epoch();
        let key = Key::new("glsa_made_in_the_ui_0000000000000000_00000000".into());
        let g = FakeGrafana::new().with_token_quota(1).with_workspace(
            WorkspaceSeed::new(WS).with_service_account(
                AccountSeed::new("a", Role::Admin)
                    .with_token(TokenSeed::without_expiry("ui", now - hours(1)).key(key.clone())),
            ),
        );
        let listed = g.list_tokens(WS, "2").await.unwrap();
        assert_eq!(listed[0].expires_at, None);
        assert!(g.key_works(WS, &key, now + chrono::Duration::days(3650)));
        assert!(matches!(
            g.create_token(WS, "2", "new", DAY, now).await,
            Err(ApiError::QuotaExceeded(_))
        ));
    }

    #[tokio::test]
    async fn grafana_eight_refuses_service_accounts_and_tokens_but_keeps_api_keys() {
        let g = FakeGrafana::new().with_workspace(WorkspaceSeed::new(WS).grafana_version("8.4"));
        let now = epoch();
        assert!(is_invalid(&g.list_service_accounts(WS).await));
        assert!(is_invalid(
            &g.create_service_account(WS, "a", Role::Admin).await
        ));
        assert!(is_invalid(&g.list_tokens(WS, "2").await));
        assert!(is_invalid(&g.create_token(WS, "2", "t", DAY, now).await));
        assert!(is_invalid(&g.delete_token(WS, "2", "1").await));
        let k = g
            .create_api_key(WS, "legacy", Role::Admin, DAY, now)
            .await
            .unwrap();
        assert!(g.key_works(WS, &k.key, now));
        g.delete_api_key(WS, "legacy").await.unwrap();
    }

    #[tokio::test]
    async fn api_keys_work_on_nine_and_ten_and_are_refused_from_twelve_on() {
        let now = epoch();
        for version in ["9.4", "10.4"] {
            let g =
                FakeGrafana::new().with_workspace(WorkspaceSeed::new(WS).grafana_version(version));
            let k = g
                .create_api_key(WS, "legacy", Role::Editor, DAY, now)
                .await
                .unwrap();
            assert_eq!(k.expires_at, now + hours(24));
            assert_eq!(g.api_keys(WS)[0].role, Role::Editor);
            g.delete_api_key(WS, "legacy").await.unwrap();
            assert!(g.api_keys(WS).is_empty());
        }
        for version in ["12.4", "13.0"] {
            let g = FakeGrafana::new().with_workspace(
                WorkspaceSeed::new(WS)
                    .grafana_version(version)
                    .with_service_account(AccountSeed::new("a", Role::Admin)),
            );
            let r = g.create_api_key(WS, "legacy", Role::Admin, DAY, now).await;
            match r {
                Err(ApiError::Invalid(m)) => assert!(m.contains(version), "{m}"),
                other => panic!("{other:?}"),
            }
            // Refused before the lookup: not a 404 for a key that does not exist.
            assert!(is_invalid(&g.delete_api_key(WS, "nothing").await));
            // Service accounts and tokens work there as on 9 and 10.
            g.create_token(WS, "2", "t", DAY, now).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_api_key_kept_across_an_upgrade_to_twelve_cannot_be_deleted() {
        let now = epoch();
        let g = FakeGrafana::new().with_workspace(WorkspaceSeed::new(WS).grafana_version("10.4"));
        let k = g
            .create_api_key(WS, "legacy", Role::Admin, DAY, now)
            .await
            .unwrap();
        g.set_grafana_version(WS, "12.4");
        assert!(g.key_works(WS, &k.key, now));
        assert!(is_invalid(&g.delete_api_key(WS, "legacy").await));
    }

    #[tokio::test]
    async fn unknown_things_are_not_found_and_malformed_ids_invalid() {
        let g = one_account();
        let now = epoch();
        assert!(is_not_found(&g.describe_workspace("g-ffffffffff").await));
        assert!(is_not_found(&g.list_service_accounts("g-ffffffffff").await));
        assert!(is_invalid(&g.describe_workspace("ws-1").await));
        assert!(is_not_found(&g.list_tokens(WS, "99").await));
        assert!(is_not_found(&g.list_tokens(WS, "terraform").await));
        assert!(is_not_found(&g.create_token(WS, "99", "t", DAY, now).await));
        assert!(is_not_found(&g.delete_token(WS, "2", "1").await));
        assert!(is_not_found(&g.delete_api_key(WS, "nothing").await));
        assert!(is_not_found(&g.list_permissions("g-ffffffffff").await));
    }

    #[tokio::test]
    async fn a_token_is_found_only_under_its_own_service_account() {
        let g = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(AccountSeed::new("a", Role::Admin))
                .with_service_account(AccountSeed::new("b", Role::Admin)),
        );
        let t = g.create_token(WS, "2", "t", DAY, epoch()).await.unwrap();
        assert!(is_not_found(&g.delete_token(WS, "3", &t.id).await));
        g.delete_token(WS, "2", &t.id).await.unwrap();
    }

    #[tokio::test]
    async fn a_workspace_that_is_not_active_refuses_credential_calls() {
        let g = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .status("UPDATING")
                .with_service_account(AccountSeed::new("a", Role::Admin)),
        );
        assert!(is_conflict(&g.list_tokens(WS, "2").await));
        assert!(is_conflict(
            &g.create_token(WS, "2", "t", DAY, epoch()).await
        ));
        assert!(is_conflict(
            &g.create_api_key(WS, "k", Role::Admin, DAY, epoch()).await
        ));
        // Described and permissions, still.
        assert_eq!(g.describe_workspace(WS).await.unwrap().status, "UPDATING");
        g.list_permissions(WS).await.unwrap();
        g.set_status(WS, "ACTIVE");
        g.list_tokens(WS, "2").await.unwrap();
    }

    #[tokio::test]
    async fn grafana_refuses_expired_deleted_disabled_and_foreign_keys() {
        let now = epoch();
        let g = FakeGrafana::new()
            .with_workspace(
                WorkspaceSeed::new(WS).with_service_account(AccountSeed::new("a", Role::Admin)),
            )
            .with_workspace(WorkspaceSeed::new(OTHER));
        let t = g.create_token(WS, "2", "t", DAY, now).await.unwrap();
        assert!(g.key_works(WS, &t.key, now + hours(23)));
        // Expired from its expiresAt second on.
        assert!(!g.key_works(WS, &t.key, t.expires_at));
        assert!(!g.key_works(OTHER, &t.key, now));
        assert!(!g.key_works(WS, &Key::new("glsa_wrong".into()), now));
        g.set_disabled(WS, "2", true);
        assert!(!g.key_works(WS, &t.key, now));
        g.set_disabled(WS, "2", false);
        g.set_token_expiry(WS, "2", &t.id, Some(now - hours(1)));
        assert!(!g.key_works(WS, &t.key, now));
        assert_eq!(g.tokens(WS, "2")[0].expires_at, Some(now - hours(1)));
    }

    #[tokio::test]
    async fn permissions_hold_one_role_per_principal() {
        let g = FakeGrafana::new().with_workspace(WorkspaceSeed::new(WS));
        let b = |role, id: &str| Binding {
            role,
            principal_type: PrincipalType::SsoGroup,
            principal_id: id.into(),
        };
        let errors = g
            .update_permissions(
                WS,
                &[
                    (PermissionChange::Add, b(Role::Viewer, "g1")),
                    (PermissionChange::Add, b(Role::Admin, "g1")),
                    (PermissionChange::Add, b(Role::Editor, "g2")),
                    // REVOKE of a role the principal does not have changes nothing.
                    (PermissionChange::Revoke, b(Role::Viewer, "g2")),
                ],
            )
            .await
            .unwrap();
        assert!(errors.is_empty());
        assert_eq!(
            g.list_permissions(WS).await.unwrap(),
            vec![b(Role::Admin, "g1"), b(Role::Editor, "g2")]
        );
        g.update_permissions(WS, &[(PermissionChange::Revoke, b(Role::Editor, "g2"))])
            .await
            .unwrap();
        assert_eq!(g.permissions(WS), vec![b(Role::Admin, "g1")]);
        let many = vec![(PermissionChange::Add, b(Role::Admin, "g3")); MAX_PERMISSION_CHANGES + 1];
        assert!(is_invalid(&g.update_permissions(WS, &many).await));
    }

    #[tokio::test]
    async fn principals_outside_the_directory_fail_per_entry_while_the_others_apply() {
        let g = FakeGrafana::new()
            .with_directory(&[(PrincipalType::SsoUser, "u1")])
            .with_workspace(WorkspaceSeed::new(WS));
        let user = |id: &str| Binding {
            role: Role::Viewer,
            principal_type: PrincipalType::SsoUser,
            principal_id: id.into(),
        };
        let errors = g
            .update_permissions(
                WS,
                &[
                    (PermissionChange::Add, user("u1")),
                    (PermissionChange::Add, user("ghost")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, 404);
        assert_eq!(errors[0].binding, Some(user("ghost")));
        assert_eq!(g.permissions(WS), vec![user("u1")]);
    }

    #[tokio::test]
    async fn the_call_log_names_operations_and_outcomes_never_keys() {
        let g = one_account();
        let t = g.create_token(WS, "2", "t", DAY, epoch()).await.unwrap();
        let _ = g.create_token(WS, "2", "t", DAY, epoch()).await;
        g.list_tokens(WS, "2").await.unwrap();
        let calls = g.calls();
        let seen: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (c.operation, c.outcome_label()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (ops::CREATE_TOKEN, "ok"),
                (ops::CREATE_TOKEN, "conflict"),
                (ops::LIST_TOKENS, "ok"),
            ]
        );
        assert_eq!(g.count(ops::CREATE_TOKEN), 2);
        let shown = format!("{calls:?}");
        assert!(!shown.contains(t.key.expose()), "{shown}");
        assert!(!format!("{t:?}").contains(t.key.expose()));
    }

    #[tokio::test]
    async fn seeded_ids_are_predictable() {
        let now = epoch();
        let g = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(
                    AccountSeed::new("a", Role::Admin)
                        .with_token(TokenSeed::new("t1", now, now + hours(1)))
                        .with_token(TokenSeed::new("t2", now, now + hours(1)).last_used(now)),
                )
                .with_service_account(AccountSeed::new("b", Role::Viewer)),
        );
        assert_eq!(g.service_account_id(WS, "b").as_deref(), Some("3"));
        let ids: Vec<String> = g.tokens(WS, "2").into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(g.tokens(WS, "2")[1].last_used_at, Some(now));
        assert_eq!(
            g.add_service_account(WS, AccountSeed::new("c", Role::Admin)),
            "4"
        );
        assert_eq!(g.add_token(WS, "4", TokenSeed::new("t3", now, now)), "3");
        // The API's next token continues the sequence.
        assert_eq!(
            g.create_token(WS, "3", "t4", DAY, now).await.unwrap().id,
            "4"
        );
    }

    #[test]
    #[should_panic(expected = "seed refused")]
    fn a_seed_with_a_duplicate_token_name_is_refused() {
        let now = epoch();
        FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(
                    AccountSeed::new("a", Role::Admin).with_token(TokenSeed::new("t", now, now)),
                )
                .with_service_account(
                    AccountSeed::new("b", Role::Admin).with_token(TokenSeed::new("t", now, now)),
                ),
        );
    }

    #[test]
    #[should_panic(expected = "seed refused")]
    fn a_seed_cannot_give_grafana_twelve_api_keys() {
        let now = epoch();
        FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .grafana_version("12.4")
                .with_api_key(ApiKeySeed::new("k", Role::Admin, now, now)),
        );
    }
}
