//! The Keel node core: one Raft member with its durable state, runtime-neutral.
//!
//! [`Node`] owns the sans-IO Raft core (`keel-raft`), the WAL over a [`Disk`](keel_storage::wal::Disk),
//! the MVCC store over a [`Backend`](keel_storage::backend::Backend), the lease heap and the
//! watch hub. It never names a runtime: drivers feed it time (`now_ms` from their [`Clock`]),
//! peer messages and client requests, and carry out its effects through the seams.

mod node;
mod proposal;
pub mod server;
pub mod service;
pub mod validate;
mod watch;

pub use node::{Applied, Deadline, Node, NodeConfig, NodeError, Output, Probe, Status, Wake, DEFAULT_QUOTA_BYTES};
pub use proposal::{
    alarm, ActiveAlarms, AlarmChange, LeaseGrant, LeaseRevoke, MemberAttributes, Op, Proposal, PublishedMembers, Reply,
    Request, Response,
};
pub use watch::{WatchCreate, WatchHub, WatchLimits, WatchResponse};

/// The node's only source of time: milliseconds on this node's clock, which may be offset
/// from and drift against other nodes' clocks.
pub trait Clock {
    /// Milliseconds since an arbitrary, fixed origin; never goes backwards.
    fn now_ms(&self) -> u64;
}

#[cfg(test)]
mod tests;
