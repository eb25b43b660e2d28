//! The one mutex-guarded world every route and the library API share: state, faults, call log.
//!
//! All access goes through `Shared::lock`, a `std::sync::Mutex`: critical sections are short and
//! never await (latency is slept after the lock is released). The methods here are the test-side
//! operations used by both `test_routes` (HTTP) and `Emulator` (Rust).

use crate::clock::Now;
use crate::errors::AwsError;
use crate::faults::{FaultState, Faults};
use crate::model::{ApiKeyUpgrade, State};
use crate::seed::{self, Seed, SeedError};
use crate::upgrade::{self, UpgradeReport};
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};

/// The call log keeps at most this many records, dropping the oldest.
const MAX_CALL_RECORDS: usize = 100_000;

/// One AWS call, as the emulator answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// 1-based, in the order the calls were answered (latency is added after recording).
    pub seq: u64,
    /// The operation name, e.g. `CreateWorkspaceServiceAccountToken`, or `UnknownOperation`.
    pub operation: String,
    pub workspace_id: Option<String>,
    pub service_account_id: Option<String>,
    pub token_id: Option<String>,
    pub key_name: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The `x-amzn-ErrorType` of an error answer.
    pub error_type: Option<String>,
    /// Whether the error was injected by a fault rather than produced by the operation.
    pub injected: bool,
    /// When the call arrived, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

pub(crate) struct Inner {
    pub state: State,
    pub faults: FaultState,
    pub calls: Vec<CallRecord>,
    pub next_seq: u64,
    /// Keys, request IDs: randomness that needs no reproducibility.
    pub rng: fastrand::Rng,
}

impl Inner {
    /// Appends a record, giving it the next sequence number.
    pub fn record(&mut self, mut record: CallRecord) -> CallRecord {
        self.next_seq += 1;
        record.seq = self.next_seq;
        if self.calls.len() >= MAX_CALL_RECORDS {
            self.calls.remove(0);
        }
        self.calls.push(record.clone());
        record
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Print one line per AWS call to stderr.
    pub log_calls: bool,
    /// How far the emulated service's clock is from the host's, in milliseconds.
    pub clock_offset_ms: i64,
}

impl Shared {
    /// The emulated service's "now": the host's clock plus `clock_offset_ms`.
    pub fn now(&self) -> crate::clock::Now {
        crate::clock::now_offset(self.clock_offset_ms)
    }

    pub fn new(log_calls: bool) -> Shared {
        Shared {
            inner: Mutex::new(Inner {
                state: State::default(),
                faults: FaultState::new(Faults::default()),
                calls: Vec::new(),
                next_seq: 0,
                rng: fastrand::Rng::new(),
            }),
            log_calls,
            clock_offset_ms: 0,
        }
    }

    /// The lock. A panic while holding it cannot leave the state half-written in a way tests
    /// care about, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> State {
        self.lock().state.clone()
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.faults().clone()
    }

    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.lock().faults.set(faults);
        Ok(())
    }

    /// Merges a seed; its faults, when given, replace the fault configuration.
    pub fn add_seed(&self, seed: &Seed, now: Now) -> Result<(), SeedError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        seed::apply(&mut inner.state, seed, now, &mut inner.rng)?;
        if let Some(faults) = &seed.faults {
            inner.faults.set(faults.clone());
        }
        Ok(())
    }

    /// `expires_at` `None` leaves the token without expiry.
    pub fn set_token_expiry(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        expires_at: Option<i64>,
    ) -> bool {
        self.with_token(workspace_id, service_account_id, token_id, |t| {
            t.expires_at = expires_at
        })
    }

    /// `last_used_at` `None`: the token was never used.
    pub fn set_token_last_used(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        last_used_at: Option<i64>,
    ) -> bool {
        self.with_token(workspace_id, service_account_id, token_id, |t| {
            t.last_used_at = last_used_at
        })
    }

    /// Changes one token; false when there is no such token.
    fn with_token(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        change: impl FnOnce(&mut crate::model::Token),
    ) -> bool {
        let mut inner = self.lock();
        let token = inner
            .state
            .workspace_mut(workspace_id)
            .and_then(|ws| ws.service_account_mut(service_account_id))
            .and_then(|sa| sa.tokens.iter_mut().find(|t| t.id == token_id));
        token.map(change).is_some()
    }

    pub fn api_key_upgrade(&self) -> ApiKeyUpgrade {
        self.lock().state.api_keys_at_upgrade
    }

    pub fn set_api_key_upgrade(&self, mode: ApiKeyUpgrade) {
        self.lock().state.api_keys_at_upgrade = mode;
    }

    /// Upgrades a workspace by the rules of UpdateWorkspaceConfiguration's `grafanaVersion`
    /// (exists, offered, not a downgrade, ACTIVE), keeping its configuration. The error is the
    /// AWS error the operation would answer.
    pub fn upgrade_workspace(
        &self,
        workspace_id: &str,
        grafana_version: &str,
        now: Now,
    ) -> Result<UpgradeReport, AwsError> {
        let mut inner = self.lock();
        let state = &mut inner.state;
        let changes = upgrade::check(state, workspace_id, Some(grafana_version))?;
        let mode = state.api_keys_at_upgrade;
        let ws = state
            .workspace_mut(workspace_id)
            .expect("checked above: the workspace exists");
        if changes {
            Ok(upgrade::apply(ws, grafana_version, mode, now.epoch_secs()))
        } else {
            Ok(UpgradeReport {
                workspace_id: ws.id.clone(),
                from_version: ws.grafana_version.clone(),
                to_version: ws.grafana_version.clone(),
                api_keys_at_upgrade: mode,
                invalidated_api_keys: Vec::new(),
                migrated_api_keys: Vec::new(),
            })
        }
    }

    pub fn set_api_key_expiry(&self, workspace_id: &str, key_name: &str, expires_at: i64) -> bool {
        let mut inner = self.lock();
        let key = inner
            .state
            .workspace_mut(workspace_id)
            .and_then(|ws| ws.api_keys.iter_mut().find(|k| k.key_name == key_name));
        match key {
            Some(key) => {
                key.expires_at = expires_at;
                true
            }
            None => false,
        }
    }
}
