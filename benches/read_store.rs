//! Read-store benchmark: rows/s from the broker into Postgres by the compactor, beside
//! a raw `COPY` of the same rows into the same tables in the same run
//! ([`storepulse::read_store_bench`]). Not a criterion benchmark: one run takes tens of
//! seconds and starts its own Postgres cluster and broker.
//!
//! ```sh
//! cargo bench --bench read_store                       # sensor and sales, every flavour installed
//! cargo bench --bench read_store -- --mix sales --flavour plain --events 100000
//! ```

use std::path::PathBuf;

use clap::Parser;
use storepulse::load::Mix;
use storepulse::read_store_bench::{ReadStoreBenchOptions, load_average, run};
use storepulse_runtime::db::Flavour;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Flavours {
    /// Plain PostgreSQL and, when installed, TimescaleDB.
    All,
    Plain,
    Timescaledb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mixes {
    Both,
    Sensor,
    Sales,
}

#[derive(Debug, Parser)]
#[command(about = "rows/s from the broker into Postgres, beside a raw COPY of the same rows")]
struct Args {
    /// Events per run (a sale becomes its row and its lines' rows).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    #[arg(long, value_enum, default_value_t = Mixes::Both)]
    mix: Mixes,
    #[arg(long, value_enum, default_value_t = Flavours::All)]
    flavour: Flavours,
    #[arg(long, default_value_t = 300)]
    stores: usize,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Where the throwaway clusters live.
    #[arg(long, default_value = "/tmp")]
    data_dir: PathBuf,
    /// Print the reports as JSON lines.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = storepulse::local_stack::postgres_bin_dir()?;
    let flavours: Vec<Flavour> = match args.flavour {
        Flavours::Plain => vec![Flavour::Plain],
        Flavours::Timescaledb => vec![Flavour::TimescaleDb],
        Flavours::All if storepulse::local_stack::timescaledb_installed(&bin) => {
            vec![Flavour::Plain, Flavour::TimescaleDb]
        }
        Flavours::All => {
            eprintln!("TimescaleDB is not installed: plain PostgreSQL only");
            vec![Flavour::Plain]
        }
    };
    let mixes = match args.mix {
        Mixes::Both => vec![Mix::Sensor, Mix::Sales],
        Mixes::Sensor => vec![Mix::Sensor],
        Mixes::Sales => vec![Mix::Sales],
    };
    eprintln!(
        "{} CPUs, load average {:.1} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    for flavour in flavours {
        for mix in &mixes {
            let report = run(&ReadStoreBenchOptions {
                flavour,
                mix: *mix,
                events: args.events,
                stores: args.stores,
                partitions: args.partitions,
                data_dir: args.data_dir.clone(),
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}
