//! End-to-end rules benchmark: sensor readings per second consumed from the broker,
//! evaluated against 1,000 rules over 10,000 entities and checkpointed by the rules
//! service, beside the broker's raw produce and raw consume rates of the same
//! records measured in the same run ([`storepulse::rules_bench`]). Not a criterion
//! benchmark: one run takes tens of seconds and starts its own Postgres cluster and
//! broker.
//!
//! ```sh
//! cargo bench --bench rules_e2e                            # 200,000 readings
//! cargo bench --bench rules_e2e -- --readings 500000 --partitions 4
//! RULES_E2E_READINGS=50000 cargo bench --bench rules_e2e
//! ```
//!
//! Steps: (1) the readings, encoded as ingest publishes them, are produced flat out
//! (ceiling 1: the broker's raw produce rate); (2) a plain consumer reads them back
//! without decoding (ceiling 2: what any consumer gets); (3) the rules service runs
//! in this process with its default settings from the start of the topic, and its
//! rate is the growth of its checkpointed offsets from its first commit to the last
//! record. The report carries the load average of each step and the CPU used by the
//! rules, Postgres and the broker while the rules ran.

use std::path::PathBuf;

use clap::Parser;
use storepulse::read_store_bench::load_average;
use storepulse::rules_bench::{RulesE2eOptions, run};

#[derive(Debug, Parser)]
#[command(
    about = "sensor readings/s consumed and evaluated by the rules service, beside the broker's raw produce and consume rates"
)]
struct Args {
    /// Sensor readings per run (one per freezer per minute, 10,000 freezers).
    #[arg(long, env = "RULES_E2E_READINGS", default_value_t = 200_000)]
    readings: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Where the throwaway cluster and broker live.
    #[arg(long, default_value = "/tmp")]
    data_dir: PathBuf,
    /// Print the report as a JSON line.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    storepulse::local_stack::ensure_nisshi()?;
    eprintln!(
        "{} CPUs, load average {:.1} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let report = run(&RulesE2eOptions {
        readings: args.readings,
        partitions: args.partitions,
        data_dir: args.data_dir,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
