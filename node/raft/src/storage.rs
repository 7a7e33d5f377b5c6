//! The log as Raft reads it: a read-only [`Storage`] trait and [`MemStorage`], the in-memory
//! copy of the durable log that the node keeps beside its write-ahead log.
//!
//! Invariants of `MemStorage`: `entries[0]` is a dummy holding the index and term of the last
//! compacted entry (the snapshot point); every later entry's index is one more than the one
//! before. Only entries the driver has made durable are ever appended here.

use crate::types::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

/// Why the log cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is older than the last snapshot.
    #[error("requested index is unavailable due to compaction")]
    Compacted,
    /// The requested index is past the end of the log.
    #[error("requested entry at index is unavailable")]
    Unavailable,
    /// A snapshot was requested but none is ready yet.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The snapshot is older than the one already held.
    #[error("requested snapshot is out of date")]
    SnapshotOutOfDate,
}

/// Result of storage reads.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Read access to the stable log. Writing is the driver's job.
pub trait Storage {
    /// Hard state and membership to start from.
    fn initial_state(&self) -> (HardState, ConfState);
    /// Entries `[lo, hi)`, at most `max_size` bytes but always at least one.
    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>>;
    /// Term of the entry at `index`; the snapshot point's term is available too.
    fn term(&self, index: u64) -> Result<u64>;
    /// First index that still has an entry.
    fn first_index(&self) -> u64;
    /// Index of the last entry.
    fn last_index(&self) -> u64;
    /// The most recent snapshot.
    fn snapshot(&self) -> Result<Snapshot>;
}

/// In-memory log of durable entries, with the latest snapshot.
#[derive(Debug, Clone)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage { hard_state: HardState::default(), snapshot: Snapshot::default(), entries: vec![Entry::default()] }
    }
}

impl MemStorage {
    /// An empty log whose initial membership is `conf_state`.
    pub fn with_conf_state(conf_state: ConfState) -> MemStorage {
        let mut storage = MemStorage::default();
        storage.snapshot.metadata = Some(SnapshotMetadata { conf_state: Some(conf_state), index: 0, term: 0 });
        storage
    }

    /// Records the durable hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn offset(&self) -> u64 {
        self.entries[0].index
    }

    /// Appends durable entries, replacing any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first_new) = entries.first() else { return };
        let first = self.first_index();
        assert!(
            first_new.index <= self.last_index() + 1,
            "append leaves a gap: last {} new {}",
            self.last_index(),
            first_new.index
        );
        // Entries older than the snapshot point are already covered.
        let skip = first.saturating_sub(first_new.index) as usize;
        if skip >= entries.len() {
            return;
        }
        let entries = &entries[skip..];
        let keep = (entries[0].index - self.offset()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the whole log with `snapshot`.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        if snapshot.index() < self.snapshot.index() {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.entries = vec![Entry { term: snapshot.term(), index: snapshot.index(), ..Default::default() }];
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index());
        self.hard_state.term = self.hard_state.term.max(snapshot.term());
        self.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the application state at `index` (which must be in the log).
    pub fn create_snapshot(&mut self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Result<Snapshot> {
        if index <= self.snapshot.index() {
            return Err(StorageError::SnapshotOutOfDate);
        }
        let term = self.term(index)?;
        self.snapshot =
            Snapshot { data, metadata: Some(SnapshotMetadata { conf_state: Some(conf_state), index, term }) };
        Ok(self.snapshot.clone())
    }

    /// Drops the entries before `index` (which must be covered by a snapshot point).
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        let drop = (index - self.offset()) as usize;
        let dummy = Entry { term: self.entries[drop].term, index, ..Default::default() };
        self.entries.drain(..drop);
        self.entries[0] = dummy;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> (HardState, ConfState) {
        (self.hard_state, self.snapshot.conf_state())
    }

    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>> {
        if lo <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let start = (lo - self.offset()) as usize;
        let end = (hi - self.offset()) as usize;
        Ok(limit_size(&self.entries[start..end], max_size))
    }

    fn term(&self, index: u64) -> Result<u64> {
        if index < self.offset() {
            return Err(StorageError::Compacted);
        }
        self.entries.get((index - self.offset()) as usize).map(|e| e.term).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> u64 {
        self.offset() + 1
    }

    fn last_index(&self) -> u64 {
        self.offset() + self.entries.len() as u64 - 1
    }

    fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

/// The longest prefix of `entries` within `max_size` bytes, but at least one entry.
pub fn limit_size(entries: &[Entry], max_size: u64) -> Vec<Entry> {
    let mut size = 0;
    let count = entries
        .iter()
        .take_while(|e| {
            size += e.size();
            size <= max_size
        })
        .count()
        .max(1)
        .min(entries.len());
    entries[..count].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.append(&[ent(2, 2)]);
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Ok(2));
    }

    #[test]
    fn compact_keeps_the_snapshot_point_term() {
        let mut s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 2), ent(3, 3)]);
        s.compact(2).unwrap();
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 4, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 4, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn limit_size_returns_at_least_one_entry() {
        let ents = vec![ent(1, 1), ent(2, 1)];
        assert_eq!(limit_size(&ents, 0).len(), 1);
        assert_eq!(limit_size(&ents, u64::MAX).len(), 2);
    }
}
