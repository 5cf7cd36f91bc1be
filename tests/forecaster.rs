//! The forecaster end to end on a real broker and Postgres: sales and stock produced
//! to the topics come back as forecasts on `forecasts.v1` that meet the topic
//! contract; refunds and voids reduce demand; a retried event counts once; a restart
//! resumes from the stored state without counting anything twice.

mod support;

use std::time::Duration;

use chrono::Utc;
use storepulse_forecaster::{ForecasterConfig, ForecasterSettings};
use storepulse_rules::topic_reader::read_to_end;
use storepulse_runtime::AvroCodec;
use storepulse_runtime::contract::{RecordContract, check_envelope};
use storepulse_runtime::records::*;
use support::rules::{D, H, metric, producer};
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

fn envelope(store: &str, at: i64) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: "acme".into(),
        store_id: store.into(),
        occurred_at: at,
        received_at: at,
        source: "test".into(),
    }
}

fn sale(kind: SaleKind, store: &str, sku: &str, at: i64, units: f64) -> SaleTransaction {
    SaleTransaction {
        envelope: envelope(store, at),
        kind,
        transaction_id: uuid::Uuid::new_v4().to_string(),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: vec![LineItem {
            sku: sku.into(),
            quantity: units,
            unit_price_minor: 100,
        }],
        total_minor: (units * 100.0).round() as i64,
        original_transaction_id: (kind != SaleKind::Sale).then(|| "T-0".to_string()),
    }
}

fn snapshot(store: &str, sku: &str, at: i64, quantity: f64) -> InventoryChange {
    InventoryChange {
        envelope: envelope(store, at),
        kind: InventoryChangeKind::Snapshot,
        sku: sku.into(),
        quantity,
        reason: None,
    }
}

fn settings(stack: &TestStack, group: &str) -> ForecasterSettings {
    ForecasterSettings {
        group_id: format!("{}{group}", stack.kafka.topic_prefix),
        http_listen: "127.0.0.1:0".into(),
        scan_interval_ms: 200,
        refresh_after_lines: 5,
        min_republish_secs: 0,
        batch_max_wait_ms: 20,
        ..Default::default()
    }
}

async fn start(
    stack: &TestStack,
    settings: ForecasterSettings,
    shutdown: &CancellationToken,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = ForecasterConfig {
        kafka: stack.kafka.clone(),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        forecaster: settings,
    };
    let handle = tokio::spawn(storepulse_forecaster::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    (url, handle)
}

/// Every forecast on `forecasts.v1`, each checked against the topic contract.
async fn forecasts(stack: &TestStack) -> Vec<DemandForecast> {
    let kafka = stack.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let codec = AvroCodec::new();
        let mut out = Vec::new();
        read_to_end(
            &kafka,
            &[topic::FORECASTS],
            None,
            Duration::from_secs(60),
            |r| {
                let f = codec
                    .decode::<DemandForecast>(&r.payload)
                    .expect("forecast decodes");
                check_envelope(&f.envelope, r.key.as_deref())
                    .and_then(|_| f.check_body())
                    .unwrap_or_else(|e| panic!("{f:?} breaks the forecasts.v1 contract: {e}"));
                out.push(f);
            },
        )
        .expect("read forecasts");
        out
    })
    .await
    .expect("join")
}

fn latest<'a>(all: &'a [DemandForecast], sku: &str) -> Option<&'a DemandForecast> {
    all.iter()
        .filter(|f| f.sku == sku)
        .max_by_key(|f| f.envelope.occurred_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_become_forecasts_refunds_reduce_demand_and_a_restart_resumes() {
    let stack = TestStack::start("forecaster-e2e").await;
    let p = producer(&stack);
    let today = Utc::now().timestamp_micros().div_euclid(D) * D;
    let store = "s-1";
    // 35 complete days: milk sells a weekly pattern; bread sells 5 a day of which 2
    // are refunded and 1 voided (net 2); one milk sale is sent twice (a retry).
    let week = [10.0, 11.0, 12.0, 13.0, 16.0, 20.0, 8.0];
    let mut retried = None;
    for d in (1..=35).rev() {
        let at = today - d * D + 12 * H;
        let day = (at.div_euclid(D)) as usize;
        let s = sale(SaleKind::Sale, store, "milk", at, week[day % 7]);
        p.send(&s).await.expect("send");
        if d == 3 {
            retried = Some(s);
        }
        p.send(&sale(SaleKind::Sale, store, "bread", at, 5.0))
            .await
            .expect("send");
        p.send(&sale(SaleKind::Refund, store, "bread", at + H, 2.0))
            .await
            .expect("send");
        p.send(&sale(SaleKind::Void, store, "bread", at + 2 * H, 1.0))
            .await
            .expect("send");
    }
    let retried = retried.expect("retried sale");
    p.send(&retried).await.expect("send the retry");
    p.send(&snapshot(store, "milk", today - D, 30.0))
        .await
        .expect("send");

    let shutdown = CancellationToken::new();
    let group = "fc-e2e";
    let (url, handle) = start(&stack, settings(&stack, group), &shutdown).await;

    let all = eventually(
        "forecasts of milk and bread",
        Duration::from_secs(90),
        || async {
            let all = forecasts(&stack).await;
            // Records may be applied over several batches: wait for forecasts that saw them all.
            let whole = |sku: &str| {
                latest(&all, sku).is_some_and(|f| {
                    f.backtest.as_ref().is_some_and(|b| b.history_days == 35)
                        && (sku != "milk" || f.on_hand.is_some())
                })
            };
            (whole("milk") && whole("bread")).then_some(all)
        },
    )
    .await;
    let milk = latest(&all, "milk").expect("milk");
    assert_eq!(milk.days.len(), 14);
    assert_eq!(
        milk.days[0].date as i64,
        today.div_euclid(D),
        "the forecast starts today"
    );
    assert_eq!(milk.interval_level, 0.8);
    assert_eq!(milk.wide_interval_level, Some(0.95));
    let bt = milk.backtest.as_ref().expect("a backtest on 35 days");
    assert_eq!(bt.history_days, 35);
    assert!(bt.origins >= 1 && bt.mase.is_finite());
    // A pure weekly pattern: the chosen method repeats it.
    for d in &milk.days {
        let want = week[d.date as usize % 7];
        assert!(
            (d.mean - want).abs() < 0.5,
            "{} day {}: {} vs {want}",
            milk.method,
            d.date,
            d.mean
        );
    }
    // Stock: 30 on hand against ~13 a day: about two days of cover, a stock-out within
    // the 7-day lead time near certain.
    assert_eq!(milk.on_hand, Some(30.0));
    let cover = milk.days_of_cover.expect("cover");
    assert!((1.5..3.5).contains(&cover), "cover {cover}");
    assert!(milk.stock_out_probability.expect("risk") > 0.95);
    assert_eq!(milk.lead_time_days, Some(7));
    let bread = latest(&all, "bread").expect("bread");
    assert!(bread.on_hand.is_none() && bread.stock_out_probability.is_none());
    for d in &bread.days {
        assert!(
            (d.mean - 2.0).abs() < 0.2,
            "bread net of refunds and voids: {}",
            d.mean
        );
    }

    // In the forecaster's state: net units per day, the retry counted once.
    let units = |sku: &'static str| {
        let pool = stack.pool.clone();
        async move {
            let c = pool.get().await.expect("client");
            let r = c
                .query_one(
                    "SELECT coalesce(sum(units), 0)::float8, count(*) FROM forecaster.daily_demand WHERE sku = $1",
                    &[&sku],
                )
                .await
                .expect("query");
            (r.get::<_, f64>(0), r.get::<_, i64>(1))
        }
    };
    let milk_total: f64 = (1..=35)
        .map(|d| week[((today - d * D + 12 * H).div_euclid(D)) as usize % 7])
        .sum();
    assert_eq!(units("milk").await, (milk_total, 35));
    assert_eq!(units("bread").await, (70.0, 35));
    assert_eq!(
        metric(&url, "storepulse_forecaster_applied_total", "duplicates").await,
        Some(1.0)
    );
    assert!(
        metric(
            &url,
            "storepulse_forecaster_forecasts_published_total",
            "method"
        )
        .await
        .unwrap_or(0.0)
            >= 2.0
    );
    let health = reqwest::get(format!("{url}/healthz"))
        .await
        .expect("healthz");
    assert!(health.status().is_success());

    // Stop; more sales arrive meanwhile; start again with the same group.
    shutdown.cancel();
    handle.await.expect("join").expect("clean stop");
    let published_before = forecasts(&stack).await.len();
    for i in 0..6 {
        p.send(&sale(
            SaleKind::Sale,
            store,
            "milk",
            today - D + 20 * H + i,
            1.0,
        ))
        .await
        .expect("send");
    }
    let shutdown = CancellationToken::new();
    let (_url, handle) = start(&stack, settings(&stack, group), &shutdown).await;
    eventually(
        "the new sales counted once",
        Duration::from_secs(60),
        || async { (units("milk").await == (milk_total + 6.0, 35)).then_some(()) },
    )
    .await;
    assert_eq!(
        units("bread").await,
        (70.0, 35),
        "nothing applied twice after the restart"
    );
    eventually(
        "a new milk forecast after six new lines",
        Duration::from_secs(60),
        || async {
            let all = forecasts(&stack).await;
            (all.len() > published_before
                && all[published_before..].iter().any(|f| f.sku == "milk"))
            .then_some(())
        },
    )
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("clean stop");
}

/// `storepulse forecast backtest` on the bundled public series: a table where the
/// forecaster's choice beats seasonal naive, and a PNG chart.
#[test]
fn the_backtest_command_scores_the_bundled_public_series_and_draws_a_chart() {
    let dir = tempfile::tempdir().expect("tmp");
    let png = dir.path().join("chart.png");
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/services/forecaster/data/bike_sharing_daily.csv"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["forecast", "backtest", "--csv", csv])
        .args([
            "--date-column",
            "dteday",
            "--value-column",
            "cnt",
            "--origins",
            "8",
        ])
        .arg("--chart")
        .arg(&png)
        .output()
        .expect("run storepulse forecast backtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vs_naive = |method: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(method))
            .unwrap_or_else(|| panic!("no {method} row in\n{stdout}"));
        line.split_whitespace()
            .last()
            .expect("vs naive")
            .parse()
            .expect("number")
    };
    assert_eq!(vs_naive("seasonal-naive"), 1.0);
    assert!(vs_naive("auto") < 1.0, "{stdout}");
    assert!(vs_naive("holt-winters") < 1.0, "{stdout}");
    let bytes = std::fs::read(&png).expect("chart written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // A bad CSV is refused naming the column.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args([
            "forecast",
            "backtest",
            "--csv",
            csv,
            "--date-column",
            "dteday",
            "--value-column",
            "sales",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no column \"sales\""), "{stderr}");
}

/// Runs `storepulse forecast backtest` with `args`; returns its table (stdout) after
/// checking it succeeded and wrote a PNG chart.
fn backtest_table(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let png = dir.path().join("chart.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["forecast", "backtest"])
        .args(args)
        .arg("--chart")
        .arg(&png)
        .output()
        .expect("run storepulse forecast backtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("chart written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    stdout
}

/// A method's row of a backtest table: (cases, MASE, vs naive).
fn backtest_row(table: &str, method: &str) -> (usize, f64, f64) {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(method))
        .unwrap_or_else(|| panic!("no {method} row in\n{table}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> f64 { f[i].parse().expect("number") };
    (f[1].parse().expect("cases"), num(2), num(4))
}

/// The bundled real sales: 7 Walmart store-department series, weekly, backtested
/// with a yearly season (52 weeks) and origins a week apart. The forecaster's choice
/// has a lower MASE than the same week of last year.
#[test]
fn the_backtest_scores_weekly_walmart_sales_with_a_yearly_season() {
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/services/forecaster/data/walmart_sales_weekly.csv"
    );
    let table = backtest_table(&[
        "--csv",
        csv,
        "--series-column",
        "id",
        "--date-column",
        "Date",
        "--value-column",
        "Weekly_Sales",
        "--period-days",
        "7",
        "--season",
        "52",
        "--horizon",
        "8",
        "--origins",
        "20",
    ]);
    assert!(table.starts_with("7 series\n"), "{table}");
    let (cases, auto_mase, auto_vs) = backtest_row(&table, "auto");
    let (naive_cases, naive_mase, naive_vs) = backtest_row(&table, "seasonal-naive");
    assert_eq!((cases, naive_cases), (140, 140), "{table}");
    assert_eq!(naive_vs, 1.0);
    assert!(auto_mase < naive_mase && auto_vs < 1.0, "{table}");

    // A season of 0 periods is refused, naming the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["forecast", "backtest", "--csv", csv, "--season", "0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--season"), "{stderr}");
}

/// The simulator's own sales (the event stream `storepulse simulate` posts, added up
/// per store, SKU and day; deterministic for a seed): the forecaster's choice beats
/// seasonal naive on them.
#[test]
fn the_backtest_scores_the_simulators_own_sales() {
    let args = [
        "--simulated",
        "--days",
        "56",
        "--stores",
        "1",
        "--seed",
        "7",
        "--origins",
        "3",
    ];
    let table = backtest_table(&args);
    let (cases, auto_mase, auto_vs) = backtest_row(&table, "auto");
    let (_, naive_mase, _) = backtest_row(&table, "seasonal-naive");
    let series: usize = table
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("series count");
    assert!(series >= 35, "most of the 40 SKUs sell: {table}");
    assert_eq!(cases, 3 * series, "{table}");
    assert!(auto_mase < naive_mase && auto_vs < 1.0, "{table}");

    // The simulation's options need --simulated.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["forecast", "backtest", "--days", "30"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--simulated"), "{stderr}");
}
