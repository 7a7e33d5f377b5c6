//! Single-member tests of the node core, driven by hand with an in-memory disk and backend.

use keel_api::EtcdError;
use keel_net::Transport;
use keel_raft::Message;
use keel_storage::backend::MemBackend;
use keel_storage::mvcc::{DeleteRangeRequest, PutRequest, RangeRequest, Request as TxnOp, RequestOp, TxnRequest};
use keel_storage::wal::MemDisk;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Node, NodeConfig, Reply, Request, Response, WatchCreate, WatchLimits, WatchResponse};

/// The in-memory disk never pends, so one poll finishes any future here.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("in-memory futures complete at once"),
    }
}

struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, msg: Message) {
        panic!("a single member has no one to send {msg:?} to");
    }
}

struct Member {
    node: Node<MemDisk, MemBackend>,
    now: u64,
    token: u64,
    /// Watch responses seen so far.
    watched: Vec<WatchResponse>,
}

impl Member {
    fn open(disk: MemDisk, backend: MemBackend) -> Member {
        Member::open_with(NodeConfig::new(1, vec![1]), disk, backend)
    }

    fn open_with(config: NodeConfig, disk: MemDisk, backend: MemBackend) -> Member {
        let node = ready(Node::open(config, disk, backend, ChaCha8Rng::seed_from_u64(1))).expect("opens");
        let mut member = Member { node, now: 0, token: 0, watched: Vec::new() };
        member.process(); // applies the bootstrap membership
        member.node.campaign();
        member.process();
        member
    }

    fn process(&mut self) {
        ready(self.node.process(&mut NoPeers, self.now)).expect("processes");
    }

    fn call(&mut self, request: Request) -> Result<Reply, EtcdError> {
        self.token += 1;
        self.node.request(self.token, request, self.now, None);
        self.process();
        let out = self.node.take_output();
        self.watched.extend(out.watch);
        out.replies.into_iter().find(|(t, _)| *t == self.token).map(|(_, r)| r).expect("answered")
    }

    fn put(&mut self, key: &str, value: &str, lease: i64) -> Reply {
        let req = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
        self.call(Request::Put(req)).expect("put")
    }

    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        let reply = self.call(Request::Range(RangeRequest { key: key.into(), ..Default::default() })).expect("get");
        match reply.response {
            Response::Range(r) => r.kvs.first().map(|kv| kv.value.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn writes_and_linearizable_reads() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    assert_eq!(m.put("a", "1", 0).revision, 2);
    assert_eq!(m.put("a", "2", 0).revision, 3);
    assert_eq!(m.get("a"), Some(b"2".to_vec()));
    let del = m.call(Request::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() }));
    assert!(matches!(del.unwrap().response, Response::DeleteRange(d) if d.deleted == 1));
    assert_eq!(m.get("a"), None);
}

#[test]
fn bad_requests_get_etcds_errors_and_change_nothing() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    let empty = m.call(Request::Put(PutRequest::default()));
    assert_eq!(empty, Err(EtcdError::EmptyKey));
    let put = |k: &str| RequestOp { request: Some(TxnOp::Put(PutRequest { key: k.into(), ..Default::default() })) };
    let dup = m.call(Request::Txn(TxnRequest { success: vec![put("x"), put("x")], ..Default::default() }));
    assert_eq!(dup, Err(EtcdError::DuplicateKey));
    let lease = m.call(Request::Put(PutRequest { key: b"k".to_vec(), lease: 42, ..Default::default() }));
    assert_eq!(lease, Err(EtcdError::LeaseNotFound));
    assert_eq!(m.call(Request::Compact { revision: 99 }), Err(EtcdError::FutureRev));
    assert_eq!(m.node.status().revision, 1);
}

#[test]
fn watch_catches_up_and_reports_compaction() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    for i in 0..5 {
        m.put("w", &i.to_string(), 0);
    }
    let spec = WatchCreate { key: b"w".to_vec(), start_revision: 3, prev_kv: true, ..Default::default() };
    m.node.watch(7, spec.clone()).unwrap();
    m.put("w", "live", 0);
    let responses = std::mem::take(&mut m.watched);
    let revisions: Vec<i64> =
        responses.iter().flat_map(|r| r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision)).collect();
    assert_eq!(revisions, vec![3, 4, 5, 6, 7]);
    assert!(responses.iter().flat_map(|r| &r.events).all(|e| e.prev_kv.is_some()));
    m.call(Request::Compact { revision: 5 }).unwrap();
    m.node.watch(8, spec).unwrap();
    let canceled = m.node.take_output().watch.into_iter().find(|r| r.canceled).expect("canceled");
    assert!(m.watched.iter().all(|r| r.stream == 7 && !r.canceled));
    assert_eq!((canceled.stream, canceled.compact_revision), (8, 5));
}

/// Revisions of the events in `responses`, in order.
fn event_revisions(responses: &[WatchResponse]) -> Vec<i64> {
    responses.iter().flat_map(|r| r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision)).collect()
}

#[test]
fn a_slow_watch_stream_holds_back_events_and_catches_up_from_the_store_in_batches() {
    let mut config = NodeConfig::new(1, vec![1]);
    config.watch = WatchLimits { stream_bytes: 1000, batch_revisions: 3, batch_bytes: 100_000 };
    let mut m = Member::open_with(config, MemDisk::default(), MemBackend::new());
    let first = m.node.status().revision + 1;
    let spec = WatchCreate { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() };
    m.node.watch(7, spec.clone()).unwrap();
    for i in 0..30 {
        m.put(&format!("k{i}"), &"v".repeat(100), 0);
    }
    // The client has taken nothing: the stream holds its budget and at most one response more.
    let mut received = std::mem::take(&mut m.watched);
    let largest = received.iter().map(|r| r.bytes).max().unwrap();
    assert!(received.iter().map(|r| r.bytes).sum::<usize>() < 1000 + largest, "bounded: {received:?}");
    assert!(event_revisions(&received).len() < 30, "events were held back");
    // As the client takes what it has, the rest comes from the store, a batch at a time.
    let mut unread: usize = received.iter().map(|r| r.bytes).sum();
    let mut rounds = 0;
    while event_revisions(&received).len() < 30 {
        rounds += 1;
        assert!(rounds < 100, "the watcher never catches up");
        m.node.watch_consumed(7, unread);
        let batch = m.node.take_output().watch;
        assert!(batch.iter().all(|r| event_revisions(std::slice::from_ref(r)).len() <= 3), "{batch:?}");
        unread = batch.iter().map(|r| r.bytes).sum();
        received.extend(batch);
    }
    assert_eq!(event_revisions(&received), (first..first + 30).collect::<Vec<_>>(), "every event once, in order");
    // Caught up, it takes live events again.
    m.node.watch_consumed(7, unread);
    m.put("k-live", "v", 0);
    assert_eq!(event_revisions(&m.watched), vec![first + 30]);
    // A watcher starting far back gets the history in batches too.
    m.node.watch(8, WatchCreate { start_revision: first, ..spec }).unwrap();
    let catch_up: Vec<WatchResponse> =
        m.node.take_output().watch.into_iter().filter(|r| !r.events.is_empty()).collect();
    assert!(catch_up.len() > 1 && catch_up.iter().all(|r| event_revisions(std::slice::from_ref(r)).len() <= 3));
}

#[test]
fn watch_ids_belong_to_streams_and_progress_is_reported() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    let spec = WatchCreate { key: b"p".to_vec(), progress_notify: true, ..Default::default() };
    assert_eq!(m.node.watch(1, spec.clone()).unwrap(), Some(0));
    assert_eq!(m.node.watch(1, spec.clone()).unwrap(), Some(1));
    assert_eq!(m.node.watch(2, spec.clone()).unwrap(), Some(0), "each stream numbers from 0");
    let chosen = WatchCreate { watch_id: 7, ..spec.clone() };
    assert_eq!(m.node.watch(2, chosen.clone()).unwrap(), Some(7));
    assert_eq!(m.node.watch(2, chosen).unwrap(), None, "a taken id");
    let out = m.node.take_output().watch;
    let refused = out.last().unwrap();
    assert!(refused.created && refused.canceled && refused.watch_id == -1);
    assert_eq!(refused.cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");
    assert!(m.node.cancel_watch(1, 0) && !m.node.cancel_watch(1, 0) && m.node.watch_exists(2, 0));
    let canceled = m.node.take_output().watch;
    assert_eq!((canceled.len(), canceled[0].watch_id, canceled[0].canceled), (1, 0, true));

    m.node.request_watch_progress(1);
    let progress = m.node.take_output().watch;
    assert_eq!((progress.len(), progress[0].watch_id, progress[0].stream), (1, -1, 1));

    // A watcher sent an event during an interval gets no notification for it; a quiet one does.
    m.put("p", "x", 0);
    m.watched.clear();
    let interval = m.node.config().watch_progress_ms;
    let notified_at = |m: &mut Member, now: u64| -> Vec<(u64, i64)> {
        m.now = now;
        m.node.tick(now);
        m.node.take_output().watch.iter().filter(|r| r.events.is_empty()).map(|r| (r.stream, r.watch_id)).collect()
    };
    assert_eq!(notified_at(&mut m, 1), []);
    assert_eq!(notified_at(&mut m, interval + 1), [], "all heard of the put");
    assert_eq!(notified_at(&mut m, 2 * interval + 2), [(1, 1), (2, 0), (2, 7)]);
}

#[test]
fn only_the_leader_expires_leases_after_their_ttl() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    let Response::LeaseGrant { id, ttl } = m.call(Request::LeaseGrant { id: 0, ttl: 5 }).unwrap().response else {
        panic!("granted")
    };
    assert_eq!(ttl, 5);
    m.put("held", "x", id);
    m.now = 4_999;
    m.node.tick(m.now);
    m.process();
    assert_eq!(m.get("held"), Some(b"x".to_vec()));
    m.now = 5_000;
    m.node.tick(m.now);
    m.process();
    assert_eq!(m.get("held"), None);
    assert_eq!(m.call(Request::LeaseKeepAlive { id }), Err(EtcdError::LeaseNotFound));
}

#[test]
fn restart_recovers_without_applying_twice() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    m.put("a", "1", 0);
    m.put("b", "2", 0);
    let revision = m.node.status().revision;
    let mut disk = m.node.wal().disk().clone();
    let backend = m.node.store().backend().clone();
    disk.crash();
    let mut again = Member::open(disk, backend);
    assert_eq!(again.node.status().revision, revision);
    assert_eq!(again.get("a"), Some(b"1".to_vec()));
    assert_eq!(again.put("c", "3", 0).revision, revision + 1);
}

#[test]
fn a_log_that_lost_records_the_store_applied_is_refused() {
    let mut m = Member::open(MemDisk::default(), MemBackend::new());
    for key in ["a", "b", "c"] {
        m.put(key, "v", 0);
    }
    let applied = m.node.status().applied;
    let disk = m.node.wal().disk().clone();
    let backend = m.node.store().backend().clone();
    let segment = m.node.wal().segment().to_string();
    let record = keel_storage::wal::entry_record(&disk.files[&segment].data, applied).expect("the last entry");
    let open = |disk: MemDisk| {
        let config = NodeConfig::new(1, vec![1]);
        ready(Node::open(config, disk, backend.clone(), ChaCha8Rng::seed_from_u64(1))).err().expect("refused")
    };
    // The tail cut at a record boundary: the log reads cleanly, the store knows better.
    let mut cut = disk.clone();
    let file = cut.files.get_mut(&segment).unwrap();
    file.data.truncate(record.start);
    file.size = record.start;
    let error = open(cut).to_string();
    assert!(error.contains(&format!("applied the log up to index {applied}")) && error.contains(&segment), "{error}");
    // The log gone altogether.
    assert!(open(MemDisk::default()).to_string().contains("WAL ends at index 0"));
    // Cut inside the record: the log itself is damaged.
    let mut torn = disk.clone();
    let file = torn.files.get_mut(&segment).unwrap();
    file.data.truncate(record.start + 5);
    file.size = record.start + 5;
    assert!(matches!(open(torn), crate::NodeError::Wal(keel_storage::wal::WalError::Corrupt { .. })));
}

/// A disk in memory whose syncs complete, in order, only as the test releases them (what a
/// crash would keep is not modelled here).
#[derive(Clone, Default)]
struct GatedDisk {
    files: std::rc::Rc<std::cell::RefCell<MemDisk>>,
    started: std::rc::Rc<std::cell::Cell<usize>>,
    released: std::rc::Rc<std::cell::Cell<usize>>,
}

impl keel_storage::wal::Disk for GatedDisk {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.files.borrow().list()
    }
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        self.files.borrow().read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.files.borrow_mut().append(name, data)
    }
    fn truncate(&mut self, name: &str, len: u64) -> std::io::Result<()> {
        self.files.borrow_mut().truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        self.files.borrow_mut().remove(name)
    }
    fn sync(&mut self, _name: &str) -> impl std::future::Future<Output = std::io::Result<()>> + use<> {
        self.started.set(self.started.get() + 1);
        let (number, released) = (self.started.get(), self.released.clone());
        std::future::poll_fn(move |_| {
            if released.get() >= number {
                std::task::Poll::Ready(Ok(()))
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

#[test]
fn writes_in_flight_are_answered_in_order_once_durable() {
    let disk = GatedDisk::default();
    disk.released.set(usize::MAX);
    let config = NodeConfig::new(1, vec![1]);
    let mut node = ready(Node::open(config, disk.clone(), MemBackend::new(), ChaCha8Rng::seed_from_u64(1))).unwrap();
    ready(node.process(&mut NoPeers, 0)).unwrap();
    node.campaign();
    ready(node.process(&mut NoPeers, 0)).unwrap();
    disk.released.set(disk.started.get());
    let put = |key: &str| Request::Put(PutRequest { key: key.into(), value: "v".into(), ..Default::default() });
    let answered = |node: &mut Node<GatedDisk, MemBackend>| -> Vec<u64> {
        ready(node.finish_durable(&mut NoPeers, 0)).unwrap();
        ready(node.start_ready(&mut NoPeers, 0)).unwrap();
        node.take_output().replies.into_iter().map(|(token, _)| token).collect()
    };
    node.request(1, put("a"), 0, None);
    assert!(ready(node.start_ready(&mut NoPeers, 0)).unwrap());
    node.request(2, put("b"), 0, None);
    assert!(ready(node.start_ready(&mut NoPeers, 0)).unwrap(), "a second write goes out while the first syncs");
    assert_eq!(answered(&mut node), Vec::<u64>::new(), "nothing is answered before it is durable");
    disk.released.set(disk.released.get() + 1);
    assert_eq!(answered(&mut node), vec![1]);
    disk.released.set(disk.released.get() + 1);
    assert_eq!(answered(&mut node), vec![2]);
}

#[test]
fn a_request_still_waiting_at_its_clients_deadline_is_answered_then() {
    let disk = GatedDisk::default();
    disk.released.set(usize::MAX);
    let config = NodeConfig::new(1, vec![1]);
    let timeout_ms = config.request_timeout_ms;
    let mut node = ready(Node::open(config, disk.clone(), MemBackend::new(), ChaCha8Rng::seed_from_u64(1))).unwrap();
    ready(node.process(&mut NoPeers, 0)).unwrap();
    node.campaign();
    ready(node.process(&mut NoPeers, 0)).unwrap();
    // No write becomes durable from now on: every put waits.
    disk.released.set(disk.started.get());
    let put = || Request::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
    node.request(1, put(), 0, Some(300));
    node.request(2, put(), 0, None);
    node.request(3, put(), 0, Some(timeout_ms + 1_000));
    ready(node.start_ready(&mut NoPeers, 0)).unwrap();
    let answers = |node: &mut Node<GatedDisk, MemBackend>, now_ms| {
        node.tick(now_ms);
        node.take_output().replies.into_iter().map(|(token, r)| (token, r.unwrap_err())).collect::<Vec<_>>()
    };
    assert_eq!(answers(&mut node, 299), vec![]);
    assert_eq!(answers(&mut node, 300), vec![(1, EtcdError::DeadlineExceeded)]);
    // The member's own request timeout comes first for the others.
    assert_eq!(answers(&mut node, timeout_ms), vec![(2, EtcdError::Timeout), (3, EtcdError::Timeout)]);
}
