//! etcd's JSON gateway: `POST /v3/...` with a request message in JSON, answered with the
//! response message in JSON — the gRPC calls themselves, translated at the edge (the JSON
//! mapping is pbjson's, generated in `keel-api`: original field names, 64-bit integers as
//! strings, bytes as base64). `/v3/watch` streams one `{"result": ...}` line per response.
//! Errors come back as grpc-gateway writes them: `{"error", "code", "message"}` with the
//! HTTP status of the gRPC code.

use std::convert::Infallible;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use keel_api::etcdserverpb as pb;
use keel_api::grpc::{Method, Status};
use keel_api::Code;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::actor::Input;
use super::grpc::{self, Shared};
use super::http::reply;

/// An HTTP/1.1 response body: whole or streamed.
pub type HttpBody = std::pin::Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = Infallible>>>;

/// Boxes a body as an [`HttpBody`] (bodies stay on the executor's thread: none need be `Send`).
pub fn boxed(body: impl hyper::body::Body<Data = Bytes, Error = Infallible> + 'static) -> HttpBody {
    Box::pin(body)
}

/// The HTTP status grpc-gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// One line of a streamed answer (watch, keep-alive, snapshot), as grpc-gateway writes it.
#[derive(Serialize)]
struct ResultLine<M: Serialize> {
    result: M,
}

/// `result` as one line of a streamed answer, newline included.
fn result_line(result: impl Serialize) -> String {
    let mut line = serde_json::to_string(&ResultLine { result }).expect("messages serialize");
    line.push('\n');
    line
}

fn json_error(status: &Status) -> Response<HttpBody> {
    let body = ErrorBody { error: &status.message, message: &status.message, code: status.code as i32 };
    let json = serde_json::to_string(&body).expect("serializes");
    reply(http_status(status.code), "application/json", json).map(boxed)
}

/// A unary call with JSON in and out.
async fn call<Req, Resp>(method: Method, body: &[u8], ctx: &Shared) -> Response<HttpBody>
where
    Req: Message + DeserializeOwned,
    Resp: Message + Default + Serialize,
{
    let request: Req = match serde_json::from_slice(if body.is_empty() { b"{}" } else { body }) {
        Ok(request) => request,
        Err(e) => return json_error(&Status::new(Code::InvalidArgument, e.to_string())),
    };
    let answer = grpc::unary(method, &request.encode_to_vec(), ctx, None).await.and_then(|bytes| {
        Resp::decode(bytes.as_slice()).map_err(|e| Status::new(Code::Internal, format!("undecodable answer: {e}")))
    });
    match answer {
        Ok(response) => {
            let json = serde_json::to_string(&response).expect("messages serialize");
            reply(StatusCode::OK, "application/json", json).map(boxed)
        }
        Err(status) => json_error(&status),
    }
}

/// `/v3/watch`: the request's watcher, its responses streamed as JSON lines until the client
/// goes away.
fn watch(body: &[u8], ctx: &Shared) -> Response<HttpBody> {
    let request: pb::WatchRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return json_error(&Status::new(Code::InvalidArgument, e.to_string())),
    };
    let stream = grpc::next_watch_stream();
    let (events_tx, mut events) = mpsc::unbounded();
    let node = ctx.node.clone();
    let opened = node.watch_input(Input::OpenWatchStream(stream, events_tx));
    let created = grpc::watch_input(stream, request).is_some_and(|input| node.watch_input(input));
    if !opened || !created {
        node.watch_input(Input::CloseWatchStream(stream));
        return json_error(&Status::new(Code::InvalidArgument, "a watch needs a create_request"));
    }
    // Each line carries the bytes its response counts against the stream, reported to the
    // node's watch hub once hyper takes the line (hyper takes no more while the client does
    // not read, and the hub then holds its events back).
    let (lines, body) = mpsc::unbounded::<(Bytes, usize)>();
    let forward = node.clone();
    glommio::spawn_local(async move {
        while let Some(r) = events.next().await {
            let result = grpc::watch_response(&r, &forward.header_info());
            if lines.unbounded_send((Bytes::from(result_line(result)), r.bytes)).is_err() {
                break;
            }
        }
        forward.watch_input(Input::CloseWatchStream(stream));
    })
    .detach();
    let taken = body.map(move |(line, bytes)| {
        node.watch_input(Input::WatchConsumed(stream, bytes));
        Ok::<_, Infallible>(Frame::data(line))
    });
    let mut response = Response::new(boxed(StreamBody::new(taken)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `/v3/lease/keepalive`: each JSON request in the body renews its lease, and its answer is
/// streamed as a `{"result": ...}` line, as etcd's gateway streams the keep-alive stream (a
/// body of one request gets one line); an unknown lease answers TTL 0.
async fn keep_alive(body: &[u8], ctx: &Shared) -> Response<HttpBody> {
    let mut lines = String::new();
    for request in serde_json::Deserializer::from_slice(body).into_iter::<pb::LeaseKeepAliveRequest>() {
        let request = match request {
            Ok(request) => request,
            Err(e) => return json_error(&Status::new(Code::InvalidArgument, e.to_string())),
        };
        match grpc::renew(&ctx.node, request.id).await {
            Ok(result) => lines.push_str(&result_line(result)),
            Err(status) => return json_error(&status),
        }
    }
    reply(StatusCode::OK, "application/json", lines).map(boxed)
}

/// `/v3/maintenance/snapshot`: the store's image streamed as `{"result": ...}` lines of
/// SnapshotResponse, as etcd's gateway streams the snapshot.
async fn snapshot(ctx: &Shared) -> Response<HttpBody> {
    match grpc::snapshot_messages(&ctx.node).await {
        Ok(messages) => {
            let lines: String = messages.into_iter().map(result_line).collect();
            reply(StatusCode::OK, "application/json", lines).map(boxed)
        }
        Err(status) => json_error(&status),
    }
}

/// The routes of etcd 3.4's gateway, under `/v3/` and the `/v3beta/` it still answers
/// (HashKV has none there).
fn route(path: &str) -> Option<&str> {
    path.strip_prefix("/v3/").or_else(|| path.strip_prefix("/v3beta/"))
}

/// Whether `path` is one of the gateway's routes (all of them take POST only).
pub fn serves(path: &str) -> bool {
    route(path).is_some_and(|r| ROUTES.contains(&r))
}

const ROUTES: [&str; 21] = [
    "kv/range",
    "kv/put",
    "kv/deleterange",
    "kv/txn",
    "kv/compaction",
    "watch",
    "lease/grant",
    "lease/revoke",
    "kv/lease/revoke",
    "lease/keepalive",
    "lease/timetolive",
    "kv/lease/timetolive",
    "lease/leases",
    "kv/lease/leases",
    "cluster/member/list",
    "maintenance/status",
    "maintenance/alarm",
    "maintenance/defragment",
    "maintenance/hash",
    "maintenance/snapshot",
    "maintenance/transfer-leadership",
];

/// Serves `POST path` with a JSON `body`; a path that is no route is answered as etcd's
/// gateway answers it.
pub async fn handle(path: &str, body: &[u8], ctx: &Shared) -> Response<HttpBody> {
    match route(path).filter(|r| ROUTES.contains(r)).unwrap_or("") {
        "kv/range" => call::<pb::RangeRequest, pb::RangeResponse>(Method::Range, body, ctx).await,
        "kv/put" => call::<pb::PutRequest, pb::PutResponse>(Method::Put, body, ctx).await,
        "kv/deleterange" => {
            call::<pb::DeleteRangeRequest, pb::DeleteRangeResponse>(Method::DeleteRange, body, ctx).await
        }
        "kv/txn" => call::<pb::TxnRequest, pb::TxnResponse>(Method::Txn, body, ctx).await,
        "kv/compaction" => call::<pb::CompactionRequest, pb::CompactionResponse>(Method::Compact, body, ctx).await,
        "watch" => watch(body, ctx),
        "lease/grant" => call::<pb::LeaseGrantRequest, pb::LeaseGrantResponse>(Method::LeaseGrant, body, ctx).await,
        "lease/revoke" | "kv/lease/revoke" => {
            call::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(Method::LeaseRevoke, body, ctx).await
        }
        "lease/keepalive" => keep_alive(body, ctx).await,
        "lease/timetolive" | "kv/lease/timetolive" => {
            call::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>(Method::LeaseTimeToLive, body, ctx).await
        }
        "lease/leases" | "kv/lease/leases" => {
            call::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(Method::LeaseLeases, body, ctx).await
        }
        "cluster/member/list" => {
            call::<pb::MemberListRequest, pb::MemberListResponse>(Method::MemberList, body, ctx).await
        }
        "maintenance/status" => call::<pb::StatusRequest, pb::StatusResponse>(Method::Status, body, ctx).await,
        "maintenance/alarm" => call::<pb::AlarmRequest, pb::AlarmResponse>(Method::Alarm, body, ctx).await,
        "maintenance/defragment" => {
            call::<pb::DefragmentRequest, pb::DefragmentResponse>(Method::Defragment, body, ctx).await
        }
        "maintenance/hash" => call::<pb::HashRequest, pb::HashResponse>(Method::Hash, body, ctx).await,
        "maintenance/snapshot" => snapshot(ctx).await,
        "maintenance/transfer-leadership" => {
            call::<pb::MoveLeaderRequest, pb::MoveLeaderResponse>(Method::MoveLeader, body, ctx).await
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "Not Found\n").map(boxed),
    }
}
