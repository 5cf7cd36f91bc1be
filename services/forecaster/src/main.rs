//! `storepulse-forecaster` binary.

use std::path::PathBuf;

use clap::Parser;
use storepulse_runtime::{ConfigSource, shutdown};

/// Demand forecaster: daily demand per store and SKU from pos.sales.v1 and stock from
/// pos.inventory.v1; publishes 14-day forecasts with 80%/95% intervals and stock-out
/// risk to forecasts.v1.
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
    let config = storepulse_forecaster::config(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, storepulse_forecaster::run).await
}
