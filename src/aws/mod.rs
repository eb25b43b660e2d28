//! The services the rotator talks to, each a trait in the domain's words with a thin SDK
//! implementation: AMG's control plane (`grafana`), Secrets Manager (`secrets`), and the
//! workspace's own Grafana for the proof that a new key works (`verify`). `caller` retries,
//! paces and measures every AWS call; `connect` builds the services per region and role.
//! Nothing here decides anything, and nothing here logs a key.

pub mod caller;
pub mod connect;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod grafana;
pub mod grafana_sdk;
pub mod identity;
pub mod ratelimit;
pub mod secrets;
pub mod secrets_sdk;
pub mod verify;

pub use connect::{AwsConnector, AwsSettings, Connector, Services};
pub use error::ApiError;
pub use grafana::Grafana;
pub use secrets::{SecretPage, SecretStore};
pub use verify::Verifier;
