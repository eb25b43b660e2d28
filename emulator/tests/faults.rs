//! Conformance: fault injection (fail-Nth, errorRate, rate cap, latency, outage) behaves as the
//! README documents, seen through the SDK.

mod common;

use amg_emulator::{Emulator, EmulatorConfig, FailRule, Faults};
use aws_config::retry::RetryConfig;
use aws_sdk_grafana::error::{ProvideErrorMetadata, SdkError};
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn describe(grafana: &aws_sdk_grafana::Client) -> Result<(), String> {
    grafana
        .describe_workspace()
        .workspace_id(WS)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error().code().unwrap_or("none").to_string())
}

#[tokio::test]
async fn fail_nth_fails_exactly_the_chosen_calls() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        emu.set_faults(Faults {
            fail_nth: vec![FailRule::new("DescribeWorkspace", 2, "ThrottlingException").times(2)],
            ..Faults::default()
        });
        // Other operations do not advance the count.
        grafana.list_workspaces().send().await.unwrap();
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            outcomes.push(describe(&grafana).await);
        }
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Err("ThrottlingException".into()),
                Err("ThrottlingException".into()),
                Ok(())
            ]
        );
        let injected: Vec<(u64, bool)> = emu.calls().iter().map(|c| (c.seq, c.injected)).collect();
        assert_eq!(
            injected,
            [(1, false), (2, false), (3, true), (4, true), (5, false)]
        );
    })
    .await
}

#[tokio::test]
async fn a_star_rule_counts_every_call() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        emu.set_faults(Faults {
            fail_nth: vec![FailRule::new("*", 3, "InternalServerException")],
            ..Faults::default()
        });
        grafana.list_workspaces().send().await.unwrap();
        describe(&grafana).await.unwrap();
        let err = grafana
            .list_permissions()
            .workspace_id(WS)
            .send()
            .await
            .unwrap_err();
        assert!(err.into_service_error().is_internal_server_exception());
        grafana.list_workspaces().send().await.unwrap();
    })
    .await
}

async fn outcomes_with(faults: Faults, n: usize) -> Vec<Result<(), String>> {
    let emu = start(standard_seed()).await;
    emu.set_faults(faults);
    let grafana = client(&emu).await;
    let mut outcomes = Vec::new();
    for _ in 0..n {
        outcomes.push(describe(&grafana).await);
    }
    outcomes
}

#[tokio::test]
async fn error_rate_is_a_deterministic_fraction_of_500s_and_429s() {
    bounded(async {
        let faults = Faults {
            error_rate: 0.4,
            rng_seed: 42,
            ..Faults::default()
        };
        let a = outcomes_with(faults.clone(), 60).await;
        let b = outcomes_with(faults, 60).await;
        assert_eq!(a, b, "same seed, same failures");
        let failed: Vec<&String> = a.iter().filter_map(|o| o.as_ref().err()).collect();
        assert!(
            (10..=40).contains(&failed.len()),
            "{} of 60 failed",
            failed.len()
        );
        assert!(failed.iter().any(|e| *e == "InternalServerException"));
        assert!(failed.iter().any(|e| *e == "ThrottlingException"));
        assert!(failed
            .iter()
            .all(|e| *e == "InternalServerException" || *e == "ThrottlingException"));
    })
    .await
}

#[tokio::test]
async fn error_rate_draws_from_the_chosen_errors() {
    bounded(async {
        let faults = Faults {
            error_rate: 1.0,
            error_rate_errors: vec!["AccessDeniedException".into()],
            ..Faults::default()
        };
        let outcomes = outcomes_with(faults, 5).await;
        assert!(outcomes
            .iter()
            .all(|o| *o == Err("AccessDeniedException".to_string())));
    })
    .await
}

#[tokio::test]
async fn the_rate_cap_throttles_the_excess_of_a_burst() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        emu.set_faults(Faults {
            max_requests_per_second: Some(3),
            retry_after_seconds: 1,
            ..Faults::default()
        });
        let started = Instant::now();
        let mut outcomes = Vec::new();
        for _ in 0..8 {
            outcomes.push(describe(&grafana).await);
        }
        // The whole burst must fit in the one-second window for the count to be exact.
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "burst too slow: {:?}",
            started.elapsed()
        );
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 3, "{outcomes:?}");
        assert!(outcomes[3..]
            .iter()
            .all(|o| *o == Err("ThrottlingException".to_string())));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        describe(&grafana).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn per_operation_latency_makes_a_call_outlast_the_sdk_timeout() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client_with(&emu, RetryConfig::disabled(), Duration::from_millis(500)).await;
        emu.set_faults(Faults {
            operation_latency_ms: BTreeMap::from([(
                "CreateWorkspaceServiceAccountToken".to_string(),
                3000,
            )]),
            ..Faults::default()
        });
        let started = Instant::now();
        let err = grafana
            .create_workspace_service_account_token()
            .workspace_id(WS)
            .service_account_id("3")
            .name("slow")
            .seconds_to_live(60)
            .send()
            .await
            .unwrap_err();
        assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(2500));
        // The latency comes after the call took effect: the token exists though the client never
        // saw its key (what a real timed-out Create can leave behind).
        let state = emu.state();
        assert!(state
            .workspace(WS)
            .unwrap()
            .service_account("3")
            .unwrap()
            .token_by_name("slow")
            .is_some());
        // Other operations are not slowed.
        let started = Instant::now();
        grafana.list_workspaces().send().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(400));
    })
    .await
}

#[tokio::test]
async fn global_latency_slows_every_call() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        emu.set_faults(Faults {
            latency_ms: 300,
            ..Faults::default()
        });
        let started = Instant::now();
        grafana.list_workspaces().send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        emu.set_faults(Faults::default());
        let started = Instant::now();
        grafana.list_workspaces().send().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
    })
    .await
}

#[tokio::test]
async fn down_answers_503_until_lifted() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let grafana = client(&emu).await;
        emu.set_faults(Faults {
            down: true,
            retry_after_seconds: 30,
            ..Faults::default()
        });
        let err = grafana.list_workspaces().send().await.unwrap_err();
        let raw = err.raw_response().unwrap();
        assert_eq!(raw.status().as_u16(), 503);
        assert_eq!(raw.headers().get("retry-after"), Some("30"));
        let service_error = err.into_service_error();
        assert_eq!(variant(&service_error), "Unhandled");
        assert_eq!(service_error.code(), Some("ServiceUnavailableException"));
        assert_eq!(
            describe(&grafana).await,
            Err("ServiceUnavailableException".into())
        );
        emu.set_faults(Faults::default());
        grafana.list_workspaces().send().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn sdk_standard_retries_absorb_two_transient_failures() {
    bounded(async {
        let emu = start(standard_seed()).await;
        let retry = RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(10));
        let grafana = client_with(&emu, retry, Duration::from_secs(10)).await;
        emu.set_faults(Faults {
            fail_nth: vec![FailRule::new("ListWorkspaces", 1, "ThrottlingException").times(2)],
            ..Faults::default()
        });
        grafana.list_workspaces().send().await.unwrap();
        let statuses: Vec<u16> = emu.calls().iter().map(|c| c.status).collect();
        assert_eq!(statuses, [429, 429, 200]);
    })
    .await
}

#[tokio::test]
async fn faults_come_from_the_seed_and_are_checked() {
    bounded(async {
        let seed = standard_seed().with_faults(Faults {
            fail_nth: vec![FailRule::new(
                "ListWorkspaces",
                1,
                "InternalServerException",
            )],
            ..Faults::default()
        });
        let emu = start(seed).await;
        let err = client(&emu)
            .await
            .list_workspaces()
            .send()
            .await
            .unwrap_err();
        assert!(err.into_service_error().is_internal_server_exception());
        assert!(emu
            .try_set_faults(Faults {
                error_rate: 1.5,
                ..Faults::default()
            })
            .is_err());
        assert!(emu
            .try_set_faults(Faults {
                fail_nth: vec![FailRule::new("ListWorkspaces", 1, "TeapotException")],
                ..Faults::default()
            })
            .is_err());
        let bad = Emulator::start(EmulatorConfig::new().with_faults(Faults {
            operation_latency_ms: BTreeMap::from([("Nope".to_string(), 1)]),
            ..Faults::default()
        }))
        .await;
        assert_eq!(
            bad.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput)
        );
    })
    .await
}
