//! The in-memory index from each user key to its history: generations of revisions, each
//! generation ended by a tombstone (a deletion).
//!
//! Invariants: revisions within a key increase strictly; every generation but the last is
//! non-empty and ends with its tombstone; the last generation is empty exactly when the key is
//! currently deleted (or was never written since its history was compacted away).

use std::collections::BTreeMap;
use std::ops::Bound;

/// A revision: `main` counts committed write transactions, `sub` orders changes within one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// Transaction counter.
    pub main: i64,
    /// Position within the transaction.
    pub sub: i64,
}

impl Revision {
    /// A revision.
    pub fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The backend key: big-endian `main`, `_`, big-endian `sub`, so byte order is revision
    /// order (etcd's layout).
    pub fn to_bytes(self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8] = b'_';
        out[9..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Parses [`Revision::to_bytes`] (ignoring any suffix).
    pub fn from_bytes(bytes: &[u8]) -> Option<Revision> {
        if bytes.len() < 17 {
            return None;
        }
        let main = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(bytes[9..17].try_into().ok()?);
        Some(Revision { main, sub })
    }
}

/// One life of a key, from creation to deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// Revision that created the key.
    created: Revision,
    /// The key's version at `revs[0]` (compaction drops older revisions).
    first_version: i64,
    /// Every remaining revision that changed the key, the tombstone last if `ended`.
    revs: Vec<Revision>,
    /// Whether a deletion ended this generation.
    ended: bool,
}

/// The history of one key. Most keys are written once and never deleted; their history is
/// that one revision, kept inline without an allocation (a million such keys take ~60 MB of
/// index instead of ~220 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyHistory {
    /// One live generation, created at this revision and not changed since.
    Created(Revision),
    /// Any other history, generation by generation.
    Generations(Vec<Generation>),
}

/// Where a key stood at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    /// Revision of the version visible at that point.
    pub modified: Revision,
    /// Revision that created the key.
    pub created: Revision,
    /// The key's version then.
    pub version: i64,
}

impl KeyHistory {
    /// The generations, expanding the inline form.
    fn generations_mut(&mut self) -> &mut Vec<Generation> {
        if let KeyHistory::Created(rev) = *self {
            let generation = Generation { created: rev, first_version: 1, revs: vec![rev], ended: false };
            *self = KeyHistory::Generations(vec![generation]);
        }
        match self {
            KeyHistory::Generations(generations) => generations,
            KeyHistory::Created(_) => unreachable!("expanded above"),
        }
    }

    /// Returns to the inline form when the history is again one unchanged creation.
    fn tighten(&mut self) {
        if let KeyHistory::Generations(generations) = self {
            if let [Generation { created, first_version: 1, revs, ended: false }] = generations.as_slice() {
                if revs.as_slice() == [*created] {
                    *self = KeyHistory::Created(*created);
                }
            }
        }
    }

    fn current(&mut self) -> &mut Generation {
        let generations = self.generations_mut();
        if generations.is_empty() {
            push_tight(generations, Generation::default());
        }
        generations.last_mut().expect("just ensured")
    }

    fn put(&mut self, rev: Revision) {
        let generation = self.current();
        if generation.revs.is_empty() {
            generation.created = rev;
            generation.first_version = 1;
        }
        push_tight(&mut generation.revs, rev);
        self.tighten();
    }

    fn tombstone(&mut self, rev: Revision) -> bool {
        let generation = self.current();
        if generation.revs.is_empty() {
            return false;
        }
        push_tight(&mut generation.revs, rev);
        generation.ended = true;
        push_tight(self.generations_mut(), Generation::default());
        true
    }

    /// The version visible at `at`, if the key existed then.
    fn get(&self, at: i64) -> Option<KeyAt> {
        let generations = match self {
            KeyHistory::Created(rev) => {
                return (rev.main <= at).then_some(KeyAt { modified: *rev, created: *rev, version: 1 })
            }
            KeyHistory::Generations(generations) => generations,
        };
        for generation in generations.iter().rev() {
            let Some(first) = generation.revs.first() else { continue };
            if first.main > at {
                continue;
            }
            let pos = generation.revs.partition_point(|r| r.main <= at);
            if generation.ended && pos == generation.revs.len() {
                // The last visible change is the tombstone.
                return None;
            }
            let version = generation.first_version + pos as i64 - 1;
            return Some(KeyAt { modified: generation.revs[pos - 1], created: generation.created, version });
        }
        None
    }

    /// Drops history older than `at` except the versions still visible at `at`; adds the
    /// revisions to keep to `keep`. Returns whether the key has no history left.
    fn compact(&mut self, at: i64, keep: &mut Vec<Revision>) -> bool {
        let generations = match self {
            KeyHistory::Created(rev) => {
                if rev.main <= at {
                    keep.push(*rev);
                }
                return false;
            }
            KeyHistory::Generations(generations) => generations,
        };
        // Generations that ended (tombstone) at or before `at` are gone entirely.
        let dead = generations.iter().take_while(|g| g.ended && g.revs.last().is_some_and(|r| r.main <= at)).count();
        generations.drain(..dead);
        if let Some(generation) = generations.first_mut() {
            let pos = generation.revs.partition_point(|r| r.main <= at);
            if pos > 0 {
                keep.push(generation.revs[pos - 1]);
                // Keep the newest version at or before `at`; older revisions go.
                let drop = pos - 1;
                generation.revs.drain(..drop);
                generation.first_version += drop as i64;
            }
        }
        let gone = generations.iter().all(|g| g.revs.is_empty());
        self.tighten();
        gone
    }
}

/// Pushes without a `Vec`'s usual first allocation of four slots: the index holds every key,
/// and most keys keep one generation holding one revision.
fn push_tight<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() && items.capacity() < 4 {
        items.reserve_exact(1);
    }
    items.push(item);
}

/// The key index.
#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    keys: BTreeMap<Box<[u8]>, KeyHistory>,
}

impl KeyIndex {
    /// Records a put of `key` at `rev` (newer than any revision recorded); returns where the
    /// key stood just before.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> Option<KeyAt> {
        match self.keys.get_mut(key) {
            Some(history) => {
                let before = history.get(i64::MAX);
                history.put(rev);
                before
            }
            None => {
                self.keys.insert(key.into(), KeyHistory::Created(rev));
                None
            }
        }
    }

    /// Replays a stored version while rebuilding the index: `rev` wrote version `version` of
    /// a generation created at `created` (older revisions may have been compacted away).
    pub fn restore(&mut self, key: &[u8], rev: Revision, created: Revision, version: i64) {
        let history = self.keys.entry(key.into()).or_insert_with(|| KeyHistory::Generations(Vec::new()));
        let generation = history.current();
        if generation.revs.is_empty() {
            generation.created = created;
            generation.first_version = version;
        }
        push_tight(&mut generation.revs, rev);
        history.tighten();
    }

    /// Records a deletion of `key` at `rev`; false if the key did not exist.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|h| h.tombstone(rev))
    }

    /// `key` as of revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Every key in `[start, end)` that exists at `at`, in key order (`end` empty: just
    /// `start`; `end == [0]`: no upper bound).
    pub fn range(&self, start: &[u8], end: &[u8], at: i64) -> Vec<(Vec<u8>, KeyAt)> {
        if end.is_empty() {
            return self.get(start, at).map(|k| vec![(start.to_vec(), k)]).unwrap_or_default();
        }
        let upper = if end == [0] { Bound::Unbounded } else { Bound::Excluded(end) };
        if upper != Bound::Unbounded && start >= end {
            return Vec::new();
        }
        self.keys
            .range::<[u8], _>((Bound::Included(start), upper))
            .filter_map(|(k, h)| h.get(at).map(|at| (k.to_vec(), at)))
            .collect()
    }

    /// Compacts every key's history at `at`; returns the revisions `<= at` that stay
    /// readable, so the backend can delete the rest.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut keep = Vec::new();
        self.keys.retain(|_, h| !h.compact(at, &mut keep));
        keep.sort();
        keep
    }

    /// Number of keys with any history.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key has history.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn generations_and_tombstones() {
        let mut idx = KeyIndex::default();
        idx.put(b"k", rev(2));
        idx.put(b"k", rev(4));
        assert!(idx.tombstone(b"k", rev(6)));
        idx.put(b"k", rev(8));
        assert_eq!(idx.get(b"k", 1), None);
        assert_eq!(idx.get(b"k", 3), Some(KeyAt { modified: rev(2), created: rev(2), version: 1 }));
        assert_eq!(idx.get(b"k", 5), Some(KeyAt { modified: rev(4), created: rev(2), version: 2 }));
        assert_eq!(idx.get(b"k", 6), None);
        assert_eq!(idx.get(b"k", 9), Some(KeyAt { modified: rev(8), created: rev(8), version: 1 }));
        assert!(!idx.tombstone(b"missing", rev(9)));
    }

    #[test]
    fn a_key_written_once_is_kept_inline() {
        let mut idx = KeyIndex::default();
        idx.put(b"k", rev(2));
        idx.restore(b"r", rev(3), rev(3), 1);
        idx.restore(b"old", rev(4), rev(1), 5);
        assert_eq!(idx.keys[&b"k"[..]], KeyHistory::Created(rev(2)));
        assert_eq!(idx.keys[&b"r"[..]], KeyHistory::Created(rev(3)));
        assert_eq!(idx.get(b"old", 4), Some(KeyAt { modified: rev(4), created: rev(1), version: 5 }));
        idx.put(b"k", rev(5));
        assert!(matches!(idx.keys[&b"k"[..]], KeyHistory::Generations(_)));
        assert_eq!(idx.get(b"k", 4), Some(KeyAt { modified: rev(2), created: rev(2), version: 1 }));
        assert_eq!(idx.get(b"k", 5), Some(KeyAt { modified: rev(5), created: rev(2), version: 2 }));
        idx.tombstone(b"k", rev(6));
        idx.compact(6);
        idx.put(b"k", rev(7));
        assert_eq!(idx.keys[&b"k"[..]], KeyHistory::Created(rev(7)));
        assert_eq!(idx.get(b"k", 6), None);
    }

    #[test]
    fn compaction_keeps_what_is_visible() {
        let mut idx = KeyIndex::default();
        idx.put(b"a", rev(1));
        idx.put(b"a", rev(2));
        idx.put(b"b", rev(3));
        idx.tombstone(b"b", rev(4));
        idx.put(b"a", rev(5));
        let keep = idx.compact(4);
        assert_eq!(keep, vec![rev(2)]);
        assert_eq!(idx.get(b"a", 4).unwrap().modified, rev(2));
        assert_eq!(idx.get(b"a", 5).unwrap().version, 3);
        assert_eq!(idx.get(b"b", 3), None, "b's deleted generation is gone");
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn range_bounds() {
        let mut idx = KeyIndex::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            idx.put(*k, rev(i as i64 + 1));
        }
        let keys = |s: &[u8], e: &[u8]| idx.range(s, e, 10).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(b"a", b"c"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(b"b", &[0]), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(b"b", b""), vec![b"b".to_vec()]);
        assert!(keys(b"c", b"a").is_empty());
    }
}
