//! Conformance: the Grafana HTTP API stand-in accepts exactly the live keys of its workspace.

mod common;

use amg_emulator::{Role, Seed, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
use common::*;

async fn org(emu: &amg_emulator::Emulator, workspace: &str, key: &str) -> RawResponse {
    let auth = format!("Bearer {key}");
    raw(
        emu,
        "GET",
        &format!("/_grafana/{workspace}/api/org/"),
        &[("authorization", &auth)],
        "",
    )
    .await
}

#[tokio::test]
async fn a_live_token_gets_the_org_and_records_last_use() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let r = org(&emu, WS, SEEDED_KEY).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({"id": 1, "name": "Main Org."}));
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
        // And the AWS side reports it.
        let out = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.service_account_tokens()[0]
                .last_used_at()
                .map(|t| t.secs()),
            used
        );
        // Without the trailing slash too.
        let r = raw(
            &emu,
            "GET",
            &format!("/_grafana/{WS}/api/org"),
            &[("authorization", &format!("Bearer {SEEDED_KEY}"))],
            "",
        )
        .await;
        assert_eq!(r.status, 200);
    })
    .await
}

#[tokio::test]
async fn a_new_token_works_and_stops_working_when_deleted() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let created = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .name("fresh")
            .seconds_to_live(600)
            .send()
            .await
            .unwrap();
        let token = created.service_account_token().unwrap();
        assert_eq!(org(&emu, WS, token.key()).await.status, 200);
        // Only in its own workspace.
        assert_eq!(org(&emu, WS2, token.key()).await.status, 401);
        grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .token_id(token.id())
            .send()
            .await
            .unwrap();
        let r = org(&emu, WS, token.key()).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json(), serde_json::json!({"message": "Unauthorized"}));
    })
    .await
}

#[tokio::test]
async fn expired_wrong_missing_and_disabled_keys_are_unauthorized() {
    bounded(async {
        let seed = standard_seed().with_workspace(
            amg_emulator::WorkspaceSeed::new(WS).with_service_account(
                amg_emulator::ServiceAccountSeed::new("off", amg_emulator::Role::Admin)
                    .disabled()
                    .with_token(
                        amg_emulator::TokenSeed::new("off-token", 3600).with_key("glsa_disabled"),
                    ),
            ),
        );
        let emu = start(seed).await;
        let state = emu.state();
        let expired = state
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .token_by_name("t-expired")
            .unwrap()
            .key
            .clone();
        assert_eq!(org(&emu, WS, &expired).await.status, 401);
        assert_eq!(org(&emu, WS, "glsa_wrong").await.status, 401);
        assert_eq!(org(&emu, WS, "glsa_disabled").await.status, 401);
        let r = raw(&emu, "GET", &format!("/_grafana/{WS}/api/org/"), &[], "").await;
        assert_eq!(r.status, 401);
        // Expiring a live token through the test route makes it fail.
        assert_eq!(org(&emu, WS, SEEDED_KEY).await.status, 200);
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/serviceaccounts/2/tokens/1/expiry"),
            &[],
            r#"{"expiresInSeconds": -1}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(org(&emu, WS, SEEDED_KEY).await.status, 401);
    })
    .await
}

#[tokio::test]
async fn api_keys_authenticate_until_they_expire() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let key = emu
            .state()
            .workspace(WS8)
            .unwrap()
            .api_key("old-key")
            .unwrap()
            .key
            .clone();
        assert_eq!(org(&emu, WS8, &key).await.status, 200);
        assert!(emu
            .state()
            .workspace(WS8)
            .unwrap()
            .api_key("old-key")
            .unwrap()
            .last_used_at
            .is_some());
        assert!(emu.set_api_key_expiry(WS8, "old-key", 0));
        assert_eq!(org(&emu, WS8, &key).await.status, 401);
    })
    .await
}

#[tokio::test]
async fn the_url_template_names_the_stand_in() {
    bounded(async {
        let emu = start(standard_seed()).await;
        assert_eq!(
            emu.grafana_url_template(),
            format!("http://{}/_grafana/{{workspace_id}}", emu.addr())
        );
        let health = raw(&emu, "GET", &format!("/_grafana/{WS8}/api/health"), &[], "").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.json()["version"], "8.4");
        // Grafana calls are not AWS calls: nothing is logged, and AWS faults do not apply.
        emu.set_faults(amg_emulator::Faults {
            down: true,
            ..Default::default()
        });
        assert_eq!(org(&emu, WS, SEEDED_KEY).await.status, 200);
        assert!(emu.calls().is_empty());
    })
    .await
}

/// The seeded token's `lastUsedAt` in `workspace`, as the state reports it.
fn last_used(emu: &amg_emulator::Emulator, workspace: &str) -> Option<i64> {
    emu.state()
        .workspace(workspace)
        .unwrap()
        .service_account("2")
        .unwrap()
        .token("1")
        .unwrap()
        .last_used_at
}

/// Sets the seeded token's `lastUsedAt` through the test route.
async fn set_last_used(emu: &amg_emulator::Emulator, workspace: &str, at: Option<i64>) {
    let r = raw(
        emu,
        "POST",
        &format!("/_emulator/workspaces/{workspace}/serviceaccounts/2/tokens/1/last-used"),
        &[("content-type", "application/json")],
        &serde_json::json!({ "lastUsedAt": at }).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Grafana 10 records every use; from 11.3 on Grafana records a use at most every 5 minutes
/// (grafana/grafana PR 92598), so a consumer's calls within 5 minutes of the last record leave
/// it as it was.
#[tokio::test]
async fn last_use_is_recorded_at_the_workspaces_grafana_granularity() {
    bounded(async {
        let token = || {
            ServiceAccountSeed::new("rotator", Role::Admin)
                .with_token(TokenSeed::new("t-current", 3600).with_key(SEEDED_KEY))
        };
        let emu = start(
            Seed::new()
                .with_workspace(WorkspaceSeed::new(WS).with_service_account(token()))
                .with_workspace(
                    WorkspaceSeed::new(WS12)
                        .with_grafana_version("12.4")
                        .with_service_account(token()),
                ),
        )
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (workspace, ago, recorded) in [(WS, 10, true), (WS12, 290, false), (WS12, 310, true)] {
            set_last_used(&emu, workspace, Some(now - ago)).await;
            assert_eq!(org(&emu, workspace, SEEDED_KEY).await.status, 200);
            let at = last_used(&emu, workspace).expect("a last use");
            assert_eq!(at >= now, recorded, "{workspace}, {ago}s ago: {at}");
        }
        // The route forgets a use, and refuses a token that does not exist.
        set_last_used(&emu, WS, None).await;
        assert_eq!(last_used(&emu, WS), None);
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/serviceaccounts/2/tokens/99/last-used"),
            &[("content-type", "application/json")],
            "{\"lastUsedAt\": 1}",
        )
        .await;
        assert_eq!(r.status, 404);
    })
    .await;
}
