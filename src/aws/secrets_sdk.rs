//! `SecretStore` on aws-sdk-secretsmanager: thin translations between SDK shapes and domain types.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::identity::Identity;
use super::secrets::{FirstVersion, Location, SecretPage, SecretStore};
use crate::aws::caller::Caller;
use crate::aws::error::ApiError;
use crate::model::{SecretSpec, SecretState};

pub struct AwsSecrets {
    client: Client,
    caller: Caller,
    identity: Identity,
}

impl AwsSecrets {
    pub fn new(client: Client, caller: Caller, identity: Identity) -> Self {
        AwsSecrets {
            client,
            caller,
            identity,
        }
    }
}

fn time(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// Version id → staging labels, as DescribeSecret and ListSecrets both give them.
fn stages(map: Option<&HashMap<String, Vec<String>>>) -> BTreeMap<String, Vec<String>> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn tags(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

#[async_trait]
impl SecretStore for AwsSecrets {
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError> {
        let out = self
            .caller
            .idempotent("DescribeSecret", || async {
                self.client
                    .describe_secret()
                    .secret_id(name)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await;
        let out = match out {
            Ok(out) => out,
            Err(ApiError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(SecretState {
            arn: out.arn().unwrap_or_default().to_owned(),
            name: out.name().unwrap_or(name).to_owned(),
            versions: stages(out.version_ids_to_stages()),
            tags: tags(out.tags()),
            last_changed: out.last_changed_date().map(time),
            deleted: out.deleted_date().map(time),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
        }))
    }

    async fn create(
        &self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError> {
        let all = super::secrets::tags_with(spec, records);
        let tags: Vec<Tag> = all
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        // With a value, the ClientRequestToken is the first version's ID, so a retry of a
        // create that landed but answered ResourceExistsException can be told from another
        // writer's secret by that version (the executor looks).
        let out = self
            .caller
            .idempotent("CreateSecret", || async {
                self.client
                    .create_secret()
                    .name(&spec.name)
                    .description(&spec.description)
                    .set_kms_key_id(spec.kms_key_id.clone())
                    .set_tags((!tags.is_empty()).then(|| tags.clone()))
                    .set_client_request_token(first.map(|f| f.version_id.to_owned()))
                    .set_secret_string(first.map(|f| f.value.to_owned()))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        // "If you include SecretString … Secrets Manager also creates an initial secret version
        // and automatically attaches the staging label AWSCURRENT to the new version" (its API
        // reference).
        let versions = first
            .map(|f| {
                let id = out.version_id().unwrap_or(f.version_id).to_owned();
                BTreeMap::from([(id, vec![crate::model::AWSCURRENT.to_owned()])])
            })
            .unwrap_or_default();
        Ok(SecretState {
            arn: out.arn().unwrap_or_default().to_owned(),
            name: out.name().unwrap_or(&spec.name).to_owned(),
            versions,
            tags: all,
            ..SecretState::default()
        })
    }

    async fn location(&self) -> Option<Location> {
        self.identity.location().await
    }

    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError> {
        self.caller
            .idempotent("PutSecretValue", || async {
                self.client
                    .put_secret_value()
                    .secret_id(name)
                    .client_request_token(version_id)
                    .secret_string(value)
                    .set_version_stages(Some(stages.iter().map(|s| s.to_string()).collect()))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn get_value(&self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError> {
        let out = self
            .caller
            .idempotent("GetSecretValue", || async {
                self.client
                    .get_secret_value()
                    .secret_id(name)
                    .version_stage(stage)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(Zeroizing::new(
            out.secret_string().unwrap_or_default().to_owned(),
        ))
    }

    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), ApiError> {
        self.caller
            .idempotent("UpdateSecretVersionStage", || async {
                self.client
                    .update_secret_version_stage()
                    .secret_id(name)
                    .version_stage(stage)
                    .set_move_to_version_id(to_version.map(str::to_owned))
                    .set_remove_from_version_id(from_version.map(str::to_owned))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn tag_all(&self, name: &str, tags: &[(&str, &str)]) -> Result<(), ApiError> {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(key, value)| Tag::builder().key(*key).value(*value).build())
            .collect();
        self.caller
            .idempotent("TagResource", || async {
                self.client
                    .tag_resource()
                    .secret_id(name)
                    .set_tags(Some(tags.clone()))
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn untag(&self, name: &str, key: &str) -> Result<(), ApiError> {
        self.caller
            .idempotent("UntagResource", || async {
                self.client
                    .untag_resource()
                    .secret_id(name)
                    .tag_keys(key)
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        Ok(())
    }

    async fn list_managed(&self, page: Option<String>) -> Result<SecretPage, ApiError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let filters = vec![
            Filter::builder()
                .key(FilterNameStringType::TagKey)
                .values("managed-by")
                .build(),
            Filter::builder()
                .key(FilterNameStringType::TagValue)
                .values("amg-token-rotator")
                .build(),
        ];
        let out = self
            .caller
            .idempotent("ListSecrets", || async {
                self.client
                    .list_secrets()
                    .set_filters(Some(filters.clone()))
                    .max_results(100)
                    .set_next_token(page.clone())
                    .send()
                    .await
                    .map_err(ApiError::from_sdk)
            })
            .await?;
        let secrets = out
            .secret_list()
            .iter()
            .filter_map(|s| {
                Some(SecretState {
                    arn: s.arn().unwrap_or_default().to_owned(),
                    name: s.name()?.to_owned(),
                    versions: stages(s.secret_versions_to_stages()),
                    tags: tags(s.tags()),
                    last_changed: s.last_changed_date().map(time),
                    deleted: s.deleted_date().map(time),
                    rotation_enabled: s.rotation_enabled().unwrap_or(false),
                })
            })
            .collect();
        Ok(SecretPage {
            secrets,
            next: out.next_token().map(str::to_owned),
        })
    }
}
