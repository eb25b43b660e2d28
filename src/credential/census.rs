//! The rotator's secrets in one scope (region and role) as one ListSecrets shows them: read at
//! most once a pass, when the first credential of the scope asks, in pages of 100 instead of
//! one DescribeSecret per credential.
//!
//! ListSecrets "might not reflect changes from the last five minutes" (its API reference), so
//! the census is trusted for one decision only: that a credential whose audit record stands has
//! nothing to do (`token.rs`, `audit.rs`). Anything else is decided on a DescribeSecret read
//! then. A stale census can therefore only delay an action by a pass, never drive one: a
//! record it still shows after another process removed it (to rotate) makes this pass skip a
//! credential that process is working on; a record it shows on a version no longer current
//! does not stand, or stands over a token the plan then finds due, and either sends the
//! credential to DescribeSecret.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::OnceCell;

use crate::aws::SecretStore;
use crate::model::SecretState;

/// One scope's census, for one pass.
#[derive(Default)]
pub struct Census {
    /// By secret name; `None` when the listing failed (every credential is described, as
    /// without a census). Each entry is taken once, so the census shrinks as the pass goes.
    listed: OnceCell<Option<Mutex<HashMap<String, SecretState>>>>,
}

impl Census {
    pub fn new() -> Census {
        Census::default()
    }

    /// The secret `name` as the listing shows it, listing the scope's secrets the first time
    /// any credential asks. `None`: not listed (new, not tagged as the rotator's, without an
    /// audit record, beyond the pages read, or the listing failed): the caller describes it.
    pub async fn take(&self, secrets: &dyn SecretStore, name: &str) -> Option<SecretState> {
        let listed = self
            .listed
            .get_or_init(|| async {
                match secrets.list_managed().await {
                    // Only a secret with a record can be decided from the census: the others
                    // are described anyway, so they are not kept (the first audits cost no
                    // memory here).
                    Ok(list) => Some(Mutex::new(
                        list.into_iter()
                            .filter(|s| super::audit::carries_record(Some(s)))
                            .map(|s| (s.name.clone(), s))
                            .collect(),
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list the rotator's secrets; each is described instead");
                        None
                    }
                }
            })
            .await
            .as_ref()?;
        listed.lock().expect("census lock").remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{ops, Failing, FakeSecrets, SecretSeed};
    use crate::aws::ApiError;

    #[tokio::test]
    async fn one_listing_serves_every_credential_of_the_scope_once() {
        let recorded = |name: &str| {
            SecretSeed::new(name)
                .managed()
                .tag(super::super::records::AUDIT_TAG, "any")
        };
        let s = FakeSecrets::new()
            .with_secret(recorded("a"))
            .with_secret(recorded("b"))
            .with_secret(SecretSeed::new("unrecorded").managed())
            .with_secret(SecretSeed::new("theirs").tag(super::super::records::AUDIT_TAG, "any"));
        let census = Census::new();
        assert_eq!(census.take(&s, "a").await.map(|s| s.name), Some("a".into()));
        assert_eq!(census.take(&s, "b").await.map(|s| s.name), Some("b".into()));
        assert_eq!(census.take(&s, "a").await, None, "each entry is taken once");
        assert_eq!(census.take(&s, "theirs").await, None, "not the rotator's");
        assert_eq!(
            census.take(&s, "unrecorded").await,
            None,
            "nothing to trust"
        );
        assert_eq!(s.count(ops::LIST_SECRETS), 1);
        assert_eq!(s.count(ops::DESCRIBE_SECRET), 0);
    }

    #[tokio::test]
    async fn a_listing_refused_is_asked_once_a_pass_and_leaves_every_secret_to_describe() {
        let inner = FakeSecrets::new().with_secret(SecretSeed::new("a").managed());
        let s = Failing::new(inner.clone()).fail_nth(
            ops::LIST_SECRETS,
            1,
            ApiError::AccessDenied(
                "AccessDeniedException: not authorized to perform: secretsmanager:ListSecrets"
                    .into(),
            ),
        );
        let census = Census::new();
        assert_eq!(census.take(&s, "a").await, None);
        assert_eq!(census.take(&s, "a").await, None);
        assert_eq!(
            s.calls(ops::LIST_SECRETS),
            1,
            "asked once, answered by the fault"
        );
    }
}
