//! The node actor: the one task that owns the [`Node`], fed through a channel by the gRPC
//! handlers and the ticker. Everything queued when it wakes is handled before one `process`,
//! so concurrent requests share one WAL write and one fdatasync.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use keel_api::EtcdError;
use keel_raft::Message;
use keel_storage::rocks::RocksBackend;

use super::disk::FsDisk;
use crate::service::HeaderInfo;
use crate::{Clock, Node, NodeError, Reply, Request, Status, WatchCreate, WatchResponse};

/// Monotonic milliseconds since the process started.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(pub Instant);

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// What the actor is fed.
pub enum Input {
    /// A client request and where to send its answer.
    Call(Request, oneshot::Sender<Result<Reply, EtcdError>>),
    /// Raft and store status, with the store's size in bytes.
    Status(oneshot::Sender<(Status, u64)>),
    /// The store's hash at a revision (0: current): hash, compaction revision, revision.
    HashKv(i64, oneshot::Sender<Result<(u32, i64, i64), EtcdError>>),
    /// A watch stream opened: where its responses go.
    OpenWatchStream(u64, mpsc::UnboundedSender<WatchResponse>),
    /// Create a watcher on a stream.
    Watch(u64, WatchCreate),
    /// Cancel a watcher.
    CancelWatch(i64),
    /// A watch stream closed: drop its watchers.
    CloseWatchStream(u64),
    /// One Raft tick.
    Tick,
    /// Stop: everything acknowledged is already durable, so the actor just returns.
    Stop,
}

/// How the gRPC handlers reach the actor.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::UnboundedSender<Input>,
    info: Rc<Cell<HeaderInfo>>,
}

impl NodeHandle {
    /// Sends a request and waits for its answer.
    pub async fn call(&self, request: Request) -> Result<Reply, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(Input::Call(request, tx)).map_err(|_| EtcdError::Stopped)?;
        rx.await.unwrap_or(Err(EtcdError::Stopped))
    }

    /// The node's Raft and store status, with the store's size in bytes.
    pub async fn status(&self) -> Result<(Status, u64), EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(Input::Status(tx)).map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)
    }

    /// The store's hash at `revision` (0: current): hash, compaction revision, revision.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(Input::HashKv(revision, tx)).map_err(|_| EtcdError::Stopped)?;
        rx.await.unwrap_or(Err(EtcdError::Stopped))
    }

    /// What response headers carry now.
    pub fn header_info(&self) -> HeaderInfo {
        self.info.get()
    }

    /// Sends a watch-stream input; false once the actor is gone.
    pub fn watch_input(&self, input: Input) -> bool {
        self.tx.unbounded_send(input).is_ok()
    }

    /// Queues a tick; false once the actor is gone.
    pub fn tick(&self) -> bool {
        self.tx.unbounded_send(Input::Tick).is_ok()
    }

    /// Asks the actor to stop.
    pub fn stop(&self) {
        let _ = self.tx.unbounded_send(Input::Stop);
    }
}

/// A single member sends nothing to peers; a message here means a multi-member
/// configuration this build cannot serve.
struct NoPeers;

impl keel_net::Transport for NoPeers {
    fn send(&mut self, msg: Message) {
        tracing::error!(to = msg.to, "no transport to peers; message dropped");
    }
}

/// Starts the actor's channel; run [`run`] with the receiver.
pub fn channel(info: HeaderInfo) -> (NodeHandle, mpsc::UnboundedReceiver<Input>) {
    let (tx, rx) = mpsc::unbounded();
    (NodeHandle { tx, info: Rc::new(Cell::new(info)) }, rx)
}

fn hash_kv(node: &Node<FsDisk, RocksBackend>, revision: i64) -> Result<(u32, i64, i64), EtcdError> {
    use keel_storage::mvcc::MvccError;
    node.store().hash_kv(revision).map_err(|e| match e {
        MvccError::Compacted => EtcdError::Compacted,
        MvccError::FutureRev => EtcdError::FutureRev,
        other => {
            tracing::error!("hashing the store failed: {other}");
            EtcdError::Stopped
        }
    })
}

/// Runs the node until its inputs close or it fails.
pub async fn run(
    mut node: Node<FsDisk, RocksBackend>,
    handle: NodeHandle,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    clock: SystemClock,
) -> Result<(), NodeError> {
    let mut waiting: BTreeMap<u64, oneshot::Sender<Result<Reply, EtcdError>>> = BTreeMap::new();
    let mut watch_streams: BTreeMap<u64, mpsc::UnboundedSender<WatchResponse>> = BTreeMap::new();
    let mut next_token = 0u64;
    while let Some(first) = inputs.next().await {
        let mut input = Some(first);
        while let Some(next) = input.take() {
            match next {
                Input::Call(request, reply_to) => {
                    next_token += 1;
                    waiting.insert(next_token, reply_to);
                    node.request(next_token, request, clock.now_ms());
                }
                Input::Status(reply_to) => {
                    let size = keel_storage::backend::Backend::size_bytes(node.store().backend());
                    let _ = reply_to.send((node.status(), size));
                }
                Input::HashKv(revision, reply_to) => {
                    let _ = reply_to.send(hash_kv(&node, revision));
                }
                Input::OpenWatchStream(stream, to) => {
                    watch_streams.insert(stream, to);
                }
                Input::Watch(stream, spec) => {
                    node.watch(stream, spec)?;
                }
                Input::CancelWatch(watch_id) => {
                    node.cancel_watch(watch_id);
                }
                Input::CloseWatchStream(stream) => {
                    watch_streams.remove(&stream);
                    node.close_watch_stream(stream);
                }
                Input::Tick => node.tick(clock.now_ms()),
                Input::Stop => {
                    for (_, reply_to) in std::mem::take(&mut waiting) {
                        let _ = reply_to.send(Err(EtcdError::Stopped));
                    }
                    return Ok(());
                }
            }
            input = inputs.try_recv().ok();
        }
        node.process(&mut NoPeers, clock.now_ms()).await?;
        let output = node.take_output();
        for (token, result) in output.replies {
            if let Some(reply_to) = waiting.remove(&token) {
                let _ = reply_to.send(result);
            }
        }
        for response in output.watch {
            if let Some(to) = watch_streams.get(&response.stream) {
                let _ = to.unbounded_send(response);
            }
        }
        let info = handle.info.get();
        handle.info.set(HeaderInfo { raft_term: node.status().term, ..info });
    }
    Ok(())
}
