//! Scenarios: `Engine::pass` over the in-memory fakes (issue 12, item 3). A test `Connector`
//! hands out one `FakeGrafana` and one `FakeSecrets` per region; the configuration is TOML, as a
//! user writes it. What is asserted is what a user reads in the pass report and finds in AWS:
//! which credential a target manages, which secrets exist and what they hold, what was skipped
//! and what failed, and that nothing was written where nothing may be.
//!
//! The configurations run daily: validation walks a year of the schedule's runs to warn about
//! long gaps, which for the default five-minute schedule costs about a tenth of a second per
//! target in a debug build.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Engine, Mode, PassReport};
use crate::aws::fake::{
    ops, AccountSeed, Failing, FakeGrafana, FakeSecrets, FakeVerifier, Fault, WorkspaceSeed,
};
use crate::aws::verify::VerifyError;
use crate::aws::{ApiError, Connector, Services, Verifier};
use crate::config::Config;
use crate::credential::{CredentialReport, Status};
use crate::daemon::metrics::Metrics;
use crate::model::{Key, Role, AWSCURRENT};

const WS: &str = "g-0123456789";
const OTHER_WS: &str = "g-abcdef0123";
const ACCOUNT: &str = "123456789012";

/// Operations that change nothing.
const READS: &[&str] = &[
    ops::LIST_WORKSPACES,
    ops::DESCRIBE_WORKSPACE,
    ops::LIST_SERVICE_ACCOUNTS,
    ops::LIST_TOKENS,
    ops::LIST_PERMISSIONS,
    ops::DESCRIBE_SECRET,
    ops::GET_SECRET_VALUE,
    ops::LIST_SECRETS,
];

/// One region's services: AMG (behind `Failing`, so discovery can be made to fail) and Secrets
/// Manager. Clones share the state.
#[derive(Clone)]
struct Region {
    grafana: FakeGrafana,
    failing: Arc<Failing<FakeGrafana>>,
    secrets: FakeSecrets,
}

impl Region {
    fn new(name: &str) -> Region {
        let grafana = FakeGrafana::new().with_region(name);
        Region {
            failing: Arc::new(Failing::new(grafana.clone())),
            secrets: FakeSecrets::new()
                .with_location(name, ACCOUNT)
                .with_now(chrono::Utc::now()),
            grafana,
        }
    }

    /// A workspace with these service accounts.
    fn with_workspace(self, id: &str, accounts: &[&str]) -> Region {
        let mut seed = WorkspaceSeed::new(id);
        for a in accounts {
            seed = seed.with_service_account(AccountSeed::new(a, Role::Editor));
        }
        self.grafana.add_workspace(seed);
        self
    }

    fn tokens_of(&self, ws: &str, account: &str) -> usize {
        let id = self
            .grafana
            .service_account_id(ws, account)
            .expect("seeded");
        self.grafana.tokens(ws, &id).len()
    }

    /// What the secret's AWSCURRENT publishes: the workspace it names and the key.
    fn published(&self, secret: &str) -> Option<(String, Key)> {
        let value = self.secrets.value(secret, AWSCURRENT)?;
        let doc: serde_json::Value = serde_json::from_str(&value).expect("JSON");
        Some((
            doc["workspaceId"].as_str()?.to_owned(),
            Key::new(doc["token"].as_str()?.to_owned()),
        ))
    }

    /// The calls either fake answered that may have changed something.
    fn writes(&self) -> Vec<String> {
        let mut calls = self.grafana.calls();
        calls.extend(self.secrets.calls());
        calls
            .into_iter()
            .filter(|c| !READS.contains(&c.operation))
            .map(|c| format!("{} {}", c.operation, c.target))
            .collect()
    }
}

/// The regions the configuration's targets reach, by name.
#[derive(Clone, Default)]
struct Cloud {
    regions: BTreeMap<String, Region>,
}

impl Cloud {
    fn with(mut self, name: &str, region: Region) -> Cloud {
        self.regions.insert(name.to_owned(), region);
        self
    }

    async fn pass(&self, config: &str) -> PassReport {
        let (_trigger, shutdown) = watch::channel(false);
        self.pass_with(config, Arc::new(FakeVerifier::accepting()), shutdown)
            .await
    }

    async fn pass_with(
        &self,
        config: &str,
        verifier: Arc<dyn Verifier>,
        shutdown: watch::Receiver<bool>,
    ) -> PassReport {
        self.engine(verifier)
            .pass(&configuration(config), Mode::Apply, &shutdown)
            .await
    }

    /// An engine over these regions, as one process holds it from pass to pass.
    fn engine(&self, verifier: Arc<dyn Verifier>) -> Engine {
        Engine {
            connector: Arc::new(self.clone()),
            verifier,
            metrics: Arc::new(Metrics::new()),
            coordinator: None,
            listings: Some(Default::default()),
        }
    }
}

/// One more pass of a long-running process's `engine`.
async fn again(engine: &Engine, config: &str, mode: Mode) -> PassReport {
    let (_trigger, shutdown) = watch::channel(false);
    engine.pass(&configuration(config), mode, &shutdown).await
}

/// Accepts every key, and fires the shutdown trigger when asked to prove the first: a signal
/// that arrives while a credential is in hand.
struct ShutdownAtFirstProof(watch::Sender<bool>);

#[async_trait]
impl Verifier for ShutdownAtFirstProof {
    async fn verify(&self, _base_url: &str, _key: &Key) -> Result<(), VerifyError> {
        let _ = self.0.send(true);
        Ok(())
    }
}

#[async_trait]
impl Connector for Cloud {
    async fn services(&self, region: Option<&str>, _role_arn: Option<&str>) -> Services {
        let name = region.expect("the scenarios set [aws] region");
        let r = self
            .regions
            .get(name)
            .unwrap_or_else(|| panic!("no fake services in {name}"));
        Services {
            grafana: r.failing.clone(),
            secrets: Arc::new(r.secrets.clone()),
        }
    }
}

fn configuration(toml: &str) -> Config {
    crate::config::from_sources(toml, &BTreeMap::new(), "scenario.toml")
        .expect("a valid configuration")
}

/// The report of `service_account` in `workspace` made for `target`.
fn report<'r>(
    pass: &'r PassReport,
    target: &str,
    workspace: &str,
    service_account: &str,
) -> &'r CredentialReport {
    pass.credentials
        .iter()
        .find(|c| {
            c.target == target
                && c.workspace_id == workspace
                && c.service_account == service_account
        })
        .unwrap_or_else(|| panic!("no report of {workspace}/{service_account} for {target}"))
}

// ---- claims -------------------------------------------------------------------------------

#[tokio::test]
async fn a_credential_two_targets_select_is_managed_by_the_first_and_reported_by_the_second() {
    let us = Region::new("us-east-1").with_workspace(WS, &["terraform", "ci"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let pass = cloud
        .pass(
            r#"
[daemon]
schedule = "0 0 3 * * *"

[aws]
region = "us-east-1"

[[targets]]
name = "terraform"
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]

[[targets]]
name = "everything"
workspace_ids = ["g-0123456789"]
service_accounts = ["*"]
"#,
        )
        .await;
    assert_eq!(pass.credentials.len(), 3, "{:?}", pass.credentials);
    assert_eq!(
        report(&pass, "terraform", WS, "terraform").status,
        Status::Changed
    );
    let second = report(&pass, "everything", WS, "terraform");
    assert_eq!(second.status, Status::Failed);
    assert_eq!(
        second.error.as_deref(),
        Some("also selected by terraform; that target manages it")
    );
    assert_eq!(
        report(&pass, "everything", WS, "ci").status,
        Status::Changed
    );
    assert_eq!(us.tokens_of(WS, "terraform"), 1, "rotated once");
    assert_eq!(pass.failed(), 1, "the second claim only");
}

const ONE_SECRET_NAME: &str = r#"
[daemon]
schedule = "0 0 3 * * *"

[aws]
region = "us-east-1"

[defaults]
secret_name = "amg/{service_account}"

[[targets]]
name = "prod"
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]

[[targets]]
name = "staging"
workspace_ids = ["g-abcdef0123"]
service_accounts = ["terraform"]
region = "REGION"
"#;

#[tokio::test]
async fn one_secret_name_for_two_credentials_in_one_region_is_refused_for_the_second() {
    // The second target names the region the first inherits from [aws]: the same one.
    let us = Region::new("us-east-1")
        .with_workspace(WS, &["terraform"])
        .with_workspace(OTHER_WS, &["terraform"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let pass = cloud
        .pass(&ONE_SECRET_NAME.replace("REGION", "us-east-1"))
        .await;
    assert_eq!(
        report(&pass, "prod", WS, "terraform").status,
        Status::Changed
    );
    let refused = report(&pass, "staging", OTHER_WS, "terraform");
    assert_eq!(refused.status, Status::Failed);
    assert_eq!(
        refused.error.as_deref(),
        Some("secret amg/terraform is already used by g-0123456789/terraform; make secret_name unique")
    );
    let (workspace, key) = us.published("amg/terraform").expect("published");
    assert_eq!(
        workspace, WS,
        "the secret holds the first credential's token"
    );
    assert!(us.grafana.key_works(WS, &key, chrono::Utc::now()));
    assert_eq!(us.tokens_of(OTHER_WS, "terraform"), 0, "nothing minted");
}

#[tokio::test]
async fn one_secret_name_in_two_regions_is_two_secrets() {
    let us = Region::new("us-east-1").with_workspace(WS, &["terraform"]);
    let eu = Region::new("eu-west-1").with_workspace(OTHER_WS, &["terraform"]);
    let cloud = Cloud::default()
        .with("us-east-1", us.clone())
        .with("eu-west-1", eu.clone());
    let pass = cloud
        .pass(&ONE_SECRET_NAME.replace("REGION", "eu-west-1"))
        .await;
    assert_eq!(
        report(&pass, "prod", WS, "terraform").status,
        Status::Changed
    );
    assert_eq!(
        report(&pass, "staging", OTHER_WS, "terraform").status,
        Status::Changed
    );
    let now = chrono::Utc::now();
    for (region, ws) in [(&us, WS), (&eu, OTHER_WS)] {
        let (workspace, key) = region.published("amg/terraform").expect("published");
        assert_eq!(workspace, ws);
        assert!(region.grafana.key_works(ws, &key, now));
    }
    assert_eq!(pass.failed(), 0);
}

// ---- shutdown -----------------------------------------------------------------------------

#[tokio::test]
async fn a_pass_that_starts_after_the_shutdown_signal_skips_every_credential() {
    let us = Region::new("us-east-1").with_workspace(WS, &["terraform", "ci"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let (_trigger, shutdown) = watch::channel(true);
    let pass = cloud
        .pass_with(
            r#"
[daemon]
schedule = "0 0 3 * * *"

[aws]
region = "us-east-1"

[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform", "ci"]
"#,
            Arc::new(FakeVerifier::accepting()),
            shutdown,
        )
        .await;
    assert_eq!(pass.credentials.len(), 2);
    for c in &pass.credentials {
        assert_eq!(c.status, Status::Skipped, "{c:?}");
        assert_eq!(c.summary, "skipped: shutting down");
    }
    assert_eq!(us.writes(), Vec::<String>::new());
    assert_eq!(us.tokens_of(WS, "terraform") + us.tokens_of(WS, "ci"), 0);
    assert_eq!(pass.failed(), 0, "skipping is not failing");
}

#[tokio::test]
async fn a_shutdown_during_a_pass_finishes_the_credential_in_hand_and_skips_the_rest() {
    let us = Region::new("us-east-1").with_workspace(WS, &["first", "second"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let (trigger, shutdown) = watch::channel(false);
    let pass = cloud
        .pass_with(
            r#"
[daemon]
schedule = "0 0 3 * * *"
concurrency = 1

[aws]
region = "us-east-1"

[[targets]]
workspace_ids = ["g-0123456789"]
service_accounts = ["first", "second"]
verify = true
"#,
            Arc::new(ShutdownAtFirstProof(trigger)),
            shutdown,
        )
        .await;
    // The signal came while the first was being proven: it is finished, not abandoned.
    let first = report(&pass, "targets[0]", WS, "first");
    assert_eq!(first.status, Status::Changed, "{first:?}");
    let (_, key) = us
        .published("amg-token-rotator/g-0123456789/first")
        .expect("published");
    assert!(us.grafana.key_works(WS, &key, chrono::Utc::now()));
    let second = report(&pass, "targets[0]", WS, "second");
    assert_eq!(second.status, Status::Skipped, "{second:?}");
    assert_eq!(us.tokens_of(WS, "second"), 0);
    assert!(!us.secrets.exists("amg-token-rotator/g-0123456789/second"));
}

// ---- discovery ----------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_describe_fails_the_named_credentials_and_makes_a_glob_a_pass_problem() {
    let us = Region::new("us-east-1").with_workspace(WS, &["terraform", "ci-deploy"]);
    us.failing.add(
        Fault::new(
            ops::DESCRIBE_WORKSPACE,
            1,
            ApiError::AccessDenied("AccessDeniedException: not authorized".into()),
        )
        .times(100),
    );
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let pass = cloud
        .pass(
            r#"
[daemon]
schedule = "0 0 3 * * *"

[aws]
region = "us-east-1"

[[targets]]
name = "named"
workspace_ids = ["g-0123456789"]
service_accounts = ["terraform"]

[[targets]]
name = "globbed"
workspace_ids = ["g-0123456789"]
service_accounts = ["ci-*"]
"#,
        )
        .await;
    // The named credential is seen, failed, with the cause.
    assert_eq!(pass.credentials.len(), 1, "{:?}", pass.credentials);
    let named = report(&pass, "named", WS, "terraform");
    assert_eq!(named.status, Status::Failed);
    let error = named.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("DescribeWorkspace: access denied"),
        "{error}"
    );
    // The glob selects nothing it could name: the target's problem.
    let problems: Vec<String> = pass.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .starts_with("globbed: workspace g-0123456789: DescribeWorkspace: access denied"),
        "{problems:?}"
    );
    assert_eq!(us.writes(), Vec::<String>::new());
    assert_eq!(pass.failed(), 2, "the credential and the problem");
}

// ---- fairness across scopes -----------------------------------------------------------------

/// Holds the proof of every key sent to a workspace of `slow_region` until released; proves the
/// others at once and counts them.
struct StallOneRegion {
    slow_region: &'static str,
    release: tokio::sync::Notify,
    released: std::sync::atomic::AtomicBool,
    fast: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Verifier for StallOneRegion {
    async fn verify(&self, base_url: &str, _key: &Key) -> Result<(), VerifyError> {
        use std::sync::atomic::Ordering;
        if base_url.contains(self.slow_region) {
            while !self.released.load(Ordering::SeqCst) {
                let notified = self.release.notified();
                if self.released.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
        } else {
            self.fast.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// With one credential at a time, a scope whose calls hang (throttled, or its region slow)
/// holds up only its own credentials: the other region's all finish while it is stuck.
#[tokio::test]
async fn a_stuck_scope_holds_up_only_its_own_credentials() {
    use std::sync::atomic::Ordering;
    let eu = Region::new("eu-west-1").with_workspace(OTHER_WS, &["slow"]);
    let us = Region::new("us-east-1").with_workspace(WS, &["a", "b"]);
    let cloud = Cloud::default()
        .with("us-east-1", us.clone())
        .with("eu-west-1", eu.clone());
    // The stuck region's target comes first, and the pass runs one credential at a time.
    let config = format!(
        "[daemon]\nconcurrency = 1\nschedule = \"0 0 3 * * *\"\n\n[aws]\nregion = \"us-east-1\"\n\n\
         [defaults]\nverify = true\n\n\
         [[targets]]\nname = \"eu\"\nregion = \"eu-west-1\"\nworkspace_ids = [\"{OTHER_WS}\"]\nservice_accounts = [\"slow\"]\n\n\
         [[targets]]\nname = \"us\"\nworkspace_ids = [\"{WS}\"]\nservice_accounts = [\"a\", \"b\"]\n"
    );
    let verifier = Arc::new(StallOneRegion {
        slow_region: "eu-west-1",
        release: tokio::sync::Notify::new(),
        released: false.into(),
        fast: 0.into(),
    });
    let (_trigger, shutdown) = watch::channel(false);
    // The pass and a watcher, concurrently on this task: the watcher waits (bounded) until both
    // us-east-1 credentials are proven while eu-west-1's is stuck, then releases it.
    let watch = async {
        let mut both = false;
        for _ in 0..500 {
            if verifier.fast.load(Ordering::SeqCst) == 2 {
                both = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        verifier.released.store(true, Ordering::SeqCst);
        verifier.release.notify_waiters();
        both
    };
    let run = cloud.pass_with(&config, verifier.clone(), shutdown);
    let (pass, both) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(run, watch)
    })
    .await
    .expect("the pass ends once released");
    assert!(both, "the other scope waited for the stuck one");
    for (target, ws, sa) in [("eu", OTHER_WS, "slow"), ("us", WS, "a"), ("us", WS, "b")] {
        assert_eq!(
            report(&pass, target, ws, sa).status,
            Status::Changed,
            "{sa}"
        );
    }
}

// ---- remembered listings (issue 18) ---------------------------------------------------------

const BY_PATTERN: &str = r#"
[daemon]
schedule = "0 0 3 * * *"

[aws]
region = "us-east-1"

[[targets]]
name = "svc"
workspace_ids = ["g-0123456789"]
service_accounts = ["svc-*"]
"#;

impl Region {
    /// Makes the next audit of `secret`'s credential come now, as if its interval had gone by.
    async fn audit_now(&self, secret: &str) {
        use crate::aws::SecretStore;
        use crate::credential::records::{Audit, AUDIT_TAG};
        let mut record = Audit::from_tags(&self.secrets.tags(secret)).expect("an audit record");
        record.next = chrono::Utc::now() - chrono::Duration::seconds(1);
        let value = record.tag_value().expect("fits a tag");
        self.secrets.tag(secret, AUDIT_TAG, &value).await.unwrap();
    }

    /// AMG calls answered since the last look, by operation.
    fn amg_since(&self, seen: &mut usize) -> BTreeMap<String, usize> {
        let calls = self.grafana.calls();
        let mut by_op = BTreeMap::new();
        for c in &calls[*seen..] {
            *by_op.entry(c.operation.to_string()).or_insert(0) += 1;
        }
        *seen = calls.len();
        by_op
    }
}

/// The statuses of a pass's reports, by service account.
fn statuses(pass: &PassReport) -> BTreeMap<String, Status> {
    pass.credentials
        .iter()
        .map(|c| (c.service_account.clone(), c.status))
        .collect()
}

fn ops_counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

#[tokio::test]
async fn a_long_running_engine_lists_a_pattern_workspace_when_a_credential_needs_it_or_a_reload_asks(
) {
    let us = Region::new("us-east-1").with_workspace(WS, &["svc-a", "svc-b", "human"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let engine = cloud.engine(Arc::new(FakeVerifier::accepting()));
    let mut seen = 0;
    let secret = |sa: &str| format!("amg-token-rotator/{WS}/{sa}");
    let changed = [("svc-a", Status::Changed), ("svc-b", Status::Changed)];
    let ok = [("svc-a", Status::Ok), ("svc-b", Status::Ok)];
    let expect = |pairs: &[(&str, Status)]| -> BTreeMap<String, Status> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    };

    // The first pass lists the workspace and mints both tokens, each first version with the
    // record of its first audit.
    let first = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(statuses(&first), expect(&changed));
    assert_eq!(us.amg_since(&mut seen)[ops::LIST_SERVICE_ACCOUNTS], 1);
    // A steady pass: the remembered listing and the records stand; the workspace is described.
    let steady = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(statuses(&steady), expect(&ok));
    assert_eq!(
        us.amg_since(&mut seen),
        ops_counts(&[(ops::DESCRIBE_WORKSPACE, 1)])
    );

    // A new account the pattern matches is not seen while the listing stands...
    us.grafana
        .add_service_account(WS, AccountSeed::new("svc-c", Role::Editor));
    let unseen = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(statuses(&unseen), expect(&ok));
    // ... until a credential of the workspace needs a listing (svc-a's audit comes): that
    // fresh listing is remembered, and the pass after it takes svc-c up.
    us.audit_now(&secret("svc-a")).await;
    let audited = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(statuses(&audited), expect(&ok));
    let calls = us.amg_since(&mut seen);
    assert_eq!(
        (calls[ops::LIST_SERVICE_ACCOUNTS], calls[ops::LIST_TOKENS]),
        (1, 1),
        "{calls:?}"
    );
    let found = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(
        statuses(&found),
        expect(&[ok[0], ok[1], ("svc-c", Status::Changed)])
    );
    assert_eq!(us.tokens_of(WS, "svc-c"), 1);
    // It has no record yet: the workspace is listed afresh for it, once.
    let calls = us.amg_since(&mut seen);
    assert_eq!(calls[ops::LIST_SERVICE_ACCOUNTS], 1, "{calls:?}");

    // A reload forgets every listing: the next pass lists the workspace up front; `plan`
    // always lists, whatever is remembered.
    us.grafana
        .add_service_account(WS, AccountSeed::new("svc-d", Role::Editor));
    engine.listings.as_ref().expect("remembers").forget_all();
    let reloaded = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(
        report(&reloaded, "svc", WS, "svc-d").status,
        Status::Changed
    );
    // Up front: the fresh listing serves every credential, the new one's first token too.
    assert_eq!(us.amg_since(&mut seen)[ops::LIST_SERVICE_ACCOUNTS], 1);
    again(&engine, BY_PATTERN, Mode::Plan).await;
    assert_eq!(us.amg_since(&mut seen)[ops::LIST_SERVICE_ACCOUNTS], 1);
    assert_eq!(
        us.writes().iter().filter(|w| w.contains("Delete")).count(),
        0
    );
}

#[tokio::test]
async fn a_pattern_account_deleted_since_its_listing_is_skipped_then_no_longer_selected() {
    let us = Region::new("us-east-1").with_workspace(WS, &["svc-a", "svc-b"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let engine = cloud.engine(Arc::new(FakeVerifier::accepting()));
    again(&engine, BY_PATTERN, Mode::Apply).await;
    let b = us.grafana.service_account_id(WS, "svc-b").expect("seeded");
    us.grafana.remove_service_account(WS, &b);
    // Its record stands for it until its audit: then the fresh listing lacks it.
    us.audit_now(&format!("amg-token-rotator/{WS}/svc-b")).await;
    let pass = again(&engine, BY_PATTERN, Mode::Apply).await;
    let gone = report(&pass, "svc", WS, "svc-b");
    assert_eq!(gone.status, Status::Skipped, "{gone:?}");
    assert_eq!(
        gone.summary,
        "skipped: the service account no longer exists: it is no longer selected"
    );
    assert_eq!(report(&pass, "svc", WS, "svc-a").status, Status::Ok);
    assert_eq!(pass.failed(), 0, "a deleted account is not a failure");
    let after = again(&engine, BY_PATTERN, Mode::Apply).await;
    assert_eq!(
        statuses(&after),
        [("svc-a".to_string(), Status::Ok)].into(),
        "the fresh listing is remembered"
    );
}

#[tokio::test]
async fn an_account_named_exactly_beside_a_pattern_is_looked_up_afresh_and_bootstrapped() {
    let config = BY_PATTERN.replace(
        r#"service_accounts = ["svc-*"]"#,
        "service_accounts = [\"ci\", \"svc-*\"]\nservice_account_role = \"EDITOR\"",
    );
    let us = Region::new("us-east-1").with_workspace(WS, &["svc-a"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let engine = cloud.engine(Arc::new(FakeVerifier::accepting()));
    let first = again(&engine, &config, Mode::Apply).await;
    assert_eq!(report(&first, "svc", WS, "ci").status, Status::Changed);
    // `ci` deleted by hand while the workspace's listing is remembered: at its audit the
    // fresh listing lacks it, and an account named exactly is created again.
    let ci = us
        .grafana
        .service_account_id(WS, "ci")
        .expect("bootstrapped");
    us.grafana.remove_service_account(WS, &ci);
    us.audit_now(&format!("amg-token-rotator/{WS}/ci")).await;
    let pass = again(&engine, &config, Mode::Apply).await;
    let ci_report = report(&pass, "svc", WS, "ci");
    assert_eq!(ci_report.status, Status::Changed, "{ci_report:?}");
    assert_eq!(us.tokens_of(WS, "ci"), 1);
    assert_eq!(pass.failed(), 0);
}

#[tokio::test]
async fn with_audits_on_every_pass_nothing_is_remembered() {
    let config = format!("{BY_PATTERN}audit_interval = \"0s\"\n");
    let us = Region::new("us-east-1").with_workspace(WS, &["svc-a"]);
    let cloud = Cloud::default().with("us-east-1", us.clone());
    let engine = cloud.engine(Arc::new(FakeVerifier::accepting()));
    for _ in 0..3 {
        again(&engine, &config, Mode::Apply).await;
    }
    assert_eq!(us.grafana.count(ops::LIST_SERVICE_ACCOUNTS), 3);
}
