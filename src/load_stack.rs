//! The local stack `storepulse load` starts when it is given no ingest URL: a
//! throwaway Postgres and broker ([`crate::local_stack`]), the pipeline's topics, and
//! ingest and the compactor as child processes of the `storepulse` binary — separate
//! processes, so the CPU each one uses is its own in the load report.
//!
//! The services read the same configuration a deployment would: an optional TOML
//! file (the batching settings under test go there), with the stack's addresses set
//! over it through `STOREPULSE_*` variables. Every child dies with us and is stopped
//! (SIGTERM, then SIGKILL) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use storepulse_runtime::records::topic;
use storepulse_runtime::{KafkaConfig, PostgresConfig, db, kafka};

use crate::dev_stack::wait_for_broker;
use crate::load::WatchedProcess;
use crate::local_stack::{self, LocalBroker, LocalPostgres};

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct LoadStackOptions {
    /// Where the throwaway data lives (a directory under it, removed on drop).
    pub data_dir: PathBuf,
    /// Partitions per topic.
    pub partitions: i32,
    /// Broker storage engine (`memory://nisshi/`, `postgres://...`, `sqlite://...`).
    pub broker_storage: String,
    /// The `storepulse` binary that runs the services.
    pub exe: PathBuf,
    /// Configuration file given to the services (batching settings and the like).
    pub config_file: Option<PathBuf>,
    /// Compactor processes (one consumer group).
    pub compactors: usize,
}

/// A service child process, stopped on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    child: Child,
}

impl ServiceProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        local_stack::terminate(&mut self.child, libc::SIGTERM, Duration::from_secs(15));
    }
}

/// The running stack. Fields drop in order: services, then broker and Postgres.
#[derive(Debug)]
pub struct LoadStack {
    pub services: Vec<ServiceProcess>,
    pub ingest_url: String,
    pub compactor_urls: Vec<String>,
    pub compactor_group: String,
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub pool: deadpool_postgres::Pool,
    pub broker: LocalBroker,
    pub pg: LocalPostgres,
    pub root: tempfile::TempDir,
}

impl LoadStack {
    /// Starts everything and waits until ingest answers and every compactor holds
    /// partitions.
    pub async fn start(opts: &LoadStackOptions) -> anyhow::Result<Self> {
        local_stack::ensure_nisshi()?;
        std::fs::create_dir_all(&opts.data_dir)?;
        let root = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(&opts.data_dir)
            .context("create the data directory")?;
        let pg = LocalPostgres::start(&root.path().join("pg"), None)?;
        let database_url = pg.create_database("storepulse").await?;
        let broker = LocalBroker::start(root.path(), &opts.broker_storage, None)?;
        let kafka = broker.kafka_config("", opts.partitions);
        wait_for_broker(&kafka).await?;
        kafka::ensure_topics(&kafka, &topic::PROVISIONED, opts.partitions).await?;
        let postgres = PostgresConfig {
            url: database_url.clone(),
            ..PostgresConfig::default()
        };
        let pool = db::pool(&postgres)?;
        db::migrate(&pool).await?;

        let compactor_group = "storepulse-compactor-load".to_string();
        let ingest_port = local_stack::free_port()?;
        let ingest_url = format!("http://127.0.0.1:{ingest_port}");
        let base_env = [
            ("STOREPULSE_KAFKA__BROKERS", kafka.brokers.clone()),
            ("STOREPULSE_POSTGRES__URL", database_url.clone()),
            ("STOREPULSE_LOG__FORMAT", "text".to_string()),
            ("STOREPULSE_LOG__FILTER", "warn".to_string()),
        ];
        let spawn = |name: &str, service: &str, env: Vec<(&str, String)>| {
            let log = std::fs::File::create(root.path().join(format!("{name}.log")))?;
            let mut cmd = Command::new(&opts.exe);
            if let Some(file) = &opts.config_file {
                cmd.arg("--config").arg(file);
            }
            cmd.args(["run", service])
                .env_remove("STOREPULSE_CONFIG")
                .envs(base_env.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(env)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            local_stack::die_with_parent(&mut cmd);
            let child = cmd
                .spawn()
                .with_context(|| format!("start {} run {service}", opts.exe.display()))?;
            anyhow::Ok(ServiceProcess {
                name: name.to_string(),
                child,
            })
        };
        let mut services = vec![spawn(
            "ingest",
            "ingest",
            vec![
                (
                    "STOREPULSE_INGEST__LISTEN",
                    format!("127.0.0.1:{ingest_port}"),
                ),
                // Load tests the pipeline, not the per-key limiter.
                (
                    "STOREPULSE_INGEST__RATE_LIMIT_EVENTS_PER_SEC",
                    "1000000000.0".into(),
                ),
                ("STOREPULSE_INGEST__RATE_LIMIT_BURST", "1000000000.0".into()),
            ],
        )?];
        let mut compactor_urls = Vec::new();
        for n in 0..opts.compactors.max(1) {
            let port = local_stack::free_port()?;
            compactor_urls.push(format!("http://127.0.0.1:{port}"));
            let name = if opts.compactors > 1 {
                format!("compactor-{}", n + 1)
            } else {
                "compactor".to_string()
            };
            services.push(spawn(
                &name,
                "compactor",
                vec![
                    (
                        "STOREPULSE_COMPACTOR__HTTP_LISTEN",
                        format!("127.0.0.1:{port}"),
                    ),
                    ("STOREPULSE_COMPACTOR__GROUP_ID", compactor_group.clone()),
                ],
            )?);
        }
        let mut stack = Self {
            services,
            ingest_url,
            compactor_urls,
            compactor_group,
            kafka,
            postgres,
            pool,
            broker,
            pg,
            root,
        };
        stack.await_ready().await?;
        Ok(stack)
    }

    /// Waits until ingest is ready and every compactor has partitions assigned.
    async fn await_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let http = reqwest::Client::new();
        let mut waiting: Vec<String> = std::iter::once(format!("{}/readyz", self.ingest_url))
            .chain(self.compactor_urls.iter().map(|u| format!("{u}/metrics")))
            .collect();
        while !waiting.is_empty() {
            for s in &mut self.services {
                if let Some(status) = s.exited() {
                    let log =
                        std::fs::read_to_string(self.root.path().join(format!("{}.log", s.name)))
                            .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    anyhow::bail!(
                        "{} exited ({status}) while starting; its log ends:\n{}",
                        s.name,
                        tail.join("\n")
                    );
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "services not ready within 90 s: {}",
                waiting.join(", ")
            );
            let mut still = Vec::new();
            for url in waiting {
                let ready = match http.get(&url).send().await {
                    Ok(r) if url.ends_with("/readyz") => r.status().is_success(),
                    Ok(r) => r
                        .text()
                        .await
                        .map(|t| assigned_partitions(&t) > 0)
                        .unwrap_or(false),
                    Err(_) => false,
                };
                if !ready {
                    still.push(url);
                }
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// The processes a load report shows the CPU of.
    pub fn watched(&self) -> Vec<WatchedProcess> {
        let mut out = vec![
            WatchedProcess {
                name: "broker".into(),
                pid: self.broker.pid(),
                with_children: false,
            },
            WatchedProcess {
                name: "postgres".into(),
                pid: self.pg.pid(),
                with_children: true,
            },
        ];
        out.extend(self.services.iter().map(|s| WatchedProcess {
            name: s.name.clone(),
            pid: s.pid(),
            with_children: false,
        }));
        out.push(WatchedProcess {
            name: "load driver".into(),
            pid: std::process::id(),
            with_children: false,
        });
        out
    }

    /// `/metrics` of every service, by name.
    pub fn metrics_urls(&self) -> Vec<(String, String)> {
        let names = self.services.iter().map(|s| s.name.clone());
        let urls = std::iter::once(format!("{}/metrics", self.ingest_url))
            .chain(self.compactor_urls.iter().map(|u| format!("{u}/metrics")));
        names.zip(urls).collect()
    }

    /// Where the stack's logs are.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// The sum of `storepulse_assigned_partitions` samples in a metrics page.
fn assigned_partitions(metrics: &str) -> i64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("storepulse_assigned_partitions"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn assigned_partitions_are_summed_over_topics() {
        let page = "# HELP x\nstorepulse_assigned_partitions{service=\"compactor\",topic=\"a\"} 3\nstorepulse_assigned_partitions{service=\"compactor\",topic=\"b\"} 2\nstorepulse_other 9\n";
        assert_eq!(super::assigned_partitions(page), 5);
    }
}
