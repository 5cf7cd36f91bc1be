//! Rules evaluator: stateful, event-time alert rules over the store topics.
//!
//! It consumes `pos.sales.v1`, `pos.inventory.v1`, `pos.device.v1`,
//! `sensor.readings.v1` and `forecasts.v1`, evaluates the rules of a rule file
//! ([`rule_file`]) per store in event time ([`engine`]), and emits each alert's
//! lifecycle (`Firing`, then `Resolved`) to `alerts.v1`.

pub mod calendar;
pub mod engine;
pub mod machines;
pub mod observation;
pub mod rule_file;
pub mod span;

use storepulse_runtime::config::{ConfigError, ConfigSource};
use storepulse_runtime::service_shell::{ShellConfig, run_shell};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Name of the config section and of the service in metrics.
pub const SERVICE: &str = "rules";
/// Default address of the ops endpoints.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9103";

/// Reads this service's configuration.
pub fn config(src: &ConfigSource) -> Result<ShellConfig, ConfigError> {
    ShellConfig::from_source(src, SERVICE, DEFAULT_LISTEN)
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: ShellConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = storepulse_runtime::ops_http::bind(&config.ops.http_listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_with_listener(
    config: ShellConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_shell(SERVICE, &config, listener, shutdown).await?;
    Ok(())
}
