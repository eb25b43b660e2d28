//! Seeds and configuration text for a bed: emulator workspaces with service accounts and their
//! tokens, and a minimal rotator configuration for given workspaces and accounts.
//!
//! It starts nothing, listens on nothing and waits for nothing.

/// A seeded token: `(name, created seconds ago, expires in seconds)`.
pub type TokenSpec<'a> = (&'a str, i64, i64);
/// A seeded service account and its tokens.
pub type AccountSpec<'a> = (&'a str, &'a [TokenSpec<'a>]);

/// A seed workspace with service accounts and their tokens.
pub fn workspace(id: &str, accounts: &[AccountSpec<'_>]) -> amg_emulator::WorkspaceSeed {
    amg_emulator::WorkspaceSeed {
        id: id.into(),
        name: Some(format!("ws-{}", &id[2..6])),
        service_accounts: accounts
            .iter()
            .map(|(name, tokens)| amg_emulator::ServiceAccountSeed {
                name: name.to_string(),
                grafana_role: Some(amg_emulator::Role::Admin),
                tokens: tokens
                    .iter()
                    .map(|(n, ago, left)| amg_emulator::TokenSeed {
                        name: n.to_string(),
                        created_seconds_ago: *ago,
                        expires_in_seconds: *left,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A minimal configuration for the given workspaces and accounts, plus extra `[defaults]` lines.
pub fn config_for(workspaces: &[&str], accounts: &[&str], defaults: &str) -> String {
    let ws = workspaces
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sa = accounts
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[daemon]\nconcurrency = 4\n\n[log]\nformat = \"text\"\n\n[defaults]\n{defaults}\n\n[[targets]]\nworkspace_ids = [{ws}]\nservice_accounts = [{sa}]\n"
    )
}
