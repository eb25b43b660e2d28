//! `deploy/iam/policy.json` grants exactly the AWS actions the rotator's code needs: every
//! SDK call the code makes is allowed, and nothing else is.
//!
//! The calls are read from the source, not listed by hand: every `self.client.<operation>()`
//! chain in a file that imports an `aws_sdk_*::Client`, mapped to its IAM action
//! (`create_workspace_service_account_token` → `grafana:CreateWorkspaceServiceAccountToken`),
//! plus the actions AWS authorizes implicitly (tags on CreateSecret, the KMS key behind a
//! secret, AssumeRole for `role_arn`, IAM Identity Center look-ups behind UpdatePermissions).
//! A file whose SDK calls the scanner cannot attribute fails the test rather than being
//! skipped, so a call written another way cannot slip past it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const POLICY: &str = "deploy/iam/policy.json";

/// The SDK crates the rotator uses and the IAM service prefix of each.
const SERVICES: &[(&str, &str)] = &[
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

fn repo_policy() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(POLICY);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{POLICY} is not JSON: {e}"))
}

#[test]
fn the_policy_grants_exactly_the_actions_the_code_needs() {
    let sources = repo_sources();
    let calls = scan(&sources).unwrap_or_else(|e| panic!("{e}"));
    let need = required_actions(&calls, &sources);
    let granted = granted_actions(&repo_policy()).unwrap_or_else(|e| panic!("{POLICY}:\n{e}"));
    if let Err(e) = compare(&need, &granted) {
        panic!("{POLICY} does not match the AWS calls in src/:\n{e}");
    }
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
