//! The AWS side over HTTP: routing restJson1 requests to operations, and the pipeline every call
//! goes through.
//!
//! Pipeline, in order: read the clock once; route by method and path (labels percent-decoded);
//! require an `authorization` header (the SDK always signs; the signature is not checked); let the
//! fault configuration decide; otherwise run the operation; record the call; sleep any injected
//! latency (after the call took effect, as a slow network would); answer. Successes are HTTP 200
//! with `content-type: application/json`; every answer carries an `x-amzn-RequestId`.

use crate::errors::{json_body, AwsError, ValidationReason};
use crate::ops::{self, Labels, Operation, Request};
use crate::shared::{CallRecord, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// Maps a method and path to an operation and its labels; `None` for anything the model lacks.
pub fn route(method: &Method, path: &str) -> Option<(Operation, Labels)> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let ws = |id: &str| Labels {
        workspace_id: Some(id.to_string()),
        ..Labels::default()
    };
    let sa = |id: &str, sa: &str| Labels {
        service_account_id: Some(sa.to_string()),
        ..ws(id)
    };
    use Operation::*;
    let routed = match (method.as_str(), segments.as_slice()) {
        ("GET", ["workspaces"]) => (ListWorkspaces, Labels::default()),
        ("GET", ["workspaces", id]) => (DescribeWorkspace, ws(id)),
        ("GET", ["workspaces", id, "serviceaccounts"]) => (ListWorkspaceServiceAccounts, ws(id)),
        ("POST", ["workspaces", id, "serviceaccounts"]) => (CreateWorkspaceServiceAccount, ws(id)),
        ("DELETE", ["workspaces", id, "serviceaccounts", s]) => {
            (DeleteWorkspaceServiceAccount, sa(id, s))
        }
        ("GET", ["workspaces", id, "serviceaccounts", s, "tokens"]) => {
            (ListWorkspaceServiceAccountTokens, sa(id, s))
        }
        ("POST", ["workspaces", id, "serviceaccounts", s, "tokens"]) => {
            (CreateWorkspaceServiceAccountToken, sa(id, s))
        }
        ("DELETE", ["workspaces", id, "serviceaccounts", s, "tokens", t]) => (
            DeleteWorkspaceServiceAccountToken,
            Labels {
                token_id: Some(t.to_string()),
                ..sa(id, s)
            },
        ),
        ("POST", ["workspaces", id, "apikeys"]) => (CreateWorkspaceApiKey, ws(id)),
        ("DELETE", ["workspaces", id, "apikeys", k]) => (
            DeleteWorkspaceApiKey,
            Labels {
                key_name: Some(k.to_string()),
                ..ws(id)
            },
        ),
        ("GET", ["workspaces", id, "permissions"]) => (ListPermissions, ws(id)),
        ("PATCH", ["workspaces", id, "permissions"]) => (UpdatePermissions, ws(id)),
        ("PUT", ["workspaces", id, "configuration"]) => (UpdateWorkspaceConfiguration, ws(id)),
        ("GET", ["versions"]) => (ListVersions, Labels::default()),
        _ => return None,
    };
    Some(routed)
}

/// Decodes `%XX` escapes of a path segment; `None` if the result is not UTF-8 or an escape is cut.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The axum handler for every request outside the test and Grafana routes.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.now();
    let mut routed = route(&method, uri.path());
    let query = parse_query(&uri);
    // ListVersions names its workspace in the query (`workspace-id`): log it like a label.
    if let (Some((Operation::ListVersions, labels)), Ok(query)) = (routed.as_mut(), &query) {
        labels.workspace_id = query.get("workspace-id").cloned();
    }
    let labels = routed.as_ref().map(|(_, l)| l.clone()).unwrap_or_default();
    let success_status = routed.as_ref().map_or(200, |(op, _)| op.success_status());
    let operation = routed
        .as_ref()
        .map_or("UnknownOperation", |(op, _)| op.name());

    let (result, record, latency, request_id) = {
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let mut injected = false;
        let result = if !headers.contains_key(header::AUTHORIZATION) {
            Err(AwsError::AccessDenied {
                message: "Missing Authentication Token".to_string(),
            })
        } else if let Some(err) =
            inner
                .faults
                .decide(operation, labels.workspace_id.as_deref(), now)
        {
            injected = true;
            Err(err)
        } else {
            match (&routed, query) {
                (None, _) => Err(AwsError::validation(
                    ValidationReason::UnknownOperation,
                    format!("Unknown operation: {method} {}", uri.path()),
                )),
                (Some(_), Err(err)) => Err(err),
                (Some((op, labels)), Ok(query)) => {
                    let request = Request {
                        op: *op,
                        labels,
                        query: &query,
                        body: &body,
                    };
                    ops::execute(&mut inner.state, &request, now, &mut inner.rng)
                }
            }
        };
        let record = inner.record(CallRecord {
            seq: 0,
            operation: operation.to_string(),
            workspace_id: labels.workspace_id.clone(),
            service_account_id: labels.service_account_id.clone(),
            token_id: labels.token_id.clone(),
            key_name: labels.key_name.clone(),
            status: result
                .as_ref()
                .map_or_else(AwsError::status, |_| success_status),
            error_type: result.as_ref().err().map(|e| e.name().to_string()),
            injected,
            time_ms: now.epoch_ms,
        });
        let request_id = request_id(&mut inner.rng);
        (result, record, inner.faults.latency(operation), request_id)
    };

    if shared.log_calls {
        log_call(&record);
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut response = match result {
        Ok(value) => (
            StatusCode::from_u16(success_status).unwrap_or(StatusCode::OK),
            json_body(&value),
        )
            .into_response(),
        Err(err) => err.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

fn parse_query(uri: &Uri) -> Result<HashMap<String, String>, AwsError> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            AwsError::validation(
                ValidationReason::CannotParse,
                format!("Could not parse the query string: {e}"),
            )
        })
}

/// A random request ID in the UUID shape AWS uses.
fn request_id(rng: &mut fastrand::Rng) -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn log_call(record: &CallRecord) {
    let mut line = format!("amg-emulator: #{} {}", record.seq, record.operation);
    for (name, value) in [
        ("ws", &record.workspace_id),
        ("sa", &record.service_account_id),
        ("token", &record.token_id),
        ("key", &record.key_name),
    ] {
        if let Some(value) = value {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    line.push_str(&format!(" -> {}", record.status));
    if let Some(error) = &record.error_type {
        line.push_str(&format!(" {error}"));
    }
    if record.injected {
        line.push_str(" (injected)");
    }
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_operation() {
        let cases = [
            ("GET", "/workspaces", Operation::ListWorkspaces),
            (
                "GET",
                "/workspaces/g-0123456789",
                Operation::DescribeWorkspace,
            ),
            (
                "GET",
                "/workspaces/g-0123456789/serviceaccounts",
                Operation::ListWorkspaceServiceAccounts,
            ),
            (
                "POST",
                "/workspaces/g-0123456789/serviceaccounts",
                Operation::CreateWorkspaceServiceAccount,
            ),
            (
                "DELETE",
                "/workspaces/g-0123456789/serviceaccounts/2",
                Operation::DeleteWorkspaceServiceAccount,
            ),
            (
                "GET",
                "/workspaces/g-0123456789/serviceaccounts/2/tokens",
                Operation::ListWorkspaceServiceAccountTokens,
            ),
            (
                "POST",
                "/workspaces/g-0123456789/serviceaccounts/2/tokens",
                Operation::CreateWorkspaceServiceAccountToken,
            ),
            (
                "DELETE",
                "/workspaces/g-0123456789/serviceaccounts/2/tokens/5",
                Operation::DeleteWorkspaceServiceAccountToken,
            ),
            (
                "POST",
                "/workspaces/g-0123456789/apikeys",
                Operation::CreateWorkspaceApiKey,
            ),
            (
                "DELETE",
                "/workspaces/g-0123456789/apikeys/k",
                Operation::DeleteWorkspaceApiKey,
            ),
            (
                "GET",
                "/workspaces/g-0123456789/permissions",
                Operation::ListPermissions,
            ),
            (
                "PATCH",
                "/workspaces/g-0123456789/permissions",
                Operation::UpdatePermissions,
            ),
            ("GET", "/versions", Operation::ListVersions),
            (
                "PUT",
                "/workspaces/g-0123456789/configuration",
                Operation::UpdateWorkspaceConfiguration,
            ),
        ];
        for (method, path, op) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                route(&method, path).map(|r| r.0),
                Some(op),
                "{method} {path}"
            );
        }
        assert!(route(&Method::PUT, "/workspaces").is_none());
        assert!(route(&Method::GET, "/workspaces/g-0123456789/configuration").is_none());
        assert_eq!(cases.len(), Operation::ALL.len());
        assert!(route(&Method::GET, "/nothing").is_none());
    }

    #[test]
    fn decodes_labels() {
        let (_, labels) = route(
            &Method::DELETE,
            "/workspaces/g-0123456789/apikeys/my%20key%2F1",
        )
        .unwrap();
        assert_eq!(labels.key_name.as_deref(), Some("my key/1"));
        assert!(route(&Method::DELETE, "/workspaces/g-0123456789/apikeys/bad%2").is_none());
    }
}
