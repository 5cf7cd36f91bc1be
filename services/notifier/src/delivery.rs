//! Delivery workers: one task per receiver sends that receiver's pending messages.
//!
//! Guarantees:
//! - receivers are independent: a slow or dead receiver delays only itself, and its
//!   failures never make another receiver resend;
//! - a message is retried on retryable errors with exponential backoff and jitter
//!   (honouring `Retry-After`, capped at `backoff_max`), at most `max_attempts` per
//!   channel; a channel that fails for good falls back to the receiver's next one;
//!   after the last channel: a `failed` outcome and a dead letter in the ledger;
//! - the ledger is updated after the remote's answer and before the outcome record
//!   is published; outcomes not yet published (a crash in between) are published
//!   when the worker next runs, each with a deterministic event id;
//! - a worker wakes as soon as the router recorded new deliveries (no polling
//!   interval in between), and its outcomes are published by a task of their own,
//!   so waiting for the broker's acknowledgement of one outcome never delays the
//!   next message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rand::Rng;
use storepulse_runtime::EventProducer;
use storepulse_runtime::records::{
    Channel, DeliveryStatus, Envelope, NotificationOutcome, NotifiedState, to_micros,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::channels::{Outgoing, SendError, send_once};
use crate::grouping::{GroupClock, Planned, Timings};
use crate::ledger::{Final, Ledger, LedgerError};
use crate::ledger::{FinishedDelivery, PendingDelivery};
use crate::policy::{ChannelSpec, Policy, Receiver, RetryPolicy};
use crate::rate_limit::TokenBucket;
use crate::silences;

/// Namespace of outcome event ids (UUIDv5 over transition, receiver and status).
const OUTCOME_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7469_6669_6572_2d6f_7574_636f_6d65);
/// Most pending deliveries a worker looks at per round.
const PENDING_LIMIT: i64 = 5_000;
/// Longest sleep between rounds with nothing due (a safety net; wake-ups come sooner).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Longest time between two scans for alerts to repeat.
const REPEAT_SCAN_MAX: Duration = Duration::from_secs(60);
/// Most repeat candidates looked at per scan.
const REPEAT_LIMIT: i64 = 10_000;
/// Pause after a ledger error before the worker tries again.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// Delivery metrics (`storepulse_notifier_*`).
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Final outcomes per channel and status.
    pub outcomes: IntCounterVec,
    /// Send attempts per channel and result (ok, retryable, permanent).
    pub attempts: IntCounterVec,
    /// Seconds from a transition entering the ledger to its message being delivered.
    pub latency: HistogramVec,
}

impl DeliveryMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "notifier_deliveries_total",
                "Alert transitions finished per receiver channel, by final status",
            ),
            &["channel", "status"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "notifier_send_attempts_total",
                "Send attempts by channel and result",
            ),
            &["channel", "result"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "notifier_delivery_latency_seconds",
                "From a transition entering the ledger to its message being delivered",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
            ]),
            &["channel"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            outcomes,
            attempts,
            latency,
        })
    }
}

/// What every worker shares.
#[derive(Clone)]
pub struct DeliveryContext {
    pub ledger: Ledger,
    pub producer: EventProducer,
    pub http: reqwest::Client,
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Bumped whenever new deliveries were recorded.
    pub wake: watch::Receiver<u64>,
    pub metrics: DeliveryMetrics,
}

impl std::fmt::Debug for DeliveryContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryContext").finish_non_exhaustive()
    }
}

/// Keeps one worker per receiver of the current policy until `shutdown`.
pub async fn supervise(
    ctx: DeliveryContext,
    shutdown: CancellationToken,
) -> Result<(), LedgerError> {
    let mut policy_rx = ctx.policy.clone();
    let mut workers: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let names: Vec<String> = policy_rx
            .borrow_and_update()
            .receivers
            .keys()
            .cloned()
            .collect();
        workers.retain(|name, (token, handle)| {
            let keep = names.contains(name) && !handle.is_finished();
            if !keep {
                token.cancel();
            }
            keep
        });
        for name in names {
            if workers.contains_key(&name) {
                continue;
            }
            let token = shutdown.child_token();
            let worker = Worker::new(ctx.clone(), name.clone());
            let handle = tokio::spawn(worker.run(token.clone()));
            info!(receiver = %name, "delivery worker started");
            workers.insert(name, (token, handle));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = policy_rx.changed() => if changed.is_err() { break },
        }
    }
    for (_, (token, handle)) in workers {
        token.cancel();
        let _ = handle.await;
    }
    Ok(())
}

struct PolicyTimings<'a>(&'a Policy);

impl Timings for PolicyTimings<'_> {
    fn group_wait(&self, route: &str) -> Duration {
        self.0
            .route_at(route)
            .map_or(self.0.root.timing.group_wait, |r| r.timing.group_wait)
    }
    fn group_interval(&self, route: &str) -> Duration {
        self.0
            .route_at(route)
            .map_or(self.0.root.timing.group_interval, |r| {
                r.timing.group_interval
            })
    }
}

/// Sends one receiver's messages.
struct Worker {
    ctx: DeliveryContext,
    receiver: String,
    clock: GroupClock,
    /// The receiver's rate limit and its bucket (rebuilt when the limit changes).
    bucket: Option<((u32, Duration), TokenBucket)>,
    /// When to look next for still-firing alerts due a repeat.
    repeat_scan_at: DateTime<Utc>,
    /// Told whenever the worker finished deliveries in the ledger (their outcomes
    /// are then due on notifications.v1).
    finished: Arc<Notify>,
}

/// How a message ended.
enum Sent {
    Done,
    /// Shutdown came first; the ledger still says pending.
    Interrupted,
}

impl Worker {
    fn new(ctx: DeliveryContext, receiver: String) -> Self {
        Self {
            ctx,
            receiver,
            clock: GroupClock::default(),
            bucket: None,
            repeat_scan_at: Utc::now(),
            finished: Arc::new(Notify::new()),
        }
    }

    fn publisher(&self) -> OutcomePublisher {
        OutcomePublisher {
            ctx: self.ctx.clone(),
            receiver: self.receiver.clone(),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let outcomes = tokio::spawn(
            self.publisher()
                .run(self.finished.clone(), shutdown.clone()),
        );
        let mut wake = self.ctx.wake.clone();
        while !shutdown.is_cancelled() {
            wake.borrow_and_update();
            let next = match self.round(&shutdown).await {
                Ok(next) => next,
                Err(e) => {
                    warn!(receiver = %self.receiver, error = %e, "delivery ledger unavailable; retrying");
                    Some(LEDGER_RETRY)
                }
            };
            let Some(wait) = next else { continue };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(wait.min(IDLE_POLL)) => {}
            }
        }
        // The last outcomes recorded before the stop (what fails is published when
        // the worker next runs).
        let _ = outcomes.await;
        if let Err(e) = self.publisher().publish().await {
            warn!(receiver = %self.receiver, error = %e, "outcomes left unpublished at stop; published at the next start");
        }
        debug!(receiver = %self.receiver, "delivery worker stopped");
    }

    /// Sends what is due (the outcomes are published apart, by the worker's
    /// [`OutcomePublisher`]); returns how long to wait before the next round (`None`:
    /// go again at once).
    async fn round(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Duration>, LedgerError> {
        let policy = self.ctx.policy.borrow().clone();
        let Some(receiver) = policy.receivers.get(&self.receiver).cloned() else {
            return Ok(Some(IDLE_POLL));
        };
        if Utc::now() >= self.repeat_scan_at {
            let repeats_next = self.record_repeats(&policy, Utc::now()).await?;
            let escalations_next = self.record_escalations(&policy, Utc::now()).await?;
            self.repeat_scan_at = repeats_next.min(escalations_next);
        }
        let pending = self
            .ctx
            .ledger
            .pending(&self.receiver, PENDING_LIMIT)
            .await?;
        let now = Utc::now();
        let (pending, hold_ends) = self.hold(&policy, &receiver, pending, now).await?;
        let mut plan = self.clock.plan(pending, &PolicyTimings(&policy), now);
        if let Some(end) = hold_ends {
            plan.next_due = Some(plan.next_due.map_or(end, |n| n.min(end)));
        }
        let repeat_scan = self.repeat_scan_at;
        plan.next_due = Some(plan.next_due.map_or(repeat_scan, |n| n.min(repeat_scan)));
        let sent_any = !plan.messages.is_empty();
        match receiver.rate_limit {
            Some(limit) if self.bucket.as_ref().map(|(l, _)| *l) != Some(limit) => {
                self.bucket = Some((limit, TokenBucket::new(limit.0, limit.1)));
            }
            None => self.bucket = None,
            _ => {}
        }
        for planned in plan.messages {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            // Over the rate limit: the rest waits (still pending) until a token is due.
            if let Some((_, bucket)) = &mut self.bucket
                && planned.message_id.is_none()
                && let Err(next) = bucket.take(Utc::now())
            {
                debug!(receiver = %self.receiver, %next, "rate limit reached; delaying");
                return Ok(Some((next - Utc::now()).to_std().unwrap_or(Duration::ZERO)));
            }
            let key = planned.group_key.clone();
            if let Sent::Interrupted = self.send(&receiver, planned, shutdown).await? {
                return Ok(None);
            }
            let sent_at = Utc::now();
            self.clock.sent(&key, sent_at);
            // A newly delivered alert may be due a repeat one repeat_interval on.
            let first_repeat = sent_at + policy.min_follow_up();
            self.repeat_scan_at = self.repeat_scan_at.min(first_repeat);
        }
        if sent_any {
            return Ok(None);
        }
        Ok(Some(plan.next_due.map_or(IDLE_POLL, |due| {
            (due - Utc::now()).to_std().unwrap_or(Duration::ZERO)
        })))
    }

    /// Records a repeat (a new pending delivery) for each alert still firing whose
    /// last notification was delivered at least its route's `repeat_interval` ago;
    /// returns when to scan next.
    async fn record_repeats(
        &self,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let mut next = now + REPEAT_SCAN_MAX;
        let candidates = self
            .ctx
            .ledger
            .repeat_candidates(&self.receiver, REPEAT_LIMIT)
            .await?;
        let mut due = Vec::new();
        for c in candidates {
            let at = c.last_delivered_at + policy.repeat_interval(&c.route);
            if at <= now {
                due.push(c.next_repeat(&self.receiver));
            } else {
                next = next.min(at);
            }
        }
        if !due.is_empty() {
            let n = self.ctx.ledger.enqueue(&due).await?;
            debug!(receiver = %self.receiver, repeats = n, "still-firing alerts due a repeat");
        }
        Ok(next)
    }

    /// Records the due steps of escalation ladders for this receiver's delivered,
    /// unacknowledged, still-firing alerts (a new pending delivery to the step's
    /// receiver, which its own worker sends); returns when to scan next.
    async fn record_escalations(
        &self,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let mut next = now + REPEAT_SCAN_MAX;
        let candidates = self
            .ctx
            .ledger
            .escalation_candidates(&self.receiver, REPEAT_LIMIT)
            .await?;
        let mut due = Vec::new();
        for c in candidates {
            let ladder = policy.escalation(&c.route);
            let done = usize::try_from(c.steps_so_far).unwrap_or(0);
            for (i, step) in ladder.iter().enumerate().skip(done) {
                let at = c.first_delivered_at + step.after;
                if at <= now {
                    due.push(c.step(i + 1, &step.receiver));
                } else {
                    next = next.min(at);
                    break;
                }
            }
        }
        if !due.is_empty() {
            let n = self.ctx.ledger.enqueue(&due).await?;
            info!(receiver = %self.receiver, steps = n, "unacknowledged alerts escalated");
        }
        Ok(next)
    }

    /// Drops silenced, inhibited and quiet-hours deliveries from `pending` (they stay
    /// pending in the ledger and go out once nothing holds them); a resolve held by a
    /// silence or inhibition is suppressed, with its alert's held firing transition
    /// (quiet hours only delay: firing and resolve go out when they end). Returns the
    /// rest and the earliest end of a silence or quiet hours that holds something.
    async fn hold(
        &self,
        policy: &Policy,
        receiver: &Receiver,
        pending: Vec<PendingDelivery>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<PendingDelivery>, Option<DateTime<Utc>>), LedgerError> {
        if pending.iter().all(|d| d.message_id.is_some()) {
            return Ok((pending, None));
        }
        let silences = silences::active(self.ctx.ledger.pool(), policy, now).await?;
        let firing = if policy.inhibit_rules.is_empty() {
            Vec::new()
        } else {
            self.ctx.ledger.firing_alerts().await?
        };
        let quiet = receiver.quiet_hours.as_ref();
        if silences.is_empty() && firing.is_empty() && quiet.is_none() {
            return Ok((pending, None));
        }
        let mut ends: Option<DateTime<Utc>> = None;
        let mut held_resolves = Vec::new();
        let mut kept = Vec::with_capacity(pending.len());
        for d in pending {
            if d.message_id.is_some() {
                kept.push(d);
                continue;
            }
            let silenced_until = silences
                .iter()
                .filter(|s| s.silences(&d.alert))
                .map(|s| s.ends_at)
                .min();
            let inhibited = policy
                .inhibit_rules
                .iter()
                .any(|r| firing.iter().any(|source| r.inhibits(source, &d.alert)));
            if silenced_until.is_none() && !inhibited {
                let quiet_until = quiet.and_then(|q| {
                    q.holds(
                        d.alert["severity"].as_str().unwrap_or(""),
                        policy.time_zones.zone(&d.tenant_id, &d.store_id),
                        now,
                    )
                });
                match quiet_until {
                    Some(end) => ends = Some(ends.map_or(end, |e| e.min(end))),
                    None => kept.push(d),
                }
                continue;
            }
            if let Some(end) = silenced_until {
                ends = Some(ends.map_or(end, |e| e.min(end)));
            }
            if d.alert_state == "resolved" {
                held_resolves.push(d.transition_id);
            }
        }
        self.ctx
            .ledger
            .suppress(
                &self.receiver,
                &held_resolves,
                "resolved while silenced or inhibited",
            )
            .await?;
        if !held_resolves.is_empty() {
            self.finished.notify_one();
        }
        Ok((kept, ends))
    }

    async fn send(
        &self,
        receiver: &Receiver,
        planned: Planned,
        shutdown: &CancellationToken,
    ) -> Result<Sent, LedgerError> {
        let transitions: Vec<String> = planned
            .deliveries
            .iter()
            .map(|d| d.transition_id.clone())
            .collect();
        let message_id = match planned.message_id {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                self.ctx
                    .ledger
                    .assign(&self.receiver, &transitions, id)
                    .await?;
                id
            }
        };
        let message = Outgoing {
            message_id,
            body: body(&self.receiver, message_id, &planned),
        };
        let mut attempts = 0i32;
        let mut last_error = String::new();
        let mut last_channel = "webhook";
        for (i, channel) in receiver.channels.iter().enumerate() {
            let kind = channel_name(channel);
            last_channel = kind;
            match try_channel(
                &self.ctx,
                channel,
                &receiver.retry,
                &message,
                shutdown,
                &mut attempts,
            )
            .await
            {
                ChannelResult::Delivered => {
                    self.ctx
                        .ledger
                        .finish(
                            &self.receiver,
                            message_id,
                            Final::Delivered,
                            kind,
                            attempts,
                            None,
                        )
                        .await?;
                    self.finished.notify_one();
                    let now = Utc::now();
                    for d in &planned.deliveries {
                        let secs =
                            (now - d.received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                        self.ctx
                            .metrics
                            .latency
                            .with_label_values(&[kind])
                            .observe(secs.max(0.0));
                    }
                    self.ctx
                        .metrics
                        .outcomes
                        .with_label_values(&[kind, "delivered"])
                        .inc_by(planned.deliveries.len() as u64);
                    info!(receiver = %self.receiver, %message_id, channel = kind, alerts = planned.deliveries.len(), attempts, "notification delivered");
                    return Ok(Sent::Done);
                }
                ChannelResult::Interrupted => return Ok(Sent::Interrupted),
                ChannelResult::Failed(e) => {
                    if i + 1 < receiver.channels.len() {
                        warn!(receiver = %self.receiver, %message_id, channel = kind, error = %e, "channel failed for good; falling back to the next channel");
                    }
                    last_error = format!("{kind}: {e}");
                }
            }
        }
        error!(receiver = %self.receiver, %message_id, error = %last_error, attempts, "notification failed on every channel; dead-lettered");
        self.ctx
            .ledger
            .dead_letter(
                &self.receiver,
                message_id,
                &transitions,
                &message.body,
                attempts,
                &last_error,
            )
            .await?;
        self.ctx
            .ledger
            .finish(
                &self.receiver,
                message_id,
                Final::Failed,
                last_channel,
                attempts,
                Some(&last_error),
            )
            .await?;
        self.finished.notify_one();
        self.ctx
            .metrics
            .outcomes
            .with_label_values(&[last_channel, "failed"])
            .inc_by(planned.deliveries.len() as u64);
        Ok(Sent::Done)
    }
}

/// Publishes one receiver's finished deliveries to notifications.v1, apart from the
/// worker, so that waiting for the broker's acknowledgement (and the producer's
/// linger) never delays the next message.
struct OutcomePublisher {
    ctx: DeliveryContext,
    receiver: String,
}

impl OutcomePublisher {
    /// Publishes whenever the worker finished something (`finished`), new ledger rows
    /// came in (a resolve suppressed on arrival), and at least every [`IDLE_POLL`]
    /// (retrying what failed), until `shutdown`.
    async fn run(self, finished: Arc<Notify>, shutdown: CancellationToken) {
        let mut wake = self.ctx.wake.clone();
        loop {
            wake.borrow_and_update();
            let pause = match self.publish().await {
                Ok(true) => continue,
                Ok(false) => IDLE_POLL,
                Err(e) => {
                    warn!(receiver = %self.receiver, error = %e, "delivery ledger unavailable for outcomes; retrying");
                    LEDGER_RETRY
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = finished.notified() => {}
                _ = wake.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes the outcome records the ledger has not yet seen published; true when
    /// there may be more.
    async fn publish(&self) -> Result<bool, LedgerError> {
        const LIMIT: i64 = 1_000;
        let finished = self.ctx.ledger.unpublished(&self.receiver, LIMIT).await?;
        if finished.is_empty() {
            return Ok(false);
        }
        let sends = finished.iter().map(|f| {
            let outcome = outcome_record(&self.receiver, f);
            let producer = self.ctx.producer.clone();
            async move { producer.send(&outcome).await }
        });
        let results = futures::future::join_all(sends).await;
        let mut published = Vec::new();
        for (f, r) in finished.iter().zip(results) {
            match r {
                Ok(_) => published.push(f.transition_id.clone()),
                Err(e) => {
                    warn!(receiver = %self.receiver, error = %e, "outcome not published yet; will retry")
                }
            }
        }
        self.ctx
            .ledger
            .mark_published(&self.receiver, &published)
            .await?;
        // More only when a full page went out; failures wait for the next wake-up.
        Ok(finished.len() as i64 == LIMIT && published.len() == finished.len())
    }
}

enum ChannelResult {
    Delivered,
    Interrupted,
    Failed(String),
}

/// The notifications.v1 record of a finished delivery. Everything in it comes from
/// the ledger row (its times are the ledger's `finished_at`), so publishing it again
/// after a crash yields the same record, byte for byte, under the same event id.
pub fn outcome_record(receiver: &str, f: &FinishedDelivery) -> NotificationOutcome {
    let status = match f.status.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        _ => DeliveryStatus::Suppressed,
    };
    let at = to_micros(f.finished_at);
    NotificationOutcome {
        envelope: Envelope {
            event_id: Uuid::new_v5(
                &OUTCOME_NAMESPACE,
                format!("{}|{}|{}", f.transition_id, receiver, f.status).as_bytes(),
            )
            .to_string(),
            tenant_id: f.tenant_id.clone(),
            store_id: f.store_id.clone(),
            occurred_at: at,
            received_at: at,
            source: "notifier".into(),
        },
        alert_id: f.alert_id.clone(),
        alert_state: if f.alert_state == "resolved" {
            NotifiedState::Resolved
        } else {
            NotifiedState::Firing
        },
        receiver: receiver.to_string(),
        channel: channel_kind(f.channel.as_deref()),
        status,
        attempts: f.attempts,
        error: f.error.clone(),
    }
}

/// Tries one channel up to `max_attempts` times.
async fn try_channel(
    ctx: &DeliveryContext,
    channel: &ChannelSpec,
    retry: &RetryPolicy,
    message: &Outgoing,
    shutdown: &CancellationToken,
    attempts: &mut i32,
) -> ChannelResult {
    let kind = channel_name(channel);
    for attempt in 1..=retry.max_attempts {
        *attempts += 1;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return ChannelResult::Interrupted,
            r = send_once(&ctx.http, channel, message) => r,
        };
        match result {
            Ok(()) => {
                ctx.metrics.attempts.with_label_values(&[kind, "ok"]).inc();
                return ChannelResult::Delivered;
            }
            Err(SendError::Permanent(e)) => {
                ctx.metrics
                    .attempts
                    .with_label_values(&[kind, "permanent"])
                    .inc();
                return ChannelResult::Failed(e);
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                ctx.metrics
                    .attempts
                    .with_label_values(&[kind, "retryable"])
                    .inc();
                if attempt == retry.max_attempts {
                    return ChannelResult::Failed(format!("{reason} (after {attempt} tries)"));
                }
                let wait = backoff(retry, attempt, retry_after, &mut rand::rng());
                debug!(message_id = %message.message_id, attempt, ?wait, error = %reason, "retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return ChannelResult::Interrupted,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    ChannelResult::Failed("no attempt made".into())
}

/// Delay before try `attempt + 1`: `initial × 2^(attempt-1)`, capped at `max`, with
/// jitter in its upper half; a `Retry-After` wins when longer (still capped).
pub fn backoff(
    retry: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = retry
        .backoff_initial
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(retry.backoff_max);
    let half = exp / 2;
    let jittered = half + half.mul_f64(rng.random::<f64>());
    match retry_after {
        Some(ra) => ra.max(jittered).min(retry.backoff_max),
        None => jittered,
    }
}

fn channel_name(c: &ChannelSpec) -> &'static str {
    match c.kind() {
        Channel::Webhook => "webhook",
        Channel::WhatsApp => "whatsapp",
        Channel::Email => "email",
        Channel::Slack => "slack",
    }
}

fn channel_kind(name: Option<&str>) -> Channel {
    match name {
        Some("whatsapp") => Channel::WhatsApp,
        Some("email") => Channel::Email,
        Some("slack") => Channel::Slack,
        _ => Channel::Webhook,
    }
}

/// The webhook body of a message.
pub fn body(receiver: &str, message_id: Uuid, planned: &Planned) -> serde_json::Value {
    let firing = planned.deliveries.iter().any(|d| d.alert_state == "firing");
    let mut group_labels = BTreeMap::new();
    if let Some((_, rest)) = planned.group_key.split_once('|') {
        for pair in rest.split('|') {
            if let Some((k, v)) = pair.split_once('=') {
                group_labels.insert(k.to_string(), v.to_string());
            }
        }
    }
    serde_json::json!({
        "version": "1",
        "message_id": message_id,
        "receiver": receiver,
        "status": if firing { "firing" } else { "resolved" },
        "group_key": planned.group_key,
        "group_labels": group_labels,
        "alerts": planned.deliveries.iter().map(|d| d.alert.clone()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn an_outcome_republished_later_is_byte_identical() {
        let finished = FinishedDelivery {
            transition_id: "a1:firing".into(),
            alert_id: "a1".into(),
            alert_state: "firing".into(),
            tenant_id: "acme".into(),
            store_id: "s-1".into(),
            status: "delivered".into(),
            channel: Some("slack".into()),
            attempts: 2,
            error: None,
            finished_at: DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time"),
        };
        let codec = storepulse_runtime::AvroCodec::new();
        let first = outcome_record("ops", &finished);
        assert_eq!(first.envelope.occurred_at, 1_800_000_000_123_456);
        assert_eq!(first.envelope.received_at, 1_800_000_000_123_456);
        assert_eq!(first.channel, Channel::Slack);
        let bytes = codec.encode(&first).expect("encode");
        let again = codec
            .encode(&outcome_record("ops", &finished))
            .expect("encode");
        assert_eq!(bytes, again, "a republish is the same record");
    }

    #[test]
    fn backoff_doubles_with_jitter_caps_and_honours_retry_after() {
        let retry = RetryPolicy {
            max_attempts: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (6, 2000), (30, 2000)] {
            let d = backoff(&retry, attempt, None, &mut rng);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        let d = backoff(&retry, 1, Some(Duration::from_secs(1)), &mut rng);
        assert_eq!(d, Duration::from_secs(1));
        let d = backoff(&retry, 1, Some(Duration::from_secs(3600)), &mut rng);
        assert_eq!(
            d,
            Duration::from_secs(2),
            "Retry-After is capped at backoff_max"
        );
    }
}
