//! The MVCC store: etcd's key-value semantics over the [`Backend`] seam.
//!
//! Layout in the backend: table `Kv` maps a revision (`Revision::to_bytes`, plus a `t` for a
//! tombstone) to the encoded `KeyValue`; table `Meta` holds the applied index, the current
//! revision, the compaction revision and the node's opaque metadata; table `Lease` holds each
//! lease's TTL.
//!
//! Invariants:
//! - applied entries reach the backend whole, in atomic batches that also carry the last
//!   entry's index as the applied index, so a restart never applies an entry twice or half:
//!   committed entries are staged in memory and [`KvStore::flush`] writes them together (the
//!   node flushes after each batch of entries it applies, a compaction before its scan);
//!   until then the store's own reads see staged versions, and nothing else may read the
//!   backend;
//! - a write request that changes anything takes the next main revision; its changes take
//!   sub-revisions 0, 1, ... in order; a request that changes nothing keeps the revision;
//! - a read at revision `r` sees exactly the changes with main revision `<= r`; reads below
//!   the compaction revision fail with `Compacted`, above the current one with `FutureRev`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use prost::Message;

use super::key_index::{KeyAt, KeyIndex, Revision};
use super::lease::Lessor;
use super::types::*;
use crate::backend::{Backend, BackendError, Table, WriteBatch};

const META_APPLIED: &[u8] = b"applied_index";
const META_REVISION: &[u8] = b"current_revision";
const META_COMPACT: &[u8] = b"compact_revision";
const TOMBSTONE: u8 = b't';
/// The compaction revision of a store never compacted, as etcd reports it (so compacting at
/// revision 0 is allowed, once).
const NEVER_COMPACTED: i64 = -1;

/// Why a request failed; messages are etcd's.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The revision was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision is newer than the store.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// The lease does not exist.
    #[error("lease not found")]
    LeaseNotFound,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// The lease already exists.
    #[error("lease already exists")]
    LeaseExists,
    /// The backend failed; the node must stop.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Result of MVCC operations.
pub type Result<T> = std::result::Result<T, MvccError>;

/// What committing one applied entry produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// The store's revision afterwards.
    pub revision: i64,
    /// The changes, in revision order (empty if nothing changed).
    pub events: Vec<Event>,
}

/// The MVCC keyspace.
pub struct KvStore<B: Backend> {
    backend: B,
    index: KeyIndex,
    lessor: Lessor,
    current_rev: i64,
    compact_rev: i64,
    applied_index: u64,
    /// Changes of committed entries not yet written to the backend.
    staged: WriteBatch,
    /// The versions those changes put, by revision, for reads until they are written.
    staged_kvs: BTreeMap<Revision, KeyValue>,
    /// Whether entries were committed since the last flush (even ones that changed nothing
    /// move the applied index).
    unflushed: bool,
}

fn decode_i64(v: Option<Vec<u8>>) -> i64 {
    v.and_then(|b| b.try_into().ok()).map(i64::from_be_bytes).unwrap_or(0)
}

fn kv_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = rev.to_bytes().to_vec();
    if tombstone {
        k.push(TOMBSTONE);
    }
    k
}

fn decode_kv(bytes: &[u8]) -> Result<KeyValue> {
    KeyValue::decode(bytes).map_err(|e| MvccError::Backend(BackendError(format!("undecodable key value: {e}"))))
}

impl<B: Backend> KvStore<B> {
    /// Opens the store, rebuilding the key index and leases from the backend.
    pub fn open(backend: B) -> Result<KvStore<B>> {
        let mut store = KvStore {
            index: KeyIndex::default(),
            lessor: Lessor::default(),
            current_rev: 1,
            compact_rev: NEVER_COMPACTED,
            applied_index: 0,
            staged: WriteBatch::default(),
            staged_kvs: BTreeMap::new(),
            unflushed: false,
            backend,
        };
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<()> {
        self.index = KeyIndex::default();
        self.lessor = Lessor::default();
        let meta = |k| self.backend.get(Table::Meta, k);
        self.applied_index = decode_i64(meta(META_APPLIED)?) as u64;
        self.current_rev = decode_i64(meta(META_REVISION)?).max(1);
        self.compact_rev = meta(META_COMPACT)?.map_or(NEVER_COMPACTED, |b| decode_i64(Some(b)));
        for (k, v) in self.backend.scan(Table::Lease, &[], &[])? {
            let id = i64::from_be_bytes(k.as_slice().try_into().map_err(|_| BackendError("bad lease key".into()))?);
            self.lessor.grant(id, decode_i64(Some(v)), None);
        }
        // One pass in revision order: each key's last stored version is its current one, and
        // that version's lease is the one the key is attached to.
        let mut leases: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let index = &mut self.index;
        self.backend.visit(Table::Kv, &[], &[], &mut |k, v| {
            let rev = Revision::from_bytes(k).ok_or_else(|| BackendError("bad revision key".into()))?;
            let head = KeyValueHead::decode(v).map_err(|e| BackendError(format!("undecodable key value: {e}")))?;
            if k.get(17) == Some(&TOMBSTONE) {
                index.tombstone(&head.key, rev);
                leases.remove(&head.key);
            } else {
                index.restore(&head.key, rev, Revision::new(head.create_revision, 0), head.version);
                if head.lease != 0 {
                    leases.insert(head.key, head.lease);
                } else {
                    leases.remove(&head.key);
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        for (key, lease) in leases {
            self.lessor.attach(lease, &key);
        }
        Ok(())
    }

    /// Index of the last log entry whose effects are in the store.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The current revision.
    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// The last compaction revision (-1: never compacted, as etcd reports it).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// The leases.
    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    /// The leases, to manage expiries.
    pub fn lessor_mut(&mut self) -> &mut Lessor {
        &mut self.lessor
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        debug_assert!(!self.unflushed, "the backend is read while changes are staged");
        &self.backend
    }

    /// The backend, to sync it or install a snapshot image.
    pub fn backend_mut(&mut self) -> &mut B {
        debug_assert!(!self.unflushed, "the backend is changed while changes are staged");
        &mut self.backend
    }

    /// Reloads everything from the backend (after a snapshot image was installed).
    pub fn reload(&mut self) -> Result<()> {
        assert!(!self.unflushed, "reloading over staged changes");
        self.load()
    }

    /// Writes the changes of every entry committed since the last flush to the backend, with
    /// the current revision and the applied index, in one atomic batch.
    pub fn flush(&mut self) -> Result<()> {
        if !self.unflushed {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.staged);
        batch.put(Table::Meta, META_REVISION.to_vec(), self.current_rev.to_be_bytes().to_vec());
        batch.put(Table::Meta, META_APPLIED.to_vec(), (self.applied_index as i64).to_be_bytes().to_vec());
        self.backend.write(batch)?;
        self.staged_kvs.clear();
        self.unflushed = false;
        Ok(())
    }

    fn read_kv(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(kv) = self.staged_kvs.get(&rev) {
            return Ok(kv.clone());
        }
        let bytes = self
            .backend
            .get(Table::Kv, &kv_key(rev, false))?
            .ok_or_else(|| BackendError(format!("key index names missing revision {rev:?}")))?;
        decode_kv(&bytes)
    }

    fn check_revision(&self, rev: i64, current: i64) -> Result<i64> {
        if rev > current {
            return Err(MvccError::FutureRev);
        }
        if rev > 0 && rev < self.compact_rev {
            return Err(MvccError::Compacted);
        }
        Ok(if rev <= 0 { current } else { rev })
    }

    /// Serves a range at its revision (0: the current one).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.range_at(req, self.current_rev)
    }

    fn range_at(&self, req: &RangeRequest, current: i64) -> Result<RangeResponse> {
        let rev = self.check_revision(req.revision, current)?;
        let found = self.index.range(&req.key, &req.range_end, rev);
        let count = found.len() as i64;
        if req.count_only {
            return Ok(RangeResponse { kvs: Vec::new(), more: false, count });
        }
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let mut sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let sorted = sort_order != SortOrder::None;
        if sort_target != SortTarget::Key && sort_order == SortOrder::None {
            // Results come in key order; other targets sort ascending by default.
            sort_order = SortOrder::Ascend;
        }
        // Without sorting or filtering, only limit + 1 keys are needed (the +1 sets `more`);
        // a limit of zero or less is no limit, and one too large to add to is all of them.
        let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
        let fetch = match limit {
            Some(limit) if !sorted && !filtered => limit.saturating_add(1),
            _ => usize::MAX,
        };
        let mut kvs = Vec::new();
        for (_, at) in found.iter().take(fetch) {
            let kv = self.read_kv(at.modified)?;
            if passes_filters(req, &kv) {
                kvs.push(kv);
            }
        }
        if sort_order != SortOrder::None {
            sort_kvs(&mut kvs, sort_target, sort_order);
        }
        let mut more = false;
        if let Some(limit) = limit.filter(|&l| kvs.len() > l) {
            kvs.truncate(limit);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    /// The changes with main revision in `[from, to]`, in order, for watch catch-up: whole
    /// revisions only, stopping after the revision that brings their stored size to
    /// `max_bytes`. Returns them with the last revision read (`to` if all were), so the next
    /// read starts after it.
    pub fn events(&self, from: i64, to: i64, max_bytes: usize) -> Result<(Vec<Event>, i64)> {
        debug_assert!(!self.unflushed, "the backend is scanned while changes are staged");
        debug_assert!(from <= to && to <= self.current_rev, "events {from}..={to} of {}", self.current_rev);
        if from < self.compact_rev {
            return Err(MvccError::Compacted);
        }
        let start = Revision::new(from.max(1), 0).to_bytes();
        let end = Revision::new(to + 1, 0).to_bytes();
        let (mut events, mut bytes, mut read_upto, mut last_main) = (Vec::new(), 0, to, from - 1);
        self.backend.visit(Table::Kv, &start, &end, &mut |k, v| {
            let rev = Revision::from_bytes(k).ok_or_else(|| BackendError("bad revision key".into()))?;
            if bytes >= max_bytes && rev.main > last_main {
                // Every revision before this one is read whole, and that is enough.
                read_upto = rev.main - 1;
                return Ok(ControlFlow::Break(()));
            }
            last_main = rev.main;
            bytes += k.len() + v.len();
            let kv = KeyValue::decode(v).map_err(|e| BackendError(format!("undecodable key value: {e}")))?;
            let event_type = if k.get(17) == Some(&TOMBSTONE) { EventType::Delete } else { EventType::Put };
            events.push(Event { event_type: event_type as i32, kv: Some(kv), prev_kv: None });
            Ok(ControlFlow::Continue(()))
        })?;
        Ok((events, read_upto))
    }

    /// The version of `key` visible just before revision `rev` (for a watcher's prev_kv).
    pub fn prev_kv(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        match self.index.get(key, rev - 1) {
            Some(at) => Ok(Some(self.read_kv(at.modified)?)),
            None => Ok(None),
        }
    }

    /// Hash of the key-value history up to `rev` (0: current), with the compaction revision
    /// it covers from; replicas at the same point must agree.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        debug_assert!(!self.unflushed, "the backend is scanned while changes are staged");
        let rev = self.check_revision(rev, self.current_rev)?;
        let mut hash = crc32c::crc32c(b"key");
        let end = Revision::new(rev + 1, 0).to_bytes();
        for (k, v) in self.backend.scan(Table::Kv, &[], &end)? {
            hash = crc32c::crc32c_append(hash, &k);
            hash = crc32c::crc32c_append(hash, &v);
        }
        Ok((hash, self.compact_rev, rev))
    }

    /// Starts applying log entry `index`; call [`Apply::commit`] to make it take effect.
    pub fn begin(&mut self, index: u64) -> Apply<'_, B> {
        let main = self.current_rev + 1;
        Apply { store: self, index, main, sub: 0, events: Vec::new() }
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            ord.reverse()
        } else {
            ord
        }
    });
}

/// The changes of one log entry. They are staged in the store as they are made (reads see
/// them, as etcd's transactions see their own earlier writes) and reach the backend with the
/// first [`KvStore::flush`] after [`Apply::commit`], which makes the entry applied.
pub struct Apply<'a, B: Backend> {
    store: &'a mut KvStore<B>,
    index: u64,
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl<B: Backend> Apply<'_, B> {
    /// The revision reads see: this entry's if it has changed anything.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.store.current_rev
        }
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.store.index.get(key, self.read_rev()) {
            Some(KeyAt { modified, .. }) => Ok(Some(self.store.read_kv(modified)?)),
            None => Ok(None),
        }
    }

    /// The store's lessor (lease checks during apply).
    pub fn lessor(&self) -> &Lessor {
        &self.store.lessor
    }

    /// Serves a range as of this entry's writes so far.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.store.range_at(req, self.read_rev())
    }

    fn check_put(&self, req: &PutRequest) -> Result<()> {
        if (req.ignore_value || req.ignore_lease) && self.current(&req.key)?.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && !self.store.lessor.contains(req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// Writes one key.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        self.check_put(req)?;
        self.put_checked(req)
    }

    fn put_checked(&mut self, req: &PutRequest) -> Result<PutResponse> {
        // The key index knows the key's revisions and version and the lessor its lease; the
        // previous value is read only when the request asks for it or keeps it.
        let prev = if req.prev_kv || req.ignore_value { self.current(&req.key)? } else { None };
        let rev = self.next_rev();
        let (create_revision, version) = match self.store.index.put(&req.key, rev) {
            Some(at) => (at.created.main, at.version + 1),
            None => (rev.main, 1),
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let prev_lease = self.store.lessor.lease_of(&req.key).unwrap_or(0);
        let lease = if req.ignore_lease { prev_lease } else { req.lease };
        let kv = KeyValue { key: req.key.clone(), create_revision, mod_revision: rev.main, version, value, lease };
        if prev_lease != 0 && prev_lease != lease {
            self.store.lessor.detach(prev_lease, &req.key);
        }
        if lease != 0 {
            self.store.lessor.attach(lease, &req.key);
        }
        self.store.staged.put(Table::Kv, kv_key(rev, false), kv.encode_to_vec());
        self.store.staged_kvs.insert(rev, kv.clone());
        self.events.push(Event { event_type: EventType::Put as i32, kv: Some(kv), prev_kv: prev.clone() });
        Ok(PutResponse { prev_kv: if req.prev_kv { prev } else { None } })
    }

    /// Deletes keys.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let keys = self.store.index.range(&req.key, &req.range_end, self.read_rev());
        let mut prev_kvs = Vec::new();
        for (key, at) in &keys {
            let prev = self.store.read_kv(at.modified)?;
            let rev = self.next_rev();
            self.store.index.tombstone(key, rev);
            if prev.lease != 0 {
                self.store.lessor.detach(prev.lease, key);
            }
            let tomb = KeyValue { key: key.clone(), mod_revision: rev.main, ..Default::default() };
            self.store.staged.put(Table::Kv, kv_key(rev, true), tomb.encode_to_vec());
            self.events.push(Event {
                event_type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
            if req.prev_kv {
                prev_kvs.push(prev);
            }
        }
        Ok(DeleteRangeResponse { deleted: keys.len() as i64, prev_kvs })
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let known_to_index = matches!(c.target(), CompareTarget::Version | CompareTarget::Create | CompareTarget::Mod);
        if c.range_end.is_empty() && known_to_index {
            // One key's version and revisions are in the key index: no need to read its value.
            let kv = self.store.index.get(&c.key, self.read_rev()).map(|at| KeyValue {
                create_revision: at.created.main,
                mod_revision: at.modified.main,
                version: at.version,
                ..Default::default()
            });
            return Ok(compare_kv(c, &kv.unwrap_or_default()));
        }
        let req = RangeRequest { key: c.key.clone(), range_end: c.range_end.clone(), ..Default::default() };
        let kvs = self.range(&req)?.kvs;
        if kvs.is_empty() {
            // A value compare on a missing key always fails; other targets compare with 0.
            return Ok(c.target() != CompareTarget::Value && compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn compare_all(&self, compares: &[Compare]) -> Result<bool> {
        for c in compares {
            if !self.compare(c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Decides every branch of `req` and its nested transactions up front, against the
    /// state before any of its operations run (as etcd does); depth-first order.
    fn decide_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let succeeded = self.compare_all(&req.compare)?;
        path.push(succeeded);
        for op in if succeeded { &req.success } else { &req.failure } {
            if let Some(Request::Txn(inner)) = &op.request {
                self.decide_path(inner, path)?;
            }
        }
        Ok(())
    }

    /// Checks the decided branches before running them, so that a failing transaction
    /// changes nothing.
    fn check_path(&self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<()> {
        let succeeded = path.next().expect("a decision per transaction");
        for op in if succeeded { &req.success } else { &req.failure } {
            match &op.request {
                Some(Request::Put(p)) => self.check_put(p)?,
                Some(Request::Range(r)) => self.check_txn_range(r.revision)?,
                Some(Request::Txn(inner)) => self.check_path(inner, path)?,
                Some(Request::DeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Checks the revision of a range inside a transaction as etcd does: unlike a lone range,
    /// which reads a revision of zero or less as the current one, any revision other than
    /// zero below the compaction revision is compacted.
    fn check_txn_range(&self, rev: i64) -> Result<()> {
        if rev > self.read_rev() {
            return Err(MvccError::FutureRev);
        }
        if rev != 0 && rev < self.store.compact_rev {
            return Err(MvccError::Compacted);
        }
        Ok(())
    }

    /// Runs a transaction: compares, then the chosen branch, atomically.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut path = Vec::new();
        self.decide_path(req, &mut path)?;
        self.check_path(req, &mut path.iter().copied())?;
        self.run_path(req, &mut path.into_iter())
    }

    fn run_path(&mut self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<TxnResponse> {
        let succeeded = path.next().expect("a decision per transaction");
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::Range(r)) => Response::Range(self.range(r)?),
                Some(Request::Put(p)) => Response::Put(self.put_checked(p)?),
                Some(Request::DeleteRange(d)) => Response::DeleteRange(self.delete_range(d)?),
                Some(Request::Txn(inner)) => Response::Txn(self.run_path(inner, path)?),
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { succeeded, responses })
    }

    /// Compacts history up to `rev`: versions not visible at `rev` are removed for good, as
    /// are deletions before `rev`.
    pub fn compact(&mut self, rev: i64) -> Result<()> {
        if rev <= self.store.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > self.store.current_rev {
            return Err(MvccError::FutureRev);
        }
        // The scan below must see every earlier entry's versions.
        self.store.flush()?;
        let keep = self.store.index.compact(rev);
        let end = Revision::new(rev + 1, 0).to_bytes();
        for (k, _) in self.store.backend.scan(Table::Kv, &[], &end)? {
            let r = Revision::from_bytes(&k).expect("kv keys are revisions");
            // History strictly below `rev` goes; a deletion at `rev` itself stays, so a
            // watcher starting at the compaction revision still sees it.
            let tombstone = k.get(17) == Some(&TOMBSTONE);
            if (tombstone && r.main < rev) || (!tombstone && keep.binary_search(&r).is_err()) {
                self.store.staged.delete(Table::Kv, k);
            }
        }
        self.store.compact_rev = rev;
        self.store.staged.put(Table::Meta, META_COMPACT.to_vec(), rev.to_be_bytes().to_vec());
        Ok(())
    }

    /// Grants a lease (expiry set now if `now_ms` is given, on the leader).
    pub fn lease_grant(&mut self, id: i64, ttl_secs: i64, now_ms: Option<u64>) -> Result<()> {
        if self.store.lessor.contains(id) {
            return Err(MvccError::LeaseExists);
        }
        self.store.lessor.grant(id, ttl_secs, now_ms);
        self.store.staged.put(Table::Lease, id.to_be_bytes().to_vec(), ttl_secs.to_be_bytes().to_vec());
        Ok(())
    }

    /// Revokes a lease, deleting its keys.
    pub fn lease_revoke(&mut self, id: i64) -> Result<()> {
        let keys = self.store.lessor.get(id).map(|l| l.keys.clone()).ok_or(MvccError::LeaseNotFound)?;
        for key in keys {
            self.delete_range(&DeleteRangeRequest { key, ..Default::default() })?;
        }
        self.store.lessor.revoke(id);
        self.store.staged.delete(Table::Lease, id.to_be_bytes().to_vec());
        Ok(())
    }

    /// Stores opaque node metadata (membership, for example) with this entry.
    pub fn put_meta(&mut self, key: &[u8], value: Vec<u8>) {
        self.store.staged.put(Table::Meta, key.to_vec(), value);
    }

    /// The revision a response header reports.
    pub fn header_revision(&self) -> i64 {
        self.read_rev()
    }

    /// Makes the entry applied: the next [`KvStore::flush`] writes its changes and records it.
    pub fn commit(self) -> Committed {
        if self.sub > 0 {
            self.store.current_rev = self.main;
        }
        self.store.applied_index = self.index;
        self.store.unflushed = true;
        Committed { revision: self.store.current_rev, events: self.events }
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match (c.target(), &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match c.result() {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Reads the node's opaque metadata stored with [`Apply::put_meta`].
pub fn get_meta<B: Backend>(store: &KvStore<B>, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(store.backend.get(Table::Meta, key)?)
}
