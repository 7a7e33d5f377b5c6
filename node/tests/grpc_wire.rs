//! gRPC over HTTP/2 at the frame level, with the `h2` client: what client libraries do on
//! the wire that their usual timing hides.

mod common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::grpc::connect;
use common::Keel;
use h2::client::SendRequest;
use http::Request;
use keel_api::etcdserverpb as pb;
use keel_api::grpc::frame_encoded;
use prost::Message;

/// More than h2's limit of 1024 streams reset by the server on one connection.
const CALLS: usize = 1100;

/// tonic and grpc-go end a unary request with an empty DATA frame of its own after the
/// message; the server may have answered by then. Every call on one long-lived connection
/// must still succeed (a server that drops the unfinished request resets the stream, and
/// h2 closes the connection after 1024 such resets).
#[test]
fn requests_ended_after_their_answer_keep_the_connection_open() {
    with_keel(|address| async move {
        let (client, _) = connect(&address).await;
        let message = range_message();
        for call in 0..CALLS {
            let mut ready =
                client.clone().ready().await.unwrap_or_else(|e| panic!("call {call}: connection lost: {e}"));
            let head = call_head(&address, "/etcdserverpb.KV/Range");
            let (response, mut request_body) = ready.send_request(head, false).expect("sends headers");
            request_body.send_data(message.clone(), false).expect("sends the message");
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("answered in time")
                .unwrap_or_else(|e| panic!("call {call}: {e}"));
            let mut body = response.into_body();
            while let Some(data) = body.data().await {
                let data = data.unwrap_or_else(|e| panic!("call {call}: reading the answer: {e}"));
                let _ = body.flow_control().release_capacity(data.len());
            }
            let trailers = body.trailers().await.unwrap_or_else(|e| panic!("call {call}: {e}")).expect("trailers");
            assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "call {call}");
            // Only now does the request end.
            request_body
                .send_data(Bytes::new(), true)
                .unwrap_or_else(|e| panic!("call {call}: the stream was reset before the request ended: {e}"));
        }
    });
}

/// A path that names no RPC is answered Unimplemented, naming the method and its service, as
/// grpc-go answers it, and the connection keeps serving.
#[test]
fn an_unknown_method_is_unimplemented() {
    with_keel(|address| async move {
        let (client, _) = connect(&address).await;
        let message = range_message();
        for (path, status, reason) in [
            ("/etcdserverpb.KV/Nothing", "12", "unknown method Nothing for service etcdserverpb.KV"),
            ("/etcdserverpb.KV/Range", "0", ""),
        ] {
            let answer = unary_status(&client, call_head(&address, path), message.clone()).await;
            assert_eq!(answer, (status.to_string(), reason.to_string()), "{path}");
        }
    });
}

/// A call's head with `grpc-timeout: timeout`.
fn call_with_timeout(address: &str, path: &str, timeout: &str) -> Request<()> {
    let mut head = call_head(address, path);
    head.headers_mut().insert("grpc-timeout", timeout.parse().expect("a header value"));
    head
}

/// Sends `message` as the whole request and reads the answer to its trailers: the status
/// code and message.
async fn unary_status(client: &SendRequest<Bytes>, head: Request<()>, message: Bytes) -> (String, String) {
    let mut ready = client.clone().ready().await.expect("connection open");
    let (response, mut request_body) = ready.send_request(head, false).expect("sends headers");
    request_body.send_data(message, true).expect("sends the message");
    let mut body = response.await.expect("answered").into_body();
    while let Some(data) = body.data().await {
        let _ = body.flow_control().release_capacity(data.expect("reads the answer").len());
    }
    let trailers = body.trailers().await.expect("trailers arrive").expect("trailers");
    let text = |name: &str| trailers.get(name).map_or(String::new(), |v| v.to_str().unwrap().to_string());
    (text("grpc-status"), text("grpc-message"))
}

/// A request's `grpc-timeout` is honoured as grpc-go honours it: a call still waiting when
/// it passes is answered DEADLINE_EXCEEDED (here a linearizable read on a member without a
/// quorum, which would otherwise wait for the 7 s request timeout), a stream ends with it,
/// and a timeout that does not parse resets the stream with INTERNAL_ERROR.
#[test]
fn client_deadlines_are_honoured() {
    let mut cluster = common::Cluster::start(&["a", "b", "c"]);
    for member in &mut cluster.members[1..] {
        member.kill();
    }
    let address = cluster.members[0].endpoint.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let (client, _) = connect(&address).await;
        let started = std::time::Instant::now();
        let head = call_with_timeout(&address, "/etcdserverpb.KV/Range", "500m");
        let (status, message) = unary_status(&client, head, range_message()).await;
        assert_eq!((status.as_str(), message.as_str()), ("4", "context deadline exceeded"));
        assert!(started.elapsed() < Duration::from_secs(5), "answered at the deadline, not the request timeout");

        let watch = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let head = call_with_timeout(&address, "/etcdserverpb.Watch/Watch", "300m");
        let (status, message) = unary_status(&client, head, Bytes::from(frame_encoded(&watch.encode_to_vec()))).await;
        assert_eq!((status.as_str(), message.as_str()), ("4", "context deadline exceeded"));

        let mut ready = client.clone().ready().await.expect("connection open");
        let head = call_with_timeout(&address, "/etcdserverpb.KV/Range", "soon");
        let (response, _) = ready.send_request(head, true).expect("sends headers");
        let reset = response.await.expect_err("the stream is reset");
        assert_eq!(reset.reason(), Some(h2::Reason::INTERNAL_ERROR), "{reset}");
    });
}

/// Runs `test` on a runtime of its own against a fresh single-member Keel at `address`.
fn with_keel<F: Future<Output = ()>>(test: impl FnOnce(String) -> F) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let address = keel.endpoint.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(test(address));
}

/// The head of a gRPC call to `path`.
fn call_head(address: &str, path: &str) -> Request<()> {
    Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A Range request for key `k`, framed.
fn range_message() -> Bytes {
    Bytes::from(frame_encoded(&pb::RangeRequest { key: b"k".to_vec(), ..Default::default() }.encode_to_vec()))
}
