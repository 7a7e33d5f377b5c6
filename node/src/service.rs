//! Translation between etcd's gRPC messages (`keel-api`) and the node's requests and replies.
//!
//! The store's message types use etcd's field numbers, so a request converts by re-decoding
//! its bytes; a response gets etcd's `ResponseHeader` (field 1, which the store does not
//! model) added on the way out.

use keel_api::etcdserverpb as pb;
use keel_api::grpc::{decode, Method, Status};
use keel_api::Code;
use prost::Message;

use crate::proposal::{AlarmChange, Reply, Request, Response};

/// Re-reads a message as another type with the same field numbers.
pub(crate) fn recode<B: Message + Default>(from: &impl Message) -> B {
    B::decode(from.encode_to_vec().as_slice()).expect("types share etcd's field numbers")
}

/// What every response header carries besides the revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Cluster id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Current Raft term.
    pub raft_term: u64,
    /// Current store revision.
    pub revision: i64,
}

impl HeaderInfo {
    /// The header of an answer not tied to a write: at the current revision.
    pub fn current(&self) -> pb::ResponseHeader {
        self.header(self.revision)
    }

    /// The header of a reply served at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }
}

/// The node request behind a unary call of `method`, or None if the method is not a node
/// request (cluster, maintenance and auth calls are served by the server itself).
pub fn unary_request(method: Method, body: &[u8]) -> Option<Result<Request, Status>> {
    let request = match method {
        Method::Range => decode::<pb::RangeRequest>(body).map(|r| Request::Range(recode(&r))),
        Method::Put => decode::<pb::PutRequest>(body).map(|r| Request::Put(recode(&r))),
        Method::DeleteRange => decode::<pb::DeleteRangeRequest>(body).map(|r| Request::DeleteRange(recode(&r))),
        Method::Txn => decode::<pb::TxnRequest>(body).map(|r| Request::Txn(recode(&r))),
        Method::Compact => decode::<pb::CompactionRequest>(body).map(|r| Request::Compact { revision: r.revision }),
        Method::LeaseGrant => {
            decode::<pb::LeaseGrantRequest>(body).map(|r| Request::LeaseGrant { id: r.id, ttl: r.ttl })
        }
        Method::LeaseRevoke => decode::<pb::LeaseRevokeRequest>(body).map(|r| Request::LeaseRevoke { id: r.id }),
        Method::LeaseTimeToLive => {
            decode::<pb::LeaseTimeToLiveRequest>(body).map(|r| Request::LeaseTimeToLive { id: r.id, keys: r.keys })
        }
        Method::LeaseLeases => decode::<pb::LeaseLeasesRequest>(body).map(|_| Request::LeaseLeases),
        Method::Alarm => decode::<pb::AlarmRequest>(body).map(|r| {
            use pb::alarm_request::AlarmAction;
            let change = |activate| AlarmChange { member_id: r.member_id, alarm: r.alarm, activate };
            match AlarmAction::try_from(r.action) {
                Ok(AlarmAction::Activate) => Request::Alarm(change(true)),
                Ok(AlarmAction::Deactivate) => Request::Alarm(change(false)),
                Ok(AlarmAction::Get) | Err(_) => Request::AlarmList,
            }
        }),
        _ => return None,
    };
    Some(request)
}

/// The encoded gRPC response for a node reply.
pub fn unary_response(reply: &Reply, info: &HeaderInfo) -> Result<Vec<u8>, Status> {
    let header = Some(info.header(reply.revision));
    let bytes = match &reply.response {
        Response::Range(r) => pb::RangeResponse { header, ..recode(r) }.encode_to_vec(),
        Response::Put(r) => pb::PutResponse { header, ..recode(r) }.encode_to_vec(),
        Response::DeleteRange(r) => pb::DeleteRangeResponse { header, ..recode(r) }.encode_to_vec(),
        Response::Txn(r) => {
            let mut txn: pb::TxnResponse = recode(r);
            let begin = reply.revision - i64::from(txn_changed(&txn.responses));
            fill_txn_headers(&mut txn.responses, begin, &mut false);
            pb::TxnResponse { header, ..txn }.encode_to_vec()
        }
        Response::Compact => pb::CompactionResponse { header }.encode_to_vec(),
        Response::LeaseGrant { id, ttl } => {
            pb::LeaseGrantResponse { header, id: *id, ttl: *ttl, error: String::new() }.encode_to_vec()
        }
        Response::LeaseRevoke => pb::LeaseRevokeResponse { header }.encode_to_vec(),
        Response::LeaseKeepAlive { id, ttl } => {
            pb::LeaseKeepAliveResponse { header, id: *id, ttl: *ttl }.encode_to_vec()
        }
        Response::LeaseTimeToLive { id, ttl, granted_ttl, keys } => {
            pb::LeaseTimeToLiveResponse { header, id: *id, ttl: *ttl, granted_ttl: *granted_ttl, keys: keys.clone() }
                .encode_to_vec()
        }
        Response::LeaseLeases(ids) => {
            pb::LeaseLeasesResponse { header, leases: ids.iter().map(|&id| pb::LeaseStatus { id }).collect() }
                .encode_to_vec()
        }
        Response::Alarms(alarms) => {
            let alarms = alarms.iter().map(|a| pb::AlarmMember { member_id: a.member_id, alarm: a.alarm }).collect();
            // etcd 3.4 answers Alarm without a response header.
            pb::AlarmResponse { header: None, alarms }.encode_to_vec()
        }
        Response::ConfChange(_) | Response::Published => {
            return Err(Status::new(Code::Internal, "membership replies are built by the cluster service"))
        }
    };
    Ok(bytes)
}

/// Whether any operation of a transaction (nested ones included) changed the store.
fn txn_changed(ops: &[pb::ResponseOp]) -> bool {
    use pb::response_op::Response as Op;
    ops.iter().any(|op| match &op.response {
        Some(Op::ResponsePut(_)) => true,
        Some(Op::ResponseDeleteRange(d)) => d.deleted > 0,
        Some(Op::ResponseTxn(t)) => txn_changed(&t.responses),
        Some(Op::ResponseRange(_)) | None => false,
    })
}

/// etcd gives each operation of a transaction a header with the store's revision as that
/// operation left it: the revision before the transaction (`begin`), plus one once anything
/// has `changed`.
fn fill_txn_headers(ops: &mut [pb::ResponseOp], begin: i64, changed: &mut bool) {
    use pb::response_op::Response as Op;
    let at = |revision: i64| Some(pb::ResponseHeader { revision, ..Default::default() });
    for op in ops {
        match &mut op.response {
            Some(Op::ResponsePut(p)) => {
                *changed = true;
                p.header = at(begin + 1);
            }
            Some(Op::ResponseDeleteRange(d)) => {
                *changed |= d.deleted > 0;
                d.header = at(begin + i64::from(*changed));
            }
            Some(Op::ResponseRange(r)) => r.header = at(begin + i64::from(*changed)),
            Some(Op::ResponseTxn(t)) => fill_txn_headers(&mut t.responses, begin, changed),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_api::mvccpb;
    use keel_storage::mvcc::{KeyValue, RangeResponse};

    #[test]
    fn requests_keep_every_field() {
        let req = pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            limit: 5,
            revision: 7,
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: false,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        let Some(Ok(Request::Range(got))) = unary_request(Method::Range, &req.encode_to_vec()) else {
            panic!("a range request")
        };
        assert_eq!(got.encode_to_vec(), req.encode_to_vec());
        assert!(unary_request(Method::Status, &[]).is_none());
        let garbage = unary_request(Method::Put, &[0xff, 0xff]).unwrap().unwrap_err();
        assert_eq!(garbage.code, Code::Internal);
    }

    #[test]
    fn responses_carry_etcds_header() {
        let kv = KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), mod_revision: 4, ..Default::default() };
        let reply =
            Reply { revision: 9, response: Response::Range(RangeResponse { kvs: vec![kv], more: false, count: 1 }) };
        let info = HeaderInfo { cluster_id: 1, member_id: 2, raft_term: 3, revision: 0 };
        let bytes = unary_response(&reply, &info).unwrap();
        let got = pb::RangeResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(got.header, Some(pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 9, raft_term: 3 }));
        assert_eq!(
            got.kvs[0],
            mvccpb::KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), mod_revision: 4, ..Default::default() }
        );
        assert_eq!(got.count, 1);
    }

    #[test]
    fn txn_operations_carry_the_revision_they_left() {
        use keel_storage::mvcc::{DeleteRangeResponse, PutResponse, Response as Op, ResponseOp, TxnResponse};
        let op = |r: Op| ResponseOp { response: Some(r) };
        let txn = TxnResponse {
            succeeded: true,
            responses: vec![
                op(Op::Range(RangeResponse::default())),
                op(Op::DeleteRange(DeleteRangeResponse::default())),
                op(Op::Put(PutResponse::default())),
                op(Op::Range(RangeResponse::default())),
            ],
        };
        let info = HeaderInfo::default();
        let bytes = unary_response(&Reply { revision: 8, response: Response::Txn(txn) }, &info).unwrap();
        let got = pb::TxnResponse::decode(bytes.as_slice()).unwrap();
        let revisions: Vec<i64> = got
            .responses
            .iter()
            .map(|op| match op.response.as_ref().unwrap() {
                pb::response_op::Response::ResponseRange(r) => r.header.unwrap().revision,
                pb::response_op::Response::ResponsePut(r) => r.header.unwrap().revision,
                pb::response_op::Response::ResponseDeleteRange(r) => r.header.unwrap().revision,
                pb::response_op::Response::ResponseTxn(_) => unreachable!(),
            })
            .collect();
        assert_eq!(revisions, [7, 7, 8, 8]);
    }
}
