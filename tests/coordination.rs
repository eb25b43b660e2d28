//! The lease table on DynamoDB (issue 16), against moto's server: a real process speaking
//! DynamoDB's wire protocol, reached through the SDK's standard endpoint override. What is
//! asserted is what two replicas would see: conditional writes that land or are refused, and a
//! lease taken over only after its record version stood still a whole duration.

mod support;

use std::time::Duration;

use amg_token_rotator::coordination::lease::{Lease, Record, Write};
use amg_token_rotator::coordination::table::{DynamoTable, LeaseTable};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use support::Moto;

const TABLE: &str = "amg-token-rotator-leases";
const D: Duration = Duration::from_secs(10);
const SAFETY: Duration = Duration::from_secs(1);

/// One shard's item, as a round reads it (one consistent Scan).
async fn read(t: &DynamoTable, shard: &str) -> Option<Record> {
    t.scan().await.expect("scan").remove(shard)
}

async fn table(moto: &Moto) -> DynamoTable {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    // The table as deploy/dynamodb documents it: one string partition key, `shard`.
    client
        .create_table()
        .table_name(TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("shard")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("shard")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("the table is created");
    DynamoTable::new(client, TABLE)
}

/// Reads, asks the lease for its write and sends it, as a replica's heartbeat does.
async fn round(t: &DynamoTable, lease: &mut Lease, shard: &str, now: u64) -> Option<bool> {
    let item = read(t, shard).await;
    let write = lease.next(item.as_ref(), now)?;
    let applied = t.write(shard, &write).await.expect("write");
    lease.written(&write, now, Some(applied));
    Some(applied)
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_writes_land_once_and_are_refused_after() {
    let moto = Moto::start().await;
    let t = table(&moto).await;
    let shard = "us-east-1/g-0123456789";
    assert_eq!(read(&t, shard).await, None);
    let a = Record {
        owner: "a".into(),
        rvn: "a#1".into(),
        duration: D,
    };
    assert!(t.write(shard, &Write::Create(a.clone())).await.unwrap());
    assert_eq!(read(&t, shard).await, Some(a.clone()));
    let b = Record {
        owner: "b".into(),
        rvn: "b#1".into(),
        duration: D,
    };
    assert!(
        !t.write(shard, &Write::Create(b.clone())).await.unwrap(),
        "a second create is refused"
    );
    let stale = Write::Replace {
        expected: "a#0".into(),
        with: b.clone(),
    };
    assert!(
        !t.write(shard, &stale).await.unwrap(),
        "a stale rvn is refused"
    );
    let delete_stale = Write::Delete {
        expected: "b#1".into(),
    };
    assert!(!t.write(shard, &delete_stale).await.unwrap());
    assert_eq!(read(&t, shard).await, Some(a));
    let take = Write::Replace {
        expected: "a#1".into(),
        with: b.clone(),
    };
    assert!(t.write(shard, &take).await.unwrap());
    assert_eq!(read(&t, shard).await, Some(b.clone()));
    let other = "eu-west-1/g-2222222222";
    assert!(t.write(other, &Write::Create(b.clone())).await.unwrap());
    let all = t.scan().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [other, shard]);
    assert_eq!(all[shard], b);
    let release = Write::Delete {
        expected: "b#1".into(),
    };
    assert!(t.write(shard, &release).await.unwrap());
    assert_eq!(read(&t, shard).await, None);
    assert_eq!(t.scan().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_passes_to_another_replica_only_when_its_holder_stops_renewing() {
    let moto = Moto::start().await;
    let t = table(&moto).await;
    let shard = "us-east-1/g-1111111111";
    // Each replica's clock is its own: b's runs 1,000 s ahead of a's.
    let mut a = Lease::new("a", D, SAFETY);
    let mut b = Lease::new("b", D, SAFETY);
    assert_eq!(round(&t, &mut a, shard, 0).await, Some(true));
    assert!(a.holds(0));
    assert_eq!(round(&t, &mut b, shard, 1_000_000).await, None, "b watches");
    // a renews every 4 s: b never sees the same rvn for 10 s.
    for i in 1..=5u64 {
        assert_eq!(round(&t, &mut a, shard, i * 4_000).await, Some(true));
        assert_eq!(round(&t, &mut b, shard, 1_000_000 + i * 4_000).await, None);
        assert!(a.holds(i * 4_000) && !b.holds(1_000_000 + i * 4_000));
    }
    // a stops (killed). b takes over once the rvn it saw has stood still 10 s by its clock.
    let last_seen = 1_000_000 + 5 * 4_000;
    assert_eq!(round(&t, &mut b, shard, last_seen + 9_999).await, None);
    assert_eq!(
        round(&t, &mut b, shard, last_seen + 10_000).await,
        Some(true)
    );
    assert!(b.holds(last_seen + 10_000));
    assert_eq!(read(&t, shard).await.unwrap().owner, "b");
    // a comes back: its renewal finds b's rvn and a knows it has lost the shard.
    assert_eq!(round(&t, &mut a, shard, 24_000).await, None);
    assert!(!a.holds(24_000));
    // b releases on SIGTERM: a creates the item again at once, without waiting.
    let release = b.release().unwrap();
    assert!(t.write(shard, &release).await.unwrap());
    assert_eq!(round(&t, &mut a, shard, 24_001).await, Some(true));
    assert!(a.holds(24_001));
}

// ---- three daemons against one bed ------------------------------------------------------------

const WORKSPACES: usize = 6;

fn workspace_ids() -> Vec<String> {
    (0..WORKSPACES)
        .map(|i| format!("g-70000000{i:02}"))
        .collect()
}

fn replicated_config(bed: &support::Bed) -> std::path::PathBuf {
    let ids = workspace_ids()
        .iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    bed.config(&format!(
        "[daemon]\nschedule = \"*/2 * * * * *\"\n\n[log]\nformat = \"json\"\n\n\
         [coordination]\nmode = \"dynamodb\"\ntable = \"{TABLE}\"\nlease_duration = \"10s\"\nheartbeat = \"2s\"\n\n\
         [[targets]]\nworkspace_ids = [{ids}]\nservice_accounts = [\"svc\"]\n"
    ))
}

/// A bed of `WORKSPACES` workspaces of one service account each, the lease table on its moto,
/// and the replicas' configuration.
async fn replicated_bed() -> (support::Bed, DynamoTable, std::path::PathBuf) {
    use amg_emulator::{Role, Seed, ServiceAccountSeed, WorkspaceSeed};
    let mut seed = Seed::new();
    for id in workspace_ids() {
        seed = seed.with_workspace(
            WorkspaceSeed::new(&id)
                .with_service_account(ServiceAccountSeed::new("svc", Role::Editor)),
        );
    }
    let bed = support::Bed::start(seed).await;
    let table = table(&bed.moto).await;
    let cfg = replicated_config(&bed);
    (bed, table, cfg)
}

/// Brings every token within ten minutes of its expiry, as time would; returns the time it did.
async fn make_all_due(bed: &support::Bed) -> i64 {
    let now = chrono::Utc::now().timestamp();
    for ws in workspace_ids() {
        let sa = bed.service_account_id(&ws, "svc");
        for t in bed.tokens(&ws, "svc") {
            assert!(bed.set_token_expiry(&ws, &sa, &t.id, now + 600).await);
        }
    }
    now
}

/// The shards a daemon's last pass worked on, from its log.
fn held(d: &support::Daemon) -> Option<u64> {
    d.events_with("shards of this pass")
        .last()
        .and_then(|e| e["held"].as_u64())
}

/// Whether every workspace's secret has a current version naming a token created after
/// `after` (epoch seconds).
async fn all_current_since(bed: &support::Bed, after: i64) -> bool {
    for ws in workspace_ids() {
        let name = format!("amg-token-rotator/{ws}/svc");
        let Some(versions) = bed.versions(&name).await else {
            return false;
        };
        if !versions
            .values()
            .any(|s| s.iter().any(|l| l == "AWSCURRENT"))
        {
            return false;
        }
        let newest = bed.tokens(&ws, "svc").iter().map(|t| t.created_at).max();
        if newest.is_none_or(|c| c < after) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_work_rotate_each_token_once_and_hand_over() {
    use std::time::Duration;
    use support::eventually;

    let (bed, table, cfg) = replicated_bed().await;
    let dynamodb = bed.moto.endpoint();
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.as_str())];
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(bed.daemon(&cfg, &env).await);
    }

    // Every credential minted once, whoever minted it, and the shards split two each.
    let started = chrono::Utc::now().timestamp() - 1;
    let converged = eventually(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { all_current_since(&bed, started).await.then_some(()) },
    )
    .await;
    assert!(converged.is_some(), "{}", daemons[0].logs());
    let split = eventually(
        Duration::from_secs(40),
        Duration::from_millis(250),
        || async {
            let h: Vec<Option<u64>> = daemons.iter().map(held).collect();
            (h == [Some(2), Some(2), Some(2)]).then_some(h)
        },
    )
    .await;
    assert!(
        split.is_some(),
        "held: {:?}",
        daemons.iter().map(held).collect::<Vec<_>>()
    );
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken"),
        WORKSPACES
    );
    let mut exported = 0.0;
    for d in &daemons {
        assert_eq!(d.get("/readyz").await.map(|(status, _)| status), Some(200));
        let s = d.scrape().await;
        assert_eq!(s.sum("amg_rotator_coordination_shard_held", &[]), 2.0);
        assert_eq!(s.sum("amg_rotator_coordination_members", &[]), 3.0);
        exported += s.sum("amg_rotator_coordination_shard_held", &[]);
    }
    assert_eq!(
        exported, WORKSPACES as f64,
        "each shard exported by one replica"
    );

    // kill -9 one replica, and bring every token due: the two others rotate everything, its
    // shards once their leases ran out, each token exactly once.
    let mut victim = daemons.remove(0);
    victim.signal("KILL");
    let _ = victim.wait_exit(Duration::from_secs(10)).await;
    let now = make_all_due(&bed).await;
    let rotated = eventually(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { all_current_since(&bed, now).await.then_some(()) },
    )
    .await;
    assert!(
        rotated.is_some(),
        "{}\n{}",
        daemons[0].logs(),
        daemons[1].logs()
    );
    // A few more passes: nothing is rotated twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken"),
        2 * WORKSPACES
    );

    // SIGTERM one of the two: it releases what it holds, and the last takes everything.
    let mut leaving = daemons.remove(0);
    let pid = leaving.pid;
    leaving.signal("TERM");
    assert_eq!(
        leaving.wait_exit(Duration::from_secs(30)).await,
        Ok(Some(0))
    );
    assert!(
        !leaving.events_with("leases released").is_empty(),
        "{}",
        leaving.logs()
    );
    let owners: Vec<String> = table
        .scan()
        .await
        .unwrap()
        .into_values()
        .map(|r| r.owner)
        .collect();
    assert!(
        !owners.iter().any(|o| o.contains(&format!("-{pid}-"))),
        "the leaving replica's items are gone: {owners:?}"
    );
    let all = eventually(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async { (held(&daemons[0]) == Some(WORKSPACES as u64)).then_some(()) },
    )
    .await;
    assert!(all.is_some(), "{}", daemons[0].logs());
    // No replica worked on a shard it did not hold: nothing failed, nothing was refused.
    for d in [&leaving, &daemons[0]] {
        for text in ["credential failed", "action failed", "not sent"] {
            assert!(d.events_with(text).is_empty(), "{text}:\n{}", d.logs());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_dynamodb_stops_changing_anything_within_a_lease() {
    use std::time::Duration;
    use support::{eventually, SmProxy};

    let (bed, table, cfg) = replicated_bed().await;
    // Replica a reaches DynamoDB through a proxy the test can cut; b reaches it directly.
    let cut = SmProxy::start(bed.moto.endpoint()).await;
    let through_proxy = cut.endpoint();
    let a = bed
        .daemon(
            &cfg,
            &[("AWS_ENDPOINT_URL_DYNAMODB", through_proxy.as_str())],
        )
        .await;
    let direct = bed.moto.endpoint();
    let b = bed
        .daemon(&cfg, &[("AWS_ENDPOINT_URL_DYNAMODB", direct.as_str())])
        .await;
    let split = eventually(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { (held(&a) == Some(3) && held(&b) == Some(3)).then_some(()) },
    )
    .await;
    assert!(split.is_some(), "{}\n{}", a.logs(), b.logs());
    let minted = bed.count_calls("CreateWorkspaceServiceAccountToken");
    assert_eq!(minted, WORKSPACES);

    // Cut a off. Within a lease duration it holds nothing, and b holds everything.
    cut.fail("*", u32::MAX, 500, "InternalServerError");
    let alone = eventually(
        Duration::from_secs(40),
        Duration::from_millis(250),
        || async { (held(&a) == Some(0) && held(&b) == Some(WORKSPACES as u64)).then_some(()) },
    )
    .await;
    assert!(alone.is_some(), "{}\n{}", a.logs(), b.logs());
    let owners: std::collections::BTreeSet<String> = table
        .scan()
        .await
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("member/"))
        .map(|(_, r)| r.owner)
        .collect();
    assert!(
        owners.len() == 1 && owners.iter().all(|o| o.contains(&format!("-{}-", b.pid))),
        "{owners:?}"
    );

    // Everything due: b rotates each token once; a, still running, changes nothing.
    let now = make_all_due(&bed).await;
    let rotated = eventually(
        Duration::from_secs(40),
        Duration::from_millis(250),
        || async { all_current_since(&bed, now).await.then_some(()) },
    )
    .await;
    assert!(rotated.is_some(), "{}", b.logs());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        bed.count_calls("CreateWorkspaceServiceAccountToken"),
        2 * WORKSPACES
    );
    assert!(
        !a.events_with("could not read the lease table").is_empty(),
        "{}",
        a.logs()
    );
    for text in ["credential failed", "action failed"] {
        assert!(a.events_with(text).is_empty(), "{text}:\n{}", a.logs());
    }
}
