//! What `once` leaves for a monitoring system that cannot scrape it: a process that exits has no
//! `/metrics`, so a CronJob pushes its pass's metrics to a Pushgateway, a systemd timer writes
//! them for node_exporter's textfile collector, and an ECS scheduled task prints CloudWatch
//! embedded-metric-format lines. Each is off unless `[export]` configures it, and each only
//! reads the metrics of the pass that has ended: an export that fails changes nothing that was
//! rotated, and is reported and counted in the exit code.

pub mod emf;
pub mod pushgateway;
pub mod textfile;

use crate::config::ExportSettings;
use crate::daemon::metrics::Metrics;

/// What each configured exporter did: a line for the summary, and whether it failed.
#[derive(Debug, Default)]
pub struct Exported {
    /// EMF lines, for stdout before the summary's own lines.
    pub emf_lines: Vec<String>,
    /// One line per exporter that ran: `pushed …`, `wrote …` or `FAILED   …`.
    pub summary: Vec<String>,
    pub failed: bool,
}

/// Runs every configured exporter over `metrics`, `now` being the pass's end.
pub async fn export(
    settings: &ExportSettings,
    metrics: &Metrics,
    now: chrono::DateTime<chrono::Utc>,
) -> Exported {
    let mut out = Exported::default();
    if let Some(emf) = &settings.emf {
        out.emf_lines = emf::lines(emf, &metrics.credential_values(), now);
    }
    // The text exposition is about 5 KiB a credential: made only for an exporter that sends it.
    if settings.pushgateway.is_none() && settings.textfile.is_none() {
        return out;
    }
    let text = metrics.render();
    if let Some(push) = &settings.pushgateway {
        match pushgateway::push(push, &text).await {
            Ok(url) => out.summary.push(format!("pushed   metrics to {url}")),
            Err(e) => {
                tracing::error!(error = %e, "the push to the Pushgateway failed");
                out.summary.push(format!("FAILED   {e}"));
                out.failed = true;
            }
        }
    }
    if let Some(file) = &settings.textfile {
        match textfile::write(file, &text) {
            Ok(path) => out
                .summary
                .push(format!("wrote    metrics to {}", path.display())),
            Err(e) => {
                tracing::error!(error = %e, "writing the textfile failed");
                out.summary.push(format!("FAILED   {e}"));
                out.failed = true;
            }
        }
    }
    out
}
