//! Conformance: the AMG/Grafana rules beyond the model's shapes: workspace-wide name uniqueness
//! across tokens and API keys, the token quota that counts expired tokens, Grafana 8 workspaces
//! (no service accounts), Grafana 12 and later (no API keys), workspace status, tokens that never
//! expire away, and per-entry UpdatePermissions errors.

mod common;

use amg_emulator::{Role as SeedRole, Seed, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
use aws_sdk_grafana::operation::create_workspace_api_key::CreateWorkspaceApiKeyError;
use aws_sdk_grafana::operation::create_workspace_service_account::CreateWorkspaceServiceAccountError;
use aws_sdk_grafana::operation::create_workspace_service_account_token::CreateWorkspaceServiceAccountTokenError;
use aws_sdk_grafana::operation::delete_workspace_api_key::DeleteWorkspaceApiKeyError;
use aws_sdk_grafana::operation::list_workspace_service_accounts::ListWorkspaceServiceAccountsError;
use aws_sdk_grafana::types::{
    Role, UpdateAction, UpdateInstruction, User, UserType, ValidationExceptionReason,
};
use common::*;

#[tokio::test]
async fn a_token_name_is_unique_across_service_accounts_of_a_workspace() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let err = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3") // "viewer"; "t-current" belongs to "rotator"
            .name("t-current")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountTokenError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (c.resource_id(), c.resource_type()),
            ("t-current", "SERVICE_ACCOUNT_TOKEN")
        );
        assert_eq!(
            emu.state()
                .workspace(WS)
                .unwrap()
                .service_account("3")
                .unwrap()
                .tokens
                .len(),
            0
        );
    })
    .await
}

#[tokio::test]
async fn the_same_token_name_is_fine_in_another_workspace() {
    bounded(async {
        let seed = standard_seed().with_workspace(
            WorkspaceSeed::new(WS2)
                .with_service_account(ServiceAccountSeed::new("bot", SeedRole::Admin)),
        );
        let emu = start(seed).await;
        let out = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS2)
            .service_account_id("2")
            .name("t-current")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
        assert_eq!(out.service_account_token().unwrap().name(), "t-current");
    })
    .await
}

#[tokio::test]
async fn token_and_api_key_names_share_one_namespace() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let err = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("legacy") // the API key's name
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountTokenError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!((c.resource_id(), c.resource_type()), ("legacy", "API_KEY"));

        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS)
            .key_name("t-expired") // an (expired) token's name
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceApiKeyError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (c.resource_id(), c.resource_type()),
            ("t-expired", "SERVICE_ACCOUNT_TOKEN")
        );

        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS)
            .key_name("legacy")
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_conflict_exception());
    })
    .await
}

#[tokio::test]
async fn a_service_account_name_is_unique_in_the_workspace() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let err = client(&emu)
            .await
            .create_workspace_service_account()
            .workspace_id(WS)
            .name("rotator")
            .grafana_role(Role::Viewer)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (c.resource_id(), c.resource_type()),
            ("rotator", "SERVICE_ACCOUNT")
        );
    })
    .await
}

fn quota_seed(quota: u32) -> Seed {
    let mut sa = ServiceAccountSeed::new("full", SeedRole::Admin);
    for i in 0..quota {
        sa =
            sa.with_token(TokenSeed::new(&format!("expired-{i}"), -3600).created_seconds_ago(7200));
    }
    Seed::new()
        .with_token_quota(quota)
        .with_workspace(WorkspaceSeed::new(WS).with_service_account(sa))
}

#[tokio::test]
async fn the_token_quota_counts_expired_tokens() {
    bounded(async {
        let emu = start(quota_seed(3)).await;
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
        let err = create("fresh").await.unwrap_err();
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 402);
        let CreateWorkspaceServiceAccountTokenError::ServiceQuotaExceededException(q) =
            err.into_service_error()
        else {
            panic!("expected ServiceQuotaExceededException")
        };
        assert_eq!(q.resource_id(), "2");
        assert_eq!(q.resource_type(), "SERVICE_ACCOUNT");
        assert_eq!(q.service_code(), "grafana");
        assert_eq!(q.quota_code(), "service-account-tokens-per-service-account");

        // Deleting one expired token frees one place.
        grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .token_id("1")
            .send()
            .await
            .unwrap();
        create("fresh").await.unwrap();
        assert!(create("fresher")
            .await
            .unwrap_err()
            .into_service_error()
            .is_service_quota_exceeded_exception());
    })
    .await
}

#[tokio::test]
async fn the_default_quota_is_99() {
    bounded(async {
        let mut seed = quota_seed(99);
        seed.token_quota_per_service_account = None;
        let emu = start(seed).await;
        assert_eq!(emu.state().token_quota_per_service_account, 99);
        let err = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("one-more")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_service_quota_exceeded_exception(), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn grafana_8_workspaces_refuse_every_service_account_call() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let check = |err: aws_sdk_grafana::types::error::ValidationException| {
            assert_eq!(err.reason(), &ValidationExceptionReason::Other);
            assert!(
                err.message().contains("Grafana version 9"),
                "{}",
                err.message()
            );
        };
        let err = grafana
            .list_workspace_service_accounts()
            .workspace_id(WS8)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ListWorkspaceServiceAccountsError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        check(v);
        let err = grafana
            .create_workspace_service_account()
            .workspace_id(WS8)
            .name("bot")
            .grafana_role(Role::Admin)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        check(v);
        let e1 = grafana
            .delete_workspace_service_account()
            .workspace_id(WS8)
            .service_account_id("2")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let e2 = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS8)
            .service_account_id("2")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let e3 = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS8)
            .service_account_id("2")
            .name("t")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let e4 = grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS8)
            .service_account_id("2")
            .token_id("1")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(e1.is_validation_exception() && e2.is_validation_exception());
        assert!(e3.is_validation_exception() && e4.is_validation_exception());
        // API keys work on Grafana 8 (where one still runs).
        grafana
            .create_workspace_api_key()
            .workspace_id(WS8)
            .key_name("new")
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
        grafana
            .delete_workspace_api_key()
            .workspace_id(WS8)
            .key_name("old-key")
            .send()
            .await
            .unwrap();
    })
    .await
}

/// WS12 on Grafana 12.4 and WS13 on 13.0, each with service account "bot" (id 2), and the
/// standard seed around them.
fn new_versions_seed() -> Seed {
    let bot = || ServiceAccountSeed::new("bot", SeedRole::Admin);
    standard_seed()
        .with_workspace(
            WorkspaceSeed::new(WS12)
                .with_grafana_version("12.4")
                .with_service_account(bot()),
        )
        .with_workspace(
            WorkspaceSeed::new(WS13)
                .with_grafana_version("13.0")
                .with_service_account(bot()),
        )
}

/// The modelled refusal of an API-key call on Grafana 12+: the status, then the typed error.
fn assert_api_keys_removed<E: std::fmt::Debug>(
    err: &aws_sdk_grafana::error::SdkError<E>,
    v: &aws_sdk_grafana::types::error::ValidationException,
    workspace: &str,
    version: &str,
) {
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    assert_eq!(v.reason(), &ValidationExceptionReason::Other);
    assert!(v.field_list().is_empty(), "{v:?}");
    assert_eq!(
        v.message(),
        format!(
            "API keys have been removed in Amazon Managed Grafana version 12. Workspace \
             {workspace} runs Grafana {version}: use service accounts and tokens."
        )
    );
}

#[tokio::test]
async fn grafana_12_and_later_refuse_api_keys() {
    bounded(async {
        let emu = start(new_versions_seed()).await;
        let grafana = client(&emu).await;
        for (ws, version) in [(WS12, "12.4"), (WS13, "13.0")] {
            let err = grafana
                .create_workspace_api_key()
                .workspace_id(ws)
                .key_name("ci")
                .key_role("ADMIN")
                .seconds_to_live(60)
                .send()
                .await
                .unwrap_err();
            let CreateWorkspaceApiKeyError::ValidationException(v) =
                err.as_service_error().unwrap()
            else {
                panic!("{err:?}")
            };
            assert_api_keys_removed(&err, v, ws, version);
            assert_eq!(
                err.as_service_error().unwrap().meta().code(),
                Some("ValidationException")
            );

            // Delete is refused before the key is looked up: no 404 for a key that never was.
            let err = grafana
                .delete_workspace_api_key()
                .workspace_id(ws)
                .key_name("ci")
                .send()
                .await
                .unwrap_err();
            let DeleteWorkspaceApiKeyError::ValidationException(v) =
                err.as_service_error().unwrap()
            else {
                panic!("{err:?}")
            };
            assert_api_keys_removed(&err, v, ws, version);

            let state = emu.state();
            let held = state.workspace(ws).unwrap();
            assert!(held.api_keys.is_empty());
            assert_eq!(held.next_key_id, 1, "a refused key takes no ID");
        }
    })
    .await
}

#[tokio::test]
async fn a_key_left_on_a_workspace_moved_to_12_opens_grafana_but_cannot_be_deleted() {
    bounded(async {
        // The standard seed's WS (10.4) holds API key "legacy"; a later seed moves WS to 12.4.
        // A seed sets the version as written, not as an upgrade: the key stays (an upgrade by
        // UpdateWorkspaceConfiguration applies `apiKeysAtUpgrade` instead, tests/upgrade.rs).
        let emu = start(standard_seed()).await;
        emu.add_seed(
            Seed::new().with_workspace(WorkspaceSeed::new(WS).with_grafana_version("12.4")),
        );
        let state = emu.state();
        let key = state
            .workspace(WS)
            .unwrap()
            .api_key("legacy")
            .unwrap()
            .key
            .clone();
        let r = raw(
            &emu,
            "GET",
            &format!("/_grafana/{WS}/api/org/"),
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let err = client(&emu)
            .await
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("legacy")
            .send()
            .await
            .unwrap_err();
        let DeleteWorkspaceApiKeyError::ValidationException(v) = err.as_service_error().unwrap()
        else {
            panic!("{err:?}")
        };
        assert_api_keys_removed(&err, v, WS, "12.4");
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
async fn the_grafana_12_rule_sits_between_validation_and_workspace_status() {
    bounded(async {
        let seed =
            new_versions_seed().with_workspace(WorkspaceSeed::new(WS12).with_status("UPDATING"));
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        // Input validation first: a bad keyName is FIELD_VALIDATION_FAILED even on Grafana 12.
        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS12)
            .key_name("x".repeat(101))
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceApiKeyError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            v.reason(),
            &ValidationExceptionReason::FieldValidationFailed
        );
        // An unknown workspace is 404 before any version is known.
        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS_MISSING)
            .key_name("ci")
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
        // The version rule before the status rule: a Grafana 12 workspace that is not ACTIVE still
        // answers ValidationException, not ConflictException.
        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS12)
            .key_name("ci")
            .key_role("ADMIN")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceApiKeyError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(v.reason(), &ValidationExceptionReason::Other);
        assert!(v.message().contains("Grafana 12.4"), "{}", v.message());
    })
    .await
}

#[tokio::test]
async fn grafana_9_and_10_still_take_api_keys() {
    bounded(async {
        let seed = Seed::new()
            .with_workspace(WorkspaceSeed::new(WS).with_grafana_version("9.4"))
            .with_workspace(WorkspaceSeed::new(WS2).with_grafana_version("10.4"));
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        for ws in [WS, WS2] {
            let out = grafana
                .create_workspace_api_key()
                .workspace_id(ws)
                .key_name("ci")
                .key_role("EDITOR")
                .seconds_to_live(60)
                .send()
                .await
                .unwrap();
            assert_eq!((out.key_name(), out.workspace_id()), ("ci", ws));
            assert!(out.key().starts_with("glsa_"));
            assert_eq!(emu.state().workspace(ws).unwrap().api_keys.len(), 1);
            let out = grafana
                .delete_workspace_api_key()
                .workspace_id(ws)
                .key_name("ci")
                .send()
                .await
                .unwrap();
            assert_eq!((out.key_name(), out.workspace_id()), ("ci", ws));
            assert!(emu.state().workspace(ws).unwrap().api_keys.is_empty());
        }
    })
    .await
}

#[tokio::test]
async fn grafana_12_keeps_service_accounts_and_tokens() {
    bounded(async {
        let emu = start(new_versions_seed()).await;
        let grafana = client(&emu).await;
        let sa = grafana
            .create_workspace_service_account()
            .workspace_id(WS12)
            .name("rotator")
            .grafana_role(Role::Admin)
            .send()
            .await
            .unwrap();
        assert_eq!(sa.id(), "3");
        let listed = grafana
            .list_workspace_service_accounts()
            .workspace_id(WS12)
            .send()
            .await
            .unwrap();
        let names: Vec<&str> = listed.service_accounts().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["bot", "rotator"]);
        let made = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS12)
            .service_account_id(sa.id())
            .name("t1")
            .seconds_to_live(600)
            .send()
            .await
            .unwrap();
        let token = made.service_account_token().unwrap();
        // The key works against the workspace's Grafana.
        let r = raw(
            &emu,
            "GET",
            &format!("/_grafana/{WS12}/api/org/"),
            &[("authorization", &format!("Bearer {}", token.key()))],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tokens = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS12)
            .service_account_id(sa.id())
            .send()
            .await
            .unwrap();
        assert_eq!(tokens.service_account_tokens().len(), 1);
        let summary = &tokens.service_account_tokens()[0];
        assert_eq!((summary.id(), summary.name()), (token.id(), "t1"));
        assert_eq!(
            summary.expires_at().secs() - summary.created_at().secs(),
            600
        );
        assert!(summary.last_used_at().is_some());
        grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS12)
            .service_account_id(sa.id())
            .token_id(token.id())
            .send()
            .await
            .unwrap();
        grafana
            .delete_workspace_service_account()
            .workspace_id(WS12)
            .service_account_id(sa.id())
            .send()
            .await
            .unwrap();
        // And on 13 too.
        grafana
            .create_workspace_service_account_token()
            .workspace_id(WS13)
            .service_account_id("2")
            .name("t13")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn a_workspace_that_is_not_active_answers_conflict() {
    bounded(async {
        let seed = standard_seed().with_workspace(WorkspaceSeed::new(WS).with_status("UPDATING"));
        let emu = start(seed).await;
        let err = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("x")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountTokenError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!((c.resource_id(), c.resource_type()), (WS, "WORKSPACE"));
    })
    .await
}

#[tokio::test]
async fn expired_tokens_stay_listed_until_deleted() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(emu.set_token_expiry(WS, "2", "1", now - 1));
        let out = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")
            .send()
            .await
            .unwrap();
        let expiries: Vec<i64> = out
            .service_account_tokens()
            .iter()
            .map(|t| t.expires_at().secs())
            .collect();
        assert_eq!(expiries.len(), 2);
        assert!(expiries.iter().all(|&e| e < now));
    })
    .await
}

#[tokio::test]
async fn unknown_sso_principals_are_per_entry_errors() {
    bounded(async {
        let emu = start(standard_seed().with_sso_directory(&[USER], &[GROUP])).await;
        let user = |id: &str| {
            User::builder()
                .id(id)
                .r#type(UserType::SsoUser)
                .build()
                .unwrap()
        };
        let out = client(&emu)
            .await
            .update_permissions()
            .workspace_id(WS)
            .update_instruction_batch(
                UpdateInstruction::builder()
                    .action(UpdateAction::Add)
                    .role(Role::Editor)
                    .users(user(USER))
                    .users(user("99999999-9999-9999-9999-999999999999"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(out.errors().len(), 1);
        let e = &out.errors()[0];
        assert_eq!(e.code(), 404);
        assert!(e.message().contains("99999999-9999-9999-9999-999999999999"));
        let caused = e.caused_by().unwrap();
        assert_eq!(caused.action(), &UpdateAction::Add);
        assert_eq!(caused.role(), &Role::Editor);
        assert_eq!(caused.users().len(), 1);
        assert_eq!(
            caused.users()[0].id(),
            "99999999-9999-9999-9999-999999999999"
        );
        // The known user was applied: ADD replaced the ADMIN role it had.
        let state = emu.state();
        let perms = &state.workspace(WS).unwrap().permissions;
        assert_eq!(perms.len(), 1);
        assert_eq!(perms[0].role, SeedRole::Editor);
    })
    .await
}
