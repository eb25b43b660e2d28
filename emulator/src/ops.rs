//! The fourteen AMG operations: validation, rules and the exact response shapes.
//!
//! Each operation is a plain function of the state, the decoded request and the one clock reading
//! of the call; it never touches HTTP, faults or the call log (that is `aws.rs`). Checks run in the
//! order AWS applies them: input validation, then the workspace (404), then the Grafana-version rule
//! (service accounts need Grafana 9; API keys are gone from Grafana 12), then the workspace status
//! (409 unless ACTIVE), then the service account / token / key (404), then the business rules
//! (name conflicts, quota).

use crate::clock::Now;
use crate::errors::{AwsError, ValidationReason};
use crate::model::{
    new_key, ApiKey, Permission, Role, ServiceAccount, State, Token, User, UserType, Workspace,
    FIRST_VERSION_WITHOUT_API_KEYS,
};
use crate::pagination::{numeric_key, paginate};
use crate::upgrade::{self, upgrades_from, version_sort_key};
use crate::validate::{Body, Checker};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The most seconds a token or API key may live: 30 days.
pub const MAX_SECONDS_TO_LIVE: i64 = 2_592_000;
/// The quota code the emulator puts in ServiceQuotaExceededException for the token quota. AMG's
/// real code is not published; this one is made up and says what it counts.
pub const TOKEN_QUOTA_CODE: &str = "service-account-tokens-per-service-account";

/// The emulated operations, named as in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    ListWorkspaces,
    DescribeWorkspace,
    ListWorkspaceServiceAccounts,
    CreateWorkspaceServiceAccount,
    DeleteWorkspaceServiceAccount,
    ListWorkspaceServiceAccountTokens,
    CreateWorkspaceServiceAccountToken,
    DeleteWorkspaceServiceAccountToken,
    CreateWorkspaceApiKey,
    DeleteWorkspaceApiKey,
    ListPermissions,
    UpdatePermissions,
    ListVersions,
    UpdateWorkspaceConfiguration,
}

impl Operation {
    pub const ALL: [Operation; 14] = [
        Operation::ListWorkspaces,
        Operation::DescribeWorkspace,
        Operation::ListWorkspaceServiceAccounts,
        Operation::CreateWorkspaceServiceAccount,
        Operation::DeleteWorkspaceServiceAccount,
        Operation::ListWorkspaceServiceAccountTokens,
        Operation::CreateWorkspaceServiceAccountToken,
        Operation::DeleteWorkspaceServiceAccountToken,
        Operation::CreateWorkspaceApiKey,
        Operation::DeleteWorkspaceApiKey,
        Operation::ListPermissions,
        Operation::UpdatePermissions,
        Operation::ListVersions,
        Operation::UpdateWorkspaceConfiguration,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Operation::ListWorkspaces => "ListWorkspaces",
            Operation::DescribeWorkspace => "DescribeWorkspace",
            Operation::ListWorkspaceServiceAccounts => "ListWorkspaceServiceAccounts",
            Operation::CreateWorkspaceServiceAccount => "CreateWorkspaceServiceAccount",
            Operation::DeleteWorkspaceServiceAccount => "DeleteWorkspaceServiceAccount",
            Operation::ListWorkspaceServiceAccountTokens => "ListWorkspaceServiceAccountTokens",
            Operation::CreateWorkspaceServiceAccountToken => "CreateWorkspaceServiceAccountToken",
            Operation::DeleteWorkspaceServiceAccountToken => "DeleteWorkspaceServiceAccountToken",
            Operation::CreateWorkspaceApiKey => "CreateWorkspaceApiKey",
            Operation::DeleteWorkspaceApiKey => "DeleteWorkspaceApiKey",
            Operation::ListPermissions => "ListPermissions",
            Operation::UpdatePermissions => "UpdatePermissions",
            Operation::ListVersions => "ListVersions",
            Operation::UpdateWorkspaceConfiguration => "UpdateWorkspaceConfiguration",
        }
    }

    /// The HTTP status of a success: the model's `smithy.api#http` code (202 for
    /// UpdateWorkspaceConfiguration, 200 for the others).
    pub fn success_status(&self) -> u16 {
        match self {
            Operation::UpdateWorkspaceConfiguration => 202,
            _ => 200,
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// The path labels of a request, percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub workspace_id: Option<String>,
    pub service_account_id: Option<String>,
    pub token_id: Option<String>,
    pub key_name: Option<String>,
}

/// One decoded AWS request.
pub struct Request<'a> {
    pub op: Operation,
    pub labels: &'a Labels,
    pub query: &'a HashMap<String, String>,
    pub body: &'a [u8],
}

impl Request<'_> {
    fn workspace_id(&self) -> &str {
        self.labels.workspace_id.as_deref().unwrap_or_default()
    }
    fn service_account_id(&self) -> &str {
        self.labels
            .service_account_id
            .as_deref()
            .unwrap_or_default()
    }
    fn token_id(&self) -> &str {
        self.labels.token_id.as_deref().unwrap_or_default()
    }
    fn key_name(&self) -> &str {
        self.labels.key_name.as_deref().unwrap_or_default()
    }
    fn next_token(&self) -> Option<&str> {
        self.query.get("nextToken").map(String::as_str)
    }
}

/// Runs one operation against the state.
pub fn execute(
    state: &mut State,
    req: &Request,
    now: Now,
    rng: &mut fastrand::Rng,
) -> Result<Value, AwsError> {
    let now = now.epoch_secs();
    match req.op {
        Operation::ListWorkspaces => list_workspaces(state, req),
        Operation::DescribeWorkspace => describe_workspace(state, req),
        Operation::ListWorkspaceServiceAccounts => list_service_accounts(state, req),
        Operation::CreateWorkspaceServiceAccount => create_service_account(state, req),
        Operation::DeleteWorkspaceServiceAccount => delete_service_account(state, req),
        Operation::ListWorkspaceServiceAccountTokens => list_tokens(state, req),
        Operation::CreateWorkspaceServiceAccountToken => create_token(state, req, now, rng),
        Operation::DeleteWorkspaceServiceAccountToken => delete_token(state, req),
        Operation::CreateWorkspaceApiKey => create_api_key(state, req, now, rng),
        Operation::DeleteWorkspaceApiKey => delete_api_key(state, req),
        Operation::ListPermissions => list_permissions(state, req),
        Operation::UpdatePermissions => update_permissions(state, req),
        Operation::ListVersions => list_versions(state, req),
        Operation::UpdateWorkspaceConfiguration => update_configuration(state, req, now),
    }
}

// ---- shared checks ---------------------------------------------------------------------------

fn page_size(max_results: Option<i64>, state: &State) -> usize {
    max_results.map_or(state.default_page_size.max(1) as usize, |n| n as usize)
}

fn with_next_token(mut body: Value, next_token: Option<String>) -> Value {
    if let (Some(token), Value::Object(map)) = (next_token, &mut body) {
        map.insert("nextToken".to_string(), Value::String(token));
    }
    body
}

fn find_workspace<'s>(state: &'s mut State, id: &str) -> Result<&'s mut Workspace, AwsError> {
    state
        .workspace_mut(id)
        .ok_or_else(|| AwsError::not_found("WORKSPACE", id, format!("Workspace {id} not found.")))
}

/// What a call works on, for the Grafana-version rule: service accounts (with their tokens) need
/// Grafana 9 or later; API keys are gone from Grafana 12 on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    ServiceAccounts,
    ApiKeys,
}

/// The workspace of a service-account, token or API-key call: it must exist, run a Grafana version
/// that has what the call works on, and be ACTIVE, checked in that order.
///
/// The API-key refusal is an assumption. Verified: AMG offers Grafana 9, 10, 12 and 13, and "API
/// keys have been removed in Amazon Managed Grafana version 12" (AMG user guide, service accounts
/// page; shared/reference/aws-facts.md). Unverified: what a 12+ workspace answers to
/// CreateWorkspaceApiKey and DeleteWorkspaceApiKey. The emulator answers as it does for service
/// accounts on Grafana 8: 400 ValidationException, reason OTHER, a message naming the version.
fn workspace_for_keys<'s>(
    state: &'s mut State,
    id: &str,
    kind: KeyKind,
) -> Result<&'s mut Workspace, AwsError> {
    let ws = find_workspace(state, id)?;
    if kind == KeyKind::ServiceAccounts && !ws.supports_service_accounts() {
        return Err(AwsError::validation(
            ValidationReason::Other,
            format!(
                "Service accounts are only available for workspaces that are compatible with \
                 Grafana version 9 and above. Workspace {id} runs Grafana {}.",
                ws.grafana_version
            ),
        ));
    }
    if kind == KeyKind::ApiKeys && !ws.supports_api_keys() {
        return Err(AwsError::validation(
            ValidationReason::Other,
            format!(
                "API keys have been removed in Amazon Managed Grafana version \
                 {FIRST_VERSION_WITHOUT_API_KEYS}. Workspace {id} runs Grafana {}: use service \
                 accounts and tokens.",
                ws.grafana_version
            ),
        ));
    }
    if ws.status != "ACTIVE" {
        return Err(AwsError::conflict(
            "WORKSPACE",
            id,
            format!("Workspace {id} is in status {}, not ACTIVE.", ws.status),
        ));
    }
    Ok(ws)
}

fn service_account_not_found(id: &str) -> AwsError {
    AwsError::not_found(
        "SERVICE_ACCOUNT",
        id,
        format!("Service account {id} not found."),
    )
}

fn find_service_account<'w>(
    ws: &'w mut Workspace,
    id: &str,
) -> Result<&'w mut ServiceAccount, AwsError> {
    ws.service_account_mut(id)
        .ok_or_else(|| service_account_not_found(id))
}

fn name_conflict(workspace_id: &str, name: &str, holder: &str) -> AwsError {
    let what = if holder == "API_KEY" {
        "an API key"
    } else {
        "a service account token"
    };
    AwsError::conflict(
        holder,
        name,
        format!(
            "The name '{name}' is already used by {what} in workspace {workspace_id}: token and \
             API key names are unique in the workspace."
        ),
    )
}

/// A key no token or API key of the workspace has yet.
fn unique_key(ws: &Workspace, rng: &mut fastrand::Rng) -> String {
    loop {
        let key = new_key(rng);
        if !ws.has_key(&key) {
            return key;
        }
    }
}

fn expect_valid<T>(value: Option<T>) -> T {
    value.expect("a missing member fails validation before this point")
}

// ---- workspaces --------------------------------------------------------------------------------

fn workspace_summary(ws: &Workspace) -> Value {
    json!({
        "authentication": {"providers": ["AWS_SSO"]},
        "created": ws.created,
        "endpoint": ws.endpoint,
        "grafanaVersion": ws.grafana_version,
        "id": ws.id,
        "modified": ws.modified,
        "name": ws.name,
        "notificationDestinations": [],
        "status": ws.status,
        "tags": ws.tags,
    })
}

fn list_workspaces(state: &State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    let max = check.query_integer(req.query, "maxResults", 1, 100);
    check.finish()?;
    let page = paginate(
        state.workspaces.iter().collect(),
        |ws| ws.id.clone(),
        "ListWorkspaces",
        page_size(max, state),
        req.next_token(),
    )?;
    let workspaces: Vec<Value> = page.items.into_iter().map(workspace_summary).collect();
    Ok(with_next_token(
        json!({ "workspaces": workspaces }),
        page.next_token,
    ))
}

fn describe_workspace(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    check.finish()?;
    let ws = find_workspace(state, req.workspace_id())?;
    Ok(json!({
        "workspace": {
            "accountAccessType": "CURRENT_ACCOUNT",
            "authentication": {"providers": ["AWS_SSO"]},
            "created": ws.created,
            "dataSources": [],
            "endpoint": ws.endpoint,
            "grafanaVersion": ws.grafana_version,
            "id": ws.id,
            "modified": ws.modified,
            "name": ws.name,
            "notificationDestinations": [],
            "permissionType": "SERVICE_MANAGED",
            "status": ws.status,
            "tags": ws.tags,
        }
    }))
}

// ---- service accounts --------------------------------------------------------------------------

fn list_service_accounts(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let max = check.query_integer(req.query, "maxResults", 1, 100);
    check.finish()?;
    let size = page_size(max, state);
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    let scope = format!("ListWorkspaceServiceAccounts/{}", ws.id);
    let page = paginate(
        ws.service_accounts.iter().collect(),
        |sa| numeric_key(&sa.id),
        &scope,
        size,
        req.next_token(),
    )?;
    let accounts: Vec<Value> = page
        .items
        .into_iter()
        .map(|sa| {
            json!({
                "grafanaRole": sa.grafana_role,
                "id": sa.id,
                "isDisabled": sa.is_disabled.to_string(),
                "name": sa.name,
            })
        })
        .collect();
    Ok(with_next_token(
        json!({ "serviceAccounts": accounts, "workspaceId": ws.id }),
        page.next_token,
    ))
}

fn create_service_account(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let body = Body::parse(req.body)?;
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let name = check.required_string(&body, "name", 1, 128)?;
    let role = check.required_string(&body, "grafanaRole", 0, usize::MAX)?;
    let role = role.and_then(|r| check.enum_value("grafanaRole", &r, Role::VALUES, Role::parse));
    check.finish()?;
    let (name, role) = (expect_valid(name), expect_valid(role));

    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    if ws.service_account_by_name(&name).is_some() {
        return Err(AwsError::conflict(
            "SERVICE_ACCOUNT",
            &name,
            format!(
                "A service account named '{name}' already exists in workspace {}.",
                ws.id
            ),
        ));
    }
    let id = ws.allocate_service_account_id();
    ws.service_accounts.push(ServiceAccount {
        id: id.clone(),
        name: name.clone(),
        grafana_role: role,
        is_disabled: false,
        tokens: Vec::new(),
    });
    Ok(json!({
        "grafanaRole": role,
        "id": id,
        "name": name,
        "workspaceId": ws.id,
    }))
}

fn delete_service_account(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    check.finish()?;
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    let sa_id = req.service_account_id();
    let before = ws.service_accounts.len();
    // The service account's tokens go with it.
    ws.service_accounts.retain(|sa| sa.id != sa_id);
    if ws.service_accounts.len() == before {
        return Err(service_account_not_found(sa_id));
    }
    Ok(json!({ "serviceAccountId": sa_id, "workspaceId": ws.id }))
}

// ---- service-account tokens --------------------------------------------------------------------

fn list_tokens(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let max = check.query_integer(req.query, "maxResults", 1, 100);
    check.finish()?;
    let size = page_size(max, state);
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    let ws_id = ws.id.clone();
    let sa = find_service_account(ws, req.service_account_id())?;
    let scope = format!("ListWorkspaceServiceAccountTokens/{ws_id}/{}", sa.id);
    let page = paginate(
        sa.tokens.iter().collect(),
        |t| numeric_key(&t.id),
        &scope,
        size,
        req.next_token(),
    )?;
    let tokens: Vec<Value> = page
        .items
        .into_iter()
        .map(|t| {
            let mut v = json!({
                "createdAt": t.created_at,
                "id": t.id,
                "name": t.name,
            });
            // The model marks expiresAt as required, but a token made in Grafana itself may have
            // no expiry: its summary then has no expiresAt (the SDK fills in the epoch).
            if let Some(expires) = t.expires_at {
                v["expiresAt"] = json!(expires);
            }
            if let Some(used) = t.last_used_at {
                v["lastUsedAt"] = json!(used);
            }
            v
        })
        .collect();
    Ok(with_next_token(
        json!({
            "serviceAccountId": sa.id,
            "serviceAccountTokens": tokens,
            "workspaceId": ws_id,
        }),
        page.next_token,
    ))
}

fn create_token(
    state: &mut State,
    req: &Request,
    now: i64,
    rng: &mut fastrand::Rng,
) -> Result<Value, AwsError> {
    let body = Body::parse(req.body)?;
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let name = check.required_string(&body, "name", 1, 128)?;
    let ttl = check.required_integer(&body, "secondsToLive", 1, MAX_SECONDS_TO_LIVE)?;
    check.finish()?;
    let (name, ttl) = (expect_valid(name), expect_valid(ttl));

    let quota = state.token_quota_per_service_account;
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    let sa_id = req.service_account_id();
    let held = ws
        .service_account(sa_id)
        .ok_or_else(|| service_account_not_found(sa_id))?
        .tokens
        .len();
    if let Some(holder) = ws.key_name_holder(&name) {
        return Err(name_conflict(&ws.id, &name, holder));
    }
    // The quota counts every token the service account holds, expired ones included.
    if held >= quota as usize {
        return Err(AwsError::ServiceQuotaExceeded {
            message: format!(
                "Service account {sa_id} already has {held} tokens (quota {quota}, expired tokens \
                 included). Delete tokens to create new ones."
            ),
            resource_id: sa_id.to_string(),
            resource_type: "SERVICE_ACCOUNT".to_string(),
            quota_code: TOKEN_QUOTA_CODE.to_string(),
        });
    }
    let key = unique_key(ws, rng);
    let id = ws.allocate_key_id();
    let ws_id = ws.id.clone();
    let sa = find_service_account(ws, sa_id)?;
    sa.tokens.push(Token {
        id: id.clone(),
        name: name.clone(),
        key: key.clone(),
        created_at: now,
        // secondsToLive is required here: the AWS API never makes a token without expiry.
        expires_at: Some(now + ttl),
        last_used_at: None,
    });
    Ok(json!({
        "serviceAccountId": sa_id,
        "serviceAccountToken": {"id": id, "key": key, "name": name},
        "workspaceId": ws_id,
    }))
}

fn delete_token(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    check.finish()?;
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ServiceAccounts)?;
    let ws_id = ws.id.clone();
    let sa = find_service_account(ws, req.service_account_id())?;
    let token_id = req.token_id();
    let before = sa.tokens.len();
    sa.tokens.retain(|t| t.id != token_id);
    if sa.tokens.len() == before {
        return Err(AwsError::not_found(
            "SERVICE_ACCOUNT_TOKEN",
            token_id,
            format!("Token {token_id} not found in service account {}.", sa.id),
        ));
    }
    Ok(json!({
        "serviceAccountId": sa.id,
        "tokenId": token_id,
        "workspaceId": ws_id,
    }))
}

// ---- API keys ----------------------------------------------------------------------------------

fn create_api_key(
    state: &mut State,
    req: &Request,
    now: i64,
    rng: &mut fastrand::Rng,
) -> Result<Value, AwsError> {
    let body = Body::parse(req.body)?;
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let name = check.required_string(&body, "keyName", 1, 100)?;
    // The model types keyRole as a plain String; its documentation lists the three roles.
    let role = check.required_string(&body, "keyRole", 0, usize::MAX)?;
    let role = role.and_then(|r| check.enum_value("keyRole", &r, Role::VALUES, Role::parse));
    let ttl = check.required_integer(&body, "secondsToLive", 1, MAX_SECONDS_TO_LIVE)?;
    check.finish()?;
    let (name, role, ttl) = (expect_valid(name), expect_valid(role), expect_valid(ttl));

    // API keys are the legacy mechanism: Grafana 8 (where one still runs) to 10 have them.
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ApiKeys)?;
    if let Some(holder) = ws.key_name_holder(&name) {
        return Err(name_conflict(&ws.id, &name, holder));
    }
    let key = unique_key(ws, rng);
    let id = ws.allocate_key_id();
    ws.api_keys.push(ApiKey {
        id,
        key_name: name.clone(),
        key_role: role,
        key: key.clone(),
        created_at: now,
        expires_at: now + ttl,
        last_used_at: None,
    });
    Ok(json!({ "key": key, "keyName": name, "workspaceId": ws.id }))
}

fn delete_api_key(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    check.length("keyName", req.key_name(), 1, 100);
    check.finish()?;
    let ws = workspace_for_keys(state, req.workspace_id(), KeyKind::ApiKeys)?;
    let name = req.key_name();
    let before = ws.api_keys.len();
    ws.api_keys.retain(|k| k.key_name != name);
    if ws.api_keys.len() == before {
        return Err(AwsError::not_found(
            "API_KEY",
            name,
            format!("API key '{name}' not found in workspace {}.", ws.id),
        ));
    }
    Ok(json!({ "keyName": name, "workspaceId": ws.id }))
}

// ---- permissions -------------------------------------------------------------------------------

fn permission_json(p: &Permission) -> Value {
    json!({ "role": p.role, "user": {"id": p.user.id, "type": p.user.user_type} })
}

fn list_permissions(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let max = check.query_integer(req.query, "maxResults", 1, 100);
    let user_type = req
        .query
        .get("userType")
        .and_then(|t| check.enum_value("userType", t, UserType::VALUES, UserType::parse));
    let user_id = req.query.get("userId");
    let group_id = req.query.get("groupId");
    for (name, value) in [("userId", user_id), ("groupId", group_id)] {
        if let Some(value) = value {
            check.length(name, value, 1, 47);
        }
    }
    check.finish()?;
    if user_id.is_some() && group_id.is_some() {
        return Err(AwsError::validation(
            ValidationReason::Other,
            "Specify at most one of userId and groupId.",
        ));
    }
    let size = page_size(max, state);
    let ws = find_workspace(state, req.workspace_id())?;
    let mut matching: Vec<&Permission> = ws
        .permissions
        .iter()
        .filter(|p| user_type.is_none_or(|t| p.user.user_type == t))
        .filter(|p| {
            user_id.is_none_or(|id| p.user.user_type == UserType::SsoUser && &p.user.id == id)
        })
        .filter(|p| {
            group_id.is_none_or(|id| p.user.user_type == UserType::SsoGroup && &p.user.id == id)
        })
        .collect();
    let key = |p: &&Permission| format!("{}/{}", p.user.user_type.as_str(), p.user.id);
    matching.sort_by_key(key);
    // The filters are part of the token's scope: a token is valid only for the same query.
    let scope = format!(
        "ListPermissions/{}/{}/{}/{}",
        ws.id,
        user_type.map_or("", |t| t.as_str()),
        user_id.map_or("", String::as_str),
        group_id.map_or("", String::as_str),
    );
    let page = paginate(matching, key, &scope, size, req.next_token())?;
    let permissions: Vec<Value> = page.items.into_iter().map(permission_json).collect();
    Ok(with_next_token(
        json!({ "permissions": permissions }),
        page.next_token,
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UpdateAction {
    Add,
    Revoke,
}

impl UpdateAction {
    fn parse(s: &str) -> Option<UpdateAction> {
        match s {
            "ADD" => Some(UpdateAction::Add),
            "REVOKE" => Some(UpdateAction::Revoke),
            _ => None,
        }
    }
    fn as_str(&self) -> &'static str {
        match self {
            UpdateAction::Add => "ADD",
            UpdateAction::Revoke => "REVOKE",
        }
    }
}

struct Instruction {
    action: UpdateAction,
    role: Role,
    users: Vec<User>,
}

/// Parses `updateInstructionBatch`; nested members are reported as
/// `updateInstructionBatch.<i>.users.<j>.id` and the like.
fn parse_instructions(body: &Body) -> Result<Vec<Instruction>, AwsError> {
    let mut check = Checker::new();
    let batch = match body.get("updateInstructionBatch") {
        None => {
            check.fail("updateInstructionBatch", "Member must not be null");
            check.finish()?;
            return Ok(Vec::new());
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(cannot_parse("updateInstructionBatch", "a list")),
    };
    if batch.len() > 20 {
        check.fail(
            "updateInstructionBatch",
            "Member must have length less than or equal to 20",
        );
    }
    let mut instructions = Vec::new();
    for (i, item) in batch.iter().enumerate() {
        let path = format!("updateInstructionBatch.{i}");
        let item = object(item, &path)?;
        let action = nested_enum(
            &mut check,
            &item,
            &path,
            "action",
            &["ADD", "REVOKE"],
            UpdateAction::parse,
        )?;
        let role = nested_enum(&mut check, &item, &path, "role", Role::VALUES, Role::parse)?;
        let mut users = Vec::new();
        match item.get("users") {
            None => check.fail(&format!("{path}.users"), "Member must not be null"),
            Some(Value::Array(list)) => {
                for (j, user) in list.iter().enumerate() {
                    let upath = format!("{path}.users.{j}");
                    let user = object(user, &upath)?;
                    let id = nested_string(&mut check, &user, &upath, "id")?;
                    if let Some(id) = &id {
                        check.length(&format!("{upath}.id"), id, 1, 47);
                    }
                    let user_type = nested_enum(
                        &mut check,
                        &user,
                        &upath,
                        "type",
                        UserType::VALUES,
                        UserType::parse,
                    )?;
                    if let (Some(id), Some(user_type)) = (id, user_type) {
                        users.push(User { id, user_type });
                    }
                }
            }
            Some(_) => return Err(cannot_parse(&format!("{path}.users"), "a list")),
        }
        if let (Some(action), Some(role)) = (action, role) {
            instructions.push(Instruction {
                action,
                role,
                users,
            });
        }
    }
    check.finish()?;
    Ok(instructions)
}

fn cannot_parse(path: &str, expected: &str) -> AwsError {
    AwsError::validation(
        ValidationReason::CannotParse,
        format!("Could not parse the request: member '{path}' must be {expected}."),
    )
}

fn object(value: &Value, path: &str) -> Result<serde_json::Map<String, Value>, AwsError> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| cannot_parse(path, "an object"))
}

fn nested_string(
    check: &mut Checker,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    member: &str,
) -> Result<Option<String>, AwsError> {
    match obj.get(member).filter(|v| !v.is_null()) {
        None => {
            check.fail(&format!("{path}.{member}"), "Member must not be null");
            Ok(None)
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(cannot_parse(&format!("{path}.{member}"), "a string")),
    }
}

fn nested_enum<T>(
    check: &mut Checker,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    member: &str,
    allowed: &[&str],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, AwsError> {
    Ok(nested_string(check, obj, path, member)?
        .and_then(|s| check.enum_value(&format!("{path}.{member}"), &s, allowed, parse)))
}

fn update_permissions(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let body = Body::parse(req.body)?;
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    check.finish()?;
    let instructions = parse_instructions(&body)?;
    let directory = state.sso_directory.clone();
    let ws = find_workspace(state, req.workspace_id())?;

    let mut errors = Vec::new();
    for instruction in instructions {
        for user in instruction.users {
            if let Some(dir) = &directory {
                if !dir.knows(user.user_type, &user.id) {
                    errors.push(json!({
                        "causedBy": {
                            "action": instruction.action.as_str(),
                            "role": instruction.role,
                            "users": [{"id": user.id, "type": user.user_type}],
                        },
                        "code": 404,
                        "message": format!(
                            "{} {} was not found in IAM Identity Center.",
                            if user.user_type == UserType::SsoUser { "User" } else { "Group" },
                            user.id
                        ),
                    }));
                    continue;
                }
            }
            let position = ws.permissions.iter().position(|p| p.user == user);
            match (instruction.action, position) {
                // A principal has one role in a workspace: ADD replaces the role it had.
                (UpdateAction::Add, Some(i)) => ws.permissions[i].role = instruction.role,
                (UpdateAction::Add, None) => ws.permissions.push(Permission {
                    role: instruction.role,
                    user,
                }),
                // REVOKE removes the role only if the principal has that role.
                (UpdateAction::Revoke, Some(i)) if ws.permissions[i].role == instruction.role => {
                    ws.permissions.remove(i);
                }
                (UpdateAction::Revoke, _) => {}
            }
        }
    }
    Ok(json!({ "errors": errors }))
}

// ---- Grafana versions and the workspace configuration ------------------------------------------

/// The model's `OverridableConfigurationJson`: length 2..65536, media type application/json.
const MAX_CONFIGURATION_LENGTH: usize = 65_536;

fn list_versions(state: &mut State, req: &Request) -> Result<Value, AwsError> {
    let mut check = Checker::new();
    // `workspaceId` travels in the query as `workspace-id`; optional.
    let workspace_id = req.query.get("workspace-id");
    if let Some(id) = workspace_id {
        check.workspace_id(id);
    }
    let max = check.query_integer(req.query, "maxResults", 1, 100);
    check.finish()?;
    let size = page_size(max, state);
    // Without a workspace: every version CreateWorkspace takes; with one: those it can be
    // upgraded to (newer than what it runs).
    let versions: Vec<&String> = match workspace_id {
        None => state.grafana_versions.iter().collect(),
        Some(id) => {
            let ws = state.workspace(id).ok_or_else(|| {
                AwsError::not_found("WORKSPACE", id, format!("Workspace {id} not found."))
            })?;
            upgrades_from(&state.grafana_versions, &ws.grafana_version)
        }
    };
    let mut versions = versions;
    versions.sort_by_key(|v| version_sort_key(v));
    let scope = format!("ListVersions/{}", workspace_id.map_or("", String::as_str));
    let page = paginate(
        versions,
        |v| version_sort_key(v),
        &scope,
        size,
        req.next_token(),
    )?;
    Ok(with_next_token(
        json!({ "grafanaVersions": page.items }),
        page.next_token,
    ))
}

/// Sets the configuration and, with `grafanaVersion`, upgrades the workspace. Checked in order:
/// input (configuration present, 2..65536 characters, a JSON object; grafanaVersion 1..255), the
/// workspace (404), the version (offered, not a downgrade: 400 OTHER), the status (409 unless
/// ACTIVE). Answers 202 `{}`.
fn update_configuration(state: &mut State, req: &Request, now: i64) -> Result<Value, AwsError> {
    let body = Body::parse(req.body)?;
    let mut check = Checker::new();
    check.workspace_id(req.workspace_id());
    let configuration =
        check.required_string(&body, "configuration", 2, MAX_CONFIGURATION_LENGTH)?;
    let version = check.optional_string(&body, "grafanaVersion", 1, 255)?;
    if let Some(c) = &configuration {
        let len = c.chars().count();
        let in_range = (2..=MAX_CONFIGURATION_LENGTH).contains(&len);
        // The model types it as a JSON document; AMG's settings are an object. What AMG says to
        // other JSON is unverified: the emulator reports the field.
        if in_range && !matches!(serde_json::from_str::<Value>(c), Ok(Value::Object(_))) {
            check.fail("configuration", "Member must be a JSON object");
        }
    }
    check.finish()?;
    let configuration = expect_valid(configuration);

    let changes = upgrade::check(state, req.workspace_id(), version.as_deref())?;
    let mode = state.api_keys_at_upgrade;
    let ws = find_workspace(state, req.workspace_id())?;
    ws.configuration = configuration;
    ws.modified = now;
    if let (true, Some(to)) = (changes, version) {
        upgrade::apply(ws, &to, mode, now);
    }
    Ok(json!({}))
}
