//! The test bed, one file per part by what it starts:
//!
//! - `moto`: moto's server, a real process standing in for Secrets Manager;
//! - `proxy`: the fault-injecting Secrets Manager proxy in front of it, in this process;
//! - `bed`: the AMG emulator (in this process), moto, the proxy and a scratch directory, and the
//!   real `amg-token-rotator` binary run against them through the standard AWS endpoint
//!   variables;
//! - `daemon`: the binary's `run` under test, its endpoints, signals and logs;
//! - `prometheus`: `promtool`, the PromQL names and the README's metrics table;
//! - `servers`: Prometheus, the Pushgateway and node_exporter, Debian's, as real processes;
//! - `scrape` (a parsed `/metrics`) and `fixtures` (seeds and configuration text) start nothing.
//!
//! This file re-exports what the tests use, so a test names `support::Bed` wherever it lives,
//! and holds what the parts share: the region, a free port, a bounded poll, a finished run.
//!
//! Everything listens on 127.0.0.1 only; every wait is bounded.

// Every integration test is a crate of its own that includes this module, and none uses all of
// it: what one test leaves unused is not dead for the others.
#![allow(dead_code)]

use std::time::{Duration, Instant};

mod bed;
mod daemon;
mod fixtures;
mod moto;
mod prometheus;
mod proxy;
mod scrape;
mod servers;

// The same holds for these: each test uses some of them, and rustc reports the rest of a
// re-export list as unused imports of that test.
#[allow(unused_imports)]
pub use self::{
    bed::Bed,
    daemon::Daemon,
    fixtures::{config_for, workspace, AccountSpec, TokenSpec},
    moto::{moto_server_path, Moto},
    prometheus::{promql_metric_names, promtool, readme_metrics, tool},
    proxy::{SmFault, SmProxy},
    scrape::{Sample, Scrape},
    servers::{node_exporter, pushgateway, scrape_job, Prometheus, Server},
};

pub const REGION: &str = "us-east-1";

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

/// The result of one run of a process to completion (the binary, `promtool`).
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
