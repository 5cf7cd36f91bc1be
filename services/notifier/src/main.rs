//! `storepulse-notifier` binary.

use std::path::PathBuf;

use clap::Parser;
use storepulse_runtime::{ConfigSource, shutdown};

/// Alert notifier. Will route alert transitions to webhook, WhatsApp Business, email and Slack receivers, recording outcomes on notifications.v1.
///
/// THIS RELEASE: a service shell only. It serves /metrics, /healthz and /readyz on
/// notifier.http_listen (default 9105) and stops cleanly on SIGTERM; it does not consume
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
    let config = storepulse_notifier::config(&ConfigSource::load(args.config.as_deref())?)?;
    let log = config.log.clone();
    shutdown::run_until_signalled(config, &log, storepulse_notifier::run).await
}
