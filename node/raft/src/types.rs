//! The Raft data types: log entries, persistent state, snapshots and peer messages.
//!
//! They derive `prost::Message`, so `keel-net` puts them on the wire without a second set of
//! types. Tags are stable: a running cluster may mix versions.

/// Node id reserved for "nobody" (no vote cast, no known leader).
pub const NONE: u64 = 0;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    /// Application data (or empty, as a new leader's no-op).
    Normal = 0,
    /// An encoded [`ConfChange`].
    ConfChange = 1,
}

/// One entry of the replicated log.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Entry {
    /// Term of the leader that created the entry.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// Position in the log, starting at 1.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// See [`EntryType`].
    #[prost(enumeration = "EntryType", tag = "3")]
    pub entry_type: i32,
    /// Opaque payload.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

impl Entry {
    /// A normal entry with no term or index assigned yet.
    pub fn normal(data: Vec<u8>) -> Entry {
        Entry { data, ..Default::default() }
    }

    /// Approximate encoded size, used for message and batch size limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }

    /// Whether this entry carries a membership change.
    pub fn is_conf_change(&self) -> bool {
        self.entry_type == EntryType::ConfChange as i32
    }
}

/// State that must be durable before any message that depends on it is sent.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct HardState {
    /// Current term.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// Candidate voted for in `term`, or [`NONE`].
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    /// Highest index known to be committed.
    #[prost(uint64, tag = "3")]
    pub commit: u64,
}

/// The membership of the cluster.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConfState {
    /// Members that vote, sorted.
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<u64>,
    /// Members that replicate but do not vote, sorted.
    #[prost(uint64, repeated, tag = "2")]
    pub learners: Vec<u64>,
}

/// Kinds of membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConfChangeType {
    /// Add a voter, or promote a learner to voter.
    AddNode = 0,
    /// Remove a voter or a learner.
    RemoveNode = 1,
    /// Add a learner.
    AddLearner = 2,
}

/// One membership change; changes apply one at a time.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConfChange {
    /// See [`ConfChangeType`].
    #[prost(enumeration = "ConfChangeType", tag = "1")]
    pub change_type: i32,
    /// The member being changed.
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
    /// Application data (for example the member's peer URLs).
    #[prost(bytes = "vec", tag = "3")]
    pub context: Vec<u8>,
}

/// Where a snapshot sits in the log.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SnapshotMetadata {
    /// Membership at `index`.
    #[prost(message, optional, tag = "1")]
    pub conf_state: Option<ConfState>,
    /// Last index covered by the snapshot.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// Term of the entry at `index`.
    #[prost(uint64, tag = "3")]
    pub term: u64,
}

/// A point-in-time image of the application state.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Snapshot {
    /// Application state, opaque to Raft.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Position and membership.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<SnapshotMetadata>,
}

impl Snapshot {
    /// The snapshot's last index (0 for the empty snapshot).
    pub fn index(&self) -> u64 {
        self.metadata.as_ref().map_or(0, |m| m.index)
    }

    /// The term at the snapshot's last index.
    pub fn term(&self) -> u64 {
        self.metadata.as_ref().map_or(0, |m| m.term)
    }

    /// The membership recorded in the snapshot.
    pub fn conf_state(&self) -> ConfState {
        self.metadata.as_ref().and_then(|m| m.conf_state.clone()).unwrap_or_default()
    }
}

/// Kinds of message exchanged between peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// A follower forwards a proposal to the leader.
    Propose = 0,
    /// Leader replicates entries.
    Append = 1,
    /// Answer to `Append` (also sent for `Snapshot`).
    AppendResponse = 2,
    /// Candidate asks for a vote.
    RequestVote = 3,
    /// Answer to `RequestVote`.
    RequestVoteResponse = 4,
    /// Would-be candidate asks whether it could win, without raising terms.
    RequestPreVote = 5,
    /// Answer to `RequestPreVote`.
    RequestPreVoteResponse = 6,
    /// Leader sends a snapshot to a follower that is too far behind.
    Snapshot = 7,
    /// Leader keeps its followers' election timers reset and confirms reads.
    Heartbeat = 8,
    /// Answer to `Heartbeat`.
    HeartbeatResponse = 9,
    /// A follower forwards a leadership transfer request to the leader.
    TransferLeader = 10,
    /// Leader tells the transfer target to start an election now.
    TimeoutNow = 11,
    /// A follower asks the leader for a read index.
    ReadIndex = 12,
    /// Answer to `ReadIndex`.
    ReadIndexResponse = 13,
}

/// A message between two peers.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Message {
    /// See [`MessageType`].
    #[prost(enumeration = "MessageType", tag = "1")]
    pub msg_type: i32,
    /// Recipient.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// Sender.
    #[prost(uint64, tag = "3")]
    pub from: u64,
    /// Sender's term (0 never appears on the wire).
    #[prost(uint64, tag = "4")]
    pub term: u64,
    /// Term of the entry at `index` (append), or of the candidate's last entry (votes), or the
    /// hint term of a rejection.
    #[prost(uint64, tag = "5")]
    pub log_term: u64,
    /// Log position the message refers to.
    #[prost(uint64, tag = "6")]
    pub index: u64,
    /// Entries to append, or the forwarded proposal / read request.
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<Entry>,
    /// Leader's commit index.
    #[prost(uint64, tag = "8")]
    pub commit: u64,
    /// Snapshot for `MessageType::Snapshot`.
    #[prost(message, optional, tag = "9")]
    pub snapshot: Option<Snapshot>,
    /// Whether the request was refused.
    #[prost(bool, tag = "10")]
    pub reject: bool,
    /// On a refused append: the follower's guess of where the logs agree.
    #[prost(uint64, tag = "11")]
    pub reject_hint: u64,
    /// Read-index context on heartbeats, or the transfer marker on votes.
    #[prost(bytes = "vec", tag = "12")]
    pub context: Vec<u8>,
}

impl Message {
    /// The decoded message type (`Propose` for unknown values, which never validate).
    pub fn kind(&self) -> MessageType {
        MessageType::try_from(self.msg_type).unwrap_or(MessageType::Propose)
    }

    /// A message of `kind` from `from` to `to`; the term is filled in when it is sent.
    pub fn new(kind: MessageType, from: u64, to: u64) -> Message {
        Message { msg_type: kind as i32, from, to, ..Default::default() }
    }
}
