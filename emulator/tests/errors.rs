//! Conformance: every modelled error reaches the SDK as its typed variant with its members
//! (reason, fieldList, resourceId/resourceType, serviceCode/quotaCode, retryAfterSeconds from the
//! `Retry-After` header), and the raw envelope is exact.

mod common;

use amg_emulator::{FailRule, Faults};
use aws_sdk_grafana::error::ProvideErrorMetadata;
use aws_sdk_grafana::operation::create_workspace_service_account::CreateWorkspaceServiceAccountError;
use aws_sdk_grafana::operation::create_workspace_service_account_token::CreateWorkspaceServiceAccountTokenError;
use aws_sdk_grafana::operation::delete_workspace_service_account_token::DeleteWorkspaceServiceAccountTokenError;
use aws_sdk_grafana::operation::describe_workspace::DescribeWorkspaceError;
use aws_sdk_grafana::operation::list_workspace_service_accounts::ListWorkspaceServiceAccountsError;
use aws_sdk_grafana::operation::list_workspaces::ListWorkspacesError;
use aws_sdk_grafana::types::{Role, ValidationExceptionReason};
use common::*;

fn fail_first(operation: &str, error: &str) -> Faults {
    Faults {
        fail_nth: vec![FailRule::new(operation, 1, error)],
        retry_after_seconds: 7,
        ..Faults::default()
    }
}

#[tokio::test]
async fn field_validation_lists_every_bad_field() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let err = client(&emu)
            .await
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("x".repeat(129))
            .seconds_to_live(2_592_001)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountTokenError::ValidationException(v) = err else {
            panic!("expected ValidationException, got {err:?}");
        };
        assert_eq!(
            v.reason(),
            &ValidationExceptionReason::FieldValidationFailed
        );
        let names: Vec<&str> = v.field_list().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["name", "secondsToLive"]);
        assert!(v.field_list()[1].message().contains("2592000"));
        assert!(v.message().starts_with("2 validation errors detected"));
    })
    .await
}

#[tokio::test]
async fn bounds_of_names_ttl_and_max_results_are_exact() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let token = |name: String, ttl: i32| {
            grafana
                .create_workspace_service_account_token()
                .workspace_id(WS)
                .service_account_id("3")
                .name(name)
                .seconds_to_live(ttl)
                .send()
        };
        assert!(token("a".repeat(128), 2_592_000).await.is_ok());
        assert!(token("b".into(), 1).await.is_ok());
        for (name, ttl) in [(String::new(), 60), ("c".into(), 0), ("d".into(), -5)] {
            let err = token(name, ttl).await.unwrap_err().into_service_error();
            assert!(err.is_validation_exception(), "{err:?}");
        }
        let key = |name: String| {
            grafana
                .create_workspace_api_key()
                .workspace_id(WS)
                .key_name(name)
                .key_role("ADMIN")
                .seconds_to_live(60)
                .send()
        };
        assert!(key("k".repeat(100)).await.is_ok());
        let err = key("k".repeat(101)).await.unwrap_err().into_service_error();
        assert!(err.is_validation_exception(), "{err:?}");
        let sa = |name: String| {
            grafana
                .create_workspace_service_account()
                .workspace_id(WS)
                .name(name)
                .grafana_role(Role::Viewer)
                .send()
        };
        assert!(sa("s".repeat(128)).await.is_ok());
        assert!(sa("s".repeat(129))
            .await
            .unwrap_err()
            .into_service_error()
            .is_validation_exception());
        for max in [0, 101] {
            let err = grafana
                .list_workspace_service_accounts()
                .workspace_id(WS)
                .max_results(max)
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            let ListWorkspaceServiceAccountsError::ValidationException(v) = err else {
                panic!("{err:?}")
            };
            assert_eq!(v.field_list()[0].name(), "maxResults");
        }
        assert!(grafana
            .list_workspaces()
            .max_results(100)
            .send()
            .await
            .is_ok());
    })
    .await
}

#[tokio::test]
async fn enums_are_checked() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let err = grafana
            .create_workspace_service_account()
            .workspace_id(WS)
            .name("x")
            .grafana_role(Role::from("OWNER"))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let CreateWorkspaceServiceAccountError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(v.field_list()[0].name(), "grafanaRole");
        assert!(v.field_list()[0]
            .message()
            .contains("ADMIN, EDITOR, VIEWER"));
        let err = grafana
            .create_workspace_api_key()
            .workspace_id(WS)
            .key_name("x")
            .key_role("SUPERUSER")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception());
        let err = grafana
            .list_permissions()
            .workspace_id(WS)
            .user_type(aws_sdk_grafana::types::UserType::from("ROBOT"))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception(), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn workspace_id_pattern_is_enforced() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let err = client(&emu)
            .await
            .describe_workspace()
            .workspace_id("g-NOTHEX0000")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let DescribeWorkspaceError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            v.reason(),
            &ValidationExceptionReason::FieldValidationFailed
        );
        assert_eq!(v.field_list()[0].name(), "workspaceId");
    })
    .await
}

#[tokio::test]
async fn malformed_json_cannot_parse_and_missing_members_are_listed() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let path = format!("/workspaces/{WS}/serviceaccounts/2/tokens");
        let r = raw_aws(&emu, "POST", &path, r#"{"name": "x", "secondsToLive": "#).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.header("x-amzn-errortype"), Some("ValidationException"));
        assert_eq!(r.json()["reason"], "CANNOT_PARSE");
        let r = raw_aws(&emu, "POST", &path, r#"{"name": 12, "secondsToLive": 60}"#).await;
        assert_eq!(r.json()["reason"], "CANNOT_PARSE");
        let r = raw_aws(&emu, "POST", &path, "{}").await;
        assert_eq!(r.status, 400);
        let body = r.json();
        assert_eq!(body["reason"], "FIELD_VALIDATION_FAILED");
        assert_eq!(body["fieldList"][0]["name"], "name");
        assert_eq!(body["fieldList"][1]["name"], "secondsToLive");
        assert_eq!(body["fieldList"][1]["message"], "Member must not be null");
        let r = raw_aws(&emu, "PATCH", &format!("/workspaces/{WS}/permissions"), r#"{"updateInstructionBatch": [{"action": "ADD", "role": "ADMIN", "users": [{"id": "u"}]}]}"#).await;
        assert_eq!(r.json()["fieldList"][0]["name"], "updateInstructionBatch.0.users.0.type");
    })
    .await
}

#[tokio::test]
async fn unknown_routes_are_unknown_operations() {
    bounded(async {
        let emu = start(standard_seed()).await;
        for (method, path) in [
            ("GET", "/nothing"),
            ("PUT", "/workspaces"),
            ("GET", "/workspaces/g-0123456789/apikeys"),
        ] {
            let r = raw_aws(&emu, method, path, "").await;
            assert_eq!(r.status, 400, "{method} {path}");
            assert_eq!(r.header("x-amzn-errortype"), Some("ValidationException"));
            assert_eq!(r.json()["reason"], "UNKNOWN_OPERATION");
        }
        assert_eq!(emu.calls().last().unwrap().operation, "UnknownOperation");
    })
    .await
}

#[tokio::test]
async fn not_found_names_the_missing_resource() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let err = grafana
            .describe_workspace()
            .workspace_id(WS_MISSING)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let DescribeWorkspaceError::ResourceNotFoundException(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (e.resource_id(), e.resource_type()),
            (WS_MISSING, "WORKSPACE")
        );

        let err = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("99")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ResourceNotFoundException"));
        assert!(err.is_resource_not_found_exception());

        let err = grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .token_id("77")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let DeleteWorkspaceServiceAccountTokenError::ResourceNotFoundException(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (e.resource_id(), e.resource_type()),
            ("77", "SERVICE_ACCOUNT_TOKEN")
        );

        // A token is found only under its own service account.
        let err = grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .token_id("1")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception());

        let err = grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("nope")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception());
        let err = grafana
            .delete_workspace_service_account()
            .workspace_id(WS)
            .service_account_id("42")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception());
        let err = grafana
            .update_permissions()
            .workspace_id(WS_MISSING)
            .set_update_instruction_batch(Some(vec![]))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception());
    })
    .await
}

#[tokio::test]
async fn throttling_carries_retry_after_and_service_code() {
    bounded(async {
        let emu = start(standard_seed()).await;
        emu.set_faults(fail_first("ListWorkspaces", "ThrottlingException"));
        let err = client(&emu)
            .await
            .list_workspaces()
            .send()
            .await
            .unwrap_err();
        let raw = err.raw_response().expect("a response");
        assert_eq!(raw.status().as_u16(), 429);
        assert_eq!(raw.headers().get("retry-after"), Some("7"));
        let ListWorkspacesError::ThrottlingException(t) = err.into_service_error() else {
            panic!()
        };
        assert_eq!(t.retry_after_seconds(), Some(7));
        assert_eq!(t.service_code(), Some("grafana"));
        assert!(t.message().starts_with("Injected fault"));
    })
    .await
}

#[tokio::test]
async fn internal_server_error_carries_retry_after() {
    bounded(async {
        let emu = start(standard_seed()).await;
        emu.set_faults(fail_first("DescribeWorkspace", "InternalServerException"));
        let err = client(&emu)
            .await
            .describe_workspace()
            .workspace_id(WS)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
        let DescribeWorkspaceError::InternalServerException(e) = err.into_service_error() else {
            panic!()
        };
        assert_eq!(e.retry_after_seconds(), Some(7));
    })
    .await
}

#[tokio::test]
async fn access_denied_by_fault_and_without_authorization_header() {
    bounded(async {
        let emu = start(standard_seed()).await;
        emu.set_faults(fail_first("ListWorkspaces", "AccessDeniedException"));
        let err = client(&emu)
            .await
            .list_workspaces()
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
        assert!(err.into_service_error().is_access_denied_exception());

        let r = raw(&emu, "GET", "/workspaces", &[], "").await;
        assert_eq!(r.status, 403);
        assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
        assert_eq!(r.json()["message"], "Missing Authentication Token");
    })
    .await
}

#[tokio::test]
async fn the_sdk_always_sends_an_authorization_header() {
    bounded(async {
        // The emulator refuses unsigned calls, so twelve successes prove the SDK signs each one.
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        grafana.list_workspaces().send().await.unwrap();
        grafana
            .list_permissions()
            .workspace_id(WS)
            .send()
            .await
            .unwrap();
        assert!(emu.calls().iter().all(|c| c.status == 200));
    })
    .await
}

#[tokio::test]
async fn an_empty_path_label_fails_in_the_sdk_before_sending() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let err = client(&emu)
            .await
            .delete_workspace_service_account()
            .workspace_id(WS)
            .service_account_id("")
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                aws_sdk_grafana::error::SdkError::ConstructionFailure(_)
            ),
            "{err:?}"
        );
        assert!(emu.calls().is_empty());
    })
    .await
}

/// Calls one operation with valid input; the error's Debug form on failure.
async fn call(grafana: &aws_sdk_grafana::Client, op: &str) -> Result<(), (String, Option<String>)> {
    fn fail<E: ProvideErrorMetadata + std::fmt::Debug>(e: E) -> (String, Option<String>) {
        (variant(&e), e.code().map(str::to_string))
    }
    macro_rules! run {
        ($call:expr) => {
            $call
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(e.into_service_error()))
        };
    }
    match op {
        "ListWorkspaces" => run!(grafana.list_workspaces()),
        "DescribeWorkspace" => run!(grafana.describe_workspace().workspace_id(WS)),
        "ListWorkspaceServiceAccounts" => {
            run!(grafana.list_workspace_service_accounts().workspace_id(WS))
        }
        "CreateWorkspaceServiceAccount" => run!(grafana
            .create_workspace_service_account()
            .workspace_id(WS)
            .name("new-sa")
            .grafana_role(Role::Viewer)),
        "DeleteWorkspaceServiceAccount" => run!(grafana
            .delete_workspace_service_account()
            .workspace_id(WS)
            .service_account_id("3")),
        "ListWorkspaceServiceAccountTokens" => run!(grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id("2")),
        "CreateWorkspaceServiceAccountToken" => run!(grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .name("new-token")
            .seconds_to_live(60)),
        "DeleteWorkspaceServiceAccountToken" => run!(grafana
            .delete_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("2")
            .token_id("2")),
        "CreateWorkspaceApiKey" => run!(grafana
            .create_workspace_api_key()
            .workspace_id(WS)
            .key_name("new-key")
            .key_role("VIEWER")
            .seconds_to_live(60)),
        "DeleteWorkspaceApiKey" => run!(grafana
            .delete_workspace_api_key()
            .workspace_id(WS)
            .key_name("legacy")),
        "ListPermissions" => run!(grafana.list_permissions().workspace_id(WS)),
        "UpdatePermissions" => run!(grafana
            .update_permissions()
            .workspace_id(WS)
            .set_update_instruction_batch(Some(vec![]))),
        "ListVersions" => run!(grafana.list_versions().workspace_id(WS)),
        "UpdateWorkspaceConfiguration" => run!(grafana
            .update_workspace_configuration()
            .workspace_id(WS)
            .configuration("{}")),
        other => panic!("no such operation {other}"),
    }
}

/// The modelled errors of each operation (botocore service-2.json, grafana 2020-08-18; ListVersions
/// and UpdateWorkspaceConfiguration as in the Smithy model aws-sdk-rust `aws-models/grafana.json`).
const MODELLED: &[(&str, &[&str])] = &[
    (
        "ListWorkspaces",
        &[
            "AccessDeniedException",
            "InternalServerException",
            "ThrottlingException",
        ],
    ),
    (
        "DescribeWorkspace",
        &[
            "AccessDeniedException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "ListWorkspaceServiceAccounts",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "CreateWorkspaceServiceAccount",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ServiceQuotaExceededException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "DeleteWorkspaceServiceAccount",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "ListWorkspaceServiceAccountTokens",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "CreateWorkspaceServiceAccountToken",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ServiceQuotaExceededException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "DeleteWorkspaceServiceAccountToken",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "CreateWorkspaceApiKey",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ServiceQuotaExceededException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "DeleteWorkspaceApiKey",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "ListPermissions",
        &[
            "AccessDeniedException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "UpdatePermissions",
        &[
            "AccessDeniedException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "ListVersions",
        &[
            "AccessDeniedException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
    (
        "UpdateWorkspaceConfiguration",
        &[
            "AccessDeniedException",
            "ConflictException",
            "InternalServerException",
            "ResourceNotFoundException",
            "ThrottlingException",
            "ValidationException",
        ],
    ),
];

#[tokio::test]
async fn every_modelled_error_of_every_operation_parses_to_its_typed_variant() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        let mut checked = 0;
        for (op, errors) in MODELLED {
            for error in *errors {
                emu.set_faults(fail_first(op, error));
                let got = call(&grafana, op)
                    .await
                    .expect_err("the injected fault answers");
                assert_eq!(
                    got,
                    (error.to_string(), Some(error.to_string())),
                    "{op} / {error}"
                );
                checked += 1;
            }
            // With the rule spent, the same call succeeds: the emulator itself accepts it.
            call(&grafana, op)
                .await
                .unwrap_or_else(|e| panic!("{op} after the fault: {e:?}"));
        }
        assert_eq!(checked, 80);
    })
    .await
}

#[tokio::test]
async fn an_error_the_operation_does_not_model_is_unhandled_in_the_sdk() {
    bounded(async {
        let emu = start(standard_seed()).await;
        emu.set_faults(fail_first(
            "ListWorkspaces",
            "ServiceQuotaExceededException",
        ));
        let got = call(&client(&emu).await, "ListWorkspaces")
            .await
            .unwrap_err();
        assert_eq!(
            got,
            (
                "Unhandled".to_string(),
                Some("ServiceQuotaExceededException".to_string())
            )
        );
    })
    .await
}
