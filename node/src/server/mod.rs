//! The production driver: the node core on a glommio executor pinned to one core, its WAL
//! on the file system, its store in RocksDB, its peers over `keel-net`'s TCP transport, and
//! etcd's gRPC API over HTTP/2 on TCP, with HTTP/1.1 (health, metrics, the JSON gateway)
//! on the same client port.

mod actor;
mod compactor;
mod disk;
mod forward;
mod gateway;
mod grpc;
mod http;
mod io;
mod members;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use keel_storage::rocks::RocksBackend;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use keel_api::authority::MAX_HEADER_LIST_BYTES;
use keel_net::tcp::TcpTransport;
use keel_net::{Frame, Hello};

use crate::service::HeaderInfo;
use crate::{Node, NodeConfig};
use actor::SystemClock;
pub use compactor::Retention;
use members::Members;
use metrics::Metrics;

/// A member of the cluster as `--initial-cluster` lists it.
#[derive(Debug, Clone)]
pub struct InitialMember {
    /// Member id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Where the peer URLs resolve to.
    pub peer_addrs: Vec<SocketAddr>,
}

/// How to run a member.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Member name.
    pub name: String,
    /// Data directory (WAL in `member/wal`, store in `member/db`).
    pub data_dir: PathBuf,
    /// Addresses to serve clients on.
    pub listen_client: Vec<SocketAddr>,
    /// Client URLs advertised to the cluster.
    pub advertise_client_urls: Vec<String>,
    /// Addresses to serve peers on.
    pub listen_peer: Vec<SocketAddr>,
    /// Every member of the initial cluster, this one included.
    pub initial_cluster: Vec<InitialMember>,
    /// Join a running cluster (`--initial-cluster-state existing`) rather than found one.
    pub join_existing: bool,
    /// This member's id (one of `initial_cluster`).
    pub member_id: u64,
    /// Cluster id.
    pub cluster_id: u64,
    /// Milliseconds per heartbeat (one Raft tick).
    pub heartbeat_ms: u64,
    /// Milliseconds per election timeout.
    pub election_ms: u64,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Largest request accepted.
    pub max_request_bytes: usize,
    /// Interval of watch progress notifications.
    pub watch_progress_ms: u64,
    /// Largest store size writes may reach.
    pub quota_bytes: u64,
    /// History auto-compaction keeps (None: no auto-compaction).
    pub auto_compaction: Option<Retention>,
    /// Core to pin the executor to (its helper threads keep off it).
    pub cpu: Option<usize>,
    /// Set (by a signal handler) to stop the member cleanly.
    pub stop: Arc<AtomicBool>,
}

/// Runs the member until it fails.
pub fn run(config: ServerConfig) -> Result<(), String> {
    let placement = match config.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("reading the CPU affinity: {e}"))?;
    let executor = LocalExecutorBuilder::new(placement).name("keel");
    let handle = executor.spawn(move || serve(config, allowed)).map_err(|e| format!("starting the executor: {e}"))?;
    handle.join().map_err(|_| "the executor panicked".to_string())?
}

fn os_seeded_rng() -> Result<ChaCha8Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("reading OS randomness: {e}"))?;
    Ok(ChaCha8Rng::from_seed(seed))
}

/// Serves one client connection: gRPC over HTTP/2, or HTTP/1.1 (health, metrics, gateway).
async fn serve_client(stream: glommio::net::TcpStream, context: Rc<grpc::Shared>) {
    let _ = stream.set_nodelay(true);
    let served = match io::Io::accept(stream).await {
        Ok((io, true)) => {
            let service = service_fn(move |request| grpc::handle(request, context.clone()));
            // No `date` header: gRPC clients ignore it (etcd's server sends none), and hyper
            // would read the clock and encode one for every response. The header list bound
            // is the one the `:authority` fix in front of hyper enforces.
            http2::Builder::new(io::LocalExecutor)
                .auto_date_header(false)
                .max_header_list_size(MAX_HEADER_LIST_BYTES as u32)
                .serve_connection(io, service)
                .await
        }
        Ok((io, false)) => {
            let service = service_fn(move |request| http::handle(request, context.clone()));
            http1::Builder::new().serve_connection(io, service).await
        }
        Err(e) => {
            tracing::debug!("client connection failed: {e}");
            return;
        }
    };
    if let Err(e) = served {
        tracing::debug!("client connection closed: {e}");
    }
}

/// Runs `start`, which starts threads, with the calling thread (the executor's) allowed on the
/// cores in `allowed` but `executor_cpu`, so that the threads started inherit that set and
/// leave the executor its core to itself; then pins the calling thread to its core again.
/// Without a pinned core, or with no other core allowed, they run where the caller may.
fn start_off_core<T>(allowed: CpuSet, executor_cpu: Option<usize>, start: impl FnOnce() -> T) -> Result<T, String> {
    let Some(cpu) = executor_cpu else { return Ok(start()) };
    let mut helpers = allowed;
    helpers.unset(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    if !(0..CpuSet::count()).any(|core| helpers.is_set(core).unwrap_or(false)) {
        return Ok(start());
    }
    let this_thread = Pid::from_raw(0);
    let pinned = sched_getaffinity(this_thread).map_err(|e| format!("reading the CPU affinity: {e}"))?;
    sched_setaffinity(this_thread, &helpers).map_err(|e| format!("setting the CPU affinity: {e}"))?;
    let started = start();
    sched_setaffinity(this_thread, &pinned).map_err(|e| format!("setting the CPU affinity: {e}"))?;
    Ok(started)
}

/// Opens the WAL and the store, whose threads (the WAL's sync thread, RocksDB's pools, the
/// flush thread) `start_off_core` keeps off the executor's core.
fn open_storage(
    member_dir: &std::path::Path,
    metrics: &Metrics,
    allowed: CpuSet,
    executor_cpu: Option<usize>,
) -> Result<(disk::FsDisk, RocksBackend), String> {
    start_off_core(allowed, executor_cpu, || {
        let disk = disk::FsDisk::open(&member_dir.join("wal"), metrics.wal_fsync_seconds.clone())
            .map_err(|e| format!("opening the WAL: {e}"))?;
        let mut backend = RocksBackend::open(&member_dir.join("db")).map_err(|e| format!("opening the store: {e}"))?;
        backend.start_flush_thread().map_err(|e| format!("opening the store: {e}"))?;
        Ok((disk, backend))
    })?
}

/// Serves the member on the executor's thread; `allowed` are the cores the process may use.
async fn serve(config: ServerConfig, allowed: CpuSet) -> Result<(), String> {
    let member_dir = config.data_dir.join("member");
    let metrics = Rc::new(Metrics::default());
    let (disk, backend) = open_storage(&member_dir, &metrics, allowed, config.cpu)?;
    let voters = if config.join_existing { Vec::new() } else { config.initial_cluster.iter().map(|m| m.id).collect() };
    let sole_voter = voters == [config.member_id];
    let mut node_config = NodeConfig::new(config.member_id, voters);
    node_config.tick_ms = config.heartbeat_ms;
    node_config.heartbeat_ticks = 1;
    node_config.election_ticks = (config.election_ms / config.heartbeat_ms).max(2) as usize;
    node_config.snapshot_count = config.snapshot_count;
    node_config.snapshot_catchup_entries = config.snapshot_count.min(5_000);
    node_config.max_request_bytes = config.max_request_bytes;
    node_config.watch_progress_ms = config.watch_progress_ms;
    node_config.quota_bytes = config.quota_bytes;
    let clock = SystemClock(Instant::now());
    let watch_stream_bytes = node_config.watch.stream_bytes;
    let mut node = Node::open(node_config, disk, backend, os_seeded_rng()?)
        .await
        .map_err(|e| format!("recovering {}: {e}", member_dir.display()))?;
    node.set_probe(Box::new(metrics::MetricsProbe::new(&metrics)));
    let mut members = Members::default();
    let mut peers = std::collections::BTreeMap::new();
    for member in &config.initial_cluster {
        members.insert(member.id, &member.name, &member.peer_urls);
        if member.id != config.member_id {
            peers.insert(member.id, member.peer_addrs.clone());
        }
    }
    let members = Rc::new(members);
    let hello = Hello { cluster_id: config.cluster_id, member_id: config.member_id };
    let mut transport = TcpTransport::start(hello, peers);
    // Apply the bootstrap membership; a sole voter need not wait an election timeout.
    node.process(&mut transport, 0).await.map_err(|e| e.to_string())?;
    if sole_voter {
        node.campaign();
    }
    let info = HeaderInfo { cluster_id: config.cluster_id, member_id: config.member_id, ..HeaderInfo::default() };
    let (handle, inputs) = actor::channel(info);
    for &addr in &config.listen_peer {
        let handle = handle.clone();
        let deliver = move |from: u64, frame: Frame| handle.peer(from, frame);
        keel_net::tcp::listen(addr, config.cluster_id, deliver).map_err(|e| format!("listening on {addr}: {e}"))?;
        tracing::info!(name = %config.name, %addr, "serving peers");
    }
    let ticker = handle.clone();
    let tick = Duration::from_millis(config.heartbeat_ms);
    let stop = config.stop.clone();
    glommio::spawn_local(async move {
        while ticker.tick() {
            glommio::timer::sleep(tick).await;
            if stop.load(Ordering::Relaxed) {
                tracing::info!("stopping on signal");
                ticker.stop();
                return;
            }
        }
    })
    .detach();
    let context = Rc::new(grpc::Shared {
        node: handle.clone(),
        members,
        metrics,
        max_request: config.max_request_bytes,
        watch_stream_bytes,
    });
    // Like etcd, clients are served once the member has published itself; until then their
    // connections wait in the listen backlog.
    let (ready_tx, ready_rx) = futures::channel::oneshot::channel::<()>();
    let ready = futures::future::FutureExt::shared(ready_rx);
    for addr in &config.listen_client {
        let listener = keel_net::tcp::bind(*addr).map_err(|e| format!("listening on {addr}: {e}"))?;
        let context = context.clone();
        let (ready, name, addr) = (ready.clone(), config.name.clone(), *addr);
        glommio::spawn_local(async move {
            if ready.await.is_err() {
                return; // the member stopped first
            }
            tracing::info!(%name, %addr, "serving clients");
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(serve_client(stream, context.clone())).detach();
                    }
                    Err(e) => tracing::warn!("accept failed: {e}"),
                }
            }
        })
        .detach();
    }
    let compactor = config.auto_compaction.map(compactor::AutoCompactor::new);
    let attributes = crate::MemberAttributes {
        member_id: config.member_id,
        name: config.name.clone(),
        client_urls: config.advertise_client_urls.clone(),
    };
    let duties = actor::Duties { compactor, attributes, ready: ready_tx };
    actor::run(node, transport, duties, handle, inputs, clock).await.map_err(|e| format!("node stopped: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_started_off_core_leave_the_executor_its_core() {
        let this_thread = Pid::from_raw(0);
        let allowed = sched_getaffinity(this_thread).unwrap();
        let cores: Vec<usize> = (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap()).collect();
        let executor_cpu = cores[0];
        // A thread of its own stands in for the executor, so the harness's stays as it was.
        std::thread::spawn(move || {
            let mut pinned = CpuSet::new();
            pinned.set(executor_cpu).unwrap();
            sched_setaffinity(this_thread, &pinned).unwrap();
            let helper = start_off_core(allowed, Some(executor_cpu), || {
                std::thread::spawn(move || sched_getaffinity(this_thread).unwrap()).join().unwrap()
            })
            .unwrap();
            assert_eq!(sched_getaffinity(this_thread).unwrap(), pinned, "the executor is pinned again");
            if cores.len() > 1 {
                assert!(!helper.is_set(executor_cpu).unwrap(), "the helper keeps off the executor's core");
                assert!(cores[1..].iter().all(|&c| helper.is_set(c).unwrap()), "and may use every other core");
            } else {
                assert_eq!(helper, allowed, "with one core, the helper shares it");
            }
        })
        .join()
        .unwrap();
    }
}
