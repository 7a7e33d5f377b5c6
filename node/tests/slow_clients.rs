//! Clients that never read cannot grow a member's memory: a watch stream whose client takes
//! no responses while large puts flow, and a keep-alive stream whose client sends without
//! reading the answers. The member must stay small and keep serving others; what it held
//! for those clients goes when they leave.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::grpc::connect;
use common::Keel;
use h2::client::SendRequest;
use http::Request;
use keel_api::etcdserverpb as pb;
use keel_api::grpc::frame_encoded;
use prost::Message;

/// A call whose request is still open and whose response is never read (dropping either
/// would reset the stream).
type OpenCall = (h2::client::ResponseFuture, h2::SendStream<Bytes>);

/// Opens a call to `path` and sends `message` on it, leaving the request open.
async fn open_call(client: &SendRequest<Bytes>, keel: &Keel, path: &str, message: &[u8]) -> OpenCall {
    let head = Request::post(format!("{}{path}", keel.endpoint))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = client.clone().ready().await.expect("connection open");
    let (unread, mut body) = ready.send_request(head, false).expect("sends headers");
    body.send_data(Bytes::from(frame_encoded(message)), false).expect("sends the message");
    (unread, body)
}

/// Runs `test` against a fresh member on a runtime of its own.
fn with_member(test: impl AsyncFnOnce(&Keel)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), test(&keel)).await.expect("finishes in time");
    });
}

/// Puts `count` values of `bytes` bytes from a few concurrent clients.
async fn put_many(keel: &Keel, count: usize, bytes: usize) {
    let client = etcd_client::Client::connect([keel.endpoint.as_str()], None).await.expect("connects");
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for i in (task..count).step_by(4) {
                    client.put(format!("w/{i}"), vec![b'x'; bytes], None).await.expect("put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("the task finishes");
    }
}

#[test]
fn watchers_that_never_read_do_not_grow_the_member() {
    with_member(async |keel| {
        let before = keel.resident_mib();
        // The h2 client opens a stream's window only as far as the caller releases what it
        // read, so a stream whose response is never read stops the server once it is full.
        let (watchers, _) = connect(&keel.endpoint).await;
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                ..Default::default()
            })),
        };
        let mut streams = Vec::new();
        for _ in 0..20 {
            streams.push(open_call(&watchers, keel, "/etcdserverpb.Watch/Watch", &create.encode_to_vec()).await);
        }
        // 30 MB of events for each of 20 watchers: 600 MB if the member held them.
        put_many(keel, 3000, 10 * 1024).await;
        let during = keel.resident_mib();
        assert!(during < before + 200, "resident {before} MiB before, {during} MiB with 20 watchers not reading");
        // The member still serves, and lets go of the streams when their client leaves.
        put_many(keel, 10, 10).await;
        drop((streams, watchers));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = keel.resident_mib();
        assert!(after <= during + 20, "resident {after} MiB once the watchers left, {during} MiB before");
    });
}

/// How many keep-alive requests the member has read, from its `/metrics`.
fn keep_alives_read(keel: &Keel) -> u64 {
    let (status, metrics) = common::http(&keel.endpoint, "GET", "/metrics", "", Duration::from_secs(5));
    assert_eq!(status, 200);
    let series = r#"grpc_server_msg_received_total{grpc_type="bidi_stream",grpc_service="etcdserverpb.Lease",grpc_method="LeaseKeepAlive"}"#;
    metrics.lines().find_map(|l| l.strip_prefix(series)).map_or(0, |n| n.trim().parse().expect("a count"))
}

/// A client that reads the socket but never opens a window for the answers of its
/// keep-alive stream (which it made small), sending keep-alives as fast as the member lets
/// it: the member must stop reading that stream instead of queueing answers.
#[test]
fn a_keep_alive_stream_whose_answers_are_never_read_stops_being_read() {
    use common::h2raw::{call_headers, frame, Connection, Windows, DATA, END_HEADERS, HEADERS, SETTINGS};
    with_member(async |keel| {
        let mut client = etcd_client::Client::connect([keel.endpoint.as_str()], None).await.expect("connects");
        let lease = client.lease_grant(60, None).await.expect("granted").id();
        let before = keel.resident_mib();
        let address = keel.endpoint.trim_start_matches("http://").to_string();
        let flood = tokio::task::spawn_blocking(move || {
            let mut connection = Connection::open(&address);
            // SETTINGS_INITIAL_WINDOW_SIZE: room for a few dozen answers.
            assert!(connection.send(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 4, 0])));
            let mut encoder = loona_hpack::Encoder::new();
            let headers = call_headers(&mut encoder, &address, "/etcdserverpb.Lease/LeaseKeepAlive");
            assert!(connection.send(&frame(HEADERS, END_HEADERS, 1, &headers)));
            let one = frame_encoded(&pb::LeaseKeepAliveRequest { id: lease }.encode_to_vec());
            let mut windows = Windows::default();
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                for frame in connection.ready_frames().expect("the member keeps the connection") {
                    windows.grant(&frame);
                }
                let room = (windows.open(1) as usize / one.len()).min(1000);
                if room == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * room).collect();
                assert!(connection.send(&frame(DATA, 0, 1, &batch)), "the member keeps the connection");
                windows.spend(1, batch.len() as u64);
            }
            connection
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let early = keep_alives_read(keel);
        let connection = flood.await.expect("the client finishes");
        let late = keep_alives_read(keel);
        // The answers that fit the client's window, the member's queue and its send buffer.
        assert!(early > 0 && early < 1000, "{early} keep-alives read before the stream filled");
        assert_eq!(late, early, "the member kept reading a stream whose answers nobody takes");
        let during = keel.resident_mib();
        assert!(during < before + 40, "resident {before} MiB before, {during} MiB with answers unread");
        let renewed = client.lease_time_to_live(lease, None).await.expect("other clients are served");
        assert!(renewed.ttl() > 0);
        drop(connection);
    });
}
