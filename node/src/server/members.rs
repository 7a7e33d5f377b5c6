//! What the Cluster service reports about each member: names and peer URLs from
//! `--initial-cluster`, client URLs as each member introduces itself on its peer connections
//! (a member not heard from yet shows none, as etcd shows an unstarted member), and
//! membership itself from the replicated configuration.

use std::cell::RefCell;
use std::collections::BTreeMap;

use keel_api::etcdserverpb as pb;
use keel_net::Hello;
use keel_raft::ConfState;

/// The member directory, shared by the connection handlers of one executor.
#[derive(Debug, Default)]
pub struct Members {
    by_id: RefCell<BTreeMap<u64, pb::Member>>,
}

impl Members {
    /// Records a member known from the configuration.
    pub fn insert(&self, id: u64, name: &str, peer_urls: &[String], client_urls: &[String]) {
        let member = pb::Member {
            id,
            name: name.to_string(),
            peer_ur_ls: peer_urls.to_vec(),
            client_ur_ls: client_urls.to_vec(),
            is_learner: false,
        };
        self.by_id.borrow_mut().insert(id, member);
    }

    /// Learns a peer's name and client URLs from its hello.
    pub fn learn(&self, hello: &Hello) {
        let mut by_id = self.by_id.borrow_mut();
        let member =
            by_id.entry(hello.member_id).or_insert_with(|| pb::Member { id: hello.member_id, ..Default::default() });
        member.name.clone_from(&hello.name);
        member.client_ur_ls.clone_from(&hello.client_urls);
    }

    /// The members of `conf`, by id, as MemberList reports them.
    pub fn list(&self, conf: &ConfState) -> Vec<pb::Member> {
        let by_id = self.by_id.borrow();
        let mut members: Vec<pb::Member> = conf
            .voters
            .iter()
            .map(|id| (id, false))
            .chain(conf.learners.iter().map(|id| (id, true)))
            .map(|(&id, is_learner)| {
                let known = by_id.get(&id).cloned().unwrap_or_else(|| pb::Member { id, ..Default::default() });
                pb::Member { is_learner, ..known }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_configured_members_with_what_they_said() {
        let members = Members::default();
        members.insert(2, "b", &["http://b:2380".into()], &[]);
        members.insert(1, "a", &["http://a:2380".into()], &["http://a:2379".into()]);
        members.learn(&Hello {
            cluster_id: 0,
            member_id: 2,
            name: "b".into(),
            client_urls: vec!["http://b:2379".into()],
        });
        let listed = members.list(&ConfState { voters: vec![1, 2], learners: vec![3] });
        assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(listed[1].client_ur_ls, vec!["http://b:2379".to_string()]);
        assert_eq!(listed[1].peer_ur_ls, vec!["http://b:2380".to_string()]);
        assert!(listed[2].is_learner && listed[2].name.is_empty());
        assert_eq!(members.list(&ConfState { voters: vec![1], learners: vec![] }).len(), 1);
    }
}
