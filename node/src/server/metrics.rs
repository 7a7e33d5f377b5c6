//! What `/metrics` reports, in the Prometheus (OpenMetrics) text format, under etcd's metric
//! names where etcd has one: request counts and latency per RPC, WAL fsync latency, apply
//! latency, proposal-to-commit latency, Raft state and the store's size. Counters and
//! histograms are updated as things happen; the gauges are read from the node when scraped.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::actor::MemberStatus;
use crate::Probe;

/// One RPC's labels, as go-grpc-prometheus (which etcd uses) names them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `unary` or `bidi_stream`/`server_stream`.
    pub grpc_type: &'static str,
    /// E.g. `etcdserverpb.KV`.
    pub grpc_service: &'static str,
    /// E.g. `Range`.
    pub grpc_method: &'static str,
}

/// An RPC's labels with its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// `unary` or `bidi_stream`/`server_stream`.
    pub grpc_type: &'static str,
    /// E.g. `etcdserverpb.KV`.
    pub grpc_service: &'static str,
    /// E.g. `Range`.
    pub grpc_method: &'static str,
    /// The gRPC status code's name, e.g. `OK`, `InvalidArgument`.
    pub grpc_code: &'static str,
}

/// The member's metrics.
pub struct Metrics {
    registry: Registry,
    /// RPCs answered, by method and status.
    pub handled: Family<HandledLabels, Counter>,
    /// Seconds from request to answer, by method (unary calls).
    pub handling_seconds: Family<RpcLabels, Histogram>,
    /// Request messages read, by method (streams count each one).
    msg_received: Family<RpcLabels, Counter>,
    /// Response messages sent, by method.
    msg_sent: Family<RpcLabels, Counter>,
    /// Seconds per WAL fdatasync.
    pub wal_fsync_seconds: Histogram,
    /// Seconds to apply one batch of committed entries.
    apply_seconds: Histogram,
    /// Seconds from this member proposing an entry to seeing it committed.
    commit_seconds: Histogram,
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    committed: Gauge,
    applied: Gauge,
    db_bytes: Gauge,
    revision: Gauge,
    resident_bytes: Gauge,
}

/// The message counters of one RPC: received, sent.
pub struct MessageCounters {
    /// Request messages read.
    pub received: Counter,
    /// Response messages sent.
    pub sent: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let handled = Family::<HandledLabels, Counter>::default();
        registry.register("grpc_server_handled", "RPCs completed on the server, by status", handled.clone());
        let handling_seconds = Family::<RpcLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))) as fn() -> Histogram,
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Response latency of unary RPCs handled by the server",
            handling_seconds.clone(),
        );
        let msg_received = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_server_msg_received",
            "RPC stream messages received on the server",
            msg_received.clone(),
        );
        let msg_sent = Family::<RpcLabels, Counter>::default();
        registry.register("grpc_server_msg_sent", "gRPC stream messages sent by the server", msg_sent.clone());
        let wal_fsync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            wal_fsync_seconds.clone(),
        );
        let apply_seconds = Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        registry.register(
            "keel_server_apply_duration_seconds",
            "The latency distribution of applying a batch of committed entries",
            apply_seconds.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "keel_raft_proposal_commit_duration_seconds",
            "The latency distribution from proposing an entry to its commit",
            commit_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        Metrics {
            msg_received,
            msg_sent,
            has_leader: gauge(
                &mut registry,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                &mut registry,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            term: gauge(&mut registry, "keel_raft_term", "The member's current Raft term"),
            committed: gauge(
                &mut registry,
                "etcd_server_proposals_committed",
                "The index of the last committed Raft entry",
            ),
            applied: gauge(&mut registry, "etcd_server_proposals_applied", "The index of the last applied Raft entry"),
            db_bytes: gauge(
                &mut registry,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database in bytes",
            ),
            revision: gauge(&mut registry, "etcd_debugging_mvcc_current_revision", "The current revision of the store"),
            resident_bytes: gauge(&mut registry, "process_resident_memory_bytes", "Resident memory size in bytes"),
            registry,
            handled,
            handling_seconds,
            wal_fsync_seconds,
            apply_seconds,
            commit_seconds,
        }
    }
}

/// Times the node's apply and commit steps into the metrics, on the process's monotonic clock.
pub struct MetricsProbe {
    epoch: Instant,
    apply_seconds: Histogram,
    commit_seconds: Histogram,
}

impl MetricsProbe {
    /// A probe feeding `metrics`.
    pub fn new(metrics: &Metrics) -> MetricsProbe {
        MetricsProbe {
            epoch: Instant::now(),
            apply_seconds: metrics.apply_seconds.clone(),
            commit_seconds: metrics.commit_seconds.clone(),
        }
    }
}

impl Probe for MetricsProbe {
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn applied(&self, nanos: u64) {
        self.apply_seconds.observe(nanos as f64 / 1e9);
    }

    fn committed(&self, nanos: u64) {
        self.commit_seconds.observe(nanos as f64 / 1e9);
    }
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

impl Metrics {
    /// The message counters of the RPC labelled `labels`.
    pub fn messages(&self, labels: &RpcLabels) -> MessageCounters {
        MessageCounters {
            received: self.msg_received.get_or_create(labels).clone(),
            sent: self.msg_sent.get_or_create(labels).clone(),
        }
    }

    /// The text exposition, with the gauges read from `status`.
    pub fn render(&self, status: &MemberStatus) -> String {
        let raft = &status.raft;
        self.has_leader.set(i64::from(raft.leader != 0));
        self.is_leader.set(i64::from(raft.leader == raft.id));
        self.term.set(raft.term as i64);
        self.committed.set(raft.commit as i64);
        self.applied.set(raft.applied as i64);
        self.db_bytes.set(status.db_size as i64);
        self.revision.set(raft.revision);
        self.resident_bytes.set(resident_bytes().unwrap_or(0) as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String never fails");
        text
    }
}
