//! The rules service's batch processor: decodes the store topics into
//! observations, runs the [`Engine`], checkpoints state, offsets and decided
//! transitions together ([`crate::checkpoint`]), and publishes the transitions to
//! `alerts.v1` from the outbox.
//!
//! Output guarantee (no lost, no duplicated transition across a kill -9): a
//! transition is decided once — in the same transaction as the state change and
//! the offsets that caused it — and kept in the outbox until the broker
//! acknowledged it (idempotent producer, `acks=all`). A crash between the
//! acknowledgement and the outbox delete leaves rows whose records may already be
//! on `alerts.v1`; whoever takes the partition over reads `alerts.v1` from the
//! rows' creation time (minus a margin) and publishes only those not found. Every
//! record also carries a deterministic `event_id` (per alert and state) so a
//! consumer can check for itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::join_all;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Failure};
use storepulse_runtime::contract::{RecordContract, check_envelope};
use storepulse_runtime::records::{
    AlertTransition, DemandForecast, InventoryChange, PosHeartbeat, Record, SaleTransaction,
    SensorReading, topic,
};
use storepulse_runtime::{AvroCodec, EventProducer, KafkaConfig, Rejection};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::checkpoint::{self, CheckpointError, OutboxRow, Write};
use crate::engine::{Engine, Output, Transition};
use crate::observation::{Input, Source};
use crate::rule_file::RuleSet;

/// Metrics of the rules service.
#[derive(Debug, Clone)]
pub struct RulesMetrics {
    pub applied: IntCounterVec,
    pub late: IntCounterVec,
    pub skipped: IntCounterVec,
    pub transitions: IntCounterVec,
    /// `storepulse_rules_alerts_firing{rule}`: incidents firing now on this member.
    pub firing: IntGaugeVec,
    pub outbox: IntGauge,
    pub rules_loaded: IntGauge,
    pub reloads: IntCounterVec,
    pub fenced: prometheus::IntCounter,
    pub republished: IntCounterVec,
}

impl RulesMetrics {
    /// Sets the firing gauge from the engine: one series per rule with incidents
    /// firing (series of rules with none are removed).
    pub fn set_firing(&self, engine: &Engine) {
        self.firing.reset();
        for (rule, n) in engine.firing_by_rule() {
            self.firing.with_label_values(&[rule]).set(n as i64);
        }
    }

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            applied: IntCounterVec::new(
                Opts::new(
                    "rules_applied_events_total",
                    "Observations applied to the rules, by source",
                ),
                &["source"],
            )?,
            late: IntCounterVec::new(
                Opts::new(
                    "rules_late_events_total",
                    "Observations older than their store's watermark on arrival (not applied), by source",
                ),
                &["source"],
            )?,
            skipped: IntCounterVec::new(
                Opts::new(
                    "rules_skipped_records_total",
                    "Records the rules cannot read (the compactor dead-letters them), by topic",
                ),
                &["topic"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "rules_transitions_total",
                    "Alert transitions decided, by state",
                ),
                &["state"],
            )?,
            firing: IntGaugeVec::new(
                Opts::new(
                    "rules_alerts_firing",
                    "Incidents firing now on this member, by rule",
                ),
                &["rule"],
            )?,
            outbox: IntGauge::new(
                "rules_outbox_records",
                "Decided transitions not yet acknowledged by the broker",
            )?,
            rules_loaded: IntGauge::new(
                "rules_rules_loaded",
                "Rules in force (defaults plus tenant sets)",
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "rules_reloads_total",
                    "Rule file reloads, by outcome (ok, invalid)",
                ),
                &["outcome"],
            )?,
            fenced: prometheus::IntCounter::new(
                "rules_fenced_writes_total",
                "Checkpoint writes dropped because the partition had moved to another member",
            )?,
            republished: IntCounterVec::new(
                Opts::new(
                    "rules_outbox_restored_total",
                    "Outbox transitions found on restore, by outcome (published, already_on_topic)",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.late.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        registry.register(Box::new(m.firing.clone()))?;
        registry.register(Box::new(m.outbox.clone()))?;
        registry.register(Box::new(m.rules_loaded.clone()))?;
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.fenced.clone()))?;
        registry.register(Box::new(m.republished.clone()))?;
        Ok(m)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("publishing alert transitions: {0}")]
    Publish(String),
    #[error("encoding an alert transition: {0}")]
    Encode(String),
    #[error("reading alerts.v1 to check restored transitions: {0}")]
    Check(String),
}

/// Decodes one record of a rules input topic into its observation; `None` for a
/// record the rules cannot read (the compactor dead-letters it with the reason).
pub fn decode(codec: &AvroCodec, rec: &ConsumedRecord) -> Result<Input, String> {
    fn read<T: Record + RecordContract>(
        codec: &AvroCodec,
        rec: &ConsumedRecord,
    ) -> Result<T, String> {
        let r: T = codec.decode(&rec.payload).map_err(|e| e.to_string())?;
        check_envelope(r.envelope(), rec.key.as_deref()).map_err(|e| e.to_string())?;
        r.check_body().map_err(|e: Rejection| e.to_string())?;
        Ok(r)
    }
    let input = match Source::of_topic(&rec.topic) {
        Some(Source::Sensor) => Input::from(&read::<SensorReading>(codec, rec)?),
        Some(Source::Heartbeat) => Input::from(&read::<PosHeartbeat>(codec, rec)?),
        Some(Source::Sales) => Input::from(&read::<SaleTransaction>(codec, rec)?),
        Some(Source::Inventory) => Input::from(&read::<InventoryChange>(codec, rec)?),
        Some(Source::Forecast) => Input::from(&read::<DemandForecast>(codec, rec)?),
        None => return Err(format!("not a rules input topic: {}", rec.topic)),
    };
    if !input.observation.value.is_finite() {
        return Err("value is not finite".into());
    }
    Ok(input)
}

/// The wall clock in µs.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// How far back of a restored outbox row alerts.v1 is searched for it (producer
/// and database clocks may differ).
const OUTBOX_CHECK_MARGIN: Duration = Duration::from_secs(300);

/// Effects decided but not yet committed (kept across a retried apply).
#[derive(Debug, Default)]
struct Pending {
    transitions: Vec<(i32, Transition)>,
    offsets: BTreeMap<(String, i32), i64>,
    partitions: BTreeSet<i32>,
}

/// The rules' [`BatchProcessor`].
pub struct RulesProcessor {
    engine: Engine,
    pool: Pool,
    group: String,
    owner: String,
    codec: AvroCodec,
    producer: EventProducer,
    kafka: KafkaConfig,
    metrics: RulesMetrics,
    rules: watch::Receiver<Arc<RuleSet>>,
    idle_tick: Duration,
    /// Fencing epoch per held partition.
    epochs: HashMap<i32, i64>,
    /// Next offset to apply per (base topic, partition): records below were applied.
    next_offsets: HashMap<(String, i32), i64>,
    pending: Pending,
    /// Committed transitions not yet acknowledged (or acknowledged, not yet deleted).
    unpublished: Vec<(OutboxRow, bool)>,
    /// Idle sources per partition, from the last idle tick.
    idle: BTreeMap<i32, Vec<Source>>,
    tick_due: bool,
}

impl std::fmt::Debug for RulesProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesProcessor")
            .field("group", &self.group)
            .field("partitions", &self.epochs)
            .finish()
    }
}

impl RulesProcessor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Engine,
        pool: Pool,
        group: String,
        codec: AvroCodec,
        producer: EventProducer,
        kafka: KafkaConfig,
        metrics: RulesMetrics,
        rules: watch::Receiver<Arc<RuleSet>>,
        idle_tick: Duration,
    ) -> Self {
        let owner = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "rules".into()),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        metrics.rules_loaded.set(engine.rules().count() as i64);
        Self {
            engine,
            pool,
            group,
            owner,
            codec,
            producer,
            kafka,
            metrics,
            rules,
            idle_tick,
            epochs: HashMap::new(),
            next_offsets: HashMap::new(),
            pending: Pending::default(),
            unpublished: Vec::new(),
            idle: BTreeMap::new(),
            tick_due: false,
        }
    }

    fn count(&self, out: &Output) {
        for s in Source::ALL {
            let i = s.index();
            if out.applied[i] > 0 {
                self.metrics
                    .applied
                    .with_label_values(&[s.name()])
                    .inc_by(out.applied[i]);
            }
            if out.late[i] > 0 {
                self.metrics
                    .late
                    .with_label_values(&[s.name()])
                    .inc_by(out.late[i]);
            }
        }
    }

    /// Moves the engine's output into the pending write.
    fn take(&mut self, out: Output) {
        self.count(&out);
        for (p, t) in out.transitions {
            self.pending.partitions.insert(p);
            self.pending.transitions.push((p, t));
        }
    }

    /// Serialises what is pending for the held partitions.
    fn write(&self) -> Result<Write, ProcessError> {
        let mut w = Write::default();
        let received = now_micros();
        let partitions: BTreeSet<i32> = self
            .pending
            .partitions
            .iter()
            .copied()
            .chain(self.engine.partitions())
            .collect();
        for p in partitions {
            let Some(state) = self.engine.partition(p) else {
                continue;
            };
            if !self.pending.partitions.contains(&p) && state.dirty.is_empty() {
                continue;
            }
            w.arrival.insert(p, state.arrival);
            for s in self.engine.dirty_stores(p) {
                let json =
                    serde_json::to_string(s).map_err(|e| ProcessError::Encode(e.to_string()))?;
                w.stores
                    .push((p, s.store.tenant.clone(), s.store.store.clone(), json));
            }
        }
        w.offsets = self.pending.offsets.clone();
        for (p, t) in &self.pending.transitions {
            let record: AlertTransition = t.to_record(received);
            let payload = self
                .codec
                .encode(&record)
                .map_err(|e| ProcessError::Encode(e.to_string()))?;
            w.outbox
                .push((*p, record.envelope.event_id.clone(), t.store.key(), payload));
        }
        Ok(w)
    }

    /// Commits the pending effects; drops partitions found fenced.
    async fn commit(&mut self) -> Result<(), ProcessError> {
        let w = self.write()?;
        if w.is_empty() {
            return Ok(());
        }
        let committed = checkpoint::commit(&self.pool, &self.group, &self.epochs, &w).await?;
        for p in &committed.fenced {
            if self.epochs.contains_key(p) {
                warn!(
                    partition = p,
                    "partition taken over by another member; dropping its state"
                );
                self.metrics.fenced.inc();
                self.drop_partition(*p);
            }
        }
        for (_, t) in &self.pending.transitions {
            self.metrics
                .transitions
                .with_label_values(&[if t.firing { "firing" } else { "resolved" }])
                .inc();
        }
        let partitions: Vec<i32> = self.engine.partitions().collect();
        for p in partitions {
            self.engine.clear_dirty(p);
        }
        self.pending = Pending::default();
        self.unpublished
            .extend(committed.outbox.into_iter().map(|r| (r, false)));
        self.metrics.set_firing(&self.engine);
        Ok(())
    }

    /// Publishes the outbox (in order, concurrently) and deletes what the broker
    /// acknowledged.
    async fn publish(&mut self) -> Result<(), ProcessError> {
        self.metrics.outbox.set(self.unpublished.len() as i64);
        if self.unpublished.is_empty() {
            return Ok(());
        }
        let producer = &self.producer;
        let sends = self
            .unpublished
            .iter()
            .filter(|(_, done)| !done)
            .map(|(r, _)| producer.send_raw(topic::ALERTS, r.key.as_bytes(), &r.payload));
        let results = join_all(sends).await;
        let mut failure = None;
        let mut i = 0;
        for (_, done) in self.unpublished.iter_mut() {
            if *done {
                continue;
            }
            match &results[i] {
                Ok(_) => *done = true,
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e.to_string());
                    }
                }
            }
            i += 1;
        }
        let acked: Vec<i64> = self
            .unpublished
            .iter()
            .filter(|(_, done)| *done)
            .map(|(r, _)| r.seq)
            .collect();
        checkpoint::delete_outbox(&self.pool, &self.group, &acked).await?;
        self.unpublished.retain(|(_, done)| !done);
        self.metrics.outbox.set(self.unpublished.len() as i64);
        match failure {
            // Retryable or not, the transition stays in the outbox: retried.
            Some(e) => Err(ProcessError::Publish(e)),
            None => Ok(()),
        }
    }

    fn drop_partition(&mut self, p: i32) {
        self.engine.remove_partition(p);
        self.epochs.remove(&p);
        self.next_offsets.retain(|(_, q), _| *q != p);
        self.pending.offsets.retain(|(_, q), _| *q != p);
        self.pending.transitions.retain(|(q, _)| *q != p);
        self.pending.partitions.remove(&p);
        self.unpublished.retain(|(r, _)| r.partition != p);
        self.idle.remove(&p);
    }

    /// Takes `p` over: claims it, restores its state, and settles its outbox.
    async fn restore(&mut self, p: i32) -> Result<(), ProcessError> {
        let claimed = checkpoint::claim(&self.pool, &self.group, p, &self.owner).await?;
        let stores = claimed.state.stores.len();
        let mut outbox = claimed.outbox;
        if !outbox.is_empty() {
            let since = outbox
                .iter()
                .map(|r| r.created_at)
                .min()
                .map(|t| t.timestamp_millis() - OUTBOX_CHECK_MARGIN.as_millis() as i64);
            let kafka = self.kafka.clone();
            let codec = self.codec.clone();
            let wanted: HashSet<String> = outbox.iter().map(|r| r.event_id.clone()).collect();
            let found = tokio::task::spawn_blocking(move || {
                let mut found = HashSet::new();
                crate::topic_reader::read_to_end(
                    &kafka,
                    &[topic::ALERTS],
                    since,
                    Duration::from_secs(60),
                    |rec| {
                        if let Ok(a) = codec.decode::<AlertTransition>(&rec.payload)
                            && wanted.contains(&a.envelope.event_id)
                        {
                            found.insert(a.envelope.event_id);
                        }
                    },
                )
                .map(|_| found)
            })
            .await
            .map_err(|e| ProcessError::Check(e.to_string()))?
            .map_err(|e| ProcessError::Check(e.to_string()))?;
            let (on_topic, todo): (Vec<OutboxRow>, Vec<OutboxRow>) =
                outbox.drain(..).partition(|r| found.contains(&r.event_id));
            self.metrics
                .republished
                .with_label_values(&["already_on_topic"])
                .inc_by(on_topic.len() as u64);
            self.metrics
                .republished
                .with_label_values(&["published"])
                .inc_by(todo.len() as u64);
            info!(
                partition = p,
                already_on_topic = on_topic.len(),
                to_publish = todo.len(),
                "restored outbox"
            );
            let seqs: Vec<i64> = on_topic.iter().map(|r| r.seq).collect();
            checkpoint::delete_outbox(&self.pool, &self.group, &seqs).await?;
            self.unpublished
                .extend(todo.into_iter().map(|r| (r, false)));
        }
        for (t, next) in claimed.offsets {
            self.next_offsets.insert((t, p), next);
        }
        self.engine.insert_partition(p, claimed.state);
        self.epochs.insert(p, claimed.epoch);
        info!(
            partition = p,
            epoch = claimed.epoch,
            stores,
            "partition restored"
        );
        Ok(())
    }

    /// Puts a reloaded rule file in force, if one arrived.
    fn reload_rules(&mut self) {
        if !self.rules.has_changed().unwrap_or(false) {
            return;
        }
        let rules = self.rules.borrow_and_update().clone();
        self.metrics.rules_loaded.set(rules.count() as i64);
        let mut out = Output::default();
        self.engine.set_rules(rules, &mut out);
        info!(
            resolved = out.transitions.len(),
            "rules reloaded; state kept"
        );
        self.take(out);
    }
}

impl BatchProcessor for RulesProcessor {
    type Item = Option<Input>;
    type Error = ProcessError;

    fn decode(&self, record: &ConsumedRecord) -> Result<Option<Input>, Rejection> {
        match decode(&self.codec, record) {
            Ok(input) => Ok(Some(input)),
            Err(reason) => {
                self.metrics
                    .skipped
                    .with_label_values(&[&record.topic])
                    .inc();
                tracing::debug!(topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "record skipped");
                Ok(None)
            }
        }
    }

    async fn apply(&mut self, batch: &Batch<Option<Input>>) -> Result<(), ProcessError> {
        self.reload_rules();
        let now = now_micros();
        let mut out = Output::default();
        for item in &batch.items {
            let key = (item.topic.clone(), item.partition);
            if !self.epochs.contains_key(&item.partition) {
                continue; // revoked: its next owner reads it again
            }
            if self
                .next_offsets
                .get(&key)
                .is_some_and(|n| item.offset < *n)
            {
                continue; // applied before (a retry, or a commit the group missed)
            }
            if let Some(input) = &item.item {
                self.engine
                    .observe(item.partition, input.clone(), now, &mut out);
            }
            self.next_offsets.insert(key.clone(), item.offset + 1);
            self.pending.offsets.insert(key, item.offset + 1);
            self.pending.partitions.insert(item.partition);
        }
        if batch.items.is_empty() && std::mem::take(&mut self.tick_due) {
            let partitions: Vec<i32> = self.engine.partitions().collect();
            for p in partitions {
                let idle = self.idle.get(&p).cloned().unwrap_or_default();
                self.engine.tick(p, &idle, now, &mut out);
                if !idle.is_empty() {
                    self.pending.partitions.insert(p);
                }
            }
        }
        self.take(out);
        self.commit().await?;
        self.publish().await
    }

    fn classify(&self, error: &ProcessError) -> Failure {
        match error {
            ProcessError::Checkpoint(CheckpointError::Postgres(e)) => {
                match storepulse_runtime::db::classify_postgres(e) {
                    Failure::Transient => Failure::Transient,
                    // State the database refuses is a bug, not a record to isolate.
                    _ => Failure::Fatal,
                }
            }
            ProcessError::Checkpoint(CheckpointError::Pool(_)) => Failure::Transient,
            ProcessError::Checkpoint(CheckpointError::Corrupt { .. }) => Failure::Fatal,
            ProcessError::Publish(_) | ProcessError::Check(_) => Failure::Transient,
            ProcessError::Encode(_) => Failure::Fatal,
        }
    }

    async fn assigned(&mut self, partitions: &[(String, i32)]) -> Result<(), ProcessError> {
        let numbers: BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        for p in numbers {
            if !self.epochs.contains_key(&p) {
                self.restore(p).await?;
            }
        }
        self.metrics.set_firing(&self.engine);
        self.publish().await
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        let numbers: BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        for p in numbers {
            info!(
                partition = p,
                "partition revoked; state dropped (its checkpoint stays)"
            );
            self.drop_partition(p);
        }
        self.metrics.set_firing(&self.engine);
    }

    fn idle_tick(&self) -> Option<Duration> {
        Some(self.idle_tick)
    }

    fn idle(&mut self, partitions: &[(String, i32)]) -> bool {
        self.idle.clear();
        for (t, p) in partitions {
            if let Some(s) = Source::of_topic(t) {
                self.idle.entry(*p).or_default().push(s);
            }
        }
        self.tick_due = true;
        true
    }
}
