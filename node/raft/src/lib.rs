//! A sans-IO Raft core in the shape of etcd-raft's `RawNode`.
//!
//! The core never touches a disk, a socket, a clock or the OS's randomness: time arrives as
//! ticks, randomness from the `ChaCha8Rng` it is handed, and every effect leaves as a
//! [`Ready`]. Its features: PreVote, CheckQuorum, the current-term commit rule, conflict
//! resolution with fast backtracking, bounded in-flight appends, ReadIndex, snapshots and log
//! compaction, one-at-a-time membership changes with learners, and leadership transfer.
//!
//! A driver loop, in outline:
//!
//! ```
//! use keel_raft::{Config, ConfState, MemStorage, RawNode};
//! use rand_chacha::rand_core::SeedableRng;
//!
//! let store = MemStorage::with_conf_state(ConfState { voters: vec![1], learners: vec![] });
//! let mut node = RawNode::new(Config::new(1), store, rand_chacha::ChaCha8Rng::seed_from_u64(7));
//! node.campaign();
//! let mut applied = Vec::new();
//! for _ in 0..4 {
//!     if node.has_ready() {
//!         let ready = node.ready();
//!         // 1. send ready.messages; 2. persist (here: only the in-memory store) ...
//!         if let Some(hs) = ready.hard_state {
//!             node.store_mut().set_hard_state(hs);
//!         }
//!         node.store_mut().append(&ready.entries);
//!         // 3. send ready.persisted_messages; 4. apply committed entries.
//!         applied.extend(ready.committed_entries.iter().map(|e| e.index));
//!         node.advance(ready);
//!     }
//!     if applied.len() == 1 {
//!         node.propose(b"hello".to_vec()).unwrap();
//!     }
//! }
//! assert_eq!(applied, vec![1, 2]); // the leader's no-op, then the proposal
//! ```

mod plant;
mod progress;
mod raft;
mod raft_log;
mod raw_node;
mod read_only;
mod storage;
mod types;

pub use plant::{Plant, Plants};
pub use progress::{Progress, ProgressState};
pub use raft::{Config, ProposalError, Raft, SoftState, StateRole};
pub use raw_node::{RawNode, Ready};
pub use read_only::ReadState;
pub use storage::{MemStorage, Storage, StorageError};
pub use types::*;

#[cfg(test)]
mod tests;
