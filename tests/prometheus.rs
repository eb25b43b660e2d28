//! End-to-end with a real Prometheus server (Debian's `prometheus` package, installed by
//! scripts/setup): it scrapes `amg-token-rotator run`, which runs against the AMG emulator and
//! Secrets Manager on moto, every second. Queried through Prometheus's HTTP API, the expiry gauge
//! moves and the rotation counter rises after a rotation: what a user's Prometheus would see.

mod support;

use std::time::{Duration, Instant};

use amg_emulator::Seed;
use support::{scrape_job, workspace, Bed, Prometheus};

const WS1: &str = "g-1111111111";

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_the_expiry_move_and_the_rotation_counter_rise() {
    let started = Instant::now();
    let bed = Bed::start(Seed {
        workspaces: vec![workspace(WS1, &[("terraform", &[])])],
        ..Seed::default()
    })
    .await;
    // A pass every second; tokens live an hour and are replaced in their last half hour.
    let cfg = bed.config(&format!(
        "[daemon]\nschedule = \"* * * * * *\"\n\n[log]\nformat = \"json\"\n\n[defaults]\n\
         token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"10m\"\n\n\
         [[targets]]\nworkspace_ids = [\"{WS1}\"]\nservice_accounts = [\"terraform\"]\n"
    ));
    let d = bed.daemon(&cfg, &[]).await;
    let target = format!("127.0.0.1:{}", d.port);
    let prom = Prometheus::start(&[scrape_job("amg-token-rotator", &target, false)]).await;

    let expiry = "amg_rotator_credential_expiry_timestamp_seconds{job=\"amg-token-rotator\",workspace=\"g-1111111111\",service_account=\"terraform\",kind=\"token\"}";
    let rotations = "sum(amg_rotator_rotations_total{job=\"amg-token-rotator\",service_account=\"terraform\",outcome=\"success\"})";
    assert_eq!(
        prom.value_until(
            "up{job=\"amg-token-rotator\"}",
            Duration::from_secs(20),
            |v| v == 1.0
        )
        .await,
        1.0
    );
    // The first pass published a token that expires in an hour.
    let first = prom
        .value_until(expiry, Duration::from_secs(20), |_| true)
        .await;
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now + 3500.0..=now + 3601.0).contains(&first),
        "expiry {first}, now {now}"
    );
    assert_eq!(
        prom.value_until(rotations, Duration::from_secs(20), |_| true)
            .await,
        1.0
    );
    let first_run = "amg_rotator_rotations_total{service_account=\"terraform\",outcome=\"success\",reason=\"first_run\"}";
    assert_eq!(prom.value(first_run).await, Some(1.0));

    // Bring the token within rotate_before of its expiry: the next pass replaces it.
    let doc = bed
        .secret_json("amg-token-rotator/g-1111111111/terraform", "AWSCURRENT")
        .await;
    let sa = bed.service_account_id(WS1, "terraform");
    // At least a second later, so the new token's expiry differs from the first's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        bed.set_token_expiry(
            WS1,
            &sa,
            doc["tokenId"].as_str().unwrap(),
            chrono::Utc::now().timestamp() + 600
        )
        .await
    );

    let second = prom
        .value_until(expiry, Duration::from_secs(30), |v| v != first)
        .await;
    assert!(second > first, "the expiry moved back: {first} -> {second}");
    assert_eq!(
        prom.value_until(rotations, Duration::from_secs(30), |v| v >= 2.0)
            .await,
        2.0
    );
    assert_eq!(
        prom.value("amg_rotator_rotations_total{service_account=\"terraform\",outcome=\"success\",reason=\"due\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(prom.value(first_run).await, Some(1.0));
    // And the secret agrees with what Prometheus shows.
    let now = bed
        .secret_json("amg-token-rotator/g-1111111111/terraform", "AWSCURRENT")
        .await;
    assert_ne!(now["tokenId"], doc["tokenId"]);
    let published = chrono::DateTime::parse_from_rfc3339(now["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp() as f64;
    assert_eq!(published, second);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}
