//! What the node proposes through Raft, and what clients ask of it.
//!
//! A [`Proposal`] is the payload of a normal log entry: the write to apply and the id of the
//! proposal, so the node that proposed it can answer its client once it is applied. Ids are
//! unique across the cluster and across restarts (node id, a per-boot random epoch, a
//! counter), so an entry proposed before a crash never answers a request made after it.

use keel_raft::{ConfChange, ConfState};
use keel_storage::mvcc::{DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest};
use keel_storage::mvcc::{RangeResponse, TxnRequest, TxnResponse};

/// The payload of a normal log entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Proposal {
    /// Cluster-unique proposal id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The write.
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub op: Option<Op>,
}

/// A replicated write.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// Put one key.
    #[prost(message, tag = "2")]
    Put(PutRequest),
    /// Delete keys.
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    /// A transaction (its reads run at apply time, so they are linearizable).
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
    /// Compact history up to this revision.
    #[prost(int64, tag = "5")]
    Compact(i64),
    /// Grant a lease.
    #[prost(message, tag = "6")]
    LeaseGrant(LeaseGrant),
    /// Revoke a lease.
    #[prost(message, tag = "7")]
    LeaseRevoke(LeaseRevoke),
    /// Raise or clear an alarm.
    #[prost(message, tag = "8")]
    Alarm(AlarmChange),
    /// A member's name and client URLs, published by the member itself.
    #[prost(message, tag = "9")]
    Publish(MemberAttributes),
}

/// What a member publishes about itself through Raft (as etcd does), so that every member
/// can list it even while it is down.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberAttributes {
    /// The member.
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// Its name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Where its clients reach it.
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
}

/// Every member's published attributes, as the store keeps them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishedMembers {
    /// One entry per member that published.
    #[prost(message, repeated, tag = "1")]
    pub members: Vec<MemberAttributes>,
}

/// etcd's alarm types.
pub mod alarm {
    /// The store outgrew `--quota-backend-bytes`: writes are refused until disarmed.
    pub const NOSPACE: i32 = 1;
    /// A replica's data diverged.
    pub const CORRUPT: i32 = 2;
}

/// Raise (`activate`) or clear an alarm of a member.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct AlarmChange {
    /// The member the alarm is about.
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// Its type (see [`alarm`]).
    #[prost(int32, tag = "2")]
    pub alarm: i32,
    /// Raise it (clear it otherwise).
    #[prost(bool, tag = "3")]
    pub activate: bool,
}

/// The active alarms, as the store keeps them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ActiveAlarms {
    /// Each raised alarm.
    #[prost(message, repeated, tag = "1")]
    pub alarms: Vec<AlarmChange>,
}

/// Grant lease `id` with `ttl` seconds.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct LeaseGrant {
    /// Lease id (chosen before proposing; never 0).
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Seconds to live.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
}

/// Revoke lease `id`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct LeaseRevoke {
    /// Lease id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Proposed by the leader because the lease expired (not by a client).
    #[prost(bool, tag = "2")]
    pub expired: bool,
}

/// A client request to the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Read keys (linearizable unless `serializable`).
    Range(RangeRequest),
    /// Write one key.
    Put(PutRequest),
    /// Delete keys.
    DeleteRange(DeleteRangeRequest),
    /// Compare, then write.
    Txn(TxnRequest),
    /// Compact history up to `revision`.
    Compact {
        /// The revision.
        revision: i64,
    },
    /// Grant a lease (`id` 0: the node picks one).
    LeaseGrant {
        /// Requested id or 0.
        id: i64,
        /// Seconds to live.
        ttl: i64,
    },
    /// Revoke a lease and delete its keys.
    LeaseRevoke {
        /// Lease id.
        id: i64,
    },
    /// Renew a lease to its full TTL (served by the leader after confirming leadership).
    LeaseKeepAlive {
        /// Lease id.
        id: i64,
    },
    /// Remaining time of a lease (served by the leader).
    LeaseTimeToLive {
        /// Lease id.
        id: i64,
        /// Also list the attached keys.
        keys: bool,
    },
    /// Every lease id.
    LeaseLeases,
    /// Change the membership.
    ConfChange(ConfChange),
    /// The active alarms.
    AlarmList,
    /// Raise or clear an alarm.
    Alarm(AlarmChange),
    /// Publish this member's attributes.
    Publish(MemberAttributes),
}

/// A successful answer, with the store revision it was served at.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Header revision: the store revision after the request.
    pub revision: i64,
    /// The answer.
    pub response: Response,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Range answer.
    Range(RangeResponse),
    /// Put answer.
    Put(PutResponse),
    /// DeleteRange answer.
    DeleteRange(DeleteRangeResponse),
    /// Txn answer.
    Txn(TxnResponse),
    /// Compaction done.
    Compact,
    /// Lease granted.
    LeaseGrant {
        /// Its id.
        id: i64,
        /// Its TTL, seconds.
        ttl: i64,
    },
    /// Lease revoked.
    LeaseRevoke,
    /// Lease renewed.
    LeaseKeepAlive {
        /// Its id.
        id: i64,
        /// TTL it was renewed to, seconds.
        ttl: i64,
    },
    /// Lease status.
    LeaseTimeToLive {
        /// Its id.
        id: i64,
        /// Seconds left.
        ttl: i64,
        /// Seconds granted.
        granted_ttl: i64,
        /// Attached keys, when asked for.
        keys: Vec<Vec<u8>>,
    },
    /// Lease ids.
    LeaseLeases(Vec<i64>),
    /// Membership after the change.
    ConfChange(ConfState),
    /// Alarms: all active ones (list), or the one raised or cleared (empty if nothing changed).
    Alarms(Vec<AlarmChange>),
    /// Attributes published.
    Published,
}
