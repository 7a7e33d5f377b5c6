//! The WAL's `Disk` seam on the real file system: appends go to the page cache, `sync` runs
//! fdatasync (and, for a new file, an fsync of the directory) on glommio's blocking pool so
//! the executor's core never waits on the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_storage::wal::Disk;
use prometheus_client::metrics::histogram::Histogram;

/// A directory of WAL files.
pub struct FsDisk {
    dir: PathBuf,
    /// Seconds per fdatasync.
    fsync_seconds: Histogram,
    open: BTreeMap<String, Arc<File>>,
    /// Files created since the directory was last synced.
    new_files: BTreeSet<String>,
}

impl FsDisk {
    /// Opens (creating) the directory; each fdatasync's duration goes to `fsync_seconds`.
    pub fn open(dir: &Path, fsync_seconds: Histogram) -> io::Result<FsDisk> {
        fs::create_dir_all(dir)?;
        Ok(FsDisk { dir: dir.to_path_buf(), fsync_seconds, open: BTreeMap::new(), new_files: BTreeSet::new() })
    }

    fn file(&mut self, name: &str) -> io::Result<Arc<File>> {
        if let Some(f) = self.open.get(name) {
            return Ok(f.clone());
        }
        let path = self.dir.join(name);
        if !path.exists() {
            self.new_files.insert(name.to_string());
        }
        let f = Arc::new(OpenOptions::new().create(true).append(true).open(path)?);
        self.open.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    glommio::executor().spawn_blocking(f).await
}

impl Disk for FsDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(name))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let file = self.file(name)?;
        (&*file).write_all(data)
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.file(name)?.set_len(len)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        self.new_files.remove(name);
        fs::remove_file(self.dir.join(name))
    }

    async fn sync(&mut self, name: &str) -> io::Result<()> {
        let file = self.file(name)?;
        let started = std::time::Instant::now();
        blocking(move || file.sync_data()).await?;
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        if self.new_files.remove(name) {
            let dir = self.dir.clone();
            blocking(move || File::open(dir)?.sync_all()).await?;
        }
        Ok(())
    }
}
