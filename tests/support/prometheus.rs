//! The Prometheus tools the tests use: an executable of Debian's `prometheus` package found on
//! PATH (missing is a failure, not a skip), `promtool` run as a child process, the metric names a
//! PromQL expression selects, and the README's metrics table.
//!
//! `promtool` listens on nothing, and its run is bounded (60 s). The Prometheus server is started
//! by tests/prometheus.rs itself, on 127.0.0.1 only, with bounded waits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::Run;

/// An executable the tests need from the `prometheus` Debian package. Missing is a failure,
/// not a skip: `scripts/setup` installs it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: run scripts/setup, which installs Debian's `prometheus` \
                 package (promtool and the prometheus server)"
            )
        })
}

/// Runs `promtool` with `args`, feeding `stdin`; at most 60 s.
pub async fn promtool(args: &[&str], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool runs");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("promtool finishes within 60 s")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping lists that are neither functions, aggregations nor keywords.
pub fn promql_metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    const KEYWORDS: [&str; 10] = [
        "bool", "and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN", "atan2",
    ];
    // Aggregations may put their grouping first: `sum by (le) (...)`.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = std::collections::BTreeSet::new();
    let mut i = 0;
    // After a grouping keyword, the next parenthesis holds label names.
    let mut label_list_next = false;
    // Skips to the closing `close`, stepping over quoted strings.
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = skip_to(i + 1, ')');
        } else if c == '$' {
            // A Grafana variable: $name, ${name} or $__rate_interval.
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_to(i + 1, '}');
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if GROUPING.contains(&ident.as_str()) {
                label_list_next = call;
            } else if !call
                && !KEYWORDS.contains(&ident.as_str())
                && !AGGREGATIONS.contains(&ident.as_str())
            {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// README's "Metrics" table: name → (type, labels).
pub fn readme_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README has a \"## Metrics\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`amg_rotator_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        out.insert(name, (cells[2].to_owned(), labels));
    }
    assert!(out.len() >= 10, "README metrics table not found: {out:?}");
    out
}
