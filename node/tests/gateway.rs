//! etcd's JSON gateway, compared with etcd 3.4's: the same HTTP/1.1 requests, in order, to a
//! fresh etcd and a fresh keel; every answer's status and body must be the same once the
//! values that differ between two servers (ids, terms, hashes, sizes, snapshot bytes) are
//! masked.

mod common;

use std::time::Duration;

use common::{http, start_etcd, Keel};

/// The requests, in order: method, path, JSON body.
const REQUESTS: &[(&str, &str, &str)] = &[
    ("POST", "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
    ("POST", "/v3beta/kv/range", r#"{"key":"YQ=="}"#),
    ("GET", "/v3/kv/range", "{}"),
    ("POST", "/v3/nothing", "{}"),
    ("POST", "/v3/kv/range", "{bad"),
    ("POST", "/v3/lease/grant", r#"{"TTL":60,"ID":5}"#),
    ("POST", "/v3/lease/keepalive", r#"{"ID":5}"#),
    ("POST", "/v3/lease/keepalive", r#"{"ID":6}"#),
    ("POST", "/v3/kv/lease/timetolive", r#"{"ID":5}"#),
    ("POST", "/v3/lease/leases", "{}"),
    ("POST", "/v3/kv/lease/revoke", r#"{"ID":5}"#),
    ("POST", "/v3/maintenance/alarm", "{}"),
    ("POST", "/v3/maintenance/defragment", "{}"),
    ("POST", "/v3/maintenance/hash", "{}"),
    ("POST", "/v3/maintenance/hashkv", "{}"),
    ("POST", "/v3/maintenance/transfer-leadership", "{}"),
    ("POST", "/v3/maintenance/status", "{}"),
    ("POST", "/v3/kv/compaction", r#"{"revision":2}"#),
];

/// Replaces the value of every field that differs between two servers with `X`.
fn mask(body: &str) -> String {
    const FIELDS: [&str; 10] = [
        "cluster_id",
        "member_id",
        "raft_term",
        "hash",
        "leader",
        "dbSize",
        "dbSizeInUse",
        "raftIndex",
        "raftAppliedIndex",
        "ID",
    ];
    let mut out = body.to_string();
    for field in FIELDS {
        let key = format!("\"{field}\":");
        let mut from = 0;
        while let Some(at) = out[from..].find(&key).map(|i| from + i + key.len()) {
            let end = out[at..].find([',', '}']).map_or(out.len(), |e| at + e);
            out.replace_range(at..end, "X");
            from = at;
        }
    }
    out
}

#[test]
fn the_gateway_answers_as_etcds_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let keel = Keel::single(&dir.path().join("keel"));
    let mut differences = Vec::new();
    for (method, path, body) in REQUESTS {
        let [from_etcd, from_keel] = [&etcd.endpoint, &keel.endpoint].map(|endpoint| {
            let (status, answer) = http(endpoint, method, path, body, Duration::from_secs(10));
            // A body that is not JSON is refused in the JSON parser's words, Go's or Rust's.
            let answer = if *body == "{bad" { answer.replace(|c: char| c != '"' && c != '{', "") } else { answer };
            format!("{status} {}", mask(answer.trim_end()))
        });
        if from_etcd != from_keel {
            differences.push(format!("{method} {path} {body}\n--- etcd\n{from_etcd}\n--- keel\n{from_keel}"));
        }
    }
    assert!(differences.is_empty(), "{} answers differ:\n{}", differences.len(), differences.join("\n"));
}
