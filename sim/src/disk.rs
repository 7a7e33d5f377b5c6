//! The simulated disk behind the WAL's `Disk` seam, and the simulated backend behind the
//! store's `Backend` seam.
//!
//! Both live outside the simulated node (behind `Arc<Mutex<..>>`), so they survive a kill,
//! as files do. A process crash keeps everything written (the OS still has it). A power cut
//! keeps what was synced; of each file's unsynced bytes, each 512-byte sector (at the file's
//! sector boundaries) survives or reads back as zeros on its own, as a disk writes sectors
//! in any order (a torn last write); and a size change not yet synced (room reserved, a file
//! grown) may or may not survive, cutting off what lies past the size that did. An injected
//! I/O error fails every later disk call, and the node must stop rather than continue.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_storage::backend::{Backend, MemBackend, PendingSync, Result as BackendResult, Table, Visitor, WriteBatch};
use keel_storage::rocks::RocksBackend;
use keel_storage::wal::Disk;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The unit a power cut tears writes at.
const SECTOR: usize = 512;

/// One simulated file.
#[derive(Debug, Default, Clone)]
pub struct SimFile {
    /// Bytes a power cut cannot take away.
    synced: usize,
    data: Vec<u8>,
    /// The file's size: at least the data's, more where room was reserved (read as zeros).
    size: usize,
    /// The size a power cut cannot take away.
    synced_size: usize,
}

#[derive(Debug, Default)]
struct DiskState {
    files: BTreeMap<String, SimFile>,
    failed: bool,
    sync_latency: Duration,
    /// When the latest sync started finishes: syncs finish in the order they started.
    last_sync_done: Option<madsim::time::Instant>,
}

/// One node's WAL directory.
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

fn injected() -> io::Error {
    io::Error::other("injected I/O error")
}

impl SimDisk {
    /// An empty disk whose fsync takes `sync_latency` of simulated time.
    pub fn new(sync_latency: Duration) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(DiskState { sync_latency, ..Default::default() })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().expect("disk lock")
    }

    /// Makes every later call fail.
    pub fn fail(&self) {
        self.state().failed = true;
    }

    /// Repairs the disk (the operator replaced it, keeping its contents).
    pub fn repair(&self) {
        self.state().failed = false;
    }

    /// A power cut: of the unsynced bytes, each sector survives or is zeros, and an unsynced
    /// size change survives or not. Returns the unsynced bytes lost.
    pub fn power_cut(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut lost = 0;
        for file in self.state().files.values_mut() {
            let mut start = file.synced;
            while start < file.data.len() {
                let end = ((start / SECTOR + 1) * SECTOR).min(file.data.len());
                if rng.gen_bool(0.5) {
                    lost += end - start;
                    file.data[start..end].fill(0);
                }
                start = end;
            }
            if rng.gen_bool(0.5) {
                file.size = file.synced_size.max(file.synced);
            }
            if file.data.len() > file.size {
                lost += file.data[file.size..].iter().filter(|&&b| b != 0).count();
                file.data.truncate(file.size);
            }
            file.synced = file.data.len();
            file.synced_size = file.size;
        }
        lost
    }

    /// Cuts file `name` short at `len` bytes, as damage after a clean stop would (synced
    /// bytes lost); returns the file as it was, for [`SimDisk::restore`].
    pub fn cut(&self, name: &str, len: usize) -> Option<SimFile> {
        let mut state = self.state();
        let file = state.files.get_mut(name)?;
        let before = file.clone();
        file.data.truncate(len);
        file.size = len;
        file.synced = file.synced.min(len);
        file.synced_size = len;
        Some(before)
    }

    /// Puts a file back as it was (the operator restored it from a backup).
    pub fn restore(&self, name: &str, file: SimFile) {
        self.state().files.insert(name.to_string(), file);
    }
}

impl Disk for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let state = self.state();
        if state.failed {
            return Err(injected());
        }
        Ok(state.files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let state = self.state();
        if state.failed {
            return Err(injected());
        }
        let file = state.files.get(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut bytes = file.data.clone();
        bytes.resize(file.size.max(file.data.len()), 0);
        Ok(bytes)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        if state.failed {
            return Err(injected());
        }
        let file = state.files.entry(name.to_string()).or_default();
        file.data.extend_from_slice(data);
        file.size = file.size.max(file.data.len());
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if state.failed {
            return Err(injected());
        }
        let file = state.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.data.truncate(len as usize);
        file.synced = file.synced.min(file.data.len());
        file.size = len as usize;
        file.synced_size = file.synced_size.min(file.size);
        Ok(())
    }

    fn reserve(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if state.failed {
            return Err(injected());
        }
        let file = state.files.entry(name.to_string()).or_default();
        file.size = file.size.max(len as usize);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut state = self.state();
        if state.failed {
            return Err(injected());
        }
        state.files.remove(name);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> impl std::future::Future<Output = io::Result<()>> + use<> {
        let disk = self.clone();
        let name = name.to_string();
        let (done_at, upto) = {
            let mut state = self.state();
            // The sync starts now and finishes after every sync started before it.
            let alone = madsim::time::Instant::now() + state.sync_latency;
            let done_at = state.last_sync_done.map_or(alone, |last| last.max(alone));
            state.last_sync_done = Some(done_at);
            (done_at, state.files.get(&name).map_or((0, 0), |f| (f.data.len(), f.size)))
        };
        async move {
            madsim::time::sleep_until(done_at).await;
            let mut state = disk.state();
            if state.failed {
                return Err(injected());
            }
            if let Some(file) = state.files.get_mut(&name) {
                // What was appended and reserved before the sync began (a truncation since may
                // have cut it).
                file.synced = file.synced.max(upto.0.min(file.data.len()));
                file.synced_size = file.synced_size.max(upto.1.min(file.size));
            }
            Ok(())
        }
    }
}

/// Simulated time a started backend sync takes (RocksDB writes a memtable out to a file).
const BACKEND_SYNC_LATENCY: Duration = Duration::from_millis(20);

/// The store's backend in the simulation: in memory with power-cut modelling, or the real
/// RocksDB (whose files survive a kill; power cuts are not modelled for it).
pub enum SimBackend {
    /// Shared in-memory backend.
    Mem(Arc<Mutex<MemBackend>>),
    /// RocksDB in a directory of its own.
    Rocks(RocksBackend),
}

impl SimBackend {
    fn with_mem<T>(&self, f: impl FnOnce(&MemBackend) -> T) -> Option<T> {
        match self {
            SimBackend::Mem(m) => Some(f(&m.lock().expect("backend lock"))),
            SimBackend::Rocks(_) => None,
        }
    }
}

impl Backend for SimBackend {
    fn get(&self, table: Table, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        match self {
            SimBackend::Rocks(r) => r.get(table, key),
            mem => mem.with_mem(|m| m.get(table, key)).expect("mem"),
        }
    }

    fn visit(&self, table: Table, start: &[u8], end: &[u8], visit: &mut Visitor<'_>) -> BackendResult<()> {
        match self {
            SimBackend::Rocks(r) => r.visit(table, start, end, visit),
            mem => mem.with_mem(|m| m.visit(table, start, end, visit)).expect("mem"),
        }
    }

    fn write(&mut self, batch: WriteBatch) -> BackendResult<()> {
        match self {
            SimBackend::Mem(m) => m.lock().expect("backend lock").write(batch),
            SimBackend::Rocks(r) => r.write(batch),
        }
    }

    fn sync(&mut self) -> BackendResult<()> {
        match self {
            SimBackend::Mem(m) => m.lock().expect("backend lock").sync(),
            SimBackend::Rocks(r) => r.sync(),
        }
    }

    fn start_sync(&mut self) -> PendingSync {
        match self {
            SimBackend::Mem(m) => {
                let through = m.lock().expect("backend lock").written_count();
                let backend = m.clone();
                Box::pin(async move {
                    madsim::time::sleep(BACKEND_SYNC_LATENCY).await;
                    backend.lock().expect("backend lock").sync_through(through);
                    Ok(())
                })
            }
            // In place: the simulation starts no flush thread (a flush on a thread would finish
            // at a real time the simulator does not control, and the run would not replay).
            SimBackend::Rocks(r) => r.start_sync(),
        }
    }

    fn size_bytes(&self) -> u64 {
        match self {
            SimBackend::Rocks(r) => r.size_bytes(),
            mem => mem.with_mem(|m| m.size_bytes()).expect("mem"),
        }
    }

    fn defragment(&mut self) -> BackendResult<()> {
        match self {
            SimBackend::Mem(m) => m.lock().expect("backend lock").defragment(),
            SimBackend::Rocks(r) => r.defragment(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn power_cut_keeps_synced_bytes_and_tears_the_rest_by_sector() {
        madsim::runtime::Runtime::new().block_on(async {
            let mut disk = SimDisk::new(Duration::ZERO);
            disk.reserve("f", 4096).unwrap();
            disk.append("f", b"synced").unwrap();
            disk.sync("f").await.unwrap();
            let tail: Vec<u8> = (0..2000).map(|i| (i % 250 + 1) as u8).collect();
            disk.append("f", &tail).unwrap();
            disk.reserve("f", 8192).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let (mut torn, mut sizes) = (false, std::collections::BTreeSet::new());
            for _ in 0..20 {
                let copy = SimDisk(Arc::new(Mutex::new(DiskState {
                    files: disk.state().files.clone(),
                    ..Default::default()
                })));
                copy.power_cut(&mut rng);
                let data = copy.read("f").unwrap();
                sizes.insert(data.len());
                assert!(data.starts_with(b"synced"));
                // Each sector of the tail is the write or zeros, nothing in between.
                let written = [b"synced".to_vec(), tail.clone()].concat();
                for (sector, chunk) in written.chunks(SECTOR).enumerate() {
                    let got = &data[sector * SECTOR..sector * SECTOR + chunk.len()];
                    let zeros = got.iter().skip(if sector == 0 { 6 } else { 0 }).all(|&b| b == 0);
                    assert!(got == chunk || zeros, "sector {sector}");
                    torn |= got != chunk && sector > 0;
                }
            }
            assert!(torn, "some power cut tears the last write");
            assert_eq!(sizes, [4096, 8192].into(), "an unsynced reservation may be lost");
            disk.fail();
            assert!(disk.append("f", b"x").is_err());
        });
    }

    #[test]
    fn a_cut_file_is_shorter_until_restored() {
        let mut disk = SimDisk::new(Duration::ZERO);
        disk.reserve("f", 100).unwrap();
        disk.append("f", b"0123456789").unwrap();
        let before = disk.cut("f", 4).expect("the file exists");
        assert_eq!(disk.read("f").unwrap(), b"0123");
        disk.restore("f", before);
        assert_eq!(disk.read("f").unwrap().len(), 100);
        assert!(disk.read("f").unwrap().starts_with(b"0123456789"));
    }
}
