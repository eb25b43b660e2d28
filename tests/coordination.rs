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
    let item = t.read(shard).await.expect("read");
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
    assert_eq!(t.read(shard).await.unwrap(), None);
    let a = Record {
        owner: "a".into(),
        rvn: "a#1".into(),
        duration: D,
    };
    assert!(t.write(shard, &Write::Create(a.clone())).await.unwrap());
    assert_eq!(t.read(shard).await.unwrap(), Some(a.clone()));
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
    assert_eq!(t.read(shard).await.unwrap(), Some(a));
    let take = Write::Replace {
        expected: "a#1".into(),
        with: b.clone(),
    };
    assert!(t.write(shard, &take).await.unwrap());
    assert_eq!(t.read(shard).await.unwrap(), Some(b.clone()));
    let other = "eu-west-1/g-2222222222";
    assert!(t.write(other, &Write::Create(b.clone())).await.unwrap());
    let all = t.scan().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [other, shard]);
    assert_eq!(all[shard], b);
    let release = Write::Delete {
        expected: "b#1".into(),
    };
    assert!(t.write(shard, &release).await.unwrap());
    assert_eq!(t.read(shard).await.unwrap(), None);
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
    assert_eq!(t.read(shard).await.unwrap().unwrap().owner, "b");
    // a comes back: its renewal finds b's rvn and a knows it has lost the shard.
    assert_eq!(round(&t, &mut a, shard, 24_000).await, None);
    assert!(!a.holds(24_000));
    // b releases on SIGTERM: a creates the item again at once, without waiting.
    let release = b.release().unwrap();
    assert!(t.write(shard, &release).await.unwrap());
    assert_eq!(round(&t, &mut a, shard, 24_001).await, Some(true));
    assert!(a.holds(24_001));
}
