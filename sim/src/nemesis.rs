//! The fault schedule: faults drawn from the seed, injected while the workload runs, and
//! healed before the liveness phase.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft::{ConfChange, ConfChangeType};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::{sleep, Instant};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use keel_storage::mvcc::KvStore;
use keel_storage::wal::{entry_record, Disk};

use crate::cluster::{CallResult, Client, NetChaos, ServerSlot, ToServer};
use crate::disk::SimBackend;
use crate::history::Shared;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Kill a random server and restart it (a process crash: nothing synced or unsynced is lost).
    Crash,
    /// Kill the current leader and restart it.
    CrashLeader,
    /// Power loss on one server: unsynced writes lost, last write torn.
    PowerLoss,
    /// Power loss on a majority at once.
    PowerLossMajority,
    /// Split the servers into a majority and a minority.
    Partition,
    /// Cut the leader off from everyone.
    IsolateLeader,
    /// Drop traffic one way between some pairs.
    OneWay,
    /// Partitions that come and go quickly.
    Flapping,
    /// The disk of one server starts failing; the server must stop, and is repaired later.
    DiskError,
    /// Restart every server in turn.
    RollingRestart,
    /// Hand leadership to another member.
    TransferLeader,
    /// Turn loss, duplication and delay of peer messages up for a while.
    Lossy,
    /// After a clean stop, one server's log loses synced bytes, from inside the record of the
    /// last entry its store applied to the end of that segment: it must refuse to start, and
    /// starts again once the file is restored.
    CutTail,
}

/// The fault injector of one run.
pub struct Nemesis {
    /// Server slots by member id.
    pub slots: BTreeMap<u64, Arc<Mutex<ServerSlot>>>,
    /// madsim node of each server.
    pub nodes: BTreeMap<u64, NodeId>,
    /// Network chaos knob.
    pub chaos: Arc<Mutex<NetChaos>>,
    /// Baseline chaos of the scenario.
    pub base_chaos: NetChaos,
    /// Recorder.
    pub recorder: Shared,
    /// Randomness.
    pub rng: ChaCha8Rng,
    /// Whether power cuts are modelled for the backend (in-memory backend only).
    pub mem_backend: bool,
    /// The operator's client (membership changes, leadership moves, inspection).
    pub admin: Client,
}

impl Nemesis {
    fn servers(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn leader(&self) -> Option<u64> {
        let rec = self.recorder.lock().expect("recorder");
        rec.leaders.last_key_value().and_then(|(_, nodes)| nodes.last().copied())
    }

    fn log(&self, line: String) {
        self.recorder.lock().expect("recorder").fault(line);
    }

    /// Injects faults from `kinds` until `until`, `gap` apart.
    pub async fn run(&mut self, kinds: &[Fault], gap: (u64, u64), until: Instant) {
        if kinds.is_empty() {
            return;
        }
        while Instant::now() < until {
            sleep(Duration::from_millis(self.rng.gen_range(gap.0..gap.1))).await;
            if Instant::now() >= until {
                break;
            }
            let fault = *kinds.choose(&mut self.rng).expect("non-empty");
            self.inject(fault).await;
        }
    }

    async fn inject(&mut self, fault: Fault) {
        let servers = self.servers();
        let any = *servers.choose(&mut self.rng).expect("servers");
        match fault {
            Fault::Crash => self.crash(&[any], false).await,
            Fault::CrashLeader => {
                let target = self.leader().unwrap_or(any);
                self.crash(&[target], false).await
            }
            Fault::PowerLoss => self.crash(&[any], true).await,
            Fault::PowerLossMajority => {
                let mut victims = servers.clone();
                victims.shuffle(&mut self.rng);
                victims.truncate(servers.len() / 2 + 1);
                self.crash(&victims, true).await
            }
            Fault::Partition => {
                let mut order = servers.clone();
                order.shuffle(&mut self.rng);
                let cut = self.rng.gen_range(1..=servers.len() / 2);
                let (minority, majority) = order.split_at(cut);
                let ms = self.rng.gen_range(500..4000);
                self.partition(minority, majority, ms).await
            }
            Fault::IsolateLeader => {
                let leader = self.leader().unwrap_or(any);
                let rest: Vec<u64> = servers.iter().copied().filter(|&s| s != leader).collect();
                let ms = self.rng.gen_range(500..4000);
                self.partition(&[leader], &rest, ms).await
            }
            Fault::OneWay => {
                let net = NetSim::current();
                let mut links = Vec::new();
                for _ in 0..self.rng.gen_range(1..=servers.len()) {
                    let a = *servers.choose(&mut self.rng).expect("servers");
                    let b = *servers.choose(&mut self.rng).expect("servers");
                    if a != b {
                        net.clog_link(self.nodes[&a], self.nodes[&b]);
                        links.push((a, b));
                    }
                }
                self.log(format!("one-way drops {links:?}"));
                sleep(Duration::from_millis(self.rng.gen_range(500..4000))).await;
                for (a, b) in links {
                    net.unclog_link(self.nodes[&a], self.nodes[&b]);
                }
                self.log("one-way healed".into());
            }
            Fault::Flapping => {
                for _ in 0..self.rng.gen_range(3..8) {
                    let mut order = servers.clone();
                    order.shuffle(&mut self.rng);
                    let cut = self.rng.gen_range(1..=servers.len() / 2);
                    let (a, b) = order.split_at(cut);
                    let ms = self.rng.gen_range(100..600);
                    self.partition(a, b, ms).await;
                    sleep(Duration::from_millis(self.rng.gen_range(100..600))).await;
                }
            }
            Fault::DiskError => {
                let slot = self.slots[&any].clone();
                let disk = slot.lock().expect("slot").disk.clone();
                disk.fail();
                self.log(format!("disk of node {any} fails"));
                sleep(Duration::from_millis(self.rng.gen_range(500..3000))).await;
                Handle::current().kill(self.nodes[&any]);
                disk.repair();
                sleep(Duration::from_millis(100)).await;
                self.log(format!("disk of node {any} repaired, restarting"));
                Handle::current().restart(self.nodes[&any]);
            }
            Fault::RollingRestart => {
                for s in servers {
                    self.crash(&[s], false).await;
                    sleep(Duration::from_millis(self.rng.gen_range(500..1500))).await;
                }
            }
            Fault::TransferLeader => {
                if let Some(leader) = self.leader() {
                    let to = *servers
                        .iter()
                        .filter(|&&s| s != leader)
                        .collect::<Vec<_>>()
                        .choose(&mut self.rng)
                        .expect("peers");
                    self.log(format!("transfer leadership {leader} -> {to}"));
                    self.transfer(leader, *to).await;
                }
            }
            Fault::CutTail => self.cut_tail(any).await,
            Fault::Lossy => {
                let lossy = NetChaos { loss: 0.2, duplicate: 0.2, delay: 0.3 };
                *self.chaos.lock().expect("chaos") = lossy;
                self.log(format!("network lossy {lossy:?}"));
                sleep(Duration::from_millis(self.rng.gen_range(1000..5000))).await;
                *self.chaos.lock().expect("chaos") = self.base_chaos;
                self.log("network calm".into());
            }
        }
    }

    async fn cut_tail(&mut self, victim: u64) {
        assert!(self.mem_backend, "the store's applied index is read from the in-memory backend");
        let handle = Handle::current();
        handle.kill(self.nodes[&victim]);
        self.slots[&victim].lock().expect("slot").up = false;
        sleep(Duration::from_millis(100)).await;
        let (disk, mem) = {
            let slot = self.slots[&victim].lock().expect("slot");
            (slot.disk.clone(), slot.mem.clone())
        };
        let applied = KvStore::open(SimBackend::Mem(mem)).expect("the store opens").applied_index();
        let mut segments = disk.list().expect("the disk lists").into_iter().filter(|n| n.starts_with("wal-")).rev();
        let found = segments.find_map(|name| {
            let record = entry_record(&disk.read(&name).expect("the segment reads"), applied)?;
            Some((name, record))
        });
        let Some((segment, record)) = found else {
            self.log(format!("node {victim}'s log no longer holds entry {applied}: nothing to cut"));
            handle.restart(self.nodes[&victim]);
            return;
        };
        let len = self.rng.gen_range(record.start..record.end);
        let whole = disk.cut(&segment, len).expect("the segment exists");
        self.log(format!("node {victim} stopped; its log cut at byte {len} of {segment}, inside entry {applied}"));
        handle.restart(self.nodes[&victim]);
        sleep(Duration::from_millis(1000)).await;
        if self.slots[&victim].lock().expect("slot").up {
            let detail = format!("node {victim} started on a log cut inside entry {applied}, which its store applied");
            self.recorder.lock().expect("recorder").damage.push(detail);
        }
        handle.kill(self.nodes[&victim]);
        sleep(Duration::from_millis(100)).await;
        disk.restore(&segment, whole);
        self.log(format!("node {victim}'s log restored, restarting"));
        handle.restart(self.nodes[&victim]);
    }

    async fn transfer(&mut self, leader: u64, to: u64) {
        self.admin.send(leader, ToServer::MoveLeader(to)).await;
    }

    async fn crash(&mut self, victims: &[u64], power: bool) {
        let handle = Handle::current();
        for v in victims {
            handle.kill(self.nodes[v]);
            self.slots[v].lock().expect("slot").up = false;
        }
        let what = if power { "power loss" } else { "crash" };
        self.log(format!("{what} {victims:?}"));
        sleep(Duration::from_millis(self.rng.gen_range(100..2000))).await;
        for v in victims {
            if power {
                let (lost_wal, lost_batches) = {
                    let slot = self.slots[v].lock().expect("slot");
                    let lost_wal = slot.disk.power_cut(&mut self.rng);
                    let mut lost_batches = 0;
                    if self.mem_backend {
                        let mut mem = slot.mem.lock().expect("backend");
                        let keep = self.rng.gen_range(0..=mem.unsynced_batches());
                        lost_batches = mem.power_cut(keep);
                    }
                    (lost_wal, lost_batches)
                };
                self.log(format!("node {v} lost {lost_wal} WAL bytes and {lost_batches} store batches"));
            }
            handle.restart(self.nodes[v]);
        }
        self.log(format!("restarted {victims:?}"));
    }

    async fn partition(&mut self, a: &[u64], b: &[u64], ms: u64) {
        let net = NetSim::current();
        for x in a {
            for y in b {
                net.clog_link(self.nodes[x], self.nodes[y]);
                net.clog_link(self.nodes[y], self.nodes[x]);
            }
        }
        self.log(format!("partition {a:?} | {b:?}"));
        sleep(Duration::from_millis(ms)).await;
        for x in a {
            for y in b {
                net.unclog_link(self.nodes[x], self.nodes[y]);
                net.unclog_link(self.nodes[y], self.nodes[x]);
            }
        }
        self.log("partition healed".into());
    }

    /// Heals everything: links, chaos, failed disks, stopped servers.
    pub async fn heal_all(&mut self) {
        let net = NetSim::current();
        let servers = self.servers();
        for &a in &servers {
            for &b in &servers {
                if a != b {
                    net.unclog_link(self.nodes[&a], self.nodes[&b]);
                }
            }
        }
        *self.chaos.lock().expect("chaos") = NetChaos::default();
        let handle = Handle::current();
        for s in servers {
            let (up, disk) = {
                let slot = self.slots[&s].lock().expect("slot");
                (slot.up, slot.disk.clone())
            };
            if !up {
                handle.kill(self.nodes[&s]);
                disk.repair();
                sleep(Duration::from_millis(100)).await;
                handle.restart(self.nodes[&s]);
            }
        }
        self.log("healed everything".into());
    }

    /// Adds `new` as a learner, then promotes it, through client requests with retries.
    pub async fn add_member(&mut self, new: u64) -> bool {
        for change in [ConfChangeType::AddLearner, ConfChangeType::AddNode] {
            let cc = ConfChange { change_type: change as i32, node_id: new, context: Vec::new() };
            if !self.change_membership(cc).await {
                return false;
            }
        }
        true
    }

    /// Removes member `old`.
    pub async fn remove_member(&mut self, old: u64) -> bool {
        let cc = ConfChange { change_type: ConfChangeType::RemoveNode as i32, node_id: old, context: Vec::new() };
        self.change_membership(cc).await
    }

    async fn change_membership(&mut self, cc: ConfChange) -> bool {
        for _ in 0..20 {
            let target = self.leader().unwrap_or(1);
            let result =
                self.admin.call(target, keel_node::Request::ConfChange(cc.clone()), Duration::from_secs(3)).await;
            self.log(format!("membership {:?} of node {} via {target}: {result:?}", cc.change_type, cc.node_id));
            if let CallResult::Ok(_) = result {
                return true;
            }
            sleep(Duration::from_millis(500)).await;
        }
        false
    }
}
