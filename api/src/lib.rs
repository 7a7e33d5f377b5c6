//! The etcd v3 protocol as Keel speaks it.
//!
//! - [`etcdserverpb`], [`mvccpb`], [`authpb`]: prost types generated from `proto/`, etcd's
//!   packages, services and field numbers, so etcd clients interoperate;
//! - [`grpc`]: the gRPC wire framing (length-prefixed messages, status trailers) and the
//!   table of etcd's RPC methods;
//! - [`EtcdError`]: what clients match on — etcd's status codes and error messages, exactly;
//! - [`authority`]: the repair of the malformed `:authority` etcdctl 3.4 sends on some calls.

pub mod authority;
mod errors;
pub mod grpc;

pub use errors::{Code, EtcdError};

/// etcd's key-value and event messages.
#[allow(missing_docs, clippy::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth messages referenced by the RPCs.
#[allow(missing_docs, clippy::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's v3 RPC requests and responses.
#[allow(missing_docs, clippy::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
