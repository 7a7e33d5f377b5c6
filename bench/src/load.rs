//! The load generator: workers issuing one workload's requests through etcd's v3 API, closed
//! loop (each client sends its next request when the previous one answers) or open loop at a
//! target rate.
//!
//! Open loop avoids coordinated omission: request `i` is due at `start + i / rate`, and if no
//! worker is free by then its latency is measured from that moment, so time spent waiting for
//! a busy client counts against the server that made it wait (see [`wait_until_due`]). Each
//! worker owns its histogram; they are merged at the end, so recording never contends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use etcd_client::{Client, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions};
use hdrhistogram::Histogram;
use keel_api::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use keel_api::grpc::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::report::{self, Report};
use crate::unary::Connection;

/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 5;
/// How long a request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long watchers may lag behind the last put before missing events count as errors.
const WATCH_GRACE: Duration = Duration::from_secs(10);
/// The prefix the watch workload writes under and its watchers watch.
const WATCH_PREFIX: &str = "bench-watch/";

/// What the workers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put a random key of the key space.
    Put,
    /// Get a random key of the key space.
    Range,
    /// Txn: if the key's version is at least 0 (always), put it.
    Txn,
    /// Delete the key space's keys in order.
    Delete,
    /// Put under one prefix while watchers watch it; measures put-to-event latency per watcher.
    Watch,
    /// Keep one lease per client alive over its keep-alive stream.
    LeaseKeepalive,
    /// Gets with probability --read-ratio, puts otherwise.
    Mixed,
}

/// Linearizable or serializable reads, as etcdctl spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable (ReadIndex).
    L,
    /// Serializable (the member's local state).
    S,
}

/// The shape of the load.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Concurrent clients (outstanding requests).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Key size in bytes (keys are zero-padded decimal indexes).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Requests to send (default 10000 unless --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Seconds to run for.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Offered load in requests per second (open loop); 0 sends as fast as answers come back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Read consistency for range and mixed.
    #[arg(long, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,
    /// Share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Watchers for the watch workload, each on its own watch stream.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Put every key of the key space before measuring.
    #[arg(long)]
    pub prefill: bool,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl LoadArgs {
    /// The arguments with the command line's defaults, against `endpoints`.
    pub fn against(endpoints: Vec<String>) -> LoadArgs {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: LoadArgs,
        }
        let defaults = <Defaults as clap::Parser>::parse_from(["keel-bench"]);
        LoadArgs { endpoints, ..defaults.args }
    }

    fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.conns == 0 || self.key_space == 0 {
            return Err("--clients, --conns and --key-space must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err("--read-ratio must be between 0 and 1".into());
        }
        if self.rate < 0.0 || self.duration.is_some_and(|d| d <= 0.0) {
            return Err("--rate and --duration must be positive".into());
        }
        Ok(())
    }
}

/// The name a run reports under: the workload, with the read consistency where it matters.
pub fn run_name(workload: Workload, args: &LoadArgs) -> String {
    let name = workload.to_possible_value().expect("no skipped variants").get_name().to_string();
    match workload {
        Workload::Range | Workload::Mixed if args.consistency == Consistency::S => format!("{name}-serializable"),
        Workload::Range | Workload::Mixed => format!("{name}-linearizable"),
        _ => name,
    }
}

/// Runs one workload and reports what it measured; `progress` prints a line each second.
pub async fn run(workload: Workload, args: &LoadArgs, progress: bool) -> Result<Report, String> {
    args.validate()?;
    let clients = Clients::connect(args, matches!(workload, Workload::Watch | Workload::LeaseKeepalive)).await?;
    let keys = Arc::new(Keys::new(args));
    if args.prefill {
        let mut fill = args.clone();
        (fill.total, fill.duration, fill.rate) = (Some(args.key_space), None, 0.0);
        let outcome = drive(&clients, &fill, Op::PutInOrder, &keys, progress.then_some("prefill")).await?;
        if outcome.errors > 0 {
            return Err(format!("prefill failed: {}", outcome.samples.join("; ")));
        }
    }
    let name = run_name(workload, args);
    if workload == Workload::Watch {
        return watch(&clients, args, &keys, &name, progress).await;
    }
    let op = match workload {
        Workload::Put => Op::Put,
        Workload::Range => Op::Get,
        Workload::Txn => Op::Txn,
        Workload::Delete => Op::DeleteInOrder,
        Workload::LeaseKeepalive => Op::KeepAlive,
        Workload::Mixed => Op::Mixed,
        Workload::Watch => unreachable!("handled above"),
    };
    let outcome = drive(&clients, args, op, &keys, progress.then_some(name.as_str())).await?;
    Ok(outcome.report(&name, args))
}

/// `args.conns` connections for unary calls, spread over the endpoints in turn, and as many
/// etcd-client handles (each balancing over every endpoint) where the workload streams.
struct Clients {
    unary: Vec<Connection>,
    streams: Vec<Client>,
}

impl Clients {
    async fn connect(args: &LoadArgs, streams: bool) -> Result<Clients, String> {
        let mut clients = Clients { unary: Vec::with_capacity(args.conns), streams: Vec::new() };
        for endpoint in args.endpoints.iter().cycle().take(args.conns) {
            clients.unary.push(Connection::open(endpoint, CONNECT_TIMEOUT).await?);
        }
        let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
        let stream_clients = if streams { args.conns } else { 0 };
        for _ in 0..stream_clients {
            let client = Client::connect(&args.endpoints, Some(options.clone()))
                .await
                .map_err(|e| format!("connecting to {}: {e}", args.endpoints.join(",")))?;
            clients.streams.push(client);
        }
        Ok(clients)
    }

    /// The handles the `index`th client uses.
    fn for_client(&self, index: usize) -> (Connection, Option<Client>) {
        let streams = (!self.streams.is_empty()).then(|| self.streams[index % self.streams.len()].clone());
        (self.unary[index % self.unary.len()].clone(), streams)
    }
}

/// The key space and the value every write sends.
struct Keys {
    size: usize,
    space: u64,
    value: Vec<u8>,
}

impl Keys {
    fn new(args: &LoadArgs) -> Keys {
        Keys { size: args.key_size, space: args.key_space, value: vec![b'v'; args.val_size] }
    }

    fn key(&self, index: u64) -> Vec<u8> {
        format!("{:0width$}", index % self.space, width = self.size).into_bytes()
    }
}

/// One request kind as a worker sends it.
#[derive(Clone, Copy)]
enum Op {
    Put,
    PutInOrder,
    Get,
    Txn,
    DeleteInOrder,
    KeepAlive,
    Mixed,
    /// A put under the watch prefix carrying its send time.
    WatchedPut,
}

/// Hands out requests: their sequence number and the moment each is due.
struct Schedule {
    start: Instant,
    total: Option<u64>,
    deadline: Option<Instant>,
    rate: Option<f64>,
    next: AtomicU64,
}

impl Schedule {
    fn new(args: &LoadArgs) -> Schedule {
        let start = Instant::now();
        let total = args.total.or(if args.duration.is_none() { Some(10_000) } else { None });
        Schedule {
            start,
            total,
            deadline: args.duration.map(|secs| start + Duration::from_secs_f64(secs)),
            rate: (args.rate > 0.0).then_some(args.rate),
            next: AtomicU64::new(0),
        }
    }

    /// The next request's number and due time, or None once the run is over.
    fn next(&self) -> Option<(u64, Instant)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| i >= total) {
            return None;
        }
        let due = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if self.deadline.is_some_and(|deadline| due >= deadline) {
            return None;
        }
        Some((i, due))
    }
}

/// Waits for a request's due time; returns the moment its latency is measured from. A request
/// already due when a worker takes it waited for a busy worker: the wait counts against the
/// server, so it is timed from its due time. Otherwise it is timed from when it leaves: a timer
/// wakes on its wheel's next millisecond, and that lateness is the client's (timed from the due
/// time, 8 clients putting 2000/s read a median of 1.24-1.31 ms from Keel instead of ~0.52 ms,
/// and 1.67 instead of 0.92-1.15 ms from etcd).
async fn wait_until_due(due: Instant) -> Instant {
    if due <= Instant::now() {
        return due;
    }
    tokio::time::sleep_until(due).await;
    Instant::now()
}

/// What the workers measured together.
struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
    samples: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    fn report(&self, name: &str, args: &LoadArgs) -> Report {
        Report::new(name, args.clients, args.conns, &self.histogram, self.errors, self.samples.clone(), self.elapsed)
    }
}

/// Counters the progress line reads.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
}

/// Runs `op` on `args.clients` workers spread over the connections until the schedule ends.
async fn drive(
    clients: &Clients,
    args: &LoadArgs,
    op: Op,
    keys: &Arc<Keys>,
    progress: Option<&str>,
) -> Result<Outcome, String> {
    let mut workers = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        workers.push(Worker::prepare(clients.for_client(index), rng, op, keys.clone(), args).await?);
    }
    let counters = Arc::new(Progress::default());
    let printer = progress.map(|name| tokio::spawn(print_progress(name.to_string(), counters.clone())));
    let schedule = Arc::new(Schedule::new(args));
    let tasks: Vec<_> =
        workers.into_iter().map(|worker| tokio::spawn(worker.run(schedule.clone(), counters.clone()))).collect();
    let mut outcome =
        Outcome { histogram: report::new_histogram(), errors: 0, samples: Vec::new(), elapsed: Duration::ZERO };
    for task in tasks {
        let (histogram, samples) = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        outcome.histogram.add(&histogram).expect("histograms share their bounds");
        for sample in samples {
            if outcome.samples.len() < ERROR_SAMPLES && !outcome.samples.contains(&sample) {
                outcome.samples.push(sample);
            }
        }
    }
    outcome.elapsed = schedule.start.elapsed();
    outcome.errors = counters.errors.load(Ordering::Relaxed);
    counters.finished.store(true, Ordering::Relaxed);
    if let Some(printer) = printer {
        let _ = printer.await;
    }
    Ok(outcome)
}

/// Prints completed requests, the rate over the last second and errors, once a second.
async fn print_progress(name: String, counters: Arc<Progress>) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if counters.finished.load(Ordering::Relaxed) {
            break;
        }
        let done = counters.done.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let line = format!("{name}: {done} requests, {} /s, {errors} errors", done - last);
        last = done;
        let mut err = std::io::stderr().lock();
        let _ = if terminal { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
    }
    if terminal {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
    }
}

/// One client: its connection, its random keys and, for keep-alives, its lease.
struct Worker {
    conn: Connection,
    rng: ChaCha8Rng,
    op: Op,
    keys: Arc<Keys>,
    serializable: bool,
    read_ratio: f64,
    lease: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    epoch: Instant,
}

impl Worker {
    async fn prepare(
        (conn, streams): (Connection, Option<Client>),
        rng: ChaCha8Rng,
        op: Op,
        keys: Arc<Keys>,
        args: &LoadArgs,
    ) -> Result<Worker, String> {
        let lease = match (op, streams) {
            (Op::KeepAlive, Some(mut client)) => {
                let granted = client.lease_grant(60, None).await.map_err(|e| format!("granting a lease: {e}"))?;
                Some(
                    client
                        .lease_keep_alive(granted.id())
                        .await
                        .map_err(|e| format!("opening a keep-alive stream: {e}"))?,
                )
            }
            (Op::KeepAlive, None) => return Err("keep-alives need a streaming client".into()),
            _ => None,
        };
        Ok(Worker {
            conn,
            rng,
            op,
            keys,
            serializable: args.consistency == Consistency::S,
            read_ratio: args.read_ratio,
            lease,
            epoch: Instant::now(),
        })
    }

    async fn run(mut self, schedule: Arc<Schedule>, counters: Arc<Progress>) -> (Histogram<u64>, Vec<String>) {
        let mut histogram = report::new_histogram();
        let mut samples = Vec::new();
        while let Some((i, due)) = schedule.next() {
            let timed_from = wait_until_due(due).await;
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, self.send(i)).await;
            match answered.unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}"))) {
                Ok(()) => report::record(&mut histogram, timed_from.elapsed()),
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    if samples.len() < ERROR_SAMPLES {
                        samples.push(e);
                    }
                }
            }
            counters.done.fetch_add(1, Ordering::Relaxed);
        }
        (histogram, samples)
    }

    async fn send(&mut self, i: u64) -> Result<(), String> {
        let op = match self.op {
            Op::Mixed if self.rng.gen_bool(self.read_ratio) => Op::Get,
            Op::Mixed => Op::Put,
            op => op,
        };
        let keys = &self.keys;
        let rng = &mut self.rng;
        let mut random_key = || keys.key(rng.gen_range(0..keys.space));
        let put = |key: Vec<u8>, value: Vec<u8>| PutRequest { key, value, ..Default::default() };
        let conn = &self.conn;
        match op {
            Op::Put => conn.call::<_, PutResponse>(Method::Put, &put(random_key(), keys.value.clone())).await.map(drop),
            Op::PutInOrder => {
                conn.call::<_, PutResponse>(Method::Put, &put(keys.key(i), keys.value.clone())).await.map(drop)
            }
            Op::Get => {
                let get = RangeRequest { key: random_key(), serializable: self.serializable, ..Default::default() };
                conn.call::<_, RangeResponse>(Method::Range, &get).await.map(drop)
            }
            Op::Txn => {
                // If the key's version is greater than -1 (always), put it.
                let key = random_key();
                let version_at_least_zero = Compare {
                    result: compare::CompareResult::Greater as i32,
                    target: compare::CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(compare::TargetUnion::Version(-1)),
                    ..Default::default()
                };
                let then_put =
                    RequestOp { request: Some(request_op::Request::RequestPut(put(key, keys.value.clone()))) };
                let txn =
                    TxnRequest { compare: vec![version_at_least_zero], success: vec![then_put], failure: Vec::new() };
                conn.call::<_, TxnResponse>(Method::Txn, &txn).await.map(drop)
            }
            Op::DeleteInOrder => {
                let delete = DeleteRangeRequest { key: keys.key(i), ..Default::default() };
                conn.call::<_, DeleteRangeResponse>(Method::DeleteRange, &delete).await.map(drop)
            }
            Op::WatchedPut => {
                let key = format!("{WATCH_PREFIX}{}", i % keys.space).into_bytes();
                let sent = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                conn.call::<_, PutResponse>(Method::Put, &put(key, stamped_value(sent, &keys.value))).await.map(drop)
            }
            Op::KeepAlive => {
                let (keeper, stream) = self.lease.as_mut().expect("keep-alive workers hold a lease");
                keeper.keep_alive().await.map_err(|e| e.to_string())?;
                match stream.message().await.map_err(|e| e.to_string())? {
                    Some(answer) if answer.ttl() > 0 => Ok(()),
                    Some(_) => Err("the lease expired".into()),
                    None => Err("the keep-alive stream ended".into()),
                }
            }
            Op::Mixed => unreachable!("resolved above"),
        }
    }
}

/// A watched put's value: its send time in nanoseconds since the run's epoch, then padding.
fn stamped_value(sent_nanos: u64, padding: &[u8]) -> Vec<u8> {
    let mut value = sent_nanos.to_le_bytes().to_vec();
    value.extend_from_slice(padding.get(8..).unwrap_or_default());
    value
}

fn sent_nanos(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The watch workload: `args.watchers` watch streams on the prefix while the clients put
/// under it; each delivered event records the time from its put being sent to its arrival.
async fn watch(
    clients: &Clients,
    args: &LoadArgs,
    keys: &Arc<Keys>,
    name: &str,
    progress: bool,
) -> Result<Report, String> {
    let epoch = Instant::now();
    let (finish_tx, finish_rx) = tokio::sync::watch::channel::<Option<(u64, Instant)>>(None);
    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::with_capacity(args.watchers);
    for index in 0..args.watchers {
        let mut client = clients.streams[index % clients.streams.len()].clone();
        let mut stream = client
            .watch(WATCH_PREFIX, Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("creating watcher {index}: {e}"))?;
        match stream.message().await {
            Ok(Some(created)) if created.created() => {}
            other => return Err(format!("watcher {index} was not created: {other:?}")),
        }
        let (mut finish_rx, received) = (finish_rx.clone(), received.clone());
        watchers.push(tokio::spawn(async move {
            let mut histogram = report::new_histogram();
            let mut count = 0;
            loop {
                let finish = *finish_rx.borrow_and_update();
                if finish.is_some_and(|(expected, _)| count >= expected) {
                    break;
                }
                let give_up = finish.map_or(epoch + Duration::from_secs(365 * 86_400), |(_, at)| at);
                tokio::select! {
                    message = stream.message() => {
                        let Ok(Some(message)) = message else { break };
                        for event in message.events() {
                            let Some(sent) = event.kv().and_then(|kv| sent_nanos(kv.value())) else { continue };
                            report::record(&mut histogram, epoch.elapsed().saturating_sub(Duration::from_nanos(sent)));
                            count += 1;
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ = finish_rx.changed() => {}
                    _ = tokio::time::sleep_until(give_up) => break,
                }
            }
            (histogram, count)
        }));
    }
    let mut writers = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(index as u64));
        let mut worker = Worker::prepare(clients.for_client(index), rng, Op::WatchedPut, keys.clone(), args).await?;
        worker.epoch = epoch;
        writers.push(worker);
    }
    let counters = Arc::new(Progress::default());
    let printer = progress.then(|| tokio::spawn(print_progress(name.to_string(), counters.clone())));
    let schedule = Arc::new(Schedule::new(args));
    let tasks: Vec<_> = writers.into_iter().map(|w| tokio::spawn(w.run(schedule.clone(), counters.clone()))).collect();
    let mut samples = Vec::new();
    let mut puts = 0;
    for task in tasks {
        let (histogram, errors) = task.await.map_err(|e| format!("a writer failed: {e}"))?;
        puts += histogram.len();
        samples.extend(errors);
    }
    let _ = finish_tx.send(Some((puts, Instant::now() + WATCH_GRACE)));
    let mut histogram = report::new_histogram();
    let mut delivered = 0;
    for watcher in watchers {
        let (watched, count) = watcher.await.map_err(|e| format!("a watcher failed: {e}"))?;
        histogram.add(&watched).expect("histograms share their bounds");
        delivered += count;
    }
    let elapsed = schedule.start.elapsed();
    counters.finished.store(true, Ordering::Relaxed);
    if let Some(printer) = printer {
        let _ = printer.await;
    }
    let missing = (puts * args.watchers as u64).saturating_sub(delivered);
    let put_errors = counters.errors.load(Ordering::Relaxed);
    samples.truncate(ERROR_SAMPLES);
    if missing > 0 {
        samples.push(format!("{missing} events never delivered"));
    }
    Ok(Report::new(name, args.clients, args.conns, &histogram, missing + put_errors, samples, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_indexes_within_the_key_space() {
        let keys = Keys::new(&LoadArgs { key_space: 100, ..LoadArgs::against(vec![]) });
        assert_eq!(keys.key(7), b"00000007");
        assert_eq!(keys.key(107), b"00000007");
    }

    #[test]
    fn an_open_loop_schedule_spaces_requests_by_the_rate_and_stops_at_the_total() {
        let schedule = Schedule::new(&LoadArgs { rate: 100.0, total: Some(3), ..LoadArgs::against(vec![]) });
        let due: Vec<_> = std::iter::from_fn(|| schedule.next()).collect();
        assert_eq!(due.len(), 3);
        assert_eq!(due[2].1 - due[0].1, Duration::from_millis(20));
    }

    #[test]
    fn a_timed_schedule_stops_at_its_deadline() {
        let schedule = Schedule::new(&LoadArgs { rate: 10.0, duration: Some(1.0), ..LoadArgs::against(vec![]) });
        assert_eq!(std::iter::from_fn(|| schedule.next()).count(), 10);
    }

    #[tokio::test]
    async fn a_request_is_timed_from_its_due_time_only_if_it_was_already_due() {
        let overdue = Instant::now() - Duration::from_millis(5);
        assert_eq!(wait_until_due(overdue).await, overdue);
        let ahead = Instant::now() + Duration::from_millis(3);
        let timed_from = wait_until_due(ahead).await;
        assert!(timed_from > ahead, "it waited until due and is timed from when it left");
    }

    #[test]
    fn a_watched_value_carries_its_send_time() {
        let value = stamped_value(123_456, &[b'v'; 32]);
        assert_eq!(value.len(), 32);
        assert_eq!(sent_nanos(&value), Some(123_456));
    }
}
