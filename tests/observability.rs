//! The deployment files for monitoring, checked by the tools their users run: the alert rules
//! with `promtool check rules` and their unit tests with `promtool test rules`, the Grafana
//! dashboard for what an import needs, and the README's metric table against the registry.
//! (That every metric the dashboard and the alerts query exists in a live scrape is checked in
//! tests/daemon.rs, against the running daemon.)

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use amg_token_rotator::daemon::metrics::Metrics;
use support::promtool;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_check_rules() {
    let rules = deploy("prometheus/alerts.yml");
    let run = promtool(&["check", "rules", rules.to_str().unwrap()], None).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.all_output().contains("SUCCESS: 7 rules found"),
        "{}",
        run.all_output()
    );
}

#[tokio::test]
async fn the_alert_rules_pass_their_unit_tests() {
    let tests = deploy("prometheus/alerts_test.yml");
    let run = promtool(&["test", "rules", tests.to_str().unwrap()], None).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(run.all_output().contains("SUCCESS"), "{}", run.all_output());
    assert!(!run.all_output().contains("FAILED"), "{}", run.all_output());
}

#[test]
fn the_seven_alerts_have_severities_and_say_what_to_do() {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts_test.yml")).unwrap();
    // alert → severity, in file order.
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts.push((name.to_owned(), String::new()));
        } else if let Some(sev) = line.strip_prefix("severity: ") {
            alerts.last_mut().expect("severity inside an alert").1 = sev.to_owned();
        }
    }
    assert_eq!(
        alerts,
        [
            ("AmgRotatorCredentialExpiringSoon", "critical"),
            ("AmgRotatorRotationsFailing", "warning"),
            ("AmgRotatorLastPassStale", "warning"),
            ("AmgRotatorPushedRunStale", "warning"),
            ("AmgRotatorTextfileStale", "warning"),
            ("AmgRotatorAbsent", "critical"),
            ("AmgRotatorConsumersOnSupersededToken", "warning"),
        ]
        .map(|(a, s)| (a.to_owned(), s.to_owned()))
    );
    assert_eq!(text.matches("summary:").count(), 7);
    assert_eq!(text.matches("description:").count(), 7);
    for (name, _) in &alerts {
        // Each alert is exercised firing by the unit tests.
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .filter(|t| t.starts_with(name.as_str()))
            .any(|t| t.contains("exp_labels:"));
        assert!(firing, "no unit test sees {name} fire");
    }
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_datasource_variable() {
    let text = std::fs::read_to_string(deploy("grafana/dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    assert_eq!(d["uid"], "amg-token-rotator");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_i64().unwrap() >= 36);
    assert!(d.get("id").is_none_or(|id| id.is_null()), "no fixed id");

    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["name"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let mut refs = 0;
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
        refs += 1;
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate id: {p}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(x >= 0 && w > 0 && h > 0 && x + w <= 24, "{p}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "panels overlap at {cx},{cy}: {p}");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().unwrap().to_owned());
        assert_eq!(p["datasource"]["type"], "prometheus", "{p}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert!(ref_ids.insert(t["refId"].as_str().unwrap()), "{p}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{p}");
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("amg_rotator_"), "{expr}");
            assert!(expr.contains("$instance"), "filtered by instance: {expr}");
            refs += 1;
        }
    }
    assert!(refs >= 15, "{refs} queries");
    // What the issue asks the dashboard to show.
    for wanted in [
        "Time left per credential",
        "Rotations",
        "Failures by credential and stage",
        "AWS calls per second",
        "AWS call latency",
        "Tokens per service account (quota use)",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "{wanted}: {titles:?}");
    }
}

#[test]
fn the_readme_documents_every_registered_metric_with_its_type_and_labels() {
    let documented = support::readme_metrics();
    let metrics = Metrics::new();
    let registered: Vec<_> = metrics.catalog().iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        registered.iter().cloned().collect::<BTreeSet<_>>(),
        "README's metric table and src/daemon/metrics.rs differ"
    );
    for m in metrics.catalog() {
        let (kind, labels) = &documented[&m.name];
        assert_eq!(kind, m.kind, "{}: type", m.name);
        assert_eq!(labels, &m.labels, "{}: labels", m.name);
        assert!(m.name.starts_with("amg_rotator_"), "{}", m.name);
        assert!(m.help.ends_with('.'), "{}: HELP {:?}", m.name, m.help);
    }
}
