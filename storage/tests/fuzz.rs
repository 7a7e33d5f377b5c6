//! What the storage reads back from disk or from a peer, fuzzed (see `keel-fuzz`): WAL
//! segments, damaged any way, and snapshot images. Recovery either refuses or recovers a log
//! that recovering again leaves as it is; an image either fails to restore or gives a store
//! that opens (or refuses to) and serves reads; nothing panics.

use std::future::Future;

use keel_fuzz::fuzz;
use keel_storage::backend::{self, MemBackend};
use keel_storage::mvcc::{DeleteRangeRequest, KvStore, PutRequest, RangeRequest};
use keel_storage::wal::{Disk, MemDisk, MemFile, SnapshotPoint, Wal, WalEntry};

/// The in-memory disk never pends, so one poll finishes its futures.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("in-memory futures complete at once"),
    }
}

/// Largest segment in the fuzzed logs: small, so a few saves roll into a second segment.
const SEGMENT_BYTES: u64 = 600;

/// A log of two segments: entries, hard states, a snapshot point and a rewritten suffix.
fn log() -> MemDisk {
    let (mut wal, _) = Wal::open(MemDisk::default(), SEGMENT_BYTES).expect("opens");
    for index in 1..=12 {
        let entry = WalEntry { index, data: vec![index as u8; 20 + index as usize * 7] };
        wal.save(Some(format!("hard state {index}").into_bytes()), &[entry]).expect("saves");
    }
    wal.save_snapshot(SnapshotPoint { index: 4, meta: b"meta".to_vec() }, None).expect("saves");
    wal.save(None, &[WalEntry { index: 11, data: b"replaced".to_vec() }]).expect("saves");
    ready(wal.sync()).expect("syncs");
    let disk = wal.disk().clone();
    assert!(disk.list().unwrap().len() >= 2, "the log has an older segment");
    disk
}

#[test]
fn wal_segments() {
    let disk = log();
    let names = disk.list().unwrap();
    let examples: Vec<Vec<u8>> = names.iter().map(|n| disk.files[n].data.clone()).collect();
    fuzz("WAL segments", &examples, |bytes| {
        // The bytes stand for the older or the newer segment, with some room after them.
        let mut damaged = disk.clone();
        let name = &names[usize::from(bytes.first().copied().unwrap_or(0)) % names.len()];
        let room = usize::from(bytes.last().copied().unwrap_or(0)) * 8;
        damaged
            .files
            .insert(name.clone(), MemFile { data: bytes.to_vec(), synced: bytes.len(), size: bytes.len() + room });
        if let Ok((wal, recovered)) = Wal::open(damaged, SEGMENT_BYTES) {
            let (_, again) = Wal::open(wal.disk().clone(), SEGMENT_BYTES).expect("a recovered log opens again");
            assert_eq!(
                (again.entries, again.hard_state, again.snapshot),
                (recovered.entries, recovered.hard_state, recovered.snapshot)
            );
            assert_eq!(again.torn_bytes, 0, "recovery left nothing torn");
        }
    });
}

/// A store image with history: puts, a delete, a lease, a compaction.
fn image() -> Vec<u8> {
    let mut store = KvStore::open(MemBackend::new()).expect("opens");
    let mut index = 0;
    let mut apply = |store: &mut KvStore<MemBackend>, f: &dyn Fn(&mut keel_storage::mvcc::Apply<'_, MemBackend>)| {
        index += 1;
        let mut apply = store.begin(index);
        f(&mut apply);
        apply.commit();
        store.flush().expect("flushes");
    };
    apply(&mut store, &|a| a.lease_grant(7, 60, None).expect("granted"));
    for key in ["a", "b", "a", "c"] {
        let put = PutRequest { key: key.into(), value: vec![1; 10], lease: 7, ..Default::default() };
        apply(&mut store, &|a| drop(a.put(&put).expect("put")));
    }
    let delete = DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() };
    apply(&mut store, &|a| drop(a.delete_range(&delete).expect("deleted")));
    apply(&mut store, &|a| a.compact(3).expect("compacted"));
    backend::dump(store.backend()).expect("dumps")
}

#[test]
fn snapshot_images() {
    fuzz("snapshot images", &[image()], |bytes| {
        let mut restored = MemBackend::new();
        if backend::restore(&mut restored, bytes).is_err() {
            return;
        }
        let Ok(store) = KvStore::open(restored) else { return };
        let everything = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let _ = store.range(&everything);
        let _ = store.hash_kv(0);
        let (from, to) = (store.compact_revision().max(1), store.current_revision());
        if from <= to {
            let _ = store.events(from, to, 1 << 20);
        }
    });
}
