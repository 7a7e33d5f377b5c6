//! `keel-bench`: a load generator for etcd's v3 API (so it measures Keel and etcd alike), the
//! disk's fdatasync floor, and `compare`, which runs both servers side by side and writes
//! `BENCHMARKS.md`.

mod coalesce;
mod compare;
mod fsync;
mod load;
mod report;
mod unary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::load::{LoadArgs, Workload};

#[derive(Parser)]
#[command(name = "keel-bench", version, about = "Load generator for the etcd v3 API; compares Keel with etcd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Put random keys.
    Put(Load),
    /// Get random keys (--consistency l or s).
    Range(Load),
    /// Compare-and-put transactions on random keys.
    Txn(Load),
    /// Delete the key space's keys in order.
    Delete(Load),
    /// Put under a prefix while --watchers watch it; reports put-to-event latency.
    Watch(Load),
    /// Keep one lease per client alive through keep-alive streams.
    LeaseKeepalive(Load),
    /// Gets (share --read-ratio) and puts.
    Mixed(Load),
    /// Measure the disk's fdatasync floor.
    Fsync {
        /// Directory on the disk to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Appends to make durable.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Bytes per append.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run etcd and keel one after the other under the same workloads; write BENCHMARKS.md.
    Compare(compare::CompareArgs),
}

/// A load workload's options.
#[derive(clap::Args)]
struct Load {
    #[command(flatten)]
    args: LoadArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the client takes at most one of the machine's cores from the server under
    // test, and the requests of the clients sharing a connection leave together (see
    // coalesce.rs). Against the two-thread runtime and one write per request, 64-client puts
    // cost the client ~11 instead of ~25 us of CPU each (3 alternating rounds): Keel served
    // 34.0k instead of 24.1k puts/s, etcd 12.7k both ways (its own CPU bounds it).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let (workload, load) = match cli.command {
            Command::Put(load) => (Workload::Put, load),
            Command::Range(load) => (Workload::Range, load),
            Command::Txn(load) => (Workload::Txn, load),
            Command::Delete(load) => (Workload::Delete, load),
            Command::Watch(load) => (Workload::Watch, load),
            Command::LeaseKeepalive(load) => (Workload::LeaseKeepalive, load),
            Command::Mixed(load) => (Workload::Mixed, load),
            Command::Fsync { dir, count, size, json } => {
                return fsync::measure(&dir, count, size).map(|report| print(&report, json));
            }
            Command::Compare(args) => return compare::run(&args).await,
        };
        load::run(workload, &load.args, true).await.map(|report| print(&report, load.json))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(report: &report::Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("serializable"));
    } else {
        print!("{}", report.to_text());
    }
}
