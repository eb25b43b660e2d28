//! `FakeSecrets`: AWS Secrets Manager in memory, with its staging-label semantics.
//!
//! Sources: shared/reference/aws-facts.md ("facts") and the botocore model
//! `secretsmanager/2017-10-17` ("the model": its operation and member documentation, its
//! constraints). It follows Secrets Manager, not moto: a PutSecretValue with an existing
//! version id and another value fails even when that version carries AWSPENDING, and labels move
//! as the model says they do (facts, "Emulators", lists moto's quirks).
//!
//! Time: the fake has a clock of its own that never ticks by itself. It starts at
//! `fake::epoch()` (or `with_now`) and moves only by `set_now` / `advance`; it stamps
//! `last_changed`, the creation of versions (for the 24-hour rule of version pruning) and
//! `deleted`. Tests that compare these with the `now` they pass the code under test keep the two
//! in step.
//!
//! What it must never do: read the host's clock, or show a value (values live in `Zeroizing`,
//! the call log names secrets and version ids only).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::{epoch, ops, Call, CallLog};
use crate::aws::error::ApiError;
use crate::aws::secrets::{FirstVersion, Location, SecretPage, SecretStore};
use crate::model::{SecretSpec, SecretState, AWSCURRENT, AWSPREVIOUS};

/// The secrets one `list_managed` page holds at most (ListSecrets' MaxResults, as asked).
pub const LIST_PAGE: usize = 100;

/// The tag `list_managed` looks for (the rotator's own, `pass.rs`).
pub const MANAGED_BY: (&str, &str) = ("managed-by", "amg-token-rotator");
/// Versions a secret keeps before unlabeled ones older than 24 hours are removed (facts,
/// "Versions"; the model's PutSecretValue documentation).
pub const DEFAULT_VERSION_LIMIT: usize = 100;
/// The fixed random part of every ARN this fake makes.
pub const ARN_SUFFIX: &str = "AbCdEf";

/// Secrets Manager in memory. `Clone` shares the state: keep one handle to seed and inspect.
#[derive(Clone)]
pub struct FakeSecrets {
    state: Arc<Mutex<State>>,
    calls: CallLog,
}

impl Default for FakeSecrets {
    fn default() -> Self {
        FakeSecrets::new()
    }
}

struct State {
    region: String,
    account: String,
    /// Whether `location` answers (STS GetCallerIdentity reachable).
    location_known: bool,
    now: DateTime<Utc>,
    version_limit: usize,
    /// Whether moving a label changes `last_changed`. The model documents LastChangedDate only as
    /// "modified in any way"; whether a label move counts is undocumented and moto says no
    /// (facts). `model.rs` assumes a promotion counts, so that is the default; tests of code
    /// that must work either way run both.
    label_moves_change_last_changed: bool,
    secrets: BTreeMap<String, Secret>,
    /// What ListSecrets answers while set: the listing as it was (`freeze_listing`).
    frozen_listing: Option<Vec<SecretState>>,
}

impl State {
    fn listing(&self) -> Vec<SecretState> {
        self.secrets
            .iter()
            .filter(|(_, secret)| {
                secret.deleted.is_none()
                    && secret.tags.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
            })
            .map(|(name, secret)| secret.describe(name))
            .collect()
    }
}

#[derive(Clone)]
struct Secret {
    arn: String,
    tags: BTreeMap<String, String>,
    /// In creation order: the oldest unlabeled one is the first removed.
    versions: Vec<Version>,
    last_changed: Option<DateTime<Utc>>,
    deleted: Option<DateTime<Utc>>,
    rotation_enabled: bool,
}

#[derive(Clone)]
struct Version {
    id: String,
    value: Zeroizing<String>,
    stages: BTreeSet<String>,
    created: DateTime<Utc>,
}

// ---- errors, worded as Secrets Manager words them --------------------------------------------

fn not_found(message: String) -> ApiError {
    ApiError::NotFound(format!("ResourceNotFoundException: {message}"))
}

fn invalid_parameter(message: String) -> ApiError {
    ApiError::Invalid(format!("InvalidParameterException: {message}"))
}

fn validation(message: String) -> ApiError {
    ApiError::Invalid(format!("ValidationException: {message}"))
}

/// "The secret is scheduled for deletion" is a cause of InvalidRequestException (the model).
fn scheduled_for_deletion() -> ApiError {
    ApiError::Invalid(
        "InvalidRequestException: You can't perform this operation on the secret because it \
         was marked for deletion."
            .into(),
    )
}

fn secret_not_found() -> ApiError {
    not_found("Secrets Manager can't find the specified secret.".into())
}

/// CreateSecret's Name: 1..512 of `[A-Za-z0-9/_+=.@-]` (facts).
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "Invalid name '{name}': 1 to 512 characters of A-Z, a-z, 0-9 and /_+=.@-"
        )))
    }
}

/// ClientRequestToken, which becomes the VersionId: 32..64 characters (facts; the model).
fn check_version_id(id: &str) -> Result<(), ApiError> {
    if (32..=64).contains(&id.chars().count()) {
        Ok(())
    } else {
        Err(validation(format!(
            "1 validation error detected: Value '{id}' at 'clientRequestToken' failed to satisfy \
             constraint: Member must have length between 32 and 64, inclusive"
        )))
    }
}

/// A staging label is 1..256 characters (the model's SecretVersionStageType).
fn check_stage(stage: &str) -> Result<(), ApiError> {
    if (1..=256).contains(&stage.chars().count()) {
        Ok(())
    } else {
        Err(validation(format!(
            "Invalid staging label '{stage}': 1 to 256 characters"
        )))
    }
}

impl Secret {
    fn holder(&self, stage: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.stages.contains(stage))
    }

    fn index(&self, version_id: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.id == version_id)
    }

    /// Puts `stage` on version `to`, taking it off any other: a label is on one version at a
    /// time. Moving AWSCURRENT moves AWSPREVIOUS to the version it left (the model,
    /// UpdateSecretVersionStage and PutSecretValue). Returns whether anything changed.
    fn attach(&mut self, to: usize, stage: &str) -> bool {
        let from = self.holder(stage);
        if from == Some(to) {
            return false;
        }
        if let Some(f) = from {
            self.versions[f].stages.remove(stage);
        }
        self.versions[to].stages.insert(stage.to_owned());
        if stage == AWSCURRENT {
            if let Some(f) = from {
                if let Some(p) = self.holder(AWSPREVIOUS) {
                    self.versions[p].stages.remove(AWSPREVIOUS);
                }
                self.versions[f].stages.insert(AWSPREVIOUS.to_owned());
            }
        }
        true
    }

    /// Removes unlabeled (deprecated) versions while there are more than `limit`, oldest first,
    /// but never one younger than 24 hours; a secret still over the limit refuses the new
    /// version (facts, "Versions": "A version per pass ends in LimitExceededException").
    fn prune(&mut self, limit: usize, now: DateTime<Utc>) -> Result<(), ApiError> {
        while self.versions.len() > limit {
            let old_enough = now - chrono::Duration::hours(24);
            let Some(i) = self
                .versions
                .iter()
                .position(|v| v.stages.is_empty() && v.created <= old_enough)
            else {
                return Err(ApiError::QuotaExceeded(format!(
                    "LimitExceededException: the secret would have more than {limit} versions; \
                     versions younger than 24 hours are kept."
                )));
            };
            self.versions.remove(i);
        }
        Ok(())
    }

    fn describe(&self, name: &str) -> SecretState {
        SecretState {
            arn: self.arn.clone(),
            name: name.to_owned(),
            // VersionIdsToStages lists "the versions of the secret that have staging labels
            // attached" (the model): deprecated versions are left out.
            versions: self
                .versions
                .iter()
                .filter(|v| !v.stages.is_empty())
                .map(|v| (v.id.clone(), v.stages.iter().cloned().collect()))
                .collect(),
            tags: self.tags.clone(),
            last_changed: self.last_changed,
            deleted: self.deleted,
            rotation_enabled: self.rotation_enabled,
        }
    }
}

impl State {
    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-{ARN_SUFFIX}",
            self.region, self.account
        )
    }

    /// A secret the call may change: it exists and is not scheduled for deletion.
    fn live(&mut self, name: &str) -> Result<&mut Secret, ApiError> {
        let secret = self.secrets.get_mut(name).ok_or_else(secret_not_found)?;
        if secret.deleted.is_some() {
            return Err(scheduled_for_deletion());
        }
        Ok(secret)
    }

    fn create(
        &mut self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError> {
        check_name(&spec.name)?;
        if let Some(f) = first {
            // Checked before anything is made: CreateSecret makes the secret and its first
            // version, or nothing.
            check_version_id(f.version_id)?;
            if f.value.is_empty() || f.value.len() > 65_536 {
                return Err(validation(
                    "SecretString must have length between 1 and 65536".into(),
                ));
            }
        }
        if let Some(existing) = self.secrets.get(&spec.name) {
            return Err(if existing.deleted.is_some() {
                ApiError::Invalid(
                    "InvalidRequestException: You can't create this secret because a secret \
                     with this name is already scheduled for deletion."
                        .into(),
                )
            } else {
                ApiError::Conflict(format!(
                    "ResourceExistsException: The operation failed because the secret {} \
                     already exists.",
                    spec.name
                ))
            });
        }
        let arn = self.arn(&spec.name);
        let tags = crate::aws::secrets::tags_with(spec, records);
        self.secrets.insert(
            spec.name.clone(),
            Secret {
                arn: arn.clone(),
                tags: tags.clone(),
                versions: Vec::new(),
                last_changed: Some(self.now),
                deleted: None,
                rotation_enabled: false,
            },
        );
        // With a value, the first version is labeled AWSCURRENT (the model's CreateSecret).
        let mut versions = BTreeMap::new();
        if let Some(f) = first {
            self.put_version(&spec.name, f.version_id, f.value, &[AWSCURRENT])?;
            versions.insert(f.version_id.to_owned(), vec![AWSCURRENT.to_owned()]);
        }
        // What AwsSecrets::create returns (CreateSecret answers only ARN, name and version), so
        // code tested here sees what it sees in production.
        Ok(SecretState {
            arn,
            name: spec.name.clone(),
            versions,
            tags,
            ..SecretState::default()
        })
    }

    fn put_version(
        &mut self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError> {
        let (now, limit) = (self.now, self.version_limit);
        let secret = self.live(name)?;
        check_version_id(version_id)?;
        // SecretString is 1..65536 (the model); VersionStages, when sent, 1..20 labels. The SDK
        // implementation always sends the list, so an empty one is refused, not taken as
        // "no VersionStages".
        if value.is_empty() || value.len() > 65_536 {
            return Err(validation(
                "SecretString must have length between 1 and 65536".into(),
            ));
        }
        if stages.is_empty() || stages.len() > 20 {
            return Err(validation(
                "VersionStages must have between 1 and 20 members".into(),
            ));
        }
        for stage in stages {
            check_stage(stage)?;
        }
        if let Some(i) = secret.index(version_id) {
            // Same token and value: "the operation succeeds but does nothing" (labels
            // included); another value: "you can't modify an existing version" (the model;
            // facts: ResourceExistsException).
            return if secret.versions[i].value.as_str() == value {
                Ok(())
            } else {
                Err(ApiError::Conflict(format!(
                    "ResourceExistsException: You can't modify an existing version {version_id}, \
                     you can only create new versions."
                )))
            };
        }
        let mut next = secret.clone();
        let first = next.versions.is_empty();
        next.versions.push(Version {
            id: version_id.to_owned(),
            value: Zeroizing::new(value.to_owned()),
            stages: BTreeSet::new(),
            created: now,
        });
        let new = next.versions.len() - 1;
        let mut wanted: Vec<&str> = stages.to_vec();
        // "If this operation creates the first version for the secret, then Secrets Manager
        // automatically attaches the staging label AWSCURRENT to it" (the model).
        if first && !wanted.contains(&AWSCURRENT) {
            wanted.push(AWSCURRENT);
        }
        // AWSCURRENT first: an AWSPREVIOUS asked for in the same call wins over the move.
        wanted.sort_by_key(|s| *s != AWSCURRENT);
        for stage in wanted {
            next.attach(new, stage);
        }
        next.prune(limit, now)?;
        next.last_changed = Some(now);
        *secret = next;
        Ok(())
    }

    fn get_value(&mut self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError> {
        let secret = self.live(name)?;
        let i = secret.holder(stage).ok_or_else(|| {
            not_found(format!(
                "Secrets Manager can't find the specified secret value for staging label: {stage}"
            ))
        })?;
        Ok(secret.versions[i].value.clone())
    }

    fn move_stage(
        &mut self,
        name: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), ApiError> {
        let (now, touch) = (self.now, self.label_moves_change_last_changed);
        let secret = self.live(name)?;
        check_stage(stage)?;
        if to.is_none() && from.is_none() {
            return Err(invalid_parameter(
                "Specify MoveToVersionId, RemoveFromVersionId, or both.".into(),
            ));
        }
        for id in [to, from].into_iter().flatten() {
            check_version_id(id)?;
        }
        let to = match to {
            Some(id) => Some(secret.index(id).ok_or_else(|| {
                not_found(format!(
                    "Secrets Manager can't find the specified secret version: {id}"
                ))
            })?),
            None => None,
        };
        let holder = secret.holder(stage);
        match (from, holder) {
            // RemoveFromVersionId must name the version holding the label: "If the label is
            // attached and you either do not specify this parameter, or the version ID does not
            // match, then the operation fails" (the model).
            (Some(f), h) if h.map(|h| secret.versions[h].id.as_str()) != Some(f) => {
                return Err(invalid_parameter(format!(
                    "The staging label {stage} is not attached to version {f}."
                )))
            }
            (None, Some(h)) if Some(h) != to => {
                return Err(invalid_parameter(format!(
                    "The staging label {stage} is attached to version {}: RemoveFromVersionId \
                     must name it to move the label.",
                    secret.versions[h].id
                )))
            }
            _ => {}
        }
        let changed = match (to, holder) {
            (Some(t), _) => secret.attach(t, stage),
            // Only removing: the version left without labels is deprecated, not deleted.
            (None, Some(h)) => secret.versions[h].stages.remove(stage),
            // `from` is given (checked above) and holds nothing: refused above.
            (None, None) => false,
        };
        if changed && touch {
            secret.last_changed = Some(now);
        }
        Ok(())
    }
}

// ---- seeds ------------------------------------------------------------------------------------

/// A secret to seed, as DescribeSecret could report it. Versions are taken literally (no label
/// moves); each is created at the fake's clock.
#[derive(Clone)]
pub struct SecretSeed {
    name: String,
    tags: BTreeMap<String, String>,
    versions: Vec<(String, Zeroizing<String>, Vec<String>)>,
    rotation_enabled: bool,
    deleted: bool,
}

impl SecretSeed {
    pub fn new(name: &str) -> Self {
        SecretSeed {
            name: name.to_owned(),
            tags: BTreeMap::new(),
            versions: Vec::new(),
            rotation_enabled: false,
            deleted: false,
        }
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Tagged `managed-by = amg-token-rotator`, as the rotator tags what it creates.
    pub fn managed(self) -> Self {
        self.tag(MANAGED_BY.0, MANAGED_BY.1)
    }

    /// A version with exactly these labels (none: a deprecated version). Ids are 32..64
    /// characters; a label may be on one version only.
    pub fn version(mut self, id: &str, value: &str, stages: &[&str]) -> Self {
        self.versions.push((
            id.to_owned(),
            Zeroizing::new(value.to_owned()),
            stages.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    /// Secrets Manager rotation is on: a rotation function owns the secret.
    pub fn rotation_enabled(mut self) -> Self {
        self.rotation_enabled = true;
        self
    }

    /// Scheduled for deletion at the fake's clock.
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }
}

fn refuse(what: String) -> ! {
    panic!("FakeSecrets seed refused: {what}")
}

impl FakeSecrets {
    /// No secrets, us-east-1 in account 123456789012, the clock at `fake::epoch()`.
    pub fn new() -> Self {
        FakeSecrets {
            state: Arc::new(Mutex::new(State {
                region: "us-east-1".into(),
                account: "123456789012".into(),
                location_known: true,
                now: epoch(),
                version_limit: DEFAULT_VERSION_LIMIT,
                label_moves_change_last_changed: true,
                secrets: BTreeMap::new(),
                frozen_listing: None,
            })),
            calls: CallLog::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("FakeSecrets lock")
    }

    pub fn with_now(self, now: DateTime<Utc>) -> Self {
        self.set_now(now);
        self
    }

    /// The region and account in the ARNs of secrets created from now on.
    pub fn with_location(self, region: &str, account: &str) -> Self {
        {
            let mut s = self.state();
            s.region = region.to_owned();
            s.account = account.to_owned();
        }
        self
    }

    /// `location` answers `None`, as when STS cannot be reached.
    pub fn with_unknown_location(self) -> Self {
        self.state().location_known = false;
        self
    }

    pub fn with_version_limit(self, limit: usize) -> Self {
        self.state().version_limit = limit;
        self
    }

    /// Label moves leave `last_changed` alone, as moto does (facts: undocumented in AWS).
    pub fn with_label_moves_keeping_last_changed(self) -> Self {
        self.state().label_moves_change_last_changed = false;
        self
    }

    pub fn with_secret(self, seed: SecretSeed) -> Self {
        self.add_secret(seed);
        self
    }

    /// Seeds a secret; panics on one Secrets Manager could not hold (a bad name or version id,
    /// a label on two versions, a name taken).
    pub fn add_secret(&self, seed: SecretSeed) {
        let mut state = self.state();
        let now = state.now;
        if check_name(&seed.name).is_err() || state.secrets.contains_key(&seed.name) {
            refuse(format!("the name {} is invalid or taken", seed.name));
        }
        let mut versions: Vec<Version> = Vec::new();
        for (id, value, stages) in seed.versions {
            if check_version_id(&id).is_err() || versions.iter().any(|v| v.id == id) {
                refuse(format!(
                    "version id {id} is not 32..64 characters, or repeated"
                ));
            }
            for stage in &stages {
                if versions.iter().any(|v| v.stages.contains(stage)) {
                    refuse(format!("{stage} is on two versions"));
                }
            }
            versions.push(Version {
                id,
                value,
                stages: stages.into_iter().collect(),
                created: now,
            });
        }
        let arn = state.arn(&seed.name);
        state.secrets.insert(
            seed.name,
            Secret {
                arn,
                tags: seed.tags,
                versions,
                last_changed: Some(now),
                deleted: seed.deleted.then_some(now),
                rotation_enabled: seed.rotation_enabled,
            },
        );
    }

    // ---- the clock ----------------------------------------------------------------------------

    pub fn now(&self) -> DateTime<Utc> {
        self.state().now
    }

    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = now;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut s = self.state();
        s.now += by;
    }

    // ---- changes made behind the rotator's back ----------------------------------------------

    pub fn set_rotation_enabled(&self, name: &str, on: bool) {
        self.with_secret_mut(name, |s| s.rotation_enabled = on);
    }

    /// DeleteSecret with a recovery window: scheduled for deletion at the fake's clock.
    pub fn mark_deleted(&self, name: &str) {
        let now = self.now();
        self.with_secret_mut(name, |s| s.deleted = Some(now));
    }

    /// RestoreSecret.
    pub fn restore(&self, name: &str) {
        self.with_secret_mut(name, |s| s.deleted = None);
    }

    /// The recovery window has passed: the secret is gone and its name free.
    pub fn purge(&self, name: &str) {
        self.state().secrets.remove(name);
    }

    fn with_secret_mut(&self, name: &str, f: impl FnOnce(&mut Secret)) {
        match self.state().secrets.get_mut(name) {
            Some(s) => f(s),
            None => refuse(format!("no secret {name}")),
        }
    }

    // ---- inspection ---------------------------------------------------------------------------

    /// The value of the version carrying `stage`.
    pub fn value(&self, name: &str, stage: &str) -> Option<Zeroizing<String>> {
        let state = self.state();
        let s = state.secrets.get(name)?;
        s.holder(stage).map(|i| s.versions[i].value.clone())
    }

    /// The value of a version by id, deprecated ones included.
    pub fn value_of(&self, name: &str, version_id: &str) -> Option<Zeroizing<String>> {
        let state = self.state();
        let s = state.secrets.get(name)?;
        s.index(version_id).map(|i| s.versions[i].value.clone())
    }

    /// The version carrying `stage`.
    pub fn version_with(&self, name: &str, stage: &str) -> Option<String> {
        let state = self.state();
        let s = state.secrets.get(name)?;
        s.holder(stage).map(|i| s.versions[i].id.clone())
    }

    /// Every version the secret keeps, deprecated (unlabeled) ones included.
    pub fn version_count(&self, name: &str) -> usize {
        self.state()
            .secrets
            .get(name)
            .map_or(0, |s| s.versions.len())
    }

    /// Every version and its labels, deprecated ones with none (DescribeSecret leaves those out).
    pub fn stages(&self, name: &str) -> BTreeMap<String, Vec<String>> {
        self.state()
            .secrets
            .get(name)
            .map(|s| {
                s.versions
                    .iter()
                    .map(|v| (v.id.clone(), v.stages.iter().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tags(&self, name: &str) -> BTreeMap<String, String> {
        self.state()
            .secrets
            .get(name)
            .map(|s| s.tags.clone())
            .unwrap_or_default()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.state().secrets.contains_key(name)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.all()
    }

    /// From now on ListSecrets answers with the listing as it is now, whatever changes after:
    /// the stale view its API reference warns of ("might not reflect changes from the last
    /// five minutes"). DescribeSecret stays current.
    pub fn freeze_listing(&self) {
        let mut s = self.state();
        s.frozen_listing = Some(s.listing());
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls.count(operation)
    }

    fn run<T>(
        &self,
        operation: &'static str,
        target: String,
        op: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let result = op(&mut self.state());
        self.calls.record(operation, target, &result);
        result
    }
}

#[async_trait]
impl SecretStore for FakeSecrets {
    async fn describe(&self, name: &str) -> Result<Option<SecretState>, ApiError> {
        // DescribeSecret answers for a secret scheduled for deletion too, with its DeletedDate.
        self.run(ops::DESCRIBE_SECRET, name.into(), |s| {
            Ok(s.secrets.get(name).map(|secret| secret.describe(name)))
        })
    }

    async fn create(
        &self,
        spec: &SecretSpec,
        records: &[(&str, &str)],
        first: Option<FirstVersion<'_>>,
    ) -> Result<SecretState, ApiError> {
        let detail = match first {
            Some(f) => format!("{} {} AWSCURRENT", spec.name, f.version_id),
            None => spec.name.clone(),
        };
        self.run(ops::CREATE_SECRET, detail, |s| {
            s.create(spec, records, first)
        })
    }

    async fn location(&self) -> Option<Location> {
        let s = self.state();
        s.location_known.then(|| Location {
            partition: "aws".into(),
            region: s.region.clone(),
            account: s.account.clone(),
        })
    }

    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), ApiError> {
        self.run(
            ops::PUT_SECRET_VALUE,
            format!("{name} {version_id} {}", stages.join(",")),
            |s| s.put_version(name, version_id, value, stages),
        )
    }

    async fn get_value(&self, name: &str, stage: &str) -> Result<Zeroizing<String>, ApiError> {
        self.run(ops::GET_SECRET_VALUE, format!("{name} {stage}"), |s| {
            s.get_value(name, stage)
        })
    }

    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), ApiError> {
        self.run(
            ops::UPDATE_SECRET_VERSION_STAGE,
            format!(
                "{name} {stage} {} -> {}",
                from_version.unwrap_or("-"),
                to_version.unwrap_or("-")
            ),
            |s| s.move_stage(name, stage, to_version, from_version),
        )
    }

    async fn tag_all(&self, name: &str, tags: &[(&str, &str)]) -> Result<(), ApiError> {
        let keys: Vec<&str> = tags.iter().map(|(k, _)| *k).collect();
        self.run(
            ops::TAG_RESOURCE,
            format!("{name} {}", keys.join(" ")),
            |s| {
                s.live(name)?.tags.extend(crate::aws::secrets::owned(tags));
                Ok(())
            },
        )
    }

    async fn untag(&self, name: &str, key: &str) -> Result<(), ApiError> {
        // "If a requested tag is not attached to the secret, no error is returned" (the model).
        self.run(ops::UNTAG_RESOURCE, format!("{name} {key}"), |s| {
            s.live(name)?.tags.remove(key);
            Ok(())
        })
    }

    async fn list_managed(&self, page: Option<String>) -> Result<SecretPage, ApiError> {
        // ListSecrets leaves out secrets scheduled for deletion unless IncludePlannedDeletion is
        // set (the model), and AwsSecrets does not set it. It "might not reflect changes from
        // the last five minutes" (its API reference): a frozen listing is that stale view.
        // Pages of 100, the MaxResults AwsSecrets asks for; a token is where its page starts.
        self.run(ops::LIST_SECRETS, page.clone().unwrap_or_default(), |s| {
            let all = match &s.frozen_listing {
                Some(frozen) => frozen.clone(),
                None => s.listing(),
            };
            let from = match &page {
                None => 0,
                Some(t) => t
                    .parse::<usize>()
                    .map_err(|_| ApiError::Invalid(format!("InvalidNextTokenException: {t:?}")))?,
            };
            let to = (from + LIST_PAGE).min(all.len());
            Ok(SecretPage {
                secrets: all.get(from..to).unwrap_or_default().to_vec(),
                next: (to < all.len()).then(|| to.to_string()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SecretFormat, AWSPENDING};

    const NAME: &str = "amg/prod/terraform";
    // Version ids are ClientRequestTokens: 32..64 characters.
    const V1: &str = "amgrot-v1-00000000000000000000000000000001";
    const V2: &str = "amgrot-v1-00000000000000000000000000000002";
    const V3: &str = "amgrot-v1-00000000000000000000000000000003";

    fn spec(name: &str) -> SecretSpec {
        SecretSpec {
            name: name.into(),
            format: SecretFormat::Json,
            kms_key_id: None,
            description: "d".into(),
            tags: std::sync::Arc::new(
                [("managed-by".to_string(), "amg-token-rotator".to_string())].into(),
            ),
        }
    }

    /// An empty secret, created through the API.
    async fn empty() -> FakeSecrets {
        let s = FakeSecrets::new();
        s.create(&spec(NAME), &[], None).await.unwrap();
        s
    }

    fn labels(s: &FakeSecrets) -> Vec<(String, Vec<String>)> {
        s.stages(NAME).into_iter().collect()
    }

    fn v(id: &str, stages: &[&str]) -> (String, Vec<String>) {
        (id.into(), stages.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test]
    async fn the_first_version_gets_awscurrent_whatever_stages_are_asked() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSPENDING]).await.unwrap();
        assert_eq!(labels(&s), vec![v(V1, &[AWSCURRENT, AWSPENDING])]);
        assert_eq!(s.get_value(NAME, AWSCURRENT).await.unwrap().as_str(), "one");
    }

    #[tokio::test]
    async fn a_pending_version_leaves_current_where_it_is() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        assert_eq!(labels(&s), vec![v(V1, &[AWSCURRENT]), v(V2, &[AWSPENDING])]);
        assert_eq!(s.get_value(NAME, AWSCURRENT).await.unwrap().as_str(), "one");
        assert_eq!(s.get_value(NAME, AWSPENDING).await.unwrap().as_str(), "two");
    }

    #[tokio::test]
    async fn putting_with_a_stage_takes_it_from_the_version_that_had_it() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        s.put_version(NAME, V3, "three", &[AWSPENDING])
            .await
            .unwrap();
        // V2 lost its only label: deprecated, kept, but not described.
        assert_eq!(
            labels(&s),
            vec![v(V1, &[AWSCURRENT]), v(V2, &[]), v(V3, &[AWSPENDING])]
        );
        assert_eq!(s.version_count(NAME), 3);
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert!(!d.versions.contains_key(V2));
        assert_eq!(d.version_with(AWSPENDING), Some(V3));
    }

    #[tokio::test]
    async fn putting_awscurrent_moves_awsprevious_to_the_version_it_left() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSCURRENT]).await.unwrap();
        assert_eq!(
            labels(&s),
            vec![v(V1, &[AWSPREVIOUS]), v(V2, &[AWSCURRENT])]
        );
        s.put_version(NAME, V3, "three", &[AWSCURRENT])
            .await
            .unwrap();
        assert_eq!(
            labels(&s),
            vec![v(V1, &[]), v(V2, &[AWSPREVIOUS]), v(V3, &[AWSCURRENT])]
        );
    }

    #[tokio::test]
    async fn the_same_version_id_and_value_is_a_no_op_and_another_value_a_conflict() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        // A retried publish: succeeds, changes nothing (not even labels).
        s.put_version(NAME, V2, "two", &[AWSCURRENT]).await.unwrap();
        assert_eq!(labels(&s), vec![v(V1, &[AWSCURRENT]), v(V2, &[AWSPENDING])]);
        // Another value under the same id: refused even on an AWSPENDING version (moto
        // overwrites it; facts, "Emulators").
        let r = s.put_version(NAME, V2, "other", &[AWSPENDING]).await;
        match r {
            Err(ApiError::Conflict(m)) => assert!(m.contains("ResourceExistsException"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.value(NAME, AWSPENDING).unwrap().as_str(), "two");
        assert_eq!(s.version_count(NAME), 2);
    }

    #[tokio::test]
    async fn a_put_is_checked_against_the_model() {
        let s = empty().await;
        let short = "v-too-short";
        assert!(matches!(
            s.put_version(NAME, short, "x", &[AWSCURRENT]).await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            s.put_version(NAME, &"v".repeat(65), "x", &[AWSCURRENT])
                .await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            s.put_version(NAME, V1, "", &[AWSCURRENT]).await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            s.put_version(NAME, V1, &"x".repeat(65_537), &[AWSCURRENT])
                .await,
            Err(ApiError::Invalid(_))
        ));
        // VersionStages, when sent, has 1..20 members.
        assert!(matches!(
            s.put_version(NAME, V1, "x", &[]).await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            s.put_version("no-such-secret", V1, "x", &[AWSCURRENT])
                .await,
            Err(ApiError::NotFound(_))
        ));
        assert_eq!(s.version_count(NAME), 0);
    }

    #[tokio::test]
    async fn promoting_moves_awscurrent_from_the_named_version_and_awsprevious_with_it() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V3, "three", &[AWSPENDING])
            .await
            .unwrap();
        s.move_stage(NAME, AWSCURRENT, Some(V3), Some(V2))
            .await
            .unwrap();
        assert_eq!(
            labels(&s),
            vec![
                v(V1, &[]),
                v(V2, &[AWSPREVIOUS]),
                v(V3, &[AWSCURRENT, AWSPENDING])
            ]
        );
        // Then the rotator drops AWSPENDING from it.
        s.move_stage(NAME, AWSPENDING, None, Some(V3))
            .await
            .unwrap();
        assert_eq!(labels(&s)[2], v(V3, &[AWSCURRENT]));
        assert_eq!(s.value(NAME, AWSCURRENT).unwrap().as_str(), "three");
        assert_eq!(s.value(NAME, AWSPREVIOUS).unwrap().as_str(), "two");
    }

    #[tokio::test]
    async fn moving_a_label_held_elsewhere_needs_remove_from_version_id_naming_its_holder() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        s.put_version(NAME, V3, "three", &[AWSPENDING])
            .await
            .unwrap();
        let before = labels(&s);
        // Not given.
        assert!(matches!(
            s.move_stage(NAME, AWSCURRENT, Some(V3), None).await,
            Err(ApiError::Invalid(_))
        ));
        // Given, but not the holder.
        assert!(matches!(
            s.move_stage(NAME, AWSCURRENT, Some(V3), Some(V2)).await,
            Err(ApiError::Invalid(_))
        ));
        // Removing from a version that does not hold the label.
        assert!(matches!(
            s.move_stage(NAME, AWSPENDING, None, Some(V1)).await,
            Err(ApiError::Invalid(_))
        ));
        assert_eq!(labels(&s), before, "a refused move changes nothing");
        // A label on no version needs no RemoveFromVersionId; one already on the target is a
        // no-op.
        s.move_stage(NAME, "CUSTOM", Some(V2), None).await.unwrap();
        s.move_stage(NAME, AWSCURRENT, Some(V1), None)
            .await
            .unwrap();
        s.move_stage(NAME, AWSCURRENT, Some(V1), Some(V1))
            .await
            .unwrap();
        assert_eq!(labels(&s)[1], v(V2, &["CUSTOM"]));
        // A label that nothing holds cannot be removed.
        assert!(matches!(
            s.move_stage(NAME, "NOTHING", None, Some(V1)).await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            s.move_stage(
                NAME,
                AWSCURRENT,
                Some("amgrot-v1-ffffffffffffffffffffffffffffffff"),
                Some(V1)
            )
            .await,
            Err(ApiError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn removing_the_last_label_deprecates_a_version_without_deleting_it() {
        let s = empty().await;
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        s.move_stage(NAME, AWSPENDING, None, Some(V2))
            .await
            .unwrap();
        assert_eq!(s.version_count(NAME), 2);
        assert_eq!(s.value_of(NAME, V2).unwrap().as_str(), "two");
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert_eq!(d.versions.len(), 1);
        assert!(matches!(
            s.get_value(NAME, AWSPENDING).await,
            Err(ApiError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn describe_reports_arn_tags_labels_and_times() {
        let s = FakeSecrets::new();
        assert_eq!(s.describe(NAME).await.unwrap(), None);
        let made = s.create(&spec(NAME), &[], None).await.unwrap();
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:amg/prod/terraform-AbCdEf";
        assert_eq!(made.arn, arn);
        assert_eq!(made.last_changed, None, "as AwsSecrets::create returns it");
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert_eq!(d.arn, arn);
        assert_eq!(d.name, NAME);
        assert_eq!(
            d.tags.get("managed-by").map(String::as_str),
            Some("amg-token-rotator")
        );
        assert_eq!(d.last_changed, Some(epoch()));
        assert!(d.versions.is_empty());
        assert!(!d.rotation_enabled);
        assert_eq!(d.deleted, None);
        s.set_rotation_enabled(NAME, true);
        assert!(s.describe(NAME).await.unwrap().unwrap().rotation_enabled);
        let elsewhere = FakeSecrets::new().with_location("eu-west-1", "111111111111");
        let made = elsewhere.create(&spec(NAME), &[], None).await.unwrap();
        assert!(made
            .arn
            .starts_with("arn:aws:secretsmanager:eu-west-1:111111111111:secret:"));
    }

    #[tokio::test]
    async fn last_changed_follows_the_fakes_clock_and_label_moves_by_choice() {
        let s = empty().await;
        let t = |h| epoch() + chrono::Duration::hours(h);
        s.set_now(t(1));
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        assert_eq!(
            s.describe(NAME).await.unwrap().unwrap().last_changed,
            Some(t(1))
        );
        s.advance(chrono::Duration::hours(1));
        s.move_stage(NAME, AWSCURRENT, Some(V2), Some(V1))
            .await
            .unwrap();
        assert_eq!(
            s.describe(NAME).await.unwrap().unwrap().last_changed,
            Some(t(2))
        );
        // A tag is no version and no label: it leaves last_changed alone here (undocumented).
        s.set_now(t(3));
        s.tag(NAME, "k", "v").await.unwrap();
        assert_eq!(
            s.describe(NAME).await.unwrap().unwrap().last_changed,
            Some(t(2))
        );

        let moto_like = FakeSecrets::new().with_label_moves_keeping_last_changed();
        moto_like.create(&spec(NAME), &[], None).await.unwrap();
        moto_like
            .put_version(NAME, V1, "one", &[AWSCURRENT])
            .await
            .unwrap();
        moto_like
            .put_version(NAME, V2, "two", &[AWSPENDING])
            .await
            .unwrap();
        moto_like.set_now(t(5));
        moto_like
            .move_stage(NAME, AWSCURRENT, Some(V2), Some(V1))
            .await
            .unwrap();
        assert_eq!(
            moto_like
                .describe(NAME)
                .await
                .unwrap()
                .unwrap()
                .last_changed,
            Some(epoch())
        );
    }

    #[tokio::test]
    async fn values_are_read_by_stage() {
        let s = empty().await;
        assert!(matches!(
            s.get_value(NAME, AWSCURRENT).await,
            Err(ApiError::NotFound(_))
        ));
        s.put_version(NAME, V1, "one", &[AWSCURRENT]).await.unwrap();
        assert_eq!(s.get_value(NAME, AWSCURRENT).await.unwrap().as_str(), "one");
        assert!(matches!(
            s.get_value(NAME, AWSPREVIOUS).await,
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            s.get_value("other", AWSCURRENT).await,
            Err(ApiError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_secret_is_created_once_with_a_valid_name() {
        let s = empty().await;
        assert!(matches!(
            s.create(&spec(NAME), &[], None).await,
            Err(ApiError::Conflict(_))
        ));
        let long = "n".repeat(513);
        for bad in ["", "has space", "emoji-☃", long.as_str()] {
            assert!(
                matches!(
                    s.create(&spec(bad), &[], None).await,
                    Err(ApiError::Invalid(_))
                ),
                "{bad}"
            );
        }
        s.create(&spec("a/b_c+d=e.f@g-h"), &[], None).await.unwrap();
    }

    #[tokio::test]
    async fn tags_are_set_replaced_and_removed_idempotently() {
        let s = empty().await;
        s.tag(NAME, "amg-token-rotator/verification", "1")
            .await
            .unwrap();
        s.tag(NAME, "amg-token-rotator/verification", "2")
            .await
            .unwrap();
        assert_eq!(
            s.tags(NAME)
                .get("amg-token-rotator/verification")
                .map(String::as_str),
            Some("2")
        );
        s.untag(NAME, "amg-token-rotator/verification")
            .await
            .unwrap();
        s.untag(NAME, "amg-token-rotator/verification")
            .await
            .unwrap();
        assert!(!s.tags(NAME).contains_key("amg-token-rotator/verification"));
        assert_eq!(s.version_count(NAME), 0, "tags add no version");
        assert!(matches!(
            s.tag("missing", "k", "v").await,
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            s.untag("missing", "k").await,
            Err(ApiError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn only_live_secrets_tagged_managed_by_the_rotator_are_listed() {
        let s = FakeSecrets::new()
            .with_secret(SecretSeed::new("mine").managed())
            .with_secret(SecretSeed::new("gone").managed().deleted())
            .with_secret(SecretSeed::new("theirs").tag("managed-by", "terraform"))
            .with_secret(SecretSeed::new("untagged"));
        let listed = s.list_managed(None).await.unwrap();
        assert_eq!(listed.next, None, "one page");
        let listed = listed.secrets;
        assert_eq!(listed, vec![s.describe("mine").await.unwrap().unwrap()]);
        assert_eq!(
            listed[0].arn,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-AbCdEf"
        );
    }

    #[tokio::test]
    async fn the_listing_comes_in_pages_of_a_hundred_each_naming_the_next() {
        let mut s = FakeSecrets::new();
        for i in 0..(2 * LIST_PAGE + 1) {
            s = s.with_secret(SecretSeed::new(&format!("s{i:03}")).managed());
        }
        let first = s.list_managed(None).await.unwrap();
        let second = s.list_managed(first.next.clone()).await.unwrap();
        let third = s.list_managed(second.next.clone()).await.unwrap();
        assert_eq!(
            (
                first.secrets.len(),
                second.secrets.len(),
                third.secrets.len()
            ),
            (100, 100, 1)
        );
        assert_eq!(third.next, None);
        assert_eq!(second.secrets[0].name, "s100");
        assert!(matches!(
            s.list_managed(Some("not a token".into())).await,
            Err(ApiError::Invalid(_))
        ));
        assert_eq!(s.count(ops::LIST_SECRETS), 4, "a page is a call");
    }

    #[tokio::test]
    async fn a_frozen_listing_shows_the_secret_as_it_was_while_describe_is_current() {
        let s = FakeSecrets::new().with_secret(SecretSeed::new(NAME).managed().version(
            V1,
            "one",
            &[AWSCURRENT],
        ));
        s.freeze_listing();
        s.tag(NAME, "k", "v").await.unwrap();
        let listed = s.list_managed(None).await.unwrap().secrets;
        assert!(!listed[0].tags.contains_key("k"), "the listing is stale");
        let described = s.describe(NAME).await.unwrap().unwrap();
        assert_eq!(described.tags.get("k").map(String::as_str), Some("v"));
    }

    #[tokio::test]
    async fn a_secret_scheduled_for_deletion_is_described_but_refuses_changes() {
        let s = FakeSecrets::new().with_secret(SecretSeed::new(NAME).managed().version(
            V1,
            "one",
            &[AWSCURRENT],
        ));
        s.set_now(epoch() + chrono::Duration::hours(1));
        s.mark_deleted(NAME);
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert_eq!(d.deleted, Some(epoch() + chrono::Duration::hours(1)));
        let refused = |r: Result<(), ApiError>| matches!(r, Err(ApiError::Invalid(m)) if m.contains("InvalidRequestException"));
        assert!(refused(s.put_version(NAME, V2, "two", &[AWSPENDING]).await));
        assert!(refused(
            s.move_stage(NAME, AWSPENDING, Some(V1), None).await
        ));
        assert!(refused(s.tag(NAME, "k", "v").await));
        assert!(refused(s.get_value(NAME, AWSCURRENT).await.map(|_| ())));
        assert!(refused(s.create(&spec(NAME), &[], None).await.map(|_| ())));
        s.restore(NAME);
        s.put_version(NAME, V2, "two", &[AWSPENDING]).await.unwrap();
        s.purge(NAME);
        assert_eq!(s.describe(NAME).await.unwrap(), None);
        s.create(&spec(NAME), &[], None).await.unwrap();
    }

    #[tokio::test]
    async fn old_unlabeled_versions_make_room_and_young_ones_do_not() {
        let s = FakeSecrets::new()
            .with_version_limit(2)
            .with_secret(SecretSeed::new(NAME).version(V1, "one", &[AWSCURRENT]));
        s.put_version(NAME, V2, "two", &[AWSCURRENT]).await.unwrap();
        // V1 is AWSPREVIOUS: labeled, so kept; nothing can make room.
        let r = s.put_version(NAME, V3, "three", &[AWSCURRENT]).await;
        assert!(matches!(r, Err(ApiError::QuotaExceeded(_))), "{r:?}");
        assert_eq!(
            s.version_with(NAME, AWSCURRENT).as_deref(),
            Some(V2),
            "refused whole"
        );
        // Unlabeled but younger than 24 hours: still kept.
        s.move_stage(NAME, AWSPREVIOUS, None, Some(V1))
            .await
            .unwrap();
        assert!(s
            .put_version(NAME, V3, "three", &[AWSPENDING])
            .await
            .is_err());
        s.advance(chrono::Duration::hours(24));
        s.put_version(NAME, V3, "three", &[AWSPENDING])
            .await
            .unwrap();
        assert_eq!(labels(&s), vec![v(V2, &[AWSCURRENT]), v(V3, &[AWSPENDING])]);
    }

    #[tokio::test]
    async fn seeds_are_literal_states() {
        let s = FakeSecrets::new().with_secret(
            SecretSeed::new(NAME)
                .version(V1, "one", &[AWSPREVIOUS])
                .version(V2, "two", &[AWSCURRENT])
                .version(V3, "three", &[])
                .rotation_enabled(),
        );
        assert_eq!(
            labels(&s),
            vec![v(V1, &[AWSPREVIOUS]), v(V2, &[AWSCURRENT]), v(V3, &[])]
        );
        let d = s.describe(NAME).await.unwrap().unwrap();
        assert!(d.rotation_enabled);
        assert_eq!(d.versions.len(), 2);
    }

    #[test]
    #[should_panic(expected = "seed refused")]
    fn a_seed_with_a_label_on_two_versions_is_refused() {
        FakeSecrets::new().with_secret(
            SecretSeed::new(NAME)
                .version(V1, "one", &[AWSCURRENT])
                .version(V2, "two", &[AWSCURRENT]),
        );
    }

    #[tokio::test]
    async fn the_call_log_names_secrets_and_versions_never_values() {
        let s = empty().await;
        s.put_version(NAME, V1, "glsa_secret_value", &[AWSPENDING])
            .await
            .unwrap();
        let _ = s
            .put_version(NAME, V1, "glsa_other_value", &[AWSPENDING])
            .await;
        let seen: Vec<(&str, &str)> = s
            .calls()
            .iter()
            .map(|c| (c.operation, c.outcome_label()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (ops::CREATE_SECRET, "ok"),
                (ops::PUT_SECRET_VALUE, "ok"),
                (ops::PUT_SECRET_VALUE, "conflict"),
            ]
        );
        let shown = format!("{:?}", s.calls());
        assert!(!shown.contains("glsa_"), "{shown}");
        assert_eq!(s.count(ops::PUT_SECRET_VALUE), 2);
    }
}
