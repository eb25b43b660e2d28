//! The one HTTP listener: `/metrics` (Prometheus text format 0.0.4), `/healthz` (the process
//! and its scheduler are alive) and `/readyz` (a pass has finished since start and the last
//! pass that got through is not stale). Nothing here can reach a key.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

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

/// Binds `addr`; [`serve`] then answers on it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What one client may hold of the listener the health probes depend on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most. When one more arrives, the oldest is closed to make room (an
    /// idle one at once, one mid-answer after `eviction_grace`), so a client that opens many
    /// and sends nothing cannot lock the probes out, nor spend the file descriptors the AWS
    /// clients need.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after it opened, or after
    /// its previous answer (an idle keep-alive), is closed.
    pub header_read_timeout: Duration,
    /// How long a connection closed to make room may still finish the answer it is writing.
    pub eviction_grace: Duration,
}

impl Default for Limits {
    /// Prometheus (one keep-alive connection per server), the probes and a person with curl
    /// need a handful; 64 leaves room for an HA pair and many probers. A scrape or a probe
    /// sends its request head at once, so 10 s is far more than any of them needs.
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            eviction_grace: Duration::from_secs(1),
        }
    }
}

/// After a failed accept (e.g. out of file descriptors), wait this long before the next, rather
/// than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until `shutdown` turns true; then every open connection is closed gracefully.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Oldest first: the sender that tells each open connection to close. A connection that
    // ended dropped its receiver, which `is_closed` sees.
    let mut open: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "http listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        open.retain(|c| !c.is_closed());
        while open.len() >= limits.max_connections.max(1) {
            if let Some(oldest) = open.pop_front() {
                let _ = oldest.send(());
            }
        }
        let (close, closed) = oneshot::channel();
        open.push_back(close);
        let metrics = metrics.clone();
        let health = health.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = route(req.uri().path(), &metrics, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Told to make room, or the listener stopped (the sender is gone).
                _ = closed => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.eviction_grace, conn).await;
                }
            }
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

    /// Every wait in these tests ends by this bound; a listener that never closes a connection
    /// fails them instead of hanging.
    const BOUND: Duration = Duration::from_secs(5);

    async fn listener(limits: Limits) -> (SocketAddr, watch::Sender<bool>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = Arc::new(Health::new(Duration::from_secs(600)));
        h.set_scheduler_alive(true);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(l, Arc::new(Metrics::new()), h, stopped, limits));
        (addr, stop)
    }

    /// Sends `GET /healthz` and reads its answer, keeping the connection open.
    async fn healthz(conn: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
                .await
                .expect("an answer within the bound")
                .unwrap();
            assert!(n > 0, "closed before answering: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    }

    /// True when the server closes `conn` within the bound (it may first send an error answer).
    async fn closed_by_server(conn: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(BOUND, conn.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn a_client_holding_many_idle_connections_cannot_lock_out_the_probes() {
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(60),
            eviction_grace: Duration::from_millis(200),
        };
        let (addr, _stop) = listener(limits).await;
        let mut idle = Vec::new();
        for _ in 0..12 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(healthz(&mut probe).await.starts_with("HTTP/1.1 200"));
        // The probe made 13: the 9 oldest were closed to keep 4 open, and the 3 newest
        // still answer.
        for (i, conn) in idle.iter_mut().enumerate() {
            if i < 9 {
                assert!(closed_by_server(conn).await, "connection {i} is still open");
            } else {
                assert!(
                    healthz(conn).await.starts_with("HTTP/1.1 200"),
                    "connection {i}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_request_head_is_closed_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = listener(limits).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut silent).await, "a silent connection");
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        assert!(
            closed_by_server(&mut slow).await,
            "a half-sent request head"
        );
        let mut kept_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(healthz(&mut kept_alive).await.starts_with("HTTP/1.1 200"));
        assert!(
            closed_by_server(&mut kept_alive).await,
            "an idle keep-alive after its answer"
        );
    }

    #[tokio::test]
    async fn stopping_the_listener_closes_its_open_connections() {
        let (addr, stop) = listener(Limits {
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        })
        .await;
        let mut kept_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(healthz(&mut kept_alive).await.starts_with("HTTP/1.1 200"));
        stop.send(true).unwrap();
        assert!(closed_by_server(&mut kept_alive).await);
    }
}
