//! The production backend: RocksDB, one column family per [`Table`].
//!
//! The Raft write-ahead log is the durable source, so writes skip RocksDB's own log and land
//! in memtables only; a sync (before the Raft log is compacted) flushes every column family
//! to synced files so that nothing the compacted entries described is lost. Flushes are
//! atomic across column families, so the files on disk always hold whole apply batches (the
//! applied index and its effects together), whatever a crash interrupts; entries after the
//! flushed applied index are replayed from the Raft log on restart.
//!
//! The size the quota is checked against is RocksDB's own figure (files plus memtables), read
//! again after every [`REMEASURE_BYTES`] written and after defragmentation; in
//! between, the bytes written since are added to the last reading. Reading it takes a dozen
//! property lookups, which every apply batch paid before.
//!
//! Once [`RocksBackend::start_flush_thread`] has been called, `start_sync` hands the flush to
//! that thread: a flush writes up to the whole write buffer (32 MiB) to a new file, tens of
//! milliseconds in which the caller goes on serving (what it writes meanwhile may or may not
//! join the flush). The thread is started on request, not with each flush, so that it runs
//! where the thread that started it was allowed to (as RocksDB's own threads run where the
//! opening thread was): the server starts it off its executor's pinned core. Without it
//! (inside a simulation, where threads of our own are not allowed) `start_sync` flushes in
//! place.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use futures_channel::oneshot;
use rocksdb::{ColumnFamilyDescriptor, FlushOptions, Options, WriteOptions, DB};

use crate::backend::{Backend, BackendError, BatchOp, PendingSync, Result, Table, Visitor, WriteBatch};

/// Bytes written between two readings of the store's size.
pub const REMEASURE_BYTES: u64 = 64 << 10;

/// RocksDB behind the [`Backend`] seam.
pub struct RocksBackend {
    db: Arc<DB>,
    /// The store's size at the last reading.
    measured_bytes: u64,
    /// Key and value bytes written since that reading.
    written_since: u64,
    /// The flush thread's queue (each request carries where its outcome goes) and the
    /// thread, joined on drop so that the database is closed (and may be opened again) once
    /// the backend is gone.
    flusher: Option<(mpsc::Sender<FlushRequest>, JoinHandle<()>)>,
}

/// Asks the flush thread for a flush and where to send its outcome.
type FlushRequest = oneshot::Sender<Result<()>>;

fn err(e: rocksdb::Error) -> BackendError {
    BackendError(e.into_string())
}

impl RocksBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RocksBackend> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Periodic stats tasks mix the simulator's clock with real time and make `open` fail
        // intermittently inside a simulation; Keel does not use them anyway.
        opts.set_stats_dump_period_sec(0);
        opts.set_stats_persist_period_sec(0);
        opts.set_max_background_jobs(2);
        opts.set_atomic_flush(true);
        opts.set_db_write_buffer_size(32 << 20);
        let cfs = Table::ALL.map(|t| ColumnFamilyDescriptor::new(t.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(err)?;
        let mut backend = RocksBackend { db: Arc::new(db), measured_bytes: 0, written_since: 0, flusher: None };
        backend.remeasure();
        Ok(backend)
    }

    /// Starts the thread `start_sync` hands its flushes to (it inherits the calling thread's
    /// CPU affinity).
    pub fn start_flush_thread(&mut self) -> Result<()> {
        let (flush_requests, requests) = mpsc::channel::<FlushRequest>();
        let db = Arc::clone(&self.db);
        let thread = std::thread::Builder::new()
            .name("keel-flush".into())
            .spawn(move || {
                for done in requests {
                    let _ = done.send(flush_all(&db));
                }
            })
            .map_err(|e| BackendError(format!("starting the flush thread: {e}")))?;
        self.flusher = Some((flush_requests, thread));
        Ok(())
    }

    /// Reads the store's size from RocksDB again.
    fn remeasure(&mut self) {
        let property =
            |table: Table, name: &str| self.db.property_int_value_cf(self.cf(table), name).ok().flatten().unwrap_or(0);
        self.measured_bytes = Table::ALL
            .iter()
            .map(|&t| property(t, "rocksdb.total-sst-files-size") + property(t, "rocksdb.cur-size-all-mem-tables"))
            .sum();
        self.written_since = 0;
    }

    fn cf(&self, table: Table) -> &rocksdb::ColumnFamily {
        column_family(&self.db, table)
    }
}

fn column_family(db: &DB, table: Table) -> &rocksdb::ColumnFamily {
    db.cf_handle(table.name()).expect("every table's column family is opened")
}

/// Flushes every column family's memtables to synced files, atomically.
fn flush_all(db: &DB) -> Result<()> {
    let cfs: Vec<&rocksdb::ColumnFamily> = Table::ALL.iter().map(|&t| column_family(db, t)).collect();
    let mut opts = FlushOptions::default();
    opts.set_wait(true);
    db.flush_cfs_opt(&cfs, &opts).map_err(err)
}

impl Drop for RocksBackend {
    fn drop(&mut self) {
        if let Some((requests, thread)) = self.flusher.take() {
            // Closing the queue ends the thread once it has done the flushes asked for.
            drop(requests);
            let _ = thread.join();
        }
    }
}

impl Backend for RocksBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(table), key).map_err(err)
    }

    fn visit(&self, table: Table, start: &[u8], end: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
        let mut items = self.db.raw_iterator_cf(self.cf(table));
        items.seek(start);
        while let (Some(k), Some(v)) = (items.key(), items.value()) {
            if !end.is_empty() && k >= end {
                break;
            }
            if visit(k, v)?.is_break() {
                break;
            }
            items.next();
        }
        items.status().map_err(err)
    }

    fn write(&mut self, batch: WriteBatch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        let mut bytes = 0;
        for op in &batch.ops {
            match op {
                BatchOp::Put(t, k, v) => {
                    wb.put_cf(self.cf(*t), k, v);
                    bytes += k.len() + v.len();
                }
                BatchOp::Delete(t, k) => {
                    wb.delete_cf(self.cf(*t), k);
                    bytes += k.len();
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(wb, &opts).map_err(err)?;
        self.written_since += bytes as u64;
        if self.written_since >= REMEASURE_BYTES {
            self.remeasure();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        flush_all(&self.db)
    }

    fn start_sync(&mut self) -> PendingSync {
        let Some((requests, _)) = &self.flusher else {
            return Box::pin(std::future::ready(self.sync()));
        };
        let (done, flushed) = oneshot::channel();
        // A thread that stopped drops `done`, which the future reports.
        let _ = requests.send(done);
        Box::pin(async move { flushed.await.unwrap_or_else(|_| Err(BackendError("the flush thread stopped".into()))) })
    }

    fn size_bytes(&self) -> u64 {
        self.measured_bytes + self.written_since
    }

    fn defragment(&mut self) -> Result<()> {
        flush_all(&self.db)?;
        for table in Table::ALL {
            self.db.compact_range_cf(self.cf(table), None::<&[u8]>, None::<&[u8]>);
        }
        self.remeasure();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{dump, restore, MemBackend};

    #[test]
    fn behaves_like_the_memory_backend() {
        let dir = tempfile::tempdir().unwrap();
        let mut rocks = RocksBackend::open(dir.path()).unwrap();
        let mut mem = MemBackend::new();
        for i in 0..20u8 {
            let mut batch = WriteBatch::default();
            batch.put(Table::Kv, vec![i % 7, i], vec![i]);
            if i % 3 == 0 {
                batch.delete(Table::Kv, vec![(i + 1) % 7, i - i % 2]);
            }
            batch.put(Table::Lease, vec![i], vec![i; 3]);
            rocks.write(batch.clone()).unwrap();
            mem.write(batch).unwrap();
        }
        rocks.sync().unwrap();
        assert_eq!(dump(&rocks).unwrap(), dump(&mem).unwrap());
        assert_eq!(rocks.scan(Table::Kv, &[2], &[4]).unwrap(), mem.scan(Table::Kv, &[2], &[4]).unwrap());
        let image = dump(&mem).unwrap();
        drop(rocks);
        let mut reopened = RocksBackend::open(dir.path()).unwrap();
        restore(&mut reopened, &image).unwrap();
        assert_eq!(dump(&reopened).unwrap(), image);
    }

    fn put(backend: &mut RocksBackend, key: &[u8]) {
        put_sized(backend, key, 1);
    }

    /// Puts `key` with a value of `len` bytes.
    fn put_sized(backend: &mut RocksBackend, key: &[u8], len: usize) {
        let mut batch = WriteBatch::default();
        batch.put(Table::Kv, key.to_vec(), vec![b'v'; len]);
        backend.write(batch).unwrap();
    }

    fn memtable_entries(backend: &RocksBackend) -> u64 {
        let property = |name| backend.db.property_int_value_cf(backend.cf(Table::Kv), name).unwrap().unwrap();
        property("rocksdb.num-entries-active-mem-table") + property("rocksdb.num-entries-imm-mem-tables")
    }

    #[test]
    fn a_started_sync_flushes_what_was_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut rocks = RocksBackend::open(dir.path()).unwrap();
        rocks.start_flush_thread().unwrap();
        for key in [b"a", b"b", b"c"] {
            put(&mut rocks, key);
        }
        assert_eq!(memtable_entries(&rocks), 3);
        let synced = rocks.start_sync();
        put(&mut rocks, b"d"); // while the flush runs
        futures::executor::block_on(synced).unwrap();
        assert!(memtable_entries(&rocks) <= 1, "a, b and c are in files now");
        assert_eq!(rocks.scan(Table::Kv, b"", b"").unwrap().len(), 4);
    }

    #[test]
    fn a_backend_dropped_during_a_sync_can_be_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut rocks = RocksBackend::open(dir.path()).unwrap();
        rocks.start_flush_thread().unwrap();
        put(&mut rocks, b"a");
        let synced = rocks.start_sync();
        drop(synced);
        drop(rocks);
        let reopened = RocksBackend::open(dir.path()).unwrap();
        assert!(reopened.get(Table::Kv, b"a").unwrap().is_some());
    }

    #[test]
    fn the_size_counts_writes_at_once_and_is_read_again_after_enough_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut rocks = RocksBackend::open(dir.path()).unwrap();
        let empty = rocks.size_bytes();
        put_sized(&mut rocks, b"a", 999);
        assert_eq!(rocks.size_bytes(), empty + 1000, "estimated from the bytes written");
        assert_eq!(rocks.written_since, 1000);
        put_sized(&mut rocks, b"b", REMEASURE_BYTES as usize);
        assert_eq!(rocks.written_since, 0, "read from RocksDB again");
        assert!(rocks.size_bytes() > empty + REMEASURE_BYTES, "the memtable holds both values");
    }
}
