//! The daemon under test: the real binary running `run` against a bed on a free port, started
//! and waited for until `/healthz` answers; its HTTP endpoints and `/metrics` scrape, the signals
//! sent to it, its exit, and its stderr collected line by line (and read as JSON log events).
//! Killed on drop.
//!
//! It listens on 127.0.0.1 only; every wait is bounded (30 s to serve, three ports tried, 5 s per
//! request, and the `within` every other wait is given).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bed::Bed;
use super::scrape::Scrape;
use super::{eventually, free_port};

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

    /// As `get`, on a connection of its own: the client's pooled one may be the oldest the
    /// daemon closes when too many are open (as a prober's next request would reconnect).
    pub async fn get_fresh(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::Client::new()
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
