//! Fault injection on the AWS routes: latency, random errors, a rate cap, fail-the-Nth-call rules
//! and a whole-service outage.
//!
//! `Faults` is the configuration (serde, the JSON of the seed's `faults`, `--faults FILE` and
//! `PUT /_emulator/faults`); `FaultState` applies it, one decision per AWS call at arrival. Setting a
//! configuration resets the per-operation call counters, the random generator (to `rngSeed`) and
//! the rate window, so a test's counts start from its own `set_faults`. The test-only routes and
//! the Grafana stand-in never pass through here.

use crate::clock::Now;
use crate::errors::{AwsError, ValidationReason, INJECTABLE_ERRORS};
use crate::ops::Operation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// The fault configuration. Every member is optional in JSON; the default injects nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every AWS call, after the call has taken effect and before the answer is sent.
    pub latency_ms: u64,
    /// Per-operation latency (operation name → ms), replacing `latencyMs` for that operation.
    pub operation_latency_ms: BTreeMap<String, u64>,
    /// The fraction (0.0..=1.0) of calls answered with an error drawn from `errorRateErrors`.
    pub error_rate: f64,
    /// The errors `errorRate` draws from, uniformly; empty means InternalServerException and
    /// ThrottlingException.
    pub error_rate_errors: Vec<String>,
    /// Seed of the generator behind `errorRate`: the same seed and calls give the same failures.
    pub rng_seed: u64,
    /// At most this many calls are let through in any sliding second; the excess answers
    /// ThrottlingException (and does not count against the cap).
    pub max_requests_per_second: Option<u32>,
    /// Fail-the-Nth-call rules.
    pub fail_nth: Vec<FailRule>,
    /// An outage: every AWS call answers 503 ServiceUnavailableException.
    pub down: bool,
    /// The `Retry-After` header of injected ThrottlingException, InternalServerException and
    /// ServiceUnavailableException answers.
    pub retry_after_seconds: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            operation_latency_ms: BTreeMap::new(),
            error_rate: 0.0,
            error_rate_errors: Vec::new(),
            rng_seed: 0,
            max_requests_per_second: None,
            fail_nth: Vec::new(),
            down: false,
            retry_after_seconds: 1,
        }
    }
}

/// "Fail calls `nth` .. `nth + times - 1` of `operation` with `error`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailRule {
    /// An operation name such as `CreateWorkspaceServiceAccountToken`, or `*` for every call.
    pub operation: String,
    /// 1-based: the count of calls to `operation` since the configuration was set.
    pub nth: u32,
    /// An error name: one of the modelled exceptions, or ServiceUnavailableException.
    pub error: String,
    /// How many consecutive calls fail, from the nth on.
    #[serde(default = "one")]
    pub times: u32,
    /// The error message; a default names the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn one() -> u32 {
    1
}

impl FailRule {
    /// Fail the `nth` call of `operation` once with `error`.
    pub fn new(operation: &str, nth: u32, error: &str) -> FailRule {
        FailRule {
            operation: operation.to_string(),
            nth,
            error: error.to_string(),
            times: 1,
            message: None,
        }
    }

    /// Fail `times` consecutive calls from the nth on.
    pub fn times(mut self, times: u32) -> FailRule {
        self.times = times;
        self
    }
}

impl Faults {
    /// Parses and checks a fault configuration.
    pub fn from_json_str(json: &str) -> Result<Faults, String> {
        let faults: Faults = serde_json::from_str(json).map_err(|e| e.to_string())?;
        faults.validate()?;
        Ok(faults)
    }

    /// Reads, parses and checks a fault configuration file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Faults, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Faults::from_json_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks names and ranges; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let known_op = |name: &str| Operation::from_name(name).is_some();
        let known_error = |name: &str| INJECTABLE_ERRORS.contains(&name);
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("errorRate {} is not within 0..1", self.error_rate));
        }
        for name in &self.error_rate_errors {
            if !known_error(name) {
                return Err(format!("errorRateErrors: unknown error {name}"));
            }
        }
        for name in self.operation_latency_ms.keys() {
            if !known_op(name) {
                return Err(format!("operationLatencyMs: unknown operation {name}"));
            }
        }
        for rule in &self.fail_nth {
            if rule.operation != "*" && !known_op(&rule.operation) {
                return Err(format!("failNth: unknown operation {}", rule.operation));
            }
            if !known_error(&rule.error) {
                return Err(format!(
                    "failNth: unknown error {} (one of {})",
                    rule.error,
                    INJECTABLE_ERRORS.join(", ")
                ));
            }
            if rule.nth == 0 || rule.times == 0 {
                return Err("failNth: nth and times start at 1".to_string());
            }
        }
        Ok(())
    }
}

/// The live fault configuration and what it has counted.
pub(crate) struct FaultState {
    faults: Faults,
    rng: fastrand::Rng,
    /// Calls per operation name, and under `*` all calls, since the configuration was set.
    counts: HashMap<String, u32>,
    /// Arrival times of the calls the rate cap let through in the last second.
    window: VecDeque<std::time::Instant>,
}

impl FaultState {
    pub fn new(faults: Faults) -> FaultState {
        FaultState {
            rng: fastrand::Rng::with_seed(faults.rng_seed),
            faults,
            counts: HashMap::new(),
            window: VecDeque::new(),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Replaces the configuration and resets counters, generator and rate window.
    pub fn set(&mut self, faults: Faults) {
        *self = FaultState::new(faults);
    }

    /// Counts one call and decides whether a fault answers it instead of the operation.
    /// Precedence: `down`, then fail-Nth rules, then the rate cap, then `errorRate`.
    pub fn decide(
        &mut self,
        operation: &str,
        workspace_id: Option<&str>,
        now: Now,
    ) -> Option<AwsError> {
        let count = bump(&mut self.counts, operation);
        let all = bump(&mut self.counts, "*");
        let retry_after = self.faults.retry_after_seconds;

        if self.faults.down {
            return Some(AwsError::ServiceUnavailable {
                message: "Injected fault: the service is down.".to_string(),
                retry_after_seconds: retry_after,
            });
        }
        for rule in &self.faults.fail_nth {
            let n = match rule.operation.as_str() {
                "*" => all,
                op if op == operation => count,
                _ => continue,
            };
            if n >= rule.nth && n - rule.nth < rule.times {
                let message = rule.message.clone().unwrap_or_else(|| {
                    format!(
                        "Injected fault: call {n} of {} fails with {}.",
                        rule.operation, rule.error
                    )
                });
                return Some(injected_error(
                    &rule.error,
                    message,
                    workspace_id,
                    retry_after,
                ));
            }
        }
        if let Some(cap) = self.faults.max_requests_per_second {
            while let Some(&oldest) = self.window.front() {
                if now.instant.duration_since(oldest) >= Duration::from_secs(1) {
                    self.window.pop_front();
                } else {
                    break;
                }
            }
            if self.window.len() >= cap as usize {
                return Some(AwsError::Throttling {
                    message: format!("Rate exceeded: at most {cap} requests per second."),
                    quota_code: None,
                    retry_after_seconds: retry_after,
                });
            }
            self.window.push_back(now.instant);
        }
        if self.faults.error_rate > 0.0 && self.rng.f64() < self.faults.error_rate {
            let default = ["InternalServerException", "ThrottlingException"];
            let choices: Vec<&str> = if self.faults.error_rate_errors.is_empty() {
                default.to_vec()
            } else {
                self.faults
                    .error_rate_errors
                    .iter()
                    .map(String::as_str)
                    .collect()
            };
            let name = choices[self.rng.usize(..choices.len())];
            let message = format!("Injected fault: random {name} (errorRate).");
            return Some(injected_error(name, message, workspace_id, retry_after));
        }
        None
    }

    /// The latency to add to a call of `operation`.
    pub fn latency(&self, operation: &str) -> Duration {
        let ms = self
            .faults
            .operation_latency_ms
            .get(operation)
            .copied()
            .unwrap_or(self.faults.latency_ms);
        Duration::from_millis(ms)
    }
}

fn bump(counts: &mut HashMap<String, u32>, key: &str) -> u32 {
    let n = counts.entry(key.to_string()).or_insert(0);
    *n += 1;
    *n
}

/// An error by name, with the modelled members filled from the call.
fn injected_error(
    name: &str,
    message: String,
    workspace_id: Option<&str>,
    retry_after_seconds: u32,
) -> AwsError {
    let resource_id = workspace_id.unwrap_or("unknown");
    match name {
        "ValidationException" => AwsError::validation(ValidationReason::Other, message),
        "AccessDeniedException" => AwsError::AccessDenied { message },
        "ResourceNotFoundException" => AwsError::not_found("WORKSPACE", resource_id, message),
        "ConflictException" => AwsError::conflict("WORKSPACE", resource_id, message),
        "ServiceQuotaExceededException" => AwsError::ServiceQuotaExceeded {
            message,
            resource_id: resource_id.to_string(),
            resource_type: "WORKSPACE".to_string(),
            quota_code: "injected".to_string(),
        },
        "ThrottlingException" => AwsError::Throttling {
            message,
            quota_code: None,
            retry_after_seconds,
        },
        "ServiceUnavailableException" => AwsError::ServiceUnavailable {
            message,
            retry_after_seconds,
        },
        // Validation keeps unknown names out; an internal error is the honest fallback.
        _ => AwsError::InternalServer {
            message,
            retry_after_seconds,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn names(state: &mut FaultState, op: &str, n: usize) -> Vec<Option<&'static str>> {
        (0..n)
            .map(|_| state.decide(op, None, clock::now()).map(|e| e.name()))
            .collect()
    }

    #[test]
    fn fail_nth_counts_per_operation() {
        let mut state = FaultState::new(Faults {
            fail_nth: vec![FailRule::new("ListWorkspaces", 2, "ThrottlingException").times(2)],
            ..Faults::default()
        });
        assert_eq!(
            names(&mut state, "DescribeWorkspace", 3),
            [None, None, None]
        );
        assert_eq!(
            names(&mut state, "ListWorkspaces", 4),
            [
                None,
                Some("ThrottlingException"),
                Some("ThrottlingException"),
                None
            ]
        );
    }

    #[test]
    fn error_rate_is_deterministic_for_a_seed() {
        let faults = Faults {
            error_rate: 0.5,
            rng_seed: 7,
            ..Faults::default()
        };
        let a = names(&mut FaultState::new(faults.clone()), "ListWorkspaces", 50);
        let b = names(&mut FaultState::new(faults), "ListWorkspaces", 50);
        assert_eq!(a, b);
        let failed = a.iter().filter(|n| n.is_some()).count();
        assert!((10..=40).contains(&failed), "{failed} of 50 failed");
    }

    #[test]
    fn rate_cap_lets_the_first_calls_through() {
        let mut state = FaultState::new(Faults {
            max_requests_per_second: Some(2),
            ..Faults::default()
        });
        let now = clock::now();
        let outcomes: Vec<_> = (0..4)
            .map(|_| state.decide("ListWorkspaces", None, now).map(|e| e.name()))
            .collect();
        assert_eq!(
            outcomes,
            [
                None,
                None,
                Some("ThrottlingException"),
                Some("ThrottlingException")
            ]
        );
        let later = Now {
            instant: now.instant + Duration::from_millis(1001),
            ..now
        };
        assert_eq!(state.decide("ListWorkspaces", None, later), None);
    }

    #[test]
    fn validate_rejects_unknown_names() {
        let bad_op = Faults {
            fail_nth: vec![FailRule::new("ListThings", 1, "ThrottlingException")],
            ..Faults::default()
        };
        assert!(bad_op.validate().is_err());
        let bad_error = Faults {
            fail_nth: vec![FailRule::new("ListWorkspaces", 1, "Boom")],
            ..Faults::default()
        };
        assert!(bad_error.validate().is_err());
        assert!(Faults::default().validate().is_ok());
    }
}
