//! Scenarios: `Daemon::run` over the in-memory fakes, with tokio's clock paused (issue 12,
//! item 3): the pass at start, the shutdown trigger, reloads. What is asserted is what a user
//! or systemd sees: the secret published, `/readyz` and `/healthz` (through `Health`), the
//! notifications on `NOTIFY_SOCKET`, and `run` returning.
//!
//! tokio-cron-scheduler does not cooperate with paused time: its ticker sleeps on tokio's clock
//! (every 500 ms) but decides which jobs are due from the wall clock (`Utc::now()`), so no
//! amount of virtual time brings a scheduled pass; paused, its ticker only spins through
//! virtual time. So the schedule here is once a year, and what is tested is what does not wait
//! for a tick: the pass at start, the shutdown and reload handling of the loop. That a valid
//! reload applies from the next *scheduled* pass is left to the end-to-end suites.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::http::Health;
use super::metrics::Metrics;
use super::{Daemon, DaemonError};
use crate::aws::fake::{ops, AccountSeed, FakeGrafana, FakeSecrets, FakeVerifier, WorkspaceSeed};
use crate::aws::{Connector, Services};
use crate::config::{Config, ConfigError, SystemdEnv};
use crate::model::{Key, Role, AWSCURRENT};
use crate::pass::Engine;

const WS: &str = "g-0123456789";
const SECRET: &str = "amg-token-rotator/g-0123456789/terraform";

/// Once a year: no tick comes during a test.
const CONFIG: &str = r#"
[daemon]
schedule = "0 0 0 1 1 *"
stale_after = "2h"

[aws]
region = "us-east-1"

[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]
"#;

fn configuration(toml: &str) -> Result<Config, ConfigError> {
    crate::config::from_sources(toml, &BTreeMap::new(), "config.toml")
}

/// The one region the configuration reaches.
struct OneRegion {
    grafana: FakeGrafana,
    secrets: FakeSecrets,
}

#[async_trait]
impl Connector for OneRegion {
    async fn services(&self, region: Option<&str>, _role_arn: Option<&str>) -> Services {
        assert_eq!(region, Some("us-east-1"));
        Services {
            grafana: Arc::new(self.grafana.clone()),
            secrets: Arc::new(self.secrets.clone()),
        }
    }
}

/// A daemon over the fakes, its triggers, and what it tells systemd.
struct Harness {
    grafana: FakeGrafana,
    secrets: FakeSecrets,
    health: Arc<Health>,
    daemon: Daemon,
    shutdown: watch::Sender<bool>,
    shutdown_rx: Option<watch::Receiver<bool>>,
    reload: mpsc::Sender<()>,
    reload_rx: Option<mpsc::Receiver<()>>,
    /// The configurations the reload function hands out, in order, and how many it has.
    reloads: Arc<Mutex<VecDeque<Result<Config, ConfigError>>>>,
    reloaded: Arc<AtomicUsize>,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let grafana = FakeGrafana::new().with_workspace(
            WorkspaceSeed::new(WS)
                .with_service_account(AccountSeed::new("terraform", Role::Editor)),
        );
        let secrets = FakeSecrets::new().with_now(chrono::Utc::now());
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(Duration::from_secs(7200)));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("notify");
        let notify = UnixDatagram::bind(&socket).expect("a notify socket");
        notify.set_nonblocking(true).expect("non-blocking");
        let daemon = Daemon {
            engine: Arc::new(Engine {
                connector: Arc::new(OneRegion {
                    grafana: grafana.clone(),
                    secrets: secrets.clone(),
                }),
                verifier: Arc::new(FakeVerifier::accepting()),
                metrics: metrics.clone(),
                coordinator: None,
                listings: Some(Default::default()),
            }),
            metrics,
            health: health.clone(),
            systemd: SystemdEnv {
                notify_socket: Some(socket.display().to_string()),
                watchdog: None,
            },
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (reload, reload_rx) = mpsc::channel(4);
        Harness {
            grafana,
            secrets,
            health,
            daemon,
            shutdown,
            shutdown_rx: Some(shutdown_rx),
            reload,
            reload_rx: Some(reload_rx),
            reloads: Arc::default(),
            reloaded: Arc::default(),
            notify,
            _dir: dir,
        }
    }

    /// Runs the daemon on `CONFIG` while `scenario` plays, and returns what `run` returned.
    /// Fails if `run` has not returned within a virtual hour.
    async fn run(
        &mut self,
        scenario: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let (reloads, reloaded) = (self.reloads.clone(), self.reloaded.clone());
        let reload = move || {
            reloaded.fetch_add(1, Ordering::SeqCst);
            reloads
                .lock()
                .expect("reloads lock")
                .pop_front()
                .expect("a configuration for each reload")
        };
        let run = self.daemon.run(
            configuration(CONFIG).expect("valid"),
            reload,
            self.shutdown_rx.take().expect("run once"),
            self.reload_rx.take().expect("run once"),
        );
        let (result, ()) = tokio::join!(
            async {
                tokio::time::timeout(Duration::from_secs(3600), run)
                    .await
                    .expect("run ends")
            },
            scenario
        );
        result
    }

    /// What the daemon told systemd, in order.
    fn notifications(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = self.notify.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn published_key(&self) -> Option<Key> {
        let value = self.secrets.value(SECRET, AWSCURRENT)?;
        let doc: serde_json::Value = serde_json::from_str(&value).expect("JSON");
        Some(Key::new(doc["token"].as_str()?.to_owned()))
    }
}

/// Waits, in virtual time, until `done` holds; panics after ten virtual minutes.
async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(600), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "waited ten minutes for {what}");
}

#[tokio::test(start_paused = true)]
async fn the_daemon_rotates_at_start_without_waiting_for_the_schedule() {
    let mut h = Harness::new();
    let (grafana, secrets, health, shutdown) = (
        h.grafana.clone(),
        h.secrets.clone(),
        h.health.clone(),
        h.shutdown.clone(),
    );
    let result = h
        .run(async {
            until("the first pass", || {
                health.ready(chrono::Utc::now()).is_ok()
            })
            .await;
            assert!(secrets.exists(SECRET));
            shutdown.send(true).expect("the daemon listens");
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    let key = h.published_key().expect("AWSCURRENT holds the token");
    assert!(grafana.key_works(WS, &key, chrono::Utc::now()));
    assert_eq!(
        h.notifications().first().map(String::as_str),
        Some("READY=1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_through_the_trigger_ends_the_loop_cleanly() {
    let mut h = Harness::new();
    let (health, shutdown) = (h.health.clone(), h.shutdown.clone());
    let result = h
        .run(async {
            until("the first pass", || {
                health.ready(chrono::Utc::now()).is_ok()
            })
            .await;
            assert!(health.alive(), "the scheduler runs and the loop beats");
            shutdown.send(true).expect("the daemon listens");
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!h.health.alive(), "/healthz reports the scheduler stopped");
    assert_eq!(h.notifications(), ["READY=1", "STOPPING=1"]);
    assert_eq!(
        h.grafana.count(ops::DESCRIBE_WORKSPACE),
        1,
        "one pass, no other"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_signalled_before_start_skips_every_credential_and_ends() {
    let mut h = Harness::new();
    h.shutdown.send(true).expect("the receiver is held");
    let result = h.run(async {}).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!h.secrets.exists(SECRET), "nothing rotated");
    assert_eq!(h.grafana.count(ops::CREATE_TOKEN), 0);
    assert_eq!(h.notifications(), ["READY=1", "STOPPING=1"]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_a_bad_configuration_keeps_the_running_one() {
    let mut h = Harness::new();
    {
        let mut queue = h.reloads.lock().expect("reloads lock");
        // A typo in the file, then a valid one that makes /readyz stricter.
        queue.push_back(configuration(&CONFIG.replace("2h", "2 hours and a bit")));
        queue.push_back(configuration(&CONFIG.replace("2h", "1m")));
        assert!(queue[0].is_err() && queue[1].is_ok());
    }
    let (health, shutdown, reload, reloaded) = (
        h.health.clone(),
        h.shutdown.clone(),
        h.reload.clone(),
        h.reloaded.clone(),
    );
    // Half an hour after the last pass: ready under the running stale_after (2h), not under 1m.
    let ready_later = || health.ready(chrono::Utc::now() + chrono::Duration::minutes(30));
    let result = h
        .run(async {
            until("the first pass", || {
                health.ready(chrono::Utc::now()).is_ok()
            })
            .await;
            reload.send(()).await.expect("the daemon listens");
            until("the first reload", || reloaded.load(Ordering::SeqCst) == 1).await;
            assert!(
                ready_later().is_ok(),
                "the running stale_after still applies"
            );
            assert!(health.alive(), "still running");

            reload.send(()).await.expect("the daemon listens");
            until("the second reload", || reloaded.load(Ordering::SeqCst) == 2).await;
            let refused = ready_later().expect_err("the new stale_after applies");
            assert!(refused.contains("more than 60s"), "{refused}");
            shutdown.send(true).expect("the daemon listens");
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
}
