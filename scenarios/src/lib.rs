//! The catalogue of seeded chaos scenarios, and the sweep that runs them.
//!
//! `cargo test` runs every scenario over a fixed seed range (`KEEL_SEEDS`, default 50); the
//! `keel-sim` binary replays one seed or sweeps a range, optionally with a planted bug.

use keel_raft::{Plant, Plants};
use keel_sim::cluster::{BackendKind, NetChaos};
use keel_sim::nemesis::Fault;
use keel_sim::{RunReport, Scenario};

/// Every scenario, in a fixed order.
pub fn catalogue() -> Vec<Scenario> {
    let base = Scenario::base;
    vec![
        Scenario {
            faults: &[Fault::CrashLeader],
            fault_gap_ms: (1000, 3000),
            ..base("leader-crash-loop", "the leader is killed again and again while clients write")
        },
        Scenario {
            faults: &[Fault::Partition, Fault::IsolateLeader, Fault::Flapping],
            servers: 5,
            ..base("partitions", "majority/minority splits, an isolated leader and flapping partitions in 5 nodes")
        },
        Scenario {
            faults: &[Fault::OneWay, Fault::IsolateLeader],
            ..base("one-way-partitions", "links that drop traffic in one direction only")
        },
        Scenario {
            chaos: NetChaos { loss: 0.05, duplicate: 0.05, delay: 0.1 },
            faults: &[Fault::Lossy, Fault::Crash],
            ..base("lossy-network", "lost, duplicated and reordered peer messages, with crashes")
        },
        Scenario {
            faults: &[Fault::PowerLoss, Fault::Crash],
            servers: 5,
            ..base("power-loss-minority", "power cuts on single nodes: unsynced writes lost, last write torn")
        },
        Scenario {
            faults: &[Fault::PowerLossMajority],
            fault_gap_ms: (2000, 5000),
            ..base("power-loss-majority", "power cuts on a majority at once")
        },
        Scenario {
            max_drift: 0.05,
            lease_clients: 3,
            faults: &[Fault::IsolateLeader, Fault::CrashLeader, Fault::Partition],
            ..base("clock-skew-leases", "clocks offset and drifting 5%, leases kept alive across leader changes")
        },
        Scenario {
            faults: &[Fault::RollingRestart, Fault::TransferLeader],
            fault_gap_ms: (1000, 2000),
            lease_clients: 1,
            ..base("rolling-restarts", "every node restarted in turn, leadership moved")
        },
        Scenario {
            compaction: true,
            watch_clients: 3,
            snapshot_count: 40,
            faults: &[Fault::Crash, Fault::Partition],
            ..base("compaction-under-watch", "compaction and snapshots while watchers catch up")
        },
        Scenario {
            membership: true,
            faults: &[Fault::Crash, Fault::Partition],
            fault_gap_ms: (2000, 5000),
            ..base("membership-change", "a learner joins, is promoted, and an original member leaves, under faults")
        },
        Scenario {
            faults: &[Fault::DiskError, Fault::Crash, Fault::CutTail],
            ..base(
                "disk-errors",
                "failing disks and logs cut short after a clean stop: the node must stop or refuse to start, \
                 then recover when repaired",
            )
        },
        Scenario {
            servers: 5,
            chaos: NetChaos { loss: 0.1, duplicate: 0.0, delay: 0.2 },
            faults: &[Fault::CrashLeader, Fault::IsolateLeader, Fault::Partition],
            fault_gap_ms: (100, 800),
            safety_secs: 30,
            ..base("leader-churn", "5 nodes, lossy links, leaders crashed or cut off every few hundred ms")
        },
        Scenario {
            backend: BackendKind::Rocks,
            faults: &[Fault::Crash, Fault::Partition, Fault::CrashLeader],
            safety_secs: 15,
            ..base("rocksdb-chaos", "the production RocksDB backend under crashes and partitions")
        },
    ]
}

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<Scenario> {
    catalogue().into_iter().find(|s| s.name == name)
}

/// The plant set for a command-line plant name.
pub fn plants_for(plant: Option<Plant>) -> Plants {
    plant.map(Plants::only).unwrap_or_default()
}

/// The command that replays a run.
pub fn replay_command(report: &RunReport, plant: Option<Plant>) -> String {
    let plant = plant.map(|p| format!(" --plant {}", p.name())).unwrap_or_default();
    format!(
        "cargo run -p keel-scenarios --bin keel-sim -- run --scenario {} --seed {}{plant}",
        report.scenario, report.seed
    )
}

/// A multi-line account of a failed run.
pub fn describe_violation(report: &RunReport, plant: Option<Plant>) -> String {
    let mut out = format!("scenario {} seed {} violated:\n", report.scenario, report.seed);
    for v in report.violations.iter().take(10) {
        out.push_str(&format!("  [{}] {}\n", v.checker, v.detail));
    }
    out.push_str("faults:\n");
    for f in report.faults.iter().rev().take(15).rev() {
        out.push_str(&format!("  {f}\n"));
    }
    out.push_str(&format!("replay: {}\n", replay_command(report, plant)));
    out
}
