//! Names: workspace IDs, the prefix of the tokens and keys the daemon mints, and the secret-name
//! template with the placeholders it may use. `is_workspace_id`, `render_template` and
//! `secret_name_problem` are also what a pass uses at run time, so that a name validation
//! accepted is a name Secrets Manager accepts.

use super::check::{quote, Checker};
use crate::config::load::RawScope;

/// `name_prefix`: the start of every token and key name the daemon mints, which marks them as its own.
pub(super) fn name_prefix(c: &mut Checker, at: &str, s: &RawScope) -> String {
    let name_prefix = s.name_prefix.clone().unwrap_or_else(|| "amgrot".into());
    if name_prefix.is_empty()
        || name_prefix.len() > 32
        || !name_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.fail(
            format!("{at}.name_prefix"),
            quote(&name_prefix),
            "must be 1 to 32 letters, digits, '-' or '_'",
        );
    }
    name_prefix
}

/// AMG's workspace IDs: `g-` and 10 lowercase hex digits.
pub fn is_workspace_id(id: &str) -> bool {
    id.len() == 12
        && id.starts_with("g-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `secret_name`: a template that yields one valid secret name per credential.
pub(super) fn secret_name(c: &mut Checker, at: &str, s: &RawScope) -> String {
    let secret_name = s
        .secret_name
        .clone()
        .unwrap_or_else(|| "amg-token-rotator/{workspace_id}/{service_account}".into());
    check_template(c, &format!("{at}.secret_name"), &secret_name);
    secret_name
}

/// The placeholders a secret-name template may use.
pub const TEMPLATE_VARS: [&str; 5] = [
    "workspace_id",
    "workspace_name",
    "service_account",
    "key_name",
    "region",
];

/// Fills `{name}` placeholders. Unknown placeholders are left as they are (validation refuses them).
pub fn render_template(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Why `name` cannot be a Secrets Manager secret name, if it cannot.
pub fn secret_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 512 {
        return Some(format!(
            "a secret name is 1 to 512 characters, this is {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        return Some(format!(
            "a secret name may contain only letters, digits and /_+=.@-, not {c:?}"
        ));
    }
    None
}

fn check_template(c: &mut Checker, key: &str, template: &str) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            c.fail(key, quote(template), "an unclosed '{' in the template");
            return;
        };
        let var = &after[..close];
        if !TEMPLATE_VARS.contains(&var) {
            c.fail(
                key,
                quote(template),
                format!(
                    "unknown placeholder {{{var}}}; use {}",
                    TEMPLATE_VARS.map(|v| format!("{{{v}}}")).join(", ")
                ),
            );
            return;
        }
        rest = &after[close + 1..];
    }
    // Worst-case-long but valid values, to catch literal characters and length.
    let sample = render_template(
        template,
        &[
            ("workspace_id", "g-0123456789"),
            ("workspace_name", "workspace"),
            ("service_account", "service-account"),
            ("key_name", "key-name"),
            ("region", "us-east-1"),
        ],
    );
    if let Some(reason) = secret_name_problem(&sample) {
        c.fail(
            key,
            quote(template),
            format!("yields {sample:?}, and {reason}"),
        );
    } else if !template.contains("{service_account}") && !template.contains("{key_name}") {
        c.fail(
            key,
            quote(template),
            "must contain {service_account} (or {key_name}), or every credential of the target would share one secret",
        );
    } else if !template.contains("{workspace_id}") && !template.contains("{workspace_name}") {
        c.warn(
            key,
            quote(template),
            "has neither {workspace_id} nor {workspace_name}: two workspaces with a service account of the same name would share a secret (such clashes are refused at run time)",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{has, problems, MINIMAL};

    #[test]
    fn secret_templates_must_yield_valid_names() {
        let p = problems(&format!(
            "{MINIMAL}secret_name = \"grafana tokens/{{service_account}}\"\n"
        ));
        assert!(has(&p, "targets[0].secret_name", "' '"), "{p:?}");
        let p = problems(&format!(
            "{MINIMAL}secret_name = \"grafana/{{workspace_id}}\"\n"
        ));
        assert!(
            has(&p, "targets[0].secret_name", "{service_account}"),
            "{p:?}"
        );
    }
}
