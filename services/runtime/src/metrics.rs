//! Metrics the runtime itself emits. Names follow `storepulse_<name>_<unit>_total`;
//! labels are bounded (topic, outcome). A service registers the producer metrics,
//! the consumer metrics, or both, once in its registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use rdkafka::ClientContext;
use rdkafka::statistics::Statistics;

/// How often librdkafka reports its statistics (request counts), unless
/// `kafka.properties` sets `statistics.interval.ms`.
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// Counts one kind of request a Kafka client sent to the brokers, from librdkafka's
/// statistics (cumulative per broker; the counter grows by the difference).
#[derive(Debug, Clone)]
pub struct RequestCounter {
    /// librdkafka's name of the request, e.g. `Produce`, `Fetch`.
    request: &'static str,
    counter: IntCounter,
    /// Last cumulative count seen per broker.
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

impl RequestCounter {
    fn new(request: &'static str, counter: IntCounter) -> Self {
        Self {
            request,
            counter,
            seen: Arc::default(),
        }
    }

    /// Adds what `stats` shows beyond the last statistics.
    pub fn observe(&self, stats: &Statistics) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (name, broker) in &stats.brokers {
            let now = broker.req.get(self.request).copied().unwrap_or(0);
            let before = seen.insert(name.clone(), now).unwrap_or(0);
            if now > before {
                self.counter.inc_by((now - before) as u64);
            }
        }
    }
}

/// The context of an [`crate::EventProducer`]'s client: counts produce requests.
#[derive(Debug, Clone)]
pub struct ProducerContext {
    pub produce_requests: RequestCounter,
}

impl ClientContext for ProducerContext {
    fn stats(&self, statistics: Statistics) {
        self.produce_requests.observe(&statistics);
    }
}

/// Metrics of an [`crate::EventProducer`].
#[derive(Debug, Clone)]
pub struct ProducerMetrics {
    /// Records the broker acknowledged (`outcome=acked`) or failed (`outcome=failed`).
    pub produced: IntCounterVec,
    /// Produce requests sent (`storepulse_kafka_produce_requests_total`): with
    /// `produced`, the records per request, i.e. how well the linger batches.
    pub produce_requests: RequestCounter,
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
        let requests = IntCounter::new(
            "kafka_produce_requests_total",
            "Produce requests sent to the brokers (each carries one partition's batch)",
        )?;
        registry.register(Box::new(produced.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self {
            produced,
            produce_requests: RequestCounter::new("Produce", requests),
        })
    }
}

/// Records from `position` (the next offset to read) to `high_watermark`; 0 when
/// either is not known yet (librdkafka reports negative sentinels).
fn partition_lag(high_watermark: i64, position: i64) -> i64 {
    if high_watermark < 0 || position < 0 {
        0
    } else {
        (high_watermark - position).max(0)
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
    /// Fetch requests sent (`storepulse_kafka_fetch_requests_total`).
    pub fetch_requests: RequestCounter,
    /// Records between this consumer's position and the end of its partitions, by
    /// topic (`storepulse_consumer_lag_records`), from librdkafka's statistics.
    pub lag: IntGaugeVec,
}

impl ConsumerMetrics {
    /// Sets the lag gauge from `stats`: per topic (the deployment's `prefix`
    /// removed), the sum over the partitions this member fetches of the high
    /// watermark minus its position. Partitions whose position or end is not known
    /// yet count 0. Offsets live in Postgres for some consumers, so the position is
    /// the application's, not the committed offset.
    pub fn observe_lag(&self, stats: &Statistics, prefix: &str) {
        for (name, topic) in &stats.topics {
            let lag: i64 = topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.fetch_state == "active")
                .map(|p| partition_lag(p.hi_offset, p.app_offset))
                .sum();
            let base = name.strip_prefix(prefix).unwrap_or(name);
            self.lag.with_label_values(&[base]).set(lag);
        }
    }

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let fetches = IntCounter::new(
            "kafka_fetch_requests_total",
            "Fetch requests sent to the brokers",
        )?;
        registry.register(Box::new(fetches.clone()))?;
        let m = Self {
            fetch_requests: RequestCounter::new("Fetch", fetches),
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
            lag: IntGaugeVec::new(
                Opts::new(
                    "consumer_lag_records",
                    "Records between this member's position and the end of its assigned partitions, by topic",
                ),
                &["topic"],
            )?,
        };
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.paused_partitions.clone()))?;
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_records_from_position_to_end_and_zero_when_unknown() {
        assert_eq!(partition_lag(120, 100), 20);
        assert_eq!(partition_lag(100, 100), 0);
        assert_eq!(partition_lag(-1, 100), 0, "end not known yet");
        assert_eq!(partition_lag(100, -1001), 0, "position not known yet");
        assert_eq!(partition_lag(90, 100), 0, "stale end after a fetch");
    }
}
