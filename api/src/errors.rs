//! etcd's request errors: gRPC code and message, as etcd 3.4's `rpctypes` defines them.

/// gRPC status codes (the ones Keel sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `OK` (0).
    Ok = 0,
    /// `UNKNOWN` (2).
    Unknown = 2,
    /// `INVALID_ARGUMENT` (3).
    InvalidArgument = 3,
    /// `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded = 4,
    /// `NOT_FOUND` (5).
    NotFound = 5,
    /// `RESOURCE_EXHAUSTED` (8).
    ResourceExhausted = 8,
    /// `FAILED_PRECONDITION` (9).
    FailedPrecondition = 9,
    /// `OUT_OF_RANGE` (11).
    OutOfRange = 11,
    /// `UNIMPLEMENTED` (12).
    Unimplemented = 12,
    /// `INTERNAL` (13).
    Internal = 13,
    /// `UNAVAILABLE` (14).
    Unavailable = 14,
}

impl Code {
    /// The code's name as gRPC spells it (`OK`, `InvalidArgument`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Unknown => "Unknown",
            Code::InvalidArgument => "InvalidArgument",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::NotFound => "NotFound",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::OutOfRange => "OutOfRange",
            Code::Unimplemented => "Unimplemented",
            Code::Internal => "Internal",
            Code::Unavailable => "Unavailable",
        }
    }

    /// The code's number as the `grpc-status` trailer carries it (`0`, `3`, ...).
    pub fn digits(self) -> &'static str {
        match self {
            Code::Ok => "0",
            Code::Unknown => "2",
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
            Code::NotFound => "5",
            Code::ResourceExhausted => "8",
            Code::FailedPrecondition => "9",
            Code::OutOfRange => "11",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
        }
    }
}

/// A request error a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The request names no key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More operations in one txn branch than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes to one key in a txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The request is larger than the server accepts.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A sort option etcd does not know.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The revision was compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision is in the future.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease with that id exists.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The TTL is beyond etcd's maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The operation must run on the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Leadership changed while the request was in flight; it may or may not have applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not finish in time; it may or may not have applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The server is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The store outgrew its quota (NOSPACE alarm).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// MoveLeader did not finish in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// The client's deadline (`grpc-timeout`) passed before the answer; the request may or
    /// may not have applied. grpc-go's words for a context past its deadline.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
}

impl EtcdError {
    /// Every error, for looking one up by its message.
    pub const ALL: [EtcdError; 22] = {
        use EtcdError::*;
        [
            EmptyKey,
            KeyNotFound,
            ValueProvided,
            LeaseProvided,
            TooManyOps,
            DuplicateKey,
            RequestTooLarge,
            InvalidSortOption,
            Compacted,
            FutureRev,
            LeaseNotFound,
            LeaseExists,
            LeaseTtlTooLarge,
            NoLeader,
            NotLeader,
            LeaderChanged,
            Timeout,
            Stopped,
            BadLeaderTransferee,
            LeaderTransferTimeout,
            NoSpace,
            DeadlineExceeded,
        ]
    };

    /// The error whose message is `message` (as `to_string` writes it).
    pub fn from_message(message: &str) -> Option<EtcdError> {
        EtcdError::ALL.into_iter().find(|e| e.to_string() == message)
    }

    /// The gRPC status code etcd sends with this error.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey | RequestTooLarge
            | InvalidSortOption => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            LeaseNotFound => Code::NotFound,
            LeaseExists | NotLeader | BadLeaderTransferee => Code::FailedPrecondition,
            NoLeader | LeaderChanged | Timeout | Stopped | LeaderTransferTimeout => Code::Unavailable,
            DeadlineExceeded => Code::DeadlineExceeded,
        }
    }

    /// Whether the request certainly had no effect (a client may retry it blindly).
    pub fn is_definite(&self) -> bool {
        !matches!(
            self,
            EtcdError::LeaderChanged | EtcdError::Timeout | EtcdError::Stopped | EtcdError::DeadlineExceeded
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_are_etcds() {
        assert_eq!(EtcdError::Compacted.to_string(), "etcdserver: mvcc: required revision has been compacted");
        assert_eq!(EtcdError::Compacted.code() as i32, 11);
        assert_eq!(EtcdError::DuplicateKey.to_string(), "etcdserver: duplicate key given in txn request");
        assert_eq!(EtcdError::LeaseNotFound.code(), Code::NotFound);
        assert!(!EtcdError::Timeout.is_definite());
        for e in EtcdError::ALL {
            assert_eq!(EtcdError::from_message(&e.to_string()), Some(e));
        }
        assert_eq!(EtcdError::from_message("no such error"), None);
    }
}
