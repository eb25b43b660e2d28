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

pub(super) fn secret_tags(c: &mut Checker, at: &str, s: &RawScope) -> BTreeMap<String, String> {
    let secret_tags = s.secret_tags.clone().unwrap_or_default();
    for (k, v) in &secret_tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            c.fail(
                format!("{at}.secret_tags.{k}"),
                quote(v),
                "a tag key is 1 to 128 characters and not \"aws:\"-prefixed; a value at most 256",
            );
        }
    }
    secret_tags
}
