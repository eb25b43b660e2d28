//! API economy, smoothing and client-side rate limiting, counted on the emulator's call log and
//! the Secrets Manager proxy's log (issue 8).
//!
//! A steady pass costs, per workspace, its share of one ListWorkspaces (or one describe, for a
//! scope that names a single workspace) and one listing of service accounts (none when its
//! targets name their accounts exactly, and in the daemon none while it remembers the listing),
//! and per region and role one ListSecrets a page of 100 secrets; a credential's tokens are
//! listed, and its secret described, only when it is due or audited (every `audit_interval`,
//! issue 18), and an audit that finds it clean records so on the secret (one TagResource; a
//! first run creates the secret with its first version and that record in one call). Lists page only when a page of the largest
//! size AWS allows (100) cannot hold them. Counts are exact. Nothing here asserts a duration: the rate-limit test counts
//! throttled answers instead.

mod support;

use std::collections::BTreeMap;

use amg_emulator::{Faults, Role, Seed, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
use support::{Bed, Run};

const WS1: &str = "g-1111111111";
const WS2: &str = "g-2222222222";
const WS3: &str = "g-3333333333";
const WS4: &str = "g-4444444444";
const DAY: i64 = 86_400;

/// AMG calls of the emulator's log, by operation.
fn amg_ops(bed: &Bed) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in bed.amg.calls() {
        *m.entry(c.operation).or_insert(0) += 1;
    }
    m
}

/// Secrets Manager calls of the proxy's log, by operation.
fn sm_ops(bed: &Bed) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for op in bed.proxy.calls() {
        *m.entry(op).or_insert(0) += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), *n))
        .collect()
}

/// Calls of `operation` by (workspace, service account ID).
fn by_target(bed: &Bed, operation: &str) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for c in bed
        .amg
        .calls()
        .into_iter()
        .filter(|c| c.operation == operation)
    {
        let key = (
            c.workspace_id.unwrap_or_default(),
            c.service_account_id.unwrap_or_default(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

fn ok(run: &Run) {
    assert_eq!(run.code, Some(0), "{}", run.all_output());
}

/// A workspace with service accounts `svc-0` .. `svc-{n-1}` (no tokens) and one `human` the
/// targets do not select.
fn fleet_workspace(id: &str, n: usize) -> WorkspaceSeed {
    let mut ws = WorkspaceSeed::new(id);
    for i in 0..n {
        ws = ws.with_service_account(ServiceAccountSeed::new(&format!("svc-{i}"), Role::Editor));
    }
    ws.with_service_account(ServiceAccountSeed::new("human", Role::Viewer))
}

/// The targets of the economy test: two workspaces by ID, the rest by tag.
fn economy_config() -> String {
    format!(
        r#"[daemon]
concurrency = 4

[log]
format = "text"

# The first audit's record sets the next at a hash-chosen share of the interval: a long one
# keeps every share clear of the few seconds this test takes.
[defaults]
audit_interval = "7d"

[[targets]]
name = "by-id"
workspace_ids = ["{WS1}", "{WS2}"]
service_accounts = ["svc-*"]

[[targets]]
name = "by-tag"
workspace_tags = {{ economy = "yes" }}
service_accounts = ["svc-*"]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_steady_pass_costs_one_listing_per_workspace_and_one_of_the_secrets() {
    const PER_WS: usize = 4;
    let seed = Seed::new()
        .with_workspace(fleet_workspace(WS1, PER_WS))
        .with_workspace(fleet_workspace(WS2, PER_WS))
        .with_workspace(fleet_workspace(WS3, PER_WS).with_tag("economy", "yes"))
        // Listed by ListWorkspaces, selected by nothing: it must cost nothing more.
        .with_workspace(fleet_workspace(WS4, PER_WS).with_tag("economy", "no"));
    let bed = Bed::start(seed).await;
    let cfg = bed.config(&economy_config());
    let credentials = 3 * PER_WS;

    // First pass: everything minted. The workspaces named by ID are read from the listing the
    // tag target needs anyway; one token per credential, and one more listing of its tokens to
    // read AMG's own creation and expiry times of the new one.
    ok(&bed.once(&cfg).await);
    let first = amg_ops(&bed);
    for (op, n) in [
        ("DescribeWorkspace", 0),
        ("ListWorkspaces", 1),
        ("ListWorkspaceServiceAccounts", 3),
        ("ListWorkspaceServiceAccountTokens", 2 * credentials),
        ("CreateWorkspaceServiceAccountToken", credentials),
    ] {
        assert_eq!(first.get(op).copied().unwrap_or(0), n, "{op}: {first:?}");
    }
    assert!(
        !first.keys().any(|op| op.starts_with("Delete")),
        "{first:?}"
    );
    // Per new credential: a look, and one CreateSecret that makes the secret with its first
    // version (AWSCURRENT by itself) and its records: the promotion and its first audit (the
    // listing after the create showed the new token alone). The census of the rotator's
    // secrets (one ListSecrets) finds none.
    assert_eq!(
        sm_ops(&bed),
        counts(&[
            ("ListSecrets", 1),
            ("DescribeSecret", credentials),
            ("CreateSecret", credentials),
        ]),
        "Secrets Manager calls of a first run"
    );

    for i in 0..PER_WS {
        let name = format!("amg-token-rotator/{WS1}/svc-{i}");
        let record = bed
            .audit_record(&name)
            .await
            .expect("recorded by the first run");
        let token = &bed.tokens(WS1, &format!("svc-{i}"))[0];
        assert_eq!(record.token_id, token.id, "{name}");
        // Named before its secret existed, with the mark predicted from STS
        // GetCallerIdentity: the mark of the secret moto then made.
        assert_eq!(
            amg_token_rotator::credential::token::mark_of(&token.name),
            Some(bed.secret_mark(&name).await.as_str()),
            "{name}"
        );
    }

    // The second pass is already a steady one: nothing due, nothing audited. No token is
    // listed.
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(
        amg_ops(&bed),
        counts(&[("ListWorkspaces", 1), ("ListWorkspaceServiceAccounts", 3)]),
        "AMG calls of a steady pass"
    );
    assert_eq!(
        sm_ops(&bed),
        counts(&[("ListSecrets", 1)]),
        "a steady pass reads every secret's labels in one listing and never a value"
    );
    assert!(
        bed.amg.calls().iter().all(|c| c.status == 200),
        "{:?}",
        bed.amg.calls()
    );

    // Per workspace, not only in total.
    let listed = by_target(&bed, "ListWorkspaceServiceAccounts");
    assert_eq!(
        listed.keys().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        [WS1, WS2, WS3]
    );
    assert!(listed.values().all(|n| *n == 1), "{listed:?}");
}

/// A scope that names one workspace by ID describes it; one that names several lists them
/// once (a page holds 100).
#[tokio::test(flavor = "multi_thread")]
async fn workspaces_named_by_id_are_described_alone_and_listed_together() {
    let seed = Seed::new()
        .with_workspace(fleet_workspace(WS1, 1))
        .with_workspace(fleet_workspace(WS2, 1))
        .with_workspace(fleet_workspace(WS3, 1));
    let bed = Bed::start(seed).await;
    let one = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    ok(&bed.once(&one).await);
    assert_eq!(
        by_target(&bed, "DescribeWorkspace")
            .into_keys()
            .collect::<Vec<_>>(),
        [(WS1.to_owned(), String::new())]
    );
    assert_eq!(bed.count_calls("ListWorkspaces"), 0);

    bed.amg.clear_calls();
    // Two targets, three workspaces, one of them named twice; and one that does not exist,
    // which the listing cannot hold and DescribeWorkspace answers for.
    let several = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[[targets]]\nname = \"a\"\nworkspace_ids = [\"{WS1}\", \"{WS2}\"]\nservice_accounts = [\"svc-*\"]\n\n[[targets]]\nname = \"b\"\nworkspace_ids = [\"{WS2}\", \"{WS3}\", \"g-9999999999\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    let run = bed.once(&several).await;
    assert_eq!(bed.count_calls("ListWorkspaces"), 1);
    assert_eq!(
        by_target(&bed, "DescribeWorkspace")
            .into_keys()
            .collect::<Vec<_>>(),
        [("g-9999999999".to_owned(), String::new())]
    );
    assert!(
        run.all_output().contains("g-9999999999"),
        "the missing workspace is reported: {}",
        run.all_output()
    );
    // The three real workspaces were reconciled from the listing.
    assert_eq!(
        by_target(&bed, "ListWorkspaceServiceAccounts").len(),
        3,
        "{}",
        run.all_output()
    );
}

/// Calls in proportion to what is due: a steady pass lists no tokens; a pass lists exactly the
/// credentials whose audit has come, and records each again a whole interval on; a due
/// credential is listed and rotated, its record removed before anything changes and written
/// again once an audit finds it clean.
/// Where new secrets will be comes from STS GetCallerIdentity (a token's name carries its
/// secret's mark, so it must be known before the secret exists). Without an answer the first
/// run still publishes everything, the old way: each secret is created first, then the token,
/// the records and the value.
#[tokio::test(flavor = "multi_thread")]
async fn without_sts_a_first_run_creates_each_secret_before_its_token() {
    let bed = Bed::start(Seed::new().with_workspace(fleet_workspace(WS1, 3))).await;
    let cfg = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let run = bed
        .run(
            &cfg,
            &["once"],
            &[("AWS_ENDPOINT_URL_STS", closed.as_str())],
        )
        .await;
    ok(&run);
    assert!(
        run.stderr.contains("STS GetCallerIdentity failed"),
        "said once: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("STS GetCallerIdentity failed").count(),
        1
    );
    assert_eq!(
        sm_ops(&bed),
        counts(&[
            ("ListSecrets", 1),
            ("DescribeSecret", 3),
            ("CreateSecret", 3),
            ("TagResource", 3),
            ("PutSecretValue", 3),
        ])
    );
    for i in 0..3 {
        let name = format!("amg-token-rotator/{WS1}/svc-{i}");
        let doc = bed.secret_json(&name, "AWSCURRENT").await;
        assert!(
            bed.key_works(WS1, doc["token"].as_str().unwrap()).await,
            "{name}"
        );
        assert!(bed.audit_record(&name).await.is_some(), "{name}");
    }

    // With STS back, the next pass is steady: the secrets' own ARNs give their marks.
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(sm_ops(&bed), counts(&[("ListSecrets", 1)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_listed_only_for_the_audited_and_the_due() {
    const ACCOUNTS: usize = 6;
    let bed = Bed::start(Seed::new().with_workspace(fleet_workspace(WS1, ACCOUNTS))).await;
    let cfg = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[defaults]\ngrace_period = \"1s\"\nquiet_period = \"1s\"\naudit_interval = \"7d\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    let secret = |i: usize| format!("amg-token-rotator/{WS1}/svc-{i}");
    // The first run records each credential's first audit with its first version.
    ok(&bed.once(&cfg).await);
    for i in 0..ACCOUNTS {
        let r = bed.audit_record(&secret(i)).await.expect("audited");
        let t = bed.tokens(WS1, &format!("svc-{i}"));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (r.token_id.as_str(), r.token_name.as_str()),
            (t[0].id.as_str(), t[0].name.as_str())
        );
    }

    // Steady.
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(bed.count_calls("ListWorkspaceServiceAccountTokens"), 0);
    assert_eq!(sm_ops(&bed), counts(&[("ListSecrets", 1)]));

    // The audits of svc-1 and svc-4 come: exactly they are listed, and recorded an interval on.
    bed.audit_now(&secret(1)).await;
    bed.audit_now(&secret(4)).await;
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let before = chrono::Utc::now();
    ok(&bed.once(&cfg).await);
    let listed: Vec<_> = by_target(&bed, "ListWorkspaceServiceAccountTokens")
        .into_iter()
        .map(|((_, sa), n)| (sa, n))
        .collect();
    let mut audited = vec![
        (bed.service_account_id(WS1, "svc-1"), 1),
        (bed.service_account_id(WS1, "svc-4"), 1),
    ];
    audited.sort();
    assert_eq!(listed, audited);
    assert_eq!(
        sm_ops(&bed),
        counts(&[
            ("ListSecrets", 1),
            ("DescribeSecret", 2),
            ("TagResource", 2)
        ])
    );
    for i in [1, 4] {
        let next = bed.audit_record(&secret(i)).await.unwrap().next;
        // Recorded to the second.
        assert!(
            next >= before + chrono::Duration::days(7) - chrono::Duration::seconds(1),
            "{next}"
        );
    }

    // Everything falls due: time brings each token within rotate_before of its expiry (the
    // records, read from AMG, follow).
    let now = chrono::Utc::now().timestamp();
    for i in 0..ACCOUNTS {
        let sa = format!("svc-{i}");
        let id = bed.tokens(WS1, &sa)[0].id.clone();
        assert!(
            bed.set_token_expiry(WS1, &bed.service_account_id(WS1, &sa), &id, now + 600)
                .await
        );
    }
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let run = bed.once(&cfg).await;
    ok(&run);
    // Each listed to decide, and once more for AMG's times of the new token.
    assert_eq!(
        amg_ops(&bed),
        counts(&[
            ("DescribeWorkspace", 1),
            ("ListWorkspaceServiceAccounts", 1),
            ("ListWorkspaceServiceAccountTokens", 2 * ACCOUNTS),
            ("CreateWorkspaceServiceAccountToken", ACCOUNTS),
        ]),
        "{}",
        run.all_output()
    );
    let sm = sm_ops(&bed);
    assert_eq!(sm.get("UntagResource"), Some(&ACCOUNTS), "{sm:?}");
    for i in 0..ACCOUNTS {
        assert_eq!(bed.audit_record(&secret(i)).await, None, "svc-{i}");
    }
    // The superseded tokens are retired (grace 1s) by a pass that lists; the pass after it
    // finds each credential clean and records it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ok(&bed.once(&cfg).await);
    for i in 0..ACCOUNTS {
        assert_eq!(bed.tokens(WS1, &format!("svc-{i}")).len(), 1, "svc-{i}");
    }
    ok(&bed.once(&cfg).await);
    for i in 0..ACCOUNTS {
        let r = bed.audit_record(&secret(i)).await.expect("audited again");
        assert_eq!(r.token_id, bed.tokens(WS1, &format!("svc-{i}"))[0].id);
    }
}

fn pages(items: usize) -> usize {
    // The rotator asks for the largest page AWS allows.
    items.div_ceil(100)
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_only_past_the_largest_page_whatever_the_default_page_size() {
    const WORKSPACES: usize = 150;
    const ACCOUNTS: usize = 205;
    const FOREIGN_TOKENS: usize = 150;
    let big = "g-5000000000";
    let small = format!("g-5{:09}", WORKSPACES - 1);
    let mut seed = Seed::new()
        // Without maxResults the emulator would answer two items a page: a client that relied
        // on the default page would make hundreds of calls here.
        .with_default_page_size(2)
        .with_token_quota(1000);
    let mut svc0 = ServiceAccountSeed::new("svc-000", Role::Editor);
    for i in 0..FOREIGN_TOKENS {
        svc0 = svc0.with_token(
            TokenSeed::new(&format!("hand-{i:03}"), 20 * DAY).created_seconds_ago(3600),
        );
    }
    let mut big_ws = WorkspaceSeed::new(big)
        .with_tag("economy", "yes")
        .with_service_account(svc0);
    for i in 1..ACCOUNTS {
        big_ws = big_ws.with_service_account(ServiceAccountSeed::new(
            &format!("svc-{i:03}"),
            Role::Viewer,
        ));
    }
    seed = seed.with_workspace(big_ws);
    for i in 1..WORKSPACES - 1 {
        seed = seed.with_workspace(WorkspaceSeed::new(&format!("g-5{i:09}")));
    }
    seed = seed.with_workspace(
        WorkspaceSeed::new(&small)
            .with_tag("economy", "yes")
            .with_service_account(ServiceAccountSeed::new("svc-000", Role::Editor))
            .with_service_account(ServiceAccountSeed::new("svc-204", Role::Editor)),
    );
    let bed = Bed::start(seed).await;
    // svc-204 sits on the third page of the big workspace's service accounts.
    let cfg = bed.config(
        "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_tags = { economy = \"yes\" }\nservice_accounts = [\"svc-000\", \"svc-204\"]\n",
    );
    ok(&bed.once(&cfg).await);

    // The second pass audits every credential (each audit made to come now): its listings
    // page as the first pass's did.
    for ws in [big, small.as_str()] {
        for sa in ["svc-000", "svc-204"] {
            bed.audit_now(&format!("amg-token-rotator/{ws}/{sa}")).await;
        }
    }
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);

    assert_eq!(
        amg_ops(&bed),
        counts(&[
            ("ListWorkspaces", pages(WORKSPACES)),
            ("ListWorkspaceServiceAccounts", pages(ACCOUNTS) + pages(2)),
            // The big svc-000 holds its 150 foreign tokens and the one the first pass minted;
            // the three other credentials hold one token each.
            (
                "ListWorkspaceServiceAccountTokens",
                pages(FOREIGN_TOKENS + 1) + 3 * pages(1)
            ),
        ])
    );
    let sa_pages = by_target(&bed, "ListWorkspaceServiceAccounts");
    assert_eq!(sa_pages.get(&(big.to_owned(), String::new())), Some(&3));
    let token_pages = by_target(&bed, "ListWorkspaceServiceAccountTokens");
    assert_eq!(
        token_pages.get(&(big.to_owned(), bed.service_account_id(big, "svc-000"))),
        Some(&2),
        "{token_pages:?}"
    );
    // Each audit: recorded on its secret, an interval on.
    assert_eq!(
        sm_ops(&bed),
        counts(&[
            ("ListSecrets", 1),
            ("DescribeSecret", 4),
            ("TagResource", 4)
        ])
    );
}

/// What a pass killed after publishing AWSPENDING leaves behind: a new token and a pending
/// version naming it.
async fn leave_pending(bed: &Bed, ws: &str, sa: &str) {
    let name = format!("amg-token-rotator/{ws}/{sa}");
    let mut doc = bed.secret_json(&name, "AWSCURRENT").await;
    let sa_id = bed.service_account_id(ws, sa);
    let made = bed
        .grafana_client()
        .create_workspace_service_account_token()
        .workspace_id(ws)
        .service_account_id(&sa_id)
        .name(format!("amgrot-{sa}-interrupted"))
        .seconds_to_live(30 * DAY as i32)
        .send()
        .await
        .unwrap();
    let token = made.service_account_token().unwrap();
    doc["token"] = token.key().into();
    doc["tokenId"] = token.id().into();
    doc["tokenName"] = token.name().into();
    bed.sm
        .put_secret_value()
        .secret_id(&name)
        .client_request_token(amg_token_rotator::credential::token::version_id(
            ws,
            &sa_id,
            token.id(),
            token.name(),
        ))
        .secret_string(doc.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_version_is_read_only_when_it_must_be_verified() {
    let seed = Seed::new().with_workspace(
        WorkspaceSeed::new(WS1)
            .with_service_account(ServiceAccountSeed::new("plain", Role::Editor))
            .with_service_account(ServiceAccountSeed::new("checked", Role::Editor)),
    );
    let bed = Bed::start(seed).await;
    let cfg = bed.config(&format!(
        r#"[log]
format = "text"

[defaults]
grace_period = "1m"

[[targets]]
name = "unverified"
workspace_ids = ["{WS1}"]
service_accounts = ["plain"]

[[targets]]
name = "verified"
workspace_ids = ["{WS1}"]
service_accounts = ["checked"]
verify = true
grafana_url = {:?}
"#,
        bed.amg.grafana_url_template()
    ));
    ok(&bed.once(&cfg).await);
    leave_pending(&bed, WS1, "plain").await;
    leave_pending(&bed, WS1, "checked").await;

    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let run = bed.once(&cfg).await;
    ok(&run);
    assert_eq!(
        run.stdout.matches("resume pending").count(),
        2,
        "{}",
        run.stdout
    );
    let sm = sm_ops(&bed);
    // The planner decides from the labels alone; only the verified credential needs the
    // pending key itself, to prove it before promoting it.
    assert_eq!(sm.get("GetSecretValue"), Some(&1), "{sm:?}");
    assert_eq!(sm.get("DescribeSecret"), Some(&2), "{sm:?}");
    assert!(!sm.contains_key("PutSecretValue"), "{sm:?}");
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);

    // Resumed and promoted: the next pass is healthy again, and reads no value.
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(
        sm_ops(&bed),
        counts(&[("ListSecrets", 1), ("DescribeSecret", 2)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewals_of_credentials_minted_together_spread_over_the_window() {
    const ACCOUNTS: usize = 40;
    let bed = Bed::start(Seed::new().with_workspace(fleet_workspace(WS1, ACCOUNTS))).await;
    let spread_days = 2;
    let rotate_before_days = 7;
    let cfg = bed.config(&format!(
        "[daemon]\nconcurrency = 8\n\n[log]\nformat = \"text\"\n\n[defaults]\ntoken_ttl = \"30d\"\nrotate_before = \"{rotate_before_days}d\"\nrotation_spread = \"{spread_days}d\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    ok(&bed.once(&cfg).await);

    let run = bed.run(&cfg, &["plan", "--output", "json"], &[]).await;
    ok(&run);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("plan JSON");
    let creds = report["credentials"].as_array().expect("credentials");
    assert_eq!(creds.len(), ACCOUNTS);
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}")))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let window = chrono::Duration::days(spread_days);
    let rotate_before = chrono::Duration::days(rotate_before_days);
    let now = chrono::Utc::now();
    // Where in the spread window each credential falls due, as a fraction of it (0 = the
    // earliest, 1 = exactly rotate_before before expiry).
    let mut positions = Vec::new();
    for c in creds {
        assert_eq!(c["status"], "ok", "{c}");
        let plan = &c["plan"];
        let due = time(&plan["dueAt"]);
        let latest = time(&plan["current"]["expiresAt"]) - rotate_before;
        assert!(due <= latest, "due after rotate_before: {c}");
        assert!(due >= latest - window, "due before the window: {c}");
        assert!(due > now, "a fresh token is not due: {c}");
        positions.push(1.0 - (latest - due).num_seconds() as f64 / window.num_seconds() as f64);
    }
    // Flat: every quarter of the window gets some renewals, none more than half of them.
    let mut quarters = [0usize; 4];
    for p in &positions {
        quarters[((p * 4.0) as usize).min(3)] += 1;
    }
    assert!(
        quarters.iter().all(|q| *q > 0 && *q <= ACCOUNTS / 2),
        "renewals bunch up: {quarters:?}"
    );
    // And no hour of the window takes more than a tenth of them.
    let mut per_hour: BTreeMap<i64, usize> = BTreeMap::new();
    for c in creds {
        *per_hour
            .entry(time(&c["plan"]["dueAt"]).timestamp() / 3600)
            .or_insert(0) += 1;
    }
    assert!(
        per_hour.values().all(|n| *n <= ACCOUNTS / 10),
        "renewals per hour: {per_hour:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotator_faster_than_the_service_slows_down_and_converges() {
    const PER_WS: usize = 8;
    const CAP: u32 = 5;
    let seed = Seed::new()
        .with_workspace(fleet_workspace(WS1, PER_WS))
        .with_workspace(fleet_workspace(WS2, PER_WS))
        .with_workspace(fleet_workspace(WS3, PER_WS));
    let bed = Bed::start(seed).await;
    bed.amg.set_faults(Faults {
        max_requests_per_second: Some(CAP),
        ..Faults::default()
    });
    let cfg = bed.config(&format!(
        "[daemon]\nconcurrency = 8\n\n[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\", \"{WS2}\", \"{WS3}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    // Configured at ten times what the service allows.
    let rate = (CAP * 10).to_string();
    let env = [
        (
            "AMG_ROTATOR__AWS__GRAFANA_REQUESTS_PER_SECOND",
            rate.as_str(),
        ),
        ("AMG_ROTATOR__AWS__RETRY_BUDGET", "60s"),
    ];
    let run = bed.run(&cfg, &["once"], &env).await;
    ok(&run);
    assert_eq!(run.stdout.matches("FAILED").count(), 0, "{}", run.stdout);
    let credentials = 3 * PER_WS;
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken")
            - count_throttled(&bed, "CreateWorkspaceServiceAccountToken"),
        credentials
    );

    // The limiter learnt the service's pace. A client that only retried, at its configured
    // rate, would be throttled about nine times for each call served; this one is throttled
    // less often than it is served, and less still once it has come down.
    let calls = bed.amg.calls();
    let throttled = |cs: &[amg_emulator::CallRecord]| {
        cs.iter()
            .filter(|c| c.error_type.as_deref() == Some("ThrottlingException"))
            .count()
    };
    let all = throttled(&calls);
    let served = calls.len() - all;
    let (first_half, second_half) = calls.split_at(calls.len() / 2);
    println!(
        "{all} throttled answers for {served} served calls ({} and {} by half)",
        throttled(first_half),
        throttled(second_half)
    );
    assert!(all < served, "{all} throttled for {served} served");
    assert!(
        throttled(second_half) * 3 <= second_half.len(),
        "still throttled once converged: {} of {}",
        throttled(second_half),
        second_half.len()
    );
}

fn count_throttled(bed: &Bed, operation: &str) -> usize {
    bed.amg
        .calls()
        .iter()
        .filter(|c| {
            c.operation == operation && c.error_type.as_deref() == Some("ThrottlingException")
        })
        .count()
}

/// Service accounts named exactly: a workspace whose credentials' records all stand is not even
/// listed. A credential whose audit comes lists its own workspace's service accounts (once,
/// however many of its credentials need them) and its tokens.
#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_named_accounts_are_listed_only_when_a_credential_needs_them() {
    let seed = Seed::new()
        .with_workspace(fleet_workspace(WS1, 3))
        .with_workspace(fleet_workspace(WS2, 3));
    let bed = Bed::start(seed).await;
    let cfg = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[defaults]\naudit_interval = \"7d\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\", \"{WS2}\"]\nservice_accounts = [\"svc-0\", \"svc-1\", \"svc-2\"]\n"
    ));
    // First run: each workspace listed once, for all its credentials, whose first versions
    // carry their first audit's record.
    ok(&bed.once(&cfg).await);
    let listed = by_target(&bed, "ListWorkspaceServiceAccounts");
    assert_eq!(
        listed.values().copied().collect::<Vec<_>>(),
        [1, 1],
        "{listed:?}"
    );
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(amg_ops(&bed), counts(&[("ListWorkspaces", 1)]), "steady");
    assert_eq!(sm_ops(&bed), counts(&[("ListSecrets", 1)]));

    bed.audit_now(&format!("amg-token-rotator/{WS2}/svc-1"))
        .await;
    bed.audit_now(&format!("amg-token-rotator/{WS2}/svc-2"))
        .await;
    bed.amg.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(
        by_target(&bed, "ListWorkspaceServiceAccounts"),
        BTreeMap::from([((WS2.to_owned(), String::new()), 1)])
    );
    assert_eq!(bed.count_calls("ListWorkspaceServiceAccountTokens"), 2);

    // A service account deleted by hand: its tokens go with it. The record stands until the
    // audit, which finds the account missing and reports it.
    let sa = bed.service_account_id(WS1, "svc-0");
    bed.grafana_client()
        .delete_workspace_service_account()
        .workspace_id(WS1)
        .service_account_id(&sa)
        .send()
        .await
        .expect("delete the service account");
    let run = bed.once(&cfg).await;
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("svc-0")),
        "{}",
        run.stdout
    );
    bed.audit_now(&format!("amg-token-rotator/{WS1}/svc-0"))
        .await;
    let run = bed.once(&cfg).await;
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("svc-0") && !l.starts_with("ok")),
        "{}",
        run.stdout
    );
}

/// The census of the rotator's secrets pages as ListSecrets pages (100 a page, the most it
/// allows): a steady pass over 101 credentials costs two ListSecrets and no DescribeSecret.
#[tokio::test(flavor = "multi_thread")]
async fn the_census_of_the_secrets_pages_past_a_hundred() {
    const ACCOUNTS: usize = 101;
    let bed = Bed::start(Seed::new().with_workspace(fleet_workspace(WS1, ACCOUNTS))).await;
    let cfg = bed.config(&format!(
        "[aws]\ngrafana_requests_per_second = 0\nsecretsmanager_requests_per_second = 0\n\n[log]\nformat = \"text\"\n\n[defaults]\naudit_interval = \"7d\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    ok(&bed.once(&cfg).await);
    ok(&bed.once(&cfg).await);
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    ok(&bed.once(&cfg).await);
    assert_eq!(sm_ops(&bed), counts(&[("ListSecrets", pages(ACCOUNTS))]));
    assert_eq!(bed.count_calls("ListWorkspaceServiceAccountTokens"), 0);
}

/// Waits (at most a minute) until the daemon has logged its `n`th `pass finished`.
async fn passes(d: &support::Daemon, n: usize) {
    let done = support::eventually(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(50),
        || async { (d.events_with("pass finished").len() >= n).then_some(()) },
    )
    .await;
    assert!(done.is_some(), "no pass {n} within a minute:\n{}", d.logs());
}

/// The daemon remembers the service-account listings of the workspaces a pattern selects from
/// one pass to the next (issue 18): once every credential's audit is recorded, its passes list
/// no service accounts; a credential whose audit comes lists its own workspace afresh, and the
/// new account that listing shows is taken up by the next pass; a reload (SIGHUP) lists every
/// workspace again.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_lists_a_pattern_workspace_only_when_a_credential_needs_it() {
    let seed = Seed::new()
        .with_workspace(fleet_workspace(WS1, 2))
        .with_workspace(fleet_workspace(WS2, 2));
    let bed = Bed::start(seed).await;
    let cfg = bed.config(&format!(
        "[daemon]\nschedule = \"*/3 * * * * *\"\n\n[log]\nformat = \"json\"\n\n[defaults]\naudit_interval = \"7d\"\n\n[[targets]]\nworkspace_ids = [\"{WS1}\", \"{WS2}\"]\nservice_accounts = [\"svc-*\"]\n"
    ));
    let listings = |bed: &Bed| by_target(bed, "ListWorkspaceServiceAccounts");
    let d = bed.daemon(&cfg, &[]).await;
    // The pass at start lists both workspaces and mints, each first version carrying its
    // first audit's record; the next is a steady pass.
    passes(&d, 1).await;
    assert_eq!(
        listings(&bed),
        [
            ((WS1.into(), String::new()), 1),
            ((WS2.into(), String::new()), 1)
        ]
        .into()
    );
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    passes(&d, 2).await;
    assert_eq!(
        amg_ops(&bed),
        counts(&[("ListWorkspaces", 1)]),
        "a steady pass of the daemon lists no service accounts:\n{}",
        d.logs()
    );
    assert_eq!(sm_ops(&bed), counts(&[("ListSecrets", 1)]));

    // A new account in WS1, and svc-0's audit there comes: WS1 alone is listed, for svc-0.
    bed.grafana_client()
        .create_workspace_service_account()
        .workspace_id(WS1)
        .name("svc-new")
        .grafana_role(aws_sdk_grafana::types::Role::Editor)
        .send()
        .await
        .expect("CreateWorkspaceServiceAccount");
    bed.audit_now(&format!("amg-token-rotator/{WS1}/svc-0"))
        .await;
    bed.amg.clear_calls();
    passes(&d, 3).await;
    assert_eq!(listings(&bed), [((WS1.into(), String::new()), 1)].into());
    assert_eq!(bed.count_calls("ListWorkspaceServiceAccountTokens"), 1);
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
    // The pass after it mints svc-new's first token.
    bed.amg.clear_calls();
    passes(&d, 4).await;
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 1);
    assert_eq!(bed.tokens(WS1, "svc-new").len(), 1);

    // A reload forgets what the daemon remembers: its next pass lists both workspaces.
    d.signal("HUP");
    d.wait_for_event("configuration reloaded", std::time::Duration::from_secs(30))
        .await;
    let reloaded = d.events_with("pass finished").len();
    bed.amg.clear_calls();
    passes(&d, reloaded + 1).await;
    assert_eq!(
        listings(&bed),
        [
            ((WS1.into(), String::new()), 1),
            ((WS2.into(), String::new()), 1)
        ]
        .into()
    );
    assert!(
        d.events_with("credential failed").is_empty(),
        "{}",
        d.logs()
    );
}
