//! The narrow ordered key-value seam under the MVCC store: named tables, atomic write
//! batches, ordered scans and an explicit sync point.
//!
//! Contract: a batch is applied entirely or not at all; after `sync` returns (or the future
//! `start_sync` returned completes), every batch written before that call survives a power
//! cut; any other batch may be lost on a power cut, but never partly, and never while a later
//! batch survives.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;

/// The tables (column families) of the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Key versions by revision.
    Kv,
    /// Bookkeeping: applied index, compaction marks, membership.
    Meta,
    /// Leases by id.
    Lease,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 3] = [Table::Kv, Table::Meta, Table::Lease];

    /// The table's name (a RocksDB column family).
    pub fn name(self) -> &'static str {
        match self {
            Table::Kv => "kv",
            Table::Meta => "meta",
            Table::Lease => "lease",
        }
    }
}

/// Failure of the backend: the node must stop rather than continue on unknown state.
#[derive(Debug, thiserror::Error)]
#[error("backend: {0}")]
pub struct BackendError(pub String);

/// Result of backend operations.
pub type Result<T> = std::result::Result<T, BackendError>;

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Table, Vec<u8>),
}

/// Changes applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The changes, in order.
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(table, key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(table, key));
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What [`Backend::visit`] calls with each entry's key and value; it says whether to go on.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// A sync under way ([`Backend::start_sync`]): it borrows nothing, so the caller may go on
/// reading and writing while the storage works.
pub type PendingSync = Pin<Box<dyn Future<Output = Result<()>>>>;

/// An ordered key-value store with tables.
pub trait Backend {
    /// The value of `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Hands `visit` the entries with `start <= key < end` (no upper bound when `end` is
    /// empty), in key order, one at a time, without holding them all; stops when `visit`
    /// says so or fails.
    fn visit(&self, table: Table, start: &[u8], end: &[u8], visit: &mut Visitor<'_>) -> Result<()>;
    /// The entries [`Backend::visit`] would hand out, all at once.
    fn scan(&self, table: Table, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.visit(table, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }
    /// Applies `batch` atomically (not necessarily durably).
    fn write(&mut self, batch: WriteBatch) -> Result<()>;
    /// Makes every batch written so far durable.
    fn sync(&mut self) -> Result<()>;
    /// Starts making every batch written so far durable; they are once the returned future
    /// completes (batches written after the call may or may not be by then). By default the
    /// sync happens before this returns.
    fn start_sync(&mut self) -> PendingSync {
        Box::pin(std::future::ready(self.sync()))
    }
    /// Approximate bytes in use.
    fn size_bytes(&self) -> u64;
    /// Rewrites the storage to give back the space deleted and compacted data still takes.
    fn defragment(&mut self) -> Result<()>;
}

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// In-memory backend for simulation: keeps the last synced image apart from the batches
/// written since, so a simulated power cut can drop a suffix of those batches.
#[derive(Debug, Clone, Default)]
pub struct MemBackend {
    durable: Tables,
    unsynced: Vec<WriteBatch>,
    /// `durable` with `unsynced` applied: what reads see.
    current: Tables,
    /// Batches made durable since the backend was created (those in `durable`).
    synced_count: u64,
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> MemBackend {
        MemBackend::default()
    }

    /// Simulates a power cut: of the batches written since the last sync, only the first
    /// `keep` survive (whole). Returns how many were lost.
    pub fn power_cut(&mut self, keep: usize) -> usize {
        let keep = keep.min(self.unsynced.len());
        let lost = self.unsynced.len() - keep;
        self.sync_first(keep);
        self.unsynced.clear();
        self.current = self.durable.clone();
        lost
    }

    /// Batches written since the last sync.
    pub fn unsynced_batches(&self) -> usize {
        self.unsynced.len()
    }

    /// Batches written since the backend was created (lost ones not counted): a position for
    /// [`MemBackend::sync_through`].
    pub fn written_count(&self) -> u64 {
        self.synced_count + self.unsynced.len() as u64
    }

    /// Makes the batches written up to position `count` ([`MemBackend::written_count`])
    /// durable, and none after it.
    pub fn sync_through(&mut self, count: u64) {
        let due = count.saturating_sub(self.synced_count).min(self.unsynced.len() as u64);
        self.sync_first(due as usize);
    }

    fn sync_first(&mut self, n: usize) {
        for batch in self.unsynced.drain(..n) {
            apply(&mut self.durable, &batch);
        }
        self.synced_count += n as u64;
    }
}

fn apply(tables: &mut Tables, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            BatchOp::Put(t, k, v) => {
                tables.entry(*t).or_default().insert(k.clone(), v.clone());
            }
            BatchOp::Delete(t, k) => {
                if let Some(table) = tables.get_mut(t) {
                    table.remove(k);
                }
            }
        }
    }
}

impl Backend for MemBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.current.get(&table).and_then(|t| t.get(key).cloned()))
    }

    fn visit(&self, table: Table, start: &[u8], end: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
        let Some(t) = self.current.get(&table) else { return Ok(()) };
        for (k, v) in t.range(start.to_vec()..).take_while(|(k, _)| end.is_empty() || k.as_slice() < end) {
            if visit(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: WriteBatch) -> Result<()> {
        apply(&mut self.current, &batch);
        self.unsynced.push(batch);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_first(self.unsynced.len());
        Ok(())
    }

    fn defragment(&mut self) -> Result<()> {
        Ok(()) // memory holds no dead space
    }

    fn size_bytes(&self) -> u64 {
        self.current.values().flat_map(|t| t.iter()).map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }
}

/// Serializes every table into one image (for Raft snapshots).
pub fn dump(backend: &dyn Backend) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let entries = backend.scan(table, &[], &[])?;
        out.push(table as u8);
        out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (k, v) in entries {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
        }
    }
    Ok(out)
}

/// The hash of everything in every table (etcd's Maintenance.Hash: members at the same
/// applied index agree).
pub fn hash(backend: &dyn Backend) -> Result<u32> {
    let mut hash = 0;
    for table in Table::ALL {
        hash = crc32c::crc32c_append(hash, table.name().as_bytes());
        backend.visit(table, &[], &[], &mut |k, v| {
            hash = crc32c::crc32c_append(crc32c::crc32c_append(hash, k), v);
            Ok(ControlFlow::Continue(()))
        })?;
    }
    Ok(hash)
}

/// Replaces every table's contents with the image from [`dump`], atomically.
pub fn restore(backend: &mut dyn Backend, image: &[u8]) -> Result<()> {
    let mut batch = WriteBatch::default();
    for table in Table::ALL {
        for (k, _) in backend.scan(table, &[], &[])? {
            batch.delete(table, k);
        }
    }
    let mut reader = Reader { buf: image };
    while !reader.buf.is_empty() {
        let table = match reader.take(1)?[0] {
            0 => Table::Kv,
            1 => Table::Meta,
            2 => Table::Lease,
            other => return Err(BackendError(format!("snapshot image has unknown table {other}"))),
        };
        let count = u64::from_be_bytes(reader.take(8)?.try_into().expect("8 bytes"));
        for _ in 0..count {
            let key = reader.take_prefixed()?;
            let value = reader.take_prefixed()?;
            batch.put(table, key, value);
        }
    }
    backend.write(batch)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(BackendError("snapshot image is truncated".into()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn take_prefixed(&mut self) -> Result<Vec<u8>> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(self.take(len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut MemBackend, k: &str) {
        let mut batch = WriteBatch::default();
        batch.put(Table::Kv, k.into(), b"v".to_vec());
        batch.put(Table::Meta, format!("m-{k}").into_bytes(), b"v".to_vec());
        b.write(batch).unwrap();
    }

    #[test]
    fn power_cut_drops_unsynced_batches_whole() {
        let mut b = MemBackend::new();
        put(&mut b, "a");
        b.sync().unwrap();
        put(&mut b, "b");
        put(&mut b, "c");
        assert_eq!(b.power_cut(1), 1);
        assert!(b.get(Table::Kv, b"b").unwrap().is_some());
        assert!(b.get(Table::Meta, b"m-b").unwrap().is_some());
        assert!(b.get(Table::Kv, b"c").unwrap().is_none());
        assert!(b.get(Table::Meta, b"m-c").unwrap().is_none());
    }

    #[test]
    fn sync_through_makes_durable_only_what_was_written_by_then() {
        let mut b = MemBackend::new();
        put(&mut b, "a");
        b.sync().unwrap();
        put(&mut b, "b");
        let through = b.written_count();
        put(&mut b, "c");
        b.sync_through(through);
        assert_eq!(b.unsynced_batches(), 1);
        b.sync_through(through); // again: nothing more
        assert_eq!(b.power_cut(0), 1);
        assert!(b.get(Table::Kv, b"b").unwrap().is_some());
        assert!(b.get(Table::Kv, b"c").unwrap().is_none());
        // Positions go on after the power cut: a later sync covers only what it saw.
        put(&mut b, "d");
        let through = b.written_count();
        put(&mut b, "e");
        b.sync_through(through);
        assert_eq!(b.power_cut(0), 1);
        assert!(b.get(Table::Kv, b"d").unwrap().is_some());
        assert!(b.get(Table::Kv, b"e").unwrap().is_none());
    }

    #[test]
    fn scan_is_ordered_and_bounded() {
        let mut b = MemBackend::new();
        for k in ["c", "a", "b", "d"] {
            put(&mut b, k);
        }
        let keys: Vec<_> = b.scan(Table::Kv, b"b", b"d").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn dump_and_restore_round_trip() {
        let mut a = MemBackend::new();
        put(&mut a, "x");
        let image = dump(&a).unwrap();
        let mut b = MemBackend::new();
        put(&mut b, "stale");
        restore(&mut b, &image).unwrap();
        assert_eq!(dump(&b).unwrap(), image);
        assert!(restore(&mut b, &image[..image.len() - 1]).is_err());
    }
}
