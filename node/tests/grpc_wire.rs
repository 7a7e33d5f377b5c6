//! gRPC over HTTP/2 at the frame level, with the `h2` client: what client libraries do on
//! the wire that their usual timing hides.

mod common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
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
        let client = connect(&address).await;
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

/// A path that names no RPC is answered Unimplemented, naming the path, as grpc-go answers
/// it, and the connection keeps serving.
#[test]
fn an_unknown_method_is_unimplemented() {
    with_keel(|address| async move {
        let client = connect(&address).await;
        let message = range_message();
        for (path, status, reason) in [
            ("/etcdserverpb.KV/Nothing", "12", Some("unknown method /etcdserverpb.KV/Nothing")),
            ("/etcdserverpb.KV/Range", "0", None),
        ] {
            let mut ready = client.clone().ready().await.expect("connection open");
            let (response, mut request_body) =
                ready.send_request(call_head(&address, path), false).expect("sends headers");
            request_body.send_data(message.clone(), true).expect("sends the message");
            let mut body = response.await.expect("answered").into_body();
            while let Some(data) = body.data().await {
                let _ = body.flow_control().release_capacity(data.expect("reads the answer").len());
            }
            let trailers = body.trailers().await.expect("trailers arrive").expect("trailers");
            assert_eq!(trailers.get("grpc-status").map(|v| v.to_str().unwrap()), Some(status), "{path}");
            assert_eq!(trailers.get("grpc-message").map(|v| v.to_str().unwrap()), reason, "{path}");
        }
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

/// An HTTP/2 connection to `address`, driven by a task on the current runtime.
async fn connect(address: &str) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    client
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
