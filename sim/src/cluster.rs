//! Simulated servers and the client side of their protocol.
//!
//! Each Keel node is a madsim node running the real node core ([`keel_node::Node`]) with the
//! simulated disk, backend, skewed clock and a transport that can lose, duplicate and delay
//! messages on top of madsim's own latency and partitions. Clients are madsim nodes too, so
//! partitions and crashes cut them off like real clients.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use keel_api::EtcdError;
use keel_net::Transport;
use keel_node::{Node, NodeConfig, Reply, Request, Wake, WatchCreate, WatchLimits, WatchResponse};
use keel_raft::{Message, Plants};
use keel_storage::backend::MemBackend;
use keel_storage::rocks::RocksBackend;
use madsim::net::Endpoint;
use madsim::time::{sleep, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::{SimBackend, SimDisk};
use crate::history::Shared;
use crate::seed::sub_seed;

/// Port every server listens on.
pub const PORT: u16 = 2380;
const TAG_PEER: u64 = 1;
const TAG_TO_SERVER: u64 = 2;
const TAG_TO_CLIENT: u64 = 3;

/// The simulated address of server `id`.
pub fn server_addr(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), PORT)
}

/// The simulated IP of client `n`.
pub fn client_ip(n: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n as u8))
}

/// A message from a client to a server.
#[derive(Debug, Clone)]
pub enum ToServer {
    /// A KV, lease or membership request, with how long its client waits (ms).
    Request(u64, Request, u64),
    /// Create a watcher on `stream`.
    Watch(u64, WatchCreate),
    /// Is watcher `watch_id` of `stream` still there?
    WatchPing(u64, i64),
    /// Report applied index, revision and the store hash.
    Inspect(u64),
    /// Hand leadership to this member (etcd's MoveLeader).
    MoveLeader(u64),
}

/// A message from a server to a client.
#[derive(Debug, Clone)]
pub enum ToClient {
    /// The answer to request `token`.
    Reply(u64, Result<Reply, EtcdError>),
    /// A watch response with its position in the stream (from 1): the stream is ordered and
    /// a gap means it broke, as with a gRPC stream over TCP.
    Watch(u64, WatchResponse),
    /// Answer to a ping: whether the watcher exists.
    WatchAlive(u64, i64, bool),
    /// Answer to an inspection: applied index, revision, store hash.
    Inspected(u64, u64, i64, u32),
}

/// Network chaos applied by the servers' transports on top of madsim's.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetChaos {
    /// Probability a peer message is dropped.
    pub loss: f64,
    /// Probability a peer message is sent twice.
    pub duplicate: f64,
    /// Probability a peer message is held back (reordered behind later ones).
    pub delay: f64,
}

/// A node's clock: offset from and drifting against true (simulated) time.
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    /// Start of the run.
    pub origin: Instant,
    /// Offset, ms.
    pub offset_ms: u64,
    /// Rate against true time (1.0: exact).
    pub rate: f64,
}

impl keel_node::Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        self.offset_ms + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.rate) as u64
    }
}

/// Which backend the servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// In memory, with power-cut modelling.
    Mem,
    /// RocksDB on the real file system.
    Rocks,
}

/// Everything about one server that outlives its process.
pub struct ServerSlot {
    /// Member id.
    pub id: u64,
    /// The WAL's disk.
    pub disk: SimDisk,
    /// The in-memory backend (Mem) or the RocksDB directory (Rocks).
    pub mem: Arc<Mutex<MemBackend>>,
    /// RocksDB directory.
    pub rocks_dir: Option<std::path::PathBuf>,
    /// Most readies whose writes may be on their way to disk at once.
    pub writes_in_flight: usize,
    /// Boots so far (seeds each boot's randomness).
    pub boots: u64,
    /// Whether the process is up.
    pub up: bool,
}

/// Shared settings of the servers in a run.
#[derive(Clone)]
pub struct ServerEnv {
    /// The run's seed.
    pub seed: u64,
    /// Initial voters.
    pub voters: Vec<u64>,
    /// Network chaos, adjustable during the run.
    pub chaos: Arc<Mutex<NetChaos>>,
    /// Planted bugs.
    pub plants: Plants,
    /// Snapshot interval.
    pub snapshot_count: u64,
    /// Recorder.
    pub recorder: Shared,
}

struct SimTransport {
    endpoint: Rc<Endpoint>,
    rng: ChaCha8Rng,
    chaos: Arc<Mutex<NetChaos>>,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: Message) {
        let chaos = *self.chaos.lock().expect("chaos lock");
        if self.rng.gen_bool(chaos.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(chaos.duplicate) { 2 } else { 1 };
        let hold = if self.rng.gen_bool(chaos.delay) {
            Duration::from_millis(self.rng.gen_range(5..200))
        } else {
            Duration::ZERO
        };
        let frame = keel_net::encode(&msg);
        let endpoint = self.endpoint.clone();
        let dst = server_addr(msg.to);
        madsim::task::spawn_local(async move {
            sleep(hold).await;
            for _ in 0..copies {
                let _ = endpoint.send_to_raw(dst, TAG_PEER, Box::new(frame.clone())).await;
            }
        });
    }
}

enum Input {
    Tick,
    Peer(Vec<u8>),
    Client(SocketAddr, ToServer),
}

/// Opens RocksDB inside the simulation. RocksDB's timer thread runs on real time while its
/// caller runs on simulated time, and registering its periodic tasks now and then fails;
/// retrying at once (no simulated time passes, no simulated randomness is drawn) keeps the
/// run deterministic.
fn open_rocks(dir: &std::path::Path) -> RocksBackend {
    let mut last = None;
    for _ in 0..50 {
        match RocksBackend::open(dir) {
            Ok(backend) => return backend,
            Err(e) if e.0.contains("periodic task") => last = Some(e),
            Err(e) => panic!("rocksdb does not open: {e:?}"),
        }
    }
    panic!("rocksdb does not open after 50 attempts: {last:?}")
}

/// Runs one server process until it is killed (or stops on a disk error).
pub async fn run_server(slot: Arc<Mutex<ServerSlot>>, env: ServerEnv, clock: SkewedClock) {
    let (id, disk, backend, boot, writes_in_flight) = {
        let mut s = slot.lock().expect("slot lock");
        s.boots += 1;
        s.up = true;
        let backend = match &s.rocks_dir {
            Some(dir) => SimBackend::Rocks(open_rocks(dir)),
            None => SimBackend::Mem(s.mem.clone()),
        };
        (s.id, s.disk.clone(), backend, s.boots, s.writes_in_flight)
    };
    let mut config = NodeConfig::new(id, env.voters.clone());
    config.snapshot_count = env.snapshot_count;
    config.snapshot_catchup_entries = env.snapshot_count / 2;
    config.record_applied = true;
    config.plants = env.plants;
    config.request_timeout_ms = 3_000;
    config.max_writes_in_flight = writes_in_flight;
    // Small enough that slow watch clients fill their streams and catch up in many batches.
    config.watch = WatchLimits { stream_bytes: 2048, batch_revisions: 8, batch_bytes: 1024 };
    let tick = Duration::from_secs_f64(config.tick_ms as f64 / 1000.0 / clock.rate);
    let rng = ChaCha8Rng::seed_from_u64(sub_seed(env.seed, "node", id << 32 | boot));
    let transport_rng = ChaCha8Rng::seed_from_u64(sub_seed(env.seed, "transport", id << 32 | boot));
    let routes_rng = ChaCha8Rng::seed_from_u64(sub_seed(env.seed, "routes", id << 32 | boot));
    let now = || keel_node::Clock::now_ms(&clock);
    let mut node = match Node::open(config, disk, backend, rng).await {
        Ok(node) => node,
        Err(e) => return stop(&env, &slot, id, e.to_string()).await,
    };
    let endpoint = Rc::new(Endpoint::bind(server_addr(id)).await.expect("bind"));
    let (tx, mut inputs) = mpsc::unbounded();
    let ticks = tx.clone();
    madsim::task::spawn_local(async move {
        loop {
            sleep(tick).await;
            if ticks.unbounded_send(Input::Tick).is_err() {
                return;
            }
        }
    });
    let (peers, ep) = (tx.clone(), endpoint.clone());
    madsim::task::spawn_local(async move {
        while let Ok((payload, _)) = ep.recv_from_raw(TAG_PEER).await {
            let frame = *payload.downcast::<Vec<u8>>().expect("peer frames are bytes");
            if peers.unbounded_send(Input::Peer(frame)).is_err() {
                return;
            }
        }
    });
    let (clients, ep) = (tx, endpoint.clone());
    madsim::task::spawn_local(async move {
        while let Ok((payload, from)) = ep.recv_from_raw(TAG_TO_SERVER).await {
            let msg = *payload.downcast::<ToServer>().expect("client messages are ToServer");
            if clients.unbounded_send(Input::Client(from, msg)).is_err() {
                return;
            }
        }
    });
    let mut transport = SimTransport { endpoint: endpoint.clone(), rng: transport_rng, chaos: env.chaos.clone() };
    let mut routes = Routes::new(routes_rng);
    let mut input = None;
    loop {
        // Take whatever is already queued: one ready (one WAL write) for all of it.
        while let Some(next) = input.take().or_else(|| inputs.try_recv().ok()) {
            match next {
                Input::Tick => {
                    node.tick(now());
                    for (stream, bytes) in routes.read_by_clients(true, &endpoint).await {
                        node.watch_consumed(stream, bytes);
                    }
                }
                Input::Peer(frame) => {
                    env.recorder.lock().expect("recorder").trace("deliver", &frame);
                    match keel_net::decode(&frame) {
                        Ok(msg) => node.step(msg),
                        Err(e) => tracing::warn!("node {id}: bad peer frame: {e}"),
                    }
                }
                Input::Client(from, ToServer::Request(client_token, request, timeout_ms)) => {
                    routes.next_token += 1;
                    routes.tokens.insert(routes.next_token, (from, client_token));
                    node.request(routes.next_token, request, now(), Some(now() + timeout_ms));
                }
                Input::Client(from, ToServer::Watch(stream, spec)) => {
                    routes.open_stream(stream, from);
                    if let Err(e) = node.watch(stream, spec) {
                        return stop(&env, &slot, id, e.to_string()).await;
                    }
                }
                Input::Client(from, ToServer::WatchPing(stream, watch_id)) => {
                    let alive = routes.streams.contains_key(&stream) && node.watch_exists(stream, watch_id);
                    let _ = endpoint
                        .send_to_raw(from, TAG_TO_CLIENT, Box::new(ToClient::WatchAlive(stream, watch_id, alive)))
                        .await;
                }
                Input::Client(_, ToServer::MoveLeader(to)) => node.transfer_leader(to),
                Input::Client(from, ToServer::Inspect(token)) => {
                    let store = node.store();
                    let (hash, _, revision) = store.hash_kv(0).expect("hash");
                    let msg = ToClient::Inspected(token, store.applied_index(), revision, hash);
                    let _ = endpoint.send_to_raw(from, TAG_TO_CLIENT, Box::new(msg)).await;
                }
            }
        }
        // As the real actor does: complete what is durable, start the next ready, answer.
        let finished = match node.finish_durable(&mut transport, now()).await {
            Ok(finished) => finished,
            Err(e) => return stop(&env, &slot, id, e.to_string()).await,
        };
        let started = match node.start_ready(&mut transport, now()).await {
            Ok(started) => started,
            Err(e) => return stop(&env, &slot, id, e.to_string()).await,
        };
        routes.deliver(node.take_output(), &env, id, &endpoint).await;
        for (stream, bytes) in routes.read_by_clients(false, &endpoint).await {
            node.watch_consumed(stream, bytes);
        }
        if finished || started {
            continue;
        }
        match node.wait(&mut inputs).await {
            Wake::Input(next) => input = Some(next),
            Wake::Durable => {}
            Wake::Closed => return,
        }
    }
}

/// A watch stream's way to its client, and how fast that client reads.
struct StreamRoute {
    to: SocketAddr,
    /// Responses sent so far (the client's sequence numbers).
    sent: u64,
    /// Responses the client has not read yet, oldest first.
    unread: VecDeque<WatchResponse>,
    /// Bytes the client reads per tick (None: everything, as soon as it arrives).
    bytes_per_tick: Option<usize>,
    /// Bytes a slow client may still read.
    allowance: usize,
}

/// Where a server's answers go.
struct Routes {
    /// Watch streams.
    streams: std::collections::BTreeMap<u64, StreamRoute>,
    /// Requests in progress: client address and the client's token.
    tokens: std::collections::BTreeMap<u64, (SocketAddr, u64)>,
    next_token: u64,
    /// Draws each stream's reading speed.
    rng: ChaCha8Rng,
}

impl Routes {
    fn new(rng: ChaCha8Rng) -> Routes {
        Routes { streams: Default::default(), tokens: Default::default(), next_token: 0, rng }
    }

    /// A watch request came on `stream` from `to`: a new stream gets a reading speed, fast
    /// or (now and then) slow enough to fill the stream.
    fn open_stream(&mut self, stream: u64, to: SocketAddr) {
        let rng = &mut self.rng;
        self.streams.entry(stream).or_insert_with(|| StreamRoute {
            to,
            sent: 0,
            unread: VecDeque::new(),
            bytes_per_tick: rng.gen_bool(0.3).then(|| rng.gen_range(10..400)),
            allowance: 0,
        });
    }

    /// Records what the node did and sends its answers; queues its watch responses for their
    /// clients to read.
    async fn deliver(&mut self, output: keel_node::Output, env: &ServerEnv, id: u64, endpoint: &Endpoint) {
        {
            let mut rec = env.recorder.lock().expect("recorder");
            for term in output.became_leader {
                rec.became_leader(id, term);
            }
            for applied in output.applied {
                rec.applied(id, applied);
            }
        }
        for (token, result) in output.replies {
            if let Some((to, client_token)) = self.tokens.remove(&token) {
                let _ = endpoint.send_to_raw(to, TAG_TO_CLIENT, Box::new(ToClient::Reply(client_token, result))).await;
            }
        }
        for response in output.watch {
            if let Some(route) = self.streams.get_mut(&response.stream) {
                route.unread.push_back(response);
            }
        }
    }

    /// The watch clients read what they have waiting: fast ones all of it, slow ones (only at
    /// a tick) their share. Returns the bytes each stream's client took, for the node.
    async fn read_by_clients(&mut self, tick: bool, endpoint: &Endpoint) -> Vec<(u64, usize)> {
        let mut taken = Vec::new();
        for (&stream, route) in self.streams.iter_mut() {
            match route.bytes_per_tick {
                None => route.allowance = usize::MAX,
                // A slow client saves up to read the next response (bounded by one response).
                Some(bytes) if tick => {
                    let next = route.unread.front().map_or(0, |r| r.bytes);
                    route.allowance = (route.allowance + bytes).min(next.max(bytes));
                }
                Some(_) => continue,
            }
            let mut bytes = 0;
            while route.unread.front().is_some_and(|r| r.bytes <= route.allowance) {
                let response = route.unread.pop_front().expect("checked");
                route.allowance -= response.bytes;
                bytes += response.bytes;
                route.sent += 1;
                let msg = ToClient::Watch(route.sent, response);
                let _ = endpoint.send_to_raw(route.to, TAG_TO_CLIENT, Box::new(msg)).await;
            }
            if bytes > 0 {
                taken.push((stream, bytes));
            }
        }
        taken
    }
}

/// A server that hit a disk or store error stops for good (until restarted).
async fn stop(env: &ServerEnv, slot: &Arc<Mutex<ServerSlot>>, id: u64, error: String) {
    slot.lock().expect("slot lock").up = false;
    env.recorder.lock().expect("recorder").fault(format!("node {id} stopped: {error}"));
    futures::future::pending::<()>().await
}

/// A client's connection: one endpoint, requests with deadlines.
pub struct Client {
    endpoint: Endpoint,
    next_token: u64,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub enum CallResult {
    /// Answered.
    Ok(Reply),
    /// Refused or failed with an etcd error.
    Err(EtcdError),
    /// No answer before the deadline.
    Timeout,
}

impl Client {
    /// Binds client `n`'s endpoint.
    pub async fn bind(n: u64) -> Client {
        let endpoint = Endpoint::bind(SocketAddr::new(client_ip(n), 9000)).await.expect("bind");
        Client { endpoint, next_token: 0 }
    }

    /// Sends `request` to server `node` and waits up to `deadline` for its answer (the server
    /// is told the deadline too, as `grpc-timeout` tells it).
    pub async fn call(&mut self, node: u64, request: Request, deadline: Duration) -> CallResult {
        self.next_token += 1;
        let token = self.next_token;
        let msg = Box::new(ToServer::Request(token, request, deadline.as_millis() as u64));
        if self.endpoint.send_to_raw(server_addr(node), TAG_TO_SERVER, msg).await.is_err() {
            return CallResult::Timeout;
        }
        let wait = async {
            loop {
                if let ToClient::Reply(t, result) = self.next_message().await {
                    if t == token {
                        return result;
                    }
                }
            }
        };
        match madsim::time::timeout(deadline, wait).await {
            Ok(Ok(reply)) => CallResult::Ok(reply),
            Ok(Err(e)) => CallResult::Err(e),
            Err(_) => CallResult::Timeout,
        }
    }

    /// Sends a raw message to a server.
    pub async fn send(&self, node: u64, msg: ToServer) {
        let _ = self.endpoint.send_to_raw(server_addr(node), TAG_TO_SERVER, Box::new(msg)).await;
    }

    /// Waits up to `deadline` for the next message from any server.
    pub async fn recv(&self, deadline: Duration) -> Option<ToClient> {
        madsim::time::timeout(deadline, self.next_message()).await.ok()
    }

    /// The next message from any server (pending forever if the network is down).
    async fn next_message(&self) -> ToClient {
        loop {
            let Ok((payload, _)) = self.endpoint.recv_from_raw(TAG_TO_CLIENT).await else {
                return futures::future::pending().await;
            };
            if let Ok(msg) = payload.downcast::<ToClient>() {
                return *msg;
            }
        }
    }
}
