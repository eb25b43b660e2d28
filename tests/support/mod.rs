//! The test bed: the AMG emulator (in-process, real HTTP on 127.0.0.1), Secrets Manager on
//! moto's server (a real process on 127.0.0.1) behind a small fault-injecting proxy, and the
//! real `amg-token-rotator` binary pointed at them through the standard AWS endpoint variables.
//!
//! Everything listens on 127.0.0.1 only; every wait is bounded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use amg_emulator::{Emulator, EmulatorConfig, Seed};
use aws_sdk_secretsmanager::Client as SmClient;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const REGION: &str = "us-east-1";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `moto_server` from the project's venv (`.venv`), created on first use with `moto[server]`.
/// `AMG_TEST_MOTO_SERVER` names another executable.
pub fn moto_server_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("AMG_TEST_MOTO_SERVER") {
            return PathBuf::from(p);
        }
        let venv = workspace_root().join(".venv");
        let bin = venv.join("bin/moto_server");
        if bin.exists() {
            return bin;
        }
        // Serialize creation across test processes with a lock directory.
        let lock = workspace_root().join(".venv.lock");
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::fs::create_dir(&lock).is_err() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}",
                lock.display()
            );
            std::thread::sleep(Duration::from_millis(500));
            if bin.exists() {
                return bin;
            }
        }
        let run = |cmd: &mut std::process::Command| {
            let status = cmd.status().expect("python3 runs");
            assert!(status.success(), "{cmd:?} failed");
        };
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv));
        run(std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg("moto[server]>=5,<6"));
        let _ = std::fs::remove_dir(&lock);
        bin
    })
    .clone()
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's server, killed on drop.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = moto_server_path();
        let http = reqwest::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let child = std::process::Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = Moto { port, child };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(r) = http
                    .get(format!("http://127.0.0.1:{port}/moto-api/"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    if r.status().is_success() {
                        return moto;
                    }
                }
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fault to inject in front of Secrets Manager.
#[derive(Debug, Clone)]
pub struct SmFault {
    /// The operation, as in `X-Amz-Target: secretsmanager.<Operation>`; `*` for any.
    pub operation: String,
    /// Calls of it to fail; `u32::MAX` for all.
    pub times: u32,
    pub status: u16,
    pub error_type: String,
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<SmFault>,
    /// Operations held this long, then answered 500 without reaching moto: a call that hangs
    /// and never takes effect.
    stalls: Vec<(String, Duration)>,
    /// A fraction of calls answered with 500 InternalServiceError or 400 ThrottlingException.
    error_rate: f64,
    /// Operations forwarded to moto (so they take effect) whose answer is then replaced by a
    /// 500: a write that landed although the caller was told it failed. Calls left per entry.
    lost_answers: Vec<(String, u32)>,
    /// Members merged into every DescribeSecret answer, as real Secrets Manager would report
    /// them where moto cannot (e.g. `RotationEnabled`, which moto sets only by invoking a
    /// rotation Lambda through Docker).
    describe_patch: Option<serde_json::Map<String, serde_json::Value>>,
    rng: fastrand::Rng,
    injected: usize,
    /// Operations seen, in order.
    calls: Vec<String>,
}

/// A wire-level proxy in front of moto that can fail chosen Secrets Manager operations, as a
/// real outage or a permission problem would.
#[derive(Clone)]
pub struct SmProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl SmProxy {
    pub async fn start(upstream: String) -> SmProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move { forward(req, &st, &client, &upstream).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        SmProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail(&self, operation: &str, times: u32, status: u16, error_type: &str) {
        self.state.lock().unwrap().faults.push(SmFault {
            operation: operation.into(),
            times,
            status,
            error_type: error_type.into(),
        });
    }

    /// Holds every call of `operation` for `delay`, then answers 500 InternalServiceError
    /// without forwarding it: the call never takes effect.
    pub fn stall(&self, operation: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .stalls
            .push((operation.into(), delay));
    }

    /// Forwards the next `times` calls of `operation` to moto, then answers each with 500
    /// InternalServiceError: the call takes effect, and the caller hears that it failed.
    pub fn lose_answers(&self, operation: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .lost_answers
            .push((operation.into(), times));
    }

    /// Merges `members` into every DescribeSecret answer.
    pub fn patch_describe(&self, members: serde_json::Value) {
        self.state.lock().unwrap().describe_patch = members.as_object().cloned();
    }

    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.stalls.clear();
        s.error_rate = 0.0;
        s.lost_answers.clear();
        s.describe_patch = None;
    }

    /// Fails a fraction of all calls, half as 500 InternalServiceError, half as throttling.
    pub fn set_error_rate(&self, rate: f64, seed: u64) {
        let mut s = self.state.lock().unwrap();
        s.error_rate = rate;
        s.rng = fastrand::Rng::with_seed(seed);
    }

    /// Calls answered with an injected error so far.
    pub fn injected(&self) -> usize {
        self.state.lock().unwrap().injected
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }
}

async fn forward(
    req: Request<Incoming>,
    state: &Mutex<ProxyState>,
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("secretsmanager."))
        .unwrap_or("")
        .to_owned();
    let stall = {
        let s = state.lock().unwrap();
        s.stalls
            .iter()
            .find(|(o, _)| *o == op || o == "*")
            .map(|(_, d)| *d)
    };
    if let Some(delay) = stall {
        state.lock().unwrap().calls.push(op.clone());
        tokio::time::sleep(delay).await;
        let body = r#"{"__type":"InternalServiceError","message":"stalled by the test proxy"}"#;
        return Ok(Response::builder()
            .status(500)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "InternalServiceError")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let injected = {
        let mut s = state.lock().unwrap();
        s.calls.push(op.clone());
        let hit = s
            .faults
            .iter_mut()
            .find(|f| (f.operation == op || f.operation == "*") && f.times > 0);
        let chosen = hit.map(|f| {
            if f.times != u32::MAX {
                f.times -= 1;
            }
            (f.status, f.error_type.clone())
        });
        let random = (s.error_rate > 0.0 && s.rng.f64() < s.error_rate).then(|| {
            if s.rng.bool() {
                (500, "InternalServiceError".to_owned())
            } else {
                (400, "ThrottlingException".to_owned())
            }
        });
        let injected = chosen.or(random);
        if injected.is_some() {
            s.injected += 1;
        }
        injected
    };
    if let Some((status, error_type)) = injected {
        let body = format!(r#"{{"__type":"{error_type}","message":"injected by the test proxy"}}"#);
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", error_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter() {
        out = out.header(k, v);
    }
    let resp = match client.request(out.body(Full::new(bytes)).unwrap()).await {
        Ok(r) => r,
        Err(_) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from_static(b"upstream unreachable")))
                .unwrap())
        }
    };
    let (mut parts, body) = resp.into_parts();
    let mut bytes = body.collect().await?.to_bytes();
    let (lost, patch) = {
        let mut s = state.lock().unwrap();
        let lost = s
            .lost_answers
            .iter_mut()
            .find(|(o, n)| *o == op && *n > 0)
            .map(|(_, n)| {
                if *n != u32::MAX {
                    *n -= 1;
                }
            })
            .is_some();
        if lost {
            s.injected += 1;
        }
        let patch = (op == "DescribeSecret" && parts.status.is_success())
            .then(|| s.describe_patch.clone())
            .flatten();
        (lost, patch)
    };
    if lost {
        let body = r#"{"__type":"InternalServiceError","message":"the answer was lost by the test proxy"}"#;
        return Ok(Response::builder()
            .status(500)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "InternalServiceError")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    if let Some(patch) = patch {
        if let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice(&bytes) {
            doc.extend(patch);
            bytes = Bytes::from(serde_json::to_vec(&doc).expect("JSON"));
            parts.headers.remove("content-length");
        }
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Emulator + moto + proxy + a scratch directory for configuration.
pub struct Bed {
    pub amg: Emulator,
    pub moto: Moto,
    pub proxy: SmProxy,
    pub sm: SmClient,
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub async fn start(seed: Seed) -> Bed {
        Bed::start_with(EmulatorConfig::new().with_seed(seed)).await
    }

    /// A bed whose emulator has more than a seed (a clock offset, faults).
    pub async fn start_with(config: EmulatorConfig) -> Bed {
        let amg = Emulator::start(config).await.expect("emulator starts");
        let moto = Moto::start().await;
        let proxy = SmProxy::start(moto.endpoint()).await;
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new(REGION))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        Bed {
            amg,
            sm: SmClient::from_conf(conf),
            moto,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `config.toml` into the scratch directory and returns its path.
    pub fn config(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn empty_file(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        if !path.exists() {
            std::fs::write(&path, "").unwrap();
        }
        path.display().to_string()
    }

    /// The environment the rotator runs with: only test credentials and the local endpoints.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            ("AWS_ENDPOINT_URL_GRAFANA", self.amg.endpoint()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", self.proxy.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", self.empty_file("aws-config")),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.empty_file("aws-credentials"),
            ),
            // Keep tests quick when a call fails for good, and not paced by the production rate.
            ("AMG_ROTATOR__AWS__RETRY_BUDGET", "10s".into()),
            (
                "AMG_ROTATOR__AWS__GRAFANA_REQUESTS_PER_SECOND",
                "200".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn command(
        &self,
        config: &Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_amg-token-rotator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(self.env())
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary to completion (at most 120 s).
    pub async fn run(&self, config: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let child = self
            .command(config, args, extra_env)
            .spawn()
            .expect("binary runs");
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the rotator finishes within 120 s")
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn once(&self, config: &Path) -> Run {
        self.run(config, &["once"], &[]).await
    }

    /// An aws-sdk-grafana client on the emulator, for arranging states by hand.
    pub fn grafana_client(&self) -> aws_sdk_grafana::Client {
        let conf = aws_sdk_grafana::Config::builder()
            .behavior_version(aws_sdk_grafana::config::BehaviorVersion::latest())
            .region(aws_sdk_grafana::config::Region::new(REGION))
            .endpoint_url(self.amg.endpoint())
            .credentials_provider(aws_sdk_grafana::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_grafana::Client::from_conf(conf)
    }

    /// The secret's version id → stages, or `None` when missing.
    pub async fn versions(&self, name: &str) -> Option<BTreeMap<String, Vec<String>>> {
        match self.sm.describe_secret().secret_id(name).send().await {
            Ok(d) => Some(
                d.version_ids_to_stages()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            ),
            Err(_) => None,
        }
    }

    /// The mark the rotator puts at the end of the names of tokens it mints for secret `name`
    /// (which must exist), as a crashed pass would have named them.
    pub async fn secret_mark(&self, name: &str) -> String {
        let d = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeSecret {name}: {e:?}"));
        amg_token_rotator::credential::token::secret_mark(&amg_token_rotator::model::SecretState {
            arn: d.arn().unwrap_or_default().to_owned(),
            name: d.name().unwrap_or(name).to_owned(),
            ..Default::default()
        })
    }

    /// The verification backoff the rotator recorded on secret `name`, if any.
    pub async fn verification_record(
        &self,
        name: &str,
    ) -> Option<amg_token_rotator::credential::records::VerifyBackoff> {
        let d = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .ok()?;
        let tags = d
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect();
        amg_token_rotator::credential::records::VerifyBackoff::from_tags(&tags)
    }

    /// Moves the verification failure recorded on secret `name` `secs` seconds into the past,
    /// as if that much time had gone by, so the next pass may try again.
    pub async fn age_verification_record(&self, name: &str, secs: i64) {
        let mut record = self
            .verification_record(name)
            .await
            .unwrap_or_else(|| panic!("{name} has no verification record"));
        record.at -= chrono::Duration::seconds(secs);
        self.sm
            .tag_resource()
            .secret_id(name)
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(amg_token_rotator::credential::records::VERIFICATION_TAG)
                    .value(record.tag_value())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("TagResource {name}: {e:?}"));
    }

    /// The JSON document of the version carrying `stage`.
    pub async fn secret_json(&self, name: &str, stage: &str) -> serde_json::Value {
        let v = self
            .sm
            .get_secret_value()
            .secret_id(name)
            .version_stage(stage)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetSecretValue {name} {stage}: {e:?}"));
        serde_json::from_str(v.secret_string().unwrap()).unwrap()
    }

    /// Tokens of one service account, from the emulator's state.
    pub fn tokens(&self, workspace: &str, service_account: &str) -> Vec<amg_emulator::Token> {
        let state = self.amg.state();
        state
            .workspaces
            .iter()
            .find(|w| w.id == workspace)
            .and_then(|w| {
                w.service_accounts
                    .iter()
                    .find(|s| s.name == service_account)
            })
            .map(|s| s.tokens.clone())
            .unwrap_or_default()
    }

    pub fn service_account_id(&self, workspace: &str, service_account: &str) -> String {
        self.amg
            .state()
            .workspaces
            .iter()
            .find(|w| w.id == workspace)
            .and_then(|w| {
                w.service_accounts
                    .iter()
                    .find(|s| s.name == service_account)
            })
            .map(|s| s.id.clone())
            .expect("service account exists")
    }

    /// Every key the emulator has ever issued that is still stored.
    pub fn all_keys(&self) -> Vec<String> {
        let state = self.amg.state();
        let mut keys = Vec::new();
        for w in &state.workspaces {
            for sa in &w.service_accounts {
                keys.extend(sa.tokens.iter().map(|t| t.key.clone()));
            }
            keys.extend(w.api_keys.iter().map(|k| k.key.clone()));
        }
        keys
    }

    /// Calls the emulator logged for `operation`.
    pub fn count_calls(&self, operation: &str) -> usize {
        self.amg
            .calls()
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// Does the Grafana stand-in accept this key for the workspace?
    pub async fn key_works(&self, workspace: &str, key: &str) -> bool {
        let url = format!("{}/api/org/", self.amg.grafana_url(workspace));
        reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }
}

/// A seeded token: `(name, created seconds ago, expires in seconds)`.
pub type TokenSpec<'a> = (&'a str, i64, i64);
/// A seeded service account and its tokens.
pub type AccountSpec<'a> = (&'a str, &'a [TokenSpec<'a>]);

/// A seed workspace with service accounts and their tokens.
pub fn workspace(id: &str, accounts: &[AccountSpec<'_>]) -> amg_emulator::WorkspaceSeed {
    amg_emulator::WorkspaceSeed {
        id: id.into(),
        name: Some(format!("ws-{}", &id[2..6])),
        service_accounts: accounts
            .iter()
            .map(|(name, tokens)| amg_emulator::ServiceAccountSeed {
                name: name.to_string(),
                grafana_role: Some(amg_emulator::Role::Admin),
                tokens: tokens
                    .iter()
                    .map(|(n, ago, left)| amg_emulator::TokenSeed {
                        name: n.to_string(),
                        created_seconds_ago: *ago,
                        expires_in_seconds: *left,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A minimal configuration for the given workspaces and accounts, plus extra `[defaults]` lines.
pub fn config_for(workspaces: &[&str], accounts: &[&str], defaults: &str) -> String {
    let ws = workspaces
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sa = accounts
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[daemon]\nconcurrency = 4\n\n[log]\nformat = \"text\"\n\n[defaults]\n{defaults}\n\n[[targets]]\nworkspace_ids = [{ws}]\nservice_accounts = [{sa}]\n"
    )
}

// ---------------------------------------------------------------------------------------------
// The daemon (`run`) under test, its scrape, and the Prometheus tools.

/// Polls `probe` every `every` until it yields a value, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, every: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// An executable the tests need from the `prometheus` Debian package. Missing is a failure,
/// not a skip: `scripts/setup` installs it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: run scripts/setup, which installs Debian's `prometheus` \
                 package (promtool and the prometheus server)"
            )
        })
}

/// Runs `promtool` with `args`, feeding `stdin`; at most 60 s.
pub async fn promtool(args: &[&str], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool runs");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("promtool finishes within 60 s")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A parsed scrape in the text format: families from `# TYPE`, samples by name and labels.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    /// Family name → type.
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut families = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                    panic!("bad TYPE line {line:?}")
                };
                families.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            samples.push(parse_sample(line));
        }
        Scrape {
            text: text.to_owned(),
            families,
            samples,
        }
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn find<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample matching, if exactly one does.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels).as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }

    /// The sum over the matching samples (0 when none match).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }

    pub fn has_samples(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("bad sample line {line:?}"),
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let end = body.rfind('}').expect("labels close");
        let mut chars = body[..end].chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_owned();
            if key.is_empty() {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => break,
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        &body[end + 1..]
    } else {
        rest
    };
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping lists that are neither functions, aggregations nor keywords.
pub fn promql_metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    const KEYWORDS: [&str; 10] = [
        "bool", "and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN", "atan2",
    ];
    // Aggregations may put their grouping first: `sum by (le) (...)`.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = std::collections::BTreeSet::new();
    let mut i = 0;
    // After a grouping keyword, the next parenthesis holds label names.
    let mut label_list_next = false;
    // Skips to the closing `close`, stepping over quoted strings.
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = skip_to(i + 1, ')');
        } else if c == '$' {
            // A Grafana variable: $name, ${name} or $__rate_interval.
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_to(i + 1, '}');
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if GROUPING.contains(&ident.as_str()) {
                label_list_next = call;
            } else if !call
                && !KEYWORDS.contains(&ident.as_str())
                && !AGGREGATIONS.contains(&ident.as_str())
            {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// README's "Metrics" table: name → (type, labels).
pub fn readme_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README has a \"## Metrics\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`amg_rotator_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        out.insert(name, (cells[2].to_owned(), labels));
    }
    assert!(out.len() >= 10, "README metrics table not found: {out:?}");
    out
}

/// The real binary running `run`, its stderr collected line by line; killed on drop.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    pub port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Bed {
    /// Starts `run` listening on a free 127.0.0.1 port and waits (at most 30 s) until
    /// `/healthz` answers.
    pub async fn daemon(&self, config: &Path, extra_env: &[(&str, &str)]) -> Daemon {
        for _ in 0..3 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut env: Vec<(&str, &str)> = vec![("AMG_ROTATOR__DAEMON__LISTEN", &listen)];
            env.extend_from_slice(extra_env);
            let mut child = self
                .command(config, &["run"], &env)
                .spawn()
                .expect("binary runs");
            let pid = child.id().expect("running");
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let lines = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
            let mut d = Daemon {
                child,
                pid,
                port,
                stderr,
                http: reqwest::Client::new(),
            };
            let up = eventually(Duration::from_secs(30), Duration::from_millis(50), || {
                let d = &d;
                async move { d.get("/healthz").await.map(|_| ()) }
            })
            .await;
            if up.is_some() {
                return d;
            }
            match d.child.try_wait() {
                // Port taken between the probe and the bind: try another.
                Ok(Some(status)) if status.code() == Some(3) => continue,
                _ => panic!("the daemon did not start serving:\n{}", d.logs()),
            }
        }
        panic!("the daemon could not find a free port");
    }
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `(status, body)`, or `None` when nothing answers within 5 s.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(self.url(path))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    pub async fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Waits (bounded) until a scrape satisfies `ok`, and returns it.
    pub async fn scrape_until(&self, within: Duration, ok: impl Fn(&Scrape) -> bool) -> Scrape {
        match eventually(within, Duration::from_millis(100), || async {
            let s = self.scrape().await;
            ok(&s).then_some(s)
        })
        .await
        {
            Some(s) => s,
            None => panic!(
                "no scrape within {within:?} met the condition; last:\n{}\nlogs:\n{}",
                self.scrape().await.text,
                self.logs()
            ),
        }
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) with the shell's built-in kill.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", self.pid)])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Waits at most `within` for the process to exit; its exit code (`None`: killed by a
    /// signal), or `Err` with the logs when it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>, String> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(status.unwrap().code()),
            Err(_) => Err(self.logs()),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The JSON log events so far (configure `[log] format = "json"`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The JSON log events whose message contains `text`.
    pub fn events_with(&self, text: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    }

    /// Waits (bounded) for an event whose message contains `text`.
    pub async fn wait_for_event(&self, text: &str, within: Duration) -> serde_json::Value {
        eventually(within, Duration::from_millis(50), || async {
            self.events_with(text).into_iter().next()
        })
        .await
        .unwrap_or_else(|| panic!("no log event {text:?} within {within:?}:\n{}", self.logs()))
    }
}
