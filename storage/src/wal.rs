//! The Raft write-ahead log over the [`Disk`] seam.
//!
//! Layout: segment files `wal-<seq>-<first index>` holding records
//! `[len u32][crc32c u32][kind u8][payload]`, where the CRC covers kind and payload. Each
//! segment starts with the current hard state and snapshot point, so older segments can be
//! removed once a snapshot covers them. Snapshot images live beside the log in
//! `snap-<index>` files.
//!
//! The log is agnostic of Raft's encoding: entries are opaque bytes keyed by their index, and
//! the hard state and snapshot point are opaque bytes the node encodes.
//!
//! Segments reserve their room on disk ahead ([`Disk::reserve`]), so a segment may end in
//! zero bytes no record was written over; a record header is never all zero. Every append
//! lands inside room reserved before it: a write that does not fit what is left starts a new
//! segment reserved large enough. So no crash leaves a segment shorter than its records (a
//! file's size changes only with a reservation, never with an append), and a sector the last
//! write did not reach reads back as zeros.
//!
//! Recovery invariants: records are replayed in order; an entry at index `i` replaces every
//! entry at `>= i` (a conflicting suffix was truncated); zero bytes to the end of a segment
//! are unused room (cut off in the newest segment, so appends continue over it). Only a torn
//! last write is cut off: a damaged record that lies inside its file and covers a sector (a
//! 512-byte-aligned piece of the file, as etcd's WAL splits it) of zeros only, which that
//! write did not reach. The log ends there: the rest of that segment and any later segment
//! (begun after the torn write, and synced no earlier than it) go with it. Any other damage
//! — a record running past the end of its file, a record over the largest size, a checksum
//! failing with every sector written, a gap — is corruption, and recovery refuses to
//! continue rather than start from a wrong log.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;

/// Files in one directory, written by appending; data is durable only after `sync`. A disk
/// owns its state (it borrows nothing), so a sync may outlive the call that started it.
pub trait Disk: 'static {
    /// File names, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Appends to the file, creating it if needed (not durable until `sync`).
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes the file.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Lets the file grow to `len` bytes without changing its size on disk at each sync (a
    /// real disk sets the size ahead; syncing an append that does not grow the file is
    /// cheaper). Until appended over, that room reads back as zero bytes after the data.
    fn reserve(&mut self, name: &str, len: u64) -> io::Result<()> {
        let _ = (name, len);
        Ok(())
    }
    /// Makes what was appended to the file before the call, and its directory entry, durable
    /// once the returned future completes. The future borrows nothing, so the caller can go on
    /// working, appending and starting further syncs while the disk works; syncs complete in
    /// the order they were started (whatever the files), so a completed sync means every
    /// earlier one completed too.
    fn sync(&mut self, name: &str) -> impl Future<Output = io::Result<()>> + use<Self>;
}

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk failed; the node must stop.
    #[error("wal: io: {0}")]
    Io(#[from] io::Error),
    /// A record in the middle of the log is damaged.
    #[error("wal: corrupt record in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment.
        file: String,
        /// Byte offset of the damaged record.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Result of log operations.
pub type Result<T> = std::result::Result<T, WalError>;

const HEADER: usize = 9;
/// The unit a disk writes whole: a sector of zeros inside a damaged record is one its last
/// write never reached (etcd's WAL reasons the same way).
const SECTOR: usize = 512;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
/// Sanity bound on one record; anything larger is damage.
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// One log entry: its index and its encoding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// Position in the log.
    pub index: u64,
    /// The encoded entry.
    pub data: Vec<u8>,
}

/// A snapshot point: the last index it covers and its encoded metadata.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// Last index covered.
    pub index: u64,
    /// The encoded metadata.
    pub meta: Vec<u8>,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovered {
    /// Last hard state written (empty if none).
    pub hard_state: Vec<u8>,
    /// Last snapshot point written.
    pub snapshot: SnapshotPoint,
    /// Entries after the snapshot point, contiguous.
    pub entries: Vec<WalEntry>,
    /// Bytes of torn tail that were cut off.
    pub torn_bytes: usize,
}

/// The write-ahead log.
pub struct Wal<D: Disk> {
    disk: D,
    segment: String,
    segment_seq: u64,
    segment_bytes: u64,
    /// Room reserved for the current segment: no append goes past it.
    reserved_bytes: u64,
    max_segment_bytes: u64,
    /// Index of the last entry written.
    last_index: u64,
    hard_state: Vec<u8>,
    snapshot: SnapshotPoint,
    /// Files written since the last sync.
    dirty: Vec<String>,
    /// Where `save` encodes its records (kept to reuse the allocation).
    records: Vec<u8>,
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("wal-{seq:016x}-{first_index:016x}")
}

fn parse_segment(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("wal-")?;
    let (seq, first) = rest.split_once('-')?;
    Some((u64::from_str_radix(seq, 16).ok()?, u64::from_str_radix(first, 16).ok()?))
}

fn snapshot_name(index: u64) -> String {
    format!("snap-{index:016x}")
}

/// Appends one record whose payload is `parts` one after another.
fn encode_record(kind: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let crc = parts.iter().fold(crc32c::crc32c(&[kind]), |crc, part| crc32c::crc32c_append(crc, part));
    out.extend_from_slice(&(len as u32 + 1).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Appends the record of a snapshot point.
fn encode_snapshot_point(point: &SnapshotPoint, out: &mut Vec<u8>) {
    encode_record(KIND_SNAPSHOT, &[&point.index.to_be_bytes(), &point.meta], out);
}

/// One decoded record, or why decoding stopped.
enum Decoded<'a> {
    Record {
        kind: u8,
        payload: &'a [u8],
        next: usize,
    },
    /// Only zero bytes from here on: room reserved and never written.
    Unused,
    /// A record inside the file that does not check out; `end` is where it claims to end.
    Damaged {
        end: usize,
        reason: String,
    },
    /// A record that cannot be the last write torn: it claims more than the largest record
    /// or than the file holds (appends stay inside reserved room), so the log was damaged.
    Corrupt {
        reason: String,
    },
}

fn decode_record(buf: &[u8], at: usize) -> Decoded<'_> {
    let rest = &buf[at..];
    if rest.iter().all(|&b| b == 0) {
        return Decoded::Unused;
    }
    if rest.len() < HEADER {
        return Decoded::Corrupt {
            reason: format!("a record header runs past the end of the file ({} bytes left)", rest.len()),
        };
    }
    let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        // A header whose length never reached the disk: its other bytes say how far the
        // record went, so only the header itself is known to be the record's.
        return Decoded::Damaged { end: at + HEADER, reason: "zero record length".into() };
    }
    if len > MAX_RECORD {
        return Decoded::Corrupt { reason: format!("record length {len} exceeds the largest record ({MAX_RECORD})") };
    }
    if 8 + len > rest.len() {
        let left = rest.len() - 8;
        return Decoded::Corrupt {
            reason: format!("record length {len} runs past the end of the file ({left} bytes left)"),
        };
    }
    let body = &rest[8..8 + len];
    if crc32c::crc32c(body) != crc {
        return Decoded::Damaged { end: at + 8 + len, reason: "checksum mismatch".into() };
    }
    Decoded::Record { kind: body[0], payload: &body[1..], next: at + 8 + len }
}

/// Whether the damaged record at `buf[at..end]` is a write torn by a crash: some sector of it
/// (split at the file's 512-byte boundaries) is zeros only, never written.
fn torn_write(buf: &[u8], at: usize, end: usize) -> bool {
    debug_assert!(at < end && end <= buf.len());
    let mut start = at;
    while start < end {
        let stop = (start / SECTOR + 1) * SECTOR;
        let piece = &buf[start..stop.min(end)];
        if piece.iter().all(|&b| b == 0) {
            return true;
        }
        start = stop;
    }
    false
}

impl<D: Disk> Wal<D> {
    /// Opens the log on `disk`, recovering what it holds (an empty disk gives an empty log).
    pub fn open(mut disk: D, max_segment_bytes: u64) -> Result<(Wal<D>, Recovered)> {
        let mut segments: Vec<(u64, u64, String)> =
            disk.list()?.into_iter().filter_map(|n| parse_segment(&n).map(|(seq, first)| (seq, first, n))).collect();
        segments.sort();
        let mut rec = Recovered::default();
        // Where the newest segment's records end: appends continue there.
        let mut newest_bytes = 0;
        let mut kept = segments.len();
        'segments: for (i, (_, _, name)) in segments.iter().enumerate() {
            let data = disk.read(name)?;
            let newest = i + 1 == segments.len();
            let mut at = 0;
            while at < data.len() {
                match decode_record(&data, at) {
                    Decoded::Record { kind, payload, next } => {
                        apply_record(&mut rec, kind, payload).map_err(|reason| WalError::Corrupt {
                            file: name.clone(),
                            offset: at,
                            reason,
                        })?;
                        at = next;
                    }
                    Decoded::Unused => {
                        if newest {
                            disk.truncate(name, at as u64)?;
                        }
                        break;
                    }
                    Decoded::Damaged { end, .. } if torn_write(&data, at, end) => {
                        // The log ends with this torn write. A later segment was begun after
                        // it, and made durable by the same sync or a later one (syncs finish
                        // in order), which never finished: nothing in it is durable either.
                        rec.torn_bytes = data[at..].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
                        disk.truncate(name, at as u64)?;
                        for (_, _, later) in &segments[i + 1..] {
                            disk.remove(later)?;
                        }
                        (newest_bytes, kept) = (at as u64, i + 1);
                        break 'segments;
                    }
                    Decoded::Damaged { reason, .. } | Decoded::Corrupt { reason } => {
                        return Err(WalError::Corrupt { file: name.clone(), offset: at, reason });
                    }
                }
            }
            newest_bytes = at as u64;
        }
        segments.truncate(kept);
        // Segments that survive compaction may start before the snapshot point (their
        // headers name an older one): keep what follows the snapshot, which must be gapless.
        let snapshot_index = rec.snapshot.index;
        rec.entries.retain(|e| e.index > snapshot_index);
        for (expected, entry) in (snapshot_index + 1..).zip(&rec.entries) {
            if entry.index != expected {
                let reason = format!("log resumes at {} where {expected} was expected", entry.index);
                return Err(WalError::Corrupt { file: "(all segments)".into(), offset: 0, reason });
            }
        }
        let (segment_seq, segment, segment_bytes) = match segments.last() {
            Some((seq, _, name)) => (*seq, name.clone(), newest_bytes),
            None => (0, String::new(), 0),
        };
        let mut wal = Wal {
            disk,
            segment,
            segment_seq,
            segment_bytes,
            reserved_bytes: segment_bytes.max(max_segment_bytes),
            max_segment_bytes,
            last_index: rec.entries.last().map_or(rec.snapshot.index, |e| e.index),
            hard_state: rec.hard_state.clone(),
            snapshot: rec.snapshot.clone(),
            dirty: Vec::new(),
            records: Vec::new(),
        };
        if wal.segment.is_empty() {
            wal.start_segment(wal.last_index + 1, 0)?;
        } else {
            wal.disk.reserve(&wal.segment, wal.reserved_bytes)?;
        }
        Ok((wal, rec))
    }

    /// The segment written to now (the newest).
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// Starts the next segment, whose first entry will be `first_index`, with room for its
    /// header records and `then_bytes` more (at least the largest segment's room).
    fn start_segment(&mut self, first_index: u64, then_bytes: usize) -> Result<()> {
        let mut header = Vec::new();
        encode_snapshot_point(&self.snapshot, &mut header);
        encode_record(KIND_HARD_STATE, &[&self.hard_state], &mut header);
        self.segment_seq += 1;
        self.segment = segment_name(self.segment_seq, first_index);
        self.segment_bytes = 0;
        self.reserved_bytes = self.max_segment_bytes.max((header.len() + then_bytes) as u64);
        self.disk.reserve(&self.segment, self.reserved_bytes)?;
        self.append(&header)
    }

    /// Writes `buf`, whose first entry (if any) is `first_index`, in the current segment's
    /// reserved room, or at the start of a new segment if it does not fit.
    fn write(&mut self, buf: &[u8], first_index: u64) -> Result<()> {
        if self.segment_bytes + buf.len() as u64 > self.reserved_bytes {
            self.start_segment(first_index, buf.len())?;
        }
        self.append(buf)
    }

    fn append(&mut self, buf: &[u8]) -> Result<()> {
        assert!(self.segment_bytes + buf.len() as u64 <= self.reserved_bytes, "an append leaves the reserved room");
        self.disk.append(&self.segment, buf)?;
        self.segment_bytes += buf.len() as u64;
        if !self.dirty.contains(&self.segment) {
            self.dirty.push(self.segment.clone());
        }
        Ok(())
    }

    /// Appends entries (replacing any conflicting suffix) and the hard state; durable after
    /// [`Wal::sync`].
    pub fn save(&mut self, hard_state: Option<Vec<u8>>, entries: &[WalEntry]) -> Result<()> {
        let first_index = entries.first().map_or(self.last_index + 1, |e| e.index);
        let mut buf = std::mem::take(&mut self.records);
        buf.clear();
        for entry in entries {
            self.last_index = entry.index;
            encode_record(KIND_ENTRY, &[&entry.index.to_be_bytes(), &entry.data], &mut buf);
        }
        if let Some(hs) = hard_state {
            encode_record(KIND_HARD_STATE, &[&hs], &mut buf);
            self.hard_state = hs;
        }
        let written = if buf.is_empty() { Ok(()) } else { self.write(&buf, first_index) };
        self.records = buf;
        written
    }

    /// Records a snapshot point, saving its image first when given (a snapshot received from
    /// the leader). Durable after [`Wal::sync`].
    pub fn save_snapshot(&mut self, point: SnapshotPoint, image: Option<&[u8]>) -> Result<()> {
        if let Some(image) = image {
            let name = snapshot_name(point.index);
            if self.disk.list()?.contains(&name) {
                self.disk.remove(&name)?;
            }
            self.disk.append(&name, image)?;
            self.dirty.push(name);
        }
        let mut buf = Vec::new();
        encode_snapshot_point(&point, &mut buf);
        let first_index = self.last_index.max(point.index) + 1;
        self.write(&buf, first_index)?;
        self.last_index = first_index - 1;
        self.snapshot = point;
        Ok(())
    }

    /// The image saved with the snapshot point at `index`, if it is still there.
    pub fn snapshot_image(&self, index: u64) -> Result<Option<Vec<u8>>> {
        match self.disk.read(&snapshot_name(index)) {
            Ok(image) => Ok(Some(image)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes everything written so far durable once the returned future completes. The
    /// future borrows nothing from the log, so the caller may apply, answer, write and start
    /// the next sync while the disk works; syncs complete in the order they were started, and
    /// files are synced in the order they were written (a snapshot image before the record
    /// that names it).
    pub fn sync(&mut self) -> impl Future<Output = Result<()>> + use<D> {
        let syncs: Vec<_> = std::mem::take(&mut self.dirty).into_iter().map(|name| self.disk.sync(&name)).collect();
        async move {
            for sync in syncs {
                sync.await?;
            }
            Ok(())
        }
    }

    /// Removes segments and snapshot images wholly covered by the recorded snapshot point.
    /// Call only after the state at that point is durable elsewhere.
    pub async fn compact(&mut self) -> Result<()> {
        let upto = self.snapshot.index;
        if self.segment_bytes > 0 {
            // Start a fresh segment so the current one can go once it is covered; it must be
            // durable first, as it carries the snapshot point and hard state from now on.
            self.start_segment(self.last_index + 1, 0)?;
            self.sync().await?;
        }
        let mut segments: Vec<(u64, u64, String)> =
            self.disk.list()?.into_iter().filter_map(|n| parse_segment(&n).map(|(s, f)| (s, f, n))).collect();
        segments.sort();
        for pair in segments.windows(2) {
            let (next_first, name) = (pair[1].1, &pair[0].2);
            if next_first <= upto + 1 && *name != self.segment {
                self.disk.remove(name)?;
            }
        }
        for name in self.disk.list()? {
            if name.starts_with("snap-") && name != snapshot_name(upto) {
                self.disk.remove(&name)?;
            }
        }
        Ok(())
    }

    /// The underlying disk.
    pub fn disk(&self) -> &D {
        &self.disk
    }
}

/// Where the record of entry `index` lies in a segment's bytes, if the segment holds one
/// (the last, if it was written more than once): for tools that inspect a log, and for the
/// simulator's faults.
pub fn entry_record(segment: &[u8], index: u64) -> Option<std::ops::Range<usize>> {
    let mut found = None;
    let mut at = 0;
    while let Decoded::Record { kind, payload, next } = decode_record(segment, at) {
        if kind == KIND_ENTRY && split_index(payload).is_ok_and(|(i, _)| i == index) {
            found = Some(at..next);
        }
        at = next;
    }
    found
}

fn split_index(payload: &[u8]) -> std::result::Result<(u64, &[u8]), String> {
    if payload.len() < 8 {
        return Err("record too short for its index".into());
    }
    let (index, rest) = payload.split_at(8);
    Ok((u64::from_be_bytes(index.try_into().expect("8 bytes")), rest))
}

fn apply_record(rec: &mut Recovered, kind: u8, payload: &[u8]) -> std::result::Result<(), String> {
    match kind {
        KIND_ENTRY => {
            let (index, data) = split_index(payload)?;
            // A later entry at the same index replaced a conflicting suffix.
            let keep = rec.entries.partition_point(|e| e.index < index);
            rec.entries.truncate(keep);
            rec.entries.push(WalEntry { index, data: data.to_vec() });
        }
        KIND_HARD_STATE => rec.hard_state = payload.to_vec(),
        KIND_SNAPSHOT => {
            let (index, meta) = split_index(payload)?;
            if index >= rec.snapshot.index {
                rec.snapshot = SnapshotPoint { index, meta: meta.to_vec() };
            }
        }
        other => return Err(format!("unknown record kind {other}")),
    }
    Ok(())
}

/// Files in memory, for tests: data becomes durable at `sync`, and [`MemDisk::crash`] keeps
/// only what was synced. A file reads back with zeros after its data up to the room reserved
/// for it, as a real sparse file does. (The simulator has its own disk with torn writes and
/// I/O errors.)
#[derive(Debug, Default, Clone)]
pub struct MemDisk {
    /// The files by name.
    pub files: BTreeMap<String, MemFile>,
}

/// One file of a [`MemDisk`].
#[derive(Debug, Default, Clone)]
pub struct MemFile {
    /// The bytes appended.
    pub data: Vec<u8>,
    /// How many of them are synced.
    pub synced: usize,
    /// The file's size: at least the data's, more where room was reserved.
    pub size: usize,
}

impl MemDisk {
    /// Loses everything not synced (files never synced disappear).
    pub fn crash(&mut self) {
        self.files.retain(|_, f| f.synced > 0);
        for file in self.files.values_mut() {
            file.data.truncate(file.synced);
        }
    }
}

impl Disk for MemDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let file = self.files.get(name).ok_or(io::ErrorKind::NotFound)?;
        let mut bytes = file.data.clone();
        bytes.resize(file.size.max(file.data.len()), 0);
        Ok(bytes)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let file = self.files.entry(name.to_string()).or_default();
        file.data.extend_from_slice(data);
        file.size = file.size.max(file.data.len());
        Ok(())
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let f = self.files.get_mut(name).ok_or(io::ErrorKind::NotFound)?;
        f.data.truncate(len as usize);
        f.synced = f.synced.min(len as usize);
        f.size = len as usize;
        Ok(())
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        Ok(())
    }
    fn reserve(&mut self, name: &str, len: u64) -> io::Result<()> {
        let file = self.files.entry(name.to_string()).or_default();
        file.size = file.size.max(len as usize);
        Ok(())
    }
    fn sync(&mut self, name: &str) -> impl Future<Output = io::Result<()>> + use<> {
        if let Some(f) = self.files.get_mut(name) {
            f.synced = f.data.len();
        }
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, tag: u8) -> WalEntry {
        WalEntry { index, data: vec![tag; 10] }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // The test disk never pends, so one poll finishes the future.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("test disk futures complete at once"),
        }
    }

    fn reopen(disk: MemDisk) -> (Wal<MemDisk>, Recovered) {
        Wal::open(disk, 1 << 20).unwrap()
    }

    /// The disk of a fresh log after `entries` were saved and synced.
    fn synced(entries: &[WalEntry]) -> MemDisk {
        let (mut wal, _) = reopen(MemDisk::default());
        wal.save(None, entries).unwrap();
        block_on(wal.sync()).unwrap();
        wal.disk().clone()
    }

    #[test]
    fn round_trip_with_conflicting_suffix() {
        let (mut wal, rec) = reopen(MemDisk::default());
        assert!(rec.entries.is_empty());
        wal.save(Some(b"hs1".to_vec()), &[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        wal.save(Some(b"hs2".to_vec()), &[entry(2, 2)]).unwrap();
        block_on(wal.sync()).unwrap();
        let (_, rec) = reopen(wal.disk().clone());
        assert_eq!(rec.hard_state, b"hs2");
        assert_eq!(rec.entries, vec![entry(1, 1), entry(2, 2)]);
    }

    #[test]
    fn unsynced_writes_are_lost_in_a_crash() {
        let (mut wal, _) = reopen(MemDisk::default());
        wal.save(None, &[entry(1, 1)]).unwrap();
        block_on(wal.sync()).unwrap();
        wal.save(None, &[entry(2, 1)]).unwrap();
        let mut disk = wal.disk().clone();
        disk.crash();
        assert_eq!(reopen(disk).1.entries, vec![entry(1, 1)]);
    }

    /// The newest segment's name and where its records end.
    fn newest(disk: &MemDisk) -> (String, usize) {
        let name = disk.list().unwrap().into_iter().rfind(|n| n.starts_with("wal-")).unwrap();
        let end = disk.files[&name].data.len();
        (name, end)
    }

    /// Where each record of a segment starts.
    fn record_offsets(data: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = 0;
        while let Decoded::Record { next, .. } = decode_record(data, at) {
            offsets.push(at);
            at = next;
        }
        offsets
    }

    /// An entry of `bytes` bytes, spanning sectors.
    fn large(index: u64, bytes: usize) -> WalEntry {
        WalEntry { index, data: vec![index as u8; bytes] }
    }

    #[test]
    fn a_torn_last_write_is_cut_off_and_the_log_continues() {
        let disk = synced(&[entry(1, 1), large(2, 2000), entry(3, 1)]);
        let (name, end) = newest(&disk);
        // The crash left one sector of the last write unwritten: the first (later ones made it,
        // as a disk may write them in any order), or the last.
        for sector in [record_offsets(&disk.read(&name).unwrap())[3] / SECTOR + 1, (end - 1) / SECTOR] {
            let mut torn = disk.clone();
            let data = &mut torn.files.get_mut(&name).unwrap().data;
            let sector_end = ((sector + 1) * SECTOR).min(data.len());
            data[sector * SECTOR..sector_end].fill(0);
            let (mut wal, rec) = reopen(torn);
            assert_eq!(rec.entries, vec![entry(1, 1)], "sector {sector}");
            assert!(rec.torn_bytes > 0);
            wal.save(None, &[entry(2, 7)]).unwrap();
            block_on(wal.sync()).unwrap();
            assert_eq!(reopen(wal.disk().clone()).1.entries, vec![entry(1, 1), entry(2, 7)]);
        }
    }

    #[test]
    fn damage_no_crash_leaves_is_refused_naming_the_segment() {
        let disk = synced(&[entry(1, 1), large(2, 2000), entry(3, 1)]);
        let (name, end) = newest(&disk);
        let second = record_offsets(&disk.read(&name).unwrap())[3];
        let damaged = |change: &dyn Fn(&mut MemFile)| {
            let mut damaged = disk.clone();
            change(damaged.files.get_mut(&name).unwrap());
            damaged
        };
        let set_len = |len: u32| move |f: &mut MemFile| f.data[second..second + 4].copy_from_slice(&len.to_be_bytes());
        let cases: [(&str, MemDisk, usize, &str); 5] = [
            (
                "cut short after a clean stop",
                damaged(&|f| {
                    f.data.truncate(end - 3);
                    f.size = end - 3;
                }),
                end - 27,
                "runs past the end",
            ),
            ("a length grown past the file", damaged(&set_len(15 << 20)), second, "runs past the end"),
            ("a length beyond any record", damaged(&set_len(u32::MAX)), second, "exceeds the largest record"),
            ("a length shrunk inside the file", damaged(&set_len(100)), second, "checksum mismatch"),
            ("a flipped byte in the last record", damaged(&|f| f.data[end - 2] ^= 1), end - 27, "checksum mismatch"),
        ];
        for (what, disk, at, why) in cases {
            match Wal::open(disk, 1 << 20) {
                Err(WalError::Corrupt { file, offset, reason }) => {
                    assert_eq!((file.as_str(), offset), (name.as_str(), at), "{what}");
                    assert!(reason.contains(why), "{what}: {reason}");
                }
                other => panic!("{what}: {:?}", other.map(|(_, rec)| rec)),
            }
        }
    }

    #[test]
    fn a_torn_write_in_an_older_segment_ends_the_log_there() {
        // A batch too large for the first segment's room starts a second one; the crash tore
        // the first segment's last record, so nothing of the second can be durable either.
        let (mut wal, _) = Wal::open(MemDisk::default(), 1024).unwrap();
        wal.save(None, &[large(1, 100), large(2, 700)]).unwrap();
        wal.save(Some(b"hs".to_vec()), &[large(3, 900)]).unwrap();
        block_on(wal.sync()).unwrap();
        let mut disk = wal.disk().clone();
        let first = disk.list().unwrap()[0].clone();
        assert_eq!(disk.list().unwrap().len(), 2);
        let record = entry_record(&disk.read(&first).unwrap(), 2).unwrap();
        let second_sector = (record.end - 1) / SECTOR * SECTOR;
        assert!(second_sector > record.start, "the record crosses a sector boundary");
        disk.files.get_mut(&first).unwrap().data[second_sector..record.end].fill(0);
        let (mut wal, rec) = reopen(disk);
        assert_eq!(rec.entries, vec![large(1, 100)]);
        assert!(rec.hard_state.is_empty(), "the later segment's hard state went with it");
        assert_eq!(wal.disk().list().unwrap(), vec![first]);
        wal.save(None, &[entry(2, 7)]).unwrap();
        block_on(wal.sync()).unwrap();
        assert_eq!(reopen(wal.disk().clone()).1.entries, vec![large(1, 100), entry(2, 7)]);
    }

    #[test]
    fn appends_never_leave_the_reserved_room() {
        let (mut wal, _) = Wal::open(MemDisk::default(), 256).unwrap();
        let mut index = 0;
        for i in 1..=20u8 {
            // Some batches are larger than a whole segment.
            let batch: Vec<WalEntry> = (index + 1..=index + u64::from(i % 4 + 1)).map(|e| large(e, 100)).collect();
            index += batch.len() as u64;
            wal.save(Some(vec![i]), &batch).unwrap();
            assert!(wal.disk().files.values().all(|f| f.data.len() <= f.size));
        }
        block_on(wal.sync()).unwrap();
        assert!(wal.disk().files.len() > 5);
        let (_, rec) = reopen(wal.disk().clone());
        assert_eq!(rec.entries.len() as u64, index);
    }

    #[test]
    fn reserved_room_is_not_records_and_appends_continue_over_it() {
        let disk = synced(&[entry(1, 1), entry(2, 1)]);
        let (name, end) = newest(&disk);
        assert!(disk.read(&name).unwrap().len() > end, "the segment's room reads back as zeros");
        let (mut wal, rec) = reopen(disk);
        assert_eq!((rec.entries, rec.torn_bytes), (vec![entry(1, 1), entry(2, 1)], 0));
        wal.save(None, &[entry(3, 1)]).unwrap();
        block_on(wal.sync()).unwrap();
        assert!(wal.disk().files[&name].data.ends_with(&entry(3, 1).data), "the append follows the records");
        assert_eq!(reopen(wal.disk().clone()).1.entries.len(), 3);
    }

    #[test]
    fn corrupt_middle_is_refused() {
        let mut disk = synced(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let (name, end) = newest(&disk);
        disk.files.get_mut(&name).unwrap().data[end - 40] ^= 0xff;
        assert!(matches!(Wal::open(disk, 1 << 20), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn power_loss_right_after_compaction_keeps_the_snapshot_point() {
        // Regression (found by the simulator): compaction removed the old segments while the
        // new segment holding the snapshot point was not yet durable.
        let (mut wal, _) = Wal::open(MemDisk::default(), 64).unwrap();
        for i in 1..=20 {
            wal.save(None, &[entry(i, 1)]).unwrap();
        }
        wal.save_snapshot(SnapshotPoint { index: 20, meta: b"m".to_vec() }, Some(b"image")).unwrap();
        block_on(wal.sync()).unwrap();
        block_on(wal.compact()).unwrap();
        let mut disk = wal.disk().clone();
        disk.crash();
        let (wal, rec) = reopen(disk);
        assert_eq!(rec.snapshot.index, 20);
        assert_eq!(wal.snapshot_image(20).unwrap().as_deref(), Some(&b"image"[..]));
        assert_eq!(wal.snapshot_image(19).unwrap(), None);
    }

    #[test]
    fn compaction_removes_covered_segments_and_keeps_state() {
        let (mut wal, _) = Wal::open(MemDisk::default(), 64).unwrap();
        for i in 1..=20 {
            wal.save(Some(format!("hs{i}").into_bytes()), &[entry(i, 1)]).unwrap();
        }
        let segments_before = wal.disk().list().unwrap().len();
        wal.save_snapshot(SnapshotPoint { index: 15, meta: b"meta".to_vec() }, Some(b"image")).unwrap();
        block_on(wal.sync()).unwrap();
        block_on(wal.compact()).unwrap();
        assert!(wal.disk().list().unwrap().len() < segments_before);
        let (reopened, rec) = reopen(wal.disk().clone());
        assert_eq!(rec.hard_state, b"hs20");
        assert_eq!(rec.snapshot, SnapshotPoint { index: 15, meta: b"meta".to_vec() });
        assert_eq!(reopened.snapshot_image(15).unwrap().as_deref(), Some(&b"image"[..]));
        assert_eq!(rec.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![16, 17, 18, 19, 20]);
    }
}
