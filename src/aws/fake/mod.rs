//! In-memory fakes of the three services, with real semantics where the rotator depends on them,
//! and `Failing<T>`, a wrapper that fails the k-th call of an operation on purpose (STYLE.md,
//! habit 14; the model is awslabs/mountpoint-s3 `mock_client.rs` and `failure_client.rs`).
//!
//! - `FakeGrafana`: AMG's control plane (workspaces, service accounts, tokens, API keys,
//!   permissions), following shared/reference/aws-facts.md and the rules of the project's
//!   wire-level emulator (emulator/README.md, "Rules, in the order they are checked").
//! - `FakeSecrets`: Secrets Manager with its staging-label semantics (aws-facts.md and the
//!   botocore model `secretsmanager/2017-10-17`), not moto's quirks.
//! - `FakeVerifier`: the workspace's Grafana answering `GET /api/org/`, tied to a `FakeGrafana`.
//! - `Failing<T>`: wraps any of the three; fails the k-th call of an AWS operation, or performs
//!   it and loses the answer.
//!
//! They serve in-crate tests only: `src/aws/mod.rs` declares this module under `#[cfg(test)]`.
//! A `fakes` cargo feature could expose them to `tests/` later. What they must never do: perform
//! I/O, read a clock (every time comes from the caller: the trait methods that create things take
//! `now`, `FakeSecrets` and `FakeVerifier` have setters), draw randomness (keys and ids are
//! deterministic), or print a key (`Key` and `Zeroizing` values only; no `Debug` shows one).
//!
//! Each fake is a cheap handle (`Clone` shares the state), so a test keeps one to inspect and
//! seed while the code under test holds another, as `Arc<dyn Grafana>` or inside `Failing`.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::aws::error::ApiError;

pub mod failing;
pub mod grafana;
pub mod secrets;
pub mod verifier;

pub use failing::{Failing, Fault, Injection};
pub use grafana::{AccountSeed, ApiKeySeed, ApiKeySummary, FakeGrafana, TokenSeed, WorkspaceSeed};
pub use secrets::{FakeSecrets, SecretSeed};
pub use verifier::{FakeVerifier, VerifyCall};

/// The operation names the fakes log and `Failing` matches: AWS's own names (they read better in
/// tests than method names, and are what the emulator's `failNth` and the call metrics use).
pub mod ops {
    // AMG control plane (service `grafana`), one per `trait Grafana` method.
    pub const LIST_WORKSPACES: &str = "ListWorkspaces";
    pub const DESCRIBE_WORKSPACE: &str = "DescribeWorkspace";
    pub const LIST_SERVICE_ACCOUNTS: &str = "ListWorkspaceServiceAccounts";
    pub const CREATE_SERVICE_ACCOUNT: &str = "CreateWorkspaceServiceAccount";
    pub const LIST_TOKENS: &str = "ListWorkspaceServiceAccountTokens";
    pub const CREATE_TOKEN: &str = "CreateWorkspaceServiceAccountToken";
    pub const DELETE_TOKEN: &str = "DeleteWorkspaceServiceAccountToken";
    pub const CREATE_API_KEY: &str = "CreateWorkspaceApiKey";
    pub const DELETE_API_KEY: &str = "DeleteWorkspaceApiKey";
    pub const LIST_PERMISSIONS: &str = "ListPermissions";
    pub const UPDATE_PERMISSIONS: &str = "UpdatePermissions";
    // Secrets Manager, one per `trait SecretStore` method.
    pub const DESCRIBE_SECRET: &str = "DescribeSecret";
    pub const CREATE_SECRET: &str = "CreateSecret";
    pub const PUT_SECRET_VALUE: &str = "PutSecretValue";
    pub const GET_SECRET_VALUE: &str = "GetSecretValue";
    pub const UPDATE_SECRET_VERSION_STAGE: &str = "UpdateSecretVersionStage";
    pub const TAG_RESOURCE: &str = "TagResource";
    pub const UNTAG_RESOURCE: &str = "UntagResource";
    pub const LIST_SECRETS: &str = "ListSecrets";
    /// The verifier's one call, `GET /api/org/`, under the name Grafana's HTTP API gives it
    /// (operationId `getCurrentOrg`); it is not an AWS operation.
    pub const GET_CURRENT_ORG: &str = "GetCurrentOrg";

    /// Every name above: `Failing` refuses a rule naming anything else, so a typo fails loudly
    /// instead of never firing. `*` (every call) is accepted too.
    pub const ALL: &[&str] = &[
        LIST_WORKSPACES,
        DESCRIBE_WORKSPACE,
        LIST_SERVICE_ACCOUNTS,
        CREATE_SERVICE_ACCOUNT,
        LIST_TOKENS,
        CREATE_TOKEN,
        DELETE_TOKEN,
        CREATE_API_KEY,
        DELETE_API_KEY,
        LIST_PERMISSIONS,
        UPDATE_PERMISSIONS,
        DESCRIBE_SECRET,
        CREATE_SECRET,
        PUT_SECRET_VALUE,
        GET_SECRET_VALUE,
        UPDATE_SECRET_VERSION_STAGE,
        TAG_RESOURCE,
        UNTAG_RESOURCE,
        LIST_SECRETS,
        GET_CURRENT_ORG,
    ];
}

/// One call a fake answered: the operation, what it was about (ids and names, never a key or a
/// secret value) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub operation: &'static str,
    /// `g-0123456789/2/7` (workspace, service account, token), a key name, a secret name.
    pub target: String,
    pub outcome: Result<(), ApiError>,
}

impl Call {
    /// `ok` or the error's metric label (`conflict`, `not_found`, …).
    pub fn outcome_label(&self) -> &'static str {
        match &self.outcome {
            Ok(()) => "ok",
            Err(e) => e.metric_label(),
        }
    }
}

/// The calls a fake answered, in order; shared by the fake's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    pub(crate) fn record<T>(
        &self,
        operation: &'static str,
        target: String,
        result: &Result<T, ApiError>,
    ) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        };
        self.0.lock().expect("call log lock").push(Call {
            operation,
            target,
            outcome,
        });
    }

    pub(crate) fn all(&self) -> Vec<Call> {
        self.0.lock().expect("call log lock").clone()
    }

    pub(crate) fn count(&self, operation: &str) -> usize {
        self.0
            .lock()
            .expect("call log lock")
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }
}

/// A fixed instant for tests that need one: 2026-01-01T00:00:00Z. The fakes never read the
/// host's clock; this is where `FakeSecrets`'s clock starts unless a test sets it.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_the_documented_instant() {
        assert_eq!(
            crate::model::rfc3339(epoch()),
            "2026-01-01T00:00:00Z".to_string()
        );
    }

    #[test]
    fn operation_names_are_unique() {
        let mut names = ops::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ops::ALL.len());
    }
}
