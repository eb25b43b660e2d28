//! Test harness: an in-process emulator on 127.0.0.1:0, a real aws-sdk-grafana client pointed at
//! it (retries off unless asked, bounded timeouts), a tiny raw HTTP/1.1 client for what the SDK
//! cannot send (malformed JSON, no signature) and for the test routes, and a time bound for tests.

#![allow(dead_code)]

use amg_emulator::{
    ApiKeySeed, Emulator, EmulatorConfig, Role, Seed, ServiceAccountSeed, TokenSeed, UserType,
    WorkspaceSeed,
};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_grafana::config::Credentials;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Grafana 10 workspace.
pub const WS: &str = "g-0123456789";
/// A second Grafana 10 workspace.
pub const WS2: &str = "g-00000000aa";
/// A Grafana 8 workspace: no service accounts.
pub const WS8: &str = "g-8888888888";
/// A Grafana 12 workspace: service accounts, no API keys (not in `standard_seed`).
pub const WS12: &str = "g-1212121212";
/// A Grafana 13 workspace: service accounts, no API keys (not in `standard_seed`).
pub const WS13: &str = "g-1313131313";
/// A workspace ID that matches the pattern but does not exist.
pub const WS_MISSING: &str = "g-ffffffffff";

pub const USER: &str = "a1b2c3d4-0000-1111-2222-333344445555";
pub const GROUP: &str = "f0e1d2c3-aaaa-bbbb-cccc-ddddeeeeffff";
pub const SEEDED_KEY: &str = "glsa_SeededKeyForTests0000000000000000_0a1b2c3d";

/// Every test runs under this bound.
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the test exceeded its 60 s time bound")
}

/// A small world: WS with service account "rotator" (id 2) holding "t-current" (id 1, key
/// SEEDED_KEY) and "t-expired" (id 2), service account "viewer" (id 3), API key "legacy" and one
/// permission; WS2 empty; WS8 on Grafana 8.4 with an API key.
pub fn standard_seed() -> Seed {
    Seed::new()
        .with_workspace(
            WorkspaceSeed::new(WS)
                .with_name("production")
                .with_tag("team", "observability")
                .with_service_account(
                    ServiceAccountSeed::new("rotator", Role::Admin)
                        .with_token(
                            TokenSeed::new("t-current", 3600)
                                .created_seconds_ago(60)
                                .with_key(SEEDED_KEY),
                        )
                        .with_token(TokenSeed::new("t-expired", -60).created_seconds_ago(7200)),
                )
                .with_service_account(ServiceAccountSeed::new("viewer", Role::Viewer))
                .with_api_key(ApiKeySeed::new("legacy", Role::Editor, 3600))
                .with_permission(Role::Admin, UserType::SsoUser, USER),
        )
        .with_workspace(WorkspaceSeed::new(WS2))
        .with_workspace(
            WorkspaceSeed::new(WS8)
                .with_grafana_version("8.4")
                .with_api_key(ApiKeySeed::new("old-key", Role::Admin, 3600)),
        )
}

pub async fn start(seed: Seed) -> Emulator {
    Emulator::start(EmulatorConfig::new().with_seed(seed))
        .await
        .expect("the emulator starts")
}

/// A client with retries disabled: one request per call.
pub async fn client(emulator: &Emulator) -> aws_sdk_grafana::Client {
    client_with(emulator, RetryConfig::disabled(), Duration::from_secs(10)).await
}

/// A client as the rotator would build one, with explicit retry and timeout settings.
pub async fn client_with(
    emulator: &Emulator,
    retry: RetryConfig,
    operation_timeout: Duration,
) -> aws_sdk_grafana::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(emulator.endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(operation_timeout)
                .build(),
        )
        .load()
        .await;
    aws_sdk_grafana::Client::new(&config)
}

/// What the raw client read.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `connection: close`, to the emulator only.
pub async fn raw(
    emulator: &Emulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    raw_to(emulator.addr(), method, path, headers, body).await
}

/// One HTTP/1.1 request to an emulator on 127.0.0.1 at `addr`.
pub async fn raw_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    assert!(addr.ip().is_loopback(), "tests talk to 127.0.0.1 only");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the emulator");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("read");
    let text = String::from_utf8(bytes).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A raw AWS call with a (fake) authorization header, as the SDK always sends one.
pub async fn raw_aws(emulator: &Emulator, method: &str, path: &str, body: &str) -> RawResponse {
    raw(
        emulator,
        method,
        path,
        &[
            ("authorization", "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/grafana/aws4_request, SignedHeaders=host, Signature=0"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// The ID of a service account, by name, from the emulator's state.
pub fn sa_id(emulator: &Emulator, workspace: &str, name: &str) -> String {
    emulator
        .state()
        .workspace(workspace)
        .and_then(|ws| ws.service_account_by_name(name))
        .map(|sa| sa.id.clone())
        .unwrap_or_else(|| panic!("no service account {name} in {workspace}"))
}

/// The variant name of an SDK operation error (`ThrottlingException`, `Unhandled`, ...), read from
/// its Debug form, which is `Variant(...)`.
pub fn variant<E: std::fmt::Debug>(service_error: &E) -> String {
    let debug = format!("{service_error:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}
