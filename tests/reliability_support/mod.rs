//! Helpers of the reliability tests (`crash`, `soak`, `storms`, `bad_input`, `hygiene`), on top
//! of the shared test bed in `tests/support` (which they use, never change).
//!
//! What lives here: running the binary while keeping its exit *status* (a crash point aborts
//! with SIGABRT, the soak kills with SIGKILL), the contract's invariants written as checks that
//! return what is wrong instead of panicking (the soak counts violations), counting the tokens a
//! pass minted from the emulator's call log, reading every secret version back for the hygiene
//! scan, and a minimal `run` daemon to scrape `/metrics` from.
//!
//! Everything talks to 127.0.0.1 only, and every wait is bounded.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::Bed;

pub const DAY: i64 = 86_400;
pub const PREFIX: &str = "amgrot";
pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
pub const AWSPENDING: &str = "AWSPENDING";

pub fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Writes a configuration file named `name` into the bed's scratch directory (several tests of
/// one bed use several configurations side by side).
pub fn write_config(bed: &Bed, name: &str, text: &str) -> PathBuf {
    let path = bed.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Running the binary and keeping its exit status.

/// One run of the binary: how it ended (code or signal), what it printed, how long it took.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The test killed it (SIGKILL) before it ended by itself.
    pub killed: bool,
}

impl Exit {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }

    pub fn all_output(&self) -> String {
        format!(
            "[status {:?}, {:?}]\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

pub const SIGABRT: i32 = 6;
pub const SIGKILL: i32 = 9;

/// Runs the binary with `args`, killing it (SIGKILL) after `kill_after` if it is still running,
/// and in any case after `limit` (which then fails the test: nothing may hang).
pub async fn run_bin(
    bed: &Bed,
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    kill_after: Option<Duration>,
    limit: Duration,
) -> Exit {
    let started = Instant::now();
    let mut child = bed
        .command(config, args, env)
        .spawn()
        .expect("the binary runs");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s).await;
        String::from_utf8_lossy(&s).into_owned()
    });
    let stderr = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s).await;
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut killed = false;
    if let Some(delay) = kill_after {
        if tokio::time::timeout(delay, child.wait()).await.is_err() {
            child.start_kill().expect("SIGKILL is delivered");
            killed = true;
        }
    }
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!(
                "amg-token-rotator {args:?} did not finish within {limit:?}:\n{}",
                stderr.await.unwrap_or_default()
            );
        }
    };
    Exit {
        status,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
        elapsed: started.elapsed(),
        killed,
    }
}

/// `once`, to completion (at most 120 s).
pub async fn once(bed: &Bed, config: &std::path::Path, env: &[(&str, &str)]) -> Exit {
    run_bin(bed, config, &["once"], env, None, Duration::from_secs(120)).await
}

/// `once` with the crash point `point` (`name` or `name:n`) armed: it must abort there.
/// Returns the run; panics with its output when it did not end by that abort.
pub async fn once_crashing_at(bed: &Bed, config: &std::path::Path, point: &str) -> Exit {
    let run = run_bin(
        bed,
        config,
        &["once"],
        &[("AMG_ROTATOR_FAILPOINT", point)],
        None,
        Duration::from_secs(120),
    )
    .await;
    let name = point.split(':').next().unwrap();
    assert_eq!(
        run.signal(),
        Some(SIGABRT),
        "crash point {point} was not reached (the run must abort there):\n{}",
        run.all_output()
    );
    assert!(
        run.stderr.contains(&format!("failpoint {name}: aborting")),
        "the abort did not come from crash point {point}:\n{}",
        run.all_output()
    );
    run
}

// ---------------------------------------------------------------------------------------------
// Credentials and the contract's invariants.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A service account's tokens.
    Token,
    /// A legacy API key (Grafana 9 and 10); `name` is the key's base name.
    ApiKey,
}

/// One managed credential as the tests see it.
#[derive(Debug, Clone)]
pub struct Cred {
    pub kind: Kind,
    pub ws: String,
    /// The service account, or the API key's base name.
    pub name: String,
    pub secret: String,
}

impl Cred {
    pub fn token(ws: &str, sa: &str) -> Cred {
        Cred {
            kind: Kind::Token,
            ws: ws.into(),
            name: sa.into(),
            secret: format!("amg-token-rotator/{ws}/{sa}"),
        }
    }

    pub fn key(ws: &str, base: &str) -> Cred {
        Cred {
            kind: Kind::ApiKey,
            ws: ws.into(),
            name: base.into(),
            secret: format!("amg-token-rotator/{ws}/{base}"),
        }
    }

    /// Does a token or key of this name belong to this credential, by the rotator's naming?
    pub fn owns(&self, name: &str) -> bool {
        match self.kind {
            // `<prefix>-<sa>-<timestamp>` (overlap) or `<prefix>-<sa>` (recreate); the
            // listing is already per service account.
            Kind::Token => name.starts_with(&format!("{PREFIX}-")),
            Kind::ApiKey => name.starts_with(&format!("{PREFIX}-{}-", self.name)),
        }
    }
}

/// A token or API key that exists in the emulator now.
#[derive(Debug, Clone)]
pub struct Live {
    /// Token ID; for API keys, the key name.
    pub id: String,
    pub name: String,
    pub key: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The tokens (or, for an API-key credential, the workspace's API keys) that exist now.
pub fn live(bed: &Bed, cred: &Cred) -> Vec<Live> {
    let state = bed.amg.state();
    let Some(ws) = state.workspaces.iter().find(|w| w.id == cred.ws) else {
        return Vec::new();
    };
    match cred.kind {
        Kind::Token => ws
            .service_accounts
            .iter()
            .find(|s| s.name == cred.name)
            .map(|s| {
                s.tokens
                    .iter()
                    .map(|t| Live {
                        id: t.id.clone(),
                        name: t.name.clone(),
                        key: t.key.clone(),
                        created_at: t.created_at,
                        // The rotator's tokens always have an expiry; one without never expires.
                        expires_at: t.expires_at.unwrap_or(i64::MAX),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Kind::ApiKey => ws
            .api_keys
            .iter()
            .map(|k| Live {
                id: k.key_name.clone(),
                name: k.key_name.clone(),
                key: k.key.clone(),
                created_at: k.created_at,
                expires_at: k.expires_at,
            })
            .collect(),
    }
}

/// The JSON of the version carrying `stage`, `Ok(None)` when no version carries it.
pub async fn stage_json(
    bed: &Bed,
    secret: &str,
    stage: &str,
) -> Result<Option<serde_json::Value>, String> {
    let Some(versions) = bed.versions(secret).await else {
        return Ok(None);
    };
    if !versions.values().flatten().any(|s| s == stage) {
        return Ok(None);
    }
    let v = bed
        .sm
        .get_secret_value()
        .secret_id(secret)
        .version_stage(stage)
        .send()
        .await
        .map_err(|e| format!("GetSecretValue {secret} {stage}: {e:?}"))?;
    let text = v.secret_string().unwrap_or_default();
    serde_json::from_str(text)
        .map(Some)
        .map_err(|_| format!("{secret} {stage}: the value is not the rotator's JSON"))
}

/// What a staged version references: the token ID, or the API key's name.
fn referenced_id(cred: &Cred, doc: &serde_json::Value) -> Option<String> {
    let field = match cred.kind {
        Kind::Token => "tokenId",
        Kind::ApiKey => "keyName",
    };
    doc[field].as_str().map(str::to_owned)
}

/// The IDs (token IDs, or key names) the AWSCURRENT, AWSPREVIOUS and AWSPENDING versions
/// reference.
pub async fn referenced(bed: &Bed, cred: &Cred) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for stage in [AWSCURRENT, AWSPREVIOUS, AWSPENDING] {
        if let Some(doc) = stage_json(bed, &cred.secret, stage).await? {
            if let Some(id) = referenced_id(cred, &doc) {
                out.push((stage.to_owned(), id));
            }
        }
    }
    // API keys made but not published when a pass found their name taken: the secret's
    // unpublished-keys record accounts for them until a later pass deletes them.
    if cred.kind == Kind::ApiKey {
        if let Ok(d) = bed
            .sm
            .describe_secret()
            .secret_id(&cred.secret)
            .send()
            .await
        {
            let tags = d
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect();
            for u in amg_token_rotator::credential::records::unpublished_keys(&tags) {
                out.push((
                    "unpublished-keys record".to_owned(),
                    format!("amgrot-{}-{}", cred.name, u.generation),
                ));
            }
        }
    }
    Ok(out)
}

/// Contract item 1, after a clean pass: AWSCURRENT holds the key of a token (or API key) that
/// exists, that the workspace's Grafana accepts, and that is not within `rotate_before` of its
/// expiry. Returns the ID it references.
pub async fn check_current(bed: &Bed, cred: &Cred, rotate_before_s: i64) -> Result<String, String> {
    let doc = stage_json(bed, &cred.secret, AWSCURRENT)
        .await?
        .ok_or_else(|| format!("{}: no AWSCURRENT version", cred.secret))?;
    let id = referenced_id(cred, &doc)
        .ok_or_else(|| format!("{}: AWSCURRENT names no token", cred.secret))?;
    let key = doc["token"]
        .as_str()
        .ok_or_else(|| format!("{}: AWSCURRENT holds no key", cred.secret))?;
    let found = live(bed, cred).into_iter().find(|t| t.id == id);
    let Some(t) = found else {
        return Err(format!(
            "{}: AWSCURRENT references {id}, which does not exist",
            cred.secret
        ));
    };
    if t.key != key {
        return Err(format!(
            "{}: AWSCURRENT's key is not the key of {id}",
            cred.secret
        ));
    }
    if !bed.key_works(&cred.ws, key).await {
        return Err(format!(
            "{}: the workspace's Grafana rejects AWSCURRENT's key ({id})",
            cred.secret
        ));
    }
    let left = t.expires_at - now_epoch();
    if left <= rotate_before_s {
        return Err(format!(
            "{}: AWSCURRENT's token {id} is due: it expires in {left} s, rotate_before is {rotate_before_s} s",
            cred.secret
        ));
    }
    Ok(id)
}

/// Contract item 1 as it must hold at every instant, a crash window included (overlap and API
/// keys): when AWSCURRENT exists, the token it references has not been deleted.
pub async fn check_current_exists(bed: &Bed, cred: &Cred) -> Result<(), String> {
    let Some(doc) = stage_json(bed, &cred.secret, AWSCURRENT).await? else {
        return Ok(());
    };
    let id = referenced_id(cred, &doc)
        .ok_or_else(|| format!("{}: AWSCURRENT names no token", cred.secret))?;
    if live(bed, cred).iter().any(|t| t.id == id) {
        Ok(())
    } else {
        Err(format!(
            "{}: AWSCURRENT references {id}, which was deleted",
            cred.secret
        ))
    }
}

/// Owned tokens (or keys) that no AWSCURRENT / AWSPREVIOUS / AWSPENDING version references
/// (nor, for keys, the secret's unpublished-keys record).
pub async fn unreferenced(bed: &Bed, cred: &Cred) -> Result<Vec<Live>, String> {
    let refs: Vec<String> = referenced(bed, cred)
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    Ok(live(bed, cred)
        .into_iter()
        .filter(|t| cred.owns(&t.name) && !refs.contains(&t.id))
        .collect())
}

/// Contract item 3 after a pass that started at `pass_started` (epoch s): every owned token
/// is referenced by a staged version, or is one the planner documents it keeps: created less
/// than `margin_s` before the pass (an orphan it may not delete yet; the margin is
/// `max(orphan_margin, grace_period)`, a superseded token that lost its AWSPREVIOUS label to a
/// second rotation is kept for the grace period).
pub async fn check_accounted(
    bed: &Bed,
    cred: &Cred,
    pass_started: i64,
    margin_s: i64,
) -> Result<(), String> {
    let stray: Vec<String> = unreferenced(bed, cred)
        .await?
        .into_iter()
        // Emulator times are whole seconds: one second of slack.
        .filter(|t| t.created_at + margin_s + 1 < pass_started)
        .map(|t| {
            format!(
                "{} ({}, created {} s before the pass)",
                t.name,
                t.id,
                pass_started - t.created_at
            )
        })
        .collect();
    if stray.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: owned tokens no version accounts for: {stray:?}",
            cred.secret
        ))
    }
}

/// Contract item 3, strictly: no owned token is unreferenced.
pub async fn check_none_unreferenced(bed: &Bed, cred: &Cred) -> Result<(), String> {
    let stray: Vec<String> = unreferenced(bed, cred)
        .await?
        .into_iter()
        .map(|t| format!("{} ({})", t.name, t.id))
        .collect();
    if stray.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: owned tokens no version references: {stray:?}",
            cred.secret
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator's call log.

/// The sequence number of the last call logged so far (0 when none).
pub fn last_seq(bed: &Bed) -> u64 {
    bed.amg.calls().iter().map(|c| c.seq).max().unwrap_or(0)
}

/// Tokens (or keys) actually minted for `cred` since call `since`: successful
/// CreateWorkspaceServiceAccountToken / CreateWorkspaceApiKey calls.
pub fn minted_since(bed: &Bed, cred: &Cred, since: u64) -> usize {
    let sa_id = match cred.kind {
        Kind::Token => bed
            .amg
            .state()
            .workspaces
            .iter()
            .find(|w| w.id == cred.ws)
            .and_then(|w| w.service_accounts.iter().find(|s| s.name == cred.name))
            .map(|s| s.id.clone()),
        Kind::ApiKey => None,
    };
    let op = match cred.kind {
        Kind::Token => "CreateWorkspaceServiceAccountToken",
        Kind::ApiKey => "CreateWorkspaceApiKey",
    };
    bed.amg
        .calls()
        .iter()
        .filter(|c| {
            c.seq > since
                && c.operation == op
                && c.status == 200
                && c.workspace_id.as_deref() == Some(cred.ws.as_str())
                && (cred.kind == Kind::ApiKey || c.service_account_id == sa_id)
        })
        .count()
}

/// Calls of `operation` since call `since`.
pub fn calls_since(bed: &Bed, operation: &str, since: u64) -> usize {
    bed.amg
        .calls()
        .iter()
        .filter(|c| c.seq > since && c.operation == operation)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Arranging states.

/// Brings the token (or key) AWSCURRENT references to `expires_in` seconds from now: what
/// the passing of time does, without waiting for it.
///
/// A token's expiry is read from AMG, so the emulator's is enough. An API key's cannot be
/// (keys cannot be listed): the rotator reads it from the secret, its record. So the record is
/// moved too, as a new AWSCURRENT version the rotator could have written (same key, same
/// name, a version ID from `key_version_id`), promoted as the rotator promotes, AWSPREVIOUS left
/// where it was.
pub async fn set_current_expiry(bed: &Bed, cred: &Cred, expires_in: i64) {
    static REWRITES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    let doc = stage_json(bed, &cred.secret, AWSCURRENT)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{} has an AWSCURRENT version", cred.secret));
    let at = now_epoch() + expires_in;
    let ok = match cred.kind {
        Kind::Token => {
            bed.set_token_expiry(
                &cred.ws,
                doc["serviceAccountId"].as_str().unwrap(),
                doc["tokenId"].as_str().unwrap(),
                at,
            )
            .await
        }
        Kind::ApiKey => {
            let name = doc["keyName"].as_str().unwrap();
            let ok = bed.amg.set_api_key_expiry(&cred.ws, name, at);
            let mut record = doc.clone();
            record["expiresAt"] = rfc3339(at).into();
            let n = REWRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let version = amg_token_rotator::credential::api_key::key_version_id(
                &cred.ws,
                name,
                chrono::DateTime::from_timestamp(at - 1_000_000 * n, 0).unwrap(),
            );
            // Written under a label of its own, then promoted the way the rotator promotes
            // (moto, unlike Secrets Manager, leaves two AWSCURRENT labels when a version put
            // with AWSCURRENT follows an UpdateSecretVersionStage promotion).
            bed.sm
                .put_secret_value()
                .secret_id(&cred.secret)
                .client_request_token(&version)
                .secret_string(record.to_string())
                .version_stages("TEST-REWRITE")
                .send()
                .await
                .expect("PutSecretValue of the moved record");
            let versions = bed.versions(&cred.secret).await.unwrap();
            let holder = |stage: &str| {
                versions
                    .iter()
                    .find(|(_, stages)| stages.iter().any(|s| s == stage))
                    .map(|(id, _)| id.clone())
            };
            let (current, previous) = (holder(AWSCURRENT), holder(AWSPREVIOUS));
            // A stale AWSPENDING label left on the current version (a tidy-up that failed)
            // travels with it: the record it names is still the current one.
            let pending_on_current = current.is_some() && holder(AWSPENDING) == current;
            bed.sm
                .update_secret_version_stage()
                .secret_id(&cred.secret)
                .version_stage(AWSCURRENT)
                .move_to_version_id(&version)
                .set_remove_from_version_id(current.clone())
                .send()
                .await
                .expect("UpdateSecretVersionStage of the moved record");
            // Promoting moved AWSPREVIOUS to the old record of the same key; put it back where
            // it was: only time has passed, no rotation happened.
            bed.sm
                .update_secret_version_stage()
                .secret_id(&cred.secret)
                .version_stage(AWSPREVIOUS)
                .set_move_to_version_id(previous)
                .set_remove_from_version_id(current.clone())
                .send()
                .await
                .expect("UpdateSecretVersionStage restoring AWSPREVIOUS");
            if pending_on_current {
                bed.sm
                    .update_secret_version_stage()
                    .secret_id(&cred.secret)
                    .version_stage(AWSPENDING)
                    .move_to_version_id(&version)
                    .set_remove_from_version_id(current)
                    .send()
                    .await
                    .expect("UpdateSecretVersionStage moving a stale AWSPENDING");
            }
            bed.sm
                .update_secret_version_stage()
                .secret_id(&cred.secret)
                .version_stage("TEST-REWRITE")
                .remove_from_version_id(&version)
                .send()
                .await
                .expect("UpdateSecretVersionStage removing the test label");
            ok
        }
    };
    assert!(ok, "{}: the current token exists", cred.secret);
}

pub fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------------------------------------
// Secret hygiene.

/// Every secret value moto holds, every version (deprecated ones included).
pub async fn all_secret_values(bed: &Bed) -> Vec<String> {
    let mut values = Vec::new();
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let page = bed
            .sm
            .list_secrets()
            .set_next_token(next.clone())
            .send()
            .await
            .expect("ListSecrets");
        names.extend(
            page.secret_list()
                .iter()
                .filter_map(|s| s.name().map(str::to_owned)),
        );
        next = page.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    for name in names {
        let Ok(ids) = bed
            .sm
            .list_secret_version_ids()
            .secret_id(&name)
            .include_deprecated(true)
            .send()
            .await
        else {
            continue;
        };
        for v in ids.versions() {
            let Some(id) = v.version_id() else { continue };
            if let Ok(got) = bed
                .sm
                .get_secret_value()
                .secret_id(&name)
                .version_id(id)
                .send()
                .await
            {
                if let Some(s) = got.secret_string() {
                    values.push(s.to_owned());
                }
            }
        }
    }
    values
}

/// The first thing in `text` shaped like a Grafana key (`glsa_` and at least 16 letters or
/// digits), so keys minted and deleted within one pass — never visible in any state snapshot —
/// are caught too.
pub fn key_shaped(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find("glsa_") {
        let tail = &rest[at + 5..];
        let run = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if run >= 16 {
            return Some(format!("glsa_{}…", &tail[..6]));
        }
        rest = tail;
    }
    None
}

/// Checks `text` (named `what`) against every known key, the key shape, and secret JSON.
pub fn leaks(what: &str, text: &str, keys: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for key in keys {
        if key.len() < 37 {
            continue;
        }
        if text.contains(key.as_str()) || text.contains(&key[5..37]) {
            found.push(format!("{what}: contains a key the emulator issued"));
        }
    }
    if let Some(k) = key_shaped(text) {
        found.push(format!(
            "{what}: contains something shaped like a key ({k})"
        ));
    }
    for needle in [
        "\"token\":\"",
        "\\\"token\\\":\\\"",
        "\"token\": \"",
        "\\\"token\\\": \\\"",
    ] {
        if text.contains(needle) {
            found.push(format!("{what}: contains secret JSON ({needle})"));
        }
    }
    found.sort();
    found.dedup();
    found
}

// ---------------------------------------------------------------------------------------------
// A minimal `run` daemon, to scrape `/metrics`.

/// `amg-token-rotator run` on a free 127.0.0.1 port; killed on drop.
pub struct Served {
    child: tokio::process::Child,
    pub port: u16,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Served {
    /// Starts `run` and waits (at most 30 s) until `/metrics` answers.
    pub async fn start(bed: &Bed, config: &std::path::Path, env: &[(&str, &str)]) -> Served {
        for _ in 0..3 {
            let port = crate::support::free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut all: Vec<(&str, &str)> = vec![("AMG_ROTATOR__DAEMON__LISTEN", &listen)];
            all.extend_from_slice(env);
            let mut child = bed
                .command(config, &["run"], &all)
                .spawn()
                .expect("the binary runs");
            let mut pipe = child.stderr.take().unwrap();
            let stderr = Arc::new(Mutex::new(String::new()));
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let mut served = Served {
                child,
                port,
                stderr,
                http: reqwest::Client::new(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if served.get("/metrics").await.is_some() {
                    return served;
                }
                if let Ok(Some(_)) = served.child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("the daemon did not start serving");
    }

    pub async fn get(&self, path: &str) -> Option<String> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("/metrics answers")
    }

    /// Waits (at most `within`) for a scrape that satisfies `ok`, and returns it.
    pub async fn metrics_until(&self, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics().await;
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape within {within:?} met the condition; last:\n{text}\nlogs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (at most `within`) for the exit code.
    pub async fn stop(&mut self, within: Duration) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap().code(),
            Err(_) => panic!(
                "the daemon did not stop within {within:?}:\n{}",
                self.logs()
            ),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The sum of the samples of `name` whose labels include every `key="value"` of `labels`.
pub fn metric_sum(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Logs, and an endpoint that never answers.

/// The JSON log events in `stderr` (configure `[log] format = "json"`).
pub fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e.is_object())
        .collect()
}

/// WARN and ERROR events about credential `name` (a service account or an API key's base).
pub fn failure_events(stderr: &str, name: &str) -> Vec<serde_json::Value> {
    events(stderr)
        .into_iter()
        .filter(|e| matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
        .filter(|e| e["service_account"] == name || e["api_key"] == name)
        .collect()
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers: every call to it
/// hangs until the client's own timeout. Stops when dropped.
pub struct BlackHole {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                // Bounded: a pass opens a handful of connections.
                if held.len() < 1000 {
                    held.push(stream);
                }
            }
        });
        BlackHole { addr, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    crate::support::free_port()
}
