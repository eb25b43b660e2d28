//! The crash matrix: the real binary is aborted (as `kill -9` would: no unwinding, no cleanup)
//! at every crash point of both rotation protocols and of API-key rotation, in the states that
//! make each point reachable; then clean passes run, and the contract's invariants are checked:
//!
//! 1. AWSCURRENT holds a key that the workspace's Grafana accepts, of a token that exists and is
//!    not due (and, for `overlap` and API keys, even in the crash window AWSCURRENT never
//!    references a deleted token);
//! 2. no owned token is unaccounted for: after the first clean pass, only an orphan younger than
//!    the margin may be unreferenced; after a pass that starts past the margin, none;
//! 3. at most one token more than a crash-free run would mint was minted per crash.
//!
//! Each run is checked to have ended by that point's abort (SIGABRT and the failpoint's line on
//! stderr), so a point that became unreachable fails the test instead of passing vacuously.

mod reliability_support;
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use amg_emulator::{Seed, ServiceAccountSeed, TokenSeed, WorkspaceSeed};
use reliability_support::{
    check_accounted, check_current, check_current_exists, check_none_unreferenced, last_seq,
    minted_since, now_epoch, once, once_crashing_at, set_current_expiry, stage_json, write_config,
    Cred, Kind, AWSPENDING, DAY,
};
use support::{workspace, Bed};

const WS: &str = "g-1111111111";
/// `rotate_before` of every configuration here, in seconds (30m).
const ROTATE_BEFORE: i64 = 1800;
/// `grace_period` (2s); `orphan_margin` is 1s. Short, so one test sees them pass.
const GRACE_S: u64 = 2;
/// What the planner may keep unreferenced: max(orphan_margin, grace_period).
const MARGIN_S: i64 = 2;

/// The state a crash point is reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Nothing yet: the first pass mints the first token and creates the secret with it.
    FirstRun,
    /// The secret exists with no version (a first run's verification failed, or it was made
    /// by hand): the first pass records the promotion on it, then writes the first version.
    EmptySecret,
    /// A published token, brought within `rotate_before` of its expiry.
    Due,
    /// A token already expired (replaced, then deleted with no grace).
    Expired,
    /// A rotation done, its grace period over: the next pass deletes the superseded token.
    Grace,
    /// As `Grace`, plus an old unreferenced owned token: the next pass deletes two.
    GraceAndOrphan,
}

impl Setup {
    /// Tokens a crash-free pass from this state mints.
    fn needs(self) -> usize {
        match self {
            Setup::FirstRun | Setup::EmptySecret | Setup::Due | Setup::Expired => 1,
            Setup::Grace | Setup::GraceAndOrphan => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Overlap,
    Recreate,
    ApiKey,
}

/// One cell of the matrix: a crash point (`name` or `name:n`, the n-th time it is reached),
/// reached from a state, and whether the next pass must resume an AWSPENDING version rather
/// than mint.
#[derive(Debug, Clone, Copy)]
struct Cell {
    point: &'static str,
    setup: Setup,
    resumes: bool,
    /// The crash leaves a token the first clean pass must not delete yet (it cannot tell it
    /// from another rotator's, about to be published): it heals once past orphan_margin.
    waits: bool,
}

const fn cell(point: &'static str, setup: Setup) -> Cell {
    Cell {
        point,
        setup,
        resumes: false,
        waits: false,
    }
}

const fn resuming(point: &'static str, setup: Setup) -> Cell {
    Cell {
        point,
        setup,
        resumes: true,
        waits: false,
    }
}

const fn waiting(point: &'static str, setup: Setup) -> Cell {
    Cell {
        point,
        setup,
        resumes: false,
        waits: true,
    }
}

const OVERLAP: &[Cell] = &[
    cell("after_create_token", Setup::FirstRun),
    cell("after_create_token", Setup::Due),
    cell("after_pending", Setup::FirstRun),
    resuming("after_pending", Setup::Due),
    // Verification comes before publishing: nothing to resume, the next pass mints again.
    cell("after_verify", Setup::FirstRun),
    cell("after_verify", Setup::Due),
    // A first version's records (the promotion, and its first audit) are on the secret, the
    // version is not: the record stands for nothing, and the next pass mints again.
    cell("after_first_record", Setup::EmptySecret),
    cell("after_promote", Setup::FirstRun),
    cell("after_promote", Setup::Due),
    cell("after_delete_token", Setup::Expired),
    cell("after_delete_token", Setup::Grace),
    cell("after_delete_token:2", Setup::GraceAndOrphan),
];

const RECREATE: &[Cell] = &[
    cell("after_delete_token", Setup::Due),
    cell("after_recreate_delete", Setup::Due),
    // The new token of the fixed name, unpublished: a young one may be another rotator's.
    waiting("after_recreate_create", Setup::FirstRun),
    waiting("after_recreate_create", Setup::Due),
    cell("after_recreate_publish", Setup::FirstRun),
    cell("after_recreate_publish", Setup::Due),
];

const API_KEYS: &[Cell] = &[
    cell("after_create_key", Setup::FirstRun),
    cell("after_create_key", Setup::Due),
    cell("after_key_pending", Setup::FirstRun),
    resuming("after_key_pending", Setup::Due),
    cell("after_key_promote", Setup::FirstRun),
    cell("after_key_promote", Setup::Due),
    cell("after_delete_key", Setup::Expired),
    cell("after_delete_key", Setup::Grace),
];

#[test]
fn the_matrix_covers_every_crash_point() {
    let covered: BTreeSet<&str> = [OVERLAP, RECREATE, API_KEYS]
        .into_iter()
        .flatten()
        .map(|c| c.point.split(':').next().unwrap())
        .collect();
    let all: BTreeSet<&str> = amg_token_rotator::failpoint::POINTS
        .iter()
        .copied()
        .collect();
    assert_eq!(
        covered, all,
        "every crash point in failpoint::POINTS needs a cell in this matrix"
    );
}

/// The checks themselves can fail: a state that breaks each invariant is caught.
#[tokio::test(flavor = "multi_thread")]
async fn the_invariant_checks_catch_broken_states() {
    let bed = Bed::start(Seed {
        workspaces: vec![workspace(WS, &[("victim", &[])])],
        ..Seed::default()
    })
    .await;
    let cred = Cred::token(WS, "victim");
    let cfg = config(&bed, Protocol::Overlap, &cred, "victim");
    clean(&bed, &cfg, "setup").await;
    let id = check_current(&bed, &cred, ROTATE_BEFORE)
        .await
        .expect("a fresh credential is valid");
    check_none_unreferenced(&bed, &cred).await.unwrap();

    // A due current token fails item 1.
    set_current_expiry(&bed, &cred, 600).await;
    let e = check_current(&bed, &cred, ROTATE_BEFORE).await.unwrap_err();
    assert!(e.contains("is due"), "{e}");

    // An owned token nothing references fails item 3, strictly and past the margin.
    bed.amg.add_seed(Seed {
        workspaces: vec![WorkspaceSeed {
            id: WS.into(),
            service_accounts: vec![ServiceAccountSeed {
                name: "victim".into(),
                tokens: vec![TokenSeed {
                    name: "amgrot-victim-stray".into(),
                    created_seconds_ago: 600,
                    expires_in_seconds: DAY,
                    ..TokenSeed::default()
                }],
                ..ServiceAccountSeed::default()
            }],
            ..WorkspaceSeed::default()
        }],
        ..Seed::default()
    });
    let e = check_none_unreferenced(&bed, &cred).await.unwrap_err();
    assert!(e.contains("amgrot-victim-stray"), "{e}");
    let e = check_accounted(&bed, &cred, now_epoch(), MARGIN_S)
        .await
        .unwrap_err();
    assert!(e.contains("amgrot-victim-stray"), "{e}");

    // The token AWSCURRENT references, deleted behind the rotator's back, fails item 4.
    bed.grafana_client()
        .delete_workspace_service_account_token()
        .workspace_id(WS)
        .service_account_id(bed.service_account_id(WS, "victim"))
        .token_id(&id)
        .send()
        .await
        .unwrap();
    let e = check_current_exists(&bed, &cred).await.unwrap_err();
    assert!(e.contains("was deleted"), "{e}");
    let e = check_current(&bed, &cred, ROTATE_BEFORE).await.unwrap_err();
    assert!(e.contains("does not exist"), "{e}");

    // A run that does not reach its crash point is refused by the matrix's runner.
    let escaped = tokio::spawn(async move {
        once_crashing_at(&bed, &cfg, "no_such_point").await;
    })
    .await;
    assert!(
        escaped.is_err(),
        "a run without the abort must fail the cell"
    );
}

fn defaults(bed: &Bed, strategy: &str) -> String {
    format!(
        "strategy = \"{strategy}\"\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"{GRACE_S}s\"\norphan_margin = \"1s\"\nverify = true\ngrafana_url = {:?}\n",
        bed.amg.grafana_url_template()
    )
}

/// The configuration managing exactly `cred`.
fn config(bed: &Bed, protocol: Protocol, cred: &Cred, file: &str) -> PathBuf {
    let strategy = if protocol == Protocol::Recreate {
        "recreate"
    } else {
        "overlap"
    };
    let select = match cred.kind {
        Kind::Token => format!("service_accounts = [{:?}]", cred.name),
        Kind::ApiKey => format!("api_keys = [{:?}]\napi_key_role = \"ADMIN\"", cred.name),
    };
    write_config(
        bed,
        file,
        &format!(
            "[daemon]\nconcurrency = 4\n\n[log]\nformat = \"text\"\n\n[defaults]\n{}\n[[targets]]\nworkspace_ids = [{:?}]\n{select}\n",
            defaults(bed, strategy),
            cred.ws
        ),
    )
}

/// A clean pass: it must succeed.
async fn clean(bed: &Bed, cfg: &std::path::Path, what: &str) -> reliability_support::Exit {
    let run = once(bed, cfg, &[]).await;
    assert_eq!(
        run.code(),
        Some(0),
        "{what}: a clean pass after the crash failed:\n{}",
        run.all_output()
    );
    run
}

/// Brings `cred` into the state `setup` names (the crash pass starts from it).
async fn arrange(bed: &Bed, cfg: &std::path::Path, cred: &Cred, setup: Setup, what: &str) {
    match setup {
        Setup::FirstRun => return,
        Setup::EmptySecret => return bed.create_empty_secret(&cred.secret).await,
        _ => {}
    }
    clean(bed, cfg, what).await;
    match setup {
        Setup::FirstRun | Setup::EmptySecret => unreachable!(),
        Setup::Due => set_current_expiry(bed, cred, 600).await,
        Setup::Expired => set_current_expiry(bed, cred, -5).await,
        Setup::Grace | Setup::GraceAndOrphan => {
            set_current_expiry(bed, cred, 600).await;
            let run = clean(bed, cfg, what).await;
            assert!(
                run.stdout.contains("rotate (due)"),
                "{what}: {}",
                run.stdout
            );
            // Past the grace period, counted from the promotion (moto's LastChangedDate).
            tokio::time::sleep(Duration::from_millis(GRACE_S * 1000 + 1500)).await;
            if setup == Setup::GraceAndOrphan {
                assert_eq!(cred.kind, Kind::Token);
                // Minted for this secret (its mark), never published: an orphan of it.
                let mark = bed.secret_mark(&cred.secret).await;
                bed.amg.add_seed(Seed {
                    workspaces: vec![WorkspaceSeed {
                        id: cred.ws.clone(),
                        service_accounts: vec![ServiceAccountSeed {
                            name: cred.name.clone(),
                            tokens: vec![TokenSeed {
                                name: format!("amgrot-{}-left-by-a-crash-{mark}", cred.name),
                                created_seconds_ago: 3600,
                                expires_in_seconds: 20 * DAY,
                                ..TokenSeed::default()
                            }],
                            ..ServiceAccountSeed::default()
                        }],
                        ..WorkspaceSeed::default()
                    }],
                    ..Seed::default()
                });
            }
        }
    }
}

/// What one cell measured, for the summary lines.
struct Measured {
    what: String,
    minted: usize,
    allowed: usize,
}

/// Runs one cell: arrange, crash, check the crash window, clean pass, check, wait past the
/// margins, clean pass, check strictly.
async fn run_cell(bed: &Bed, protocol: Protocol, cred: Cred, c: Cell, file: String) -> Measured {
    let what = format!(
        "{protocol:?} {} from {:?} ({})",
        c.point, c.setup, cred.secret
    );
    let cfg = config(bed, protocol, &cred, &file);
    arrange(bed, &cfg, &cred, c.setup, &what).await;

    let mark = last_seq(bed);
    once_crashing_at(bed, &cfg, c.point).await;
    // Contract item 4 in the crash window itself. `recreate` deletes before it creates, so it
    // has a window by design (PRODUCT.md item 2); it is only required to heal.
    if protocol != Protocol::Recreate {
        if let Err(e) = check_current_exists(bed, &cred).await {
            panic!("{what}: in the crash window: {e}");
        }
    }
    let pending_left = stage_json(bed, &cred.secret, AWSPENDING)
        .await
        .unwrap()
        .is_some();

    let resume_mark = last_seq(bed);
    let started = now_epoch();
    let first = clean(bed, &cfg, &what).await;
    if c.resumes {
        assert!(
            pending_left,
            "{what}: the crash left no AWSPENDING to resume"
        );
        assert!(
            first.stdout.contains("resume pending"),
            "{what}: the AWSPENDING version was not resumed:\n{}",
            first.all_output()
        );
        assert_eq!(
            minted_since(bed, &cred, resume_mark),
            0,
            "{what}: a token was minted while an AWSPENDING version was resumable"
        );
    }
    if c.waits {
        // Younger than orphan_margin it must be left alone, and said so; on a machine slow
        // enough that the margin passed before this pass began, it is an orphan and heals now.
        let healed = check_current(bed, &cred, ROTATE_BEFORE).await.is_ok();
        assert!(
            first.stdout.contains("left to another rotator") || healed,
            "{what}: the young unpublished token was neither left alone nor healed:\n{}",
            first.all_output()
        );
    } else if let Err(e) = check_current(bed, &cred, ROTATE_BEFORE).await {
        panic!(
            "{what}: after the first clean pass: {e}\n{}",
            first.all_output()
        );
    }
    if let Err(e) = check_accounted(bed, &cred, started, MARGIN_S).await {
        panic!(
            "{what}: after the first clean pass: {e}\n{}",
            first.all_output()
        );
    }

    // Past orphan_margin and grace_period: one more pass leaves nothing unreferenced.
    tokio::time::sleep(Duration::from_millis(GRACE_S * 1000 + 500)).await;
    let second = clean(bed, &cfg, &what).await;
    if let Err(e) = check_current(bed, &cred, ROTATE_BEFORE).await {
        panic!(
            "{what}: after the second clean pass: {e}\n{}",
            second.all_output()
        );
    }
    if let Err(e) = check_none_unreferenced(bed, &cred).await {
        panic!(
            "{what}: after a pass past the margins: {e}\n{}",
            second.all_output()
        );
    }
    let minted = minted_since(bed, &cred, mark);
    let allowed = c.setup.needs() + 1;
    assert!(
        minted <= allowed,
        "{what}: {minted} tokens minted across the crash and its recovery; a crash-free pass mints {}, at most one more is allowed",
        c.setup.needs()
    );
    Measured {
        what,
        minted,
        allowed,
    }
}

fn summarize(label: &str, measured: &[Measured]) {
    for m in measured {
        println!(
            "crash {label}: {} -> minted {} (allowed {})",
            m.what, m.minted, m.allowed
        );
    }
    println!("crash {label}: cells={} violations=0", measured.len());
}

async fn token_matrix(protocol: Protocol, cells: &[Cell]) {
    let names: Vec<String> = (0..cells.len()).map(|i| format!("crash-{i:02}")).collect();
    let accounts: Vec<support::AccountSpec<'_>> =
        names.iter().map(|n| (n.as_str(), &[][..])).collect();
    let bed = Bed::start(Seed {
        workspaces: vec![workspace(WS, &accounts)],
        ..Seed::default()
    })
    .await;
    // The cells are independent (one service account and secret each): run them together.
    let runs = cells.iter().zip(&names).map(|(c, sa)| {
        run_cell(
            &bed,
            protocol,
            Cred::token(WS, sa),
            *c,
            format!("{sa}-{protocol:?}"),
        )
    });
    let measured = futures::future::join_all(runs).await;
    summarize(&format!("{protocol:?}"), &measured);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the crash points: cargo test --features amg-token-rotator/failpoints (scripts/test does)"
)]
async fn overlap_survives_a_crash_at_every_step() {
    token_matrix(Protocol::Overlap, OVERLAP).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the crash points: cargo test --features amg-token-rotator/failpoints (scripts/test does)"
)]
async fn recreate_heals_after_a_crash_at_every_step() {
    token_matrix(Protocol::Recreate, RECREATE).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the crash points: cargo test --features amg-token-rotator/failpoints (scripts/test does)"
)]
async fn api_keys_survive_a_crash_at_every_step() {
    // One Grafana 10 workspace per cell: key names are per workspace, and the call log's
    // CreateWorkspaceApiKey entries are told apart by workspace.
    let ids: Vec<String> = (0..API_KEYS.len())
        .map(|i| format!("g-80000000{i:02}"))
        .collect();
    let bed = Bed::start(Seed {
        workspaces: ids
            .iter()
            .map(|id| WorkspaceSeed {
                id: id.clone(),
                name: Some(format!("legacy-{}", &id[8..])),
                grafana_version: Some("10.4".into()),
                ..WorkspaceSeed::default()
            })
            .collect(),
        ..Seed::default()
    })
    .await;
    let runs = API_KEYS.iter().zip(&ids).map(|(c, ws)| {
        run_cell(
            &bed,
            Protocol::ApiKey,
            Cred::key(ws, "legacy"),
            *c,
            format!("{ws}-keys"),
        )
    });
    let measured = futures::future::join_all(runs).await;
    summarize("ApiKey", &measured);
}

/// Found by the soak: an API key superseded twice within its grace period. Keys cannot be
/// listed, so AWSPREVIOUS is the only record of the superseded key; a second rotation inside
/// the grace period (here because the current key was deleted behind the rotator's back and
/// verification noticed) moves AWSPREVIOUS to the key just replaced, and the first key must not
/// be forgotten alive.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_superseded_twice_within_its_grace_period_is_not_leaked() {
    const LEGACY: &str = "g-8888888888";
    let bed = Bed::start(Seed {
        workspaces: vec![WorkspaceSeed {
            id: LEGACY.into(),
            name: Some("legacy".into()),
            grafana_version: Some("10.4".into()),
            ..WorkspaceSeed::default()
        }],
        ..Seed::default()
    })
    .await;
    let cred = Cred::key(LEGACY, "legacy");
    let cfg = write_config(
        &bed,
        "twice",
        &format!(
            "[log]\nformat = \"text\"\n\n[defaults]\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"20m\"\nverify = true\nliveness_checks = true\ngrafana_url = {:?}\n\n[[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n",
            bed.amg.grafana_url_template()
        ),
    );
    clean(&bed, &cfg, "first run").await;
    set_current_expiry(&bed, &cred, 600).await;
    let run = clean(&bed, &cfg, "due").await;
    assert!(run.stdout.contains("rotate (due)"), "{}", run.stdout);
    // amgrot-legacy-1 is AWSPREVIOUS, in its grace period. Its successor disappears:
    bed.grafana_client()
        .delete_workspace_api_key()
        .workspace_id(LEGACY)
        .key_name("amgrot-legacy-2")
        .send()
        .await
        .unwrap();
    let run = clean(&bed, &cfg, "replacing a deleted key").await;
    assert!(
        run.stdout.contains("rotate (missing_token)"),
        "{}",
        run.stdout
    );
    check_current(&bed, &cred, ROTATE_BEFORE).await.unwrap();
    let again = clean(&bed, &cfg, "the next pass").await;
    if let Err(e) = check_none_unreferenced(&bed, &cred).await {
        panic!(
            "{e}: no secret version records it any more, and keys cannot be listed: it stays valid until it expires\n{}\n{}",
            run.all_output(),
            again.all_output()
        );
    }
}

/// The superseded key's deletion fails in a pass that would then promote a new key: the
/// promotion would move AWSPREVIOUS, the key's only record, and forget the key alive. While the
/// current key still works, the rotation waits for a pass in which the deletion succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_whose_deletion_fails_before_a_promotion_is_not_leaked() {
    const LEGACY: &str = "g-8888888888";
    let bed = Bed::start(Seed {
        workspaces: vec![WorkspaceSeed {
            id: LEGACY.into(),
            name: Some("legacy".into()),
            grafana_version: Some("10.4".into()),
            ..WorkspaceSeed::default()
        }],
        ..Seed::default()
    })
    .await;
    let cred = Cred::key(LEGACY, "legacy");
    let cfg = write_config(
        &bed,
        "delete-fails",
        &format!(
            "[log]\nformat = \"text\"\n\n[aws]\nmax_attempts = 2\n\n[defaults]\ntoken_ttl = \"1h\"\nrotate_before = \"30m\"\ngrace_period = \"1s\"\n\n[[targets]]\nworkspace_ids = [\"{LEGACY}\"]\napi_keys = [\"legacy\"]\napi_key_role = \"EDITOR\"\n"
        ),
    );
    clean(&bed, &cfg, "first run").await;
    set_current_expiry(&bed, &cred, 600).await;
    clean(&bed, &cfg, "rotation").await;
    // amgrot-legacy-1 is AWSPREVIOUS. The current key falls due again, and every deletion fails.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set_current_expiry(&bed, &cred, 600).await;
    bed.amg.set_faults(amg_emulator::Faults {
        fail_nth: vec![amg_emulator::FailRule::new(
            "DeleteWorkspaceApiKey",
            1,
            "InternalServerException",
        )
        .times(100)],
        retry_after_seconds: 0,
        ..amg_emulator::Faults::default()
    });
    let r = once(&bed, &cfg, &[("AMG_ROTATOR__AWS__RETRY_BUDGET", "1s")]).await;
    assert_eq!(r.code(), Some(1), "{}", r.all_output());
    bed.amg.set_faults(amg_emulator::Faults::default());
    clean(&bed, &cfg, "after the failure").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = clean(&bed, &cfg, "past grace").await;
    if let Err(e) = check_none_unreferenced(&bed, &cred).await {
        panic!("{e}\n{}\n{}", r.all_output(), last.all_output());
    }
}
