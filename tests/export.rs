//! End-to-end: `amg-token-rotator once` exporting its pass's metrics (`[export]`) to what a
//! one-shot deployment is watched with, each the ecosystem's real component: Debian's
//! Pushgateway scraped by a real Prometheus (the CronJob), Debian's node_exporter reading the
//! textfile (the systemd timer), and CloudWatch embedded-metric-format lines on stdout checked
//! against the format's specification (the ECS scheduled task). An export that fails is reported
//! and exits 4, and what was rotated stands.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use amg_emulator::Seed;
use serde_json::Value;
use support::{
    config_for, eventually, node_exporter, pushgateway, readme_metrics, scrape_job, workspace, Bed,
    Prometheus, Scrape,
};

const WS1: &str = "g-1111111111";

async fn bed() -> Bed {
    Bed::start(Seed {
        workspaces: vec![workspace(WS1, &[("terraform", &[]), ("ci", &[])])],
        ..Seed::default()
    })
    .await
}

fn config(accounts: &[&str], export: &str) -> String {
    format!("{}\n[export]\n{export}", config_for(&[WS1], accounts, ""))
}

fn secret(sa: &str) -> String {
    format!("amg-token-rotator/{WS1}/{sa}")
}

/// The expiry the secret's AWSCURRENT version publishes, in seconds since the epoch.
async fn published_expiry(bed: &Bed, sa: &str) -> f64 {
    let doc = bed.secret_json(&secret(sa), "AWSCURRENT").await;
    chrono::DateTime::parse_from_rfc3339(doc["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp() as f64
}

/// The samples of one Pushgateway group in its own `/metrics`.
fn group(scrape: &Scrape, instance: &str) -> Scrape {
    let mut g = scrape.clone();
    g.samples.retain(|s| {
        s.labels.get("job").map(String::as_str) == Some("amg-token-rotator")
            && s.labels.get("instance").map(String::as_str) == Some(instance)
    });
    g
}

#[tokio::test(flavor = "multi_thread")]
async fn once_replaces_its_group_on_the_pushgateway_and_prometheus_sees_each_credential() {
    let bed = bed().await;
    let gw = pushgateway().await;
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let prom =
        Prometheus::start_with_rules(&[scrape_job("pushgateway", &gw.addr(), true)], Some(&rules))
            .await;
    let export = format!(
        "pushgateway_url = \"http://{}/\"\npushgateway_instance = \"prod\"\n",
        gw.addr()
    );
    let run = bed
        .once(&bed.config(&config(&["terraform", "ci"], &export)))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let url = format!(
        "http://{}/metrics/job/amg-token-rotator/instance/prod",
        gw.addr()
    );
    assert!(
        run.stdout.contains(&format!("pushed   metrics to {url}")),
        "{}",
        run.stdout
    );

    // Prometheus, scraping the Pushgateway with honor_labels, sees the pushed job and instance
    // and each credential's expiry as the secret publishes it.
    for sa in ["terraform", "ci"] {
        let expiry = format!(
            "amg_rotator_credential_expiry_timestamp_seconds{{job=\"amg-token-rotator\",instance=\"prod\",workspace=\"{WS1}\",service_account=\"{sa}\",kind=\"token\"}}"
        );
        let seen = prom
            .value_until(&expiry, Duration::from_secs(20), |_| true)
            .await;
        assert_eq!(seen, published_expiry(&bed, sa).await, "{sa}");
    }
    let pushed_at = prom
        .value_until(
            "push_time_seconds{job=\"amg-token-rotator\",instance=\"prod\"}",
            Duration::from_secs(20),
            |_| true,
        )
        .await;
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&pushed_at),
        "{pushed_at} {now}"
    );

    // The shipped alerts evaluate on the pushed series without error, and, once Prometheus
    // has scraped the group (AmgRotatorAbsent is pending until then), a run just pushed with
    // every credential healthy fires none of them.
    let settled = eventually(
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let r = prom.rules().await;
            let quiet = r.len() == 7
                && r.iter()
                    .all(|(_, health, state)| health == "ok" && state == "inactive");
            quiet.then_some(())
        },
    )
    .await;
    assert!(settled.is_some(), "rules: {:?}", prom.rules().await);

    // The same families and labels as /metrics: each pushed rotator family is one README
    // documents, with its documented labels plus the grouping key.
    let documented = readme_metrics();
    let pushed = group(&Scrape::parse(&gw.get("/metrics").await), "prod");
    let mut families = BTreeSet::new();
    for s in &pushed.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| s.name.strip_suffix(suffix))
            .filter(|f| documented.contains_key(*f))
            .unwrap_or(&s.name);
        if !family.starts_with("amg_rotator_") {
            continue;
        }
        let (_, labels) = documented
            .get(family)
            .unwrap_or_else(|| panic!("{family} is pushed but not in README's metrics table"));
        let mut want: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
        want.extend(["job", "instance"]);
        if s.name.ends_with("_bucket") {
            want.insert("le");
        }
        let got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(got, want, "{}", s.name);
        families.insert(family.to_owned());
    }
    for must in [
        "amg_rotator_credential_expiry_timestamp_seconds",
        "amg_rotator_credential_healthy",
        "amg_rotator_rotations_total",
        "amg_rotator_passes_total",
        "amg_rotator_last_success_timestamp_seconds",
        "amg_rotator_build_info",
    ] {
        assert!(families.contains(must), "{must} not pushed: {families:?}");
    }

    // The next push replaces the group: a credential no longer managed is gone from it.
    let run = bed
        .once(&bed.config(&config(&["terraform"], &export)))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let pushed = group(&Scrape::parse(&gw.get("/metrics").await), "prod");
    let accounts: BTreeSet<&str> = pushed
        .samples
        .iter()
        .filter(|s| s.name == "amg_rotator_credential_healthy")
        .map(|s| s.labels["service_account"].as_str())
        .collect();
    assert_eq!(accounts, BTreeSet::from(["terraform"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_that_fails_is_reported_and_exits_4_and_the_rotation_stands() {
    let bed = bed().await;
    // A port bound and not listening: a connection is refused, and no other test takes it.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let run = bed
        .once(&bed.config(&config(
            &["terraform"],
            &format!("pushgateway_url = \"http://127.0.0.1:{port}\"\n"),
        )))
        .await;
    assert_eq!(run.code, Some(4), "{}", run.all_output());
    let line = format!(
        "FAILED   push to http://127.0.0.1:{port}/metrics/job/amg-token-rotator/instance/amg-token-rotator: "
    );
    assert!(run.stdout.contains(&line), "{}", run.stdout);
    // The pass's own report is whole, and the new token is published.
    assert!(run.stdout.contains("1 changed"), "{}", run.stdout);
    assert!(published_expiry(&bed, "terraform").await > 0.0);
    assert!(
        run.stderr.contains("the push to the Pushgateway failed"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn once_writes_the_textfile_node_exporter_serves() {
    let bed = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_exporter(dir.path()).await;
    let cfg = bed.config(&config(
        &["terraform", "ci"],
        &format!("textfile_dir = \"{}\"\n", dir.path().display()),
    ));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let file = dir.path().join("amg_token_rotator.prom");
    assert!(
        run.stdout
            .contains(&format!("wrote    metrics to {}", file.display())),
        "{}",
        run.stdout
    );
    let served = Scrape::parse(&node.get("/metrics").await);
    assert_eq!(
        served.value("node_textfile_scrape_error", &[]),
        Some(0.0),
        "{}",
        served.text
    );
    for sa in ["terraform", "ci"] {
        let labels = [
            ("workspace", WS1),
            ("service_account", sa),
            ("kind", "token"),
        ];
        assert_eq!(
            served.value("amg_rotator_credential_expiry_timestamp_seconds", &labels),
            Some(published_expiry(&bed, sa).await),
            "{sa}"
        );
        assert_eq!(
            served.value("amg_rotator_credential_healthy", &labels),
            Some(1.0)
        );
    }
    let mtime = served
        .samples
        .iter()
        .find(|s| s.name == "node_textfile_mtime_seconds")
        .unwrap_or_else(|| panic!("no mtime: {}", served.text));
    assert!(
        mtime.labels["file"].ends_with("amg_token_rotator.prom"),
        "{:?}",
        mtime.labels
    );
    // Only the file itself is in the directory: the temporary was renamed over it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["amg_token_rotator.prom"]);

    // A directory that is not there: reported, exit 4, nothing lost of the pass.
    let missing = dir.path().join("missing");
    let run = bed
        .once(&bed.config(&config(
            &["terraform"],
            &format!("textfile_dir = \"{}\"\n", missing.display()),
        )))
        .await;
    assert_eq!(run.code, Some(4), "{}", run.all_output());
    assert!(
        run.stdout.contains(&format!(
            "FAILED   write of {}",
            missing.join("amg_token_rotator.prom").display()
        )),
        "{}",
        run.stdout
    );
    node.stop().await;
}

/// The structure "Specification: Embedded metric format" (CloudWatch user guide) requires of a
/// line, as its problems: the root is a JSON object holding `_aws`, an object with a numeric
/// `Timestamp` (milliseconds since the epoch) and `CloudWatchMetrics`, an array of directives,
/// and no other member; each directive has a `Namespace` string, `Dimensions` (an array of
/// dimension sets, each an array of at most 30 strings naming root members whose values are
/// strings) and `Metrics` (1 to 100 definitions, each a `Name` naming a root member that is a
/// number, and an optional `Unit` from CloudWatch's list), and no other member.
fn emf_problems(text: &str) -> Vec<String> {
    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let mut p = Vec::new();
    let Ok(Value::Object(root)) = serde_json::from_str::<Value>(text) else {
        return vec!["not a JSON object".into()];
    };
    let Some(Value::Object(aws)) = root.get("_aws") else {
        return vec!["no _aws object".into()];
    };
    if aws
        .keys()
        .any(|k| k != "Timestamp" && k != "CloudWatchMetrics")
    {
        p.push(format!("_aws has other members: {:?}", aws.keys()));
    }
    if !aws.get("Timestamp").is_some_and(Value::is_u64) {
        p.push("_aws.Timestamp is not a number of milliseconds".into());
    }
    let Some(Value::Array(directives)) = aws.get("CloudWatchMetrics") else {
        p.push("_aws.CloudWatchMetrics is not an array".into());
        return p;
    };
    for d in directives {
        let Value::Object(d) = d else {
            p.push("a directive is not an object".into());
            continue;
        };
        if d.keys()
            .any(|k| !["Namespace", "Dimensions", "Metrics"].contains(&k.as_str()))
        {
            p.push(format!("a directive has other members: {:?}", d.keys()));
        }
        if !d.get("Namespace").is_some_and(Value::is_string) {
            p.push("Namespace is not a string".into());
        }
        match d.get("Dimensions") {
            Some(Value::Array(sets)) => {
                for set in sets {
                    let Value::Array(names) = set else {
                        p.push("a dimension set is not an array".into());
                        continue;
                    };
                    if names.len() > 30 {
                        p.push("a dimension set has more than 30 names".into());
                    }
                    for n in names {
                        let value = n.as_str().and_then(|n| root.get(n));
                        if !value.is_some_and(Value::is_string) {
                            p.push(format!("dimension {n} names no string member"));
                        }
                    }
                }
            }
            _ => p.push("Dimensions is not an array".into()),
        }
        let metrics = d["Metrics"].as_array().cloned().unwrap_or_default();
        if metrics.is_empty() || metrics.len() > 100 {
            p.push("Metrics holds no definition, or more than 100".into());
        }
        for m in metrics {
            let name = m["Name"].as_str().unwrap_or("");
            if !root.get(name).is_some_and(Value::is_number) {
                p.push(format!("metric {name:?} names no number member"));
            }
            if let Some(unit) = m.get("Unit") {
                if !unit.as_str().is_some_and(|u| UNITS.contains(&u)) {
                    p.push(format!("metric {name:?} has unit {unit}, not CloudWatch's"));
                }
            }
        }
    }
    p
}

#[test]
fn the_emf_checker_finds_what_the_specification_forbids() {
    for (line, problem) in [
        (r#"{"a":1}"#, "no _aws object"),
        (
            r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["w"]],"Metrics":[{"Name":"m"}]}]},"m":1}"#,
            "dimension \"w\" names no string member",
        ),
        (
            r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[],"Metrics":[{"Name":"m","Unit":"Days"}]}]},"m":1}"#,
            "not CloudWatch's",
        ),
        (
            r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[],"Metrics":[{"Name":"m"}]}]},"m":"1"}"#,
            "names no number member",
        ),
        (
            r#"{"_aws":{"Timestamp":"now","CloudWatchMetrics":[]}}"#,
            "Timestamp",
        ),
    ] {
        let p = emf_problems(line);
        assert!(p.iter().any(|x| x.contains(problem)), "{line}: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn once_prints_one_emf_line_per_credential_that_cloudwatch_can_read() {
    let bed = bed().await;
    let cfg = bed.config(&config(
        &["terraform", "ci"],
        "emf_namespace = \"AmgTokenRotator\"\n\
         emf_dimensions = [[\"workspace\", \"service_account\"], [\"Environment\"]]\n\
         emf_static_dimensions = { Environment = \"prod\" }\n",
    ));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            assert_eq!(emf_problems(l), Vec::<String>::new(), "{l}");
            serde_json::from_str(l).unwrap()
        })
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for sa in ["terraform", "ci"] {
        let line = lines
            .iter()
            .find(|l| l["service_account"] == sa)
            .unwrap_or_else(|| panic!("no line for {sa}: {}", run.stdout));
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "AmgTokenRotator");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["workspace", "service_account"], ["Environment"]])
        );
        assert_eq!(line["workspace"], WS1);
        assert_eq!(line["Environment"], "prod");
        assert_eq!(line["CredentialHealthy"], 1);
        // Seconds to expiry at the line's own timestamp.
        let at = line["_aws"]["Timestamp"].as_f64().unwrap() / 1000.0;
        let left = line["CredentialExpiresInSeconds"].as_f64().unwrap();
        let expiry = published_expiry(&bed, sa).await;
        assert!(
            (expiry - at - left).abs() <= 1.0,
            "{sa}: {left} at {at}, expiry {expiry}"
        );
    }
    // The pass's summary is still there, after the EMF lines.
    assert!(run.stdout.contains("2 changed"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_exports_nothing() {
    let bed = bed().await;
    let gw = pushgateway().await;
    let cfg = bed.config(&config(
        &["terraform"],
        &format!(
            "pushgateway_url = \"http://{}\"\nemf_namespace = \"AmgTokenRotator\"\n",
            gw.addr()
        ),
    ));
    let run = bed.run(&cfg, &["plan"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(!run.stdout.contains("_aws"), "{}", run.stdout);
    let held = Scrape::parse(&gw.get("/metrics").await);
    assert!(
        !held
            .samples
            .iter()
            .any(|s| s.name.starts_with("amg_rotator_")),
        "{}",
        held.text
    );
}

/// A push the Pushgateway refuses (here: another group already holds `amg_rotator_build_info`
/// as a counter, so ours is inconsistent) is not retried; its reason is quoted and `once` exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_the_pushgateway_refuses_is_reported_with_its_reason() {
    let bed = bed().await;
    let gw = pushgateway().await;
    let other = reqwest::Client::new()
        .put(format!("http://{}/metrics/job/other", gw.addr()))
        .body("# TYPE amg_rotator_build_info counter\namg_rotator_build_info 1\n")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert!(other.status().is_success(), "{}", other.status());
    let run = bed
        .once(&bed.config(&config(
            &["terraform"],
            &format!("pushgateway_url = \"http://{}\"\n", gw.addr()),
        )))
        .await;
    assert_eq!(run.code, Some(4), "{}", run.all_output());
    assert!(
        run.stdout
            .contains("HTTP 400 Bad Request: pushed metrics are invalid or inconsistent"),
        "{}",
        run.stdout
    );
    assert!(published_expiry(&bed, "terraform").await > 0.0);
}
