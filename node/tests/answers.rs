//! Answers compared with etcd 3.4's where clients look at them: maintenance calls, lease
//! TTLs, versions, and calls to methods that do not exist. The same calls go to a fresh etcd
//! and a fresh keel over gRPC; every answer must be the same once ids, sizes and hashes are
//! masked.

mod common;

use common::grpc::{call, differences_from_etcd, show, Call};
use keel_api::etcdserverpb as pb;

fn calls() -> Vec<Call> {
    let put = pb::PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() };
    let mut calls = vec![
        call("put", "/etcdserverpb.KV/Put", put, show::<pb::PutResponse>),
        call("status", "/etcdserverpb.Maintenance/Status", pb::StatusRequest {}, show::<pb::StatusResponse>),
        call("hash", "/etcdserverpb.Maintenance/Hash", pb::HashRequest {}, show::<pb::HashResponse>),
        call(
            "defragment",
            "/etcdserverpb.Maintenance/Defragment",
            pb::DefragmentRequest {},
            show::<pb::DefragmentResponse>,
        ),
        call(
            "grant",
            "/etcdserverpb.Lease/LeaseGrant",
            pb::LeaseGrantRequest { ttl: 60, id: 7 },
            show::<pb::LeaseGrantResponse>,
        ),
        call(
            "time to live just after the grant",
            "/etcdserverpb.Lease/LeaseTimeToLive",
            pb::LeaseTimeToLiveRequest { id: 7, keys: false },
            show::<pb::LeaseTimeToLiveResponse>,
        ),
    ];
    for path in ["/etcdserverpb.KV/Nothing", "/etcdserverpb.Nowhere/Range", "/nothing"] {
        calls.push(call(format!("unknown {path}"), path, pb::RangeRequest::default(), show::<pb::RangeResponse>));
    }
    calls
}

#[test]
fn maintenance_lease_and_unknown_calls_are_answered_as_etcd_answers_them() {
    let differences = differences_from_etcd(calls());
    assert!(differences.is_empty(), "{} answers differ:\n{}", differences.len(), differences.join("\n"));
}
