//! End-to-end with a real Prometheus server (Debian's `prometheus` package, installed by
//! scripts/setup): it scrapes `amg-token-rotator run`, which runs against the AMG emulator and
//! Secrets Manager on moto, every second. Queried through Prometheus's HTTP API, the expiry gauge
//! moves and the rotation counter rises after a rotation: what a user's Prometheus would see.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use amg_emulator::Seed;
use support::{eventually, free_port, tool, workspace, Bed};

const WS1: &str = "g-1111111111";

/// A Prometheus server on 127.0.0.1 with its own storage, scraping one target; killed on drop.
struct Prometheus {
    port: u16,
    _child: tokio::process::Child,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: amg-token-rotator\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let http = reqwest::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("prometheus starts");
            let ready = eventually(Duration::from_secs(30), Duration::from_millis(100), || {
                let http = &http;
                async move {
                    let r = http
                        .get(format!("http://127.0.0.1:{port}/-/ready"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .ok()?;
                    r.status().is_success().then_some(())
                }
            })
            .await;
            if ready.is_some() {
                return Prometheus {
                    port,
                    _child: child,
                    http,
                    _dir: dir,
                };
            }
            // Port taken meanwhile, or it failed: try another port.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        panic!("prometheus did not become ready on 127.0.0.1");
    }

    /// An instant query: the vector's `(labels, value)` pairs.
    async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let r = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/api/v1/query?query={}",
                self.port,
                percent_encode(promql)
            ))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the query API answers");
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        assert_eq!(body["data"]["resultType"], "vector", "{body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), v)
            })
            .collect()
    }

    /// The single value of `promql`, once it has exactly one series.
    async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    /// Waits (bounded) until the single value of `promql` satisfies `ok`.
    async fn value_until(&self, promql: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let got = eventually(within, Duration::from_millis(250), || async {
            self.value(promql).await.filter(|v| ok(*v))
        })
        .await;
        match got {
            Some(v) => v,
            None => panic!(
                "{promql} never met the condition within {within:?}; last: {:?}",
                self.query(promql).await
            ),
        }
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_the_expiry_move_and_the_rotation_counter_rise() {
    let started = Instant::now();
    let bed = Bed::start(Seed {
        workspaces: vec![workspace(WS1, &[("terraform", &[])])],
        ..Seed::default()
    })
    .await;
    // A pass every second; tokens live an hour and are replaced in their last half hour.
    let cfg = bed.config(&format!(
        "[daemon]\nschedule = \"* * * * * *\"\n\n[log]\nformat = \"json\"\n\n[defaults]\n\
         token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"10m\"\n\n\
         [[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"terraform\"]\n"
    ));
    let d = bed.daemon(&cfg, &[]).await;
    let prom = Prometheus::start(&format!("127.0.0.1:{}", d.port)).await;

    let expiry = "amg_rotator_credential_expiry_timestamp_seconds{job=\"amg-token-rotator\",workspace=\"g-1111111111\",service_account=\"terraform\",kind=\"token\"}";
    let rotations = "sum(amg_rotator_rotations_total{job=\"amg-token-rotator\",service_account=\"terraform\",outcome=\"success\"})";
    assert_eq!(
        prom.value_until(
            "up{job=\"amg-token-rotator\"}",
            Duration::from_secs(20),
            |v| v == 1.0
        )
        .await,
        1.0
    );
    // The first pass published a token that expires in an hour.
    let first = prom
        .value_until(expiry, Duration::from_secs(20), |_| true)
        .await;
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now + 3500.0..=now + 3601.0).contains(&first),
        "expiry {first}, now {now}"
    );
    assert_eq!(
        prom.value_until(rotations, Duration::from_secs(20), |_| true)
            .await,
        1.0
    );
    let first_run = "amg_rotator_rotations_total{service_account=\"terraform\",outcome=\"success\",reason=\"first_run\"}";
    assert_eq!(prom.value(first_run).await, Some(1.0));

    // Bring the token within rotate_before of its expiry: the next pass replaces it.
    let doc = bed
        .secret_json("amg-token-rotator/g-1111111111/terraform", "AWSCURRENT")
        .await;
    let sa = bed.service_account_id(WS1, "terraform");
    // At least a second later, so the new token's expiry differs from the first's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(bed.amg.set_token_expiry(
        WS1,
        &sa,
        doc["tokenId"].as_str().unwrap(),
        chrono::Utc::now().timestamp() + 600
    ));

    let second = prom
        .value_until(expiry, Duration::from_secs(30), |v| v != first)
        .await;
    assert!(second > first, "the expiry moved back: {first} -> {second}");
    assert_eq!(
        prom.value_until(rotations, Duration::from_secs(30), |v| v >= 2.0)
            .await,
        2.0
    );
    assert_eq!(
        prom.value("amg_rotator_rotations_total{service_account=\"terraform\",outcome=\"success\",reason=\"due\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(prom.value(first_run).await, Some(1.0));
    // And the secret agrees with what Prometheus shows.
    let now = bed
        .secret_json("amg-token-rotator/g-1111111111/terraform", "AWSCURRENT")
        .await;
    assert_ne!(now["tokenId"], doc["tokenId"]);
    let published = chrono::DateTime::parse_from_rfc3339(now["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp() as f64;
    assert_eq!(published, second);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}
