//! Lifecycle of a service whose processing has not landed yet: it loads its
//! configuration, serves `/metrics`, `/healthz` and `/readyz` (ready when the broker
//! answers), and stops cleanly on shutdown. It consumes and produces nothing, and
//! says so in its log and `--help`, so nobody mistakes it for a working stage.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, ConfigSource, KafkaConfig, LogConfig, OpsSettings};
use crate::shutdown::{ServiceError, ServiceTasks};
use crate::{kafka, ops_http, telemetry};

/// Configuration of a service shell: the shared sections and its own ops section.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    pub kafka: KafkaConfig,
    pub log: LogConfig,
    pub ops: OpsSettings,
}

impl ShellConfig {
    /// Reads `kafka`, `log` and the service's own `section`, defaulting its listen
    /// address to `default_listen`.
    pub fn from_source(
        src: &ConfigSource,
        section: &str,
        default_listen: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            kafka: src.section("kafka")?,
            log: src.section("log")?,
            ops: src.section_or(section, OpsSettings::listening_on(default_listen))?,
        })
    }
}

/// Serves the ops endpoints of `service` on `listener` until `shutdown`.
pub async fn run_shell(
    service: &'static str,
    config: &ShellConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let registry = telemetry::service_registry(service);
    let router = ops_http::ops_router(registry, vec![kafka::readiness(&config.kafka)]);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    warn!(service, %addr, "service shell: ops endpoints only, no processing in this release");
    let mut tasks = ServiceTasks::new(&shutdown);
    tasks.spawn("ops-http", ops_http::serve(listener, router, tasks.token()));
    tasks
        .join(Duration::from_millis(config.ops.shutdown_grace_ms))
        .await?;
    info!(service, "stopped");
    Ok(())
}
