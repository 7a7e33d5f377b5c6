//! The log as Raft sees it: durable entries in [`Storage`] followed by an unstable tail that
//! the driver has not yet made durable.
//!
//! Invariants: `applied <= committed`; entries are handed out for applying only once they are
//! both committed and durable (`<= persisted`), so nothing is applied that a crash could lose;
//! `committed` never decreases. The unstable tail splits at `in_progress`: entries before it
//! were handed to the driver to write and may still be on their way to disk (several writes
//! can be in flight; they become durable in the order they were handed out), entries from it
//! on are still to be handed out. A conflicting append moves `in_progress` back, so the
//! rewritten suffix is handed out again.

use crate::storage::{limit_size, Storage, StorageError};
use crate::types::{Entry, Snapshot};

/// Entries (and possibly a snapshot) not yet durable.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    /// Whether `snapshot` was handed to the driver to write.
    snapshot_in_progress: bool,
    entries: Vec<Entry>,
    /// Index of `entries[0]`.
    offset: u64,
    /// Index of the first entry not yet handed to the driver to write.
    in_progress: u64,
}

impl Unstable {
    fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(Snapshot::index),
        }
    }

    fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let snap = self.snapshot.as_ref()?;
            return (snap.index() == index).then(|| snap.term());
        }
        if index > self.maybe_last_index()? {
            return None;
        }
        self.entries.get((index - self.offset) as usize).map(|e| e.term)
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let after = entries[0].index;
        if after == self.offset + self.entries.len() as u64 {
            self.entries.extend_from_slice(entries);
        } else if after <= self.offset {
            self.offset = after;
            self.entries = entries.to_vec();
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
        self.in_progress = self.in_progress.min(after);
    }

    /// Entries not yet handed out.
    fn entries_to_write(&self) -> &[Entry] {
        &self.entries[(self.in_progress - self.offset) as usize..]
    }
}

/// The combined log.
pub struct RaftLog<S: Storage> {
    pub(crate) store: S,
    unstable: Unstable,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index handed out for applying.
    pub applied: u64,
    /// Highest index known durable locally.
    pub persisted: u64,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `store`, whose contents are all durable.
    pub fn new(store: S) -> RaftLog<S> {
        let first = store.first_index();
        let last = store.last_index();
        let (hs, _) = store.initial_state();
        RaftLog {
            unstable: Unstable { offset: last + 1, in_progress: last + 1, ..Default::default() },
            committed: hs.commit.max(first - 1),
            applied: first - 1,
            persisted: last,
            store,
        }
    }

    /// First index still in the log.
    pub fn first_index(&self) -> u64 {
        match &self.unstable.snapshot {
            Some(s) => s.index() + 1,
            None => self.store.first_index(),
        }
    }

    /// Last index in the log.
    pub fn last_index(&self) -> u64 {
        self.unstable.maybe_last_index().unwrap_or_else(|| self.store.last_index())
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).expect("the last entry's term is always known")
    }

    /// Term of the entry at `index`.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        match self.unstable.maybe_term(index) {
            Some(t) => Ok(t),
            None => self.store.term(index),
        }
    }

    /// Whether the entry at `index` has term `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Ok(term)
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        term > self.last_term() || (term == self.last_term() && last_index >= self.last_index())
    }

    /// Index of the first entry of `entries` that conflicts with (or extends) the log, or 0.
    fn find_conflict(&self, entries: &[Entry]) -> u64 {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map_or(0, |e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`: where a log with a `term` entry
    /// at `index` can possibly agree with ours. Drives fast backtracking of rejected appends.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t > term => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    /// Appends `entries` following (`index`, `log_term`) if our log matches there, and
    /// advances the commit index to `min(commit, last new index)`. Returns the last new index.
    pub fn maybe_append(&mut self, index: u64, log_term: u64, commit: u64, entries: &[Entry]) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + entries.len() as u64;
        let conflict = self.find_conflict(entries);
        if conflict != 0 {
            assert!(conflict > self.committed, "entry {conflict} conflicts with committed entry {}", self.committed);
            self.append(&entries[(conflict - index - 1) as usize..]);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries to the unstable tail, truncating any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        if let Some(first) = entries.first() {
            assert!(first.index > self.committed, "cannot overwrite committed entry {}", first.index);
            self.unstable.truncate_and_append(entries);
            self.persisted = self.persisted.min(first.index - 1);
        }
        self.last_index()
    }

    /// Entries from `lo` on, at most `max_size` bytes (at least one if any).
    pub fn entries(&self, lo: u64, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if lo > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(lo, self.last_index() + 1, max_size)
    }

    /// Entries `[lo, hi)`, at most `max_size` bytes (at least one if any).
    pub fn slice(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if lo == hi {
            return Ok(Vec::new());
        }
        let split = self.unstable.offset;
        let mut out = Vec::new();
        if lo < split {
            out = self.store.entries(lo, hi.min(split), max_size)?;
            if (out.len() as u64) < hi.min(split) - lo {
                return Ok(out);
            }
        }
        if hi > split {
            let from = lo.max(split);
            let tail = &self.unstable.entries[(from - split) as usize..(hi - split) as usize];
            out.extend_from_slice(tail);
        }
        Ok(limit_size(&out, max_size))
    }

    /// Entries not yet durable and not yet handed out to be written.
    pub fn entries_to_write(&self) -> &[Entry] {
        self.unstable.entries_to_write()
    }

    /// A snapshot received, not yet durable and not yet handed out to be written.
    pub fn snapshot_to_write(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref().filter(|_| !self.unstable.snapshot_in_progress)
    }

    /// Records that entries up to `index` and the unstable snapshot, if any, were handed out
    /// to be written: they are not handed out again unless a conflicting append rewrites them.
    pub fn handed_out_to(&mut self, index: u64) {
        let unstable = &mut self.unstable;
        unstable.snapshot_in_progress = unstable.snapshot.is_some();
        let end = unstable.offset + unstable.entries.len() as u64;
        unstable.in_progress = unstable.in_progress.max((index + 1).min(end));
    }

    /// Commits up to `max_index` if that entry is from `term`: a leader only counts replicas
    /// for entries of its own term (Raft §5.4.2).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term(max_index) == Ok(term) {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// Raises the commit index; it never falls.
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} is past the last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// Committed, durable entries not yet handed out for applying, at most `max_size` bytes.
    pub fn next_committed_entries(&self, max_size: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        let lo = self.applied.max(self.first_index() - 1) + 1;
        if lo > hi {
            return Vec::new();
        }
        self.slice(lo, hi + 1, max_size).expect("committed entries are in the log")
    }

    /// Whether [`Self::next_committed_entries`] would return something.
    pub fn has_next_committed_entries(&self) -> bool {
        self.committed.min(self.persisted) > self.applied.max(self.first_index() - 1)
    }

    /// Records that entries up to `index` were handed out for applying.
    pub fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            assert!(index <= self.committed, "applied {index} is past the commit index {}", self.committed);
            self.applied = index;
        }
    }

    /// Records that entries up to `index` with term `term` are durable; the driver's copy of
    /// the stable log (`store`) must already hold them.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if self.unstable.maybe_term(index) == Some(term) && index >= self.unstable.offset {
            let drop = (index + 1 - self.unstable.offset) as usize;
            self.unstable.entries.drain(..drop);
            self.unstable.offset = index + 1;
            self.unstable.in_progress = self.unstable.in_progress.max(index + 1);
        }
        if self.term(index) == Ok(term) {
            self.persisted = self.persisted.max(index);
        }
    }

    /// Records that the unstable snapshot is durable and installed in `store`.
    pub fn stable_snap_to(&mut self, index: u64) {
        if self.unstable.snapshot.as_ref().is_some_and(|s| s.index() == index) {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
            self.persisted = self.persisted.max(index);
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.index();
        self.committed = index;
        self.unstable.offset = index + 1;
        self.unstable.in_progress = index + 1;
        self.unstable.entries.clear();
        self.unstable.snapshot = Some(snapshot);
        self.unstable.snapshot_in_progress = false;
        self.persisted = self.persisted.min(index);
    }

    /// The latest snapshot to send to a lagging follower.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.clone()),
            None => self.store.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    fn log_with(terms: &[u64]) -> RaftLog<MemStorage> {
        let mut log = RaftLog::new(MemStorage::default());
        let ents: Vec<_> = terms.iter().enumerate().map(|(i, t)| ent(i as u64 + 1, *t)).collect();
        log.append(&ents);
        log
    }

    #[test]
    fn maybe_append_rejects_mismatch_and_truncates_conflicts() {
        let mut log = log_with(&[1, 1, 2]);
        assert_eq!(log.maybe_append(3, 1, 0, &[]), None);
        assert_eq!(log.maybe_append(2, 1, 2, &[ent(3, 3), ent(4, 3)]), Some(4));
        assert_eq!(log.term(3), Ok(3));
        assert_eq!(log.committed, 2);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 2, 2, 5, 5, 5]);
        assert_eq!(log.find_conflict_by_term(7, 4), (4, 2));
        assert_eq!(log.find_conflict_by_term(7, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(10, 5), (7, 5));
    }

    #[test]
    fn commit_requires_current_term() {
        let mut log = log_with(&[1, 1, 2]);
        log.persisted = 3;
        assert!(!log.maybe_commit(2, 2));
        assert!(log.maybe_commit(3, 2));
    }

    #[test]
    fn only_durable_committed_entries_are_applied() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(3);
        assert!(log.next_committed_entries(u64::MAX).is_empty());
        let first_two = log.entries_to_write()[..2].to_vec();
        log.store.append(&first_two);
        log.stable_to(2, 1);
        assert_eq!(log.next_committed_entries(u64::MAX).len(), 2);
    }

    #[test]
    fn handed_out_entries_wait_for_their_write_unless_rewritten() {
        let mut log = log_with(&[1, 1, 1]);
        log.handed_out_to(3);
        assert!(log.entries_to_write().is_empty(), "handed out once");
        // A new leader rewrites entry 3 while the first write is still in flight.
        log.append(&[ent(3, 2)]);
        assert_eq!(log.entries_to_write(), &[ent(3, 2)]);
        assert_eq!(log.persisted, 0);
        // The first write completes: its entry 3 is no longer in the log, so nothing counts.
        log.store.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        log.stable_to(3, 1);
        assert_eq!(log.persisted, 0);
        assert_eq!(log.term(3), Ok(2));
        log.handed_out_to(3);
        log.store.append(&[ent(3, 2)]);
        log.stable_to(3, 2);
        assert_eq!(log.persisted, 3);
        assert!(log.entries_to_write().is_empty());
    }
}
