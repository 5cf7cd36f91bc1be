//! `storepulse`: run the pipeline locally, simulate stores, manage API keys and topics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use storepulse::dev_stack::{self, DevOptions};
use storepulse::gateway::Gateway;
use storepulse::simulator::{SimConfig, Simulator};
use storepulse_runtime::records::topic;
use storepulse_runtime::{ConfigSource, KafkaConfig, PostgresConfig, db, kafka, shutdown};
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
    Dev {
        /// Simulated stores.
        #[arg(long, default_value_t = 30)]
        stores: usize,
        /// Most events per second to post.
        #[arg(long, default_value_t = 200)]
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
    /// Post simulated store events to an ingest API.
    Simulate {
        /// Base URL of the ingest API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        /// Mint API keys for the simulated stores in this database (else the
        /// configured postgres.url).
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value = "demo")]
        tenant: String,
        #[arg(long, default_value_t = 30)]
        stores: usize,
        /// Events per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fraction of deliberately invalid events.
        #[arg(long, default_value_t = 0.0)]
        invalid_ratio: f64,
    },
    /// Manage per-store API keys of the ingest API.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Database holding the keys (else the configured postgres.url).
        #[arg(long, global = true)]
        database_url: Option<String>,
    },
    /// Create the pipeline's topics (existing ones are left alone).
    Topics {
        /// Partitions per topic (else kafka.partitions).
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Apply read-store schema migrations.
    Migrate {
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run one service in this process (same as its own binary).
    Run { service: Service },
    /// Install the nisshi broker used by the local stack and tests, if missing.
    InstallBroker,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a key bound to one store; prints the key once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        store: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; ingest refuses it within its cache TTL.
    Revoke { key_id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    Ingest,
    Compactor,
    Rules,
    Forecaster,
    Notifier,
}

fn postgres(src: &ConfigSource, url: Option<String>) -> anyhow::Result<PostgresConfig> {
    let mut pg: PostgresConfig = src.section("postgres")?;
    if let Some(url) = url {
        pg.url = url;
    }
    Ok(pg)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
            let pool = db::pool(&postgres(&src, database_url)?)?;
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
        Command::Keys {
            action,
            database_url,
        } => {
            let pool = db::pool(&postgres(&src, database_url)?)?;
            db::migrate(&pool).await?;
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
        Command::Topics { partitions } => {
            let k: KafkaConfig = src.section("kafka")?;
            let n = partitions.unwrap_or(k.partitions);
            kafka::ensure_topics(&k, &topic::ALL, n)
                .await
                .context("create topics")?;
            for t in topic::ALL {
                println!("{}", k.topic(t));
            }
            Ok(())
        }
        Command::Migrate { database_url } => {
            let pool = db::pool(&postgres(&src, database_url)?)?;
            let applied = db::migrate(&pool).await?;
            println!("applied migrations: {applied:?}");
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
        Command::InstallBroker => {
            let p = storepulse::local_stack::ensure_nisshi()?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
