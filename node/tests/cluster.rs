//! Three `keel` processes on loopback, started with etcd's clustering flags, driven by
//! etcdctl 3.4: every member serves every request (lease calls reach the leader through its
//! followers), writes keep being accepted while the leader is killed with SIGKILL, the
//! killed member rejoins, and then every member serves every acknowledged key.

mod common;

use common::{etcdctl, ok, wait_until, Cluster};

/// Puts `key` through any member until one acknowledges it (a retry after an ambiguous
/// failure rewrites the same value, so it is harmless).
fn put_with_retries(endpoints: &str, key: &str, value: &str) {
    wait_until(30, &format!("{key} is acknowledged"), || etcdctl(endpoints, &["put", key, value]).status.success());
}

fn count_keys(endpoint: &str, consistency: &str) -> usize {
    let out = etcdctl(endpoint, &["get", "key-", "--prefix", "--keys-only", consistency]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).count()
}

#[test]
fn every_member_serves_every_request() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    let [a, b, c] = [0, 1, 2].map(|i| cluster.members[i].endpoint.as_str());
    let members = ok(a, &["member", "list"]);
    for (name, member) in ["a", "b", "c"].iter().zip(&cluster.members) {
        let line = members.lines().find(|l| l.contains(&format!(", {name}, "))).expect("member listed");
        assert!(line.ends_with(&format!("{}, false", member.endpoint)), "{line}");
    }
    assert_eq!(ok(b, &["put", "k", "v"]), "OK\n");
    assert_eq!(ok(c, &["get", "k"]), "k\nv\n");
    let granted = ok(c, &["lease", "grant", "60"]);
    let id = granted.split_whitespace().nth(1).expect("lease id").to_string();
    for endpoint in [a, b, c] {
        assert_eq!(
            ok(endpoint, &["lease", "keep-alive", "--once", &id]),
            format!("lease {id} keepalived with TTL(60)\n")
        );
        let ttl = ok(endpoint, &["lease", "timetolive", &id]);
        assert!(ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{ttl}");
    }
    let leader = cluster.leader().expect("a leader");
    let other = (leader + 1) % 3;
    let other_id =
        ok(&cluster.members[other].endpoint, &["endpoint", "status"]).split(", ").nth(1).expect("id").to_string();
    let moved = ok(&cluster.endpoints(), &["move-leader", &other_id]);
    assert!(
        moved.starts_with("Leadership transferred from ") && moved.ends_with(&format!(" to {other_id}\n")),
        "{moved}"
    );
    assert_eq!(cluster.leader(), Some(other));
}

#[test]
fn writes_survive_killing_the_leader_and_the_member_rejoins() {
    let mut cluster = Cluster::start(&["a", "b", "c"]);
    let endpoints = cluster.endpoints();
    let keys = 45;
    let mut killed = None;
    for i in 0..keys {
        if i == 15 {
            wait_until(20, "a leader is known", || {
                killed = cluster.leader();
                killed.is_some()
            });
            cluster.members[killed.expect("leader")].kill();
        }
        if i == 30 {
            cluster.members[killed.expect("killed at 15")].restart();
        }
        put_with_retries(&endpoints, &format!("key-{i:03}"), &i.to_string());
    }
    for member in &cluster.members {
        wait_until(30, &format!("{} serves every key", member.endpoint), || {
            count_keys(&member.endpoint, "--consistency=s") == keys
        });
        assert_eq!(count_keys(&member.endpoint, "--consistency=l"), keys);
        assert_eq!(ok(&member.endpoint, &["get", "key-007", "--print-value-only"]), "7\n");
    }
}
