//! Client-side rate limiting: one adaptive limiter per AWS service, account and region.
//!
//! Requests are spaced evenly at the current rate (no bursts, so a server-side cap of R per
//! second is never exceeded by a limiter set at or below R). A throttling answer cuts the rate
//! by 30%, once per round: the answers to requests paced before a cut say nothing about the new
//! rate, so they neither cut it again nor win it back. Each success at the current rate wins
//! back 2% of it (at least 0.5% of the configured rate), up to the configured rate. The
//! physical limit of a pass is the rate AWS allows: this keeps the rotator just under it.
//!
//! Why (measured with `scripts/bench --only cap`, docs/PERFORMANCE.md): the first design halved
//! the rate on every throttled answer and won back a twentieth of the configured rate per
//! success. The answers to the requests in flight cut it several times over, and two successes
//! took it back above what the service allowed. Configured at twice a service's limit, a pass
//! took 1.8 to 1.95 times what the limit allows (this design: 1.14 to 1.15, with fewer
//! throttled answers); at ten times, it was throttled almost as often as it was served (this
//! design: a fifth to a third less often, in about the same time). Set exactly at a strict
//! limit, arrival jitter alone draws throttles: the first design lost 14 to 17% to them, this
//! one 17 to 19%; 5% under the limit, neither is throttled. The cut is the AWS SDKs'
//! adaptive-retry factor (0.7).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::daemon::metrics::Metrics;

/// What a limiter's gauge series names: the account (a role's, or `default` for the
/// rotator's own credentials) and the region whose requests it paces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterScope {
    pub account: String,
    pub region: String,
}

impl LimiterScope {
    /// The scope of `role_arn` (`None`: the rotator's own credentials) in `region`.
    pub fn new(region: Option<&str>, role_arn: Option<&str>) -> Self {
        // arn:partition:iam::ACCOUNT:role/name
        let account = role_arn
            .and_then(|arn| arn.split(':').nth(4))
            .filter(|a| !a.is_empty())
            .unwrap_or("default");
        LimiterScope {
            account: account.to_owned(),
            region: region.unwrap_or("").to_owned(),
        }
    }
}

pub struct RateLimiter {
    service: &'static str,
    scope: LimiterScope,
    /// The configured rate; `None` = unlimited.
    max: Option<f64>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

struct State {
    rate: f64,
    /// The earliest moment the next request may go.
    next: Instant,
    /// Bumped by each cut: a request carries the round it was paced in.
    round: u64,
}

/// The round a request was paced in, handed back with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    round: u64,
}

impl RateLimiter {
    /// `per_second <= 0` means no limit.
    pub fn new(
        service: &'static str,
        scope: LimiterScope,
        per_second: f64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let max = (per_second > 0.0).then_some(per_second);
        let limiter = RateLimiter {
            service,
            scope,
            max,
            state: Mutex::new(State {
                rate: per_second.max(0.0),
                next: Instant::now(),
                round: 0,
            }),
            metrics,
        };
        if let Some(r) = max {
            limiter.show(r);
        }
        limiter
    }

    fn show(&self, rate: f64) {
        self.metrics
            .set_rate_limit(self.service, &self.scope.account, &self.scope.region, rate);
    }

    /// The slowest the limiter goes: a fiftieth of the configured rate (a tenth let a rate
    /// configured ten times too high stay at the service's limit and be throttled on and on).
    fn floor(max: f64) -> f64 {
        (max / 50.0).max(0.1).min(max)
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) -> Ticket {
        if self.max.is_none() {
            return Ticket { round: 0 };
        }
        let (wait, round) = {
            let mut s = self.state.lock().expect("limiter lock");
            let now = Instant::now();
            let slot = s.next.max(now);
            s.next = slot + Duration::from_secs_f64(1.0 / s.rate);
            (slot - now, s.round)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ticket { round }
    }

    /// AWS said slow down: cut the rate by 30%, unless it was cut since this request was paced.
    pub fn throttled(&self, ticket: Ticket) {
        let Some(max) = self.max else { return };
        let rate = {
            let mut s = self.state.lock().expect("limiter lock");
            if ticket.round != s.round {
                return;
            }
            s.rate = (s.rate * 0.7).max(Self::floor(max));
            s.round += 1;
            s.rate
        };
        tracing::debug!(service = self.service, account = %self.scope.account, region = %self.scope.region, rate, "throttled: slowing down");
        self.show(rate);
    }

    /// A success at the current rate wins back 2% of it (at least 0.5% of the configured rate).
    pub fn succeeded(&self, ticket: Ticket) {
        let Some(max) = self.max else { return };
        let (before, after) = {
            let mut s = self.state.lock().expect("limiter lock");
            if ticket.round != s.round {
                return;
            }
            let before = s.rate;
            s.rate = (s.rate + (s.rate * 0.02).max(max / 200.0)).min(max);
            (before, s.rate)
        };
        if after != before {
            self.show(after);
        }
    }

    pub fn current(&self) -> Option<f64> {
        self.max
            .map(|_| self.state.lock().expect("limiter lock").rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> LimiterScope {
        LimiterScope::new(Some("eu-west-1"), None)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_rate() {
        let l = RateLimiter::new("grafana", scope(), 10.0, Arc::new(Metrics::new()));
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        // 21 requests at 10/s: the last goes 2 s after the first.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_cuts_once_per_round_and_success_recovers() {
        let l = RateLimiter::new("grafana", scope(), 10.0, Arc::new(Metrics::new()));
        let in_flight: Vec<Ticket> = futures::future::join_all((0..4).map(|_| l.acquire())).await;
        for t in &in_flight {
            l.throttled(*t);
        }
        assert!(close(l.current(), 7.0), "one cut for one round of answers");
        // The other answers of that round move nothing either way.
        l.succeeded(in_flight[0]);
        assert!(close(l.current(), 7.0));
        for _ in 0..20 {
            let t = l.acquire().await;
            l.throttled(t);
        }
        assert!(close(l.current(), 0.2), "floored at a fiftieth");
        // Successes win back 2% of the rate, at least 0.5% of the configured rate.
        let t = l.acquire().await;
        l.succeeded(t);
        assert!(close(l.current(), 0.25), "{:?}", l.current());
        let t = l.acquire().await;
        for _ in 0..1000 {
            l.succeeded(t);
        }
        assert!(close(l.current(), 10.0));
        let unlimited = RateLimiter::new("grafana", scope(), 0.0, Arc::new(Metrics::new()));
        let start = Instant::now();
        for _ in 0..100 {
            unlimited.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_is_proportional_to_the_rate() {
        let l = RateLimiter::new("grafana", scope(), 20.0, Arc::new(Metrics::new()));
        let t = l.acquire().await;
        l.throttled(t);
        assert!(close(l.current(), 14.0));
        let t = l.acquire().await;
        l.succeeded(t);
        assert!(close(l.current(), 14.28), "{:?}", l.current());
    }

    /// Each (account, region) limiter has its own series: before, sixty scopes overwrote one.
    #[test]
    fn each_scopes_rate_is_its_own_series() {
        let metrics = Arc::new(Metrics::new());
        let own = RateLimiter::new(
            "grafana",
            LimiterScope::new(Some("eu-west-1"), None),
            10.0,
            metrics.clone(),
        );
        let other = RateLimiter::new(
            "grafana",
            LimiterScope::new(
                Some("us-east-1"),
                Some("arn:aws:iam::210987654321:role/rotator"),
            ),
            10.0,
            metrics.clone(),
        );
        other.throttled(Ticket { round: 0 });
        let text = metrics.render();
        let line = |account: &str, region: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("amg_rotator_aws_rate_limit_requests_per_second{")
                        && l.contains(&format!("account=\"{account}\""))
                        && l.contains(&format!("region=\"{region}\""))
                })
                .unwrap_or_else(|| panic!("no series for {account} {region}:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(line("default", "eu-west-1"), 10.0);
        assert_eq!(line("210987654321", "us-east-1"), 7.0);
        assert_eq!(own.current(), Some(10.0));
    }
}
