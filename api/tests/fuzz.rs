//! The protocol decoders that read what clients send, fuzzed (see `keel-fuzz`): gRPC's
//! message framing, every request message, the HTTP/2 stream the `:authority` fix reads,
//! `grpc-timeout`, and the JSON gateway's request bodies. None may panic, and what decodes
//! must encode back to itself.

use keel_api::authority::{AuthorityFix, MAX_HEADER_LIST_BYTES, PREFACE};
use keel_api::etcdserverpb as pb;
use keel_api::grpc::{frame_encoded, parse_timeout, FrameDecoder};
use keel_fuzz::fuzz;
use prost::Message;

/// Valid requests of several kinds, encoded.
fn requests() -> Vec<Vec<u8>> {
    let range =
        pb::RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), limit: 5, revision: 3, ..Default::default() };
    let put = pb::PutRequest { key: b"k".to_vec(), value: vec![7; 40], lease: 9, prev_kv: true, ..Default::default() };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Mod as i32,
            target_union: Some(pb::compare::TargetUnion::ModRevision(4)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put.clone())) }],
        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(range.clone())) }],
    };
    let watch = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"w".to_vec(),
            start_revision: 2,
            filters: vec![1],
            ..Default::default()
        })),
    };
    vec![
        range.encode_to_vec(),
        put.encode_to_vec(),
        txn.encode_to_vec(),
        watch.encode_to_vec(),
        pb::LeaseGrantRequest { ttl: 60, id: 5 }.encode_to_vec(),
        pb::LeaseTimeToLiveRequest { id: 5, keys: true }.encode_to_vec(),
    ]
}

/// Decodes `bytes` as `M`; what decodes must encode to bytes that decode to the same.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = M::decode(bytes) {
        let again = M::decode(message.encode_to_vec().as_slice()).expect("an encoding decodes");
        assert_eq!(again, message);
    }
}

#[test]
fn request_messages() {
    fuzz("request messages", &requests(), |bytes| {
        round_trip::<pb::RangeRequest>(bytes);
        round_trip::<pb::PutRequest>(bytes);
        round_trip::<pb::DeleteRangeRequest>(bytes);
        round_trip::<pb::TxnRequest>(bytes);
        round_trip::<pb::CompactionRequest>(bytes);
        round_trip::<pb::WatchRequest>(bytes);
        round_trip::<pb::LeaseGrantRequest>(bytes);
        round_trip::<pb::LeaseRevokeRequest>(bytes);
        round_trip::<pb::LeaseKeepAliveRequest>(bytes);
        round_trip::<pb::LeaseTimeToLiveRequest>(bytes);
        round_trip::<pb::AlarmRequest>(bytes);
        round_trip::<pb::HashKvRequest>(bytes);
        round_trip::<pb::MoveLeaderRequest>(bytes);
    });
}

#[test]
fn grpc_message_framing() {
    let framed: Vec<Vec<u8>> = requests().iter().map(|r| [frame_encoded(r), frame_encoded(&[])].concat()).collect();
    fuzz("gRPC framing", &framed, |bytes| {
        // The first byte chooses how the stream is cut into reads.
        let chunk = usize::from(bytes.first().copied().unwrap_or(1)).max(1);
        let mut decoder = FrameDecoder::new(1024);
        'reads: for piece in bytes.chunks(chunk) {
            decoder.push(piece);
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => assert!(message.len() <= 1024),
                    Ok(None) => break,
                    Err(_) => break 'reads, // the call is answered with the status and ends
                }
            }
        }
    });
}

/// A client's first bytes: the preface, SETTINGS, a request's header block split over
/// HEADERS and CONTINUATION, and its message.
fn http2_streams() -> Vec<Vec<u8>> {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    };
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":path", b"/etcdserverpb.KV/Range"),
        (b":authority", b"http://127.0.0.1:2379"),
        (b"content-type", b"application/grpc"),
    ];
    let block = loona_hpack::Encoder::new().encode(headers);
    let (head, rest) = block.split_at(block.len() / 2);
    let message = frame_encoded(&requests()[0]);
    let whole =
        [PREFACE.to_vec(), frame(0x4, 0, 0, &[]), frame(0x1, 0x4, 1, &block), frame(0x0, 0x1, 1, &message)].concat();
    let split = [PREFACE.to_vec(), frame(0x1, 0x1, 3, head), frame(0x9, 0x4, 3, rest)].concat();
    vec![whole, split]
}

#[test]
fn http2_header_blocks() {
    fuzz("HTTP/2 header blocks", &http2_streams(), |bytes| {
        let chunk = usize::from(bytes.last().copied().unwrap_or(1)).max(1);
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            if fix.push(piece, &mut out).is_err() {
                break; // the connection is closed
            }
        }
        // Each header block written out is bounded, whatever it expands to.
        let blocks = bytes.len() / 9 + 1;
        assert!(out.len() <= bytes.len() + blocks * (3 * MAX_HEADER_LIST_BYTES + 4096));
    });
}

#[test]
fn grpc_timeouts() {
    let examples: Vec<Vec<u8>> =
        ["5S", "250m", "99999999H", "-1n", "+7u"].iter().map(|t| t.as_bytes().to_vec()).collect();
    fuzz("grpc-timeout", &examples, |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = parse_timeout(text);
        }
    });
}

/// Parses `bytes` as the JSON of `M`; what parses must print to JSON that parses the same.
fn json_round_trip<M: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = serde_json::from_slice::<M>(bytes) {
        let again: M = serde_json::from_str(&serde_json::to_string(&message).expect("prints")).expect("parses");
        assert_eq!(again, message);
    }
}

#[test]
fn json_gateway_requests() {
    let examples: Vec<Vec<u8>> = [
        r#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","revision":"-3","sort_order":"DESCEND"}"#,
        r#"{"key":"Zm9v","value":"YmFy","lease":"7"}"#,
        r#"{"compare":[{"key":"Zm9v","target":"MOD","mod_revision":"4"}],"success":[{"request_put":{"key":"YQ=="}}]}"#,
        r#"{"create_request":{"key":"Zm9v","start_revision":"9223372036854775807"}}"#,
        r#"{"TTL":"60","ID":"5"}"#,
    ]
    .iter()
    .map(|j| j.as_bytes().to_vec())
    .collect();
    fuzz("JSON gateway requests", &examples, |bytes| {
        json_round_trip::<pb::RangeRequest>(bytes);
        json_round_trip::<pb::PutRequest>(bytes);
        json_round_trip::<pb::TxnRequest>(bytes);
        json_round_trip::<pb::WatchRequest>(bytes);
        json_round_trip::<pb::LeaseGrantRequest>(bytes);
        json_round_trip::<pb::CompactionRequest>(bytes);
    });
}
