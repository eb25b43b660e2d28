//! amg-token-rotator keeps Amazon Managed Grafana service-account tokens from ever expiring
//! under the automation that uses them.
//!
//! A pass reads as one straight road: configuration → discover → plan → execute → publish →
//! observe. `config` loads and validates; `pass` discovers what AWS reports and runs each
//! credential; `plan` decides purely; `execute` acts; `metrics` and `telemetry` observe.
//! `grafana` and `secrets` are the two external services, each a trait in the domain's words
//! with a thin AWS implementation.

pub mod api;
pub mod apikeys;
pub mod aws;
pub mod config;
pub mod daemon;
pub mod execute;
pub mod failpoint;
pub mod grafana;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pass;
pub mod permissions;
pub mod plan;
pub mod ratelimit;
pub mod records;
pub mod report;
pub mod secrets;
pub mod systemd;
pub mod telemetry;
pub mod verify;
