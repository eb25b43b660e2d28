//! Proof that a new key works: `GET {grafanaUrl}/api/org/` with it as a Bearer token.
//!
//! `/api/health` needs no auth and so proves nothing; `/api/org/` answers 200 for any valid
//! key. The key goes only into the Authorization header; errors never quote it.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::Key;

/// Why a key was not proven to work. Names the URL and what came back; never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct VerifyError {
    pub url: String,
    /// The HTTP status of the last answer; `None` when no answer came (refused, timed out).
    pub status: Option<u16>,
    /// For people: `GET <url> answered 503`, `GET <url> failed: <why>`.
    pub detail: String,
}

#[async_trait]
pub trait Verifier: Send + Sync {
    /// `Ok` when Grafana at `base_url` accepts `key`; otherwise why not.
    async fn verify(&self, base_url: &str, key: &Key) -> Result<(), VerifyError>;
}

pub struct HttpVerifier {
    client: reqwest::Client,
    attempts: u32,
}

impl HttpVerifier {
    pub fn new(timeout: Duration) -> Self {
        HttpVerifier {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a TLS backend is compiled in"),
            // A new token can take a moment to be accepted everywhere behind the endpoint.
            attempts: 3,
        }
    }
}

#[async_trait]
impl Verifier for HttpVerifier {
    async fn verify(&self, base_url: &str, key: &Key) -> Result<(), VerifyError> {
        let url = format!("{}/api/org/", base_url.trim_end_matches('/'));
        let mut last = VerifyError {
            url: url.clone(),
            status: None,
            detail: String::new(),
        };
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            let sent = self.client.get(&url).bearer_auth(key.expose()).send().await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last.status = Some(status.as_u16());
                    last.detail = if matches!(status.as_u16(), 401 | 403) {
                        format!("GET {url} answered {status}: the key is not accepted")
                    } else {
                        format!("GET {url} answered {status}")
                    };
                }
                // reqwest's error text names the URL, never the headers.
                Err(e) => {
                    last.status = None;
                    last.detail = format!("GET {url} failed: {e}");
                }
            }
        }
        Err(last)
    }
}

/// A verifier for runs where verification is switched off everywhere.
pub struct NoVerifier;

#[async_trait]
impl Verifier for NoVerifier {
    async fn verify(&self, _base_url: &str, _key: &Key) -> Result<(), VerifyError> {
        Ok(())
    }
}
