//! gRPC calls sent as raw HTTP/2, to etcd and to keel alike, and their answers printed for
//! comparison: the status code and message, and each response message with what must
//! differ between two servers (ids, terms, hashes, sizes, indexes) masked.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::Request;
use keel_api::grpc::{frame_encoded, FrameDecoder};
use prost::Message;

use super::{start_etcd, Keel};

/// One call: its path and request message.
pub struct Call {
    pub what: String,
    pub path: &'static str,
    pub message: Vec<u8>,
    /// How to print the response messages.
    pub show: fn(&[u8]) -> String,
}

pub fn call<M: Message>(what: impl Into<String>, path: &'static str, request: M, show: fn(&[u8]) -> String) -> Call {
    Call { what: what.into(), path, message: request.encode_to_vec(), show }
}

/// Fields whose values differ between two servers however alike their answers are.
const MASKED: [&str; 9] = [
    "cluster_id: ",
    "member_id: ",
    "raft_term: ",
    "hash: ",
    "leader: ",
    "db_size: ",
    "db_size_in_use: ",
    "raft_index: ",
    "raft_applied_index: ",
];

/// A response message as `M`'s Debug form, with what differs between two servers masked.
pub fn show<M: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
    let text = format!("{:?}", M::decode(bytes).expect("a response message"));
    let mut masked = String::new();
    let mut rest = text.as_str();
    while let Some(at) = MASKED.iter().filter_map(|field| rest.find(field).map(|i| i + field.len())).min() {
        masked.push_str(&rest[..at]);
        masked.push('X');
        rest = rest[at..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    masked + rest
}

/// Sends one call and reads its answers for up to a second: its status (code, message) if it
/// ended, and each response message shown.
pub async fn send(client: &SendRequest<Bytes>, authority: &str, call: &Call) -> String {
    let head = Request::post(format!("http://{authority}{}", call.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = client.clone().ready().await.expect("the connection stays open");
    let (response, mut body) = ready.send_request(head, false).expect("sends headers");
    let streaming = call.path.ends_with("/Watch");
    body.send_data(Bytes::from(frame_encoded(&call.message)), !streaming).expect("sends the message");
    let mut answer = String::new();
    let read = async {
        let response = response.await.expect("answered");
        // An error may come as headers alone (grpc-go's "trailers only"), or after them.
        let head = response.headers().clone();
        let mut received = response.into_body();
        let mut decoder = FrameDecoder::new(64 << 20);
        while let Some(data) = received.data().await {
            let data = data.expect("reads the answer");
            let _ = received.flow_control().release_capacity(data.len());
            decoder.push(&data);
            while let Some(message) = decoder.next_message().expect("whole messages") {
                answer.push_str(&format!("{}\n", (call.show)(&message)));
            }
        }
        let trailers = received.trailers().await.expect("trailers arrive").unwrap_or(head);
        let text = |name: &str| trailers.get(name).map_or("", |v| v.to_str().unwrap()).to_string();
        answer.push_str(&format!("status {} {:?}\n", text("grpc-status"), text("grpc-message")));
    };
    // A watch never ends by itself: what it sends at once is what it answers.
    let wait = if streaming { Duration::from_millis(500) } else { Duration::from_secs(10) };
    let _ = tokio::time::timeout(wait, read).await;
    answer
}

/// An HTTP/2 connection to `endpoint` (a URL or `host:port`), driven by a task on the
/// current runtime, and the authority it was made to.
pub async fn connect(endpoint: &str) -> (SendRequest<Bytes>, String) {
    let authority = endpoint.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    (client, authority)
}

/// Sends `calls` in order to a fresh etcd 3.4 and a fresh keel, side by side, and returns
/// every call whose answers differ, with both answers.
pub fn differences_from_etcd(calls: Vec<Call>) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let keel = Keel::single(&dir.path().join("keel"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (etcd_client, etcd_authority) = connect(&etcd.endpoint).await;
        let (keel_client, keel_authority) = connect(&keel.endpoint).await;
        let mut differences = Vec::new();
        for call in calls {
            let (from_etcd, from_keel) =
                tokio::join!(send(&etcd_client, &etcd_authority, &call), send(&keel_client, &keel_authority, &call));
            if from_etcd != from_keel {
                differences.push(format!("{}:\n--- etcd\n{from_etcd}--- keel\n{from_keel}", call.what));
            }
        }
        differences
    })
}
