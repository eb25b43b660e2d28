//! `[coordination]`: one replica (`mode = "off"`, the default), or several sharing the work
//! through leases in a DynamoDB table (`mode = "dynamodb"`, `src/coordination`).

use std::time::Duration;

use super::check::{quote, Checker};
use crate::config::load::RawCoordination;
use crate::config::{Coordination, LeaseSettings};

pub(super) const DEFAULT_TABLE: &str = "amg-token-rotator-leases";

pub(super) fn coordination_section(c: &mut Checker, r: &RawCoordination) -> Coordination {
    let mode = r.mode.as_deref().unwrap_or("off");
    match mode {
        "off" => {
            let set = [
                ("coordination.table", r.table.is_some()),
                ("coordination.region", r.region.is_some()),
                ("coordination.lease_duration", r.lease_duration.is_some()),
                ("coordination.heartbeat", r.heartbeat.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, set)| *set) {
                c.warn(
                    *key,
                    "",
                    "does nothing without coordination.mode = \"dynamodb\"",
                );
            }
            Coordination::Off
        }
        "dynamodb" => Coordination::DynamoDb(lease_settings(c, r)),
        other => {
            c.fail(
                "coordination.mode",
                quote(other),
                "must be \"off\" (one replica) or \"dynamodb\" (replicas share the work through leases in a DynamoDB table)",
            );
            Coordination::Off
        }
    }
}

fn lease_settings(c: &mut Checker, r: &RawCoordination) -> LeaseSettings {
    let table = r.table.clone().unwrap_or_else(|| DEFAULT_TABLE.into());
    if let Some(why) = table_name_problem(&table) {
        c.fail("coordination.table", quote(&table), why);
    }
    let lease_duration = c.duration(
        "coordination.lease_duration",
        r.lease_duration.as_deref(),
        "60s",
    );
    if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&lease_duration) {
        c.fail(
            "coordination.lease_duration",
            quote(r.lease_duration.as_deref().unwrap_or_default()),
            "must be from 10s to 1h: how long the shards of a replica that died wait for another",
        );
    }
    let heartbeat = c.duration("coordination.heartbeat", r.heartbeat.as_deref(), "10s");
    if heartbeat.is_zero() || heartbeat * 3 > lease_duration {
        c.fail(
            "coordination.heartbeat",
            quote(r.heartbeat.as_deref().unwrap_or("10s")),
            format!(
                "must be more than 0 and at most a third of lease_duration ({}), so that two renewals may fail before a lease runs out",
                humantime::format_duration(lease_duration)
            ),
        );
    }
    LeaseSettings {
        table,
        region: r.region.clone(),
        lease_duration,
        heartbeat,
    }
}

/// DynamoDB's rule for table names: 3 to 255 of `A-Z a-z 0-9 _ - .`.
fn table_name_problem(name: &str) -> Option<String> {
    if !(3..=255).contains(&name.len()) {
        return Some(format!(
            "a DynamoDB table name is 3 to 255 characters, this is {}",
            name.len()
        ));
    }
    name.chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || "_-.".contains(*ch)))
        .map(|ch| {
            format!("a DynamoDB table name may contain only letters, digits and _-., not {ch:?}")
        })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{has, load_str, problems, MINIMAL};
    use crate::config::Coordination;

    #[test]
    fn coordination_is_off_by_default() {
        assert_eq!(load_str(MINIMAL).unwrap().coordination, Coordination::Off);
    }

    #[test]
    fn dynamodb_takes_its_defaults() {
        let c = load_str(&format!("[coordination]\nmode = \"dynamodb\"\n{MINIMAL}")).unwrap();
        let Coordination::DynamoDb(s) = c.coordination else {
            panic!("{:?}", c.coordination)
        };
        assert_eq!(s.table, "amg-token-rotator-leases");
        assert_eq!(s.lease_duration.as_secs(), 60);
        assert_eq!(s.heartbeat.as_secs(), 10);
        assert_eq!(s.region, None);
    }

    #[test]
    fn bad_values_are_named() {
        let p = problems(&format!("[coordination]\nmode = \"dynamo\"\n{MINIMAL}"));
        assert!(has(&p, "coordination.mode", "\"off\""), "{p:?}");
        let p = problems(&format!(
            "[coordination]\nmode = \"dynamodb\"\ntable = \"my table\"\nlease_duration = \"5s\"\nheartbeat = \"30s\"\n{MINIMAL}"
        ));
        assert!(has(&p, "coordination.table", "not ' '"), "{p:?}");
        assert!(
            has(&p, "coordination.lease_duration", "from 10s to 1h"),
            "{p:?}"
        );
        assert!(
            has(&p, "coordination.heartbeat", "a third of lease_duration"),
            "{p:?}"
        );
    }

    #[test]
    fn settings_without_the_mode_draw_a_warning() {
        let c = load_str(&format!("[coordination]\ntable = \"leases\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.coordination, Coordination::Off);
        assert!(
            c.warnings.iter().any(|w| w.key == "coordination.table"),
            "{:?}",
            c.warnings
        );
    }
}
