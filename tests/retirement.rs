//! Retiring a superseded token on evidence, as a user meets it: the real binary against the AMG
//! emulator (whose Grafana stand-in records `lastUsedAt` as Grafana 10 does) and moto, with
//! consumers played by the test calling the stand-in with the keys they hold.
//!
//! Three service accounts are rotated together; then each one's consumers behave differently:
//! `terraform`'s keep the old key (a process that read it into its environment), `ci`'s move to
//! the new one, and nobody calls with `idle`'s. Grace 1 s, quiet 3 s, at most 12 s.

mod reliability_support;
mod support;

use std::time::{Duration, Instant};

use amg_emulator::Seed;
use reliability_support::{set_current_expiry, write_config, Cred};
use support::{config_for, workspace, Bed};

const WS: &str = "g-1111111111";

fn token_name(doc: &serde_json::Value) -> String {
    doc["tokenName"].as_str().unwrap().to_owned()
}

fn live(bed: &Bed, sa: &str) -> Vec<String> {
    bed.tokens(WS, sa).into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_token_goes_when_its_consumers_have_moved_and_not_before() {
    let accounts = ["terraform", "ci", "idle"];
    let bed = Bed::start(Seed {
        workspaces: vec![workspace(
            WS,
            &[("terraform", &[]), ("ci", &[]), ("idle", &[])],
        )],
        ..Seed::default()
    })
    .await;
    let cfg = write_config(
        &bed,
        "retire",
        &config_for(
            &[WS],
            &accounts,
            "token_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\nquiet_period = \"3s\"\nmax_overlap = \"12s\"\norphan_margin = \"1s\"",
        ),
    );
    let first = bed.once(&cfg).await;
    assert_eq!(first.code, Some(0), "{}", first.all_output());
    let mut old = Vec::new();
    for sa in accounts {
        let cred = Cred::token(WS, sa);
        old.push(bed.secret_json(&cred.secret, "AWSCURRENT").await);
        set_current_expiry(&bed, &cred, 600).await;
    }
    let rotated = bed.once(&cfg).await;
    assert_eq!(rotated.code, Some(0), "{}", rotated.all_output());
    // Taken once the rotating pass ended; the promotion was recorded, in whole seconds, up to a
    // second before that (the timing assertions below allow for it).
    let promoted = Instant::now();
    let mut new = Vec::new();
    for sa in accounts {
        new.push(
            bed.secret_json(&Cred::token(WS, sa).secret, "AWSCURRENT")
                .await,
        );
    }
    for (o, n) in old.iter().zip(&new) {
        assert_ne!(token_name(o), token_name(n), "rotated");
    }
    let key = |doc: &serde_json::Value| doc["token"].as_str().unwrap().to_owned();
    // Consumers call a second after the promotion (AMG's times are whole seconds).
    let consumers = async |bed: &Bed| {
        assert!(
            bed.key_works(WS, &key(&old[0])).await,
            "terraform's old key"
        );
        assert!(bed.key_works(WS, &key(&new[1])).await, "ci's new key");
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    consumers(&bed).await;

    // Past grace: terraform's consumers still use the old token, ci's have not been quiet for
    // 3 s yet; nobody used idle's tokens, so time alone decides.
    let r = bed.once(&cfg).await;
    assert_eq!(r.code, Some(0), "{}", r.all_output());
    assert!(
        live(&bed, "terraform").contains(&token_name(&old[0])),
        "{}",
        r.all_output()
    );
    assert!(
        live(&bed, "ci").contains(&token_name(&old[1])),
        "{}",
        r.all_output()
    );
    assert!(
        !live(&bed, "idle").contains(&token_name(&old[2])),
        "{}",
        r.stdout
    );
    let says = |r: &support::Run, sa: &str, words: &str| {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{WS} {sa} -> ")) && l.contains("superseded"))
            .unwrap_or_else(|| panic!("no superseded line for {sa}:\n{}", r.stdout))
            .to_owned();
        assert!(line.contains(words), "{sa}: {line}");
    };
    says(&r, "terraform", "kept, consumers have not moved");
    says(&r, "ci", "kept for the quiet period");
    says(
        &r,
        "idle",
        "no usage data since the promotion: deleted after grace",
    );

    // Quiet for 3 s: ci's old token goes; terraform's consumers keep calling, so it stays.
    let mut ci_gone = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        consumers(&bed).await;
        let r = bed.once(&cfg).await;
        assert_eq!(r.code, Some(0), "{}", r.all_output());
        if !live(&bed, "ci").contains(&token_name(&old[1])) {
            ci_gone = Some(r);
            break;
        }
    }
    let r = ci_gone.expect("ci's superseded token was deleted within 10 passes");
    says(&r, "ci", "consumers have moved, deleted");
    assert!(
        promoted.elapsed() >= Duration::from_millis(1500),
        "deleted before the quiet period (3 s)"
    );
    assert!(live(&bed, "terraform").contains(&token_name(&old[0])));

    // The plan names terraform's laggards and the secret they should re-read.
    let plan = bed.run(&cfg, &["plan"], &[]).await;
    says(&plan, "terraform", "kept, consumers have not moved");

    // The maximum overlap: terraform's old token goes although it is still used.
    let mut gone = None;
    for _ in 0..20 {
        consumers(&bed).await;
        let r = bed.once(&cfg).await;
        if !live(&bed, "terraform").contains(&token_name(&old[0])) {
            gone = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let r = gone.expect("terraform's superseded token was deleted at max_overlap");
    assert!(
        promoted.elapsed() >= Duration::from_millis(10_500),
        "deleted before max_overlap (12 s)"
    );
    says(
        &r,
        "terraform",
        &format!(
            "must re-read secret {}",
            Cred::token(WS, "terraform").secret
        ),
    );
    assert!(bed.key_works(WS, &key(&new[0])).await);
}
