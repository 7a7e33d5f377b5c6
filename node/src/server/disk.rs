//! The WAL's `Disk` seam on the real file system: appends collect in memory, and `sync`
//! hands them to glommio's blocking thread, which writes them with one `pwrite` and makes
//! them durable with one fdatasync (plus a sync of the directory when the file is new). The
//! job is queued the moment the sync is first polled, so the executor's core goes on
//! applying and answering while the disk works, and never blocks on it.
//!
//! Invariants: a file's bytes are its bytes on disk followed by its pending appends; `read`
//! and `list` see both. Recovery (`read`, `truncate`) happens at open, before any append.
//! The executor has exactly one blocking thread (see `server::run`), so syncs run in the
//! order they were started and a file's writes land in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use keel_storage::wal::Disk;
use prometheus_client::metrics::histogram::Histogram;

/// An open WAL file and the length handed to the disk so far.
struct OpenFile {
    file: Arc<fs::File>,
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
            self.open.insert(name.to_string(), OpenFile { file: Arc::new(file), len });
        }
        Ok(self.open.get_mut(name).expect("opened above"))
    }
}

/// Writes `bytes` at `at` and makes them durable (and the directory entry, if `dir` is
/// given); returns how long the fdatasync took. Runs on the blocking thread.
fn write_durably(file: &fs::File, bytes: &[u8], at: u64, dir: Option<&Path>) -> io::Result<f64> {
    // A short write to a regular file means the disk is full: write_all_at fails, and nothing
    // is acknowledged.
    file.write_all_at(bytes, at)?;
    let started = Instant::now();
    file.sync_data()?;
    let took = started.elapsed().as_secs_f64();
    if let Some(dir) = dir {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(took)
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
        data.extend_from_slice(pending.map_or(&[][..], Vec::as_slice));
        Ok(data)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.pending.entry(name.to_string()).or_default().extend_from_slice(data);
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

    fn sync(&mut self, name: &str) -> impl Future<Output = io::Result<()>> + use<> {
        let bytes = self.pending.remove(name).unwrap_or_default();
        let dir = self.new_files.remove(name).then(|| self.dir.clone());
        let job = self.file(name).map(|open| {
            let at = open.len;
            open.len += bytes.len() as u64;
            (open.file.clone(), at)
        });
        let fsync_seconds = self.fsync_seconds.clone();
        async move {
            let (file, at) = job?;
            let took =
                glommio::executor().spawn_blocking(move || write_durably(&file, &bytes, at, dir.as_deref())).await?;
            fsync_seconds.observe(took);
            Ok(())
        }
    }
}
