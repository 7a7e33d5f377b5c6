//! Request validation before anything reaches Raft, with etcd's errors and limits.

use std::collections::BTreeSet;

use keel_api::EtcdError;
use keel_storage::mvcc::{DeleteRangeRequest, PutRequest, RangeRequest, Request as TxnOp, TxnRequest};
use keel_storage::mvcc::{SortOrder, SortTarget};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's largest lease TTL, seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Checks a range request.
pub fn range(req: &RangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err() || SortTarget::try_from(req.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// Checks a put request.
pub fn put(req: &PutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete request.
pub fn delete_range(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a transaction: sizes, every operation, and that no key is written twice on any
/// path through it (etcd's "duplicate key" rule: puts are distinct and outside every delete
/// range of the same branch).
pub fn txn(req: &TxnRequest) -> Result<(), EtcdError> {
    if req.compare.len() > MAX_TXN_OPS || req.success.len() > MAX_TXN_OPS || req.failure.len() > MAX_TXN_OPS {
        return Err(EtcdError::TooManyOps);
    }
    for c in &req.compare {
        if c.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
    }
    for branch in [&req.success, &req.failure] {
        let mut writes = Writes::default();
        for op in branch {
            check_op(op.request.as_ref(), &mut writes)?;
        }
        writes.check()?;
    }
    Ok(())
}

#[derive(Default)]
struct Writes {
    puts: Vec<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn check(&self) -> Result<(), EtcdError> {
        let mut seen = BTreeSet::new();
        for key in &self.puts {
            if !seen.insert(key) || self.deletes.iter().any(|(start, end)| in_range(key, start, end)) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        Ok(())
    }
}

/// Whether `key` falls in etcd's range `[start, end)`: an empty `end` means just `start`,
/// `end == [0]` means every key from `start` on.
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

fn check_op(op: Option<&TxnOp>, writes: &mut Writes) -> Result<(), EtcdError> {
    match op {
        Some(TxnOp::Range(r)) => range(r),
        Some(TxnOp::Put(p)) => {
            put(p)?;
            writes.puts.push(p.key.clone());
            Ok(())
        }
        Some(TxnOp::DeleteRange(d)) => {
            delete_range(d)?;
            writes.deletes.push((d.key.clone(), d.range_end.clone()));
            Ok(())
        }
        Some(TxnOp::Txn(inner)) => {
            txn(inner)?;
            // Either branch of the nested transaction may run: both count against this one.
            for branch in [&inner.success, &inner.failure] {
                for op in branch {
                    collect(op.request.as_ref(), writes);
                }
            }
            Ok(())
        }
        None => Ok(()),
    }
}

fn collect(op: Option<&TxnOp>, writes: &mut Writes) {
    match op {
        Some(TxnOp::Put(p)) => writes.puts.push(p.key.clone()),
        Some(TxnOp::DeleteRange(d)) => writes.deletes.push((d.key.clone(), d.range_end.clone())),
        Some(TxnOp::Txn(inner)) => {
            for op in inner.success.iter().chain(&inner.failure) {
                collect(op.request.as_ref(), writes);
            }
        }
        Some(TxnOp::Range(_)) | None => {}
    }
}

/// Checks a lease TTL.
pub fn lease_ttl(ttl: i64) -> Result<(), EtcdError> {
    if ttl > MAX_LEASE_TTL {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_storage::mvcc::RequestOp;

    fn put_op(key: &str) -> RequestOp {
        RequestOp { request: Some(TxnOp::Put(PutRequest { key: key.into(), ..Default::default() })) }
    }

    fn del_op(key: &str, end: &str) -> RequestOp {
        let req = DeleteRangeRequest { key: key.into(), range_end: end.into(), ..Default::default() };
        RequestOp { request: Some(TxnOp::DeleteRange(req)) }
    }

    #[test]
    fn duplicate_keys_are_refused_per_branch() {
        let ok = TxnRequest { success: vec![put_op("a")], failure: vec![put_op("a")], ..Default::default() };
        assert_eq!(txn(&ok), Ok(()));
        let twice = TxnRequest { success: vec![put_op("a"), put_op("a")], ..Default::default() };
        assert_eq!(txn(&twice), Err(EtcdError::DuplicateKey));
        let overlap = TxnRequest { success: vec![del_op("a", "c"), put_op("b")], ..Default::default() };
        assert_eq!(txn(&overlap), Err(EtcdError::DuplicateKey));
        let nested = TxnRequest { success: vec![put_op("x")], ..Default::default() };
        let outer = TxnRequest {
            success: vec![put_op("x"), RequestOp { request: Some(TxnOp::Txn(nested)) }],
            ..Default::default()
        };
        assert_eq!(txn(&outer), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn etcd_argument_errors() {
        assert_eq!(range(&RangeRequest::default()), Err(EtcdError::EmptyKey));
        let bad_sort = RangeRequest { key: b"k".to_vec(), sort_order: 9, ..Default::default() };
        assert_eq!(range(&bad_sort), Err(EtcdError::InvalidSortOption));
        let p = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ignore_value: true, ..Default::default() };
        assert_eq!(put(&p), Err(EtcdError::ValueProvided));
        let many = TxnRequest { success: (0..129).map(|i| put_op(&i.to_string())).collect(), ..Default::default() };
        assert_eq!(txn(&many), Err(EtcdError::TooManyOps));
        assert_eq!(lease_ttl(MAX_LEASE_TTL + 1), Err(EtcdError::LeaseTtlTooLarge));
    }
}
