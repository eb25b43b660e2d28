//! `run`: a pass at start, then on the cron schedule; reload on SIGHUP; clean shutdown.
//!
//! The scheduler (tokio-cron-scheduler) only sends ticks into a channel of one: passes run in
//! this loop, so they never overlap, and a tick that finds a pass still running is counted as a
//! delayed pass. The shutdown trigger is a parameter, so tests can fire it; SIGTERM and SIGINT
//! both feed it. On shutdown the pass in hand stops starting credentials, finishes the ones it
//! holds (bounded by `shutdown_timeout`), and the loop ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub mod http;
pub mod metrics;
pub mod systemd;

#[cfg(test)]
mod scenarios;

use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use crate::config::{Config, ConfigError, SystemdEnv};
use crate::daemon::http::Health;
use crate::daemon::metrics::{Label, Metrics, PassOutcome};
use crate::daemon::systemd::Notifier;
use crate::pass::{Engine, Mode};
use crate::report;

/// How often the daemon loop shows it is alive (well inside `http::HEARTBEAT_STALE`).
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(String),
}

/// Turns SIGTERM and SIGINT into the shutdown trigger and SIGHUP into reload requests.
/// A second SIGTERM or SIGINT while shutting down exits at once.
pub fn signals() -> std::io::Result<(watch::Receiver<bool>, mpsc::Receiver<()>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let (stop_tx, stop_rx) = watch::channel(false);
    let (hup_tx, hup_rx) = mpsc::channel(4);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    let _ = hup_tx.try_send(());
                    continue;
                }
            };
            if *stop_tx.borrow() {
                tracing::warn!(signal = name, "second stop signal: exiting now");
                std::process::exit(130);
            }
            tracing::info!(signal = name, "stopping after the credentials in hand");
            let _ = stop_tx.send(true);
        }
    });
    Ok((stop_rx, hup_rx))
}

/// Everything `run` needs besides the configuration.
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub systemd: SystemdEnv,
}

async fn schedule(
    scheduler: &JobScheduler,
    cron: &str,
    ticks: mpsc::Sender<()>,
    running: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<Uuid, DaemonError> {
    let job = Job::new_async(cron, move |_, _| {
        let ticks = ticks.clone();
        let running = running.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            if running.load(Ordering::SeqCst) || ticks.try_send(()).is_err() {
                metrics.pass_delayed();
                tracing::warn!("a scheduled pass is due while the previous one still runs; it starts when that one ends");
                let _ = ticks.try_send(());
            }
        })
    })
    .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    scheduler
        .add(job)
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))
}

/// The cron schedule feeding ticks into a channel of one, and what a reload needs to swap it.
struct Schedule {
    scheduler: JobScheduler,
    job: Uuid,
    tick_tx: mpsc::Sender<()>,
    ticks: mpsc::Receiver<()>,
    /// A pass (or its jitter wait) is running: a tick now is a delayed pass.
    running: Arc<AtomicBool>,
}

impl Schedule {
    async fn start(cron: &str, metrics: Arc<Metrics>) -> Result<Schedule, DaemonError> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        let (tick_tx, ticks) = mpsc::channel::<()>(1);
        let running = Arc::new(AtomicBool::new(false));
        let job = schedule(&scheduler, cron, tick_tx.clone(), running.clone(), metrics).await?;
        scheduler
            .start()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        Ok(Schedule {
            scheduler,
            job,
            tick_tx,
            ticks,
            running,
        })
    }
}

impl Daemon {
    /// Runs until `shutdown` turns true. `reload` re-reads the configuration on each request
    /// from `reloads`.
    pub async fn run(
        &self,
        mut config: Config,
        reload: impl Fn() -> Result<Config, ConfigError>,
        shutdown: watch::Receiver<bool>,
        mut reloads: mpsc::Receiver<()>,
    ) -> Result<(), DaemonError> {
        let notifier = Notifier::new(&self.systemd);
        let mut sched = Schedule::start(&config.daemon.schedule, self.metrics.clone()).await?;
        self.health.set_scheduler_alive(true);
        notifier.notify("READY=1");
        let watchdog = self.watchdog(&notifier);
        // systemd wants STOPPING=1 when the shutdown begins, not when it ends: the drain of the
        // credentials in hand can take up to shutdown_timeout, and the unit should show
        // "deactivating" meanwhile. The watchdog keeps petting until the loop has ended.
        let stopping = {
            let notifier = notifier.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                if shutdown.wait_for(|s| *s).await.is_ok() {
                    notifier.notify("STOPPING=1");
                }
            })
        };
        tracing::info!(schedule = %config.daemon.schedule, targets = config.targets.len(), "daemon started");
        self.passes(
            &mut config,
            &reload,
            shutdown.clone(),
            &mut reloads,
            &mut sched,
        )
        .await;
        if *shutdown.borrow() {
            // It has sent STOPPING=1 already, or is about to.
            let _ = stopping.await;
        } else {
            // Not reached today (the loop ends only on shutdown), but never leave systemd
            // without STOPPING=1.
            stopping.abort();
            notifier.notify("STOPPING=1");
        }
        self.health.set_scheduler_alive(false);
        if let Some(w) = watchdog {
            w.abort();
        }
        let _ = sched.scheduler.shutdown().await;
        tracing::info!("daemon stopped");
        Ok(())
    }

    /// Pets the systemd watchdog at half its period while the daemon is alive.
    fn watchdog(&self, notifier: &Notifier) -> Option<tokio::task::JoinHandle<()>> {
        self.systemd.watchdog.map(|period| {
            let notifier = notifier.clone();
            let health = self.health.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period / 2);
                loop {
                    every.tick().await;
                    if health.alive() {
                        notifier.notify("WATCHDOG=1");
                    }
                }
            })
        })
    }

    /// The loop: a pass at start, then one per tick; reloads in between; ends on shutdown,
    /// after draining the pass in hand (bounded by `shutdown_timeout`). It beats while it
    /// waits and while a pass runs; a wedged loop stops beating, and /healthz and the systemd
    /// watchdog notice.
    async fn passes(
        &self,
        config: &mut Config,
        reload: &impl Fn() -> Result<Config, ConfigError>,
        mut shutdown: watch::Receiver<bool>,
        reloads: &mut mpsc::Receiver<()>,
        sched: &mut Schedule,
    ) {
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = sched.ticks.recv() => {}
                    _ = beat.tick() => {
                        self.health.beat();
                        continue;
                    }
                    Some(()) = reloads.recv() => {
                        self.reload(config, reload, sched).await;
                        continue;
                    }
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                // From here the pass counts as running, jitter included: a tick that lands
                // during the jitter wait is a delayed pass, not a silent second one.
                sched.running.store(true, Ordering::SeqCst);
                if !config.daemon.jitter.is_zero() {
                    let wait = config.daemon.jitter.mul_f64(fastrand::f64());
                    tokio::select! {
                        _ = self.beating(tokio::time::sleep(wait), &mut beat) => {}
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
            }
            first = false;
            sched.running.store(true, Ordering::SeqCst);
            let report = self.one_pass(config, &mut shutdown, &mut beat).await;
            sched.running.store(false, Ordering::SeqCst);
            let Some(report) = report else { break };
            self.health
                .pass_finished(report.finished_at, report.outcome() != PassOutcome::Failure);
            tracing::info!(
                outcome = report.outcome().label(),
                credentials = report.credentials.len(),
                failed = report.failed(),
                seconds =
                    (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0,
                "pass finished"
            );
            if tracing::enabled!(tracing::Level::DEBUG) {
                let mut lines = report::Lines::new(|line| tracing::debug!(line, "pass summary"));
                report::write_summary(&mut lines, &report);
            }
            if *shutdown.borrow() {
                break;
            }
        }
    }

    /// One pass; on shutdown it drains for at most `shutdown_timeout` (`None` when cut off).
    async fn one_pass(
        &self,
        config: &Config,
        shutdown: &mut watch::Receiver<bool>,
        beat: &mut tokio::time::Interval,
    ) -> Option<crate::pass::PassReport> {
        let pass_shutdown = shutdown.clone();
        let pass = self.engine.pass(config, Mode::Apply, &pass_shutdown);
        tokio::pin!(pass);
        tokio::select! {
            r = self.beating(&mut pass, beat) => Some(r),
            _ = shutdown.wait_for(|s| *s) => {
                let drain = self.beating(&mut pass, beat);
                match tokio::time::timeout(config.daemon.shutdown_timeout, drain).await {
                    Ok(r) => Some(r),
                    Err(_) => {
                        tracing::warn!(timeout_s = config.daemon.shutdown_timeout.as_secs(), "shutdown timeout reached during a pass; an AWSPENDING left behind is resumed by the next pass");
                        None
                    }
                }
            }
        }
    }

    /// Drives `work` to completion, beating the heartbeat meanwhile.
    async fn beating<F: std::future::Future>(
        &self,
        work: F,
        beat: &mut tokio::time::Interval,
    ) -> F::Output {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = beat.tick() => self.health.beat(),
            }
        }
    }

    async fn reload(
        &self,
        config: &mut Config,
        reload: &impl Fn() -> Result<Config, ConfigError>,
        sched: &mut Schedule,
    ) {
        let new = match reload() {
            Ok(new) => new,
            Err(e) => {
                for p in e.problems() {
                    tracing::error!(key = %p.key, value = %p.value, reason = %p.reason, "configuration refused on reload; keeping the running one");
                }
                return;
            }
        };
        if new.daemon.schedule != config.daemon.schedule {
            match schedule(
                &sched.scheduler,
                &new.daemon.schedule,
                sched.tick_tx.clone(),
                sched.running.clone(),
                self.metrics.clone(),
            )
            .await
            {
                Ok(id) => {
                    let _ = sched.scheduler.remove(&sched.job).await;
                    sched.job = id;
                }
                Err(e) => {
                    tracing::error!(error = %e, "new schedule refused; keeping the running configuration");
                    return;
                }
            }
        }
        if new.daemon.listen != config.daemon.listen || new.log != config.log {
            tracing::warn!("daemon.listen and [log] take effect at the next restart");
        }
        for w in &new.warnings {
            tracing::warn!(key = %w.key, reason = %w.reason, "configuration warning");
        }
        self.health.set_stale_after(new.daemon.stale_after);
        *config = new;
        // The remembered listings belong to the old targets; a reload is also how an operator
        // makes the next pass list every workspace now (a new account a pattern matches).
        if let Some(listings) = &self.engine.listings {
            listings.forget_all();
        }
        tracing::info!(
            targets = config.targets.len(),
            "configuration reloaded; it applies from the next pass, which lists every workspace"
        );
    }
}
