//! `keel-sim`: list, replay and sweep the seeded chaos scenarios.

use std::ops::Range;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel_raft::Plant;
use keel_scenarios::{catalogue, describe_violation, find, plants_for};

#[derive(Parser)]
#[command(name = "keel-sim", about = "Deterministic simulation of Keel clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One scenario per line, name first.
    List,
    /// The planted bugs, one per line, name first.
    ListPlants,
    /// Runs one scenario with one seed.
    Run {
        /// Scenario name.
        #[arg(long)]
        scenario: String,
        /// Seed.
        #[arg(long)]
        seed: u64,
        /// Planted bug to enable.
        #[arg(long, value_parser = parse_plant)]
        plant: Option<Plant>,
        /// Also print the fault log and the leader of every term.
        #[arg(long)]
        verbose: bool,
    },
    /// Runs scenarios over a seed range, stopping at the first violation.
    Sweep {
        /// Scenario name, or `all`.
        #[arg(long)]
        scenario: String,
        /// Seeds, `A..B` (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: Range<u64>,
        /// Planted bug to enable.
        #[arg(long, value_parser = parse_plant)]
        plant: Option<Plant>,
    },
}

fn parse_plant(name: &str) -> Result<Plant, String> {
    Plant::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Plant::ALL.iter().map(|p| p.name()).collect();
        format!("unknown plant {name:?}; known: {}", names.join(", "))
    })
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or("expected A..B")?;
    let a = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b = b.parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a >= b {
        return Err(format!("empty seed range {text}"));
    }
    Ok(a..b)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for s in catalogue() {
                println!("{}\t{} nodes, {}s: {}", s.name, s.servers, s.safety_secs, s.about);
            }
            ExitCode::SUCCESS
        }
        Command::ListPlants => {
            for p in Plant::ALL {
                println!("{}\t{}", p.name(), p.description());
            }
            ExitCode::SUCCESS
        }
        Command::Run { scenario, seed, plant, verbose } => {
            let Some(s) = find(&scenario) else {
                eprintln!("unknown scenario {scenario:?}; see `keel-sim list`");
                return ExitCode::from(2);
            };
            let report = keel_sim::run(&s, seed, plants_for(plant));
            for p in &report.params {
                println!("param {p}");
            }
            if verbose {
                for f in &report.faults {
                    println!("fault {f}");
                }
                for (term, nodes) in &report.leaders {
                    println!("leader term {term}: {nodes:?}");
                }
            }
            println!("{} ops, {} events, {:.1}s simulated", report.ops, report.events, report.sim_secs);
            let ok = report.violations.is_empty();
            if !ok {
                print!("{}", describe_violation(&report, plant));
            }
            let result = if ok { "ok" } else { "violation" };
            println!("seed={seed} scenario={scenario} result={result} trace={:016x}", report.trace);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Sweep { scenario, seeds, plant } => {
            let scenarios = if scenario == "all" {
                catalogue()
            } else {
                match find(&scenario) {
                    Some(s) => vec![s],
                    None => {
                        eprintln!("unknown scenario {scenario:?}; see `keel-sim list`");
                        return ExitCode::from(2);
                    }
                }
            };
            let started = std::time::Instant::now();
            let mut runs = 0;
            let mut simulated = 0.0;
            for seed in seeds {
                for s in &scenarios {
                    let report = keel_sim::run(s, seed, plants_for(plant));
                    runs += 1;
                    simulated += report.sim_secs;
                    if !report.violations.is_empty() {
                        print!("{}", describe_violation(&report, plant));
                        println!("result=violation seed={seed} scenario={}", s.name);
                        return ExitCode::FAILURE;
                    }
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{runs} runs in {secs:.1}s: {:.0} runs/minute, {simulated:.0}s simulated ({:.0}x wall time)",
                runs as f64 * 60.0 / secs,
                simulated / secs
            );
            println!("result=ok");
            ExitCode::SUCCESS
        }
    }
}
