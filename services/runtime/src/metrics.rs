//! Metrics the runtime itself emits, registered once per service registry and
//! shared by its producer and consumer loop. Names follow
//! `storepulse_<name>_<unit>_total`; labels are bounded (topic, outcome).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct RuntimeMetrics {
    /// Records the broker acknowledged (`outcome=acked`) or failed (`outcome=failed`).
    pub produced: IntCounterVec,
    /// Records read by the consumer loop, by topic.
    pub consumed: IntCounterVec,
    /// Records sent to the dead-letter topic, by source topic.
    pub dead_lettered: IntCounterVec,
    /// Time to make one batch durable.
    pub batch_seconds: Histogram,
    /// Partitions currently assigned to this consumer, by topic.
    pub assigned_partitions: IntGaugeVec,
}

impl RuntimeMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            produced: IntCounterVec::new(
                Opts::new(
                    "produced_records_total",
                    "Records acknowledged or failed by the broker",
                ),
                &["topic", "outcome"],
            )?,
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
        };
        registry.register(Box::new(m.produced.clone()))?;
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        Ok(m)
    }
}
