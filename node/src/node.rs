//! The node core: one Raft member with its WAL, MVCC store, lease heap and watch hub.
//!
//! The node is driven, never driving: the driver (glommio in production, madsim in the
//! simulator) feeds it ticks, peer messages and client requests, calls [`Node::process`] to
//! carry out what Raft asks for, and collects replies and watch responses. Time arrives as a
//! `now_ms` argument read from the driver's clock; randomness comes from the `ChaCha8Rng` the
//! driver hands in.
//!
//! Invariants:
//! - an entry is applied only after it is durable in the local WAL (a ready's committed
//!   entries were made durable by an earlier ready; they apply while the ready's own writes
//!   sync), and the applied index travels in the same backend batch as the entry's effects,
//!   so after a restart entries at or below it are skipped, never applied twice;
//! - several readies' writes may be on their way to disk at once (up to
//!   `max_writes_in_flight`); the WAL makes them durable in the order they were written, and
//!   readies complete in that order, so a message promising durability (a vote, an
//!   acknowledgement) leaves only once everything written before it is durable;
//! - membership changes are applied to Raft on every replay (Raft's configuration is rebuilt
//!   from the snapshot point) but to the store only once;
//! - the WAL is compacted only up to a snapshot point whose state is synced in the backend;
//!   a snapshot received from the leader is saved beside the WAL before the store is
//!   replaced, so a restart whose backend is behind that point restores the image first (a
//!   member's own snapshot points keep no image: a follower that needs one is sent the store
//!   as it is when the message leaves);
//! - only the leader expires leases, by proposing a revoke; on becoming leader it first gives
//!   every lease a full TTL; keep-alives are served only after ReadIndex confirms leadership.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{future, Stream, StreamExt};
use keel_api::EtcdError;
use keel_net::Transport;
use keel_raft::{
    ConfChange, ConfChangeType, ConfState, Config, Entry, EntryType, HardState, MemStorage, Message, Plant, Plants,
    RawNode, Ready, Snapshot, SnapshotMetadata, StateRole, Storage, NONE,
};
use keel_storage::backend::{self, Backend, PendingSync};
use keel_storage::mvcc::{Event, KvStore, MvccError, RangeRequest};
use keel_storage::wal::{Disk, SnapshotPoint, Wal, WalEntry, WalError};
use prost::Message as _;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::proposal::{
    alarm, ActiveAlarms, AlarmChange, LeaseGrant, LeaseRevoke, MemberAttributes, Op, Proposal, PublishedMembers, Reply,
    Request, Response,
};
use crate::validate;
use crate::watch::{WatchCreate, WatchHub, WatchLimits, WatchResponse};

const META_CONF_STATE: &[u8] = b"conf_state";
const META_ALARMS: &[u8] = b"alarms";
const META_MEMBERS: &[u8] = b"members";

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// Static configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Member id (never 0).
    pub id: u64,
    /// Voters of a brand-new cluster (empty when joining an existing one).
    pub initial_voters: Vec<u64>,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Ticks per election timeout.
    pub election_ticks: usize,
    /// Ticks per heartbeat.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Largest WAL segment.
    pub wal_segment_bytes: u64,
    /// A request still unanswered after this long fails with "request timed out".
    pub request_timeout_ms: u64,
    /// Largest proposal accepted (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Interval of the progress notifications watchers may ask for.
    pub watch_progress_ms: u64,
    /// What the watch hub holds for slow streams, and how it catches watchers up.
    pub watch: WatchLimits,
    /// Largest store size writes may grow it to (etcd's `--quota-backend-bytes`).
    pub quota_bytes: u64,
    /// Most readies whose writes may be on their way to disk at once (at least 1).
    pub max_writes_in_flight: usize,
    /// Report every applied entry in [`Output::applied`] (for the simulator's checkers).
    pub record_applied: bool,
    /// Bugs planted on purpose (empty in production).
    pub plants: Plants,
}

impl NodeConfig {
    /// etcd-like defaults: 100 ms ticks, 1 s elections.
    pub fn new(id: u64, initial_voters: Vec<u64>) -> NodeConfig {
        NodeConfig {
            id,
            initial_voters,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
            wal_segment_bytes: 64 * 1024 * 1024,
            request_timeout_ms: 7_000,
            max_request_bytes: validate::MAX_REQUEST_BYTES,
            watch_progress_ms: 10 * 60 * 1000,
            watch: WatchLimits::default(),
            quota_bytes: DEFAULT_QUOTA_BYTES,
            max_writes_in_flight: 8,
            record_applied: false,
            plants: Plants::default(),
        }
    }

    /// etcd's smallest lease TTL: enough for a new leader to be elected.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let ms = 3 * self.election_ticks as u64 * self.tick_ms / 2;
        ms.div_ceil(1000) as i64
    }
}

/// Why the node stopped. It must not continue: its disk or store can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] MvccError),
    /// Durable state is inconsistent.
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// One applied entry, as the simulator's checkers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Log index.
    pub index: u64,
    /// Log term.
    pub term: u64,
    /// The entry's payload.
    pub data: Vec<u8>,
    /// Store revision afterwards.
    pub revision: i64,
    /// Changes it made.
    pub events: Vec<Event>,
    /// The lease this entry revoked because it expired.
    pub expired_lease: Option<i64>,
}

/// What the node produced for the driver.
#[derive(Debug, Default)]
pub struct Output {
    /// Answers to client requests, by the driver's token.
    pub replies: Vec<(u64, Result<Reply, EtcdError>)>,
    /// Watch responses, addressed by stream.
    pub watch: Vec<WatchResponse>,
    /// Applied entries (only with `record_applied`).
    pub applied: Vec<Applied>,
    /// Terms in which this node became leader.
    pub became_leader: Vec<u64>,
}

/// A snapshot of the node's state for status queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Member id.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Known leader (0: none).
    pub leader: u64,
    /// Role.
    pub role: StateRole,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Store revision.
    pub revision: i64,
}

/// When a request still unanswered gives up: at the member's own request timeout, or at the
/// client's deadline if that comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When, on the node's clock.
    pub at_ms: u64,
    /// The client's deadline came first.
    pub client: bool,
}

impl Deadline {
    /// What the request is answered when it gives up.
    pub fn error(self) -> EtcdError {
        if self.client {
            EtcdError::DeadlineExceeded
        } else {
            EtcdError::Timeout
        }
    }
}

struct Pending {
    token: u64,
    deadline: Deadline,
    /// The probe's timestamp when proposed (0 without a probe).
    proposed_nanos: u64,
}

/// Where a driver measures the node's steps for its metrics. The node passes back timestamps
/// it took from the probe and never acts on them, so a real clock here cannot change what the
/// node does (the simulator runs without a probe).
pub trait Probe {
    /// A monotonic timestamp, in nanoseconds.
    fn now_nanos(&self) -> u64;
    /// Applying one batch of committed entries took `nanos`.
    fn applied(&self, nanos: u64);
    /// One of this member's proposals was committed `nanos` after it was proposed.
    fn committed(&self, nanos: u64);
}

enum ReadKind {
    Range(RangeRequest),
    KeepAlive(i64),
}

struct PendingRead {
    token: u64,
    kind: ReadKind,
    deadline: Deadline,
    /// Set once a quorum confirmed the read: serve when applied reaches it.
    index: Option<u64>,
}

/// Returns to the driver's executor once (waking at once), so its other tasks run.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// What a driver waiting in [`Node::wait`] woke up for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake<T> {
    /// An input arrived.
    Input(T),
    /// The oldest ready in flight is durable.
    Durable,
    /// The inputs ended.
    Closed,
}

/// A WAL sync under way.
type WalSync = Pin<Box<dyn Future<Output = Result<(), WalError>>>>;

/// A Raft ready handed out whose writes are on their way to disk, from [`Node::start_ready`]
/// to [`Node::finish_durable`].
struct Persisting {
    ready: Ready,
    /// Makes the ready's writes durable (None: nothing needs syncing).
    durable: Option<future::MaybeDone<WalSync>>,
}

/// A snapshot point waiting for the store to sync the state it stands for: until then the
/// WAL must keep the entries it covers.
struct PendingSnapshot {
    /// The applied index the point stands for.
    index: u64,
    /// The membership at that index.
    conf_state: ConfState,
    /// The store's sync of everything applied up to `index`.
    synced: PendingSync,
}

/// One Raft member and its state machine.
pub struct Node<D: Disk, B: Backend> {
    config: NodeConfig,
    raw: RawNode<MemStorage>,
    wal: Wal<D>,
    kv: KvStore<B>,
    watches: WatchHub,
    conf_state: ConfState,
    rng: ChaCha8Rng,
    /// Proposal id prefix: node id and a per-boot random epoch.
    id_prefix: u64,
    next_seq: u64,
    proposals: BTreeMap<u64, Pending>,
    reads: BTreeMap<u64, PendingRead>,
    snapshot_index: u64,
    /// The next snapshot point, while the store syncs the state it stands for.
    pending_snapshot: Option<PendingSnapshot>,
    /// Readies handed out and not yet completed, oldest first.
    in_flight: VecDeque<Persisting>,
    /// Leases this leader found expired and proposed to revoke: never renewed again (a
    /// keep-alive racing the revoke must not be acknowledged).
    revoking: BTreeSet<i64>,
    /// Active alarms (replicated state, kept in the store's meta table).
    alarms: BTreeSet<(u64, i32)>,
    /// Members' published attributes by id (replicated state, kept in the meta table).
    published: BTreeMap<u64, MemberAttributes>,
    /// When the next round of watch progress notifications is due.
    next_watch_progress_ms: u64,
    /// The store's size after the last batch applied (reading it costs more than a request).
    store_bytes: u64,
    /// A store failure met outside `process`, reported by the next `process`.
    fatal: Option<NodeError>,
    probe: Option<Box<dyn Probe>>,
    out: Output,
}

fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> Result<M, NodeError> {
    M::decode(bytes).map_err(|e| NodeError::Corrupt(format!("undecodable {what}: {e}")))
}

fn mvcc_error(e: MvccError) -> Result<EtcdError, NodeError> {
    Ok(match e {
        MvccError::Compacted => EtcdError::Compacted,
        MvccError::FutureRev => EtcdError::FutureRev,
        MvccError::LeaseNotFound => EtcdError::LeaseNotFound,
        MvccError::KeyNotFound => EtcdError::KeyNotFound,
        MvccError::LeaseExists => EtcdError::LeaseExists,
        fatal @ MvccError::Backend(_) => return Err(fatal.into()),
    })
}

/// Removes and returns the entries of `pending` whose deadline has passed.
fn take_expired<T>(pending: &mut BTreeMap<u64, T>, now_ms: u64, deadline: impl Fn(&T) -> u64) -> Vec<T> {
    let expired: Vec<u64> = pending.iter().filter(|(_, p)| deadline(p) <= now_ms).map(|(&id, _)| id).collect();
    expired.into_iter().filter_map(|id| pending.remove(&id)).collect()
}

/// The active alarms recorded in the store.
fn load_alarms<B: Backend>(kv: &KvStore<B>) -> Result<BTreeSet<(u64, i32)>, NodeError> {
    let Some(bytes) = keel_storage::mvcc::get_meta(kv, META_ALARMS)? else { return Ok(BTreeSet::new()) };
    let active: ActiveAlarms = decode(&bytes, "alarms")?;
    Ok(active.alarms.iter().map(|a| (a.member_id, a.alarm)).collect())
}

/// The members' attributes recorded in the store.
fn load_published<B: Backend>(kv: &KvStore<B>) -> Result<BTreeMap<u64, MemberAttributes>, NodeError> {
    let Some(bytes) = keel_storage::mvcc::get_meta(kv, META_MEMBERS)? else { return Ok(BTreeMap::new()) };
    let published: PublishedMembers = decode(&bytes, "published members")?;
    Ok(published.members.into_iter().map(|m| (m.member_id, m)).collect())
}

/// The alarms of `active` as the store and the Alarm call list them.
fn alarm_list(active: &BTreeSet<(u64, i32)>) -> Vec<AlarmChange> {
    active.iter().map(|&(member_id, alarm)| AlarmChange { member_id, alarm, activate: true }).collect()
}

/// Whether a transaction may write (either branch, nested ones included).
fn txn_writes(txn: &keel_storage::mvcc::TxnRequest) -> bool {
    use keel_storage::mvcc::Request as TxnOp;
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(TxnOp::Put(_)) | Some(TxnOp::DeleteRange(_)) => true,
        Some(TxnOp::Txn(nested)) => txn_writes(nested),
        Some(TxnOp::Range(_)) | None => false,
    })
}

/// The first entries of a new cluster's log: its initial voters, committed in term 1.
fn bootstrap(voters: &[u64]) -> (Vec<Entry>, HardState) {
    let entries: Vec<Entry> = voters
        .iter()
        .enumerate()
        .map(|(i, &node_id)| {
            let cc = ConfChange { change_type: ConfChangeType::AddNode as i32, node_id, context: Vec::new() };
            Entry { term: 1, index: i as u64 + 1, entry_type: EntryType::ConfChange as i32, data: cc.encode_to_vec() }
        })
        .collect();
    let hard_state = HardState { term: 1, vote: 0, commit: voters.len() as u64 };
    (entries, hard_state)
}

impl<D: Disk, B: Backend> Node<D, B> {
    /// Opens the member: recovers the WAL, the store and Raft's log, and restores the store
    /// from the snapshot image if a crash left it behind the snapshot point. A brand-new
    /// member of a new cluster writes the bootstrap entries (one `AddNode` per initial voter,
    /// identical on every initial member) so that the membership is in the log, where a
    /// member joining later learns it too.
    pub async fn open(config: NodeConfig, disk: D, backend: B, mut rng: ChaCha8Rng) -> Result<Node<D, B>, NodeError> {
        let (mut wal, recovered) = Wal::open(disk, config.wal_segment_bytes)?;
        let mut kv = KvStore::open(backend)?;
        // Entries are applied only once durable in the log, so a store ahead of the log means
        // records the log had synced are gone: starting would reuse their indexes.
        let log_end = recovered.entries.last().map_or(recovered.snapshot.index, |e| e.index);
        if kv.applied_index() > log_end && !config.plants.has(Plant::StartOnLostLog) {
            return Err(NodeError::Corrupt(format!(
                "the store has applied the log up to index {}, but the WAL ends at index {log_end}: records it had \
                 synced are missing from the end of {}",
                kv.applied_index(),
                wal.segment()
            )));
        }
        let mut log = MemStorage::default();
        let fresh = recovered.snapshot.index == 0 && recovered.entries.is_empty() && recovered.hard_state.is_empty();
        if fresh && !config.initial_voters.is_empty() {
            let (entries, hard_state) = bootstrap(&config.initial_voters);
            let wal_entries: Vec<WalEntry> =
                entries.iter().map(|e| WalEntry { index: e.index, data: e.encode_to_vec() }).collect();
            wal.save(Some(hard_state.encode_to_vec()), &wal_entries)?;
            wal.sync().await?;
            log.append(&entries);
            log.set_hard_state(hard_state);
        }
        let mut snapshot_index = 0;
        if recovered.snapshot.index > 0 {
            let metadata: SnapshotMetadata = decode(&recovered.snapshot.meta, "snapshot metadata")?;
            if kv.applied_index() < metadata.index {
                let image = wal.snapshot_image(metadata.index)?.ok_or_else(|| {
                    NodeError::Corrupt(format!(
                        "store at {} is behind snapshot {} and the snapshot image is missing",
                        kv.applied_index(),
                        metadata.index
                    ))
                })?;
                backend::restore(kv.backend_mut(), &image).map_err(MvccError::from)?;
                kv.backend_mut().sync().map_err(MvccError::from)?;
                kv.reload()?;
            }
            snapshot_index = metadata.index;
            log.apply_snapshot(Snapshot { data: Vec::new(), metadata: Some(metadata) })
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
        }
        let entries: Vec<Entry> =
            recovered.entries.iter().map(|e| decode(&e.data, "log entry")).collect::<Result<_, _>>()?;
        log.append(&entries);
        if !recovered.hard_state.is_empty() {
            log.set_hard_state(decode::<HardState>(&recovered.hard_state, "hard state")?);
        }
        let conf_state = log.initial_state().1;
        let mut raft_config = Config::new(config.id);
        raft_config.election_tick = config.election_ticks;
        raft_config.heartbeat_tick = config.heartbeat_ticks;
        raft_config.plants = config.plants;
        let raft_rng = ChaCha8Rng::from_rng(&mut rng).expect("a ChaCha8Rng never fails");
        let raw = RawNode::new(raft_config, log, raft_rng);
        let id_prefix = (config.id & 0xffff) << 48 | (rng.next_u64() & 0xffff) << 32;
        let alarms = load_alarms(&kv)?;
        let published = load_published(&kv)?;
        let store_bytes = kv.backend().size_bytes();
        Ok(Node {
            watches: WatchHub::new(config.watch, config.plants.has(Plant::SkipWatchEvent)),
            config,
            raw,
            wal,
            kv,
            conf_state,
            rng,
            id_prefix,
            next_seq: 0,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            snapshot_index,
            pending_snapshot: None,
            in_flight: VecDeque::new(),
            revoking: BTreeSet::new(),
            alarms,
            published,
            next_watch_progress_ms: 0,
            store_bytes,
            fatal: None,
            probe: None,
            out: Output::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The store (read-only).
    pub fn store(&self) -> &KvStore<B> {
        &self.kv
    }

    /// The WAL (read-only).
    pub fn wal(&self) -> &Wal<D> {
        &self.wal
    }

    /// Current membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// What each member published about itself, by member id.
    pub fn published_members(&self) -> &BTreeMap<u64, MemberAttributes> {
        &self.published
    }

    /// Active alarms: `(member id, alarm type)`.
    pub fn alarms(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.alarms.iter().copied()
    }

    /// Whether `request` would grow the store past its quota (etcd's check: the store's size
    /// plus the request's); such a request raises the NOSPACE alarm and is refused.
    fn over_quota(&self, request: &Request) -> bool {
        let cost = match request {
            Request::Put(p) => p.encoded_len(),
            Request::Txn(t) => t.encoded_len(),
            Request::LeaseGrant { .. } => 0,
            _ => return false,
        } as u64
            + 64;
        self.store_bytes + cost > self.config.quota_bytes
    }

    /// Where the node stands.
    pub fn status(&self) -> Status {
        let raft = &self.raw.raft;
        Status {
            id: self.config.id,
            term: raft.term,
            leader: raft.lead,
            role: raft.state,
            commit: raft.raft_log.committed,
            applied: self.kv.applied_index(),
            revision: self.kv.current_revision(),
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn planted(&self, plant: Plant) -> bool {
        self.config.plants.has(plant)
    }

    /// Compacts the store's storage (etcd's defragmentation); a failure stops the node.
    pub fn defragment(&mut self) -> Result<(), NodeError> {
        self.kv.backend_mut().defragment().map_err(|e| NodeError::Store(e.into()))?;
        self.store_bytes = self.kv.backend().size_bytes();
        Ok(())
    }

    /// The store's image at its applied index (what a snapshot ships).
    pub fn store_image(&self) -> Result<Vec<u8>, NodeError> {
        backend::dump(self.kv.backend()).map_err(|e| NodeError::Store(e.into()))
    }

    /// Everything produced since the last call.
    pub fn take_output(&mut self) -> Output {
        self.out.watch.extend(self.watches.take_responses());
        std::mem::take(&mut self.out)
    }

    fn reply(&mut self, token: u64, result: Result<Reply, EtcdError>) {
        self.out.replies.push((token, result));
    }

    fn next_proposal_id(&mut self) -> u64 {
        self.next_seq += 1;
        self.id_prefix | (self.next_seq & 0xffff_ffff)
    }

    /// Advances the clock by one tick: Raft's timers, request deadlines and lease expiry.
    pub fn tick(&mut self, now_ms: u64) {
        self.raw.tick();
        let proposals =
            take_expired(&mut self.proposals, now_ms, |p| p.deadline.at_ms).into_iter().map(|p| (p.token, p.deadline));
        let reads =
            take_expired(&mut self.reads, now_ms, |r| r.deadline.at_ms).into_iter().map(|r| (r.token, r.deadline));
        let timed_out: Vec<(u64, Deadline)> = proposals.chain(reads).collect();
        for (token, deadline) in timed_out {
            self.reply(token, Err(deadline.error()));
        }
        if now_ms >= self.next_watch_progress_ms {
            if self.next_watch_progress_ms > 0 {
                self.watches.notify_progress(self.kv.current_revision());
            }
            self.next_watch_progress_ms = now_ms + self.config.watch_progress_ms;
        }
        if let Err(e) = self.watches.catch_up(&self.kv) {
            self.fail(e);
        }
        if self.is_leader() || self.planted(Plant::ExpireLeaseOnFollowerClock) {
            for id in self.kv.lessor_mut().expired(now_ms, 16) {
                self.revoking.insert(id);
                self.propose(None, Op::LeaseRevoke(LeaseRevoke { id, expired: true }));
            }
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) {
        self.raw.step(msg);
    }

    /// Starts an election now (tests and leadership tools).
    pub fn campaign(&mut self) {
        self.raw.campaign();
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// The deadline of a request taken at `now_ms` whose client gives up at `client_ms`.
    pub fn deadline(&self, now_ms: u64, client_ms: Option<u64>) -> Deadline {
        let own_ms = now_ms.saturating_add(self.config.request_timeout_ms);
        match client_ms {
            Some(at_ms) if at_ms < own_ms => Deadline { at_ms, client: true },
            _ => Deadline { at_ms: own_ms, client: false },
        }
    }

    /// Proposes `op`; `waiter` (a token and its deadline) hears the outcome.
    fn propose(&mut self, waiter: Option<(u64, Deadline)>, op: Op) {
        let id = self.next_proposal_id();
        let data = Proposal { id, op: Some(op) }.encode_to_vec();
        if data.len() > self.config.max_request_bytes {
            if let Some((token, _)) = waiter {
                self.reply(token, Err(EtcdError::RequestTooLarge));
            }
            return;
        }
        match self.raw.propose(data) {
            Ok(()) => {
                if let Some((token, deadline)) = waiter {
                    let proposed_nanos = self.probe_now();
                    self.proposals.insert(id, Pending { token, deadline, proposed_nanos });
                }
            }
            Err(_) => {
                if let Some((token, _)) = waiter {
                    self.reply(token, Err(EtcdError::NoLeader));
                }
            }
        }
    }

    fn read_through_raft(&mut self, token: u64, kind: ReadKind, deadline: Deadline) {
        let id = self.next_proposal_id();
        self.reads.insert(id, PendingRead { token, kind, deadline, index: None });
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    /// Takes a client request; the answer appears in a later [`Output`] under `token`. A
    /// request not answered by `deadline_ms` (the client's deadline, on this node's clock) or
    /// within the request timeout is answered that it ran out of time.
    pub fn request(&mut self, token: u64, request: Request, now_ms: u64, deadline_ms: Option<u64>) {
        let deadline = self.deadline(now_ms, deadline_ms);
        let waiter = Some((token, deadline));
        let checked = match &request {
            Request::Range(r) => validate::range(r),
            Request::Put(p) => validate::put(p),
            Request::DeleteRange(d) => validate::delete_range(d),
            Request::Txn(t) => validate::txn(t),
            Request::LeaseGrant { ttl, .. } => validate::lease_ttl(*ttl),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            return self.reply(token, Err(e));
        }
        if self.over_quota(&request) {
            if !self.alarms.contains(&(self.config.id, alarm::NOSPACE)) {
                let raise = AlarmChange { member_id: self.config.id, alarm: alarm::NOSPACE, activate: true };
                self.propose(None, Op::Alarm(raise));
            }
            return self.reply(token, Err(EtcdError::NoSpace));
        }
        match request {
            Request::Range(r) if r.serializable || self.planted(Plant::ReadWithoutReadIndex) => {
                let result = self.serve_range(&r);
                self.reply(token, result);
            }
            Request::Range(r) => self.read_through_raft(token, ReadKind::Range(r), deadline),
            Request::Put(p) => self.propose(waiter, Op::Put(p)),
            Request::DeleteRange(d) => self.propose(waiter, Op::DeleteRange(d)),
            Request::Txn(t) => self.propose(waiter, Op::Txn(t)),
            Request::Compact { revision } => self.propose(waiter, Op::Compact(revision)),
            Request::LeaseGrant { id, ttl } => {
                let id = if id != 0 { id } else { (self.rng.gen::<u64>() >> 1).max(1) as i64 };
                let ttl = ttl.max(self.config.min_lease_ttl_secs());
                self.propose(waiter, Op::LeaseGrant(LeaseGrant { id, ttl }));
            }
            Request::LeaseRevoke { id } => self.propose(waiter, Op::LeaseRevoke(LeaseRevoke { id, expired: false })),
            Request::LeaseKeepAlive { id } if self.is_leader() => {
                self.read_through_raft(token, ReadKind::KeepAlive(id), deadline)
            }
            Request::LeaseTimeToLive { id, keys } if self.is_leader() => {
                let result = match (self.kv.lessor().get(id), self.kv.lessor().remaining_ms(id, now_ms)) {
                    (Some(lease), Some(left)) => Ok(Response::LeaseTimeToLive {
                        id,
                        // Whole seconds left, rounded down, as etcd reports them: the clock
                        // reads whole milliseconds, so what is left is just under `left`.
                        ttl: (left.saturating_sub(1) / 1000) as i64,
                        granted_ttl: lease.ttl_secs,
                        keys: if keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
                    }),
                    _ => Err(EtcdError::LeaseNotFound),
                };
                let revision = self.kv.current_revision();
                self.reply(token, result.map(|response| Reply { revision, response }));
            }
            Request::LeaseKeepAlive { .. } | Request::LeaseTimeToLive { .. } => {
                let error = if self.raw.raft.lead == NONE { EtcdError::NoLeader } else { EtcdError::NotLeader };
                self.reply(token, Err(error));
            }
            Request::LeaseLeases => {
                let response = Response::LeaseLeases(self.kv.lessor().ids());
                self.reply(token, Ok(Reply { revision: self.kv.current_revision(), response }));
            }
            Request::AlarmList => {
                let response = Response::Alarms(alarm_list(&self.alarms));
                self.reply(token, Ok(Reply { revision: self.kv.current_revision(), response }));
            }
            Request::Alarm(change) => self.propose(waiter, Op::Alarm(change)),
            Request::Publish(attributes) => self.propose(waiter, Op::Publish(attributes)),
            Request::ConfChange(mut cc) => {
                let id = self.next_proposal_id();
                cc.context = id.to_be_bytes().to_vec();
                match self.raw.propose_conf_change(&cc) {
                    Ok(()) => {
                        let proposed_nanos = self.probe_now();
                        self.proposals.insert(id, Pending { token, deadline, proposed_nanos });
                    }
                    Err(_) => self.reply(token, Err(EtcdError::NoLeader)),
                }
            }
        }
    }

    /// Creates a watcher for `stream`; its responses appear in [`Output::watch`]. None if
    /// the id the client chose is taken on the stream.
    pub fn watch(&mut self, stream: u64, spec: WatchCreate) -> Result<Option<i64>, NodeError> {
        Ok(self.watches.create(stream, spec, &self.kv)?)
    }

    /// Cancels watcher `watch_id` of `stream`.
    pub fn cancel_watch(&mut self, stream: u64, watch_id: i64) -> bool {
        self.watches.cancel(stream, watch_id, self.kv.current_revision())
    }

    /// Whether watcher `watch_id` of `stream` exists.
    pub fn watch_exists(&self, stream: u64, watch_id: i64) -> bool {
        self.watches.contains(stream, watch_id)
    }

    /// Answers a progress request on `stream` with the current revision.
    pub fn request_watch_progress(&mut self, stream: u64) {
        self.watches.request_progress(stream, self.kv.current_revision());
    }

    /// Drops every watcher of a closed stream.
    pub fn close_watch_stream(&mut self, stream: u64) {
        self.watches.close_stream(stream);
    }

    /// The client of `stream` took `bytes` of its watch responses (the sum of their
    /// [`WatchResponse::bytes`]): its watchers that fell behind catch up as room allows.
    pub fn watch_consumed(&mut self, stream: u64, bytes: usize) {
        if let Err(e) = self.watches.consumed(stream, bytes, &self.kv) {
            self.fail(e);
        }
    }

    /// Records a store failure met outside `process`: the next `process` reports it.
    fn fail(&mut self, e: MvccError) {
        if let Err(fatal) = mvcc_error(e) {
            self.fatal.get_or_insert(fatal);
        }
    }

    /// Serves a read from the store; a backend failure stops the node (at the next
    /// `process`) and answers "server stopped".
    fn serve_range(&mut self, req: &RangeRequest) -> Result<Reply, EtcdError> {
        match self.kv.range(req) {
            Ok(r) => Ok(Reply { revision: self.kv.current_revision(), response: Response::Range(r) }),
            Err(e) => match mvcc_error(e) {
                Ok(client_error) => Err(client_error),
                Err(fatal) => {
                    self.fatal.get_or_insert(fatal);
                    Err(EtcdError::Stopped)
                }
            },
        }
    }

    /// Carries out everything Raft asked for: sends, persists (with an fsync), applies, and
    /// serves confirmed reads, until nothing is left to do or in flight. Call after feeding
    /// inputs; an error means the node must stop. (A driver that takes new inputs while the
    /// disk works calls [`Node::start_ready`], [`Node::wait`] and [`Node::finish_durable`]
    /// itself.)
    pub async fn process(&mut self, transport: &mut impl Transport, now_ms: u64) -> Result<(), NodeError> {
        loop {
            self.finish_durable(transport, now_ms).await?;
            if self.start_ready(transport, now_ms).await? {
                continue;
            }
            if self.in_flight.is_empty() {
                return Ok(());
            }
            future::poll_fn(|cx| self.poll_durable(cx)).await;
        }
    }

    /// Starts carrying out Raft's next ready, if there is one and room in the pipeline: sends
    /// what may leave before persisting, writes the ready's entries, hard state and snapshot
    /// to the WAL and starts making them durable, then applies the committed entries
    /// (durable already) and serves the reads they complete, so their replies are in the
    /// output while the disk works. The ready stays in flight until [`Node::finish_durable`]
    /// finds its writes durable; meanwhile the driver may feed inputs and start the next.
    /// Returns whether a ready was started.
    pub async fn start_ready(&mut self, transport: &mut impl Transport, now_ms: u64) -> Result<bool, NodeError> {
        if let Some(fatal) = self.fatal.take() {
            return Err(fatal);
        }
        if !self.raw.has_ready() || !self.may_start_ready() {
            return Ok(false);
        }
        let mut ready = self.raw.ready();
        if let Some(soft) = &ready.soft_state {
            self.on_role_change(soft.role, now_ms);
        }
        let sending = !ready.messages.is_empty();
        for msg in std::mem::take(&mut ready.messages) {
            transport.send(self.with_snapshot_image(msg)?);
        }
        if sending && ready.must_persist() {
            // Let the driver's other tasks run once, so a leader's appends are on their way
            // to the followers before its own sync (which a disk may make on this thread).
            yield_once().await;
        }
        let mut durable = self.write(&ready)?.map(future::maybe_done);
        if let Some(sync) = durable.as_mut() {
            // One poll hands the disk its work now, so it runs while the entries apply.
            let _ = futures::poll!(Pin::new(sync));
        }
        self.apply_committed(&ready, now_ms)?;
        for rs in std::mem::take(&mut ready.read_states) {
            let id = rs.request_ctx.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if let Some(read) = self.reads.get_mut(&id) {
                read.index = Some(rs.index);
            }
        }
        self.raw.handed_out(&ready);
        self.serve_confirmed_reads(now_ms);
        self.in_flight.push_back(Persisting { ready, durable });
        Ok(true)
    }

    /// Whether another ready may start now. A snapshot from the leader goes alone: it starts
    /// only when nothing else is in flight and nothing starts until it is installed.
    fn may_start_ready(&self) -> bool {
        let Some(last) = self.in_flight.back() else { return true };
        self.in_flight.len() < self.config.max_writes_in_flight
            && last.ready.snapshot.is_none()
            && self.raw.raft.raft_log.snapshot_to_write().is_none()
    }

    /// Waits until the oldest ready in flight is durable (then call [`Node::finish_durable`])
    /// or the next of the driver's `inputs` arrives, whichever comes first (durability if both).
    pub async fn wait<S: Stream + Unpin>(&mut self, inputs: &mut S) -> Wake<S::Item> {
        future::poll_fn(|cx| match self.poll_durable(cx) {
            Poll::Ready(()) => Poll::Ready(Wake::Durable),
            Poll::Pending => inputs.poll_next_unpin(cx).map(|next| next.map_or(Wake::Closed, Wake::Input)),
        })
        .await
    }

    /// Ready once the oldest ready in flight is durable (never, if none is in flight).
    fn poll_durable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.in_flight.front_mut() {
            None => Poll::Pending,
            Some(Persisting { durable: None, .. }) => Poll::Ready(()),
            Some(Persisting { durable: Some(sync), .. }) => Pin::new(sync).poll(cx),
        }
    }

    /// Completes, oldest first, the readies in flight whose writes are durable (each one's
    /// only after every earlier one's): records them in Raft's log, installs a received
    /// snapshot, sends the messages that had to wait for durability, and snapshots when due.
    /// Returns whether any completed.
    pub async fn finish_durable(&mut self, transport: &mut impl Transport, now_ms: u64) -> Result<bool, NodeError> {
        let mut finished = false;
        while futures::poll!(future::poll_fn(|cx| self.poll_durable(cx))).is_ready() {
            let Persisting { ready, durable } = self.in_flight.pop_front().expect("a durable ready is in flight");
            if let Some(mut sync) = durable {
                Pin::new(&mut sync).take_output().expect("the sync completed")?;
            }
            self.finish_ready(ready, transport)?;
            finished = true;
        }
        if finished {
            self.serve_confirmed_reads(now_ms);
            self.maybe_snapshot().await?;
        }
        Ok(finished)
    }

    /// Completes one ready whose writes are durable.
    fn finish_ready(&mut self, mut ready: Ready, transport: &mut impl Transport) -> Result<(), NodeError> {
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot)?;
        }
        let log = self.raw.store_mut();
        log.append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            log.set_hard_state(hs);
        }
        for msg in std::mem::take(&mut ready.persisted_messages) {
            transport.send(self.with_snapshot_image(msg)?);
        }
        self.raw.persisted(&ready);
        Ok(())
    }

    fn apply_committed(&mut self, ready: &Ready, now_ms: u64) -> Result<(), NodeError> {
        if ready.committed_entries.is_empty() {
            return Ok(());
        }
        let apply_started = self.probe_now();
        for entry in &ready.committed_entries {
            self.apply(entry, now_ms)?;
        }
        // One backend write for the whole batch.
        self.kv.flush()?;
        self.store_bytes = self.kv.backend().size_bytes();
        if let Some(probe) = &self.probe {
            probe.applied(probe.now_nanos().saturating_sub(apply_started));
        }
        Ok(())
    }

    fn on_role_change(&mut self, role: StateRole, now_ms: u64) {
        self.revoking.clear();
        if role == StateRole::Leader {
            self.out.became_leader.push(self.raw.raft.term);
            self.kv.lessor_mut().promote(now_ms);
        } else if !self.planted(Plant::ExpireLeaseOnFollowerClock) {
            self.kv.lessor_mut().demote();
        }
    }

    /// Writes the ready's snapshot point, entries and hard state to the WAL; returns the sync
    /// that makes them durable, unless nothing written needs one.
    fn write(&mut self, ready: &Ready) -> Result<Option<WalSync>, NodeError> {
        if !ready.must_persist() {
            return Ok(None);
        }
        if let Some(snapshot) = &ready.snapshot {
            let meta = snapshot.metadata.clone().unwrap_or_default().encode_to_vec();
            self.wal.save_snapshot(SnapshotPoint { index: snapshot.index(), meta }, Some(&snapshot.data))?;
        }
        let entries: Vec<WalEntry> =
            ready.entries.iter().map(|e| WalEntry { index: e.index, data: e.encode_to_vec() }).collect();
        // As etcd: entries, a snapshot, a new term or a vote must be durable before anything
        // is sent or applied; an advanced commit index alone need not be, since a restarted
        // member learns it again (and skips what its store already applied).
        let durable = self.raw.store().hard_state();
        let must_sync = !entries.is_empty()
            || ready.snapshot.is_some()
            || ready.hard_state.is_some_and(|hs| hs.term != durable.term || hs.vote != durable.vote);
        self.wal.save(ready.hard_state.map(|hs| hs.encode_to_vec()), &entries)?;
        Ok(must_sync.then(|| Box::pin(self.wal.sync()) as WalSync))
    }

    /// A snapshot message leaves with an image of the store as it is now, as etcd sends one:
    /// the snapshot point moves up to the applied index, whose term and membership go with
    /// it. (The follower acknowledges that index, which covers what Raft asked to send.) No
    /// image is kept otherwise: the store itself is the state a snapshot point stands for.
    fn with_snapshot_image(&self, mut msg: Message) -> Result<Message, NodeError> {
        if let Some(snapshot) = msg.snapshot.as_mut() {
            let index = self.kv.applied_index();
            let term = self
                .raw
                .raft
                .raft_log
                .term(index)
                .map_err(|e| NodeError::Corrupt(format!("no term for applied index {index}: {e}")))?;
            snapshot.data = backend::dump(self.kv.backend()).map_err(MvccError::from)?;
            snapshot.metadata = Some(SnapshotMetadata { conf_state: Some(self.conf_state.clone()), index, term });
        }
        Ok(msg)
    }

    /// Replaces the store with a snapshot from the leader (already saved beside the WAL).
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let point = Snapshot { data: Vec::new(), metadata: snapshot.metadata.clone() };
        self.raw.store_mut().apply_snapshot(point).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        backend::restore(self.kv.backend_mut(), &snapshot.data).map_err(MvccError::from)?;
        self.kv.backend_mut().sync().map_err(MvccError::from)?;
        self.kv.reload()?;
        self.store_bytes = self.kv.backend().size_bytes();
        self.alarms = load_alarms(&self.kv)?;
        self.published = load_published(&self.kv)?;
        self.conf_state = snapshot.conf_state();
        self.snapshot_index = snapshot.index();
        // The received point is newer than any of our own still waiting for the store.
        self.pending_snapshot = None;
        if self.is_leader() || self.planted(Plant::ExpireLeaseOnFollowerClock) {
            // Reloaded leases have no expiry yet.
            self.kv.lessor_mut().promote(0);
        }
        self.watches.catch_up(&self.kv)?;
        Ok(())
    }

    /// Measures the driver's steps from now on.
    pub fn set_probe(&mut self, probe: Box<dyn Probe>) {
        self.probe = Some(probe);
    }

    fn probe_now(&self) -> u64 {
        self.probe.as_ref().map_or(0, |p| p.now_nanos())
    }

    /// The proposal `id` of this member, now committed, if it is still waiting.
    fn take_committed(&mut self, id: u64) -> Option<Pending> {
        let pending = self.proposals.remove(&id)?;
        if let Some(probe) = &self.probe {
            probe.committed(probe.now_nanos().saturating_sub(pending.proposed_nanos));
        }
        Some(pending)
    }

    fn apply(&mut self, entry: &Entry, now_ms: u64) -> Result<(), NodeError> {
        let already = entry.index <= self.kv.applied_index() && !self.planted(Plant::ReapplyAfterRestart);
        if entry.is_conf_change() {
            let cc: ConfChange = decode(&entry.data, "conf change")?;
            self.conf_state = self.raw.apply_conf_change(&cc);
            if already {
                return Ok(());
            }
            let mut apply = self.kv.begin(entry.index);
            apply.put_meta(META_CONF_STATE, self.conf_state.encode_to_vec());
            let committed = apply.commit();
            let id = cc.context.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if let Some(p) = self.take_committed(id) {
                let response = Response::ConfChange(self.conf_state.clone());
                self.reply(p.token, Ok(Reply { revision: committed.revision, response }));
            }
            self.record(entry, committed.revision, Vec::new(), None);
            return Ok(());
        }
        if already {
            return Ok(());
        }
        if entry.data.is_empty() {
            let committed = self.kv.begin(entry.index).commit();
            self.record(entry, committed.revision, Vec::new(), None);
            return Ok(());
        }
        let proposal: Proposal = decode(&entry.data, "proposal")?;
        let capped = self.alarms.iter().any(|&(_, kind)| kind == alarm::NOSPACE);
        let refused = capped
            && match &proposal.op {
                Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) => true,
                Some(Op::Txn(t)) => txn_writes(t),
                _ => false,
            };
        if refused {
            // etcd's capped applier: the entry applies as a no-op and its client hears why.
            let committed = self.kv.begin(entry.index).commit();
            if let Some(p) = self.take_committed(proposal.id) {
                self.reply(p.token, Err(EtcdError::NoSpace));
            }
            self.record(entry, committed.revision, Vec::new(), None);
            return Ok(());
        }
        let leader_now = (self.is_leader() || self.planted(Plant::ExpireLeaseOnFollowerClock)).then_some(now_ms);
        let mut apply = self.kv.begin(entry.index);
        let mut expired_lease = None;
        let result = match proposal.op {
            Some(Op::Put(p)) => apply.put(&p).map(Response::Put),
            Some(Op::DeleteRange(d)) => apply.delete_range(&d).map(Response::DeleteRange),
            Some(Op::Txn(t)) => apply.txn(&t).map(Response::Txn),
            Some(Op::Compact(rev)) => apply.compact(rev).map(|()| Response::Compact),
            Some(Op::LeaseGrant(g)) => {
                apply.lease_grant(g.id, g.ttl, leader_now).map(|()| Response::LeaseGrant { id: g.id, ttl: g.ttl })
            }
            Some(Op::LeaseRevoke(r)) => {
                let revoked = apply.lease_revoke(r.id);
                if r.expired && revoked.is_ok() {
                    expired_lease = Some(r.id);
                }
                revoked.map(|()| Response::LeaseRevoke)
            }
            Some(Op::Alarm(change)) => {
                let key = (change.member_id, change.alarm);
                let changed = if change.activate { self.alarms.insert(key) } else { self.alarms.remove(&key) };
                apply.put_meta(META_ALARMS, ActiveAlarms { alarms: alarm_list(&self.alarms) }.encode_to_vec());
                Ok(Response::Alarms(if changed { vec![change] } else { Vec::new() }))
            }
            Some(Op::Publish(attributes)) => {
                self.published.insert(attributes.member_id, attributes);
                let members = PublishedMembers { members: self.published.values().cloned().collect() };
                apply.put_meta(META_MEMBERS, members.encode_to_vec());
                Ok(Response::Published)
            }
            None => return Err(NodeError::Corrupt(format!("entry {} has no operation", entry.index))),
        };
        let committed = apply.commit();
        self.watches.notify(committed.revision, &committed.events, &self.kv)?;
        if let Some(p) = self.take_committed(proposal.id) {
            let answer = match result {
                Ok(response) => Ok(Reply { revision: committed.revision, response }),
                Err(e) => Err(mvcc_error(e)?),
            };
            self.reply(p.token, answer);
        } else if let Err(MvccError::Backend(e)) = result {
            return Err(MvccError::Backend(e).into());
        }
        self.record(entry, committed.revision, committed.events, expired_lease);
        Ok(())
    }

    fn record(&mut self, entry: &Entry, revision: i64, events: Vec<Event>, expired_lease: Option<i64>) {
        if self.config.record_applied {
            self.out.applied.push(Applied {
                index: entry.index,
                term: entry.term,
                data: entry.data.clone(),
                revision,
                events,
                expired_lease,
            });
        }
    }

    fn serve_confirmed_reads(&mut self, now_ms: u64) {
        let applied = self.kv.applied_index();
        let ready: Vec<u64> =
            self.reads.iter().filter(|(_, r)| r.index.is_some_and(|i| i <= applied)).map(|(&id, _)| id).collect();
        for id in ready {
            let read = self.reads.remove(&id).expect("present");
            let result = match read.kind {
                ReadKind::Range(r) => self.serve_range(&r),
                ReadKind::KeepAlive(_) if !self.is_leader() => Err(EtcdError::NotLeader),
                ReadKind::KeepAlive(lease) if self.revoking.contains(&lease) => Err(EtcdError::LeaseNotFound),
                ReadKind::KeepAlive(lease) => match self.kv.lessor_mut().renew(lease, now_ms) {
                    Some(ttl) => Ok(Reply {
                        revision: self.kv.current_revision(),
                        response: Response::LeaseKeepAlive { id: lease, ttl },
                    }),
                    None => Err(EtcdError::LeaseNotFound),
                },
            };
            self.reply(read.token, result);
        }
    }

    /// Takes a snapshot point every `snapshot_count` applied entries. The store first syncs
    /// what is applied, which takes a while (the node goes on meanwhile, and checks at each
    /// ready); then the point is recorded in the WAL, and the WAL and Raft's log are
    /// compacted up to it (keeping some entries for slow followers).
    async fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.kv.applied_index();
        if self.pending_snapshot.is_none() && applied >= self.snapshot_index + self.config.snapshot_count {
            let synced = self.kv.backend_mut().start_sync();
            self.pending_snapshot =
                Some(PendingSnapshot { index: applied, conf_state: self.conf_state.clone(), synced });
        }
        let skip_sync = self.planted(Plant::SnapshotWithoutStoreSync);
        let Some(pending) = self.pending_snapshot.as_mut() else { return Ok(()) };
        if !skip_sync {
            let Poll::Ready(synced) = futures::poll!(pending.synced.as_mut()) else { return Ok(()) };
            synced.map_err(MvccError::from)?;
        }
        let PendingSnapshot { index, conf_state, .. } = self.pending_snapshot.take().expect("polled above");
        let log = self.raw.store_mut();
        let snapshot = log
            .create_snapshot(index, conf_state, Vec::new())
            .map_err(|e| NodeError::Corrupt(format!("snapshot at {index}: {e}")))?;
        let meta = snapshot.metadata.clone().unwrap_or_default().encode_to_vec();
        self.wal.save_snapshot(SnapshotPoint { index, meta }, None)?;
        self.wal.sync().await?;
        self.wal.compact().await?;
        let keep_from = index.saturating_sub(self.config.snapshot_catchup_entries);
        let log = self.raw.store_mut();
        if keep_from > log.first_index() {
            log.compact(keep_from).map_err(|e| NodeError::Corrupt(format!("log compaction at {keep_from}: {e}")))?;
        }
        self.snapshot_index = index;
        Ok(())
    }
}
