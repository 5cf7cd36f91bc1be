//! Tracing setup and the per-service Prometheus registry.

use prometheus::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber (JSON or text). `RUST_LOG` overrides the
/// configured filter. Calling it twice is harmless (tests start several services).
pub fn init_tracing(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A registry whose metrics are all named `storepulse_*` and labelled with the
/// service, so several services can share one process (the dev stack, tests).
pub fn service_registry(service: &str) -> Registry {
    let mut labels = std::collections::HashMap::new();
    labels.insert("service".to_string(), service.to_string());
    Registry::new_custom(Some("storepulse".to_string()), Some(labels))
        .unwrap_or_else(|_| Registry::new())
}
