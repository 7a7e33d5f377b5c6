//! Extreme numbers from clients — limits, revisions, revision filters, lease TTLs and ids,
//! compaction and watch start revisions at i64's ends, zero and -1 — sent over gRPC to real
//! etcd 3.4 and to `keel`, after the same writes: every answer (status code, message,
//! response with ids masked) must be the same, and neither may fall over. (Sort options etcd
//! does not know are the one exception: Keel refuses them, as etcd does since 3.5.)

mod common;

use common::grpc::{call, connect, differences_from_etcd, send, show, Call};
use common::Keel;
use keel_api::etcdserverpb as pb;
use prost::Message;

fn range(what: &str, change: impl FnOnce(&mut pb::RangeRequest)) -> Call {
    let mut request = pb::RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), ..Default::default() };
    change(&mut request);
    call(format!("range {what}"), "/etcdserverpb.KV/Range", request, show::<pb::RangeResponse>)
}

fn watch(start_revision: i64) -> Call {
    let create = pb::WatchCreateRequest { key: b"a".to_vec(), start_revision, ..Default::default() };
    let request = pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) };
    call(format!("watch from {start_revision}"), "/etcdserverpb.Watch/Watch", request, show::<pb::WatchResponse>)
}

/// The calls, in order: some writes, then every extreme.
fn calls() -> Vec<Call> {
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX];
    let mut calls = Vec::new();
    for key in ["a", "b", "c"] {
        let put = pb::PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        calls.push(call(format!("put {key}"), "/etcdserverpb.KV/Put", put, show::<pb::PutResponse>));
    }
    for n in extremes {
        calls.push(range(&format!("limit {n}"), |r| r.limit = n));
        calls.push(range(&format!("sorted, limit {n}"), |r| {
            r.limit = n;
            r.sort_order = pb::range_request::SortOrder::Descend as i32;
        }));
        calls.push(range(&format!("count only, limit {n}"), |r| {
            r.limit = n;
            r.count_only = true;
        }));
        calls.push(range(&format!("revision {n}"), |r| r.revision = n));
        calls.push(range(&format!("mod revisions from {n}"), |r| r.min_mod_revision = n));
        calls.push(range(&format!("mod revisions to {n}"), |r| r.max_mod_revision = n));
        calls.push(range(&format!("create revisions from {n}"), |r| r.min_create_revision = n));
        calls.push(range(&format!("create revisions to {n}"), |r| r.max_create_revision = n));
        let nested = pb::RangeRequest { key: b"a".to_vec(), limit: n, revision: n, ..Default::default() };
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"a".to_vec(),
                target: pb::compare::CompareTarget::Mod as i32,
                result: pb::compare::CompareResult::Greater as i32,
                target_union: Some(pb::compare::TargetUnion::ModRevision(n)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(nested.clone())) }],
            failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(nested)) }],
        };
        calls.push(call(format!("txn at {n}"), "/etcdserverpb.KV/Txn", txn, show::<pb::TxnResponse>));
        let hash = pb::HashKvRequest { revision: n };
        calls.push(call(
            format!("hashkv at {n}"),
            "/etcdserverpb.Maintenance/HashKV",
            hash,
            show::<pb::HashKvResponse>,
        ));
        let ttl = pb::LeaseTimeToLiveRequest { id: n, keys: true };
        let path = "/etcdserverpb.Lease/LeaseTimeToLive";
        calls.push(call(format!("time to live of {n}"), path, ttl, show::<pb::LeaseTimeToLiveResponse>));
        let revoke = pb::LeaseRevokeRequest { id: n };
        let path = "/etcdserverpb.Lease/LeaseRevoke";
        calls.push(call(format!("revoke {n}"), path, revoke, show::<pb::LeaseRevokeResponse>));
        let put = pb::PutRequest { key: b"leased".to_vec(), lease: n, ..Default::default() };
        calls.push(call(format!("put on lease {n}"), "/etcdserverpb.KV/Put", put, show::<pb::PutResponse>));
        calls.push(watch(n));
    }
    // Lease TTLs at the extremes, each under an id of its own; then ids at the extremes.
    for (i, ttl) in [i64::MIN, -1, 0, 1, 9_000_000_000, 9_000_000_001, i64::MAX].into_iter().enumerate() {
        let grant = pb::LeaseGrantRequest { id: 100 + i as i64, ttl };
        let path = "/etcdserverpb.Lease/LeaseGrant";
        calls.push(call(format!("grant ttl {ttl}"), path, grant, show::<pb::LeaseGrantResponse>));
    }
    for id in [i64::MIN, -1, i64::MAX] {
        let grant = pb::LeaseGrantRequest { id, ttl: 60 };
        let path = "/etcdserverpb.Lease/LeaseGrant";
        calls.push(call(format!("grant id {id}"), path, grant, show::<pb::LeaseGrantResponse>));
    }
    calls.push(call("list leases", "/etcdserverpb.Lease/LeaseLeases", pb::LeaseLeasesRequest {}, show_leases));
    // Compaction last: it changes what the earlier reads see.
    for revision in [i64::MIN, -1, 0, 1, 0, 3, i64::MAX] {
        let compact = pb::CompactionRequest { revision, physical: false };
        let path = "/etcdserverpb.KV/Compact";
        calls.push(call(format!("compact {revision}"), path, compact, show::<pb::CompactionResponse>));
        for at in [-1, 1, 2, 3] {
            calls.push(range(&format!("after compact {revision}, revision {at}"), |r| r.revision = at));
        }
        calls.extend([watch(-1), watch(2)]);
        let hash = pb::HashKvRequest { revision: 0 };
        calls.push(call("hashkv", "/etcdserverpb.Maintenance/HashKV", hash, show::<pb::HashKvResponse>));
    }
    calls
}

/// The leases listed, in id order (etcd lists them in its map's order, which is random).
fn show_leases(bytes: &[u8]) -> String {
    let mut list = pb::LeaseLeasesResponse::decode(bytes).expect("a response message");
    list.leases.sort_by_key(|l| l.id);
    show::<pb::LeaseLeasesResponse>(&list.encode_to_vec())
}

#[test]
fn extreme_numbers_are_answered_as_etcd_answers_them() {
    let differences = differences_from_etcd(calls());
    assert!(differences.is_empty(), "{} answers differ:\n{}", differences.len(), differences.join("\n"));
}

/// A sort order etcd does not know is refused, as etcd 3.5 and later refuse it (3.4 takes it
/// as no order, and an unknown sort target with an order crashes it).
#[test]
fn an_unknown_sort_order_or_target_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (client, authority) = connect(&keel.endpoint).await;
        for call in [range("sort order -1", |r| r.sort_order = -1), range("sort target 9", |r| r.sort_target = 9)] {
            let answer = send(&client, &authority, &call).await;
            assert_eq!(answer, "status 3 \"etcdserver: invalid sort option\"\n", "{}", call.what);
        }
    });
}
