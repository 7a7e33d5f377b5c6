//! The node core fed fuzzed client requests (see `keel-fuzz`): bytes decoded as any unary
//! request or watch, as the gRPC endpoint decodes them, then served by one member in memory,
//! round after round, with time passing. Whatever a client sends, the member answers and
//! goes on; nothing panics, and no arithmetic on a client's number overflows (the debug
//! build checks).

use std::future::Future;

use keel_api::etcdserverpb as pb;
use keel_api::grpc::Method;
use keel_fuzz::fuzz;
use keel_net::Transport;
use keel_node::{service, Node, NodeConfig, WatchCreate};
use keel_raft::Message as RaftMessage;
use keel_storage::backend::MemBackend;
use keel_storage::wal::MemDisk;
use prost::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The in-memory disk never pends, so one poll finishes its futures.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("in-memory futures complete at once"),
    }
}

struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, msg: RaftMessage) {
        panic!("a single member has no one to send {msg:?} to");
    }
}

/// The requests a client may send, in the order the first input byte picks them.
const METHODS: [Method; 10] = [
    Method::Range,
    Method::Put,
    Method::DeleteRange,
    Method::Txn,
    Method::Compact,
    Method::LeaseGrant,
    Method::LeaseRevoke,
    Method::LeaseTimeToLive,
    Method::Alarm,
    Method::Watch,
];

fn examples() -> Vec<Vec<u8>> {
    let tagged = |method: usize, body: Vec<u8>| [vec![method as u8], body].concat();
    let range = pb::RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), limit: 2, ..Default::default() };
    let put = pb::PutRequest { key: b"k".to_vec(), value: vec![1; 20], prev_kv: true, ..Default::default() };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Version as i32,
            target_union: Some(pb::compare::TargetUnion::Version(1)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put.clone())) }],
        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(range.clone())) }],
    };
    let watch = pb::WatchCreateRequest { key: b"k".to_vec(), start_revision: 1, prev_kv: true, ..Default::default() };
    vec![
        tagged(0, range.encode_to_vec()),
        tagged(1, put.encode_to_vec()),
        tagged(2, pb::DeleteRangeRequest { key: b"k".to_vec(), prev_kv: true, ..Default::default() }.encode_to_vec()),
        tagged(3, txn.encode_to_vec()),
        tagged(4, pb::CompactionRequest { revision: 2, physical: false }.encode_to_vec()),
        tagged(5, pb::LeaseGrantRequest { ttl: 5, id: 0 }.encode_to_vec()),
        tagged(6, pb::LeaseRevokeRequest { id: 1 }.encode_to_vec()),
        tagged(7, pb::LeaseTimeToLiveRequest { id: 1, keys: true }.encode_to_vec()),
        tagged(8, pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 }.encode_to_vec()),
        tagged(9, watch.encode_to_vec()),
    ]
}

#[test]
fn client_requests_never_bring_the_member_down() {
    let mut node = ready(Node::open(
        NodeConfig::new(1, vec![1]),
        MemDisk::default(),
        MemBackend::new(),
        ChaCha8Rng::seed_from_u64(1),
    ))
    .expect("opens");
    ready(node.process(&mut NoPeers, 0)).expect("applies the bootstrap");
    node.campaign();
    ready(node.process(&mut NoPeers, 0)).expect("becomes leader");
    let (mut now_ms, mut token) = (0u64, 0u64);
    fuzz("client requests to the node core", &examples(), |bytes| {
        let Some((&pick, body)) = bytes.split_first() else { return };
        let method = METHODS[usize::from(pick) % METHODS.len()];
        token += 1;
        if method == Method::Watch {
            if let Ok(create) = pb::WatchCreateRequest::decode(body) {
                let spec = WatchCreate {
                    key: create.key,
                    range_end: create.range_end,
                    start_revision: create.start_revision,
                    prev_kv: create.prev_kv,
                    watch_id: create.watch_id,
                    ..Default::default()
                };
                node.watch(token, spec).expect("a watch is answered, whatever it asks");
            }
        } else if let Some(Ok(request)) = service::unary_request(method, body) {
            node.request(token, request, now_ms, Some(now_ms + 1_000));
        }
        // Time passes now and then: lease expiry, deadlines, catching watchers up.
        if pick % 4 == 0 {
            now_ms += 700;
            node.tick(now_ms);
        }
        ready(node.process(&mut NoPeers, now_ms)).expect("the member goes on");
        let output = node.take_output();
        for (_, answer) in &output.replies {
            if let Ok(reply) = answer {
                service::unary_response(reply, &service::HeaderInfo::default()).expect("a reply encodes");
            }
        }
        // Some watch clients read what they are sent, the others never do.
        for response in output.watch.iter().filter(|r| r.stream % 2 == 0) {
            node.watch_consumed(response.stream, response.bytes);
        }
    });
}
