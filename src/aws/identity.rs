//! Where a scope's secrets live before any exists: the partition and account of the caller
//! (STS GetCallerIdentity, which "no permissions are required to perform": its API reference)
//! and the region of the scope's clients. A new token's name carries its secret's mark, a hash
//! of that location and the secret's name (`credential::token::secret_mark`), so knowing it
//! lets a missing secret be created with its first value, after the token is minted.
//!
//! Asked once per scope and process, and only when a secret is missing. An answer that cannot
//! be had (no STS endpoint in a closed VPC, an error) stands as unknown for `ASK_AGAIN_AFTER`,
//! with a warning: meanwhile secrets are created before their tokens, as they always could be.

use std::time::{Duration, Instant};

use aws_sdk_sts::Client;
use tokio::sync::Mutex;

use super::caller::Caller;
use super::secrets::Location;

/// How long "unknown" stands before STS is asked again (a location, once known, stands for good).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(15 * 60);

pub struct Identity {
    client: Client,
    caller: Caller,
    region: Option<String>,
    asked: Mutex<Option<Asked>>,
}

/// The last answer, and when it was had.
struct Asked {
    found: Option<Location>,
    at: Instant,
}

impl Asked {
    fn stands(&self, now: Instant) -> bool {
        self.found.is_some() || now.duration_since(self.at) < ASK_AGAIN_AFTER
    }
}

impl Identity {
    /// `region`: the region of the scope's Secrets Manager client.
    pub fn new(client: Client, caller: Caller, region: Option<String>) -> Self {
        Identity {
            client,
            caller,
            region,
            asked: Mutex::new(None),
        }
    }

    pub async fn location(&self) -> Option<Location> {
        // Held while asking: the credentials waiting on it take its answer.
        let mut asked = self.asked.lock().await;
        if let Some(a) = asked.as_ref().filter(|a| a.stands(Instant::now())) {
            return a.found.clone();
        }
        let found = self.ask().await;
        *asked = Some(Asked {
            found: found.clone(),
            at: Instant::now(),
        });
        found
    }

    async fn ask(&self) -> Option<Location> {
        let Some(region) = self.region.clone() else {
            tracing::warn!(
                "no region for Secrets Manager; new secrets are created before their first token"
            );
            return None;
        };
        let answer = self
            .caller
            .idempotent("GetCallerIdentity", || async {
                self.client
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(super::ApiError::from_sdk)
            })
            .await;
        // arn:PARTITION:sts::ACCOUNT:assumed-role/… (or :user/…, :root)
        let found = match &answer {
            Ok(out) => out
                .arn()
                .and_then(Location::of_arn)
                .filter(|l| !l.partition.is_empty() && !l.account.is_empty())
                .map(|l| Location { region, ..l }),
            Err(_) => None,
        };
        match (&found, answer) {
            (Some(l), _) => {
                tracing::debug!(partition = %l.partition, region = %l.region, account = %l.account, "secrets are created in this location")
            }
            (None, Err(e)) => {
                tracing::warn!(error = %e, "STS GetCallerIdentity failed: the account new secrets are created in is unknown, so each is created before its first token (two more Secrets Manager calls per new credential); asked again in 15 minutes")
            }
            (None, Ok(_)) => {
                tracing::warn!("STS GetCallerIdentity named no account: new secrets are created before their first token")
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_stands_for_good_and_unknown_for_a_quarter_hour() {
        let at = Instant::now();
        let known = Asked {
            found: Location::of_arn("arn:aws:sts::123456789012:assumed-role/r/s"),
            at,
        };
        let unknown = Asked { found: None, at };
        let later = |secs| at + Duration::from_secs(secs);
        assert!(known.stands(later(86_400)));
        assert!(unknown.stands(later(899)));
        assert!(!unknown.stands(later(900)));
    }
}
