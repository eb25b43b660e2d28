//! Renders pass reports for people (a table, summary lines) and machines (JSON).
//!
//! Reports carry token names, IDs, expiry times and secret names, never a key.

use std::fmt::Write;

use crate::credential::Status;
use crate::model::rfc3339;
use crate::pass::PassReport;

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Changed => "changed",
        Status::Pending => "pending",
        Status::Blocked => "blocked",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
    }
}

/// One line per credential, as `once` prints them, then the totals. Written as they are made:
/// into `Lines`, a pass of 10,000 credentials is printed or logged without a copy of it all
/// (about 270 bytes a credential) in memory.
pub fn write_summary(out: &mut impl Write, report: &PassReport) {
    for c in &report.credentials {
        let _ = writeln!(
            out,
            "{:<8} {} {} -> {}: {}",
            status_word(c.status),
            c.workspace_id,
            c.service_account,
            c.secret_name.as_deref().unwrap_or("-"),
            if c.summary.is_empty() {
                c.error.as_deref().unwrap_or("")
            } else {
                &c.summary
            }
        );
    }
    left_behind_lines(out, report);
    superseded_lines(out, report);
    migration_lines(out, report);
    for p in &report.problems {
        let _ = writeln!(out, "FAILED   {p}");
    }
    permission_lines(out, report, false);
    let _ = writeln!(out, "{}", totals(report));
}

/// A `fmt::Write` that hands each finished line (without its newline) to `line`, holding only
/// the line being written.
pub struct Lines<F: FnMut(&str)> {
    pending: String,
    line: F,
}

impl<F: FnMut(&str)> Lines<F> {
    pub fn new(line: F) -> Self {
        Lines {
            pending: String::new(),
            line,
        }
    }
}

impl<F: FnMut(&str)> Write for Lines<F> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for piece in s.split_inclusive('\n') {
            match piece.strip_suffix('\n') {
                Some(end) => {
                    self.pending.push_str(end);
                    (self.line)(&self.pending);
                    self.pending.clear();
                }
                None => self.pending.push_str(piece),
            }
        }
        Ok(())
    }
}

/// One line per token a credential's service account holds for another secret.
fn left_behind_lines(out: &mut impl Write, report: &PassReport) {
    for c in &report.credentials {
        for lb in c.plan.iter().flat_map(|p| &p.left_behind) {
            let _ = writeln!(
                out,
                "left behind {} {} -> {}: {lb}",
                c.workspace_id,
                c.service_account,
                c.secret_name.as_deref().unwrap_or("-")
            );
        }
    }
}

/// One line per superseded token still alive at the start of the pass: the rule that decided
/// its fate, and for one kept because it is still used, that its consumers have not moved.
/// One line per credential an API key's move to Grafana 12 concerns.
fn migration_lines(out: &mut impl Write, report: &PassReport) {
    for c in &report.credentials {
        if let Some(m) = c.plan.as_ref().and_then(|p| p.migration.as_ref()) {
            let _ = writeln!(
                out,
                "migration: {} {}: {m}",
                c.workspace_id, c.service_account
            );
        }
    }
}

fn superseded_lines(out: &mut impl Write, report: &PassReport) {
    for c in &report.credentials {
        for s in c.plan.iter().flat_map(|p| &p.superseded) {
            let _ = writeln!(
                out,
                "{} {} -> {}: {s}",
                c.workspace_id, c.service_account, s.secret
            );
        }
    }
}

/// One line per audited workspace, and one per refused entry.
fn permission_lines(out: &mut impl Write, report: &PassReport, planning: bool) {
    for p in &report.permissions {
        let counts = p
            .counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut line = format!(
            "permissions {}: {}",
            p.workspace_id,
            if counts.is_empty() {
                "none".into()
            } else {
                counts
            }
        );
        let describe = |verb: &str, list: &[crate::model::Binding]| {
            list.iter()
                .map(|b| {
                    format!(
                        "{verb} {} {} {}",
                        b.role,
                        b.principal_type.as_str(),
                        b.principal_id
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut drift = describe("add", &p.to_add);
        drift.extend(describe("revoke", &p.to_revoke));
        if !drift.is_empty() {
            let verb = if planning {
                "drift (would apply with enforce)"
            } else {
                "drift"
            };
            line.push_str(&format!("; {verb}: {}", drift.join(", ")));
        }
        if p.applied > 0 {
            line.push_str(&format!("; applied {}", p.applied));
        }
        let _ = writeln!(out, "{line}");
        for r in &p.refused {
            let _ = writeln!(out, "FAILED   permissions {}: refused {r}", p.workspace_id);
        }
        if let Some(e) = &p.error {
            let _ = writeln!(out, "FAILED   permissions {}: {e}", p.workspace_id);
        }
    }
}

fn totals(report: &PassReport) -> String {
    let count = |s: Status| report.credentials.iter().filter(|c| c.status == s).count();
    format!(
        "{} credentials: {} ok, {} changed, {} pending, {} blocked, {} failed, {} skipped; {} other problems",
        report.credentials.len(),
        count(Status::Ok),
        count(Status::Changed),
        count(Status::Pending),
        count(Status::Blocked),
        count(Status::Failed),
        count(Status::Skipped),
        report.problems.len()
    )
}

/// The `plan` table.
pub fn plan_table(report: &PassReport) -> String {
    let mut rows = vec![[
        "WORKSPACE".to_owned(),
        "SERVICE ACCOUNT".to_owned(),
        "SECRET".to_owned(),
        "CURRENT EXPIRES".to_owned(),
        "DUE".to_owned(),
        "PLAN".to_owned(),
    ]];
    for c in &report.credentials {
        let plan = c.plan.as_ref();
        let actions = match (plan, &c.error) {
            (Some(p), _) if p.blocked.is_some() => {
                format!("blocked: {}", p.blocked.as_ref().expect("checked"))
            }
            (Some(p), _) => {
                let mut parts: Vec<String> = p.actions.iter().map(|a| a.to_string()).collect();
                if parts.is_empty() {
                    parts.push("nothing to do".into());
                }
                if let Some(d) = &p.role_drift {
                    parts.push(format!(
                        "role drift: is {}, declared {}",
                        d.actual, d.declared
                    ));
                }
                parts.join("; ")
            }
            (None, Some(e)) if c.status == Status::Blocked => format!("blocked: {e}"),
            (None, Some(e)) => format!("FAILED: {e}"),
            (None, None) => status_word(c.status).to_owned(),
        };
        rows.push([
            c.workspace_id.clone(),
            c.service_account.clone(),
            c.secret_name.clone().unwrap_or_else(|| "-".into()),
            match (c.expires_at, plan.and_then(|p| p.current.as_ref())) {
                (Some(e), _) => rfc3339(e),
                (None, Some(_)) => "unknown".into(),
                (None, None) => "-".into(),
            },
            plan.and_then(|p| p.due_at)
                .map(rfc3339)
                .unwrap_or_else(|| "-".into()),
            actions,
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i == 5 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{:<w$}  ", cell, w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    left_behind_lines(&mut out, report);
    superseded_lines(&mut out, report);
    migration_lines(&mut out, report);
    for p in &report.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    permission_lines(&mut out, report, true);
    let _ = writeln!(out, "{}", totals(report));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CredentialKind, CredentialReport};

    #[test]
    fn lines_are_handed_on_whole_however_they_were_written() {
        let mut got = Vec::new();
        let mut lines = Lines::new(|l| got.push(l.to_owned()));
        for piece in ["ok   g-1", " sa", "\nchanged g-2 sa\n", "\n", "unfinished"] {
            lines.write_str(piece).unwrap();
        }
        drop(lines);
        assert_eq!(got, ["ok   g-1 sa", "changed g-2 sa", ""]);
    }

    #[test]
    fn the_summary_names_each_credential_then_the_totals() {
        let mut ok =
            CredentialReport::new("t", CredentialKind::Token { bootstrap: None }, "g-1", "sa");
        ok.status = Status::Ok;
        ok.secret_name = Some("amg/g-1/sa".into());
        ok.summary = "healthy".into();
        let failed =
            CredentialReport::new("t", CredentialKind::Token { bootstrap: None }, "g-2", "sa");
        let now = chrono::Utc::now();
        let report = PassReport {
            started_at: now,
            finished_at: now,
            credentials: vec![ok, failed],
            problems: Vec::new(),
            permissions: Vec::new(),
        };
        let mut got = Vec::new();
        write_summary(&mut Lines::new(|l| got.push(l.to_owned())), &report);
        assert_eq!(
            got,
            [
                "ok       g-1 sa -> amg/g-1/sa: healthy",
                "FAILED   g-2 sa -> -: ",
                "2 credentials: 1 ok, 0 changed, 0 pending, 0 blocked, 1 failed, 0 skipped; 0 other problems",
            ]
        );
    }
}
