//! HTTP/1.1 on the client port, beside gRPC: `/health`, `/version`, `/metrics` and etcd's
//! JSON gateway, spoken to with plain HTTP/1.1 requests.

mod common;

use std::time::Duration;

use common::{http, ok, Keel};

const SHORT: Duration = Duration::from_secs(10);

#[test]
fn health_version_and_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let e = keel.endpoint.as_str();
    assert_eq!(http(e, "GET", "/health", "", SHORT), (200, r#"{"health":"true"}"#.to_string()));
    assert_eq!(http(e, "GET", "/version", "", SHORT).1, r#"{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}"#);
    ok(e, &["put", "k", "v"]);
    let (status, metrics) = http(e, "GET", "/metrics", "", SHORT);
    assert_eq!(status, 200);
    for line in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Put",grpc_code="OK"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    let resident = metrics.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap();
    assert!(resident.parse::<u64>().unwrap() > 1 << 20, "etcdctl check datascale reads this");
    let fsyncs = metrics.lines().find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count ")).unwrap();
    assert!(fsyncs.parse::<u64>().unwrap() >= 2, "the put was synced");
    for histogram in ["keel_server_apply_duration_seconds_count ", "keel_raft_proposal_commit_duration_seconds_count "]
    {
        let count = metrics.lines().find_map(|l| l.strip_prefix(histogram)).unwrap_or_else(|| panic!("no {histogram}"));
        assert!(count.parse::<u64>().unwrap() >= 1, "the put was proposed, committed and applied: {histogram}");
    }
    let put_latency = r#"grpc_server_handling_seconds_bucket{le="+Inf",grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Put"} 1"#;
    assert!(metrics.lines().any(|l| l == put_latency), "no {put_latency:?}");
    assert_eq!(http(e, "GET", "/nothing", "", SHORT).0, 404);
}

#[test]
fn json_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let e = keel.endpoint.as_str();
    let header = |revision: u32| {
        let status = ok(e, &["endpoint", "status", "-w", "fields"]);
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(&format!("\"{name}\" : "))).expect("field").to_string()
        };
        format!(
            r#""header":{{"cluster_id":"{}","member_id":"{}","revision":"{revision}","raft_term":"{}"}}"#,
            field("ClusterID"),
            field("MemberID"),
            field("RaftTerm")
        )
    };
    // "foo" and "bar" in base64.
    let (status, put) = http(e, "POST", "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, SHORT);
    assert_eq!((status, put), (200, format!("{{{}}}", header(2))));
    let range = http(e, "POST", "/v3/kv/range", r#"{"key":"Zm9v"}"#, SHORT).1;
    let kv = r#"{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}"#;
    assert_eq!(range, format!(r#"{{{},"kvs":[{kv}],"count":"1"}}"#, header(2)));
    let txn = r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}]}"#;
    let done = http(e, "POST", "/v3/kv/txn", txn, SHORT).1;
    assert_eq!(
        done,
        format!(
            r#"{{{},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"3"}}}}}}]}}"#,
            header(3)
        )
    );
    let lease = http(e, "POST", "/v3/lease/grant", r#"{"TTL":30}"#, SHORT).1;
    assert!(lease.starts_with(&format!("{{{},\"ID\":\"", header(3))) && lease.ends_with(r#","TTL":"30"}"#), "{lease}");
    let (status, error) = http(e, "POST", "/v3/kv/range", r#"{"key":""}"#, SHORT);
    assert_eq!(status, 400);
    assert_eq!(
        error,
        r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#
    );
    let deleted = http(e, "POST", "/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#, SHORT).1;
    assert!(
        deleted.contains(r#""deleted":"1","prev_kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3""#),
        "{deleted}"
    );

    let watched =
        http(e, "POST", "/v3/watch", r#"{"create_request":{"key":"Zm9v","start_revision":1}}"#, Duration::from_secs(2))
            .1;
    let lines: Vec<&str> = watched.lines().collect();
    assert_eq!(lines.len(), 2, "{watched}");
    assert_eq!(lines[0], format!(r#"{{"result":{{{},"created":true}}}}"#, header(4)));
    assert!(
        lines[1].contains(r#""events":[{"kv":"#)
            && lines[1].contains(r#"{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}"#),
        "{}",
        lines[1]
    );
}
