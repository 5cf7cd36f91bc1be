//! `storepulse topics` against the real broker: topics are created with the wanted
//! durability and retention, an existing topic created differently is reported
//! setting by setting (and left alone), `--check` fails on it, and a replication
//! factor the cluster cannot hold is refused naming the flag.

mod support;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use storepulse_runtime::records::topic;
use storepulse_runtime::topic_admin::{Mode, TopicStatus, reconcile_topics};
use storepulse_runtime::{KafkaConfig, kafka};
use support::TestStack;

fn topics_cli(kafka: &KafkaConfig, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .arg("topics")
        .args(args)
        .env_remove("STOREPULSE_CONFIG")
        .env("STOREPULSE_KAFKA__BROKERS", &kafka.brokers)
        .env("STOREPULSE_KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("STOREPULSE_KAFKA__PARTITIONS", "4")
        .output()
        .expect("run storepulse topics")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn admin(kafka: &KafkaConfig) -> AdminClient<DefaultClientContext> {
    kafka::client_config(kafka, "topics-test")
        .create()
        .expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// The configs the broker reports for one topic.
async fn configs(kafka: &KafkaConfig, full: &str) -> HashMap<String, Option<String>> {
    let spec = [ResourceSpecifier::Topic(full)];
    let mut results = admin(kafka)
        .describe_configs(spec.iter(), &opts())
        .await
        .expect("describe configs");
    results
        .remove(0)
        .expect("topic described")
        .entries
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

fn with_prefix(stack: &TestStack, extra: &str) -> KafkaConfig {
    KafkaConfig {
        topic_prefix: format!("{}{extra}.", stack.kafka.topic_prefix),
        ..stack.kafka.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_topics_match_their_spec_on_the_real_broker() {
    let stack = TestStack::start("topicspec").await;
    let reports = reconcile_topics(
        &stack.kafka,
        &topic::PROVISIONED,
        support::PARTITIONS,
        Mode::Check,
    )
    .await
    .expect("check");
    assert_eq!(reports.len(), topic::PROVISIONED.len());
    for r in &reports {
        assert_eq!(r.status, TopicStatus::Matches, "{r:?}");
        assert_eq!(
            r.unchecked, None,
            "the broker describes topic configs: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_with_settings_and_differences_are_reported() {
    let stack = TestStack::start("topicsdiff").await;
    let k = with_prefix(&stack, "ops");
    // An operator created pos.sales.v1 by hand earlier: 2 partitions, 2 replicas (nisshi
    // accepts more replicas than brokers), a week's retention.
    let sales = k.topic(topic::SALES);
    let pre = NewTopic::new(&sales, 2, TopicReplication::Fixed(2)).set("retention.ms", "604800000");
    for r in admin(&k)
        .create_topics([&pre], &opts())
        .await
        .expect("create")
    {
        r.expect("pre-existing topic created");
    }

    let out = topics_cli(
        &k,
        &[
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
            "--retention",
            "90d",
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for t in topic::PROVISIONED.iter().filter(|t| **t != topic::SALES) {
        assert!(
            stdout.contains(&format!("{}: created\n", k.topic(t))),
            "{t}: {all}"
        );
    }
    for line in [
        format!("{sales}: exists, DIFFERS"),
        format!("WARNING {sales}: partitions is 2, wanted 4"),
        format!("WARNING {sales}: retention.ms is 604800000 (1w), wanted 7776000000 (90d)"),
        format!("WARNING {sales}: min.insync.replicas is not set on the topic"),
        format!("WARNING {sales}: cleanup.policy is not set on the topic"),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in {all}");
    }
    assert!(
        stdout.contains(&format!(
            "WARNING {sales}: replication factor is 2, wanted 1"
        )),
        "{all}"
    );

    // Created with what was asked: the event log keeps 90 days, dead letters 30.
    let inv = configs(&k, &k.topic(topic::INVENTORY)).await;
    assert_eq!(
        inv["retention.ms"].as_deref(),
        Some("7776000000"),
        "{inv:?}"
    );
    assert_eq!(inv["min.insync.replicas"].as_deref(), Some("1"), "{inv:?}");
    assert_eq!(inv["cleanup.policy"].as_deref(), Some("delete"), "{inv:?}");
    let dlq = configs(&k, &k.topic(topic::REJECTED)).await;
    assert_eq!(
        dlq["retention.ms"].as_deref(),
        Some("2592000000"),
        "{dlq:?}"
    );
    // The hand-made topic was left alone.
    let pre = configs(&k, &sales).await;
    assert_eq!(pre["retention.ms"].as_deref(), Some("604800000"), "{pre:?}");

    // --check: nothing created, exit 1 because one topic differs.
    let out = topics_cli(
        &k,
        &[
            "--check",
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
            "--retention",
            "90d",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("{}: exists, as wanted", k.topic(topic::ALERTS))),
        "{all}"
    );
    assert!(
        all.contains(&format!("WARNING {sales}: partitions is 2, wanted 4")),
        "{all}"
    );
    assert!(all.contains("8 as wanted, 1 differ, 0 missing"), "{all}");

    // --check on a prefix without topics: all missing, still nothing created.
    let empty = with_prefix(&stack, "none");
    let out = topics_cli(
        &empty,
        &[
            "--check",
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("0 as wanted, 0 differ, 9 missing"), "{all}");
    let after = reconcile_topics(&empty, &topic::PROVISIONED, 4, Mode::Check)
        .await
        .expect("check");
    assert!(
        after.iter().all(|r| r.status == TopicStatus::Missing),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_factor_above_the_broker_count_is_refused_naming_the_flag() {
    let stack = TestStack::start("topicsrf").await;
    let k = with_prefix(&stack, "prod");
    // The production defaults: replication 3, min.insync.replicas 2, on one broker.
    let out = topics_cli(&k, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("replication factor 3 needs at least 3 brokers, but the cluster has 1")
            && all.contains("pass --replication-factor 1 --min-insync-replicas 1"),
        "{all}"
    );
    let after = reconcile_topics(&k, &topic::PROVISIONED, 4, Mode::Check)
        .await
        .expect("check");
    assert!(
        after.iter().all(|r| r.status == TopicStatus::Missing),
        "nothing created: {after:?}"
    );
}

#[test]
fn min_insync_above_the_replication_factor_is_refused_before_connecting() {
    let k = KafkaConfig {
        brokers: "127.0.0.1:1".into(),
        ..KafkaConfig::default()
    };
    let out = topics_cli(&k, &["--replication-factor", "1"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("min.insync.replicas 2 is more than the replication factor 1")
            && all.contains("--min-insync-replicas"),
        "{all}"
    );
    let out = topics_cli(&k, &["--retention", "forever"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("--retention") && all.contains("unlimited"),
        "{all}"
    );
}

/// The compactor consumes only provisioned topics (`storepulse topics`, the dev
/// stack and the test harness create exactly those).
#[test]
fn every_compactor_input_topic_is_provisioned() {
    for t in storepulse_compactor::INPUT_TOPICS {
        assert!(topic::PROVISIONED.contains(&t), "{t} is not provisioned");
    }
    for t in topic::ALL {
        assert!(
            storepulse_compactor::INPUT_TOPICS.contains(&t),
            "the compactor folds every record topic into the read store; {t} is missing"
        );
    }
}
