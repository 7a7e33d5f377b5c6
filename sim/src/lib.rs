//! Deterministic whole-cluster simulation of Keel on madsim.
//!
//! A run builds a cluster of real node cores on simulated network, disk, clocks and
//! randomness, all derived from one seed; drives workload clients against it while the
//! nemesis injects faults; heals the cluster and demands progress; then checks the recorded
//! history for linearizability, Raft safety, replica convergence, watch and lease safety.
//! The same seed replays the same run, event for event (see the trace hash).

pub mod check;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod nemesis;
pub mod scenario;
pub mod seed;
pub mod workload;

pub use scenario::{run, RunReport, Scenario};
