//! Secret hygiene (contract item 5): at TRACE level, JSON logs, over every path — first run,
//! rotation with verification and promotion, grace deletion, a publish failure (rollback), a
//! verification failure, a crash after AWSPENDING and its resumption (which reads the pending
//! key back), API keys (whose every pass reads the current key back to verify it), a 30%
//! error storm, the daemon under that storm, `plan` in table and JSON, and a panic — no key
//! appears in stdout, stderr, `/metrics` or `plan` output, and no secret JSON is logged.
//!
//! Keys are collected from the emulator's state after every step and from every version of
//! every secret; keys minted and deleted within one pass (rollbacks) never show in a state
//! snapshot, so the outputs are also scanned for anything shaped like a Grafana key.

mod reliability_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use amg_emulator::{Faults, Seed, WorkspaceSeed};
use reliability_support::{
    all_secret_values, leaks, metric_sum, once, run_bin, set_current_expiry, write_config, Cred,
    Exit, Served,
};
use support::{workspace, Bed};

const WS: &str = "g-1111111111";
const LEGACY: &str = "g-8888888888";

/// Every key the emulator holds now, and every key any secret version holds.
async fn known_keys(bed: &Bed) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = bed.all_keys().into_iter().collect();
    for value in all_secret_values(bed).await {
        match serde_json::from_str::<serde_json::Value>(&value) {
            Ok(doc) => keys.extend(doc["token"].as_str().map(str::to_owned)),
            Err(_) => {
                keys.insert(value);
            }
        }
    }
    keys
}

struct Collected {
    outputs: Vec<(String, String)>,
    keys: BTreeSet<String>,
}

impl Collected {
    async fn add(&mut self, bed: &Bed, label: &str, run: &Exit) {
        self.outputs
            .push((format!("{label}: stdout"), run.stdout.clone()));
        self.outputs
            .push((format!("{label}: stderr"), run.stderr.clone()));
        self.keys.extend(known_keys(bed).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_reaches_any_output_on_any_path_at_trace() {
    let bed = Bed::start(Seed {
        workspaces: vec![
            workspace(WS, &[("tf", &[]), ("ci", &[])]),
            WorkspaceSeed {
                id: LEGACY.into(),
                name: Some("legacy".into()),
                grafana_version: Some("10.4".into()),
                ..WorkspaceSeed::default()
            },
        ],
        ..Seed::default()
    })
    .await;
    let creds = [
        Cred::token(WS, "tf"),
        Cred::token(WS, "ci"),
        Cred::key(LEGACY, "legacy"),
    ];
    let text = |grafana_url: &str| {
        format!(
            "[daemon]\nconcurrency = 4\nschedule = \"*/2 * * * * *\"\n\n[log]\nformat = \"json\"\nlevel = \"trace\"\n\n\
             [aws]\nmax_attempts = 2\nretry_budget = \"2s\"\nattempt_timeout = \"2s\"\n\n\
             [defaults]\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\norphan_margin = \"1s\"\n\
             verify = true\ngrafana_url = {grafana_url:?}\n\n\
             [[targets]]\nworkspace_ids = [\"{WS}\"]\nservice_accounts = [\"tf\", \"ci\"]\n\n\
             [[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"ADMIN\"\n"
        )
    };
    let template = bed.amg.grafana_url_template();
    let cfg = write_config(&bed, "hygiene", &text(&template));
    // Verification against a workspace where no key is valid.
    let bad_verify = write_config(
        &bed,
        "hygiene-bad-verify",
        &text(&template.replace("{workspace_id}", "g-ffffffffff")),
    );
    let env = [("AMG_ROTATOR__AWS__RETRY_BUDGET", "2s")];
    let mut c = Collected {
        outputs: Vec::new(),
        keys: known_keys(&bed).await,
    };
    let plans = |label: &'static str| {
        let (bed, cfg) = (&bed, &cfg);
        async move {
            let table = run_bin(bed, cfg, &["plan"], &env, None, Duration::from_secs(60)).await;
            let json = run_bin(
                bed,
                cfg,
                &["plan", "--output", "json"],
                &env,
                None,
                Duration::from_secs(60),
            )
            .await;
            (label, table, json)
        }
    };

    // First run, then plans of a healthy state.
    let r = once(&bed, &cfg, &env).await;
    assert_eq!(r.code(), Some(0), "{}", r.all_output());
    c.add(&bed, "first run", &r).await;
    let (l, t, j) = plans("plan, healthy").await;
    c.add(&bed, l, &t).await;
    c.add(&bed, l, &j).await;

    // Rotation with verification and promotion; then the grace deletion.
    for cred in &creds {
        set_current_expiry(&bed, cred, 600).await;
    }
    let (l, t, j) = plans("plan, due").await;
    c.add(&bed, l, &t).await;
    c.add(&bed, l, &j).await;
    let r = once(&bed, &cfg, &env).await;
    assert_eq!(r.code(), Some(0), "{}", r.all_output());
    c.add(&bed, "rotation", &r).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = once(&bed, &cfg, &env).await;
    assert!(r.stdout.contains("superseded"), "{}", r.stdout);
    c.add(&bed, "grace deletion", &r).await;

    // A publish failure: the new token is deleted again within the pass.
    set_current_expiry(&bed, &creds[0], 600).await;
    bed.proxy
        .fail("PutSecretValue", u32::MAX, 400, "AccessDeniedException");
    let r = once(&bed, &cfg, &env).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    assert!(r.stdout.contains("PutSecretValue"), "{}", r.stdout);
    c.add(&bed, "publish failure", &r).await;
    bed.proxy.clear_faults();

    // A verification failure.
    let r = once(&bed, &bad_verify, &env).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    assert!(r.stdout.contains("verification"), "{}", r.stdout);
    c.add(&bed, "verification failure", &r).await;
    // The failure backs off: the next pass waits, then tries again (an hour later).
    let r = once(&bed, &cfg, &env).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    assert!(r.stdout.contains("next attempt at"), "{}", r.stdout);
    c.add(&bed, "verification backoff", &r).await;
    for cred in &creds {
        if bed.verification_record(&cred.secret).await.is_some() {
            bed.age_verification_record(&cred.secret, 3600).await;
        }
    }
    let r = once(&bed, &cfg, &env).await;
    assert_eq!(r.code(), Some(0), "{}", r.all_output());
    c.add(&bed, "recovery", &r).await;
    // tf rotated and proved its new token. (The API key's current key still worked, so it
    // minted nothing to prove: its record stays, past its backoff, until the next new key.)
    assert_eq!(
        bed.verification_record(&creds[0].secret).await,
        None,
        "a proven key clears the record"
    );

    // A crash after AWSPENDING, plans of the interrupted state, and the resumption (which
    // reads the pending key back to verify it).
    if cfg!(feature = "failpoints") {
        for (cred, point) in [
            (&creds[1], "after_pending"),
            (&creds[2], "after_key_pending"),
        ] {
            set_current_expiry(&bed, cred, 600).await;
            let r = reliability_support::once_crashing_at(&bed, &cfg, point).await;
            c.add(&bed, point, &r).await;
            let (l, t, j) = plans("plan, interrupted").await;
            c.add(&bed, l, &t).await;
            c.add(&bed, l, &j).await;
            let r = once(&bed, &cfg, &env).await;
            assert_eq!(r.code(), Some(0), "{}", r.all_output());
            assert!(r.stdout.contains("resume pending"), "{}", r.stdout);
            c.add(&bed, "resumption", &r).await;
        }
    }

    // A 30% error storm: retries, failures, rollbacks, at TRACE.
    bed.amg.set_faults(Faults {
        error_rate: 0.3,
        rng_seed: 11,
        retry_after_seconds: 0,
        ..Faults::default()
    });
    bed.proxy.set_error_rate(0.3, 13);
    for round in 0..2 {
        for cred in &creds {
            set_current_expiry(&bed, cred, 600).await;
        }
        let r = once(&bed, &cfg, &env).await;
        // The verbose levels are on: retries are DEBUG events.
        assert!(
            r.stderr.contains("\"level\":\"DEBUG\""),
            "no DEBUG event under a storm at TRACE:\n{}",
            r.stderr
        );
        c.add(&bed, &format!("storm {round}"), &r).await;
    }

    // The daemon under the storm: its logs and its /metrics.
    let mut daemon = Served::start(&bed, &cfg, &env).await;
    let scrape = daemon
        .metrics_until(Duration::from_secs(30), |m| {
            metric_sum(m, "amg_rotator_passes_total", &[]) >= 2.0
        })
        .await;
    assert!(scrape.contains("amg_rotator_aws_calls_total"), "{scrape}");
    c.outputs.push(("daemon: /metrics".into(), scrape));
    let (_, health) = (daemon.get("/healthz").await, daemon.get("/readyz").await);
    c.outputs
        .push(("daemon: /readyz".into(), health.unwrap_or_default()));
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
    c.outputs.push(("daemon: stderr".into(), daemon.logs()));
    c.keys.extend(known_keys(&bed).await);
    bed.amg.set_faults(Faults::default());
    bed.proxy.clear_faults();

    // A panic: stdout closed before the report is printed.
    let mut child = bed
        .command(&cfg, &["plan"], &[("RUST_BACKTRACE", "1"), env[0]])
        .spawn()
        .expect("the binary runs");
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the binary ends within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("panicked"),
        "a closed stdout should make the report's print! panic:\n{stderr}"
    );
    c.outputs.push(("panic: stderr".into(), stderr));

    let keys: Vec<String> = c.keys.into_iter().filter(|k| !k.is_empty()).collect();
    assert!(keys.len() >= 8, "only {} keys were issued", keys.len());
    // The scanner itself finds a key where there is one.
    assert!(!leaks("probe", &format!("x{}y", keys[0]), &keys).is_empty());
    let found: Vec<String> = c
        .outputs
        .iter()
        .flat_map(|(label, text)| leaks(label, text, &keys))
        .collect();
    let bytes: usize = c.outputs.iter().map(|(_, t)| t.len()).sum();
    println!(
        "hygiene: {} outputs ({bytes} bytes) scanned against {} keys: {} leaks",
        c.outputs.len(),
        keys.len(),
        found.len()
    );
    assert!(found.is_empty(), "keys leaked:\n{}", found.join("\n"));
}
