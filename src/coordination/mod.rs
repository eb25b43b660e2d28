//! Coordination of several replicas (issue 16): the lease each replica must hold on a shard of
//! the work (a workspace) before it plans or changes anything there.
//!
//! - `lease`: one lease on one item, the Amazon DynamoDB Lock Client's way (pure, property
//!   tested with clocks apart and writes lost);
//! - `shards`: which shards a replica holds among the members alive (pure);
//! - `table`: the table they run on (DynamoDB; tests/coordination.rs runs it on moto's server);
//! - `guard`: the check before every mutating call;
//! - `Coordinator` (here): the rounds against the table, at each pass's start (claiming) and on
//!   the heartbeat (renewing), and the release on shutdown.
//!
//! Times are this process's monotonic milliseconds (`Instant`), never the wall clock.

pub mod guard;
pub mod lease;
pub mod shards;
pub mod table;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::aws::ApiError;
use crate::config::LeaseSettings;
use crate::daemon::metrics::Metrics;
use shards::Shards;
use table::LeaseTable;

/// The shard of a workspace: its region (as the target names it; `default` for the standard
/// chain's) and its ID. Every replica of one configuration computes the same.
pub fn shard_of(region: Option<&str>, workspace_id: &str) -> String {
    format!("{}/{workspace_id}", region.unwrap_or("default"))
}

/// One replica's coordination: its view of the shards, and the table.
pub struct Coordinator {
    me: String,
    metrics: Arc<Metrics>,
    table: Arc<dyn LeaseTable>,
    heartbeat: Duration,
    epoch: Instant,
    state: Mutex<State>,
    /// One round at a time: two interleaved rounds would each renew from the same read, and
    /// the second, refused by the first's new version, would give up a lease still held.
    rounds: tokio::sync::Mutex<()>,
}

struct State {
    shards: Shards,
    /// The shards of the work, as the last pass discovered them.
    work: BTreeSet<String>,
    /// What the last round held, to log what changed hands.
    held: BTreeSet<String>,
}

impl Coordinator {
    /// `me` names this replica in the table; it must differ between replicas and between a
    /// replica's restarts (a host name and a process start are enough).
    pub fn new(
        me: &str,
        table: Arc<dyn LeaseTable>,
        settings: &LeaseSettings,
        metrics: Arc<Metrics>,
    ) -> Coordinator {
        // What a holder gives up of its lease: clock-rate differences and a step begun just
        // before the end. A tenth, at least a second.
        let safety = (settings.lease_duration / 10).max(Duration::from_secs(1));
        Coordinator {
            me: me.to_owned(),
            metrics,
            table,
            heartbeat: settings.heartbeat,
            epoch: Instant::now(),
            state: Mutex::new(State {
                shards: Shards::new(me, settings.lease_duration, safety),
                work: BTreeSet::new(),
                held: BTreeSet::new(),
            }),
            rounds: tokio::sync::Mutex::new(()),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a mutating step in `shard` may start now.
    pub fn holds(&self, shard: &str) -> bool {
        let now = self.now();
        self.state.lock().expect("state").shards.holds(shard, now)
    }

    /// The shards held now.
    pub fn held(&self) -> BTreeSet<String> {
        let now = self.now();
        let state = self.state.lock().expect("state");
        state.shards.held(now).into_iter().collect()
    }

    /// The members alive as this replica sees them, itself included.
    pub fn members(&self) -> usize {
        let now = self.now();
        self.state.lock().expect("state").shards.members(now).len()
    }

    /// At a pass's start: the shards of the work as discovered, and a round that takes this
    /// replica's share and hands back what is above it.
    pub async fn claim(&self, work: BTreeSet<String>) -> Result<(), ApiError> {
        self.state.lock().expect("state").work = work;
        self.round(true).await
    }

    /// The heartbeat's round: renews what is held, watches the others, claims nothing.
    pub async fn renew(&self) -> Result<(), ApiError> {
        self.round(false).await
    }

    async fn round(&self, claim: bool) -> Result<(), ApiError> {
        let _one = self.rounds.lock().await;
        let table = match self.table.scan().await {
            Ok(t) => t,
            Err(e) => {
                // It cannot renew: it stops starting steps now, not when the leases run out.
                self.metrics.lease_round_failed();
                self.state.lock().expect("state").shards.give_up();
                self.record_holdings();
                return Err(e);
            }
        };
        // Read after the scan answered: a later sight only makes a takeover wait longer; and
        // before the writes are sent, so a holder counts its lease from no later than its send.
        let now = self.now();
        let writes = {
            let mut state = self.state.lock().expect("state");
            let State { shards, work, .. } = &mut *state;
            shards.round(work, &table, now, claim)
        };
        let answers =
            futures::future::join_all(writes.iter().map(|(key, w)| self.table.write(key, w))).await;
        {
            let mut state = self.state.lock().expect("state");
            for ((key, w), answer) in writes.iter().zip(answers) {
                if let Err(e) = &answer {
                    tracing::warn!(replica = %self.me, key = %key, error = %e, "lease write unanswered; counted as refused");
                }
                state.shards.written(key, w, now, answer.ok());
            }
        }
        self.record_holdings();
        Ok(())
    }

    /// Logs and exports what changed hands since the last look: a lease that ran out without a
    /// round (DynamoDB unreachable) is given up too.
    fn record_holdings(&self) {
        let now = self.now();
        let mut state = self.state.lock().expect("state");
        let held: BTreeSet<String> = state.shards.held(now).into_iter().collect();
        let gained: Vec<&String> = held.difference(&state.held).collect();
        let lost: Vec<&String> = state.held.difference(&held).collect();
        for shard in &gained {
            tracing::info!(replica = %self.me, shard = %shard, "holding shard");
        }
        for shard in &lost {
            tracing::info!(replica = %self.me, shard = %shard, "shard given up");
        }
        let members = state.shards.members(now).len();
        self.metrics
            .set_coordination(&gained, &lost, state.work.len(), members);
        state.held = held;
    }

    /// Renews every `heartbeat` until `stop` turns. The caller releases (`release_all`) once
    /// the work in hand has drained, so another replica takes it over at its next pass instead
    /// of a lease duration later.
    pub async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(replica = %self.me, error = %e, "could not read the lease table; what is held runs out unless a later round succeeds");
            }
        }
    }

    /// Runs `work` with the heartbeat beside it; once `work` is done (a daemon drained, a
    /// `once` finished), stops the heartbeat and releases everything.
    pub async fn around<F: std::future::Future>(self: Arc<Self>, work: F) -> F::Output {
        let (stop, stopped) = watch::channel(false);
        let beat = tokio::spawn(self.clone().heartbeat(stopped));
        let out = work.await;
        let _ = stop.send(true);
        let _ = beat.await;
        self.release_all().await;
        out
    }

    /// Releases every shard and this replica's member item; nothing is held after, whatever
    /// the answers.
    pub async fn release_all(&self) {
        let _one = self.rounds.lock().await;
        let writes = self.state.lock().expect("state").shards.release_all();
        let answers =
            futures::future::join_all(writes.iter().map(|(key, w)| self.table.write(key, w))).await;
        let released = answers.iter().filter(|a| matches!(a, Ok(true))).count();
        tracing::info!(replica = %self.me, released, "leases released");
        drop(_one);
        self.record_holdings();
    }
}

/// The coordinator `[coordination]` asks for, on the DynamoDB client of the standard chain
/// (its region: `coordination.region`, else `[aws] region`, else the chain's); `None` when off.
pub async fn from_config(
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
) -> Option<Arc<Coordinator>> {
    let crate::config::Coordination::DynamoDb(settings) = &config.coordination else {
        return None;
    };
    let base = crate::aws::connect::base_config(&config.aws).await;
    let sdk = crate::aws::connect::scoped_config(&base, settings.region.as_deref(), None).await;
    let table = table::DynamoTable::new(aws_sdk_dynamodb::Client::new(&sdk), &settings.table);
    Some(Arc::new(Coordinator::new(
        &replica_name(),
        Arc::new(table),
        settings,
        metrics,
    )))
}

/// This replica's name in the table: the host (a pod's name on Kubernetes, a task's host on
/// ECS), the process and its start, so a restart is a new member.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{host}-{}-{started}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::lease::{Record, Write};
    use super::*;
    use async_trait::async_trait;
    use std::collections::BTreeMap;

    /// The table in memory, applying writes as DynamoDB does; a scan takes a while, so rounds
    /// started together would interleave.
    #[derive(Default)]
    struct Slow {
        items: Mutex<BTreeMap<String, Record>>,
        /// Scans answer as an unreachable table would.
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl LeaseTable for Slow {
        async fn scan(&self) -> Result<BTreeMap<String, Record>, ApiError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ApiError::Unavailable {
                    message: "could not reach the service".into(),
                    retry_after: None,
                });
            }
            let items = self.items.lock().unwrap().clone();
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(items)
        }
        async fn write(&self, shard: &str, write: &Write) -> Result<bool, ApiError> {
            let mut items = self.items.lock().unwrap();
            let mut item = items.get(shard).cloned();
            let applied = write.apply(&mut item);
            match item {
                Some(r) => items.insert(shard.to_owned(), r),
                None => items.remove(shard),
            };
            Ok(applied)
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings {
            table: "t".into(),
            region: None,
            lease_duration: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }

    /// A heartbeat that comes while a pass claims does not cost the lease: rounds take turns.
    #[tokio::test]
    async fn a_renewal_during_a_claim_keeps_the_lease() {
        let metrics = Arc::new(Metrics::new());
        let c = Coordinator::new("r", Arc::new(Slow::default()), &settings(), metrics.clone());
        let shard = shard_of(Some("us-east-1"), "g-0123456789");
        c.claim([shard.clone()].into()).await.unwrap();
        assert!(c.holds(&shard));
        let (a, b) = tokio::join!(c.renew(), c.claim([shard.clone()].into()));
        a.unwrap();
        b.unwrap();
        assert!(c.holds(&shard), "held after two rounds at once");
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "amg_rotator_coordination_shard_held{{shard=\"{shard}\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains("amg_rotator_coordination_handovers_total{change=\"taken\"} 1"),
            "{text}"
        );
        c.release_all().await;
        assert!(!c.holds(&shard));
        assert_eq!(c.held(), BTreeSet::new());
        let text = metrics.render();
        assert!(!text.contains("coordination_shard_held{"), "{text}");
        assert!(
            text.contains("amg_rotator_coordination_handovers_total{change=\"given_up\"} 1"),
            "{text}"
        );
    }

    /// A round that cannot read the table stops every change at once, not when the leases run
    /// out; the next good round takes the shards back once they stood still a duration.
    #[tokio::test]
    async fn a_round_that_cannot_read_the_table_gives_up_at_once() {
        let table = Arc::new(Slow::default());
        let c = Coordinator::new("r", table.clone(), &settings(), Arc::new(Metrics::new()));
        let shard = shard_of(None, "g-0123456789");
        c.claim([shard.clone()].into()).await.unwrap();
        assert!(c.holds(&shard));
        table.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(c.renew().await.is_err());
        assert!(!c.holds(&shard), "a lease it cannot renew is not trusted");
        table.down.store(false, std::sync::atomic::Ordering::SeqCst);
        c.claim([shard.clone()].into()).await.unwrap();
        assert!(
            !c.holds(&shard),
            "its own item is taken back only a duration later"
        );
    }
}
