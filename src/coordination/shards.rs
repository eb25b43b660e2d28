//! Which shards of the work one replica holds, among however many replicas are alive: pure, like
//! `lease`, over the table as one consistent read showed it.
//!
//! Every replica keeps a lease on its own member item (`member/<id>`), which nobody takes over:
//! the others only watch it. A member whose rvn has not changed for a whole lease duration (by
//! the watcher's clock) is gone, and its item is deleted by whoever sees that first. With `n`
//! members alive, a replica's share of `s` shards is `s / n`, one more for the first `s % n`
//! members by name.
//!
//! A round (`round`) renews the member item and every shard held, and, when `claim` is set
//! (between passes: never while a pass works on what it holds), takes free shards up to the fair
//! share (an absent item, or one whose rvn stood still a duration: its holder died) and hands
//! back the ones above it, so a replica that joins gets its share from the others within a round
//! of theirs. Replicas prefer different shards (a rendezvous hash of member and shard), so they
//! rarely race for the same one. `holds` is what every mutating step asks first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::lease::{Lease, Record, Write};

/// The table key of a replica's member item.
pub fn member_key(me: &str) -> String {
    format!("member/{me}")
}

/// One replica's view of the shards and the members.
pub struct Shards {
    me: String,
    duration: Duration,
    safety: Duration,
    member: Lease,
    /// A lease per shard this replica has looked at, held or not.
    leases: BTreeMap<String, Lease>,
    /// The other members' items as last seen: rvn, and since when (this replica's clock).
    others: BTreeMap<String, (String, u64)>,
}

impl Shards {
    pub fn new(me: &str, duration: Duration, safety: Duration) -> Shards {
        Shards {
            me: me.to_owned(),
            duration,
            safety,
            member: Lease::new(me, duration, safety),
            leases: BTreeMap::new(),
            others: BTreeMap::new(),
        }
    }

    /// Whether a mutating step in `shard` may start at `now`.
    pub fn holds(&self, shard: &str, now: u64) -> bool {
        self.leases.get(shard).is_some_and(|l| l.holds(now))
    }

    /// The shards held at `now`.
    pub fn held(&self, now: u64) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(_, l)| l.holds(now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The members alive as this replica sees them at `now`, itself included, by name.
    pub fn members(&self, now: u64) -> BTreeSet<String> {
        let mut alive: BTreeSet<String> = self
            .others
            .iter()
            .filter(|(_, (_, since))| now.saturating_sub(*since) < ms(self.duration))
            .map(|(key, _)| key.clone())
            .collect();
        alive.insert(member_key(&self.me));
        alive
    }

    /// This replica's share of `shards`: an even split among the members alive, the first
    /// `shards % members` of them by name taking one more, so the split is within one.
    fn share(&self, shards: usize, now: u64) -> usize {
        let members = self.members(now);
        let rank = members
            .iter()
            .position(|m| *m == member_key(&self.me))
            .expect("itself");
        shards / members.len() + usize::from(rank < shards % members.len())
    }

    /// The writes of one round over `table` (every item, as read at `now`) for the shards the
    /// work has now, each with the key it applies to. Send each, then report it with `written`.
    pub fn round(
        &mut self,
        shards: &BTreeSet<String>,
        table: &BTreeMap<String, Record>,
        now: u64,
        claim: bool,
    ) -> Vec<(String, Write)> {
        let mut writes = Vec::new();
        let mine = member_key(&self.me);
        if let Some(w) = self.member.next(table.get(&mine), now) {
            writes.push((mine.clone(), w));
        }
        self.watch_members(table, &mine, now, &mut writes);
        // Shards no longer in the work are forgotten (their items are released first).
        let gone: Vec<String> = self
            .leases
            .keys()
            .filter(|k| !shards.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(w) = self.leases.get_mut(&k).and_then(Lease::release) {
                writes.push((k.clone(), w));
            }
            self.leases.remove(&k);
        }
        let fair = self.share(shards.len(), now);
        let mut order: Vec<&String> = shards.iter().collect();
        order.sort_by_key(|s| std::cmp::Reverse(preference(&self.me, s)));
        let (kept, free): (Vec<&String>, Vec<&String>) =
            order.into_iter().partition(|s| self.holds(s, now));
        // What it holds, it renews, most preferred first; past the fair share it hands back.
        for (n, shard) in kept.iter().enumerate() {
            let lease = self.leases.get_mut(*shard).expect("held");
            let write = match claim && n >= fair {
                true => lease.release(),
                false => lease.next(table.get(*shard), now),
            };
            writes.extend(write.map(|w| ((*shard).clone(), w)));
        }
        // Every other shard it watches (so a dead holder is noticed), and takes up to its share.
        let mut held = kept.len();
        for shard in free {
            let lease = self
                .leases
                .entry(shard.clone())
                .or_insert_with(|| Lease::new(&self.me, self.duration, self.safety));
            let Some(w) = lease.next(table.get(shard), now) else {
                continue;
            };
            if claim && held < fair {
                held += 1;
                writes.push((shard.clone(), w));
            }
            // Otherwise the write is not sent: the lease only watched the item.
        }
        writes
    }

    /// The answer to a write of `round`, sent at `sent_at` (`None`: unknown).
    pub fn written(&mut self, key: &str, write: &Write, sent_at: u64, answer: Option<bool>) {
        if key == member_key(&self.me) {
            self.member.written(write, sent_at, answer);
        } else if let Some(l) = self.leases.get_mut(key) {
            l.written(write, sent_at, answer);
        }
    }

    /// Stops trusting every shard held, at once: the table could not be read, so the leases
    /// cannot be renewed. The items stay (another replica, or this one, takes each over a lease
    /// duration after its last renewal); nothing more is changed here meanwhile.
    pub fn give_up(&mut self) {
        for lease in self.leases.values_mut() {
            let _ = lease.release();
        }
    }

    /// The writes that release everything held (on SIGTERM): another replica may take each at
    /// once. Nothing is held after, whatever the answers.
    pub fn release_all(&mut self) -> Vec<(String, Write)> {
        let mut writes: Vec<(String, Write)> = self
            .leases
            .iter_mut()
            .filter_map(|(k, l)| l.release().map(|w| (k.clone(), w)))
            .collect();
        if let Some(w) = self.member.release() {
            writes.push((member_key(&self.me), w));
        }
        writes
    }

    /// Watches the other members' items; one that stood still a duration is deleted.
    fn watch_members(
        &mut self,
        table: &BTreeMap<String, Record>,
        mine: &str,
        now: u64,
        writes: &mut Vec<(String, Write)>,
    ) {
        let present: BTreeSet<&String> = table
            .keys()
            .filter(|k| k.starts_with("member/") && k.as_str() != mine)
            .collect();
        self.others.retain(|k, _| present.contains(k));
        for key in present {
            let rvn = &table[key].rvn;
            match self.others.get(key) {
                Some((seen, since)) if seen == rvn => {
                    if now.saturating_sub(*since) >= ms(table[key].duration) {
                        writes.push((
                            key.clone(),
                            Write::Delete {
                                expected: rvn.clone(),
                            },
                        ));
                    }
                }
                _ => {
                    self.others.insert(key.clone(), (rvn.clone(), now));
                }
            }
        }
    }
}

/// How much `member` prefers `shard`: a stable hash, so each replica has its own order.
fn preference(member: &str, shard: &str) -> u64 {
    // FNV-1a: stable across processes and builds, which std's hasher does not promise.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0]).chain(shard.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(1000);
    const SAFETY: Duration = Duration::from_millis(100);

    /// The table in memory and the replicas around it; every write lands at once.
    struct World {
        table: BTreeMap<String, Record>,
        replicas: Vec<Shards>,
        shards: BTreeSet<String>,
    }

    impl World {
        fn new(replicas: usize, shards: usize) -> World {
            World {
                table: BTreeMap::new(),
                replicas: (0..replicas)
                    .map(|i| Shards::new(&format!("r{i}"), D, SAFETY))
                    .collect(),
                shards: (0..shards)
                    .map(|i| format!("us-east-1/g-{i:010}"))
                    .collect(),
            }
        }

        fn round(&mut self, i: usize, now: u64, claim: bool) {
            let writes = self.replicas[i].round(&self.shards, &self.table, now, claim);
            for (key, w) in writes {
                let mut item = self.table.get(&key).cloned();
                let applied = w.apply(&mut item);
                match item {
                    Some(r) => self.table.insert(key.clone(), r),
                    None => self.table.remove(&key),
                };
                self.replicas[i].written(&key, &w, now, Some(applied));
            }
        }

        /// Every listed replica takes a round at each of `times`; after each, no shard has two
        /// replicas that believe they hold it (the others, not called, keep their beliefs: a
        /// replica killed still "holds" until its trust runs out).
        fn rounds(&mut self, who: &[usize], times: impl IntoIterator<Item = u64>) {
            for t in times {
                for &i in who {
                    self.round(i, t, true);
                }
                assert!(self.holders_at_once(t) <= 1, "two holders at {t}");
            }
        }

        fn held(&self, i: usize, now: u64) -> usize {
            self.replicas[i].held(now).len()
        }

        fn holders_at_once(&self, now: u64) -> usize {
            self.shards
                .iter()
                .map(|s| self.replicas.iter().filter(|r| r.holds(s, now)).count())
                .max()
                .unwrap_or(0)
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Three replicas with clocks hours apart take rounds in any order, with and without
        /// claiming, lose answers, are killed (and restarted under a new name) or release all.
        /// At no step do two believe they hold one shard; and once all three take regular
        /// rounds for a few durations, every shard is held by exactly one, at most one apart.
        #[test]
        fn no_shard_has_two_holders_and_a_steady_fleet_balances(
            offsets in proptest::collection::vec(0u64..10_000_000, 3),
            steps in proptest::collection::vec((0usize..3, 0u8..10), 1..150),
        ) {
            let mut w = World::new(3, 7);
            let mut names = [0u32; 3];
            let clock = |i: usize, real: u64| offsets[i] + real;
            let mut real = 0;
            for (i, action) in steps {
                real += 100;
                match action {
                    0..=5 => w.round(i, clock(i, real), true),
                    6 => {
                        // The writes land; their answers are lost.
                        let writes = w.replicas[i].round(&w.shards, &w.table, clock(i, real), true);
                        for (key, write) in writes {
                            let mut item = w.table.get(&key).cloned();
                            write.apply(&mut item);
                            match item {
                                Some(r) => w.table.insert(key.clone(), r),
                                None => w.table.remove(&key),
                            };
                            w.replicas[i].written(&key, &write, clock(i, real), None);
                        }
                    }
                    7 => w.round(i, clock(i, real), false),
                    8 => {
                        names[i] += 1;
                        w.replicas[i] = Shards::new(&format!("r{i}-{}", names[i]), D, SAFETY);
                    }
                    _ => {
                        for (key, write) in w.replicas[i].release_all() {
                            let mut item = w.table.get(&key).cloned();
                            write.apply(&mut item);
                            match item {
                                Some(r) => w.table.insert(key.clone(), r),
                                None => w.table.remove(&key),
                            };
                        }
                    }
                }
                for s in &w.shards {
                    let holders = (0..3).filter(|&j| w.replicas[j].holds(s, clock(j, real))).count();
                    prop_assert!(holders <= 1, "{} holders of {} at {}", holders, s, real);
                }
            }
            for _ in 0..20 {
                real += 300;
                for i in 0..3 {
                    w.round(i, clock(i, real), true);
                }
            }
            let held: Vec<usize> = (0..3).map(|i| w.held(i, clock(i, real))).collect();
            prop_assert_eq!(held.iter().sum::<usize>(), 7, "{:?}", held);
            prop_assert!(held.iter().max().unwrap() - held.iter().min().unwrap() <= 1, "{:?}", held);
        }
    }

    #[test]
    fn a_lone_replica_takes_every_shard() {
        let mut w = World::new(1, 5);
        w.round(0, 0, true);
        assert_eq!(w.held(0, 0), 5);
        assert!(w.replicas[0].holds("us-east-1/g-0000000003", 0));
        assert!(
            !w.replicas[0].holds("us-east-1/g-0000000003", 900),
            "unrenewed, trust ends"
        );
    }

    #[test]
    fn a_replica_that_joins_gets_its_share_from_the_holder() {
        let mut w = World::new(2, 6);
        w.rounds(&[0], [0]);
        assert_eq!(w.held(0, 0), 6);
        // r1 joins: r0 sees its member item on its next round and hands back the excess;
        // r1 takes the free shards on its next.
        w.rounds(&[1, 0], (1..=4).map(|k| k * 300));
        assert_eq!((w.held(0, 1200), w.held(1, 1200)), (3, 3));
        assert_eq!(w.holders_at_once(1200), 1);
    }

    #[test]
    fn shards_of_a_replica_that_died_are_taken_over_after_a_duration() {
        let mut w = World::new(3, 6);
        w.rounds(&[0, 1, 2], (0..=6).map(|k| k * 300));
        let split: Vec<usize> = (0..3).map(|i| w.held(i, 1800)).collect();
        assert_eq!(split, [2, 2, 2]);
        // r2 is killed: it renews nothing more. The others see its member item stand still,
        // count two members, and take its shards once their rvns stood still a duration.
        w.rounds(&[0, 1], (7..=14).map(|k| k * 300));
        assert_eq!((w.held(0, 4200), w.held(1, 4200)), (3, 3));
        assert!(
            !w.table.contains_key("member/r2"),
            "its member item is swept"
        );
    }

    #[test]
    fn release_all_lets_another_replica_take_over_without_waiting() {
        let mut w = World::new(2, 4);
        w.rounds(&[0, 1], (0..=4).map(|k| k * 300));
        assert_eq!((w.held(0, 1200), w.held(1, 1200)), (2, 2));
        for (key, write) in w.replicas[1].release_all() {
            let mut item = w.table.get(&key).cloned();
            assert!(write.apply(&mut item), "{key}");
            assert!(item.is_none());
            w.table.remove(&key);
        }
        assert_eq!(w.held(1, 1201), 0);
        // r0 does not wait a duration: the items are gone, and with one member its share is all.
        w.round(0, 1300, true);
        assert_eq!(w.held(0, 1300), 4);
    }

    #[test]
    fn without_claim_a_round_only_renews() {
        let mut w = World::new(2, 4);
        w.rounds(&[0], [0]);
        w.round(1, 100, false);
        w.round(0, 300, false);
        assert_eq!(
            (w.held(0, 300), w.held(1, 300)),
            (4, 0),
            "no handover mid-pass"
        );
        w.round(0, 600, true);
        w.round(1, 700, true);
        assert_eq!((w.held(0, 700), w.held(1, 700)), (2, 2));
    }

    #[test]
    fn a_shard_that_leaves_the_work_is_released() {
        let mut w = World::new(1, 3);
        w.round(0, 0, true);
        let gone = w.shards.pop_first().unwrap();
        w.round(0, 300, true);
        assert!(!w.table.contains_key(&gone));
        assert_eq!(w.held(0, 300), 2);
    }
}
