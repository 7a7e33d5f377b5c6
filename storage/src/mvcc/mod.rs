//! The MVCC keyspace: revisions, the key index, leases, and etcd's KV semantics.

mod key_index;
mod lease;
mod store;
mod types;

pub use key_index::{KeyAt, KeyIndex, Revision};
pub use lease::{Lease, Lessor};
pub use store::{get_meta, Apply, Committed, KvStore, MvccError};
pub use types::*;

#[cfg(test)]
mod tests;
