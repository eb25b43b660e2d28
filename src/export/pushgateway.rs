//! A Prometheus Pushgateway keeps the last push of each group (its grouping key: `job` and
//! `instance`) until the next, and Prometheus scrapes it with `honor_labels: true`. PUT replaces
//! the whole group, so a credential no longer managed disappears with the next push.

use std::time::Duration;

use crate::config::PushgatewaySettings;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("push to {url}: {reason}")]
pub struct PushError {
    url: String,
    reason: String,
}

/// The group's URL: `{url}/metrics/job/{job}/instance/{instance}`.
pub fn group_url(s: &PushgatewaySettings) -> String {
    format!("{}/metrics/job/{}/instance/{}", s.url, s.job, s.instance)
}

/// PUTs `text` (the exposition format) as the group's metrics; the group's URL on success.
/// Refused pushes (4xx: the Pushgateway found the metrics invalid) are not retried; a
/// connection failure or a 5xx is, up to 3 attempts.
pub async fn push(s: &PushgatewaySettings, text: &str) -> Result<String, PushError> {
    let url = group_url(s);
    let fail = |reason: String| PushError {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(BACKOFF).await;
        }
        let sent = client
            .put(&url)
            .header("content-type", "text/plain; version=0.0.4")
            .body(text.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(url),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                last = format!("HTTP {status}: {}", first_line(&body));
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => last = without_url(e),
        }
    }
    Err(fail(last))
}

/// The Pushgateway explains a refusal in its body; one line of it, bounded.
fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

/// reqwest's message and its cause, without the URL the error already names.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
