//! The WAL's `Disk` seam on the real file system: appends collect in memory, and `sync`
//! writes them with one `pwrite` and makes them durable with one fdatasync (plus a sync of
//! the directory when the file is new), on the executor's own thread, before it returns.
//!
//! Why inline rather than on another thread or through io_uring: measured under 64-client
//! puts on a 2-core machine shared with the clients, io_uring's buffered write and fdatasync
//! each waited for an io-wq worker to get a core (~570 us + ~500 us per group commit), and
//! glommio's blocking thread added a wake-up on each side (~150 us to start, ~120 us to
//! resume) around a ~440 us fdatasync; syncing inline gave ~25% more throughput and a lower
//! single-client latency than either. Writing through io_uring with O_DIRECT|O_DSYNC into
//! zero-filled segments needs no worker thread and leaves the executor free during the write
//! (~30 us of its CPU per sync against ~45 us inline), yet measured lower still: 64-client
//! puts 30-31k against 36-37k ops/s, 256 clients 33-34k against ~40k, alternating runs.
//! Measured again with a lighter client (keel-bench over h2, ~15 us of CPU per put): the sync
//! on glommio's blocking thread served as much as inline (33.4k/29.4k against 31.8k/29.2k
//! ops/s) but the executor's CPU per put did not fall (~24 us): it ran more, smaller batches
//! and sat idle while the one sync in flight finished. Only several syncs in flight (the next
//! ready written while the previous one syncs) would let the executor use that time. The
//! node core does not depend on this: its sync is a future, and it applies and answers while
//! one is pending whenever a disk takes time (the simulator's does).
//!
//! WAL segments are reserved at their full size (a sparse file): an fdatasync that need not
//! record a new file size measured ~30% faster (p50 ~240 -> ~150 us for 300-byte appends).
//! Zero-filled segments (no block allocation at sync) measured 0-6% more 64-client puts in
//! alternating runs, and filling 64 MiB on the executor stalls it ~300 ms per segment; not
//! adopted.
//!
//! Invariants: a file's bytes are its bytes on disk followed by its pending appends; `read`
//! and `list` see both (a reserved file, reopened, reads back with zeros after its data).
//! Recovery (`read`, `truncate`) happens at open, before any append; a file is reserved only
//! once its appends start at its data's end (after recovery cut any unused room).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use keel_storage::wal::Disk;
use prometheus_client::metrics::histogram::Histogram;

/// The largest written-out buffer kept for the next appends (a snapshot image's is not).
const SPARE_BYTES: usize = 4 << 20;

/// An open WAL file and the length handed to the disk so far.
struct OpenFile {
    file: fs::File,
    len: u64,
}

/// A directory of WAL files.
pub struct FsDisk {
    dir: PathBuf,
    /// Seconds per fdatasync.
    fsync_seconds: Histogram,
    open: BTreeMap<String, OpenFile>,
    /// Appends not yet handed to the disk, per file.
    pending: BTreeMap<String, Vec<u8>>,
    /// A written-out pending buffer, kept to reuse its allocation.
    spare: Vec<u8>,
    /// Files created since the directory was last synced.
    new_files: BTreeSet<String>,
}

impl FsDisk {
    /// Opens (creating) the directory; each fdatasync's duration goes to `fsync_seconds`.
    pub fn open(dir: &Path, fsync_seconds: Histogram) -> io::Result<FsDisk> {
        fs::create_dir_all(dir)?;
        Ok(FsDisk {
            dir: dir.to_path_buf(),
            fsync_seconds,
            open: BTreeMap::new(),
            pending: BTreeMap::new(),
            spare: Vec::new(),
            new_files: BTreeSet::new(),
        })
    }

    fn file(&mut self, name: &str) -> io::Result<&mut OpenFile> {
        if !self.open.contains_key(name) {
            let path = self.dir.join(name);
            if !path.exists() {
                self.new_files.insert(name.to_string());
            }
            let file = fs::OpenOptions::new().create(true).truncate(false).write(true).read(true).open(&path)?;
            let len = file.metadata()?.len();
            self.open.insert(name.to_string(), OpenFile { file, len });
        }
        Ok(self.open.get_mut(name).expect("opened above"))
    }

    /// Appends `bytes` to the file and makes them durable, with the file's directory entry if
    /// the file is new; returns how long the fdatasync took.
    fn write_durably(&mut self, name: &str, bytes: &[u8]) -> io::Result<f64> {
        self.file(name)?;
        let new_file = self.new_files.remove(name);
        let open = self.open.get_mut(name).expect("opened above");
        // A short write to a regular file means the disk is full: write_all_at fails, and
        // nothing is acknowledged.
        open.file.write_all_at(bytes, open.len)?;
        open.len += bytes.len() as u64;
        let started = Instant::now();
        open.file.sync_data()?;
        let took = started.elapsed().as_secs_f64();
        if new_file {
            fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(took)
    }
}

impl Disk for FsDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = BTreeSet::new();
        for entry in fs::read_dir(&self.dir)? {
            names.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        names.extend(self.pending.keys().cloned());
        Ok(names.into_iter().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let pending = self.pending.get(name);
        let mut data = match fs::read(self.dir.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && pending.is_some() => Vec::new(),
            other => other?,
        };
        if let Some(open) = self.open.get(name) {
            data.truncate(open.len as usize); // not the reserved room
        }
        data.extend_from_slice(pending.map_or(&[][..], Vec::as_slice));
        Ok(data)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        match self.pending.get_mut(name) {
            Some(pending) => pending.extend_from_slice(data),
            None => {
                let mut pending = std::mem::take(&mut self.spare);
                pending.extend_from_slice(data);
                self.pending.insert(name.to_string(), pending);
            }
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        assert!(!self.pending.contains_key(name), "the WAL truncates only while recovering, before appending");
        self.open.remove(name);
        fs::OpenOptions::new().write(true).open(self.dir.join(name))?.set_len(len)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let had_pending = self.pending.remove(name).is_some();
        self.open.remove(name);
        self.new_files.remove(name);
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && had_pending => Ok(()),
            other => other,
        }
    }

    fn reserve(&mut self, name: &str, len: u64) -> io::Result<()> {
        let open = self.file(name)?;
        if open.file.metadata()?.len() < len {
            // Sparse: no blocks written now, but appends no longer change the file's size.
            open.file.set_len(len)?;
        }
        Ok(())
    }

    fn sync(&mut self, name: &str) -> impl Future<Output = io::Result<()>> + use<> {
        let mut bytes = self.pending.remove(name).unwrap_or_default();
        let synced = self.write_durably(name, &bytes).map(|took| self.fsync_seconds.observe(took));
        if bytes.capacity() <= SPARE_BYTES {
            bytes.clear();
            self.spare = bytes;
        }
        std::future::ready(synced)
    }
}
