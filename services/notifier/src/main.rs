//! `storepulse-notifier` binary.

use std::path::PathBuf;

use clap::Parser;
use storepulse_runtime::{ConfigSource, shutdown};

/// Alert notifier: consumes alerts.v1, routes each transition with the policy file
/// (notifier.policy_file), delivers grouped notifications to webhook receivers with
/// retries, records every outcome in its delivery ledger (Postgres schema `notifier`)
/// and on notifications.v1. Serves /metrics, /healthz and /readyz on
/// notifier.http_listen (default 9105); stops cleanly on SIGTERM.
///
/// Configuration: --config FILE (or STOREPULSE_CONFIG), overridden by
/// STOREPULSE_<SECTION>__<KEY> variables.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shutdown::exit_code(run_service().await)
}

async fn run_service() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = storepulse_notifier::config(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, storepulse_notifier::run).await
}
