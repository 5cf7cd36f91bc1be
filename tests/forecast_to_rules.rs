//! The forecaster and the rules service together, on a real broker and Postgres: the
//! stock-out risk the forecaster publishes on `forecasts.v1` is what fires the rules'
//! days-of-cover stock rule — the record comes from the real forecaster, not from a
//! test that wrote one by hand.

mod support;

use std::time::Duration;

use chrono::Utc;
use storepulse_forecaster::{ForecasterConfig, ForecasterSettings};
use storepulse_runtime::records::{AlertState, DemandForecast, topic};
use support::rules::{D, H, alerts, producer, rule_file, sale, send_all, start_rules, stock};
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

/// Days of cover below the lead time fire; the lead time is longer than the cover.
const COVER_RULE: &str = r#"
[[rules]]
name = "cover"
kind = "stock"
match = { source = "forecast" }
lead_time_days = 3
"#;

/// Every forecast on `forecasts.v1`.
async fn forecasts(stack: &TestStack) -> Vec<DemandForecast> {
    let kafka = stack.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let codec = storepulse_runtime::AvroCodec::new();
        let mut out = Vec::new();
        storepulse_rules::topic_reader::read_to_end(
            &kafka,
            &[topic::FORECASTS],
            None,
            Duration::from_secs(60),
            |r| out.push(codec.decode::<DemandForecast>(&r.payload).expect("decodes")),
        )
        .expect("read forecasts");
        out
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecasters_stock_out_risk_fires_the_rules_stock_rule() {
    let stack = TestStack::start("fc-to-rules").await;
    let store = "cover-1";
    // 28 days of 10 milk a day, then 12 on hand: 1.2 days of cover, under 3 days.
    let today = Utc::now().timestamp_micros().div_euclid(D) * D;
    let mut recs: Vec<_> = (1..=28)
        .rev()
        .map(|d| sale(store, today - d * D + 12 * H, 10.0))
        .collect();
    recs.push(stock(store, "milk-1l", today - D + 20 * H, true, 12.0));
    send_all(&producer(&stack), &recs).await;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let forecaster = tokio::spawn(storepulse_forecaster::run_with_listener(
        ForecasterConfig {
            kafka: stack.kafka.clone(),
            postgres: stack.postgres.clone(),
            log: Default::default(),
            forecaster: ForecasterSettings {
                group_id: format!("{}fc-to-rules-forecaster", stack.kafka.topic_prefix),
                http_listen: "127.0.0.1:0".into(),
                scan_interval_ms: 200,
                min_republish_secs: 0,
                batch_max_wait_ms: 20,
                ..Default::default()
            },
        },
        listener,
        shutdown.clone(),
    ));
    let forecast = eventually(
        "a forecast of milk with its days of cover",
        Duration::from_secs(90),
        || async {
            forecasts(&stack)
                .await
                .into_iter()
                .find(|f| f.sku == "milk-1l" && f.days_of_cover.is_some())
        },
    )
    .await;
    let cover = forecast.days_of_cover.expect("days of cover");
    assert!(
        (0.8..2.0).contains(&cover),
        "12 on hand at ~10 a day: {cover} days"
    );

    let rules = rule_file(&stack, COVER_RULE);
    // The forecast is the store's last record: its time must advance by the wall
    // clock (idle timeout) for the record to leave the lateness buffer.
    let settings = storepulse_rules::RulesSettings {
        allowed_lateness_ms: 1_000,
        idle_timeout_ms: 1_000,
        ..support::rules::settings(&stack, &rules, "fc-to-rules-rules")
    };
    let (_url, rules_task) = start_rules(&stack, settings, &shutdown).await;
    let alert = eventually(
        "the cover alert on alerts.v1",
        Duration::from_secs(90),
        || async {
            alerts(&stack)
                .await
                .into_iter()
                .find(|a| a.rule_id == "cover" && a.state == AlertState::Firing)
        },
    )
    .await;
    assert_eq!(
        (alert.envelope.store_id.as_str(), alert.subject.as_str()),
        (store, "milk-1l")
    );
    assert_eq!(
        alert.value,
        Some(cover),
        "the alert carries the forecast's days of cover"
    );
    shutdown.cancel();
    for task in [forecaster, rules_task] {
        let ended = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stops on shutdown")
            .expect("join");
        assert!(ended.is_ok(), "{ended:?}");
    }
}
