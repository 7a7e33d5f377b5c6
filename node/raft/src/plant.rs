//! Bugs planted on purpose, so that each checker of the simulator can be shown to fail.
//!
//! A [`Plants`] set can only be made non-empty through [`Plants::only`], which exists only
//! with the `plant` cargo feature; only the simulator enables it and only the scenarios call
//! it. The `keel` binary's configuration always carries the empty set, and `ci/check-deps`
//! fails if keel-node itself enables the feature. Every layer (Raft, the node core) consults
//! the same set.

/// One deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plant {
    /// Appends are acknowledged (and a leader counts itself) before they are durable.
    AckBeforeDurable,
    /// Linearizable reads are served from local state without ReadIndex.
    ReadWithoutReadIndex,
    /// Every node expires leases on its own (skewed) clock and proposes the revoke.
    ExpireLeaseOnFollowerClock,
    /// The watch hub drops an event now and then.
    SkipWatchEvent,
    /// The state machine applies a re-delivered entry a second time after a restart.
    ReapplyAfterRestart,
    /// A snapshot point is recorded, and the WAL compacted, without the store's sync.
    SnapshotWithoutStoreSync,
    /// A member starts on a log that lost records its store had applied.
    StartOnLostLog,
}

impl Plant {
    /// Every plant, in a fixed order.
    pub const ALL: [Plant; 7] = [
        Plant::AckBeforeDurable,
        Plant::ReadWithoutReadIndex,
        Plant::ExpireLeaseOnFollowerClock,
        Plant::SkipWatchEvent,
        Plant::ReapplyAfterRestart,
        Plant::SnapshotWithoutStoreSync,
        Plant::StartOnLostLog,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Plant::AckBeforeDurable => "ack-before-durable",
            Plant::ReadWithoutReadIndex => "read-without-readindex",
            Plant::ExpireLeaseOnFollowerClock => "lease-on-follower-clock",
            Plant::SkipWatchEvent => "skip-watch-event",
            Plant::ReapplyAfterRestart => "reapply-after-restart",
            Plant::SnapshotWithoutStoreSync => "snapshot-without-store-sync",
            Plant::StartOnLostLog => "start-on-lost-log",
        }
    }

    /// One line on what the bug does.
    pub fn description(self) -> &'static str {
        match self {
            Plant::AckBeforeDurable => "appends are acknowledged before they are fsynced",
            Plant::ReadWithoutReadIndex => "linearizable reads are served locally without ReadIndex",
            Plant::ExpireLeaseOnFollowerClock => "any node expires leases on its own skewed clock",
            Plant::SkipWatchEvent => "the watch hub drops some events",
            Plant::ReapplyAfterRestart => "the applied index is not saved with the entry's effects",
            Plant::SnapshotWithoutStoreSync => "the WAL is compacted past state the store has not synced",
            Plant::StartOnLostLog => "a member starts although its log lost entries its store applied",
        }
    }

    /// Looks a plant up by its command-line name.
    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of planted bugs; empty unless built with the `plant` feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plants(u32);

impl Plants {
    /// Whether `plant` is switched on.
    pub fn has(self, plant: Plant) -> bool {
        self.0 & plant.bit() != 0
    }

    /// Whether any plant is on.
    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// A set holding just `plant`.
    #[cfg(feature = "plant")]
    pub fn only(plant: Plant) -> Plants {
        Plants(plant.bit())
    }
}
