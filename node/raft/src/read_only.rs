//! Linearizable reads by ReadIndex (Raft thesis §6.4): the leader records its commit index for
//! each read, confirms with a heartbeat round that it is still leader, and only then releases
//! the read, which the node serves once it has applied up to that index.
//!
//! Invariants: reads are released in the order they arrived; an acknowledgement of a later
//! read's heartbeat also confirms every earlier read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A read that may be served once the local state machine has applied `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// Commit index to wait for.
    pub index: u64,
    /// The context the read was requested with.
    pub request_ctx: Vec<u8>,
}

/// A read waiting for its heartbeat round.
#[derive(Debug, Clone)]
pub(crate) struct PendingRead {
    /// The node that asked (the leader itself or a follower).
    pub from: u64,
    pub index: u64,
    acks: BTreeSet<u64>,
}

/// Reads in flight on the leader.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    pending: BTreeMap<Vec<u8>, PendingRead>,
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// Records a read at commit index `index`; a duplicate context is ignored.
    pub fn add_request(&mut self, index: u64, ctx: Vec<u8>, from: u64, self_id: u64) {
        if self.pending.contains_key(&ctx) {
            return;
        }
        let acks = BTreeSet::from([self_id]);
        self.pending.insert(ctx.clone(), PendingRead { from, index, acks });
        self.queue.push_back(ctx);
    }

    /// Records `from`'s acknowledgement of the heartbeat carrying `ctx`; returns the acks.
    pub fn recv_ack(&mut self, from: u64, ctx: &[u8]) -> Option<&BTreeSet<u64>> {
        let read = self.pending.get_mut(ctx)?;
        read.acks.insert(from);
        Some(&read.acks)
    }

    /// Releases every read up to and including `ctx`, in arrival order.
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<(Vec<u8>, PendingRead)> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .map(|c| {
                let read = self.pending.remove(&c).expect("queued reads are pending");
                (c, read)
            })
            .collect()
    }

    /// Context of the newest pending read, carried by heartbeats.
    pub fn last_pending_ctx(&self) -> Option<&[u8]> {
        self.queue.back().map(Vec::as_slice)
    }

    /// Drops every pending read (leadership changed).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.queue.clear();
    }
}
