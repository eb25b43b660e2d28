//! The bed: the AMG emulator (in this process, real HTTP), moto's server behind the
//! fault-injecting proxy, and a scratch directory for configuration; the real
//! `amg-token-rotator` binary run to completion against them, with nothing in its environment
//! but test credentials and the local endpoints; and the reads tests make behind its back (secret
//! versions and tags through an SDK client on moto, the emulator's tokens and call log, whether
//! the Grafana stand-in accepts a key).
//!
//! Everything listens on 127.0.0.1 only; every wait on a process or an endpoint is bounded (a run
//! of the binary 120 s, a key probe 5 s, moto's start as in `moto`); the SDK client on moto has
//! the SDK's own timeouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use amg_emulator::{Emulator, EmulatorConfig, Seed};
use aws_sdk_secretsmanager::Client as SmClient;

use super::moto::Moto;
use super::proxy::SmProxy;
use super::{Run, REGION};

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
            // GetCallerIdentity (where new secrets will be) and AssumeRole: never real AWS.
            ("AWS_ENDPOINT_URL_STS", self.moto.endpoint()),
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

    /// Creates secret `name` with no value, tagged as the rotator tags its own: what a first
    /// run whose verification failed leaves, or a secret made by hand for the rotator.
    pub async fn create_empty_secret(&self, name: &str) {
        self.sm
            .create_secret()
            .name(name)
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key("managed-by")
                    .value("amg-token-rotator")
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
    }

    /// The tags of secret `name`; empty when it does not exist.
    pub async fn secret_tags(&self, name: &str) -> BTreeMap<String, String> {
        let Ok(d) = self.sm.describe_secret().secret_id(name).send().await else {
            return BTreeMap::new();
        };
        d.tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect()
    }

    /// Writes tag `key` = `value` on secret `name`.
    pub async fn tag_secret(&self, name: &str, key: &str, value: &str) {
        self.sm
            .tag_resource()
            .secret_id(name)
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("TagResource {name}: {e:?}"));
    }

    /// The verification backoff the rotator recorded on secret `name`, if any.
    pub async fn verification_record(
        &self,
        name: &str,
    ) -> Option<amg_token_rotator::credential::records::VerifyBackoff> {
        amg_token_rotator::credential::records::VerifyBackoff::from_tags(
            &self.secret_tags(name).await,
        )
    }

    /// The record of the last clean audit on secret `name`, if any.
    pub async fn audit_record(
        &self,
        name: &str,
    ) -> Option<amg_token_rotator::credential::records::Audit> {
        amg_token_rotator::credential::records::Audit::from_tags(&self.secret_tags(name).await)
    }

    /// Sets a token's expiry in the emulator: what the passing of time does to a token, without
    /// waiting for it. The rotator's record of its last audit (`records::Audit`), which holds
    /// the expiry AMG reported, follows: it would have been read from AMG again by the time
    /// that much time had passed. `false`: no such token.
    pub async fn set_token_expiry(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        token_id: &str,
        expires_at_epoch: i64,
    ) -> bool {
        if !self
            .amg
            .set_token_expiry(workspace_id, service_account_id, token_id, expires_at_epoch)
        {
            return false;
        }
        for (name, mut record) in self.audit_records().await {
            if record.token_id != token_id {
                continue;
            }
            record.expires_at =
                chrono::DateTime::from_timestamp(expires_at_epoch, 0).expect("an epoch in range");
            self.write_audit_record(&name, &record).await;
        }
        true
    }

    /// Moves every audit record's next audit `secs` seconds earlier, as if that much time had
    /// gone by: the audits a pass that much later would carry come due, and no others. Returns
    /// how many records it moved.
    pub async fn advance_audits(&self, secs: i64) -> usize {
        let records = self.audit_records().await;
        let moved = records.len();
        for (name, mut record) in records {
            record.next -= chrono::Duration::seconds(secs);
            self.write_audit_record(&name, &record).await;
        }
        moved
    }

    /// Every secret's audit record, by secret name: ListSecrets 100 at a time, as the rotator's
    /// census reads them. At most 1,000 pages (100,000 secrets), more than any bed holds.
    async fn audit_records(&self) -> Vec<(String, amg_token_rotator::credential::records::Audit)> {
        const MAX_PAGES: usize = 1000;
        let mut records = Vec::new();
        let mut next = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .sm
                .list_secrets()
                .set_next_token(next)
                .max_results(100)
                .send()
                .await
                .expect("ListSecrets");
            for s in page.secret_list() {
                let tags = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect();
                if let Some(record) =
                    amg_token_rotator::credential::records::Audit::from_tags(&tags)
                {
                    records.push((s.name().unwrap_or_default().to_owned(), record));
                }
            }
            next = page.next_token().map(str::to_owned);
            if next.is_none() {
                return records;
            }
        }
        panic!("ListSecrets: more than {MAX_PAGES} pages");
    }

    /// Makes the next audit of secret `name`'s credential come now, as if its interval had
    /// gone by.
    pub async fn audit_now(&self, name: &str) {
        let mut record = self
            .audit_record(name)
            .await
            .unwrap_or_else(|| panic!("{name} has no audit record"));
        record.next = chrono::Utc::now() - chrono::Duration::seconds(1);
        self.write_audit_record(name, &record).await;
    }

    async fn write_audit_record(
        &self,
        name: &str,
        record: &amg_token_rotator::credential::records::Audit,
    ) {
        let value = record
            .tag_value()
            .expect("a record the rotator wrote fits a tag");
        self.tag_secret(
            name,
            amg_token_rotator::credential::records::AUDIT_TAG,
            &value,
        )
        .await;
    }

    /// Moves the verification failure recorded on secret `name` `secs` seconds into the past,
    /// as if that much time had gone by, so the next pass may try again.
    pub async fn age_verification_record(&self, name: &str, secs: i64) {
        let mut record = self
            .verification_record(name)
            .await
            .unwrap_or_else(|| panic!("{name} has no verification record"));
        record.at -= chrono::Duration::seconds(secs);
        self.tag_secret(
            name,
            amg_token_rotator::credential::records::VERIFICATION_TAG,
            &record.tag_value(),
        )
        .await;
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
