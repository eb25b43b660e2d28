//! `FakeVerifier`: the workspace's Grafana answering `GET {base_url}/api/org/`, as
//! `HttpVerifier` asks it.
//!
//! Tied to a `FakeGrafana`, it accepts a key that Grafana would (`FakeGrafana::key_works`: an
//! unexpired token of an enabled service account, or an unexpired API key, of the workspace whose
//! id the URL names; the emulator's Grafana stand-in) and records the use as `lastUsedAt`; its
//! `now` is set by the test, never read from a clock. Or it gives a fixed answer: accept, an
//! HTTP status, or no answer at all. Errors have `HttpVerifier`'s shape and wording (url,
//! status, detail) and never quote the key.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::grafana::FakeGrafana;
use crate::aws::verify::{self, org_url, Verifier, VerifyError};
use crate::model::Key;

/// What the verifier answers.
#[derive(Clone)]
enum Answer {
    /// As the tied FakeGrafana's workspace would.
    Grafana(FakeGrafana),
    Accept,
    Status(u16),
    /// No answer: refused, timed out, no such host.
    Unreachable(String),
}

/// One verification asked, and what came back (`Some(200)` for an accepted key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCall {
    pub url: String,
    pub status: Option<u16>,
}

#[derive(Clone)]
pub struct FakeVerifier {
    state: Arc<Mutex<State>>,
}

struct State {
    /// The answer it was built with, which `heal` returns to.
    base: Answer,
    /// A failure switched on by the test.
    failure: Option<Answer>,
    now: DateTime<Utc>,
    calls: Vec<VerifyCall>,
}

/// An answer other than 200, worded as `HttpVerifier` words it.
pub(crate) fn answered(url: &str, status: u16) -> VerifyError {
    let detail = match reqwest::StatusCode::from_u16(status) {
        Ok(s) => verify::answered(url, s),
        Err(_) => format!("GET {url} answered {status}"),
    };
    VerifyError {
        url: url.to_owned(),
        status: Some(status),
        detail,
    }
}

/// No answer came.
pub(crate) fn failed(url: &str, why: &str) -> VerifyError {
    VerifyError {
        url: url.to_owned(),
        status: None,
        detail: format!("GET {url} failed: {why}"),
    }
}

impl FakeVerifier {
    fn with(base: Answer, now: DateTime<Utc>) -> Self {
        FakeVerifier {
            state: Arc::new(Mutex::new(State {
                base,
                failure: None,
                now,
                calls: Vec::new(),
            })),
        }
    }

    /// Accepts what the workspace's Grafana in `grafana` would accept at `now`.
    pub fn tied_to(grafana: &FakeGrafana, now: DateTime<Utc>) -> Self {
        FakeVerifier::with(Answer::Grafana(grafana.clone()), now)
    }

    /// Accepts every key.
    pub fn accepting() -> Self {
        FakeVerifier::with(Answer::Accept, super::epoch())
    }

    /// Answers every request with `status` (200, with an organization: accepted).
    pub fn answering(status: u16) -> Self {
        FakeVerifier::with(Answer::Status(status), super::epoch())
    }

    /// Never answers.
    pub fn unreachable() -> Self {
        FakeVerifier::with(
            Answer::Unreachable("error sending request: connection refused".into()),
            super::epoch(),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("FakeVerifier lock")
    }

    /// The time at which a tied verifier judges expiry.
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = now;
    }

    /// From now on every request answers `status`.
    pub fn fail_with_status(&self, status: u16) {
        self.state().failure = Some(Answer::Status(status));
    }

    /// From now on no request is answered (refused, timed out).
    pub fn fail_unreachable(&self) {
        self.state().failure = Some(Answer::Unreachable("operation timed out".into()));
    }

    /// Back to the answer it was built with.
    pub fn heal(&self) {
        self.state().failure = None;
    }

    pub fn calls(&self) -> Vec<VerifyCall> {
        self.state().calls.clone()
    }
}

#[async_trait]
impl Verifier for FakeVerifier {
    async fn verify(&self, base_url: &str, key: &Key) -> Result<(), VerifyError> {
        let url = org_url(base_url);
        verify::checked_destination(&url)?;
        let (answer, now) = {
            let s = self.state();
            (s.failure.clone().unwrap_or_else(|| s.base.clone()), s.now)
        };
        let result = match answer {
            Answer::Accept => Ok(()),
            // Grafana's organization comes with a 200 only.
            Answer::Status(200) => Ok(()),
            Answer::Status(s) => Err(answered(&url, s)),
            Answer::Unreachable(why) => Err(failed(&url, &why)),
            Answer::Grafana(g) => match g.workspace_in_url(base_url) {
                // A URL naming no workspace reaches no Grafana.
                None => Err(failed(
                    &url,
                    "error sending request: dns error: no such host",
                )),
                Some(ws) => match g.use_key(&ws, key, now, true) {
                    Some(true) => Ok(()),
                    _ => Err(answered(&url, 401)),
                },
            },
        };
        self.state().calls.push(VerifyCall {
            url,
            status: match &result {
                Ok(()) => Some(200),
                Err(e) => e.status,
            },
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aws::fake::epoch;
    use crate::aws::fake::grafana::{AccountSeed, WorkspaceSeed};
    use crate::aws::grafana::Grafana;
    use crate::model::Role;

    const WS: &str = "g-0123456789";

    fn grafana() -> FakeGrafana {
        FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS).with_service_account(AccountSeed::new("a", Role::Admin)),
        )
    }

    fn url() -> String {
        // What `Credential::verify_url` makes of the workspace's endpoint.
        format!("https://{WS}.grafana-workspace.us-east-1.amazonaws.com")
    }

    #[tokio::test]
    async fn a_fresh_token_is_accepted_and_its_use_recorded() {
        let g = grafana();
        let now = epoch();
        let t = g
            .create_token(WS, "2", "t", Duration::from_secs(3600), now)
            .await
            .unwrap();
        let v = FakeVerifier::tied_to(&g, now);
        v.verify(&url(), &t.key).await.unwrap();
        assert_eq!(g.tokens(WS, "2")[0].last_used_at, Some(now));
        assert_eq!(
            v.calls(),
            vec![VerifyCall {
                url: format!("{}/api/org/", url()),
                status: Some(200)
            }]
        );
    }

    #[tokio::test]
    async fn an_expired_deleted_or_unknown_key_is_unauthorized() {
        let g = grafana();
        let now = epoch();
        let t = g
            .create_token(WS, "2", "t", Duration::from_secs(3600), now)
            .await
            .unwrap();
        let v = FakeVerifier::tied_to(&g, now + chrono::Duration::hours(1));
        let e = v.verify(&url(), &t.key).await.unwrap_err();
        assert_eq!(e.status, Some(401));
        assert_eq!(e.url, format!("{}/api/org/", url()));
        assert!(
            e.detail
                .contains("answered 401 Unauthorized: the key is not accepted"),
            "{}",
            e.detail
        );
        assert!(!e.detail.contains(t.key.expose()));
        v.set_now(now);
        v.verify(&url(), &t.key).await.unwrap();
        g.delete_token(WS, "2", &t.id).await.unwrap();
        assert_eq!(
            v.verify(&url(), &t.key).await.unwrap_err().status,
            Some(401)
        );
        let wrong = Key::new("glsa_nothing".into());
        assert_eq!(
            v.verify(&url(), &wrong).await.unwrap_err().status,
            Some(401)
        );
    }

    #[tokio::test]
    async fn a_url_naming_no_workspace_gets_no_answer() {
        let v = FakeVerifier::tied_to(&grafana(), epoch());
        let e = v
            .verify(
                "https://g-ffffffffff.grafana-workspace.us-east-1.amazonaws.com/",
                &Key::new("k".into()),
            )
            .await
            .unwrap_err();
        assert_eq!(e.status, None);
    }

    #[tokio::test]
    async fn it_can_be_told_to_fail_and_to_heal() {
        let g = grafana();
        let t = g
            .create_token(WS, "2", "t", Duration::from_secs(3600), epoch())
            .await
            .unwrap();
        let v = FakeVerifier::tied_to(&g, epoch());
        v.fail_with_status(503);
        let e = v.verify(&url(), &t.key).await.unwrap_err();
        assert_eq!(e.status, Some(503));
        assert!(
            e.detail.ends_with("answered 503 Service Unavailable"),
            "{}",
            e.detail
        );
        v.fail_unreachable();
        let e = v.verify(&url(), &t.key).await.unwrap_err();
        assert_eq!(e.status, None);
        assert!(e.detail.starts_with("GET https://"), "{}", e.detail);
        v.heal();
        v.verify(&url(), &t.key).await.unwrap();
    }

    #[tokio::test]
    async fn fixed_answers_ignore_the_key() {
        let k = Key::new("anything".into());
        FakeVerifier::accepting().verify(&url(), &k).await.unwrap();
        FakeVerifier::answering(200)
            .verify(&url(), &k)
            .await
            .unwrap();
        assert_eq!(
            FakeVerifier::answering(204)
                .verify(&url(), &k)
                .await
                .unwrap_err()
                .status,
            Some(204)
        );
        assert_eq!(
            FakeVerifier::answering(403)
                .verify(&url(), &k)
                .await
                .unwrap_err()
                .status,
            Some(403)
        );
        assert_eq!(
            FakeVerifier::unreachable()
                .verify(&url(), &k)
                .await
                .unwrap_err()
                .status,
            None
        );
    }
}
