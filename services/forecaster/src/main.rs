//! `storepulse-forecaster` binary.

use std::path::PathBuf;

use clap::Parser;
use storepulse_runtime::{ConfigSource, shutdown};

/// Demand forecaster. Will forecast daily demand per store and SKU with intervals and stock-out risk, publishing to forecasts.v1.
///
/// THIS RELEASE: a service shell only. It serves /metrics, /healthz and /readyz on
/// forecaster.http_listen (default 9104) and stops cleanly on SIGTERM; it does not consume
/// or produce any records yet.
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
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = storepulse_forecaster::config(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, storepulse_forecaster::run).await
}
