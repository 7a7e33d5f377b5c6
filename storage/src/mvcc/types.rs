//! The key-value requests and results the MVCC store executes.
//!
//! Field numbers follow etcd's `etcdserverpb` and `mvccpb` messages, so these types encode
//! exactly as etcd's do: the node logs them in Raft entries, and the backend stores
//! `KeyValue`s in etcd's own encoding.

/// One version of a key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Revision of the put that created the key (in its current generation).
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of the last modification.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Number of modifications in the current generation (1 after creation).
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// Attached lease, or 0.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// A stored [`KeyValue`] without its value: what rebuilding the key index reads (decoding
/// skips the value field, so values are never copied). Tags are `KeyValue`'s.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct KeyValueHead {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Revision of the put that created the key.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Number of modifications in the current generation.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// Attached lease, or 0.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// Kinds of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventType {
    /// A put.
    Put = 0,
    /// A deletion.
    Delete = 1,
}

/// A change to one key at one revision.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Event {
    /// See [`EventType`].
    #[prost(enumeration = "EventType", tag = "1")]
    pub event_type: i32,
    /// The key after the change (for a delete: key and mod revision only).
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
    /// The key before the change, when asked for. An applied entry's events carry it only
    /// when the entry read it anyway (a delete, or a put asking for it); a watcher that wants
    /// it reads the rest from the store ([`crate::mvcc::KvStore::prev_kv`]).
    #[prost(message, optional, tag = "3")]
    pub prev_kv: Option<KeyValue>,
}

/// Sort order of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortOrder {
    /// No sorting (key order).
    None = 0,
    /// Ascending.
    Ascend = 1,
    /// Descending.
    Descend = 2,
}

/// What a range is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortTarget {
    /// The key.
    Key = 0,
    /// The version.
    Version = 1,
    /// The create revision.
    Create = 2,
    /// The mod revision.
    Mod = 3,
    /// The value.
    Value = 4,
}

/// Read keys `[key, range_end)` (or just `key` when `range_end` is empty; every key `>= key`
/// when `range_end` is `[0]`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeRequest {
    /// First key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range, exclusive.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// At most this many keys (0: no limit).
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Read at this revision (0: the current one).
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// See [`SortOrder`].
    #[prost(enumeration = "SortOrder", tag = "5")]
    pub sort_order: i32,
    /// See [`SortTarget`].
    #[prost(enumeration = "SortTarget", tag = "6")]
    pub sort_target: i32,
    /// Served locally without ReadIndex.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    /// Omit values.
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    /// Return only the count.
    #[prost(bool, tag = "9")]
    pub count_only: bool,
    /// Only keys modified at or after this revision.
    #[prost(int64, tag = "10")]
    pub min_mod_revision: i64,
    /// Only keys modified at or before this revision.
    #[prost(int64, tag = "11")]
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision.
    #[prost(int64, tag = "12")]
    pub min_create_revision: i64,
    /// Only keys created at or before this revision.
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

/// Result of a range.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeResponse {
    /// The keys found (none with `count_only`).
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// More keys exist than `limit` allowed.
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// Keys in the range at the revision (before `limit`).
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// Write one key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PutRequest {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// Lease to attach (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Return the previous version.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the current value.
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// Result of a put.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PutResponse {
    /// The previous version, when asked for and present.
    #[prost(message, optional, tag = "2")]
    pub prev_kv: Option<KeyValue>,
}

/// Delete keys `[key, range_end)` (same range rules as [`RangeRequest`]).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeleteRangeRequest {
    /// First key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range, exclusive.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Return the deleted versions.
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

/// Result of a delete.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeleteRangeResponse {
    /// Number of keys deleted.
    #[prost(int64, tag = "2")]
    pub deleted: i64,
    /// The deleted versions, when asked for.
    #[prost(message, repeated, tag = "3")]
    pub prev_kvs: Vec<KeyValue>,
}

/// One operation of a transaction branch.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RequestOp {
    /// The operation.
    #[prost(oneof = "Request", tags = "1, 2, 3, 4")]
    pub request: Option<Request>,
}

/// An operation.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Request {
    /// A range.
    #[prost(message, tag = "1")]
    Range(RangeRequest),
    /// A put.
    #[prost(message, tag = "2")]
    Put(PutRequest),
    /// A delete.
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
}

/// Result of one operation.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ResponseOp {
    /// The result.
    #[prost(oneof = "Response", tags = "1, 2, 3, 4")]
    pub response: Option<Response>,
}

/// A result.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Response {
    /// Of a range.
    #[prost(message, tag = "1")]
    Range(RangeResponse),
    /// Of a put.
    #[prost(message, tag = "2")]
    Put(PutResponse),
    /// Of a delete.
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeResponse),
    /// Of a nested transaction.
    #[prost(message, tag = "4")]
    Txn(TxnResponse),
}

/// How a compare relates the key's field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareResult {
    /// Equal.
    Equal = 0,
    /// The key's field is greater.
    Greater = 1,
    /// The key's field is less.
    Less = 2,
    /// Not equal.
    NotEqual = 3,
}

/// Which field a compare looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareTarget {
    /// The version.
    Version = 0,
    /// The create revision.
    Create = 1,
    /// The mod revision.
    Mod = 2,
    /// The value.
    Value = 3,
    /// The lease.
    Lease = 4,
}

/// The value a compare tests against.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum TargetUnion {
    /// For `Version`.
    #[prost(int64, tag = "4")]
    Version(i64),
    /// For `Create`.
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    /// For `Mod`.
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    /// For `Value`.
    #[prost(bytes, tag = "7")]
    Value(Vec<u8>),
    /// For `Lease`.
    #[prost(int64, tag = "8")]
    Lease(i64),
}

/// A condition of a transaction.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Compare {
    /// See [`CompareResult`].
    #[prost(enumeration = "CompareResult", tag = "1")]
    pub result: i32,
    /// See [`CompareTarget`].
    #[prost(enumeration = "CompareTarget", tag = "2")]
    pub target: i32,
    /// The key (or the start of a range).
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// The value compared against.
    #[prost(oneof = "TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub target_union: Option<TargetUnion>,
    /// End of the range, when comparing every key in one.
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
}

/// If every compare holds, run `success`, otherwise `failure`; atomically.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxnRequest {
    /// The conditions.
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    /// Operations when all hold.
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    /// Operations otherwise.
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// Result of a transaction.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxnResponse {
    /// Whether the compares held.
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    /// One result per operation of the branch taken.
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

impl RequestOp {
    /// Wraps a request.
    pub fn new(request: Request) -> RequestOp {
        RequestOp { request: Some(request) }
    }
}
