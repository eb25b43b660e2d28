//! The README's first command, `scripts/demo`, as a newcomer reads it: it succeeds, the plan after
//! the first pass has nothing left to do, and the published secrets name the tokens the second
//! pass created (not the ones they held before it), with no key anywhere in the output.
//!
//! The AMG emulator runs in process with the demo's seed, so the test can read its state (keys
//! included); the demo starts moto itself and runs the binary under test. Only 127.0.0.1.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use amg_emulator::{Emulator, EmulatorConfig, Seed, StateSnapshot};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TIMEOUT: Duration = Duration::from_secs(240);
const DAY: i64 = 86_400;

/// Every key the emulator stores, tokens and API keys alike.
fn keys(state: &StateSnapshot) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for w in &state.workspaces {
        for sa in &w.service_accounts {
            keys.extend(sa.tokens.iter().map(|t| t.key.clone()));
        }
        keys.extend(w.api_keys.iter().map(|k| k.key.clone()));
    }
    keys
}

/// A token's expiry in epoch seconds, `None` for none (read through the state's JSON form).
fn expires_at(token: &amg_emulator::Token) -> Option<i64> {
    serde_json::to_value(token).unwrap()["expiresAt"].as_i64()
}

/// The lines of the section whose `== ` header starts with `header`, up to the next header.
fn section<'a>(output: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = output.lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "no section {header:?} in the demo's output:\n{output}"
    );
    lines.take_while(|l| !l.starts_with("== ")).collect()
}

/// The "published secrets" section: secret name → field → value.
fn published(output: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut secrets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = None;
    for line in section(output, "== the published secrets") {
        if line.trim().is_empty() {
            current = None;
        } else if let Some(field) = line.strip_prefix("    ") {
            let (key, value) = field.split_once(' ').unwrap_or((field, ""));
            let name: &String = current
                .as_ref()
                .unwrap_or_else(|| panic!("a field outside a secret: {line:?}\n{output}"));
            secrets
                .get_mut(name)
                .unwrap()
                .insert(key.to_owned(), value.trim().to_owned());
        } else if !line.starts_with("demo:") {
            secrets.insert(line.to_owned(), BTreeMap::new());
            current = Some(line.to_owned());
        }
    }
    secrets
}

/// Runs `scripts/demo` against `amg` with the binary under test, in its own process group,
/// killed with everything it started when it outlives `TIMEOUT`.
async fn run_demo(amg: &Emulator, home: &Path) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(Path::new(ROOT).join("scripts/demo"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AMG_DEMO_ENDPOINT", amg.endpoint())
        .env("AMG_DEMO_ROTATOR", env!("CARGO_BIN_EXE_amg-token-rotator"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("scripts/demo runs");
    let pgid = child.id().expect("running");
    match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text)
        }
        Err(_) => {
            // moto's server and the rotator are in the demo's process group.
            let _ = std::process::Command::new("sh")
                .args(["-c", &format!("kill -9 -{pgid}")])
                .status();
            panic!("scripts/demo did not finish within {TIMEOUT:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_publishes_the_new_tokens_and_shows_no_key() {
    // The demo uses the project's .venv (moto's server, boto3); support creates it if missing.
    support::moto_server_path();
    assert!(
        Path::new(ROOT).join(".venv/bin/moto_server").exists(),
        "the demo needs .venv: run scripts/setup"
    );
    let seed = Seed::from_file(Path::new(ROOT).join("config/demo-seed.json")).expect("demo seed");
    let amg = Emulator::start(EmulatorConfig::new().with_seed(seed))
        .await
        .expect("emulator starts");
    let mut all_keys = keys(&amg.state());
    let home = tempfile::tempdir().unwrap();

    let (code, output) = run_demo(&amg, home.path()).await;
    let now = chrono::Utc::now().timestamp();
    let state = amg.state();
    all_keys.extend(keys(&state));

    assert_eq!(code, Some(0), "scripts/demo failed:\n{output}");

    // No key, at any step: every key the emulator held at the start or holds now.
    assert!(all_keys.len() >= 8, "{all_keys:?}");
    for key in &all_keys {
        assert!(
            !output.contains(key.as_str()),
            "the demo's output shows a key:\n{output}"
        );
    }

    // The demo's configuration manages every service account of its seed: one secret each.
    let secrets = published(&output);
    let accounts: BTreeSet<(String, String)> = state
        .workspaces
        .iter()
        .flat_map(|w| {
            w.service_accounts
                .iter()
                .map(|sa| (w.id.clone(), sa.name.clone()))
        })
        .collect();
    let shown: BTreeSet<(String, String)> = secrets
        .values()
        .map(|f| (f["workspaceId"].clone(), f["serviceAccountName"].clone()))
        .collect();
    assert_eq!(shown, accounts, "published secrets:\n{output}");

    for (name, fields) in &secrets {
        let sa = state
            .workspaces
            .iter()
            .find(|w| w.id == fields["workspaceId"])
            .and_then(|w| {
                w.service_accounts
                    .iter()
                    .find(|s| s.name == fields["serviceAccountName"])
            })
            .unwrap();
        // Token IDs grow: the newest token is the one the second `once` created.
        let newest = sa
            .tokens
            .iter()
            .max_by_key(|t| t.id.parse::<u64>().expect("numeric token ID"))
            .unwrap_or_else(|| panic!("{name}: the service account holds no token"));
        assert_eq!(
            (&fields["tokenName"], &fields["tokenId"]),
            (&newest.name, &newest.id),
            "{name}: the published token is not the newest the emulator holds:\n{output}"
        );
        assert!(
            expires_at(newest).is_some_and(|at| at > now + 20 * DAY),
            "{name}: the published token is not a fresh one: {newest:?}"
        );
        // What AWSCURRENT held before the second `once`: the token the demo aged to 2 days
        // before expiry, kept for its grace period, and not the one published now.
        let before = &fields["replaced"];
        assert_ne!(
            before, &fields["tokenName"],
            "{name}: still the token of before the rotation:\n{output}"
        );
        let old = sa
            .tokens
            .iter()
            .find(|t| &t.name == before)
            .unwrap_or_else(|| {
                panic!("{name}: the replaced token {before} is gone before its grace period")
            });
        assert!(
            expires_at(old).is_some_and(|at| at <= now + 2 * DAY + 60),
            "{name}: the replaced token {before} is not the one the demo aged: {old:?}"
        );
    }

    // After the first `once`, the plan has nothing left to do for any credential.
    let plan = section(&output, "== amg-token-rotator plan   (after");
    let rows: Vec<&str> = plan
        .iter()
        .copied()
        .filter(|l| secrets.keys().any(|n| l.contains(n.as_str())))
        .collect();
    assert_eq!(rows.len(), secrets.len(), "plan after once:\n{output}");
    for row in rows {
        assert!(
            row.trim_end().ends_with("nothing to do"),
            "the plan after once still has work: {row}\n{output}"
        );
    }
}
