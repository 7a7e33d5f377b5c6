//! The node actor: the one task that owns the [`Node`], fed through a channel by the gRPC
//! handlers, the peer listener and the ticker. Everything queued is handled before the next
//! Raft ready, so concurrent requests share one WAL write; while its fdatasync runs on the
//! disk's thread, the actor takes new requests and starts the readies after it (several in
//! flight, made durable in order), and applies and answers the entries committed before (a
//! pipeline: intake, disk and apply overlap).
//!
//! Lease keep-alives and time-to-live queries that reach a follower are forwarded to the
//! leader over the peer transport and answered when the leader's answer comes back (or fail
//! with "request timed out" if it does not come in time).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};

use keel_api::EtcdError;
use keel_net::tcp::TcpTransport;
use keel_net::{Call, Frame};
use keel_raft::{ConfState, StateRole};
use keel_storage::rocks::RocksBackend;
use prost::Message as _;

use super::compactor::AutoCompactor;
use super::disk::FsDisk;
use super::forward::{self, LeaseAnswer, LeaseCall};
use crate::service::HeaderInfo;
use crate::{
    Clock, Deadline, MemberAttributes, Node, NodeError, Reply, Request, Status, Wake, WatchCreate, WatchResponse,
};

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
    /// A client request, how long its client waits (its `grpc-timeout`), and where to send
    /// its answer.
    Call(Request, Option<Duration>, oneshot::Sender<Result<Reply, EtcdError>>),
    /// Raft, store and membership status.
    Status(oneshot::Sender<MemberStatus>),
    /// The store's hash at a revision (0: current): hash, compaction revision, revision.
    HashKv(i64, oneshot::Sender<Result<(u32, i64, i64), EtcdError>>),
    /// The hash of everything the store holds, and the revision.
    Hash(oneshot::Sender<Result<(u32, i64), EtcdError>>),
    /// A watch stream opened: where its responses go.
    OpenWatchStream(u64, mpsc::UnboundedSender<WatchResponse>),
    /// Create a watcher on a stream.
    Watch(u64, WatchCreate),
    /// Cancel a watcher of a stream.
    CancelWatch(u64, i64),
    /// A progress request on a stream.
    WatchProgress(u64),
    /// A watch stream's client took this many bytes of its responses.
    WatchConsumed(u64, usize),
    /// A watch stream closed: drop its watchers.
    CloseWatchStream(u64),
    /// A frame from peer `from`.
    Peer(u64, Frame),
    /// Compact the store's storage.
    Defragment(oneshot::Sender<Result<(), EtcdError>>),
    /// The store's image, for a snapshot.
    Snapshot(oneshot::Sender<Result<Vec<u8>, EtcdError>>),
    /// Hand leadership to a member (only the leader can), within the client's timeout.
    MoveLeader(u64, Option<Duration>, oneshot::Sender<Result<(), EtcdError>>),
    /// One Raft tick.
    Tick,
    /// Stop: everything acknowledged is already durable, so the actor just returns.
    Stop,
}

/// Where the member stands.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Raft and store positions.
    pub raft: Status,
    /// The store's size in bytes.
    pub db_size: u64,
    /// Current membership.
    pub conf_state: ConfState,
    /// What each member published about itself.
    pub published: BTreeMap<u64, MemberAttributes>,
}

/// How the gRPC handlers reach the actor.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::UnboundedSender<Input>,
    info: Rc<Cell<HeaderInfo>>,
}

impl NodeHandle {
    /// Sends a request and waits for its answer, for at most `timeout` if given.
    pub async fn call(&self, request: Request, timeout: Option<Duration>) -> Result<Reply, EtcdError> {
        self.ask(|tx| Input::Call(request, timeout, tx)).await
    }

    /// The member's Raft, store and membership status.
    pub async fn status(&self) -> Result<MemberStatus, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(Input::Status(tx)).map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)
    }

    /// The store's hash at `revision` (0: current): hash, compaction revision, revision.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), EtcdError> {
        self.ask(|tx| Input::HashKv(revision, tx)).await
    }

    /// Sends `input` built around a fresh answer channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<Result<T, EtcdError>>) -> Input,
    ) -> Result<T, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(input(tx)).map_err(|_| EtcdError::Stopped)?;
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

    /// Hands the actor a frame from peer `from`.
    pub fn peer(&self, from: u64, frame: Frame) {
        let _ = self.tx.unbounded_send(Input::Peer(from, frame));
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

/// Who waits for the answer to a request the node is serving.
enum Waiter {
    /// A client of this member.
    Client(oneshot::Sender<Result<Reply, EtcdError>>),
    /// A follower that forwarded a lease call.
    Peer { from: u64, call: u64 },
    /// The member itself (auto-compaction, publishing its attributes).
    Member,
}

/// A lease call this follower forwarded to the leader.
struct Forwarded {
    call: LeaseCall,
    reply_to: oneshot::Sender<Result<Reply, EtcdError>>,
    deadline: Deadline,
}

/// A leadership transfer MoveLeader is waiting for.
struct Transfer {
    target: u64,
    reply_to: oneshot::Sender<Result<(), EtcdError>>,
    deadline: Deadline,
}

/// The actor's state besides the node.
struct Actor {
    node: Node<FsDisk, RocksBackend>,
    transport: TcpTransport,
    clock: SystemClock,
    waiting: BTreeMap<u64, Waiter>,
    forwarded: BTreeMap<u64, Forwarded>,
    transfers: Vec<Transfer>,
    compactor: Option<AutoCompactor>,
    /// What this member publishes about itself, and when it may try (again).
    attributes: MemberAttributes,
    next_publish_ms: u64,
    /// Told once the attributes are applied: the member is ready to serve clients.
    ready: Option<oneshot::Sender<()>>,
    watch_streams: BTreeMap<u64, mpsc::UnboundedSender<WatchResponse>>,
    next_token: u64,
}

impl Actor {
    /// Takes one input; false once told to stop.
    fn handle(&mut self, input: Input) -> Result<bool, NodeError> {
        match input {
            Input::Call(request, timeout, reply_to) => self.call(request, timeout, reply_to),
            Input::Status(reply_to) => {
                let _ = reply_to.send(self.status());
            }
            Input::HashKv(revision, reply_to) => {
                let _ = reply_to.send(hash_kv(&self.node, revision));
            }
            Input::Hash(reply_to) => {
                let store = self.node.store();
                let hash = keel_storage::backend::hash(store.backend()).map(|hash| (hash, store.current_revision()));
                let _ = reply_to.send(hash.map_err(|e| {
                    tracing::error!("hashing the store failed: {e}");
                    EtcdError::Stopped
                }));
            }
            Input::OpenWatchStream(stream, to) => {
                self.watch_streams.insert(stream, to);
            }
            Input::Watch(stream, spec) => {
                self.node.watch(stream, spec)?;
            }
            Input::CancelWatch(stream, watch_id) => {
                self.node.cancel_watch(stream, watch_id);
            }
            Input::WatchProgress(stream) => self.node.request_watch_progress(stream),
            Input::WatchConsumed(stream, bytes) => self.node.watch_consumed(stream, bytes),
            Input::CloseWatchStream(stream) => {
                self.watch_streams.remove(&stream);
                self.node.close_watch_stream(stream);
            }
            Input::Peer(from, frame) => self.peer_frame(from, frame),
            Input::Defragment(reply_to) => {
                let done = self.node.defragment();
                let _ = reply_to.send(done.as_ref().map(|_| ()).map_err(|_| EtcdError::Stopped));
                done?;
            }
            Input::Snapshot(reply_to) => match self.node.store_image() {
                Ok(image) => {
                    let _ = reply_to.send(Ok(image));
                }
                Err(e) => {
                    let _ = reply_to.send(Err(EtcdError::Stopped));
                    return Err(e);
                }
            },
            Input::MoveLeader(target, timeout, reply_to) => self.move_leader(target, timeout, reply_to),
            Input::Tick => self.tick(),
            Input::Stop => {
                self.stop();
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Hands out what the node produced: answers, watch responses, readiness, and the
    /// positions response headers carry.
    fn deliver(&mut self, handle: &NodeHandle) {
        let output = self.node.take_output();
        for (token, result) in output.replies {
            self.answer(token, result);
        }
        self.settle_transfers();
        if self.ready.is_some() && self.published() {
            let _ = self.ready.take().expect("checked").send(());
        }
        for response in output.watch {
            if let Some(to) = self.watch_streams.get(&response.stream) {
                let _ = to.unbounded_send(response);
            }
        }
        let info = handle.info.get();
        let status = self.node.status();
        handle.info.set(HeaderInfo { raft_term: status.term, revision: status.revision, ..info });
    }

    fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The deadline of a call whose client waits `timeout` from now.
    fn deadline(&self, timeout: Option<Duration>) -> Deadline {
        let now_ms = self.clock.now_ms();
        let client_ms = timeout.map(|t| now_ms.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
        self.node.deadline(now_ms, client_ms)
    }

    fn request(&mut self, request: Request, waiter: Waiter, deadline: Option<Deadline>) {
        let token = self.next_token();
        self.waiting.insert(token, waiter);
        let client_ms = deadline.filter(|d| d.client).map(|d| d.at_ms);
        self.node.request(token, request, self.clock.now_ms(), client_ms);
    }

    fn call(
        &mut self,
        request: Request,
        timeout: Option<Duration>,
        reply_to: oneshot::Sender<Result<Reply, EtcdError>>,
    ) {
        let status = self.node.status();
        let deadline = self.deadline(timeout);
        match forward::lease_call(&request) {
            Some(call) if status.role != StateRole::Leader && status.leader != 0 => {
                let id = self.next_token();
                let frame = Frame::Call(Call { call: id, payload: call.encode_to_vec() });
                self.transport.send_frame(status.leader, &frame);
                self.forwarded.insert(id, Forwarded { call, reply_to, deadline });
            }
            _ => self.request(request, Waiter::Client(reply_to), Some(deadline)),
        }
    }

    fn peer_frame(&mut self, from: u64, frame: Frame) {
        match frame {
            Frame::Raft(msg) => self.node.step(msg),
            Frame::Call(Call { call, payload }) => match LeaseCall::decode(payload.as_slice()) {
                Ok(lease) => self.request(lease.request(), Waiter::Peer { from, call }, None),
                Err(e) => tracing::warn!(from = format_args!("{from:x}"), "undecodable forwarded call: {e}"),
            },
            Frame::Answer(Call { call, payload }) => {
                let Some(forwarded) = self.forwarded.remove(&call) else { return };
                let result = match LeaseAnswer::decode(payload.as_slice()) {
                    Ok(answer) => answer.result(&forwarded.call),
                    Err(e) => {
                        tracing::warn!(from = format_args!("{from:x}"), "undecodable forwarded answer: {e}");
                        Err(EtcdError::Stopped)
                    }
                };
                let _ = forwarded.reply_to.send(result);
            }
            Frame::Hello(_) => {}
        }
    }

    fn move_leader(
        &mut self,
        target: u64,
        timeout: Option<Duration>,
        reply_to: oneshot::Sender<Result<(), EtcdError>>,
    ) {
        let status = self.node.status();
        let result = if status.role != StateRole::Leader {
            Err(EtcdError::NotLeader)
        } else if !self.node.conf_state().voters.contains(&target) {
            Err(EtcdError::BadLeaderTransferee)
        } else if target == status.id {
            Ok(())
        } else {
            self.node.transfer_leader(target);
            let deadline = self.deadline(timeout);
            self.transfers.push(Transfer { target, reply_to, deadline });
            return;
        };
        let _ = reply_to.send(result);
    }

    fn published(&self) -> bool {
        self.node.published_members().get(&self.attributes.member_id) == Some(&self.attributes)
    }

    /// Publishes this member's name and client URLs through Raft until they are applied, as
    /// etcd does on start (retrying once a request could have timed out).
    fn publish(&mut self, now_ms: u64) {
        if self.published() || now_ms < self.next_publish_ms || self.node.status().leader == 0 {
            return;
        }
        self.next_publish_ms = now_ms + self.node.config().request_timeout_ms;
        self.request(Request::Publish(self.attributes.clone()), Waiter::Member, None);
    }

    /// Answers the MoveLeader calls whose transfer finished or ran out of time.
    fn settle_transfers(&mut self) {
        let (leader, now_ms) = (self.node.status().leader, self.clock.now_ms());
        for transfer in std::mem::take(&mut self.transfers) {
            if transfer.target == leader {
                let _ = transfer.reply_to.send(Ok(()));
            } else if transfer.deadline.at_ms <= now_ms {
                let error = if transfer.deadline.client {
                    EtcdError::DeadlineExceeded
                } else {
                    EtcdError::LeaderTransferTimeout
                };
                let _ = transfer.reply_to.send(Err(error));
            } else {
                self.transfers.push(transfer);
            }
        }
    }

    fn tick(&mut self) {
        let now_ms = self.clock.now_ms();
        self.node.tick(now_ms);
        let status = self.node.status();
        let compact_to =
            self.compactor.as_mut().and_then(|c| c.tick(now_ms, status.revision, status.role == StateRole::Leader));
        if let Some(revision) = compact_to {
            tracing::info!(revision, "auto-compacting");
            self.request(Request::Compact { revision }, Waiter::Member, None);
        }
        self.publish(now_ms);
        let expired: Vec<u64> =
            self.forwarded.iter().filter(|(_, f)| f.deadline.at_ms <= now_ms).map(|(&id, _)| id).collect();
        for id in expired {
            if let Some(forwarded) = self.forwarded.remove(&id) {
                let _ = forwarded.reply_to.send(Err(forwarded.deadline.error()));
            }
        }
    }

    fn status(&self) -> MemberStatus {
        MemberStatus {
            raft: self.node.status(),
            db_size: keel_storage::backend::Backend::size_bytes(self.node.store().backend()),
            conf_state: self.node.conf_state().clone(),
            published: self.node.published_members().clone(),
        }
    }

    fn answer(&mut self, token: u64, result: Result<Reply, EtcdError>) {
        match self.waiting.remove(&token) {
            Some(Waiter::Client(reply_to)) => {
                let _ = reply_to.send(result);
            }
            Some(Waiter::Peer { from, call }) => {
                let payload = LeaseAnswer::new(&result).encode_to_vec();
                self.transport.send_frame(from, &Frame::Answer(Call { call, payload }));
            }
            Some(Waiter::Member) => {
                if let Err(e) = result {
                    tracing::info!("the member's own request failed: {e}");
                }
            }
            None => {}
        }
    }

    /// Fails every request still waiting: the member is stopping.
    fn stop(&mut self) {
        for (_, waiter) in std::mem::take(&mut self.waiting) {
            if let Waiter::Client(reply_to) = waiter {
                let _ = reply_to.send(Err(EtcdError::Stopped));
            }
        }
        for (_, forwarded) in std::mem::take(&mut self.forwarded) {
            let _ = forwarded.reply_to.send(Err(EtcdError::Stopped));
        }
        for transfer in std::mem::take(&mut self.transfers) {
            let _ = transfer.reply_to.send(Err(EtcdError::Stopped));
        }
    }
}

/// What the member does on its own, besides answering requests.
pub struct Duties {
    /// Auto-compaction, if configured.
    pub compactor: Option<AutoCompactor>,
    /// The name and client URLs it publishes.
    pub attributes: MemberAttributes,
    /// Told once they are published: clients may be served.
    pub ready: oneshot::Sender<()>,
}

/// Runs the node until its inputs close, it is stopped, or it fails.
pub async fn run(
    node: Node<FsDisk, RocksBackend>,
    transport: TcpTransport,
    duties: Duties,
    handle: NodeHandle,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    clock: SystemClock,
) -> Result<(), NodeError> {
    let Duties { compactor, attributes, ready } = duties;
    let mut actor = Actor {
        node,
        transport,
        clock,
        waiting: BTreeMap::new(),
        forwarded: BTreeMap::new(),
        transfers: Vec::new(),
        compactor,
        attributes,
        next_publish_ms: 0,
        ready: Some(ready),
        watch_streams: BTreeMap::new(),
        next_token: 0,
    };
    let mut input = None;
    loop {
        // Everything queued goes into the next ready: one WAL write for all of it.
        while let Some(next) = input.take().or_else(|| inputs.try_recv().ok()) {
            if !actor.handle(next)? {
                return Ok(());
            }
        }
        let now_ms = actor.clock.now_ms();
        let finished = actor.node.finish_durable(&mut actor.transport, now_ms).await?;
        let started = actor.node.start_ready(&mut actor.transport, now_ms).await?;
        // What the inputs produced (local reads, watch responses) and the entries applied
        // while the disk works are answered now.
        actor.deliver(&handle);
        if finished || started {
            continue;
        }
        match actor.node.wait(&mut inputs).await {
            Wake::Input(next) => input = Some(next),
            Wake::Durable => {}
            Wake::Closed => return Ok(()),
        }
    }
}
