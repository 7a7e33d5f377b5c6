//! Every scenario over a fixed seed range (`KEEL_SEEDS` seeds, default 50, starting at
//! `KEEL_SEED_START`, default 1), replay determinism, and proof that each planted bug is
//! caught. A failure prints the command that replays it.

use keel_raft::Plant;
use keel_scenarios::{catalogue, describe_violation, find, plants_for};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seeds() -> std::ops::Range<u64> {
    let start = env_u64("KEEL_SEED_START", 1);
    start..start + env_u64("KEEL_SEEDS", 50)
}

fn sweep(name: &str) {
    let scenario = find(name).expect("scenario in the catalogue");
    let failures: Vec<String> = seeds()
        .map(|seed| keel_sim::run(&scenario, seed, plants_for(None)))
        .filter(|r| !r.violations.is_empty())
        .map(|r| describe_violation(&r, None))
        .collect();
    assert!(failures.is_empty(), "{} of {} seeds failed:\n{}", failures.len(), seeds().count(), failures.join("\n"));
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                sweep($name);
            }
        )*

        #[test]
        fn every_scenario_has_a_test() {
            let tested = [$($name),*];
            for s in catalogue() {
                assert!(tested.contains(&s.name), "scenario {} has no test", s.name);
            }
        }
    };
}

scenario_tests! {
    leader_crash_loop => "leader-crash-loop",
    partitions => "partitions",
    one_way_partitions => "one-way-partitions",
    lossy_network => "lossy-network",
    power_loss_minority => "power-loss-minority",
    power_loss_majority => "power-loss-majority",
    clock_skew_leases => "clock-skew-leases",
    rolling_restarts => "rolling-restarts",
    compaction_under_watch => "compaction-under-watch",
    membership_change => "membership-change",
    disk_errors => "disk-errors",
    leader_churn => "leader-churn",
    rocksdb_chaos => "rocksdb-chaos",
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    for name in ["leader-crash-loop", "rocksdb-chaos", "clock-skew-leases"] {
        let scenario = find(name).expect("scenario");
        let first = keel_sim::run(&scenario, 7, plants_for(None));
        let again = keel_sim::run(&scenario, 7, plants_for(None));
        let other = keel_sim::run(&scenario, 8, plants_for(None));
        assert_eq!(first.trace, again.trace, "{name}: seed 7 replayed differently");
        assert_eq!(first.events, again.events);
        assert_ne!(first.trace, other.trace, "{name}: seeds 7 and 8 gave the same trace");
    }
}

/// Each planted bug must be caught by some scenario within the first seeds.
#[test]
fn every_planted_bug_is_caught() {
    let scenarios = catalogue();
    for plant in Plant::ALL {
        let caught = (1..=40).find_map(|seed| {
            scenarios.iter().find_map(|s| {
                let report = keel_sim::run(s, seed, plants_for(Some(plant)));
                report.violations.first().map(|v| (s.name, seed, v.checker))
            })
        });
        let (scenario, seed, checker) = caught.unwrap_or_else(|| panic!("planted bug {} was not caught", plant.name()));
        println!("{} caught by {checker} in {scenario} seed {seed}", plant.name());
    }
}
