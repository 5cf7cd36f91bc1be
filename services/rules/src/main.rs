//! `storepulse-rules` binary.

use std::path::PathBuf;

use clap::Parser;
use storepulse_runtime::{ConfigSource, shutdown};

/// Rules evaluator: evaluates the rule file's threshold, absence, rate-of-change,
/// stock, sales-anomaly and cold-chain rules per store in event time and emits
/// alert lifecycles (firing, resolved) to alerts.v1.
///
/// Needs rules.rules_file (the rule file, TOML; reloaded on change). Serves
/// /metrics, /healthz and /readyz on rules.http_listen (default 9103).
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
    let config = storepulse_rules::config(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, storepulse_rules::run).await
}
