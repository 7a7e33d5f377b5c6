//! The leader's view of each peer's log: how far it matches, what to send next, and how many
//! appends may be in flight; plus the quorum arithmetic over voters.
//!
//! Invariants: `matched < next`; in `Replicate` state at most `max_inflight` appends are
//! unacknowledged; learners never count towards a quorum.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::ConfState;

/// How the leader sends to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Send one append per heartbeat interval until a match is found.
    Probe,
    /// Stream appends optimistically, bounded by the in-flight window.
    Replicate,
    /// A snapshot is on its way; send nothing until it is acknowledged.
    Snapshot,
}

/// Bounded window of unacknowledged appends, each remembered by its last index.
#[derive(Debug, Clone)]
pub struct Inflights {
    last_indexes: VecDeque<u64>,
    capacity: usize,
}

impl Inflights {
    fn new(capacity: usize) -> Inflights {
        Inflights { last_indexes: VecDeque::with_capacity(capacity), capacity }
    }

    /// Whether no more appends may be sent.
    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    fn add(&mut self, last_index: u64) {
        assert!(!self.full(), "inflight window overflow");
        self.last_indexes.push_back(last_index);
    }

    fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&i| i <= index) {
            self.last_indexes.pop_front();
        }
    }

    fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }

    fn reset(&mut self) {
        self.last_indexes.clear();
    }

    /// Number of appends in flight.
    pub fn count(&self) -> usize {
        self.last_indexes.len()
    }
}

/// Replication progress of one peer.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// Send mode.
    pub state: ProgressState,
    /// In `Probe`: an append was sent and not yet answered.
    pub probe_sent: bool,
    /// In `Snapshot`: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// Heard from since the last quorum check.
    pub recent_active: bool,
    /// Unacknowledged appends.
    pub inflights: Inflights,
    /// Highest commit index sent to this peer, so a stale one can be refreshed.
    pub sent_commit: u64,
}

impl Progress {
    fn new(next: u64, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            recent_active: false,
            inflights: Inflights::new(max_inflight),
            sent_commit: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    /// Switches to probing from just after the match (or the snapshot just sent).
    pub fn become_probe(&mut self) {
        let next = match self.state {
            ProgressState::Snapshot => (self.matched + 1).max(self.pending_snapshot + 1),
            _ => self.matched + 1,
        };
        self.reset_state(ProgressState::Probe);
        self.next = next;
    }

    /// Switches to streaming appends.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    /// Switches to sending the snapshot at `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// Records an acknowledgement up to `index`; returns whether it was news.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Records that an append ending at `last` was sent while replicating.
    pub fn optimistic_update(&mut self, last: u64) {
        self.next = last + 1;
        self.inflights.add(last);
    }

    /// Records that an append after `rejected` was refused, the follower hinting that its log
    /// may agree up to `match_hint`. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Records an answered append (frees the window) after an acknowledgement up to `index`.
    pub fn free_inflights_to(&mut self, index: u64) {
        self.inflights.free_to(index);
    }

    /// Lets one more append through after a heartbeat answer, so a lost append cannot stall
    /// a full window forever.
    pub fn free_first_inflight(&mut self) {
        self.inflights.free_first_one();
    }

    /// Whether the leader should hold back appends to this peer.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// Membership, votes and progress of every peer.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    progress: BTreeMap<u64, Progress>,
    votes: BTreeMap<u64, bool>,
    max_inflight: usize,
}

/// Outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet.
    Pending,
    /// A quorum refused.
    Lost,
    /// A quorum granted.
    Won,
}

impl ProgressTracker {
    /// Tracker for the members in `cs`, every peer probed from `next`.
    pub fn new(cs: &ConfState, next: u64, max_inflight: usize) -> ProgressTracker {
        let mut tracker = ProgressTracker {
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        };
        for &id in &cs.voters {
            tracker.add_voter(id, next);
        }
        for &id in &cs.learners {
            tracker.add_learner(id, next);
        }
        tracker
    }

    /// The membership as a [`ConfState`].
    pub fn conf_state(&self) -> ConfState {
        ConfState { voters: self.voters.iter().copied().collect(), learners: self.learners.iter().copied().collect() }
    }

    /// Adds `id` as a voter (promoting it if it is a learner).
    pub fn add_voter(&mut self, id: u64, next: u64) {
        self.learners.remove(&id);
        self.voters.insert(id);
        self.progress.entry(id).or_insert_with(|| Progress::new(next, self.max_inflight));
    }

    /// Adds `id` as a learner; a voter is never demoted.
    pub fn add_learner(&mut self, id: u64, next: u64) {
        if self.voters.contains(&id) {
            return;
        }
        self.learners.insert(id);
        self.progress.entry(id).or_insert_with(|| Progress::new(next, self.max_inflight));
    }

    /// Removes `id` entirely.
    pub fn remove(&mut self, id: u64) {
        self.voters.remove(&id);
        self.learners.remove(&id);
        self.progress.remove(&id);
        self.votes.remove(&id);
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: u64) -> bool {
        self.progress.contains_key(&id)
    }

    /// Whether the cluster has exactly one voter, `id`.
    pub fn is_singleton(&self, id: u64) -> bool {
        self.voters.len() == 1 && self.voters.contains(&id)
    }

    /// Progress of `id`.
    pub fn get(&self, id: u64) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Mutable progress of `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    /// Every member's id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.progress.keys().copied().collect()
    }

    /// Every member's progress.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Progress)> {
        self.progress.iter_mut()
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index matched by a quorum of voters.
    pub fn committed(&self) -> u64 {
        if self.voters.is_empty() {
            return u64::MAX;
        }
        let mut matched: Vec<u64> = self.voters.iter().map(|id| self.progress[id].matched).collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    /// Forgets all votes.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote (the first one counts).
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// Counts the votes of voters.
    pub fn tally_votes(&self) -> VoteResult {
        let granted = self.voters.iter().filter(|id| self.votes.get(id) == Some(&true)).count();
        let rejected = self.voters.iter().filter(|id| self.votes.get(id) == Some(&false)).count();
        if granted >= self.quorum() {
            VoteResult::Won
        } else if rejected + self.quorum() > self.voters.len() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// Whether a quorum of voters (counting `self_id`) was heard from recently; clears the
    /// marks for the next check.
    pub fn quorum_active(&mut self, self_id: u64) -> bool {
        let active = self.voters.iter().filter(|id| **id == self_id || self.progress[id].recent_active).count();
        for (id, pr) in self.progress.iter_mut() {
            pr.recent_active = *id == self_id;
        }
        active >= self.quorum()
    }

    /// Whether the acknowledgements in `acks` (voter ids) form a quorum.
    pub fn has_quorum(&self, acks: &BTreeSet<u64>) -> bool {
        self.voters.iter().filter(|id| acks.contains(id)).count() >= self.quorum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(voters: &[u64]) -> ProgressTracker {
        ProgressTracker::new(&ConfState { voters: voters.to_vec(), learners: vec![] }, 1, 4)
    }

    #[test]
    fn committed_is_the_quorum_match() {
        let mut t = tracker(&[1, 2, 3]);
        for (id, m) in [(1, 5), (2, 3), (3, 1)] {
            t.get_mut(id).unwrap().maybe_update(m);
        }
        assert_eq!(t.committed(), 3);
    }

    #[test]
    fn learners_do_not_count() {
        let mut t = tracker(&[1]);
        t.add_learner(2, 1);
        t.get_mut(2).unwrap().maybe_update(9);
        assert_eq!(t.committed(), 0);
        t.record_vote(2, true);
        assert_eq!(t.tally_votes(), VoteResult::Pending);
    }

    #[test]
    fn votes_decide_at_quorum() {
        let mut t = tracker(&[1, 2, 3]);
        t.record_vote(1, true);
        assert_eq!(t.tally_votes(), VoteResult::Pending);
        t.record_vote(2, false);
        t.record_vote(3, false);
        assert_eq!(t.tally_votes(), VoteResult::Lost);
    }

    #[test]
    fn probe_decrements_to_hint_and_ignores_stale_rejections() {
        let mut p = Progress::new(10, 4);
        assert!(!p.maybe_decr_to(5, 2));
        assert!(p.maybe_decr_to(9, 2));
        assert_eq!(p.next, 3);
    }

    #[test]
    fn inflight_window_pauses_replication() {
        let mut p = Progress::new(1, 2);
        p.become_replicate();
        p.optimistic_update(1);
        p.optimistic_update(2);
        assert!(p.is_paused());
        p.free_inflights_to(1);
        assert!(!p.is_paused());
    }
}
