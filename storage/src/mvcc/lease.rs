//! Leases: their TTLs and attached keys (replicated state), and the expiry min-heap (local
//! state, meaningful only on the leader).
//!
//! Invariants: a key is attached to at most one lease, the one in its current `KeyValue`;
//! expiries are set only by `promote` (a new leader extends every lease by its full TTL before
//! it expires any) and `renew`; times are milliseconds on the caller's clock, never read here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id (never 0).
    pub id: i64,
    /// Granted time to live, seconds.
    pub ttl_secs: i64,
    /// Keys attached.
    pub keys: BTreeSet<Vec<u8>>,
    /// When it expires, ms on the leader's clock (None: not promoted).
    pub expiry_ms: Option<u64>,
}

/// Every lease, with the expiry heap.
#[derive(Debug, Clone, Default)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    /// The lease each attached key is attached to (the inverse of `Lease::keys`), so a put
    /// learns a key's lease without reading the key's value.
    lease_of_key: BTreeMap<Vec<u8>, i64>,
    /// `(expiry, id)`; entries whose expiry no longer matches the lease are stale.
    expiries: BinaryHeap<Reverse<(u64, i64)>>,
}

impl Lessor {
    /// Adds a lease (not yet promoted unless `now_ms` is given).
    pub fn grant(&mut self, id: i64, ttl_secs: i64, now_ms: Option<u64>) {
        let mut lease = Lease { id, ttl_secs, keys: BTreeSet::new(), expiry_ms: None };
        if let Some(now) = now_ms {
            let expiry = now + ttl_secs as u64 * 1000;
            lease.expiry_ms = Some(expiry);
            self.expiries.push(Reverse((expiry, id)));
        }
        self.leases.insert(id, lease);
    }

    /// Removes a lease, returning its attached keys.
    pub fn revoke(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        let keys = self.leases.remove(&id)?.keys;
        for key in &keys {
            self.lease_of_key.remove(key);
        }
        Some(keys)
    }

    /// The lease `id`.
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Whether lease `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Every lease id, ascending.
    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Attaches `key` to lease `id` (which must exist).
    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
            self.lease_of_key.insert(key.to_vec(), id);
        }
    }

    /// Detaches `key` from lease `id`.
    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            if lease.keys.remove(key) {
                self.lease_of_key.remove(key);
            }
        }
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<i64> {
        self.lease_of_key.get(key).copied()
    }

    /// Extends the lease to a full TTL from `now_ms`; returns the TTL, or None if unknown.
    pub fn renew(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        let expiry = now_ms + lease.ttl_secs as u64 * 1000;
        lease.expiry_ms = Some(expiry);
        self.expiries.push(Reverse((expiry, id)));
        Some(lease.ttl_secs)
    }

    /// Gives every lease a full TTL from `now_ms` (on becoming leader).
    pub fn promote(&mut self, now_ms: u64) {
        self.expiries.clear();
        for id in self.ids() {
            self.renew(id, now_ms);
        }
    }

    /// Forgets every expiry (on losing leadership).
    pub fn demote(&mut self) {
        self.expiries.clear();
        for lease in self.leases.values_mut() {
            lease.expiry_ms = None;
        }
    }

    /// Leases whose expiry is at or before `now_ms`, earliest first, at most `limit`.
    pub fn expired(&mut self, now_ms: u64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&Reverse((expiry, id))) = self.expiries.peek() else { break };
            if expiry > now_ms {
                break;
            }
            self.expiries.pop();
            if self.leases.get(&id).and_then(|l| l.expiry_ms) == Some(expiry) {
                out.push(id);
            }
        }
        out
    }

    /// Remaining ms of lease `id` at `now_ms`, if it is promoted.
    pub fn remaining_ms(&self, id: i64, now_ms: u64) -> Option<u64> {
        self.leases.get(&id)?.expiry_ms.map(|e| e.saturating_sub(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_heap_orders_and_skips_renewed_leases() {
        let mut l = Lessor::default();
        l.grant(1, 5, Some(0));
        l.grant(2, 2, Some(0));
        l.grant(3, 3, Some(0));
        l.renew(2, 2500);
        assert_eq!(l.expired(3000, 10), vec![3]);
        assert_eq!(l.expired(5000, 10), vec![2, 1]);
    }

    #[test]
    fn promotion_gives_a_full_ttl() {
        let mut l = Lessor::default();
        l.grant(7, 10, None);
        assert_eq!(l.expired(u64::MAX, 10), Vec::<i64>::new());
        l.promote(1_000);
        assert_eq!(l.remaining_ms(7, 1_000), Some(10_000));
        assert!(l.expired(10_999, 10).is_empty());
        assert_eq!(l.expired(11_000, 10), vec![7]);
    }

    #[test]
    fn a_key_knows_its_lease_until_detached_or_revoked() {
        let mut l = Lessor::default();
        l.grant(1, 5, None);
        l.grant(2, 5, None);
        l.attach(1, b"a");
        l.attach(2, b"b");
        l.attach(3, b"c");
        assert_eq!((l.lease_of(b"a"), l.lease_of(b"b"), l.lease_of(b"c")), (Some(1), Some(2), None));
        l.detach(1, b"a");
        l.revoke(2);
        assert_eq!((l.lease_of(b"a"), l.lease_of(b"b")), (None, None));
    }
}
