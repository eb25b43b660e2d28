//! The least-privilege IAM policy for one configuration: `amg-token-rotator iam-policy`.
//!
//! Pure: a validated `Config` in, a policy document (serde_json) and warnings out. It never
//! talks to AWS, so what it cannot know from the configuration (the account, a region left to
//! the SDK, the key behind a KMS alias) stays a `${PLACEHOLDER}` the README's `envsubst` fills.
//!
//! Principals: a target with `role_arn` makes all of its AMG and Secrets Manager calls with the
//! assumed role (`aws::connect::sdk_config`), so its grants belong in that role's policy, and
//! the rotator's own policy gets only `sts:AssumeRole` on exactly the roles the targets name.
//! `Principal::Rotator` is the policy of the rotator's own identity (the targets without
//! `role_arn`); `Principal::Role(arn)` is the policy of one assumed role (its targets only).
//!
//! One statement per feature the configuration turns on (`Feature`), each with the actions
//! the code makes for it (tests/iam_policy.rs proves that against the SDK calls in src/).
//! It must never grant an action on `"*"` that supports resource-level permissions.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, Manages, Target, WorkspaceSelector, TEMPLATE_VARS};

pub const REGION_PLACEHOLDER: &str = "${AWS_REGION}";
pub const ACCOUNT_PLACEHOLDER: &str = "${ACCOUNT_ID}";
pub const KMS_KEY_PLACEHOLDER: &str = "${KMS_KEY_ID}";

/// Whose policy to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The rotator's own identity: the targets without `role_arn`, and AssumeRole on the others'.
    Rotator,
    /// The role a target assumes (`role_arn`): the targets naming it.
    Role(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub principal: Principal,
    /// The rotator's own account (12 digits); `None`: the `${ACCOUNT_ID}` placeholder.
    pub account_id: Option<String>,
}

/// Why no policy could be generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IamError {
    #[error("--account-id {0:?}: not an AWS account ID (12 digits)")]
    AccountId(String),
    #[error("--role {role}: no target names this role_arn (the targets name: {known})")]
    UnknownRole { role: String, known: String },
    #[error(
        "role_arn {0:?}: no 12-digit account ID in the ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)"
    )]
    RoleAccount(String),
}

/// A generated policy: its statements, and what the user should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub statements: Vec<Statement>,
    /// Where the policy is wider than the configuration would like, and why.
    pub warnings: Vec<String>,
}

/// One statement, its fields in the order IAM documents them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: &'static str,
    pub effect: &'static str,
    pub action: Value,
    pub resource: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Document<'a> {
    version: &'static str,
    statement: &'a [Statement],
}

impl Generated {
    fn doc(&self) -> Document<'_> {
        Document {
            version: "2012-10-17",
            statement: &self.statements,
        }
    }

    /// The policy document as a JSON value.
    pub fn document(&self) -> Value {
        serde_json::to_value(self.doc()).expect("JSON serializes")
    }

    /// The document as `iam-policy` prints it and deploy/iam/ keeps it (Version first, each
    /// statement's Sid first).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.doc()).expect("JSON serializes");
        text.push('\n');
        text
    }
}

/// What the rotator does, each with the IAM actions its code makes; one statement each, in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// `workspace_tags` targets, and a region and role that names several workspaces by ID
    /// (one listing stands for their describes): ListWorkspaces (src/discover/mod.rs).
    ListWorkspaces,
    /// `workspace_ids` targets: DescribeWorkspace (src/discover/mod.rs).
    DescribeWorkspacesById,
    /// `service_accounts` targets: list accounts, list/create/delete tokens.
    RotateServiceAccountTokens,
    /// `service_account_role`: create a missing service account (src/credential/execute.rs).
    CreateMissingServiceAccounts,
    /// `api_keys` targets (src/credential/api_key.rs).
    RotateLegacyApiKeys,
    /// Every target: the secret's life (src/credential/execute.rs), records kept as tags.
    PublishToSecrets,
    /// Reading a published key back: an API key's versions (AMG cannot list keys, so the
    /// secret is their record, src/credential/api_key.rs), with `verify` an AWSPENDING
    /// version to prove before it is resumed (src/credential/execute.rs), and with
    /// `liveness_checks` the current key to prove (src/credential/token.rs). A token target
    /// with neither never reads a key it published.
    ReadPublishedKeys,
    /// `service_accounts` targets: one ListSecrets a pass reads the rotator's secrets for the
    /// credentials whose audit records stand (src/credential/census.rs), and names the secret a
    /// left-behind token was for (src/credential/token.rs); the action has no resource type.
    ListTheRotatorsSecrets,
    /// `kms_key_id`: Secrets Manager uses the key on the rotator's behalf.
    UseSecretsKmsKey,
    /// `[permissions] audit` (or enforce): ListPermissions (src/permissions.rs).
    AuditWorkspacePermissions,
    /// `[permissions] enforce`: UpdatePermissions on the workspaces the bindings cover.
    ApplyWorkspacePermissions,
    /// What UpdatePermissions resolves users and groups with: the IAM Identity Center part of
    /// the AWS managed policy AWSGrafanaWorkspacePermissionManagementV2 (no resource types).
    IdentityCenterLookupsForUpdatePermissions,
    /// Targets with `role_arn`, in the rotator's own policy.
    AssumeTargetRoles,
    /// `[coordination] mode = "dynamodb"`, in the rotator's own policy: the lease table's
    /// items (src/coordination/table.rs).
    CoordinateReplicas,
}

impl Feature {
    pub fn sid(self) -> &'static str {
        match self {
            Feature::ListWorkspaces => "ListWorkspaces",
            Feature::DescribeWorkspacesById => "DescribeWorkspacesById",
            Feature::RotateServiceAccountTokens => "RotateServiceAccountTokens",
            Feature::CreateMissingServiceAccounts => "CreateMissingServiceAccounts",
            Feature::RotateLegacyApiKeys => "RotateLegacyApiKeys",
            Feature::PublishToSecrets => "PublishTokensToSecrets",
            Feature::ReadPublishedKeys => "ReadBackPublishedKeys",
            Feature::ListTheRotatorsSecrets => "ListTheRotatorsSecrets",
            Feature::UseSecretsKmsKey => "UseTheSecretsKmsKeyThroughSecretsManager",
            Feature::AuditWorkspacePermissions => "AuditWorkspacePermissions",
            Feature::ApplyWorkspacePermissions => "ApplyWorkspacePermissions",
            Feature::IdentityCenterLookupsForUpdatePermissions => {
                "IdentityCenterLookupsForUpdatePermissions"
            }
            Feature::AssumeTargetRoles => "AssumeTheTargetsRoles",
            Feature::CoordinateReplicas => "CoordinateReplicasThroughTheLeaseTable",
        }
    }

    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Feature::ListWorkspaces => &["grafana:ListWorkspaces"],
            Feature::DescribeWorkspacesById => &["grafana:DescribeWorkspace"],
            Feature::RotateServiceAccountTokens => &[
                "grafana:ListWorkspaceServiceAccounts",
                "grafana:ListWorkspaceServiceAccountTokens",
                "grafana:CreateWorkspaceServiceAccountToken",
                "grafana:DeleteWorkspaceServiceAccountToken",
            ],
            Feature::CreateMissingServiceAccounts => &["grafana:CreateWorkspaceServiceAccount"],
            Feature::RotateLegacyApiKeys => &[
                "grafana:CreateWorkspaceApiKey",
                "grafana:DeleteWorkspaceApiKey",
            ],
            // CreateSecret with Tags is also authorized as TagResource; the records on the
            // secret (promotion, verification back-off, unpublished keys) are tags too.
            Feature::PublishToSecrets => &[
                "secretsmanager:DescribeSecret",
                "secretsmanager:CreateSecret",
                "secretsmanager:TagResource",
                "secretsmanager:UntagResource",
                "secretsmanager:PutSecretValue",
                "secretsmanager:UpdateSecretVersionStage",
            ],
            Feature::ReadPublishedKeys => &["secretsmanager:GetSecretValue"],
            Feature::ListTheRotatorsSecrets => &["secretsmanager:ListSecrets"],
            // GenerateDataKey for each new version, Decrypt to read one; never Encrypt
            // (only UpdateSecret re-encrypts, and the rotator never calls it).
            Feature::UseSecretsKmsKey => &["kms:GenerateDataKey", "kms:Decrypt"],
            Feature::AuditWorkspacePermissions => &["grafana:ListPermissions"],
            Feature::ApplyWorkspacePermissions => &["grafana:UpdatePermissions"],
            Feature::IdentityCenterLookupsForUpdatePermissions => &[
                "sso:DescribeRegisteredRegions",
                "sso:GetSharedSsoConfiguration",
                "sso:ListDirectoryAssociations",
                "sso:GetManagedApplicationInstance",
                "sso:ListProfiles",
                "sso:GetProfile",
                "sso:ListProfileAssociations",
                "sso-directory:DescribeUser",
                "sso-directory:DescribeGroup",
            ],
            Feature::AssumeTargetRoles => &["sts:AssumeRole"],
            // A consistent Scan reads the table in a round; conditional writes take, renew
            // and release.
            Feature::CoordinateReplicas => {
                &["dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem"]
            }
        }
    }
}

/// Where a target's calls land: partition, region and account, each real or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    partition: String,
    region: String,
    account: String,
}

impl Place {
    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    fn dns_suffix(&self) -> &'static str {
        if self.partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }
}

/// The partition a region belongs to (`aws` when the region is not known).
fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The partition and account of an IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/NAME`.
fn role_account(arn: &str) -> Result<(String, String), IamError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, _] if is_account_id(account) => {
            Ok(((*partition).to_owned(), (*account).to_owned()))
        }
        _ => Err(IamError::RoleAccount(arn.to_owned())),
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// What one statement grants: resources, and the condition (KMS only).
#[derive(Debug, Default)]
struct Grant {
    resources: BTreeSet<String>,
    via_services: BTreeSet<String>,
    secret_arns: BTreeSet<String>,
}

/// Everything the targets of one principal need, feature by feature.
#[derive(Debug, Default)]
struct Needs {
    grants: BTreeMap<Feature, Grant>,
    warnings: Vec<String>,
}

impl Needs {
    fn grant(&mut self, feature: Feature, resources: impl IntoIterator<Item = String>) {
        self.grants
            .entry(feature)
            .or_default()
            .resources
            .extend(resources);
    }
}

/// The least-privilege policy of `opts.principal` for `config`.
pub fn generate(config: &Config, opts: &Options) -> Result<Generated, IamError> {
    if let Some(id) = opts.account_id.as_deref().filter(|id| !is_account_id(id)) {
        return Err(IamError::AccountId(id.to_owned()));
    }
    let (targets, own) = targets_of(config, &opts.principal)?;
    let mut needs = Needs::default();
    for target in targets {
        let place = place_of(config, target, &opts.principal, opts.account_id.as_deref())?;
        target_needs(config, target, &place, &mut needs);
    }
    if own {
        let roles: BTreeSet<String> = config
            .targets
            .iter()
            .filter_map(|t| t.role_arn.clone())
            .collect();
        if !roles.is_empty() {
            needs.grant(Feature::AssumeTargetRoles, roles);
        }
        if let crate::config::Coordination::DynamoDb(lease) = &config.coordination {
            let region = lease
                .region
                .clone()
                .or_else(|| config.aws.region.clone())
                .unwrap_or_else(|| REGION_PLACEHOLDER.to_owned());
            let place = Place {
                partition: partition_of_region(&region).to_owned(),
                account: opts
                    .account_id
                    .as_deref()
                    .unwrap_or(ACCOUNT_PLACEHOLDER)
                    .to_owned(),
                region,
            };
            needs.grant(
                Feature::CoordinateReplicas,
                [place.arn("dynamodb", &format!("table/{}", lease.table))],
            );
        }
    }
    let statements = needs
        .grants
        .iter()
        .map(|(feature, grant)| statement(*feature, grant))
        .collect();
    Ok(Generated {
        statements,
        warnings: needs.warnings,
    })
}

/// The targets whose calls `principal` makes, and whether it is the rotator's own identity.
fn targets_of<'a>(
    config: &'a Config,
    principal: &Principal,
) -> Result<(Vec<&'a Target>, bool), IamError> {
    match principal {
        Principal::Rotator => Ok((
            config
                .targets
                .iter()
                .filter(|t| t.role_arn.is_none())
                .collect(),
            true,
        )),
        Principal::Role(role) => {
            let mine: Vec<&Target> = config
                .targets
                .iter()
                .filter(|t| t.role_arn.as_deref() == Some(role.as_str()))
                .collect();
            if mine.is_empty() {
                let known: BTreeSet<&str> = config
                    .targets
                    .iter()
                    .filter_map(|t| t.role_arn.as_deref())
                    .collect();
                let known = known.into_iter().collect::<Vec<_>>().join(", ");
                return Err(IamError::UnknownRole {
                    role: role.clone(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known
                    },
                });
            }
            Ok((mine, false))
        }
    }
}

/// Where `target`'s calls land for `principal`: an assumed role's account is in its ARN.
fn place_of(
    config: &Config,
    target: &Target,
    principal: &Principal,
    account_id: Option<&str>,
) -> Result<Place, IamError> {
    let region = target
        .region
        .clone()
        .or_else(|| config.aws.region.clone())
        .unwrap_or_else(|| REGION_PLACEHOLDER.to_owned());
    let (partition, account) = match principal {
        Principal::Role(role) => role_account(role)?,
        Principal::Rotator => (
            partition_of_region(&region).to_owned(),
            account_id.unwrap_or(ACCOUNT_PLACEHOLDER).to_owned(),
        ),
    };
    Ok(Place {
        partition,
        region,
        account,
    })
}

/// Adds what one target needs, feature by feature.
fn target_needs(config: &Config, target: &Target, place: &Place, needs: &mut Needs) {
    let workspaces = workspace_arns(target, place);
    match &target.workspaces {
        WorkspaceSelector::Ids(_) => {
            needs.grant(Feature::DescribeWorkspacesById, workspaces.clone());
            let scope = crate::discover::scope_of(config, target);
            if crate::discover::listed_scopes(config).contains(&scope) {
                needs.grant(Feature::ListWorkspaces, ["*".into()]);
            }
        }
        WorkspaceSelector::Tags(_) => needs.grant(Feature::ListWorkspaces, ["*".into()]),
    }
    match &target.manages {
        Manages::ServiceAccounts { bootstrap, .. } => {
            needs.grant(Feature::RotateServiceAccountTokens, workspaces.clone());
            needs.grant(Feature::ListTheRotatorsSecrets, ["*".into()]);
            if bootstrap.is_some() {
                needs.grant(Feature::CreateMissingServiceAccounts, workspaces.clone());
            }
        }
        Manages::ApiKeys { migrate_to, .. } => {
            needs.grant(Feature::RotateLegacyApiKeys, workspaces.clone());
            // On Grafana 12 the key becomes a service account (created with the key's role)
            // whose tokens take its place: the token statements, unless the target opted out.
            if migrate_to.is_some() {
                needs.grant(Feature::RotateServiceAccountTokens, workspaces.clone());
                needs.grant(Feature::ListTheRotatorsSecrets, ["*".into()]);
                needs.grant(Feature::CreateMissingServiceAccounts, workspaces.clone());
            }
        }
    }
    let secrets = secret_arns(target, place, &mut needs.warnings);
    needs.grant(Feature::PublishToSecrets, secrets.clone());
    if target.policy.verify
        || target.policy.liveness_checks
        || matches!(target.manages, Manages::ApiKeys { .. })
    {
        needs.grant(Feature::ReadPublishedKeys, secrets.clone());
    }
    if let Some(key) = &target.policy.kms_key_id {
        let arn = kms_key_arn(&target.label, key, place, &mut needs.warnings);
        let grant = needs.grants.entry(Feature::UseSecretsKmsKey).or_default();
        grant.resources.insert(arn);
        grant.via_services.insert(format!(
            "secretsmanager.{}.{}",
            place.region,
            place.dns_suffix()
        ));
        grant.secret_arns.extend(secrets);
    }
    permission_needs(config, target, place, &workspaces, needs);
}

/// `[permissions]`: ListPermissions on every managed workspace; UpdatePermissions (and the
/// Identity Center look-ups behind it) only when enforcing, on the workspaces bindings cover.
fn permission_needs(
    config: &Config,
    target: &Target,
    place: &Place,
    workspaces: &[String],
    needs: &mut Needs,
) {
    let settings = &config.permissions;
    if !settings.audit {
        return;
    }
    needs.grant(Feature::AuditWorkspacePermissions, workspaces.to_vec());
    if !settings.enforce {
        return;
    }
    let covered = if settings.bindings.iter().any(|b| b.workspace_ids.is_none()) {
        workspaces.to_vec()
    } else {
        let named: BTreeSet<&str> = settings
            .bindings
            .iter()
            .flat_map(|b| b.workspace_ids.iter().flatten().map(String::as_str))
            .collect();
        match &target.workspaces {
            WorkspaceSelector::Ids(ids) => ids
                .iter()
                .filter(|id| named.contains(id.as_str()))
                .map(|id| workspace_arn(place, id))
                .collect(),
            // Which tagged workspaces a binding's IDs are is known only at run time.
            WorkspaceSelector::Tags(_) => named.iter().map(|id| workspace_arn(place, id)).collect(),
        }
    };
    if !covered.is_empty() {
        needs.grant(Feature::ApplyWorkspacePermissions, covered);
        needs.grant(
            Feature::IdentityCenterLookupsForUpdatePermissions,
            ["*".into()],
        );
    }
}

fn workspace_arn(place: &Place, id: &str) -> String {
    place.arn("grafana", &format!("/workspaces/{id}"))
}

/// The workspaces a target reaches: its IDs, or every workspace of the account and region for
/// a tag target (which ones carry the tags is known only at run time; the AMG actions'
/// support for an `aws:ResourceTag` condition is not relied on, see README.md, IAM).
fn workspace_arns(target: &Target, place: &Place) -> Vec<String> {
    match &target.workspaces {
        WorkspaceSelector::Ids(ids) => ids.iter().map(|id| workspace_arn(place, id)).collect(),
        WorkspaceSelector::Tags(_) => vec![workspace_arn(place, "*")],
    }
}

/// The ARN patterns of the secrets a target publishes to: the `secret_name` template with what
/// the configuration fixes filled in (`{workspace_id}` of a `workspace_ids` target, `{region}`),
/// every other placeholder as `*`, and a trailing `*` for the 6-character suffix Secrets Manager
/// appends to every secret's ARN.
fn secret_arns(target: &Target, place: &Place, warnings: &mut Vec<String>) -> Vec<String> {
    let template = &target.policy.secret_name;
    if template.starts_with('{') {
        warnings.push(format!(
            "{}: secret_name {template:?} starts with a placeholder, so no fixed prefix limits \
             the secrets the policy allows: it allows every secret of the account and region \
             whose name matches the template's pattern; start secret_name with a fixed prefix \
             (\"grafana/...\") to narrow it",
            target.label
        ));
    }
    let ids: Vec<Option<&str>> = match &target.workspaces {
        WorkspaceSelector::Ids(ids) => ids.iter().map(|id| Some(id.as_str())).collect(),
        WorkspaceSelector::Tags(_) => vec![None],
    };
    ids.into_iter()
        .map(|id| {
            let mut vars: Vec<(&str, &str)> = vec![("region", place.region.as_str())];
            vars.extend(id.map(|id| ("workspace_id", id)));
            place.arn(
                "secretsmanager",
                &format!("secret:{}", name_pattern(template, &vars)),
            )
        })
        .collect()
}

/// `template` with `vars` filled in, other placeholders as `*`, ending in `*`, no `**`.
fn name_pattern(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = crate::config::render_template(template, vars);
    for var in TEMPLATE_VARS {
        out = out.replace(&format!("{{{var}}}"), "*");
    }
    out.push('*');
    while out.contains("**") {
        out = out.replace("**", "*");
    }
    out
}

/// The key ARN of `kms_key_id` (a key ARN, a key ID, or an alias). IAM authorizes the key, not
/// its alias, so an alias leaves the key ID a placeholder.
fn kms_key_arn(label: &str, key: &str, place: &Place, warnings: &mut Vec<String>) -> String {
    if key.starts_with("arn:") && key.contains(":key/") {
        return key.to_owned();
    }
    if key.starts_with("alias/") || key.contains(":alias/") {
        warnings.push(format!(
            "{label}: kms_key_id {key:?} is an alias; IAM authorizes the key itself, so the \
             policy names key/{KMS_KEY_PLACEHOLDER}: fill it with the ID of the key the alias \
             points to (or set kms_key_id to the key's ARN)"
        ));
        return place.arn("kms", &format!("key/{KMS_KEY_PLACEHOLDER}"));
    }
    place.arn("kms", &format!("key/{key}"))
}

/// One statement: the feature's Sid and actions, its resources, and for KMS the condition that
/// the key is used only by Secrets Manager, only for these secrets.
fn statement(feature: Feature, grant: &Grant) -> Statement {
    let condition = (feature == Feature::UseSecretsKmsKey).then(|| {
        json!({
            "StringEquals": {
                "kms:ViaService": one_or_many(grant.via_services.iter().cloned().collect())
            },
            "StringLike": {
                "kms:EncryptionContext:SecretARN": one_or_many(narrowest(&grant.secret_arns))
            }
        })
    });
    Statement {
        sid: feature.sid(),
        effect: "Allow",
        action: one_or_many(feature.actions().iter().map(|a| (*a).to_owned()).collect()),
        resource: one_or_many(narrowest(&grant.resources)),
        condition,
    }
}

/// The resources without those another one of them already covers (`/workspaces/g-1` beside
/// `/workspaces/*`), so the policy reads as what it allows.
fn narrowest(resources: &BTreeSet<String>) -> Vec<String> {
    resources
        .iter()
        .filter(|r| {
            !resources
                .iter()
                .any(|other| other != *r && arn_like(other, r))
        })
        .cloned()
        .collect()
}

/// IAM's ArnLike matching: `*` any run of characters (`/` included), `?` any one character.
fn arn_like(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // The classic two-pointer wildcard match, backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn one_or_many(mut items: Vec<String>) -> Value {
    if items.len() == 1 {
        Value::String(items.remove(0))
    } else {
        json!(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(text: &str) -> Config {
        crate::config::from_sources(text, &BTreeMap::new(), "test.toml").expect("valid")
    }

    fn own(text: &str) -> Generated {
        generate(
            &config(text),
            &Options {
                principal: Principal::Rotator,
                account_id: None,
            },
        )
        .unwrap()
    }

    fn sids(g: &Generated) -> Vec<String> {
        g.statements.iter().map(|s| s.sid.to_owned()).collect()
    }

    fn statement_of(g: &Generated, sid: &str) -> Value {
        g.document()["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid} in {}", g.to_json()))
            .clone()
    }

    const ONE: &str =
        "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"terraform\"]\n";

    #[test]
    fn a_default_installation_gets_tokens_and_secrets_only() {
        let g = own(ONE);
        assert_eq!(
            sids(&g),
            [
                "DescribeWorkspacesById",
                "RotateServiceAccountTokens",
                "PublishTokensToSecrets",
                "ListTheRotatorsSecrets"
            ]
        );
        assert_eq!(
            statement_of(&g, "RotateServiceAccountTokens")["Resource"],
            "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-0123456789"
        );
        assert_eq!(
            statement_of(&g, "PublishTokensToSecrets")["Resource"],
            "arn:aws:secretsmanager:${AWS_REGION}:${ACCOUNT_ID}:secret:amg-token-rotator/g-0123456789/*"
        );
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    }

    #[test]
    fn region_and_account_come_from_the_configuration_and_the_options() {
        let cfg = config(&format!("[aws]\nregion = \"cn-north-1\"\n{ONE}"));
        let g = generate(
            &cfg,
            &Options {
                principal: Principal::Rotator,
                account_id: Some("123456789012".into()),
            },
        )
        .unwrap();
        assert_eq!(
            statement_of(&g, "DescribeWorkspacesById")["Resource"],
            "arn:aws-cn:grafana:cn-north-1:123456789012:/workspaces/g-0123456789"
        );
        let bad = Options {
            principal: Principal::Rotator,
            account_id: Some("12345".into()),
        };
        assert_eq!(
            generate(&cfg, &bad).unwrap_err(),
            IamError::AccountId("12345".into())
        );
    }

    #[test]
    fn tag_targets_list_workspaces_and_reach_every_workspace() {
        let g = own("[[targets]]\nworkspace_tags = { rotator = \"on\" }\nservice_accounts = [\"a\"]\nregion = \"eu-west-1\"\nsecret_name = \"grafana/{workspace_name}/{service_account}\"\n");
        assert_eq!(statement_of(&g, "ListWorkspaces")["Resource"], "*");
        assert!(!sids(&g).contains(&"DescribeWorkspacesById".to_owned()));
        assert_eq!(
            statement_of(&g, "RotateServiceAccountTokens")["Resource"],
            "arn:aws:grafana:eu-west-1:${ACCOUNT_ID}:/workspaces/*"
        );
        assert_eq!(
            statement_of(&g, "PublishTokensToSecrets")["Resource"],
            "arn:aws:secretsmanager:eu-west-1:${ACCOUNT_ID}:secret:grafana/*/*"
        );
    }

    #[test]
    fn secret_patterns_fill_what_the_configuration_fixes() {
        let p = |t: &str, vars: &[(&str, &str)]| name_pattern(t, vars);
        assert_eq!(
            p(
                "a/{workspace_id}/{service_account}",
                &[("workspace_id", "g-1")]
            ),
            "a/g-1/*"
        );
        assert_eq!(
            p("a/{region}/{key_name}/x", &[("region", "us-east-1")]),
            "a/us-east-1/*/x*"
        );
        assert_eq!(p("{workspace_name}-{service_account}", &[]), "*-*");
    }

    #[test]
    fn a_template_that_starts_with_a_placeholder_is_warned_about() {
        let g = own("[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\nsecret_name = \"{workspace_id}/{service_account}\"\n");
        assert_eq!(g.warnings.len(), 1);
        assert!(
            g.warnings[0].contains("starts with a placeholder"),
            "{:?}",
            g.warnings
        );
        assert_eq!(
            statement_of(&g, "PublishTokensToSecrets")["Resource"],
            "arn:aws:secretsmanager:${AWS_REGION}:${ACCOUNT_ID}:secret:g-0123456789/*"
        );
    }

    #[test]
    fn each_feature_adds_its_own_statement() {
        let g = own(&format!(
            "{ONE}service_account_role = \"EDITOR\"\nkms_key_id = \"1234abcd-12ab-34cd-56ef-1234567890ab\"\n\
             [[targets]]\nworkspace_ids = [\"g-8888888888\"]\napi_keys = [\"k\"]\napi_key_role = \"VIEWER\"\nmigrate_api_keys = false\n\
             [permissions]\nenforce = true\n[[permissions.bindings]]\nworkspace_ids = [\"g-0123456789\"]\nrole = \"ADMIN\"\nusers = [\"u\"]\n"
        ));
        assert_eq!(
            statement_of(&g, "CreateMissingServiceAccounts")["Resource"],
            "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-0123456789"
        );
        assert_eq!(
            statement_of(&g, "RotateLegacyApiKeys")["Resource"],
            "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-8888888888"
        );
        assert_eq!(
            statement_of(&g, "AuditWorkspacePermissions")["Resource"],
            json!([
                "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-0123456789",
                "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-8888888888"
            ])
        );
        // Only the API-key target reads its keys back: the token target has no `verify`.
        assert_eq!(
            statement_of(&g, "ReadBackPublishedKeys")["Resource"],
            "arn:aws:secretsmanager:${AWS_REGION}:${ACCOUNT_ID}:secret:amg-token-rotator/g-8888888888/*"
        );
        // Only the workspace a binding covers can be changed.
        assert_eq!(
            statement_of(&g, "ApplyWorkspacePermissions")["Resource"],
            "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-0123456789"
        );
        let kms = statement_of(&g, "UseTheSecretsKmsKeyThroughSecretsManager");
        assert_eq!(
            kms["Resource"],
            "arn:aws:kms:${AWS_REGION}:${ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        );
        assert_eq!(
            kms["Condition"]["StringEquals"]["kms:ViaService"],
            "secretsmanager.${AWS_REGION}.amazonaws.com"
        );
        // The key is used only for the secrets of the target that names it.
        assert_eq!(
            kms["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
            "arn:aws:secretsmanager:${AWS_REGION}:${ACCOUNT_ID}:secret:amg-token-rotator/g-0123456789/*"
        );
    }

    /// Several workspaces named by ID in one region and role are read from one ListWorkspaces
    /// (src/discover/mod.rs), so the policy grants it; a lone one is described only.
    #[test]
    fn several_workspaces_by_id_in_one_scope_are_listed() {
        let one =
            own("[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\n");
        assert!(!sids(&one).contains(&"ListWorkspaces".to_owned()));
        let two = own("[[targets]]\nworkspace_ids = [\"g-0123456789\", \"g-1123456789\"]\nservice_accounts = [\"a\"]\n");
        assert_eq!(statement_of(&two, "ListWorkspaces")["Resource"], "*");
        assert!(sids(&two).contains(&"DescribeWorkspacesById".to_owned()));
    }

    /// With `[coordination]`, the rotator's own policy reaches the lease table, in the table's
    /// region; a role's policy does not (the rotator's own identity writes the leases).
    #[test]
    fn coordination_grants_the_lease_table_only() {
        let base = "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\n";
        assert!(!sids(&own(base)).contains(&"CoordinateReplicasThroughTheLeaseTable".to_owned()));
        let g = own(&format!(
            "[coordination]\nmode = \"dynamodb\"\ntable = \"leases\"\nregion = \"eu-west-1\"\n{base}"
        ));
        assert_eq!(
            statement_of(&g, "CoordinateReplicasThroughTheLeaseTable")["Resource"],
            "arn:aws:dynamodb:eu-west-1:${ACCOUNT_ID}:table/leases"
        );
    }

    /// A token target reads its published keys back only to prove them: `verify` (a pending
    /// version) or `liveness_checks` (the current key, on passes that trust the audit record).
    #[test]
    fn token_targets_read_keys_back_only_to_prove_them() {
        let base = "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\n";
        assert!(!sids(&own(base)).contains(&"ReadBackPublishedKeys".to_owned()));
        for extra in ["verify = true\n", "liveness_checks = true\n"] {
            let g = own(&format!("{base}{extra}"));
            assert_eq!(
                statement_of(&g, "ReadBackPublishedKeys")["Resource"],
                "arn:aws:secretsmanager:${AWS_REGION}:${ACCOUNT_ID}:secret:amg-token-rotator/g-0123456789/*",
                "{extra}"
            );
        }
    }

    #[test]
    fn api_keys_that_migrate_on_grafana_12_get_the_token_statements_on_their_workspaces() {
        let keys = "[[targets]]\nworkspace_ids = [\"g-8888888888\"]\napi_keys = [\"k\"]\napi_key_role = \"VIEWER\"\n";
        let g = own(keys);
        let ws = "arn:aws:grafana:${AWS_REGION}:${ACCOUNT_ID}:/workspaces/g-8888888888";
        for sid in [
            "RotateServiceAccountTokens",
            "CreateMissingServiceAccounts",
            "RotateLegacyApiKeys",
        ] {
            assert_eq!(statement_of(&g, sid)["Resource"], ws, "{sid}");
        }
        let opted_out = own(&format!("{keys}migrate_api_keys = false\n"));
        assert!(!sids(&opted_out).contains(&"RotateServiceAccountTokens".to_owned()));
        assert!(!sids(&opted_out).contains(&"CreateMissingServiceAccounts".to_owned()));
    }

    #[test]
    fn a_resource_another_covers_is_left_out() {
        let set: BTreeSet<String> = ["a:/workspaces/*", "a:/workspaces/g-1", "b:/workspaces/g-1"]
            .map(String::from)
            .into();
        assert_eq!(narrowest(&set), ["a:/workspaces/*", "b:/workspaces/g-1"]);
        assert!(arn_like("x/*/y?", "x/a/b/yz"));
        assert!(!arn_like("x/*/y?", "x/a/b/y"));
        assert!(!arn_like("x/g-1", "x/g-12"));
    }

    #[test]
    fn audit_alone_never_grants_update_permissions() {
        let g = own(&format!("{ONE}[permissions]\naudit = true\n"));
        let s = sids(&g);
        assert!(s.contains(&"AuditWorkspacePermissions".to_owned()));
        assert!(
            !s.contains(&"ApplyWorkspacePermissions".to_owned()),
            "{s:?}"
        );
        assert!(!s.contains(&"IdentityCenterLookupsForUpdatePermissions".to_owned()));
    }

    #[test]
    fn an_alias_leaves_the_key_a_placeholder_with_a_warning() {
        let g = own(&format!("{ONE}kms_key_id = \"alias/rotator\"\n"));
        assert_eq!(
            statement_of(&g, "UseTheSecretsKmsKeyThroughSecretsManager")["Resource"],
            "arn:aws:kms:${AWS_REGION}:${ACCOUNT_ID}:key/${KMS_KEY_ID}"
        );
        assert!(g.warnings[0].contains("alias"), "{:?}", g.warnings);
    }

    const ROLES: &str = "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\n\
        [[targets]]\nworkspace_ids = [\"g-1111111111\"]\nservice_accounts = [\"a\"]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::210987654321:role/rotator\"\n\
        [[targets]]\nworkspace_ids = [\"g-2222222222\"]\nservice_accounts = [\"b\"]\nrole_arn = \"arn:aws:iam::210987654321:role/rotator\"\n";

    #[test]
    fn the_rotator_assumes_exactly_the_roles_named_and_grants_nothing_for_their_targets() {
        let g = own(ROLES);
        assert_eq!(
            statement_of(&g, "AssumeTheTargetsRoles")["Resource"],
            "arn:aws:iam::210987654321:role/rotator"
        );
        let text = g.to_json();
        assert!(
            !text.contains("g-1111111111") && !text.contains("g-2222222222"),
            "{text}"
        );
    }

    #[test]
    fn an_assumed_role_gets_its_targets_in_its_own_account() {
        let role = "arn:aws:iam::210987654321:role/rotator";
        let g = generate(
            &config(ROLES),
            &Options {
                principal: Principal::Role(role.into()),
                account_id: Some("123456789012".into()),
            },
        )
        .unwrap();
        assert_eq!(
            statement_of(&g, "DescribeWorkspacesById")["Resource"],
            json!([
                "arn:aws:grafana:${AWS_REGION}:210987654321:/workspaces/g-2222222222",
                "arn:aws:grafana:eu-west-1:210987654321:/workspaces/g-1111111111"
            ])
        );
        assert!(!sids(&g).contains(&"AssumeTheTargetsRoles".to_owned()));
        assert!(!g.to_json().contains("g-0123456789"));
        let err = generate(
            &config(ROLES),
            &Options {
                principal: Principal::Role("arn:aws:iam::111111111111:role/x".into()),
                account_id: None,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("the targets name: arn:aws:iam::210987654321:role/rotator"),
            "{err}"
        );
    }
}
