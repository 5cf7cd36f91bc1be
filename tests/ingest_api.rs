//! The ingest HTTP contract against a real broker and Postgres: every limit answers
//! with the documented status and a message naming the problem.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use storepulse_ingest::{IngestConfig, IngestSettings};
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

async fn start(
    stack: &TestStack,
    settings: IngestSettings,
    kafka: Option<storepulse_runtime::KafkaConfig>,
    shutdown: CancellationToken,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = IngestConfig {
        kafka: kafka.unwrap_or_else(|| stack.kafka.clone()),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        ingest: settings,
    };
    tokio::spawn(storepulse_ingest::run_with_listener(
        config, listener, shutdown,
    ));
    let client = reqwest::Client::new();
    eventually("ingest listening", Duration::from_secs(30), || {
        let c = client.clone();
        let u = format!("{url}/healthz");
        async move { c.get(u).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    url
}

fn reading(store: &str) -> Value {
    json!({"type":"sensor_reading","event_id":uuid::Uuid::new_v4().to_string(),"store_id":store,
           "occurred_at":chrono::Utc::now().to_rfc3339(),"device_id":"freezer-1","kind":"temperature","value":-18.2})
}

async fn post(
    url: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_errors_have_clear_answers() {
    let stack = TestStack::start("ingestapi").await;
    let shutdown = CancellationToken::new();
    let settings = IngestSettings {
        max_body_bytes: 4096,
        max_batch_events: 5,
        rate_limit_events_per_sec: 0.001,
        rate_limit_burst: 8.0,
        key_cache_ttl_ms: 0,
        ..Default::default()
    };
    let url = start(&stack, settings, None, shutdown.clone()).await;
    let key = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-1", "t")
        .await
        .expect("key");
    let other = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-2", "t")
        .await
        .expect("key");
    let k = Some(key.token.as_str());

    let ok = serde_json::to_vec(&json!([reading("s-1"), reading("s-1")])).expect("json");
    let (s, b, _) = post(&url, k, ok.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["accepted"], 2);
    // A retried batch is harmless: same answer, ids dedupe downstream.
    let (s, b, _) = post(&url, k, ok).await;
    assert_eq!(s, 200, "{b}");

    let (s, b, _) = post(&url, None, "[]").await;
    assert_eq!(s, 401, "{b}");
    let (s, b, _) = post(&url, Some("sp_nope_nope"), "[]").await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")));
    let (s, b, _) = post(
        &url,
        Some(&other.token),
        serde_json::to_vec(&json!([reading("s-1")])).expect("json"),
    )
    .await;
    assert_eq!(s, 403, "a key cannot write another store's events: {b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("store_id")),
        "{b}"
    );
    let (s, b, _) = post(&url, k, "[{\"type\":").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("malformed_json")));
    let (s, b, _) = post(&url, k, "{}").await;
    assert_eq!(s, 400, "{b}");
    let (s, b, _) = post(&url, k, vec![b' '; 5000]).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")));
    let six: Vec<Value> = (0..6).map(|_| reading("s-1")).collect();
    let (s, b, _) = post(&url, k, serde_json::to_vec(&six).expect("json")).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("batch_too_large")));

    // Mixed batch: 207 with the field named; an all-bad batch: 422.
    let mut bad = reading("s-1");
    bad["value"] = json!(500.0);
    let (s, b, _) = post(
        &url,
        k,
        serde_json::to_vec(&json!([reading("s-1"), bad.clone()])).expect("json"),
    )
    .await;
    assert_eq!(s, 207, "{b}");
    assert_eq!(b["results"][1]["field"], "value");
    assert_eq!(b["results"][1]["status"], "rejected");

    // The bucket (burst 8) is spent by now: 2 + 2 + 2 events, then these.
    let (s, b, retry) = post(
        &url,
        k,
        serde_json::to_vec(&json!([bad.clone(), bad.clone(), bad])).expect("json"),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (429, Some("rate_limited")), "{b}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n >= 1)));

    // Revocation takes effect (cache TTL 0 here).
    storepulse_ingest::api_keys::revoke(&stack.pool, &key.key_id)
        .await
        .expect("revoke");
    let (s, _, _) = post(&url, k, "[]").await;
    assert_eq!(s, 401);

    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let accepted = metrics
        .lines()
        .find(|l| {
            l.starts_with("storepulse_ingest_events_total{")
                && l.contains("outcome=\"accepted\"")
                && l.contains("type=\"sensor_reading\"")
        })
        .unwrap_or_else(|| panic!("no accepted counter in {metrics}"));
    assert!(accepted.ends_with(" 5"), "5 readings accepted: {accepted}");
    assert!(
        metrics.contains("storepulse_produced_records_total"),
        "{metrics}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_503_and_not_ready() {
    let stack = TestStack::start("brokerdown").await;
    let shutdown = CancellationToken::new();
    let dead_port = storepulse::local_stack::free_port().expect("port");
    let kafka = storepulse_runtime::KafkaConfig {
        brokers: format!("127.0.0.1:{dead_port}"),
        produce_timeout_ms: 1_500,
        ..stack.kafka.clone()
    };
    let url = start(
        &stack,
        IngestSettings::default(),
        Some(kafka),
        shutdown.clone(),
    )
    .await;
    let key = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-1", "t")
        .await
        .expect("key");
    let (s, b, retry) = post(
        &url,
        Some(&key.token),
        serde_json::to_vec(&json!([reading("s-1")])).expect("json"),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (503, Some("unavailable")), "{b}");
    assert_eq!(retry.as_deref(), Some("5"));
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.expect("body").contains("kafka:"));
    shutdown.cancel();
}
