//! The simulated disk behind the WAL's `Disk` seam, and the simulated backend behind the
//! store's `Backend` seam.
//!
//! Both live outside the simulated node (behind `Arc<Mutex<..>>`), so they survive a kill,
//! as files do. A process crash keeps everything written (the OS still has it); a power cut
//! keeps only what was synced, plus, for each file, a random prefix of the unsynced tail (a
//! torn last write). An injected I/O error fails every later disk call, and the node must
//! stop rather than continue.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_storage::backend::{Backend, MemBackend, PendingSync, Result as BackendResult, Table, Visitor, WriteBatch};
use keel_storage::rocks::RocksBackend;
use keel_storage::wal::Disk;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// Bytes a power cut cannot take away.
    synced: usize,
    data: Vec<u8>,
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

    /// A power cut: unsynced bytes are lost except a random prefix (a torn write). Returns
    /// the bytes lost.
    pub fn power_cut(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut lost = 0;
        for file in self.state().files.values_mut() {
            let unsynced = file.data.len() - file.synced;
            let keep = if unsynced > 0 && rng.gen_bool(0.5) { rng.gen_range(0..=unsynced) } else { 0 };
            lost += unsynced - keep;
            file.data.truncate(file.synced + keep);
            file.synced = file.data.len();
        }
        lost
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
        state.files.get(name).map(|f| f.data.clone()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        if state.failed {
            return Err(injected());
        }
        state.files.entry(name.to_string()).or_default().data.extend_from_slice(data);
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
            (done_at, state.files.get(&name).map_or(0, |f| f.data.len()))
        };
        async move {
            madsim::time::sleep_until(done_at).await;
            let mut state = disk.state();
            if state.failed {
                return Err(injected());
            }
            if let Some(file) = state.files.get_mut(&name) {
                // What was appended before the sync began (a truncation since may have cut it).
                file.synced = file.synced.max(upto.min(file.data.len()));
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

    fn scan(&self, table: Table, start: &[u8], end: &[u8]) -> BackendResult<Vec<(Vec<u8>, Vec<u8>)>> {
        match self {
            SimBackend::Rocks(r) => r.scan(table, start, end),
            mem => mem.with_mem(|m| m.scan(table, start, end)).expect("mem"),
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
    fn power_cut_keeps_synced_bytes_and_tears_the_rest() {
        madsim::runtime::Runtime::new().block_on(async {
            let mut disk = SimDisk::new(Duration::ZERO);
            disk.append("f", b"synced").unwrap();
            disk.sync("f").await.unwrap();
            disk.append("f", b"-unsynced-tail").unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let mut torn = false;
            for _ in 0..20 {
                let copy = SimDisk(Arc::new(Mutex::new(DiskState {
                    files: disk.state().files.clone(),
                    ..Default::default()
                })));
                copy.power_cut(&mut rng);
                let data = copy.read("f").unwrap();
                assert!(data.starts_with(b"synced") && b"synced-unsynced-tail".starts_with(&data));
                torn |= data.len() > 6 && data.len() < 20;
            }
            assert!(torn, "some power cut tears the last write");
            disk.fail();
            assert!(disk.append("f", b"x").is_err());
        });
    }
}
