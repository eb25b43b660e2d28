//! The Amazon Managed Grafana control plane, in the rotator's words.
//!
//! `trait Grafana` is what the pass and the executor call; `aws.rs` implements it on
//! aws-sdk-grafana. Every list returns every page. Implementations never log a key.

use std::time::Duration;

use async_trait::async_trait;

use crate::aws::error::ApiError;
use crate::model::{
    Binding, NewApiKey, NewToken, PermissionChange, PermissionError, Role, ServiceAccount, Token,
    Workspace,
};

#[async_trait]
pub trait Grafana: Send + Sync {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError>;
    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError>;
    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError>;
    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError>;
    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError>;
    /// Creates a token. AMG returns no timestamps with it, so they are estimated from `now`;
    /// the executor then takes AMG's own from a listing.
    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewToken, ApiError>;
    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError>;
    /// Creates a legacy API key (Grafana 9 and 10; removed in 12); its name is unique in the
    /// workspace.
    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewApiKey, ApiError>;
    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError>;
    /// Every user and group binding of the workspace.
    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError>;
    /// Applies at most 20 changes; returns the entries AMG refused (the others applied).
    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError>;
}
