//! The disk's fdatasync floor: the latency of appending a small record to a file and making it
//! durable, which bounds any write that waits for its WAL entry to be on disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::report::{self, Report};

/// Appends `count` records of `size` bytes to a fresh file in `dir`, each followed by
/// fdatasync, and reports the latency of each append-and-sync.
pub fn measure(dir: &Path, count: u64, size: usize) -> Result<Report, String> {
    let file_path = tempfile::Builder::new()
        .prefix("keel-fsync-floor")
        .tempfile_in(dir)
        .map_err(|e| format!("creating a file in {}: {e}", dir.display()))?
        .into_temp_path();
    let mut file = OpenOptions::new().append(true).open(&file_path).map_err(|e| e.to_string())?;
    let record = vec![b'w'; size];
    let mut histogram = report::new_histogram();
    let started = Instant::now();
    for _ in 0..count {
        let begun = Instant::now();
        file.write_all(&record).and_then(|()| file.sync_data()).map_err(|e| format!("writing: {e}"))?;
        report::record(&mut histogram, begun.elapsed());
    }
    let elapsed = started.elapsed().max(Duration::from_nanos(1));
    Ok(Report::new("fdatasync", 1, 0, &histogram, 0, Vec::new(), elapsed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_every_sync() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::measure(dir.path(), 20, 128).unwrap();
        assert_eq!(report.ops, 20);
        assert!(report.latency_us.p50 > 0);
    }
}
