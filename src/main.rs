//! The `amg-token-rotator` binary: parse arguments, load configuration, set up logging, build
//! clients, hand over to the library. Exit codes: 0 success; 1 a credential failed or was
//! blocked; 2 the configuration is invalid; 3 the daemon could not start (address in use…); 4
//! `once` could not export its metrics (`[export]`), though no credential failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use amg_token_rotator::aws::verify::HttpVerifier;
use amg_token_rotator::aws::AwsConnector;
use amg_token_rotator::config::{self, Config};
use amg_token_rotator::daemon::http::{self, Health};
use amg_token_rotator::daemon::metrics::Metrics;
use amg_token_rotator::daemon::{self, Daemon};
use amg_token_rotator::pass::{Engine, Mode};
use amg_token_rotator::{export, iam, report, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "Keeps Amazon Managed Grafana service-account tokens from ever expiring"
)]
struct Cli {
    /// The TOML configuration, layered with AMG_ROTATOR__SECTION__KEY environment variables.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: a pass at start, then on the cron schedule; serves /metrics, /healthz, /readyz.
    Run,
    /// One pass, then exit: non-zero when any credential failed.
    Once,
    /// What a pass would do, changing nothing.
    Plan {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Validate the configuration and say what is wrong and where.
    CheckConfig,
    /// Print the least-privilege IAM policy (JSON) for exactly this configuration; no AWS call.
    ///
    /// Without --role: the rotator's own identity's policy, for the targets without role_arn,
    /// plus sts:AssumeRole on exactly the role_arns the other targets name. With --role ARN:
    /// the policy that assumed role needs, for the targets naming it, in its own account.
    /// What the configuration leaves open stays a placeholder for envsubst: ${AWS_REGION}
    /// (no target region nor aws.region), ${ACCOUNT_ID} (no --account-id), ${KMS_KEY_ID}
    /// (kms_key_id is an alias). Warnings (a policy wider than wanted) go to stderr.
    IamPolicy {
        /// Generate the policy of this assumed role (a target's role_arn) instead.
        #[arg(long, value_name = "ARN")]
        role: Option<String>,
        /// The rotator's own AWS account ID, instead of the ${ACCOUNT_ID} placeholder.
        #[arg(long, value_name = "ID")]
        account_id: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_START: u8 = 3;
/// `once` rotated what it could, but its metrics did not reach the Pushgateway or the textfile.
const EXIT_EXPORT: u8 = 4;

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!(
            "error: the configuration {} is not usable:\n{e}",
            path.display()
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Command::CheckConfig = cli.command {
        return check_config(&cli.config, &cfg);
    }
    if let Command::IamPolicy { role, account_id } = cli.command {
        return iam_policy(&cfg, role, account_id);
    }
    telemetry::init(&cfg.log);
    for w in &cfg.warnings {
        tracing::warn!(key = %w.key, reason = %w.reason, "configuration warning");
    }
    // SIGTERM and SIGINT feed one shutdown trigger for every command that works: `run` drains
    // and stops, `once` and `plan` finish the credentials in hand and skip the rest.
    let (shutdown, reloads) = match daemon::signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let metrics = Arc::new(Metrics::new());
    // `plan` changes nothing, so it needs no lease.
    let coordinator = match cli.command {
        Command::Plan { .. } => None,
        _ => amg_token_rotator::coordination::from_config(&cfg, metrics.clone()).await,
    };
    let engine = Arc::new(Engine {
        connector: Arc::new(AwsConnector::new(cfg.aws.clone(), metrics.clone())),
        verifier: Arc::new(HttpVerifier::new(Duration::from_secs(10))),
        metrics: metrics.clone(),
        coordinator: coordinator.clone(),
        // Only the daemon has passes to come.
        listings: matches!(cli.command, Command::Run).then(Default::default),
    });
    let work = async {
        match cli.command {
            Command::CheckConfig | Command::IamPolicy { .. } => unreachable!("handled above"),
            Command::Once => one_pass(&engine, &cfg, Mode::Apply, None, &shutdown).await,
            Command::Plan { output } => {
                one_pass(&engine, &cfg, Mode::Plan, Some(output), &shutdown).await
            }
            Command::Run => {
                run(
                    cli.config,
                    cfg.clone(),
                    engine.clone(),
                    metrics,
                    shutdown,
                    reloads,
                )
                .await
            }
        }
    };
    match coordinator {
        Some(c) => c.around(work).await,
        None => work.await,
    }
}

fn check_config(path: &std::path::Path, cfg: &Config) -> ExitCode {
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    println!(
        "configuration {} is valid: {} target(s)",
        path.display(),
        cfg.targets.len()
    );
    ExitCode::SUCCESS
}

/// `iam-policy`: the policy on stdout, its warnings on stderr; exit 2 on a bad option.
fn iam_policy(cfg: &Config, role: Option<String>, account_id: Option<String>) -> ExitCode {
    let principal = role.map_or(iam::Principal::Rotator, iam::Principal::Role);
    match iam::generate(
        cfg,
        &iam::Options {
            principal,
            account_id,
        },
    ) {
        Ok(generated) => {
            for w in &generated.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", generated.to_json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `once` (apply) and `plan`: one pass, its report on stdout, exit 1 when anything failed.
/// `once` then exports its metrics (`[export]`): EMF lines before the summary, a line per push
/// or file after it, exit 4 when only an export failed.
async fn one_pass(
    engine: &Engine,
    cfg: &Config,
    mode: Mode,
    plan_output: Option<Output>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> ExitCode {
    let report = engine.pass(cfg, mode, shutdown).await;
    let mut export_failed = false;
    match plan_output {
        Some(Output::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        ),
        Some(Output::Table) => print!("{}", report::plan_table(&report)),
        None => {
            let exported = export::export(&cfg.export, &engine.metrics, report.finished_at).await;
            for line in &exported.emf_lines {
                println!("{line}");
            }
            report::write_summary(&mut report::Lines::new(|l| println!("{l}")), &report);
            for line in &exported.summary {
                println!("{line}");
            }
            export_failed = exported.failed;
        }
    }
    if report.failed() > 0 {
        ExitCode::from(EXIT_FAILED)
    } else if export_failed {
        ExitCode::from(EXIT_EXPORT)
    } else {
        ExitCode::SUCCESS
    }
}

/// `run`: the HTTP listener, then the daemon until the shutdown trigger; the listener serves
/// probes and scrapes until the daemon has drained.
async fn run(
    path: PathBuf,
    cfg: Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    reloads: tokio::sync::mpsc::Receiver<()>,
) -> ExitCode {
    let health = Arc::new(Health::new(cfg.daemon.stale_after));
    let listener = match http::bind(cfg.daemon.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: daemon.listen = {}: cannot listen: {e}",
                cfg.daemon.listen
            );
            return ExitCode::from(EXIT_START);
        }
    };
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics, /healthz, /readyz");
    let (stop_http, http_stop) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        http_stop,
        http::Limits::default(),
    ));
    let d = Daemon {
        engine,
        metrics,
        health,
        systemd: config::systemd_env(),
    };
    let result = d
        .run(cfg, move || config::load(&path), shutdown, reloads)
        .await;
    let _ = stop_http.send(true);
    let _ = server.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "daemon failed");
            ExitCode::from(EXIT_START)
        }
    }
}
