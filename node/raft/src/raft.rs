//! The Raft state machine: one step function per role, driven by ticks and messages.
//!
//! Invariants, each asserted or maintained here:
//! - at most one vote per term, and a vote is durable before it is announced (votes leave
//!   through `RawNode`'s after-persist queue);
//! - a leader commits only entries of its own term by counting replicas (§5.4.2);
//! - a leader counts its own log only once it is durable;
//! - committed entries are never truncated (`RaftLog` asserts it);
//! - at most one membership change is pending at a time.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::plant::{Plant, Plants};
use crate::progress::{ProgressState, ProgressTracker, VoteResult};
use crate::raft_log::RaftLog;
use crate::read_only::{ReadOnly, ReadState};
use crate::storage::{Storage, StorageError};
use crate::types::{ConfChange, ConfChangeType, ConfState, Entry, HardState, Message, MessageType, NONE};

/// Context marking a vote request as part of a leadership transfer: it bypasses the
/// CheckQuorum lease of the voters.
const CAMPAIGN_TRANSFER: &[u8] = b"transfer";

/// Static configuration of a Raft node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (never [`NONE`]).
    pub id: u64,
    /// Ticks without hearing from a leader before campaigning; the actual timeout is drawn
    /// from `[election_tick, 2 * election_tick)`.
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Byte budget of the entries in one append message.
    pub max_size_per_msg: u64,
    /// Unacknowledged appends allowed per follower.
    pub max_inflight_msgs: usize,
    /// Byte budget of committed entries handed out per `Ready`.
    pub max_committed_size_per_ready: u64,
    /// Leader steps down when it has not heard from a quorum for an election timeout, and
    /// followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// Campaigns start with a pre-vote that does not disturb terms.
    pub pre_vote: bool,
    /// Bugs planted on purpose by the simulator's checker tests; always empty in production.
    pub plants: Plants,
}

impl Config {
    /// Defaults close to etcd's: 100 ms ticks, 1 s elections, 100 ms heartbeats.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 16 * 1024 * 1024,
            check_quorum: true,
            pre_vote: true,
            plants: Plants::default(),
        }
    }

    fn validate(&self) {
        assert_ne!(self.id, NONE, "node id must not be zero");
        assert!(self.heartbeat_tick > 0, "heartbeat tick must be positive");
        assert!(self.election_tick > self.heartbeat_tick, "election tick must exceed heartbeat tick");
        assert!(self.max_inflight_msgs > 0, "max inflight messages must be positive");
    }
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without raising its term.
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads the term.
    Leader,
}

/// Volatile state worth reporting to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of, or [`NONE`].
    pub leader_id: u64,
    /// This node's role.
    pub role: StateRole,
}

/// Why a proposal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// No leader is known, a transfer is in progress, or a membership change is pending.
    #[error("raft proposal dropped")]
    Dropped,
}

/// The Raft state machine.
pub struct Raft<S: Storage> {
    /// This node's id.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Vote cast in `term`.
    pub vote: u64,
    /// The log.
    pub raft_log: RaftLog<S>,
    /// Membership and replication progress.
    pub prs: ProgressTracker,
    /// Current role.
    pub state: StateRole,
    /// Known leader.
    pub lead: u64,
    /// Messages to send, drained by `RawNode`.
    pub msgs: Vec<Message>,
    /// Reads ready to serve once applied, drained by `RawNode`.
    pub read_states: Vec<ReadState>,
    /// Leadership transfer in progress, to this node.
    pub lead_transferee: Option<u64>,
    pending_conf_index: u64,
    /// Reads received before this leader committed an entry of its term.
    pending_reads: Vec<Message>,
    read_only: ReadOnly,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    config: Config,
    rng: ChaCha8Rng,
}

impl<S: Storage> Raft<S> {
    /// Restores a node from `store`; randomness (election jitter) comes only from `rng`.
    pub fn new(config: Config, store: S, rng: ChaCha8Rng) -> Raft<S> {
        config.validate();
        let (hs, cs) = store.initial_state();
        let raft_log = RaftLog::new(store);
        let prs = ProgressTracker::new(&cs, raft_log.last_index() + 1, config.max_inflight_msgs);
        let mut raft = Raft {
            id: config.id,
            term: 0,
            vote: NONE,
            raft_log,
            prs,
            state: StateRole::Follower,
            lead: NONE,
            msgs: Vec::new(),
            read_states: Vec::new(),
            lead_transferee: None,
            pending_conf_index: 0,
            pending_reads: Vec::new(),
            read_only: ReadOnly::default(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            config,
            rng,
        };
        raft.become_follower(hs.term, NONE);
        raft.vote = hs.vote;
        raft
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `plant` is switched on (only ever in simulation).
    pub fn planted(&self, plant: Plant) -> bool {
        self.config.plants.has(plant)
    }

    /// Term, vote and commit index as they must be persisted.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.raft_log.committed }
    }

    /// Leader and role.
    pub fn soft_state(&self) -> SoftState {
        SoftState { leader_id: self.lead, role: self.state }
    }

    /// Whether this node may become leader: it is a voter.
    pub fn promotable(&self) -> bool {
        self.prs.is_voter(self.id)
    }

    // ---- role changes -------------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NONE;
        }
        self.lead = NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = self.config.election_tick;
        self.randomized_election_timeout = self.rng.gen_range(base..2 * base);
        self.lead_transferee = None;
        self.prs.reset_votes();
        let next = self.raft_log.last_index() + 1;
        let persisted = self.raft_log.persisted;
        let id = self.id;
        for (&peer, pr) in self.prs.iter_mut() {
            pr.matched = if peer == id { persisted } else { 0 };
            pr.recent_active = peer == id;
            pr.become_probe();
            pr.next = next;
        }
        self.pending_conf_index = 0;
        self.pending_reads.clear();
        self.read_only.reset();
    }

    /// Becomes a follower of `lead` (or of nobody yet) in `term`.
    pub fn become_follower(&mut self, term: u64, lead: u64) {
        self.reset(term);
        self.lead = lead;
        self.state = StateRole::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.state, StateRole::Leader, "a leader cannot become pre-candidate");
        // Term and vote stay: a pre-vote changes nothing durable.
        self.prs.reset_votes();
        self.lead = NONE;
        self.state = StateRole::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.state, StateRole::Leader, "a leader cannot become candidate");
        self.reset(self.term + 1);
        self.vote = self.id;
        self.state = StateRole::Candidate;
    }

    fn become_leader(&mut self) {
        assert_ne!(self.state, StateRole::Follower, "a follower cannot become leader directly");
        self.reset(self.term);
        self.lead = self.id;
        self.state = StateRole::Leader;
        if let Some(pr) = self.prs.get_mut(self.id) {
            pr.become_replicate();
        }
        // Entries of earlier terms commit only through one of ours: append a no-op now.
        self.pending_conf_index = self.raft_log.last_index();
        self.append_entries(vec![Entry::default()]);
    }

    // ---- ticks --------------------------------------------------------------------------

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.prs.quorum_active(self.id) {
                let term = self.term;
                self.become_follower(term, NONE);
                return;
            }
            self.lead_transferee = None;
            self.retry_stalled_snapshots();
        }
        if self.state == StateRole::Leader && self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    /// A snapshot whose answer was lost would otherwise pause a follower forever: after an
    /// election timeout without an answer, probe again.
    fn retry_stalled_snapshots(&mut self) {
        for (_, pr) in self.prs.iter_mut() {
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
        }
    }

    // ---- elections ----------------------------------------------------------------------

    /// Starts an election (after a pre-vote unless `transfer`), if this node may.
    pub fn hup(&mut self, transfer: bool) {
        if self.state == StateRole::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            // The membership this node would lead with is not settled yet.
            return;
        }
        if self.config.pre_vote && !transfer {
            self.campaign(MessageType::RequestPreVote, false);
        } else {
            self.campaign(MessageType::RequestVote, transfer);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.raft_log.applied + 1;
        let hi = self.raft_log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.raft_log.slice(lo, hi, u64::MAX) {
            Ok(entries) => entries.iter().any(Entry::is_conf_change),
            Err(_) => false,
        }
    }

    fn campaign(&mut self, kind: MessageType, transfer: bool) {
        let term = if kind == MessageType::RequestPreVote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        self.prs.record_vote(self.id, true);
        if self.prs.tally_votes() == VoteResult::Won {
            self.on_election_won(kind);
            return;
        }
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        for id in self.prs.ids() {
            if id == self.id || !self.prs.is_voter(id) {
                continue;
            }
            let mut m = Message::new(kind, self.id, id);
            m.term = term;
            m.index = last_index;
            m.log_term = last_term;
            if transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec();
            }
            self.msgs.push(m);
        }
    }

    fn on_election_won(&mut self, kind: MessageType) {
        if kind == MessageType::RequestPreVote {
            self.campaign(MessageType::RequestVote, false);
        } else {
            self.become_leader();
            self.bcast_append();
        }
    }

    // ---- the step function --------------------------------------------------------------

    /// Handles one message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id {
            return;
        }
        if !self.step_term(&m) {
            return;
        }
        match m.kind() {
            MessageType::RequestVote | MessageType::RequestPreVote => self.handle_vote_request(m),
            _ => match self.state {
                StateRole::Leader => self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m),
                StateRole::Follower => self.step_follower(m),
            },
        }
    }

    /// Applies the term rules; returns whether the message should be handled further.
    fn step_term(&mut self, m: &Message) -> bool {
        let kind = m.kind();
        if m.term == 0 {
            // Forwarded proposals and reads carry no term.
            return true;
        }
        if m.term > self.term {
            if matches!(kind, MessageType::RequestVote | MessageType::RequestPreVote) {
                let force = m.context == CAMPAIGN_TRANSFER;
                let in_lease =
                    self.config.check_quorum && self.lead != NONE && self.election_elapsed < self.config.election_tick;
                if !force && in_lease {
                    // We hear from a live leader: a disruptive candidate is ignored.
                    return false;
                }
            }
            match kind {
                MessageType::RequestPreVote => {}
                MessageType::RequestPreVoteResponse if !m.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, NONE),
            }
            return true;
        }
        if m.term < self.term {
            if (self.config.check_quorum || self.config.pre_vote)
                && matches!(kind, MessageType::Heartbeat | MessageType::Append)
            {
                // A stale leader (perhaps cut off, with pre-vote keeping our term from
                // reaching it) learns of the newer term and steps down.
                let mut resp = Message::new(MessageType::AppendResponse, self.id, m.from);
                resp.term = self.term;
                self.msgs.push(resp);
            } else if kind == MessageType::RequestPreVote {
                let mut resp = Message::new(MessageType::RequestPreVoteResponse, self.id, m.from);
                resp.term = self.term;
                resp.reject = true;
                self.msgs.push(resp);
            }
            return false;
        }
        true
    }

    fn handle_vote_request(&mut self, m: Message) {
        let pre = m.kind() == MessageType::RequestPreVote;
        let can_vote = self.vote == m.from || (self.vote == NONE && self.lead == NONE) || (pre && m.term > self.term);
        let resp_kind = if pre { MessageType::RequestPreVoteResponse } else { MessageType::RequestVoteResponse };
        let mut resp = Message::new(resp_kind, self.id, m.from);
        if can_vote && self.raft_log.is_up_to_date(m.index, m.log_term) {
            // A granted pre-vote answers in the candidate's future term.
            resp.term = m.term;
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            resp.term = self.term;
            resp.reject = true;
        }
        self.msgs.push(resp);
    }

    fn step_leader(&mut self, m: Message) {
        match m.kind() {
            MessageType::Propose => {
                // Forwarded proposals cannot be answered with an error; they are dropped.
                let _ = self.propose_entries(m.entries);
            }
            MessageType::AppendResponse => self.handle_append_response(m),
            MessageType::HeartbeatResponse => self.handle_heartbeat_response(m),
            MessageType::TransferLeader => self.handle_transfer_leader(m.from),
            MessageType::ReadIndex => self.handle_read_index(m),
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        let my_response = if self.state == StateRole::PreCandidate {
            MessageType::RequestPreVoteResponse
        } else {
            MessageType::RequestVoteResponse
        };
        match m.kind() {
            MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                self.become_follower(m.term, m.from);
                self.step_follower(m);
            }
            kind if kind == my_response => {
                self.prs.record_vote(m.from, !m.reject);
                match self.prs.tally_votes() {
                    VoteResult::Won => {
                        let kind = if self.state == StateRole::PreCandidate {
                            MessageType::RequestPreVote
                        } else {
                            MessageType::RequestVote
                        };
                        self.on_election_won(kind);
                    }
                    VoteResult::Lost => {
                        let term = self.term;
                        self.become_follower(term, NONE);
                    }
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.kind() {
            MessageType::Propose | MessageType::TransferLeader | MessageType::ReadIndex if self.lead != NONE => {
                let mut fwd = m;
                fwd.to = self.lead;
                fwd.term = 0;
                self.msgs.push(fwd);
            }
            MessageType::Append => {
                self.election_elapsed = 0;
                self.lead = m.from;
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.lead = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.lead = m.from;
                self.handle_snapshot(m);
            }
            MessageType::TimeoutNow => self.hup(true),
            MessageType::ReadIndexResponse => {
                let ctx = m.entries.into_iter().next().map(|e| e.data).unwrap_or_default();
                self.read_states.push(ReadState { index: m.index, request_ctx: ctx });
            }
            _ => {}
        }
    }

    // ---- replication: follower side -----------------------------------------------------

    fn reply(&mut self, kind: MessageType, to: u64) -> &mut Message {
        let mut m = Message::new(kind, self.id, to);
        m.term = self.term;
        self.msgs.push(m);
        self.msgs.last_mut().expect("just pushed")
    }

    fn handle_append(&mut self, m: Message) {
        let committed = self.raft_log.committed;
        if m.index < committed {
            self.reply(MessageType::AppendResponse, m.from).index = committed;
            return;
        }
        match self.raft_log.maybe_append(m.index, m.log_term, m.commit, &m.entries) {
            Some(last) => self.reply(MessageType::AppendResponse, m.from).index = last,
            None => {
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(m.index, m.log_term);
                let resp = self.reply(MessageType::AppendResponse, m.from);
                resp.index = m.index;
                resp.reject = true;
                resp.reject_hint = hint_index;
                resp.log_term = hint_term;
            }
        }
    }

    fn handle_heartbeat(&mut self, m: Message) {
        self.raft_log.commit_to(m.commit.min(self.raft_log.last_index()));
        self.reply(MessageType::HeartbeatResponse, m.from).context = m.context;
    }

    fn handle_snapshot(&mut self, m: Message) {
        let Some(snapshot) = m.snapshot else { return };
        let (index, term) = (snapshot.index(), snapshot.term());
        if index <= self.raft_log.committed {
            let committed = self.raft_log.committed;
            self.reply(MessageType::AppendResponse, m.from).index = committed;
            return;
        }
        if self.raft_log.match_term(index, term) {
            // We already have the entries; just fast-forward the commit index.
            self.raft_log.commit_to(index);
            self.reply(MessageType::AppendResponse, m.from).index = index;
            return;
        }
        let cs = snapshot.conf_state();
        self.raft_log.restore(snapshot);
        self.prs = ProgressTracker::new(&cs, self.raft_log.last_index() + 1, self.config.max_inflight_msgs);
        let last = self.raft_log.last_index();
        self.reply(MessageType::AppendResponse, m.from).index = last;
    }

    // ---- replication: leader side -------------------------------------------------------

    /// Appends entries proposed on this node (leader only).
    fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<(), ProposalError> {
        if entries.is_empty() || self.lead_transferee.is_some() || !self.prs.contains(self.id) {
            return Err(ProposalError::Dropped);
        }
        let conf_changes = entries.iter().filter(|e| e.is_conf_change()).count();
        if conf_changes > 1 || (conf_changes == 1 && self.pending_conf_index > self.raft_log.applied) {
            return Err(ProposalError::Dropped);
        }
        let last = self.append_entries(entries);
        if conf_changes == 1 {
            self.pending_conf_index = last;
        }
        self.bcast_append();
        Ok(())
    }

    /// Proposes entries: appended here when leading, forwarded to the leader otherwise.
    pub fn propose(&mut self, entries: Vec<Entry>) -> Result<(), ProposalError> {
        match self.state {
            StateRole::Leader => self.propose_entries(entries),
            _ if self.lead == NONE => Err(ProposalError::Dropped),
            _ => {
                let mut m = Message::new(MessageType::Propose, self.id, self.lead);
                m.entries = entries;
                self.msgs.push(m);
                Ok(())
            }
        }
    }

    fn append_entries(&mut self, mut entries: Vec<Entry>) -> u64 {
        let last = self.raft_log.last_index();
        for (i, e) in entries.iter_mut().enumerate() {
            e.term = self.term;
            e.index = last + 1 + i as u64;
        }
        let last = self.raft_log.append(&entries);
        if self.planted(Plant::AckBeforeDurable) {
            // Planted bug: count our own log before it is durable.
            self.on_persisted(last);
        }
        last
    }

    /// Called once entries up to `index` are durable locally: a leader may now count itself.
    pub fn on_persisted(&mut self, index: u64) {
        if self.state != StateRole::Leader {
            return;
        }
        let id = self.id;
        if self.prs.get_mut(id).is_some_and(|pr| pr.maybe_update(index)) && self.maybe_commit() {
            self.bcast_append();
        }
    }

    fn maybe_commit(&mut self) -> bool {
        let index = self.prs.committed();
        if !self.raft_log.maybe_commit(index, self.term) {
            return false;
        }
        self.release_pending_reads();
        true
    }

    fn bcast_append(&mut self) {
        for id in self.prs.ids() {
            if id != self.id {
                self.send_append(id, true);
            }
        }
    }

    /// Sends the next appends to `to` as far as its window allows; returns whether one was
    /// sent. With `send_if_empty`, a probe without entries is sent too.
    fn send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.get(to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let term = self.raft_log.term(next - 1);
        let entries = self.raft_log.entries(next, self.config.max_size_per_msg);
        let (term, entries) = match (term, entries) {
            (Ok(term), Ok(entries)) => (term, entries),
            _ => return self.send_snapshot(to),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let pr = self.prs.get_mut(to).expect("checked above");
        if let Some(last) = entries.last().map(|e| e.index) {
            match pr.state {
                ProgressState::Replicate => pr.optimistic_update(last),
                ProgressState::Probe => pr.probe_sent = true,
                ProgressState::Snapshot => unreachable!("paused while sending a snapshot"),
            }
        } else if pr.state == ProgressState::Probe {
            pr.probe_sent = true;
        }
        pr.sent_commit = pr.sent_commit.max(self.raft_log.committed);
        let mut m = Message::new(MessageType::Append, self.id, to);
        m.term = self.term;
        m.index = next - 1;
        m.log_term = term;
        m.entries = entries;
        m.commit = self.raft_log.committed;
        self.msgs.push(m);
        true
    }

    fn send_snapshot(&mut self, to: u64) -> bool {
        if !self.prs.get(to).is_some_and(|pr| pr.recent_active) {
            return false;
        }
        let snapshot = match self.raft_log.snapshot() {
            Ok(s) if s.index() > 0 => s,
            Ok(_) | Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("cannot read the snapshot to send: {e}"),
        };
        let index = snapshot.index();
        self.prs.get_mut(to).expect("member").become_snapshot(index);
        let mut m = Message::new(MessageType::Snapshot, self.id, to);
        m.term = self.term;
        m.snapshot = Some(snapshot);
        self.msgs.push(m);
        true
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.last_pending_ctx().map(<[u8]>::to_vec).unwrap_or_default();
        for id in self.prs.ids() {
            if id == self.id {
                continue;
            }
            let matched = self.prs.get(id).map_or(0, |pr| pr.matched);
            let mut m = Message::new(MessageType::Heartbeat, self.id, id);
            m.term = self.term;
            // Never tell a follower to commit past what it is known to have.
            m.commit = matched.min(self.raft_log.committed);
            m.context = ctx.clone();
            self.msgs.push(m);
        }
    }

    fn handle_append_response(&mut self, m: Message) {
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.prs.get_mut(m.from) else { return };
        pr.recent_active = true;
        if m.reject {
            let hint = if m.log_term > 0 {
                self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term).0
            } else {
                m.reject_hint
            };
            let pr = self.prs.get_mut(m.from).expect("member");
            if pr.maybe_decr_to(m.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(m.from, true);
            }
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched >= pr.pending_snapshot => pr.become_probe(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.free_inflights_to(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.bcast_append();
        } else if old_paused {
            self.send_append(m.from, false);
        }
        while self.send_append(m.from, false) {}
        let stale_commit = self.prs.get(m.from).is_some_and(|pr| pr.sent_commit < self.raft_log.committed);
        if stale_commit {
            self.send_append(m.from, true);
        }
        if self.lead_transferee == Some(m.from) && matched == last_index {
            self.send_timeout_now(m.from);
        }
    }

    fn handle_heartbeat_response(&mut self, m: Message) {
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.prs.get_mut(m.from) else { return };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.free_first_inflight();
        }
        if pr.matched < last_index {
            self.send_append(m.from, true);
        }
        if m.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(m.from, &m.context) else { return };
        if !self.prs.has_quorum(acks) {
            return;
        }
        for (ctx, read) in self.read_only.advance(&m.context) {
            self.respond_to_read(read.from, read.index, ctx);
        }
    }

    // ---- reads --------------------------------------------------------------------------

    /// Requests a linearizable read; `ctx` identifies it in the resulting [`ReadState`].
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        let mut m = Message::new(MessageType::ReadIndex, self.id, self.id);
        m.entries = vec![Entry::normal(ctx)];
        match self.state {
            StateRole::Leader => self.handle_read_index(m),
            _ => self.step_follower(m),
        }
    }

    fn committed_in_current_term(&self) -> bool {
        self.raft_log.term(self.raft_log.committed) == Ok(self.term)
    }

    fn handle_read_index(&mut self, m: Message) {
        if !self.committed_in_current_term() {
            // Our commit index may lag the true one until our own no-op commits.
            self.pending_reads.push(m);
            return;
        }
        let ctx = m.entries.first().map(|e| e.data.clone()).unwrap_or_default();
        let index = self.raft_log.committed;
        if self.prs.is_singleton(self.id) {
            self.respond_to_read(m.from, index, ctx);
            return;
        }
        self.read_only.add_request(index, ctx, m.from, self.id);
        self.bcast_heartbeat();
    }

    fn release_pending_reads(&mut self) {
        if self.pending_reads.is_empty() || !self.committed_in_current_term() {
            return;
        }
        for m in std::mem::take(&mut self.pending_reads) {
            self.handle_read_index(m);
        }
    }

    fn respond_to_read(&mut self, from: u64, index: u64, ctx: Vec<u8>) {
        if from == self.id {
            self.read_states.push(ReadState { index, request_ctx: ctx });
            return;
        }
        let mut m = Message::new(MessageType::ReadIndexResponse, self.id, from);
        m.term = self.term;
        m.index = index;
        m.entries = vec![Entry::normal(ctx)];
        self.msgs.push(m);
    }

    // ---- leadership transfer ------------------------------------------------------------

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        match self.state {
            StateRole::Leader => self.handle_transfer_leader(to),
            _ if self.lead == NONE => {}
            // The request travels with the transferee as its sender, as the leader expects.
            _ => self.msgs.push(Message::new(MessageType::TransferLeader, to, self.lead)),
        }
    }

    fn handle_transfer_leader(&mut self, to: u64) {
        if to == self.id || !self.prs.is_voter(to) || self.lead_transferee == Some(to) {
            return;
        }
        self.lead_transferee = Some(to);
        // The transfer must finish within an election timeout or it is abandoned.
        self.election_elapsed = 0;
        let caught_up = self.prs.get(to).is_some_and(|pr| pr.matched == self.raft_log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, true);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        let mut m = Message::new(MessageType::TimeoutNow, self.id, to);
        m.term = self.term;
        self.msgs.push(m);
    }

    // ---- membership ---------------------------------------------------------------------

    /// Applies a committed membership change; returns the new membership.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        let next = self.raft_log.last_index() + 1;
        match ConfChangeType::try_from(cc.change_type) {
            Ok(ConfChangeType::AddNode) => self.prs.add_voter(cc.node_id, next),
            Ok(ConfChangeType::AddLearner) => self.prs.add_learner(cc.node_id, next),
            Ok(ConfChangeType::RemoveNode) => self.prs.remove(cc.node_id),
            Err(_) => {}
        }
        if self.state == StateRole::Leader {
            if !self.prs.is_voter(self.id) {
                // Removed (or never a voter): let the others elect a leader.
                let term = self.term;
                self.become_follower(term, NONE);
            } else {
                if self.lead_transferee.is_some_and(|t| !self.prs.is_voter(t)) {
                    self.lead_transferee = None;
                }
                // The quorum changed: commit what it now allows, and probe new members.
                self.maybe_commit();
                self.bcast_append();
            }
        }
        self.prs.conf_state()
    }
}
