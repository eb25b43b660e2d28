//! Conformance: the four paginated List operations, driven through the SDK's paginators across
//! many pages (a small default page size), return every item exactly once.

mod common;

use amg_emulator::{Role, Seed, ServiceAccountSeed, TokenSeed, UserType, WorkspaceSeed};
use aws_sdk_grafana::operation::list_workspace_service_account_tokens::ListWorkspaceServiceAccountTokensError;
use aws_sdk_grafana::types::ValidationExceptionReason;
use common::*;
use std::collections::BTreeSet;

fn workspace_id(i: u32) -> String {
    format!("g-{i:010x}")
}

/// 11 workspaces; WS holds 13 service accounts, "many" holds 17 tokens, 9 permissions.
fn big_seed(page: u32) -> Seed {
    let mut seed = Seed::new().with_default_page_size(page);
    for i in 1..=10 {
        seed = seed.with_workspace(WorkspaceSeed::new(&workspace_id(i)));
    }
    let mut ws = WorkspaceSeed::new(WS);
    let mut many = ServiceAccountSeed::new("many", Role::Admin);
    for t in 0..17 {
        many = many.with_token(TokenSeed::new(&format!("tok-{t:02}"), 3600 - t));
    }
    ws = ws.with_service_account(many);
    for s in 0..12 {
        ws = ws.with_service_account(ServiceAccountSeed::new(&format!("sa-{s:02}"), Role::Viewer));
    }
    for p in 0..9 {
        let id = format!("00000000-0000-0000-0000-{p:012}");
        let user_type = if p % 3 == 0 {
            UserType::SsoGroup
        } else {
            UserType::SsoUser
        };
        ws = ws.with_permission(Role::Editor, user_type, &id);
    }
    seed.with_workspace(ws)
}

fn page_count(emu: &amg_emulator::Emulator, operation: &str) -> usize {
    emu.calls()
        .iter()
        .filter(|c| c.operation == operation)
        .count()
}

#[tokio::test]
async fn list_workspaces_paginator_returns_each_once() {
    bounded(async {
        let emu = start(big_seed(3)).await;
        let items: Vec<_> = client(&emu)
            .await
            .list_workspaces()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let ids: Vec<String> = items.iter().map(|w| w.id().to_string()).collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 11);
        assert_eq!(unique.len(), 11);
        assert!(ids.contains(&WS.to_string()));
        assert_eq!(page_count(&emu, "ListWorkspaces"), 4);
    })
    .await
}

#[tokio::test]
async fn list_service_accounts_paginator_returns_each_once() {
    bounded(async {
        let emu = start(big_seed(4)).await;
        let items: Vec<_> = client(&emu)
            .await
            .list_workspace_service_accounts()
            .workspace_id(WS)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let ids: Vec<u32> = items.iter().map(|sa| sa.id().parse().unwrap()).collect();
        assert_eq!(ids, (2..=14).collect::<Vec<u32>>());
        assert_eq!(page_count(&emu, "ListWorkspaceServiceAccounts"), 4);
    })
    .await
}

#[tokio::test]
async fn list_tokens_paginator_returns_each_once() {
    bounded(async {
        let emu = start(big_seed(5)).await;
        let sa = sa_id(&emu, WS, "many");
        let items: Vec<_> = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id(&sa)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let names: Vec<&str> = items.iter().map(|t| t.name()).collect();
        let expected: Vec<String> = (0..17).map(|t| format!("tok-{t:02}")).collect();
        assert_eq!(names, expected);
        assert_eq!(page_count(&emu, "ListWorkspaceServiceAccountTokens"), 4);
    })
    .await
}

#[tokio::test]
async fn list_permissions_paginator_returns_each_once() {
    bounded(async {
        let emu = start(big_seed(2)).await;
        let items: Vec<_> = client(&emu)
            .await
            .list_permissions()
            .workspace_id(WS)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let ids: BTreeSet<String> = items
            .iter()
            .map(|p| p.user().unwrap().id().to_string())
            .collect();
        assert_eq!(items.len(), 9);
        assert_eq!(ids.len(), 9);
        assert_eq!(page_count(&emu, "ListPermissions"), 5);
    })
    .await
}

#[tokio::test]
async fn max_results_overrides_the_default_page_size() {
    bounded(async {
        let emu = start(big_seed(2)).await;
        let sa = sa_id(&emu, WS, "many");
        let pages: Vec<_> = client(&emu)
            .await
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id(&sa)
            .into_paginator()
            .page_size(10)
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let sizes: Vec<usize> = pages
            .iter()
            .map(|p| p.service_account_tokens().len())
            .collect();
        assert_eq!(sizes, [10, 7]);
        assert!(pages[0].next_token().is_some());
        assert!(pages[1].next_token().is_none());
    })
    .await
}

#[tokio::test]
async fn permission_filters_apply_before_paging() {
    bounded(async {
        let emu = start(big_seed(2)).await;
        let grafana = client(&emu).await;
        let groups: Vec<_> = grafana
            .list_permissions()
            .workspace_id(WS)
            .user_type(aws_sdk_grafana::types::UserType::SsoGroup)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        assert_eq!(groups.len(), 3);
        let one = grafana
            .list_permissions()
            .workspace_id(WS)
            .user_id("00000000-0000-0000-0000-000000000001")
            .send()
            .await
            .unwrap();
        assert_eq!(one.permissions().len(), 1);
        let both = grafana
            .list_permissions()
            .workspace_id(WS)
            .user_id("a")
            .group_id("b")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(both.is_validation_exception());
    })
    .await
}

#[tokio::test]
async fn a_garbage_or_foreign_next_token_is_a_validation_error() {
    bounded(async {
        let emu = start(big_seed(3)).await;
        let grafana = client(&emu).await;
        let sa = sa_id(&emu, WS, "many");
        let err = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id(&sa)
            .next_token("not-a-token")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ListWorkspaceServiceAccountTokensError::ValidationException(v) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            v.reason(),
            &ValidationExceptionReason::FieldValidationFailed
        );
        assert_eq!(v.field_list()[0].name(), "nextToken");

        // A token of the workspace list is not a token of the service-account list.
        let first = grafana.list_workspaces().send().await.unwrap();
        let foreign = first.next_token().expect("more than one page").to_string();
        let err = grafana
            .list_workspace_service_accounts()
            .workspace_id(WS)
            .next_token(foreign)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception());
    })
    .await
}

#[tokio::test]
async fn deleting_while_listing_skips_nothing() {
    bounded(async {
        let emu = start(big_seed(5)).await;
        let grafana = client(&emu).await;
        let sa = sa_id(&emu, WS, "many");
        let first = grafana
            .list_workspace_service_account_tokens()
            .workspace_id(WS)
            .service_account_id(&sa)
            .send()
            .await
            .unwrap();
        let mut seen: Vec<String> = first
            .service_account_tokens()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        // Delete every token of the first page, then continue.
        for t in first.service_account_tokens() {
            grafana
                .delete_workspace_service_account_token()
                .workspace_id(WS)
                .service_account_id(&sa)
                .token_id(t.id())
                .send()
                .await
                .unwrap();
        }
        let mut token = first.next_token().map(str::to_string);
        while let Some(next) = token {
            let page = grafana
                .list_workspace_service_account_tokens()
                .workspace_id(WS)
                .service_account_id(&sa)
                .next_token(next)
                .send()
                .await
                .unwrap();
            seen.extend(
                page.service_account_tokens()
                    .iter()
                    .map(|t| t.name().to_string()),
            );
            token = page.next_token().map(str::to_string);
        }
        let expected: Vec<String> = (0..17).map(|t| format!("tok-{t:02}")).collect();
        assert_eq!(seen, expected);
    })
    .await
}
