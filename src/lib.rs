//! amg-token-rotator keeps Amazon Managed Grafana service-account tokens from ever expiring
//! under the automation that uses them.
//!
//! A pass reads as one straight road: configuration → discover → plan → execute → publish →
//! observe, and the modules say so:
//! - `config`: the typed configuration, loaded and validated once;
//! - `aws`: the services (AMG, Secrets Manager, the workspace's Grafana), each a trait in the
//!   domain's words with a thin SDK implementation, and the caller that retries and measures;
//! - `pass`: one pass: discovery, claims, bounded concurrency, shutdown, reports;
//! - `credential`: one credential's road: the pure planner, the executor, what each kind of
//!   credential (tokens, legacy API keys) does its own way, the records kept on the secret;
//! - `daemon`: the schedule, signals and reload, the HTTP probes, metrics and systemd;
//! - `report`, `telemetry`: what people and machines read;
//! - `coordination`: leases that let several replicas share the work (so far, the lease logic);
//! - `export`: what `once` leaves for Pushgateway, node_exporter and CloudWatch;
//! - `iam`: the least-privilege IAM policy for a configuration (`iam-policy`), pure.

pub mod aws;
pub mod config;
pub mod coordination;
pub mod credential;
pub mod daemon;
pub mod discover;
pub mod export;
pub mod failpoint;
pub mod iam;
pub mod model;
pub mod pass;
pub mod permissions;
pub mod report;
pub mod telemetry;
