//! The production driver: the node core on a glommio executor pinned to one core, its WAL
//! on the file system, its store in RocksDB, and etcd's gRPC API over HTTP/2 on TCP.
//!
//! This build serves a single-member cluster; peer transport arrives with the TCP transport
//! in `keel-net`.

mod actor;
mod disk;
mod grpc;
mod io;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use keel_storage::rocks::RocksBackend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::service::HeaderInfo;
use crate::{Node, NodeConfig};
use actor::SystemClock;

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
    /// Peer URLs advertised to the cluster.
    pub advertise_peer_urls: Vec<String>,
    /// Member id.
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
    /// Core to pin the executor to.
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
    let executor = LocalExecutorBuilder::new(placement).name("keel");
    let handle = executor.spawn(move || serve(config)).map_err(|e| format!("starting the executor: {e}"))?;
    handle.join().map_err(|_| "the executor panicked".to_string())?
}

fn os_seeded_rng() -> Result<ChaCha8Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("reading OS randomness: {e}"))?;
    Ok(ChaCha8Rng::from_seed(seed))
}

async fn serve(config: ServerConfig) -> Result<(), String> {
    let member_dir = config.data_dir.join("member");
    let disk = disk::FsDisk::open(&member_dir.join("wal")).map_err(|e| format!("opening the WAL: {e}"))?;
    let backend = RocksBackend::open(&member_dir.join("db")).map_err(|e| format!("opening the store: {e}"))?;
    let mut node_config = NodeConfig::new(config.member_id, vec![config.member_id]);
    node_config.tick_ms = config.heartbeat_ms;
    node_config.heartbeat_ticks = 1;
    node_config.election_ticks = (config.election_ms / config.heartbeat_ms).max(2) as usize;
    node_config.snapshot_count = config.snapshot_count;
    node_config.snapshot_catchup_entries = config.snapshot_count.min(5_000);
    node_config.max_request_bytes = config.max_request_bytes;
    let clock = SystemClock(Instant::now());
    let mut node = Node::open(node_config, disk, backend, os_seeded_rng()?).await.map_err(|e| e.to_string())?;
    // Apply the bootstrap membership; the only voter need not wait an election timeout.
    node.process(&mut Vec::new(), 0).await.map_err(|e| e.to_string())?;
    node.campaign();
    let info = HeaderInfo { cluster_id: config.cluster_id, member_id: config.member_id, raft_term: 0 };
    let (handle, inputs) = actor::channel(info);
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
    let max_message = config.max_request_bytes + 512 * 1024;
    let member = Rc::new(grpc::MemberInfo {
        name: config.name.clone(),
        peer_urls: config.advertise_peer_urls.clone(),
        client_urls: config.advertise_client_urls.clone(),
    });
    for addr in &config.listen_client {
        let listener = TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
        tracing::info!(name = %config.name, %addr, "serving clients");
        let handle = handle.clone();
        let member = member.clone();
        glommio::spawn_local(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (handle, member) = (handle.clone(), member.clone());
                let service =
                    service_fn(move |request| grpc::handle(request, handle.clone(), member.clone(), max_message));
                glommio::spawn_local(async move {
                    if let Err(e) =
                        http2::Builder::new(io::LocalExecutor).serve_connection(io::Io(stream), service).await
                    {
                        tracing::debug!("connection closed: {e}");
                    }
                })
                .detach();
            }
        })
        .detach();
    }
    actor::run(node, handle, inputs, clock).await.map_err(|e| format!("node stopped: {e}"))
}
