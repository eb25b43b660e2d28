//! CloudWatch embedded metric format: a log line that is a JSON object whose `_aws` member tells
//! CloudWatch Logs which of its members are metrics and which are dimensions. On ECS the
//! awslogs driver ships stdout to CloudWatch Logs, which extracts the metrics (no header
//! needed). One line per credential, so each keeps its own dimensions:
//! `CredentialExpiresInSeconds` (from the expiry gauge; left out when unknown) and
//! `CredentialHealthy` (0 or 1), with `expires_at` as a plain member for Logs Insights.
//! tests/export.rs checks the lines against the format's specification.

use serde_json::{json, Map, Value};

use crate::config::{EmfSettings, EMF_LABELS};
use crate::daemon::metrics::CredentialValues;

pub const EXPIRES_IN: &str = "CredentialExpiresInSeconds";
pub const HEALTHY: &str = "CredentialHealthy";

/// One line per credential, `now` being the time the metrics describe.
pub fn lines(
    settings: &EmfSettings,
    credentials: &[CredentialValues],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    credentials
        .iter()
        .map(|c| line(settings, c, now).to_string())
        .collect()
}

fn line(s: &EmfSettings, c: &CredentialValues, now: chrono::DateTime<chrono::Utc>) -> Value {
    let mut root = Map::new();
    for (name, value) in EMF_LABELS
        .iter()
        .zip([&c.workspace, &c.service_account, &c.kind])
    {
        root.insert((*name).into(), json!(value));
    }
    for (name, value) in &s.static_dimensions {
        root.insert(name.clone(), json!(value));
    }
    let mut metrics = Vec::new();
    if let Some(at) = c.expires_at {
        root.insert(EXPIRES_IN.into(), json!(at - now.timestamp()));
        if let Some(t) = chrono::DateTime::from_timestamp(at, 0) {
            root.insert("expires_at".into(), json!(t.to_rfc3339()));
        }
        metrics.push(json!({ "Name": EXPIRES_IN, "Unit": "Seconds" }));
    }
    if let Some(healthy) = c.healthy {
        root.insert(HEALTHY.into(), json!(u8::from(healthy)));
        metrics.push(json!({ "Name": HEALTHY, "Unit": "None" }));
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": s.namespace,
                "Dimensions": s.dimensions,
                "Metrics": metrics,
            }],
        }),
    );
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings() -> EmfSettings {
        EmfSettings {
            namespace: "AmgTokenRotator".into(),
            dimensions: vec![
                vec!["workspace".into(), "service_account".into()],
                vec!["Environment".into()],
            ],
            static_dimensions: BTreeMap::from([("Environment".into(), "prod".into())]),
        }
    }

    fn credential(expires_at: Option<i64>, healthy: Option<bool>) -> CredentialValues {
        CredentialValues {
            workspace: "g-0123456789".into(),
            service_account: "terraform".into(),
            kind: "token".into(),
            expires_at,
            healthy,
        }
    }

    #[test]
    fn each_line_carries_the_values_and_its_dimensions() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let out = lines(
            &settings(),
            &[credential(Some(1_800_086_400), Some(true))],
            now,
        );
        assert_eq!(out.len(), 1);
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(v[EXPIRES_IN], 86_400);
        assert_eq!(v[HEALTHY], 1);
        assert_eq!(v["Environment"], "prod");
        assert_eq!(v["expires_at"], "2027-01-16T08:00:00+00:00");
        assert_eq!(v["_aws"]["Timestamp"], 1_800_000_000_000u64);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "AmgTokenRotator"
        );
    }

    #[test]
    fn an_unknown_expiry_is_left_out_not_sent_as_zero() {
        let now = chrono::Utc::now();
        let out = lines(&settings(), &[credential(None, Some(false))], now);
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        assert!(v.get(EXPIRES_IN).is_none(), "{v}");
        assert_eq!(v[HEALTHY], 0);
        let names: Vec<_> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].clone())
            .collect();
        assert_eq!(names, [HEALTHY]);
    }
}
