//! End-to-end: what the seed documents describe beyond token rotation — service-account
//! bootstrap, legacy API keys, permissions, and verification of new keys — through the real
//! binary against the AMG emulator and moto.

mod support;

use std::time::Duration;

use amg_emulator::{
    FailRule, Faults, Permission, Role, Seed, SsoDirectory, User, UserType, WorkspaceSeed,
};
use support::{config_for, workspace, Bed};

const WS: &str = "g-1111111111";
const LEGACY: &str = "g-8888888888";

fn seed(workspaces: Vec<WorkspaceSeed>) -> Seed {
    Seed {
        workspaces,
        ..Seed::default()
    }
}

fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

fn legacy_workspace() -> WorkspaceSeed {
    WorkspaceSeed {
        id: LEGACY.into(),
        name: Some("legacy".into()),
        grafana_version: Some("10.4".into()),
        ..WorkspaceSeed::default()
    }
}

fn key_config(extra: &str) -> String {
    format!(
        "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"ADMIN\"\ntoken_ttl = \"20s\"\nrotate_before = \"12s\"\nrotation_spread = \"0s\"\ngrace_period = \"2s\"\n{extra}\n"
    )
}

const KEY_SECRET: &str = "amg-token-rotator/g-8888888888/legacy";

fn api_key_names(bed: &Bed) -> Vec<String> {
    let state = bed.amg.state();
    let ws = state.workspaces.iter().find(|w| w.id == LEGACY).unwrap();
    let mut names: Vec<String> = ws.api_keys.iter().map(|k| k.key_name.clone()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_service_account_is_bootstrapped_with_its_declared_role() {
    let bed = Bed::start(seed(vec![workspace(WS, &[])])).await;
    let cfg = bed.config(&config_for(
        &[WS],
        &["deployer"],
        "service_account_role = \"EDITOR\"",
    ));
    let plan = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        plan.stdout
            .contains("create service account with role EDITOR; create secret; rotate (first_run)"),
        "{}",
        plan.stdout
    );
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let state = bed.amg.state();
    let sa = state.workspaces[0]
        .service_accounts
        .iter()
        .find(|s| s.name == "deployer")
        .expect("created");
    assert_eq!(sa.grafana_role, Role::Editor);
    let doc = bed
        .secret_json("amg-token-rotator/g-1111111111/deployer", "AWSCURRENT")
        .await;
    assert_eq!(doc["serviceAccountId"], sa.id.as_str());
    assert!(bed.key_works(WS, doc["token"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_conflict_is_reported_once_not_retried_in_a_loop() {
    let bed = Bed::start(seed(vec![workspace(WS, &[])])).await;
    bed.amg.set_faults(Faults {
        fail_nth: vec![
            FailRule::new("CreateWorkspaceServiceAccount", 1, "ConflictException").times(100),
        ],
        ..Faults::default()
    });
    let cfg = bed.config(&config_for(
        &[WS],
        &["deployer"],
        "service_account_role = \"EDITOR\"",
    ));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout.contains("already exists or the name is taken"),
        "{}",
        run.stdout
    );
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccount"), 1);
    assert_eq!(bed.count_calls("CreateWorkspaceServiceAccountToken"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn role_drift_is_reported_and_rotation_goes_on() {
    let mut ws = workspace(WS, &[("terraform", &[])]);
    ws.service_accounts[0].grafana_role = Some(Role::Viewer);
    let bed = Bed::start(seed(vec![ws])).await;
    let cfg = bed.config(&config_for(
        &[WS],
        &["terraform"],
        "service_account_role = \"ADMIN\"",
    ));
    let plan = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        plan.stdout
            .contains("role drift: is VIEWER, declared ADMIN"),
        "{}",
        plan.stdout
    );
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stderr.contains("role differs from the declared one"),
        "{}",
        run.stderr
    );
    assert!(bed
        .versions("amg-token-rotator/g-1111111111/terraform")
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_api_keys_rotate_across_passes_with_grace() {
    let bed = Bed::start(seed(vec![legacy_workspace()])).await;
    let cfg = bed.config(&key_config(""));
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let first = bed.secret_json(KEY_SECRET, "AWSCURRENT").await;
    assert_eq!(first["keyName"], "amgrot-legacy-1");
    assert_eq!(first["keyRole"], "ADMIN");
    assert!(
        bed.key_works(LEGACY, first["token"].as_str().unwrap())
            .await
    );
    assert_eq!(api_key_names(&bed), ["amgrot-legacy-1"]);

    // The 20 s key falls due 12 s before expiry, 8 s after it was made; the next key made then is
    // not due before the grace deletion pass below (no spread, to keep the margins known).
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let second = bed.secret_json(KEY_SECRET, "AWSCURRENT").await;
    assert_eq!(second["keyName"], "amgrot-legacy-2");
    assert_eq!(
        bed.secret_json(KEY_SECRET, "AWSPREVIOUS").await["keyName"],
        "amgrot-legacy-1"
    );
    assert!(
        bed.key_works(LEGACY, first["token"].as_str().unwrap())
            .await,
        "the old key works during grace"
    );
    assert_eq!(api_key_names(&bed), ["amgrot-legacy-1", "amgrot-legacy-2"]);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert_eq!(api_key_names(&bed), ["amgrot-legacy-2"]);
    assert!(
        bed.key_works(LEGACY, second["token"].as_str().unwrap())
            .await
    );
    let versions = bed.versions(KEY_SECRET).await.unwrap();
    assert!(
        !versions.values().flatten().any(|s| s == "AWSPREVIOUS"),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_secret_or_a_deleted_key_is_repaired() {
    let bed = Bed::start(seed(vec![legacy_workspace()])).await;
    let cfg = bed.config(&key_config(&format!(
        "verify = true\nliveness_checks = true\ngrafana_url = {:?}\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1m\"\norphan_margin = \"2s\"",
        bed.amg.grafana_url_template()
    )).replace("token_ttl = \"20s\"\nrotate_before = \"12s\"\nrotation_spread = \"0s\"\ngrace_period = \"2s\"\n", ""));
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let first = bed.secret_json(KEY_SECRET, "AWSCURRENT").await;

    // The secret is deleted behind the rotator's back: the key it named is replaced, not leaked.
    // Its name is taken and nothing records it any more: it is put on the secret's record of
    // unpublished keys, the next generation is published, and the old key goes once older than
    // orphan_margin (it could have been another rotator's, about to be published).
    bed.sm
        .delete_secret()
        .secret_id(KEY_SECRET)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let second = bed.secret_json(KEY_SECRET, "AWSCURRENT").await;
    assert_eq!(second["keyName"], "amgrot-legacy-2");
    assert_ne!(second["token"], first["token"]);
    assert_eq!(api_key_names(&bed), ["amgrot-legacy-1", "amgrot-legacy-2"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stdout
            .contains("delete API key amgrot-legacy-1 (orphan)"),
        "{}",
        run.stdout
    );
    assert!(
        !bed.key_works(LEGACY, first["token"].as_str().unwrap())
            .await
    );
    assert_eq!(api_key_names(&bed), ["amgrot-legacy-2"]);

    // The key is deleted behind its back: verification notices, and a new one is published.
    bed.grafana_client()
        .delete_workspace_api_key()
        .workspace_id(LEGACY)
        .key_name("amgrot-legacy-2")
        .send()
        .await
        .unwrap();
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stdout.contains("rotate (missing_token)"),
        "{}",
        run.stdout
    );
    let third = bed.secret_json(KEY_SECRET, "AWSCURRENT").await;
    assert_eq!(third["keyName"], "amgrot-legacy-3");
    assert!(
        bed.key_works(LEGACY, third["token"].as_str().unwrap())
            .await
    );
}

fn user(id: &str) -> User {
    User {
        id: id.into(),
        user_type: UserType::SsoUser,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_are_audited_planned_and_enforced_with_per_entry_errors() {
    let mut ws = workspace(WS, &[("terraform", &[])]);
    ws.permissions = vec![
        Permission {
            role: Role::Admin,
            user: user("alice"),
        },
        Permission {
            role: Role::Viewer,
            user: user("bob"),
        },
        Permission {
            role: Role::Admin,
            user: user("mallory"),
        },
    ];
    let mut s = seed(vec![ws]);
    s.sso_directory = Some(SsoDirectory {
        users: vec![
            "alice".into(),
            "bob".into(),
            "mallory".into(),
            "carol".into(),
        ],
        groups: vec![],
    });
    let bed = Bed::start(s).await;
    let base = config_for(&[WS], &["terraform"], "");

    let audit = bed.config(&format!("{base}\n[permissions]\naudit = true\n"));
    let run = bed.run(&audit, &["plan"], &[]).await;
    assert!(
        run.stdout
            .contains("permissions g-1111111111: ADMIN/SSO_USER=2 VIEWER/SSO_USER=1"),
        "{}",
        run.stdout
    );

    let declared = format!(
        "{base}\n[permissions]\naudit = true\nenforce = {{}}\n[[permissions.bindings]]\nrole = \"ADMIN\"\nusers = [\"alice\"]\n[[permissions.bindings]]\nrole = \"EDITOR\"\nusers = [\"bob\", \"carol\", \"nobody\"]\n"
    );
    let plan_cfg = bed.config(&declared.replace("{}", "false"));
    let run = bed.run(&plan_cfg, &["plan"], &[]).await;
    assert!(
        run.stdout.contains("add EDITOR SSO_USER bob, add EDITOR SSO_USER carol, add EDITOR SSO_USER nobody, revoke ADMIN SSO_USER mallory"),
        "{}",
        run.stdout
    );
    assert_eq!(
        bed.count_calls("UpdatePermissions"),
        0,
        "plan changes nothing"
    );

    let enforce = bed.config(&declared.replace("{}", "true"));
    let run = bed.once(&enforce).await;
    assert_eq!(
        run.code,
        Some(1),
        "a refused entry is reported: {}",
        run.all_output()
    );
    assert!(
        run.stdout.contains("refused add EDITOR SSO_USER nobody"),
        "{}",
        run.stdout
    );
    let state = bed.amg.state();
    let mut now: Vec<(String, Role)> = state.workspaces[0]
        .permissions
        .iter()
        .map(|p| (p.user.id.clone(), p.role))
        .collect();
    now.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        now,
        vec![
            ("alice".into(), Role::Admin),
            ("bob".into(), Role::Editor),
            ("carol".into(), Role::Editor)
        ]
    );
    // The credential itself was rotated regardless.
    assert!(bed
        .versions("amg-token-rotator/g-1111111111/terraform")
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_failure_leaves_awscurrent_as_it_was() {
    let bed = Bed::start(seed(vec![workspace(WS, &[("terraform", &[])])])).await;
    let good = config_for(
        &[WS],
        &["terraform"],
        &format!(
            "verify = true\ngrafana_url = {:?}\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1m\"",
            bed.amg.grafana_url_template()
        ),
    );
    let cfg = bed.config(&good);
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert!(
        run.stderr.contains("verified the new key"),
        "{}",
        run.stderr
    );
    let name = "amg-token-rotator/g-1111111111/terraform";
    let first = bed.secret_json(name, "AWSCURRENT").await;
    let sa_id = bed.service_account_id(WS, "terraform");
    bed.set_token_expiry(
        WS,
        &sa_id,
        first["tokenId"].as_str().unwrap(),
        now_epoch() + 600,
    )
    .await;

    // Point verification at a workspace where no key is valid.
    let bad = bed.config(&good.replace("{workspace_id}", "g-ffffffffff"));
    let run = bed.once(&bad).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout.contains("verification of the new key failed"),
        "{}",
        run.stdout
    );
    assert_eq!(
        bed.secret_json(name, "AWSCURRENT").await["tokenId"],
        first["tokenId"]
    );
    let tokens = bed.tokens(WS, "terraform");
    assert_eq!(
        tokens.len(),
        1,
        "the unverified token is deleted: {tokens:?}"
    );
    let versions = bed.versions(name).await.unwrap();
    assert!(
        !versions.values().flatten().any(|s| s == "AWSPENDING"),
        "{versions:?}"
    );
    // Proven before publishing: the failure wrote no version at all.
    assert_eq!(versions.len(), 1, "{versions:?}");
}
