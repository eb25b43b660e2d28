//! Logging set-up: human text on a terminal, JSON for machines, one event per decision.
//!
//! Whatever level the user asks for, the AWS SDK, HTTP and TLS crates are held at INFO: at
//! DEBUG and TRACE they may print request and response bodies, and a CreateWorkspaceServiceAccountToken
//! response body holds a key. The rotator's own events never carry one.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, LogSettings};

/// Crates whose verbose events could carry wire bodies.
const WIRE_CRATES: [&str; 9] = [
    "aws_smithy",
    "aws_sdk",
    "aws_config",
    "aws_sigv4",
    "aws_runtime",
    "hyper",
    "h2",
    "rustls",
    "reqwest",
];

fn safe(meta: &Metadata<'_>) -> bool {
    let wire = WIRE_CRATES.iter().any(|c| meta.target().starts_with(c));
    !wire || *meta.level() <= Level::INFO
}

/// Installs the global subscriber. Logs go to stderr; stdout is for command output.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::builder()
        .parse(&settings.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(filter_fn(safe)))
        .try_init();
}
