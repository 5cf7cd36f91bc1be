//! Topic administration: what each pipeline topic must look like ([`TopicSpec`]),
//! creating the missing ones, and comparing existing ones setting by setting
//! ([`reconcile_topics`]). Existing topics are never altered: a difference is
//! reported for an operator to act on (growing partitions moves stores to other
//! partitions; shortening retention deletes history). Why the settings are what
//! they are: `docs/decisions/0005-topic-settings.md`.
//!
//! Works with any Kafka-protocol broker: partitions and replication come from
//! cluster metadata, the rest from `DescribeConfigs`. A broker that does not
//! describe topic configs gets a note saying what was not checked instead of a
//! failure; a broker that reports only the configs set on the topic (nisshi)
//! makes an unset one a difference ("not set on the topic").

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{KafkaConfig, Retention};
use crate::kafka::client_config;
use crate::records::topic;

/// Topic configs StorePulse sets on every topic and checks on existing ones.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";

/// What a topic holds, which decides its retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicClass {
    /// Part of the event log: the truth the read store is rebuilt from.
    EventLog,
    /// Dead letters (`ingest.rejected.v1`): evidence for operators.
    DeadLetter,
    /// The writer-schema registry (`storepulse.schemas.v1`): one partition,
    /// compacted (one record per fingerprint, kept forever).
    SchemaRegistry,
}

impl TopicClass {
    /// The class of a base topic name (without the deployment's prefix).
    pub fn of(base: &str) -> Self {
        if base == topic::REJECTED {
            TopicClass::DeadLetter
        } else if base == crate::schema_registry::SCHEMAS_TOPIC {
            TopicClass::SchemaRegistry
        } else {
            TopicClass::EventLog
        }
    }
}

/// The wanted shape of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name, prefix included.
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic configs, by Kafka name.
    pub configs: BTreeMap<&'static str, String>,
}

impl TopicSpec {
    /// The spec of base topic `base` under `cfg.topics` with `partitions`.
    pub fn new(cfg: &KafkaConfig, base: &str, partitions: i32) -> Self {
        let t = &cfg.topics;
        let class = TopicClass::of(base);
        let retention = match class {
            TopicClass::EventLog => t.retention,
            TopicClass::DeadLetter => t.dead_letter_retention,
            TopicClass::SchemaRegistry => Retention::Unlimited,
        };
        let (partitions, cleanup) = match class {
            TopicClass::SchemaRegistry => (1, "compact"),
            _ => (partitions, "delete"),
        };
        let configs = BTreeMap::from([
            (MIN_INSYNC_REPLICAS, t.min_insync_replicas.to_string()),
            (RETENTION_MS, retention.as_retention_ms().to_string()),
            // Time is the only limit: a broker-wide size limit must not delete history.
            (RETENTION_BYTES, "-1".to_string()),
            // Never compaction for events: every event counts, not only the latest
            // per key. The schema registry is the one compacted topic.
            (CLEANUP_POLICY, cleanup.to_string()),
        ]);
        Self {
            name: cfg.topic(base),
            partitions,
            replication_factor: t.replication_factor,
            configs,
        }
    }
}

/// One setting of an existing topic that is not what was wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `partitions`, `replication factor`, or a topic config name.
    pub setting: String,
    pub wanted: String,
    /// What the broker reports, or `not set on the topic`.
    pub actual: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, wanted {}",
            self.setting, self.actual, self.wanted
        )
    }
}

/// What [`reconcile_topics`] found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicStatus {
    /// It did not exist and was created with the wanted settings.
    Created,
    /// It exists and every checked setting is as wanted.
    Matches,
    /// It exists and these settings differ; it was left unchanged.
    Differs(Vec<Difference>),
    /// It does not exist (check mode creates nothing).
    Missing,
}

/// The outcome for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// Full name.
    pub topic: String,
    pub status: TopicStatus,
    /// Set when the broker would not describe the topic's configs: what was not
    /// checked and why.
    pub unchecked: Option<String>,
}

/// Whether to create missing topics or only compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create what is missing, compare what exists.
    Create,
    /// Create nothing; report missing topics as [`TopicStatus::Missing`].
    Check,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("Kafka admin client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cluster metadata: {0}")]
    Metadata(String),
    #[error(
        "replication factor {wanted} needs at least {wanted} brokers, but the cluster has {brokers}: \
         pass {fix} (or set kafka.topics.replication_factor / kafka.topics.min_insync_replicas) \
         for a cluster this small; nothing was created"
    )]
    ReplicationFactorTooHigh {
        wanted: i16,
        brokers: usize,
        /// The flags that would fit this cluster.
        fix: String,
    },
    #[error("cannot create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// What metadata says about existing topics.
#[derive(Debug, Default)]
struct ClusterView {
    brokers: usize,
    /// Full topic name → (partitions, smallest replica count over its partitions).
    topics: HashMap<String, (i32, usize)>,
}

async fn cluster_view(cfg: &KafkaConfig) -> Result<ClusterView, TopicError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || -> Result<ClusterView, TopicError> {
        let consumer: BaseConsumer = client_config(&cfg, "storepulse-admin").create()?;
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| TopicError::Metadata(e.to_string()))?;
        let topics = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let replicas = t
                    .partitions()
                    .iter()
                    .map(|p| p.replicas().len())
                    .min()
                    .unwrap_or(0);
                (
                    t.name().to_string(),
                    (t.partitions().len() as i32, replicas),
                )
            })
            .collect();
        Ok(ClusterView {
            brokers: md.brokers().len(),
            topics,
        })
    })
    .await
    .map_err(|e| TopicError::Metadata(e.to_string()))?
}

/// Creates the missing `topics` (base names) per `cfg.topics` with `partitions`
/// (in [`Mode::Create`]) and compares every existing one with its [`TopicSpec`].
/// Existing topics are never changed. Reports come back in the order of `topics`.
pub async fn reconcile_topics(
    cfg: &KafkaConfig,
    topics: &[&str],
    partitions: i32,
    mode: Mode,
) -> Result<Vec<TopicReport>, TopicError> {
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|t| TopicSpec::new(cfg, t, partitions))
        .collect();
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg, "storepulse-admin").create()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let mut view = cluster_view(cfg).await?;
    let mut created = Vec::new();
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !view.topics.contains_key(&s.name))
        .collect();
    if mode == Mode::Create && !missing.is_empty() {
        let wanted = cfg.topics.replication_factor;
        if usize::try_from(wanted).unwrap_or(0) > view.brokers {
            let fits = i16::try_from(view.brokers).unwrap_or(i16::MAX).max(1);
            let mut fix = format!("--replication-factor {fits}");
            if cfg.topics.min_insync_replicas > fits {
                fix.push_str(&format!(" --min-insync-replicas {fits}"));
            }
            return Err(TopicError::ReplicationFactorTooHigh {
                wanted,
                brokers: view.brokers,
                fix,
            });
        }
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|s| {
                s.configs.iter().fold(
                    NewTopic::new(
                        &s.name,
                        s.partitions,
                        TopicReplication::Fixed(i32::from(s.replication_factor)),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let mut raced = false;
        for result in admin.create_topics(new.iter(), &opts).await? {
            match result {
                Ok(name) => {
                    tracing::info!(topic = %name, "created topic");
                    created.push(name);
                }
                // Someone else created it meanwhile: compare it like any existing one.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => raced = true,
                Err((topic, code)) => {
                    tracing::error!(%topic, ?code, "cannot create topic");
                    return Err(TopicError::Create { topic, code });
                }
            }
        }
        if raced {
            view = cluster_view(cfg).await?;
        }
    }

    let existing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !created.contains(&s.name) && view.topics.contains_key(&s.name))
        .collect();
    let described = describe_configs(&admin, &opts, &existing).await;

    let mut reports = Vec::with_capacity(specs.len());
    for spec in &specs {
        if created.contains(&spec.name) {
            reports.push(TopicReport {
                topic: spec.name.clone(),
                status: TopicStatus::Created,
                unchecked: None,
            });
            continue;
        }
        let Some(&(parts, replicas)) = view.topics.get(&spec.name) else {
            reports.push(TopicReport {
                topic: spec.name.clone(),
                status: TopicStatus::Missing,
                unchecked: None,
            });
            continue;
        };
        let mut diffs = Vec::new();
        if parts != spec.partitions {
            diffs.push(Difference {
                setting: "partitions".into(),
                wanted: spec.partitions.to_string(),
                actual: parts.to_string(),
            });
        }
        if replicas != usize::try_from(spec.replication_factor).unwrap_or(0) {
            diffs.push(Difference {
                setting: "replication factor".into(),
                wanted: spec.replication_factor.to_string(),
                actual: replicas.to_string(),
            });
        }
        let unchecked = match described.get(&spec.name) {
            Some(Ok(configs)) => {
                diffs.extend(config_differences(spec, configs));
                None
            }
            Some(Err(why)) => Some(format!(
                "{}, {}, {} and {} not checked: {why}",
                MIN_INSYNC_REPLICAS, RETENTION_MS, RETENTION_BYTES, CLEANUP_POLICY
            )),
            None => Some("topic configs not checked: no answer for this topic".into()),
        };
        reports.push(TopicReport {
            topic: spec.name.clone(),
            status: if diffs.is_empty() {
                TopicStatus::Matches
            } else {
                TopicStatus::Differs(diffs)
            },
            unchecked,
        });
    }
    Ok(reports)
}

/// Topic name → its configs (name → value; a `None` value is sensitive or unset),
/// or why the broker would not say.
type Described = HashMap<String, Result<HashMap<String, Option<String>>, String>>;

async fn describe_configs(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    specs: &[&TopicSpec],
) -> Described {
    if specs.is_empty() {
        return HashMap::new();
    }
    let resources: Vec<ResourceSpecifier> = specs
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    match admin.describe_configs(resources.iter(), opts).await {
        Err(e) => {
            tracing::warn!(error = %e, "the broker does not describe topic configs");
            specs
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        Err(format!("the broker does not describe topic configs ({e})")),
                    )
                })
                .collect()
        }
        // Results come in the order of the request.
        Ok(results) => specs
            .iter()
            .zip(results)
            .map(|(s, r)| {
                let r = r
                    .map(|resource| {
                        resource
                            .entries
                            .into_iter()
                            .map(|e| (e.name, e.value))
                            .collect()
                    })
                    .map_err(|code| format!("the broker did not describe the topic ({code})"));
                (s.name.clone(), r)
            })
            .collect(),
    }
}

/// Every wanted config whose reported value differs; values are compared the way
/// Kafka parses them (trimmed numbers, `cleanup.policy` as a set).
fn config_differences(
    spec: &TopicSpec,
    actual: &HashMap<String, Option<String>>,
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for (&key, wanted) in &spec.configs {
        let got = actual.get(key).cloned().flatten();
        let same = got.as_deref().is_some_and(|v| same_value(key, v, wanted));
        if !same {
            diffs.push(Difference {
                setting: key.to_string(),
                wanted: humane(key, wanted),
                actual: got.map_or_else(
                    || "not set on the topic (the broker's default applies)".to_string(),
                    |v| humane(key, &v),
                ),
            });
        }
    }
    diffs
}

fn same_value(key: &str, actual: &str, wanted: &str) -> bool {
    if key == CLEANUP_POLICY {
        let set = |v: &str| {
            let mut items: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect();
            items.sort();
            items
        };
        return set(actual) == set(wanted);
    }
    match (actual.trim().parse::<i64>(), wanted.trim().parse::<i64>()) {
        (Ok(a), Ok(w)) => a == w,
        _ => actual.trim() == wanted.trim(),
    }
}

/// A value as it is written on the topic, with the humane form of a retention.
fn humane(key: &str, value: &str) -> String {
    match (key, value.trim().parse::<i64>()) {
        (RETENTION_MS, Ok(ms)) => format!("{ms} ({})", Retention::describe_ms(ms)),
        (RETENTION_BYTES, Ok(-1)) => "-1 (unlimited)".to_string(),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicSettings;

    #[test]
    fn event_log_topics_keep_everything_and_dead_letters_expire() {
        let cfg = KafkaConfig {
            topic_prefix: "stg.".into(),
            ..KafkaConfig::default()
        };
        let sales = TopicSpec::new(&cfg, topic::SALES, 6);
        assert_eq!(sales.name, "stg.pos.sales.v1");
        assert_eq!(sales.replication_factor, 3);
        assert_eq!(sales.configs[RETENTION_MS], "-1");
        assert_eq!(sales.configs[MIN_INSYNC_REPLICAS], "2");
        assert_eq!(sales.configs[CLEANUP_POLICY], "delete");
        for t in topic::ALL {
            let want = if t == topic::REJECTED {
                "2592000000"
            } else {
                "-1"
            };
            assert_eq!(
                TopicSpec::new(&cfg, t, 6).configs[RETENTION_MS],
                want,
                "{t}"
            );
        }
        let local = KafkaConfig {
            topics: TopicSettings::single_broker(),
            ..KafkaConfig::default()
        };
        let s = TopicSpec::new(&local, topic::ALERTS, 4);
        assert_eq!((s.replication_factor, s.partitions), (1, 4));
        assert_eq!(s.configs[MIN_INSYNC_REPLICAS], "1");
    }

    #[test]
    fn every_differing_config_is_reported_with_both_values() {
        let spec = TopicSpec::new(&KafkaConfig::default(), topic::SALES, 6);
        let actual: HashMap<String, Option<String>> = HashMap::from([
            (RETENTION_MS.into(), Some("604800000".into())),
            (CLEANUP_POLICY.into(), Some("delete".into())),
            (MIN_INSYNC_REPLICAS.into(), Some(" 2".into())),
            ("segment.ms".into(), Some("1".into())),
        ]);
        let diffs = config_differences(&spec, &actual);
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "retention.bytes is not set on the topic (the broker's default applies), wanted -1 (unlimited)",
                "retention.ms is 604800000 (1w), wanted -1 (unlimited)",
            ]
        );
        let all_set: HashMap<String, Option<String>> = spec
            .configs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone())))
            .collect();
        assert!(config_differences(&spec, &all_set).is_empty());
        assert!(same_value(
            CLEANUP_POLICY,
            "compact, delete",
            "delete,compact"
        ));
        assert!(!same_value(CLEANUP_POLICY, "compact", "delete"));
    }
}
