//! The checkers. Each takes the recorded history and returns what it found wrong; each has
//! a test feeding it a known-bad history, and the planted bugs prove them end to end.

pub use keel_check as linearizable;

use std::collections::BTreeMap;

use keel_storage::mvcc::{Event, EventType, KeyValue};
use xxhash_rust::xxh3::xxh3_64;

use crate::history::{events_hash, LeaseAck, Nanos, Recorder, WatchSession};

/// One thing a checker found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker.
    pub checker: &'static str,
    /// What broke.
    pub detail: String,
}

fn violation(checker: &'static str, detail: String) -> Violation {
    Violation { checker, detail }
}

/// Runs every checker over a finished run.
pub fn check_all(rec: &Recorder, max_drift: f64) -> Vec<Violation> {
    let mut found = Vec::new();
    found.extend(raft_safety(&rec.leaders, &rec.applied));
    found.extend(
        linearizable::check(&rec.ops)
            .into_iter()
            .map(|f| violation("linearizability", format!("key {:?}: {}", String::from_utf8_lossy(&f.key), f.detail))),
    );
    let canonical = canonical_events(&rec.applied);
    found.extend(watch(&rec.watches, &canonical, compacted_upto(&rec.applied)));
    found.extend(lease_safety(&rec.lease_acks, &rec.applied, max_drift));
    found.extend(rec.liveness.iter().map(|l| violation("liveness", l.clone())));
    found.extend(rec.damage.iter().map(|d| violation("recovery", d.clone())));
    found
}

/// Raft safety and replica convergence over every node's applied entries:
/// - at most one leader per term;
/// - every index is applied as the same entry everywhere (committed entries are never lost,
///   reordered or replaced);
/// - applying it yields the same revision and the same events everywhere.
pub fn raft_safety(
    leaders: &BTreeMap<u64, Vec<u64>>,
    applied: &BTreeMap<u64, Vec<(Nanos, keel_node::Applied)>>,
) -> Vec<Violation> {
    let mut found = Vec::new();
    for (term, nodes) in leaders {
        let mut distinct = nodes.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            found.push(violation("raft-safety", format!("term {term} has leaders {distinct:?}")));
        }
    }
    let mut first: BTreeMap<u64, (u64, u64, u64, i64, u64, Nanos)> = BTreeMap::new();
    for (&node, entries) in applied {
        for (at, a) in entries {
            let seen = (node, a.term, xxh3_64(&a.data), a.revision, events_hash(&a.events), *at);
            let Some(&(other, term, data, revision, events, other_at)) = first.get(&a.index) else {
                first.insert(a.index, seen);
                continue;
            };
            if (term, data) != (seen.1, seen.2) {
                found.push(violation(
                    "raft-safety",
                    format!(
                        "index {} applied as term {term} on node {other} at {:.3}s but as term {} on node {node} at {:.3}s",
                        a.index,
                        other_at as f64 / 1e9,
                        a.term,
                        *at as f64 / 1e9
                    ),
                ));
            } else if (revision, events) != (seen.3, seen.4) {
                found.push(violation(
                    "convergence",
                    format!(
                        "index {} gave revision {revision} on node {other} but revision {} on node {node}",
                        a.index, a.revision
                    ),
                ));
            }
            if found.len() > 20 {
                return found;
            }
        }
    }
    found
}

/// The highest revision any applied compaction removed history below.
pub fn compacted_upto(applied: &BTreeMap<u64, Vec<(Nanos, keel_node::Applied)>>) -> i64 {
    use prost::Message as _;
    let compactions =
        applied.values().flatten().filter_map(|(_, a)| match keel_node::Proposal::decode(a.data.as_slice()) {
            Ok(keel_node::Proposal { op: Some(keel_node::Op::Compact(rev)), .. }) if a.revision >= rev => Some(rev),
            _ => None,
        });
    compactions.max().unwrap_or(0)
}

/// The events of each revision, from the first node that applied it, each with the previous
/// version of its key as the history itself gives it (the version the last earlier put
/// wrote, none after a delete): a watcher's prev_kv is checked against the history, not
/// against what the node put in its events.
pub fn canonical_events(applied: &BTreeMap<u64, Vec<(Nanos, keel_node::Applied)>>) -> BTreeMap<i64, Vec<Event>> {
    let mut canonical = BTreeMap::new();
    for entries in applied.values() {
        for (_, a) in entries {
            if !a.events.is_empty() {
                canonical.entry(a.revision).or_insert_with(|| a.events.clone());
            }
        }
    }
    let mut latest: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    for event in canonical.values_mut().flatten() {
        let kv = event.kv.clone().unwrap_or_default();
        event.prev_kv = if event.event_type == EventType::Put as i32 {
            latest.insert(kv.key.clone(), kv)
        } else {
            latest.remove(&kv.key)
        };
    }
    canonical
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

fn brief(event: Option<&Event>) -> String {
    let Some(e) = event else { return "nothing".into() };
    let kv = e.kv.clone().unwrap_or_default();
    let prev = e.prev_kv.as_ref().map(|p| p.mod_revision);
    format!(
        "{} {} at revision {} (prev_kv at {prev:?})",
        if e.event_type == 0 { "put" } else { "delete" },
        String::from_utf8_lossy(&kv.key),
        kv.mod_revision
    )
}

/// Watch guarantees per session: events ordered by revision, no revision split across
/// responses, and exactly the history's events for the range from the start revision to
/// the last revision received (none skipped, none invented, prev_kv as asked). As in etcd, a
/// prev_kv may be missing when compaction removed it (older than `compacted`).
pub fn watch(sessions: &[WatchSession], canonical: &BTreeMap<i64, Vec<Event>>, compacted: i64) -> Vec<Violation> {
    let mut found = Vec::new();
    for s in sessions {
        let who = format!("watch client {} on node {} from revision {}", s.client, s.node, s.start_revision);
        let mut last_rev = 0;
        let mut received = Vec::new();
        let mut problem = None;
        for response in &s.responses {
            let revs: Vec<i64> = response.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision)).collect();
            if revs.windows(2).any(|w| w[0] > w[1]) {
                problem = Some(format!("{who}: events out of order in one response: {revs:?}"));
            }
            if revs.first().is_some_and(|&r| r <= last_rev) {
                problem = Some(format!("{who}: revision {} after revision {last_rev}", revs[0]));
            }
            last_rev = revs.last().copied().unwrap_or(last_rev);
            received.extend(response.iter().cloned());
        }
        if let Some(compacted) = s.compacted.filter(|&c| c <= s.start_revision) {
            problem = Some(format!("{who}: canceled as compacted at {compacted}, which does not cover the start"));
        }
        if problem.is_none() && last_rev > 0 {
            let expected: Vec<Event> = canonical
                .range(s.start_revision.max(1)..=last_rev)
                .flat_map(|(_, events)| events.iter())
                .filter(|e| e.kv.as_ref().is_some_and(|kv| in_range(&kv.key, &s.key, &s.range_end)))
                .map(|e| {
                    let mut e = e.clone();
                    if !s.prev_kv {
                        e.prev_kv = None;
                    }
                    e
                })
                .collect();
            let mut expected = expected;
            for (e, r) in expected.iter_mut().zip(&received) {
                let compacted_prev = e.prev_kv.as_ref().is_some_and(|p| p.mod_revision < compacted);
                if r.prev_kv.is_none() && compacted_prev {
                    e.prev_kv = None;
                }
            }
            if expected != received {
                let at = expected
                    .iter()
                    .zip(&received)
                    .position(|(a, b)| a != b)
                    .unwrap_or(expected.len().min(received.len()));
                problem = Some(format!(
                    "{who}: {} events received, {} in the history up to revision {last_rev}; first difference at #{at}: expected {}, got {}",
                    received.len(),
                    expected.len(),
                    brief(expected.get(at)),
                    brief(received.get(at))
                ));
            }
        }
        if let Some(p) = problem {
            found.push(violation("watch", p));
        }
    }
    found
}

/// Lease safety: a lease revoked for expiry must have outlived every acknowledged grant or
/// keep-alive by its TTL, measured on a clock that may run up to `max_drift` fast.
pub fn lease_safety(
    acks: &[LeaseAck],
    applied: &BTreeMap<u64, Vec<(Nanos, keel_node::Applied)>>,
    max_drift: f64,
) -> Vec<Violation> {
    let mut expired_at: BTreeMap<i64, Nanos> = BTreeMap::new();
    for entries in applied.values() {
        for (at, a) in entries {
            if let Some(lease) = a.expired_lease {
                let t = expired_at.entry(lease).or_insert(*at);
                *t = (*t).min(*at);
            }
        }
    }
    let mut found = Vec::new();
    for ack in acks {
        let Some(&revoked) = expired_at.get(&ack.lease) else { continue };
        let ttl_ns = ack.ttl_secs as f64 * 1e9;
        let earliest = ack.sent + (ttl_ns / (1.0 + max_drift)) as Nanos;
        if revoked < earliest {
            found.push(violation(
                "lease-safety",
                format!(
                    "lease {:x} expired at {:.3}s, but a {}s TTL was acknowledged for a request sent at {:.3}s",
                    ack.lease,
                    revoked as f64 / 1e9,
                    ack.ttl_secs,
                    ack.sent as f64 / 1e9
                ),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_node::Applied;

    fn put_event(key: &str, rev: i64) -> Event {
        let kv =
            KeyValue { key: key.into(), mod_revision: rev, create_revision: rev, version: 1, ..Default::default() };
        Event { event_type: EventType::Put as i32, kv: Some(kv), prev_kv: None }
    }

    fn applied(index: u64, term: u64, data: &[u8], revision: i64, events: Vec<Event>) -> Applied {
        Applied { index, term, data: data.to_vec(), revision, events, expired_lease: None }
    }

    #[test]
    fn raft_safety_catches_two_leaders_and_diverging_entries() {
        let leaders = BTreeMap::from([(3, vec![1, 2])]);
        let mut log = BTreeMap::new();
        log.insert(1, vec![(0, applied(5, 2, b"x", 4, vec![]))]);
        log.insert(2, vec![(0, applied(5, 3, b"y", 4, vec![]))]);
        let found = raft_safety(&leaders, &log);
        assert_eq!(found.len(), 2, "{found:?}");
        let mut same = BTreeMap::new();
        same.insert(1, vec![(0, applied(5, 2, b"x", 4, vec![]))]);
        same.insert(2, vec![(0, applied(5, 2, b"x", 5, vec![]))]);
        assert_eq!(raft_safety(&BTreeMap::new(), &same)[0].checker, "convergence");
    }

    #[test]
    fn watch_catches_gaps_and_disorder() {
        let canonical =
            BTreeMap::from([(2, vec![put_event("a", 2)]), (3, vec![put_event("b", 3)]), (4, vec![put_event("a", 4)])]);
        let session = |responses: Vec<Vec<Event>>| WatchSession {
            client: 1,
            node: 1,
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            start_revision: 2,
            prev_kv: false,
            responses,
            compacted: None,
        };
        let good = session(vec![vec![put_event("a", 2), put_event("b", 3)], vec![put_event("a", 4)]]);
        assert!(watch(&[good], &canonical, 0).is_empty());
        let gap = session(vec![vec![put_event("a", 2)], vec![put_event("a", 4)]]);
        assert_eq!(watch(&[gap], &canonical, 0).len(), 1);
        let disorder = session(vec![vec![put_event("b", 3)], vec![put_event("a", 2)]]);
        assert_eq!(watch(&[disorder], &canonical, 0).len(), 1);
        let split = session(vec![vec![put_event("a", 2)], vec![put_event("a", 2)]]);
        assert_eq!(watch(&[split], &canonical, 0).len(), 1);
        let false_compaction = WatchSession { compacted: Some(2), ..session(vec![]) };
        assert_eq!(watch(&[false_compaction], &canonical, 0).len(), 1);
    }

    #[test]
    fn watch_checks_prev_kv_against_the_history() {
        let delete = |key: &str, rev: i64| Event {
            event_type: EventType::Delete as i32,
            kv: Some(KeyValue { key: key.into(), mod_revision: rev, ..Default::default() }),
            prev_kv: None,
        };
        let history = [(2, put_event("a", 2)), (3, put_event("a", 3)), (4, delete("a", 4)), (5, put_event("a", 5))];
        let log = BTreeMap::from([(
            1,
            history.iter().map(|(rev, e)| (0, applied(*rev as u64, 1, b"x", *rev, vec![e.clone()]))).collect(),
        )]);
        let canonical = canonical_events(&log);
        let with_prev = |mut e: Event, prev: Option<Event>| {
            e.prev_kv = prev.and_then(|p| p.kv);
            e
        };
        let right = vec![
            with_prev(put_event("a", 3), Some(put_event("a", 2))),
            with_prev(delete("a", 4), Some(put_event("a", 3))),
            put_event("a", 5),
        ];
        let session = |responses: Vec<Vec<Event>>| WatchSession {
            client: 1,
            node: 1,
            key: b"a".to_vec(),
            range_end: Vec::new(),
            start_revision: 3,
            prev_kv: true,
            responses,
            compacted: None,
        };
        assert!(watch(&[session(vec![right.clone()])], &canonical, 0).is_empty());
        let mut stale = right.clone();
        stale[2] = with_prev(put_event("a", 5), Some(put_event("a", 3)));
        assert_eq!(watch(&[session(vec![stale])], &canonical, 0).len(), 1);
        let mut missing = right;
        missing[0].prev_kv = None;
        assert_eq!(watch(&[session(vec![missing])], &canonical, 0).len(), 1);
    }

    #[test]
    fn lease_safety_catches_early_expiry() {
        let mut revoke = applied(9, 2, b"r", 7, vec![]);
        revoke.expired_lease = Some(42);
        let log = BTreeMap::from([(1, vec![(5_000_000_000, revoke)])]);
        let early = LeaseAck { lease: 42, sent: 2_000_000_000, ttl_secs: 5 };
        assert_eq!(lease_safety(&[early], &log, 0.05).len(), 1);
        let fine = LeaseAck { lease: 42, sent: 0, ttl_secs: 4 };
        assert!(lease_safety(&[fine], &log, 0.05).is_empty());
    }
}
