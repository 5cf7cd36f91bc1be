//! `storepulse-compactor`: folds the event log into the Postgres read store.

use std::path::PathBuf;

use clap::Parser;
use storepulse_compactor::{CompactorConfig, run};
use storepulse_runtime::{ConfigSource, shutdown};

/// Consumes pos.sales.v1, pos.inventory.v1, pos.device.v1, sensor.readings.v1 and
/// ingest.rejected.v1 and writes them to the Postgres read store exactly once (rows
/// and consumer offsets in one transaction). Applies schema migrations at start.
/// Serves /metrics, /healthz and /readyz on compactor.http_listen.
///
/// Configuration: --config FILE (or STOREPULSE_CONFIG), overridden by
/// STOREPULSE_<SECTION>__<KEY> variables, e.g. STOREPULSE_KAFKA__BROKERS.
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
    let config = CompactorConfig::from_source(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, run).await
}
