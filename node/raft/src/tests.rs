//! Behavioural tests over an in-memory network of `RawNode`s that persists instantly and
//! delivers messages in order unless a link is cut.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::*;

struct Network {
    nodes: BTreeMap<u64, RawNode<MemStorage>>,
    cut: BTreeSet<(u64, u64)>,
    in_flight: VecDeque<Message>,
    applied: BTreeMap<u64, Vec<Entry>>,
    read_states: BTreeMap<u64, Vec<ReadState>>,
    /// Every message delivered, for counting.
    delivered: Vec<Message>,
}

fn config(id: u64) -> Config {
    let mut c = Config::new(id);
    c.max_inflight_msgs = 4;
    c.max_size_per_msg = 64;
    c
}

impl Network {
    fn new(voters: &[u64]) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            in_flight: VecDeque::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            delivered: Vec::new(),
        };
        for &id in voters {
            net.add_node(id, ConfState { voters: voters.to_vec(), learners: vec![] });
        }
        net
    }

    fn add_node(&mut self, id: u64, cs: ConfState) {
        let store = MemStorage::with_conf_state(cs);
        self.nodes.insert(id, RawNode::new(config(id), store, ChaCha8Rng::seed_from_u64(id)));
        self.applied.insert(id, Vec::new());
    }

    fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    fn isolate(&mut self, id: u64) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Carries out one node's `Ready` the way a driver must.
    fn process(&mut self, id: u64) -> bool {
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        self.in_flight.extend(ready.messages.iter().cloned());
        if let Some(snapshot) = &ready.snapshot {
            node.store_mut().apply_snapshot(snapshot.clone()).unwrap();
        }
        node.store_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            node.store_mut().set_hard_state(hs);
        }
        self.in_flight.extend(ready.persisted_messages.iter().cloned());
        for entry in &ready.committed_entries {
            if entry.is_conf_change() {
                let cc: ConfChange = prost::Message::decode(entry.data.as_slice()).unwrap();
                node.apply_conf_change(&cc);
            }
            self.applied.get_mut(&id).unwrap().push(entry.clone());
        }
        self.read_states.entry(id).or_default().extend(ready.read_states.iter().cloned());
        node.advance(ready);
        true
    }

    fn deliver(&mut self) -> bool {
        let mut any = false;
        while let Some(m) = self.in_flight.pop_front() {
            any = true;
            if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
                continue;
            }
            self.delivered.push(m.clone());
            self.node(m.to).step(m);
        }
        any
    }

    fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let mut busy = false;
            for id in ids {
                busy |= self.process(id);
            }
            busy |= self.deliver();
            if !busy {
                return;
            }
        }
        panic!("network did not stabilize");
    }

    fn tick(&mut self, id: u64, ticks: usize) {
        for _ in 0..ticks {
            self.node(id).tick();
            self.stabilize();
        }
    }

    fn tick_all(&mut self, ticks: usize) {
        for _ in 0..ticks {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.stabilize();
        }
    }

    fn elect(&mut self, id: u64) {
        self.node(id).campaign();
        self.stabilize();
        assert_eq!(self.node(id).raft.state, StateRole::Leader, "node {id} should lead");
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.raft.state == StateRole::Leader).map(|(id, _)| *id).collect()
    }

    fn data_applied(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied[&id].iter().filter(|e| !e.data.is_empty() && !e.is_conf_change()).map(|e| e.data.clone()).collect()
    }
}

#[test]
fn single_node_elects_itself_and_commits() {
    let mut net = Network::new(&[1]);
    net.elect(1);
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.data_applied(1), vec![b"a".to_vec()]);
}

#[test]
fn election_timeout_elects_exactly_one_leader() {
    let mut net = Network::new(&[1, 2, 3]);
    net.tick_all(30);
    assert_eq!(net.leaders().len(), 1);
    let term = net.node(net.leaders()[0]).raft.term;
    assert!(net.nodes.values().all(|n| n.raft.term == term));
}

#[test]
fn replicated_entries_apply_everywhere_in_order() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..20u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.stabilize();
    let expected: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    for id in 1..=3 {
        assert_eq!(net.data_applied(id), expected);
    }
}

#[test]
fn follower_forwards_proposals_to_the_leader() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(2).propose(b"via-follower".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.data_applied(3), vec![b"via-follower".to_vec()]);
}

#[test]
fn minority_cannot_commit() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.node(1).propose(b"lost".to_vec()).unwrap();
    net.stabilize();
    assert!(net.data_applied(1).is_empty());
}

#[test]
fn check_quorum_deposes_an_isolated_leader() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick(1, 25);
    assert_eq!(net.node(1).raft.state, StateRole::Follower);
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_raising_terms() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).raft.term;
    net.isolate(3);
    net.tick(3, 100);
    assert_eq!(net.node(3).raft.term, term, "pre-vote must not raise the term");
    net.heal();
    net.tick_all(5);
    assert_eq!(net.node(1).raft.state, StateRole::Leader);
    assert_eq!(net.node(1).raft.term, term);
}

#[test]
fn new_leader_elected_after_old_one_is_cut_off() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick_all(40);
    let leaders: Vec<u64> = net.leaders().into_iter().filter(|&id| id != 1).collect();
    assert_eq!(leaders.len(), 1);
    net.node(leaders[0]).propose(b"x".to_vec()).unwrap();
    net.stabilize();
    net.heal();
    net.tick_all(5);
    assert_eq!(net.data_applied(1), vec![b"x".to_vec()]);
}

#[test]
fn divergent_follower_log_is_repaired_with_few_probes() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    // Node 1 appends many entries of its own term that nobody gets.
    net.isolate(1);
    for i in 0..50u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.stabilize();
    // 2 becomes leader and commits other entries.
    net.heal();
    net.isolate(1);
    net.tick_all(40);
    let leader = net.leaders().into_iter().find(|&id| id != 1).unwrap();
    for i in 0..3u8 {
        net.node(leader).propose(vec![100 + i]).unwrap();
    }
    net.stabilize();
    net.heal();
    net.delivered.clear();
    net.tick_all(3);
    let rejections = net.delivered.iter().filter(|m| m.kind() == MessageType::AppendResponse && m.reject).count();
    assert!(rejections <= 3, "fast backtracking should skip the whole stale term, saw {rejections} rejections");
    assert_eq!(net.data_applied(1), net.data_applied(leader));
}

#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let mut net = Network::new(&[1, 2]);
    net.elect(1);
    net.node(1).propose(b"warm".to_vec()).unwrap();
    net.stabilize();
    net.cut.insert((2, 1));
    net.delivered.clear();
    for i in 0..50u8 {
        net.node(1).propose(vec![i; 40]).unwrap();
    }
    net.stabilize();
    let appends = net.delivered.iter().filter(|m| m.kind() == MessageType::Append).count();
    assert_eq!(appends, 4, "at most max_inflight_msgs appends may be outstanding");
}

#[test]
fn read_index_needs_a_quorum_heartbeat() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).read_index(b"r1".to_vec());
    net.stabilize();
    let rs = net.read_states.remove(&1).unwrap_or_default();
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].request_ctx, b"r1");
    assert_eq!(rs[0].index, net.node(1).raft.raft_log.committed);

    net.isolate(1);
    net.node(1).read_index(b"r2".to_vec());
    net.stabilize();
    assert!(net.read_states.get(&1).is_none_or(Vec::is_empty), "an isolated leader must not confirm reads");
}

#[test]
fn follower_read_index_goes_through_the_leader() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"w".to_vec()).unwrap();
    net.stabilize();
    net.node(2).read_index(b"f".to_vec());
    net.stabilize();
    let committed = net.node(1).raft.raft_log.committed;
    let rs = &net.read_states[&2];
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, committed);
}

#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..10u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.stabilize();
    let applied = net.node(1).raft.raft_log.applied;
    let cs = net.node(1).raft.prs.conf_state();
    net.node(1).store_mut().create_snapshot(applied, cs, b"image".to_vec()).unwrap();
    net.node(1).store_mut().compact(applied).unwrap();
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(3).store().snapshot().unwrap().data, b"image");
    let leader_committed = net.node(1).raft.raft_log.committed;
    assert_eq!(net.node(3).raft.raft_log.committed, leader_committed);
    net.node(1).propose(b"after".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.data_applied(3), vec![b"after".to_vec()]);
}

#[test]
fn learner_replicates_without_voting_then_is_promoted() {
    let mut net = Network::new(&[1, 2]);
    net.add_node(3, ConfState { voters: vec![1, 2], learners: vec![3] });
    net.elect(1);
    let add = ConfChange { change_type: ConfChangeType::AddLearner as i32, node_id: 3, context: vec![] };
    net.node(1).propose_conf_change(&add).unwrap();
    net.node(1).propose(b"to-learner".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.data_applied(3), vec![b"to-learner".to_vec()]);
    assert!(!net.node(3).raft.promotable());
    net.tick(3, 50);
    assert_eq!(net.node(3).raft.state, StateRole::Follower, "a learner never campaigns");

    let promote = ConfChange { change_type: ConfChangeType::AddNode as i32, node_id: 3, context: vec![] };
    net.node(1).propose_conf_change(&promote).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).raft.prs.conf_state().voters, vec![1, 2, 3]);
    // With three voters, 1 and 3 together can commit while 2 is away.
    net.isolate(2);
    net.node(1).propose(b"quorum-with-3".to_vec()).unwrap();
    net.stabilize();
    assert!(net.data_applied(1).contains(&b"quorum-with-3".to_vec()));
}

#[test]
fn only_one_membership_change_may_be_pending() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    let cc = ConfChange { change_type: ConfChangeType::RemoveNode as i32, node_id: 3, context: vec![] };
    net.node(1).propose_conf_change(&cc).unwrap();
    assert_eq!(net.node(1).propose_conf_change(&cc), Err(ProposalError::Dropped));
}

#[test]
fn removed_node_no_longer_counts() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let cc = ConfChange { change_type: ConfChangeType::RemoveNode as i32, node_id: 3, context: vec![] };
    net.node(1).propose_conf_change(&cc).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).raft.prs.conf_state().voters, vec![1, 2]);
    net.isolate(3);
    net.node(1).propose(b"two-voters".to_vec()).unwrap();
    net.stabilize();
    assert!(net.data_applied(2).contains(&b"two-voters".to_vec()));
}

#[test]
fn leadership_transfer_hands_over_and_blocks_proposals_meanwhile() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).transfer_leader(2);
    net.stabilize();
    assert_eq!(net.node(2).raft.state, StateRole::Leader);
    assert_eq!(net.node(1).raft.lead, 2);

    // A transfer to a cut-off node blocks proposals until it is abandoned.
    net.isolate(3);
    net.node(2).transfer_leader(3);
    assert_eq!(net.node(2).propose(b"x".to_vec()), Err(ProposalError::Dropped));
    net.tick(2, 10);
    net.node(2).propose(b"x".to_vec()).unwrap();
}

#[test]
fn restart_from_storage_keeps_term_vote_and_log() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"kept".to_vec()).unwrap();
    net.stabilize();
    let store = net.node(2).store().clone();
    let restarted = RawNode::new(config(2), store, ChaCha8Rng::seed_from_u64(9));
    let before = &net.nodes[&2].raft;
    assert_eq!(restarted.raft.term, before.term);
    assert_eq!(restarted.raft.vote, before.vote);
    assert_eq!(restarted.raft.raft_log.last_index(), before.raft_log.last_index());
}

#[test]
fn planted_commit_rule_bug_is_off_by_default() {
    assert!(!Config::new(1).plants.any());
}
