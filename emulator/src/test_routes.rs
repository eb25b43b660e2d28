//! Test-only HTTP routes under `/_emulator`, beside the AWS ones (no AWS path starts with `_`).
//!
//! They read and steer the emulator: state (keys included), the call log, the fault configuration,
//! token and API-key expiry, a workspace's Grafana upgrade, and more seed data. Faults never apply here and these calls are not
//! logged. Errors are `{"message": ...}` with 400 (bad input) or 404 (no such thing).

use crate::errors::json_body;
use crate::faults::Faults;
use crate::seed::Seed;
use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/calls", get(calls).delete(clear_calls))
        .route("/_emulator/faults", get(faults).put(put_faults))
        .route("/_emulator/seed", post(add_seed))
        .route(
            "/_emulator/workspaces/{workspace_id}/serviceaccounts/{service_account_id}/tokens/{token_id}/expiry",
            post(token_expiry),
        )
        .route(
            "/_emulator/workspaces/{workspace_id}/apikeys/{key_name}/expiry",
            post(api_key_expiry),
        )
        .route(
            "/_emulator/workspaces/{workspace_id}/serviceaccounts/{service_account_id}/tokens/{token_id}/last-used",
            post(token_last_used),
        )
        .route(
            "/_emulator/workspaces/{workspace_id}/upgrade",
            post(upgrade_workspace),
        )
}

fn ok(value: Value) -> Response {
    json_body(&value).into_response()
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, json_body(&json!({ "message": message.into() }))).into_response()
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    ok(json!(shared.snapshot()))
}

async fn calls(State(shared): State<Arc<Shared>>) -> Response {
    ok(json!(shared.calls()))
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> Response {
    shared.clear_calls();
    ok(json!({}))
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    ok(json!(shared.faults()))
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    };
    match shared.set_faults(faults) {
        Ok(()) => ok(json!(shared.faults())),
        Err(e) => fail(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    }
}

async fn add_seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let seed = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|text| Seed::from_json_str(text).map_err(|e| e.to_string()))
    {
        Ok(seed) => seed,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    match shared.add_seed(&seed, shared.now()) {
        Ok(()) => ok(json!({})),
        Err(e) => fail(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `{"expiresAt": <epoch seconds>}`, `{"expiresAt": null}` (no expiry; tokens only) or
/// `{"expiresInSeconds": n}` (relative to now): exactly one member.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expiry {
    /// Outer `None`: not given; `Some(None)`: given as `null`.
    #[serde(default, deserialize_with = "given")]
    expires_at: Option<Option<i64>>,
    expires_in_seconds: Option<i64>,
}

/// Tells a member given as `null` from a member left out (which `#[serde(default)]` makes `None`).
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// The new expiry; `None` for "no expiry".
fn parse_expiry(body: &[u8], now: crate::clock::Now) -> Result<Option<i64>, String> {
    let expiry: Expiry =
        serde_json::from_slice(body).map_err(|e| format!("invalid expiry: {e}"))?;
    match (expiry.expires_at, expiry.expires_in_seconds) {
        (Some(at), None) => Ok(at),
        (None, Some(secs)) => Ok(Some(now.epoch_secs() + secs)),
        _ => Err("give exactly one of expiresAt and expiresInSeconds".to_string()),
    }
}

async fn token_expiry(
    State(shared): State<Arc<Shared>>,
    Path((workspace_id, service_account_id, token_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let expires_at = match parse_expiry(&body, shared.now()) {
        Ok(at) => at,
        Err(message) => return fail(StatusCode::BAD_REQUEST, message),
    };
    if shared.set_token_expiry(&workspace_id, &service_account_id, &token_id, expires_at) {
        ok(json!({ "expiresAt": expires_at }))
    } else {
        fail(
            StatusCode::NOT_FOUND,
            format!(
                "no token {token_id} in service account {service_account_id} of {workspace_id}"
            ),
        )
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LastUsed {
    /// Epoch seconds; `null` forgets the token was ever used.
    last_used_at: Option<i64>,
}

/// Sets a token's `lastUsedAt`, as a consumer's calls long ago (or none) would have left it.
async fn token_last_used(
    State(shared): State<Arc<Shared>>,
    Path((workspace_id, service_account_id, token_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let last_used: LastUsed = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid lastUsedAt: {e}")),
    };
    if shared.set_token_last_used(
        &workspace_id,
        &service_account_id,
        &token_id,
        last_used.last_used_at,
    ) {
        ok(json!({ "lastUsedAt": last_used.last_used_at }))
    } else {
        fail(
            StatusCode::NOT_FOUND,
            format!(
                "no token {token_id} in service account {service_account_id} of {workspace_id}"
            ),
        )
    }
}

async fn api_key_expiry(
    State(shared): State<Arc<Shared>>,
    Path((workspace_id, key_name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    // An API key always has an expiry: CreateWorkspaceApiKey requires secondsToLive.
    let expires_at = match parse_expiry(&body, shared.now()) {
        Ok(Some(at)) => at,
        Ok(None) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "an API key always has an expiry: expiresAt must be a number",
            )
        }
        Err(message) => return fail(StatusCode::BAD_REQUEST, message),
    };
    if shared.set_api_key_expiry(&workspace_id, &key_name, expires_at) {
        ok(json!({ "expiresAt": expires_at }))
    } else {
        fail(
            StatusCode::NOT_FOUND,
            format!("no API key {key_name} in {workspace_id}"),
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Upgrade {
    grafana_version: String,
}

/// Upgrades a workspace as UpdateWorkspaceConfiguration with `grafanaVersion` would, without an
/// AWS call; answers the `UpgradeReport` (what became of the API keys). 404 for no such
/// workspace, 400 for any other refusal (the message is the AWS error's).
async fn upgrade_workspace(
    State(shared): State<Arc<Shared>>,
    Path(workspace_id): Path<String>,
    body: Bytes,
) -> Response {
    let upgrade: Upgrade = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid upgrade: {e}")),
    };
    match shared.upgrade_workspace(&workspace_id, &upgrade.grafana_version, shared.now()) {
        Ok(report) => ok(json!(report)),
        Err(e) => {
            let status = if e.status() == 404 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            fail(status, format!("{}: {}", e.name(), e.message()))
        }
    }
}
