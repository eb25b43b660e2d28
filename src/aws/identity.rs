//! Where a scope's secrets live before any exists: the partition and account of the caller
//! (STS GetCallerIdentity, which "no permissions are required to perform": its API reference)
//! and the region of the scope's clients. A new token's name carries its secret's mark, a hash
//! of that location and the secret's name (`credential::token::secret_mark`), so knowing it
//! lets a missing secret be created with its first value, after the token is minted.
//!
//! Asked once per scope and process, and only when a secret is missing. An answer that cannot
//! be had (no STS endpoint in a closed VPC, an error) is remembered as unknown, with one
//! warning: the secret is then created before the token, as it always could be.

use aws_sdk_sts::Client;
use tokio::sync::OnceCell;

use super::caller::Caller;
use super::secrets::Location;

pub struct Identity {
    client: Client,
    caller: Caller,
    region: Option<String>,
    found: OnceCell<Option<Location>>,
}

impl Identity {
    /// `region`: the region of the scope's Secrets Manager client.
    pub fn new(client: Client, caller: Caller, region: Option<String>) -> Self {
        Identity {
            client,
            caller,
            region,
            found: OnceCell::new(),
        }
    }

    pub async fn location(&self) -> Option<Location> {
        self.found.get_or_init(|| self.ask()).await.clone()
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
                tracing::warn!(error = %e, "STS GetCallerIdentity failed: the account new secrets are created in is unknown, so each is created before its first token (two more Secrets Manager calls per new credential)")
            }
            (None, Ok(_)) => {
                tracing::warn!("STS GetCallerIdentity named no account: new secrets are created before their first token")
            }
        }
        found
    }
}
