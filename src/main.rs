//! `storepulse`: run the pipeline locally, simulate stores, manage API keys and topics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use storepulse::analysts;
use storepulse::dev_stack::{self, DevOptions};
use storepulse::gateway::Gateway;
use storepulse::load::{LoadOptions, LoadTarget};
use storepulse::load_stack::{LoadStack, LoadStackOptions};
use storepulse::simulator::{SimConfig, Simulator};
use storepulse_runtime::records::topic;
use storepulse_runtime::{
    ConfigSource, KafkaConfig, PostgresConfig, Retention, db, shutdown, topic_admin,
};
use tokio_util::sync::CancellationToken;

/// StorePulse: real-time monitoring of retail stores.
///
/// Configuration for commands that reach Kafka or Postgres: --config FILE (or
/// STOREPULSE_CONFIG), overridden by STOREPULSE_<SECTION>__<KEY> variables, e.g.
/// STOREPULSE_POSTGRES__URL, STOREPULSE_KAFKA__BROKERS.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline locally with simulated stores: its own Postgres and
    /// broker (installed on first use), all services, live statistics. Ctrl-C stops
    /// everything.
    ///
    /// If a service stops on its own (an error, a panic), a line naming it and why is
    /// printed at once, and every live line after it ends with
    /// `| <service> STOPPED: <reason>`; the other services keep running so you can
    /// inspect the stack, and dev exits with status 1 after Ctrl-C.
    Dev {
        /// Simulated stores (at least 1).
        #[arg(long, default_value_t = 30, value_parser = at_least_one)]
        stores: usize,
        /// Most events per second to post (at least 1).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Port of the ingest API (a free one if taken).
        #[arg(long, default_value_t = 8080)]
        ingest_port: u16,
        /// Hours of history to replay quickly before running live.
        #[arg(long, default_value_t = 2)]
        backfill_hours: i64,
        /// Where throwaway data lives (removed on exit).
        #[arg(long, default_value = ".storepulse")]
        data_dir: PathBuf,
    },
    /// Push generated valid events through ingest as fast as asked (or flat out) and
    /// measure what the pipeline sustains: accepted events/s, HTTP latency
    /// percentiles, records/s the compactor applies, and the time from each HTTP
    /// answer until its row is visible in Postgres.
    ///
    /// Without --ingest-url it starts its own stack (Postgres, broker, topics, and
    /// ingest and the compactor as child processes configured by --config) and also
    /// reports the CPU each process used. With --ingest-url it targets a running
    /// stack: --database-url is its read store (keys are minted there, samples
    /// looked up) and --compactor-group its compactor's consumer group.
    ///
    /// Events are generated on demand (random ids, the current time), not paced by
    /// a simulated clock. Each store has its own API key; its requests go one at a
    /// time, in order. A progress line is printed every second on stderr; the report
    /// goes to stdout (--json for a machine-readable one).
    ///
    /// Example: storepulse load --rate 2000 --duration 60 --batch 20
    Load {
        /// Target events per second; 0 posts flat out.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Length of the measured window, in seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds of load before the window (not measured).
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Stores, each with its own API key.
        #[arg(long, default_value_t = 300, value_parser = at_least_one)]
        stores: usize,
        /// Events per request.
        #[arg(long, default_value_t = 100, value_parser = at_least_one)]
        batch: usize,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        concurrency: usize,
        /// Which events to post.
        #[arg(long, value_enum, default_value_t = storepulse::load::Mix::Mixed)]
        mix: storepulse::load::Mix,
        /// Tenant of the load's stores.
        #[arg(long, default_value = "load")]
        tenant: String,
        /// Seed of the generated values.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// How long to wait for the backlog after the window, in seconds.
        #[arg(long, default_value_t = 120)]
        drain_timeout: u64,
        /// How often samples are looked up in Postgres, in ms (the answer-to-visible
        /// figures are upper bounds at most this much above the truth).
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Base URL of a running ingest API (else a stack is started).
        #[arg(long, requires = "database_url")]
        ingest_url: Option<String>,
        /// The running stack's read store.
        #[arg(long)]
        database_url: Option<String>,
        /// The running stack's compactor consumer group.
        #[arg(long, default_value = "storepulse-compactor")]
        compactor_group: String,
        /// Partitions per topic of the started stack.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Compactor processes of the started stack (one consumer group).
        #[arg(long, default_value_t = 1)]
        compactors: usize,
        /// Broker storage of the started stack: memory://nisshi/, postgres://...,
        /// sqlite://...
        #[arg(long, default_value = "memory://nisshi/")]
        broker_storage: String,
        /// Where the started stack's throwaway data lives (removed on exit).
        #[arg(long, default_value = ".storepulse")]
        data_dir: PathBuf,
        /// After the load, measure the broker's raw produce rate on the same broker:
        /// as many records as were accepted (at most 2,000,000), same mix, produced
        /// flat out by one producer into topics of their own; reported beside the
        /// pipeline's rate.
        /// Needs the stack `load` starts (no --ingest-url).
        #[arg(long, conflicts_with = "ingest_url")]
        broker_ceiling: bool,
    },
    /// Post simulated store events to an ingest API.
    Simulate {
        /// Base URL of the ingest API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        /// Mint API keys for the simulated stores in this database (else the
        /// configured postgres.url).
        #[arg(long)]
        database_url: Option<String>,
        /// Tenant of the simulated stores.
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Simulated stores (at least 1).
        #[arg(long, default_value_t = 30, value_parser = at_least_one)]
        stores: usize,
        /// Events per second (at least 1).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Seed of the simulation (same seed, same events).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fraction of deliberately invalid events.
        #[arg(long, default_value_t = 0.0)]
        invalid_ratio: f64,
    },
    /// Manage analysts' Postgres login roles: each sees only its tenant's rows in
    /// the read store (row-level security on every tenant-scoped relation).
    Analysts {
        #[command(subcommand)]
        action: AnalystsAction,
        /// The read store (else the configured postgres.url); connect as its owner.
        #[arg(long, global = true)]
        database_url: Option<String>,
    },
    /// Recreate the read store from the topics into a new, empty database: replays
    /// every input topic from the beginning to its end at the start, with the
    /// compactor's own code, showing progress. Point the compactor at the rebuilt
    /// database afterwards; it resumes from the offsets stored there.
    Rebuild {
        /// The new, empty database to rebuild into.
        #[arg(long)]
        database_url: String,
        /// No progress bar (for logs).
        #[arg(long)]
        quiet: bool,
    },
    /// Manage per-store API keys of the ingest API.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Database holding the keys (else the configured postgres.url).
        #[arg(long, global = true)]
        database_url: Option<String>,
    },
    /// Create the pipeline's topics with their durability and retention, and report
    /// every existing topic whose settings differ.
    ///
    /// Missing topics are created with the partitions, replication factor,
    /// min.insync.replicas and retention given here (else from [kafka] /
    /// [kafka.topics] in the config), cleanup.policy=delete and retention.bytes=-1.
    /// The event-log topics (pos.*, sensor.readings.v1, alerts.v1, forecasts.v1,
    /// notifications.v1) get --retention, default unlimited: the read store is
    /// rebuilt by replaying them. The dead-letter topic ingest.rejected.v1 gets
    /// --dead-letter-retention, default 30d.
    ///
    /// Existing topics are never changed. Each one is compared with what is wanted
    /// (partitions, replication factor, min.insync.replicas, retention.ms,
    /// retention.bytes, cleanup.policy) and every difference is printed as a
    /// `WARNING <topic>: <setting> is <actual>, wanted <wanted>` line; fix it with
    /// your cluster's tools. Exit status: 0 when the topics exist afterwards, even
    /// if some differ; with --check, 1 when any topic is missing or differs.
    ///
    /// The defaults (replication factor 3, min.insync.replicas 2) need three
    /// brokers; on a single local broker pass --replication-factor 1
    /// --min-insync-replicas 1.
    Topics {
        /// Partitions per topic (else kafka.partitions, default 6).
        #[arg(long)]
        partitions: Option<i32>,
        /// Copies of each partition (else kafka.topics.replication_factor, default 3).
        /// At most the number of brokers.
        #[arg(long, value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// min.insync.replicas: with acks=all, an acknowledged record is on this
        /// many brokers (else kafka.topics.min_insync_replicas, default 2). At most
        /// the replication factor.
        #[arg(long, value_parser = clap::value_parser!(i16).range(1..))]
        min_insync_replicas: Option<i16>,
        /// Retention of the event-log topics: `unlimited`, or a number with a unit
        /// ms, s, m, h, d, w, e.g. 90d (else kafka.topics.retention, default unlimited).
        #[arg(long)]
        retention: Option<Retention>,
        /// Retention of the dead-letter topic ingest.rejected.v1, same format (else
        /// kafka.topics.dead_letter_retention, default 30d).
        #[arg(long)]
        dead_letter_retention: Option<Retention>,
        /// Only compare: create nothing, print what is missing or differs, and exit
        /// with status 1 if anything is.
        #[arg(long)]
        check: bool,
    },
    /// Silence notifications: matchers plus a time range, kept in the notifier's
    /// tables (schema `notifier` of the database). A notification held by a silence
    /// is sent when the silence ends if its alert still fires.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
        /// Database of the notifier (else the configured postgres.url).
        #[arg(long, global = true)]
        database_url: Option<String>,
    },
    /// Acknowledge an alert the notifier has routed: it is no longer repeated nor
    /// escalated (the first acknowledgement is kept). Prints the acknowledgement.
    Ack {
        alert_id: String,
        /// Who acknowledges (default $USER).
        #[arg(long)]
        by: Option<String>,
        /// Free text kept with the acknowledgement.
        #[arg(long, default_value = "")]
        comment: String,
        /// Database of the notifier (else the configured postgres.url).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Apply read-store schema migrations.
    Migrate {
        /// Read store to migrate (else the configured postgres.url).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run one service in this process (same as its own binary).
    Run { service: Service },
    /// Dead letters (ingest.rejected.v1): list them, and redrive them to their source
    /// topic once the cause is fixed. See docs/operations.md#dead-letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Show the configuration a service would run with.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Exit 0 when URL answers 2xx within --timeout-ms, else 1: the container
    /// image's health check (`storepulse healthcheck http://127.0.0.1:9102/healthz`),
    /// for images without curl.
    Healthcheck {
        /// What to GET; default $HEALTHCHECK_URL, else ingest's /healthz.
        #[arg(
            env = "HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
        /// How long to wait for the answer, in ms.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Store calendars (time zone, opening hours, holidays) that rules scoped to
    /// open hours use. Reads the calendar file given by --calendar, else
    /// rules.calendar_file.
    Stores {
        #[command(subcommand)]
        action: StoresAction,
        /// The calendar file.
        #[arg(long, global = true)]
        calendar: Option<PathBuf>,
    },
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Forecast tools.
    Forecast {
        #[command(subcommand)]
        action: ForecastAction,
    },
    /// Install the nisshi broker used by the local stack and tests, if missing.
    InstallBroker,
}

#[derive(Debug, Subcommand)]
enum ForecastAction {
    /// Rolling-origin backtest of every forecasting method and of the forecaster's
    /// per-series choice on the history in Postgres (the forecaster's daily demand,
    /// postgres.url), a CSV file, or the store simulator's own sales (--simulated):
    /// MASE and sMAPE per method against seasonal naive, as a table and a PNG chart.
    Backtest(ForecastBacktestArgs),
}

#[derive(Debug, clap::Args)]
struct ForecastBacktestArgs {
    #[command(flatten)]
    common: storepulse_forecaster::backtest_report::BacktestArgs,
    /// Backtest on the simulator's own sales instead: the simulation (the events
    /// `storepulse simulate` posts) run for --days days from 2026-01-05 00:00 UTC,
    /// its sale, refund and void lines added up per store, SKU and day as the
    /// forecaster counts demand. Deterministic for a seed.
    #[arg(long, conflicts_with = "csv")]
    simulated: bool,
    /// Days simulated (with --simulated).
    #[arg(long, default_value_t = 365, value_parser = at_least_one, requires = "simulated")]
    days: usize,
    /// Simulated stores, 40 SKUs each (with --simulated).
    #[arg(long, default_value_t = 3, value_parser = at_least_one, requires = "simulated")]
    stores: usize,
    /// Seed of the simulation (with --simulated).
    #[arg(long, default_value_t = 42, requires = "simulated")]
    seed: u64,
}

#[derive(Debug, Subcommand)]
enum StoresAction {
    /// Check the calendar file; exit 1 (with the section and field at fault) if it
    /// is invalid.
    Check,
    /// List the stores with a section of their own: zone, and open or closed now.
    List,
    /// Show one store's calendar (its own section over its tenant's and the
    /// defaults): zone, weekly hours, holidays, whether it is open at --at (default
    /// now) and when that changes next.
    Show {
        /// The store, as tenant/store.
        store: String,
        /// An instant (RFC 3339, e.g. 2026-12-24T17:30:00Z); default now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesAction {
    /// Replay the store topics through a rule file with the live service's own
    /// evaluation code and print what it would have fired: counts per rule and per
    /// store, and every incident with its times. Reads the topics only (no
    /// consumer group, nothing written). Lateness and idle timeout come from
    /// [rules] in the config, as for the service.
    Backtest {
        /// The rule file to try.
        #[arg(long)]
        rules: PathBuf,
        /// How far back to replay (by broker timestamps), e.g. 7d, 12h.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Store calendar file (else rules.calendar_file).
        #[arg(long)]
        calendar: Option<PathBuf>,
    },
    /// Check a rule file and print its rules per tenant; exit 1 if it is invalid.
    Check {
        /// Rule file (TOML or YAML).
        #[arg(long)]
        rules: PathBuf,
    },
}

/// Which dead letters `dlq list` and `dlq redrive` take; every given one must hold.
#[derive(Debug, clap::Args)]
struct DlqFilter {
    /// Base name of the topic the original came from (`api`: the HTTP API), e.g.
    /// sensor.readings.v1.
    #[arg(long, value_parser = source_topic_name)]
    source_topic: Option<String>,
    /// Rejected at or after this time: RFC 3339 (2026-12-01T08:00:00Z) or a duration
    /// ago (30m, 12h, 7d).
    #[arg(long, value_parser = time_or_ago)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// The reason contains this text (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only dead letters of this store.
    #[arg(long)]
    store: Option<String>,
    /// Only this dead letter, PARTITION:OFFSET as `dlq list` shows it (repeatable).
    #[arg(long = "dead-letter", value_parser = storepulse::dead_letter_admin::parse_position)]
    dead_letters: Vec<(i32, i64)>,
}

impl DlqFilter {
    fn filter(&self) -> storepulse::dead_letter_admin::Filter {
        storepulse::dead_letter_admin::Filter {
            source_topic: self.source_topic.clone(),
            since: self.since,
            reason_contains: self.reason.clone(),
            tenant: self.tenant.clone(),
            store: self.store.clone(),
            positions: self.dead_letters.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead letters: position in ingest.rejected.v1, when and by whom rejected,
    /// source topic/partition/offset (or `api`), store, field, reason, and whether
    /// it can be redriven. Reads to the topic's end; commits nothing.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Show at most the last N matches (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Produce the originals of the matching dead letters again to their source
    /// topics (same bytes, keyed by store), once what rejected them is fixed. Needs
    /// --source-topic or --dead-letter. API rejections and truncated originals are
    /// reported, not sent. Consumers dedupe by event id, but redrive a dead letter
    /// once: the rules service would see an event twice.
    Redrive {
        #[command(flatten)]
        filter: DlqFilter,
        /// Show what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print, as JSON, every key of every section SERVICE reads, loaded exactly as
    /// the service loads it (defaults < --config/$STOREPULSE_CONFIG <
    /// STOREPULSE_<SECTION>__<KEY>), secrets redacted. Fails with the service's own
    /// start-up error on an unknown key or a bad value.
    Show { service: Service },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a key bound to one store; prints the key once.
    Create {
        /// Tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// The one store whose events the key may post.
        #[arg(long)]
        store: String,
        /// Free text to tell keys apart (e.g. the gateway it is installed on).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only keys of this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; ingest refuses it within its cache TTL.
    Revoke { key_id: String },
}

#[derive(Debug, Subcommand)]
enum SilenceAction {
    /// Add a silence; prints its id.
    Add {
        /// `field op "value"` (op =, !=, =~, !~; fields tenant, store, severity, rule,
        /// subject or a label); repeat for several, all must match.
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// How long from --starts-at, e.g. 2h, 30m, 1d.
        #[arg(long, conflicts_with = "ends_at")]
        duration: Option<String>,
        /// End time, RFC 3339 (2026-12-01T18:00:00Z).
        #[arg(long, value_parser = rfc3339)]
        ends_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Start time, RFC 3339 (2026-12-01T08:00:00Z); default now.
        #[arg(long, value_parser = rfc3339)]
        starts_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Why (shown by `silence list`).
        #[arg(long, default_value = "")]
        comment: String,
        /// Who adds it (default $USER).
        #[arg(long)]
        created_by: Option<String>,
    },
    /// List silences not yet ended (--all: ended ones too).
    List {
        /// Also list silences that have ended.
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
enum AnalystsAction {
    /// Create a login role that reads only `--tenant`'s rows. The password is read
    /// from --password-file (first line), else from $STOREPULSE_ANALYST_PASSWORD.
    Create {
        /// The tenant whose rows the role may read.
        #[arg(long)]
        tenant: String,
        /// Role name: lower-case letters, digits and _, starting with a letter.
        #[arg(long)]
        role: String,
        /// File whose first line is the password (else $STOREPULSE_ANALYST_PASSWORD).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List analyst roles and their tenants.
    List,
    /// Drop an analyst role (only roles created by `analysts create`).
    Drop {
        /// The analyst role to drop.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    Ingest,
    Compactor,
    Rules,
    Forecaster,
    Notifier,
}

impl Service {
    /// The service's config section and metrics name.
    fn name(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Compactor => "compactor",
            Service::Rules => "rules",
            Service::Forecaster => "forecaster",
            Service::Notifier => "notifier",
        }
    }
}

/// Counts of [`print_topic_reports`].
#[derive(Debug, Default)]
struct TopicSummary {
    created: usize,
    ok: usize,
    differ: usize,
    missing: usize,
    unchecked: usize,
}

impl TopicSummary {
    fn all_as_wanted(&self) -> bool {
        self.differ == 0 && self.missing == 0
    }
}

impl std::fmt::Display for TopicSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topics: {} created, {} as wanted, {} differ, {} missing",
            self.created, self.ok, self.differ, self.missing
        )?;
        if self.unchecked > 0 {
            write!(f, ", {} with configs not checked", self.unchecked)?;
        }
        if self.differ > 0 {
            write!(f, " (existing topics are never changed by storepulse)")?;
        }
        Ok(())
    }
}

/// One line per topic, one `WARNING` line per difference or unchecked setting.
fn print_topic_reports(reports: &[topic_admin::TopicReport]) -> TopicSummary {
    use topic_admin::TopicStatus;
    let mut s = TopicSummary::default();
    for r in reports {
        match &r.status {
            TopicStatus::Created => {
                s.created += 1;
                println!("{}: created", r.topic);
            }
            TopicStatus::Matches => {
                s.ok += 1;
                println!("{}: exists, as wanted", r.topic);
            }
            TopicStatus::Missing => {
                s.missing += 1;
                println!("{}: MISSING", r.topic);
            }
            TopicStatus::Differs(diffs) => {
                s.differ += 1;
                println!("{}: exists, DIFFERS", r.topic);
                for d in diffs {
                    println!("WARNING {}: {d}", r.topic);
                }
            }
        }
        if let Some(why) = &r.unchecked {
            s.unchecked += 1;
            println!("WARNING {}: {why}", r.topic);
        }
    }
    s
}

fn postgres(src: &ConfigSource, url: Option<String>) -> anyhow::Result<PostgresConfig> {
    let mut pg: PostgresConfig = src.section("postgres")?;
    if let Some(url) = url {
        pg.url = url;
    }
    Ok(pg)
}

/// `--source-topic`: `api` or one of the pipeline's topics (a typo would otherwise
/// select nothing, silently).
fn source_topic_name(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t == "api" || topic::ALL.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(format!(
            "{t:?} is not a source of dead letters; one of: api, {}",
            topic::ALL.join(", ")
        ))
    }
}

/// A time flag: RFC 3339, with an error that says so.
fn rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}: expected an RFC 3339 time such as 2026-12-01T08:00:00Z"))
}

/// A "since" flag: RFC 3339, or a duration before now (`30m`, `12h`, `7d`).
fn time_or_ago(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = rfc3339(text) {
        return Ok(t);
    }
    let ago = storepulse_runtime::span::parse_duration(text).map_err(|_| {
        format!(
            "{text:?}: expected an RFC 3339 time (2026-12-01T08:00:00Z) or a duration ago (30m, 12h, 7d)"
        )
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok(chrono::Utc::now() - ago)
}

/// `--stores`, `--batch` and the like: a count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A pool on the database at `url` (else the configured one), checked by one
/// connection so a wrong address fails here, naming it (password hidden).
async fn connected_pool(
    src: &ConfigSource,
    url: Option<String>,
) -> anyhow::Result<deadpool_postgres::Pool> {
    let pg = postgres(src, url)?;
    let shown = storepulse::effective_config::redact_postgres_url(&pg.url);
    let pool = db::pool(&pg).with_context(|| format!("database {shown}"))?;
    drop(
        pool.get()
            .await
            .with_context(|| format!("cannot connect to the database {shown}"))?,
    );
    Ok(pool)
}

/// A pool on the read store (`url`, else the configured one), migrated.
async fn migrated_read_store(
    src: &ConfigSource,
    url: Option<String>,
) -> anyhow::Result<deadpool_postgres::Pool> {
    let pool = connected_pool(src, url).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shutdown::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let src = ConfigSource::load(cli.config.as_deref())?;
    let token = CancellationToken::new();
    match cli.command {
        Command::Dev {
            stores,
            rate,
            seed,
            ingest_port,
            backfill_hours,
            data_dir,
        } => {
            shutdown::cancel_on_signals(token.clone());
            dev_stack::run(
                DevOptions {
                    stores,
                    rate,
                    seed,
                    ingest_port,
                    backfill_hours,
                    data_dir,
                    tenant_id: "demo".into(),
                },
                token,
            )
            .await
        }
        Command::Simulate {
            ingest_url,
            database_url,
            tenant,
            stores,
            rate,
            duration,
            seed,
            invalid_ratio,
        } => {
            shutdown::cancel_on_signals(token.clone());
            let pool = connected_pool(&src, database_url).await?;
            let mut sim = Simulator::new(SimConfig {
                tenant_id: tenant.clone(),
                stores,
                seed,
                start: Utc::now() - chrono::Duration::hours(1),
                invalid_ratio,
            });
            let mut keys = HashMap::new();
            for store in sim.store_ids() {
                let k = storepulse_ingest::api_keys::create(&pool, &tenant, &store, "simulator")
                    .await?;
                keys.insert(store, k.token);
            }
            let gateway = Gateway::new(&ingest_url, keys);
            let total = u64::from(rate) * duration;
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while sent < total && !token.is_cancelled() {
                tick.tick().await;
                let due = (u64::from(rate) as f64 * started.elapsed().as_secs_f64()) as u64;
                let n = due.min(total).saturating_sub(sent) as usize;
                if n == 0 {
                    continue;
                }
                let batch = sim.take(n);
                gateway.post_all(&batch, 500, 8).await?;
                sent += n as u64;
                eprint!(
                    "\rposted {sent}/{total} events ({:.0}%)",
                    100.0 * sent as f64 / total as f64
                );
            }
            let s = &gateway.stats;
            eprintln!(
                "\ndone: {} accepted, {} rejected, {} retries",
                s.accepted.load(std::sync::atomic::Ordering::Relaxed),
                s.rejected.load(std::sync::atomic::Ordering::Relaxed),
                s.retries.load(std::sync::atomic::Ordering::Relaxed)
            );
            Ok(())
        }
        Command::Load {
            rate,
            duration,
            warmup,
            stores,
            batch,
            concurrency,
            mix,
            tenant,
            seed,
            drain_timeout,
            poll_ms,
            json,
            ingest_url,
            database_url,
            compactor_group,
            partitions,
            compactors,
            broker_storage,
            data_dir,
            broker_ceiling,
        } => {
            shutdown::cancel_on_signals(token.clone());
            let opts = LoadOptions {
                tenant_id: tenant,
                stores,
                rate: (rate > 0.0).then_some(rate),
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
                batch_events: batch,
                concurrency,
                mix,
                seed,
                poll_interval: Duration::from_millis(poll_ms.max(1)),
                drain_timeout: Duration::from_secs(drain_timeout),
                progress: true,
            };
            let mut stack = None;
            let target = match ingest_url {
                Some(url) => LoadTarget {
                    ingest_url: url,
                    pool: migrated_read_store(&src, database_url).await?,
                    compactor_group,
                    processes: Vec::new(),
                    metrics_urls: Vec::new(),
                },
                None => {
                    eprintln!("starting a local stack (Postgres, broker, ingest, compactor) ...");
                    let s = LoadStack::start(&LoadStackOptions {
                        data_dir,
                        partitions,
                        broker_storage,
                        exe: std::env::current_exe()?,
                        config_file: cli.config.clone(),
                        compactors,
                    })
                    .await?;
                    eprintln!(
                        "stack ready in {} (ingest {}, broker {})",
                        s.root().display(),
                        s.ingest_url,
                        s.kafka.brokers
                    );
                    let t = LoadTarget {
                        ingest_url: s.ingest_url.clone(),
                        pool: s.pool.clone(),
                        compactor_group: s.compactor_group.clone(),
                        processes: s.watched(),
                        metrics_urls: s.metrics_urls(),
                    };
                    stack = Some(s);
                    t
                }
            };
            let mut report = storepulse::load::run(&opts, &target, token).await?;
            if let (true, Some(s)) = (broker_ceiling, &stack) {
                eprintln!("measuring the broker's raw produce rate ...");
                let broker = target.processes.iter().find(|p| p.name == "broker");
                report.broker_ceiling = Some(
                    storepulse::load::broker_ceiling(
                        &s.kafka,
                        &opts,
                        (report.accepted_total as usize).min(2_000_000),
                        broker,
                        report.accepted_per_sec,
                    )
                    .await?,
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            drop(target);
            drop(stack);
            Ok(())
        }
        Command::Rebuild {
            database_url,
            quiet,
        } => {
            let k: KafkaConfig = src.section("kafka")?;
            let pg = postgres(&src, Some(database_url))?;
            shutdown::cancel_on_signals(token.clone());
            let report = storepulse::rebuild::rebuild(&k, &pg, !quiet, token.clone()).await?;
            println!(
                "rebuilt the read store from {} records in {:.1}s (consumer group {})",
                report.records,
                report.elapsed.as_secs_f64(),
                report.group_id
            );
            Ok(())
        }
        Command::Analysts {
            action,
            database_url,
        } => {
            let pool = migrated_read_store(&src, database_url).await?;
            match action {
                AnalystsAction::Create {
                    tenant,
                    role,
                    password_file,
                } => {
                    let password = match password_file {
                        Some(f) => std::fs::read_to_string(&f)
                            .with_context(|| format!("read {}", f.display()))?
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        None => std::env::var("STOREPULSE_ANALYST_PASSWORD").context(
                            "give the password with --password-file or $STOREPULSE_ANALYST_PASSWORD",
                        )?,
                    };
                    anyhow::ensure!(!password.is_empty(), "the password must not be empty");
                    analysts::create(&pool, &tenant, &role, &password).await?;
                    println!("created analyst role {role} for tenant {tenant}");
                }
                AnalystsAction::List => {
                    println!("{:<24} {:<20} created", "role", "tenant");
                    for r in analysts::list(&pool).await? {
                        println!(
                            "{:<24} {:<20} {}",
                            r.role_name,
                            r.tenant_id,
                            r.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                        );
                    }
                }
                AnalystsAction::Drop { role } => {
                    analysts::drop(&pool, &role).await?;
                    println!("dropped analyst role {role}");
                }
            }
            Ok(())
        }
        Command::Ack {
            alert_id,
            by,
            comment,
            database_url,
        } => {
            let pool = connected_pool(&src, database_url).await?;
            storepulse_notifier::silences::ensure_schema(&pool).await?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".into());
            let a = storepulse_notifier::acks::ack(&pool, &alert_id, &by, &comment).await?;
            println!(
                "{} acknowledged by {} at {}",
                a.alert_id,
                a.acked_by,
                a.acked_at.format("%Y-%m-%dT%H:%M:%SZ")
            );
            Ok(())
        }
        Command::Silence {
            action,
            database_url,
        } => {
            use storepulse_notifier::silences;
            let pool = connected_pool(&src, database_url).await?;
            silences::ensure_schema(&pool).await?;
            match action {
                SilenceAction::Add {
                    matchers,
                    duration,
                    ends_at,
                    starts_at,
                    comment,
                    created_by,
                } => {
                    let starts_at = starts_at.unwrap_or_else(chrono::Utc::now);
                    let ends_at = match (ends_at, duration) {
                        (Some(t), _) => t,
                        (None, Some(d)) => {
                            let d = storepulse_notifier::policy::parse_duration(&d)
                                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
                            starts_at + chrono::Duration::from_std(d)?
                        }
                        (None, None) => anyhow::bail!("give --duration or --ends-at"),
                    };
                    let by = created_by
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_else(|| "cli".into());
                    let s =
                        silences::add(&pool, &matchers, starts_at, ends_at, &by, &comment).await?;
                    println!("{}", s.id);
                }
                SilenceAction::List { all } => {
                    println!(
                        "{:<36} {:<20} {:<20} {:<12} matchers | comment",
                        "id", "starts_at", "ends_at", "created_by"
                    );
                    for s in silences::list(&pool, all).await? {
                        println!(
                            "{:<36} {:<20} {:<20} {:<12} {} | {}",
                            s.id,
                            s.starts_at.format("%Y-%m-%dT%H:%M:%SZ"),
                            s.ends_at.format("%Y-%m-%dT%H:%M:%SZ"),
                            s.created_by,
                            s.matchers.join(", "),
                            s.comment
                        );
                    }
                }
                SilenceAction::Expire { id } => {
                    silences::expire(&pool, id).await?;
                    println!("expired {id}");
                }
            }
            Ok(())
        }
        Command::Keys {
            action,
            database_url,
        } => {
            let pool = migrated_read_store(&src, database_url).await?;
            match action {
                KeysAction::Create {
                    tenant,
                    store,
                    label,
                } => {
                    let k =
                        storepulse_ingest::api_keys::create(&pool, &tenant, &store, &label).await?;
                    println!("{}", k.token);
                    eprintln!(
                        "key {} for {tenant}/{store}: store it now, it is not shown again",
                        k.key_id
                    );
                }
                KeysAction::List { tenant } => {
                    println!(
                        "{:<14} {:<16} {:<16} {:<25} {:<10} label",
                        "key_id", "tenant", "store", "created", "status"
                    );
                    for k in storepulse_ingest::api_keys::list(&pool, tenant.as_deref()).await? {
                        let status = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "{:<14} {:<16} {:<16} {:<25} {:<10} {}",
                            k.key_id,
                            k.tenant_id,
                            k.store_id,
                            k.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                            status,
                            k.label
                        );
                    }
                }
                KeysAction::Revoke { key_id } => {
                    storepulse_ingest::api_keys::revoke(&pool, &key_id).await?;
                    println!("revoked {key_id}");
                }
            }
            Ok(())
        }
        Command::Topics {
            partitions,
            replication_factor,
            min_insync_replicas,
            retention,
            dead_letter_retention,
            check,
        } => {
            let mut k: KafkaConfig = src.section("kafka")?;
            let n = partitions.unwrap_or(k.partitions);
            anyhow::ensure!(n >= 1, "--partitions must be at least 1");
            let t = &mut k.topics;
            t.replication_factor = replication_factor.unwrap_or(t.replication_factor);
            t.min_insync_replicas = min_insync_replicas.unwrap_or(t.min_insync_replicas);
            t.retention = retention.unwrap_or(t.retention);
            t.dead_letter_retention = dead_letter_retention.unwrap_or(t.dead_letter_retention);
            anyhow::ensure!(
                t.min_insync_replicas <= t.replication_factor,
                "min.insync.replicas {} is more than the replication factor {}: no acks=all \
                 produce could succeed; lower --min-insync-replicas or raise --replication-factor \
                 (kafka.topics.min_insync_replicas / kafka.topics.replication_factor)",
                t.min_insync_replicas,
                t.replication_factor
            );
            let mode = if check {
                topic_admin::Mode::Check
            } else {
                topic_admin::Mode::Create
            };
            let reports = topic_admin::reconcile_topics(&k, &topic::PROVISIONED, n, mode)
                .await
                .context("storepulse topics")?;
            let summary = print_topic_reports(&reports);
            println!("{summary}");
            if check && !summary.all_as_wanted() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate { database_url } => {
            let pool = connected_pool(&src, database_url).await?;
            let applied = db::migrate(&pool).await?;
            println!("applied migrations: {applied:?}");
            println!("read store: {}", db::flavour(&pool).await?);
            Ok(())
        }
        Command::Run { service } => match service {
            Service::Ingest => {
                let c = storepulse_ingest::IngestConfig::from_source(&src)?;
                let log = c.log.clone();
                shutdown::run_until_signalled(c, &log, storepulse_ingest::run).await
            }
            Service::Compactor => {
                let c = storepulse_compactor::CompactorConfig::from_source(&src)?;
                let log = c.log.clone();
                shutdown::run_until_signalled(c, &log, storepulse_compactor::run).await
            }
            Service::Rules => {
                let c = storepulse_rules::config(&src)?;
                let log = c.log.clone();
                shutdown::run_until_signalled(c, &log, storepulse_rules::run).await
            }
            Service::Forecaster => {
                let c = storepulse_forecaster::config(&src)?;
                let log = c.log.clone();
                shutdown::run_until_signalled(c, &log, storepulse_forecaster::run).await
            }
            Service::Notifier => {
                let c = storepulse_notifier::config(&src)?;
                let log = c.log.clone();
                shutdown::run_until_signalled(c, &log, storepulse_notifier::run).await
            }
        },
        Command::Stores { action, calendar } => {
            let mut settings: storepulse_rules::RulesSettings = src.section("rules")?;
            if let Some(c) = calendar {
                settings.calendar_file = c.display().to_string();
            }
            anyhow::ensure!(
                !settings.calendar_file.is_empty(),
                "no calendar file: give --calendar FILE or set rules.calendar_file"
            );
            let cal = storepulse_rules::load_calendar(&settings)?;
            let now = Utc::now().timestamp_micros();
            match action {
                StoresAction::Check => println!(
                    "{}: valid ({} stores with their own section)",
                    settings.calendar_file,
                    cal.stores().len()
                ),
                StoresAction::List => print!("{}", cal.render_list(now)),
                StoresAction::Show { store, at } => {
                    let (tenant, store) = store
                        .split_once('/')
                        .context("name the store as tenant/store")?;
                    let at = match at {
                        Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
                            .with_context(|| format!("--at {text:?} is not an RFC 3339 instant"))?
                            .timestamp_micros(),
                        None => now,
                    };
                    let store = storepulse_rules::observation::StoreRef {
                        tenant: tenant.into(),
                        store: store.into(),
                    };
                    print!("{}", cal.render_store(&store, at));
                }
            }
            Ok(())
        }
        Command::Forecast {
            action: ForecastAction::Backtest(args),
        } => {
            use storepulse_forecaster::backtest_report::{self, Series};
            let report = if args.simulated {
                let cfg = SimConfig {
                    tenant_id: "backtest".into(),
                    stores: args.stores,
                    seed: args.seed,
                    start: chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")?
                        .with_timezone(&Utc),
                    invalid_ratio: 0.0,
                };
                let days = args.days;
                let series: Vec<Series> = tokio::task::spawn_blocking(move || {
                    storepulse::simulator::daily_net_units(cfg, days)
                })
                .await?
                .into_iter()
                .map(|d| Series {
                    name: format!("{}/{}", d.store_id, d.sku),
                    values: d.units,
                })
                .collect();
                let source = format!(
                    "simulator ({} stores, {} days, seed {})",
                    args.stores, args.days, args.seed
                );
                backtest_report::run_on(series, &source, &args.common).await?
            } else {
                let pg: Option<PostgresConfig> = match &args.common.csv {
                    Some(_) => None,
                    None => Some(src.section("postgres")?),
                };
                backtest_report::run(&args.common, pg.as_ref()).await?
            };
            print!("{}", report.render());
            println!("chart: {}", args.common.chart.display());
            Ok(())
        }
        Command::Rules { action } => match action {
            RulesAction::Backtest {
                rules,
                since,
                calendar,
            } => {
                let k: KafkaConfig = src.section("kafka")?;
                let mut settings: storepulse_rules::RulesSettings = src.section("rules")?;
                settings.rules_file = rules.display().to_string();
                if let Some(c) = calendar {
                    settings.calendar_file = c.display().to_string();
                }
                let set = std::sync::Arc::new(storepulse_rules::load_rules(&settings)?);
                let cal = std::sync::Arc::new(storepulse_rules::load_calendar(&settings)?);
                let since = storepulse_rules::backtest::since_ms(&since)
                    .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
                let time = settings.time();
                eprintln!("replaying the store topics from {since} ms (broker time) ...");
                let report = tokio::task::spawn_blocking(move || {
                    storepulse_rules::backtest::run(&k, set, cal, time, Some(since))
                })
                .await??;
                print!("{}", report.render());
                Ok(())
            }
            RulesAction::Check { rules } => {
                let set = storepulse_rules::rule_file::RuleSet::load(&rules)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", rules.display()))?;
                println!("{}: {} rules", rules.display(), set.count());
                Ok(())
            }
        },
        Command::Dlq { action } => {
            use storepulse::dead_letter_admin as dlq;
            let k: KafkaConfig = src.section("kafka")?;
            let idle = Duration::from_secs(30);
            match action {
                DlqAction::List {
                    filter,
                    limit,
                    json,
                } => {
                    let found = dlq::read(&k, &filter.filter(), idle).await?;
                    let skip = if limit == 0 {
                        0
                    } else {
                        found.letters.len().saturating_sub(limit)
                    };
                    if !json {
                        println!(
                            "{:<12} {:<20} {:<10} {:<32} {:<24} {:<6} reason",
                            "dead_letter", "rejected_at", "by", "source", "store", "redo"
                        );
                    }
                    for d in &found.letters[skip..] {
                        let l = dlq::ListedDeadLetter::from(d);
                        if json {
                            println!("{}", serde_json::to_string(&l)?);
                            continue;
                        }
                        let source = match (l.source_topic, l.source_partition, l.source_offset) {
                            (Some(t), Some(p), Some(o)) => format!("{t}/{p}/{o}"),
                            (Some(t), _, _) => t.to_string(),
                            _ => "api".to_string(),
                        };
                        let reason = match l.field {
                            Some(f) => format!("{f}: {}", l.reason),
                            None => l.reason.to_string(),
                        };
                        println!(
                            "{:<12} {:<20} {:<10} {:<32} {:<24} {:<6} {}",
                            l.dead_letter,
                            l.rejected_at,
                            l.rejected_by,
                            source,
                            format!("{}/{}", l.tenant_id, l.store_id),
                            if l.redrivable { "yes" } else { "no" },
                            reason
                        );
                    }
                    eprintln!(
                        "{} dead letters match{}",
                        found.letters.len(),
                        if skip > 0 {
                            format!(" (the last {limit} shown; --limit 0 for all)")
                        } else {
                            String::new()
                        }
                    );
                    for (p, o, why) in &found.undecodable {
                        eprintln!("WARNING {p}:{o} is not a readable dead letter: {why}");
                    }
                }
                DlqAction::Redrive { filter, dry_run } => {
                    anyhow::ensure!(
                        filter.source_topic.is_some() || !filter.dead_letters.is_empty(),
                        "say which dead letters to redrive: --source-topic or --dead-letter"
                    );
                    let found = dlq::read(&k, &filter.filter(), idle).await?;
                    let outcomes = dlq::redrive(&k, &found.letters, dry_run).await?;
                    let sent = outcomes.iter().filter(|o| o.result.is_ok()).count();
                    for o in &outcomes {
                        match &o.result {
                            Ok(to) => println!("{} {} -> {to}", o.dead_letter, o.source),
                            Err(why) => println!("{} {} SKIPPED: {why}", o.dead_letter, o.source),
                        }
                    }
                    println!(
                        "{} {sent} of {} dead letters{}",
                        if dry_run { "would redrive" } else { "redrove" },
                        outcomes.len(),
                        if dry_run {
                            " (dry run: nothing sent)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Show { service },
        } => {
            let shown = storepulse::effective_config::effective(service.name(), &src)?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
        Command::Healthcheck { url, timeout_ms } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(timeout_ms))
                .build()?;
            let status = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .status();
            anyhow::ensure!(status.is_success(), "GET {url}: {status}");
            Ok(())
        }
        Command::InstallBroker => {
            let p = storepulse::local_stack::ensure_nisshi()?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
