//! The rotator's secrets in one scope (region and role) as one ListSecrets shows them: read at
//! most once a pass, when the first credential of the scope asks, in pages of 100 instead of
//! one DescribeSecret per credential.
//!
//! ListSecrets "might not reflect changes from the last five minutes" (its API reference), so
//! the census is trusted for one decision only: that a credential whose audit record stands has
//! nothing to do (`token.rs`, `audit.rs`). Anything else is decided on a DescribeSecret read
//! then. A stale census can therefore only delay an action by a pass, never drive one: a
//! record it still shows after another process removed it (to rotate) makes this pass skip a
//! credential that process is working on; a record it shows on a version no longer current
//! does not stand, or stands over a token the plan then finds due, and either sends the
//! credential to DescribeSecret.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::aws::SecretStore;
use crate::model::{SecretState, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// ListSecrets pages read at most, of 100: a secret beyond them is described instead.
const MAX_PAGES: usize = 1000;

/// The tags a decision over the record reads: the rotator's records (`records.rs`). The
/// user's tags and `managed-by` are written at CreateSecret and never read back.
fn is_record(key: &str) -> bool {
    key.starts_with("amg-token-rotator:")
}

/// The rotator's records a census entry keeps (`records.rs`), by their index here. A secret
/// with another tag of the rotator's (one a later release writes) is not kept: it is described.
const RECORDS: [&str; 4] = [
    super::records::AUDIT_TAG,
    super::records::PROMOTED_TAG,
    super::records::VERIFICATION_TAG,
    super::records::UNPUBLISHED_KEYS_TAG,
];

/// The staging labels an entry keeps, two bits each in a version's order (`pack`). A version
/// with another label (custom labels are allowed) is not kept: its secret is described.
const LABELS: [&str; 3] = [AWSCURRENT, AWSPENDING, AWSPREVIOUS];

/// A version's labels as two bits each, first label lowest; `None`: one the census does not
/// keep, or more than three.
fn pack(stages: &[String]) -> Option<u8> {
    if stages.len() > LABELS.len() {
        return None;
    }
    let mut packed = 0;
    for (i, stage) in stages.iter().enumerate() {
        let code = LABELS.iter().position(|l| l == stage)? as u8 + 1;
        packed |= code << (2 * i);
    }
    Some(packed)
}

fn unpack(packed: u8) -> Vec<String> {
    (0..LABELS.len())
        .map(|i| (packed >> (2 * i)) & 3)
        .take_while(|code| *code != 0)
        .map(|code| LABELS[code as usize - 1].to_owned())
        .collect()
}

/// What the census keeps of a listed secret that carries an audit record: what a decision over
/// the record reads (versions and their labels, the rotator's own tags, the dates, rotation),
/// each in a slice sized to fit, the labels and the tags' keys as small numbers. A
/// `SecretState` holds two maps and the user's tags besides, several times as much; the census
/// holds one entry per credential of the scope at once (the pass's peak memory,
/// docs/PERFORMANCE.md), so it is read page by page into these.
struct Entry {
    arn: Box<str>,
    versions: Box<[(Box<str>, u8)]>,
    records: Box<[(u8, Box<str>)]>,
    last_changed: Option<DateTime<Utc>>,
    deleted: Option<DateTime<Utc>>,
    rotation_enabled: bool,
}

impl Entry {
    /// `None`: a secret the census does not keep (described instead).
    fn of(s: SecretState) -> Option<Slot> {
        let versions = s
            .versions
            .into_iter()
            .map(|(id, stages)| Some((id.into(), pack(&stages)?)))
            .collect::<Option<_>>()?;
        let records = s
            .tags
            .into_iter()
            .filter(|(k, _)| is_record(k))
            .map(|(k, v)| Some((RECORDS.iter().position(|r| *r == k)? as u8, v.into())))
            .collect::<Option<_>>()?;
        let entry = Entry {
            arn: s.arn.into(),
            versions,
            records,
            last_changed: s.last_changed,
            deleted: s.deleted,
            rotation_enabled: s.rotation_enabled,
        };
        Some((s.name.into(), Some(entry)))
    }

    fn into_state(self, name: &str) -> SecretState {
        SecretState {
            arn: self.arn.into(),
            name: name.to_owned(),
            versions: self
                .versions
                .into_vec()
                .into_iter()
                .map(|(id, packed)| (id.into(), unpack(packed)))
                .collect(),
            tags: self
                .records
                .into_vec()
                .into_iter()
                .map(|(k, v)| (RECORDS[k as usize].to_owned(), v.into()))
                .collect(),
            last_changed: self.last_changed,
            deleted: self.deleted,
            rotation_enabled: self.rotation_enabled,
        }
    }
}

/// Whether `listed` (from the census) shows `described` as it is: everything the census keeps
/// is the same. `false` sends a decision over the record to the fresher read.
pub fn shows(listed: &SecretState, described: &SecretState) -> bool {
    let records = |s: &SecretState| {
        s.tags
            .iter()
            .filter(|(k, _)| is_record(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    listed.arn == described.arn
        && listed.name == described.name
        && listed.versions == described.versions
        && listed.last_changed == described.last_changed
        && listed.deleted == described.deleted
        && listed.rotation_enabled == described.rotation_enabled
        && records(listed) == records(described)
}

/// A listed secret by name; its entry is `None` once taken.
type Slot = (Box<str>, Option<Entry>);

/// One scope's census, for one pass.
#[derive(Default)]
pub struct Census {
    /// Sorted by name; `None` when the listing failed (every credential is described, as
    /// without a census). Each entry is taken once, so the census shrinks as the pass goes.
    listed: OnceCell<Option<Mutex<Vec<Slot>>>>,
}

impl Census {
    pub fn new() -> Census {
        Census::default()
    }

    /// The secret `name` as the listing shows it (with the rotator's own tags only), listing
    /// the scope's secrets the first time any credential asks. `None`: not listed (new, not
    /// tagged as the rotator's, without an audit record, beyond the pages read, or the listing
    /// failed): the caller describes it.
    pub async fn take(&self, secrets: &dyn SecretStore, name: &str) -> Option<SecretState> {
        let listed = self
            .listed
            .get_or_init(|| async {
                match list(secrets).await {
                    Ok(entries) => Some(Mutex::new(entries)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list the rotator's secrets; each is described instead");
                        None
                    }
                }
            })
            .await
            .as_ref()?;
        let mut entries = listed.lock().expect("census lock");
        let at = entries.binary_search_by(|(n, _)| (**n).cmp(name)).ok()?;
        entries[at].1.take().map(|e| e.into_state(name))
    }
}

/// Every page of the scope's listing, keeping only the secrets that carry an audit record:
/// the others are described anyway, so they cost no memory here.
async fn list(secrets: &dyn SecretStore) -> Result<Vec<Slot>, crate::aws::ApiError> {
    let mut entries = Vec::new();
    each_managed(secrets, |s| {
        if super::audit::carries_record(Some(&s)) {
            entries.extend(Entry::of(s));
        }
        true
    })
    .await?;
    entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    entries.shrink_to_fit();
    Ok(entries)
}

/// Reads the rotator's secrets of the scope page by page, handing each to `each` as its page
/// arrives, until `each` says it has seen enough (`false`) or the pages end (at most
/// `MAX_PAGES`; a repeated page token ends them too).
pub async fn each_managed(
    secrets: &dyn SecretStore,
    mut each: impl FnMut(SecretState) -> bool,
) -> Result<(), crate::aws::ApiError> {
    let mut page: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let listed = secrets.list_managed(page.clone()).await?;
        for s in listed.secrets {
            if !each(s) {
                return Ok(());
            }
        }
        match listed.next {
            Some(t) if page.as_deref() != Some(t.as_str()) => page = Some(t),
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{ops, Failing, FakeSecrets, SecretSeed};
    use crate::aws::ApiError;

    #[tokio::test]
    async fn one_listing_serves_every_credential_of_the_scope_once() {
        let recorded = |name: &str| {
            SecretSeed::new(name)
                .managed()
                .tag(super::super::records::AUDIT_TAG, "any")
        };
        let s = FakeSecrets::new()
            .with_secret(recorded("a"))
            .with_secret(recorded("b"))
            .with_secret(SecretSeed::new("unrecorded").managed())
            .with_secret(SecretSeed::new("theirs").tag(super::super::records::AUDIT_TAG, "any"));
        let census = Census::new();
        assert_eq!(census.take(&s, "a").await.map(|s| s.name), Some("a".into()));
        assert_eq!(census.take(&s, "b").await.map(|s| s.name), Some("b".into()));
        assert_eq!(census.take(&s, "a").await, None, "each entry is taken once");
        assert_eq!(census.take(&s, "theirs").await, None, "not the rotator's");
        assert_eq!(
            census.take(&s, "unrecorded").await,
            None,
            "nothing to trust"
        );
        assert_eq!(s.count(ops::LIST_SECRETS), 1);
        assert_eq!(s.count(ops::DESCRIBE_SECRET), 0);
    }

    #[tokio::test]
    async fn every_page_is_read_once_and_only_the_rotators_tags_are_kept() {
        let mut s = FakeSecrets::new();
        for i in 0..250 {
            s = s.with_secret(
                SecretSeed::new(&format!("s{i:03}"))
                    .managed()
                    .tag(super::super::records::AUDIT_TAG, "any")
                    .tag("team", "platform")
                    .version(
                        "amgrot-v1-00000000000000000000000000000001",
                        "v",
                        &["AWSCURRENT"],
                    ),
            );
        }
        let census = Census::new();
        let last = census.take(&s, "s249").await.expect("on the third page");
        assert_eq!(s.count(ops::LIST_SECRETS), 3, "250 secrets: three pages");
        let described = s.describe("s249").await.unwrap().unwrap();
        assert_eq!(
            (&last.arn, &last.versions),
            (&described.arn, &described.versions)
        );
        assert_eq!(
            last.tags.keys().collect::<Vec<_>>(),
            [super::super::records::AUDIT_TAG]
        );
        assert!(described.tags.contains_key("team"));
        assert!(
            shows(&last, &described),
            "the user's tags are not the census's to show"
        );
        s.tag("s249", super::super::records::AUDIT_TAG, "other")
            .await
            .unwrap();
        let changed = s.describe("s249").await.unwrap().unwrap();
        assert!(
            !shows(&last, &changed),
            "a record changed since the listing"
        );
        assert!(census.take(&s, "s000").await.is_some());
        assert!(census.take(&s, "s125").await.is_some());
        assert!(census.take(&s, "s125").await.is_none(), "taken once");
        assert!(
            census.take(&s, "s126").await.is_some(),
            "a taken neighbour hides nothing"
        );
        assert_eq!(s.count(ops::LIST_SECRETS), 3, "listed once a pass");
    }

    #[tokio::test]
    async fn a_listing_refused_is_asked_once_a_pass_and_leaves_every_secret_to_describe() {
        let inner = FakeSecrets::new().with_secret(SecretSeed::new("a").managed());
        let s = Failing::new(inner.clone()).fail_nth(
            ops::LIST_SECRETS,
            1,
            ApiError::AccessDenied(
                "AccessDeniedException: not authorized to perform: secretsmanager:ListSecrets"
                    .into(),
            ),
        );
        let census = Census::new();
        assert_eq!(census.take(&s, "a").await, None);
        assert_eq!(census.take(&s, "a").await, None);
        assert_eq!(
            s.calls(ops::LIST_SECRETS),
            1,
            "asked once, answered by the fault"
        );
    }

    #[test]
    fn labels_pack_in_their_order_and_others_are_not_kept() {
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for stages in [
            labels(&[]),
            labels(&[AWSCURRENT]),
            labels(&[AWSPENDING, AWSCURRENT]),
            labels(&[AWSPREVIOUS, AWSPENDING, AWSCURRENT]),
        ] {
            assert_eq!(unpack(pack(&stages).unwrap()), stages);
        }
        assert_eq!(pack(&labels(&["MYLABEL"])), None, "a custom label");
        assert_eq!(
            pack(&labels(&[AWSCURRENT, AWSPENDING, AWSPREVIOUS, AWSCURRENT])),
            None
        );
    }

    #[tokio::test]
    async fn a_secret_with_a_custom_label_or_an_unknown_record_is_described_instead() {
        let recorded = |name: &str| {
            SecretSeed::new(name)
                .managed()
                .tag(super::super::records::AUDIT_TAG, "any")
        };
        let s = FakeSecrets::new()
            .with_secret(recorded("plain").version(
                "amgrot-v1-00000000000000000000000000000001",
                "v",
                &[AWSCURRENT],
            ))
            .with_secret(recorded("custom").version(
                "amgrot-v1-00000000000000000000000000000002",
                "v",
                &[AWSCURRENT, "MYLABEL"],
            ))
            .with_secret(recorded("future").tag("amg-token-rotator:later", "x"));
        let census = Census::new();
        let plain = census.take(&s, "plain").await.expect("kept");
        assert_eq!(
            plain,
            s.describe("plain")
                .await
                .unwrap()
                .map(|mut d| {
                    d.tags.retain(|k, _| is_record(k));
                    d
                })
                .unwrap()
        );
        assert_eq!(census.take(&s, "custom").await, None);
        assert_eq!(census.take(&s, "future").await, None);
    }
}
