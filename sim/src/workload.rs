//! Workload clients: they behave like real etcd clients (deadlines, retries against another
//! member, following "not leader") and record what they saw for the checkers.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{Reply, Request, Response, WatchCreate};
use keel_storage::mvcc::{
    Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, Request as TxnOp, RequestOp, Response as TxnReply,
    TargetUnion, TxnRequest,
};
use madsim::time::{sleep, Instant};
use prost::Message as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cluster::{CallResult, Client, ToClient, ToServer};
use crate::history::{KvInput, KvOp, KvOutput, LeaseAck, Shared, WatchSession};

/// What every client needs to know.
#[derive(Clone)]
pub struct ClientEnv {
    /// Server ids.
    pub servers: Vec<u64>,
    /// Stop issuing requests at this time.
    pub until: Instant,
    /// Recorder.
    pub recorder: Shared,
    /// Keys the KV clients share.
    pub keys: usize,
}

const DEADLINE: Duration = Duration::from_secs(2);

fn pick(rng: &mut ChaCha8Rng, servers: &[u64]) -> u64 {
    servers[rng.gen_range(0..servers.len())]
}

fn trace_call(env: &ClientEnv, client: u64, what: &str, result: &CallResult) {
    let body = format!("{client} {what} {result:?}");
    env.recorder.lock().expect("recorder").trace("client", body.as_bytes());
}

fn cas_request(key: &[u8], expect: &Option<Vec<u8>>, new: &[u8]) -> TxnRequest {
    let compare = match expect {
        Some(v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::Value(v.clone())),
            range_end: Vec::new(),
        },
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::Version(0)),
            range_end: Vec::new(),
        },
    };
    let put = PutRequest { key: key.to_vec(), value: new.to_vec(), ..Default::default() };
    let get = RangeRequest { key: key.to_vec(), ..Default::default() };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp { request: Some(TxnOp::Put(put)) }],
        failure: vec![RequestOp { request: Some(TxnOp::Range(get)) }],
    }
}

fn first_value(kvs: &[keel_storage::mvcc::KeyValue]) -> Option<Vec<u8>> {
    kvs.first().map(|kv| kv.value.clone())
}

fn output_of(input: &KvInput, reply: &Reply) -> Option<KvOutput> {
    match (input, &reply.response) {
        (KvInput::Get, Response::Range(r)) => Some(KvOutput::Value(first_value(&r.kvs))),
        (KvInput::Put(_), Response::Put(_)) | (KvInput::Delete, Response::DeleteRange(_)) => Some(KvOutput::Done),
        (KvInput::Cas { .. }, Response::Txn(t)) if t.succeeded => Some(KvOutput::Cas(true, None)),
        (KvInput::Cas { .. }, Response::Txn(t)) => match t.responses.first().and_then(|r| r.response.as_ref()) {
            Some(TxnReply::Range(r)) => Some(KvOutput::Cas(false, first_value(&r.kvs))),
            _ => None,
        },
        _ => None,
    }
}

/// A client of single-key puts, gets, deletes and compare-and-swaps with unique values.
pub async fn kv_client(n: u64, env: ClientEnv, mut rng: ChaCha8Rng) {
    let mut client = Client::bind(n).await;
    let mut target = pick(&mut rng, &env.servers);
    let mut last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut seq = 0u64;
    while Instant::now() < env.until {
        seq += 1;
        let key = format!("k{}", rng.gen_range(0..env.keys)).into_bytes();
        let value = format!("c{n}-{seq}").into_bytes();
        let (input, request) = match rng.gen_range(0..100) {
            0..40 => (
                KvInput::Put(value.clone()),
                Request::Put(PutRequest { key: key.clone(), value: value.clone(), ..Default::default() }),
            ),
            40..75 => (KvInput::Get, Request::Range(RangeRequest { key: key.clone(), ..Default::default() })),
            75..85 => (
                KvInput::Delete,
                Request::DeleteRange(keel_storage::mvcc::DeleteRangeRequest { key: key.clone(), ..Default::default() }),
            ),
            _ => {
                let expect = last_seen.get(&key).cloned().flatten();
                (
                    KvInput::Cas { expect: expect.clone(), new: value.clone() },
                    Request::Txn(cas_request(&key, &expect, &value)),
                )
            }
        };
        let call = env.recorder.lock().expect("recorder").now();
        let result = client.call(target, request, DEADLINE).await;
        trace_call(&env, n, &format!("{input:?}"), &result);
        let ret = env.recorder.lock().expect("recorder").now();
        let is_read = input == KvInput::Get;
        let op = |ret, output| KvOp { client: n, key: key.clone(), input: input.clone(), call, ret, output };
        match result {
            CallResult::Ok(reply) => {
                let output = output_of(&input, &reply);
                match &output {
                    Some(KvOutput::Value(v)) | Some(KvOutput::Cas(false, v)) => {
                        last_seen.insert(key.clone(), v.clone());
                    }
                    Some(KvOutput::Cas(true, _)) | Some(KvOutput::Done) => {
                        let written = if input == KvInput::Delete { None } else { Some(value.clone()) };
                        last_seen.insert(key.clone(), written);
                    }
                    None => {}
                }
                env.recorder.lock().expect("recorder").ops.push(op(Some(ret), output));
            }
            CallResult::Err(e) if e.is_definite() => target = pick(&mut rng, &env.servers),
            CallResult::Err(_) | CallResult::Timeout => {
                if !is_read {
                    env.recorder.lock().expect("recorder").ops.push(op(None, None));
                }
                target = pick(&mut rng, &env.servers);
            }
        }
        sleep(Duration::from_millis(rng.gen_range(0..40))).await;
    }
}

/// A client that grants leases, attaches keys, keeps some alive for a while, then lets them
/// expire or revokes them. Every acknowledged grant and keep-alive is recorded.
pub async fn lease_client(n: u64, env: ClientEnv, mut rng: ChaCha8Rng) {
    let mut client = Client::bind(n).await;
    let mut target = pick(&mut rng, &env.servers);
    let mut seq = 0u64;
    let ack = |lease: i64, sent, ttl_secs| {
        env.recorder.lock().expect("recorder").lease_acks.push(LeaseAck { lease, sent, ttl_secs });
    };
    while Instant::now() < env.until {
        let sent = env.recorder.lock().expect("recorder").now();
        let ttl = rng.gen_range(2..5);
        let result = client.call(target, Request::LeaseGrant { id: 0, ttl }, DEADLINE).await;
        trace_call(&env, n, "grant", &result);
        let (lease, ttl) = match result {
            CallResult::Ok(Reply { response: Response::LeaseGrant { id, ttl }, .. }) => (id, ttl),
            _ => {
                target = pick(&mut rng, &env.servers);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        ack(lease, sent, ttl);
        seq += 1;
        let put = PutRequest {
            key: format!("lease/{n}/{seq}").into_bytes(),
            value: b"held".to_vec(),
            lease,
            ..Default::default()
        };
        let result = client.call(target, Request::Put(put), DEADLINE).await;
        trace_call(&env, n, "lease put", &result);
        for _ in 0..rng.gen_range(0..8) {
            sleep(Duration::from_millis(ttl as u64 * 1000 / 3)).await;
            let sent = env.recorder.lock().expect("recorder").now();
            let result = client.call(target, Request::LeaseKeepAlive { id: lease }, DEADLINE).await;
            trace_call(&env, n, "keepalive", &result);
            match result {
                CallResult::Ok(Reply { response: Response::LeaseKeepAlive { ttl, .. }, .. }) => ack(lease, sent, ttl),
                CallResult::Err(keel_api::EtcdError::LeaseNotFound) => break,
                _ => target = pick(&mut rng, &env.servers),
            }
        }
        if rng.gen_bool(0.3) {
            let result = client.call(target, Request::LeaseRevoke { id: lease }, DEADLINE).await;
            trace_call(&env, n, "revoke", &result);
        }
        sleep(Duration::from_millis(rng.gen_range(0..3000))).await;
    }
}

/// A client that watches every KV key, reconnecting (from the next revision it has not
/// seen) when its server stops answering, and records each session.
pub async fn watch_client(n: u64, env: ClientEnv, mut rng: ChaCha8Rng) {
    let client = Client::bind(n).await;
    let mut start_revision = 1;
    let mut session_no = 0u64;
    while Instant::now() < env.until {
        session_no += 1;
        let stream = n << 32 | session_no;
        let node = pick(&mut rng, &env.servers);
        let prev_kv = rng.gen_bool(0.5);
        let spec =
            WatchCreate { key: b"k".to_vec(), range_end: b"l".to_vec(), start_revision, prev_kv, ..Default::default() };
        let mut session = WatchSession {
            client: n,
            node,
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision,
            prev_kv,
            responses: Vec::new(),
            compacted: None,
        };
        client.send(node, ToServer::Watch(stream, spec)).await;
        let mut watch_id = None;
        let mut unanswered_pings = 0;
        // Responses arrive out of order over the simulated network: restore the stream's
        // order; a gap that lasts means a lost message, i.e. a broken stream.
        let mut next_seq = 1;
        let mut early: BTreeMap<u64, keel_node::WatchResponse> = BTreeMap::new();
        let mut gap_since: Option<Instant> = None;
        'session: while Instant::now() < env.until && unanswered_pings < 2 {
            match client.recv(Duration::from_millis(500)).await {
                Some(ToClient::Watch(seq, r)) if r.stream == stream => {
                    early.insert(seq, r);
                    unanswered_pings = 0;
                }
                Some(ToClient::WatchAlive(s, _, alive)) if s == stream => {
                    if !alive {
                        break;
                    }
                    unanswered_pings = 0;
                }
                Some(_) => {}
                None => {
                    unanswered_pings += 1;
                    client.send(node, ToServer::WatchPing(stream, watch_id.unwrap_or(0))).await;
                }
            }
            while let Some(r) = early.remove(&next_seq) {
                next_seq += 1;
                watch_id = Some(r.watch_id);
                if r.canceled {
                    if r.compact_revision > 0 {
                        session.compacted = Some(r.compact_revision);
                        start_revision = r.compact_revision;
                    }
                    break 'session;
                }
                if let Some(last) = r.events.last().and_then(|e| e.kv.as_ref()) {
                    start_revision = last.mod_revision + 1;
                }
                let body: Vec<u8> = r.events.iter().flat_map(|e| e.encode_to_vec()).collect();
                env.recorder.lock().expect("recorder").trace("watch", &body);
                if !r.events.is_empty() {
                    session.responses.push(r.events);
                }
            }
            match (early.is_empty(), gap_since) {
                (true, _) => gap_since = None,
                (false, None) => gap_since = Some(Instant::now()),
                (false, Some(since)) if since.elapsed() > Duration::from_millis(500) => break,
                (false, Some(_)) => {}
            }
        }
        env.recorder.lock().expect("recorder").watches.push(session);
    }
}

/// A client that compacts history every few seconds, keeping the last 20 revisions.
pub async fn compactor(n: u64, env: ClientEnv, mut rng: ChaCha8Rng) {
    let mut client = Client::bind(n).await;
    while Instant::now() < env.until {
        sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
        let node = pick(&mut rng, &env.servers);
        let read = Request::Range(RangeRequest { key: b"k0".to_vec(), serializable: true, ..Default::default() });
        if let CallResult::Ok(reply) = client.call(node, read, DEADLINE).await {
            if reply.revision > 25 {
                let result = client.call(node, Request::Compact { revision: reply.revision - 20 }, DEADLINE).await;
                trace_call(&env, n, "compact", &result);
            }
        }
    }
}
