//! etcd's KV semantics, checked against hand-worked expectations.

use super::*;
use crate::backend::{Backend, MemBackend};

struct Fixture {
    store: KvStore<MemBackend>,
    index: u64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { store: KvStore::open(MemBackend::new()).unwrap(), index: 0 }
    }

    fn apply<T>(&mut self, f: impl FnOnce(&mut Apply<'_, MemBackend>) -> Result<T, MvccError>) -> Result<T, MvccError> {
        self.index += 1;
        let mut apply = self.store.begin(self.index);
        let out = f(&mut apply);
        apply.commit();
        self.store.flush().unwrap();
        out
    }

    fn put(&mut self, key: &str, value: &str) -> PutResponse {
        let req = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        self.apply(|a| a.put(&req)).unwrap()
    }

    fn get(&self, key: &str, rev: i64) -> Vec<KeyValue> {
        let req = RangeRequest { key: key.into(), revision: rev, ..Default::default() };
        self.store.range(&req).unwrap().kvs
    }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

#[test]
fn fresh_store_is_at_revision_one_and_puts_advance_it() {
    let mut f = Fixture::new();
    assert_eq!(f.store.current_revision(), 1);
    f.put("a", "1");
    f.put("a", "2");
    let kv = &f.get("a", 0)[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(f.get("a", 2)[0].value, b"1");
    assert!(f.get("a", 1).is_empty());
}

#[test]
fn delete_ends_a_generation_and_recreation_restarts_versions() {
    let mut f = Fixture::new();
    f.put("k", "v");
    let del = DeleteRangeRequest { key: b"k".to_vec(), prev_kv: true, ..Default::default() };
    let resp = f.apply(|a| a.delete_range(&del)).unwrap();
    assert_eq!(resp.deleted, 1);
    assert_eq!(resp.prev_kvs[0].value, b"v");
    assert_eq!(f.store.current_revision(), 3);
    // Deleting nothing does not take a revision.
    let resp = f.apply(|a| a.delete_range(&del)).unwrap();
    assert_eq!(resp.deleted, 0);
    assert_eq!(f.store.current_revision(), 3);
    f.put("k", "again");
    let kv = &f.get("k", 0)[0];
    assert_eq!((kv.create_revision, kv.version), (4, 1));
}

#[test]
fn range_limit_sort_count_and_filters() {
    let mut f = Fixture::new();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")] {
        f.put(k, v);
    }
    f.put("b", "9");
    let mut req = range("a", "d");
    req.limit = 2;
    let resp = f.store.range(&req).unwrap();
    assert_eq!(resp.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(resp.more);
    assert_eq!(resp.count, 3);

    let mut req = range("a", "\0");
    req.sort_target = SortTarget::Value as i32;
    req.sort_order = SortOrder::Descend as i32;
    let values: Vec<_> = f.store.range(&req).unwrap().kvs.into_iter().map(|kv| kv.value).collect();
    assert_eq!(values, vec![b"9".to_vec(), b"3".to_vec(), b"2".to_vec(), b"0".to_vec()]);

    let mut req = range("a", "\0");
    req.min_mod_revision = 4;
    req.keys_only = true;
    let kvs = f.store.range(&req).unwrap().kvs;
    assert_eq!(
        kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );
    assert!(kvs.iter().all(|kv| kv.value.is_empty()));

    let mut req = range("a", "\0");
    req.count_only = true;
    let resp = f.store.range(&req).unwrap();
    assert_eq!((resp.count, resp.kvs.len()), (4, 0));

    let mut req = range("a", "\0");
    req.max_create_revision = 3;
    assert_eq!(f.store.range(&req).unwrap().kvs.len(), 2);
}

#[test]
fn extreme_range_numbers_are_answered_as_etcd_answers_them() {
    let mut f = Fixture::new();
    for k in ["a", "b", "c"] {
        f.put(k, "v");
    }
    let keys = |req: &RangeRequest| {
        let resp = f.store.range(req).unwrap();
        (resp.kvs.len(), resp.more, resp.count)
    };
    for limit in [i64::MAX, i64::MIN, -1, 0, 3] {
        let req = RangeRequest { limit, ..range("a", "\0") };
        assert_eq!(keys(&req), (3, false, 3), "limit {limit}: no limit, or one the keys fit in");
        let sorted = RangeRequest { sort_order: SortOrder::Descend as i32, ..req };
        assert_eq!(keys(&sorted), (3, false, 3), "sorted, limit {limit}");
    }
    assert_eq!(keys(&RangeRequest { limit: 2, ..range("a", "\0") }), (2, true, 3));
    for revision in [i64::MIN, -1, 0] {
        assert_eq!(keys(&RangeRequest { revision, ..range("a", "\0") }), (3, false, 3), "revision {revision}");
    }
    assert!(matches!(
        f.store.range(&RangeRequest { revision: i64::MAX, ..range("a", "\0") }),
        Err(MvccError::FutureRev)
    ));
    for (min_mod_revision, max_create_revision, expected) in
        [(i64::MAX, 0, 0), (i64::MIN, 0, 3), (0, i64::MAX, 3), (0, i64::MIN, 0)]
    {
        let filtered = RangeRequest { min_mod_revision, max_create_revision, limit: i64::MAX, ..range("a", "\0") };
        assert_eq!(keys(&filtered).0, expected, "filters {min_mod_revision} {max_create_revision}");
    }
}

#[test]
fn put_options() {
    let mut f = Fixture::new();
    let ignore = PutRequest { key: b"k".to_vec(), ignore_value: true, ..Default::default() };
    assert!(matches!(f.apply(|a| a.put(&ignore)), Err(MvccError::KeyNotFound)));
    assert_eq!(f.store.current_revision(), 1);
    let leased = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 5, ..Default::default() };
    assert!(matches!(f.apply(|a| a.put(&leased)), Err(MvccError::LeaseNotFound)));
    f.apply(|a| a.lease_grant(5, 60, None)).unwrap();
    f.apply(|a| a.put(&leased)).unwrap();
    let keep_both =
        PutRequest { key: b"k".to_vec(), ignore_value: true, ignore_lease: true, prev_kv: true, ..Default::default() };
    let resp = f.apply(|a| a.put(&keep_both)).unwrap();
    assert_eq!(resp.prev_kv.unwrap().value, b"v");
    let kv = &f.get("k", 0)[0];
    assert_eq!((kv.value.as_slice(), kv.lease, kv.version), (&b"v"[..], 5, 2));
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, value: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(value),
        range_end: vec![],
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::new(Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() }))
}

#[test]
fn txn_compares_branches_and_reads_its_own_writes() {
    let mut f = Fixture::new();
    f.put("k", "v1");
    let txn = TxnRequest {
        compare: vec![
            cmp("k", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(b"v1".to_vec())),
            cmp("k", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(0)),
            cmp("k", CompareTarget::Mod, CompareResult::Less, TargetUnion::ModRevision(3)),
        ],
        success: vec![put_op("k", "v2"), put_op("x", "y"), RequestOp::new(Request::Range(range("k", "")))],
        failure: vec![put_op("failed", "1")],
    };
    let resp = f.apply(|a| a.txn(&txn)).unwrap();
    assert!(resp.succeeded);
    let Some(Response::Range(r)) = &resp.responses[2].response else { panic!("range response expected") };
    assert_eq!(r.kvs[0].value, b"v2");
    assert_eq!(f.store.current_revision(), 3, "one revision for the whole transaction");
    let kv = &f.get("x", 0)[0];
    assert_eq!(kv.mod_revision, 3);

    let resp = f.apply(|a| a.txn(&txn)).unwrap();
    assert!(!resp.succeeded);
    assert_eq!(f.get("failed", 0).len(), 1);
}

#[test]
fn value_compare_on_a_missing_key_fails_but_version_zero_matches() {
    let mut f = Fixture::new();
    let absent = TxnRequest {
        compare: vec![cmp("none", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0))],
        success: vec![put_op("created", "1")],
        failure: vec![],
    };
    assert!(f.apply(|a| a.txn(&absent)).unwrap().succeeded);
    let value = TxnRequest {
        compare: vec![cmp("none", CompareTarget::Value, CompareResult::NotEqual, TargetUnion::Value(b"x".to_vec()))],
        ..Default::default()
    };
    assert!(!f.apply(|a| a.txn(&value)).unwrap().succeeded);
}

#[test]
fn nested_txn_branch_is_decided_before_any_write() {
    let mut f = Fixture::new();
    let inner = TxnRequest {
        compare: vec![cmp("k", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0))],
        success: vec![put_op("inner", "saw-no-k")],
        failure: vec![put_op("inner", "saw-k")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![put_op("k", "v"), RequestOp::new(Request::Txn(inner))],
        failure: vec![],
    };
    let resp = f.apply(|a| a.txn(&outer)).unwrap();
    let Some(Response::Txn(inner_resp)) = &resp.responses[1].response else { panic!("txn response expected") };
    assert!(inner_resp.succeeded);
    assert_eq!(f.get("inner", 0)[0].value, b"saw-no-k");
}

#[test]
fn failing_txn_changes_nothing() {
    let mut f = Fixture::new();
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            RequestOp::new(Request::Put(PutRequest { key: b"b".to_vec(), lease: 99, ..Default::default() })),
        ],
        failure: vec![],
    };
    assert!(matches!(f.apply(|a| a.txn(&txn)), Err(MvccError::LeaseNotFound)));
    assert!(f.get("a", 0).is_empty());
    assert_eq!(f.store.current_revision(), 1);
}

#[test]
fn compaction_removes_history_but_keeps_visible_versions() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.put("b", "1"); // 4
    let del = DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() };
    f.apply(|a| a.delete_range(&del)).unwrap(); // 5
    f.put("a", "3"); // 6
    f.apply(|a| a.compact(5)).unwrap();
    assert!(matches!(
        f.store.range(&RangeRequest { key: b"a".to_vec(), revision: 4, ..Default::default() }),
        Err(MvccError::Compacted)
    ));
    assert_eq!(f.get("a", 5)[0].value, b"2");
    assert_eq!(f.get("a", 0)[0].version, 3);
    assert!(matches!(f.apply(|a| a.compact(5)), Err(MvccError::Compacted)));
    assert!(matches!(f.apply(|a| a.compact(99)), Err(MvccError::FutureRev)));
    assert!(matches!(f.store.events(3, 6, usize::MAX), Err(MvccError::Compacted)));
    // From revision 5 on, the deletion of b at 5 (kept: a watcher may start at the
    // compaction revision) and a:6 remain; a:3 stays as the version visible at 5.
    let (all, read_upto) = f.store.events(5, 6, usize::MAX).unwrap();
    assert_eq!(read_upto, 6);
    let kinds: Vec<(i32, i64)> = all.iter().map(|e| (e.event_type, e.kv.as_ref().unwrap().mod_revision)).collect();
    assert_eq!(kinds, vec![(EventType::Delete as i32, 5), (EventType::Put as i32, 6)]);
    // Reopening rebuilds the same view, versions included.
    let reopened = KvStore::open(f.store.backend().clone()).unwrap();
    let kv = &reopened.range(&range("a", "")).unwrap().kvs[0];
    assert_eq!((kv.version, kv.create_revision), (3, 2));
    assert_eq!(reopened.compact_revision(), 5);
    assert_eq!(reopened.hash_kv(0).unwrap(), f.store.hash_kv(0).unwrap());
}

#[test]
fn a_store_never_compacted_reports_minus_one_and_may_compact_at_zero_once() {
    let mut f = Fixture::new();
    f.put("a", "1");
    assert_eq!(f.store.compact_revision(), -1);
    let reopened = KvStore::open(f.store.backend().clone()).unwrap();
    assert_eq!(reopened.compact_revision(), -1, "never compacted, after a restart too");
    assert!(matches!(f.apply(|a| a.compact(-1)), Err(MvccError::Compacted)));
    f.apply(|a| a.compact(0)).unwrap();
    assert_eq!(KvStore::open(f.store.backend().clone()).unwrap().compact_revision(), 0);
    assert!(matches!(f.apply(|a| a.compact(0)), Err(MvccError::Compacted)));
    // In a transaction, as in etcd, a revision below the compaction revision is compacted
    // even when it is negative (a lone range reads it as the current revision).
    let at = |revision: i64| TxnRequest {
        success: vec![RequestOp::new(Request::Range(RangeRequest {
            key: b"a".to_vec(),
            revision,
            ..Default::default()
        }))],
        ..Default::default()
    };
    assert!(matches!(f.apply(|a| a.txn(&at(-1))), Err(MvccError::Compacted)));
    assert!(f.apply(|a| a.txn(&at(0))).is_ok());
    assert_eq!(f.get("a", -1)[0].value, b"1");
}

#[test]
fn future_revision_is_refused() {
    let f = Fixture::new();
    let req = RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() };
    assert!(matches!(f.store.range(&req), Err(MvccError::FutureRev)));
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut f = Fixture::new();
    f.apply(|a| a.lease_grant(7, 10, None)).unwrap();
    for k in ["a", "b"] {
        let req = PutRequest { key: k.into(), value: b"v".to_vec(), lease: 7, ..Default::default() };
        f.apply(|a| a.put(&req)).unwrap();
    }
    // Re-putting without the lease detaches it.
    f.put("b", "free");
    assert_eq!(f.store.lessor().get(7).unwrap().keys.len(), 1);
    let rev = f.store.current_revision();
    f.apply(|a| a.lease_revoke(7)).unwrap();
    assert_eq!(f.store.current_revision(), rev + 1);
    assert!(f.get("a", 0).is_empty());
    assert_eq!(f.get("b", 0)[0].value, b"free");
    assert!(matches!(f.apply(|a| a.lease_revoke(7)), Err(MvccError::LeaseNotFound)));
}

#[test]
fn leases_and_attachments_survive_reopening() {
    let mut f = Fixture::new();
    f.apply(|a| a.lease_grant(3, 30, None)).unwrap();
    f.apply(|a| a.lease_grant(4, 40, None)).unwrap();
    let put = |key: &str, lease: i64| PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() };
    for (key, lease) in [("k", 3), ("moved", 3), ("moved", 4), ("dropped", 3), ("dropped", 0), ("deleted", 3)] {
        f.apply(|a| a.put(&put(key, lease))).unwrap();
    }
    f.apply(|a| a.delete_range(&DeleteRangeRequest { key: b"deleted".to_vec(), ..Default::default() })).unwrap();
    let reopened = KvStore::open(f.store.backend().clone()).unwrap();
    let lease = reopened.lessor().get(3).unwrap();
    assert_eq!(lease.ttl_secs, 30);
    assert_eq!(lease.keys, [b"k".to_vec()].into());
    assert_eq!(reopened.lessor().get(4).unwrap().keys, [b"moved".to_vec()].into());
    assert_eq!(reopened.lessor().lease_of(b"dropped"), None);
    assert_eq!(reopened.applied_index(), f.index);
}

#[test]
fn a_stored_head_is_its_key_value_without_the_value() {
    use prost::Message as _;
    let kv = KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
        value: b"v".to_vec(),
        lease: 9,
    };
    let head = KeyValueHead::decode(kv.encode_to_vec().as_slice()).unwrap();
    assert_eq!(head, KeyValueHead { key: b"k".to_vec(), create_revision: 2, version: 3, lease: 9 });
}

#[test]
fn events_carry_every_change_in_order() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("b", "1"),
            RequestOp::new(Request::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() })),
        ],
        failure: vec![],
    };
    f.apply(|a| a.txn(&txn)).unwrap();
    let (events, _) = f.store.events(2, 3, usize::MAX).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.event_type, e.kv.as_ref().unwrap().mod_revision)).collect();
    assert_eq!(kinds, vec![(EventType::Put as i32, 2), (EventType::Put as i32, 3), (EventType::Delete as i32, 3)]);
    // A byte bound stops after a whole revision, never inside one.
    let (first, read_upto) = f.store.events(2, 3, 1).unwrap();
    assert_eq!((first.len(), read_upto), (1, 2));
    let (rest, read_upto) = f.store.events(3, 3, 1).unwrap();
    assert_eq!((rest.len(), read_upto), (2, 3), "one revision is never split");
    assert_eq!(f.store.prev_kv(b"a", 3).unwrap().unwrap().value, b"1");
}

#[test]
fn unsynced_applies_are_lost_whole_on_power_cut() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.store.backend_mut().sync().unwrap();
    f.put("b", "1");
    let mut backend = f.store.backend().clone();
    backend.power_cut(0);
    let reopened = KvStore::open(backend).unwrap();
    assert_eq!(reopened.applied_index(), 1);
    assert_eq!(reopened.current_revision(), 2);
}
