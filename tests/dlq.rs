//! `storepulse dlq list/redrive` against a real broker: dead letters published by
//! the runtime's own `DeadLetters` are listed with their source and reason,
//! filtered, and a complete original from a topic is produced again to its source
//! topic with the same bytes and key; API rejections and truncated originals are
//! reported and never sent, and a dry run sends nothing.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use storepulse_runtime::dead_letter::RejectedFrom;
use storepulse_runtime::records::{Envelope, SensorKind, SensorReading, SensorUnit, topic};
use storepulse_runtime::{
    AvroCodec, DeadLetters, EventProducer, ProducerMetrics, Rejection, kafka,
};
use support::{TestStack, eventually};

fn storepulse(env: &HashMap<String, String>, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(args)
        .env_remove("STOREPULSE_CONFIG")
        .envs(env)
        .output()
        .expect("run storepulse")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "storepulse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every record of base topic `base` as (key, payload), once the topic holds `n`.
async fn records_of(stack: &TestStack, base: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cfg = stack.kafka.clone();
    let name = cfg.topic(base);
    eventually(
        &format!("{n} records in {name}"),
        Duration::from_secs(30),
        || {
            let cfg = cfg.clone();
            let name = name.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let consumer: BaseConsumer = kafka::client_config(&cfg, "dlq-test")
                        .set("group.id", format!("dlq-test-{}", uuid::Uuid::new_v4()))
                        .set("enable.auto.commit", "false")
                        .create()
                        .expect("consumer");
                    let mut tpl = TopicPartitionList::new();
                    let mut wanted = 0;
                    for p in 0..support::PARTITIONS {
                        let (low, high) = consumer
                            .fetch_watermarks(&name, p, Duration::from_secs(5))
                            .ok()?;
                        wanted += high - low;
                        tpl.add_partition_offset(&name, p, Offset::Beginning).ok()?;
                    }
                    if wanted != n as i64 {
                        return None;
                    }
                    consumer.assign(&tpl).ok()?;
                    let mut got = Vec::new();
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while got.len() < n && std::time::Instant::now() < deadline {
                        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                            got.push((
                                m.key().unwrap_or_default().to_vec(),
                                m.payload().unwrap_or_default().to_vec(),
                            ));
                        }
                    }
                    (got.len() == n).then_some(got)
                })
                .await
                .expect("join")
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_to_their_source_topic() {
    let stack = TestStack::start("dlq").await;
    let env = stack.service_env("dlq");
    let codec = AvroCodec::new();
    let producer = EventProducer::new(
        &stack.kafka,
        "dlq-test",
        codec.clone(),
        ProducerMetrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("producer");
    let dead_letters = DeadLetters::new(producer, "compactor");

    let now = chrono::Utc::now().timestamp_micros();
    let reading = SensorReading {
        envelope: Envelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: "acme".into(),
            store_id: "s-1".into(),
            occurred_at: now,
            received_at: now,
            source: "gateway".into(),
        },
        device_id: "freezer-1".into(),
        kind: SensorKind::Temperature,
        value: -18.5,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    };
    let original = codec.encode(&reading).expect("encode");
    let poison = dead_letters
        .publish(
            RejectedFrom::Topic {
                topic: topic::SENSOR_READINGS,
                partition: 1,
                offset: 7,
                key: Some(b"acme/s-1"),
            },
            &original,
            &Rejection::whole("unknown writer schema 0123456789abcdef"),
        )
        .await
        .expect("dead letter from a topic");
    dead_letters
        .publish(
            RejectedFrom::Api {
                tenant_id: "acme",
                store_id: "s-2",
                original_event_id: Some("e-1"),
            },
            br#"{"type":"sensor"}"#,
            &Rejection::field("occurred_at", "more than 300 s in the future"),
        )
        .await
        .expect("dead letter from the API");
    dead_letters
        .publish(
            RejectedFrom::Topic {
                topic: topic::SALES,
                partition: 0,
                offset: 3,
                key: Some(b"acme/s-3"),
            },
            &vec![7u8; 300 * 1024],
            &Rejection::whole("value Postgres cannot store"),
        )
        .await
        .expect("dead letter with a cut original");

    // Listed, all three, with source, reason and whether they can be redriven.
    let out = stdout(&storepulse(&env, &["dlq", "list", "--json"]));
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(listed.len(), 3, "{out}");
    let by_reason = |text: &str| {
        listed
            .iter()
            .find(|l| l["reason"].as_str().is_some_and(|r| r.contains(text)))
            .unwrap_or_else(|| panic!("no dead letter with reason {text}: {out}"))
    };
    let p = by_reason("unknown writer schema");
    assert_eq!(p["source_topic"], topic::SENSOR_READINGS);
    assert_eq!(
        (p["source_partition"].as_i64(), p["source_offset"].as_i64()),
        (Some(1), Some(7))
    );
    assert_eq!(
        (p["tenant_id"].as_str(), p["store_id"].as_str()),
        (Some("acme"), Some("s-1"))
    );
    assert_eq!(p["rejected_by"], "compactor");
    assert_eq!(p["redrivable"], true);
    let api = by_reason("future");
    assert_eq!(api["source_topic"], Value::Null);
    assert_eq!(api["field"], "occurred_at");
    assert_eq!(api["redrivable"], false);
    let cut = by_reason("cannot store");
    assert_eq!(cut["original_length"], 300 * 1024);
    assert_eq!(cut["redrivable"], false);

    // Filters: by source topic, by position, by reason.
    let out = stdout(&storepulse(&env, &["dlq", "list", "--source-topic", "api"]));
    assert!(
        out.contains("acme/s-2") && out.contains("occurred_at: more than 300 s"),
        "{out}"
    );
    assert!(!out.contains("acme/s-1"), "{out}");
    let position = api["dead_letter"].as_str().expect("position");
    let out = stdout(&storepulse(
        &env,
        &["dlq", "list", "--json", "--dead-letter", position],
    ));
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = stdout(&storepulse(
        &env,
        &["dlq", "list", "--json", "--reason", "WRITER SCHEMA"],
    ));
    assert_eq!(out.lines().count(), 1, "{out}");

    // Redrive needs a selection; a cut original is reported, not sent.
    let out = storepulse(&env, &["dlq", "redrive"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--source-topic or --dead-letter"));
    let out = stdout(&storepulse(
        &env,
        &["dlq", "redrive", "--source-topic", topic::SALES],
    ));
    assert!(
        out.contains("SKIPPED: original truncated") && out.contains("redrove 0 of 1"),
        "{out}"
    );
    let out = stdout(&storepulse(
        &env,
        &["dlq", "redrive", "--source-topic", "api"],
    ));
    assert!(
        out.contains("SKIPPED: rejected by the HTTP API") && out.contains("redrove 0 of 1"),
        "{out}"
    );

    // A dry run sends nothing; the redrive sends the original once, as it was.
    let out = stdout(&storepulse(
        &env,
        &[
            "dlq",
            "redrive",
            "--source-topic",
            topic::SENSOR_READINGS,
            "--dry-run",
        ],
    ));
    assert!(out.contains("would redrive 1 of 1"), "{out}");
    let out = stdout(&storepulse(
        &env,
        &["dlq", "redrive", "--source-topic", topic::SENSOR_READINGS],
    ));
    assert!(out.contains("redrove 1 of 1"), "{out}");
    let redriven = records_of(&stack, topic::SENSOR_READINGS, 1).await;
    assert_eq!(redriven[0].0, b"acme/s-1", "keyed by its store");
    assert_eq!(redriven[0].1, original, "the original bytes");
    assert_eq!(poison.original.0, original);
    assert!(records_of(&stack, topic::SALES, 0).await.is_empty());
}
