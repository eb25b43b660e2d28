//! Safe on real AWS: what real Amazon Managed Grafana and Secrets Manager do that our first
//! emulators did not show, each as a user would meet it (aws-facts.md names the sources).
//!
//! - A credential pointed at a new secret leaves the live tokens of the old one alone.
//! - A verification that keeps failing writes no secret version and backs off across
//!   separate `once` processes (Secrets Manager keeps every version younger than 24 hours).
//! - A token AMG reports no expiry for is never taken for expired.
//! - API keys are gone from Grafana 12: a credential opted out of the migration is blocked,
//!   nothing attempted.
//! - Two rotators started together never leave AWSCURRENT on a deleted key.
//! - A PutSecretValue that landed although its answer was lost is not undone.
//! - The secret holds AMG's own times; a secret another tool rotates is left alone; the same
//!   secret name in two regions is two secrets.

mod reliability_support;
mod support;

use std::time::Duration;

use amg_emulator::{EmulatorConfig, Seed, TokenSeed, WorkspaceSeed};
use reliability_support::{
    check_current, check_current_exists, check_none_unreferenced, last_seq, minted_since, once,
    set_current_expiry, write_config, Cred, DAY,
};
use support::{config_for, workspace, Bed};

const WS: &str = "g-1111111111";
const WS2: &str = "g-2222222222";
const LEGACY: &str = "g-8888888888";

fn seed(workspaces: Vec<WorkspaceSeed>) -> Seed {
    Seed {
        workspaces,
        ..Seed::default()
    }
}

fn legacy(version: &str) -> WorkspaceSeed {
    WorkspaceSeed {
        id: LEGACY.into(),
        name: Some("legacy".into()),
        grafana_version: Some(version.into()),
        ..WorkspaceSeed::default()
    }
}

/// Tokens minted since the call log was last cleared: creates AMG answered with a token (a
/// create that found its name taken, as two passes in the same second do, mints nothing).
fn minted(bed: &Bed) -> usize {
    bed.amg
        .calls()
        .iter()
        .filter(|c| c.operation == "CreateWorkspaceServiceAccountToken" && c.status == 200)
        .count()
}

fn plan_json(run: &support::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all_output()))
}

fn credential<'a>(plan: &'a serde_json::Value, service_account: &str) -> &'a serde_json::Value {
    plan["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serviceAccount"] == service_account)
        .unwrap_or_else(|| panic!("{service_account} not in {plan}"))
}

/// Item 2: `secret_name` changes from `a/…` to `b/…`. Every token the old secrets hold is older
/// than the new secrets' tokens and past every margin, yet it is what the old secrets'
/// consumers use: it stays until it expires, and the old secret is named for the user to retire.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_secret_name_leaves_the_old_secrets_live_tokens_alone() {
    let bed = Bed::start(seed(vec![workspace(
        WS,
        &[("terraform", &[]), ("ci", &[])],
    )]))
    .await;
    let margins = "grace_period = \"1s\"\norphan_margin = \"1s\"";
    let cfg_a = bed.config(&config_for(
        &[WS],
        &["terraform", "ci"],
        &format!("secret_name = \"a/{{workspace_id}}/{{service_account}}\"\n{margins}"),
    ));
    let run = bed.once(&cfg_a).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let old: Vec<serde_json::Value> = vec![
        bed.secret_json(&format!("a/{WS}/terraform"), "AWSCURRENT")
            .await,
        bed.secret_json(&format!("a/{WS}/ci"), "AWSCURRENT").await,
    ];

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cfg_b = bed.config(&config_for(
        &[WS],
        &["terraform", "ci"],
        &format!("secret_name = \"b/{{workspace_id}}/{{service_account}}\"\n{margins}"),
    ));
    let run = bed.once(&cfg_b).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    // A pass well past the margins, once the new secrets have their own current tokens.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let run = bed.once(&cfg_b).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    for reason in ["(orphan)", "(superseded)", "(expired_owned)"] {
        assert!(!run.stdout.contains(reason), "{}", run.stdout);
    }

    for (sa, doc) in ["terraform", "ci"].iter().zip(&old) {
        let token = doc["token"].as_str().unwrap();
        assert!(
            bed.key_works(WS, token).await,
            "{sa}: the old secret's key was deleted:\n{}",
            run.all_output()
        );
        assert!(
            run.stdout.contains(&format!(
                "{} is minted for secret a/{WS}/{sa}; kept until it expires",
                doc["tokenName"].as_str().unwrap()
            )),
            "{}",
            run.stdout
        );
        assert!(bed.versions(&format!("a/{WS}/{sa}")).await.is_some());
    }
    let plan = bed.run(&cfg_b, &["plan", "--output", "json"], &[]).await;
    let doc = plan_json(&plan);
    let lb = &credential(&doc, "terraform")["plan"]["leftBehind"][0];
    assert_eq!(lb["secret"], format!("a/{WS}/terraform"), "{lb}");
    assert_eq!(lb["token"]["id"], old[0]["tokenId"]);

    // Once expired, the left-behind token is useless to anyone, and goes.
    let sa_id = bed.service_account_id(WS, "terraform");
    bed.set_token_expiry(
        WS,
        &sa_id,
        old[0]["tokenId"].as_str().unwrap(),
        chrono::Utc::now().timestamp() - 60,
    )
    .await;
    let run = bed.once(&cfg_b).await;
    assert!(
        run.stdout.contains(&format!(
            "delete {} (expired_owned)",
            old[0]["tokenName"].as_str().unwrap()
        )),
        "{}",
        run.stdout
    );
}

/// Item 3: Grafana unreachable for verification. Three passes leave one version (the first
/// good pass's); after the first failure the next passes back off without minting, even as
/// separate processes; once the backoff has passed, the next pass tries again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_verification_writes_no_version_and_backs_off_across_processes() {
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])])])).await;
    let good = config_for(
        &[WS],
        &["terraform"],
        &format!(
            "verify = true\ngrafana_url = {:?}\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1m\"",
            bed.amg.grafana_url_template()
        ),
    );
    let cfg = write_config(&bed, "good", &good);
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let cred = Cred::token(WS, "terraform");
    set_current_expiry(&bed, &cred, 600).await;
    let versions_before = bed.versions(&cred.secret).await.unwrap().len();

    // A workspace whose Grafana answers 404 for every key: unreachable as far as proof goes.
    let bad = write_config(&bed, "bad", &good.replace("{workspace_id}", "g-ffffffffff"));
    bed.amg.clear_calls();
    let first = bed.once(&bad).await;
    assert_eq!(first.code, Some(1), "{}", first.all_output());
    let url = format!("{}/api/org/", bed.amg.grafana_url("g-ffffffffff"));
    assert!(
        first.stdout.contains(&format!("GET {url} answered 404")),
        "the failure names the URL and the status:\n{}",
        first.stdout
    );
    assert_eq!(minted(&bed), 1);
    for _ in 0..2 {
        let again = bed.once(&bad).await;
        assert_eq!(again.code, Some(1), "{}", again.all_output());
        assert!(
            again
                .stdout
                .contains("failed 1 time(s) in a row (last: HTTP 404)")
                && again.stdout.contains("next attempt at"),
            "{}",
            again.stdout
        );
    }
    assert_eq!(minted(&bed), 1, "backing off mints nothing");
    assert_eq!(
        bed.versions(&cred.secret).await.unwrap().len(),
        versions_before,
        "a failed verification published a version"
    );
    assert_eq!(
        bed.tokens(WS, "terraform").len(),
        1,
        "the unproven token is gone"
    );

    // Past the backoff: tried again, fails again, the wait doubles.
    bed.age_verification_record(&cred.secret, 3600).await;
    let r = bed.once(&bad).await;
    assert_eq!(r.code, Some(1), "{}", r.all_output());
    assert_eq!(minted(&bed), 2);
    let record = bed.verification_record(&cred.secret).await.unwrap();
    assert_eq!(record.failures, 2);
    assert_eq!(record.status, Some(404));
    assert_eq!(
        record.next_attempt() - record.at,
        chrono::Duration::minutes(10)
    );
    // Reachable again: proven, published, and the record is gone.
    bed.age_verification_record(&cred.secret, 3600).await;
    let r = bed.once(&cfg).await;
    assert_eq!(r.code, Some(0), "{}", r.all_output());
    assert_eq!(bed.verification_record(&cred.secret).await, None);
    check_current(&bed, &cred, 1800).await.unwrap();
}

/// Item 4: a token made in the workspace's own Grafana UI has no expiry; aws-sdk-grafana reads
/// the missing `expiresAt` as the epoch. With `delete_expired_foreign_tokens`, it is kept;
/// `plan` and the metrics show it as unknown, not expired.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_expiry_is_never_deleted_as_expired() {
    let mut ws = workspace(WS, &[("terraform", &[("manual-dead", 40 * DAY, -DAY)])]);
    ws.service_accounts[0]
        .tokens
        .push(TokenSeed::without_expiry("made-in-the-ui"));
    let bed = Bed::start(seed(vec![ws])).await;
    let cfg = bed.config(&config_for(
        &[WS],
        &["terraform"],
        "delete_expired_foreign_tokens = true",
    ));
    let plan = bed.run(&cfg, &["plan", "--output", "json"], &[]).await;
    let doc = plan_json(&plan);
    let p = &credential(&doc, "terraform")["plan"];
    let actions = p["actions"].to_string();
    assert!(actions.contains("manual-dead"), "{actions}");
    assert!(!actions.contains("made-in-the-ui"), "{actions}");
    assert!(
        p["notes"].to_string().contains("made-in-the-ui"),
        "{}",
        p["notes"]
    );
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let names: Vec<String> = bed
        .tokens(WS, "terraform")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"made-in-the-ui".to_owned()), "{names:?}");
    assert!(!names.contains(&"manual-dead".to_owned()), "{names:?}");

    let d = bed.daemon(&cfg, &[]).await;
    let s = d
        .scrape_until(Duration::from_secs(20), |s| {
            s.value(
                "amg_rotator_service_account_tokens",
                &[("service_account", "terraform"), ("state", "no_expiry")],
            )
            .is_some()
        })
        .await;
    let state = |st: &str| {
        s.value(
            "amg_rotator_service_account_tokens",
            &[("service_account", "terraform"), ("state", st)],
        )
    };
    assert_eq!(state("no_expiry"), Some(1.0));
    assert_eq!(state("expired"), Some(0.0));
    assert_eq!(state("active"), Some(1.0));
}

/// Item 5: API keys have been removed in Grafana 12. A key credential there whose target opted
/// out of the migration (tests/migration.rs) is blocked once per pass with a message that says
/// why and what to do, in `plan`, `once` and the metrics; no API-key call and no secret call is
/// made. On 10.4 the same target rotates.
#[tokio::test(flavor = "multi_thread")]
async fn api_keys_on_grafana_12_are_blocked_with_no_attempt_when_migration_is_off() {
    let bed = Bed::start(seed(vec![legacy("12.4")])).await;
    let cfg = write_config(
        &bed,
        "keys12",
        &format!(
            "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\nmigrate_api_keys = false\n"
        ),
    );
    let plan = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        plan.stdout.contains(
            "blocked: the workspace runs Grafana 12.4, and API keys have been removed in Amazon Managed Grafana version 12"
        ) && plan.stdout.contains("service_accounts"),
        "{}",
        plan.all_output()
    );
    bed.proxy.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert_eq!(run.stdout.matches("blocked:").count(), 1, "{}", run.stdout);
    assert_eq!(bed.count_calls("CreateWorkspaceApiKey"), 0);
    assert_eq!(bed.count_calls("DeleteWorkspaceApiKey"), 0);
    assert!(bed.proxy.calls().is_empty(), "{:?}", bed.proxy.calls());

    let d = bed.daemon(&cfg, &[]).await;
    let s = d
        .scrape_until(Duration::from_secs(20), |s| {
            s.value(
                "amg_rotator_credential_failures_total",
                &[("service_account", "legacy"), ("stage", "plan")],
            )
            .is_some()
        })
        .await;
    assert_eq!(
        s.value(
            "amg_rotator_credential_healthy",
            &[("service_account", "legacy"), ("kind", "api_key")]
        ),
        Some(0.0)
    );
    drop(d);
    assert_eq!(bed.count_calls("CreateWorkspaceApiKey"), 0);
}

/// Item 6: two `once` processes started together, round after round (a daemon and a timer by
/// mistake), over a `recreate` token and an API key. At the end of every round AWSCURRENT holds
/// a key that exists and works; nothing is left unaccounted for.
#[tokio::test(flavor = "multi_thread")]
async fn two_rotators_started_together_never_leave_awscurrent_on_a_deleted_key() {
    const ROUNDS: usize = 8;
    let bed = Bed::start(seed(vec![
        workspace(WS, &[("deployer", &[])]),
        legacy("10.4"),
    ]))
    .await;
    let cfg = write_config(
        &bed,
        "pair",
        &format!(
            "[daemon]\nconcurrency = 4\n\n[log]\nformat = \"text\"\n\n[defaults]\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\norphan_margin = \"1s\"\nverify = true\ngrafana_url = {:?}\n\n\
             [[targets]]\nworkspace_ids = [\"{WS}\"]\nservice_accounts = [\"deployer\"]\nstrategy = \"recreate\"\n\n\
             [[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n",
            bed.amg.grafana_url_template()
        ),
    );
    let creds = [Cred::token(WS, "deployer"), Cred::key(LEGACY, "legacy")];
    let mut outputs = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            for c in &creds {
                set_current_expiry(&bed, c, 600).await;
            }
        }
        let mark = last_seq(&bed);
        let (a, b) = tokio::join!(once(&bed, &cfg, &[]), once(&bed, &cfg, &[]));
        let both = format!("{}\n{}", a.all_output(), b.all_output());
        for c in &creds {
            if let Err(e) = check_current_exists(&bed, c).await {
                panic!("round {round}: {e}\n{both}");
            }
        }
        // recreate reuses one name: the second rotator finds it taken by the first one's token
        // (published, or about to be) and leaves it to its consumers, rather than deleting it
        // and opening a second recreate window. One token per round.
        let minted = minted_since(&bed, &creds[0], mark);
        assert_eq!(
            minted, 1,
            "round {round}: {minted} recreate tokens minted\n{both}"
        );
        outputs.push(both);
        // The next round starts past the margins, as an hourly timer would.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // A pass alone repairs what the pair left (a young token left to "the other" rotator) and
    // sweeps; then everything is valid and accounted for.
    for _ in 0..2 {
        let r = once(&bed, &cfg, &[]).await;
        assert_eq!(r.code(), Some(0), "{}", r.all_output());
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let last = once(&bed, &cfg, &[]).await;
    for c in &creds {
        if let Err(e) = check_current(&bed, c, 1800).await {
            panic!("{e}\n{}\n{}", last.all_output(), outputs.join("\n"));
        }
        if let Err(e) = check_none_unreferenced(&bed, c).await {
            panic!("{e}\n{}\n{}", last.all_output(), outputs.join("\n"));
        }
    }
}

/// Item 7: PutSecretValue of a new API key lands, but every answer is lost (a timeout, a
/// 5xx). Before, the key was deleted and its AWSPENDING version left for the next pass to
/// promote, a dead key; now the secret is looked at first, the version found, and promoted.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_write_that_landed_is_promoted_not_deleted() {
    let bed = Bed::start(seed(vec![legacy("10.4")])).await;
    let cfg = write_config(
        &bed,
        "landed",
        &format!(
            "[log]\nformat = \"text\"\n\n[aws]\nmax_attempts = 2\n\n[defaults]\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\n\n[[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n"
        ),
    );
    let cred = Cred::key(LEGACY, "legacy");
    assert_eq!(once(&bed, &cfg, &[]).await.code(), Some(0));
    set_current_expiry(&bed, &cred, 600).await;
    bed.proxy.lose_answers("PutSecretValue", u32::MAX);
    let r = once(&bed, &cfg, &[("AMG_ROTATOR__AWS__RETRY_BUDGET", "1s")]).await;
    bed.proxy.clear_faults();
    assert_eq!(r.code(), Some(0), "{}", r.all_output());
    assert!(
        r.stderr.contains("its version is there: published"),
        "{}",
        r.all_output()
    );
    if let Err(e) = check_current(&bed, &cred, 1800).await {
        panic!("{e}\n{}", r.all_output());
    }
    let next = once(&bed, &cfg, &[]).await;
    assert_eq!(next.code(), Some(0), "{}", next.all_output());
    check_current(&bed, &cred, 1800).await.unwrap();
}

/// Item 8: the secret's `createdAt` and `expiresAt` are AMG's, not the host's. The service's
/// clock here runs an hour behind the host's.
#[tokio::test(flavor = "multi_thread")]
async fn the_secret_holds_amgs_times_not_the_hosts() {
    let bed = Bed::start_with(
        EmulatorConfig::new()
            .with_seed(seed(vec![workspace(WS, &[("terraform", &[])])]))
            .with_clock_offset(-3600),
    )
    .await;
    let cfg = bed.config(&config_for(&[WS], &["terraform"], ""));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let doc = bed
        .secret_json(&format!("amg-token-rotator/{WS}/terraform"), "AWSCURRENT")
        .await;
    let t = bed
        .tokens(WS, "terraform")
        .into_iter()
        .find(|t| t.id == doc["tokenId"])
        .unwrap();
    let rfc =
        |s: i64| amg_token_rotator::model::rfc3339(chrono::DateTime::from_timestamp(s, 0).unwrap());
    assert_eq!(doc["createdAt"], rfc(t.created_at));
    assert_eq!(doc["expiresAt"], rfc(t.expires_at.unwrap()));
}

/// Item 8: an AWSPENDING that another tool left, and a secret whose Secrets Manager rotation is
/// enabled (a rotation function owns it), are left alone and reported, not rotated over.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_another_tool_rotates_are_left_alone_and_reported() {
    let bed = Bed::start(seed(vec![workspace(
        WS,
        &[("terraform", &[]), ("ci", &[])],
    )]))
    .await;
    let cfg = bed.config(&config_for(
        &[WS],
        &["terraform", "ci"],
        "token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1m\"",
    ));
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let tf = Cred::token(WS, "terraform");
    let ci = Cred::token(WS, "ci");
    for c in [&tf, &ci] {
        set_current_expiry(&bed, c, 600).await;
    }
    // Another tool's rotation, half done: its own AWSPENDING version.
    let foreign = "5c3e4d1a-0000-4000-8000-000000000001";
    bed.sm
        .put_secret_value()
        .secret_id(&tf.secret)
        .client_request_token(foreign)
        .secret_string("another tool's value")
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let before = bed.versions(&tf.secret).await.unwrap();
    bed.amg.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout.contains(&format!(
            "blocked: the secret's AWSPENDING version {foreign} was not written by amg-token-rotator"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(bed.versions(&tf.secret).await.unwrap(), before);
    // ci was due too and rotated: one token minted, for ci alone.
    assert_eq!(minted(&bed), 1);

    // Rotation enabled, as real Secrets Manager reports it (moto only sets it by invoking a
    // rotation Lambda through Docker).
    bed.proxy.patch_describe(serde_json::json!({
        "RotationEnabled": true,
        "RotationLambdaARN": "arn:aws:lambda:us-east-1:123456789012:function:rotate"
    }));
    set_current_expiry(&bed, &ci, 600).await;
    bed.amg.clear_calls();
    let run = bed.once(&cfg).await;
    bed.proxy.clear_faults();
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout
            .contains("blocked: Secrets Manager rotation is enabled on the secret"),
        "{}",
        run.stdout
    );
    assert_eq!(minted(&bed), 0);
}

/// Item 8: the same secret name in two regions is two secrets, not a clash.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_secret_name_in_two_regions_is_two_secrets() {
    let bed = Bed::start(seed(vec![
        workspace(WS, &[("terraform", &[])]),
        workspace(WS2, &[("terraform", &[])]),
    ]))
    .await;
    let cfg = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[defaults]\nsecret_name = \"shared/{{service_account}}\"\n\n\
         [[targets]]\nworkspace_ids = [\"{WS}\"]\nservice_accounts = [\"terraform\"]\nregion = \"us-east-1\"\n\n\
         [[targets]]\nworkspace_ids = [\"{WS2}\"]\nservice_accounts = [\"terraform\"]\nregion = \"eu-west-1\"\n"
    ));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(!run.stdout.contains("already used by"), "{}", run.stdout);
    let in_region = |region: &'static str| {
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new(region))
            .endpoint_url(bed.moto.endpoint())
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
    };
    for (region, ws) in [("us-east-1", WS), ("eu-west-1", WS2)] {
        let v = in_region(region)
            .get_secret_value()
            .secret_id("shared/terraform")
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{region}: {e:?}"));
        let doc: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
        assert_eq!(doc["workspaceId"], ws, "{region}");
    }
    // Within one region the same name is still refused.
    let clash = bed.config(&format!(
        "[log]\nformat = \"text\"\n\n[defaults]\nsecret_name = \"shared/{{service_account}}\"\n\n\
         [[targets]]\nworkspace_ids = [\"{WS}\", \"{WS2}\"]\nservice_accounts = [\"terraform\"]\n"
    ));
    let run = bed.once(&clash).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(run.stdout.contains("already used by"), "{}", run.stdout);
}
