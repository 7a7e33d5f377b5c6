//! The gRPC endpoint: HTTP/2 requests to etcd's RPC paths, answered with gRPC framing and
//! status trailers.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::stream::LocalBoxStream;
use futures::{SinkExt, Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use keel_api::etcdserverpb as pb;
use keel_api::grpc::{decode, frame_encoded, FrameDecoder, Method, Status, Streaming};
use keel_api::{Code, EtcdError};
use prost::Message;
use sha2::{Digest, Sha256};

use super::actor::{self, NodeHandle};
use super::members::Members;
use super::metrics::{HandledLabels, MessageCounters, Metrics, RpcLabels};
use crate::service;

/// The most messages a streamed call's producer may have queued for its client: a client that
/// does not read stops the producer (and so the reading of its requests), and HTTP/2 flow
/// control stops the client.
const STREAM_QUEUE: usize = 16;

/// What a streaming call's producer sends to its response body.
enum StreamItem {
    /// One framed message.
    Message(Bytes),
    /// The call is over, with this status.
    End(Status),
}

/// A gRPC response body: one message (unary) or a stream of them, then the status trailers.
/// A stream whose client's deadline (`grpc-timeout`) passes ends then with DEADLINE_EXCEEDED,
/// as grpc-go ends it.
pub struct GrpcBody {
    message: Option<Bytes>,
    stream: Option<LocalBoxStream<'static, StreamItem>>,
    deadline: Option<glommio::timer::Timer>,
    trailers: Option<HeaderMap>,
    /// Run when hyper is done with the body: the call is over (answered, or its client gone).
    on_close: Option<Box<dyn FnOnce()>>,
}

impl Drop for GrpcBody {
    fn drop(&mut self) {
        if let Some(close) = self.on_close.take() {
            close();
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.stream.is_some() {
            let past_deadline = self.deadline.as_mut().is_some_and(|timer| Pin::new(timer).poll(cx).is_ready());
            let status = if past_deadline {
                Status::from(&EtcdError::DeadlineExceeded)
            } else {
                match ready!(self.stream.as_mut().expect("checked").poll_next_unpin(cx)) {
                    Some(StreamItem::Message(message)) => return Poll::Ready(Some(Ok(Frame::data(message)))),
                    Some(StreamItem::End(status)) => status,
                    None => Status::ok(),
                }
            };
            self.stream = None;
            self.trailers = Some(trailers(&status));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.stream.is_none() && self.trailers.is_none()
    }
}

/// The trailers that end a call with `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from_static(status.code_header()));
    if !status.message.is_empty() {
        let message = HeaderValue::from_str(&status.message_header()).expect("percent-encoded ASCII");
        headers.insert("grpc-message", message);
    }
    headers
}

fn response(body: GrpcBody) -> Response<GrpcBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A failed call: no message, then the status trailers.
fn failure(status: Status) -> Response<GrpcBody> {
    response(GrpcBody {
        message: None,
        stream: None,
        deadline: None,
        trailers: Some(trailers(&status)),
        on_close: None,
    })
}

fn success(message: Vec<u8>) -> Response<GrpcBody> {
    let message = Some(Bytes::from(frame_encoded(&message)));
    response(GrpcBody {
        message,
        stream: None,
        deadline: None,
        trailers: Some(trailers(&Status::ok())),
        on_close: None,
    })
}

/// A streamed answer: the messages `stream` yields, until it ends or `timeout` passes.
fn streamed(stream: impl Stream<Item = StreamItem> + 'static, timeout: Option<Duration>) -> GrpcBody {
    let deadline = timeout.map(glommio::timer::Timer::new);
    GrpcBody { message: None, stream: Some(stream.boxed_local()), deadline, trailers: None, on_close: None }
}

/// The messages of a request body, decoded as they arrive.
struct RequestStream {
    body: Incoming,
    decoder: FrameDecoder,
}

impl RequestStream {
    fn new(body: Incoming, max_message: usize) -> RequestStream {
        RequestStream { body, decoder: FrameDecoder::new(max_message) }
    }

    /// The next request message, decoded; None once the client has finished sending.
    async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, Status> {
        match self.next_encoded().await? {
            Some(message) => decode(&message).map(Some),
            None => Ok(None),
        }
    }

    /// Lets the rest of the request arrive after the call is answered. A client may end its
    /// request in a frame of its own after the message (tonic and grpc-go do), and a stream
    /// dropped before that end is reset by h2, which counts the reset as a local error and
    /// closes the connection at the 1024th (GOAWAY `too_many_internal_resets`).
    fn finish_in_background(self) {
        let mut body = self.body;
        if body.is_end_stream() {
            return;
        }
        glommio::spawn_local(async move { while let Some(Ok(_)) = body.frame().await {} }).detach();
    }

    /// The next request message's bytes; None once the client has finished sending.
    async fn next_encoded(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                // A message begun and never finished: grpc-go's words for it.
                None if self.decoder.pending() > 0 => return Err(Status::new(Code::Unknown, "unexpected EOF")),
                None => return Ok(None),
                Some(Err(e)) => return Err(Status::new(Code::Internal, format!("reading the request: {e}"))),
                // Trailers from the client carry nothing for us.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }
}

/// The etcd server version Keel answers as (the release its answers are compared with);
/// clients gate features on it.
pub const SERVER_VERSION: &str = "3.4.23";

/// The cluster version, as etcd reports it: the servers' major and minor version.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// Cluster and maintenance calls the member answers from its own state; None for calls not
/// served yet.
async fn member_call(
    method: Method,
    message: &[u8],
    node: &NodeHandle,
    members: &Members,
    timeout: Option<Duration>,
) -> Option<Result<Vec<u8>, Status>> {
    let info = node.header_info();
    let answer = match method {
        Method::MemberList => match decode::<pb::MemberListRequest>(message) {
            Err(status) => Err(status),
            Ok(_) => match node.status().await {
                Ok(s) => {
                    let members = members.list(&s.conf_state, &s.published);
                    Ok(pb::MemberListResponse { header: Some(info.header(0)), members }.encode_to_vec())
                }
                Err(e) => Err(Status::from(&e)),
            },
        },
        // Keel has no users or roles yet (authentication is not implemented): the lists are
        // empty, as etcd's are before any user is added.
        Method::UserList => decode::<pb::AuthUserListRequest>(message)
            .map(|_| pb::AuthUserListResponse { header: Some(info.current()), users: Vec::new() }.encode_to_vec()),
        Method::RoleList => decode::<pb::AuthRoleListRequest>(message)
            .map(|_| pb::AuthRoleListResponse { header: Some(info.current()), roles: Vec::new() }.encode_to_vec()),
        Method::AuthStatus => decode::<pb::AuthStatusRequest>(message).map(|_| {
            pb::AuthStatusResponse { header: Some(info.header(0)), enabled: false, auth_revision: 0 }.encode_to_vec()
        }),
        Method::Status => match decode::<pb::StatusRequest>(message) {
            Err(status) => Err(status),
            Ok(_) => match node.status().await {
                Ok(s) => Ok(pb::StatusResponse {
                    header: Some(info.header(s.raft.revision)),
                    version: SERVER_VERSION.to_string(),
                    db_size: s.db_size as i64,
                    leader: s.raft.leader,
                    raft_index: s.raft.commit,
                    raft_term: s.raft.term,
                    raft_applied_index: s.raft.applied,
                    errors: Vec::new(),
                    db_size_in_use: s.db_size as i64,
                    is_learner: s.conf_state.learners.contains(&info.member_id),
                }
                .encode_to_vec()),
                Err(e) => Err(Status::from(&e)),
            },
        },
        // etcd 3.4 answers Defragment and MoveLeader without a response header.
        Method::Defragment => match decode::<pb::DefragmentRequest>(message) {
            Err(status) => Err(status),
            Ok(_) => match node.ask(actor::Input::Defragment).await {
                Ok(()) => Ok(pb::DefragmentResponse { header: None }.encode_to_vec()),
                Err(e) => Err(Status::from(&e)),
            },
        },
        Method::MoveLeader => match decode::<pb::MoveLeaderRequest>(message) {
            Err(status) => Err(status),
            Ok(req) => match node.ask(|tx| actor::Input::MoveLeader(req.target_id, timeout, tx)).await {
                Ok(()) => Ok(pb::MoveLeaderResponse { header: None }.encode_to_vec()),
                Err(e) => Err(Status::from(&e)),
            },
        },
        Method::Hash => match decode::<pb::HashRequest>(message) {
            Err(status) => Err(status),
            Ok(_) => match node.ask(actor::Input::Hash).await {
                Ok((hash, revision)) => {
                    Ok(pb::HashResponse { header: Some(info.header(revision)), hash }.encode_to_vec())
                }
                Err(e) => Err(Status::from(&e)),
            },
        },
        Method::HashKv => match decode::<pb::HashKvRequest>(message) {
            Err(status) => Err(status),
            Ok(req) => match node.hash_kv(req.revision).await {
                Ok((hash, compact_revision, revision)) => {
                    Ok(pb::HashKvResponse { header: Some(info.header(revision)), hash, compact_revision }
                        .encode_to_vec())
                }
                Err(e) => Err(Status::from(&e)),
            },
        },
        _ => return None,
    };
    Some(answer)
}

/// Renews lease `id`: etcd's answer to one keep-alive request, TTL 0 for a lease unknown or
/// expired.
pub async fn renew(node: &NodeHandle, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let info = node.header_info();
    match node.call(crate::Request::LeaseKeepAlive { id }, None).await {
        Ok(reply) => match reply.response {
            crate::Response::LeaseKeepAlive { id, ttl } => {
                Ok(pb::LeaseKeepAliveResponse { header: Some(info.header(reply.revision)), id, ttl })
            }
            other => Err(Status::new(Code::Internal, format!("a keep-alive answered {other:?}"))),
        },
        Err(EtcdError::LeaseNotFound) => Ok(pb::LeaseKeepAliveResponse { header: Some(info.current()), id, ttl: 0 }),
        Err(e) => Err(Status::from(&e)),
    }
}

/// Lease.LeaseKeepAlive: each request renews its lease and is answered on the stream; an
/// unknown or expired lease answers TTL 0, as etcd does.
fn keep_alive(body: Incoming, ctx: &Shared, timeout: Option<Duration>) -> Response<GrpcBody> {
    let (node, max_message) = (ctx.node.clone(), max_message(ctx.max_request));
    let messages = ctx.metrics.messages(&rpc_labels(Method::LeaseKeepAlive));
    let (mut tx, rx) = mpsc::channel(STREAM_QUEUE);
    glommio::spawn_local(async move {
        let mut requests = RequestStream::new(body, max_message);
        let end = loop {
            let request = match requests.next::<pb::LeaseKeepAliveRequest>().await {
                Ok(Some(request)) => request,
                Ok(None) => break Status::ok(),
                Err(status) => break status,
            };
            messages.received.inc();
            match renew(&node, request.id).await {
                Ok(response) => {
                    let bytes = response.encode_to_vec();
                    // Waits while the client is not reading; no further request is read meanwhile.
                    if tx.send(StreamItem::Message(Bytes::from(frame_encoded(&bytes)))).await.is_err() {
                        return; // the client went away
                    }
                    messages.sent.inc();
                }
                Err(status) => break status,
            }
        };
        let _ = tx.send(StreamItem::End(end)).await;
    })
    .detach();
    response(streamed(rx, timeout))
}

/// Bytes per Snapshot response message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Snapshot images are padded with zeros to a multiple of this (etcd's database page size;
/// etcdctl checks that what precedes the digest is whole pages).
const SNAPSHOT_PAGE: usize = 512;

/// The messages of a snapshot: the store's image, zero-padded to whole pages, in chunks,
/// then its SHA-256 digest as the last 32 bytes, as etcd appends it for `snapshot restore`
/// to verify.
pub async fn snapshot_messages(node: &NodeHandle) -> Result<Vec<pb::SnapshotResponse>, Status> {
    let mut image = node.ask(actor::Input::Snapshot).await.map_err(|e| Status::from(&e))?;
    image.resize(image.len().next_multiple_of(SNAPSHOT_PAGE), 0);
    let digest = Sha256::digest(&image);
    image.extend_from_slice(&digest);
    let header = Some(node.header_info().header(0));
    let mut remaining = image.len();
    Ok(image
        .chunks(SNAPSHOT_CHUNK)
        .map(|chunk| {
            remaining -= chunk.len();
            pb::SnapshotResponse { header, remaining_bytes: remaining as u64, blob: chunk.to_vec() }
        })
        .collect())
}

/// Maintenance.Snapshot: [`snapshot_messages`] as a stream.
fn snapshot(node: NodeHandle, timeout: Option<Duration>) -> Response<GrpcBody> {
    let (mut tx, rx) = mpsc::channel(STREAM_QUEUE);
    glommio::spawn_local(async move {
        let end = match snapshot_messages(&node).await {
            Ok(messages) => {
                for message in messages {
                    let framed = Bytes::from(frame_encoded(&message.encode_to_vec()));
                    if tx.send(StreamItem::Message(framed)).await.is_err() {
                        return; // the client went away
                    }
                }
                Status::ok()
            }
            Err(status) => status,
        };
        let _ = tx.send(StreamItem::End(end)).await;
    })
    .detach();
    response(streamed(rx, timeout))
}

/// Watch streams of this process get distinct ids.
static NEXT_WATCH_STREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A watch hub response as etcd's message.
pub fn watch_response(r: &crate::WatchResponse, info: &service::HeaderInfo) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(info.header(r.revision)),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason.clone(),
        fragment: false,
        events: r.events.iter().map(service::recode).collect(),
    }
}

/// Splits a response larger than `max_bytes` into fragments, as etcd does for watchers
/// that asked for it: each fragment as many whole events as fit (at least one), all but
/// the last marked `fragment`.
fn fragments(response: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let mut pieces = Vec::new();
    let mut piece = pb::WatchResponse { events: Vec::new(), fragment: true, ..response.clone() };
    for event in response.events {
        piece.events.push(event);
        if piece.events.len() > 1 && piece.encoded_len() >= max_bytes {
            let overflow = piece.events.pop().expect("just pushed");
            let full = std::mem::replace(&mut piece.events, vec![overflow]);
            pieces.push(pb::WatchResponse { events: full, ..piece.clone() });
        }
    }
    piece.fragment = false;
    pieces.push(piece);
    pieces
}

/// What a watch request asks of the actor, for watch stream `stream`.
pub fn watch_input(stream: u64, request: pb::WatchRequest) -> Option<actor::Input> {
    use pb::watch_create_request::FilterType;
    Some(match request.request_union? {
        pb::watch_request::RequestUnion::CreateRequest(c) => {
            let filters = |f: FilterType| c.filters.contains(&(f as i32));
            let spec = crate::WatchCreate {
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                key: c.key,
                range_end: c.range_end,
                start_revision: c.start_revision,
                prev_kv: c.prev_kv,
                watch_id: c.watch_id,
                progress_notify: c.progress_notify,
                fragment: c.fragment,
            };
            actor::Input::Watch(stream, spec)
        }
        pb::watch_request::RequestUnion::CancelRequest(c) => actor::Input::CancelWatch(stream, c.watch_id),
        pb::watch_request::RequestUnion::ProgressRequest(_) => actor::Input::WatchProgress(stream),
    })
}

/// A new watch stream id, distinct within the process.
pub fn next_watch_stream() -> u64 {
    NEXT_WATCH_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Bytes of a watch stream's responses on their way to its client, shared by the tasks that
/// serve the stream. The node core stops sending the stream events once its client has
/// `limit` bytes or more to take (counting the same bytes); the request reader waits then
/// too, so a client that does not read cannot make the member read its requests either.
struct Backlog {
    bytes: Cell<usize>,
    limit: usize,
    reader: Cell<Option<Waker>>,
}

impl Backlog {
    /// An empty backlog of a stream that is full at `limit` bytes.
    fn new(limit: usize) -> Rc<Backlog> {
        Rc::new(Backlog { bytes: Cell::new(0), limit, reader: Cell::new(None) })
    }

    /// `bytes` more are on their way.
    fn add(&self, bytes: usize) {
        self.bytes.set(self.bytes.get() + bytes);
    }

    /// The client took `bytes`; a reader waiting for room goes on if there is some now.
    fn take(&self, bytes: usize) {
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
        if self.bytes.get() < self.limit {
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
    }

    /// Waits until the stream is not full.
    async fn room(&self) {
        std::future::poll_fn(|cx| {
            if self.bytes.get() < self.limit {
                return Poll::Ready(());
            }
            self.reader.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// Watch.Watch: one bidirectional stream multiplexing watchers. Requests create and cancel
/// watchers; the node's watch hub feeds events, in order, into the response stream. Each
/// response the client takes is reported to the hub (which holds back events, and later
/// catches the watchers up from the store, while the client has too much to take).
fn watch(body: Incoming, ctx: &Shared, timeout: Option<Duration>) -> Response<GrpcBody> {
    let (node, max_request) = (ctx.node.clone(), ctx.max_request);
    let MessageCounters { received, sent } = ctx.metrics.messages(&rpc_labels(Method::Watch));
    let stream = next_watch_stream();
    let (tx, rx) = mpsc::unbounded::<(StreamItem, usize)>();
    let (events_tx, mut events) = mpsc::unbounded::<crate::WatchResponse>();
    if !node.watch_input(actor::Input::OpenWatchStream(stream, events_tx)) {
        return failure(Status::from(&EtcdError::Stopped));
    }
    let backlog = Backlog::new(ctx.watch_stream_bytes);
    let (forward, forward_node, forward_backlog) = (tx.clone(), node.clone(), backlog.clone());
    glommio::spawn_local(async move {
        while let Some(r) = events.next().await {
            forward_backlog.add(r.bytes);
            let response = watch_response(&r, &forward_node.header_info());
            let mut pieces = if r.fragment { fragments(response, max_request) } else { vec![response] };
            let last = pieces.pop().expect("a response is at least one piece");
            let credits = pieces.into_iter().map(|p| (p, 0)).chain([(last, r.bytes)]);
            for (piece, credit) in credits {
                let framed = Bytes::from(frame_encoded(&piece.encode_to_vec()));
                if forward.unbounded_send((StreamItem::Message(framed), credit)).is_err() {
                    return;
                }
            }
        }
    })
    .detach();
    let (reader_node, reader_backlog) = (node.clone(), backlog.clone());
    glommio::spawn_local(async move {
        let mut requests = RequestStream::new(body, max_message(max_request));
        let end = loop {
            reader_backlog.room().await;
            let request = match requests.next::<pb::WatchRequest>().await {
                Ok(Some(request)) => request,
                // The client sent its last request: its watchers go on until it leaves (or its
                // deadline passes), as on etcd.
                Ok(None) => return,
                Err(status) => break status,
            };
            received.inc();
            let Some(input) = watch_input(stream, request) else { continue };
            if !reader_node.watch_input(input) {
                break Status::from(&EtcdError::Stopped);
            }
        };
        let _ = tx.unbounded_send((StreamItem::End(end), 0));
    })
    .detach();
    let taken_node = node.clone();
    let taken = rx.map(move |(item, credit)| {
        if matches!(item, StreamItem::Message(_)) {
            sent.inc();
        }
        if credit > 0 {
            backlog.take(credit);
            taken_node.watch_input(actor::Input::WatchConsumed(stream, credit));
        }
        item
    });
    let mut body = streamed(taken, timeout);
    body.on_close = Some(Box::new(move || {
        node.watch_input(actor::Input::CloseWatchStream(stream));
    }));
    response(body)
}

/// The largest gRPC message read: a request of `max_request` bytes and room for the
/// envelope around it (etcd's server allows the same headroom).
fn max_message(max_request: usize) -> usize {
    max_request + 512 * 1024
}

/// What every request handler of one executor shares.
pub struct Shared {
    /// The node actor.
    pub node: NodeHandle,
    /// The member directory.
    pub members: Rc<Members>,
    /// The member's metrics.
    pub metrics: Rc<Metrics>,
    /// Largest request accepted (`--max-request-bytes`).
    pub max_request: usize,
    /// Bytes of responses a watch stream may have on their way before it is full (the node
    /// core's bound).
    pub watch_stream_bytes: usize,
}

/// The labels of `method` (path `/package.Service/Method`).
fn rpc_labels(method: Method) -> RpcLabels {
    let (service, name) = method.path().trim_start_matches('/').split_once('/').expect("paths are /service/method");
    let grpc_type = match method.streaming() {
        Streaming::Unary => "unary",
        Streaming::Server => "server_stream",
        _ => "bidi_stream",
    };
    RpcLabels { grpc_type, grpc_service: service, grpc_method: name }
}

/// A request whose `grpc-timeout` does not parse: grpc-go resets its stream (hyper resets it
/// with INTERNAL_ERROR when the service fails, as grpc-go does for this error).
#[derive(Debug, thiserror::Error)]
#[error("malformed grpc-timeout: {0}")]
pub struct MalformedTimeout(String);

/// grpc-go's answer to a path that names no RPC: a malformed name, an unknown service, or a
/// method its service lacks.
fn unknown_method(path: &str) -> Status {
    let Some((service, name)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Status::new(Code::ResourceExhausted, format!("malformed method name: {path:?}"));
    };
    let known_service =
        Method::ALL.iter().any(|m| m.path().strip_prefix('/').is_some_and(|p| p.starts_with(&format!("{service}/"))));
    if known_service {
        Status::new(Code::Unimplemented, format!("unknown method {name} for service {service}"))
    } else {
        Status::new(Code::Unimplemented, format!("unknown service {service}"))
    }
}

/// How long the client of `request` waits for its answer, if it says.
fn client_timeout(request: &Request<Incoming>) -> Result<Option<Duration>, MalformedTimeout> {
    let Some(value) = request.headers().get("grpc-timeout") else { return Ok(None) };
    let text = value.to_str().map_err(|e| MalformedTimeout(e.to_string()))?;
    keel_api::grpc::parse_timeout(text).map(Some).map_err(MalformedTimeout)
}

/// Serves one HTTP/2 request.
pub async fn handle(request: Request<Incoming>, ctx: Rc<Shared>) -> Result<Response<GrpcBody>, MalformedTimeout> {
    let max_message = max_message(ctx.max_request);
    let timeout = client_timeout(&request)?;
    let Some(method) = Method::from_path(request.uri().path()) else {
        let status = unknown_method(request.uri().path());
        RequestStream::new(request.into_body(), max_message).finish_in_background();
        return Ok(failure(status));
    };
    let node = ctx.node.clone();
    // The bidirectional streams read their requests to the end themselves.
    match method {
        Method::LeaseKeepAlive => return Ok(keep_alive(request.into_body(), &ctx, timeout)),
        Method::Watch => return Ok(watch(request.into_body(), &ctx, timeout)),
        _ => {}
    }
    let mut requests = RequestStream::new(request.into_body(), max_message);
    let response = match method {
        Method::Snapshot => snapshot(node, timeout),
        method if method.streaming() != Streaming::Unary => {
            failure(Status::new(Code::Unimplemented, format!("{} is not supported yet", method.path())))
        }
        method => answer_unary(method, &mut requests, &ctx, timeout).await,
    };
    requests.finish_in_background();
    Ok(response)
}

/// Reads a unary call's request message and answers it within `timeout`, recording the call
/// in the metrics.
async fn answer_unary(
    method: Method,
    requests: &mut RequestStream,
    ctx: &Shared,
    timeout: Option<Duration>,
) -> Response<GrpcBody> {
    let started = std::time::Instant::now();
    let answer = match requests.next_encoded().await {
        Ok(Some(message)) => unary(method, &message, ctx, timeout).await,
        // grpc-go's words for a unary call that ended before its message.
        Ok(None) => Err(Status::new(Code::Unknown, "EOF")),
        Err(status) => Err(status),
    };
    let labels = rpc_labels(method);
    ctx.metrics.handling_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    let messages = ctx.metrics.messages(&labels);
    messages.received.inc();
    if answer.is_ok() {
        messages.sent.inc();
    }
    let code = answer.as_ref().err().map_or(Code::Ok, |status| status.code);
    let handled = HandledLabels {
        grpc_type: labels.grpc_type,
        grpc_service: labels.grpc_service,
        grpc_method: labels.grpc_method,
        grpc_code: code.name(),
    };
    ctx.metrics.handled.get_or_create(&handled).inc();
    match answer {
        Ok(message) => success(message),
        Err(status) => failure(status),
    }
}

/// Answers a unary call of `method` whose request message is `message`, within `timeout`.
pub async fn unary(method: Method, message: &[u8], ctx: &Shared, timeout: Option<Duration>) -> Result<Vec<u8>, Status> {
    let node = &ctx.node;
    let request = match service::unary_request(method, message) {
        Some(request) => request?,
        None => {
            return member_call(method, message, node, &ctx.members, timeout).await.unwrap_or_else(|| {
                Err(Status::new(Code::Unimplemented, format!("{} is not supported yet", method.path())))
            })
        }
    };
    let time_to_live_of = match request {
        crate::Request::LeaseTimeToLive { id, .. } => Some(id),
        _ => None,
    };
    match (node.call(request, timeout).await, time_to_live_of) {
        (Ok(reply), _) => service::unary_response(&reply, &node.header_info()),
        // etcd answers TTL -1 for a lease that does not exist (etcdctl: "already expired").
        (Err(EtcdError::LeaseNotFound), Some(id)) => {
            let header = Some(node.header_info().current());
            Ok(pb::LeaseTimeToLiveResponse { header, id, ttl: -1, ..Default::default() }.encode_to_vec())
        }
        (Err(e), _) => Err(Status::from(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_api::mvccpb;

    #[test]
    fn large_watch_responses_split_into_fragments_of_whole_events() {
        let event = |i: u8| mvccpb::Event {
            kv: Some(mvccpb::KeyValue { key: vec![i], value: vec![i; 100], ..Default::default() }),
            ..Default::default()
        };
        let response = pb::WatchResponse { watch_id: 3, events: (0..10).map(event).collect(), ..Default::default() };
        assert_eq!(fragments(response.clone(), 10_000), vec![response.clone()], "small enough");
        let pieces = fragments(response.clone(), 350);
        assert!(pieces.len() > 2);
        assert!(pieces.iter().all(|p| p.encoded_len() < 350 || p.events.len() == 1));
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.fragment) && !pieces.last().unwrap().fragment);
        let events: Vec<mvccpb::Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(events, response.events);
    }
}
