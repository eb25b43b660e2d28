//! End-to-end: an API-key credential carried across its workspace's upgrade to Grafana 12, which
//! removed API keys, by the real binary against the AMG emulator (which models the upgrade both
//! ways AWS might do it: the keys stop working, or, as Grafana's own migration does, each key
//! becomes a `sa-autogen-<key name>` service account whose token is the key) and Secrets
//! Manager on moto. What a consumer of the secret sees: between any two passes AWSCURRENT holds
//! a key the workspace's Grafana accepts (except, with keys invalidated, from the upgrade to the
//! next pass: nothing can be done before the rotator runs); after the migration pass it names
//! the service account and its token; from then on the credential is a token credential.

mod reliability_support;
mod support;

use std::time::Duration;

use amg_emulator::{ApiKeyUpgrade, Role, Seed, WorkspaceSeed};
use reliability_support::{once_crashing_at, write_config};
use support::Bed;

const WS: &str = "g-8888888888";
const SECRET: &str = "amg-token-rotator/g-8888888888/api-key/legacy";

async fn bed(upgrade: ApiKeyUpgrade) -> Bed {
    let bed = Bed::start(Seed {
        workspaces: vec![WorkspaceSeed {
            id: WS.into(),
            name: Some("legacy".into()),
            grafana_version: Some("10.4".into()),
            ..WorkspaceSeed::default()
        }],
        ..Seed::default()
    })
    .await;
    bed.amg.set_api_key_upgrade(upgrade);
    bed
}

fn config(bed: &Bed, extra: &str) -> std::path::PathBuf {
    write_config(
        bed,
        "migration",
        &format!(
            "[log]\nformat = \"text\"\n\n[[targets]]\nworkspace_ids = [\"{WS}\"]\n\
             api_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n\
             secret_name = \"amg-token-rotator/{{workspace_id}}/api-key/{{key_name}}\"\n\
             grace_period = \"2s\"\norphan_margin = \"1s\"\n{extra}"
        ),
    )
}

/// AWSCURRENT's JSON, and whether its key opens the workspace's Grafana.
async fn current(bed: &Bed) -> (serde_json::Value, bool) {
    let doc = bed.secret_json(SECRET, "AWSCURRENT").await;
    let works = bed.key_works(WS, doc["token"].as_str().unwrap()).await;
    (doc, works)
}

fn accounts(bed: &Bed) -> Vec<(String, Role)> {
    let state = bed.amg.state();
    let ws = state.workspaces.iter().find(|w| w.id == WS).unwrap();
    ws.service_accounts
        .iter()
        .map(|a| (a.name.clone(), a.grafana_role))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_grafana_migrated_is_adopted_its_secret_names_the_account_and_the_old_key_goes_after_grace(
) {
    let bed = bed(ApiKeyUpgrade::Migrate).await;
    let cfg = config(&bed, "");
    let first = bed.once(&cfg).await;
    assert_eq!(first.code, Some(0), "{}", first.all_output());
    let (key_doc, works) = current(&bed).await;
    assert!(works, "{key_doc}");
    let key_name = key_doc["keyName"].as_str().unwrap().to_owned();
    let plan = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        plan.stdout
            .contains("will migrate this key to service account legacy"),
        "{}",
        plan.stdout
    );

    let report = bed.amg.upgrade_workspace(WS, "12.4").unwrap();
    let autogen = format!("sa-autogen-{key_name}");
    assert_eq!(report.migrated_api_keys.len(), 1, "{report:?}");
    assert_eq!(report.migrated_api_keys[0].service_account_name, autogen);
    // Between the upgrade and the next pass, consumers keep a working key.
    assert!(
        current(&bed).await.1,
        "the key stopped working at the upgrade"
    );

    let plan = bed.run(&cfg, &["plan"], &[]).await;
    assert!(
        plan.stdout.contains("rotate (api_key_migration)")
            && plan
                .stdout
                .contains(&format!("API key legacy becomes service account {autogen}")),
        "{}",
        plan.stdout
    );
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let (doc, works) = current(&bed).await;
    assert!(works, "{doc}");
    assert_eq!(doc["serviceAccountName"], autogen.as_str(), "{doc}");
    assert!(doc["tokenId"].is_string(), "{doc}");
    assert_ne!(doc["token"], key_doc["token"]);
    // Adopted, not created: the one account is Grafana's, with the key's role.
    assert_eq!(accounts(&bed), [(autogen.clone(), Role::Editor)]);
    // The old key, now a token of that account, is kept for the grace period, then deleted.
    let names = |bed: &Bed| -> Vec<String> {
        bed.tokens(WS, &autogen)
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    assert!(names(&bed).contains(&key_name), "{:?}", names(&bed));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    assert_eq!(
        names(&bed),
        [doc["tokenName"].as_str().unwrap().to_owned()],
        "{}",
        run.stdout
    );
    assert!(current(&bed).await.1);
    // A token credential from now on: nothing to do.
    let run = bed.once(&cfg).await;
    assert!(run.stdout.contains("1 ok"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_upgrade_invalidated_is_replaced_by_a_new_account_on_the_next_pass() {
    let bed = bed(ApiKeyUpgrade::Invalidate).await;
    let cfg = config(&bed, "");
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let report = bed.amg.upgrade_workspace(WS, "12.4").unwrap();
    assert_eq!(report.invalidated_api_keys.len(), 1, "{report:?}");
    assert!(!current(&bed).await.1, "an invalidated key still works");
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let (doc, works) = current(&bed).await;
    assert!(works, "{doc}");
    assert_eq!(doc["serviceAccountName"], "legacy");
    assert_eq!(accounts(&bed), [("legacy".to_owned(), Role::Editor)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_takes_the_configured_name_and_can_be_turned_off() {
    let bed = bed(ApiKeyUpgrade::Migrate).await;
    let named = config(&bed, "migrated_service_account = \"{key_name}-sa\"\n");
    assert_eq!(bed.once(&named).await.code, Some(0));
    bed.amg.upgrade_workspace(WS, "12.4").unwrap();
    let off = write_config(
        &bed,
        "off",
        &std::fs::read_to_string(&named).unwrap().replace(
            "migrated_service_account = \"{key_name}-sa\"\n",
            "migrate_api_keys = false\n",
        ),
    );
    let run = bed.once(&off).await;
    assert_eq!(run.code, Some(1), "{}", run.all_output());
    assert!(
        run.stdout.contains("as migrate_api_keys = false asks"),
        "{}",
        run.stdout
    );
    // The configured name wins over Grafana's own account.
    let run = bed.once(&named).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let (doc, works) = current(&bed).await;
    assert!(works);
    assert_eq!(doc["serviceAccountName"], "legacy-sa");
}

/// A crash (as `kill -9`) at each step of the migration pass, then clean passes: AWSCURRENT
/// works and names the account, exactly one account is used, and nothing minted is left
/// unaccounted for (one token besides the old key's during its grace).
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_each_step_of_the_migration_converges() {
    for point in [
        "after_create_token",
        "after_verify",
        "after_pending",
        "after_promote",
    ] {
        let bed = bed(ApiKeyUpgrade::Invalidate).await;
        let cfg = config(
            &bed,
            &format!(
                "verify = true\ngrafana_url = {:?}\n",
                bed.amg.grafana_url_template()
            ),
        );
        assert_eq!(bed.once(&cfg).await.code, Some(0), "{point}");
        bed.amg.upgrade_workspace(WS, "12.4").unwrap();
        once_crashing_at(&bed, &cfg, point).await;
        for _ in 0..2 {
            let run = bed.once(&cfg).await;
            assert_eq!(run.code, Some(0), "{point}: {}", run.all_output());
        }
        let (doc, works) = current(&bed).await;
        assert!(works, "{point}: {doc}");
        assert_eq!(doc["serviceAccountName"], "legacy", "{point}");
        assert_eq!(accounts(&bed).len(), 1, "{point}: {:?}", accounts(&bed));
        // Past the orphan margin, a clean pass leaves only the current token.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(bed.once(&cfg).await.code, Some(0), "{point}");
        let tokens: Vec<String> = bed
            .tokens(WS, "legacy")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            tokens,
            [doc["tokenName"].as_str().unwrap().to_owned()],
            "{point}"
        );
    }
}

/// With Grafana's own migration, the pass after the grace period deletes the token the old key
/// became; a crash right after that deletion converges too, and the key is gone for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_deleting_the_old_keys_token_converges() {
    let bed = bed(ApiKeyUpgrade::Migrate).await;
    let cfg = config(&bed, "");
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    let key = bed.secret_json(SECRET, "AWSCURRENT").await;
    bed.amg.upgrade_workspace(WS, "12.4").unwrap();
    assert_eq!(bed.once(&cfg).await.code, Some(0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    once_crashing_at(&bed, &cfg, "after_delete_token").await;
    let run = bed.once(&cfg).await;
    assert_eq!(run.code, Some(0), "{}", run.all_output());
    let (doc, works) = current(&bed).await;
    assert!(works, "{doc}");
    assert!(!bed.key_works(WS, key["token"].as_str().unwrap()).await);
    let autogen = doc["serviceAccountName"].as_str().unwrap().to_owned();
    let tokens: Vec<String> = bed
        .tokens(WS, &autogen)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(tokens, [doc["tokenName"].as_str().unwrap().to_owned()]);
}
