//! Conformance: each of the twelve key and workspace operations succeeds through the real
//! aws-sdk-grafana client (ListVersions and UpdateWorkspaceConfiguration: tests/upgrade.rs),
//! with the exact shapes (member names, timestamps as epoch seconds, isDisabled as a string).

mod common;

use amg_emulator::{Emulator, EmulatorConfig, Role};
use aws_sdk_grafana::types::{
    Role as SdkRole, UpdateAction, UpdateInstruction, User, UserType, WorkspaceStatus,
};
use common::*;

#[tokio::test]
async fn list_workspaces_returns_every_workspace_with_its_summary() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu).await.list_workspaces().send().await.unwrap();
        let ids: Vec<&str> = out.workspaces().iter().map(|w| w.id()).collect();
        assert_eq!(ids, [WS2, WS, WS8]);
        let prod = &out.workspaces()[1];
        assert_eq!(prod.name(), Some("production"));
        assert_eq!(prod.grafana_version(), "10.4");
        assert_eq!(prod.status(), &WorkspaceStatus::Active);
        assert_eq!(
            prod.endpoint(),
            "g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
        assert_eq!(
            prod.tags().and_then(|t| t.get("team")).map(String::as_str),
            Some("observability")
        );
        assert!(prod.created().secs() > 1_600_000_000);
        assert!(out.next_token().is_none());
    })
    .await
}

#[tokio::test]
async fn describe_workspace_returns_the_description() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .describe_workspace()
            .workspace_id(WS8)
            .send()
            .await
            .unwrap();
        let ws = out.workspace().expect("workspace");
        assert_eq!(ws.id(), WS8);
        assert_eq!(ws.grafana_version(), "8.4");
        assert_eq!(ws.status(), &WorkspaceStatus::Active);
        assert_eq!(
            ws.endpoint(),
            "g-8888888888.grafana-workspace.us-east-1.amazonaws.com"
        );
        assert!(ws.data_sources().is_empty());
        assert_eq!(ws.authentication().map(|a| a.providers().len()), Some(1));
    })
    .await
}

#[tokio::test]
async fn the_region_setting_shapes_endpoints() {
    bounded(async {
        let emu = start(standard_seed().with_region("eu-west-1")).await;
        let out = client(&emu)
            .await
            .describe_workspace()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.workspace().unwrap().endpoint(),
            "g-0123456789.grafana-workspace.eu-west-1.amazonaws.com"
        );
    })
    .await
}

#[tokio::test]
async fn list_service_accounts_returns_is_disabled_as_a_string() {
    bounded(async {
        let seed = standard_seed().with_workspace(
            amg_emulator::WorkspaceSeed::new(WS).with_service_account(
                amg_emulator::ServiceAccountSeed::new("off", Role::Editor).disabled(),
            ),
        );
        let emu = start(seed).await;
        let out = client(&emu)
            .await
            .list_workspace_service_accounts()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        assert_eq!(out.workspace_id(), WS);
        let rows: Vec<(&str, &str, &SdkRole, &str)> = out
            .service_accounts()
            .iter()
            .map(|sa| (sa.id(), sa.name(), sa.grafana_role(), sa.is_disabled()))
            .collect();
        assert_eq!(
            rows,
            [
                ("2", "rotator", &SdkRole::Admin, "false"),
                ("3", "viewer", &SdkRole::Viewer, "false"),
                ("4", "off", &SdkRole::Editor, "true"),
            ]
        );
    })
    .await
}

#[tokio::test]
async fn create_service_account_returns_a_new_numeric_id() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .create_workspace_service_account()
            .workspace_id(WS)
            .name("ci-bot")
            .grafana_role(SdkRole::Editor)
            .send()
            .await
            .unwrap();
        assert_eq!(out.id(), "4");
        assert_eq!(out.name(), "ci-bot");
        assert_eq!(out.grafana_role(), &SdkRole::Editor);
        assert_eq!(out.workspace_id(), WS);
        let state = emu.state();
        let sa = state.workspace(WS).unwrap().service_account("4").unwrap();
        assert_eq!(
            (sa.name.as_str(), sa.grafana_role, sa.is_disabled),
            ("ci-bot", Role::Editor, false)
        );
    })
    .await
}

#[tokio::test]
async fn delete_service_account_deletes_it_and_its_tokens() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let out = grafana
            .delete_workspace_service_account()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        assert_eq!((out.service_account_id(), out.workspace_id()), ("2", WS));
        let state = emu.state();
        let ws = state.workspace(WS).unwrap();
        assert!(ws.service_account("2").is_none());
        // Its token names are free again: they went with it.
        assert!(ws.key_name_holder("t-current").is_none());
        grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .name("t-current")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn list_tokens_returns_epoch_timestamps_and_no_keys() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        assert_eq!((out.workspace_id(), out.service_account_id()), (WS, "2"));
        let state = emu.state();
        let seeded = &state
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .tokens;
        let tokens = out.service_account_tokens();
        assert_eq!(tokens.len(), 2);
        for (got, want) in tokens.iter().zip(seeded) {
            assert_eq!(got.id(), want.id);
            assert_eq!(got.name(), want.name);
            assert_eq!(got.created_at().secs(), want.created_at);
            assert_eq!(Some(got.expires_at().secs()), want.expires_at);
            assert!(got.last_used_at().is_none());
        }
        assert_eq!(tokens[1].name(), "t-expired");
        assert_eq!(
            tokens[1].expires_at().secs() - tokens[0].expires_at().secs(),
            -3660
        );
    })
    .await
}

#[tokio::test]
async fn create_token_returns_a_grafana_shaped_key_once() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .name("viewer-1")
            .seconds_to_live(600)
            .send()
            .await
            .unwrap();
        assert_eq!((out.workspace_id(), out.service_account_id()), (WS, "3"));
        let token = out.service_account_token().expect("token");
        // Tokens and API keys share one ID sequence per workspace: 2 seeded tokens, 1 API key.
        assert_eq!(token.id(), "4");
        assert_eq!(token.name(), "viewer-1");
        let key = token.key();
        assert_eq!(key.len(), 46, "{key}");
        assert!(key.starts_with("glsa_"));
        assert!(key[5..37].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(&key[37..38], "_");
        assert!(key[38..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let state = emu.state();
        let stored = state
            .workspace(WS)
            .unwrap()
            .service_account("3")
            .unwrap()
            .token("4")
            .unwrap()
            .clone();
        assert_eq!(stored.key, key);
        assert_eq!(stored.expires_at, Some(stored.created_at + 600));
    })
    .await
}

#[tokio::test]
async fn delete_token_removes_only_that_token() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .token_id("2")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (out.workspace_id(), out.service_account_id(), out.token_id()),
            (WS, "2", "2")
        );
        let state = emu.state();
        let names: Vec<String> = state
            .workspace(WS)
            .unwrap()
            .service_account("2")
            .unwrap()
            .tokens
            .iter()
            .map(|t| t.name.clone())
            .collect();
        assert_eq!(names, ["t-current"]);
    })
    .await
}

#[tokio::test]
async fn create_api_key_works_on_grafana_8() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .create_workspace_api_key()
            .workspace_id(WS8)
            .key_name("ops")
            .key_role("VIEWER")
            .seconds_to_live(120)
            .send()
            .await
            .unwrap();
        assert_eq!((out.workspace_id(), out.key_name()), (WS8, "ops"));
        assert!(out.key().starts_with("glsa_"));
        let state = emu.state();
        let key = state
            .workspace(WS8)
            .unwrap()
            .api_key("ops")
            .unwrap()
            .clone();
        assert_eq!(key.key, out.key());
        assert_eq!(key.key_role, Role::Viewer);
        assert_eq!(key.expires_at - key.created_at, 120);
    })
    .await
}

#[tokio::test]
async fn delete_api_key_by_name_with_percent_encoding() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        grafana
            .create_workspace_api_key()
            .workspace_id(WS)
            .key_name("with space/and slash")
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
        let out = grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("with space/and slash")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (out.workspace_id(), out.key_name()),
            (WS, "with space/and slash")
        );
        assert!(emu
            .state()
            .workspace(WS)
            .unwrap()
            .api_key("with space/and slash")
            .is_none());
        assert!(emu
            .state()
            .workspace(WS)
            .unwrap()
            .api_key("legacy")
            .is_some());
    })
    .await
}

#[tokio::test]
async fn list_permissions_returns_role_and_user() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let out = client(&emu)
            .await
            .list_permissions()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        assert_eq!(out.permissions().len(), 1);
        let p = &out.permissions()[0];
        assert_eq!(p.role(), &SdkRole::Admin);
        assert_eq!(
            p.user().map(|u| (u.id(), u.r#type())),
            Some((USER, &UserType::SsoUser))
        );
    })
    .await
}

#[tokio::test]
async fn update_permissions_adds_replaces_and_revokes() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let user = |id: &str, t: UserType| User::builder().id(id).r#type(t).build().unwrap();
        let instruction = |action, role, users: Vec<User>| {
            UpdateInstruction::builder()
                .action(action)
                .role(role)
                .set_users(Some(users))
                .build()
                .unwrap()
        };
        let out = grafana
            .update_permissions()
            .workspace_id(WS)
            .update_instruction_batch(instruction(
                UpdateAction::Add,
                SdkRole::Editor,
                vec![user(GROUP, UserType::SsoGroup)],
            ))
            .update_instruction_batch(instruction(
                UpdateAction::Revoke,
                SdkRole::Admin,
                vec![user(USER, UserType::SsoUser)],
            ))
            .send()
            .await
            .unwrap();
        assert!(out.errors().is_empty());
        let listed = grafana
            .list_permissions()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        let rows: Vec<(&SdkRole, &str)> = listed
            .permissions()
            .iter()
            .map(|p| (p.role(), p.user().unwrap().id()))
            .collect();
        assert_eq!(rows, [(&SdkRole::Editor, GROUP)]);
    })
    .await
}

#[tokio::test]
async fn every_success_is_200_json_with_a_request_id() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let r = raw_aws(&emu, "GET", "/workspaces", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-amzn-requestid").map(str::len), Some(36));
        let r = raw_aws(
            &emu,
            "POST",
            &format!("/workspaces/{WS}/serviceaccounts"),
            r#"{"name":"x","grafanaRole":"ADMIN"}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["id"], "4");
    })
    .await
}

#[tokio::test]
async fn a_clock_offset_moves_every_reported_time() {
    bounded(async {
        const OFFSET: i64 = -3600;
        let emu = Emulator::start(
            EmulatorConfig::new()
                .with_seed(standard_seed())
                .with_clock_offset(OFFSET),
        )
        .await
        .expect("the emulator starts");
        let grafana = client(&emu).await;
        let host_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("made-now")
            .seconds_to_live(600)
            .send()
            .await
            .unwrap();
        let out = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        let made = out
            .service_account_tokens()
            .iter()
            .find(|t| t.name() == "made-now")
            .unwrap();
        // On the service's clock, an hour behind the host's (a second of slack either way).
        let created = made.created_at().secs();
        assert!(
            (created - (host_now + OFFSET)).abs() <= 1,
            "created {created}, host {host_now}"
        );
        assert_eq!(made.expires_at().secs() - created, 600);
        // Seeds are on the same clock: "created 60 s ago" is 60 s before the service's now.
        let seeded = out
            .service_account_tokens()
            .iter()
            .find(|t| t.name() == "t-current")
            .unwrap();
        assert!((seeded.created_at().secs() - (host_now + OFFSET - 60)).abs() <= 1);
    })
    .await
}
