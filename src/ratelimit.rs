//! Client-side rate limiting: one adaptive limiter per AWS service, account and region.
//!
//! Requests are spaced evenly at the current rate (no bursts, so a server-side cap of R per
//! second is never exceeded by a limiter set at or below R). A throttling answer halves the
//! rate; each success wins a twentieth of the configured rate back, up to the configured rate.
//! The physical limit of a pass is the rate AWS allows: this keeps the rotator just under it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;

pub struct RateLimiter {
    service: &'static str,
    /// The configured rate; `None` = unlimited.
    max: Option<f64>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

struct State {
    rate: f64,
    /// The earliest moment the next request may go.
    next: Instant,
}

impl RateLimiter {
    /// `per_second <= 0` means no limit.
    pub fn new(service: &'static str, per_second: f64, metrics: Arc<Metrics>) -> Self {
        let max = (per_second > 0.0).then_some(per_second);
        if let Some(r) = max {
            metrics.set_rate_limit(service, r);
        }
        RateLimiter {
            service,
            max,
            state: Mutex::new(State {
                rate: per_second.max(0.0),
                next: Instant::now(),
            }),
            metrics,
        }
    }

    fn floor(max: f64) -> f64 {
        (max / 10.0).max(0.2).min(max)
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        if self.max.is_none() {
            return;
        }
        let wait = {
            let mut s = self.state.lock().expect("limiter lock");
            let now = Instant::now();
            let slot = s.next.max(now);
            s.next = slot + Duration::from_secs_f64(1.0 / s.rate);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// AWS said slow down: halve the rate.
    pub fn throttled(&self) {
        let Some(max) = self.max else { return };
        let rate = {
            let mut s = self.state.lock().expect("limiter lock");
            s.rate = (s.rate / 2.0).max(Self::floor(max));
            s.rate
        };
        tracing::debug!(service = self.service, rate, "throttled: slowing down");
        self.metrics.set_rate_limit(self.service, rate);
    }

    /// A success wins back part of the configured rate.
    pub fn succeeded(&self) {
        let Some(max) = self.max else { return };
        let (before, after) = {
            let mut s = self.state.lock().expect("limiter lock");
            let before = s.rate;
            s.rate = (s.rate + max / 20.0).min(max);
            (before, s.rate)
        };
        if after != before {
            self.metrics.set_rate_limit(self.service, after);
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

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_rate() {
        let l = RateLimiter::new("grafana", 10.0, Arc::new(Metrics::new()));
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        // 21 requests at 10/s: the last goes 2 s after the first.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_and_success_recovers() {
        let l = RateLimiter::new("grafana", 10.0, Arc::new(Metrics::new()));
        l.throttled();
        assert_eq!(l.current(), Some(5.0));
        for _ in 0..4 {
            l.throttled();
        }
        assert_eq!(l.current(), Some(1.0), "floored at a tenth");
        for _ in 0..100 {
            l.succeeded();
        }
        assert_eq!(l.current(), Some(10.0));
        let unlimited = RateLimiter::new("grafana", 0.0, Arc::new(Metrics::new()));
        let start = Instant::now();
        for _ in 0..100 {
            unlimited.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
