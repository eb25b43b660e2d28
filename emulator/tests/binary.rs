//! The `amg-emulator` binary: prints its address as the first stdout line, serves the seed file,
//! applies `--faults`, logs calls to stderr, and exits cleanly on SIGTERM.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const AUTH: (&str, &str) = ("authorization", "AWS4-HMAC-SHA256 Credential=test");

#[tokio::test]
async fn binary_serves_the_seed_with_faults_and_stops_on_sigterm() {
    bounded(async {
        let faults = std::env::temp_dir().join(format!("amg-emulator-faults-{}.json", std::process::id()));
        std::fs::write(
            &faults,
            r#"{"failNth": [{"operation": "ListWorkspaces", "nth": 1, "error": "ThrottlingException"}]}"#,
        )
        .unwrap();
        let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_amg-emulator"))
            .args(["--port", "0", "--seed", seed, "--faults"])
            .arg(&faults)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).await.unwrap();
        let url = first
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        assert!(url.starts_with("http://127.0.0.1:"));
        let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        assert_ne!(addr.port(), 0);

        // --faults replaced the seed's faults: the first ListWorkspaces is throttled.
        let r = raw_to(addr, "GET", "/workspaces", &[AUTH], "").await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        let r = raw_to(addr, "GET", "/workspaces", &[AUTH], "").await;
        assert_eq!(r.status, 200);
        let body = r.json();
        let ids: Vec<&str> = body["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["g-0123456789", "g-abcdef0123"]);
        let r = raw_to(addr, "GET", "/_grafana/g-0123456789/api/org/", &[("authorization", "Bearer glsa_SeededKeyForTests0000000000000000_0a1b2c3d")], "").await;
        assert_eq!(r.status, 200);

        let pid = child.id().expect("running").to_string();
        // The shell's built-in kill: no extra crate, and no reliance on a kill binary.
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("exits within 10 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "", "only one line on stdout");
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
        assert!(stderr.contains("#1 ListWorkspaces -> 429 ThrottlingException (injected)"), "{stderr}");
        assert!(stderr.contains("#2 ListWorkspaces -> 200"), "{stderr}");
        let _ = std::fs::remove_file(&faults);
    })
    .await
}

#[tokio::test]
async fn binary_refuses_a_bad_seed() {
    bounded(async {
        let seed =
            std::env::temp_dir().join(format!("amg-emulator-bad-seed-{}.json", std::process::id()));
        std::fs::write(&seed, r#"{"workspaces": [{"id": "not-an-id"}]}"#).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_amg-emulator"))
            .arg("--seed")
            .arg(&seed)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-id"));
        let _ = std::fs::remove_file(&seed);
    })
    .await
}
