//! Conformance: tokens without expiry, as the workspace's own Grafana UI can make them (the AWS API
//! cannot: CreateWorkspaceServiceAccountToken requires secondsToLive). The model marks
//! `expiresAt` as required in ServiceAccountTokenSummary; the emulator leaves it out for such a
//! token, and these tests pin down exactly what aws-sdk-grafana hands back then.

mod common;

use amg_emulator::{Role, Seed, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
use aws_smithy_types::DateTime;
use common::*;

const UI_KEY: &str = "glsa_MadeInTheGrafanaUi000000000000000_00000000";

/// WS with service account "ui" (id 2) holding "ui-made" (id 1, no expiry, key UI_KEY, made an
/// hour ago) and "api-made" (id 2, expires in a day).
fn seed() -> Seed {
    Seed::new().with_workspace(
        WorkspaceSeed::new(WS).with_service_account(
            ServiceAccountSeed::new("ui", Role::Admin)
                .with_token(
                    TokenSeed::without_expiry("ui-made")
                        .created_seconds_ago(3600)
                        .with_key(UI_KEY),
                )
                .with_token(TokenSeed::new("api-made", 86400)),
        ),
    )
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn the_wire_summary_of_a_token_without_expiry_has_no_expires_at() {
    bounded(async {
        let emu = start(seed()).await;
        let r = raw_aws(
            &emu,
            "GET",
            &format!("/workspaces/{WS}/serviceaccounts/2/tokens"),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        let tokens = body["serviceAccountTokens"].as_array().unwrap();
        let ui = tokens[0].as_object().unwrap();
        assert_eq!(ui["name"], "ui-made");
        assert!(!ui.contains_key("expiresAt"), "{body}");
        assert!(ui["createdAt"].is_i64());
        assert!(tokens[1]["expiresAt"].is_i64());
    })
    .await
}

/// The answer the rotator team needs: aws-sdk-grafana does NOT fail on a summary without
/// `expiresAt`. Its deserializer's error correction fills the missing required timestamp with
/// `DateTime::from_fractional_secs(0, 0.0)`, so `expires_at()` is the Unix epoch: 0 seconds,
/// 0 nanoseconds, indistinguishable from a token that really expired at 1970-01-01T00:00:00Z.
#[tokio::test]
async fn the_sdk_reads_a_missing_expires_at_as_the_epoch() {
    bounded(async {
        let emu = start(seed()).await;
        let grafana = client(&emu).await;
        let out = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .expect("a summary without expiresAt deserializes");
        let tokens = out.service_account_tokens();
        assert_eq!(tokens.len(), 2);
        let ui = &tokens[0];
        assert_eq!((ui.id(), ui.name()), ("1", "ui-made"));
        assert_eq!(ui.expires_at(), &DateTime::from_secs(0));
        assert_eq!(ui.expires_at(), &DateTime::from_fractional_secs(0, 0.0));
        assert_eq!(
            (ui.expires_at().secs(), ui.expires_at().subsec_nanos()),
            (0, 0)
        );
        // Every other member is what the emulator sent.
        let state = emu.state();
        let held = state
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .token("1")
            .unwrap()
            .clone();
        assert_eq!(held.expires_at, None);
        assert_eq!(ui.created_at().secs(), held.created_at);
        assert!(ui.last_used_at().is_none());
        // The token beside it is unaffected.
        let api = &tokens[1];
        assert_eq!(api.name(), "api-made");
        assert!(api.expires_at().secs() > now_epoch());

        // The paginator goes through the same deserializer.
        let items: Vec<_> = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        assert_eq!(items[0].expires_at().secs(), 0);
    })
    .await
}

#[tokio::test]
async fn a_token_without_expiry_is_accepted_by_the_workspace_grafana() {
    bounded(async {
        let emu = start(seed()).await;
        let r = raw(
            &emu,
            "GET",
            &format!("/_grafana/{WS}/api/org/"),
            &[("authorization", &format!("Bearer {UI_KEY}"))],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let used = emu
            .state()
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .token("1")
            .unwrap()
            .last_used_at;
        assert!(used.is_some());
        let out = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        let ui = &out.service_account_tokens()[0];
        assert_eq!(ui.last_used_at().map(|t| t.secs()), used);
        assert_eq!(ui.expires_at().secs(), 0);
    })
    .await
}

#[tokio::test]
async fn a_token_without_expiry_counts_toward_the_quota() {
    bounded(async {
        let emu = start(seed().with_token_quota(2)).await;
        let grafana = client(&emu).await;
        let create = |name: &'static str| {
            grafana
                .create_workspace_service_account_token()
                .workspace_id(WS)
                .service_account_id("2")
                .name(name)
                .seconds_to_live(60)
                .send()
        };
        let err = create("third").await.unwrap_err().into_service_error();
        assert!(err.is_service_quota_exceeded_exception(), "{err:?}");
        grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .token_id("1")
            .send()
            .await
            .unwrap();
        let made = create("third").await.unwrap();
        // A token made through the AWS API always has an expiry.
        let id = made.service_account_token().unwrap().id().to_string();
        let state = emu.state();
        let token = state
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .token(&id)
            .unwrap()
            .clone();
        assert_eq!(token.expires_at, Some(token.created_at + 60));
    })
    .await
}

#[tokio::test]
async fn create_token_still_requires_seconds_to_live() {
    bounded(async {
        let emu = start(seed()).await;
        let err = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("no-ttl")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let aws_sdk_grafana::operation::create_workspace_service_account_token::CreateWorkspaceServiceAccountTokenError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<(&str, &str)> = v
            .field_list()
            .iter()
            .map(|f| (f.name(), f.message()))
            .collect();
        assert_eq!(fields, [("secondsToLive", "Member must not be null")]);
        assert!(emu
            .state()
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .token_by_name("no-ttl")
            .is_none());
    })
    .await
}

#[tokio::test]
async fn the_expiry_route_clears_and_restores_an_expiry() {
    bounded(async {
        let emu = start(seed()).await;
        let path = format!("/_emulator/workspaces/{WS}/serviceaccounts/2/tokens/2/expiry");
        let r = raw(&emu, "POST", &path, &[], r#"{"expiresAt": null}"#).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), serde_json::json!({"expiresAt": null}));
        let token = |emu: &amg_emulator::Emulator| {
            emu.state()
                .workspace(WS)
                .unwrap()
                .service_account("2")
                .unwrap()
                .token("2")
                .unwrap()
                .clone()
        };
        assert_eq!(token(&emu).expires_at, None);

        // The state route shows it as null, and the typed snapshot reads that back.
        let r = raw(&emu, "GET", "/_emulator/state", &[], "").await;
        let json = r.json();
        let tokens = &json["workspaces"][0]["serviceAccounts"][0]["tokens"];
        assert_eq!(tokens[1]["name"], "api-made");
        assert!(tokens[1]["expiresAt"].is_null(), "{json}");
        let typed: amg_emulator::StateSnapshot = serde_json::from_str(&r.body).unwrap();
        assert_eq!(typed, emu.state());

        let out = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        assert_eq!(out.service_account_tokens()[1].expires_at().secs(), 0);

        // A number sets an expiry again.
        let r = raw(&emu, "POST", &path, &[], r#"{"expiresAt": 1700000000}"#).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(token(&emu).expires_at, Some(1_700_000_000));

        // Still exactly one member; an API key cannot lose its expiry.
        for bad in [r#"{}"#, r#"{"expiresAt": null, "expiresInSeconds": 5}"#] {
            let r = raw(&emu, "POST", &path, &[], bad).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.body);
        }
        assert_eq!(token(&emu).expires_at, Some(1_700_000_000));

        // The library API does the same.
        assert!(emu.clear_token_expiry(WS, "2", "2"));
        assert_eq!(token(&emu).expires_at, None);
        assert!(!emu.clear_token_expiry(WS, "2", "99"));
    })
    .await
}

#[tokio::test]
async fn an_api_key_always_keeps_an_expiry() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let path = format!("/_emulator/workspaces/{WS}/apikeys/legacy/expiry");
        let before = emu
            .state()
            .workspace(WS)
            .unwrap()
            .api_key("legacy")
            .unwrap()
            .expires_at;
        let r = raw(&emu, "POST", &path, &[], r#"{"expiresAt": null}"#).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            emu.state()
                .workspace(WS)
                .unwrap()
                .api_key("legacy")
                .unwrap()
                .expires_at,
            before
        );
    })
    .await
}

#[tokio::test]
async fn a_seed_says_no_expiry_with_a_null_expires_in_seconds() {
    bounded(async {
        let emu = start(Seed::new()).await;
        let body = r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [{"name": "ui",
            "tokens": [{"name": "forever", "expiresInSeconds": null, "key": "glsa_forever"}]}]}]}"#;
        let r = raw(&emu, "POST", "/_emulator/seed", &[], body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let state = emu.state();
        let token = state
            .workspace(WS)
            .unwrap()
            .service_account_by_name("ui")
            .unwrap()
            .token_by_name("forever")
            .unwrap();
        assert_eq!(token.expires_at, None);
        // Leaving the member out is still a mistake, not "no expiry".
        let missing = r#"{"workspaces": [{"id": "g-0123456789", "serviceAccounts": [{"name": "ui",
            "tokens": [{"name": "forgot"}]}]}]}"#;
        let r = raw(&emu, "POST", "/_emulator/seed", &[], missing).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("expiresInSeconds"),
            "{}",
            r.body
        );
        assert_eq!(emu.state(), state);
    })
    .await
}

/// Not something the emulator sends, but what the SDK would do if AMG wrote `"expiresAt": null`:
/// one canned HTTP answer from a bare listener on 127.0.0.1 shows it is the epoch too.
#[tokio::test]
async fn the_sdk_reads_a_null_expires_at_as_the_epoch_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // The request is a GET without a body: read up to the end of its header block.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            let body = format!(
                r#"{{"serviceAccountId":"2","workspaceId":"{WS}","serviceAccountTokens":[{{"id":"1","name":"ui-made","createdAt":1700000000,"expiresAt":null}}]}}"#
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{addr}"))
            .credentials_provider(aws_sdk_grafana::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        let out = aws_sdk_grafana::Client::new(&config)
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .expect("a null expiresAt deserializes");
        let token = &out.service_account_tokens()[0];
        assert_eq!(token.expires_at(), &DateTime::from_secs(0));
        assert_eq!(token.created_at().secs(), 1_700_000_000);
        server.await.unwrap();
    })
    .await
}
