//! Demand forecaster. Will forecast daily demand per store and SKU with intervals and stock-out risk, publishing to forecasts.v1.
//!
//! In this release the service is a shell: configuration, the ops endpoints
//! (`/metrics`, `/healthz`, `/readyz`) and graceful shutdown, via
//! [`storepulse_runtime::service_shell`]. It consumes and produces nothing yet.

pub mod methods;

use storepulse_runtime::config::{ConfigError, ConfigSource};
use storepulse_runtime::service_shell::{ShellConfig, run_shell};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Name of the config section and of the service in metrics.
pub const SERVICE: &str = "forecaster";
/// Default address of the ops endpoints.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9104";

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
