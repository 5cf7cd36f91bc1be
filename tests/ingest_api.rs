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

/// Sends `body` with the given raw headers; returns status and JSON body.
async fn post_raw(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

fn result_of(body: &Value, index: usize) -> (String, String, String) {
    let r = &body["results"][index];
    (
        r["status"].as_str().unwrap_or_default().to_string(),
        r["field"].as_str().unwrap_or_default().to_string(),
        r["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// The bounds a foreign connector hit: unstorable strings, nil and repeated ids,
/// ancient events, absurd quantities, non-JSON bodies, scheme case, broken bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bound_is_enforced_with_a_named_field() {
    let stack = TestStack::start("bounds").await;
    let shutdown = CancellationToken::new();
    let url = start(&stack, IngestSettings::default(), None, shutdown.clone()).await;
    let key = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-1", "t")
        .await
        .expect("key");
    let auth = format!("Bearer {}", key.token);
    let json_ct = ("content-type", "application/json");

    let now = chrono::Utc::now();
    let snapshot = |sku: &str, qty: Value| {
        json!({"type":"stock_snapshot","event_id":uuid::Uuid::new_v4().to_string(),"store_id":"s-1",
               "occurred_at":now.to_rfc3339(),"sku":sku,"quantity":qty})
    };
    let mut nil = reading("s-1");
    nil["event_id"] = json!(uuid::Uuid::nil().to_string());
    let mut ancient = reading("s-1");
    ancient["occurred_at"] = json!("1970-01-01T00:00:00Z");
    let mut with_nul_key = reading("s-1");
    with_nul_key["col\u{0}our"] = json!("red");
    let twin = reading("s-1");
    let mut twin_again = reading("s-1");
    twin_again["event_id"] = twin["event_id"].clone();
    twin_again["value"] = json!(-10.0);
    let batch = json!([
        snapshot("milk\u{0}x", json!(3)), // 0: NUL in a string
        snapshot("milk", json!(1e300)),   // 1: absurd quantity
        snapshot("milk", json!(0.0001)),  // 2: more than 3 decimals
        nil,                              // 3
        ancient,                          // 4
        with_nul_key,                     // 5
        twin,                             // 6: accepted
        twin_again,                       // 7: same id again in the batch
        snapshot("milk", json!(2.5)),     // 8: accepted
    ]);
    let (s, body) = post_raw(
        &url,
        &[("authorization", &auth), json_ct],
        serde_json::to_vec(&batch).expect("json"),
    )
    .await;
    assert_eq!(s, 207, "{body}");
    let expect = [
        (0, "sku", "NUL"),
        (1, "quantity", "magnitude"),
        (2, "quantity", "3 decimal"),
        (3, "event_id", "nil UUID"),
        (4, "occurred_at", "older than"),
        (5, "col\\u0000our", "unknown field"),
        (7, "event_id", "repeats the id of event 6"),
    ];
    for (i, field, reason) in expect {
        let (status, f, r) = result_of(&body, i);
        assert_eq!(
            (status.as_str(), f.as_str()),
            ("rejected", field),
            "event {i}: {body}"
        );
        assert!(r.contains(reason), "event {i}: {r}");
    }
    assert_eq!(result_of(&body, 6).0, "accepted");
    assert_eq!(result_of(&body, 8).0, "accepted");
    assert_eq!(body["accepted"], 2);

    // Money is exact: 3 × 0.333 kg at 199 and 1 × 0.001 at 1 → 198.801 + 0.001 = 199 (rounded).
    let sale = json!([{"type":"sale","event_id":uuid::Uuid::new_v4().to_string(),"store_id":"s-1",
        "occurred_at":now.to_rfc3339(),"transaction_id":"t","terminal_id":"pos-1","currency":"EUR",
        "lines":[{"sku":"a","quantity":0.333,"unit_price_minor":199},
                 {"sku":"a","quantity":0.333,"unit_price_minor":199},
                 {"sku":"a","quantity":0.333,"unit_price_minor":199},
                 {"sku":"b","quantity":0.001,"unit_price_minor":1}]}]);
    let (s, body) = post_raw(
        &url,
        &[("authorization", &auth), json_ct],
        serde_json::to_vec(&sale).expect("json"),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // The scheme is case-insensitive; a non-JSON content type is 415.
    let one = serde_json::to_vec(&json!([reading("s-1")])).expect("json");
    let lower = format!("bearer {}", key.token);
    let (s, body) = post_raw(&url, &[("authorization", &lower), json_ct], one.clone()).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = post_raw(
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json; charset=utf-8"),
        ],
        one.clone(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
        None,
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let (s, body) = post_raw(&url, &headers, one.clone()).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (415, Some("unsupported_media_type")),
            "{ct:?}: {body}"
        );
    }

    // A body that breaks off mid-way is a bad request, not "too large".
    let addr = url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(addr).expect("connect");
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n[{{\"type\":"
        );
        sock.write_all(head.as_bytes()).expect("write");
        sock.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut out = String::new();
        let _ = sock.read_to_string(&mut out);
        out
    })
    .await
    .expect("join");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("unreadable_body"),
        "{answer}"
    );
    shutdown.cancel();
}

/// Writes `request` on a new connection (and keeps it open), then returns what the
/// server sent before it closed the connection, or `None` if it stayed silent and open
/// for `within`.
async fn answer_to_stalled(addr: &str, request: String, within: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(within, sock.read_to_end(&mut out))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

/// Clients that stall hold neither a connection nor shutdown; odd requests (compressed
/// bodies, unknown paths and methods, numbers beyond f64, lone surrogates) get a JSON
/// answer that names what is wrong, and a bad value rejects its event, not the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_and_odd_requests_get_clear_answers() {
    let stack = TestStack::start("ingeststall").await;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let url = format!("http://{addr}");
    let config = IngestConfig {
        kafka: stack.kafka.clone(),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        ingest: IngestSettings {
            read_timeout_ms: 500,
            shutdown_grace_ms: 20_000,
            ..Default::default()
        },
    };
    let server = tokio::spawn(storepulse_ingest::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    eventually("ingest listening", Duration::from_secs(30), || {
        let c = client.clone();
        let u = format!("{url}/healthz");
        async move { c.get(u).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let key = storepulse_ingest::api_keys::create(&stack.pool, "acme", "s-1", "t")
        .await
        .expect("key");
    let auth = format!("Bearer {}", key.token);

    // A body that stops arriving: 408 once read_timeout_ms has passed.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n[{{\"type\":"
    );
    let answer = answer_to_stalled(&addr, head.clone(), Duration::from_secs(20))
        .await
        .expect("a stalled body is answered, not held open");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
        "{answer}"
    );
    // Headers that stop arriving: the connection is closed.
    let answer = answer_to_stalled(
        &addr,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\n".into(),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        answer.is_some(),
        "a connection stalled in its headers was held open"
    );

    let one = serde_json::to_vec(&json!([reading("s-1")])).expect("json");
    let (s, b) = post_raw(
        &url,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        one,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (415, Some("unsupported_content_encoding")),
        "{b}"
    );
    let resp = client
        .get(format!("{url}/v1/events"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 405);
    let b: Value = resp.json().await.expect("405 has a JSON body");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST /v1/events")),
        "{b}"
    );
    let resp = client
        .get(format!("{url}/v2/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    let b: Value = resp.json().await.expect("404 has a JSON body");
    assert_eq!(b["error"], "not_found", "{b}");

    // JSON allows these; we cannot store them. Each rejects its own event only.
    let good = reading("s-1");
    let mut huge = serde_json::to_string(&reading("s-1")).expect("json");
    huge = huge.replace("-18.2", "1e400");
    let mut surrogate = serde_json::to_string(&reading("s-1")).expect("json");
    surrogate = surrogate.replace("\"freezer-1\"", "\"\\ud800\"");
    let body = format!("[{good},{huge},{surrogate}]");
    let (s, b) = post_raw(
        &url,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.into_bytes(),
    )
    .await;
    assert_eq!(s, 207, "{b}");
    assert_eq!(result_of(&b, 0).0, "accepted", "{b}");
    assert_eq!(
        (result_of(&b, 1).0.as_str(), result_of(&b, 1).1.as_str()),
        ("rejected", "value"),
        "{b}"
    );
    assert_eq!(
        (result_of(&b, 2).0.as_str(), result_of(&b, 2).1.as_str()),
        ("rejected", "device_id"),
        "{b}"
    );

    // A client stalled mid-body when SIGTERM comes does not hold shutdown for the
    // 20 s grace: its request ends at the read timeout and the server returns.
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled.write_all(head.as_bytes()).await.expect("write");
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("ingest stops within 10 s with a stalled client connected")
        .expect("join");
    assert!(stopped.is_ok(), "{stopped:?}");
    drop((stalled, idle));
}
