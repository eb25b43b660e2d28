//! The kill -9 soak: passes against an emulator with latency, each killed (SIGKILL) at a random
//! moment, each followed by a clean pass; the contract's invariants are checked after every one.
//!
//! Bounded: `AMG_SOAK_RUNS` runs (default 20, at most 200) and at most 150 s of runs. The
//! randomness is seeded; the seed is printed, and `AMG_SOAK_SEED=<seed>` replays a run (the
//! kill moments, not the scheduler's interleaving, are what the seed fixes).
//!
//! Prints `soak: runs=N kills=K violations=0` and fails on any violation.

mod reliability_support;
mod support;

use std::time::{Duration, Instant};

use amg_emulator::{Faults, Seed, WorkspaceSeed};
use reliability_support::{
    check_current, check_current_exists, check_none_unreferenced, last_seq, minted_since, once,
    run_bin, set_current_expiry, stage_json, unreferenced, write_config, Cred, AWSPENDING,
};
use support::{workspace, Bed};

const WS: &str = "g-1111111111";
const LEGACY: &str = "g-8888888888";
const ROTATE_BEFORE: i64 = 1800;
/// Latency of every AMG call: a pass takes long enough to be killed in the middle of anything.
const LATENCY_MS: u64 = 25;
const TIME_BUDGET: Duration = Duration::from_secs(150);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing() {
    let runs = env_u64("AMG_SOAK_RUNS").unwrap_or(20).clamp(1, 200);
    let seed = env_u64("AMG_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007
    });
    println!("soak: seed={seed} (replay with AMG_SOAK_SEED={seed}), runs={runs}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let accounts = ["soak-0", "soak-1", "soak-2", "soak-3"];
    let specs: Vec<support::AccountSpec<'_>> = accounts.iter().map(|a| (*a, &[][..])).collect();
    let bed = Bed::start(Seed {
        workspaces: vec![
            workspace(WS, &specs),
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
    let mut creds: Vec<Cred> = accounts.iter().map(|a| Cred::token(WS, a)).collect();
    creds.push(Cred::key(LEGACY, "legacy"));
    let defaults = format!(
        "token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\norphan_margin = \"1s\"\nverify = true\ngrafana_url = {:?}\n",
        bed.amg.grafana_url_template()
    );
    let cfg = write_config(
        &bed,
        "soak",
        &format!(
            "[daemon]\nconcurrency = 4\n\n[log]\nformat = \"text\"\n\n[defaults]\n{defaults}\n\
             [[targets]]\nworkspace_ids = [\"{WS}\"]\nservice_accounts = [\"soak-*\"]\n\n\
             [[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n"
        ),
    );
    bed.amg.set_faults(Faults {
        latency_ms: LATENCY_MS,
        ..Faults::default()
    });

    // The first pass, unkilled, sets every credential up; a second, with every credential due,
    // times the kind of pass the runs kill (a first run's work is not a rotation's).
    let first = once(&bed, &cfg, &[]).await;
    assert_eq!(first.code(), Some(0), "{}", first.all_output());
    for c in &creds {
        set_current_expiry(&bed, c, 600).await;
    }
    let timed = once(&bed, &cfg, &[]).await;
    assert_eq!(timed.code(), Some(0), "{}", timed.all_output());
    let pass_ms = timed.elapsed.as_millis() as u64;
    let window_ms = (pass_ms * 6 / 5).max(200);
    println!("soak: a rotating pass takes {pass_ms} ms; kills fall uniformly in 0..{window_ms} ms");

    let started = Instant::now();
    let mut violations: Vec<String> = Vec::new();
    let (mut done, mut kills, mut left_pending, mut left_orphans) = (0, 0, 0, 0);
    let mut clean_ms: Vec<u128> = Vec::new();
    for run in 1..=runs {
        if started.elapsed() > TIME_BUDGET {
            println!("soak: time budget reached after {done} runs");
            break;
        }
        // Most credentials fall due, so the killed pass has rotations to be killed in; the
        // others only have grace deletions or nothing.
        let mut due = Vec::new();
        for c in &creds {
            let is_due = rng.f64() < 0.75;
            if is_due {
                set_current_expiry(&bed, c, 600).await;
            }
            due.push(is_due);
        }
        let mark = last_seq(&bed);
        let delay = Duration::from_millis(rng.u64(0..=window_ms));
        let killed = run_bin(
            &bed,
            &cfg,
            &["once"],
            &[],
            Some(delay),
            Duration::from_secs(120),
        )
        .await;
        done += 1;
        let mut fail =
            |what: String| violations.push(format!("run {run} (kill at {delay:?}): {what}"));
        if killed.killed {
            kills += 1;
        } else if killed.code() != Some(0) {
            fail(format!("an unkilled pass failed:\n{}", killed.all_output()));
        }
        // In the crash window: AWSCURRENT never references a deleted token.
        for c in &creds {
            if let Err(e) = check_current_exists(&bed, c).await {
                fail(format!("in the crash window: {e}"));
            }
            if stage_json(&bed, &c.secret, AWSPENDING)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                left_pending += 1;
            }
            left_orphans += unreferenced(&bed, c).await.map(|v| v.len()).unwrap_or(0);
        }

        // Past orphan_margin and grace_period, so the clean pass may keep nothing unreferenced.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let clean = once(&bed, &cfg, &[]).await;
        clean_ms.push(clean.elapsed.as_millis());
        if clean.code() != Some(0) {
            fail(format!("the clean pass failed:\n{}", clean.all_output()));
        }
        for (c, is_due) in creds.iter().zip(&due) {
            if let Err(e) = check_current(&bed, c, ROTATE_BEFORE).await {
                fail(format!(
                    "after the clean pass: {e}\nkilled pass:\n{}\nclean pass:\n{}",
                    killed.all_output(),
                    clean.all_output()
                ));
            }
            if let Err(e) = check_none_unreferenced(&bed, c).await {
                fail(format!(
                    "after the clean pass: {e}\nkilled pass:\n{}\nclean pass:\n{}",
                    killed.all_output(),
                    clean.all_output()
                ));
            }
            let minted = minted_since(&bed, c, mark);
            let allowed = usize::from(*is_due) + 1;
            if minted > allowed {
                fail(format!(
                    "{}: {minted} tokens minted for one killed pass and its recovery (at most {allowed})",
                    c.secret
                ));
            }
        }
        if !violations.is_empty() {
            // One failing run is enough to report; the next would start from a broken state.
            break;
        }
    }

    clean_ms.sort();
    let median = clean_ms.get(clean_ms.len() / 2).copied().unwrap_or(0);
    println!(
        "soak: runs={done} kills={kills} completed={} violations={} (kills that left an AWSPENDING: {left_pending} credential(s); owned tokens left unreferenced: {left_orphans}; clean pass median {median} ms; {:.1} s)",
        done - kills,
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        violations.is_empty(),
        "soak seed {seed}: {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(done >= 10, "only {done} runs fit in the time budget");
    // The window is 1.2 times a pass where every credential is due, and a run's pass has three
    // in four due, so about 60% of the kills land before it ends (8 of 20 was seen once in CI
    // with the earlier bound of a half: a one-in-eight draw). A third still says the kills
    // reached the passes; fewer would be a soak that proved little.
    assert!(
        kills * 3 >= done,
        "only {kills} of {done} passes were killed before they finished: the soak proved little"
    );
    assert!(
        left_pending + left_orphans > 0,
        "no kill interrupted a rotation half done: the soak proved little"
    );
}
