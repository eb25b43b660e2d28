//! The binary's edges that need no AWS: `check-config` on the shipped example and on bad input,
//! each bad value named with its key and a documented exit code.

use std::process::Command;

fn rotator(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amg-token-rotator"))
        .args(args)
        .env_remove("AMG_ROTATOR__DAEMON__LISTEN")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_config(text: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    rotator(&all)
}

#[test]
fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let (code, stdout, stderr) = rotator(&["--config", example, "check-config"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("is valid: 3 target(s)"), "{stdout}");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    assert_eq!(rotator(&["--config", demo, "check-config"]).0, Some(0));
}

#[test]
fn every_problem_is_named_with_exit_code_2() {
    let (code, _, stderr) = with_config(
        r#"
[[targets]]
workspace_ids = ["g-XYZ"]
api_keys = ["legacy"]
secret_format = "raw"

[permissions]
enforce = true
"#,
        &["check-config"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    for needle in [
        "targets[0].workspace_ids[0] = \"g-XYZ\"",
        "targets[0].api_key_role",
        "targets[0].secret_format = \"raw\"",
        "permissions.enforce = true",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn a_missing_file_and_malformed_toml_are_exit_code_2_for_every_command() {
    for cmd in ["check-config", "once", "plan", "run"] {
        let (code, _, stderr) = rotator(&["--config", "/nonexistent/amg.toml", cmd]);
        assert_eq!(code, Some(2), "{cmd}: {stderr}");
        assert!(stderr.contains("/nonexistent/amg.toml"), "{stderr}");
    }
    let (code, _, stderr) = with_config("[[targets]\n", &["once"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[targets]]\nworkspace_ids = [\"g-0123456789\"]\nservice_accounts = [\"a\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amg-token-rotator"))
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .env("AMG_ROTATOR__DEFAULTS__TOKEN_TTL", "forever")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("targets[0].token_ttl = \"forever\""),
        "{stderr}"
    );
}
