//! The watch hub: watchers over key ranges, fed by the apply path.
//!
//! Guarantees, per watcher: events arrive in revision order; none is skipped from the
//! watcher's start revision on; all of one revision's events arrive in one response. A
//! watcher remembers `next_rev`, the first revision it has not been sent; catch-up (at
//! creation, or after a snapshot replaced the store) reads history from the store, and a
//! start below the compaction revision cancels the watcher with the compaction revision, as
//! etcd does.

use std::collections::BTreeMap;

use keel_storage::backend::Backend;
use keel_storage::mvcc::{Event, EventType, KvStore, MvccError};

use crate::validate;

/// A request to create a watcher.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchCreate {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range (empty: just `key`; `[0]`: every key from `key` on).
    pub range_end: Vec<u8>,
    /// First revision to deliver (0: changes after now).
    pub start_revision: i64,
    /// Include the previous version with each event.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
}

/// What a watcher's stream receives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchResponse {
    /// The client stream the watcher belongs to.
    pub stream: u64,
    /// The watcher.
    pub watch_id: i64,
    /// The watcher was just created.
    pub created: bool,
    /// The watcher is gone.
    pub canceled: bool,
    /// When canceled because history was compacted: the compaction revision.
    pub compact_revision: i64,
    /// Store revision when sent.
    pub revision: i64,
    /// Events, whole revisions only, in order.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Watcher {
    stream: u64,
    spec: WatchCreate,
    next_rev: i64,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let is_put = event.event_type == EventType::Put as i32;
        if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
            return false;
        }
        validate::in_range(&kv.key, &self.spec.key, &self.spec.range_end)
    }

    fn shape(&self, event: &Event) -> Event {
        let mut event = event.clone();
        if !self.spec.prev_kv {
            event.prev_kv = None;
        }
        event
    }
}

/// Every watcher of this node.
#[derive(Debug, Default)]
pub struct WatchHub {
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// Planted bug: drop some events.
    skip_events: bool,
    out: Vec<WatchResponse>,
}

impl WatchHub {
    /// An empty hub; `skip_events` plants the skipped-event bug.
    pub fn new(skip_events: bool) -> WatchHub {
        WatchHub { skip_events, ..Default::default() }
    }

    /// Responses produced since the last call.
    pub fn take_responses(&mut self) -> Vec<WatchResponse> {
        std::mem::take(&mut self.out)
    }

    /// Creates a watcher and sends its catch-up from the store.
    pub fn create<B: Backend>(&mut self, stream: u64, spec: WatchCreate, kv: &KvStore<B>) -> Result<i64, MvccError> {
        self.next_id += 1;
        let watch_id = self.next_id;
        let current = kv.current_revision();
        let next_rev = if spec.start_revision > 0 { spec.start_revision } else { current + 1 };
        self.out.push(WatchResponse { stream, watch_id, created: true, revision: current, ..Default::default() });
        self.watchers.insert(watch_id, Watcher { stream, spec, next_rev });
        self.catch_up(watch_id, kv)?;
        Ok(watch_id)
    }

    /// Removes a watcher, telling its stream.
    pub fn cancel(&mut self, watch_id: i64, revision: i64) -> bool {
        match self.watchers.remove(&watch_id) {
            Some(w) => {
                self.out.push(WatchResponse {
                    stream: w.stream,
                    watch_id,
                    canceled: true,
                    revision,
                    ..Default::default()
                });
                true
            }
            None => false,
        }
    }

    /// Whether watcher `watch_id` exists.
    pub fn contains(&self, watch_id: i64) -> bool {
        self.watchers.contains_key(&watch_id)
    }

    /// Removes every watcher of a closed stream.
    pub fn close_stream(&mut self, stream: u64) {
        self.watchers.retain(|_, w| w.stream != stream);
    }

    /// Sends watcher `watch_id` everything from its `next_rev` up to the store's revision.
    fn catch_up<B: Backend>(&mut self, watch_id: i64, kv: &KvStore<B>) -> Result<(), MvccError> {
        let current = kv.current_revision();
        let Some(w) = self.watchers.get(&watch_id) else { return Ok(()) };
        if w.next_rev > current {
            return Ok(());
        }
        if w.next_rev < kv.compact_revision() {
            let w = self.watchers.remove(&watch_id).expect("present");
            self.out.push(WatchResponse {
                stream: w.stream,
                watch_id,
                canceled: true,
                compact_revision: kv.compact_revision(),
                revision: current,
                ..Default::default()
            });
            return Ok(());
        }
        let mut events = Vec::new();
        for mut event in kv.events(w.next_rev, current)? {
            if !w.wants(&event) {
                continue;
            }
            if w.spec.prev_kv {
                let kv_now = event.kv.as_ref().expect("store events carry their key value");
                event.prev_kv = kv.prev_kv(&kv_now.key, kv_now.mod_revision)?;
            }
            events.push(event);
        }
        let stream = w.stream;
        self.watchers.get_mut(&watch_id).expect("present").next_rev = current + 1;
        if !events.is_empty() {
            self.out.push(WatchResponse { stream, watch_id, revision: current, events, ..Default::default() });
        }
        Ok(())
    }

    /// Sends every watcher that is behind the store (after a snapshot replaced it) its
    /// missing history.
    pub fn resync<B: Backend>(&mut self, kv: &KvStore<B>) -> Result<(), MvccError> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.catch_up(id, kv)?;
        }
        Ok(())
    }

    /// Delivers the events of one newly applied revision.
    pub fn notify(&mut self, revision: i64, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let skip = self.skip_events && revision % 7 == 3;
        for (&watch_id, w) in self.watchers.iter_mut() {
            if w.next_rev > revision {
                continue;
            }
            w.next_rev = revision + 1;
            let matching: Vec<Event> =
                events.iter().filter(|e| w.wants(e)).map(|e| w.shape(e)).skip(usize::from(skip)).collect();
            if !matching.is_empty() {
                self.out.push(WatchResponse {
                    stream: w.stream,
                    watch_id,
                    revision,
                    events: matching,
                    ..Default::default()
                });
            }
        }
    }
}
