//! Workspace permissions: audit who holds ADMIN / EDITOR / VIEWER, and, when the user declares
//! the bindings and opts in, apply the difference with UpdatePermissions in batches of 20.
//!
//! `drift` is pure. A principal holds one role in a workspace, so a changed role is one ADD of
//! the declared role; principals not declared are revoked, but only in workspaces the declared
//! bindings cover. Per-entry errors AMG reports are logged and counted; the others apply.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::aws::grafana::Grafana;
use crate::config::PermissionSettings;
use crate::daemon::metrics::{Metrics, PermissionOutcome};
use crate::model::{Binding, PermissionChange, PrincipalType};

/// UpdatePermissions takes at most this many instructions.
pub const BATCH: usize = 20;

/// The bindings declared for `workspace_id`, or `None` when no declaration covers it.
pub fn declared_for(settings: &PermissionSettings, workspace_id: &str) -> Option<Vec<Binding>> {
    let mut out = BTreeSet::new();
    let mut covered = false;
    for d in &settings.bindings {
        let applies = d
            .workspace_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == workspace_id));
        if !applies {
            continue;
        }
        covered = true;
        for (kind, ids) in [
            (PrincipalType::SsoUser, &d.users),
            (PrincipalType::SsoGroup, &d.groups),
        ] {
            for id in ids {
                out.insert(Binding {
                    role: d.role,
                    principal_type: kind,
                    principal_id: id.clone(),
                });
            }
        }
    }
    covered.then(|| out.into_iter().collect())
}

/// What to ADD and what to REVOKE to turn `actual` into `declared`. Pure.
pub fn drift(declared: &[Binding], actual: &[Binding]) -> Vec<(PermissionChange, Binding)> {
    let key = |b: &Binding| (b.principal_type, b.principal_id.clone());
    let actual_by: BTreeMap<_, &Binding> = actual.iter().map(|b| (key(b), b)).collect();
    // Two declarations for one principal: the highest role wins (ADMIN sorts first).
    let mut declared_by: BTreeMap<_, &Binding> = BTreeMap::new();
    for b in declared {
        declared_by
            .entry(key(b))
            .and_modify(|cur: &mut &Binding| {
                if b.role < cur.role {
                    *cur = b;
                }
            })
            .or_insert(b);
    }
    let mut changes = Vec::new();
    for (k, want) in &declared_by {
        if actual_by.get(k).is_none_or(|have| have.role != want.role) {
            changes.push((PermissionChange::Add, (*want).clone()));
        }
    }
    for (k, have) in &actual_by {
        if !declared_by.contains_key(k) {
            changes.push((PermissionChange::Revoke, (*have).clone()));
        }
    }
    changes
}

/// Counts of bindings by (role, principal type), for the audit.
pub fn counts(actual: &[Binding]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in actual {
        *out.entry(format!("{}/{}", b.role, b.principal_type.as_str()))
            .or_insert(0) += 1;
    }
    out
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionReport {
    pub workspace_id: String,
    /// `ROLE/TYPE` → how many hold it.
    pub counts: BTreeMap<String, usize>,
    pub to_add: Vec<Binding>,
    pub to_revoke: Vec<Binding>,
    pub applied: usize,
    /// Entries AMG refused, described.
    pub refused: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PermissionReport {
    pub fn problems(&self) -> usize {
        self.refused.len() + usize::from(self.error.is_some())
    }
}

fn describe(change: PermissionChange, b: &Binding) -> String {
    let verb = match change {
        PermissionChange::Add => "add",
        PermissionChange::Revoke => "revoke",
    };
    format!(
        "{verb} {} {} {}",
        b.role,
        b.principal_type.as_str(),
        b.principal_id
    )
}

/// Audits one workspace and, when `apply` and enforcement are on, applies the drift.
pub async fn reconcile(
    grafana: &dyn Grafana,
    metrics: &Metrics,
    settings: &PermissionSettings,
    workspace_id: &str,
    apply: bool,
) -> PermissionReport {
    let mut report = PermissionReport {
        workspace_id: workspace_id.to_owned(),
        ..PermissionReport::default()
    };
    let actual = match grafana.list_permissions(workspace_id).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(workspace = %workspace_id, error = %e, "could not list permissions");
            report.error = Some(format!("ListPermissions: {e}"));
            return report;
        }
    };
    report.counts = counts(&actual);
    if apply {
        for role in ["ADMIN", "EDITOR", "VIEWER"] {
            for kind in ["SSO_USER", "SSO_GROUP"] {
                let n = report
                    .counts
                    .get(&format!("{role}/{kind}"))
                    .copied()
                    .unwrap_or(0);
                metrics.set_permissions(workspace_id, role, kind, n);
            }
        }
    }
    let Some(declared) = declared_for(settings, workspace_id) else {
        return report;
    };
    let changes = drift(&declared, &actual);
    for (c, b) in &changes {
        match c {
            PermissionChange::Add => report.to_add.push(b.clone()),
            PermissionChange::Revoke => report.to_revoke.push(b.clone()),
        }
    }
    if apply {
        metrics.set_permission_drift(workspace_id, report.to_add.len(), report.to_revoke.len());
    }
    tracing::info!(workspace = %workspace_id, to_add = report.to_add.len(), to_revoke = report.to_revoke.len(), enforce = settings.enforce, "permission drift");
    if !(apply && settings.enforce) || changes.is_empty() {
        return report;
    }
    for batch in changes.chunks(BATCH) {
        apply_batch(grafana, metrics, workspace_id, batch, &mut report).await;
    }
    for (c, b) in &changes {
        tracing::info!(workspace = %workspace_id, change = %describe(*c, b), "permission change sent");
    }
    report
}

/// Sends one batch with UpdatePermissions; each entry AMG refuses is logged, counted and
/// reported, and the rest of the batch applies.
async fn apply_batch(
    grafana: &dyn Grafana,
    metrics: &Metrics,
    workspace_id: &str,
    batch: &[(PermissionChange, Binding)],
    report: &mut PermissionReport,
) {
    match grafana.update_permissions(workspace_id, batch).await {
        Ok(errors) => {
            let applied = batch.len() - errors.len().min(batch.len());
            report.applied += applied;
            for e in &errors {
                let what = match (e.change, &e.binding) {
                    (Some(c), Some(b)) => describe(c, b),
                    _ => "an instruction".to_owned(),
                };
                tracing::warn!(workspace = %workspace_id, entry = %what, code = e.code, message = %e.message, "permission change refused");
                report
                    .refused
                    .push(format!("{what}: {} ({})", e.message, e.code));
            }
            metrics.permission_updates(workspace_id, PermissionOutcome::Applied, applied);
            metrics.permission_updates(workspace_id, PermissionOutcome::Refused, errors.len());
        }
        Err(e) => {
            tracing::error!(workspace = %workspace_id, error = %e, "UpdatePermissions failed");
            metrics.permission_updates(workspace_id, PermissionOutcome::Failed, batch.len());
            report.error = Some(format!("UpdatePermissions: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeclaredBindings;
    use crate::model::Role;

    fn b(role: Role, id: &str) -> Binding {
        Binding {
            role,
            principal_type: PrincipalType::SsoUser,
            principal_id: id.into(),
        }
    }

    #[test]
    fn drift_adds_missing_changes_roles_and_revokes_undeclared() {
        let declared = [b(Role::Admin, "alice"), b(Role::Editor, "bob")];
        let actual = [
            b(Role::Viewer, "bob"),
            b(Role::Admin, "mallory"),
            b(Role::Admin, "alice"),
        ];
        let d = drift(&declared, &actual);
        assert_eq!(
            d,
            vec![
                (PermissionChange::Add, b(Role::Editor, "bob")),
                (PermissionChange::Revoke, b(Role::Admin, "mallory")),
            ]
        );
        assert!(drift(&declared, &declared).is_empty());
    }

    #[test]
    fn the_highest_declared_role_wins() {
        let d = drift(&[b(Role::Viewer, "a"), b(Role::Admin, "a")], &[]);
        assert_eq!(d, vec![(PermissionChange::Add, b(Role::Admin, "a"))]);
    }

    #[test]
    fn declarations_cover_only_their_workspaces() {
        let settings = PermissionSettings {
            audit: true,
            enforce: true,
            bindings: vec![DeclaredBindings {
                workspace_ids: Some(vec!["g-0123456789".into()]),
                role: Role::Admin,
                users: vec!["u".into()],
                groups: vec!["g".into()],
            }],
        };
        assert_eq!(declared_for(&settings, "g-0123456789").unwrap().len(), 2);
        assert!(declared_for(&settings, "g-9999999999").is_none());
    }
}
