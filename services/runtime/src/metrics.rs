//! Metrics the runtime itself emits. Names follow `storepulse_<name>_<unit>_total`;
//! labels are bounded (topic, outcome). A service registers the producer metrics,
//! the consumer metrics, or both, once in its registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metrics of an [`crate::EventProducer`].
#[derive(Debug, Clone)]
pub struct ProducerMetrics {
    /// Records the broker acknowledged (`outcome=acked`) or failed (`outcome=failed`).
    pub produced: IntCounterVec,
}

impl ProducerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let produced = IntCounterVec::new(
            Opts::new(
                "produced_records_total",
                "Records acknowledged or failed by the broker",
            ),
            &["topic", "outcome"],
        )?;
        registry.register(Box::new(produced.clone()))?;
        Ok(Self { produced })
    }
}

/// Metrics of a [`crate::consumer::BatchConsumer`].
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    /// Records read by the consumer loop, by topic.
    pub consumed: IntCounterVec,
    /// Records sent to the dead-letter topic, by source topic.
    pub dead_lettered: IntCounterVec,
    /// Time to make one batch durable.
    pub batch_seconds: Histogram,
    /// Partitions currently assigned to this consumer, by topic.
    pub assigned_partitions: IntGaugeVec,
    /// Partitions held at a record whose writer schema is unknown, by topic.
    pub paused_partitions: IntGaugeVec,
}

impl ConsumerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            consumed: IntCounterVec::new(
                Opts::new("consumed_records_total", "Records read from Kafka"),
                &["topic"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "dead_letter_records_total",
                    "Records sent to the dead-letter topic",
                ),
                &["topic"],
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "batch_apply_seconds",
                    "Time to make one consumed batch durable",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            assigned_partitions: IntGaugeVec::new(
                Opts::new(
                    "assigned_partitions",
                    "Partitions assigned to this consumer",
                ),
                &["topic"],
            )?,
            paused_partitions: IntGaugeVec::new(
                Opts::new(
                    "paused_partitions",
                    "Partitions held at a record whose writer schema is unknown",
                ),
                &["topic"],
            )?,
        };
        registry.register(Box::new(m.paused_partitions.clone()))?;
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        Ok(m)
    }
}
