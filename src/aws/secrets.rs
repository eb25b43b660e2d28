//! AWS Secrets Manager, in the rotator's words.
//!
//! `trait SecretStore` is what the pass and the executor call; `aws.rs` implements it on
//! aws-sdk-secretsmanager. A value passed in or read out holds a key: implementations never
//! log it and return it only inside `Zeroizing`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::aws::error::ApiError;
use crate::model::{SecretSpec, SecretState};

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret's versions and labels, or `None` when it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError>;
    /// Creates the secret with the spec's KMS key, description and tags, and `records` (the
    /// rotator's own tags: `records.rs`) in the same call; with `first`, its first version
    /// too, which Secrets Manager labels AWSCURRENT, so a new credential is published in one
    /// call. Without, the secret has no value yet.
    async fn create(
        &self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError>;
    /// Where a secret this store creates lives: the partition, region and account of its ARN,
    /// known before it exists (a new token's name carries its secret's mark). `None` when it
    /// cannot be learned; then a secret is created before what it will hold is minted.
    async fn location(&self) -> Option<Location>;
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

/// The tags of a secret created from `spec` with `records` (the rotator's own).
pub fn tags_with(spec: &SecretSpec, records: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut tags = spec.tags.as_ref().clone();
    tags.extend(owned(records));
    tags
}

/// `records` as owned (key, value) pairs.
pub fn owned<'a>(records: &'a [(&str, &str)]) -> impl Iterator<Item = (String, String)> + 'a {
    records
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
}

/// The first version of a secret being created: its ID (the ClientRequestToken, as
/// PutSecretValue takes it) and its value, which holds a key.
#[derive(Clone, Copy)]
pub struct FirstVersion<'a> {
    pub version_id: &'a str,
    pub value: &'a str,
}

/// Where a store's secrets live, as their ARNs say: `arn:PARTITION:secretsmanager:REGION:ACCOUNT:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Location {
    /// The location an ARN names (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`).
    pub fn of_arn(arn: &str) -> Option<Location> {
        let mut f = arn.split(':');
        match (f.next(), f.next(), f.next(), f.next(), f.next()) {
            (Some("arn"), Some(partition), Some(_), Some(region), Some(account)) => {
                Some(Location {
                    partition: partition.to_owned(),
                    region: region.to_owned(),
                    account: account.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// One ListSecrets page: its secrets, and the token of the next page when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPage {
    pub secrets: Vec<SecretState>,
    pub next: Option<String>,
}
