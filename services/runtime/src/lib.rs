//! The plumbing every StorePulse service shares.
//!
//! Services are libraries with `pub async fn run(config, shutdown)`; this crate gives
//! them configuration, the Avro codec and typed records, the Kafka producer and the
//! batch consumer loop, dead-letter publishing, the Postgres pool and migrations, the
//! ops HTTP server (`/metrics`, `/healthz`, `/readyz`), tracing setup and shutdown.

pub mod avro;
pub mod config;
pub mod consumer;
pub mod contract;
pub mod db;
pub mod dead_letter;
pub mod kafka;
pub mod metrics;
pub mod ops_http;
pub mod records;
pub mod schema_registry;
pub mod service_shell;
pub mod shutdown;
pub mod span;
pub mod telemetry;
pub mod topic_admin;
pub mod vocabulary;

pub use avro::AvroCodec;
pub use config::{ConfigSource, KafkaConfig, LogConfig, PostgresConfig, Retention, TopicSettings};
pub use dead_letter::{DeadLetters, Rejection};
pub use kafka::EventProducer;
pub use metrics::{ConsumerMetrics, ProducerMetrics};
pub use shutdown::ServiceTasks;
