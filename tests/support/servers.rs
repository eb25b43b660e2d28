//! The monitoring servers of Debian's packages, each a real process the test starts on a free
//! 127.0.0.1 port with its own scratch directory, killed on drop: Prometheus (`prometheus`),
//! the Pushgateway (`prometheus-pushgateway`) and node_exporter (`prometheus-node-exporter`),
//! all installed by scripts/setup. Prometheus is queried through its HTTP API.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{eventually, free_port, tool};

/// One server process on 127.0.0.1.
pub struct Server {
    pub port: u16,
    child: tokio::process::Child,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with `args(port, scratch dir)` and waits (at most 30 s) until `ready_path`
    /// answers 200; tries three ports, in case one is taken meanwhile.
    pub async fn start(
        bin: &str,
        args: impl Fn(u16, &Path) -> Vec<String>,
        ready_path: &str,
    ) -> Server {
        let bin = tool(bin);
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&bin)
                .args(args(port, dir.path()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
            let ready = eventually(Duration::from_secs(30), Duration::from_millis(100), || {
                let http = &http;
                async move {
                    let r = http
                        .get(format!("http://127.0.0.1:{port}{ready_path}"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .ok()?;
                    r.status().is_success().then_some(())
                }
            })
            .await;
            if ready.is_some() {
                return Server { port, child, dir };
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        panic!("{} did not become ready on 127.0.0.1", bin.display());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// GET `path`, its body (at most 5 s).
    pub async fn get(&self, path: &str) -> String {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The Pushgateway, keeping pushes in memory only.
pub async fn pushgateway() -> Server {
    Server::start(
        "prometheus-pushgateway",
        |port, _| {
            vec![
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ]
        },
        "/-/ready",
    )
    .await
}

/// node_exporter with only the textfile collector, reading `dir`.
pub async fn node_exporter(dir: &Path) -> Server {
    let dir = dir.to_owned();
    Server::start(
        "prometheus-node-exporter",
        move |port, _| {
            vec![
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--collector.disable-defaults".into(),
                "--collector.textfile".into(),
                format!("--collector.textfile.directory={}", dir.display()),
                "--log.level=warn".into(),
            ]
        },
        "/metrics",
    )
    .await
}

/// A Prometheus server scraping every second, with its own storage.
pub struct Prometheus {
    server: Server,
    http: reqwest::Client,
}

/// One scrape job of a `prometheus.yml`: `job` scraping `target`, keeping the target's own
/// `job` and `instance` labels when `honor_labels` (as a Pushgateway is scraped).
pub fn scrape_job(job: &str, target: &str, honor_labels: bool) -> String {
    format!(
        "  - job_name: {job}\n    honor_labels: {honor_labels}\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

impl Prometheus {
    /// Starts Prometheus with these `scrape_job`s.
    pub async fn start(jobs: &[String]) -> Prometheus {
        Prometheus::start_with_rules(jobs, None).await
    }

    /// Starts Prometheus with these `scrape_job`s, evaluating the rule file `rules` (every
    /// second, like the scrapes).
    pub async fn start_with_rules(jobs: &[String], rules: Option<&Path>) -> Prometheus {
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - {}\n", r.display()))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             {rule_files}scrape_configs:\n{}",
            jobs.concat()
        );
        let server = Server::start(
            "prometheus",
            move |port, dir| {
                let file = dir.join("prometheus.yml");
                std::fs::write(&file, &config).unwrap();
                vec![
                    format!("--config.file={}", file.display()),
                    format!("--storage.tsdb.path={}", dir.join("data").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    "--log.level=warn".into(),
                ]
            },
            "/-/ready",
        )
        .await;
        Prometheus {
            server,
            http: reqwest::Client::new(),
        }
    }

    /// Each alerting rule's `(name, health, state)`, from `/api/v1/rules`.
    pub async fn rules(&self) -> Vec<(String, String, String)> {
        let body: serde_json::Value = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/api/v1/rules",
                self.server.port
            ))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the rules API answers")
            .json()
            .await
            .expect("JSON");
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                (field("name"), field("health"), field("state"))
            })
            .collect()
    }

    /// An instant query: the vector's `(labels, value)` pairs.
    pub async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let r = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/api/v1/query?query={}",
                self.server.port,
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
    pub async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    /// Waits (bounded) until the single value of `promql` satisfies `ok`.
    pub async fn value_until(
        &self,
        promql: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
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
