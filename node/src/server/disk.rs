//! The WAL's `Disk` seam on the real file system, through glommio's io_uring files: appends
//! collect in memory, and `sync` writes them with one `write_at` and makes them durable with
//! an asynchronous fdatasync (plus a sync of the directory when the file is new), so the
//! executor's core never blocks on the disk and concurrent proposals share one write.
//!
//! Invariant: a file's bytes are its bytes on disk followed by its pending appends; `read`
//! and `list` see both. Recovery (`read`, `truncate`) happens at open, before any append.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, Directory, OpenOptions};
use keel_storage::wal::Disk;
use prometheus_client::metrics::histogram::Histogram;

/// An open WAL file and the length written to it so far.
struct OpenFile {
    file: BufferedFile,
    len: u64,
}

/// A directory of WAL files.
pub struct FsDisk {
    dir: PathBuf,
    /// Seconds per fdatasync.
    fsync_seconds: Histogram,
    open: BTreeMap<String, OpenFile>,
    /// Appends not yet written, per file.
    pending: BTreeMap<String, Vec<u8>>,
    /// Files created since the directory was last synced.
    new_files: BTreeSet<String>,
}

impl FsDisk {
    /// Opens (creating) the directory; each fdatasync's duration goes to `fsync_seconds`.
    pub fn open(dir: &Path, fsync_seconds: Histogram) -> io::Result<FsDisk> {
        fs::create_dir_all(dir)?;
        Ok(FsDisk {
            // glommio opens directories by absolute path only.
            dir: fs::canonicalize(dir)?,
            fsync_seconds,
            open: BTreeMap::new(),
            pending: BTreeMap::new(),
            new_files: BTreeSet::new(),
        })
    }

    async fn file(&mut self, name: &str) -> io::Result<&mut OpenFile> {
        if !self.open.contains_key(name) {
            let path = self.dir.join(name);
            if !path.exists() {
                self.new_files.insert(name.to_string());
            }
            let file = OpenOptions::new().create(true).write(true).read(true).buffered_open(&path).await?;
            let len = file.file_size().await?;
            self.open.insert(name.to_string(), OpenFile { file, len });
        }
        Ok(self.open.get_mut(name).expect("opened above"))
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

    async fn sync(&mut self, name: &str) -> io::Result<()> {
        let bytes = self.pending.remove(name).unwrap_or_default();
        let open = self.file(name).await?;
        if !bytes.is_empty() {
            let wanted = bytes.len();
            let written = open.file.write_at(bytes, open.len).await?;
            // A short write to a regular file means the disk is full: nothing is acknowledged.
            if written != wanted {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote {written} of {wanted} bytes to {name}"),
                ));
            }
            open.len += written as u64;
        }
        let started = std::time::Instant::now();
        open.file.fdatasync().await?;
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        if self.new_files.remove(name) {
            Directory::open(&self.dir).await?.sync().await?;
        }
        Ok(())
    }
}
