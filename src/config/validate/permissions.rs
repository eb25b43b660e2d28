//! `[permissions]`: auditing workspace permissions, and the bindings to enforce.

use super::check::{quote, role_names, Checker};
use super::names::is_workspace_id;
use crate::config::load::{RawBindings, RawPermissions};
use crate::config::{DeclaredBindings, PermissionSettings};
use crate::model::Role;

pub(super) fn validate_permissions(c: &mut Checker, raw: &RawPermissions) -> PermissionSettings {
    let mut bindings = Vec::new();
    for (i, b) in raw.bindings.iter().enumerate() {
        bindings.push(binding(c, &format!("permissions.bindings[{i}]"), b));
    }
    let enforce = raw.enforce.unwrap_or(false);
    if enforce && bindings.is_empty() {
        c.fail(
            "permissions.enforce",
            "true",
            "enforcement needs [[permissions.bindings]] to enforce",
        );
    }
    PermissionSettings {
        audit: raw.audit.unwrap_or(false) || enforce,
        enforce,
        bindings,
    }
}

/// One `[[permissions.bindings]]` entry; `at` is its key.
fn binding(c: &mut Checker, at: &str, b: &RawBindings) -> DeclaredBindings {
    let role = match b.role.as_deref().map(|r| (r, Role::parse(r))) {
        Some((_, Some(role))) => role,
        Some((r, None)) => {
            c.fail(
                format!("{at}.role"),
                quote(r),
                format!("must be one of {}", role_names().join(", ")),
            );
            Role::Viewer
        }
        None => {
            c.fail(
                format!("{at}.role"),
                "",
                format!("missing: one of {}", role_names().join(", ")),
            );
            Role::Viewer
        }
    };
    if b.users.is_empty() && b.groups.is_empty() {
        c.fail(at, "", "names no user or group");
    }
    for (field, ids) in [("users", &b.users), ("groups", &b.groups)] {
        for (j, id) in ids.iter().enumerate() {
            if id.is_empty() || id.len() > 47 {
                c.fail(
                    format!("{at}.{field}[{j}]"),
                    quote(id),
                    "an IAM Identity Center ID is 1 to 47 characters",
                );
            }
        }
    }
    if let Some(ids) = &b.workspace_ids {
        for (j, id) in ids.iter().enumerate() {
            if !is_workspace_id(id) {
                c.fail(
                    format!("{at}.workspace_ids[{j}]"),
                    quote(id),
                    "not a workspace ID (\"g-\" and 10 lowercase hex digits)",
                );
            }
        }
    }
    DeclaredBindings {
        workspace_ids: b.workspace_ids.clone(),
        role,
        users: b.users.clone(),
        groups: b.groups.clone(),
    }
}
