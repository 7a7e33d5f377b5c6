//! The watch hub: watchers over key ranges, fed by the apply path.
//!
//! Guarantees, per watcher: events arrive in revision order; none is skipped from the
//! watcher's start revision on; all of one revision's events arrive in one response. A
//! watcher remembers `next_rev`, the first revision it has not been sent; a watcher behind
//! the store (`next_rev` at or below the store's revision) is caught up from the store's
//! history, and a start below the compaction revision cancels the watcher with the
//! compaction revision, as etcd does.
//!
//! Bounds. Every response counts its size against its stream, until the driver reports that
//! the stream's client has taken it ([`WatchHub::consumed`]); a stream with
//! `limits.stream_bytes` or more waiting is full. A watcher whose stream is full when a
//! revision applies does not take its events: it falls behind, and catches up from the store
//! once its stream has room again (when its client takes responses, and at each tick), as
//! etcd moves slow watchers to its unsynced group. Catch-up comes in responses of at most
//! `limits.batch_revisions` revisions and, unless one revision alone is larger,
//! `limits.batch_bytes` of history read (etcd sends at most 1000 revisions at a time). So what
//! a stream holds is bounded by its budget plus one response, whatever its client does, and
//! one round of catching up reads at most `MAX_CATCH_UP_STEPS` batches. Control responses
//! (created, canceled, progress) always go out; the driver stops reading a full stream's
//! requests, which bounds them too.
//!
//! Watch ids belong to a stream, as in etcd: each stream numbers its watchers from 0, and a
//! client may choose an id itself (a taken one cancels the new watcher at once). Watchers
//! asking for progress notifications get an empty response at the current revision when an
//! interval passes without anything sent to them.

use std::collections::BTreeMap;

use keel_storage::backend::Backend;
use keel_storage::mvcc::{Event, EventType, KvStore, MvccError};
use prost::Message as _;

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
    /// What the response counts against its stream until the driver reports it taken.
    pub bytes: usize,
}

/// How much the hub holds for slow streams, and how it catches watchers up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Bytes of responses a stream may have waiting for its client before it is full.
    pub stream_bytes: usize,
    /// The most revisions one catch-up response covers.
    pub batch_revisions: i64,
    /// The most bytes of history one catch-up response reads, unless one revision is larger.
    pub batch_bytes: usize,
}

impl Default for WatchLimits {
    /// 1 MiB waiting per stream; catch-up as etcd batches it (1000 revisions), in responses
    /// of at most 1 MiB of history, well inside a client's default 4 MiB receive limit.
    fn default() -> WatchLimits {
        WatchLimits { stream_bytes: 1 << 20, batch_revisions: 1000, batch_bytes: 1 << 20 }
    }
}

/// The most catch-up batches one round reads (etcd syncs at most 512 watchers a round).
const MAX_CATCH_UP_STEPS: usize = 512;

/// What a response without events counts: its envelope.
const RESPONSE_OVERHEAD_BYTES: usize = 64;

#[derive(Debug, Clone)]
struct Watcher {
    spec: WatchCreate,
    next_rev: i64,
    /// Something was sent since the last progress notification round.
    sent_recently: bool,
}

/// A watcher's address: its stream and its id within the stream.
type WatcherKey = (u64, i64);

/// One client stream.
#[derive(Debug, Clone, Default)]
struct Stream {
    /// The lowest id an automatically numbered watcher may get.
    next_id: i64,
    /// Bytes of responses handed out whose client has not taken them yet.
    waiting_bytes: usize,
}

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
    streams: BTreeMap<u64, Stream>,
    limits: WatchLimits,
    /// Planted bug: drop some events.
    skip_events: bool,
    out: Vec<WatchResponse>,
}

impl WatchHub {
    /// An empty hub; `skip_events` plants the skipped-event bug.
    pub fn new(limits: WatchLimits, skip_events: bool) -> WatchHub {
        assert!(limits.stream_bytes > 0 && limits.batch_revisions > 0 && limits.batch_bytes > 0, "{limits:?}");
        WatchHub { limits, skip_events, ..Default::default() }
    }

    /// Responses produced since the last call.
    pub fn take_responses(&mut self) -> Vec<WatchResponse> {
        std::mem::take(&mut self.out)
    }

    /// Whether `stream` can take more events now.
    fn has_room(&self, stream: u64) -> bool {
        has_room(&self.streams, &self.limits, stream)
    }

    fn respond(&mut self, key: WatcherKey, response: WatchResponse) {
        let fragment = match self.watchers.get_mut(&key) {
            Some(w) => {
                w.sent_recently = true;
                w.spec.fragment
            }
            None => false,
        };
        self.send(WatchResponse { stream: key.0, watch_id: key.1, fragment, ..response });
    }

    /// Hands out a response, counting it against its stream.
    fn send(&mut self, mut response: WatchResponse) {
        response.bytes = RESPONSE_OVERHEAD_BYTES + response.events.iter().map(|e| e.encoded_len()).sum::<usize>();
        if let Some(stream) = self.streams.get_mut(&response.stream) {
            stream.waiting_bytes += response.bytes;
        }
        self.out.push(response);
    }

    /// Creates a watcher and starts its catch-up from the store; returns its id, or None if
    /// the id the client chose is taken (the watcher is then reported canceled).
    pub fn create<B: Backend>(
        &mut self,
        stream: u64,
        spec: WatchCreate,
        kv: &KvStore<B>,
    ) -> Result<Option<i64>, MvccError> {
        let current = kv.current_revision();
        let state = self.streams.entry(stream).or_default();
        let watch_id = if spec.watch_id != 0 {
            spec.watch_id
        } else {
            while self.watchers.contains_key(&(stream, state.next_id)) {
                state.next_id += 1;
            }
            state.next_id += 1;
            state.next_id - 1
        };
        if self.watchers.contains_key(&(stream, watch_id)) {
            self.send(WatchResponse {
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
        // As etcd: a start below the compaction revision is compacted, a negative one too (a
        // store never compacted reports -1); zero or above it, from now on.
        let compacted = spec.start_revision < kv.compact_revision();
        let next_rev = if spec.start_revision > 0 || compacted { spec.start_revision } else { current + 1 };
        self.watchers.insert(key, Watcher { spec, next_rev, sent_recently: false });
        self.respond(key, WatchResponse { created: true, revision: current, ..Default::default() });
        self.catch_up_stream(stream, kv)?;
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
        self.streams.remove(&stream);
    }

    /// The client of `stream` took `bytes` of its responses (what their `bytes` said):
    /// watchers that fell behind catch up as far as the room allows.
    pub fn consumed<B: Backend>(&mut self, stream: u64, bytes: usize, kv: &KvStore<B>) -> Result<(), MvccError> {
        let Some(state) = self.streams.get_mut(&stream) else { return Ok(()) };
        debug_assert!(bytes <= state.waiting_bytes, "stream {stream} took {bytes} of {}", state.waiting_bytes);
        state.waiting_bytes = state.waiting_bytes.saturating_sub(bytes);
        self.catch_up_stream(stream, kv)
    }

    /// Answers a progress request on `stream`: a response for no watcher in particular
    /// (watch id -1), at the current revision.
    pub fn request_progress(&mut self, stream: u64, revision: i64) {
        self.send(WatchResponse { stream, watch_id: -1, revision, ..Default::default() });
    }

    /// One progress-notification round: every watcher that asked for them and was sent
    /// nothing since the last round, and is caught up, gets an empty response at `revision`
    /// (unless its stream is full: the notification is only a hint).
    pub fn notify_progress(&mut self, revision: i64) {
        let mut quiet = Vec::new();
        for (&key, w) in self.watchers.iter_mut() {
            if w.spec.progress_notify && !w.sent_recently && w.next_rev > revision {
                quiet.push(key);
            }
            w.sent_recently = false;
        }
        for key in quiet {
            if self.has_room(key.0) {
                self.respond(key, WatchResponse { revision, ..Default::default() });
                self.watchers.get_mut(&key).expect("present").sent_recently = false;
            }
        }
    }

    /// One round of catching up every stream with room (at each tick, and after a snapshot
    /// replaced the store).
    pub fn catch_up<B: Backend>(&mut self, kv: &KvStore<B>) -> Result<(), MvccError> {
        let behind: Vec<WatcherKey> =
            self.watchers.iter().filter(|(_, w)| w.next_rev <= kv.current_revision()).map(|(&k, _)| k).collect();
        self.catch_up_watchers(behind, kv)
    }

    /// Catches the watchers of `stream` up as far as its room allows.
    fn catch_up_stream<B: Backend>(&mut self, stream: u64, kv: &KvStore<B>) -> Result<(), MvccError> {
        let current = kv.current_revision();
        let behind: Vec<WatcherKey> = self
            .watchers
            .range((stream, i64::MIN)..=(stream, i64::MAX))
            .filter(|(_, w)| w.next_rev <= current)
            .map(|(&k, _)| k)
            .collect();
        self.catch_up_watchers(behind, kv)
    }

    /// Sends `behind`, in turn and while their streams have room, batches of the history
    /// they miss; at most `MAX_CATCH_UP_STEPS` batches in all.
    fn catch_up_watchers<B: Backend>(&mut self, behind: Vec<WatcherKey>, kv: &KvStore<B>) -> Result<(), MvccError> {
        let mut steps = 0;
        for key in behind {
            while steps < MAX_CATCH_UP_STEPS && self.has_room(key.0) && self.catch_up_step(key, kv)? {
                steps += 1;
            }
        }
        Ok(())
    }

    /// Sends watcher `key` one batch of the history it misses; returns whether it is still
    /// behind afterwards.
    fn catch_up_step<B: Backend>(&mut self, key: WatcherKey, kv: &KvStore<B>) -> Result<bool, MvccError> {
        let current = kv.current_revision();
        let Some(w) = self.watchers.get(&key) else { return Ok(false) };
        if w.next_rev > current {
            return Ok(false);
        }
        if w.next_rev < kv.compact_revision() {
            // etcd's words: no cancel reason (clients read the compaction revision), no header
            // revision, and "canceled" only for a compaction revision that is not zero.
            let compacted = WatchResponse {
                canceled: kv.compact_revision() != 0,
                compact_revision: kv.compact_revision(),
                revision: 0,
                ..Default::default()
            };
            self.respond(key, compacted);
            self.watchers.remove(&key);
            return Ok(false);
        }
        let to = current.min(w.next_rev.saturating_add(self.limits.batch_revisions - 1));
        let (history, read_upto) = kv.events(w.next_rev, to, self.limits.batch_bytes)?;
        debug_assert!(read_upto >= w.next_rev && read_upto <= to);
        let mut events = Vec::new();
        for mut event in history {
            if !w.wants(&event) {
                continue;
            }
            if w.spec.prev_kv {
                fill_prev_kv(&mut event, kv)?;
            }
            events.push(event);
        }
        self.watchers.get_mut(&key).expect("present").next_rev = read_upto + 1;
        if !events.is_empty() {
            self.respond(key, WatchResponse { revision: current, events, ..Default::default() });
        }
        Ok(read_upto < current)
    }

    /// Delivers the events of one newly applied revision to the watchers in step with the
    /// store, reading from `kv` the previous versions that watchers asking for them need and
    /// the events do not carry. A watcher whose stream is full falls behind instead.
    pub fn notify<B: Backend>(&mut self, revision: i64, events: &[Event], kv: &KvStore<B>) -> Result<(), MvccError> {
        if events.is_empty() {
            return Ok(());
        }
        let skip = self.skip_events && revision % 7 == 3;
        let mut with_prev: Option<Vec<Event>> = None;
        let mut responses = Vec::new();
        for (&key, w) in self.watchers.iter_mut() {
            // A watcher behind the store catches up from it; one starting later waits.
            if w.next_rev != revision {
                continue;
            }
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
            let room = has_room(&self.streams, &self.limits, key.0);
            if matching.is_empty() || room {
                w.next_rev = revision + 1;
            }
            if !matching.is_empty() && room {
                responses.push((key, WatchResponse { revision, events: matching, ..Default::default() }));
            }
        }
        for (key, response) in responses {
            self.respond(key, response);
        }
        Ok(())
    }
}

/// Whether `stream` has less than its budget waiting for its client.
fn has_room(streams: &BTreeMap<u64, Stream>, limits: &WatchLimits, stream: u64) -> bool {
    streams.get(&stream).is_none_or(|s| s.waiting_bytes < limits.stream_bytes)
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
