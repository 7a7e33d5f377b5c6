//! Keel's durable state.
//!
//! - [`wal`]: the Raft write-ahead log over the [`wal::Disk`] seam.
//! - [`backend`]: the ordered key-value seam, with [`backend::MemBackend`] (simulation, with
//!   power loss) and [`rocks::RocksBackend`] (production).
//! - [`mvcc`]: etcd's revisioned keyspace, leases and transactions on top of a backend.
//!
//! Nothing here reads a clock or spawns a thread; times are passed in by the caller.

pub mod backend;
pub mod mvcc;
pub mod rocks;
pub mod wal;
