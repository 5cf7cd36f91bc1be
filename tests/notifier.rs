//! The notifier against a real broker, Postgres and a real local HTTP server that
//! records what it receives: routing, signatures, grouping, retries, failures,
//! hot reload, and a SIGKILL mid-stream followed by a restart.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use storepulse_notifier::{NotifierConfig, NotifierSettings};
use storepulse_runtime::records::AlertTransition;
use storepulse_runtime::{AvroCodec, EventProducer, ProducerMetrics};
use support::recording_http::{Recorded, RecordingServer};
use support::recording_smtp::RecordingSmtp;
use support::{TestStack, eventually};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(60);

/// An alert transition built from JSON, so fields added to the schema later (with
/// defaults) need no change here.
fn alert(
    store: &str,
    id: &str,
    state: &str,
    severity: &str,
    labels: &[(&str, &str)],
) -> AlertTransition {
    let labels: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let event_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{id}:{state}").as_bytes(),
    );
    serde_json::from_value(serde_json::json!({
        "envelope": {"event_id": event_id.to_string(), "tenant_id": "acme", "store_id": store,
                     "occurred_at": 1_800_000_000_000_000i64, "received_at": 1_800_000_000_000_000i64,
                     "source": "test"},
        "alert_id": id, "rule_id": "freezer-warm", "state": state, "severity": severity,
        "subject": format!("freezer-{id}"), "summary": format!("freezer {id} is warm"),
        "value": -9.5, "started_at": 1_800_000_000_000_000i64, "labels": labels,
    }))
    .expect("alert")
}

fn producer(stack: &TestStack) -> EventProducer {
    EventProducer::new(
        &stack.kafka,
        "notifier-test",
        AvroCodec::new(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer")
}

async fn publish(p: &EventProducer, alerts: &[AlertTransition]) {
    for a in alerts {
        p.send(a).await.expect("publish alert");
    }
}

fn settings(stack: &TestStack, policy: &Path) -> NotifierSettings {
    NotifierSettings {
        group_id: format!("{}notifier", stack.kafka.topic_prefix),
        policy_file: policy.to_path_buf(),
        reload_interval_ms: 100,
        ..Default::default()
    }
}

async fn start_notifier(
    stack: &TestStack,
    policy: &Path,
    shutdown: &CancellationToken,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = NotifierConfig {
        kafka: stack.kafka.clone(),
        postgres: stack.postgres.clone(),
        log: Default::default(),
        notifier: settings(stack, policy),
    };
    let handle = tokio::spawn(storepulse_notifier::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));
    (url, handle)
}

fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("notifier-policy.toml");
    std::fs::write(&path, text).expect("write policy");
    path
}

/// Transitions (`alert_id:state`) a set of requests carried.
fn transitions(requests: &[Recorded]) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests {
        for a in r.json()["alerts"].as_array().expect("alerts") {
            out.push(format!(
                "{}:{}",
                a["alert_id"].as_str().expect("id"),
                a["state"].as_str().expect("state")
            ));
        }
    }
    out.sort();
    out
}

fn verify_signature(secret: &str, r: &Recorded) {
    let ts = r.header("x-storepulse-timestamp");
    assert!(ts.parse::<i64>().is_ok(), "timestamp header: {ts:?}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        r.header("x-storepulse-signature"),
        expected,
        "signature of {}",
        r.path
    );
}

async fn metric(ops: &str, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("{ops}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    // Labels are sorted: ours first, then the registry's `service`.
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_signs_groups_and_reloads() {
    let stack = TestStack::start("notifier_routes").await;
    let server = RecordingServer::start().await;
    let policy_text = format!(
        r#"
        [route]
        receiver = "ops"
        group_by = ["store"]
        group_wait = "2s"
        group_interval = "1h"

        [[route.routes]]
        receiver = "managers"
        matchers = ['severity = "critical"', 'store =~ "s-00[1-5]"']
        continue = true
        group_wait = "0s"
        group_by = ["store", "subject"]

        [[route.routes]]
        receiver = "cold-chain"
        matchers = ['appliance = "freezer"']
        group_wait = "0s"
        group_interval = "1s"
        group_by = ["subject"]

        [[receivers]]
        name = "ops"
        [[receivers.channels]]
        type = "webhook"
        url = "{url}/ops"

        [[receivers]]
        name = "managers"
        send_resolved = false
        [[receivers.channels]]
        type = "webhook"
        url = "{url}/managers"
        secret_file = "{secret_file}"

        [[receivers]]
        name = "cold-chain"
        [[receivers.channels]]
        type = "webhook"
        url = "{url}/cold"
        secret_file = "{cold_file}"
        "#,
        url = server.url,
        secret_file = stack.dir.path().join("managers.secret").display(),
        cold_file = stack.dir.path().join("cold.secret").display(),
    );
    std::fs::write(stack.dir.path().join("cold.secret"), "cold-secret").expect("secret");
    std::fs::write(
        stack.dir.path().join("managers.secret"),
        "managers-secret\n",
    )
    .expect("secret");
    let policy = write_policy(stack.dir.path(), &policy_text);
    let shutdown = CancellationToken::new();
    let (ops, handle) = start_notifier(&stack, &policy, &shutdown).await;

    let p = producer(&stack);
    publish(
        &p,
        &[
            alert(
                "s-001",
                "a1",
                "Firing",
                "Critical",
                &[("appliance", "freezer")],
            ),
            alert("s-001", "a2", "Firing", "Warning", &[]),
            alert("s-001", "a3", "Firing", "Warning", &[]),
            alert(
                "s-009",
                "a4",
                "Firing",
                "Critical",
                &[("appliance", "fridge")],
            ),
        ],
    )
    .await;

    // managers: only the critical alert in s-001..5; signed with the file secret.
    let managers = eventually("managers notified", WITHIN, || async {
        let r = server.to("/managers");
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(transitions(&managers), ["a1:firing"]);
    verify_signature("managers-secret", &managers[0]);
    let body = managers[0].json();
    assert_eq!(
        managers[0].header("idempotency-key"),
        body["message_id"].as_str().expect("id")
    );
    assert_eq!(managers[0].header("content-type"), "application/json");
    assert_eq!(body["receiver"], "managers");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["group_labels"]["store"], "s-001");
    let a1 = &body["alerts"][0];
    assert_eq!(a1["severity"], "critical");
    assert_eq!(a1["summary"], "freezer a1 is warm");
    assert_eq!(a1["labels"]["appliance"], "freezer");
    // cold-chain: the freezer alert (continue after managers); env secret.
    let cold = eventually("cold-chain notified", WITHIN, || async {
        let r = server.to("/cold");
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(transitions(&cold), ["a1:firing"]);
    verify_signature("cold-secret", &cold[0]);
    // ops (default): a2 and a3 grouped by store into one message after group_wait;
    // a4 in its own store's group. Unsigned (no secret).
    let ops_msgs = eventually("ops notified", WITHIN, || async {
        let r = server.to("/ops");
        (transitions(&r).len() >= 3).then_some(r)
    })
    .await;
    assert_eq!(
        transitions(&ops_msgs),
        ["a2:firing", "a3:firing", "a4:firing"]
    );
    assert_eq!(
        ops_msgs.len(),
        2,
        "one message per store group: {:?}",
        ops_msgs.iter().map(Recorded::json).collect::<Vec<_>>()
    );
    let s1 = ops_msgs
        .iter()
        .find(|r| r.json()["group_labels"]["store"] == "s-001")
        .expect("s-001 group");
    assert_eq!(s1.json()["alerts"].as_array().expect("alerts").len(), 2);
    assert_eq!(s1.header("x-storepulse-signature"), "");

    // Resolved: cold-chain gets it; managers switched resolved off (suppressed).
    publish(
        &p,
        &[alert(
            "s-001",
            "a1",
            "Resolved",
            "Critical",
            &[("appliance", "freezer")],
        )],
    )
    .await;
    eventually("cold-chain resolved", WITHIN, || async {
        let r = server.to("/cold");
        transitions(&r)
            .contains(&"a1:resolved".to_string())
            .then_some(())
    })
    .await;
    eventually("managers' resolved suppressed", WITHIN, || async {
        (stack.count("SELECT count(*) FROM notifier.deliveries WHERE receiver = 'managers' AND status = 'suppressed' AND outcome_published").await == 1).then_some(())
    })
    .await;
    // A replay of the same transitions sends nothing again.
    publish(
        &p,
        &[alert(
            "s-001",
            "a1",
            "Firing",
            "Critical",
            &[("appliance", "freezer")],
        )],
    )
    .await;

    // Hot reload: an invalid edit is rejected (the running policy stays), a valid one applies.
    std::fs::write(
        &policy,
        policy_text.replace("group_wait = \"0s\"", "group_wait = \"soon\""),
    )
    .expect("edit");
    eventually("invalid edit rejected", WITHIN, || async {
        (metric(
            &ops,
            "storepulse_notifier_policy_reloads_total{result=\"rejected\"",
        )
        .await?
            >= 1.0)
            .then_some(())
    })
    .await;
    std::fs::write(
        &policy,
        policy_text.replace(
            &format!("{}/ops", server.url),
            &format!("{}/ops-v2", server.url),
        ),
    )
    .expect("edit");
    eventually("valid edit applied", WITHIN, || async {
        (metric(
            &ops,
            "storepulse_notifier_policy_reloads_total{result=\"applied\"",
        )
        .await?
            >= 1.0)
            .then_some(())
    })
    .await;
    publish(&p, &[alert("s-020", "a5", "Firing", "Info", &[])]).await;
    let v2 = eventually("new route used", WITHIN, || async {
        let r = server.to("/ops-v2");
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(transitions(&v2), ["a5:firing"]);

    // Every delivery is in the ledger once, and its outcome published; nothing resent.
    eventually("outcomes published", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE NOT outcome_published")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        transitions(&server.to("/managers")),
        ["a1:firing"],
        "the replay was not resent"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE status = 'delivered'")
            .await,
        7
    );
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fall_back_and_dead_letter_without_delaying_others() {
    let stack = TestStack::start("notifier_retries").await;
    let server = RecordingServer::start().await;
    server.script("/flaky", &[503, 429]);
    server.always("/dead", 500);
    server.always("/refuses", 400);
    server.always("/primary", 502);
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r#"
            [route]
            receiver = "healthy"
            group_wait = "0s"
            group_by = ["subject"]
            [[route.routes]]
            receiver = "flaky"
            matchers = ['team = "flaky"']
            [[route.routes]]
            receiver = "dead"
            matchers = ['team = "dead"']
            [[route.routes]]
            receiver = "refuses"
            matchers = ['team = "refuses"']
            [[route.routes]]
            receiver = "fallback"
            matchers = ['team = "fallback"']

            [[receivers]]
            name = "healthy"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/healthy"

            [[receivers]]
            name = "flaky"
            max_attempts = 4
            backoff_initial = "20ms"
            backoff_max = "100ms"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/flaky"

            [[receivers]]
            name = "dead"
            max_attempts = 3
            backoff_initial = "20ms"
            backoff_max = "100ms"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/dead"

            [[receivers]]
            name = "refuses"
            max_attempts = 5
            backoff_initial = "20ms"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/refuses"

            [[receivers]]
            name = "fallback"
            max_attempts = 2
            backoff_initial = "20ms"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/primary"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/secondary"
            "#,
            u = server.url
        ),
    );
    let shutdown = CancellationToken::new();
    let (_ops, handle) = start_notifier(&stack, &policy, &shutdown).await;
    let p = producer(&stack);
    publish(
        &p,
        &[
            alert("s-1", "f1", "Firing", "Warning", &[("team", "flaky")]),
            alert("s-1", "d1", "Firing", "Warning", &[("team", "dead")]),
            alert("s-1", "r1", "Firing", "Warning", &[("team", "refuses")]),
            alert("s-1", "b1", "Firing", "Warning", &[("team", "fallback")]),
            alert("s-1", "h1", "Firing", "Warning", &[]),
        ],
    )
    .await;
    // One snapshot of every finished delivery, awaited until all five receivers'
    // rows are final. (Checking "nothing pending" and "five rows" in two queries
    // raced: a row recorded between them was read as missing.)
    let finished = eventually("all five deliveries finished", WITHIN, || async {
        let rows = stack
            .pool
            .get()
            .await
            .expect("pg")
            .query(
                "SELECT receiver, status, attempts FROM notifier.deliveries WHERE status <> 'pending'",
                &[],
            )
            .await
            .expect("query");
        let by_receiver: HashMap<String, (String, i32)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        (by_receiver.len() == 5).then_some(by_receiver)
    })
    .await;
    let status = |receiver: &str| finished.get(receiver).cloned();
    // Fails twice (503, then 429 with Retry-After), then succeeds: one key throughout.
    assert_eq!(status("flaky"), Some(("delivered".into(), 3)));
    let flaky = server.to("/flaky");
    assert_eq!(flaky.len(), 3);
    let keys: BTreeSet<&str> = flaky.iter().map(|r| r.header("idempotency-key")).collect();
    assert_eq!(keys.len(), 1, "retries reuse the Idempotency-Key");
    // Always 500: bounded tries, then failed + dead letter.
    assert_eq!(status("dead"), Some(("failed".into(), 3)));
    assert_eq!(server.to("/dead").len(), 3);
    assert_eq!(stack.count("SELECT count(*) FROM notifier.dead_letters WHERE receiver = 'dead' AND error LIKE '%HTTP 500%'").await, 1);
    // 400: never retried.
    assert_eq!(status("refuses"), Some(("failed".into(), 1)));
    assert_eq!(server.to("/refuses").len(), 1);
    // The primary channel fails for good; the next channel delivers.
    assert_eq!(status("fallback"), Some(("delivered".into(), 3)));
    assert_eq!(server.to("/primary").len(), 2);
    assert_eq!(transitions(&server.to("/secondary")), ["b1:firing"]);
    assert_eq!(transitions(&server.to("/healthy")), ["h1:firing"]);
    // Each final result has its outcome published.
    eventually("outcomes published", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE NOT outcome_published")
            .await
            == 0)
            .then_some(())
    })
    .await;
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

/// A notifier process, killed if the test ends early.
struct NotifierProcess(Child);

impl Drop for NotifierProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_notifier(stack: &TestStack, policy: &Path) -> NotifierProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(["run", "notifier"])
        .envs(stack.service_env("notifier"))
        .env(
            "STOREPULSE_NOTIFIER__GROUP_ID",
            format!("{}notifier", stack.kafka.topic_prefix),
        )
        .env("STOREPULSE_NOTIFIER__HTTP_LISTEN", "127.0.0.1:0")
        .env("STOREPULSE_NOTIFIER__POLICY_FILE", policy)
        .env("NOTIFIER_TEST_HOOK_SECRET", "hook-secret")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn notifier");
    NotifierProcess(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_each_once() {
    let stack = TestStack::start("notifier_kill").await;
    let server = RecordingServer::start().await;
    // Slow answers keep the stream going while the process is killed.
    server.delay(Duration::from_millis(25));
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r#"
            [route]
            receiver = "hook"
            group_wait = "0s"
            group_by = ["subject"]
            [[receivers]]
            name = "hook"
            [[receivers.channels]]
            type = "webhook"
            url = "{}/hook"
            secret_env = "NOTIFIER_TEST_HOOK_SECRET"
            "#,
            server.url
        ),
    );
    const N: usize = 150;
    let alerts: Vec<AlertTransition> = (0..N)
        .map(|i| {
            alert(
                &format!("s-{:03}", i % 7),
                &format!("k{i:04}"),
                "Firing",
                "Warning",
                &[],
            )
        })
        .collect();
    let p = producer(&stack);
    let mut notifier = spawn_notifier(&stack, &policy);
    publish(&p, &alerts).await;
    eventually("mid-stream", WITHIN, || async {
        (server.requests().len() >= 20).then_some(())
    })
    .await;
    notifier.0.kill().expect("SIGKILL notifier");
    notifier.0.wait().expect("reaped");
    let mid = server.requests().len();
    assert!(mid < N, "the kill happened mid-stream ({mid} of {N})");
    drop(notifier);
    let _restarted = spawn_notifier(&stack, &policy);
    let expected: BTreeSet<String> = alerts
        .iter()
        .map(|a| format!("{}:firing", a.alert_id))
        .collect();
    // A deadline loop rather than `eventually`, to say what is missing on failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let got: BTreeSet<String> = transitions(&server.requests()).into_iter().collect();
        if got == expected {
            break;
        }
        if std::time::Instant::now() > deadline {
            let by_status = stack
                .pool
                .get()
                .await
                .expect("pg")
                .query(
                    "SELECT status, count(*) FROM notifier.deliveries GROUP BY 1",
                    &[],
                )
                .await
                .expect("query")
                .iter()
                .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>();
            panic!(
                "after the restart {} of {N} alerts arrived ({} requests); ledger: {by_status:?}",
                got.len(),
                server.requests().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("ledger complete", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE status = 'delivered'")
            .await
            == N as i64)
            .then_some(())
    })
    .await;
    // Deduplicated by Idempotency-Key, as a receiver does, each alert arrived once; at
    // most the one message in flight at the kill was sent twice, with the same key.
    let requests = server.requests();
    for r in &requests {
        verify_signature("hook-secret", r);
    }
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &requests {
        let t = transitions(std::slice::from_ref(r));
        let previous = by_key.insert(r.header("idempotency-key").to_string(), t.clone());
        if let Some(prev) = previous {
            assert_eq!(prev, t, "a resend under one key carries the same alerts");
        }
    }
    let mut delivered: Vec<String> = by_key.values().flatten().cloned().collect();
    delivered.sort();
    assert_eq!(
        delivered.len(),
        N,
        "no duplicates once deduplicated by key, none missing"
    );
    assert!(
        requests.len() - by_key.len() <= 1,
        "{} resends",
        requests.len() - by_key.len()
    );
}

fn cli(stack: &TestStack, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(args)
        .args(["--database-url", &stack.postgres.url])
        .env("STOREPULSE_LOG__FORMAT", "text")
        .output()
        .expect("run storepulse");
    assert!(
        out.status.success(),
        "storepulse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_and_inhibition_hold_until_they_end() {
    let stack = TestStack::start("notifier_silences").await;
    let server = RecordingServer::start().await;
    let now = chrono::Utc::now();
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r#"
            [route]
            receiver = "hook"
            group_wait = "0s"
            group_interval = "1s"
            group_by = ["subject"]

            [[receivers]]
            name = "hook"
            [[receivers.channels]]
            type = "webhook"
            url = "{}/hook"

            [[inhibit_rules]]
            source_matchers = ['rule = "store-network-down"']
            target_matchers = ['rule =~ "terminal-offline|sensor-silent"']
            equal = ["tenant", "store"]

            [[silences]]
            matchers = ['store = "s-file"']
            starts_at = "{}"
            ends_at = "{}"
            comment = "refit"
            "#,
            server.url,
            (now - chrono::Duration::hours(1)).to_rfc3339(),
            (now + chrono::Duration::hours(1)).to_rfc3339(),
        ),
    );
    // A silence from the CLI (the notifier has not created its schema yet: the CLI does).
    let id = cli(
        &stack,
        &[
            "silence",
            "add",
            "-m",
            "store = \"s-cli\"",
            "-m",
            "severity =~ \"warning|critical\"",
            "--duration",
            "1h",
            "--comment",
            "works",
        ],
    );
    let id = id.trim().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "silence id: {id:?}");
    let listed = cli(&stack, &["silence", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("store = \"s-cli\""),
        "{listed}"
    );

    let shutdown = CancellationToken::new();
    let (_ops, handle) = start_notifier(&stack, &policy, &shutdown).await;
    let with_rule = |store: &str, id: &str, state: &str, rule: &str| {
        let mut a = alert(store, id, state, "Warning", &[]);
        a.rule_id = rule.into();
        a
    };
    let p = producer(&stack);
    publish(
        &p,
        &[
            with_rule("s-1", "net1", "Firing", "store-network-down"),
            with_rule("s-1", "term1", "Firing", "terminal-offline"),
            with_rule("s-2", "term2", "Firing", "terminal-offline"),
            with_rule("s-cli", "cli1", "Firing", "freezer-warm"),
            with_rule("s-file", "file1", "Firing", "freezer-warm"),
            with_rule("s-file", "file1", "Resolved", "freezer-warm"),
        ],
    )
    .await;
    eventually("unheld alerts delivered", WITHIN, || async {
        let t = transitions(&server.requests());
        (t.len() >= 2).then_some(())
    })
    .await;
    // The silenced resolve and its held firing transition are suppressed, never sent.
    eventually("file-silenced alert suppressed", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE alert_id = 'file1' AND status = 'suppressed'")
            .await
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        transitions(&server.requests()),
        ["net1:firing", "term2:firing"]
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM notifier.deliveries WHERE alert_id IN ('term1', 'cli1') AND status = 'pending'").await,
        2,
        "inhibited and silenced alerts are held"
    );

    // The silence ends while its alert still fires: it is notified then.
    cli(&stack, &["silence", "expire", &id]);
    eventually(
        "silenced alert sent once its silence ended",
        WITHIN,
        || async {
            transitions(&server.requests())
                .contains(&"cli1:firing".to_string())
                .then_some(())
        },
    )
    .await;
    assert!(
        !cli(&stack, &["silence", "list"]).contains(&id),
        "expired silences are not listed"
    );
    assert!(cli(&stack, &["silence", "list", "--all"]).contains(&id));
    // The store's network is back: the inhibited terminal alert, still firing, is sent.
    publish(
        &p,
        &[with_rule("s-1", "net1", "Resolved", "store-network-down")],
    )
    .await;
    eventually(
        "inhibited alert sent once its source resolved",
        WITHIN,
        || async {
            transitions(&server.requests())
                .contains(&"term1:firing".to_string())
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        transitions(&server.requests()),
        [
            "cli1:firing",
            "net1:firing",
            "net1:resolved",
            "term1:firing",
            "term2:firing"
        ]
    );
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

/// A secret written to a file in the test's directory; its path.
fn secret_file(stack: &TestStack, name: &str, value: &str) -> String {
    let path = stack.dir.path().join(name);
    std::fs::write(&path, value).expect("write secret");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_whatsapp_and_email_channels_send_real_requests() {
    let stack = TestStack::start("notifier_channels").await;
    let server = RecordingServer::start().await;
    let smtp = RecordingSmtp::start().await;
    server.answer_body("/api/chat.postMessage", r#"{"ok":true,"ts":"1.2"}"#);
    // The fallback receiver's WhatsApp number is refused for good (400: no retry).
    server.always("/v21.0/999/messages", 400);
    // The relay defers the first try (451): retried, then accepted.
    smtp.script_mail_from("alerts@storepulse.test", &["451 4.3.0 try again later"]);
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r##"
            [route]
            receiver = "slack-hook"
            group_wait = "0s"
            group_by = ["subject"]
            [[route.routes]]
            receiver = "slack-api"
            matchers = ['team = "slack-api"']
            [[route.routes]]
            receiver = "wa"
            matchers = ['team = "wa"']
            [[route.routes]]
            receiver = "mail"
            matchers = ['team = "mail"']
            [[route.routes]]
            receiver = "wa-then-mail"
            matchers = ['team = "wa-then-mail"']

            [[receivers]]
            name = "slack-hook"
            [[receivers.channels]]
            type = "slack"
            url_file = "{hook_file}"

            [[receivers]]
            name = "slack-api"
            [[receivers.channels]]
            type = "slack"
            token_file = "{slack_token}"
            channel = "#store-ops"
            api_url = "{u}/api"

            [[receivers]]
            name = "wa"
            [[receivers.channels]]
            type = "whatsapp"
            api_url = "{u}"
            phone_number_id = "1234567"
            to = "+4915112345678"
            token_file = "{wa_token}"
            template = "storepulse_alert"
            language = "de"

            [[receivers]]
            name = "mail"
            max_attempts = 3
            backoff_initial = "20ms"
            [[receivers.channels]]
            type = "email"
            smtp_host = "{smtp_host}"
            smtp_port = {smtp_port}
            starttls = "opportunistic"
            username = "notifier"
            password_file = "{smtp_password}"
            from = "StorePulse <alerts@storepulse.test>"
            to = ["manager@store.test", "Area Manager <area@store.test>"]

            [[receivers]]
            name = "wa-then-mail"
            [[receivers.channels]]
            type = "whatsapp"
            api_url = "{u}"
            phone_number_id = "999"
            to = "4915100000000"
            token_file = "{wa_token}"
            [[receivers.channels]]
            type = "email"
            smtp_host = "{smtp_host}"
            smtp_port = {smtp_port}
            starttls = "off"
            from = "fallback-sender@storepulse.test"
            to = ["fallback@store.test"]
            "##,
            u = server.url,
            hook_file = secret_file(
                &stack,
                "slack-hook",
                &format!("{}/services/T0/B0/hook-secret", server.url)
            ),
            slack_token = secret_file(&stack, "slack-token", "xoxb-test-token\n"),
            wa_token = secret_file(&stack, "wa-token", "wa-test-token"),
            smtp_password = secret_file(&stack, "smtp-password", "smtp-pass"),
            smtp_host = smtp.host,
            smtp_port = smtp.port,
        ),
    );
    let shutdown = CancellationToken::new();
    let (_ops, handle) = start_notifier(&stack, &policy, &shutdown).await;
    let p = producer(&stack);
    publish(
        &p,
        &[
            alert("s-1", "sh1", "Firing", "Critical", &[]),
            alert("s-1", "sa1", "Firing", "Warning", &[("team", "slack-api")]),
            alert("s-1", "wa1", "Firing", "Critical", &[("team", "wa")]),
            alert("s-1", "m1", "Firing", "Critical", &[("team", "mail")]),
            alert(
                "s-1",
                "fb1",
                "Firing",
                "Critical",
                &[("team", "wa-then-mail")],
            ),
        ],
    )
    .await;
    let finished = eventually("all five deliveries finished", WITHIN, || async {
        let rows = stack
            .pool
            .get()
            .await
            .expect("pg")
            .query(
                "SELECT receiver, status, attempts, channel, message_id FROM notifier.deliveries WHERE status <> 'pending'",
                &[],
            )
            .await
            .expect("query");
        let by_receiver: HashMap<String, (String, i32, String, uuid::Uuid)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect();
        (by_receiver.len() == 5).then_some(by_receiver)
    })
    .await;
    let outcome = |r: &str| {
        let (status, attempts, channel, _) = &finished[r];
        (status.as_str(), *attempts, channel.as_str())
    };
    let message_id = |r: &str| finished[r].3.to_string();

    // Slack incoming webhook: the secret URL's path, JSON text naming the alert.
    assert_eq!(outcome("slack-hook"), ("delivered", 1, "slack"));
    let hook = server.to("/services/T0/B0/hook-secret");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].header("content-type"), "application/json");
    assert_eq!(hook[0].header("authorization"), "");
    let text = hook[0].json()["text"].as_str().expect("text").to_string();
    assert!(
        text.starts_with("*FIRING: 1 alert (subject=freezer-sh1)*"),
        "{text}"
    );
    assert!(
        text.contains("[critical] s-1 freezer-sh1: freezer sh1 is warm"),
        "{text}"
    );

    // chat.postMessage: bearer token, channel, text.
    assert_eq!(outcome("slack-api"), ("delivered", 1, "slack"));
    let api = server.to("/api/chat.postMessage");
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].header("authorization"), "Bearer xoxb-test-token");
    let body = api[0].json();
    assert_eq!(body["channel"], "#store-ops");
    assert!(
        body["text"]
            .as_str()
            .expect("text")
            .contains("freezer sa1 is warm")
    );

    // WhatsApp Cloud API: /{version}/{phone-number-id}/messages, template message.
    assert_eq!(outcome("wa"), ("delivered", 1, "whatsapp"));
    let wa = server.to("/v21.0/1234567/messages");
    assert_eq!(wa.len(), 1);
    assert_eq!(wa[0].header("authorization"), "Bearer wa-test-token");
    assert_eq!(wa[0].header("content-type"), "application/json");
    let body = wa[0].json();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["recipient_type"], "individual");
    assert_eq!(body["to"], "4915112345678");
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "storepulse_alert");
    assert_eq!(body["template"]["language"]["code"], "de");
    let params = &body["template"]["components"][0]["parameters"];
    assert_eq!(body["template"]["components"][0]["type"], "body");
    assert_eq!(params[0]["text"], "FIRING: 1 alert (subject=freezer-wa1)");
    assert!(
        params[1]["text"]
            .as_str()
            .expect("param")
            .contains("freezer wa1 is warm")
    );
    assert_eq!(body["biz_opaque_callback_data"], message_id("wa"));

    // Email: deferred once (451), retried, accepted with AUTH, both alternatives.
    assert_eq!(outcome("mail"), ("delivered", 2, "email"));
    let mails = smtp.mails();
    let mail = mails
        .iter()
        .find(|m| m.to.contains(&"manager@store.test".to_string()))
        .expect("mail to the managers");
    assert_eq!(mail.auth.as_deref(), Some("notifier:smtp-pass"));
    assert_eq!(mail.from, "alerts@storepulse.test");
    assert_eq!(mail.to, ["manager@store.test", "area@store.test"]);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("FIRING: 1 alert (subject=freezer-m1)")
    );
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{}@storepulse>", message_id("mail")))
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Content-Type: text/plain"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Content-Type: text/html"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("<li>[critical] s-1 freezer-m1: freezer m1 is warm"),
        "{}",
        mail.data
    );

    // WhatsApp refused for good (400, not retried): the next channel, email, delivers.
    assert_eq!(outcome("wa-then-mail"), ("delivered", 2, "email"));
    assert_eq!(server.to("/v21.0/999/messages").len(), 1);
    let fallback = mails
        .iter()
        .find(|m| m.to == ["fallback@store.test"])
        .expect("fallback mail");
    assert_eq!(fallback.auth, None);
    assert!(fallback.data.contains("freezer fb1 is warm"));
    assert_eq!(smtp.attempts(), 3, "two mails, one deferred try");

    // Secrets never reach the ledger's errors or the dead letters.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE error LIKE '%token%' OR error LIKE '%hook-secret%'")
            .await,
        0
    );
    eventually("outcomes published", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE NOT outcome_published")
            .await
            == 0)
            .then_some(())
    })
    .await;
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn still_firing_alerts_repeat_until_resolved() {
    let stack = TestStack::start("notifier_repeat").await;
    let server = RecordingServer::start().await;
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r#"
            [route]
            receiver = "hook"
            group_wait = "0s"
            group_interval = "1s"
            repeat_interval = "1h"
            group_by = ["subject"]
            [[route.routes]]
            receiver = "hook"
            matchers = ['team = "fast"']
            repeat_interval = "2s"
            [[receivers]]
            name = "hook"
            [[receivers.channels]]
            type = "webhook"
            url = "{}/hook"
            "#,
            server.url
        ),
    );
    let shutdown = CancellationToken::new();
    let (_ops, handle) = start_notifier(&stack, &policy, &shutdown).await;
    let p = producer(&stack);
    publish(
        &p,
        &[
            alert("s-1", "rep1", "Firing", "Critical", &[("team", "fast")]),
            alert("s-1", "slow1", "Firing", "Critical", &[]),
        ],
    )
    .await;
    let carrying = |id: &'static str| {
        let server = server.clone();
        move || {
            server
                .requests()
                .into_iter()
                .filter(|r| r.json()["alerts"][0]["alert_id"] == id)
                .collect::<Vec<_>>()
        }
    };
    let rep1 = carrying("rep1");
    let sent = eventually("the first notification and two repeats", WITHIN, || async {
        let r = rep1();
        (r.len() >= 3).then_some(r)
    })
    .await;
    let repeats: Vec<serde_json::Value> = sent
        .iter()
        .map(|r| r.json()["alerts"][0]["repeat"].clone())
        .collect();
    assert_eq!(repeats[..3], [serde_json::Value::Null, 1.into(), 2.into()]);
    let keys: BTreeSet<&str> = sent.iter().map(|r| r.header("idempotency-key")).collect();
    assert_eq!(
        keys.len(),
        sent.len(),
        "each repeat is a message of its own"
    );
    // The route with the 1 h repeat_interval sent its alert once.
    assert_eq!(carrying("slow1")().len(), 1);

    // Resolved: sent, and the alert is no longer a repeat candidate.
    publish(
        &p,
        &[alert(
            "s-1",
            "rep1",
            "Resolved",
            "Critical",
            &[("team", "fast")],
        )],
    )
    .await;
    eventually("resolve delivered", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE transition_id = 'rep1:resolved' AND status = 'delivered'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let ledger = storepulse_notifier::ledger::Ledger::new(stack.pool.clone());
    let candidates = ledger
        .repeat_candidates("hook", 100)
        .await
        .expect("candidates");
    let ids: Vec<&str> = candidates.iter().map(|c| c.alert_id.as_str()).collect();
    assert_eq!(ids, ["slow1"], "a resolved alert is never repeated");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE alert_id = 'rep1' AND transition_id LIKE 'rep1:firing:repeat-%' AND status = 'pending'")
            .await,
        0,
        "no repeat left pending after the resolve"
    );
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_all_but_severe_alerts_in_the_store_zone() {
    let stack = TestStack::start("notifier_quiet").await;
    let server = RecordingServer::start().await;
    let now = chrono::Utc::now();
    let hhmmss = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M:%S").to_string();
    // Quiet now in UTC (s-night); twelve hours earlier in UTC-12 (s-day): not quiet.
    let policy_text = |end: chrono::DateTime<chrono::Utc>| {
        format!(
            r#"
            [route]
            receiver = "managers"
            group_wait = "0s"
            group_interval = "1s"
            group_by = ["subject"]
            [time_zones]
            default = "UTC"
            stores = {{ "acme/s-day" = "Etc/GMT+12" }}
            [[receivers]]
            name = "managers"
            quiet_hours = {{ start = "{}", end = "{}", breakthrough = "critical" }}
            [[receivers.channels]]
            type = "webhook"
            url = "{}/managers"
            "#,
            hhmmss(now - chrono::Duration::hours(1)),
            hhmmss(end),
            server.url
        )
    };
    let policy = write_policy(
        stack.dir.path(),
        &policy_text(now + chrono::Duration::hours(1)),
    );
    let shutdown = CancellationToken::new();
    let (_ops, handle) = start_notifier(&stack, &policy, &shutdown).await;
    let p = producer(&stack);
    publish(
        &p,
        &[
            alert("s-night", "crit", "Firing", "Critical", &[]),
            alert("s-night", "warn", "Firing", "Warning", &[]),
            alert("s-day", "day", "Firing", "Warning", &[]),
        ],
    )
    .await;
    eventually("critical and day-time alerts delivered", WITHIN, || async {
        let t = transitions(&server.requests());
        (t.len() >= 2).then_some(())
    })
    .await;
    eventually("the quiet-hours alert recorded", WITHIN, || async {
        (stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE alert_id = 'warn' AND status = 'pending'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        transitions(&server.requests()),
        ["crit:firing", "day:firing"],
        "the warning in the quiet store is held; the critical one breaks through"
    );
    // Quiet hours end (the policy now ends them seconds from now): it goes out then.
    let in_3s = (chrono::Utc::now() + chrono::Duration::seconds(3)).timestamp();
    let end = chrono::DateTime::from_timestamp(in_3s, 0).expect("time");
    std::fs::write(&policy, policy_text(end)).expect("edit policy");
    eventually("held alert sent when quiet hours end", WITHIN, || async {
        transitions(&server.requests())
            .contains(&"warn:firing".to_string())
            .then_some(())
    })
    .await;
    assert!(
        chrono::Utc::now() >= end,
        "not sent before the quiet hours ended"
    );
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_alerts_escalate_up_the_ladder() {
    let stack = TestStack::start("notifier_escalate").await;
    let server = RecordingServer::start().await;
    let token_file = stack.dir.path().join("ack-token");
    std::fs::write(&token_file, "ack-secret\n").expect("token");
    let policy = write_policy(
        stack.dir.path(),
        &format!(
            r#"
            [route]
            receiver = "store"
            group_wait = "0s"
            group_interval = "1s"
            group_by = ["subject"]
            escalate = [{{ after = "8s", receiver = "area" }}, {{ after = "10s", receiver = "ops" }}]
            [[receivers]]
            name = "store"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/store"
            [[receivers]]
            name = "area"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/area"
            [[receivers]]
            name = "ops"
            [[receivers.channels]]
            type = "webhook"
            url = "{u}/ops"
            "#,
            u = server.url
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ops = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let mut notifier_settings = settings(&stack, &policy);
    notifier_settings.ack_token_file = token_file;
    let handle = tokio::spawn(storepulse_notifier::run_with_listener(
        NotifierConfig {
            kafka: stack.kafka.clone(),
            postgres: stack.postgres.clone(),
            log: Default::default(),
            notifier: notifier_settings,
        },
        listener,
        shutdown.clone(),
    ));
    let p = producer(&stack);
    publish(
        &p,
        &[
            alert("s-1", "esc1", "Firing", "Critical", &[]),
            alert("s-1", "http1", "Firing", "Critical", &[]),
            alert("s-1", "cli1", "Firing", "Critical", &[]),
        ],
    )
    .await;
    eventually("first notifications delivered", WITHIN, || async {
        (transitions(&server.to("/store")).len() == 3).then_some(())
    })
    .await;
    // Acknowledge two of them: over HTTP (authenticated) and from the CLI.
    let http = reqwest::Client::new();
    let url = format!("{ops}/v1/alerts/http1/ack");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.post(&url).send().await.expect("post")), 401);
    assert_eq!(
        status(
            http.post(&url)
                .bearer_auth("wrong")
                .send()
                .await
                .expect("post")
        ),
        401
    );
    assert_eq!(
        status(
            http.post(format!("{ops}/v1/alerts/never-seen/ack"))
                .bearer_auth("ack-secret")
                .send()
                .await
                .expect("post")
        ),
        404
    );
    let acked = http
        .post(&url)
        .bearer_auth("ack-secret")
        .json(&serde_json::json!({"by": "anna", "comment": "on my way"}))
        .send()
        .await
        .expect("post");
    assert_eq!(acked.status().as_u16(), 200);
    let acked: serde_json::Value = acked.json().await.expect("json");
    assert_eq!(acked["alert_id"], "http1");
    assert_eq!(acked["acked_by"], "anna");
    let out = cli(
        &stack,
        &["ack", "cli1", "--by", "ben", "--comment", "looking"],
    );
    assert!(out.starts_with("cli1 acknowledged by ben"), "{out}");
    // Acknowledging again keeps the first acknowledgement.
    let again = cli(&stack, &["ack", "http1", "--by", "carl"]);
    assert!(again.starts_with("http1 acknowledged by anna"), "{again}");

    // The unacknowledged one climbs the ladder: area after 8 s, ops after 10 s.
    let to_ops = eventually("escalated to ops", WITHIN, || async {
        let r = server.to("/ops");
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(transitions(&to_ops), ["esc1:firing"]);
    let escalated = &to_ops[0].json()["alerts"][0];
    assert_eq!(escalated["escalation"], 2);
    assert_eq!(to_ops[0].json()["group_labels"]["escalation"], "2");
    assert_eq!(transitions(&server.to("/area")), ["esc1:firing"]);
    assert_eq!(server.to("/area")[0].json()["alerts"][0]["escalation"], 1);
    let ladder_rows = stack
        .count("SELECT count(*) FROM notifier.deliveries WHERE starts_with(transition_id, 'esc1:firing:escalation-')")
        .await;
    assert_eq!(ladder_rows, 2);
    // The acknowledged alerts were due at the same moments and never escalated.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM notifier.deliveries WHERE alert_id IN ('http1', 'cli1') AND transition_id LIKE '%escalation%'")
            .await,
        0
    );
    let ledger = storepulse_notifier::ledger::Ledger::new(stack.pool.clone());
    let candidates = ledger
        .escalation_candidates("store", 100)
        .await
        .expect("candidates");
    let ids: Vec<&str> = candidates.iter().map(|c| c.alert_id.as_str()).collect();
    assert_eq!(
        ids,
        ["esc1"],
        "acknowledged alerts are not escalation candidates"
    );
    // Its resolve reaches everyone the alert reached: the routed receiver and both
    // steps of the ladder, each once.
    publish(&p, &[alert("s-1", "esc1", "Resolved", "Critical", &[])]).await;
    for path in ["/store", "/area", "/ops"] {
        eventually(&format!("esc1 resolved at {path}"), WITHIN, || async {
            let seen = transitions(&server.to(path));
            seen.contains(&"esc1:resolved".to_string()).then_some(seen)
        })
        .await;
    }
    for path in ["/area", "/ops"] {
        assert_eq!(
            transitions(&server.to(path)),
            ["esc1:firing", "esc1:resolved"],
            "{path}"
        );
    }
    shutdown.cancel();
    handle
        .await
        .expect("join")
        .expect("notifier stopped cleanly");
}
