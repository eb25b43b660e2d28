//! `amg-emulator [--port N] [--seed FILE] [--faults FILE]`: runs the emulator until SIGTERM/SIGINT.
//!
//! Prints exactly one line to stdout, `listening on http://127.0.0.1:PORT`, flushed, so a script can
//! read the port; everything else (one line per AWS call, errors) goes to stderr.

use amg_emulator::{Emulator, EmulatorConfig, Faults, Seed};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "amg-emulator",
    about = "A wire-level emulator of the Amazon Managed Grafana control plane, for tests"
)]
struct Args {
    /// Port on 127.0.0.1; 0 lets the system choose.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed file (JSON): workspaces, service accounts, tokens, API keys, permissions, settings.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Fault configuration file (JSON); replaces the seed's `faults`.
    #[arg(long)]
    faults: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("amg-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::start(config).await {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("amg-emulator: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", emulator.endpoint())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    wait_for_signal().await;
    emulator.shutdown().await;
    eprintln!("amg-emulator: stopped");
    ExitCode::SUCCESS
}

fn load(args: &Args) -> Result<EmulatorConfig, String> {
    let seed = match &args.seed {
        Some(path) => Seed::from_file(path).map_err(|e| e.to_string())?,
        None => Seed::default(),
    };
    let faults = match &args.faults {
        Some(path) => Some(Faults::from_file(path).map_err(|e| format!("invalid faults: {e}"))?),
        None => None,
    };
    Ok(EmulatorConfig {
        port: args.port,
        seed,
        faults,
        log_calls: true,
        clock_offset_seconds: 0,
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
