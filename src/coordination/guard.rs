//! The check before every mutating step: one credential's services, wrapped so that each call
//! that changes something in AMG or Secrets Manager first asks whether this replica still holds
//! the lease of the credential's shard. A call refused here never leaves the process; the
//! executor stops as after any failed step, and the rotation contract (docs/RELIABILITY.md)
//! holds as after a crash there. Reads pass through.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::Coordinator;
use crate::aws::secrets::{FirstVersion, Location};
use crate::aws::{ApiError, Grafana, SecretPage, SecretStore};
use crate::model::{
    Binding, NewApiKey, NewToken, PermissionChange, PermissionError, Role, SecretSpec, SecretState,
    ServiceAccount, Token, Workspace,
};

/// A credential's services behind its shard's lease.
pub struct Guarded<'a, T: ?Sized> {
    inner: &'a T,
    lease: Option<(Arc<Coordinator>, String)>,
}

impl<'a, T: ?Sized> Guarded<'a, T> {
    /// `lease`: the coordinator and the shard; `None` (one replica) passes every call through.
    pub fn new(inner: &'a T, lease: Option<(Arc<Coordinator>, String)>) -> Self {
        Guarded { inner, lease }
    }

    fn check(&self, operation: &str) -> Result<(), ApiError> {
        match &self.lease {
            Some((c, shard)) if !c.holds(shard) => Err(ApiError::Other(format!(
                "{operation} not sent: this replica no longer holds the lease of shard {shard} (it could not renew it); the replica that takes it over finishes this credential"
            ))),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<T: Grafana + ?Sized> Grafana for Guarded<'_, T> {
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, ApiError> {
        self.inner.list_workspaces().await
    }
    async fn describe_workspace(&self, workspace_id: &str) -> Result<Workspace, ApiError> {
        self.inner.describe_workspace(workspace_id).await
    }
    async fn list_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccount>, ApiError> {
        self.inner.list_service_accounts(workspace_id).await
    }
    async fn create_service_account(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
    ) -> Result<ServiceAccount, ApiError> {
        self.check("CreateWorkspaceServiceAccount")?;
        self.inner
            .create_service_account(workspace_id, name, role)
            .await
    }
    async fn list_tokens(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<Vec<Token>, ApiError> {
        self.inner
            .list_tokens(workspace_id, service_account_id)
            .await
    }
    async fn create_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        name: &str,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewToken, ApiError> {
        self.check("CreateWorkspaceServiceAccountToken")?;
        self.inner
            .create_token(workspace_id, service_account_id, name, ttl, now)
            .await
    }
    async fn delete_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> Result<(), ApiError> {
        self.check("DeleteWorkspaceServiceAccountToken")?;
        self.inner
            .delete_token(workspace_id, service_account_id, token_id)
            .await
    }
    async fn create_api_key(
        &self,
        workspace_id: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewApiKey, ApiError> {
        self.check("CreateWorkspaceApiKey")?;
        self.inner
            .create_api_key(workspace_id, name, role, ttl, now)
            .await
    }
    async fn delete_api_key(&self, workspace_id: &str, name: &str) -> Result<(), ApiError> {
        self.check("DeleteWorkspaceApiKey")?;
        self.inner.delete_api_key(workspace_id, name).await
    }
    async fn list_permissions(&self, workspace_id: &str) -> Result<Vec<Binding>, ApiError> {
        self.inner.list_permissions(workspace_id).await
    }
    async fn update_permissions(
        &self,
        workspace_id: &str,
        changes: &[(PermissionChange, Binding)],
    ) -> Result<Vec<PermissionError>, ApiError> {
        self.check("UpdatePermissions")?;
        self.inner.update_permissions(workspace_id, changes).await
    }
}

#[async_trait]
impl<T: SecretStore + ?Sized> SecretStore for Guarded<'_, T> {
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError> {
        self.inner.describe(name).await
    }
    async fn create(
        &self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError> {
        self.check("CreateSecret")?;
        self.inner.create(spec, records, first).await
    }
    async fn location(&self) -> Option<Location> {
        self.inner.location().await
    }
    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError> {
        self.check("PutSecretValue")?;
        self.inner
            .put_version(name, version_id, value, stages)
            .await
    }
    async fn get_value(&self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError> {
        self.inner.get_value(name, stage).await
    }
    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), ApiError> {
        self.check("UpdateSecretVersionStage")?;
        self.inner
            .move_stage(name, stage, to_version, from_version)
            .await
    }
    async fn tag_all(&self, name: &str, tags: &[(&str, &str)]) -> Result<(), ApiError> {
        self.check("TagResource")?;
        self.inner.tag_all(name, tags).await
    }
    async fn untag(&self, name: &str, key: &str) -> Result<(), ApiError> {
        self.check("UntagResource")?;
        self.inner.untag(name, key).await
    }
    async fn list_managed(&self, page: Option<String>) -> Result<SecretPage, ApiError> {
        self.inner.list_managed(page).await
    }
}
