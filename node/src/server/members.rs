//! What the Cluster service reports about each member: names and peer URLs from
//! `--initial-cluster`, names and client URLs as each member published them through Raft (a
//! member that has not published yet shows no client URLs, as etcd shows an unstarted
//! member), and membership itself from the replicated configuration.

use std::collections::BTreeMap;

use keel_api::etcdserverpb as pb;
use keel_raft::ConfState;

use crate::MemberAttributes;

/// The members of the initial configuration.
#[derive(Debug, Default)]
pub struct Members {
    configured: BTreeMap<u64, pb::Member>,
}

impl Members {
    /// Records a member known from the configuration.
    pub fn insert(&mut self, id: u64, name: &str, peer_urls: &[String]) {
        let member = pb::Member { id, name: name.to_string(), peer_ur_ls: peer_urls.to_vec(), ..Default::default() };
        self.configured.insert(id, member);
    }

    /// The members of `conf`, by id, as MemberList reports them.
    pub fn list(&self, conf: &ConfState, published: &BTreeMap<u64, MemberAttributes>) -> Vec<pb::Member> {
        let mut members: Vec<pb::Member> = conf
            .voters
            .iter()
            .map(|id| (id, false))
            .chain(conf.learners.iter().map(|id| (id, true)))
            .map(|(&id, is_learner)| {
                let mut member =
                    self.configured.get(&id).cloned().unwrap_or_else(|| pb::Member { id, ..Default::default() });
                if let Some(attributes) = published.get(&id) {
                    member.name.clone_from(&attributes.name);
                    member.client_ur_ls.clone_from(&attributes.client_urls);
                }
                pb::Member { is_learner, ..member }
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
    fn lists_the_configured_members_with_what_they_published() {
        let mut members = Members::default();
        members.insert(2, "b", &["http://b:2380".into()]);
        members.insert(1, "a", &["http://a:2380".into()]);
        let b = MemberAttributes { member_id: 2, name: "b".into(), client_urls: vec!["http://b:2379".into()] };
        let published = BTreeMap::from([(2, b)]);
        let listed = members.list(&ConfState { voters: vec![1, 2], learners: vec![3] }, &published);
        assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(listed[0].client_ur_ls.is_empty(), "a has not published");
        assert_eq!(listed[1].client_ur_ls, vec!["http://b:2379".to_string()]);
        assert_eq!(listed[1].peer_ur_ls, vec!["http://b:2380".to_string()]);
        assert!(listed[2].is_learner && listed[2].name.is_empty());
        assert_eq!(members.list(&ConfState { voters: vec![1], learners: vec![] }, &published).len(), 1);
    }
}
