//! `[export]`: the Pushgateway, the textfile and the EMF settings of `once`, each checked
//! against what its receiver accepts, so a bad value is refused at load rather than lost after
//! a pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::check::{quote, Checker};
use crate::config::load::RawExport;
use crate::config::{
    EmfSettings, ExportSettings, PushgatewaySettings, TextfileSettings, EMF_LABELS,
};

pub(super) const DEFAULT_JOB: &str = "amg-token-rotator";
pub(super) const DEFAULT_TEXTFILE: &str = "amg_token_rotator.prom";
/// CloudWatch's limit on the dimensions of one metric, hence of one EMF dimension set.
const MAX_DIMENSIONS: usize = 30;

pub(super) fn export_section(c: &mut Checker, e: &RawExport) -> ExportSettings {
    ExportSettings {
        pushgateway: pushgateway(c, e),
        textfile: textfile(c, e),
        emf: emf(c, e),
    }
}

fn pushgateway(c: &mut Checker, e: &RawExport) -> Option<PushgatewaySettings> {
    let job = e.pushgateway_job.clone();
    let instance = e.pushgateway_instance.clone();
    let Some(url) = &e.pushgateway_url else {
        if job.is_some() || instance.is_some() {
            c.warn(
                "export.pushgateway_job",
                "",
                "pushgateway_job and pushgateway_instance do nothing without pushgateway_url",
            );
        }
        return None;
    };
    if let Err(why) = pushgateway_url_problem(url) {
        c.fail("export.pushgateway_url", quote(url), why);
    }
    let job = job.unwrap_or_else(|| DEFAULT_JOB.into());
    let instance = instance.unwrap_or_else(|| DEFAULT_JOB.into());
    for (key, value) in [
        ("export.pushgateway_job", &job),
        ("export.pushgateway_instance", &instance),
    ] {
        if let Err(why) = grouping_value_problem(value) {
            c.fail(key, quote(value), why);
        }
    }
    Some(PushgatewaySettings {
        url: url.trim_end_matches('/').to_owned(),
        job,
        instance,
    })
}

/// http(s), a host, no query, fragment or user name: the grouping key is appended as a path.
fn pushgateway_url_problem(text: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(text)
        .map_err(|_| "not a URL such as \"http://pushgateway.monitoring:9091\"")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password (the configuration holds no secret)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or a fragment: /metrics/job/... is appended to it");
    }
    Ok(())
}

/// A grouping-key value goes into the push URL's path as it is, so it is kept to characters
/// that need no escaping there.
fn grouping_value_problem(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if !value
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "_.:-".contains(ch))
    {
        return Err("may hold only letters, digits, '_', '.', ':' and '-'");
    }
    Ok(())
}

fn textfile(c: &mut Checker, e: &RawExport) -> Option<TextfileSettings> {
    let name = e
        .textfile_name
        .clone()
        .unwrap_or_else(|| DEFAULT_TEXTFILE.into());
    let Some(dir) = &e.textfile_dir else {
        if e.textfile_name.is_some() {
            c.warn(
                "export.textfile_name",
                quote(&name),
                "does nothing without textfile_dir",
            );
        }
        return None;
    };
    if !dir.starts_with('/') {
        c.fail(
            "export.textfile_dir",
            quote(dir),
            "must be an absolute path (node_exporter's --collector.textfile.directory)",
        );
    }
    let plain = name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
    if !plain || name.starts_with('.') || !name.ends_with(".prom") || name.len() <= 5 {
        c.fail(
            "export.textfile_name",
            quote(&name),
            "must be a file name ending in .prom (the only files node_exporter reads), of \
             letters, digits, '_', '.' and '-', not starting with '.'",
        );
    }
    Some(TextfileSettings {
        dir: PathBuf::from(dir),
        name,
    })
}

fn emf(c: &mut Checker, e: &RawExport) -> Option<EmfSettings> {
    let statics = e.emf_static_dimensions.clone().unwrap_or_default();
    let dimensions = e
        .emf_dimensions
        .clone()
        .unwrap_or_else(|| vec![vec![EMF_LABELS[0].to_owned(), EMF_LABELS[1].to_owned()]]);
    let Some(namespace) = &e.emf_namespace else {
        if e.emf_dimensions.is_some() || e.emf_static_dimensions.is_some() {
            c.warn(
                "export.emf_dimensions",
                "",
                "emf_dimensions and emf_static_dimensions do nothing without emf_namespace",
            );
        }
        return None;
    };
    if let Err(why) = namespace_problem(namespace) {
        c.fail("export.emf_namespace", quote(namespace), why);
    }
    static_dimensions(c, &statics);
    for (i, set) in dimensions.iter().enumerate() {
        let key = format!("export.emf_dimensions[{i}]");
        if set.len() > MAX_DIMENSIONS {
            c.fail(
                &key,
                format!("{} names", set.len()),
                "a dimension set holds at most 30 dimensions",
            );
        }
        for (j, name) in set.iter().enumerate() {
            if set[..j].contains(name) {
                c.fail(&key, quote(name), "is named twice in this set");
            } else if !EMF_LABELS.contains(&name.as_str()) && !statics.contains_key(name) {
                c.fail(
                    &key,
                    quote(name),
                    "is no dimension: use workspace, service_account, kind, or a key of \
                     emf_static_dimensions",
                );
            }
        }
    }
    Some(EmfSettings {
        namespace: namespace.clone(),
        dimensions,
        static_dimensions: statics,
    })
}

/// CloudWatch's namespace rule: 1 to 255 of letters, digits, `.-_/#:` and space, at least one
/// not a space, and not the `AWS/` namespaces of AWS's own services.
fn namespace_problem(ns: &str) -> Result<(), &'static str> {
    if ns.trim().is_empty() || ns.len() > 255 {
        return Err("must be 1 to 255 characters, not all spaces");
    }
    if !ns
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ".-_/#: ".contains(ch))
    {
        return Err("may hold only letters, digits, spaces and . - _ / # :");
    }
    if ns.starts_with("AWS/") {
        return Err("AWS/ namespaces are reserved for AWS services");
    }
    Ok(())
}

/// CloudWatch's dimension rules: a name of 1 to 255 ASCII characters not starting with `:`, a
/// value of 1 to 1024 with one that is not a space, no control characters; and no clash with
/// a member the line already has.
fn static_dimensions(c: &mut Checker, statics: &BTreeMap<String, String>) {
    const TAKEN: [&str; 4] = [
        "_aws",
        "CredentialExpiresInSeconds",
        "CredentialHealthy",
        "expires_at",
    ];
    for (name, value) in statics {
        let key = format!("export.emf_static_dimensions.{name}");
        let ascii = |s: &str| s.chars().all(|ch| ch.is_ascii() && !ch.is_ascii_control());
        if name.is_empty() || name.len() > 255 || !ascii(name) || name.starts_with(':') {
            c.fail(
                &key,
                "",
                "a dimension name is 1 to 255 ASCII characters, not starting with ':'",
            );
        } else if EMF_LABELS.contains(&name.as_str()) || TAKEN.contains(&name.as_str()) {
            c.fail(
                &key,
                "",
                "is a member every line already has; choose another name",
            );
        }
        if value.trim().is_empty() || value.len() > 1024 || !ascii(value) {
            c.fail(
                &key,
                quote(value),
                "a dimension value is 1 to 1024 ASCII characters, not all spaces",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{has, load_str, problems, MINIMAL};

    #[test]
    fn nothing_is_exported_unless_configured() {
        let cfg = load_str(MINIMAL).unwrap();
        assert_eq!(cfg.export, Default::default());
    }

    #[test]
    fn each_exporter_gets_its_documented_defaults() {
        let cfg = load_str(&format!(
            "{MINIMAL}\n[export]\npushgateway_url = \"http://127.0.0.1:9091/\"\n\
             textfile_dir = \"/var/lib/prometheus/node-exporter\"\nemf_namespace = \"AmgTokenRotator\"\n"
        ))
        .unwrap();
        let push = cfg.export.pushgateway.unwrap();
        assert_eq!(push.url, "http://127.0.0.1:9091");
        assert_eq!(
            (push.job.as_str(), push.instance.as_str()),
            ("amg-token-rotator", "amg-token-rotator")
        );
        assert_eq!(cfg.export.textfile.unwrap().name, "amg_token_rotator.prom");
        assert_eq!(
            cfg.export.emf.unwrap().dimensions,
            [["workspace", "service_account"]]
        );
    }

    #[test]
    fn each_bad_value_is_named_with_its_problem() {
        let p = problems(&format!(
            "{MINIMAL}\n[export]\npushgateway_url = \"http://user:pw@gw:9091\"\n\
             pushgateway_instance = \"a/b\"\ntextfile_dir = \"relative\"\ntextfile_name = \"x.txt\"\n\
             emf_namespace = \"AWS/Grafana\"\nemf_dimensions = [[\"workspace\", \"workspace\"], [\"env\"]]\n\
             emf_static_dimensions = {{ kind = \"x\" }}\n"
        ));
        assert!(
            has(&p, "export.pushgateway_url", "user name or password"),
            "{p:?}"
        );
        assert!(has(&p, "export.pushgateway_instance", "\"a/b\""), "{p:?}");
        assert!(has(&p, "export.textfile_dir", "absolute path"), "{p:?}");
        assert!(has(&p, "export.textfile_name", "ending in .prom"), "{p:?}");
        assert!(has(&p, "export.emf_namespace", "reserved"), "{p:?}");
        assert!(has(&p, "export.emf_dimensions[0]", "named twice"), "{p:?}");
        assert!(
            has(&p, "export.emf_dimensions[1]", "is no dimension"),
            "{p:?}"
        );
        assert!(
            has(&p, "export.emf_static_dimensions.kind", "already has"),
            "{p:?}"
        );
    }

    #[test]
    fn a_static_dimension_may_be_named_in_a_set() {
        let cfg = load_str(&format!(
            "{MINIMAL}\n[export]\nemf_namespace = \"Team/Grafana\"\n\
             emf_dimensions = [[\"Environment\", \"workspace\"], []]\n\
             emf_static_dimensions = {{ Environment = \"prod\" }}\n"
        ))
        .unwrap();
        let emf = cfg.export.emf.unwrap();
        assert_eq!(emf.static_dimensions["Environment"], "prod");
        assert_eq!(emf.dimensions.len(), 2);
    }
}
