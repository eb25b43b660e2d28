//! Conformance: the `/_emulator` test routes read and steer the emulator over HTTP, and agree with
//! the library API.

mod common;

use amg_emulator::{CallRecord, Faults, StateSnapshot};
use common::*;

#[tokio::test]
async fn state_route_has_everything_keys_included() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let r = raw(&emu, "GET", "/_emulator/state", &[], "").await;
        assert_eq!(r.status, 200);
        let json = r.json();
        let token = &json["workspaces"][1]["serviceAccounts"][0]["tokens"][0];
        assert_eq!(token["key"], SEEDED_KEY);
        assert_eq!(token["id"], "1");
        assert!(token["createdAt"].is_i64() && token["expiresAt"].is_i64());
        assert_eq!(json["workspaces"][1]["apiKeys"][0]["keyName"], "legacy");
        assert!(json["workspaces"][1]["apiKeys"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("glsa_"));
        assert_eq!(
            json["workspaces"][1]["permissions"][0]["user"]["type"],
            "SSO_USER"
        );
        assert_eq!(json["tokenQuotaPerServiceAccount"], 99);
        // The typed snapshot is the same data.
        let typed: StateSnapshot = serde_json::from_str(&r.body).unwrap();
        assert_eq!(typed, emu.state());
    })
    .await
}

#[tokio::test]
async fn calls_route_logs_aws_calls_in_order_and_clears() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        grafana.list_workspaces().send().await.unwrap();
        let _ = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .name("t-current")
            .seconds_to_live(60)
            .send()
            .await;
        let r = raw(&emu, "GET", "/_emulator/calls", &[], "").await;
        let calls: Vec<CallRecord> = serde_json::from_str(&r.body).unwrap();
        assert_eq!(calls, emu.calls());
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].seq, calls[0].operation.as_str(), calls[0].status),
            (1, "ListWorkspaces", 200)
        );
        assert_eq!(calls[0].workspace_id, None);
        let c = &calls[1];
        assert_eq!(c.operation, "CreateWorkspaceServiceAccountToken");
        assert_eq!(c.workspace_id.as_deref(), Some(WS));
        assert_eq!(c.service_account_id.as_deref(), Some("3"));
        assert_eq!(
            (c.status, c.error_type.as_deref(), c.injected),
            (409, Some("ConflictException"), false)
        );
        assert!(c.time_ms >= calls[0].time_ms);
        let r = raw(&emu, "DELETE", "/_emulator/calls", &[], "").await;
        assert_eq!(r.status, 200);
        assert!(emu.calls().is_empty());
        grafana.list_workspaces().send().await.unwrap();
        assert_eq!(emu.calls()[0].seq, 3, "sequence numbers keep counting");
    })
    .await
}

#[tokio::test]
async fn faults_route_reads_and_replaces_the_configuration() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let r = raw(&emu, "GET", "/_emulator/faults", &[], "").await;
        let faults: Faults = serde_json::from_str(&r.body).unwrap();
        assert_eq!(faults, Faults::default());
        let body = r#"{"failNth": [{"operation": "ListWorkspaces", "nth": 1, "error": "AccessDeniedException"}], "latencyMs": 5}"#;
        let r = raw(&emu, "PUT", "/_emulator/faults", &[], body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(emu.faults().latency_ms, 5);
        assert_eq!(emu.faults().fail_nth[0].times, 1);
        let err = client(&emu).await.list_workspaces().send().await.unwrap_err();
        assert!(err.into_service_error().is_access_denied_exception());
        // Test routes are never faulted.
        emu.set_faults(Faults { down: true, ..Faults::default() });
        assert_eq!(raw(&emu, "GET", "/_emulator/state", &[], "").await.status, 200);
        // Bad configurations are refused and change nothing.
        for bad in [r#"{"errorRate": 2}"#, r#"{"latencyMS": 5}"#, r#"{"failNth": [{"operation": "X", "nth": 1, "error": "ThrottlingException"}]}"#] {
            let r = raw(&emu, "PUT", "/_emulator/faults", &[], bad).await;
            assert_eq!(r.status, 400, "{bad}");
        }
        assert!(emu.faults().down);
    })
    .await
}

#[tokio::test]
async fn expiry_routes_move_token_and_api_key_expiry() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/serviceaccounts/2/tokens/1/expiry"),
            &[],
            r#"{"expiresAt": 1700000000}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            emu.state()
                .workspace(WS)
                .unwrap()
                .service_account("2")
                .unwrap()
                .token("1")
                .unwrap()
                .expires_at,
            Some(1_700_000_000)
        );
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/apikeys/legacy/expiry"),
            &[],
            r#"{"expiresInSeconds": 10}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        let key = emu
            .state()
            .workspace(WS)
            .unwrap()
            .api_key("legacy")
            .unwrap()
            .clone();
        assert_eq!(r.json()["expiresAt"], key.expires_at);
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/serviceaccounts/2/tokens/99/expiry"),
            &[],
            r#"{"expiresAt": 1}"#,
        )
        .await;
        assert_eq!(r.status, 404);
        let r = raw(
            &emu,
            "POST",
            &format!("/_emulator/workspaces/{WS}/apikeys/legacy/expiry"),
            &[],
            r#"{"expiresAt": 1, "expiresInSeconds": 1}"#,
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(!emu.set_token_expiry(WS, "3", "1", 5));
    })
    .await
}

#[tokio::test]
async fn seed_route_adds_data_while_running() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let body = r#"{"defaultPageSize": 1, "workspaces": [{"id": "g-0123456789", "serviceAccounts": [
            {"name": "rotator", "tokens": [{"name": "added", "expiresInSeconds": 60, "key": "glsa_added"}]},
            {"name": "brand-new", "grafanaRole": "EDITOR"}]}]}"#;
        let r = raw(&emu, "POST", "/_emulator/seed", &[], body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let state = emu.state();
        let ws = state.workspace(WS).unwrap();
        assert_eq!(ws.service_account("2").unwrap().token_by_name("added").unwrap().key, "glsa_added");
        assert_eq!(ws.service_account_by_name("brand-new").unwrap().id, "4");
        assert_eq!(state.default_page_size, 1);
        // A clashing seed is refused whole.
        let clash = r#"{"workspaces": [{"id": "g-00000000aa"}, {"id": "g-0123456789", "apiKeys": [{"keyName": "added", "expiresInSeconds": 5}]}]}"#;
        let r = raw(&emu, "POST", "/_emulator/seed", &[], clash).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["message"].as_str().unwrap().contains("added"));
        assert_eq!(emu.state(), state);
        assert!(emu.try_add_seed(amg_emulator::Seed::from_json_str(clash).unwrap()).is_err());
    })
    .await
}
