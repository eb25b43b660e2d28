//! A wire-level emulator of the Amazon Managed Grafana control plane, for tests.
//!
//! It serves, on 127.0.0.1 only, the fourteen AMG operations the rotator uses over restJson1 exactly
//! as the AWS model describes them (so the real `aws-sdk-grafana` client can talk to it), plus
//! test-only routes (`/_emulator/...`) to read and steer it and a stand-in for each workspace's
//! Grafana HTTP API (`/_grafana/{workspaceId}/...`). See README.md for the behaviour in full.
//!
//! Module map:
//! - `clock`: the one place time is read.
//! - `model`: the state (workspaces, service accounts, tokens, API keys, permissions).
//! - `ops`: the AWS operations and their rules; `validate`: input validation;
//!   `pagination`: `nextToken`s; `errors`: the AWS error envelope.
//! - `aws`: routing and the per-call pipeline (auth header, faults, call log, latency).
//! - `faults`: fault injection; `seed`: seed data; `shared`: the mutex-guarded world.
//! - `upgrade`: Grafana versions and the upgrade (what becomes of API keys at 12).
//! - `test_routes`: `/_emulator/...`; `grafana`: the Grafana stand-in.

mod aws;
mod clock;
mod errors;
pub mod faults;
mod grafana;
pub mod model;
mod ops;
mod pagination;
pub mod seed;
mod shared;
mod test_routes;
pub mod upgrade;
mod validate;

pub use faults::{FailRule, Faults};
pub use model::{
    ApiKey, ApiKeyUpgrade, Permission, Role, ServiceAccount, SsoDirectory, Token, User, UserType,
    Workspace, OFFERED_GRAFANA_VERSIONS,
};
pub use seed::{ApiKeySeed, Seed, SeedError, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
pub use shared::CallRecord;
pub use upgrade::{MigratedApiKey, UpgradeReport};

use shared::Shared;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The emulator's state as tests see it: the same data as `GET /_emulator/state`, keys included.
pub type StateSnapshot = model::State;

/// How to start an emulator. `EmulatorConfig::default()` is port 0 (any), no seed, no faults.
#[derive(Clone, Debug, Default)]
pub struct EmulatorConfig {
    /// The port on 127.0.0.1; 0 lets the system choose.
    pub port: u16,
    /// Applied before the first request.
    pub seed: Seed,
    /// Replaces the seed's fault configuration when set (the CLI's `--faults FILE`).
    pub faults: Option<Faults>,
    /// Print one line per AWS call to stderr (the binary does).
    pub log_calls: bool,
    /// Seconds the emulated service's clock is ahead of the host's (negative: behind).
    pub clock_offset_seconds: i64,
}

impl EmulatorConfig {
    pub fn new() -> EmulatorConfig {
        EmulatorConfig::default()
    }

    pub fn with_port(mut self, port: u16) -> EmulatorConfig {
        self.port = port;
        self
    }

    pub fn with_seed(mut self, seed: Seed) -> EmulatorConfig {
        self.seed = seed;
        self
    }

    /// Runs the service's clock `seconds` ahead of the host's (negative: behind): every
    /// timestamp AMG reports (createdAt, expiresAt, lastUsedAt) is on that clock. Real hosts'
    /// clocks drift from AWS's; a client should take AMG's times from AMG.
    pub fn with_clock_offset(mut self, seconds: i64) -> EmulatorConfig {
        self.clock_offset_seconds = seconds;
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> EmulatorConfig {
        self.faults = Some(faults);
        self
    }

    /// Sets the seed's `apiKeysAtUpgrade`: what an upgrade to Grafana 12 or later does to API keys.
    pub fn with_api_key_upgrade(mut self, behaviour: ApiKeyUpgrade) -> EmulatorConfig {
        self.seed.api_keys_at_upgrade = Some(behaviour);
        self
    }

    pub fn with_call_logging(mut self, log_calls: bool) -> EmulatorConfig {
        self.log_calls = log_calls;
        self
    }
}

/// A running emulator. Dropping it stops the server too; `shutdown` waits for that.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds 127.0.0.1:`config.port`, applies the seed and faults, and serves in a tokio task.
    /// An invalid seed or fault configuration is an `InvalidInput` error.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let mut shared = Shared::new(config.log_calls);
        shared.clock_offset_ms = config.clock_offset_seconds.saturating_mul(1000);
        let shared = Arc::new(shared);
        shared.add_seed(&config.seed, shared.now())?;
        if let Some(faults) = config.faults {
            shared
                .set_faults(faults)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                eprintln!("amg-emulator: server error: {e}");
            }
        });
        Ok(Emulator {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for the AWS SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/_grafana/{workspace_id}`: the Grafana base URL of every workspace,
    /// with the literal placeholder `{workspace_id}`.
    pub fn grafana_url_template(&self) -> String {
        format!("{}/_grafana/{{workspace_id}}", self.endpoint())
    }

    /// The Grafana base URL of one workspace.
    pub fn grafana_url(&self, workspace_id: &str) -> String {
        format!("{}/_grafana/{workspace_id}", self.endpoint())
    }

    /// The whole state, keys included.
    pub fn state(&self) -> StateSnapshot {
        self.shared.snapshot()
    }

    /// The AWS calls answered so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.calls()
    }

    pub fn clear_calls(&self) {
        self.shared.clear_calls()
    }

    /// The fault configuration in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the fault configuration (and resets its counters). Panics on an invalid one, which
    /// is a bug in the test; `try_set_faults` returns the error instead.
    pub fn set_faults(&self, faults: Faults) {
        if let Err(e) = self.try_set_faults(faults) {
            panic!("invalid faults: {e}");
        }
    }

    pub fn try_set_faults(&self, faults: Faults) -> Result<(), String> {
        self.shared.set_faults(faults)
    }

    /// Moves a token's expiry; false when there is no such token.
    pub fn set_token_expiry(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        expires_at_epoch: i64,
    ) -> bool {
        self.shared.set_token_expiry(
            workspace_id,
            service_account_id,
            token_id,
            Some(expires_at_epoch),
        )
    }

    /// Takes a token's expiry away, as a token made in Grafana's own UI may have none: it never
    /// expires, and ListWorkspaceServiceAccountTokens leaves out its `expiresAt`. False when
    /// there is no such token.
    pub fn clear_token_expiry(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
    ) -> bool {
        self.shared
            .set_token_expiry(workspace_id, service_account_id, token_id, None)
    }

    /// Moves an API key's expiry; false when there is no such key.
    pub fn set_api_key_expiry(
        &self,
        workspace_id: &str,
        key_name: &str,
        expires_at_epoch: i64,
    ) -> bool {
        self.shared
            .set_api_key_expiry(workspace_id, key_name, expires_at_epoch)
    }

    /// What an upgrade to Grafana 12 or later does to a workspace's API keys from now on.
    pub fn set_api_key_upgrade(&self, behaviour: ApiKeyUpgrade) {
        self.shared.set_api_key_upgrade(behaviour)
    }

    /// The behaviour in force (default `ApiKeyUpgrade::Migrate`).
    pub fn api_key_upgrade(&self) -> ApiKeyUpgrade {
        self.shared.api_key_upgrade()
    }

    /// Upgrades a workspace to `grafana_version` as UpdateWorkspaceConfiguration with that
    /// `grafanaVersion` would (same rules: the workspace exists, the version is offered and not
    /// older, the workspace is ACTIVE; same effect on API keys), without a call: no faults, no call
    /// log, the configuration kept. The error is the message of the AWS error the call would get.
    pub fn upgrade_workspace(
        &self,
        workspace_id: &str,
        grafana_version: &str,
    ) -> Result<UpgradeReport, String> {
        self.shared
            .upgrade_workspace(workspace_id, grafana_version, self.shared.now())
            .map_err(|e| format!("{}: {}", e.name(), e.message()))
    }

    /// Merges more seed data. Panics on an invalid seed (a bug in the test); `try_add_seed`
    /// returns the error instead. Either way an invalid seed changes nothing.
    pub fn add_seed(&self, seed: Seed) {
        if let Err(e) = self.try_add_seed(seed) {
            panic!("{e}");
        }
    }

    pub fn try_add_seed(&self, seed: Seed) -> Result<(), SeedError> {
        self.shared.add_seed(&seed, self.shared.now())
    }

    /// Stops accepting connections and waits for in-flight calls, at most 2 seconds (a call may be
    /// sleeping injected latency), then stops them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// All routes: test routes and the Grafana stand-in by path, everything else to the AWS side.
fn router(shared: Arc<Shared>) -> axum::Router {
    test_routes::routes()
        .merge(grafana::routes())
        .fallback(aws::handle)
        .with_state(shared)
}
