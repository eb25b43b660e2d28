//! AWS Secrets Manager, in the rotator's words.
//!
//! `trait SecretStore` is what the pass and the executor call; `aws.rs` implements it on
//! aws-sdk-secretsmanager. A value passed in or read out holds a key: implementations never
//! log it and return it only inside `Zeroizing`.

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::aws::error::ApiError;
use crate::model::{SecretSpec, SecretState};

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret's versions and labels, or `None` when it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError>;
    /// Creates the secret with no value, with the spec's KMS key, description and tags.
    async fn create(&self, spec: &SecretSpec) -> Result<SecretState, ApiError>;
    /// Writes a version with the given id and labels. Repeating it with the same id and value is
    /// a no-op, which is what makes publishing safe to retry.
    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError>;
    /// The value of the version carrying `stage`.
    async fn get_value(&self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError>;
    /// Moves `stage` to `to_version` (or only removes it, when `None`) from `from_version`.
    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), ApiError>;
    /// Sets tags on the secret, in one call (the rotator's records: `records.rs`). Adds no
    /// version.
    async fn tag_all(&self, name: &str, tags: &[(&str, &str)]) -> Result<(), ApiError>;
    /// Sets one tag on the secret.
    async fn tag(&self, name: &str, key: &str, value: &str) -> Result<(), ApiError> {
        self.tag_all(name, &[(key, value)]).await
    }
    async fn untag(&self, name: &str, key: &str) -> Result<(), ApiError>;
    /// One page (at most 100) of the secrets tagged `managed-by = amg-token-rotator` in this
    /// account and region, as ListSecrets shows them (not those scheduled for deletion), from
    /// `page` (`None`: the first). A page at a time, so a caller keeps only what it needs of
    /// each. Eventually consistent: it "might not reflect changes from the last five minutes"
    /// (its API reference), so nothing is changed on its word alone (`credential::census`).
    async fn list_managed(&self, page: Option<String>) -> Result<SecretPage, ApiError>;
}

/// One ListSecrets page: its secrets, and the token of the next page when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPage {
    pub secrets: Vec<SecretState>,
    pub next: Option<String>,
}
