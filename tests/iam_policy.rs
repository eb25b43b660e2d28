//! The IAM policy `amg-token-rotator iam-policy` generates grants exactly the AWS actions the
//! configuration's features make the code call: with every feature on, every SDK call the code
//! makes is allowed and nothing else is; each feature's actions are allowed exactly when that
//! feature is on; and `deploy/iam/` holds the generated policies of the example configurations.
//!
//! The calls are read from the source, not listed by hand: every `self.client.<operation>()`
//! chain in a file that imports an `aws_sdk_*::Client`, mapped to its IAM action
//! (`create_workspace_service_account_token` → `grafana:CreateWorkspaceServiceAccountToken`),
//! plus the actions AWS authorizes implicitly (tags on CreateSecret, the KMS key behind a
//! secret, AssumeRole for `role_arn`, IAM Identity Center look-ups behind UpdatePermissions),
//! less those IAM does not authorize at all (STS GetCallerIdentity). A file whose SDK calls the scanner cannot attribute fails the test rather than being
//! skipped, so a call written another way cannot slip past it; and an action this test cannot
//! attribute to a feature (`FEATURE_OF`) fails it too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use amg_token_rotator::config;
use amg_token_rotator::iam::{self, Options, Principal};

/// The generated policies kept in deploy/iam/, and the configuration each is generated from.
const DEPLOYED: &[(&str, &str)] = &[
    (
        "deploy/kubernetes/base/config.toml",
        "deploy/iam/policy.json",
    ),
    ("config/example.toml", "deploy/iam/example.json"),
    (
        "deploy/kubernetes/replicated/config.toml",
        "deploy/iam/policy-replicated.json",
    ),
];

/// The SDK crates the rotator uses and the IAM service prefix of each.
const SERVICES: &[(&str, &str)] = &[
    ("aws_sdk_dynamodb", "dynamodb"),
    ("aws_sdk_grafana", "grafana"),
    ("aws_sdk_secretsmanager", "secretsmanager"),
    ("aws_sdk_sts", "sts"),
];

/// What AMG's UpdatePermissions needs from IAM Identity Center to resolve users and groups:
/// the Identity Center part of the AWS managed policy AWSGrafanaWorkspacePermissionManagementV2.
const IDENTITY_CENTER_FOR_UPDATE_PERMISSIONS: &[&str] = &[
    "sso:DescribeRegisteredRegions",
    "sso:GetSharedSsoConfiguration",
    "sso:ListDirectoryAssociations",
    "sso:GetManagedApplicationInstance",
    "sso:ListProfiles",
    "sso:GetProfile",
    "sso:ListProfileAssociations",
    "sso-directory:DescribeUser",
    "sso-directory:DescribeGroup",
];

/// Calls IAM does not authorize, so no policy grants them. GetCallerIdentity: "No permissions
/// are required to perform this operation. If an administrator attaches a policy to your
/// identity that explicitly denies access to the sts:GetCallerIdentity action, you can still
/// perform this operation" (STS API reference).
const NEEDS_NO_PERMISSION: &[&str] = &["sts:GetCallerIdentity"];

/// Actions that support no resource-level permissions: the only ones that may use `"*"`.
fn may_use_any_resource(action: &str) -> bool {
    // secretsmanager:ListSecrets has no resource type in the Service Authorization Reference
    // ("Actions, resources, and condition keys for AWS Secrets Manager").
    action == "grafana:ListWorkspaces"
        || action == "secretsmanager:ListSecrets"
        || action.starts_with("sso:")
        || action.starts_with("sso-directory:")
}

/// One SDK call found in the source.
#[derive(Debug, Clone)]
struct SdkCall {
    /// `grafana:ListWorkspaces`.
    action: String,
    /// `src/aws/grafana_sdk.rs`.
    file: String,
    /// The fluent chain from `self.client` to `.send()`, to see which parameters it sets.
    chain: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The IAM prefix of the SDK client a file imports, if it imports one.
fn sdk_service(source: &str) -> Result<Option<&'static str>, String> {
    let mut found = None;
    for line in source.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("use aws_sdk_") else {
            continue;
        };
        if !rest.ends_with("::Client;") {
            continue;
        }
        let krate = format!("aws_sdk_{}", rest.trim_end_matches("::Client;"));
        match SERVICES.iter().find(|(k, _)| *k == krate) {
            Some((_, prefix)) => found = Some(*prefix),
            None => {
                return Err(format!(
                    "{krate}::Client is imported, but this test knows no IAM prefix for it: \
                     add it to SERVICES"
                ))
            }
        }
    }
    Ok(found)
}

fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Every `self.client.<operation>(…)…send()` chain of one file that imports an SDK client,
/// however rustfmt breaks it over lines (`self\n.client\n.list_workspaces()`): the scan runs
/// on the source with all whitespace removed. Refuses a file in which `.send()` occurs more
/// often than chains were found: an SDK call made some other way (a local binding of the
/// client, a helper) would otherwise go unseen.
fn sdk_calls(file: &str, source: &str) -> Result<Vec<SdkCall>, String> {
    let Some(prefix) = sdk_service(source).map_err(|e| format!("{file}: {e}"))? else {
        return Ok(Vec::new());
    };
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut calls = Vec::new();
    for (at, _) in compact.match_indices("self.client.") {
        let after = &compact[at + "self.client.".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !after[name.len()..].starts_with('(') {
            continue;
        }
        let Some(end) = after.find(".send()") else {
            return Err(format!(
                "{file}: self.client.{name}() is never sent: the scanner expects one chain per call"
            ));
        };
        calls.push(SdkCall {
            action: format!("{prefix}:{}", pascal_case(&name)),
            file: file.to_owned(),
            chain: after[..end].to_owned(),
        });
    }
    let sends = compact.matches(".send()").count();
    if sends != calls.len() {
        return Err(format!(
            "{file}: {sends} .send() but {} self.client.<operation>() chains: an SDK call is made \
             in a way this test cannot attribute to an operation; write it as \
             self.client.<operation>()….send() or teach the scanner",
            calls.len()
        ));
    }
    Ok(calls)
}

/// Each IAM action the code needs, with why.
fn required_actions(
    calls: &[SdkCall],
    sources: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut need = BTreeMap::new();
    for call in calls {
        if NEEDS_NO_PERMISSION.contains(&call.action.as_str()) {
            continue;
        }
        need.entry(call.action.clone())
            .or_insert_with(|| format!("called in {}", call.file));
        if call.action == "secretsmanager:CreateSecret" {
            if call.chain.contains("tags(") {
                need.insert(
                    "secretsmanager:TagResource".into(),
                    format!(
                        "CreateSecret with Tags ({}) is also authorized as TagResource",
                        call.file
                    ),
                );
            }
            if call.chain.contains("kms_key_id(") {
                for action in ["kms:GenerateDataKey", "kms:Decrypt"] {
                    need.insert(
                        action.into(),
                        format!(
                            "CreateSecret sets KmsKeyId ({}): Secrets Manager uses the customer managed \
                             key on the caller's behalf for PutSecretValue and GetSecretValue",
                            call.file
                        ),
                    );
                }
            }
        }
        if call.action == "grafana:UpdatePermissions" {
            for action in IDENTITY_CENTER_FOR_UPDATE_PERMISSIONS {
                need.insert(
                    (*action).into(),
                    format!(
                        "UpdatePermissions ({}) resolves IAM Identity Center users and groups",
                        call.file
                    ),
                );
            }
        }
    }
    for (file, source) in sources {
        if source.contains("AssumeRoleProvider") {
            need.insert(
                "sts:AssumeRole".into(),
                format!("{file} assumes a target's role_arn"),
            );
        }
    }
    need
}

/// The actions the policy allows. Refuses what would allow more than its list says:
/// wildcards in actions, NotAction, NotResource, `"*"` for an action that can be scoped.
fn granted_actions(policy: &serde_json::Value) -> Result<BTreeSet<String>, String> {
    fn strings(v: &serde_json::Value) -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        one @ serde_json::Value::Object(_) => vec![one.clone()],
        _ => return Err("the policy has no Statement".into()),
    };
    let mut granted = BTreeSet::new();
    let mut problems = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        let sid = st["Sid"].as_str().unwrap_or("(no Sid)");
        if st["Effect"] != "Allow" {
            continue;
        }
        for key in ["NotAction", "NotResource"] {
            if st.get(key).is_some() {
                problems.push(format!(
                    "Statement[{i}] {sid}: {key} allows more than it names"
                ));
            }
        }
        let actions = strings(&st["Action"]);
        let resources = strings(&st["Resource"]);
        for action in &actions {
            if action.contains('*') || action.contains('?') {
                problems.push(format!("Statement[{i}] {sid}: wildcard action {action}"));
            }
            if resources.iter().any(|r| r == "*") && !may_use_any_resource(action) {
                problems.push(format!(
                    "Statement[{i}] {sid}: {action} is granted on \"*\" but can be scoped to resources"
                ));
            }
            granted.insert(action.clone());
        }
    }
    if problems.is_empty() {
        Ok(granted)
    } else {
        Err(problems.join("\n"))
    }
}

/// Both directions: what the code needs and the policy lacks, and what the policy grants
/// that the code never needs.
fn compare(need: &BTreeMap<String, String>, granted: &BTreeSet<String>) -> Result<(), String> {
    let missing: Vec<String> = need
        .iter()
        .filter(|(a, _)| !granted.contains(*a))
        .map(|(a, why)| format!("  missing from the policy: {a} ({why})"))
        .collect();
    let extra: Vec<String> = granted
        .iter()
        .filter(|a| !need.contains_key(*a))
        .map(|a| format!("  granted but never needed by the code: {a}"))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(missing
            .into_iter()
            .chain(extra)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

fn scan(sources: &BTreeMap<String, String>) -> Result<Vec<SdkCall>, String> {
    let mut calls = Vec::new();
    for (file, source) in sources {
        calls.extend(sdk_calls(file, source)?);
    }
    Ok(calls)
}

fn repo_sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (name, text)
        })
        .collect()
}

/// What the configuration turns on, as this test sees it (independently of src/iam.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// `workspace_ids`: discover.rs describes each workspace.
    ById,
    /// `workspace_tags`: discover.rs lists the workspaces.
    ByTag,
    /// `service_accounts`: discover.rs lists accounts, token.rs lists/creates/deletes tokens and
    /// lists the rotator's secrets to name those left behind.
    Tokens,
    /// `service_account_role`: execute.rs creates a missing service account.
    Bootstrap,
    /// `api_keys`: api_key.rs creates and deletes keys.
    ApiKeys,
    /// Every target: execute.rs and api_key.rs keep the secret and its records (tags).
    Publish,
    /// `api_keys` or `verify`: api_key.rs reads the key versions back; execute.rs reads an
    /// AWSPENDING version to prove it before resuming.
    ReadBack,
    /// `kms_key_id`: Secrets Manager uses the key for the rotator.
    Kms,
    /// `[permissions] audit`: permissions.rs lists permissions.
    Audit,
    /// `[permissions] enforce`: permissions.rs applies the drift.
    Enforce,
    /// `role_arn`: connect.rs assumes the role.
    AssumeRole,
    /// `[coordination] mode = "dynamodb"`: coordination/table.rs reads and writes leases.
    Coordinate,
}

/// The feature that makes each action needed. An action the scan finds that is not here fails
/// `every_action_the_code_needs_belongs_to_a_feature`.
const FEATURE_OF: &[(&str, Use)] = &[
    ("grafana:DescribeWorkspace", Use::ById),
    ("grafana:ListWorkspaces", Use::ByTag),
    ("grafana:ListWorkspaceServiceAccounts", Use::Tokens),
    ("grafana:ListWorkspaceServiceAccountTokens", Use::Tokens),
    ("grafana:CreateWorkspaceServiceAccountToken", Use::Tokens),
    ("grafana:DeleteWorkspaceServiceAccountToken", Use::Tokens),
    ("secretsmanager:ListSecrets", Use::Tokens),
    ("grafana:CreateWorkspaceServiceAccount", Use::Bootstrap),
    ("grafana:CreateWorkspaceApiKey", Use::ApiKeys),
    ("grafana:DeleteWorkspaceApiKey", Use::ApiKeys),
    ("secretsmanager:DescribeSecret", Use::Publish),
    ("secretsmanager:CreateSecret", Use::Publish),
    ("secretsmanager:TagResource", Use::Publish),
    ("secretsmanager:UntagResource", Use::Publish),
    ("secretsmanager:PutSecretValue", Use::Publish),
    ("secretsmanager:UpdateSecretVersionStage", Use::Publish),
    ("secretsmanager:GetSecretValue", Use::ReadBack),
    ("kms:GenerateDataKey", Use::Kms),
    ("kms:Decrypt", Use::Kms),
    ("grafana:ListPermissions", Use::Audit),
    ("grafana:UpdatePermissions", Use::Enforce),
    ("sts:AssumeRole", Use::AssumeRole),
    ("dynamodb:Scan", Use::Coordinate),
    ("dynamodb:PutItem", Use::Coordinate),
    ("dynamodb:DeleteItem", Use::Coordinate),
];

fn feature_of(action: &str) -> Result<Use, String> {
    if IDENTITY_CENTER_FOR_UPDATE_PERMISSIONS.contains(&action) {
        return Ok(Use::Enforce);
    }
    FEATURE_OF
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, u)| *u)
        .ok_or_else(|| {
            format!("{action}: no feature makes this call in FEATURE_OF; say which one does")
        })
}

/// What the code needs, from the scan of src/.
fn code_needs() -> BTreeMap<String, String> {
    let sources = repo_sources();
    let calls = scan(&sources).unwrap_or_else(|e| panic!("{e}"));
    required_actions(&calls, &sources)
}

fn load(text: &str) -> config::Config {
    config::from_sources(text, &BTreeMap::new(), "test.toml")
        .unwrap_or_else(|e| panic!("invalid test configuration:\n{e}\n{text}"))
}

fn policy(text: &str, principal: Principal) -> serde_json::Value {
    let opts = Options {
        principal,
        account_id: None,
    };
    iam::generate(&load(text), &opts)
        .unwrap_or_else(|e| panic!("{e}"))
        .document()
}

fn granted(text: &str) -> BTreeSet<String> {
    granted_actions(&policy(text, Principal::Rotator)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const BY_ID: &str =
    "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"terraform\"]\n";
const BY_TAG: &str =
    "[[targets]]\nworkspace_tags = { rotator = \"on\" }\nservice_accounts = [\"ci-*\"]\n";
const API_KEYS: &str = "[[targets]]\nworkspace_ids = [\"g-8888888888\"]\napi_keys = [\"sync\"]\napi_key_role = \"EDITOR\"\nsecret_name = \"amg-token-rotator/{workspace_id}/api-key/{key_name}\"\n";
const ASSUMING: &str = "[[targets]]\nworkspace_ids = [\"g-1111111111\"]\nservice_accounts = [\"a\"]\nrole_arn = \"arn:aws:iam::210987654321:role/rotator\"\n";
const BOOTSTRAP: &str = "service_account_role = \"EDITOR\"\n";
const KMS: &str = "kms_key_id = \"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\n";
const AUDIT: &str = "[permissions]\naudit = true\n";
const COORDINATION: &str = "[coordination]\nmode = \"dynamodb\"\n";
const ENFORCE: &str = "[permissions]\nenforce = true\n[[permissions.bindings]]\nrole = \"ADMIN\"\ngroups = [\"admins\"]\n";

/// Each configuration, and the features it turns on.
fn cases() -> Vec<(String, Vec<Use>)> {
    use Use::*;
    vec![
        (BY_ID.into(), vec![ById, Tokens, Publish]),
        (BY_TAG.into(), vec![ByTag, Tokens, Publish]),
        // On Grafana 12 the keys become service accounts with tokens, unless opted out.
        (
            API_KEYS.into(),
            vec![ById, Tokens, Bootstrap, ApiKeys, Publish, ReadBack],
        ),
        (
            format!("{API_KEYS}migrate_api_keys = false\n"),
            vec![ById, ApiKeys, Publish, ReadBack],
        ),
        (
            format!("{BY_ID}verify = true\n"),
            vec![ById, Tokens, Publish, ReadBack],
        ),
        (
            format!("{BY_ID}{BOOTSTRAP}"),
            vec![ById, Tokens, Bootstrap, Publish],
        ),
        (format!("{BY_ID}{KMS}"), vec![ById, Tokens, Publish, Kms]),
        (
            format!("{BY_ID}{AUDIT}"),
            vec![ById, Tokens, Publish, Audit],
        ),
        (
            format!("{BY_ID}{ENFORCE}"),
            vec![ById, Tokens, Publish, Audit, Enforce],
        ),
        // The assumed role's targets make no call with the rotator's own identity.
        (
            format!("{BY_ID}{ASSUMING}"),
            vec![ById, Tokens, Publish, AssumeRole],
        ),
        (ASSUMING.into(), vec![AssumeRole]),
        (
            format!("{COORDINATION}{BY_ID}"),
            vec![ById, Tokens, Publish, Coordinate],
        ),
        (every_feature(), every_use()),
    ]
}

fn every_use() -> Vec<Use> {
    use Use::*;
    vec![
        ById, ByTag, Tokens, Bootstrap, ApiKeys, Publish, ReadBack, Kms, Audit, Enforce,
        AssumeRole, Coordinate,
    ]
}

/// Every feature on, in the rotator's own targets (and one assumed role for AssumeRole).
fn every_feature() -> String {
    format!(
        "{COORDINATION}[defaults]\n{BOOTSTRAP}{KMS}{BY_ID}{BY_TAG}{API_KEYS}{ASSUMING}{ENFORCE}"
    )
}

#[test]
fn every_action_the_code_needs_belongs_to_a_feature() {
    let problems: Vec<String> = code_needs()
        .keys()
        .filter_map(|a| feature_of(a).err())
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn with_every_feature_on_every_sdk_call_is_allowed_and_nothing_else() {
    let text = every_feature();
    if let Err(e) = compare(&code_needs(), &granted(&text)) {
        panic!("iam-policy for every feature does not match the AWS calls in src/:\n{e}");
    }
}

#[test]
fn each_feature_is_allowed_exactly_when_it_is_on() {
    let need = code_needs();
    for (text, on) in cases() {
        let expected: BTreeMap<String, String> = need
            .iter()
            .filter(|(a, _)| on.contains(&feature_of(a).unwrap()))
            .map(|(a, why)| (a.clone(), why.clone()))
            .collect();
        if let Err(e) = compare(&expected, &granted(&text)) {
            panic!("features {on:?}:\n{e}\nconfiguration:\n{text}");
        }
    }
}

#[test]
fn a_default_configuration_grants_none_of_the_dangerous_actions() {
    let g = granted(BY_ID);
    for absent in [
        "grafana:UpdatePermissions",
        "grafana:CreateWorkspaceServiceAccount",
        "grafana:CreateWorkspaceApiKey",
        "grafana:DeleteWorkspaceApiKey",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "sts:AssumeRole",
        // A token target without verify never reads back a key it published.
        "secretsmanager:GetSecretValue",
    ] {
        assert!(!g.contains(absent), "{absent} granted: {g:?}");
    }
    assert!(
        !g.iter().any(|a| a.starts_with("sso")),
        "Identity Center granted: {g:?}"
    );
    assert!(
        g.contains("grafana:CreateWorkspaceServiceAccountToken"),
        "{g:?}"
    );
}

fn statement(policy: &serde_json::Value, action: &str) -> serde_json::Value {
    policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .find(|s| strings(&s["Action"]).iter().any(|a| a == action))
        .unwrap_or_else(|| panic!("no statement grants {action}: {policy}"))
        .clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn assume_role_is_granted_on_exactly_the_roles_named() {
    let other = "[[targets]]\nworkspace_ids = [\"g-2222222222\"]\nservice_accounts = [\"b\"]\nrole_arn = \"arn:aws:iam::333333333333:role/other\"\n";
    let text = format!("{BY_ID}{ASSUMING}{ASSUMING}{other}");
    let p = policy(&text, Principal::Rotator);
    let resources: BTreeSet<String> = strings(&statement(&p, "sts:AssumeRole")["Resource"])
        .into_iter()
        .collect();
    let named: BTreeSet<String> = load(&text)
        .targets
        .iter()
        .filter_map(|t| t.role_arn.clone())
        .collect();
    assert_eq!(resources, named);
    // The assumed role's own policy: its targets, in its account, and no AssumeRole.
    let role = policy(
        &text,
        Principal::Role("arn:aws:iam::210987654321:role/rotator".into()),
    );
    let workspaces = strings(&statement(&role, "grafana:DescribeWorkspace")["Resource"]);
    assert_eq!(
        workspaces,
        ["arn:aws:grafana:${AWS_REGION}:210987654321:/workspaces/g-1111111111"]
    );
    assert!(!role.to_string().contains("sts:AssumeRole"), "{role}");
}

/// IAM's ArnLike: `*` any run of characters, `?` one character.
fn arn_like(pattern: &str, value: &str) -> bool {
    match (pattern.chars().next(), value.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            arn_like(&pattern[1..], value)
                || value
                    .chars()
                    .next()
                    .is_some_and(|c| arn_like(pattern, &value[c.len_utf8()..]))
        }
        (Some(p), Some(v)) if p == '?' || p == v => {
            arn_like(&pattern[p.len_utf8()..], &value[v.len_utf8()..])
        }
        _ => false,
    }
}

/// The secret ARNs a configuration's credentials would publish to, for sample names.
fn example_secret_arns(cfg: &config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for t in &cfg.targets {
        let ids = match &t.workspaces {
            config::WorkspaceSelector::Ids(ids) => ids.clone(),
            config::WorkspaceSelector::Tags(_) => vec!["g-0000000000".into()],
        };
        for id in ids {
            for name in t.exact_names().chain(["ci-deploy"]) {
                let secret = config::render_template(
                    &t.policy.secret_name,
                    &[
                        ("workspace_id", id.as_str()),
                        ("workspace_name", "prod"),
                        ("service_account", name),
                        ("key_name", name),
                        ("region", "us-east-1"),
                    ],
                );
                // Secrets Manager appends "-" and 6 random characters to the ARN.
                out.push(format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret}-AbC123"
                ));
            }
        }
    }
    out
}

fn render(policy: &str) -> String {
    policy
        .replace("${AWS_REGION}", "us-east-1")
        .replace("${ACCOUNT_ID}", "123456789012")
}

#[test]
fn the_example_configurations_secrets_are_allowed() {
    for (config_file, _) in DEPLOYED {
        let text = std::fs::read_to_string(root().join(config_file)).unwrap();
        let cfg = load(&text);
        let p = policy(&text, Principal::Rotator);
        let allowed: Vec<String> =
            strings(&statement(&p, "secretsmanager:PutSecretValue")["Resource"])
                .iter()
                .map(|r| render(r))
                .collect();
        for arn in example_secret_arns(&cfg) {
            assert!(
                allowed.iter().any(|r| arn_like(r, &arn)),
                "{config_file}: {arn} is not allowed by {allowed:?}"
            );
        }
    }
    // The matcher refuses what the old hand-written policy got wrong for the example.
    let old = "arn:aws:secretsmanager:us-east-1:123456789012:secret:amg-token-rotator/*";
    assert!(!arn_like(
        old,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:grafana/prod/x-AbC123"
    ));
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn deploy_iam_holds_the_generated_policies_of_the_example_configurations() {
    let mut stale = Vec::new();
    for (config_file, policy_file) in DEPLOYED {
        let text = std::fs::read_to_string(root().join(config_file)).unwrap();
        let opts = Options {
            principal: Principal::Rotator,
            account_id: None,
        };
        let generated = iam::generate(&load(&text), &opts).unwrap().to_json();
        let kept = std::fs::read_to_string(root().join(policy_file)).unwrap_or_default();
        if kept != generated {
            stale.push(format!(
                "  cargo run -q -- iam-policy --config {config_file} > {policy_file}"
            ));
        }
        let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
        granted_actions(&doc).unwrap_or_else(|e| panic!("{policy_file}:\n{e}"));
    }
    assert!(
        stale.is_empty(),
        "deploy/iam/ is not what iam-policy generates; rewrite it with:\n{}",
        stale.join("\n")
    );
}

fn rotator(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amg-token-rotator"))
        .args(args)
        .current_dir(root())
        .env_remove("AMG_ROTATOR__DAEMON__LISTEN")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_prints_the_deployed_policy_and_refuses_bad_input_like_check_config() {
    let (code, stdout, stderr) = rotator(&["--config", "config/example.toml", "iam-policy"]);
    assert_eq!(code, Some(0), "{stderr}");
    let kept = std::fs::read_to_string(root().join("deploy/iam/example.json")).unwrap();
    assert_eq!(stdout, kept);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[targets]]\nworkspace_ids = [\"g-XYZ\"]\nservice_accounts = [\"a\"]\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let (code, stdout, stderr) = rotator(&["--config", bad, "iam-policy"]);
    let checked = rotator(&["--config", bad, "check-config"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("targets[0].workspace_ids[0] = \"g-XYZ\""),
        "{stderr}"
    );
    assert_eq!((code, stderr), (checked.0, checked.2));
    let (code, _, stderr) = rotator(&[
        "--config",
        "config/example.toml",
        "iam-policy",
        "--role",
        "arn:aws:iam::111111111111:role/nobody",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no target names this role_arn"), "{stderr}");
}

#[test]
fn the_scanner_sees_the_calls_the_rotator_is_known_to_make() {
    // Guards against a scanner that silently finds nothing (and so demands nothing).
    let sources = repo_sources();
    let calls = scan(&sources).unwrap();
    let actions: BTreeSet<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    for known in [
        "grafana:ListWorkspaces",
        "grafana:CreateWorkspaceServiceAccountToken",
        "grafana:DeleteWorkspaceServiceAccountToken",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ] {
        assert!(
            actions.contains(known),
            "{known} not found in src/: {actions:?}"
        );
    }
    let need = required_actions(&calls, &sources);
    for implied in [
        "secretsmanager:TagResource",
        "kms:GenerateDataKey",
        "sts:AssumeRole",
    ] {
        assert!(
            need.contains_key(implied),
            "{implied} not implied: {need:?}"
        );
    }
}

fn one_file(source: &str) -> BTreeMap<String, String> {
    [("src/x.rs".to_owned(), source.to_owned())].into()
}

fn policy_of(actions: &[&str], resource: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": resource }]
    })
}

const SECRETS_SOURCE: &str = "use aws_sdk_secretsmanager::Client;\n\
    async fn f(&self) { self.client\n    .describe_secret()\n    .secret_id(n)\n    .send()\n    .await; }\n\
    async fn g(&self) { self.client.delete_secret().secret_id(n).send().await; }\n";

#[test]
fn a_call_the_policy_lacks_is_reported_by_name() {
    let sources = one_file(SECRETS_SOURCE);
    let need = required_actions(&scan(&sources).unwrap(), &sources);
    let granted = granted_actions(&policy_of(
        &["secretsmanager:DescribeSecret"],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x/*",
    ))
    .unwrap();
    let err = compare(&need, &granted).unwrap_err();
    assert!(
        err.contains("missing from the policy: secretsmanager:DeleteSecret (called in src/x.rs)"),
        "{err}"
    );
    assert!(!err.contains("DescribeSecret"), "{err}");
}

#[test]
fn an_action_the_code_never_needs_is_reported_by_name() {
    let sources = one_file(SECRETS_SOURCE);
    let need = required_actions(&scan(&sources).unwrap(), &sources);
    let granted = granted_actions(&policy_of(
        &[
            "secretsmanager:DescribeSecret",
            "secretsmanager:DeleteSecret",
            "secretsmanager:RestoreSecret",
        ],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x/*",
    ))
    .unwrap();
    let err = compare(&need, &granted).unwrap_err();
    assert!(
        err.contains("granted but never needed by the code: secretsmanager:RestoreSecret"),
        "{err}"
    );
}

#[test]
fn implied_actions_follow_the_parameters_a_call_sets() {
    let sources = one_file(
        "use aws_sdk_secretsmanager::Client;\n\
         fn f(&self) { self.client.create_secret().name(n).set_kms_key_id(k).set_tags(t).send(); }\n\
         fn g() { aws_config::sts::AssumeRoleProvider::builder(arn); }\n",
    );
    let need = required_actions(&scan(&sources).unwrap(), &sources);
    let names: Vec<&str> = need.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "secretsmanager:CreateSecret",
            "secretsmanager:TagResource",
            "sts:AssumeRole"
        ]
    );
    let plain = one_file(
        "use aws_sdk_secretsmanager::Client;\nfn f(&self) { self.client.create_secret().name(n).send(); }\n",
    );
    let need = required_actions(&scan(&plain).unwrap(), &plain);
    assert_eq!(
        need.keys().collect::<Vec<_>>(),
        ["secretsmanager:CreateSecret"]
    );
}

#[test]
fn update_permissions_implies_the_identity_center_lookups() {
    let sources = one_file(
        "use aws_sdk_grafana::Client;\nfn f(&self) { self.client.update_permissions().send(); }\n",
    );
    let need = required_actions(&scan(&sources).unwrap(), &sources);
    assert!(need.contains_key("grafana:UpdatePermissions"));
    for action in IDENTITY_CENTER_FOR_UPDATE_PERMISSIONS {
        assert!(need.contains_key(*action), "{action}");
    }
}

#[test]
fn a_call_the_scanner_cannot_attribute_fails() {
    let sources = one_file(
        "use aws_sdk_grafana::Client;\n\
         fn f(&self) { let c = &self.client; c.delete_workspace().workspace_id(w).send(); }\n",
    );
    let err = scan(&sources).unwrap_err();
    assert!(err.contains("1 .send() but 0"), "{err}");
}

#[test]
fn a_chain_broken_over_lines_by_rustfmt_is_seen() {
    let sources = one_file(
        "use aws_sdk_grafana::Client;\n\
         fn f(&self) {\n    let page = self\n        .client\n        .list_workspaces()\n        \
         .max_results(100)\n        .send()\n        .await;\n}\n",
    );
    let calls = scan(&sources).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].action, "grafana:ListWorkspaces");
}

#[test]
fn an_sdk_the_test_does_not_know_fails() {
    let err = scan(&one_file("use aws_sdk_s3::Client;\n")).unwrap_err();
    assert!(err.contains("aws_sdk_s3::Client"), "{err}");
}

#[test]
fn wildcards_not_action_and_unscoped_resources_are_refused() {
    let err = granted_actions(&policy_of(&["secretsmanager:*"], "*")).unwrap_err();
    assert!(err.contains("wildcard action secretsmanager:*"), "{err}");
    assert!(
        err.contains("secretsmanager:* is granted on \"*\""),
        "{err}"
    );
    let err = granted_actions(&serde_json::json!({
        "Statement": [{ "Effect": "Allow", "NotAction": "iam:*", "Resource": "*" }]
    }))
    .unwrap_err();
    assert!(err.contains("NotAction"), "{err}");
    // The actions that support no resource-level permissions may use "*".
    assert!(granted_actions(&policy_of(
        &["grafana:ListWorkspaces", "sso:GetProfile"],
        "*"
    ))
    .is_ok());
}
