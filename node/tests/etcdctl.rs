//! End to end: Debian's etcdctl (3.4) against a single-member `keel` process on loopback.
//! Every command has a deadline, and the server is killed when the test ends.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{err, etcdctl, ok, wait_until, Keel};

struct Member {
    keel: Keel,
    _dir: tempfile::TempDir,
}

fn start() -> Member {
    let dir = tempfile::tempdir().expect("temp dir");
    Member { keel: Keel::single(dir.path()), _dir: dir }
}

#[test]
fn etcdctl_kv_round_trip() {
    let member = start();
    let e = member.keel.endpoint.as_str();
    assert_eq!(ok(e, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(e, &["put", "foo2", "baz"]), "OK\n");
    assert_eq!(ok(e, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(ok(e, &["get", "foo", "--prefix", "--keys-only"]), "foo\n\nfoo2\n\n");
    let fields = ok(e, &["get", "foo", "--prefix", "-w", "fields"]);
    assert!(fields.lines().any(|l| l == "\"Count\" : 2"), "{fields}");
    assert_eq!(ok(e, &["get", "foo", "--prefix", "--limit=1", "--sort-by=KEY", "--order=DESCEND"]), "foo2\nbaz\n");
    assert_eq!(ok(e, &["put", "foo", "new", "--prev-kv"]), "OK\nfoo\nbar\n");
    assert_eq!(ok(e, &["del", "foo", "--prefix"]), "2\n");
    assert_eq!(ok(e, &["get", "foo"]), "");
}

#[test]
fn etcdctl_sees_etcds_errors() {
    let member = start();
    let e = member.keel.endpoint.as_str();
    assert!(err(e, &["put", "k", "v", "--lease=1234"]).contains("etcdserver: requested lease not found"));
    ok(e, &["put", "k", "1"]);
    ok(e, &["put", "k", "2"]);
    ok(e, &["compaction", "3"]);
    assert!(err(e, &["get", "k", "--rev=2"]).contains("etcdserver: mvcc: required revision has been compacted"));
    assert!(err(e, &["get", "k", "--rev=99"]).contains("etcdserver: mvcc: required revision is a future revision"));
}

#[test]
fn etcdctl_leases() {
    let member = start();
    let e = member.keel.endpoint.as_str();
    let granted = ok(e, &["lease", "grant", "30"]);
    let id = granted.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(30s)\n"));
    assert_eq!(ok(e, &["lease", "keep-alive", "--once", &id]), format!("lease {id} keepalived with TTL(30)\n"));
    assert!(ok(e, &["lease", "timetolive", &id]).starts_with(&format!("lease {id} granted with TTL(30s), remaining(")));
    assert_eq!(ok(e, &["lease", "list"]), format!("found 1 leases\n{id}\n"));
    ok(e, &["put", "held", "x", &format!("--lease={id}")]);
    assert_eq!(ok(e, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ok(e, &["get", "held"]), "");
    assert!(err(e, &["lease", "keep-alive", "--once", &id]).contains("requested lease not found"));
}

#[test]
fn etcdctl_watch_catches_up_follows_and_reports_compaction() {
    let member = start();
    let e = member.keel.endpoint.as_str();
    ok(e, &["put", "foo", "1"]);
    let watcher = Command::new("timeout")
        .args(["4", "etcdctl", &format!("--endpoints={e}"), "watch", "foo", "--prefix", "--rev=1", "--prev-kv"])
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    std::thread::sleep(Duration::from_millis(800));
    ok(e, &["put", "foo2", "x"]);
    ok(e, &["del", "foo"]);
    let out = watcher.wait_with_output().expect("watch ends at its timeout");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text, "PUT\nfoo\n1\nPUT\nfoo2\nx\nDELETE\nfoo\n1\nfoo\n\n");
    ok(e, &["compaction", "4"]);
    let canceled = etcdctl(e, &["watch", "foo", "--rev=2"]);
    assert!(String::from_utf8_lossy(&canceled.stderr).contains("required revision has been compacted"));
}

#[test]
fn etcdctl_cluster_and_maintenance() {
    let member = start();
    let e = member.keel.endpoint.as_str();
    let members = ok(e, &["member", "list"]);
    let fields: Vec<&str> = members.trim().split(", ").collect();
    assert_eq!(fields.len(), 6, "{members}");
    assert_eq!(fields[1..3], ["started", "default"]);
    assert_eq!(fields[4], e, "client URL");
    assert_eq!(fields[5], "false", "not a learner");
    assert_eq!(ok(e, &["alarm", "list"]), "");
    assert_eq!((ok(e, &["user", "list"]), ok(e, &["role", "list"])), (String::new(), String::new()));
    let id = fields[0];

    // etcdctl sends the endpoint URL as :authority on these calls.
    let status = ok(e, &["endpoint", "status"]);
    assert!(status.starts_with(&format!("{e}, {id}, 3.4.23, ")), "{status}");
    assert!(status.contains(", true, false, "), "leader, not a learner: {status}");
    ok(e, &["put", "k", "v"]);
    let hash = ok(e, &["endpoint", "hashkv"]);
    assert!(hash.starts_with(&format!("{e}, ")) && hash.trim().rsplit(", ").next().unwrap().parse::<u32>().is_ok());
    assert_eq!(ok(e, &["defrag"]), format!("Finished defragmenting etcd member[{e}]\n"));
    assert_eq!(ok(e, &["get", "k", "--print-value-only"]), "v\n");
    assert_eq!(ok(e, &["move-leader", id]), format!("Leadership transferred from {id} to {id}\n"));
    assert!(err(e, &["move-leader", "1234"]).contains("etcdserver: bad leader transferee"));

    let file = member._dir.path().join("snapshot.db");
    let file = file.to_str().expect("utf-8 path");
    assert!(ok(e, &["snapshot", "save", file]).contains(&format!("Snapshot saved at {file}")));
    let saved = std::fs::read(file).expect("snapshot written");
    assert_eq!(saved.len() % 512, 32, "whole pages and a SHA-256 digest");
}

#[test]
fn sigterm_stops_cleanly() {
    let mut member = start();
    let keel = &mut member.keel;
    ok(&keel.endpoint, &["put", "kept", "1"]);
    let status = keel.terminate();
    assert!(status.success(), "keel exited with {status}");
}

#[test]
fn member_runs_without_transparent_huge_pages() {
    let member = start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", member.keel.pid())).expect("the member's status");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])), "{status}");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut member = start();
    let keel = &mut member.keel;
    for i in 0..20 {
        ok(&keel.endpoint, &["put", &format!("k{i}"), &i.to_string()]);
    }
    keel.kill();
    keel.restart();
    keel.wait_serving();
    let all = ok(&keel.endpoint, &["get", "k", "--prefix", "--keys-only"]);
    assert_eq!(all.lines().filter(|l| !l.is_empty()).count(), 20);
}

#[test]
fn auto_compaction_keeps_the_retention_period() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single_with(dir.path(), &["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"]);
    let e = keel.endpoint.as_str();
    ok(e, &["put", "k", "1"]);
    ok(e, &["put", "k", "2"]);
    assert_eq!(ok(e, &["get", "k", "--rev=2", "--print-value-only"]), "1\n");
    wait_until(20, "revision 2 is compacted away", || {
        String::from_utf8_lossy(&etcdctl(e, &["get", "k", "--rev=2"]).stderr)
            .contains("required revision has been compacted")
    });
    assert_eq!(ok(e, &["get", "k", "--print-value-only"]), "2\n");
}

#[test]
fn quota_raises_nospace_and_refuses_writes_until_disarmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single_with(dir.path(), &["--quota-backend-bytes=1500000"]);
    let e = keel.endpoint.as_str();
    let value = "x".repeat(100_000);
    let refused = (0..40).find_map(|i| {
        let out = etcdctl(e, &["put", &format!("k{i}"), &value]);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert!(refused.expect("the quota is reached").contains("etcdserver: mvcc: database space exceeded"));
    let alarms = ok(e, &["alarm", "list"]);
    let id = ok(e, &["endpoint", "status"]).split(", ").nth(1).expect("member id").to_string();
    let member = u64::from_str_radix(&id, 16).expect("hex id");
    assert_eq!(alarms.trim_end(), format!("memberID:{member} alarm:NOSPACE"));
    assert!(err(e, &["put", "small", "v"]).contains("database space exceeded"), "writes are refused");
    assert_eq!(ok(e, &["get", "k0", "--keys-only"]), "k0\n\n", "reads are served");
    assert_eq!(ok(e, &["del", "k0"]), "1\n", "deletes are served");
    assert_eq!(ok(e, &["alarm", "disarm"]).trim_end(), format!("memberID:{member} alarm:NOSPACE"));
    assert_eq!(ok(e, &["alarm", "list"]), "");
}
