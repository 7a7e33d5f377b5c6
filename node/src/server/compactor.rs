//! etcd's auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`): the
//! leader compacts history by proposing a compaction, like any client would.
//!
//! - `periodic`: keep the history of the last retention period. The revision is sampled
//!   every tenth of the period; the compaction target is the newest sample at least one
//!   period old.
//! - `revision`: keep the last `retention` revisions, checked every five minutes (as etcd).
//!
//! Samples are taken on every member, so a new leader can compact at once; only the leader
//! proposes.

use std::collections::VecDeque;

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep this many milliseconds of history.
    Periodic(u64),
    /// Keep this many revisions.
    Revisions(i64),
}

/// How often revision mode checks, as etcd does.
const REVISION_CHECK_MS: u64 = 5 * 60 * 1000;

/// The auto-compaction state of one member.
#[derive(Debug)]
pub struct AutoCompactor {
    retention: Retention,
    /// `(time, revision)` samples, oldest first.
    samples: VecDeque<(u64, i64)>,
    next_check_ms: u64,
    /// The highest revision this member asked to compact to.
    requested: i64,
}

impl AutoCompactor {
    /// A compactor keeping `retention`.
    pub fn new(retention: Retention) -> AutoCompactor {
        AutoCompactor { retention, samples: VecDeque::new(), next_check_ms: 0, requested: 0 }
    }

    fn interval_ms(&self) -> u64 {
        match self.retention {
            Retention::Periodic(period_ms) => (period_ms / 10).max(1),
            Retention::Revisions(_) => REVISION_CHECK_MS,
        }
    }

    /// Called on every tick with the store's revision; returns the revision to compact to,
    /// if this member leads and history is due for compaction.
    pub fn tick(&mut self, now_ms: u64, revision: i64, is_leader: bool) -> Option<i64> {
        if now_ms < self.next_check_ms {
            return None;
        }
        self.next_check_ms = now_ms + self.interval_ms();
        let target = match self.retention {
            Retention::Periodic(period_ms) => {
                self.samples.push_back((now_ms, revision));
                let old_enough = |&(at, _): &(u64, i64)| at + period_ms <= now_ms;
                // Keep the newest sample that is old enough, and everything after it.
                while self.samples.len() > 1 && old_enough(&self.samples[1]) {
                    self.samples.pop_front();
                }
                self.samples.front().filter(|s| old_enough(s)).map(|&(_, rev)| rev)?
            }
            Retention::Revisions(keep) => revision - keep,
        };
        if !is_leader || target <= self.requested || target <= 0 {
            return None;
        }
        self.requested = target;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_keeps_one_period_of_history() {
        let mut c = AutoCompactor::new(Retention::Periodic(1000));
        // One sample every 100 ms, the revision rising by 1 each time.
        let mut compacted = Vec::new();
        for step in 0..30u64 {
            if let Some(rev) = c.tick(step * 100, step as i64 + 1, true) {
                compacted.push((step * 100, rev));
            }
        }
        assert_eq!(compacted.first(), Some(&(1000, 1)), "first compaction once a sample is a period old");
        assert!(compacted.iter().all(|&(at, rev)| rev == (at / 100) as i64 - 9), "{compacted:?}");
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_and_only_the_leader_compacts() {
        let mut c = AutoCompactor::new(Retention::Revisions(10));
        assert_eq!(c.tick(0, 5, true), None, "not enough history");
        assert_eq!(c.tick(REVISION_CHECK_MS, 50, false), None, "followers never compact");
        assert_eq!(c.tick(2 * REVISION_CHECK_MS, 50, true), Some(40));
        assert_eq!(c.tick(2 * REVISION_CHECK_MS + 1, 80, true), None, "not due yet");
        assert_eq!(c.tick(3 * REVISION_CHECK_MS, 50, true), None, "nothing new");
    }
}
