//! Publishing forecasts: every `scan_interval_ms` the publisher claims the series due
//! for a forecast (never forecast; not forecast for `refresh_interval_secs` — the
//! schedule; or `refresh_after_lines` new sale lines or a stock change since, but
//! not more often than `min_republish_secs`), fits them off the async runtime, and
//! publishes one `DemandForecast` per series to `forecasts.v1`.
//!
//! Guarantees:
//! - a series is marked published only after the broker acknowledged its forecast;
//!   one whose forecast was not acknowledged stays due and is claimed again when
//!   its claim (`claim_secs`) runs out. A crash between the acknowledgement and the
//!   mark publishes that series once more (a newer forecast of the same series, which
//!   every reader takes as the standing one);
//! - replicas share the work: claims are row locks taken with SKIP LOCKED plus a
//!   claim deadline, so two replicas never forecast one series at once.
//!
//! The history is the series' complete days in the store's time zone (from its
//! first sale, at most `history_days` back, days without sales counted as 0); the
//! forecast covers today and the following days (`horizon_days` in all). A product
//! first sold today has no complete day: it is forecast from today's sales so far
//! (the mean method), which understates it until the day is over.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{Duration as Days, NaiveDate, Utc};
use deadpool_postgres::Pool;
use futures::future::join_all;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use storepulse_runtime::EventProducer;
use storepulse_runtime::records::{DemandForecast, Envelope, ForecastBacktest, ForecastDay};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::methods::selection::{Chosen, Selection};
use crate::risk::stock_risk;
use crate::state::{self, Due, DuePolicy, SeriesKey, StateError};
use crate::zones::StoreZones;

/// Coverage of `lower..upper`.
pub const INTERVAL_LEVEL: f64 = 0.8;
/// Coverage of `wide_lower..wide_upper`.
pub const WIDE_INTERVAL_LEVEL: f64 = 0.95;
/// `envelope.source` of every forecast.
pub const SOURCE: &str = "forecaster";

/// Metrics of the forecaster.
#[derive(Debug, Clone)]
pub struct ForecasterMetrics {
    /// Input applied, by kind: sale_lines, stock_changes, replayed, duplicates.
    pub applied: IntCounterVec,
    /// Forecasts acknowledged by the broker, by method.
    pub published: IntCounterVec,
    pub publish_failures: IntCounter,
    /// Seconds to fit and forecast one claimed batch of series, per series.
    pub fit_seconds: Histogram,
}

impl ForecasterMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            applied: IntCounterVec::new(
                Opts::new(
                    "forecaster_applied_total",
                    "Input applied to the daily demand and stock, by kind (sale_lines, stock_changes, replayed, duplicates)",
                ),
                &["kind"],
            )?,
            published: IntCounterVec::new(
                Opts::new(
                    "forecaster_forecasts_published_total",
                    "Forecasts acknowledged on forecasts.v1, by method",
                ),
                &["method"],
            )?,
            publish_failures: IntCounter::new(
                "forecaster_publish_failures_total",
                "Forecasts the broker did not acknowledge (the series stays due)",
            )?,
            fit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "forecaster_fit_seconds",
                    "Time to choose a method for, fit and forecast one series",
                )
                .buckets(vec![1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0]),
            )?,
        };
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.publish_failures.clone()))?;
        registry.register(Box::new(m.fit_seconds.clone()))?;
        Ok(m)
    }
}

/// What the publisher needs besides the pool and the producer.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub selection: Selection,
    pub history_days: i64,
    pub lead_time_days: usize,
    pub lead_times: HashMap<String, usize>,
    pub zones: StoreZones,
    pub policy: DuePolicy,
    pub scan_interval: Duration,
    pub dedup_days: i32,
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

/// The daily history of a series: `first_day` (or `today − history_days`) to
/// yesterday, zero-filled; today's partial day alone when no day is complete.
pub fn daily_history(
    days: &[(NaiveDate, f64)],
    first_day: NaiveDate,
    today: NaiveDate,
    history_days: i64,
) -> Vec<f64> {
    let start = first_day.max(today - Days::days(history_days));
    let by_day: HashMap<NaiveDate, f64> = days.iter().copied().collect();
    if start >= today {
        return by_day.get(&today).map(|u| vec![*u]).unwrap_or_default();
    }
    let n = (today - start).num_days() as usize;
    (0..n)
        .map(|i| {
            by_day
                .get(&(start + Days::days(i as i64)))
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// The record published for one series.
#[allow(clippy::too_many_arguments)]
pub fn forecast_record(
    key: &SeriesKey,
    chosen: &Chosen,
    history_days: usize,
    today: NaiveDate,
    on_hand: Option<f64>,
    lead_time_days: usize,
    issued_micros: i64,
) -> DemandForecast {
    let (tenant, store, sku) = key;
    let f = &chosen.forecast;
    let days = (0..f.len())
        .map(|h| ForecastDay {
            date: days_since_epoch(today) + h as i32,
            mean: f.mean[h],
            lower: f.lower80[h],
            upper: f.upper80[h],
            wide_lower: Some(f.lower95[h]),
            wide_upper: Some(f.upper95[h]),
        })
        .collect();
    let risk = on_hand.map(|q| stock_risk(q, f, lead_time_days));
    let event_id = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("storepulse:forecast/{tenant}/{store}/{sku}/{issued_micros}").as_bytes(),
    );
    DemandForecast {
        envelope: Envelope {
            event_id: event_id.to_string(),
            tenant_id: tenant.clone(),
            store_id: store.clone(),
            occurred_at: issued_micros,
            received_at: issued_micros,
            source: SOURCE.into(),
        },
        sku: sku.clone(),
        method: chosen.method.name().into(),
        interval_level: INTERVAL_LEVEL,
        days,
        on_hand,
        days_of_cover: risk.and_then(|r| r.days_of_cover),
        stock_out_probability: risk.map(|r| r.stock_out_probability),
        wide_interval_level: Some(WIDE_INTERVAL_LEVEL),
        lead_time_days: risk.map(|r| r.lead_time_days as i32),
        backtest: chosen.score.map(|s| ForecastBacktest {
            mase: s.mase,
            smape: s.smape,
            baseline_mase: chosen.baseline.map(|b| b.mase),
            origins: s.origins as i32,
            history_days: history_days as i32,
        }),
    }
}

/// Forecasts claimed series until `shutdown`.
pub async fn run(
    pool: Pool,
    producer: EventProducer,
    settings: PublishSettings,
    metrics: ForecasterMetrics,
    shutdown: CancellationToken,
) -> Result<(), StateError> {
    let mut tick = tokio::time::interval(settings.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        loop {
            match publish_due(&pool, &producer, &settings, &metrics).await {
                Ok(n) if n as i64 >= settings.policy.max_series && !shutdown.is_cancelled() => {
                    continue;
                }
                Ok(_) => break,
                Err(e) => {
                    // The database went away: the claims run out and are taken again.
                    warn!(error = %e, "publishing forecasts failed; trying again at the next scan");
                    break;
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = std::time::Instant::now();
            match state::prune_event_keys(&pool, settings.dedup_days).await {
                Ok(n) => info!(pruned = n, "event-key ledger pruned"),
                Err(e) => warn!(error = %e, "pruning the event-key ledger failed"),
            }
        }
    }
}

/// Claims, forecasts and publishes one round of due series; returns how many were claimed.
pub async fn publish_due(
    pool: &Pool,
    producer: &EventProducer,
    settings: &PublishSettings,
    metrics: &ForecasterMetrics,
) -> Result<usize, StateError> {
    let due = state::claim_due(pool, settings.policy).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&SeriesKey> = due.iter().map(|d| &d.key).collect();
    let utc_today = Utc::now().date_naive();
    // Stores east of UTC may be a day ahead: load from a day earlier than any needs.
    let from = utc_today - Days::days(settings.history_days + 1);
    let mut histories = state::load_history(pool, &keys, from).await?;
    let stock = state::load_stock(pool, &keys).await?;
    let issued = Utc::now().timestamp_micros();
    type Job = (Due, Vec<(NaiveDate, f64)>, Option<f64>);
    let jobs: Vec<Job> = due
        .into_iter()
        .map(|d| {
            let h = histories.remove(&d.key).unwrap_or_default();
            let s = stock.get(&d.key).copied();
            (d, h, s)
        })
        .collect();
    let fit_settings = settings.clone();
    let fit_metrics = metrics.clone();
    let built = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|(d, h, on_hand)| {
                let (tenant, store, _) = &d.key;
                let today = fit_settings.zones.day(tenant, store, issued);
                let history = daily_history(&h, d.first_day, today, fit_settings.history_days);
                let started = std::time::Instant::now();
                let record = if history.is_empty() {
                    None
                } else {
                    fit_settings
                        .selection
                        .forecast(&history)
                        .ok()
                        .map(|chosen| {
                            let lead = fit_settings
                                .lead_times
                                .get(&format!("{tenant}/{store}"))
                                .copied()
                                .unwrap_or(fit_settings.lead_time_days);
                            forecast_record(
                                &d.key,
                                &chosen,
                                history.len(),
                                today,
                                on_hand,
                                lead,
                                issued,
                            )
                        })
                };
                fit_metrics
                    .fit_seconds
                    .observe(started.elapsed().as_secs_f64());
                (d, record)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let claimed = built.len();
    let sends = built.iter().map(|(_, r)| async move {
        match r {
            Some(r) => Some(producer.send(r).await),
            None => None,
        }
    });
    let results = join_all(sends).await;
    let mut done: Vec<(&Due, &str)> = Vec::with_capacity(claimed);
    for ((d, r), sent) in built.iter().zip(results) {
        match (r, sent) {
            (Some(r), Some(Ok(_))) => {
                metrics.published.with_label_values(&[&r.method]).inc();
                done.push((d, &r.method));
            }
            (Some(_), Some(Err(e))) => {
                metrics.publish_failures.inc();
                warn!(tenant = %d.key.0, store = %d.key.1, sku = %d.key.2, error = %e, "forecast not acknowledged; the series stays due");
            }
            // Nothing to forecast from (a first sale dated in the future): mark it
            // seen so it waits for the schedule instead of being claimed every scan.
            _ => done.push((d, "none")),
        }
    }
    state::finish(pool, &done).await?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use storepulse_runtime::contract::RecordContract;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn history_is_zero_filled_up_to_yesterday() {
        let days = [
            (day("2026-03-02"), 4.0),
            (day("2026-03-04"), 1.0),
            (day("2026-03-06"), 9.0),
        ];
        let h = daily_history(&days, day("2026-03-02"), day("2026-03-06"), 400);
        assert_eq!(h, vec![4.0, 0.0, 1.0, 0.0]);
        // At most history_days back.
        let h = daily_history(&days, day("2026-03-02"), day("2026-03-06"), 2);
        assert_eq!(h, vec![1.0, 0.0]);
        // First sold today: today's sales so far.
        assert_eq!(
            daily_history(&days, day("2026-03-06"), day("2026-03-06"), 400),
            vec![9.0]
        );
        assert!(daily_history(&[], day("2026-03-09"), day("2026-03-06"), 400).is_empty());
    }

    #[test]
    fn the_record_meets_the_contract() {
        let history: Vec<f64> = (0..60)
            .map(|t| [3.0, 4.0, 5.0, 6.0, 9.0, 12.0, 2.0][t % 7])
            .collect();
        let chosen = Selection::default().forecast(&history).expect("forecast");
        let key = ("acme".to_string(), "s-1".to_string(), "milk".to_string());
        let r = forecast_record(
            &key,
            &chosen,
            60,
            day("2026-03-06"),
            Some(20.0),
            7,
            1_772_755_200_000_000,
        );
        assert!(r.check_body().is_ok(), "{:?}", r.check_body());
        assert_eq!(r.days.len(), 14);
        assert_eq!(r.days[0].date, days_since_epoch(day("2026-03-06")));
        assert_eq!(r.lead_time_days, Some(7));
        assert!(r.days_of_cover.expect("cover") < 7.0);
        assert!(r.backtest.is_some());
        let again = forecast_record(
            &key,
            &chosen,
            60,
            day("2026-03-06"),
            Some(20.0),
            7,
            1_772_755_200_000_000,
        );
        assert_eq!(r.envelope.event_id, again.envelope.event_id);
    }
}
