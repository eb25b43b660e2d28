//! End-to-end: the real binary against the AMG emulator and Secrets Manager on moto.
//! What a user would notice: secrets appear and hold working keys, due tokens are replaced with
//! no gap, superseded tokens go after grace, nothing leaks, nothing is touched that is not ours.

mod support;

use std::time::Duration;

use amg_emulator::{Faults, Seed};
use support::{config_for, workspace, Bed};

const WS1: &str = "g-1111111111";
const WS2: &str = "g-2222222222";
const WS3: &str = "g-3333333333";
const DAY: i64 = 86_400;

fn seed(workspaces: Vec<amg_emulator::WorkspaceSeed>) -> Seed {
    Seed {
        workspaces,
        ..Seed::default()
    }
}

fn secret_name(ws: &str, sa: &str) -> String {
    format!("amg-token-rotator/{ws}/{sa}")
}

fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_publishes_working_keys_and_a_second_pass_changes_nothing() {
    let bed = Bed::start(seed(vec![workspace(
        WS1,
        &[
            ("terraform", &[]),
            ("ci-deploy", &[("hand-made", 3600, 20 * DAY)]),
            ("unrelated", &[]),
        ],
    )]))
    .await;
    let cfg = bed.config(&config_for(&[WS1], &["terraform", "ci-*"], ""));

    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    for sa in ["terraform", "ci-deploy"] {
        let doc = bed.secret_json(&secret_name(WS1, sa), "AWSCURRENT").await;
        let key = doc["token"].as_str().unwrap();
        assert!(
            bed.key_works(WS1, key).await,
            "{sa}: published key is rejected"
        );
        assert_eq!(doc["workspaceId"], WS1);
        assert_eq!(doc["serviceAccountName"], sa);
        assert_eq!(
            doc["serviceAccountId"],
            bed.service_account_id(WS1, sa).as_str()
        );
        assert_eq!(
            doc["grafanaUrl"],
            format!("https://{WS1}.grafana-workspace.us-east-1.amazonaws.com")
        );
        assert!(doc["tokenName"]
            .as_str()
            .unwrap()
            .starts_with(&format!("amgrot-{sa}-")));
        let expires =
            chrono::DateTime::parse_from_rfc3339(doc["expiresAt"].as_str().unwrap()).unwrap();
        let days = (expires.timestamp() - now_epoch()) as f64 / DAY as f64;
        assert!((29.9..=30.01).contains(&days), "expires in {days} days");
        let token = bed
            .tokens(WS1, sa)
            .into_iter()
            .find(|t| t.name == doc["tokenName"].as_str().unwrap())
            .expect("the token behind the secret exists");
        assert_eq!(doc["tokenId"], token.id.as_str());
    }
    // Not selected, not touched; a token it did not create is left alone.
    assert!(bed.versions(&secret_name(WS1, "unrelated")).await.is_none());
    assert!(bed
        .tokens(WS1, "ci-deploy")
        .iter()
        .any(|t| t.name == "hand-made"));

    let before = bed.versions(&secret_name(WS1, "terraform")).await;
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let writes: Vec<_> = bed
        .amg
        .calls()
        .into_iter()
        .filter(|c| c.operation.starts_with("Create") || c.operation.starts_with("Delete"))
        .collect();
    assert!(writes.is_empty(), "a healthy pass wrote to AMG: {writes:?}");
    // The first run recorded each credential's first audit with its first version: the second
    // pass is a steady one, which reads the secrets' labels and records in one listing and
    // writes nothing; so does the pass after it.
    let mut sm = bed.proxy.calls();
    sm.sort();
    sm.dedup();
    assert_eq!(sm, ["ListSecrets"], "{:?}", bed.proxy.calls());
    bed.proxy.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        bed.proxy
            .calls()
            .iter()
            .all(|op| op == "ListSecrets" || op == "DescribeSecret"),
        "a healthy pass wrote to Secrets Manager: {:?}",
        bed.proxy.calls()
    );
    assert_eq!(bed.versions(&secret_name(WS1, "terraform")).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_token_is_replaced_and_the_old_one_kept_for_grace_then_deleted() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config_for(
        &[WS1],
        &["terraform"],
        "token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"3s\"",
    ));
    let name = secret_name(WS1, "terraform");
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let first = bed.secret_json(&name, "AWSCURRENT").await;
    let sa_id = bed.service_account_id(WS1, "terraform");
    // Bring the token within rotate_before of its expiry.
    assert!(
        bed.set_token_expiry(
            WS1,
            &sa_id,
            first["tokenId"].as_str().unwrap(),
            now_epoch() + 600
        )
        .await
    );

    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(run.stdout.contains("rotate (due)"), "{}", run.stdout);
    let second = bed.secret_json(&name, "AWSCURRENT").await;
    assert_ne!(second["tokenId"], first["tokenId"]);
    assert!(bed.key_works(WS1, second["token"].as_str().unwrap()).await);
    // The old token stays valid during grace, as AWSPREVIOUS.
    assert_eq!(
        bed.secret_json(&name, "AWSPREVIOUS").await["tokenId"],
        first["tokenId"]
    );
    assert!(bed.key_works(WS1, first["token"].as_str().unwrap()).await);
    assert_eq!(bed.tokens(WS1, "terraform").len(), 2);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let left = bed.tokens(WS1, "terraform");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, second["tokenId"].as_str().unwrap());
    assert!(!bed.key_works(WS1, first["token"].as_str().unwrap()).await);
    assert_eq!(
        bed.secret_json(&name, "AWSCURRENT").await["tokenId"],
        second["tokenId"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_deletes_then_creates_a_token_of_the_same_name() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config_for(
        &[WS1],
        &["terraform"],
        "strategy = \"recreate\"\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1m\"",
    ));
    let name = secret_name(WS1, "terraform");
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let first = bed.secret_json(&name, "AWSCURRENT").await;
    // The fixed name carries the mark of the secret it is for.
    let mark = bed.secret_mark(&name).await;
    assert_eq!(first["tokenName"], format!("amgrot-terraform-{mark}"));
    let sa_id = bed.service_account_id(WS1, "terraform");
    assert!(
        bed.set_token_expiry(
            WS1,
            &sa_id,
            first["tokenId"].as_str().unwrap(),
            now_epoch() + 60
        )
        .await
    );

    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let second = bed.secret_json(&name, "AWSCURRENT").await;
    assert_eq!(second["tokenName"], format!("amgrot-terraform-{mark}"));
    assert_ne!(second["tokenId"], first["tokenId"]);
    let tokens = bed.tokens(WS1, "terraform");
    assert_eq!(
        tokens.len(),
        1,
        "the old token is deleted first: {tokens:?}"
    );
    assert!(bed.key_works(WS1, second["token"].as_str().unwrap()).await);
    assert!(!bed.key_works(WS1, first["token"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_version_left_by_an_interrupted_pass_is_resumed_without_minting() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config_for(&[WS1], &["terraform"], "grace_period = \"1m\""));
    let name = secret_name(WS1, "terraform");
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let first = bed.secret_json(&name, "AWSCURRENT").await;
    let sa_id = bed.service_account_id(WS1, "terraform");

    // What a pass killed after publishing AWSPENDING leaves: a new token and a pending version.
    let grafana = bed.grafana_client();
    let made = grafana
        .create_workspace_service_account_token()
        .workspace_id(WS1)
        .service_account_id(&sa_id)
        .name("amgrot-terraform-interrupted")
        .seconds_to_live(30 * DAY as i32)
        .send()
        .await
        .unwrap();
    let token = made.service_account_token().unwrap();
    let version =
        amg_token_rotator::credential::token::version_id(WS1, &sa_id, token.id(), token.name());
    let mut doc = first.clone();
    doc["token"] = token.key().into();
    doc["tokenId"] = token.id().into();
    doc["tokenName"] = token.name().into();
    bed.sm
        .put_secret_value()
        .secret_id(&name)
        .client_request_token(&version)
        .secret_string(doc.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();

    bed.amg.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stdout
            .contains("resume pending amgrot-terraform-interrupted"),
        "{}",
        run.stdout
    );
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
    let current = bed.secret_json(&name, "AWSCURRENT").await;
    assert_eq!(current["tokenId"], token.id());
    assert_eq!(
        bed.secret_json(&name, "AWSPREVIOUS").await["tokenId"],
        first["tokenId"]
    );
    let versions = bed.versions(&name).await.unwrap();
    assert!(
        !versions.values().flatten().any(|s| s == "AWSPENDING"),
        "AWSPENDING is cleared after promotion: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_failure_deletes_the_new_token() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config_for(&[WS1], &["terraform"], ""));
    // A first token is published by creating its secret with it.
    bed.proxy
        .fail("CreateSecret", u32::MAX, 400, "AccessDeniedException");

    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout.contains("FAILED") && run.stdout.contains("CreateSecret"),
        "{}",
        run.stdout
    );
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 1);
    assert!(
        bed.tokens(WS1, "terraform").is_empty(),
        "the unpublished token is deleted"
    );

    bed.proxy.clear_faults();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert_eq!(bed.tokens(WS1, "terraform").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_of_the_secret_and_expired_owned_tokens_are_swept_and_others_kept() {
    // Tokens named before names carried a secret's mark: any secret may hold them.
    let bed = Bed::start(seed(vec![workspace(
        WS1,
        &[(
            "terraform",
            &[
                ("amgrot-terraform-20260101T000000Z", 3600, 20 * DAY),
                ("amgrot-terraform-dead", 40 * DAY, -DAY),
                ("manual", 3600, 20 * DAY),
                ("manual-dead", 40 * DAY, -DAY),
            ],
        )],
    )]))
    .await;
    let cfg = bed.config(&config_for(
        &[WS1],
        &["terraform"],
        "orphan_margin = \"5s\"",
    ));
    let name = secret_name(WS1, "terraform");
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stdout.contains("left behind g-1111111111 terraform")
            && run
                .stdout
                .contains("amgrot-terraform-20260101T000000Z is minted before token names carried"),
        "{}",
        run.stdout
    );

    // What a pass that crashed before publishing leaves: minted for this secret after its
    // current token, unreferenced. One older than orphan_margin goes; a younger one stays.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mark = bed.secret_mark(&name).await;
    let orphan = format!("amgrot-terraform-20261101T000000Z-{mark}");
    let young = format!("amgrot-terraform-20261101T000001Z-{mark}");
    bed.amg.add_seed(Seed {
        workspaces: vec![amg_emulator::WorkspaceSeed {
            id: WS1.into(),
            service_accounts: vec![amg_emulator::ServiceAccountSeed {
                name: "terraform".into(),
                tokens: vec![
                    amg_emulator::TokenSeed {
                        name: orphan.clone(),
                        created_seconds_ago: 6,
                        expires_in_seconds: 20 * DAY,
                        ..Default::default()
                    },
                    amg_emulator::TokenSeed {
                        name: young.clone(),
                        created_seconds_ago: 0,
                        expires_in_seconds: 20 * DAY,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Seed::default()
    });
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stdout.contains(&format!("delete {orphan} (orphan)")),
        "{}",
        run.stdout
    );
    let mut names: Vec<String> = bed
        .tokens(WS1, "terraform")
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    let current = bed.secret_json(&name, "AWSCURRENT").await;
    let mut expected = vec![
        current["tokenName"].as_str().unwrap().to_owned(),
        // Another secret may hold it: kept until it expires, reported.
        "amgrot-terraform-20260101T000000Z".to_owned(),
        // Younger than orphan_margin: its pass may still be publishing it.
        young,
        "manual".to_owned(),
        "manual-dead".to_owned(),
    ];
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_pressure_is_relieved_only_by_the_opt_in_cleanup() {
    let mut s = seed(vec![workspace(
        WS1,
        &[(
            "terraform",
            &[
                ("old-1", 40 * DAY, -DAY),
                ("old-2", 40 * DAY, -DAY),
                ("old-3", 40 * DAY, -DAY),
            ],
        )],
    )]);
    s.token_quota_per_service_account = Some(3);
    let bed = Bed::start(s).await;

    let cfg = bed.config(&config_for(&[WS1], &["terraform"], ""));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(run.stdout.contains("quota"), "{}", run.stdout);
    assert_eq!(
        bed.tokens(WS1, "terraform").len(),
        3,
        "foreign tokens are not deleted without opt-in"
    );

    let cfg = bed.config(&config_for(
        &[WS1],
        &["terraform"],
        "delete_expired_foreign_tokens = true",
    ));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let tokens = bed.tokens(WS1, "terraform");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(tokens[0].name.starts_with("amgrot-terraform-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_credentials_converge_under_injected_faults() {
    let names: Vec<String> = (0..7).map(|i| format!("svc-{i}")).collect();
    let accounts = |n: usize| -> Vec<support::AccountSpec<'_>> {
        names[..n].iter().map(|s| (s.as_str(), &[][..])).collect()
    };
    let bed = Bed::start(seed(vec![
        workspace(WS1, &accounts(7)),
        workspace(WS2, &accounts(7)),
        workspace(WS3, &accounts(6)),
    ]))
    .await;
    bed.amg.set_faults(Faults {
        error_rate: 0.2,
        rng_seed: 7,
        retry_after_seconds: 0,
        ..Faults::default()
    });
    bed.proxy.set_error_rate(0.2, 11);
    let cfg = bed.config(&config_for(&[WS1, WS2, WS3], &["svc-*"], ""));

    let mut passes = 0;
    loop {
        passes += 1;
        let run = bed.once(&cfg).await;
        if run.code == Some(0) {
            break;
        }
        assert!(
            passes < 3,
            "not converged after 3 passes:\n{}",
            run.all_output()
        );
    }
    bed.amg.set_faults(Faults::default());
    bed.proxy.clear_faults();
    let calls = bed.amg.calls();
    let injected = calls.iter().filter(|c| c.injected).count();
    assert!(
        injected >= 5,
        "AMG faults were injected: {injected} of {}",
        calls.len()
    );
    assert!(
        bed.proxy.injected() >= 5,
        "Secrets Manager faults were injected: {}",
        bed.proxy.injected()
    );
    let mut checked = 0;
    for (ws, n) in [(WS1, 7), (WS2, 7), (WS3, 6)] {
        for sa in &names[..n] {
            let name = secret_name(ws, sa);
            let doc = bed.secret_json(&name, "AWSCURRENT").await;
            assert!(
                bed.key_works(ws, doc["token"].as_str().unwrap()).await,
                "{name}"
            );
            // Every token is the one the secret holds: none minted and lost.
            let tokens = bed.tokens(ws, sa);
            assert_eq!(tokens.len(), 1, "{name}: {tokens:?}");
            assert_eq!(tokens[0].id, doc["tokenId"].as_str().unwrap());
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_appears_in_any_output_even_at_trace() {
    let bed = Bed::start(seed(vec![workspace(
        WS1,
        &[("terraform", &[("manual", 60, 20 * DAY)]), ("ci", &[])],
    )]))
    .await;
    let cfg = bed.config(&format!(
        "{}\n[log]\nformat = \"json\"\nlevel = \"trace\"\n",
        config_for(&[WS1], &["terraform", "ci"], &format!(
            "verify = true\ngrafana_url = {:?}\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"",
            bed.amg.grafana_url_template()
        ))
        .replace("[log]\nformat = \"text\"\n", "")
    ));
    let mut outputs = Vec::new();
    let mut keys = bed.all_keys();
    let first = bed.once(&cfg).await;
    assert_eq!(first.code, Some(0), "{}", first.all_output());
    assert!(first.stderr.contains("decided"), "trace logs are produced");
    assert!(first.stderr.contains("verified the new key"));
    outputs.push(first.all_output());
    keys.extend(bed.all_keys());

    // Force a rotation (and verification, promotion, grace deletion) on the next passes.
    let sa_id = bed.service_account_id(WS1, "ci");
    for t in bed.tokens(WS1, "ci") {
        bed.set_token_expiry(WS1, &sa_id, &t.id, now_epoch() + 60)
            .await;
    }
    outputs.push(bed.once(&cfg).await.all_output());
    keys.extend(bed.all_keys());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    outputs.push(bed.once(&cfg).await.all_output());
    outputs.push(bed.run(&cfg, &["plan"], &[]).await.all_output());
    outputs.push(
        bed.run(&cfg, &["plan", "--output", "json"], &[])
            .await
            .all_output(),
    );
    keys.extend(bed.all_keys());
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 4, "{} keys", keys.len());
    for out in &outputs {
        for key in &keys {
            assert!(!out.contains(key.as_str()), "a key leaked into the output");
            // Not even the random part on its own.
            assert!(
                !out.contains(&key[5..37]),
                "a key's secret part leaked into the output"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_changes_nothing_and_says_what_it_would_do() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config_for(&[WS1], &["terraform", "missing"], ""));
    let run = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        run.stdout.contains("create secret; rotate (first_run)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("service account does not exist"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.code,
        Some(1),
        "a missing service account is a problem to fix"
    );
    let json = bed.run(&cfg, &["plan", "--output", "json"], &[]).await;
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("plan --output json is JSON");
    let creds = v["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2);
    let tf = creds
        .iter()
        .find(|c| c["serviceAccount"] == "terraform")
        .unwrap();
    assert_eq!(tf["status"], "pending");
    assert_eq!(tf["plan"]["actions"][1]["action"], "rotate");
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
    assert!(bed.versions(&secret_name(WS1, "terraform")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_that_times_out_after_taking_effect_mints_one_token_and_leaks_none() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    // Every create answers after 1.5 s, long after the 500 ms attempt timeout, but takes effect.
    bed.amg.set_faults(Faults {
        operation_latency_ms: [("CreateWorkspaceServiceAccountToken".to_string(), 1500)].into(),
        ..Faults::default()
    });
    let cfg = bed.config(&config_for(
        &[WS1],
        &["terraform"],
        "orphan_margin = \"1s\"",
    ));
    let timeouts = [
        ("AMG_ROTATOR__AWS__ATTEMPT_TIMEOUT", "500ms"),
        ("AMG_ROTATOR__AWS__RETRY_BUDGET", "3s"),
    ];
    let run = bed.run(&cfg, &["once"], &timeouts).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    // Retried under the same name, so the lost attempts made one token, not one per attempt.
    let tokens = bed.tokens(WS1, "terraform");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(bed.count_calls("CreateWorkspaceServiceAccountToken") >= 2);

    // AMG healthy again: the token whose key was lost is swept, a new one is published.
    bed.amg.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let doc = bed
        .secret_json(&secret_name(WS1, "terraform"), "AWSCURRENT")
        .await;
    let tokens = bed.tokens(WS1, "terraform");
    assert_eq!(tokens.len(), 1, "the lost token is gone: {tokens:?}");
    assert_eq!(tokens[0].id, doc["tokenId"].as_str().unwrap());
    assert!(bed.key_works(WS1, doc["token"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_role_is_assumed_through_sts() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&format!(
        "{}role_arn = \"arn:aws:iam::123456789012:role/amg-token-rotator\"\n",
        config_for(&[WS1], &["terraform"], "")
    ));
    // STS unreachable: the credentials of the role cannot be had, so nothing is done.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let run = bed
        .run(
            &cfg,
            &["once"],
            &[("AWS_ENDPOINT_URL_STS", closed.as_str())],
        )
        .await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);

    // STS on moto: the role's credentials are used for both services.
    let sts = bed.moto.endpoint();
    let run = bed
        .run(&cfg, &["once"], &[("AWS_ENDPOINT_URL_STS", sts.as_str())])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(bed.versions(&secret_name(WS1, "terraform")).await.is_some());
}
