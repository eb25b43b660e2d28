//! `[daemon]` and `[log]`: how the process runs, and the schedule every target is checked against.

use std::net::SocketAddr;
use std::time::Duration;

use super::check::{quote, Checker};
use crate::config::load::{RawDaemon, RawLog};
use crate::config::{DaemonSettings, LogFormat, LogSettings, DEFAULT_LISTEN};

/// The settings, and the parsed schedule when it parses (targets compare their windows with it).
pub(super) fn daemon_section(
    c: &mut Checker,
    d: &RawDaemon,
) -> (DaemonSettings, Option<croner::Cron>) {
    let schedule = d.schedule.clone().unwrap_or_else(|| "0 */5 * * * *".into());
    let cron = match parse_cron(&schedule) {
        Ok(cron) => Some(cron),
        Err(reason) => {
            c.fail("daemon.schedule", quote(&schedule), reason);
            None
        }
    };
    let listen_text = d.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.fail(
            "daemon.listen",
            quote(&listen_text),
            "not an address and port such as \"0.0.0.0:8947\" or \"127.0.0.1:8947\"",
        );
        DEFAULT_LISTEN.parse().expect("default parses")
    });
    let concurrency = d.concurrency.unwrap_or(8);
    if !(1..=256).contains(&concurrency) {
        c.fail(
            "daemon.concurrency",
            concurrency.to_string(),
            "must be from 1 to 256",
        );
    }
    let daemon = DaemonSettings {
        schedule,
        jitter: c.duration("daemon.jitter", d.jitter.as_deref(), "0s"),
        listen,
        shutdown_timeout: c.duration(
            "daemon.shutdown_timeout",
            d.shutdown_timeout.as_deref(),
            "60s",
        ),
        concurrency: concurrency.clamp(1, 256) as usize,
        stale_after: c.duration("daemon.stale_after", d.stale_after.as_deref(), "2h"),
    };
    (daemon, cron)
}

pub(super) fn log_section(c: &mut Checker, l: &RawLog) -> LogSettings {
    let format_text = l.format.clone().unwrap_or_else(|| "auto".into());
    let format = match format_text.to_ascii_lowercase().as_str() {
        "auto" => LogFormat::Auto,
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            c.fail(
                "log.format",
                quote(&format_text),
                "must be \"auto\", \"text\" or \"json\"",
            );
            LogFormat::Auto
        }
    };
    let level = l.level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::builder()
        .parse(&level)
        .is_err()
    {
        c.fail(
            "log.level",
            quote(&level),
            "not a level or filter; use error, warn, info, debug or trace, or a directive like \"amg_token_rotator=debug\"",
        );
    }
    LogSettings { format, level }
}

/// Cron with seconds, as tokio-cron-scheduler reads it: `sec min hour day-of-month month day-of-week`.
pub fn parse_cron(schedule: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map_err(|e| {
            format!("not a cron schedule ({e}); six fields are needed, seconds first: \"0 */5 * * * *\" runs every five minutes")
        })
}

/// The longest wait between two consecutive runs over the next year (bounded in steps).
pub(super) fn longest_gap(cron: &croner::Cron) -> Option<Duration> {
    let start = chrono::Utc::now();
    let horizon = start + chrono::Duration::days(366);
    let mut prev = start;
    let mut longest = chrono::Duration::zero();
    for t in cron.iter_after(start).take(20_000) {
        longest = longest.max(t - prev);
        prev = t;
        if t > horizon {
            break;
        }
    }
    longest.to_std().ok()
}
