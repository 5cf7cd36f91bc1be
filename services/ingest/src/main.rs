//! `storepulse-ingest`: the HTTP ingestion API.

use std::path::PathBuf;

use clap::Parser;
use storepulse_ingest::{IngestConfig, run};
use storepulse_runtime::{ConfigSource, shutdown};

/// Serves POST /v1/events: JSON batches of POS and sensor events, authenticated by
/// per-store API keys (see `storepulse keys`). Valid events are published as Avro to
/// their topics, invalid ones answered with field and reason and copied to
/// ingest.rejected.v1. Answers after the broker acknowledged. Also serves /metrics,
/// /healthz and /readyz on the same address (ingest.listen).
///
/// Configuration: --config FILE (or STOREPULSE_CONFIG), overridden by
/// STOREPULSE_<SECTION>__<KEY> variables, e.g. STOREPULSE_INGEST__LISTEN.
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
    let config = IngestConfig::from_source(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, run).await
}
