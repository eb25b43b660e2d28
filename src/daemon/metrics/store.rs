//! The series of each managed credential, held as one small struct per credential and
//! rendered into Prometheus families when scraped.
//!
//! The `prometheus` crate keeps each series of a `*Vec` family as its own struct with a copy of
//! the family's description and its label pairs as protobuf structs: about 600 bytes a series,
//! ten series a credential. Here a credential's labels are stored once, its values beside them,
//! and each family is a `Stored` collector that reads them on `collect`: the same names, help,
//! types, label names and values as before. Only labels and numbers are kept: never a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::{CredentialLabels, CredentialValues, TOKEN_STATES};

/// The store, shared by `Metrics` (which writes) and the collectors (which read).
#[derive(Clone, Default)]
pub(super) struct Shared(Arc<Mutex<Store>>);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().expect("metrics lock")
    }
}

#[derive(Default)]
pub(super) struct Store {
    credentials: BTreeMap<CredentialLabels, Series>,
}

/// One credential's values; `None`: that series is not exported.
#[derive(Default)]
pub(super) struct Series {
    /// In the credentials of the last pass, so its gauges go when a later pass lacks it.
    known: bool,
    pub(super) expiry: Option<i64>,
    pub(super) healthy: Option<bool>,
    pub(super) left_behind: Option<usize>,
    pub(super) superseded: Option<usize>,
    /// The `secret` label of `promotion` and `superseded_last_used`.
    secret: Option<Box<str>>,
    promotion: Option<i64>,
    superseded_last_used: Option<i64>,
    /// `service_account_tokens` by state: a token credential's (its series carry no kind; a
    /// service account has one credential, `pass::claim`).
    pub(super) tokens: Option<[u32; 3]>,
    /// Counters, which stay when the credential goes, as a counter's series do.
    counters: Vec<(Count, u64)>,
}

/// Which counter, and its labels beyond the credential's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    /// `rotations_total`: outcome, reason.
    Rotation(&'static str, &'static str),
    /// `token_deletions_total`: reason, outcome.
    Deletion(&'static str, &'static str),
    /// `credential_failures_total`: stage.
    Failure(&'static str),
}

impl Series {
    fn clear_gauges(&mut self) {
        *self = Series {
            counters: std::mem::take(&mut self.counters),
            ..Series::default()
        };
    }

    fn is_empty(&self) -> bool {
        self.expiry.is_none()
            && self.healthy.is_none()
            && self.left_behind.is_none()
            && self.superseded.is_none()
            && self.secret.is_none()
            && self.tokens.is_none()
            && self.counters.is_empty()
    }

    /// The retirement series carry `secret` from now on: those of another (a renamed secret) go.
    pub(super) fn set_secret(&mut self, secret: &str) {
        if self.secret.as_deref() != Some(secret) {
            self.promotion = None;
            self.superseded_last_used = None;
            self.secret = Some(secret.into());
        }
    }

    pub(super) fn set_promotion(&mut self, at: Option<i64>) {
        self.promotion = at;
    }

    pub(super) fn set_superseded_last_used(&mut self, at: Option<i64>) {
        self.superseded_last_used = at;
    }

    pub(super) fn count(&mut self, which: Count) {
        match self.counters.iter_mut().find(|(c, _)| *c == which) {
            Some((_, n)) => *n += 1,
            None => {
                // A credential has a counter or two: grow by one, not by Vec's first four.
                self.counters.reserve_exact(1);
                self.counters.push((which, 1));
            }
        }
    }
}

/// What a family's `read` hands each series to: its label values in the family's label
/// order, and its value.
pub(super) type Out<'a> = &'a mut dyn FnMut(&[&str], f64);

/// How a family reads its series from the store.
pub(super) type Read = fn(&Store, Out<'_>);

impl Store {
    /// The credential's series, made empty when it has none yet.
    pub(super) fn series(&mut self, c: &CredentialLabels) -> &mut Series {
        if !self.credentials.contains_key(c) {
            self.credentials.insert(c.clone(), Series::default());
        }
        self.credentials.get_mut(c).expect("inserted above")
    }

    /// The credentials of this pass are `current`: the gauges of those known from the last
    /// pass and not in it go (their counters stay). Returns the credentials gone.
    pub(super) fn retain(&mut self, current: BTreeSet<CredentialLabels>) -> Vec<CredentialLabels> {
        let mut gone = Vec::new();
        for (c, s) in &mut self.credentials {
            let keep = current.contains(c);
            if s.known && !keep {
                s.clear_gauges();
                gone.push(c.clone());
            }
            s.known = keep;
        }
        self.credentials.retain(|_, s| s.known || !s.is_empty());
        for c in current {
            self.credentials.entry(c).or_default().known = true;
        }
        gone
    }

    /// A pass that could not discover everything saw `seen`: the credentials known before and
    /// missing from it stay, unhealthy, and stay known.
    pub(super) fn keep_unseen_unhealthy(&mut self, seen: BTreeSet<CredentialLabels>) {
        for (c, s) in &mut self.credentials {
            if s.known && !seen.contains(c) {
                s.healthy = Some(false);
            }
        }
        for c in seen {
            self.credentials.entry(c).or_default().known = true;
        }
    }

    pub(super) fn credential_values(&self) -> Vec<CredentialValues> {
        self.credentials
            .iter()
            .filter(|(_, s)| s.expiry.is_some() || s.healthy.is_some())
            .map(|(c, s)| CredentialValues {
                workspace: c.workspace.clone(),
                service_account: c.service_account.clone(),
                kind: c.kind.to_owned(),
                expires_at: s.expiry,
                healthy: s.healthy,
            })
            .collect()
    }

    /// A gauge labelled with the credential alone.
    fn gauge(&self, out: Out<'_>, value: fn(&Series) -> Option<f64>) {
        for (c, s) in &self.credentials {
            if let Some(v) = value(s) {
                out(&c.values(), v);
            }
        }
    }

    pub(super) fn expiry(&self, out: Out<'_>) {
        self.gauge(out, |s| s.expiry.map(|t| t as f64));
    }

    pub(super) fn healthy(&self, out: Out<'_>) {
        self.gauge(out, |s| s.healthy.map(|h| if h { 1.0 } else { 0.0 }));
    }

    pub(super) fn left_behind(&self, out: Out<'_>) {
        self.gauge(out, |s| s.left_behind.map(|n| n as f64));
    }

    pub(super) fn superseded(&self, out: Out<'_>) {
        self.gauge(out, |s| s.superseded.map(|n| n as f64));
    }

    /// A gauge labelled with the credential and its secret.
    fn with_secret(&self, out: Out<'_>, value: fn(&Series) -> Option<i64>) {
        for (c, s) in &self.credentials {
            if let (Some(secret), Some(v)) = (&s.secret, value(s)) {
                let [w, a, k] = c.values();
                out(&[w, a, k, secret], v as f64);
            }
        }
    }

    pub(super) fn promotion(&self, out: Out<'_>) {
        self.with_secret(out, |s| s.promotion);
    }

    pub(super) fn superseded_last_used(&self, out: Out<'_>) {
        self.with_secret(out, |s| s.superseded_last_used);
    }

    /// Every counter of every credential, with the credential's label values.
    fn counts(&self, mut f: impl FnMut(Count, [&str; 3], f64)) {
        for (c, s) in &self.credentials {
            for (which, n) in &s.counters {
                f(*which, c.values(), *n as f64);
            }
        }
    }

    pub(super) fn rotations(&self, out: Out<'_>) {
        self.counts(|which, [w, a, k], n| {
            if let Count::Rotation(outcome, reason) = which {
                out(&[w, a, k, outcome, reason], n);
            }
        });
    }

    pub(super) fn deletions(&self, out: Out<'_>) {
        self.counts(|which, [w, a, k], n| {
            if let Count::Deletion(reason, outcome) = which {
                out(&[w, a, k, reason, outcome], n);
            }
        });
    }

    pub(super) fn failures(&self, out: Out<'_>) {
        self.counts(|which, [w, a, k], n| {
            if let Count::Failure(stage) = which {
                out(&[w, a, k, stage], n);
            }
        });
    }

    pub(super) fn tokens(&self, out: Out<'_>) {
        for (c, s) in &self.credentials {
            for (state, n) in TOKEN_STATES.iter().zip(s.tokens.iter().flatten()) {
                out(&[&c.workspace, &c.service_account, state], *n as f64);
            }
        }
    }
}

/// One family whose series live in the store.
#[derive(Clone)]
pub(super) struct Stored {
    desc: Desc,
    kind: MetricType,
    store: Shared,
    read: Read,
}

impl Stored {
    pub(super) fn new(desc: Desc, kind: MetricType, store: &Shared, read: Read) -> Stored {
        Stored {
            desc,
            kind,
            store: store.clone(),
            read,
        }
    }

    /// A series as the `prometheus` crate makes it: label pairs sorted by name.
    fn metric(&self, values: &[&str], value: f64) -> proto::Metric {
        let mut labels: Vec<proto::LabelPair> = self
            .desc
            .variable_labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.clone());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        labels.sort();
        let mut m = proto::Metric::from_label(labels);
        if self.kind == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        m
    }
}

impl Collector for Stored {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut metrics = Vec::new();
        (self.read)(&self.store.lock(), &mut |values, value| {
            metrics.push(self.metric(values, value))
        });
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        family.set_metric(metrics);
        vec![family]
    }
}
