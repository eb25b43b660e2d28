//! The lease table: one item per shard, on DynamoDB (`DynamoTable`). An item is `shard` (S, the
//! partition key), `owner` (S), `rvn` (S) and `lease_ms` (N, the duration its owner promised). Reads are strongly consistent (Scan with
//! ConsistentRead), and every write is conditional (`lease::Write`): a create only where no item
//! is, a replace or delete only while the item's rvn is the one expected. DynamoDB applies each
//! atomically or refuses it with ConditionalCheckFailedException.
//!
//! A write is sent once, never retried: an attempt whose answer was lost may have landed, and
//! its retry would then be refused by its own rvn. `lease::Lease` counts an unknown answer as a
//! refusal, which is safe (the lease is taken back a duration later).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::lease::{Record, Write};
use crate::aws::ApiError;

#[async_trait]
pub trait LeaseTable: Send + Sync {
    /// Every item, as one strongly consistent read shows them (a round of `shards::Shards`).
    async fn scan(&self) -> Result<BTreeMap<String, Record>, ApiError>;
    /// Applies `write` to the shard's item if its condition holds: `Ok(true)` applied,
    /// `Ok(false)` refused by the condition, `Err` refused for another reason or unknown.
    async fn write(&self, shard: &str, write: &Write) -> Result<bool, ApiError>;
}

/// The table on DynamoDB.
pub struct DynamoTable {
    client: Client,
    table: String,
}

impl DynamoTable {
    pub fn new(client: Client, table: &str) -> DynamoTable {
        DynamoTable {
            client,
            table: table.to_owned(),
        }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// The item's attributes as a `Record`; `None` when one is missing or malformed.
fn record_of(item: &HashMap<String, AttributeValue>) -> Option<Record> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let lease_ms: u64 = item.get("lease_ms")?.as_n().ok()?.parse().ok()?;
    Some(Record {
        owner: text("owner")?,
        rvn: text("rvn")?,
        duration: Duration::from_millis(lease_ms),
    })
}

fn item_of(shard: &str, r: &Record) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("shard".to_owned(), s(shard)),
        ("owner".to_owned(), s(&r.owner)),
        ("rvn".to_owned(), s(&r.rvn)),
        (
            "lease_ms".to_owned(),
            AttributeValue::N(r.duration.as_millis().to_string()),
        ),
    ])
}

/// A conditional write's answer: refused by its condition is `Ok(false)`, not an error.
fn answer<O, E>(
    out: Result<
        O,
        aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    >,
    refused: impl Fn(&E) -> bool,
) -> Result<bool, ApiError>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    match out {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(&refused) => Ok(false),
        Err(e) => Err(ApiError::from_sdk(e)),
    }
}

#[async_trait]
impl LeaseTable for DynamoTable {
    async fn scan(&self) -> Result<BTreeMap<String, Record>, ApiError> {
        let mut items = BTreeMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        // Bounded: 100 pages of up to 1 MB. The table holds a shard per workspace and a member
        // item per replica: a few hundred small items, one page.
        for _ in 0..100 {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(ApiError::from_sdk)?;
            for item in page.items() {
                let key = item.get("shard").and_then(|v| v.as_s().ok());
                if let (Some(key), Some(record)) = (key, record_of(item)) {
                    items.insert(key.clone(), record);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    async fn write(&self, shard: &str, write: &Write) -> Result<bool, ApiError> {
        match write {
            Write::Create(record) | Write::Replace { with: record, .. } => {
                let put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item_of(shard, record)));
                let put = match write {
                    Write::Replace { expected, .. } => put
                        .condition_expression("#rvn = :expected")
                        .expression_attribute_names("#rvn", "rvn")
                        .expression_attribute_values(":expected", s(expected)),
                    // `shard` is one of DynamoDB's reserved words: named through `#k`.
                    _ => put
                        .condition_expression("attribute_not_exists(#k)")
                        .expression_attribute_names("#k", "shard"),
                };
                answer(put.send().await, |e| {
                    e.is_conditional_check_failed_exception()
                })
            }
            Write::Delete { expected } => answer(
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("shard", s(shard))
                    .condition_expression("#rvn = :expected")
                    .expression_attribute_names("#rvn", "rvn")
                    .expression_attribute_values(":expected", s(expected))
                    .send()
                    .await,
                |e| e.is_conditional_check_failed_exception(),
            ),
        }
    }
}
