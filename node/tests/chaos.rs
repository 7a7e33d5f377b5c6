//! Real-process chaos: three `keel` processes on loopback under concurrent client load
//! (the `etcd-client` crate: puts, linearizable gets, deletes, compare-and-set txns on a few
//! keys) while a nemesis kills members with SIGKILL — the leader more often than not —
//! restarts them, and moves the leadership. The recorded history must be linearizable
//! (the simulator's checker, `keel-check`), and afterwards every member must serve the
//! final value of every key.
//!
//! Bounded: the faults run for `KEEL_CHAOS_SECS` seconds (default 12).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{etcdctl, ok, wait_until, Cluster};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use keel_api::EtcdError;
use keel_check::{KvInput, KvOp, KvOutput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: u64 = 4;
const CLIENTS: u64 = 4;
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a failed request certainly had no effect: a gRPC status carrying one of etcd's
/// definite errors. Anything else (timeouts, broken connections) may have taken effect.
fn failed_without_effect(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            EtcdError::from_message(status.message()).is_some_and(|e| e.is_definite())
        }
        _ => false,
    }
}

async fn run_op(client: &mut Client, key: &str, input: &KvInput) -> Result<KvOutput, etcd_client::Error> {
    Ok(match input {
        KvInput::Put(value) => {
            client.put(key, value.clone(), None).await?;
            KvOutput::Done
        }
        KvInput::Delete => {
            client.delete(key, None).await?;
            KvOutput::Done
        }
        KvInput::Get => {
            let got = client.get(key, None).await?;
            KvOutput::Value(got.kvs().first().map(|kv| kv.value().to_vec()))
        }
        KvInput::Cas { expect, new } => {
            let compare = match expect {
                Some(value) => Compare::value(key, CompareOp::Equal, value.clone()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, new.clone(), None)])
                .or_else([TxnOp::get(key, None)]);
            let done = client.txn(txn).await?;
            let read = match done.op_responses().first() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            };
            KvOutput::Cas(done.succeeded(), read)
        }
    })
}

/// One client: random operations until told to stop, each recorded with its call and
/// return times (an operation that failed in an unknown way never returns).
async fn client_loop(id: u64, endpoints: Vec<String>, start: Instant, stop: Arc<AtomicBool>) -> Vec<KvOp> {
    let mut rng = ChaCha8Rng::seed_from_u64(id);
    let mut history = Vec::new();
    let mut client = None;
    let mut next_value = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = Client::connect(&endpoints, None).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let key = format!("key{}", rng.gen_range(0..KEYS));
        // A CAS expects a value some client wrote (or may write), or the key's absence.
        let expect = match rng.gen_range(0..3) {
            0 => None,
            _ => Some(format!("c{}-{}", rng.gen_range(0..CLIENTS), rng.gen_range(1..next_value + 2)).into_bytes()),
        };
        next_value += 1;
        let fresh = format!("c{id}-{next_value}").into_bytes();
        let input = match rng.gen_range(0..10) {
            0..=2 => KvInput::Put(fresh),
            3..=5 => KvInput::Get,
            6 => KvInput::Delete,
            _ => KvInput::Cas { expect, new: fresh },
        };
        let call = start.elapsed().as_nanos() as u64;
        let outcome = tokio::time::timeout(OP_TIMEOUT, run_op(client.as_mut().expect("connected"), &key, &input)).await;
        let ret = start.elapsed().as_nanos() as u64;
        let (ret, output) = match outcome {
            Ok(Ok(output)) => (Some(ret), Some(output)),
            Ok(Err(e)) if failed_without_effect(&e) => continue,
            Ok(Err(_)) | Err(_) => {
                client = None; // reconnect: the connection may be to a dead member
                (None, None)
            }
        };
        history.push(KvOp { client: id, key: key.into_bytes(), input, call, ret, output });
    }
    history
}

/// Kills, restarts and moves the leader until `until`; returns how many members it killed.
fn nemesis(cluster: &mut Cluster, until: Instant, seed: u64) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(rng.gen_range(800..2000)));
        let down: Vec<usize> = (0..3).filter(|&i| !cluster.members[i].is_running()).collect();
        if let Some(&i) = down.first() {
            cluster.members[i].restart();
            continue;
        }
        match rng.gen_range(0..4) {
            0..=1 => {
                if let Some(leader) = cluster.leader() {
                    cluster.members[leader].kill();
                    kills += 1;
                }
            }
            2 => {
                cluster.members[rng.gen_range(0..3)].kill();
                kills += 1;
            }
            _ => {
                let target = &cluster.members[rng.gen_range(0..3)].endpoint;
                let status = etcdctl(target, &["endpoint", "status"]);
                let id = String::from_utf8_lossy(&status.stdout).split(", ").nth(1).map(str::to_owned);
                if let Some(id) = id {
                    etcdctl(&cluster.endpoints(), &["move-leader", &id]);
                }
            }
        }
    }
    for member in &mut cluster.members {
        if !member.is_running() {
            member.restart();
        }
    }
    kills
}

#[test]
fn history_under_kills_and_leader_moves_is_linearizable() {
    let secs: u64 = std::env::var("KEEL_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let mut cluster = Cluster::start(&["a", "b", "c"]);
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint.clone()).collect();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| runtime.spawn(client_loop(id, endpoints.clone(), start, stop.clone()))).collect();
    let kills = nemesis(&mut cluster, Instant::now() + Duration::from_secs(secs), secs);
    // Let the restarted members rejoin under load, then stop the clients.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let history: Vec<KvOp> = runtime.block_on(async {
        let mut all = Vec::new();
        for client in clients {
            all.extend(client.await.expect("client task"));
        }
        all
    });
    let acknowledged = history.iter().filter(|op| op.ret.is_some()).count();
    assert!(kills >= 2, "the nemesis killed only {kills} members");
    assert!(acknowledged >= 100, "only {acknowledged} operations succeeded: the test proves little");
    let failures = keel_check::check(&history);
    assert!(failures.is_empty(), "not linearizable: {failures:?}");

    // Nothing acknowledged is lost: once caught up, every member serves the last value of
    // every key that a linearizable read through the cluster returns.
    let all = cluster.endpoints();
    for k in 0..KEYS {
        let key = format!("key{k}");
        let expected = ok(&all, &["get", &key, "--print-value-only"]);
        for member in &cluster.members {
            wait_until(30, &format!("{} serves {key}", member.endpoint), || {
                let out = etcdctl(&member.endpoint, &["get", &key, "--print-value-only", "--consistency=s"]);
                out.status.success() && String::from_utf8_lossy(&out.stdout) == expected
            });
        }
    }
    eprintln!("chaos: {} operations ({acknowledged} acknowledged), {kills} kills, linearizable", history.len());
}
