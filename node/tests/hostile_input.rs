//! Oversized, truncated and malformed input at both ports — HTTP/2 frames and gRPC messages
//! no client library would send and broken HTTP/1.1 at the client port, lying frames at the
//! peer port — thrown at one member: each is refused (the stream, or that connection) the
//! way a gRPC or HTTP server refuses it, and the member keeps its memory and goes on
//! answering etcdctl.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::h2raw::{
    call_headers, frame, Connection, Frame, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM,
};
use common::{http, ok, start_etcd, Keel};

use keel_api::etcdserverpb as pb;
use keel_api::grpc::frame_encoded;
use loona_hpack::{Decoder, Encoder};
use prost::Message;

fn address(keel: &Keel) -> String {
    address_of(&keel.endpoint)
}

fn address_of(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_string()
}

/// A Range request, framed for gRPC.
fn range_message() -> Vec<u8> {
    frame_encoded(&pb::RangeRequest { key: b"k".to_vec(), ..Default::default() }.encode_to_vec())
}

/// The answer to stream `stream`: its `grpc-status` (from trailers or a trailers-only answer),
/// or the RST_STREAM code it was reset with; None if the connection ended first.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// `grpc-status` and `grpc-message`.
    Status(String, String),
    /// An HTTP status without a gRPC one.
    Http(String),
    /// RST_STREAM's error code.
    Reset(u32),
}

fn ok_status() -> Option<Answer> {
    Some(Answer::Status("0".into(), String::new()))
}

fn answer(connection: &mut Connection, decoder: &mut Decoder<'_>, stream: u32) -> Option<Answer> {
    let mut block = Vec::new();
    let mut http_status = None;
    for Frame { kind, flags, stream: on, payload } in connection.until_stream_ends(stream) {
        if matches!(kind, HEADERS | CONTINUATION) {
            block.extend_from_slice(&payload);
            if flags & END_HEADERS != 0 {
                let headers = decoder.decode(&block).expect("the server's header blocks decode");
                block.clear();
                let field = |name: &[u8]| {
                    headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).to_string())
                };
                if on == stream {
                    if let Some(code) = field(b"grpc-status") {
                        return Some(Answer::Status(code, field(b"grpc-message").unwrap_or_default()));
                    }
                    http_status = field(b":status").or(http_status);
                }
            }
        }
        if on == stream && kind == RST_STREAM {
            return Some(Answer::Reset(u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))));
        }
    }
    http_status.map(Answer::Http)
}

/// How grpc-go's message for a request that does not parse begins.
const UNMARSHALLING: &str = "grpc: error unmarshalling request: ";

/// Opens a connection and sends a call to `path` on `stream` whose request is `message`.
fn call(address: &str, stream: u32, message: &[u8]) -> (Connection, Encoder<'static>, Decoder<'static>) {
    let mut connection = Connection::open(address);
    let mut encoder = Encoder::new();
    let headers = call_headers(&mut encoder, address, "/etcdserverpb.KV/Range");
    assert!(connection.send(&frame(HEADERS, END_HEADERS, stream, &headers)));
    assert!(connection.send(&frame(DATA, END_STREAM, stream, message)));
    (connection, encoder, Decoder::new())
}

/// Reads until the member closes the connection; panics if it keeps it open.
fn assert_closed(connection: &mut Connection) {
    while connection.next_frame().is_some() {}
}

#[test]
fn hostile_http2_and_grpc_input_is_refused_and_the_member_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let address = address(&keel);
    let before = keel.resident_mib();

    // A header block that names one 4000-byte table entry 10,000 times: 14 KB sent, 40 MB
    // if expanded. That request is refused; the next one on the connection is served.
    for _ in 0..20 {
        let mut connection = Connection::open(&address);
        let mut bomb = vec![0x40, 5];
        bomb.extend_from_slice(b"x-big");
        bomb.extend_from_slice(&[0x7f, 0xa1, 0x1e]); // a 4000-byte literal (a 7-bit prefix integer)
        bomb.extend(std::iter::repeat_n(b'a', 4000));
        bomb.extend(std::iter::repeat_n(0x80 | 62, 10_000));
        let (first, rest) = bomb.split_at(8000);
        assert!(connection.send(&frame(HEADERS, 0, 1, first)));
        assert!(connection.send(&frame(CONTINUATION, END_HEADERS, 1, rest)));
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::new();
        let refused = answer(&mut connection, &mut decoder, 1).expect("the oversized request is answered");
        assert!(
            matches!(refused, Answer::Http(ref s) if s == "431") || matches!(refused, Answer::Reset(_)),
            "{refused:?}"
        );
        let headers = call_headers(&mut encoder, &address, "/etcdserverpb.KV/Range");
        assert!(connection.send(&frame(HEADERS, END_HEADERS, 3, &headers)));
        assert!(connection.send(&frame(DATA, END_STREAM, 3, &range_message())));
        assert_eq!(answer(&mut connection, &mut decoder, 3), ok_status(), "the connection goes on");
    }
    let after_bombs = keel.resident_mib();
    assert!(after_bombs < before + 50, "resident {before} MiB before, {after_bombs} MiB after 20 header bombs");

    // A header block over the limit as sent, and a frame over the maximum frame size: the
    // connection is closed.
    let mut connection = Connection::open(&address);
    let big: Vec<u8> = std::iter::repeat_n(0u8, 16_000).collect();
    connection.send(&frame(HEADERS, 0, 1, &big));
    for _ in 0..5 {
        connection.send(&frame(CONTINUATION, 0, 1, &big));
    }
    assert_closed(&mut connection);
    let mut connection = Connection::open(&address);
    connection.send(&frame(DATA, 0, 1, &vec![0u8; 20_000]));
    assert_closed(&mut connection);

    // gRPC messages that lie about themselves: each call fails with the status etcd gives.
    let etcd = start_etcd(&dir.path().join("etcd"));
    let garbage = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let cases: [(&str, Vec<u8>); 5] = [
        ("a length of 4 GiB", [vec![0, 0xff, 0xff, 0xff, 0xff], vec![0; 16]].concat()),
        ("a compressed message", [vec![1, 0, 0, 0, 2], vec![0x0a, 0]].concat()),
        ("an unparsable message", frame_encoded(&garbage)),
        ("a message cut short", range_message()[..4].to_vec()),
        ("no message", Vec::new()),
    ];
    for (what, message) in cases {
        let [from_etcd, from_keel] = [address_of(&etcd.endpoint), address.clone()].map(|at| {
            let (mut connection, _, mut decoder) = call(&at, 1, &message);
            answer(&mut connection, &mut decoder, 1).map(|answer| match answer {
                // The cause is in the protobuf library's words, Go's or Rust's.
                Answer::Status(code, message) if message.starts_with(UNMARSHALLING) => {
                    Answer::Status(code, UNMARSHALLING.into())
                }
                other => other,
            })
        });
        assert!(matches!(from_keel, Some(Answer::Status(ref code, _)) if code != "0"), "{what}: {from_keel:?}");
        assert_eq!(from_keel, from_etcd, "{what}");
    }

    // Not HTTP/2 after the preface: the connection ends.
    let mut connection = Connection::open(&address);
    connection.send(&[0xde, 0xad, 0xbe, 0xef].repeat(100));
    assert_closed(&mut connection);

    ok(&keel.endpoint, &["put", "still", "here"]);
    assert_eq!(ok(&keel.endpoint, &["get", "still", "--print-value-only"]), "here\n");
}

/// Writes raw bytes to the HTTP/1.1 side and reads whatever comes back until it closes.
fn raw_http1(address: &str, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(address).expect("connects");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = tcp.write_all(bytes);
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn hostile_http1_input_is_refused_and_the_member_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let address = address(&keel);
    let huge_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(2 << 20));
    let refused = raw_http1(&address, huge_header.as_bytes());
    assert!(refused.starts_with("HTTP/1.1 431"), "a head too large: {:?}", &refused[..refused.len().min(200)]);
    let refused = raw_http1(&address, b"\x00\x01\x02 nonsense\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 400"), "not HTTP: {refused:?}");
    let truncated = "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"key\":";
    raw_http1(&address, truncated.as_bytes());
    let big = format!("{{\"key\":\"{}\"}}", "A".repeat(3 << 20));
    assert_eq!(http(&keel.endpoint, "POST", "/v3/kv/put", &big, Duration::from_secs(10)).0, 413, "a body too large");
    let (status, body) = http(&keel.endpoint, "POST", "/v3/kv/put", "{\"key\": 12", Duration::from_secs(10));
    assert_eq!(status, 400, "malformed JSON: {body}");
    assert!(body.contains("\"code\":3"), "grpc-gateway's error body: {body}");

    ok(&keel.endpoint, &["put", "still", "here"]);
    assert_eq!(ok(&keel.endpoint, &["get", "still", "--print-value-only"]), "here\n");
}

/// The peer port is anyone's until a connection introduces itself: frames that claim a
/// gigabyte and never come, garbage, a first frame that is not a hello or is a hello from
/// another cluster — each connection is dropped, and the member holds nothing for it.
#[test]
fn hostile_input_at_the_peer_port_is_dropped_and_the_member_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let before = keel.resident_mib();
    let claims_a_gigabyte = (1u32 << 30).to_be_bytes();
    let hello_from_elsewhere = {
        let frame = keel_net::Frame::Hello(keel_net::Hello { cluster_id: 1, member_id: 2 }).encode();
        [(frame.len() as u32).to_be_bytes().to_vec(), frame].concat()
    };
    let attempts: [Vec<u8>; 4] = [
        claims_a_gigabyte.to_vec(),
        [vec![0, 0, 0, 8], vec![0xde; 8]].concat(),
        [vec![0, 0, 0, 3], vec![1, 0x0a, 0x00]].concat(),
        hello_from_elsewhere,
    ];
    let mut open = Vec::new();
    for bytes in attempts.iter().cycle().take(40) {
        let mut tcp = TcpStream::connect(keel.peer_address()).expect("connects");
        tcp.write_all(bytes).expect("sent");
        open.push(tcp); // kept open: what the member holds for them must stay small
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = keel.resident_mib();
    assert!(during < before + 50, "resident {before} MiB before, {during} MiB with hostile peer connections");
    drop(open);
    ok(&keel.endpoint, &["put", "still", "here"]);
    assert_eq!(ok(&keel.endpoint, &["get", "still", "--print-value-only"]), "here\n");
}
