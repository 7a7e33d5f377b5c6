//! The driver's interface: feed inputs (`tick`, `step`, `propose`, `read_index`), take a
//! [`Ready`], carry it out in the order its fields document, then `advance`.
//!
//! A driver that overlaps writes instead calls [`RawNode::handed_out`] once it has sent a
//! ready's messages, handed its writes to the disk and applied its committed entries, and
//! [`RawNode::persisted`] once those writes are durable; meanwhile it may feed inputs and
//! take further readies. Their writes must become durable in the order the readies were
//! taken, and each ready's `persisted_messages` leave only when its own writes (and so every
//! earlier ready's) are durable: a message in a later ready may promise what an earlier one
//! wrote.

use rand_chacha::ChaCha8Rng;

use crate::plant::Plant;
use crate::raft::{Config, ProposalError, Raft, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::types::{ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};

/// Everything the driver must do next, in this order:
/// 1. send `messages` (any time, even before persisting);
/// 2. persist `snapshot`, `entries` and `hard_state`, and make them durable;
/// 3. send `persisted_messages` (they promise durability: votes, acknowledgements);
/// 4. apply `committed_entries` (all durable locally), in order;
/// 5. serve `read_states` once the applied index reaches each one's index;
/// 6. call [`RawNode::advance`].
#[derive(Debug, Default)]
pub struct Ready {
    /// Leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed; persist before sending `persisted_messages`.
    pub hard_state: Option<HardState>,
    /// Entries to append to the durable log (replacing any conflicting suffix).
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to install, replacing log and state.
    pub snapshot: Option<Snapshot>,
    /// Committed, locally durable entries to apply.
    pub committed_entries: Vec<Entry>,
    /// A leader's appends and heartbeats: safe to send before persisting, so replication
    /// runs alongside the leader's own fsync.
    pub messages: Vec<Message>,
    /// Messages to send only after everything above is durable.
    pub persisted_messages: Vec<Message>,
    /// Linearizable reads confirmed by a quorum.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether there is anything to persist.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}

/// A Raft node with the bookkeeping for `Ready` handoffs.
pub struct RawNode<S: Storage> {
    /// The state machine (exposed for inspection; drive it through `RawNode`).
    pub raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
}

impl<S: Storage> RawNode<S> {
    /// Restores a node from `store`.
    pub fn new(config: Config, store: S, rng: ChaCha8Rng) -> RawNode<S> {
        let raft = Raft::new(config, store, rng);
        let prev_soft_state = raft.soft_state();
        let prev_hard_state = raft.hard_state();
        RawNode { raft, prev_soft_state, prev_hard_state }
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now.
    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, m: Message) {
        self.raft.step(m);
    }

    /// Proposes application data.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposalError> {
        self.raft.propose(vec![Entry::normal(data)])
    }

    /// Proposes a membership change.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<(), ProposalError> {
        let entry = Entry {
            entry_type: EntryType::ConfChange as i32,
            data: prost::Message::encode_to_vec(cc),
            ..Default::default()
        };
        self.raft.propose(vec![entry])
    }

    /// Applies a committed membership change.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        self.raft.apply_conf_change(cc)
    }

    /// Requests a linearizable read identified by `ctx`.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raft.read_index(ctx);
    }

    /// Asks for leadership to move to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        self.raft.transfer_leader(to);
    }

    /// The durable log, for the driver to append to after persisting.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.raft.raft_log.store
    }

    /// The durable log.
    pub fn store(&self) -> &S {
        &self.raft.raft_log.store
    }

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_soft_state
            || r.hard_state() != self.prev_hard_state
            || !r.msgs.is_empty()
            || !r.read_states.is_empty()
            || !r.raft_log.entries_to_write().is_empty()
            || r.raft_log.snapshot_to_write().is_some()
            || r.raft_log.has_next_committed_entries()
    }

    /// Takes what must be done next. Call [`RawNode::advance`] with it once done.
    pub fn ready(&mut self) -> Ready {
        let raft = &mut self.raft;
        let soft = raft.soft_state();
        let hard = raft.hard_state();
        let ack_early = raft.planted(Plant::AckBeforeDurable);
        let leading = raft.state == StateRole::Leader;
        let (messages, persisted_messages) = std::mem::take(&mut raft.msgs).into_iter().partition(|m| {
            ack_early
                || (leading && matches!(m.kind(), MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot))
        });
        let max = raft.config().max_committed_size_per_ready;
        Ready {
            soft_state: (soft != self.prev_soft_state).then_some(soft),
            hard_state: (hard != self.prev_hard_state).then_some(hard),
            entries: raft.raft_log.entries_to_write().to_vec(),
            snapshot: raft.raft_log.snapshot_to_write().cloned(),
            committed_entries: raft.raft_log.next_committed_entries(max),
            messages,
            persisted_messages,
            read_states: std::mem::take(&mut raft.read_states),
        }
    }

    /// Acknowledges that `ready` was carried out: its snapshot, entries and hard state are
    /// durable and in the store, and its committed entries are applied.
    pub fn advance(&mut self, ready: Ready) {
        self.handed_out(&ready);
        self.persisted(&ready);
    }

    /// Records that `ready` was handed out: its messages sent, its snapshot, entries and hard
    /// state on their way to disk (not necessarily durable yet), and its committed entries
    /// applied (a ready with a snapshot has none: entries after a snapshot wait until it is
    /// durable). The next ready holds only what came after.
    pub fn handed_out(&mut self, ready: &Ready) {
        if let Some(soft) = ready.soft_state {
            self.prev_soft_state = soft;
        }
        if let Some(hard) = ready.hard_state {
            self.prev_hard_state = hard;
        }
        let log = &mut self.raft.raft_log;
        log.handed_out_to(ready.entries.last().map_or(0, |e| e.index));
        if let Some(last) = ready.committed_entries.last() {
            log.applied_to(last.index);
        }
    }

    /// Records that `ready`'s snapshot, entries and hard state are durable and in the store.
    /// Call for each handed-out ready in the order they were taken.
    pub fn persisted(&mut self, ready: &Ready) {
        let log = &mut self.raft.raft_log;
        if let Some(snapshot) = &ready.snapshot {
            log.stable_snap_to(snapshot.index());
            log.applied_to(snapshot.index());
        }
        if let Some(last) = ready.entries.last() {
            // Ignored if a later conflicting append already replaced the entry.
            log.stable_to(last.index, last.term);
        }
        let persisted = log.persisted;
        self.raft.on_persisted(persisted);
    }
}
