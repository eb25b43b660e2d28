//! The pass benchmark (issue 8; method and figures in docs/PERFORMANCE.md). Run it with
//! `scripts/bench [--workspaces N] [--accounts M] [--latency-ms L] [--rps R] ...`.
//!
//! It seeds the AMG emulator (in this process, on 127.0.0.1) with N workspaces × M service
//! accounts and a per-call latency, starts Secrets Manager on moto (a real process on 127.0.0.1,
//! whose own latency counts) behind the logging proxy of the test bed, and runs the release
//! binary as a user would:
//!
//! - `latency`: a first pass (everything minted) and a steady pass, at the configured concurrency
//!   and at concurrency 1 (the sequential baseline: the same engine), each on a fresh bed, with
//!   the client-side rate limits lifted so the figure is the engine's; wall time, calls by
//!   operation, peak RSS, and the ratios;
//! - `cap`: the same passes against an emulator that throttles past R requests a second, with
//!   the rotator's AMG rate set to R, then to 0.95 R: pass time against AMG calls ÷ R, and
//!   throttled answers;
//! - `daemon`: `run` on a minted fleet at the production rates: peak RSS through its start pass,
//!   idle RSS, and the context switches of every thread over an idle window between passes;
//! - `scopes`: the same load per scope in one region and in S regions at the production rates:
//!   a first, a second and a typical pass each (its audits moved on one schedule period), and
//!   the S scopes' time against one scope's;
//! - `economy`: the rotator at its defaults (AMG at 10 requests/s, `DEFAULT_AUDIT_INTERVAL`)
//!   through a first and a second pass (whichever writes the audit records), the pass right
//!   after them (the floor: almost no audit due), then, by name and by pattern, 12 typical
//!   passes, each after the audit records were moved on one 5-minute schedule period
//!   (`Bed::advance_audits`), so each carries the audits a pass at the default schedule does;
//!   against the same fleet run as a sequential script runs it (one credential at a time, no
//!   client-side limit, every credential's tokens listed on every pass): calls and wall time
//!   per pass, audits carried against those expected, the ratios from the typical passes' mean,
//!   and a day at a 5-minute schedule as 288 typical passes;
//! - `economy-daemon`: `run` at the same defaults over the fleet by pattern, on a 10-second
//!   schedule, its records written by two `once` passes: its start pass and 12 passes each after
//!   the records were moved on one period: seconds and calls per pass, service-account
//!   listings per pass (what the daemon keeps between passes shows there), and the ratio of
//!   their mean to the peer's steady pass;
//! - `scale` (only when asked for): 200, 2,000 and 10,000 credentials with the rate limits
//!   lifted: a first pass, a second, one that audits every credential (the records moved on a
//!   whole interval) and a typical one: wall time, calls and peak RSS, and RSS per credential.
//!
//! Every loop is bounded in count and time; nothing leaves 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use amg_emulator::{Faults, Role, Seed, ServiceAccountSeed, WorkspaceSeed};
use support::Bed;

const USAGE: &str = "\
usage: scripts/bench [options]
  --workspaces N     workspaces in the emulator (default 40)
  --accounts M       managed service accounts per workspace (default 5)
  --latency-ms L     latency the emulator adds to every AMG call (default 50)
  --rps R            the AMG request cap of the `cap` scenario, run with the rotator's AMG
                     rate at R and at 0.95 R (default 20; 0 skips the scenario)
  --client-rps X     run the `cap` scenario once, with the rotator's AMG rate at X
  --concurrency C    daemon.concurrency of the measured engine (default 8, the product default)
  --idle-secs S      the daemon's idle window (default 10)
  --scopes S         the `scopes` scenario: S regions, each with 2 of the workspaces' size,
                     against one region of that size (default 20; 0 skips it)
  --scale LIST       the `scale` scenario's fleet sizes in credentials, comma-separated
                     (default 200,2000,10000; each a multiple of --accounts)
  --only LIST        scenarios to run, comma-separated: latency,cap,daemon,scopes,economy,
                     economy-daemon,scale (default all but scale)";

#[derive(Debug, Clone)]
struct Opts {
    workspaces: usize,
    accounts: usize,
    latency_ms: u64,
    rps: u32,
    client_rps: Option<f64>,
    concurrency: usize,
    idle_secs: u64,
    scopes: usize,
    scale: Vec<usize>,
    only: Vec<String>,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut o = Opts {
            workspaces: 40,
            accounts: 5,
            latency_ms: 50,
            rps: 20,
            client_rps: None,
            concurrency: 8,
            idle_secs: 10,
            scopes: 20,
            scale: vec![200, 2000, 10_000],
            only: vec![
                "latency".into(),
                "cap".into(),
                "daemon".into(),
                "scopes".into(),
                "economy".into(),
                "economy-daemon".into(),
            ],
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            // `cargo bench` appends --bench.
            if a == "--bench" {
                continue;
            }
            if a == "--help" || a == "-h" {
                return Err(String::new());
            }
            let v = args.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{a} {v}: not a number"))
            };
            match a.as_str() {
                "--workspaces" => o.workspaces = num(&v)?.clamp(1, 9999) as usize,
                "--accounts" => o.accounts = num(&v)?.clamp(1, 500) as usize,
                "--latency-ms" => o.latency_ms = num(&v)?.min(10_000),
                "--rps" => o.rps = num(&v)?.min(10_000) as u32,
                "--client-rps" => {
                    o.client_rps = Some(v.parse().map_err(|_| format!("{a} {v}: not a number"))?)
                }
                "--concurrency" => o.concurrency = num(&v)?.clamp(1, 256) as usize,
                "--idle-secs" => o.idle_secs = num(&v)?.clamp(1, 600),
                "--scopes" => o.scopes = num(&v)?.min(REGIONS.len() as u64) as usize,
                "--only" => o.only = v.split(',').map(|s| s.trim().to_owned()).collect(),
                "--scale" => {
                    o.scale = v
                        .split(',')
                        .map(|s| num(s.trim()).map(|n| n.clamp(1, 50_000) as usize))
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown option {a}")),
            }
        }
        if let Some(bad) = o.only.iter().find(|s| {
            ![
                "latency",
                "cap",
                "daemon",
                "scopes",
                "economy",
                "economy-daemon",
                "scale",
            ]
            .contains(&s.as_str())
        }) {
            return Err(format!("--only: unknown scenario {bad}"));
        }
        Ok(o)
    }

    fn credentials(&self) -> usize {
        self.workspaces * self.accounts
    }

    fn runs(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

/// The binary under test: `AMG_BENCH_ROTATOR` (scripts/bench sets it to a copy of what
/// `cargo build --release` makes), else the one cargo built for this bench, whose dependencies
/// carry the features of the dev-dependencies too (a larger binary than users run).
fn rotator() -> &'static (PathBuf, bool) {
    static BIN: OnceLock<(PathBuf, bool)> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("AMG_BENCH_ROTATOR") {
        Some(p) => (PathBuf::from(p), true),
        None => (
            PathBuf::from(env!("CARGO_BIN_EXE_amg-token-rotator")),
            false,
        ),
    })
}

/// Drops the binary's pages from the page cache (GNU dd's `iflag=nocache`: posix_fadvise
/// DONTNEED), so each process starts as after a reboot. How a file entered the page cache (a
/// copy, a link, a read) decides how many of its pages a fault maps at once, and so the
/// file-backed part of RSS: a cold start is the comparable state. Best effort.
fn evict(path: &Path) {
    let _ = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
}

/// The rotator with the bed's environment (test credentials, local endpoints) plus `env`.
fn command(bed: &Bed, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let bin = &rotator().0;
    evict(bin);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", bed.dir.path())
        .envs(bed.env())
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn workspace_id(i: usize) -> String {
    format!("g-b{i:09}")
}

fn fleet(opts: &Opts, faults: Faults) -> Seed {
    let mut seed = Seed::new().with_faults(faults);
    for w in 0..opts.workspaces {
        let mut ws = WorkspaceSeed::new(&workspace_id(w));
        for a in 0..opts.accounts {
            ws =
                ws.with_service_account(ServiceAccountSeed::new(&format!("svc-{a}"), Role::Editor));
        }
        seed = seed.with_workspace(ws);
    }
    seed
}

/// Real region names, one scope each (the rotator's limiters are per region and role).
const REGIONS: [&str; 20] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-east-1",
    "sa-east-1",
    "ca-central-1",
    "me-south-1",
];

/// One target per region, `per_scope` of the fleet's workspaces each.
fn scoped_config(scopes: usize, per_scope: usize) -> String {
    let mut out = String::from("[log]\nformat = \"text\"\n");
    for (r, region) in REGIONS.iter().take(scopes).enumerate() {
        let ids = (0..per_scope)
            .map(|w| format!("{:?}", workspace_id(r * per_scope + w)))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "\n[[targets]]\nname = \"{region}\"\nregion = \"{region}\"\nworkspace_ids = [{ids}]\nservice_accounts = [\"svc-*\"]\n"
        ));
    }
    out
}

/// The same load in one region and in `opts.scopes` regions, at the production rates: a
/// steady pass of S scopes should take about as long as one scope's, as each scope has its own
/// limiters and its own `daemon.concurrency`.
async fn scopes(opts: &Opts) -> Vec<String> {
    const PER_SCOPE: usize = 2;
    let per = PER_SCOPE * opts.accounts;
    println!(
        "\n== scopes: {} regions x {PER_SCOPE} workspaces x {} accounts = {} credentials against one region of {per}, {} ms per AMG call, production rates (AMG {} /s, Secrets Manager {} /s per scope), concurrency {}",
        opts.scopes,
        opts.accounts,
        opts.scopes * per,
        opts.latency_ms,
        amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE,
        amg_token_rotator::aws::connect::DEFAULT_SECRETSMANAGER_RATE,
        opts.concurrency
    );
    let env = env_of(
        opts.concurrency,
        &amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE.to_string(),
        &amg_token_rotator::aws::connect::DEFAULT_SECRETSMANAGER_RATE.to_string(),
    );
    let env = borrow(&env);
    let mut problems = Vec::new();
    let mut steady_walls = Vec::new();
    println!(
        "  {:<8} {:>8} {:>12} {:>12} {:>10} {:>12}",
        "scopes", "pass", "time", "AMG calls", "SM calls", "failed creds"
    );
    for s in [1, opts.scopes] {
        let fleet_opts = Opts {
            workspaces: s * PER_SCOPE,
            ..opts.clone()
        };
        let bed = Bed::start(fleet(&fleet_opts, latency_faults(opts))).await;
        let cfg = bed.config(&scoped_config(s, PER_SCOPE));
        let first = once(&bed, &cfg, &env).await;
        let second = once(&bed, &cfg, &env).await;
        // A pass one schedule period on: it carries its share of audits.
        bed.advance_audits(PERIOD_SECS).await;
        let typical = once(&bed, &cfg, &env).await;
        for (name, m) in [
            ("first", &first),
            ("second", &second),
            ("typical", &typical),
        ] {
            println!(
                "  {:<8} {:>8} {:>12} {:>12} {:>10} {:>12}",
                s,
                name,
                secs(m.wall),
                m.amg_calls(),
                m.sm_calls(),
                m.failed_lines
            );
            if m.code != Some(0) || m.failed_lines > 0 {
                problems.push(format!(
                    "scopes: the {name} pass over {s} scopes exited {:?} with {} failed credentials",
                    m.code, m.failed_lines
                ));
            }
        }
        steady_walls.push([
            (first.wall, first.amg_calls() / s),
            (typical.wall, typical.amg_calls() / s),
        ]);
    }
    if let [one, many] = &steady_walls[..] {
        for (i, name) in ["first", "typical"].into_iter().enumerate() {
            let ((one, calls), (many, _)) = (one[i], many[i]);
            let bound = calls as f64 / amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE;
            println!(
                "  {name} pass: {} scopes in {:.2}x one scope's time (goal <= 1.5x); one scope's bound: {calls} AMG calls / {} per s = {bound:.2} s",
                opts.scopes,
                many.as_secs_f64() / one.as_secs_f64(),
                amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE,
            );
        }
    }
    problems
}

/// The `daemon` scenario's schedule, once a year: its idle window has no scheduled pass in it.
const ONCE_A_YEAR: &str = "0 0 0 1 1 *";

/// The fleet as one target selecting `svc-*`. With a cron `schedule`, a daemon's configuration
/// (JSON logs, that schedule, no jitter); without, `once`'s (text logs).
fn config(opts: &Opts, concurrency: usize, schedule: Option<&str>) -> String {
    let ids = (0..opts.workspaces)
        .map(|w| format!("{:?}", workspace_id(w)))
        .collect::<Vec<_>>()
        .join(", ");
    let (format, schedule) = match schedule {
        Some(cron) => ("json", format!("schedule = \"{cron}\"\njitter = \"0s\"\n")),
        None => ("text", String::new()),
    };
    format!(
        "[daemon]\nconcurrency = {concurrency}\n{schedule}\n[log]\nformat = \"{format}\"\n\n[[targets]]\nworkspace_ids = [{ids}]\nservice_accounts = [\"svc-*\"]\n"
    )
}

/// `VmHWM` / `VmRSS` / `Threads` of a process, in KiB (threads: a count).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Context switches (voluntary + involuntary) of each thread, by thread ID, with its name.
fn thread_switches(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut m = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return m;
    };
    for entry in dir.flatten().take(10_000) {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut name = String::new();
        let mut n = 0;
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("Name:") {
                name = v.trim().to_owned();
            } else if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        m.insert(tid, (name, n));
    }
    m
}

#[derive(Debug, Default, Clone)]
struct Measure {
    wall: Duration,
    code: Option<i32>,
    peak_kib: u64,
    amg: BTreeMap<String, usize>,
    sm: BTreeMap<String, usize>,
    throttled: usize,
    failed_lines: usize,
}

impl Measure {
    fn amg_calls(&self) -> usize {
        self.amg.values().sum()
    }
    fn sm_calls(&self) -> usize {
        self.sm.values().sum()
    }
}

/// Runs `once` to completion (at most 15 minutes), polling its peak RSS every 5 ms.
async fn once(bed: &Bed, cfg: &Path, env: &[(&str, &str)]) -> Measure {
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let started = Instant::now();
    let child = command(bed, cfg, &["once"], env)
        .spawn()
        .expect("the rotator starts");
    let pid = child.id().expect("running");
    let out = child.wait_with_output();
    tokio::pin!(out);
    let mut peak = 0;
    let deadline = started + Duration::from_secs(900);
    let out = loop {
        tokio::select! {
            r = &mut out => break r.expect("the rotator runs"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                peak = peak.max(proc_status(pid, "VmHWM").unwrap_or(0));
                assert!(Instant::now() < deadline, "the pass did not end within 15 minutes");
            }
        }
    };
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut m = Measure {
        wall,
        code: out.status.code(),
        peak_kib: peak,
        failed_lines: stdout.matches("FAILED").count(),
        ..Measure::default()
    };
    if m.code != Some(0) {
        eprintln!(
            "bench: the pass exited {:?}:\n{}\n{}",
            m.code,
            stdout.lines().take(20).collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    record_calls(bed, &mut m);
    m
}

/// Calls by operation, and throttled answers, since the bed's call logs were last cleared.
fn record_calls(bed: &Bed, m: &mut Measure) {
    for c in bed.amg.calls() {
        if c.error_type.as_deref() == Some("ThrottlingException") {
            m.throttled += 1;
        }
        *m.amg.entry(c.operation).or_insert(0) += 1;
    }
    for op in bed.proxy.calls() {
        *m.sm.entry(op).or_insert(0) += 1;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_calls(label: &str, m: &Measure) {
    let list = |ops: &BTreeMap<String, usize>| {
        ops.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("    {label}");
    println!("      AMG ({}): {}", m.amg_calls(), list(&m.amg));
    println!("      Secrets Manager ({}): {}", m.sm_calls(), list(&m.sm));
}

/// The rotator's environment besides the bed's: concurrency and rates.
fn env_of(concurrency: usize, grafana_rps: &str, sm_rps: &str) -> Vec<(String, String)> {
    vec![
        (
            "AMG_ROTATOR__DAEMON__CONCURRENCY".into(),
            concurrency.to_string(),
        ),
        (
            "AMG_ROTATOR__AWS__GRAFANA_REQUESTS_PER_SECOND".into(),
            grafana_rps.into(),
        ),
        (
            "AMG_ROTATOR__AWS__SECRETSMANAGER_REQUESTS_PER_SECOND".into(),
            sm_rps.into(),
        ),
        // The production retry budget, not the tests' short one.
        ("AMG_ROTATOR__AWS__RETRY_BUDGET".into(), "60s".into()),
    ]
}

fn borrow(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A first pass and a steady pass on a fresh bed.
async fn two_passes(
    opts: &Opts,
    faults: Faults,
    concurrency: usize,
    env: &[(String, String)],
) -> (Measure, Measure) {
    let bed = Bed::start(fleet(opts, faults)).await;
    let cfg = bed.config(&config(opts, concurrency, None));
    let env = borrow(env);
    let first = once(&bed, &cfg, &env).await;
    let steady = once(&bed, &cfg, &env).await;
    (first, steady)
}

/// The default schedule's period (every 5 minutes): how far a typical pass's audits are moved on.
const PERIOD_SECS: i64 = 300;
/// Passes a day at the default schedule.
const PASSES_A_DAY: usize = 288;
/// Typical passes measured for each selection, and passes of `economy-daemon` after its start.
const TYPICAL_PASSES: usize = 12;

/// The production defaults (the bed lifts the AMG rate for the tests).
fn production_env(concurrency: usize) -> Vec<(String, String)> {
    env_of(
        concurrency,
        &amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE.to_string(),
        &amg_token_rotator::aws::connect::DEFAULT_SECRETSMANAGER_RATE.to_string(),
    )
}

/// A problem when the pass exited non-zero or any credential failed.
fn check(problems: &mut Vec<String>, scenario: &str, name: &str, m: &Measure) {
    if m.code != Some(0) || m.failed_lines > 0 {
        problems.push(format!(
            "{scenario}: the {name} pass exited {:?} with {} failed credentials",
            m.code, m.failed_lines
        ));
    }
}

/// The audits a pass carried: one token listing per credential audited.
fn audits(m: &Measure) -> usize {
    m.amg
        .get("ListWorkspaceServiceAccountTokens")
        .copied()
        .unwrap_or(0)
}

/// The audits a pass at the default schedule carries on average: each credential is audited
/// once per `audit_interval`, and a pass covers one period of it.
fn expected_audits(credentials: usize) -> f64 {
    credentials as f64 * PERIOD_SECS as f64
        / amg_token_rotator::config::DEFAULT_AUDIT_INTERVAL.as_secs_f64()
}

/// The pass time the rotator's AMG limiter allows at best.
fn rate_bound(amg_calls: f64) -> String {
    let rate = amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE;
    // A mean's calls may be fractional.
    let calls = if amg_calls.fract() == 0.0 {
        format!("{amg_calls:.0}")
    } else {
        format!("{amg_calls:.1}")
    };
    format!(
        "{calls} AMG calls / {rate} per s = {:.2} s",
        amg_calls / rate
    )
}

/// The mean of a few passes.
#[derive(Debug, Clone, Copy)]
struct Mean {
    wall: f64,
    amg: f64,
    sm: f64,
    audits: f64,
}

impl Mean {
    fn of(passes: &[Measure]) -> Mean {
        let n = passes.len().max(1) as f64;
        let sum = |f: &dyn Fn(&Measure) -> f64| passes.iter().map(f).sum::<f64>() / n;
        Mean {
            wall: sum(&|m| m.wall.as_secs_f64()),
            amg: sum(&|m| m.amg_calls() as f64),
            sm: sum(&|m| m.sm_calls() as f64),
            audits: sum(&|m| audits(m) as f64),
        }
    }
}

/// One row of the economy tables: pass, wall, AMG, SM, peak RSS, audits, expected, bound.
fn economy_row(cells: [&str; 8]) {
    let [name, wall, amg, sm, rss, audits, expected, bound] = cells;
    println!(
        "  {name:<22} {wall:>9} {amg:>6} {sm:>6} {rss:>10} {audits:>6} {expected:>8}  {bound}"
    );
}

fn pass_row(name: &str, m: &Measure, expected: Option<f64>, bound: &str) {
    economy_row([
        name,
        &secs(m.wall),
        &m.amg_calls().to_string(),
        &m.sm_calls().to_string(),
        &mib(m.peak_kib),
        &audits(m).to_string(),
        &expected.map_or("-".into(), |e| format!("{e:.2}")),
        bound,
    ]);
}

fn mean_row(name: &str, mean: &Mean, expected: f64) {
    economy_row([
        name,
        &format!("{:.2} s", mean.wall),
        &format!("{:.1}", mean.amg),
        &format!("{:.1}", mean.sm),
        "-",
        &format!("{:.2}", mean.audits),
        &format!("{expected:.2}"),
        &rate_bound(mean.amg),
    ]);
}

/// The sequential peer's passes, on a bed of its own.
struct Peer {
    first: Measure,
    steady: Measure,
}

/// The fleet run as a sequential script runs it: the same engine one credential at a time, no
/// client-side limit, every credential's tokens listed on every pass (`audit_interval = "0s"`).
async fn peer_passes(opts: &Opts, problems: &mut Vec<String>) -> Peer {
    let bed = Bed::start(fleet(opts, latency_faults(opts))).await;
    let cfg = bed.config(&config(opts, 1, None));
    let env = env_of(1, "0", "0");
    let mut env = borrow(&env);
    env.push(("AMG_ROTATOR__DEFAULTS__AUDIT_INTERVAL", "0s"));
    let peer = Peer {
        first: once(&bed, &cfg, &env).await,
        steady: once(&bed, &cfg, &env).await,
    };
    check(problems, "peer", "first", &peer.first);
    check(problems, "peer", "steady", &peer.steady);
    peer
}

/// `TYPICAL_PASSES` passes, each after the audit records were moved on one schedule period:
/// each carries the audits a pass 5 minutes after the last one would. (A pass run seconds after
/// the first audit finds almost none due: a lucky pass, not a typical one.)
async fn typical_passes(
    bed: &Bed,
    cfg: &Path,
    env: &[(&str, &str)],
    credentials: usize,
    problems: &mut Vec<String>,
) -> Vec<Measure> {
    let mut passes = Vec::new();
    for _ in 0..TYPICAL_PASSES {
        let moved = bed.advance_audits(PERIOD_SECS).await;
        if moved != credentials {
            problems.push(format!(
                "economy: {moved} audit records moved on, of {credentials} credentials"
            ));
        }
        passes.push(once(bed, cfg, env).await);
    }
    passes
}

/// Calls in proportion to what is due (issue 18), at the production defaults, against the
/// sequential peer. Returns the peer's passes too, for `economy-daemon`.
async fn economy(opts: &Opts) -> (Vec<String>, Peer) {
    let n = opts.credentials();
    println!(
        "\n== economy: {} workspaces x {} accounts = {n} credentials, {} ms per AMG call; the rotator at its defaults (concurrency {}, AMG {} requests/s, audit_interval {} s), the peer sequential and unpaced",
        opts.workspaces,
        opts.accounts,
        opts.latency_ms,
        opts.concurrency,
        amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE,
        amg_token_rotator::config::DEFAULT_AUDIT_INTERVAL.as_secs()
    );
    let mut problems = Vec::new();
    let bed = Bed::start(fleet(opts, latency_faults(opts))).await;
    // The service accounts by name (`svc-0` .. ): a workspace whose credentials' records all
    // stand is not listed. The same fleet by pattern (`svc-*`) lists each workspace.
    let names = (0..opts.accounts)
        .map(|a| format!("\"svc-{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let by_name = config(opts, opts.concurrency, None).replace("\"svc-*\"", &names);
    let cfg = bed.config(&by_name);
    let production = production_env(opts.concurrency);
    let production = borrow(&production);
    // Which of the first two passes writes the audit records is the engine's business: the
    // table shows what each did.
    let first = once(&bed, &cfg, &production).await;
    let second = once(&bed, &cfg, &production).await;
    let floor = once(&bed, &cfg, &production).await;
    // One configuration file per bed: the pattern's replaces the names'.
    let by_pattern = config(opts, opts.concurrency, None);
    let globbed = bed.config(&by_pattern);
    let floor_globbed = once(&bed, &globbed, &production).await;
    let cfg = bed.config(&by_name);
    let typical = typical_passes(&bed, &cfg, &production, n, &mut problems).await;
    let globbed = bed.config(&by_pattern);
    let typical_globbed = typical_passes(&bed, &globbed, &production, n, &mut problems).await;
    let peer = peer_passes(opts, &mut problems).await;
    for (name, m) in [
        ("first", &first),
        ("second", &second),
        ("right after the second", &floor),
        ("right after the second, svc-*", &floor_globbed),
    ] {
        check(&mut problems, "economy", name, m);
    }
    for (sel, passes) in [("by name", &typical), ("svc-*", &typical_globbed)] {
        for (i, m) in passes.iter().enumerate() {
            check(
                &mut problems,
                "economy",
                &format!("typical {}, {sel},", i + 1),
                m,
            );
        }
    }

    let expected = expected_audits(n);
    economy_row([
        "pass", "wall", "AMG", "SM", "peak RSS", "audits", "expected", "bound",
    ]);
    for (name, m) in [
        ("first", &first),
        ("second", &second),
        ("after second, by name", &floor),
        ("after second, svc-*", &floor_globbed),
    ] {
        pass_row(name, m, None, &rate_bound(m.amg_calls() as f64));
    }
    let means = [("by name", &typical), ("svc-*", &typical_globbed)].map(|(sel, passes)| {
        for (i, m) in passes.iter().enumerate() {
            pass_row(
                &format!("typical {}, {sel}", i + 1),
                m,
                Some(expected),
                &rate_bound(m.amg_calls() as f64),
            );
        }
        let mean = Mean::of(passes);
        mean_row(&format!("typical mean, {sel}"), &mean, expected);
        mean
    });
    for (name, m) in [("peer first", &peer.first), ("peer steady", &peer.steady)] {
        let bound = format!(
            "{} AMG calls x {} ms = {:.2} s",
            m.amg_calls(),
            opts.latency_ms,
            m.amg_calls() as f64 * opts.latency_ms as f64 / 1000.0
        );
        pass_row(name, m, None, &bound);
    }
    println!(
        "  audits: ListWorkspaceServiceAccountTokens calls (a token listing per credential audited); expected: {n} credentials x {PERIOD_SECS} s / audit_interval {} s; before each typical pass the audit records were moved {PERIOD_SECS} s on (one period of the default schedule)",
        amg_token_rotator::config::DEFAULT_AUDIT_INTERVAL.as_secs()
    );
    let peer_wall = peer.steady.wall.as_secs_f64();
    for ((name, mean), floor) in [("by name", &means[0]), ("by pattern", &means[1])]
        .into_iter()
        .zip([&floor, &floor_globbed])
    {
        println!(
            "  typical steady pass (mean of {TYPICAL_PASSES}), service accounts {name}: {:.1}x faster than the peer's (goal >= 10x); {:.2} AMG calls per workspace (goal <= 1 plus the due and audited); right after the second pass (the floor): {:.1}x the peer's speed",
            peer_wall / mean.wall,
            mean.amg / opts.workspaces as f64,
            peer_wall / floor.wall.as_secs_f64()
        );
    }
    let day = |per_pass: f64| (PASSES_A_DAY as f64 * per_pass).round();
    println!(
        "  a day at a 5-minute schedule ({PASSES_A_DAY} typical passes): the rotator by name {} AMG and {} Secrets Manager calls, by pattern {} and {}; the peer {} and {}",
        day(means[0].amg),
        day(means[0].sm),
        day(means[1].amg),
        day(means[1].sm),
        PASSES_A_DAY * peer.steady.amg_calls(),
        PASSES_A_DAY * peer.steady.sm_calls()
    );
    print_calls("first pass", &first);
    print_calls("second pass", &second);
    print_calls("right after the second pass, by name", &floor);
    print_calls("right after the second pass, svc-*", &floor_globbed);
    for (sel, passes) in [("by name", &typical), ("svc-*", &typical_globbed)] {
        for (i, m) in passes.iter().enumerate() {
            print_calls(&format!("typical pass {}, {sel}", i + 1), m);
        }
    }
    print_calls("peer steady pass", &peer.steady);
    (problems, peer)
}

/// `economy-daemon`'s schedule: every 10 s, so its passes take two minutes rather than an hour. Each
/// still carries a default period's audits: the records are moved on before it.
const FAST_SCHEDULE: &str = "*/10 * * * * *";
const FAST_PERIOD: Duration = Duration::from_secs(10);
/// How long `economy-daemon` waits for each pass to finish.
const PASS_LIMIT: Duration = Duration::from_secs(120);

/// How long until `offset` into the next period of `period` seconds of Unix time, where the
/// ticks of a seconds-field cron schedule such as `*/15` fall.
fn until_period_offset(period: Duration, offset: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (p, o) = (period.as_nanos(), offset.as_nanos());
    let wait = (p + o - now.as_nanos() % p) % p;
    Duration::from_nanos(wait as u64)
}

/// The next `pass finished` event from line `from` on, within `PASS_LIMIT`, with the line
/// after it; `None` when the daemon exits or the limit passes first.
async fn next_pass(daemon: &mut Running, from: usize) -> Option<(usize, serde_json::Value)> {
    let deadline = Instant::now() + PASS_LIMIT;
    loop {
        if let Some(found) = daemon.event(from, "pass finished") {
            return Some(found);
        }
        if Instant::now() > deadline || daemon.exited() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Between two daemon passes: moves the audit records on one period, then clears the call
/// logs for the next pass. A problem when the next pass began meanwhile (some of its calls
/// would be lost, and some of its audits not yet due), or when records are missing.
async fn move_on(bed: &Bed, credentials: usize) -> Option<String> {
    let (amg, sm) = (bed.amg.calls().len(), bed.proxy.calls().len());
    let started = Instant::now();
    let moved = bed.advance_audits(PERIOD_SECS).await;
    let took = started.elapsed();
    let begun = bed.amg.calls().len() != amg || bed.proxy.calls().len() != sm;
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    if begun {
        Some(format!(
            "economy-daemon: a pass began while the audit records were moved on ({}): the schedule is too tight for its figures",
            secs(took)
        ))
    } else if moved != credentials {
        Some(format!(
            "economy-daemon: {moved} audit records moved on, of {credentials} credentials"
        ))
    } else {
        None
    }
}

fn daemon_row(name: &str, m: &Measure, expected: Option<f64>) {
    economy_row([
        name,
        &secs(m.wall),
        &m.amg_calls().to_string(),
        &m.sm_calls().to_string(),
        &service_account_lists(m).to_string(),
        &audits(m).to_string(),
        &expected.map_or("-".into(), |e| format!("{e:.2}")),
        &rate_bound(m.amg_calls() as f64),
    ]);
}

fn service_account_lists(m: &Measure) -> usize {
    m.amg
        .get("ListWorkspaceServiceAccounts")
        .copied()
        .unwrap_or(0)
}

/// The daemon at the production defaults over the fleet by pattern, its records written by two
/// `once` passes: its start pass, then `TYPICAL_PASSES` passes each after the records were
/// moved on one default period. Unlike `once`, the daemon may keep what it learnt between
/// passes; this measures whatever it does.
async fn economy_daemon(opts: &Opts, peer: Option<Peer>) -> Vec<String> {
    let n = opts.credentials();
    println!(
        "\n== economy-daemon: `run` on {n} credentials by pattern (`svc-*`), {} ms per AMG call, the production defaults (concurrency {}, AMG {} requests/s, audit_interval {} s), schedule \"{FAST_SCHEDULE}\"; before each pass after the start the audit records are moved {PERIOD_SECS} s on",
        opts.latency_ms,
        opts.concurrency,
        amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE,
        amg_token_rotator::config::DEFAULT_AUDIT_INTERVAL.as_secs()
    );
    let mut problems = Vec::new();
    let bed = Bed::start(fleet(opts, latency_faults(opts))).await;
    let cfg = bed.config(&config(opts, opts.concurrency, Some(FAST_SCHEDULE)));
    let listen = format!("127.0.0.1:{}", support::free_port());
    let production = production_env(opts.concurrency);
    let mut env = borrow(&production);
    // Minted, then one more pass, so every credential has its audit record, as in a fleet the
    // daemon has looked after for a while.
    for name in ["minting", "second"] {
        let m = once(&bed, &cfg, &env).await;
        check(&mut problems, "economy-daemon", name, &m);
        if m.code != Some(0) {
            return problems;
        }
    }
    let peer = match peer {
        Some(peer) => peer,
        None => peer_passes(opts, &mut problems).await,
    };
    env.push(("AMG_ROTATOR__DAEMON__LISTEN", &listen));
    // Spawned 1 s into a schedule period: the start pass (a few seconds) ends, and the records
    // are moved on for the next one, well before the next tick.
    tokio::time::sleep(until_period_offset(FAST_PERIOD, Duration::from_secs(1))).await;
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let mut daemon = Running::spawn(&bed, &cfg, &env);
    let mut passes = Vec::new();
    let mut from = 0;
    for i in 0..=TYPICAL_PASSES {
        let Some((next, event)) = next_pass(&mut daemon, from).await else {
            let log = daemon.log();
            let tail = log.lines().rev().take(40).collect::<Vec<_>>();
            problems.push(format!(
                "economy-daemon: pass {} did not finish within {} s; the log's last lines:\n{}",
                i + 1,
                PASS_LIMIT.as_secs(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
            break;
        };
        from = next;
        let seconds = event["seconds"].as_f64();
        if event["outcome"].as_str() != Some("success") || seconds.is_none() {
            problems.push(format!("economy-daemon: pass {} ended {event}", i + 1));
        }
        let mut m = Measure {
            wall: Duration::from_secs_f64(seconds.unwrap_or(0.0).max(0.0)),
            ..Measure::default()
        };
        record_calls(&bed, &mut m);
        passes.push(m);
        if i < TYPICAL_PASSES {
            problems.extend(move_on(&bed, n).await);
        }
    }
    if daemon.event(0, "still runs").is_some() {
        problems.push("economy-daemon: a scheduled pass was delayed by the one before".into());
    }
    problems.extend(daemon.stop("economy-daemon").await);

    let expected = expected_audits(n);
    economy_row([
        "pass", "seconds", "AMG", "SM", "SA lists", "audits", "expected", "bound",
    ]);
    for (i, m) in passes.iter().enumerate() {
        match i {
            0 => daemon_row("start (right after)", m, None),
            _ => daemon_row(&format!("pass {}", i + 1), m, Some(expected)),
        }
    }
    let Some(after_start) = passes.get(1..).filter(|p| p.len() == TYPICAL_PASSES) else {
        return problems;
    };
    let mean = Mean::of(after_start);
    let lists = after_start
        .iter()
        .map(|m| service_account_lists(m) as f64)
        .sum::<f64>()
        / TYPICAL_PASSES as f64;
    economy_row([
        &format!("mean of 2-{}", TYPICAL_PASSES + 1),
        &format!("{:.2} s", mean.wall),
        &format!("{:.1}", mean.amg),
        &format!("{:.1}", mean.sm),
        &format!("{lists:.1}"),
        &format!("{:.2}", mean.audits),
        &format!("{expected:.2}"),
        &rate_bound(mean.amg),
    ]);
    println!(
        "  seconds: the daemon's own count of each pass (`pass finished`); SA lists: ListWorkspaceServiceAccounts calls, of {} workspaces",
        opts.workspaces
    );
    println!(
        "  daemon pass (mean of the {TYPICAL_PASSES} after the start): {:.1}x faster than the peer's steady pass ({} from spawn to exit) (goal >= 10x); {:.2} AMG calls per workspace; {lists:.1} ListWorkspaceServiceAccounts a pass",
        peer.steady.wall.as_secs_f64() / mean.wall,
        secs(peer.steady.wall),
        mean.amg / opts.workspaces as f64
    );
    for (i, m) in passes.iter().enumerate() {
        print_calls(&format!("daemon pass {}", i + 1), m);
    }
    problems
}

/// The passes and the memory as the fleet grows, rates lifted (the engine's figures).
async fn scale(opts: &Opts) -> Vec<String> {
    println!(
        "\n== scale: {} ms per AMG call, concurrency {}, client rate limits off; sizes {:?} credentials ({} accounts per workspace)",
        opts.latency_ms, opts.concurrency, opts.scale, opts.accounts
    );
    println!(
        "  {:>7} {:<7} {:>9} {:>7} {:>7} {:>10}",
        "creds", "pass", "wall", "AMG", "SM", "peak RSS"
    );
    let mut problems = Vec::new();
    let mut peaks = Vec::new();
    for &n in &opts.scale {
        let sized = Opts {
            workspaces: n.div_ceil(opts.accounts),
            ..opts.clone()
        };
        let bed = Bed::start(fleet(&sized, latency_faults(&sized))).await;
        let cfg = bed.config(&config(&sized, opts.concurrency, None));
        let env = env_of(opts.concurrency, "0", "0");
        let env = borrow(&env);
        let mut peak = 0;
        let interval = amg_token_rotator::config::DEFAULT_AUDIT_INTERVAL.as_secs() as i64;
        for (name, moved) in [
            ("first", 0),
            ("second", 0),
            ("audit", interval),
            ("typical", PERIOD_SECS),
        ] {
            if moved > 0 {
                bed.advance_audits(moved).await;
            }
            let m = once(&bed, &cfg, &env).await;
            if m.code != Some(0) || m.failed_lines > 0 {
                problems.push(format!("scale {n}: the {name} pass exited {:?}", m.code));
            }
            println!(
                "  {:>7} {:<7} {:>9} {:>7} {:>7} {:>10}",
                sized.credentials(),
                name,
                secs(m.wall),
                m.amg_calls(),
                m.sm_calls(),
                mib(m.peak_kib)
            );
            peak = peak.max(m.peak_kib);
        }
        peaks.push((sized.credentials(), peak));
    }
    if let Some(&(n0, p0)) = peaks.first() {
        for &(n, p) in &peaks[1..] {
            println!(
                "  peak RSS {} at {n} vs {} at {n0}: {:.2} KiB more per credential (goal < 2 KiB)",
                mib(p),
                mib(p0),
                (p as f64 - p0 as f64) / (n - n0) as f64
            );
        }
    }
    problems
}

fn latency_faults(opts: &Opts) -> Faults {
    Faults {
        latency_ms: opts.latency_ms,
        ..Faults::default()
    }
}

async fn latency(opts: &Opts) -> Vec<String> {
    println!(
        "\n== latency: {} workspaces x {} accounts = {} credentials, {} ms per AMG call, client rate limits off",
        opts.workspaces,
        opts.accounts,
        opts.credentials(),
        opts.latency_ms
    );
    let env = |c| env_of(c, "0", "0");
    let (first, steady) = two_passes(
        opts,
        latency_faults(opts),
        opts.concurrency,
        &env(opts.concurrency),
    )
    .await;
    let (seq_first, seq_steady) = two_passes(opts, latency_faults(opts), 1, &env(1)).await;
    let mut problems = Vec::new();
    for (name, m) in [
        ("first", &first),
        ("steady", &steady),
        ("sequential first", &seq_first),
        ("sequential steady", &seq_steady),
    ] {
        if m.code != Some(0) {
            problems.push(format!("latency: the {name} pass exited {:?}", m.code));
        }
    }
    println!(
        "  {:<8} {:>16} {:>16} {:>8} {:>14} {:>14}",
        "pass",
        format!("concurrency {}", opts.concurrency),
        "concurrency 1",
        "ratio",
        "peak RSS (C)",
        "peak RSS (1)"
    );
    for (name, c, s) in [
        ("first", &first, &seq_first),
        ("steady", &steady, &seq_steady),
    ] {
        println!(
            "  {:<8} {:>16} {:>16} {:>7.1}x {:>14} {:>14}",
            name,
            secs(c.wall),
            secs(s.wall),
            s.wall.as_secs_f64() / c.wall.as_secs_f64(),
            mib(c.peak_kib),
            mib(s.peak_kib)
        );
    }
    println!("  calls (identical at both concurrencies: {}):", {
        first.amg == seq_first.amg
            && first.sm == seq_first.sm
            && steady.amg == seq_steady.amg
            && steady.sm == seq_steady.sm
    });
    print_calls("first pass", &first);
    print_calls("steady pass", &steady);
    if (first.amg, &first.sm) != (seq_first.amg.clone(), &seq_first.sm) {
        print_calls("first pass, sequential", &seq_first);
    }
    if (steady.amg.clone(), &steady.sm) != (seq_steady.amg.clone(), &seq_steady.sm) {
        print_calls("steady pass, sequential", &seq_steady);
    }
    problems
}

async fn cap(opts: &Opts, client: f64) -> Vec<String> {
    println!(
        "\n== cap: {} credentials, {} ms per AMG call, the emulator throttles past {} AMG requests/s, rotator AMG rate {} /s, concurrency {}",
        opts.credentials(),
        opts.latency_ms,
        opts.rps,
        client,
        opts.concurrency
    );
    let faults = Faults {
        latency_ms: opts.latency_ms,
        max_requests_per_second: Some(opts.rps),
        ..Faults::default()
    };
    // Secrets Manager at its production default rate.
    let env = env_of(
        opts.concurrency,
        &client.to_string(),
        &amg_token_rotator::aws::connect::DEFAULT_SECRETSMANAGER_RATE.to_string(),
    );
    let (first, steady) = two_passes(opts, faults, opts.concurrency, &env).await;
    let mut problems = Vec::new();
    println!(
        "  {:<8} {:>10} {:>10} {:>10} {:>16} {:>8} {:>12}",
        "pass", "time", "AMG served", "throttled", "served / cap", "ratio", "failed creds"
    );
    for (name, m) in [("first", &first), ("steady", &steady)] {
        let served = m.amg_calls() - m.throttled;
        let ideal = served as f64 / opts.rps as f64;
        let ratio = m.wall.as_secs_f64() / ideal;
        println!(
            "  {:<8} {:>10} {:>10} {:>10} {:>16} {:>7.3}x {:>12}",
            name,
            secs(m.wall),
            served,
            m.throttled,
            format!("{ideal:.2} s"),
            ratio,
            m.failed_lines
        );
        if m.code != Some(0) || m.failed_lines > 0 {
            problems.push(format!(
                "cap: the {name} pass exited {:?} with {} failed credentials",
                m.code, m.failed_lines
            ));
        }
    }
    print_calls("first pass", &first);
    print_calls("steady pass", &steady);
    problems
}

/// `run` as a child process, its JSON log (stderr) gathered line by line as it comes.
struct Running {
    child: tokio::process::Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(bed: &Bed, cfg: &Path, env: &[(&str, &str)]) -> Running {
        let mut child = command(bed, cfg, &["run"], env)
            .spawn()
            .expect("the daemon starts");
        let pid = child.id().expect("running");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut out = child.stdout.take().expect("stdout piped");
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
        });
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = lines.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, pid, lines }
    }

    /// The first event from line `from` on whose message contains `text`, with the index of
    /// the line after it (where to look for the next one).
    fn event(&self, from: usize, text: &str) -> Option<(usize, serde_json::Value)> {
        let lines = self.lines.lock().unwrap();
        lines.iter().enumerate().skip(from).find_map(|(i, l)| {
            // Most lines are other events: a substring test spares parsing them on every poll.
            if !l.contains(text) {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["message"].as_str()?.contains(text).then_some((i + 1, v))
        })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, then at most 60 s for a clean exit; the problem, if any, named for `scenario`.
    async fn stop(mut self, scenario: &str) -> Option<String> {
        // Through the shell's built-in kill (no libc binding needed).
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.pid)])
            .status();
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => None,
            other => Some(format!("{scenario}: stopped with {other:?}")),
        }
    }
}

async fn daemon(opts: &Opts) -> Vec<String> {
    println!(
        "\n== daemon: `run` on {} minted credentials, {} ms per AMG call, production rates (AMG {} /s, Secrets Manager {} /s), concurrency {}",
        opts.credentials(),
        opts.latency_ms,
        amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE,
        amg_token_rotator::aws::connect::DEFAULT_SECRETSMANAGER_RATE,
        opts.concurrency
    );
    let mut problems = Vec::new();
    let bed = Bed::start(fleet(opts, latency_faults(opts))).await;
    let cfg = bed.config(&config(opts, opts.concurrency, Some(ONCE_A_YEAR)));
    // Mint everything quickly first, so the daemon's start pass is a steady one.
    let mint = once(&bed, &cfg, &borrow(&env_of(opts.concurrency, "0", "0"))).await;
    if mint.code != Some(0) {
        problems.push(format!("daemon: minting exited {:?}", mint.code));
        return problems;
    }
    // The test bed paces AMG at 200/s for tests; the daemon runs at the product's default.
    let concurrency = opts.concurrency.to_string();
    let rate = amg_token_rotator::aws::connect::DEFAULT_GRAFANA_RATE.to_string();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let env = [
        ("AMG_ROTATOR__DAEMON__CONCURRENCY", concurrency.as_str()),
        (
            "AMG_ROTATOR__AWS__GRAFANA_REQUESTS_PER_SECOND",
            rate.as_str(),
        ),
        ("AMG_ROTATOR__AWS__RETRY_BUDGET", "60s"),
        ("AMG_ROTATOR__DAEMON__LISTEN", listen.as_str()),
    ];
    bed.amg.clear_calls();
    bed.proxy.clear_calls();
    let started = Instant::now();
    let mut daemon = Running::spawn(&bed, &cfg, &env);
    let pid = daemon.pid;
    let mut peak_during = 0;
    let deadline = started + Duration::from_secs(600);
    let finished = loop {
        if let Some((_, e)) = daemon.event(0, "pass finished") {
            break Some(e);
        }
        if Instant::now() > deadline || daemon.exited() {
            break None;
        }
        peak_during = peak_during.max(proc_status(pid, "VmHWM").unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let Some(finished) = finished else {
        problems.push(format!(
            "daemon: the start pass did not finish within 10 minutes:\n{}",
            daemon.log()
        ));
        return problems;
    };
    let pass_wall = started.elapsed();
    let amg = bed.amg.calls().len();
    let sm = bed.proxy.calls().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = proc_status(pid, "VmHWM").unwrap_or(0).max(peak_during);
    let rss_after = proc_status(pid, "VmRSS").unwrap_or(0);
    let before = thread_switches(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    let after = thread_switches(pid);
    let window = t0.elapsed().as_secs_f64();
    let idle_rss = proc_status(pid, "VmRSS").unwrap_or(0);
    let threads = proc_status(pid, "Threads").unwrap_or(0);
    let anon = proc_status(pid, "RssAnon").unwrap_or(0);
    let file = proc_status(pid, "RssFile").unwrap_or(0);
    let idle_amg = bed.amg.calls().len() - amg;
    let idle_sm = bed.proxy.calls().len() - sm;

    println!(
        "  start pass (steady): {} by the daemon's own count ({} from spawn), outcome {}, {} AMG and {} Secrets Manager calls",
        finished["seconds"]
            .as_f64()
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "?".into()),
        secs(pass_wall),
        finished["outcome"].as_str().unwrap_or("?"),
        amg,
        sm
    );
    println!(
        "  peak RSS (VmHWM, start + steady pass): {}; RSS 1 s after the pass: {}; idle RSS after {} s: {} ({} anonymous, {} file-backed: the binary's code); threads: {}",
        mib(peak),
        mib(rss_after),
        opts.idle_secs,
        mib(idle_rss),
        mib(anon),
        mib(file),
        threads
    );
    let mut total = 0;
    let mut per_name: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (tid, (name, n)) in &after {
        let delta = n - before.get(tid).map(|(_, b)| *b).unwrap_or(0);
        total += delta;
        let e = per_name.entry(name.clone()).or_default();
        e.0 += 1;
        e.1 += delta;
    }
    let gone = before.keys().filter(|t| !after.contains_key(t)).count();
    println!(
        "  idle window {window:.1} s: {total} context switches in all threads ({:.2}/s), {idle_amg} AMG and {idle_sm} Secrets Manager calls; threads gone meanwhile: {gone}",
        total as f64 / window
    );
    for (name, (count, delta)) in &per_name {
        println!("    {name} (x{count}): {delta}");
    }
    if finished["outcome"].as_str() != Some("success") {
        problems.push(format!("daemon: start pass outcome {}", finished));
    }
    problems.extend(daemon.stop("daemon").await);
    problems
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

fn main() -> std::process::ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (bin, production) = rotator();
    println!(
        "amg-token-rotator pass benchmark: {}\nrotator: {} ({}; page cache dropped before each start)",
        machine(),
        bin.display(),
        if *production {
            "the `cargo build --release` binary"
        } else {
            "built by `cargo bench`, with dev-dependency features: run scripts/bench for the release binary"
        }
    );
    println!(
        "moto: {} (a real process; its latency is part of every Secrets Manager call)",
        support::moto_server_path().display()
    );
    let problems = rt.block_on(async {
        let mut problems = Vec::new();
        if opts.runs("latency") {
            problems.extend(latency(&opts).await);
        }
        if opts.runs("cap") && opts.rps > 0 {
            // The rotator at the cap itself, then 5% under it (a user who knows the limit
            // leaves headroom), unless --client-rps names one rate.
            let clients = match opts.client_rps {
                Some(c) => vec![c],
                None => vec![
                    opts.rps as f64,
                    (opts.rps as f64 * 0.95 * 100.0).round() / 100.0,
                ],
            };
            for client in clients {
                problems.extend(cap(&opts, client).await);
            }
        }
        if opts.runs("daemon") {
            problems.extend(daemon(&opts).await);
        }
        if opts.runs("scopes") && opts.scopes > 1 {
            problems.extend(scopes(&opts).await);
        }
        // `economy-daemon` shares the peer's passes of `economy` when both run.
        let mut peer = None;
        if opts.runs("economy") {
            let (found, passes) = economy(&opts).await;
            problems.extend(found);
            peer = Some(passes);
        }
        if opts.runs("economy-daemon") {
            problems.extend(economy_daemon(&opts, peer.take()).await);
        }
        if opts.runs("scale") {
            problems.extend(scale(&opts).await);
        }
        problems
    });
    if problems.is_empty() {
        println!("\nall passes succeeded");
        std::process::ExitCode::SUCCESS
    } else {
        println!("\nproblems:");
        for p in &problems {
            println!("  - {p}");
        }
        std::process::ExitCode::FAILURE
    }
}
