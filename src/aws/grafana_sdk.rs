//! `Grafana` on aws-sdk-grafana: thin translations between SDK shapes and domain types.
//!
//! Lists paginate by hand, page by page, so that each page is one retried, measured call.
//! Creates go through `Caller::once`: AMG takes no idempotency token, so an ambiguous
//! failure is the executor's to resolve, never blindly repeated here.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_grafana::Client;
use chrono::{DateTime, Utc};

use super::grafana::Grafana;
use crate::aws::caller::Caller;
use crate::aws::error::ApiError;
use crate::model::{
    Binding, Key, NewApiKey, NewToken, PermissionChange, PermissionError, PrincipalType, Role,
    ServiceAccount, Token, Workspace,
};

pub struct AwsGrafana {
    client: Client,
    caller: Caller,
}

impl AwsGrafana {
    pub fn new(client: Client, caller: Caller) -> Self {
        AwsGrafana { client, caller }
    }

    /// Follows `nextToken` to the last page; each page is one retried, measured call.
    async fn all_pages<T, F, Fut>(
        &self,
        operation: &'static str,
        mut page: F,
    ) -> Result<Vec<T>, ApiError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, Option<String>), ApiError>>,
    {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let (items, token) = self
                .caller
                .idempotent(operation, || page(next.clone()))
                .await?;
            out.extend(items);
            match token {
                // A service that hands back the token it was given would loop forever.
                Some(t) if next.as_deref() == Some(t.as_str()) => {
                    return Err(ApiError::Other(format!(
                        "{operation}: pagination did not advance"
                    )))
                }
                Some(t) => next = Some(t),
                None => return Ok(out),
            }
        }
    }
}

fn time(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// A timestamp AMG may leave out: aws-sdk-grafana hands a missing required timestamp over as
/// the epoch (aws-facts.md), which means "unknown", not "long ago".
fn known(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    (t.secs() > 0).then(|| time(t))
}

fn sdk_role(role: Role) -> aws_sdk_grafana::types::Role {
    match role {
        Role::Admin => aws_sdk_grafana::types::Role::Admin,
        Role::Editor => aws_sdk_grafana::types::Role::Editor,
        Role::Viewer => aws_sdk_grafana::types::Role::Viewer,
    }
}

fn principal(t: &aws_sdk_grafana::types::UserType) -> Option<PrincipalType> {
    match t {
        aws_sdk_grafana::types::UserType::SsoUser => Some(PrincipalType::SsoUser),
        aws_sdk_grafana::types::UserType::SsoGroup => Some(PrincipalType::SsoGroup),
        _ => None,
    }
}

fn sdk_user(b: &Binding) -> Result<aws_sdk_grafana::types::User, ApiError> {
    let kind = match b.principal_type {
        PrincipalType::SsoUser => aws_sdk_grafana::types::UserType::SsoUser,
        PrincipalType::SsoGroup => aws_sdk_grafana::types::UserType::SsoGroup,
    };
    aws_sdk_grafana::types::User::builder()
        .id(&b.principal_id)
        .r#type(kind)
        .build()
        .map_err(|e| ApiError::Invalid(e.to_string()))
}

fn tags(
    t: Option<&std::collections::HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    t.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Grafana for AwsGrafana {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError> {
        self.all_pages("ListWorkspaces", |next| async move {
            let page = self
                .client
                .list_workspaces()
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(ApiError::from_sdk)?;
            let items = page
                .workspaces()
                .iter()
                .map(|w| Workspace {
                    id: w.id().to_owned(),
                    name: w.name().unwrap_or_default().to_owned(),
                    endpoint: w.endpoint().to_owned(),
                    grafana_version: w.grafana_version().to_owned(),
                    status: w.status().as_str().to_owned(),
                    tags: tags(w.tags()),
                })
                .collect();
            Ok((items, page.next_token().map(str::to_owned)))
        })
        .await
    }

    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError> {
        let out = self
            .caller
            .idempotent("DescribeWorkspace", || async {
                self.client
                    .describe_workspace()
                    .workspace_id(workspace_id)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        let w = out
            .workspace()
            .ok_or_else(|| ApiError::Other("DescribeWorkspace returned no workspace".into()))?;
        Ok(Workspace {
            id: w.id().to_owned(),
            name: w.name().unwrap_or_default().to_owned(),
            endpoint: w.endpoint().to_owned(),
            grafana_version: w.grafana_version().to_owned(),
            status: w.status().as_str().to_owned(),
            tags: tags(w.tags()),
        })
    }

    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError> {
        self.all_pages("ListWorkspaceServiceAccounts", |next| async move {
            let page = self
                .client
                .list_workspace_service_accounts()
                .workspace_id(workspace_id)
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(ApiError::from_sdk)?;
            let items = page
                .service_accounts()
                .iter()
                .map(|sa| ServiceAccount {
                    id: sa.id().to_owned(),
                    name: sa.name().to_owned(),
                    role: Role::parse(sa.grafana_role().as_str()),
                    // AMG models isDisabled as a string.
                    is_disabled: sa.is_disabled().eq_ignore_ascii_case("true"),
                })
                .collect();
            Ok((items, page.next_token().map(str::to_owned)))
        })
        .await
    }

    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError> {
        let out = self
            .caller
            .once("CreateWorkspaceServiceAccount", || async {
                self.client
                    .create_workspace_service_account()
                    .workspace_id(workspace_id)
                    .name(name)
                    .grafana_role(sdk_role(role))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(ServiceAccount {
            id: out.id().to_owned(),
            name: out.name().to_owned(),
            role: Role::parse(out.grafana_role().as_str()),
            is_disabled: false,
        })
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError> {
        self.all_pages("ListWorkspaceServiceAccountTokens", |next| async move {
            let page = self
                .client
                .list_workspace_service_account_tokens()
                .workspace_id(workspace_id)
                .service_account_id(service_account_id)
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(ApiError::from_sdk)?;
            let items = page
                .service_account_tokens()
                .iter()
                .map(|t| Token {
                    id: t.id().to_owned(),
                    name: t.name().to_owned(),
                    created_at: time(t.created_at()),
                    expires_at: known(t.expires_at()),
                    last_used_at: t.last_used_at().map(time),
                })
                .collect();
            Ok((items, page.next_token().map(str::to_owned)))
        })
        .await
    }

    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewToken, ApiError> {
        let seconds = i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX);
        let out = self
            .caller
            .once("CreateWorkspaceServiceAccountToken", || async {
                self.client
                    .create_workspace_service_account_token()
                    .workspace_id(workspace_id)
                    .service_account_id(service_account_id)
                    .name(name)
                    .seconds_to_live(seconds)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        let t = out.service_account_token().ok_or_else(|| {
            ApiError::Other("CreateWorkspaceServiceAccountToken returned no token".into())
        })?;
        Ok(NewToken {
            id: t.id().to_owned(),
            name: t.name().to_owned(),
            key: Key::new(t.key().to_owned()),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(i64::from(seconds)),
        })
    }

    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.caller
            .idempotent("DeleteWorkspaceServiceAccountToken", || async {
                self.client
                    .delete_workspace_service_account_token()
                    .workspace_id(workspace_id)
                    .service_account_id(service_account_id)
                    .token_id(token_id)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<NewApiKey, ApiError> {
        let seconds = i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX);
        let out = self
            .caller
            .once("CreateWorkspaceApiKey", || async {
                self.client
                    .create_workspace_api_key()
                    .workspace_id(workspace_id)
                    .key_name(name)
                    .key_role(role.as_str())
                    .seconds_to_live(seconds)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(NewApiKey {
            name: out.key_name().to_owned(),
            key: Key::new(out.key().to_owned()),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(i64::from(seconds)),
        })
    }

    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError> {
        self.caller
            .idempotent("DeleteWorkspaceApiKey", || async {
                self.client
                    .delete_workspace_api_key()
                    .workspace_id(workspace_id)
                    .key_name(name)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError> {
        self.all_pages("ListPermissions", |next| async move {
            let page = self
                .client
                .list_permissions()
                .workspace_id(workspace_id)
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(ApiError::from_sdk)?;
            let items = page
                .permissions()
                .iter()
                .filter_map(|p| {
                    let user = p.user()?;
                    Some(Binding {
                        role: Role::parse(p.role().as_str())?,
                        principal_type: principal(user.r#type())?,
                        principal_id: user.id().to_owned(),
                    })
                })
                .collect();
            Ok((items, page.next_token().map(str::to_owned)))
        })
        .await
    }

    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError> {
        // One instruction per binding, so each refused entry maps back to exactly one change.
        let mut batch = Vec::with_capacity(changes.len());
        for (change, b) in changes {
            let action = match change {
                PermissionChange::Add => aws_sdk_grafana::types::UpdateAction::Add,
                PermissionChange::Revoke => aws_sdk_grafana::types::UpdateAction::Revoke,
            };
            batch.push(
                aws_sdk_grafana::types::UpdateInstruction::builder()
                    .action(action)
                    .role(sdk_role(b.role))
                    .users(sdk_user(b)?)
                    .build()
                    .map_err(|e| ApiError::Invalid(e.to_string()))?,
            );
        }
        let out = self
            .caller
            .idempotent("UpdatePermissions", || async {
                self.client
                    .update_permissions()
                    .workspace_id(workspace_id)
                    .set_update_instruction_batch(Some(batch.clone()))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                let cause = e.caused_by();
                let user = cause.and_then(|c| c.users().first());
                PermissionError {
                    code: e.code(),
                    message: e.message().to_owned(),
                    change: cause.map(|c| match c.action() {
                        aws_sdk_grafana::types::UpdateAction::Revoke => PermissionChange::Revoke,
                        _ => PermissionChange::Add,
                    }),
                    binding: cause.zip(user).and_then(|(c, u)| {
                        Some(Binding {
                            role: Role::parse(c.role().as_str())?,
                            principal_type: principal(u.r#type())?,
                            principal_id: u.id().to_owned(),
                        })
                    }),
                }
            })
            .collect())
    }
}
