//! The one HTTP listener: `/metrics` (Prometheus text format 0.0.4), `/healthz` (the process
//! and its scheduler are alive) and `/readyz` (a pass has finished since start and the last
//! pass that got through is not stale). Nothing here can reach a key.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::daemon::metrics::Metrics;

/// What `/healthz` and `/readyz` report, updated by the daemon.
/// `/healthz` fails when the daemon loop has not beaten for this long: it is wedged.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(60);

pub struct Health {
    scheduler_alive: AtomicBool,
    /// Last sign of life of the daemon loop, which beats while it waits and while a pass runs.
    last_beat: Mutex<std::time::Instant>,
    /// End of the last pass that was not a total failure.
    last_good_pass: Mutex<Option<DateTime<Utc>>>,
    stale_after: Mutex<Duration>,
}

impl Health {
    pub fn new(stale_after: Duration) -> Self {
        Health {
            scheduler_alive: AtomicBool::new(false),
            last_beat: Mutex::new(std::time::Instant::now()),
            last_good_pass: Mutex::new(None),
            stale_after: Mutex::new(stale_after),
        }
    }

    pub fn set_scheduler_alive(&self, alive: bool) {
        self.scheduler_alive.store(alive, Ordering::SeqCst);
    }

    pub fn set_stale_after(&self, d: Duration) {
        *self.stale_after.lock().expect("health lock") = d;
    }

    pub fn pass_finished(&self, at: DateTime<Utc>, got_through: bool) {
        if got_through {
            *self.last_good_pass.lock().expect("health lock") = Some(at);
        }
    }

    pub fn beat(&self) {
        *self.last_beat.lock().expect("health lock") = std::time::Instant::now();
    }

    /// The scheduler runs and the daemon loop beat recently.
    pub fn alive(&self) -> bool {
        self.scheduler_alive.load(Ordering::SeqCst)
            && self.last_beat.lock().expect("health lock").elapsed() <= HEARTBEAT_STALE
    }

    /// `Ok` with a reason to show, or `Err` with why not ready.
    pub fn ready(&self, now: DateTime<Utc>) -> Result<String, String> {
        let last = *self.last_good_pass.lock().expect("health lock");
        let stale_after = *self.stale_after.lock().expect("health lock");
        match last {
            None => Err("no pass has finished yet".into()),
            Some(t) => {
                let age = (now - t).to_std().unwrap_or_default();
                if age > stale_after {
                    Err(format!(
                        "last good pass ended {}s ago, more than {}s",
                        age.as_secs(),
                        stale_after.as_secs()
                    ))
                } else {
                    Ok(format!("last good pass ended {}s ago", age.as_secs()))
                }
            }
        }
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn route(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" if health.alive() => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "scheduler not running\n".into(),
        ),
        "/readyz" => match health.ready(Utc::now()) {
            Ok(why) => text(StatusCode::OK, PLAIN, format!("ready: {why}\n")),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Binds `addr`; the returned future serves until `shutdown` turns true.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = route(req.uri().path(), &metrics, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_recent_good_pass() {
        let h = Health::new(Duration::from_secs(600));
        let now = Utc::now();
        assert!(h.ready(now).is_err());
        h.pass_finished(now, false);
        assert!(h.ready(now).is_err());
        h.pass_finished(now, true);
        assert!(h.ready(now).is_ok());
        assert!(h.ready(now + chrono::Duration::seconds(601)).is_err());
    }

    #[test]
    fn a_loop_that_stops_beating_is_not_alive() {
        let h = Health::new(Duration::from_secs(600));
        h.set_scheduler_alive(true);
        assert!(h.alive());
        *h.last_beat.lock().unwrap() =
            std::time::Instant::now() - HEARTBEAT_STALE - Duration::from_secs(1);
        assert!(!h.alive());
        h.beat();
        assert!(h.alive());
    }

    #[test]
    fn routes_answer_with_the_right_status() {
        let m = Metrics::new();
        let h = Health::new(Duration::from_secs(600));
        assert_eq!(
            route("/healthz", &m, &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_scheduler_alive(true);
        assert_eq!(route("/healthz", &m, &h).status(), StatusCode::OK);
        let r = route("/metrics", &m, &h);
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("version=0.0.4"));
        assert_eq!(route("/nope", &m, &h).status(), StatusCode::NOT_FOUND);
    }
}
