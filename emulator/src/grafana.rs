//! A stand-in for each workspace's Grafana HTTP API, at `/_grafana/{workspaceId}`.
//!
//! Only what proves a key works: `GET /api/org/` (and `/api/org`) answers 200
//! `{"id":1,"name":"Main Org."}` for `Authorization: Bearer <key>` naming an unexpired token (one
//! without expiry never expires) of an enabled service account, or an unexpired API key, of that
//! workspace, and records `lastUsedAt`; anything else is 401 `{"message":"Unauthorized"}`.
//! `lastUsedAt` is recorded as the workspace's Grafana records it: on every request up to
//! Grafana 10 (seconds), and at most every 5 minutes from Grafana 11.3 on (grafana/grafana PR
//! 92598, "only update last used at every 5 minutes"; AMG offers no 11, so 12 and later).
//! `GET /api/health` needs no key, as in Grafana. Point the rotator's Grafana base URL at
//! `http://127.0.0.1:PORT/_grafana/{workspace_id}`.

use crate::errors::json_body;
use crate::shared::Shared;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_grafana/{workspace_id}/api/org", get(org))
        .route("/_grafana/{workspace_id}/api/org/", get(org))
        .route("/_grafana/{workspace_id}/api/health", get(health))
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

enum Auth {
    Valid,
    Invalid,
    NoWorkspace,
}

/// Checks a key against the workspace and records its use.
fn authenticate(shared: &Shared, workspace_id: &str, key: Option<&str>) -> Auth {
    let now = shared.now().epoch_secs();
    let mut inner = shared.lock();
    let Some(ws) = inner.state.workspace_mut(workspace_id) else {
        return Auth::NoWorkspace;
    };
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Auth::Invalid;
    };
    let every = if ws.grafana_major_version().is_some_and(|m| m >= 11) {
        LAST_USED_INTERVAL_SINCE_11_3
    } else {
        0
    };
    let touch = |last_used: &mut Option<i64>| {
        if last_used.is_none_or(|at| now - at >= every) {
            *last_used = Some(now);
        }
    };
    for sa in ws.service_accounts.iter_mut().filter(|sa| !sa.is_disabled) {
        if let Some(token) = sa.tokens.iter_mut().find(|t| t.key == key) {
            if token.is_expired(now) {
                return Auth::Invalid;
            }
            touch(&mut token.last_used_at);
            return Auth::Valid;
        }
    }
    if let Some(api_key) = ws.api_keys.iter_mut().find(|k| k.key == key) {
        if !api_key.is_expired(now) {
            touch(&mut api_key.last_used_at);
            return Auth::Valid;
        }
    }
    Auth::Invalid
}

/// Seconds between two records of a key's use, from Grafana 11.3 on.
const LAST_USED_INTERVAL_SINCE_11_3: i64 = 300;

async fn org(
    State(shared): State<Arc<Shared>>,
    Path(workspace_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&shared, &workspace_id, bearer(&headers)) {
        Auth::Valid => json_body(&json!({"id": 1, "name": "Main Org."})).into_response(),
        Auth::Invalid => (
            StatusCode::UNAUTHORIZED,
            json_body(&json!({"message": "Unauthorized"})),
        )
            .into_response(),
        Auth::NoWorkspace => (
            StatusCode::NOT_FOUND,
            json_body(&json!({"message": format!("no workspace {workspace_id}")})),
        )
            .into_response(),
    }
}

async fn health(State(shared): State<Arc<Shared>>, Path(workspace_id): Path<String>) -> Response {
    let version = shared
        .lock()
        .state
        .workspace(&workspace_id)
        .map(|ws| ws.grafana_version.clone());
    match version {
        Some(version) => {
            json_body(&json!({"commit": "emulated", "database": "ok", "version": version}))
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            json_body(&json!({"message": format!("no workspace {workspace_id}")})),
        )
            .into_response(),
    }
}
