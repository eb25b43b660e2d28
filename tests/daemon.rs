//! End-to-end: `amg-token-rotator run`, the real binary, against the AMG emulator and Secrets
//! Manager on moto. What an operator relies on: the probes say the truth, SIGTERM leaves no
//! rotation half done and exits 0 within the shutdown timeout, SIGHUP applies a good
//! configuration and refuses a bad one, passes never overlap, systemd hears READY, WATCHDOG and
//! STOPPING, and the scrape is clean, documented, and has every metric the dashboard and the
//! alerts query.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amg_emulator::{Faults, Seed};
use support::{eventually, promql_metric_names, promtool, workspace, Bed, Daemon, Scrape};

const WS1: &str = "g-1111111111";
const DAY: i64 = 86_400;
/// A schedule that does not fire while a test runs: only the pass at start happens.
const NEVER: &str = "0 0 0 1 1 *";

fn seed(workspaces: Vec<amg_emulator::WorkspaceSeed>) -> Seed {
    Seed {
        workspaces,
        ..Seed::default()
    }
}

fn secret_name(sa: &str) -> String {
    format!("amg-token-rotator/{WS1}/{sa}")
}

/// A configuration for `WS1` with JSON logs (the tests read them), `[daemon]` lines and
/// `[defaults]` lines.
fn config(accounts: &[&str], daemon: &str, defaults: &str) -> String {
    let sa = accounts
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[daemon]\n{daemon}\n\n[log]\nformat = \"json\"\n\n[defaults]\n{defaults}\n\n\
         [[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [{sa}]\n"
    )
}

fn latency(operation: &str, ms: u64) -> Faults {
    Faults {
        operation_latency_ms: [(operation.to_owned(), ms)].into(),
        ..Faults::default()
    }
}

fn passes(s: &Scrape) -> f64 {
    s.sum("amg_rotator_passes_total", &[])
}

/// The secret's AWSCURRENT holds a working key of a token that exists, and no AWSPENDING is
/// left. Returns the token ID.
async fn assert_converged(bed: &Bed, sa: &str) -> String {
    let name = secret_name(sa);
    let versions = bed
        .versions(&name)
        .await
        .unwrap_or_else(|| panic!("{name} exists"));
    assert!(
        !versions.values().flatten().any(|s| s == "AWSPENDING"),
        "{name}: AWSPENDING left: {versions:?}"
    );
    let doc = bed.secret_json(&name, "AWSCURRENT").await;
    assert!(
        bed.key_works(WS1, doc["token"].as_str().unwrap()).await,
        "{name}: the AWSCURRENT key is rejected"
    );
    let id = doc["tokenId"].as_str().unwrap().to_owned();
    assert!(
        bed.tokens(WS1, sa).iter().any(|t| t.id == id),
        "{name}: its token {id} does not exist"
    );
    id
}

/// Collects what the daemon sends to a NOTIFY_SOCKET.
struct NotifySocket {
    path: String,
    got: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket {
            path: path.display().to_string(),
            got,
            _dir: dir,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self, msg: &str) -> usize {
        self.messages().iter().filter(|m| *m == msg).count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_tell_the_truth_and_systemd_hears_ready_watchdog_and_stopping() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    // A first pass that takes at least 1.5 s, so readiness can be seen before it finishes.
    bed.amg.set_faults(latency("DescribeWorkspace", 1500));
    let cfg = bed.config(&config(
        &["terraform"],
        &format!("schedule = {NEVER:?}"),
        "",
    ));
    let notify = NotifySocket::bind();
    // WATCHDOG=1 is due every 150 ms (half of 300 ms).
    let mut d = bed
        .daemon(
            &cfg,
            &[
                ("NOTIFY_SOCKET", notify.path.as_str()),
                ("WATCHDOG_USEC", "300000"),
            ],
        )
        .await;

    let (status, body) = d.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "ready before any pass finished: {body}");
    assert!(body.contains("no pass has finished yet"), "{body}");
    let healthy = eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { d.get("/healthz").await.filter(|(s, _)| *s == 200) },
    )
    .await;
    assert_eq!(healthy.map(|(_, b)| b), Some("ok\n".to_owned()));
    assert_eq!(d.get("/nope").await.unwrap().0, 404);
    let readied = eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (notify.count("READY=1") == 1).then_some(()) },
    )
    .await;
    assert!(readied.is_some(), "{:?}", notify.messages());

    let ready = eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { d.get("/readyz").await.filter(|(s, _)| *s == 200) },
    )
    .await;
    let (_, body) = ready.unwrap_or_else(|| panic!("never ready:\n{}", d.logs()));
    assert!(body.starts_with("ready: last good pass ended"), "{body}");
    let s = d.scrape().await;
    assert_eq!(
        s.value("amg_rotator_passes_total", &[("outcome", "success")]),
        Some(1.0)
    );
    assert_eq!(s.value("amg_rotator_pass_in_progress", &[]), Some(0.0));
    assert_converged(&bed, "terraform").await;

    // The watchdog keeps petting while the daemon idles.
    let before = notify.count("WATCHDOG=1");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pets = notify.count("WATCHDOG=1") - before;
    assert!(
        (3..=8).contains(&pets),
        "{pets} WATCHDOG=1 in 800 ms at a 150 ms period"
    );
    assert!(notify.count("STOPPING=1") == 0);

    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).await, Ok(Some(0)));
    // The datagrams sent before the exit may still wait in the socket for the reader task (a
    // loaded machine delays it): wait, bounded, for the stop's.
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (notify.count("STOPPING=1") > 0).then_some(()) },
    )
    .await;
    let got = notify.messages();
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert_eq!(notify.count("READY=1"), 1, "{got:?}");
    assert_eq!(notify.count("STOPPING=1"), 1, "{got:?}");
    let stopping = got.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(
        got[stopping + 1..].iter().all(|m| m == "WATCHDOG=1"),
        "{got:?}"
    );
    assert!(d.logs().contains("daemon stopped"), "{}", d.logs());
}

/// A client that opens many connections and sends nothing (a flood, a port scanner, a broken
/// prober) cannot hold the listener the health probes depend on: past the cap the oldest are
/// closed, and `/healthz` still answers.
#[tokio::test(flavor = "multi_thread")]
async fn many_idle_connections_do_not_lock_out_the_health_probe() {
    use tokio::io::AsyncReadExt;
    const IDLE: usize = 100;
    /// The daemon's cap (README "HTTP endpoints").
    const CAP: usize = 64;
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config(
        &["terraform"],
        &format!("schedule = {NEVER:?}"),
        "",
    ));
    let mut d = bed.daemon(&cfg, &[]).await;
    let addr = format!("127.0.0.1:{}", d.port);
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A new connection, as a prober's: the test client's pooled one was opened first, so it
    // is among the oldest the daemon closes.
    assert_eq!(d.get_fresh("/healthz").await.map(|(s, _)| s), Some(200));
    // Each idle connection is either closed by the daemon within 3 s or still open then.
    let closed = futures::future::join_all(idle.iter_mut().map(|c| async move {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }))
    .await;
    let still_open = closed.iter().filter(|c| !**c).count();
    assert!(
        still_open <= CAP,
        "{still_open} of {IDLE} idle connections still open"
    );
    assert!(closed[0], "the oldest idle connection was kept");
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).await, Ok(Some(0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_systemd_the_daemon_runs_and_stops_the_same() {
    // No NOTIFY_SOCKET: every notification is a no-op, and nothing complains.
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config(
        &["terraform"],
        &format!("schedule = {NEVER:?}"),
        "",
    ));
    let mut d = bed.daemon(&cfg, &[("WATCHDOG_USEC", "200000")]).await;
    d.scrape_until(Duration::from_secs(20), |s| passes(s) >= 1.0)
        .await;
    d.signal("INT");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).await, Ok(Some(0)));
    assert!(
        !d.logs().contains("could not notify systemd"),
        "{}",
        d.logs()
    );
    assert_converged(&bed, "terraform").await;
}

/// `once` (a systemd timer's service, a CronJob's pod, an ECS task being stopped) stops on
/// SIGTERM through the same shutdown path as `run`: the credential in hand is carried through,
/// the others are not started and are reported as skipped.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_once_after_the_credential_in_hand() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("alpha", &[]), ("beta", &[])])])).await;
    bed.amg
        .set_faults(latency("CreateWorkspaceServiceAccountToken", 2000));
    let cfg = bed.config(&config(&["alpha", "beta"], "concurrency = 1", ""));
    let child = bed.command(&cfg, &["once"], &[]).spawn().unwrap();
    let pid = child.id().expect("running");
    let creating = eventually(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (bed.count_calls("CreateWorkspaceServiceAccountToken") == 1).then_some(()) },
    )
    .await;
    assert!(creating.is_some(), "no token creation");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("once ends within 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("skipped: shutting down"), "{stdout}");
    assert!(
        stderr.contains("stopping after the credentials in hand"),
        "{stderr}"
    );
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 1);
    let mut published = Vec::new();
    for sa in ["alpha", "beta"] {
        if bed.versions(&secret_name(sa)).await.is_some() {
            published.push(sa);
        }
    }
    assert_eq!(published.len(), 1, "{published:?}\n{stdout}");
    assert_converged(&bed, published[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_credential_in_hand_finish_and_starts_no_other() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("alpha", &[]), ("beta", &[])])])).await;
    // One credential at a time, each token creation answered after 2 s.
    bed.amg
        .set_faults(latency("CreateWorkspaceServiceAccountToken", 2000));
    let cfg = bed.config(&config(
        &["alpha", "beta"],
        &format!("schedule = {NEVER:?}\nconcurrency = 1\nshutdown_timeout = \"30s\""),
        "",
    ));
    let notify = NotifySocket::bind();
    let mut d = bed
        .daemon(&cfg, &[("NOTIFY_SOCKET", notify.path.as_str())])
        .await;
    let creating = eventually(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (bed.count_calls("CreateWorkspaceServiceAccountToken") == 1).then_some(()) },
    )
    .await;
    assert!(creating.is_some(), "no token creation:\n{}", d.logs());

    let asked = Instant::now();
    d.signal("TERM");
    // systemd hears STOPPING=1 when the drain begins, not when it ends.
    let stopping = eventually(
        Duration::from_secs(1),
        Duration::from_millis(10),
        || async { (notify.count("STOPPING=1") == 1).then_some(()) },
    )
    .await;
    assert!(stopping.is_some(), "{:?}", notify.messages());
    assert!(
        d.is_running(),
        "the drain was over in {:?}",
        asked.elapsed()
    );
    assert_eq!(d.wait_exit(Duration::from_secs(35)).await, Ok(Some(0)));
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");
    assert!(
        !d.events_with("stopping after the credentials in hand")
            .is_empty(),
        "{}",
        d.logs()
    );
    assert!(
        d.events_with("shutdown timeout reached").is_empty(),
        "{}",
        d.logs()
    );

    // The credential in hand was carried through to AWSCURRENT; the other was never started.
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 1);
    let mut published = Vec::new();
    for sa in ["alpha", "beta"] {
        if bed.versions(&secret_name(sa)).await.is_some() {
            published.push(sa);
        } else {
            assert!(bed.tokens(WS1, sa).is_empty(), "{sa}: a token was made");
        }
    }
    assert_eq!(published.len(), 1, "{published:?}");
    let finished = published[0];
    let token = assert_converged(&bed, finished).await;
    assert_eq!(bed.tokens(WS1, finished).len(), 1);

    // A clean pass afterwards converges both, leaving the finished one as it was.
    bed.amg.set_faults(Faults::default());
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert_eq!(assert_converged(&bed, finished).await, token);
    for sa in ["alpha", "beta"] {
        assert_converged(&bed, sa).await;
        assert_eq!(bed.tokens(WS1, sa).len(), 1, "{sa}: a token leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shutdown_timeout_bounds_the_drain_and_the_pending_version_is_resumed() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    let cfg = bed.config(&config(
        &["terraform"],
        &format!("schedule = {NEVER:?}\nshutdown_timeout = \"1s\""),
        "token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"10m\"",
    ));
    let name = secret_name("terraform");
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let first = bed.secret_json(&name, "AWSCURRENT").await;
    let sa_id = bed.service_account_id(WS1, "terraform");
    // Due: the daemon's pass at start rotates. Its promotion to AWSCURRENT hangs.
    assert!(
        bed.set_token_expiry(
            WS1,
            &sa_id,
            first["tokenId"].as_str().unwrap(),
            chrono::Utc::now().timestamp() + 600
        )
        .await
    );
    bed.proxy
        .stall("UpdateSecretVersionStage", Duration::from_secs(30));
    // The `once` above promoted too: count only the daemon's calls.
    bed.proxy.clear_calls();
    let mut d = bed.daemon(&cfg, &[]).await;
    let promoting = eventually(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            bed.proxy
                .calls()
                .iter()
                .any(|c| c == "UpdateSecretVersionStage")
                .then_some(())
        },
    )
    .await;
    assert!(promoting.is_some(), "no promotion:\n{}", d.logs());

    let asked = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).await, Ok(Some(0)));
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "a 1 s shutdown timeout, stopped after {took:?}"
    );
    assert!(
        !d.events_with("shutdown timeout reached").is_empty(),
        "{}",
        d.logs()
    );

    // Cut short after publishing: AWSCURRENT still holds the old, valid key; the new token
    // waits as AWSPENDING, accounted for.
    let current = bed.secret_json(&name, "AWSCURRENT").await;
    assert_eq!(current["tokenId"], first["tokenId"]);
    assert!(bed.key_works(WS1, current["token"].as_str().unwrap()).await);
    let pending = bed.secret_json(&name, "AWSPENDING").await;
    assert_ne!(pending["tokenId"], first["tokenId"]);
    assert_eq!(bed.tokens(WS1, "terraform").len(), 2);

    // The next pass resumes it without minting another.
    bed.proxy.clear_faults();
    bed.amg.clear_calls();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(run.stdout.contains("resume pending"), "{}", run.stdout);
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
    assert_eq!(
        assert_converged(&bed, "terraform").await,
        pending["tokenId"]
    );
    assert_eq!(
        bed.secret_json(&name, "AWSPREVIOUS").await["tokenId"],
        first["tokenId"]
    );
    let mut ids: Vec<String> = bed
        .tokens(WS1, "terraform")
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    let mut want = vec![
        first["tokenId"].as_str().unwrap().to_owned(),
        pending["tokenId"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(
        ids, want,
        "only the current and the previous token (in grace)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_valid_configuration_and_refuses_an_invalid_one() {
    let bed = Bed::start(seed(vec![workspace(
        WS1,
        &[("alpha", &[]), ("beta", &[]), ("gamma", &[])],
    )]))
    .await;
    let cfg = bed.config(&config(&["alpha"], &format!("schedule = {NEVER:?}"), ""));
    let mut d = bed.daemon(&cfg, &[]).await;
    d.scrape_until(Duration::from_secs(20), |s| passes(s) >= 1.0)
        .await;
    assert_converged(&bed, "alpha").await;
    assert!(bed.versions(&secret_name("beta")).await.is_none());

    // Valid: a new target and a schedule that fires every second.
    bed.config(&config(
        &["alpha", "beta"],
        "schedule = \"* * * * * *\"",
        "",
    ));
    d.signal("HUP");
    let reloaded = d
        .wait_for_event("configuration reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(reloaded["targets"], 1);
    // The rotation counter moves once the new token is promoted and AWSPENDING dropped.
    d.scrape_until(Duration::from_secs(15), |s| {
        s.value(
            "amg_rotator_rotations_total",
            &[("service_account", "beta"), ("outcome", "success")],
        ) == Some(1.0)
    })
    .await;
    assert_converged(&bed, "beta").await;

    // Invalid: refused with the key named; the running configuration stays.
    bed.config(&config(
        &["alpha", "beta", "gamma"],
        "schedule = \"* * * * * *\"\nconcurrency = 0",
        "",
    ));
    d.signal("HUP");
    let refused = d
        .wait_for_event("configuration refused on reload", Duration::from_secs(10))
        .await;
    assert_eq!(refused["key"], "daemon.concurrency", "{refused}");
    assert_eq!(refused["level"], "ERROR");
    let after = passes(&d.scrape().await);
    d.scrape_until(Duration::from_secs(15), |s| passes(s) >= after + 2.0)
        .await;
    assert!(
        bed.versions(&secret_name("gamma")).await.is_none(),
        "the refused configuration was applied"
    );
    assert!(bed.tokens(WS1, "gamma").is_empty());
    assert_eq!(d.get("/healthz").await.unwrap().0, 200);
    assert_eq!(d.get("/readyz").await.unwrap().0, 200);

    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(15)).await, Ok(Some(0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_never_overlap_and_late_ones_are_counted() {
    let bed = Bed::start(seed(vec![workspace(WS1, &[("terraform", &[])])])).await;
    // Every pass takes over 2.5 s; the schedule asks for one every second.
    const SLOW_MS: i64 = 2500;
    bed.amg
        .set_faults(latency("ListWorkspaceServiceAccountTokens", SLOW_MS as u64));
    let cfg = bed.config(&config(&["terraform"], "schedule = \"* * * * * *\"", ""));
    let mut d = bed.daemon(&cfg, &[]).await;
    let s = d
        .scrape_until(Duration::from_secs(30), |s| passes(s) >= 2.0)
        .await;
    let delayed = s.value("amg_rotator_passes_delayed_total", &[]).unwrap();
    assert!(
        delayed >= 2.0,
        "{delayed} delayed passes after two slow ones"
    );
    assert!(
        !d.events_with("while the previous one still runs")
            .is_empty(),
        "{}",
        d.logs()
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(15)).await, Ok(Some(0)));

    // A pass opens with DescribeWorkspace and holds each ListWorkspaceServiceAccountTokens for
    // 2.5 s (a pass that rotates lists twice: to plan, and for AMG's times of the new token):
    // passes that never overlap follow one another, each opening after the previous one's last
    // slow call was answered.
    let calls: Vec<_> = bed
        .amg
        .calls()
        .into_iter()
        .filter(|c| {
            c.operation == "DescribeWorkspace" || c.operation == "ListWorkspaceServiceAccountTokens"
        })
        .collect();
    let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    assert!(ops.len() >= 4, "{ops:?}");
    assert_eq!(ops[0], "DescribeWorkspace", "{ops:?}");
    let mut passes_seen = Vec::new();
    for c in &calls {
        if c.operation == "DescribeWorkspace" {
            passes_seen.push(Vec::new());
        }
        passes_seen.last_mut().expect("opened").push(c);
    }
    assert!(passes_seen.len() >= 2, "{ops:?}");
    for (i, pass) in passes_seen.iter().enumerate() {
        if i + 1 < passes_seen.len() {
            assert!(pass.len() >= 2, "pass {i} made no listing: {ops:?}");
        }
    }
    for w in passes_seen.windows(2) {
        let last_slow = w[0].last().expect("non-empty");
        let gap = w[1][0].time_ms - last_slow.time_ms;
        assert!(
            gap >= SLOW_MS - 100,
            "a pass began {gap} ms after the previous one's slow call: {ops:?}"
        );
    }
}

/// A daemon after a first pass that rotated, deleted an expired token of its own and found a
/// service account missing: counters of every kind have series.
async fn scrape_after_a_rotating_pass() -> (Bed, Daemon, Scrape) {
    let bed = Bed::start(seed(vec![workspace(
        WS1,
        &[(
            "terraform",
            &[("amgrot-terraform-20250101T000000Z", 40 * DAY, -DAY)],
        )],
    )]))
    .await;
    let cfg = bed.config(&config(
        &["terraform", "missing"],
        &format!("schedule = {NEVER:?}"),
        "",
    ));
    let d = bed.daemon(&cfg, &[]).await;
    let s = d
        .scrape_until(Duration::from_secs(20), |s| passes(s) >= 1.0)
        .await;
    (bed, d, s)
}

/// The `expr:` values of a Prometheus rules file (plain or block scalars).
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        if !line[..at].trim().is_empty() && line[..at].trim() != "-" {
            continue;
        }
        let value = line[at + 5..].trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = |l: &str| l.len() - l.trim_start().len();
            let base = indent(line);
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > base)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_passes_promtool_and_names_every_documented_metric() {
    let (_bed, d, s) = scrape_after_a_rotating_pass().await;
    let check = promtool(&["check", "metrics"], Some(&s.text)).await;
    assert_eq!(check.code, Some(0), "promtool: {}", check.all_output());
    assert_eq!(
        check.all_output().trim(),
        "",
        "promtool has findings:\n{}",
        check.all_output()
    );

    let documented = support::readme_metrics();
    let scraped: BTreeSet<&String> = s.families.keys().collect();
    assert_eq!(
        scraped,
        documented.keys().collect::<BTreeSet<_>>(),
        "the scrape's families and the README's table differ"
    );
    for (name, (kind, _)) in &documented {
        assert_eq!(&s.families[name], kind, "{name}: type");
    }

    // What the pass did is visible in concrete values.
    let tf = [("workspace", WS1), ("service_account", "terraform")];
    assert_eq!(
        s.value(
            "amg_rotator_rotations_total",
            &[
                tf[0],
                tf[1],
                ("outcome", "success"),
                ("reason", "first_run")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "amg_rotator_token_deletions_total",
            &[
                tf[0],
                tf[1],
                ("reason", "expired_owned"),
                ("outcome", "success")
            ]
        ),
        Some(1.0)
    );
    let expiry = s
        .value("amg_rotator_credential_expiry_timestamp_seconds", &tf)
        .unwrap();
    let left = expiry - chrono::Utc::now().timestamp() as f64;
    assert!(
        (29.9 * DAY as f64..=30.0 * DAY as f64 + 5.0).contains(&left),
        "{left}"
    );
    assert_eq!(s.value("amg_rotator_credential_healthy", &tf), Some(1.0));
    assert!(s
        .value(
            "amg_rotator_service_account_tokens",
            &[tf[0], tf[1], ("state", "active")]
        )
        .is_some());
    assert_eq!(
        s.value(
            "amg_rotator_service_account_tokens",
            &[tf[0], tf[1], ("state", "expired")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "amg_rotator_credential_failures_total",
            &[("service_account", "missing"), ("stage", "plan")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value("amg_rotator_passes_total", &[("outcome", "partial")]),
        Some(1.0)
    );
    assert!(
        s.sum(
            "amg_rotator_aws_calls_total",
            &[
                ("service", "grafana"),
                ("operation", "CreateWorkspaceServiceAccountToken"),
                ("outcome", "success")
            ]
        ) == 1.0
    );
    assert!(
        s.sum(
            "amg_rotator_aws_call_duration_seconds_count",
            &[("service", "secretsmanager")]
        ) >= 3.0
    );
    assert_eq!(
        s.value(
            "amg_rotator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // No key anywhere in the scrape.
    for key in _bed.all_keys() {
        assert!(!s.text.contains(&key));
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_query_is_in_a_live_scrape() {
    let (_bed, _d, s) = scrape_after_a_rotating_pass().await;
    // The extractor itself, on a known expression.
    assert_eq!(
        promql_metric_names(
            "histogram_quantile(0.95, sum by (le, service) (rate(a_seconds_bucket{x=\"y\"}[$__rate_interval]))) > on (service) group_left b_total offset 5m"
        ),
        ["a_seconds_bucket", "b_total"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    // Series that exist only in a state this pass does not reach: declared in every scrape,
    // and their values are asserted by the in-process scenarios (src/credential/scenarios.rs)
    // and, for the alert, by promtool's rule tests.
    const SITUATIONAL: &[&str] = &[
        // A superseded token its consumers still use after the promotion.
        "amg_rotator_superseded_token_last_used_timestamp_seconds",
    ];
    let exists = |name: &str| {
        s.has_samples(name)
            || (SITUATIONAL.contains(&name) && s.text.contains(&format!("# TYPE {name} ")))
    };
    // Only the rotator's own families can be in its scrape. The others are what carries a
    // one-shot run's metrics: the Pushgateway's push_time_seconds and push_failure_time_seconds,
    // node_exporter's node_textfile_mtime_seconds and node_textfile_scrape_error (and
    // Prometheus's up); the tests of those exporters and promtool's rule tests cover them.
    let ours = |name: &&String| name.starts_with("amg_rotator_");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/dashboard.json"
        ))
        .unwrap(),
    )
    .expect("dashboard.json is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            if let Some(inner) = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
            {
                exprs.push(inner.0.to_owned());
            }
        }
    }
    let mut names = BTreeSet::new();
    for e in &exprs {
        names.extend(promql_metric_names(e));
    }
    assert!(names.len() >= 8, "{names:?}");
    let missing: Vec<_> = names.iter().filter(ours).filter(|n| !exists(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the daemon does not export: {missing:?}"
    );

    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let exprs = rule_expressions(&rules);
    assert_eq!(exprs.len(), 7, "{exprs:?}");
    let names: BTreeSet<String> = exprs.iter().flat_map(|e| promql_metric_names(e)).collect();
    let missing: Vec<_> = names.iter().filter(ours).filter(|n| !exists(n)).collect();
    assert!(
        missing.is_empty(),
        "the alerts query metrics the daemon does not export: {missing:?}"
    );
}
