//! Proof that a new key works: `GET {grafanaUrl}/api/org/` with it as a Bearer token.
//!
//! `/api/health` needs no auth and so proves nothing; `/api/org/` answers 200 with the key's
//! organization (`{"id":1,"name":"Main Org.",...}`) for any valid key. The key goes only where
//! it must:
//! - only to an `https://` URL, or `http://` to a loopback host named as such (`localhost`,
//!   `127.0.0.0/8`, `[::1]`: the tests and the demo); a URL with a user name, query or fragment
//!   is refused too ([`key_destination`], also what configuration validation applies);
//! - redirects are never followed: a `3xx` is a failed proof, and the key is sent to no other URL;
//! - the proof is a `200` whose JSON body is an organization (an object with a numeric `id`): a
//!   login page or a proxy's answer that says 200 proves nothing.
//!
//! The key goes only into the Authorization header; errors never quote it, nor the body.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;

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

/// The URL a key for `base_url` is sent to: `{base_url}/api/org/`.
pub fn org_url(base_url: &str) -> String {
    format!("{}/api/org/", base_url.trim_end_matches('/'))
}

/// `url` parsed, when a key may be sent there; otherwise why not, for people.
pub fn key_destination(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(&parsed) => {}
        "http" => {
            return Err(
                "http:// would send the key in the clear: use https:// (http:// is allowed only \
                 to a loopback host: localhost, 127.0.0.1, [::1])"
                    .into(),
            )
        }
        other => return Err(format!("scheme {other}:// is not https://")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query (?) or fragment (#): /api/org/ is appended".into());
    }
    Ok(parsed)
}

/// `url` parsed, or the verification's failure when the key may not go there.
pub(crate) fn checked_destination(url: &str) -> Result<Url, VerifyError> {
    key_destination(url).map_err(|why| VerifyError {
        url: url.to_owned(),
        status: None,
        detail: format!("refused to send the key to {url}: {why}"),
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The most of a body read to find the organization: Grafana's is a few hundred bytes.
const BODY_LIMIT: usize = 64 * 1024;

pub struct HttpVerifier {
    client: reqwest::Client,
    attempts: u32,
}

impl HttpVerifier {
    pub fn new(timeout: Duration) -> Self {
        HttpVerifier {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a TLS backend is compiled in"),
            attempts: 3,
        }
    }

    /// One request; `Ok` only for a 200 carrying an organization.
    async fn attempt(&self, url: &Url, key: &Key) -> Result<(), VerifyError> {
        let failed = |status: Option<u16>, detail: String| VerifyError {
            url: url.to_string(),
            status,
            detail,
        };
        let sent = self
            .client
            .get(url.clone())
            .bearer_auth(key.expose())
            .send()
            .await;
        // reqwest's error text names the URL, never the headers.
        let mut response = sent.map_err(|e| failed(None, format!("GET {url} failed: {e}")))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(failed(
                Some(status.as_u16()),
                answered(url.as_str(), status),
            ));
        }
        let mut body = Vec::new();
        while body.len() <= BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(failed(
                        None,
                        format!("GET {url} failed reading the body: {e}"),
                    ))
                }
            }
        }
        if is_organization(&body) {
            Ok(())
        } else {
            Err(failed(
                Some(200),
                format!(
                    "GET {url} answered 200 OK, but not with Grafana's organization (a JSON \
                     object with a numeric \"id\"): the key is not proven"
                ),
            ))
        }
    }
}

/// How a status other than 200 is reported.
pub(crate) fn answered(url: &str, status: reqwest::StatusCode) -> String {
    match status.as_u16() {
        401 | 403 => format!("GET {url} answered {status}: the key is not accepted"),
        300..=399 => format!(
            "GET {url} answered {status}: a redirect, not followed (the key is sent to this URL \
             only; point grafana_url at where Grafana answers)"
        ),
        _ => format!("GET {url} answered {status}"),
    }
}

/// Whether `body` is Grafana's organization: a JSON object whose `id` is a number.
fn is_organization(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("id").is_some_and(serde_json::Value::is_number))
}

#[async_trait]
impl Verifier for HttpVerifier {
    async fn verify(&self, base_url: &str, key: &Key) -> Result<(), VerifyError> {
        let shown = org_url(base_url);
        let url = checked_destination(&shown)?;
        let mut last = self.attempt(&url, key).await;
        // A new token can take a moment to be accepted everywhere behind the endpoint; a
        // redirect stays one.
        for attempt in 1..self.attempts {
            if last.as_ref().is_ok()
                || last
                    .as_ref()
                    .is_err_and(|e| e.status.is_some_and(|s| (300..400).contains(&s)))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            last = self.attempt(&url, key).await;
        }
        last
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const ORG: &str = r#"{"id":1,"name":"Main Org.","address":{"address1":""}}"#;

    /// A server on 127.0.0.1 that answers every request with `status`, `headers` and `body`,
    /// and counts the requests and those that carried `key`. Served for the test's life.
    async fn serve(status: &str, headers: &str, body: &str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let answer = format!(
            "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let counted = requests.clone();
        tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (base, requests)
    }

    fn verifier() -> HttpVerifier {
        HttpVerifier {
            attempts: 1,
            ..HttpVerifier::new(Duration::from_secs(5))
        }
    }

    fn key() -> Key {
        Key::new("glsa_secret_key_1234".into())
    }

    #[tokio::test]
    async fn a_200_with_the_organization_is_proof() {
        let (base, requests) = serve("200 OK", "content-type: application/json\r\n", ORG).await;
        verifier().verify(&base, &key()).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_login_page_that_answers_200_is_no_proof() {
        let page = "<html><body>Sign in to Grafana</body></html>";
        let (base, _) = serve("200 OK", "content-type: text/html\r\n", page).await;
        let e = verifier().verify(&base, &key()).await.unwrap_err();
        assert_eq!(e.status, Some(200));
        assert!(e.detail.contains("not with Grafana's organization"), "{e}");
        for json in [r#"{"message":"ok"}"#, r#"{"id":"1"}"#, "[1]", ""] {
            let (base, _) = serve("200 OK", "", json).await;
            let e = verifier().verify(&base, &key()).await.unwrap_err();
            assert_eq!(e.status, Some(200), "{json}: {e}");
        }
    }

    #[tokio::test]
    async fn another_success_status_is_no_proof() {
        let (base, _) = serve("204 No Content", "", "").await;
        let e = verifier().verify(&base, &key()).await.unwrap_err();
        assert_eq!(e.status, Some(204));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_the_key_goes_nowhere_else() {
        let (elsewhere, followed) = serve("200 OK", "", ORG).await;
        let location = format!("location: {elsewhere}/api/org/\r\n");
        let (base, requests) = serve("302 Found", &location, "").await;
        let e = HttpVerifier::new(Duration::from_secs(5))
            .verify(&base, &key())
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(302));
        assert!(e.detail.contains("a redirect, not followed"), "{e}");
        assert_eq!(
            followed.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
        // A redirect is not asked again: it will not change in a second.
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_plain_text_url_to_another_host_is_refused_before_any_request() {
        let e = verifier()
            .verify("http://grafana.example.com", &key())
            .await
            .unwrap_err();
        assert_eq!(e.status, None);
        assert!(
            e.detail.starts_with("refused to send the key to http://grafana.example.com/api/org/: http:// would send the key in the clear"),
            "{e}"
        );
        assert!(!e.detail.contains(key().expose()));
    }

    #[test]
    fn keys_go_to_https_or_to_loopback_hosts_named_as_such() {
        for ok in [
            "https://g-1.grafana-workspace.us-east-1.amazonaws.com/api/org/",
            "http://127.0.0.1:9000/_grafana/g-1/api/org/",
            "http://127.8.0.1/api/org/",
            "http://localhost:3000/api/org/",
            "http://[::1]:3000/api/org/",
        ] {
            assert!(key_destination(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://grafana.internal/api/org/", "in the clear"),
            ("http://10.0.0.1/api/org/", "in the clear"),
            // A name that only starts like a loopback one.
            ("http://localhost.example.com/api/org/", "in the clear"),
            ("http://127.0.0.1.nip.io/api/org/", "in the clear"),
            ("ftp://grafana.example.com/api/org/", "is not https://"),
            (
                "https://user:pw@grafana.example.com/api/org/",
                "user name or password",
            ),
            ("https://grafana.example.com/?next=/api/org/", "query"),
            ("grafana.example.com/api/org/", "not a URL"),
        ] {
            let e = key_destination(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
