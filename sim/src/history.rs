//! What a run records: client operations, applied entries, leadership claims, watch
//! sessions, lease acknowledgements, faults, and the trace hash over all of it.
//!
//! Every event is fed, in the order the simulation produces it, into one xxh3 hasher with
//! its simulated timestamp; equal seeds must give equal hashes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use keel_node::Applied;
use keel_storage::mvcc::Event;
use prost::Message as _;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Nanoseconds of simulated time since the run began.
pub type Nanos = u64;

pub use keel_check::{KvInput, KvOp, KvOutput};

/// One watch session: a watcher on one node, until it broke or the run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSession {
    /// Watch client.
    pub client: u64,
    /// Node watched.
    pub node: u64,
    /// Key range.
    pub key: Vec<u8>,
    /// Range end.
    pub range_end: Vec<u8>,
    /// Requested start revision.
    pub start_revision: i64,
    /// Whether prev_kv was asked for.
    pub prev_kv: bool,
    /// Event batches received, each with its response revision.
    pub responses: Vec<Vec<Event>>,
    /// Canceled by the server because history was compacted: the compaction revision.
    pub compacted: Option<i64>,
}

/// An acknowledged lease grant or keep-alive: the lease must live `ttl_secs` from `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAck {
    /// Lease id.
    pub lease: i64,
    /// When the request was sent.
    pub sent: Nanos,
    /// The TTL acknowledged.
    pub ttl_secs: i64,
}

/// Everything recorded in one run.
pub struct Recorder {
    start: madsim::time::Instant,
    trace: Xxh3,
    events: u64,
    /// Client operations.
    pub ops: Vec<KvOp>,
    /// Applied entries per node, in apply order, with when they were applied.
    pub applied: BTreeMap<u64, Vec<(Nanos, Applied)>>,
    /// Which node claimed leadership of each term.
    pub leaders: BTreeMap<u64, Vec<u64>>,
    /// Watch sessions.
    pub watches: Vec<WatchSession>,
    /// Lease acknowledgements.
    pub lease_acks: Vec<LeaseAck>,
    /// Fault log lines, for the report.
    pub faults: Vec<String>,
    /// Liveness failures.
    pub liveness: Vec<String>,
    /// Members that started serving on damaged durable state instead of refusing to.
    pub damage: Vec<String>,
}

/// The recorder, shared by every simulated node and client.
pub type Shared = Arc<Mutex<Recorder>>;

impl Recorder {
    /// A fresh recorder; call inside the simulation.
    pub fn new() -> Shared {
        Arc::new(Mutex::new(Recorder {
            start: madsim::time::Instant::now(),
            trace: Xxh3::new(),
            events: 0,
            ops: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            watches: Vec::new(),
            lease_acks: Vec::new(),
            faults: Vec::new(),
            liveness: Vec::new(),
            damage: Vec::new(),
        }))
    }

    /// Simulated time since the run began.
    pub fn now(&self) -> Nanos {
        self.start.elapsed().as_nanos() as Nanos
    }

    /// Feeds one event into the trace hash.
    pub fn trace(&mut self, kind: &str, body: &[u8]) {
        let now = self.now();
        self.trace.update(&now.to_le_bytes());
        self.trace.update(kind.as_bytes());
        self.trace.update(&(body.len() as u64).to_le_bytes());
        self.trace.update(body);
        self.events += 1;
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.digest()
    }

    /// Events traced so far.
    pub fn trace_events(&self) -> u64 {
        self.events
    }

    /// Records a fault.
    pub fn fault(&mut self, line: String) {
        self.trace("fault", line.as_bytes());
        let at = self.now() as f64 / 1e9;
        self.faults.push(format!("{at:9.3}s {line}"));
    }

    /// Records an applied entry.
    pub fn applied(&mut self, node: u64, applied: Applied) {
        let mut body = node.to_le_bytes().to_vec();
        body.extend_from_slice(&applied.index.to_le_bytes());
        body.extend_from_slice(&applied.term.to_le_bytes());
        body.extend_from_slice(&applied.revision.to_le_bytes());
        body.extend_from_slice(&xxh3_64(&applied.data).to_le_bytes());
        body.extend_from_slice(&events_hash(&applied.events).to_le_bytes());
        self.trace("apply", &body);
        let now = self.now();
        self.applied.entry(node).or_default().push((now, applied));
    }

    /// Records a leadership claim.
    pub fn became_leader(&mut self, node: u64, term: u64) {
        let mut body = node.to_le_bytes().to_vec();
        body.extend_from_slice(&term.to_le_bytes());
        self.trace("leader", &body);
        self.leaders.entry(term).or_default().push(node);
    }
}

/// Hash of a list of events (for comparing replicas).
pub fn events_hash(events: &[Event]) -> u64 {
    let mut h = Xxh3::new();
    for e in events {
        h.update(&e.encode_to_vec());
    }
    h.digest()
}
