//! How the secret is written: its format and its tags (Secrets Manager's limits on them).

use std::collections::BTreeMap;

use super::check::{quote, Checker};
use crate::config::load::RawScope;
use crate::model::SecretFormat;

pub(super) fn secret_format(c: &mut Checker, at: &str, s: &RawScope) -> SecretFormat {
    let format_text = s.secret_format.clone().unwrap_or_else(|| "json".into());
    match format_text.as_str() {
        "json" => SecretFormat::Json,
        "raw" => SecretFormat::Raw,
        _ => {
            c.fail(
                format!("{at}.secret_format"),
                quote(&format_text),
                "must be \"json\" or \"raw\"",
            );
            SecretFormat::Json
        }
    }
}

/// Tags per secret Secrets Manager allows ("Maximum number of tags per secret: 50", the
/// TagResource reference), less the rotator's own: `managed-by` and its records
/// (`credential::records`: verification, unpublished keys, promotion, audit).
pub const MAX_SECRET_TAGS: usize = 50 - 5;

pub(super) fn secret_tags(c: &mut Checker, at: &str, s: &RawScope) -> BTreeMap<String, String> {
    let secret_tags = s.secret_tags.clone().unwrap_or_default();
    for (k, v) in &secret_tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            c.fail(
                format!("{at}.secret_tags.{k}"),
                quote(v),
                "a tag key is 1 to 128 characters and not \"aws:\"-prefixed; a value at most 256",
            );
        } else if k.starts_with("amg-token-rotator:") {
            c.fail(
                format!("{at}.secret_tags.{k}"),
                quote(v),
                "keys starting \"amg-token-rotator:\" are the rotator's own records on the secret",
            );
        } else if k == "managed-by" && v != "amg-token-rotator" {
            c.fail(
                format!("{at}.secret_tags.{k}"),
                quote(v),
                "the rotator finds its secrets by managed-by = \"amg-token-rotator\"; leave it out",
            );
        }
    }
    let own = usize::from(!secret_tags.contains_key("managed-by"));
    if secret_tags.len() + own > MAX_SECRET_TAGS + 1 {
        c.fail(
            format!("{at}.secret_tags"),
            format!("{} tags", secret_tags.len()),
            format!(
                "at most {MAX_SECRET_TAGS}: Secrets Manager holds 50 tags per secret, and the rotator keeps 5 of its own"
            ),
        );
    }
    secret_tags
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{has, problems, MINIMAL};

    fn with_tags(tags: &str) -> String {
        format!("{MINIMAL}secret_tags = {{ {tags} }}\n")
    }

    #[test]
    fn tags_the_rotator_needs_for_itself_are_refused() {
        let p = problems(&with_tags("\"amg-token-rotator:audited\" = \"x\""));
        assert!(
            has(
                &p,
                "targets[0].secret_tags.amg-token-rotator:audited",
                "own records"
            ),
            "{p:?}"
        );
        let p = problems(&with_tags("managed-by = \"terraform\""));
        assert!(
            has(&p, "targets[0].secret_tags.managed-by", "finds its secrets"),
            "{p:?}"
        );
    }

    #[test]
    fn more_tags_than_a_secret_can_hold_with_the_rotators_are_refused() {
        let tags = |n: usize| {
            (0..n)
                .map(|i| format!("t{i} = \"v\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = problems(&with_tags(&tags(super::MAX_SECRET_TAGS + 1)));
        assert!(has(&p, "targets[0].secret_tags", "at most 45"), "{p:?}");
        let fits = with_tags(&tags(super::MAX_SECRET_TAGS));
        assert!(crate::config::testing::load_str(&fits).is_ok());
        let with_managed_by = with_tags(&format!(
            "managed-by = \"amg-token-rotator\", {}",
            tags(super::MAX_SECRET_TAGS)
        ));
        assert!(crate::config::testing::load_str(&with_managed_by).is_ok());
    }
}
