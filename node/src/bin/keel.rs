//! `keel`: one Keel member, with etcd's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use keel_node::server::{run, ServerConfig};

/// A Keel member: etcd's v3 API over gRPC, replicated by Raft.
#[derive(Parser, Debug)]
#[command(name = "keel", version)]
struct Flags {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic, comma-separated.
    #[arg(long, default_value = "http://localhost:2379")]
    listen_client_urls: String,
    /// Client URLs advertised to the rest of the cluster, comma-separated.
    #[arg(long, default_value = "http://localhost:2379")]
    advertise_client_urls: String,
    /// Peer URLs advertised to the rest of the cluster, comma-separated.
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Token of the cluster (mixed into the cluster and member ids).
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Time (ms) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (ms) for an election to time out.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Committed transactions between snapshots.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Largest request the server accepts, bytes.
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Pin the node's executor to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

/// FNV-1a over the parts: a stable, non-zero id.
fn stable_id(parts: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash.max(1)
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
}

fn parse_urls(urls: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let hostport =
            url.strip_prefix("http://").ok_or_else(|| format!("unsupported URL {url:?} (only http:// is served)"))?;
        let hostport = hostport.trim_end_matches('/');
        let resolved = hostport.to_socket_addrs().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        // One listener per URL: prefer IPv4 for names like localhost, as etcd binds them.
        let mut resolved: Vec<SocketAddr> = resolved.collect();
        resolved.sort_by_key(|a| !a.is_ipv4());
        addrs.push(*resolved.first().ok_or_else(|| format!("URL {url:?} resolves to nothing"))?);
    }
    Ok(addrs)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    let listen_client = match parse_urls(&flags.listen_client_urls) {
        Ok(addrs) => addrs,
        Err(e) => {
            eprintln!("keel: --listen-client-urls: {e}");
            return ExitCode::from(2);
        }
    };
    // SIGTERM and SIGINT stop the member cleanly (checked every heartbeat).
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("keel: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let config = ServerConfig {
        stop,
        data_dir: flags.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.etcd", flags.name))),
        listen_client,
        advertise_client_urls: split_urls(&flags.advertise_client_urls),
        advertise_peer_urls: split_urls(&flags.initial_advertise_peer_urls),
        member_id: stable_id(&[&flags.initial_cluster_token, &flags.initial_advertise_peer_urls]),
        cluster_id: stable_id(&[&flags.initial_cluster_token]),
        heartbeat_ms: flags.heartbeat_interval.max(1),
        election_ms: flags.election_timeout,
        snapshot_count: flags.snapshot_count,
        max_request_bytes: flags.max_request_bytes,
        cpu: flags.cpu,
        name: flags.name,
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
