//! A scenario and its run: build the cluster from the seed, run the workload under the
//! fault schedule (safety phase), heal and demand progress (liveness phase), then check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft::Plants;
use keel_storage::backend::MemBackend;
use madsim::runtime::{Handle, Runtime};
use madsim::time::{sleep, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_all, Violation};
use crate::cluster::{client_ip, run_server, BackendKind, CallResult, Client, NetChaos, ServerEnv, ServerSlot};
use crate::cluster::{SkewedClock, ToClient, ToServer};
use crate::disk::SimDisk;
use crate::history::Recorder;
use crate::nemesis::{Fault, Nemesis};
use crate::seed::sub_seed;
use crate::workload::{compactor, kv_client, lease_client, watch_client, ClientEnv};

/// Everything a scenario fixes; the seed decides the rest.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (used on the command line).
    pub name: &'static str,
    /// One line on what it exercises.
    pub about: &'static str,
    /// Voters at the start.
    pub servers: u64,
    /// Backend.
    pub backend: BackendKind,
    /// Length of the safety phase, simulated seconds.
    pub safety_secs: u64,
    /// Faults drawn during the safety phase.
    pub faults: &'static [Fault],
    /// Pause between faults, ms range.
    pub fault_gap_ms: (u64, u64),
    /// Peer-message chaos for the whole safety phase.
    pub chaos: NetChaos,
    /// Clock drift bound (0.05: clocks run up to 5% fast or slow).
    pub max_drift: f64,
    /// KV clients.
    pub kv_clients: u64,
    /// Lease clients.
    pub lease_clients: u64,
    /// Watch clients.
    pub watch_clients: u64,
    /// Run a compactor.
    pub compaction: bool,
    /// Add a fresh member and remove an original one during the safety phase.
    pub membership: bool,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
}

impl Scenario {
    /// A 3-node scenario with a modest workload and no faults, to build on.
    pub const fn base(name: &'static str, about: &'static str) -> Scenario {
        Scenario {
            name,
            about,
            servers: 3,
            backend: BackendKind::Mem,
            safety_secs: 20,
            faults: &[],
            fault_gap_ms: (500, 3000),
            chaos: NetChaos { loss: 0.0, duplicate: 0.0, delay: 0.0 },
            max_drift: 0.0,
            kv_clients: 4,
            lease_clients: 0,
            watch_clients: 1,
            compaction: false,
            membership: false,
            snapshot_count: 200,
        }
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: &'static str,
    /// Seed.
    pub seed: u64,
    /// Hash over every traced event.
    pub trace: u64,
    /// Events traced.
    pub events: u64,
    /// What the checkers found.
    pub violations: Vec<Violation>,
    /// The fault log.
    pub faults: Vec<String>,
    /// Client operations checked.
    pub ops: usize,
    /// Simulated seconds.
    pub sim_secs: f64,
    /// Parameters drawn from the seed.
    pub params: Vec<String>,
    /// Leadership claims: term and the nodes that claimed it.
    pub leaders: Vec<(u64, Vec<u64>)>,
}

/// Runs `scenario` with `seed` (and any planted bugs) in a fresh simulation.
pub fn run(scenario: &Scenario, seed: u64, plants: Plants) -> RunReport {
    // Directories are made outside the simulation: their random names must not draw from it.
    let dirs: Vec<tempfile::TempDir> = match scenario.backend {
        BackendKind::Rocks => (0..=scenario.servers + 1).map(|_| tempfile::tempdir().expect("temp dir")).collect(),
        BackendKind::Mem => Vec::new(),
    };
    let paths: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let scenario = scenario.clone();
    let report = runtime.block_on(async move {
        let control = Handle::current().create_node().name("control").ip(client_ip(200)).build();
        control.spawn(simulate(scenario, seed, plants, paths)).await.expect("control task")
    });
    drop(dirs);
    report
}

async fn simulate(scenario: Scenario, seed: u64, plants: Plants, rocks_dirs: Vec<std::path::PathBuf>) -> RunReport {
    let handle = Handle::current();
    let recorder = Recorder::new();
    let origin = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(seed, "scenario", 0));
    let voters: Vec<u64> = (1..=scenario.servers).collect();
    let all_servers: Vec<u64> = if scenario.membership { (1..=scenario.servers + 1).collect() } else { voters.clone() };
    let chaos = Arc::new(Mutex::new(scenario.chaos));
    let env = ServerEnv {
        seed,
        voters: voters.clone(),
        chaos: chaos.clone(),
        plants,
        snapshot_count: scenario.snapshot_count,
        recorder: recorder.clone(),
    };
    let mut params = vec![format!("servers={:?} backend={:?}", all_servers, scenario.backend)];
    let mut slots = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for &id in &all_servers {
        let rate = 1.0 + rng.gen_range(-scenario.max_drift..=scenario.max_drift);
        let offset_ms = rng.gen_range(0..3_600_000);
        let sync_ms = rng.gen_range(1..10);
        // From one write at a time to a deep pipeline (a stream of its own: the draws above
        // stay as they were).
        let writes_in_flight = 1 + (sub_seed(seed, "writes-in-flight", id) % 8) as usize;
        params.push(format!(
            "node {id}: clock rate {rate:.4} offset {offset_ms}ms fsync {sync_ms}ms writes in flight {writes_in_flight}"
        ));
        let clock = SkewedClock { origin, offset_ms, rate };
        let slot = Arc::new(Mutex::new(ServerSlot {
            id,
            disk: SimDisk::new(Duration::from_millis(sync_ms)),
            mem: Arc::new(Mutex::new(MemBackend::new())),
            rocks_dir: rocks_dirs.get(id as usize).cloned(),
            writes_in_flight,
            boots: 0,
            up: false,
        }));
        let mut server_env = env.clone();
        if !voters.contains(&id) {
            server_env.voters = Vec::new();
        }
        let init_slot = slot.clone();
        let node = handle
            .create_node()
            .name(format!("keel-{id}"))
            .ip(crate::cluster::server_addr(id).ip())
            .init(move || run_server(init_slot.clone(), server_env.clone(), clock))
            .build();
        nodes.insert(id, node.id());
        slots.insert(id, slot);
    }
    let until = origin + Duration::from_secs(scenario.safety_secs);
    let client_env = ClientEnv { servers: all_servers.clone(), until, recorder: recorder.clone(), keys: 5 };
    let mut n = 0;
    let mut spawn_client = |kind: &str| {
        n += 1;
        let node = handle.create_node().name(format!("{kind}-{n}")).ip(client_ip(n)).build();
        (n, node, ChaCha8Rng::seed_from_u64(sub_seed(seed, kind, n)))
    };
    let mut clients = Vec::new();
    for _ in 0..scenario.kv_clients {
        let (n, node, rng) = spawn_client("kv");
        clients.push(node.spawn(kv_client(n, client_env.clone(), rng)));
    }
    for _ in 0..scenario.lease_clients {
        let (n, node, rng) = spawn_client("lease");
        clients.push(node.spawn(lease_client(n, client_env.clone(), rng)));
    }
    for _ in 0..scenario.watch_clients {
        let (n, node, rng) = spawn_client("watch");
        clients.push(node.spawn(watch_client(n, client_env.clone(), rng)));
    }
    if scenario.compaction {
        let (n, node, rng) = spawn_client("compactor");
        clients.push(node.spawn(compactor(n, client_env.clone(), rng)));
    }
    let mut nemesis = Nemesis {
        slots,
        nodes: nodes.clone(),
        chaos,
        base_chaos: scenario.chaos,
        recorder: recorder.clone(),
        rng: ChaCha8Rng::seed_from_u64(sub_seed(seed, "nemesis", 0)),
        mem_backend: scenario.backend == BackendKind::Mem,
        admin: Client::bind(200).await,
    };
    let mut members = voters.clone();
    if scenario.membership {
        sleep(Duration::from_secs(rng.gen_range(2..6))).await;
        let new = scenario.servers + 1;
        if nemesis.add_member(new).await {
            members.push(new);
            let old = rng.gen_range(1..=scenario.servers);
            if nemesis.remove_member(old).await {
                members.retain(|&m| m != old);
            }
        }
    }
    nemesis.run(scenario.faults, scenario.fault_gap_ms, until).await;
    for client in clients {
        client.await.expect("client task");
    }
    // Liveness: heal everything, then require a write, a read, and every member converged.
    nemesis.heal_all().await;
    liveness(&mut nemesis.admin, &members, &recorder).await;
    for id in nodes.values() {
        handle.kill(*id);
    }
    let sim_secs = origin.elapsed().as_secs_f64();
    let rec = recorder.lock().expect("recorder");
    let violations = check_all(&rec, scenario.max_drift);
    RunReport {
        scenario: scenario.name,
        seed,
        trace: rec.trace_hash(),
        events: rec.trace_events(),
        violations,
        faults: rec.faults.clone(),
        ops: rec.ops.len(),
        sim_secs,
        params,
        leaders: rec.leaders.iter().map(|(t, n)| (*t, n.clone())).collect(),
    }
}

async fn liveness(admin: &mut Client, members: &[u64], recorder: &crate::history::Shared) {
    let fail = |what: String| recorder.lock().expect("recorder").liveness.push(what);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut wrote = false;
    let mut target = 0;
    while Instant::now() < deadline && !wrote {
        target = (target + 1) % members.len();
        let put =
            keel_storage::mvcc::PutRequest { key: b"liveness".to_vec(), value: b"ok".to_vec(), ..Default::default() };
        wrote = matches!(
            admin.call(members[target], keel_node::Request::Put(put), Duration::from_secs(2)).await,
            CallResult::Ok(_)
        );
    }
    if !wrote {
        return fail("no write succeeded within 30s after healing".into());
    }
    // Every member must reach the same applied index and store hash.
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for (i, &m) in members.iter().enumerate() {
            admin.send(m, ToServer::Inspect(i as u64)).await;
        }
        let until = Instant::now() + Duration::from_secs(1);
        while seen.len() < members.len() && Instant::now() < until {
            if let Some(ToClient::Inspected(i, applied, revision, hash)) = admin.recv(Duration::from_millis(500)).await
            {
                seen.push((members[i as usize], applied, revision, hash));
            }
        }
        seen.sort();
        seen.dedup_by_key(|s| s.0);
        let converged = seen.len() == members.len() && seen.windows(2).all(|w| w[0].1 == w[1].1);
        if converged {
            if seen.windows(2).any(|w| (w[0].2, w[0].3) != (w[1].2, w[1].3)) {
                fail(format!("members at the same applied index disagree on revision or hash: {seen:?}"));
            }
            return;
        }
        last = seen;
        sleep(Duration::from_millis(500)).await;
    }
    fail(format!("members did not converge within 30s after healing: {last:?}"));
}
