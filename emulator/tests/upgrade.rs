//! Conformance: the Grafana-version upgrade through the real aws-sdk-grafana client:
//! ListVersions, UpdateWorkspaceConfiguration (shapes, validation, every rule), and what becomes of
//! a workspace's API keys at an upgrade to 12 or later under each behaviour (`Invalidate`,
//! `Migrate`), as the Grafana stand-in and the List operations show it.

mod common;

use amg_emulator::{
    ApiKeySeed, ApiKeyUpgrade, Emulator, EmulatorConfig, Role as SeedRole, Seed, WorkspaceSeed,
};
use aws_sdk_grafana::operation::delete_workspace_api_key::DeleteWorkspaceApiKeyError;
use aws_sdk_grafana::operation::list_versions::ListVersionsError;
use aws_sdk_grafana::operation::update_workspace_configuration::UpdateWorkspaceConfigurationError;
use aws_sdk_grafana::types::{Role, ValidationExceptionReason};
use common::*;

/// GET /api/org/ on the workspace's Grafana stand-in with `key`; the status.
async fn org_status(emu: &Emulator, workspace: &str, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    raw(
        emu,
        "GET",
        &format!("/_grafana/{workspace}/api/org/"),
        &[("authorization", &auth)],
        "",
    )
    .await
    .status
}

/// The secret of an API key, from the state.
fn api_key(emu: &Emulator, workspace: &str, name: &str) -> amg_emulator::ApiKey {
    emu.state()
        .workspace(workspace)
        .and_then(|ws| ws.api_key(name).cloned())
        .unwrap_or_else(|| panic!("no API key {name} in {workspace}"))
}

async fn upgrade(
    grafana: &aws_sdk_grafana::Client,
    workspace: &str,
    version: &str,
) -> Result<(), UpdateWorkspaceConfigurationError> {
    grafana
        .update_workspace_configuration()
        .workspace_id(workspace)
        .configuration("{}")
        .grafana_version(version)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error())
}

async fn versions(grafana: &aws_sdk_grafana::Client, workspace: Option<&str>) -> Vec<String> {
    grafana
        .list_versions()
        .set_workspace_id(workspace.map(str::to_string))
        .send()
        .await
        .unwrap()
        .grafana_versions()
        .to_vec()
}

fn validation(
    err: UpdateWorkspaceConfigurationError,
) -> aws_sdk_grafana::types::error::ValidationException {
    match err {
        UpdateWorkspaceConfigurationError::ValidationException(v) => v,
        other => panic!("expected ValidationException, got {other:?}"),
    }
}

// ---- ListVersions -------------------------------------------------------------------------------

#[tokio::test]
async fn list_versions_without_a_workspace_lists_every_offered_version() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let out = grafana.list_versions().send().await.unwrap();
        assert_eq!(out.grafana_versions(), ["9.4", "10.4", "12.4", "13.0"]);
        assert!(out.next_token().is_none());
        assert_eq!(
            amg_emulator::OFFERED_GRAFANA_VERSIONS,
            ["9.4", "10.4", "12.4", "13.0"]
        );
    })
    .await
}

#[tokio::test]
async fn list_versions_for_a_workspace_lists_what_it_can_be_upgraded_to() {
    bounded(async {
        let seed = standard_seed()
            .with_workspace(WorkspaceSeed::new(WS12).with_grafana_version("12.4"))
            .with_workspace(WorkspaceSeed::new(WS13).with_grafana_version("13.0"));
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        assert_eq!(versions(&grafana, Some(WS)).await, ["12.4", "13.0"]);
        assert_eq!(
            versions(&grafana, Some(WS8)).await,
            ["9.4", "10.4", "12.4", "13.0"]
        );
        assert_eq!(versions(&grafana, Some(WS12)).await, ["13.0"]);
        assert!(versions(&grafana, Some(WS13)).await.is_empty());
        // The workspace travels as the query parameter `workspace-id`; the call log names it.
        let last = emu.calls().pop().unwrap();
        assert_eq!(last.operation, "ListVersions");
        assert_eq!(last.workspace_id.as_deref(), Some(WS13));
        let r = raw_aws(&emu, "GET", &format!("/versions?workspace-id={WS}"), "").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            serde_json::json!({"grafanaVersions": ["12.4", "13.0"]})
        );
    })
    .await
}

#[tokio::test]
async fn list_versions_pages() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let first = grafana.list_versions().max_results(1).send().await.unwrap();
        assert_eq!(first.grafana_versions(), ["9.4"]);
        let token = first.next_token().expect("more pages").to_string();
        let second = grafana
            .list_versions()
            .max_results(2)
            .next_token(token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(second.grafana_versions(), ["10.4", "12.4"]);
        let all: Vec<String> = grafana
            .list_versions()
            .max_results(1)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        assert_eq!(all, ["9.4", "10.4", "12.4", "13.0"]);
        // A token is bound to its list: the workspace's upgrades are another list.
        let err = grafana
            .list_versions()
            .workspace_id(WS8)
            .next_token(token)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ListVersionsError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(v.field_list()[0].name(), "nextToken");
    })
    .await
}

#[tokio::test]
async fn list_versions_validates_and_knows_its_workspaces() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let err = grafana
            .list_versions()
            .workspace_id(WS_MISSING)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ListVersionsError::ResourceNotFoundException(nf) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (nf.resource_id(), nf.resource_type()),
            (WS_MISSING, "WORKSPACE")
        );
        for (workspace, max, field) in [
            (Some("g-XYZ"), None, "workspaceId"),
            (None, Some(0), "maxResults"),
            (None, Some(101), "maxResults"),
        ] {
            let err = grafana
                .list_versions()
                .set_workspace_id(workspace.map(str::to_string))
                .set_max_results(max)
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            let ListVersionsError::ValidationException(v) = err else {
                panic!("{err:?}")
            };
            assert_eq!(
                v.reason(),
                &ValidationExceptionReason::FieldValidationFailed
            );
            assert_eq!(v.field_list()[0].name(), field);
        }
    })
    .await
}

#[tokio::test]
async fn a_seed_replaces_the_offered_versions() {
    bounded(async {
        let emu = start(standard_seed().with_grafana_versions(&["10.4", "12.5", "9.4"])).await;
        let grafana = client(&emu).await;
        // Listed oldest first, whatever the seed's order.
        assert_eq!(versions(&grafana, None).await, ["9.4", "10.4", "12.5"]);
        assert_eq!(versions(&grafana, Some(WS)).await, ["12.5"]);
        let err = upgrade(&grafana, WS, "12.4").await.unwrap_err();
        assert!(validation(err).message().contains("not supported"));
        upgrade(&grafana, WS, "12.5").await.unwrap();
        for bad in [
            r#"{"grafanaVersions": []}"#,
            r#"{"grafanaVersions": ["v12"]}"#,
            r#"{"grafanaVersions": ["13", "13.0"]}"#,
        ] {
            assert!(Seed::from_json_str(bad).is_err(), "{bad}");
        }
    })
    .await
}

// ---- UpdateWorkspaceConfiguration -----------------------------------------------------------------

#[tokio::test]
async fn update_configuration_answers_202_and_keeps_the_version_without_one() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let before = emu.state().workspace(WS).unwrap().modified;
        let config = r#"{"plugins": {"pluginAdminEnabled": true}}"#;
        client(&emu)
            .await
            .update_workspace_configuration()
            .workspace_id(WS)
            .configuration(config)
            .send()
            .await
            .unwrap();
        let state = emu.state();
        let ws = state.workspace(WS).unwrap();
        assert_eq!(ws.configuration, config);
        assert_eq!(ws.grafana_version, "10.4");
        assert!(ws.modified >= before);
        assert_eq!(ws.api_keys.len(), 1);
        let call = emu.calls().pop().unwrap();
        assert_eq!(
            (call.operation.as_str(), call.status),
            ("UpdateWorkspaceConfiguration", 202)
        );

        // On the wire: PUT /workspaces/{id}/configuration, 202 with an empty JSON object.
        let r = raw_aws(
            &emu,
            "PUT",
            &format!("/workspaces/{WS}/configuration"),
            r#"{"configuration": "{\"unifiedAlerting\": {\"enabled\": true}}"}"#,
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("x-amzn-requestid").is_some());
        assert_eq!(r.json(), serde_json::json!({}));
    })
    .await
}

#[tokio::test]
async fn update_configuration_upgrades_the_grafana_version() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        upgrade(&grafana, WS8, "9.4").await.unwrap();
        upgrade(&grafana, WS, "12.4").await.unwrap();
        let out = grafana
            .describe_workspace()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        assert_eq!(out.workspace().unwrap().grafana_version(), "12.4");
        assert_eq!(versions(&grafana, Some(WS)).await, ["13.0"]);
        // Naming the version the workspace runs changes nothing and is no error.
        upgrade(&grafana, WS, "12.4").await.unwrap();
        // 8 -> 13 in one step: major versions may be skipped (assumed).
        upgrade(&grafana, WS8, "13.0").await.unwrap();
        assert_eq!(emu.state().workspace(WS8).unwrap().grafana_version, "13.0");
        // Service accounts and tokens work on as before.
        grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("after-upgrade")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn update_configuration_refuses_a_downgrade_and_unoffered_versions() {
    bounded(async {
        let seed =
            standard_seed().with_workspace(WorkspaceSeed::new(WS12).with_grafana_version("12.4"));
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        let v = validation(upgrade(&grafana, WS12, "10.4").await.unwrap_err());
        assert_eq!(v.reason(), &ValidationExceptionReason::Other);
        assert!(v.field_list().is_empty());
        assert_eq!(
            v.message(),
            "Workspace g-1212121212 runs Grafana 12.4: it can only be upgraded, not downgraded \
             to 10.4. Versions it can be upgraded to: 13.0."
        );
        for version in ["11.0", "8.4", "12.4.1", "latest"] {
            let v = validation(upgrade(&grafana, WS, version).await.unwrap_err());
            assert_eq!(v.reason(), &ValidationExceptionReason::Other, "{version}");
            assert_eq!(
                v.message(),
                format!(
                    "Grafana version {version} is not supported. Supported versions: 9.4, \
                     10.4, 12.4, 13.0."
                )
            );
        }
        let state = emu.state();
        assert_eq!(state.workspace(WS12).unwrap().grafana_version, "12.4");
        assert_eq!(state.workspace(WS).unwrap().grafana_version, "10.4");
        assert_eq!(
            state.workspace(WS).unwrap().configuration,
            "{}",
            "nothing applied"
        );
    })
    .await
}

#[tokio::test]
async fn update_configuration_validates_its_input() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let send = |config: Option<String>, version: Option<&str>| {
            grafana
                .update_workspace_configuration()
                .workspace_id(WS)
                .set_configuration(config)
                .set_grafana_version(version.map(str::to_string))
                .send()
        };
        // The model's bounds: configuration 2..65536, grafanaVersion 1..255.
        let big = format!(r#"{{"k": "{}"}}"#, "x".repeat(65_536 - 9));
        assert_eq!(big.chars().count(), 65_536);
        send(Some(big.clone()), None).await.unwrap();
        let cases = [
            (None, None, "configuration", "Member must not be null"),
            (
                Some("{".into()),
                None,
                "configuration",
                "between 2 and 65536",
            ),
            (
                Some(format!("{big} ")),
                None,
                "configuration",
                "between 2 and 65536",
            ),
            (Some("[1]".into()), None, "configuration", "JSON object"),
            (
                Some("not json".into()),
                None,
                "configuration",
                "JSON object",
            ),
            (
                Some("{}".into()),
                Some(""),
                "grafanaVersion",
                "between 1 and 255",
            ),
        ];
        for (config, version, field, message) in cases {
            let v = validation(
                send(config.clone(), version)
                    .await
                    .unwrap_err()
                    .into_service_error(),
            );
            assert_eq!(
                v.reason(),
                &ValidationExceptionReason::FieldValidationFailed
            );
            let names: Vec<&str> = v.field_list().iter().map(|f| f.name()).collect();
            assert_eq!(names, [field], "{config:?}");
            assert!(v.field_list()[0].message().contains(message), "{v:?}");
        }
        let v = validation(
            send(Some("{}".into()), Some("9".repeat(256).as_str()))
                .await
                .unwrap_err()
                .into_service_error(),
        );
        assert_eq!(v.field_list()[0].name(), "grafanaVersion");
        // A member of the wrong JSON type cannot be parsed.
        let r = raw_aws(
            &emu,
            "PUT",
            &format!("/workspaces/{WS}/configuration"),
            r#"{"configuration": {"plugins": {}}}"#,
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["reason"], "CANNOT_PARSE");
        // Validation comes before the lookup: a bad request to a missing workspace is a 400.
        let r = raw_aws(
            &emu,
            "PUT",
            &format!("/workspaces/{WS_MISSING}/configuration"),
            "{}",
        )
        .await;
        assert_eq!(r.status, 400);
        let r = raw_aws(
            &emu,
            "PUT",
            "/workspaces/g-XYZ/configuration",
            r#"{"configuration": "{}"}"#,
        )
        .await;
        assert_eq!(r.json()["fieldList"][0]["name"], "workspaceId");
    })
    .await
}

#[tokio::test]
async fn update_configuration_needs_an_active_existing_workspace() {
    bounded(async {
        let seed =
            standard_seed().with_workspace(WorkspaceSeed::new(WS2).with_status("VERSION_UPDATING"));
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        let err = upgrade(&grafana, WS_MISSING, "12.4").await.unwrap_err();
        let UpdateWorkspaceConfigurationError::ResourceNotFoundException(nf) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (nf.resource_id(), nf.resource_type()),
            (WS_MISSING, "WORKSPACE")
        );
        let err = upgrade(&grafana, WS2, "12.4").await.unwrap_err();
        let UpdateWorkspaceConfigurationError::ConflictException(c) = err else {
            panic!("{err:?}")
        };
        assert_eq!((c.resource_id(), c.resource_type()), (WS2, "WORKSPACE"));
        // The version is checked before the status.
        let err = upgrade(&grafana, WS2, "11.0").await.unwrap_err();
        assert!(err.is_validation_exception(), "{err:?}");
    })
    .await
}

// ---- what becomes of API keys ---------------------------------------------------------------------

#[tokio::test]
async fn the_default_behaviour_is_migrate() {
    bounded(async {
        let emu = start(standard_seed()).await;
        assert_eq!(emu.api_key_upgrade(), ApiKeyUpgrade::Migrate);
        assert_eq!(emu.state().api_keys_at_upgrade, ApiKeyUpgrade::Migrate);
        let r = raw(&emu, "GET", "/_emulator/state", &[], "").await;
        assert_eq!(r.json()["apiKeysAtUpgrade"], "migrate");
    })
    .await
}

#[tokio::test]
async fn after_an_invalidate_upgrade_the_keys_stop_working_and_vanish() {
    bounded(async {
        let emu = Emulator::start(
            EmulatorConfig::new()
                .with_seed(standard_seed())
                .with_api_key_upgrade(ApiKeyUpgrade::Invalidate),
        )
        .await
        .unwrap();
        let grafana = client(&emu).await;
        let key = api_key(&emu, WS, "legacy").key;
        assert_eq!(org_status(&emu, WS, &key).await, 200, "usable before");

        upgrade(&grafana, WS, "12.4").await.unwrap();

        assert_eq!(org_status(&emu, WS, &key).await, 401, "refused after");
        assert_eq!(
            org_status(&emu, WS, SEEDED_KEY).await,
            200,
            "tokens keep working"
        );
        let state = emu.state();
        let ws = state.workspace(WS).unwrap();
        assert!(ws.api_keys.is_empty());
        assert!(!ws.has_key(&key));
        let names: Vec<String> = grafana
            .list_workspace_service_accounts()
            .workspace_id(WS)
            .send()
            .await
            .unwrap()
            .service_accounts()
            .iter()
            .map(|sa| sa.name().to_string())
            .collect();
        assert_eq!(
            names,
            ["rotator", "viewer"],
            "no service account made of it"
        );
        // API-key calls stay refused on 12, as on any 12+ workspace.
        let err = grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("legacy")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let DeleteWorkspaceApiKeyError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert!(v.message().starts_with("API keys have been removed"));
        // Its name is free again.
        grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("legacy")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn after_a_migrate_upgrade_each_key_is_a_service_account_token() {
    bounded(async {
        let seed = standard_seed()
            .with_workspace(WorkspaceSeed::new(WS).with_api_key(ApiKeySeed::new(
                "reader",
                SeedRole::Viewer,
                7200,
            )))
            .with_api_key_upgrade(ApiKeyUpgrade::Migrate);
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        let legacy = api_key(&emu, WS, "legacy");
        let reader = api_key(&emu, WS, "reader");
        assert_eq!(
            org_status(&emu, WS, &legacy.key).await,
            200,
            "usable before"
        );

        upgrade(&grafana, WS, "13.0").await.unwrap();

        // The same secrets still open the workspace's Grafana.
        assert_eq!(org_status(&emu, WS, &legacy.key).await, 200);
        assert_eq!(org_status(&emu, WS, &reader.key).await, 200);
        assert!(emu.state().workspace(WS).unwrap().api_keys.is_empty());

        // ListWorkspaceServiceAccounts shows one service account per key, named as Grafana's
        // migration names it, with the key's role.
        let accounts = grafana
            .list_workspace_service_accounts()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        let rows: Vec<(&str, &str, &Role, &str)> = accounts
            .service_accounts()
            .iter()
            .map(|sa| (sa.id(), sa.name(), sa.grafana_role(), sa.is_disabled()))
            .collect();
        assert_eq!(
            rows,
            [
                ("2", "rotator", &Role::Admin, "false"),
                ("3", "viewer", &Role::Viewer, "false"),
                ("4", "sa-autogen-legacy", &Role::Editor, "false"),
                ("5", "sa-autogen-reader", &Role::Viewer, "false"),
            ]
        );
        // Each holds one token: the key itself, with its ID, name, creation and expiry.
        for (sa, key) in [("4", &legacy), ("5", &reader)] {
            let out = grafana
                .list_workspace_service_account_tokens()
                .workspace_id(WS)
                .service_account_id(sa)
                .send()
                .await
                .unwrap();
            let [token] = out.service_account_tokens() else {
                panic!("{out:?}")
            };
            assert_eq!(token.id(), key.id);
            assert_eq!(token.name(), key.key_name);
            assert_eq!(token.created_at().secs(), key.created_at);
            assert_eq!(token.expires_at().secs(), key.expires_at);
            let held = emu
                .state()
                .workspace(WS)
                .unwrap()
                .service_account(sa)
                .unwrap()
                .tokens[0]
                .clone();
            assert_eq!(held.key, key.key);
        }
        // The key's use before the upgrade is its token's last use.
        assert!(emu
            .state()
            .workspace(WS)
            .unwrap()
            .service_account("4")
            .unwrap()
            .tokens[0]
            .last_used_at
            .is_some());

        // From now on it is a token like any other: deleting it closes the door.
        grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("4")
            .token_id(legacy.id.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(org_status(&emu, WS, &legacy.key).await, 401);
        // And API-key calls are refused, as on any 12+ workspace.
        let err = grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("reader")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception(), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn an_expired_key_migrates_and_stays_expired() {
    bounded(async {
        let seed = standard_seed().with_workspace(
            WorkspaceSeed::new(WS2).with_api_key(ApiKeySeed::new("gone", SeedRole::Admin, -60)),
        );
        let emu = start(seed).await;
        let key = api_key(&emu, WS2, "gone");
        assert_eq!(org_status(&emu, WS2, &key.key).await, 401);
        let report = emu.upgrade_workspace(WS2, "12.4").unwrap();
        assert_eq!(report.migrated_api_keys.len(), 1);
        let state = emu.state();
        let sa = state
            .workspace(WS2)
            .unwrap()
            .service_account_by_name("sa-autogen-gone")
            .unwrap();
        assert_eq!(sa.tokens[0].expires_at, Some(key.expires_at));
        assert_eq!(org_status(&emu, WS2, &key.key).await, 401);
    })
    .await
}

#[tokio::test]
async fn an_upgrade_that_keeps_api_keys_leaves_them_alone() {
    bounded(async {
        let seed = standard_seed()
            .with_workspace(WorkspaceSeed::new(WS).with_grafana_version("9.4"))
            .with_api_key_upgrade(ApiKeyUpgrade::Invalidate);
        let emu = start(seed).await;
        let grafana = client(&emu).await;
        let key = api_key(&emu, WS, "legacy");
        upgrade(&grafana, WS, "10.4").await.unwrap();
        assert_eq!(api_key(&emu, WS, "legacy"), key);
        assert_eq!(org_status(&emu, WS, &key.key).await, 200);
        grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("legacy")
            .send()
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn upgrade_workspace_reports_what_became_of_the_keys() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let key = api_key(&emu, WS, "legacy");
        emu.set_api_key_upgrade(ApiKeyUpgrade::Invalidate);
        assert_eq!(emu.api_key_upgrade(), ApiKeyUpgrade::Invalidate);
        let report = emu.upgrade_workspace(WS8, "12.4").unwrap();
        assert_eq!(
            (report.from_version.as_str(), report.to_version.as_str()),
            ("8.4", "12.4")
        );
        assert_eq!(report.api_keys_at_upgrade, ApiKeyUpgrade::Invalidate);
        assert_eq!(report.invalidated_api_keys, ["old-key"]);

        emu.set_api_key_upgrade(ApiKeyUpgrade::Migrate);
        let report = emu.upgrade_workspace(WS, "12.4").unwrap();
        assert!(report.invalidated_api_keys.is_empty());
        assert_eq!(
            report.migrated_api_keys,
            [amg_emulator::MigratedApiKey {
                key_name: "legacy".into(),
                service_account_id: "4".into(),
                service_account_name: "sa-autogen-legacy".into(),
                token_id: key.id.clone(),
            }]
        );
        assert_eq!(org_status(&emu, WS, &key.key).await, 200);
        // The same rules as the operation; no AWS call is logged.
        let again = emu.upgrade_workspace(WS, "12.4").unwrap();
        assert_eq!(again.from_version, again.to_version);
        let err = emu.upgrade_workspace(WS, "10.4").unwrap_err();
        assert!(err.starts_with("ValidationException: "), "{err}");
        let err = emu.upgrade_workspace(WS_MISSING, "12.4").unwrap_err();
        assert!(err.starts_with("ResourceNotFoundException: "), "{err}");
        assert!(emu.calls().is_empty());
    })
    .await
}

#[tokio::test]
async fn the_test_routes_choose_the_behaviour_and_upgrade() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let key = api_key(&emu, WS, "legacy");
        let r = raw(
            &emu,
            "POST",
            "/_emulator/seed",
            &[],
            r#"{"apiKeysAtUpgrade": "invalidate"}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(emu.api_key_upgrade(), ApiKeyUpgrade::Invalidate);
        let bad = raw(
            &emu,
            "POST",
            "/_emulator/seed",
            &[],
            r#"{"apiKeysAtUpgrade": "keep"}"#,
        )
        .await;
        assert_eq!(bad.status, 400);

        let path = format!("/_emulator/workspaces/{WS}/upgrade");
        let r = raw(&emu, "POST", &path, &[], r#"{"grafanaVersion": "12.4"}"#).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({
                "workspaceId": WS,
                "fromVersion": "10.4",
                "toVersion": "12.4",
                "apiKeysAtUpgrade": "invalidate",
                "invalidatedApiKeys": ["legacy"],
                "migratedApiKeys": [],
            })
        );
        assert_eq!(org_status(&emu, WS, &key.key).await, 401);
        let r = raw(&emu, "POST", &path, &[], r#"{"grafanaVersion": "9.4"}"#).await;
        assert_eq!(r.status, 400);
        assert!(r.json()["message"].as_str().unwrap().contains("downgraded"));
        let r = raw(&emu, "POST", &path, &[], r#"{"version": "13.0"}"#).await;
        assert_eq!(r.status, 400);
        let missing = format!("/_emulator/workspaces/{WS_MISSING}/upgrade");
        let r = raw(&emu, "POST", &missing, &[], r#"{"grafanaVersion": "13.0"}"#).await;
        assert_eq!(r.status, 404);
    })
    .await
}

#[tokio::test]
async fn throttling_internal_and_access_errors_reach_the_sdk_typed() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let faults = |op: &str, error: &str| amg_emulator::Faults {
            fail_nth: vec![amg_emulator::FailRule::new(op, 1, error)],
            retry_after_seconds: 3,
            ..amg_emulator::Faults::default()
        };
        emu.set_faults(faults(
            "UpdateWorkspaceConfiguration",
            "ThrottlingException",
        ));
        match upgrade(&grafana, WS, "12.4").await.unwrap_err() {
            UpdateWorkspaceConfigurationError::ThrottlingException(t) => {
                assert_eq!(t.retry_after_seconds(), Some(3));
                assert_eq!(t.service_code(), Some("grafana"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(emu.state().workspace(WS).unwrap().grafana_version, "10.4");
        emu.set_faults(faults(
            "UpdateWorkspaceConfiguration",
            "InternalServerException",
        ));
        match upgrade(&grafana, WS, "12.4").await.unwrap_err() {
            UpdateWorkspaceConfigurationError::InternalServerException(e) => {
                assert_eq!(e.retry_after_seconds(), Some(3))
            }
            other => panic!("{other:?}"),
        }
        emu.set_faults(faults(
            "UpdateWorkspaceConfiguration",
            "AccessDeniedException",
        ));
        let err = upgrade(&grafana, WS, "12.4").await.unwrap_err();
        assert!(err.is_access_denied_exception(), "{err:?}");
        for (error, check) in [
            (
                "ThrottlingException",
                ListVersionsError::is_throttling_exception as fn(&ListVersionsError) -> bool,
            ),
            (
                "InternalServerException",
                ListVersionsError::is_internal_server_exception,
            ),
            (
                "AccessDeniedException",
                ListVersionsError::is_access_denied_exception,
            ),
        ] {
            emu.set_faults(faults("ListVersions", error));
            let err = grafana
                .list_versions()
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert!(check(&err), "{error}: {err:?}");
        }
        // Without a signature, AccessDenied from the emulator itself.
        emu.set_faults(amg_emulator::Faults::default());
        let r = raw(&emu, "GET", "/versions", &[], "").await;
        assert_eq!(r.status, 403);
        let r = raw(
            &emu,
            "PUT",
            &format!("/workspaces/{WS}/configuration"),
            &[],
            r#"{"configuration": "{}"}"#,
        )
        .await;
        assert_eq!(r.status, 403);
    })
    .await
}
