//! The watch hub: watchers over key ranges, fed by the apply path.
//!
//! Guarantees, per watcher: events arrive in revision order; none is skipped from the
//! watcher's start revision on; all of one revision's events arrive in one response. A
//! watcher remembers `next_rev`, the first revision it has not been sent; catch-up (at
//! creation, or after a snapshot replaced the store) reads history from the store, and a
//! start below the compaction revision cancels the watcher with the compaction revision, as
//! etcd does.
//!
//! Watch ids belong to a stream, as in etcd: each stream numbers its watchers from 0, and a
//! client may choose an id itself (a taken one cancels the new watcher at once). Watchers
//! asking for progress notifications get an empty response at the current revision when an
//! interval passes without anything sent to them.

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
    /// The id the client chose (0: the stream picks the next free one).
    pub watch_id: i64,
    /// Send an empty response now and then when nothing happens.
    pub progress_notify: bool,
    /// Split responses too large for one message.
    pub fragment: bool,
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
    /// Why the watcher was canceled, if the server canceled it.
    pub cancel_reason: String,
    /// The watcher accepts responses split into fragments.
    pub fragment: bool,
    /// Store revision when sent.
    pub revision: i64,
    /// Events, whole revisions only, in order.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Watcher {
    spec: WatchCreate,
    next_rev: i64,
    /// Something was sent since the last progress notification round.
    sent_recently: bool,
}

/// A watcher's address: its stream and its id within the stream.
type WatcherKey = (u64, i64);

/// etcd's message when a client picks a watch id its stream already uses.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

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
    watchers: BTreeMap<WatcherKey, Watcher>,
    /// Per stream: the lowest id an automatically numbered watcher may get.
    next_id: BTreeMap<u64, i64>,
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

    fn respond(&mut self, key: WatcherKey, response: WatchResponse) {
        let fragment = match self.watchers.get_mut(&key) {
            Some(w) => {
                w.sent_recently = true;
                w.spec.fragment
            }
            None => false,
        };
        self.out.push(WatchResponse { stream: key.0, watch_id: key.1, fragment, ..response });
    }

    /// Creates a watcher and sends its catch-up from the store; returns its id, or None if
    /// the id the client chose is taken (the watcher is then reported canceled).
    pub fn create<B: Backend>(
        &mut self,
        stream: u64,
        spec: WatchCreate,
        kv: &KvStore<B>,
    ) -> Result<Option<i64>, MvccError> {
        let current = kv.current_revision();
        let watch_id = if spec.watch_id != 0 {
            spec.watch_id
        } else {
            let next = self.next_id.entry(stream).or_insert(0);
            while self.watchers.contains_key(&(stream, *next)) {
                *next += 1;
            }
            *next += 1;
            *next - 1
        };
        if self.watchers.contains_key(&(stream, watch_id)) {
            self.out.push(WatchResponse {
                stream,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: DUPLICATE_WATCH_ID.to_string(),
                revision: current,
                ..Default::default()
            });
            return Ok(None);
        }
        let key = (stream, watch_id);
        let next_rev = if spec.start_revision > 0 { spec.start_revision } else { current + 1 };
        self.watchers.insert(key, Watcher { spec, next_rev, sent_recently: false });
        self.respond(key, WatchResponse { created: true, revision: current, ..Default::default() });
        self.catch_up(key, kv)?;
        Ok(Some(watch_id))
    }

    /// Removes a watcher, telling its stream.
    pub fn cancel(&mut self, stream: u64, watch_id: i64, revision: i64) -> bool {
        let key = (stream, watch_id);
        if !self.watchers.contains_key(&key) {
            return false;
        }
        self.respond(key, WatchResponse { canceled: true, revision, ..Default::default() });
        self.watchers.remove(&key);
        true
    }

    /// Whether watcher `watch_id` of `stream` exists.
    pub fn contains(&self, stream: u64, watch_id: i64) -> bool {
        self.watchers.contains_key(&(stream, watch_id))
    }

    /// Removes every watcher of a closed stream.
    pub fn close_stream(&mut self, stream: u64) {
        self.watchers.retain(|&(s, _), _| s != stream);
        self.next_id.remove(&stream);
    }

    /// Answers a progress request on `stream`: a response for no watcher in particular
    /// (watch id -1), at the current revision.
    pub fn request_progress(&mut self, stream: u64, revision: i64) {
        self.out.push(WatchResponse { stream, watch_id: -1, revision, ..Default::default() });
    }

    /// One progress-notification round: every watcher that asked for them and was sent
    /// nothing since the last round, and is caught up, gets an empty response at `revision`.
    pub fn notify_progress(&mut self, revision: i64) {
        let mut quiet = Vec::new();
        for (&key, w) in self.watchers.iter_mut() {
            if w.spec.progress_notify && !w.sent_recently && w.next_rev > revision {
                quiet.push(key);
            }
            w.sent_recently = false;
        }
        for key in quiet {
            self.respond(key, WatchResponse { revision, ..Default::default() });
            self.watchers.get_mut(&key).expect("present").sent_recently = false;
        }
    }

    /// Sends watcher `key` everything from its `next_rev` up to the store's revision.
    fn catch_up<B: Backend>(&mut self, key: WatcherKey, kv: &KvStore<B>) -> Result<(), MvccError> {
        let current = kv.current_revision();
        let Some(w) = self.watchers.get(&key) else { return Ok(()) };
        if w.next_rev > current {
            return Ok(());
        }
        if w.next_rev < kv.compact_revision() {
            let compacted = WatchResponse {
                canceled: true,
                compact_revision: kv.compact_revision(),
                cancel_reason: keel_api::EtcdError::Compacted.to_string(),
                // etcd's header carries no revision here.
                revision: 0,
                ..Default::default()
            };
            self.respond(key, compacted);
            self.watchers.remove(&key);
            return Ok(());
        }
        let mut events = Vec::new();
        for mut event in kv.events(w.next_rev, current)? {
            if !w.wants(&event) {
                continue;
            }
            if w.spec.prev_kv {
                fill_prev_kv(&mut event, kv)?;
            }
            events.push(event);
        }
        self.watchers.get_mut(&key).expect("present").next_rev = current + 1;
        if !events.is_empty() {
            self.respond(key, WatchResponse { revision: current, events, ..Default::default() });
        }
        Ok(())
    }

    /// Sends every watcher that is behind the store (after a snapshot replaced it) its
    /// missing history.
    pub fn resync<B: Backend>(&mut self, kv: &KvStore<B>) -> Result<(), MvccError> {
        let keys: Vec<WatcherKey> = self.watchers.keys().copied().collect();
        for key in keys {
            self.catch_up(key, kv)?;
        }
        Ok(())
    }

    /// Delivers the events of one newly applied revision, reading from `kv` the previous
    /// versions that watchers asking for them need and the events do not carry.
    pub fn notify<B: Backend>(&mut self, revision: i64, events: &[Event], kv: &KvStore<B>) -> Result<(), MvccError> {
        if events.is_empty() {
            return Ok(());
        }
        let skip = self.skip_events && revision % 7 == 3;
        let mut with_prev: Option<Vec<Event>> = None;
        let mut responses = Vec::new();
        for (&key, w) in self.watchers.iter_mut() {
            if w.next_rev > revision {
                continue;
            }
            w.next_rev = revision + 1;
            let source = if w.spec.prev_kv {
                match &with_prev {
                    Some(events) => events,
                    None => with_prev.insert(with_prev_kvs(events, kv)?),
                }
            } else {
                events
            };
            let matching: Vec<Event> =
                source.iter().filter(|e| w.wants(e)).map(|e| w.shape(e)).skip(usize::from(skip)).collect();
            if !matching.is_empty() {
                responses.push((key, WatchResponse { revision, events: matching, ..Default::default() }));
            }
        }
        for (key, response) in responses {
            self.respond(key, response);
        }
        Ok(())
    }
}

/// `events` with each one's previous version.
fn with_prev_kvs<B: Backend>(events: &[Event], kv: &KvStore<B>) -> Result<Vec<Event>, MvccError> {
    let mut filled = events.to_vec();
    for event in &mut filled {
        fill_prev_kv(event, kv)?;
    }
    Ok(filled)
}

/// Reads the version of the event's key just before the event, unless the event has it.
fn fill_prev_kv<B: Backend>(event: &mut Event, kv: &KvStore<B>) -> Result<(), MvccError> {
    if event.prev_kv.is_none() {
        let now = event.kv.as_ref().expect("store events carry their key value");
        event.prev_kv = kv.prev_kv(&now.key, now.mod_revision)?;
    }
    Ok(())
}
