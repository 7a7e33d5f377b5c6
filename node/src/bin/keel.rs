//! `keel`: one Keel member, with etcd's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use keel_node::server::{run, InitialMember, Retention, ServerConfig};
use sha1::{Digest, Sha1};

/// mimalloc asks for transparent huge pages on its arenas; `main` turns them off for the
/// process (see there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether the member founds a new cluster or joins a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClusterState {
    /// Found a new cluster with the members of `--initial-cluster`.
    New,
    /// Join a running cluster this member was added to.
    Existing,
}

/// How auto-compaction reads its retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompactionMode {
    /// Retention is a duration (`1h`, `30m`; a bare number means hours).
    Periodic,
    /// Retention is a number of revisions.
    Revision,
}

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
    /// URLs to listen on for peer traffic, comma-separated.
    #[arg(long, default_value = "http://localhost:2380")]
    listen_peer_urls: String,
    /// Peer URLs advertised to the rest of the cluster, comma-separated.
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration: `name=peer-url,...` (default: this member alone).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Initial cluster state.
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: ClusterState,
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
    /// Largest size the store may grow to, bytes (0: etcd's default, 2 GiB); beyond it the
    /// NOSPACE alarm is raised and writes are refused.
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Auto-compaction mode.
    #[arg(long, value_enum, default_value = "periodic")]
    auto_compaction_mode: CompactionMode,
    /// History auto-compaction keeps: a duration or a revision count, by mode (0: off).
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// Interval of watch progress notifications (e.g. 10m, 30s, 500ms).
    #[arg(long, default_value = "10m", value_parser = parse_duration_ms)]
    experimental_watch_progress_notify_interval: u64,
    /// Pin the node's executor to this CPU (its helper threads then run on the other CPUs).
    #[arg(long)]
    cpu: Option<usize>,
}

/// The first 8 bytes of a SHA-1 digest, big-endian: how etcd derives member and cluster ids.
fn sha1_id(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// A member's id as etcd computes it for an initial member: its sorted peer URLs, then the
/// cluster token.
fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    sha1_id(format!("{}{token}", sorted.concat()).as_bytes())
}

/// The cluster id as etcd computes it: its sorted member ids.
fn cluster_id(members: &[InitialMember]) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    sha1_id(&ids.iter().flat_map(|id| id.to_be_bytes()).collect::<Vec<u8>>())
}

/// Parses `--initial-cluster` (`name=url,name=url,...`; a name may repeat for several URLs).
fn initial_cluster(spec: &str, token: &str) -> Result<Vec<InitialMember>, String> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not name=url"))?;
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => by_name.push((name.to_string(), vec![url.to_string()])),
        }
    }
    by_name
        .into_iter()
        .map(|(name, peer_urls)| {
            let peer_addrs = parse_urls(&peer_urls.join(","))?;
            Ok(InitialMember { id: member_id(&peer_urls, token), name, peer_urls, peer_addrs })
        })
        .collect()
}

/// Milliseconds in a Go-style duration with one unit: `500ms`, `30s`, `10m`, `1h`.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("{text:?} has no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} has an unknown unit (ms, s, m, h)")),
    };
    Ok(number * scale)
}

/// The auto-compaction the flags ask for, if any.
fn auto_compaction(mode: CompactionMode, retention: &str) -> Result<Option<Retention>, String> {
    let bad = || format!("--auto-compaction-retention: {retention:?} is not valid for mode {mode:?}");
    let retention = match mode {
        CompactionMode::Revision => Retention::Revisions(retention.parse().map_err(|_| bad())?),
        CompactionMode::Periodic => match retention.parse::<u64>() {
            Ok(hours) => Retention::Periodic(hours * 3_600_000),
            Err(_) => Retention::Periodic(parse_duration_ms(retention)?),
        },
    };
    Ok(match retention {
        Retention::Periodic(0) | Retention::Revisions(0) => None,
        Retention::Revisions(n) if n < 0 => return Err(bad()),
        retention => Some(retention),
    })
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

/// The server configuration the flags describe, checked as etcd checks them.
fn server_config(flags: Flags) -> Result<ServerConfig, String> {
    let advertise_peer_urls = split_urls(&flags.initial_advertise_peer_urls);
    let cluster_spec = flags.initial_cluster.clone().unwrap_or_else(|| {
        advertise_peer_urls.iter().map(|url| format!("{}={url}", flags.name)).collect::<Vec<_>>().join(",")
    });
    let initial_cluster =
        initial_cluster(&cluster_spec, &flags.initial_cluster_token).map_err(|e| format!("--initial-cluster: {e}"))?;
    let me = initial_cluster
        .iter()
        .find(|m| m.name == flags.name)
        .ok_or_else(|| format!("couldn't find local name {:?} in the initial cluster configuration", flags.name))?;
    let (mut listed, mut advertised) = (me.peer_urls.clone(), advertise_peer_urls.clone());
    listed.sort();
    advertised.sort();
    if listed != advertised {
        return Err(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            flags.name,
            me.peer_urls.join(","),
            advertise_peer_urls.join(",")
        ));
    }
    Ok(ServerConfig {
        stop: Arc::new(AtomicBool::new(false)),
        data_dir: flags.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.etcd", flags.name))),
        listen_client: parse_urls(&flags.listen_client_urls).map_err(|e| format!("--listen-client-urls: {e}"))?,
        advertise_client_urls: split_urls(&flags.advertise_client_urls),
        listen_peer: parse_urls(&flags.listen_peer_urls).map_err(|e| format!("--listen-peer-urls: {e}"))?,
        member_id: me.id,
        cluster_id: cluster_id(&initial_cluster),
        join_existing: flags.initial_cluster_state == ClusterState::Existing,
        initial_cluster,
        heartbeat_ms: flags.heartbeat_interval.max(1),
        election_ms: flags.election_timeout,
        snapshot_count: flags.snapshot_count,
        max_request_bytes: flags.max_request_bytes,
        watch_progress_ms: flags.experimental_watch_progress_notify_interval.max(1),
        quota_bytes: match flags.quota_backend_bytes {
            0 => keel_node::DEFAULT_QUOTA_BYTES,
            bytes => bytes,
        },
        auto_compaction: auto_compaction(flags.auto_compaction_mode, &flags.auto_compaction_retention)?,
        cpu: flags.cpu,
        name: flags.name,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    // No transparent huge pages. Their first touch zeroes 2 MiB at once, and on this
    // project's VMs that took milliseconds: a 64-client put run faulted in ~20 of them as the
    // heap grew, each stalling the executor (perf: `clear_page_erms` under mimalloc's page
    // init, up to ~8 ms at a time) and with it every client. With 4 KiB pages the same memory
    // faults in a page at a time: 64-client put p99 4.29 against 6.73 ms (means of 6
    // alternating rounds, lower in each), throughput no lower.
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!("cannot turn transparent huge pages off: {e}");
    }
    let flags = Flags::parse();
    let config = match server_config(flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::from(2);
        }
    };
    // SIGTERM and SIGINT stop the member cleanly (checked every heartbeat).
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, config.stop.clone()) {
            eprintln!("keel: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
