//! [`Consumer`]: fetch, hand records to the handler, retry or forward failures, commit.
//!
//! # When an offset is committed
//! A partition's committed offset moves past a record only when (a) the handler returned `Ok`
//! for it, or (b) it was forwarded to a retry or dead-letter topic and that write was
//! acknowledged with acks=all. Commits happen at the end of a [`Consumer::poll`] (at most once
//! per [`ConsumerConfig::commit_interval`], 5 ms by default, unless the poll changed an attempt
//! count), before a rebalance gives partitions away, and on [`Consumer::close`].
//!
//! The end-of-poll commit is pipelined (Kafka's `commitAsync`): it is sent in a task of its
//! own and the next poll fetches and processes while it is in flight; its answer (committed
//! offsets, a rejoin on a group error) is applied when it arrives, and a failure is the error
//! of the poll that applies it. At most one commit is in flight: a later one is sent only
//! after the previous one was answered, so they never overtake each other. Everything that
//! needs offsets durable waits for them: [`Consumer::commit`], [`Consumer::close`],
//! [`Consumer::assign`], a rebalance, and a retry in place whose attempt count the broker
//! lacks too much of (below). A crash therefore costs the records handled since the last
//! commit sent being delivered again — the last `commit_interval` and the poll or two around
//! it, while the consumer keeps polling (one that stops polling without [`Consumer::commit`]
//! or [`Consumer::close`] commits nothing more) — and nothing is ever committed before it
//! was processed. A consumer dropped without [`Consumer::close`] lets a
//! commit in flight finish in the background; forwards it had not sent yet are not sent,
//! and their records stay uncommitted (delivered again to the next consumer). A poll dropped
//! before it finished is much the same for the partition it was working on, which goes on
//! from where everything before was finished (see [`Consumer::poll_batch`]).
//!
//! A failing record that will be retried in place is committed *as the next offset to read*,
//! with its attempt count in the metadata ([`crate::ledger`]). How far that count may lag
//! behind the deliveries is [`ConsumerConfig::max_uncommitted_failures`]: by default the
//! record is delivered again once the broker has all its failures but the last one — a
//! record that fails once is retried at once, in the same round when its back-off is zero,
//! and its count goes out with the round's pipelined commit; a record that keeps failing
//! waits for a commit every second delivery. With `0`, every failure is committed before the
//! next delivery. While the commit the record waits for fails, the partition is not fetched
//! — in ordered mode only the record's key waits, and the other keys go on, their commits
//! sent without waiting. So a consumer killed at any moment resumes the count at most that
//! many failures behind the last one it delivered again; a delivery still running when the
//! process died is delivered again under the same attempt number.
//!
//! # Forwards
//! A record forwarded to a retry or dead-letter topic (outside ordered mode) is not waited
//! for: the partition goes on with the next record at once — as spring's retry topics let the
//! next record through — and the round's forwards go out together at its end, in one produce
//! call with one batch per destination partition (under 512 KiB per call). While the previous
//! call of a partition is not answered yet (being made durable), its next forwards gather in
//! its queue instead, and go out together at the first check after it is answered (the start
//! or end of a round) — or before the consumer waits for data or naps, and before any commit
//! that waits. At most 512 forwards, or 8 MiB of them, of a partition are queued or in
//! flight; past that, the partition waits for the oldest half. Sending takes the
//! records' places in the destination partitions, so forwards of a partition are appended in
//! order — except that one that fails is tried again after later ones may have landed.
//!
//! Until the broker acknowledged a forward, nothing at or after its record is committed. Its
//! answer is applied by a later round, and [`Consumer::commit`] (so also `close`, `assign`
//! and a rebalance) waits for all of them first. A forward found failed stops the partition
//! — nothing more is fetched, and the committed offset stays below the record — until a
//! retry of it succeeds ([`Consumer::stalled`]); other forwards that failed with it are
//! tried again after it, in order. Records after it that were already handled are committed
//! once it is through. The counters count a forward when it is acknowledged. In ordered mode
//! the record's key waits for its forward, so that one is written and waited for in place.
//!
//! # What is fetched
//! A poll fetches each ready partition from its position. When handing out a fetch's records
//! stops early — a record failed (retried in place, or forwarded and passed), or a
//! retry-topic record is not due yet — the records not handed out are kept, and the next
//! round hands them out from memory instead of fetching them again (a seek elsewhere drops
//! them). Commits are unaffected: the round still ends with the end-of-poll commit (when
//! [`ConsumerConfig::commit_interval`] lets it), waited for whenever a retry waits for its
//! attempt count.
//!
//! A round that fetched records starts a read-ahead task before handing them out (Kafka's
//! consumer does the same; see the `prefetch` module): it fetches back to back, at most one answer
//! ahead of the consumer, so the broker reads the next records while the handler works;
//! partitions without records ride along, and it ends once none brings any. A round uses
//! the read-ahead's answer only for a partition it wants from the same offset; after a
//! failure, a seek, a pause or a rebalance it fetches afresh. Reading ahead never commits
//! anything.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use staunch_core::api::{FetchCall, FetchPosition, GroupMembership, OffsetAndMetadata, OffsetSpec};
use staunch_core::{ApiError, BrokerApi, ErrorCode, Offset, TopicPartition};
use tracing::Instrument;

use crate::config::{ConsumerConfig, ConsumerEvents, NoEvents, OffsetReset};
use crate::decode::{attempt_of, decode, due_of, origin};
use crate::error::ConsumerError;
use crate::forward::{Forwarder, SentForward};
use crate::group::{GroupSession, GroupSettings};
use crate::handler::{BatchFailure, BatchHandler, ConsumerRecord, Handler, HandlerError};
use crate::headers::{ErrorKind, ForwardFacts};
use crate::ledger::{RetryEntry, RetryLedger};
use crate::metrics::{Counters, ExportedCounters, Metrics};
use crate::ordered::{ParkKey, ParkingLot};
use crate::policy::FailurePolicy;
use crate::prefetch::{self, FetchAnswers, Prefetch};

/// A partition stopped because forwarding one of its records keeps failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The partition.
    pub partition: TopicPartition,
    /// The record that could not be forwarded; nothing at or after it is committed.
    pub offset: Offset,
    /// Where it should go.
    pub destination: String,
    /// The last error.
    pub error: ApiError,
}

#[derive(Debug)]
enum AfterForward {
    /// Move the position past the record.
    Advance,
    /// Ordered mode: the record is its key's head; pop it and drain the key.
    OrderedHead(ParkKey),
}

#[derive(Debug)]
struct PendingForward {
    record: ConsumerRecord,
    topic: String,
    facts: ForwardFacts,
    dead_letter: bool,
    after: AfterForward,
    failures: u32,
    next_try_ms: i64,
    last_error: Option<ApiError>,
    /// [`PendingForward::measure`], once.
    bytes: usize,
}

impl PendingForward {
    /// A forward of `record` to `topic`, to be tried first at `now_ms`.
    fn new(
        record: ConsumerRecord,
        topic: String,
        facts: ForwardFacts,
        dead_letter: bool,
        after: AfterForward,
        now_ms: i64,
    ) -> Self {
        let bytes = Self::measure(&record);
        PendingForward {
            record,
            topic,
            facts,
            dead_letter,
            after,
            failures: 0,
            next_try_ms: now_ms,
            last_error: None,
            bytes,
        }
    }

    /// About how many bytes the forwarded record takes in a batch.
    fn size(&self) -> usize {
        self.bytes
    }

    /// About how many bytes `r` takes in a batch once forwarded.
    fn measure(r: &ConsumerRecord) -> usize {
        let headers: usize = r
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum();
        // Staunch's forward headers, generously.
        const FACTS: usize = 1024;
        r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
            + headers
            + FACTS
    }
}

/// The forwards queued for one produce call stay under this many bytes, so each destination
/// batch stays well under a broker's largest batch (1 MiB by default).
const MAX_FORWARD_CALL_BYTES: usize = 512 * 1024;

/// A forward sent without waiting ([`Consumer::send_forward`]).
#[derive(Debug)]
struct InFlightForward {
    pending: PendingForward,
    sent: SentForward,
}

/// Ordered mode retries at most this many records of one partition at a time: their attempt
/// counts must fit the committed offset's metadata (at most about 60 bytes each, and Kafka
/// takes 4096 bytes by default). With this many, the partition waits as for a full parking lot.
const MAX_RETRYING_KEYS: usize = 64;

/// The largest [`ConsumerConfig::max_uncommitted_failures`]: it also bounds how often a
/// record failing with zero back-off is delivered again within one round (at most one more
/// time than this), so a record that keeps failing cannot hold a poll for ever.
pub(crate) const MAX_UNCOMMITTED_FAILURES: u32 = 16;

/// At most this many forwards of one partition are queued or in flight; the next waits for
/// the oldest half. Acknowledging a forward takes a durable write (an fsync on Staunch), which
/// may take a few milliseconds while the partition reads on: with 1 % of the records failing,
/// 64 were too few to cover that, and the consumer waited.
const MAX_FORWARDS_IN_FLIGHT: usize = 512;

/// The records of one partition's forwards queued or in flight take at most about this many
/// bytes (each is held until acknowledged); past it, the next waits for the oldest half too.
const MAX_FORWARD_BYTES_IN_FLIGHT: usize = 8 << 20;

#[derive(Debug)]
struct PartitionState {
    position: Option<Offset>,
    committed: Option<(Offset, String)>,
    /// The retry ledger in `committed`, decoded.
    committed_ledger: RetryLedger,
    ledger: RetryLedger,
    user_paused: bool,
    wait_until_ms: i64,
    pending: Option<PendingForward>,
    /// Forwards not sent yet: they go out together at the end of the round if the previous
    /// call is answered by then ([`PartitionState::forward_calls_answered`]), else at a later
    /// check (the start or end of a round, before the consumer waits, a waiting commit).
    outbox: Vec<PendingForward>,
    /// Forwards sent and not yet acknowledged, oldest first: the partition reads on, but
    /// nothing at or after the oldest is committed.
    sending: VecDeque<InFlightForward>,
    /// Forwards that failed while another one was already `pending`: tried again, in order,
    /// once it went through.
    resend: VecDeque<PendingForward>,
    lot: Option<ParkingLot>,
    /// The partition's end as last seen: the high watermark of its last fetch, or past this
    /// consumer's latest forward to it.
    end: Option<Offset>,
    /// Records of the last fetch that were not handed out (from a failed record on, or from
    /// one not yet due): the next round hands them out instead of fetching them again.
    kept: Vec<ConsumerRecord>,
}

impl PartitionState {
    fn new(ordered: Option<usize>) -> Self {
        PartitionState {
            position: None,
            committed: None,
            committed_ledger: RetryLedger::default(),
            ledger: RetryLedger::default(),
            user_paused: false,
            wait_until_ms: 0,
            pending: None,
            outbox: Vec::new(),
            sending: VecDeque::new(),
            resend: VecDeque::new(),
            lot: ordered.map(ParkingLot::new),
            end: None,
            kept: Vec::new(),
        }
    }

    /// Whether the kept records start at the position, so the next round can use them; drops
    /// those below the position (finished since) and all of them when they do not start there
    /// (after a seek).
    fn kept_ready(&mut self) -> bool {
        let Some(position) = self.position else {
            self.kept.clear();
            return false;
        };
        let below = self.kept.partition_point(|r| r.offset < position);
        self.kept.drain(..below);
        if self.kept.first().is_some_and(|r| r.offset == position) {
            return true;
        }
        self.kept.clear();
        false
    }

    /// Notes that the partition reaches at least `end`.
    fn saw_end(&mut self, end: Offset) {
        self.end = Some(self.end.map_or(end, |e| e.max(end)));
    }

    /// Records that failed and are not finished ([`Counters::in_retry`]); `retry_topic` says
    /// whether this is a partition of a retry topic, all of whose unread records count.
    fn in_retry(&self, retry_topic: bool) -> u64 {
        let mut n = self.ledger.len();
        let mut pending_counted = self
            .pending
            .as_ref()
            .is_some_and(|p| self.ledger.get(p.record.offset).is_some());
        if retry_topic && let (Some(position), Some(end)) = (self.position, self.end) {
            n += usize::try_from(end - position).unwrap_or(0);
            pending_counted |= self
                .pending
                .as_ref()
                .is_some_and(|p| (position..end).contains(&p.record.offset));
        }
        if self.pending.is_some() && !pending_counted {
            n += 1;
        }
        n += self
            .outbox
            .iter()
            .chain(self.sending.iter().map(|f| &f.pending))
            .chain(&self.resend)
            .filter(|p| self.ledger.get(p.record.offset).is_none())
            .count();
        n as u64
    }

    /// Whether the broker answered every forward call of this partition sent so far: the
    /// queued forwards go out only then (or before the consumer waits for anything), so
    /// while one call is being written, the next rounds' forwards gather for the next call.
    fn forward_calls_answered(&self) -> bool {
        self.sending.iter().all(|f| f.sent.is_finished())
    }

    /// About how many bytes the forwards queued or in flight hold.
    fn forward_bytes(&self) -> usize {
        self.outbox
            .iter()
            .chain(self.sending.iter().map(|f| &f.pending))
            .map(PendingForward::size)
            .sum()
    }

    /// The offset to commit: the lowest not finished — below the position, a parked record
    /// (ordered mode) or a record whose forward is not acknowledged yet.
    fn commit_offset(&self) -> Option<Offset> {
        let position = self.position?;
        let parked = self.lot.as_ref().and_then(ParkingLot::lowest);
        let forwarding = self
            .pending
            .iter()
            .map(|p| &p.record)
            .chain(self.outbox.iter().map(|p| &p.record))
            .chain(self.sending.iter().map(|f| &f.pending.record))
            .chain(self.resend.iter().map(|p| &p.record))
            .map(|r| r.offset)
            .min();
        Some(
            [parked, forwarding]
                .into_iter()
                .flatten()
                .fold(position, Offset::min),
        )
    }

    /// What the partition restarts from if work on this state is dropped half-way
    /// ([`Consumer::take_part`]): the position is [`commit_offset`](Self::commit_offset) —
    /// everything before it is finished; records at or after it are delivered again, and
    /// their forwards not yet acknowledged are made again — with the attempt counts (and their
    /// back-off), the pause and what the broker is known to have. Built from this state, not
    /// from the broker: a partition with nothing committed yet must not be reset (with
    /// `OffsetReset::Latest` that would skip the records in hand).
    fn stand_in(&self, ordered: Option<usize>) -> PartitionState {
        let mut stand_in = PartitionState::new(ordered);
        stand_in.position = self.commit_offset();
        stand_in.ledger = self.ledger.clone();
        if let Some(position) = stand_in.position {
            stand_in.ledger.prune_below(position);
        }
        stand_in.committed_ledger = self.committed_ledger.clone();
        stand_in.committed = self.committed.clone();
        stand_in.user_paused = self.user_paused;
        stand_in.wait_until_ms = self.wait_until_ms;
        stand_in
    }

    /// Whether the record retried in place at the position (blocking retry) may not be
    /// delivered again yet: the broker lacks more than `lag` of its failures
    /// ([`ConsumerConfig::max_uncommitted_failures`]), so a restart now would deliver those
    /// attempt numbers again.
    fn retry_count_uncommitted(&self, lag: u32) -> bool {
        if self.lot.is_some() {
            // Ordered mode waits per key instead ([`PartitionState::count_committed`]).
            return false;
        }
        self.position
            .is_some_and(|position| !self.count_committed(position, lag))
    }

    /// Ordered mode: whether no record may be handed out now — the parking lot is full, or
    /// [`MAX_RETRYING_KEYS`] records are being retried (one more failure would not fit the
    /// committed metadata). The partition then waits (is not read) until retried keys finish.
    fn ordered_waits(&self) -> bool {
        self.lot
            .as_ref()
            .is_some_and(|l| l.is_full() || self.position.is_some_and(|p| !self.may_add_retry(p)))
    }

    /// Ordered mode: whether the record at `offset` may be handed out as far as the retry
    /// ledger goes — it has an entry already (a failure only updates it), or fewer than
    /// [`MAX_RETRYING_KEYS`] records have one, or none of them is being retried now (all are
    /// ahead, read back from the committed metadata after a restart or rebalance: reading on
    /// reaches them, and each is delivered again — or parked until its back-off is over —
    /// as it comes).
    fn may_add_retry(&self, offset: Offset) -> bool {
        self.ledger.get(offset).is_some()
            || self.ledger.len() < MAX_RETRYING_KEYS
            || self.ledger.lowest().is_none_or(|low| low >= offset)
    }

    /// Ordered mode: whether a blocked key is due at `now` but waits for its attempt count
    /// to be committed (more than `lag` failures missing).
    fn due_count_uncommitted(&self, now: i64, lag: u32) -> bool {
        self.lot.as_ref().is_some_and(|lot| {
            lot.due(now).iter().any(|key| {
                lot.head(key)
                    .is_some_and(|head| !self.count_committed(head.offset, lag))
            })
        })
    }

    /// Whether the broker has all but at most `lag` of the failures the ledger counts for
    /// the record at `offset` ([`ConsumerConfig::max_uncommitted_failures`]): only then is
    /// it delivered again. Ordered mode checks this per key, while the partition's other
    /// keys go on (their commit is not waited for).
    fn count_committed(&self, offset: Offset, lag: u32) -> bool {
        let Some(entry) = self.ledger.get(offset) else {
            return true;
        };
        let committed = self.committed_ledger.get(offset).map_or(0, |c| c.attempts);
        committed.saturating_add(lag) >= entry.attempts
    }
}

#[derive(Debug)]
enum Mode {
    Idle,
    Manual,
    Group(GroupSession),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A consumer generic over [`BrokerApi`]; see the [module docs](self) for when offsets are
/// committed. Drive it with [`Consumer::poll`] (or [`Consumer::poll_batch`]) in a loop.
pub struct Consumer<B: BrokerApi> {
    api: Arc<B>,
    config: ConsumerConfig,
    mode: Mode,
    parts: BTreeMap<TopicPartition, PartitionState>,
    forwarder: Forwarder,
    events: Box<dyn ConsumerEvents>,
    /// Running counters by topic read from; `in_retry` is computed in [`Consumer::metrics`].
    counters: BTreeMap<String, Counters>,
    /// The same counts through the `metrics` facade, by topic (see [`crate::metrics`]).
    exported: BTreeMap<String, ExportedCounters>,
    /// The group id, shared with the handler spans of each poll.
    group: Arc<str>,
    rng: fastrand::Rng,
    /// The end-of-round commit, sent and not yet applied (at most one).
    in_flight: Option<InFlight>,
    /// When the last end-of-round commit was sent ([`ConsumerConfig::commit_interval`]).
    round_commit_sent: Option<tokio::time::Instant>,
    /// Rounds that fetched so far: which partition comes first in the next fetch
    /// ([`prefetch::take_turns`]).
    fetch_turn: usize,
    /// A commit failure not yet reported by a poll.
    commit_error: Option<ConsumerError>,
    /// The next round's fetch, sent ahead ([`crate::prefetch`]).
    prefetch: Option<Prefetch>,
}

/// What one commit sends: offsets with their metadata, for the current membership.
#[derive(Debug)]
struct CommitRequest {
    member: GroupMembership,
    offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    /// The offset and metadata per partition, to record once the broker took them.
    sent: BTreeMap<TopicPartition, (Offset, String)>,
}

/// A commit sent at the end of a round whose answer is not applied yet.
#[derive(Debug)]
struct InFlight {
    task: tokio::task::JoinHandle<Vec<(TopicPartition, Result<(), ApiError>)>>,
    /// The offset and metadata sent per partition.
    sent: BTreeMap<TopicPartition, (Offset, String)>,
}

impl<B: BrokerApi> std::fmt::Debug for Consumer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.config.group_id)
            .field("mode", &self.mode)
            .field("partitions", &self.parts.keys().collect::<Vec<_>>())
            .field("counters", &self.counters)
            .finish()
    }
}

impl<B: BrokerApi> Consumer<B> {
    /// A consumer that is not consuming anything yet. Fails on a configuration that cannot
    /// work (ordered mode with retry topics, retry topics without a retry limit, a bad back-off).
    pub fn new(api: Arc<B>, config: ConsumerConfig) -> Result<Self, ConsumerError> {
        let backoff = config
            .failure
            .backoff()
            .clone()
            .validate()
            .map_err(|e| ConsumerError::Config(e.to_string()))?;
        if let FailurePolicy::RetryTopics(_) = config.failure {
            if backoff.max_retries.is_none() {
                return Err(ConsumerError::Config(
                    "retry topics need a back-off with max retries".into(),
                ));
            }
            if config.ordered.is_some() {
                return Err(ConsumerError::Config(
                    "ordered mode retries in place: use FailurePolicy::Blocking".into(),
                ));
            }
        }
        if config.max_uncommitted_failures > MAX_UNCOMMITTED_FAILURES {
            return Err(ConsumerError::Config(format!(
                "max_uncommitted_failures is at most {MAX_UNCOMMITTED_FAILURES}"
            )));
        }
        let forwarder =
            Forwarder::new(config.forward_timeout, config.forward_topic_configs.clone());
        let group = Arc::from(config.group_id.as_str());
        Ok(Consumer {
            api,
            config,
            mode: Mode::Idle,
            parts: BTreeMap::new(),
            forwarder,
            events: Box::new(NoEvents),
            counters: BTreeMap::new(),
            exported: BTreeMap::new(),
            group,
            rng: fastrand::Rng::new(),
            in_flight: None,
            round_commit_sent: None,
            fetch_turn: 0,
            commit_error: None,
            prefetch: None,
        })
    }

    /// Replaces the event listener (rebalance and forward notifications).
    pub fn with_events(mut self, events: impl ConsumerEvents + 'static) -> Self {
        self.events = Box::new(events);
        self
    }

    /// The counters since creation, per topic and in total, with the
    /// [`in_retry`](Counters::in_retry) gauge as of now; see [`crate::metrics`] for what each
    /// one counts.
    pub fn metrics(&self) -> Metrics {
        let retry_topics = self.retry_topic_names();
        let in_retry = self.parts.iter().map(|(tp, st)| {
            (
                tp.topic.clone(),
                st.in_retry(retry_topics.contains(&tp.topic)),
            )
        });
        Metrics::snapshot(&self.config.group_id, &self.counters, in_retry)
    }

    /// The retry topics of the assigned topics under a retry-topic policy.
    fn retry_topic_names(&self) -> std::collections::BTreeSet<String> {
        let FailurePolicy::RetryTopics(backoff) = &self.config.failure else {
            return std::collections::BTreeSet::new();
        };
        self.parts
            .keys()
            .flat_map(|tp| {
                self.config
                    .naming
                    .retry_topics(&tp.topic, &self.config.group_id, backoff)
            })
            .collect()
    }

    /// Updates the running counters of `topic` (allocating its name only the first time).
    fn count(&mut self, topic: &str, update: impl FnOnce(&mut Counters)) {
        let counters = match self.counters.get_mut(topic) {
            Some(c) => c,
            None => self.counters.entry(topic.to_owned()).or_default(),
        };
        let before = *counters;
        update(counters);
        let after = *counters;
        let exported = match self.exported.get(topic) {
            Some(e) => e,
            None => self
                .exported
                .entry(topic.to_owned())
                .or_insert_with(|| ExportedCounters::new(&self.config.group_id, topic)),
        };
        exported.add(&before, &after);
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// Where `partition` is read next: past the last record taken in, or, before its first
    /// fetch, the committed (or reset) offset. `None` for a partition not assigned or not yet
    /// positioned (positions are set by the first poll after an assignment).
    pub fn position(&self, partition: &TopicPartition) -> Option<Offset> {
        self.parts.get(partition).and_then(|st| st.position)
    }

    /// Sets [`ConsumerConfig::max_poll_records`] for the next polls.
    pub fn set_max_poll_records(&mut self, max: Option<usize>) {
        self.config.max_poll_records = max;
    }

    /// Partitions stopped by a forward that keeps failing.
    pub fn stalled(&self) -> Vec<Stalled> {
        self.parts
            .iter()
            .filter_map(|(tp, st)| {
                let p = st.pending.as_ref()?;
                Some(Stalled {
                    partition: tp.clone(),
                    offset: p.record.offset,
                    destination: p.topic.clone(),
                    error: p.last_error.clone()?,
                })
            })
            .collect()
    }

    /// Joins the group for `topics` (plus their retry topics under a retry-topic policy, which
    /// are created if missing). Partitions arrive on the next poll. A join that fails is that
    /// poll's error and is made again by a later poll, after 100 ms (doubling to 1 s while
    /// joins keep failing); a poll dropped while it joins loses nothing either.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ConsumerError> {
        let mut all: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        if let FailurePolicy::RetryTopics(backoff) = &self.config.failure {
            for t in topics {
                for retry in self
                    .config
                    .naming
                    .retry_topics(t, &self.config.group_id, backoff)
                {
                    self.forwarder
                        .ensure_topic(self.api.as_ref(), &retry, t)
                        .await?;
                    if !all.contains(&retry) {
                        all.push(retry);
                    }
                }
            }
        }
        self.mode = Mode::Group(GroupSession::new(&self.config.group_id, all));
        Ok(())
    }

    /// Reads exactly `partitions`, without group management; offsets are still committed
    /// under the group id (as a "simple" consumer, which the broker accepts only while the
    /// group has no members).
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<(), ConsumerError> {
        self.commit().await?;
        self.mode = Mode::Manual;
        self.parts.clear();
        self.prefetch = None;
        for tp in &partitions {
            self.parts
                .insert(tp.clone(), PartitionState::new(self.config.ordered));
        }
        self.events.on_assigned(&partitions);
        Ok(())
    }

    /// Stops fetching `partition` until [`Consumer::resume`]; retries due meanwhile wait.
    pub fn pause(&mut self, partition: &TopicPartition) {
        if let Some(st) = self.parts.get_mut(partition) {
            st.user_paused = true;
        }
    }

    /// Fetches `partition` again.
    pub fn resume(&mut self, partition: &TopicPartition) {
        if let Some(st) = self.parts.get_mut(partition) {
            st.user_paused = false;
        }
    }

    /// Reads `partition` from `offset` next. Seeking back redelivers; seeking forward skips,
    /// and the skipped offsets are committed at the next commit, as in Kafka — a deliberate
    /// act of the caller. Attempt counts of records skipped that way are dropped with them.
    pub fn seek(&mut self, partition: &TopicPartition, offset: Offset) {
        if let Some(st) = self.parts.get_mut(partition) {
            st.position = Some(offset);
            st.wait_until_ms = 0;
            if let Some(finished_below) = st.commit_offset() {
                st.ledger.prune_below(finished_below);
            }
        }
    }

    fn membership(&self) -> GroupMembership {
        match &self.mode {
            Mode::Group(g) => g.member(),
            _ => GroupMembership::simple(self.config.group_id.clone()),
        }
    }

    fn group_settings(&self) -> GroupSettings {
        GroupSettings {
            group_id: self.config.group_id.clone(),
            assignor: self.config.assignor,
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.rebalance_timeout,
            heartbeat_interval: self.config.heartbeat_interval,
        }
    }

    /// Commits every partition's lowest unfinished offset with its retry ledger, where it
    /// changed, and waits until the broker has them (first waiting for a commit a poll left in
    /// flight, so commits never overtake each other, and for the forwards in flight, so the
    /// records they carry count as finished once acknowledged). Fails with the first broker error (the
    /// rest are still tried); an earlier failed commit that this one supersedes is not
    /// reported again. Dropping it before it finishes loses nothing: a later commit sends what
    /// this one did not (a partition whose forwards it was sending or waiting for goes on from
    /// where everything before them was finished, as after a dropped poll).
    pub async fn commit(&mut self) -> Result<(), ConsumerError> {
        let result = self.commit_sync().await;
        self.commit_error = None;
        result
    }

    /// [`Consumer::commit`] keeping the failure of a commit left in flight (if any) for the
    /// next poll to report.
    async fn commit_sync(&mut self) -> Result<(), ConsumerError> {
        if let Err(e) = self.settle().await {
            self.commit_error.get_or_insert(e);
        }
        // What the forwards queued or in flight let through is committed too.
        self.flush_all_forwards(true).await;
        self.reap_all_forwards(0).await;
        let Some(request) = self.commit_request() else {
            return Ok(());
        };
        let answers = self
            .api
            .commit_offsets(&request.member, request.offsets)
            .await;
        self.apply_commit(&request.sent, answers)
    }

    /// The end-of-round commit. When a partition's retry waits for its attempt count to be
    /// committed, this waits for the commit like [`Consumer::commit`]; otherwise it sends the
    /// commit and returns at once (Kafka's `commitAsync`), and the next round applies the
    /// answer. At most one commit is in flight: while the previous one is unanswered no new
    /// one is sent (a later round, or any waiting commit, covers what this one would have),
    /// and none within [`ConsumerConfig::commit_interval`] of the last one sent unless it
    /// carries attempt counts the broker does not have yet.
    /// Reports a commit that failed since the last report.
    async fn commit_round(&mut self) -> Result<(), ConsumerError> {
        let lag = self.config.max_uncommitted_failures;
        if self
            .parts
            .values()
            .any(|st| st.retry_count_uncommitted(lag))
        {
            let result = self.commit_sync().await;
            return self.with_earlier_commit_error(result);
        }
        self.reap().await;
        // Progress waits for the interval; new attempt counts do not (a retry may wait for
        // them, and a restart should find them).
        // Checked only with no commit in flight (none is sent meanwhile): the ledger scan is
        // not free.
        let due = || {
            self.round_commit_sent
                .is_none_or(|sent| sent.elapsed() >= self.config.commit_interval)
                || self
                    .parts
                    .values()
                    .any(|st| st.ledger != st.committed_ledger)
        };
        if self.in_flight.is_none()
            && due()
            && let Some(CommitRequest {
                member,
                offsets,
                sent,
            }) = self.commit_request()
        {
            self.round_commit_sent = Some(tokio::time::Instant::now());
            let api = Arc::clone(&self.api);
            let task = tokio::spawn(async move { api.commit_offsets(&member, offsets).await });
            self.in_flight = Some(InFlight { task, sent });
        }
        self.commit_error.take().map_or(Ok(()), Err)
    }

    /// `result`, or else a commit failure not yet reported (which is then reported).
    fn with_earlier_commit_error(
        &mut self,
        result: Result<(), ConsumerError>,
    ) -> Result<(), ConsumerError> {
        let earlier = self.commit_error.take();
        result.and(earlier.map_or(Ok(()), Err))
    }

    /// Applies the answer of the commit in flight if it has arrived; a failure is kept for
    /// the next report.
    async fn reap(&mut self) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished())
            && let Err(e) = self.settle().await
        {
            self.commit_error.get_or_insert(e);
        }
    }

    /// Waits for the commit in flight (if any) and applies its answer.
    async fn settle(&mut self) -> Result<(), ConsumerError> {
        let Some(InFlight { task, sent }) = self.in_flight.take() else {
            return Ok(());
        };
        match task.await {
            Ok(answers) => self.apply_commit(&sent, answers),
            Err(e) => Err(ConsumerError::Api(ApiError::NoAnswer {
                broker: "group coordinator".into(),
                reason: format!("commit task: {e}"),
            })),
        }
    }

    /// What to commit now: every partition's lowest unfinished offset with its retry ledger,
    /// where it differs from what the broker has; `None` when nothing does.
    fn commit_request(&mut self) -> Option<CommitRequest> {
        let mut offsets = Vec::new();
        let mut sent = BTreeMap::new();
        for (tp, st) in &mut self.parts {
            let Some(offset) = st.commit_offset() else {
                continue;
            };
            st.ledger.prune_below(offset);
            let metadata = st.ledger.encode();
            if st
                .committed
                .as_ref()
                .is_some_and(|(o, m)| *o == offset && *m == metadata)
            {
                continue;
            }
            sent.insert(tp.clone(), (offset, metadata.clone()));
            offsets.push((
                tp.clone(),
                OffsetAndMetadata {
                    offset,
                    leader_epoch: None,
                    metadata,
                },
            ));
        }
        if offsets.is_empty() {
            return None;
        }
        Some(CommitRequest {
            member: self.membership(),
            offsets,
            sent,
        })
    }

    /// Applies a commit's answers: what the broker took becomes the partition's committed
    /// offset; a group error asks for a rejoin. Fails with the first error.
    fn apply_commit(
        &mut self,
        sent: &BTreeMap<TopicPartition, (Offset, String)>,
        answers: Vec<(TopicPartition, Result<(), ApiError>)>,
    ) -> Result<(), ConsumerError> {
        let mut first_error = None;
        for (tp, answer) in answers {
            match answer {
                Ok(()) => {
                    if let (Some(st), Some(c)) = (self.parts.get_mut(&tp), sent.get(&tp)) {
                        st.committed_ledger = RetryLedger::decode(&c.1);
                        st.committed = Some(c.clone());
                    }
                }
                Err(e) => {
                    if let Mode::Group(g) = &self.mode
                        && e.code().is_some_and(|c| {
                            matches!(
                                c,
                                ErrorCode::RebalanceInProgress
                                    | ErrorCode::IllegalGeneration
                                    | ErrorCode::UnknownMemberId
                            )
                        })
                    {
                        g.rejoin.store(true, std::sync::atomic::Ordering::Release);
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(ConsumerError::Api(e)))
    }

    /// Commits what was processed, gives up the partitions and leaves the group.
    pub async fn close(mut self) -> Result<(), ConsumerError> {
        let committed = self.commit().await;
        let revoked = self.assignment();
        self.events.on_revoked(&revoked);
        if let Mode::Group(g) = &mut self.mode {
            g.leave(self.api.as_ref()).await;
        }
        committed
    }

    async fn rebalance_if_needed(&mut self) -> Result<(), ConsumerError> {
        let needs = matches!(&self.mode, Mode::Group(g) if g.needs_rejoin());
        if !needs {
            return Ok(());
        }
        if let Err(e) = self.commit_sync().await {
            tracing::warn!(error = %e, "commit before rebalance failed; uncommitted records are redelivered");
        }
        let cooperative = self.config.assignor.is_cooperative();
        if !cooperative {
            // Eager: everything is given up before rejoining.
            let revoked = self.assignment();
            if !revoked.is_empty() {
                self.events.on_revoked(&revoked);
            }
            self.parts.clear();
        }
        // A new assignment starts from committed offsets: nothing read ahead is used.
        self.prefetch = None;
        let settings = self.group_settings();
        let api = Arc::clone(&self.api);
        let Mode::Group(g) = &mut self.mode else {
            return Ok(());
        };
        let assigned = g.join(&api, &settings).await?;
        // Cooperative: only what left the assignment is revoked (its processed offsets were
        // committed above), and then the member rejoins at once so the leader can hand it on.
        let revoked: Vec<TopicPartition> = self
            .parts
            .keys()
            .filter(|tp| !assigned.contains(tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            self.events.on_revoked(&revoked);
            for tp in &revoked {
                self.parts.remove(tp);
            }
            g.rejoin.store(true, std::sync::atomic::Ordering::Release);
        }
        let added: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.parts.contains_key(*tp))
            .cloned()
            .collect();
        for tp in &added {
            self.parts
                .insert(tp.clone(), PartitionState::new(self.config.ordered));
        }
        self.events.on_assigned(&added);
        Ok(())
    }

    async fn init_positions(&mut self) -> Result<(), ConsumerError> {
        let missing: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, st)| st.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let answers = self
            .api
            .fetch_committed_offsets(&self.config.group_id, missing)
            .await;
        let mut reset = Vec::new();
        for (tp, answer) in answers {
            match answer? {
                Some(c) if c.offset >= 0 => {
                    let ledger = RetryLedger::decode(&c.metadata);
                    // Blocking retry (outside ordered mode) commits the record it retries as
                    // the next to read: its next delivery waits out the back-off as it would
                    // have without the restart or rebalance.
                    let in_place = matches!(self.config.failure, FailurePolicy::Blocking(_))
                        && self.config.ordered.is_none();
                    let due = match ledger.get(c.offset) {
                        Some(entry) if in_place => self.retry_due(&entry),
                        _ => None,
                    };
                    if let Some(st) = self.parts.get_mut(&tp) {
                        st.position = Some(c.offset);
                        st.wait_until_ms = due.unwrap_or(0);
                        st.committed_ledger = ledger.clone();
                        st.ledger = ledger;
                        st.committed = Some((c.offset, c.metadata));
                    }
                }
                _ => reset.push(tp),
            }
        }
        self.reset_positions(reset).await
    }

    async fn reset_positions(&mut self, tps: Vec<TopicPartition>) -> Result<(), ConsumerError> {
        if tps.is_empty() {
            return Ok(());
        }
        let spec = match self.config.reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        let answers = self
            .api
            .list_offsets(tps.into_iter().map(|tp| (tp, spec)).collect())
            .await;
        for (tp, answer) in answers {
            let offset = answer?.map_or(0, |l| l.offset);
            if let Some(st) = self.parts.get_mut(&tp) {
                st.position = Some(offset);
            }
        }
        Ok(())
    }

    /// One round with a record handler: see [`Consumer::poll_batch`]. Each call of
    /// `handler` runs in a DEBUG `handle` span (see [`Consumer::poll_batch`] for the spans).
    pub async fn poll<H: crate::handler::Handler>(
        &mut self,
        handler: &H,
    ) -> Result<(), ConsumerError> {
        let traced = TracedRecords {
            handler,
            group: Arc::clone(&self.group),
        };
        let span = tracing::info_span!("poll", group = %self.group);
        self.poll_round(&traced).instrument(span).await
    }

    /// One round: rejoins the group if a rebalance is due (committing first), retries due
    /// forwards and parked keys, fetches what is fetchable (waiting up to `fetch_max_wait`),
    /// hands records to `handler` partition by partition (at most `max_batch_records` per
    /// call, at most `max_poll_records` in all; in ordered mode one record per call), and
    /// commits — at most once per [`ConsumerConfig::commit_interval`](crate::ConsumerConfig)
    /// unless an attempt count changed, and without waiting for the broker on the happy path:
    /// the commit is pipelined with the next round, whose result reports it if it failed (see
    /// the [module docs](self)).
    ///
    /// # Tracing
    /// The round runs in an INFO span `poll` (field `group`); each handler call in a span
    /// `handle` with the fields `group`, `topic`, `partition`, `offset` and `attempt` of its
    /// (first) record, and `records` for a batch — so whatever the handler logs carries them
    /// while that span is enabled. The `handle` span of a batch call is INFO; that of a record
    /// handler ([`Consumer::poll`]) is DEBUG, since a span per record costs more than the
    /// consumer's own work on it (with an INFO `fmt` subscriber an INFO span per record made
    /// the happy path 8-10x slower). So under an INFO filter a record handler's logs carry
    /// only the `group` of `poll`; enable DEBUG for the target `staunch_consumer` to have the
    /// record's coordinates. A batch handler called with one record at a time (ordered mode,
    /// or `max_batch_records` 1) still gets an INFO span per record. A dead-lettered record is
    /// reported by a WARN event `dead-lettered`, a forward to a retry topic by an INFO event,
    /// a forward that failed by a WARN event, a blocking retry by a DEBUG event.
    ///
    /// # Cancel safety
    /// A poll may be dropped before it finishes (a timeout or a `select!` around it) without
    /// losing a record or a partition: the partition it was working on goes on, at the next
    /// poll, from where everything before was finished — as it stood when the poll took it
    /// up — so the record in hand and the records after it are delivered again, and dead
    /// letters or retry-topic forwards not yet acknowledged are sent again (the topic may
    /// then hold one twice). The `processed` counter counts a record delivered again twice.
    /// Other partitions keep their state. A poll that is always dropped at the same point
    /// (a handler slower than the timeout around every poll) therefore never gets past it.
    pub async fn poll_batch<H: BatchHandler>(&mut self, handler: &H) -> Result<(), ConsumerError> {
        let traced = TracedBatch {
            handler,
            group: Arc::clone(&self.group),
        };
        let span = tracing::info_span!("poll", group = %self.group);
        self.poll_round(&traced).instrument(span).await
    }

    async fn poll_round<H: BatchHandler>(&mut self, handler: &H) -> Result<(), ConsumerError> {
        // A commit answered since the last round: apply it (a group error asks for a rejoin).
        self.reap().await;
        self.reap_all_forwards(usize::MAX).await;
        self.flush_all_forwards(false).await;
        self.rebalance_if_needed().await?;
        self.init_positions().await?;
        self.retry_pending_forwards().await;
        if self.config.ordered.is_some() {
            self.retry_due_keys(handler).await;
        }
        let now = now_ms();
        let lag = self.config.max_uncommitted_failures;
        let mut kept = Vec::new();
        let mut fetchable = Vec::new();
        for (tp, st) in &mut self.parts {
            if self.config.max_poll_records == Some(0)
                || st.user_paused
                || st.pending.is_some()
                || st.wait_until_ms > now
                || st.position.is_none()
                || st.retry_count_uncommitted(lag)
                || st.ordered_waits()
            {
                continue;
            }
            if st.kept_ready() {
                kept.push(tp.clone());
            } else {
                fetchable.push(FetchPosition {
                    partition: tp.clone(),
                    offset: st.position.unwrap_or(0),
                    max_bytes: self.config.partition_max_bytes,
                });
            }
        }
        if kept.is_empty() && fetchable.is_empty() {
            if self
                .parts
                .values()
                .any(|st| st.due_count_uncommitted(now, lag))
            {
                // Ordered mode with nothing to do but retry keys whose counts the broker does
                // not have yet: the commit's answer is the wake-up.
                let committed = self.commit_sync().await;
                if committed.is_err() {
                    // Do not hammer a coordinator that fails: nap before the next try.
                    tokio::time::sleep(self.config.fetch_max_wait).await;
                }
                return self.with_earlier_commit_error(committed);
            }
            // Nothing gathers more forwards while the consumer naps.
            self.flush_all_forwards(true).await;
            let wake = self.next_wake().unwrap_or(i64::MAX);
            let nap = (wake - now).clamp(1, ms(self.config.fetch_max_wait).max(1));
            tokio::time::sleep(Duration::from_millis(u64::try_from(nap).unwrap_or(1))).await;
            return self.commit_round().await;
        }
        self.fetch_turn = self.fetch_turn.wrapping_add(1);
        prefetch::take_turns(&mut fetchable, self.fetch_turn);
        let mut budget = self.config.max_poll_records;
        for tp in &kept {
            self.process_kept(tp, handler, &mut budget).await;
        }
        // Records were handled already: answer with what is there now.
        let answers = self.fetch_round(fetchable, kept.is_empty()).await;
        let mut error = None;
        for (tp, answer) in answers {
            match answer {
                Ok(fetched) => {
                    if let Some(st) = self.parts.get_mut(&tp) {
                        st.saw_end(fetched.high_watermark);
                    }
                    if let Err(e) = self
                        .process_partition(&tp, &fetched.records, handler, &mut budget)
                        .await
                    {
                        error.get_or_insert(e);
                    }
                }
                Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => {
                    self.reset_positions(vec![tp]).await?;
                }
                Err(e) => tracing::debug!(partition = %tp, error = %e, "fetch failed"),
            }
        }
        let committed = self.commit_round().await;
        match error {
            Some(e) => Err(e),
            None => committed,
        }
    }

    /// This round's fetch of `wanted`: the read-ahead's next answer for it (same partition,
    /// same offset), and a fresh fetch of the rest — which waits up to `fetch_max_wait` for
    /// data only if `may_wait` and the read-ahead brought nothing. The read-ahead is kept if
    /// it goes on from exactly where this round leaves the partitions that answered (see
    /// [`prefetch::next_positions`]), and started again from there otherwise, so the broker
    /// reads them while the handler works. It never waits for data: once no partition brings
    /// records it ends, and the next round fetches afresh, waiting as usual. Nothing wanted:
    /// the read-ahead is kept for a later round.
    async fn fetch_round(&mut self, wanted: Vec<FetchPosition>, may_wait: bool) -> FetchAnswers {
        if wanted.is_empty() {
            return Vec::new();
        }
        if !self
            .prefetch
            .as_ref()
            .is_some_and(|p| wanted.iter().any(|w| p.covers(w)))
        {
            // Dropping a read-ahead that covers nothing wanted drops its fetches.
            self.prefetch = None;
        }
        let mut answers = match &mut self.prefetch {
            Some(prefetch) => prefetch.answers_for(&wanted).await,
            None => Vec::new(),
        };
        let rest: Vec<FetchPosition> = wanted
            .iter()
            .filter(|w| !answers.iter().any(|(tp, _)| *tp == w.partition))
            .cloned()
            .collect();
        if !rest.is_empty() {
            let max_wait = if may_wait && answers.is_empty() {
                // Nothing gathers more forwards while the fetch waits for data.
                self.flush_all_forwards(true).await;
                self.config.fetch_max_wait
            } else {
                Duration::ZERO
            };
            answers.extend(
                self.api
                    .fetch(FetchCall {
                        max_wait,
                        min_bytes: 1,
                        max_bytes: self.config.fetch_max_bytes,
                        partitions: rest,
                    })
                    .await,
            );
        }
        let mut ahead = prefetch::next_positions(&wanted, &answers);
        let keep = self
            .prefetch
            .as_ref()
            .is_some_and(|p| p.continues_at(&ahead));
        if !keep {
            self.prefetch = None;
            if !ahead.is_empty() {
                // The positions come sorted: a read-ahead started again every round (some
                // partition left out of each) must still let each partition come first in turn.
                prefetch::take_turns(&mut ahead, self.fetch_turn.wrapping_add(1));
                let call = FetchCall {
                    max_wait: Duration::ZERO,
                    min_bytes: 1,
                    max_bytes: self.config.fetch_max_bytes,
                    partitions: ahead,
                };
                self.prefetch = Some(Prefetch::start(&self.api, call));
            }
        }
        answers
    }

    fn next_wake(&self) -> Option<i64> {
        let lag = self.config.max_uncommitted_failures;
        self.parts
            .values()
            .filter(|st| !st.user_paused)
            .filter_map(|st| {
                let mut t = Vec::new();
                // Waiting for a commit: the next poll's commit is the wake-up, not the due time.
                let waits_for_commit = st.retry_count_uncommitted(lag);
                if st.wait_until_ms > 0 && !waits_for_commit {
                    t.push(st.wait_until_ms);
                }
                if let Some(p) = &st.pending {
                    t.push(p.next_try_ms);
                }
                if let Some(d) = st.lot.as_ref().and_then(ParkingLot::next_due)
                    && !waits_for_commit
                {
                    t.push(d);
                }
                t.into_iter().min()
            })
            .min()
    }

    /// When the delivery after `entry`'s failures is due under the blocking back-off: its last
    /// failure plus the delay for that many failures (with a fresh jitter draw, so it may
    /// differ from the wait the failing consumer had chosen by up to the jitter), but never
    /// later than that delay from now — the last failure time comes from whichever consumer
    /// committed it, whose clock may run ahead (or from damaged metadata), and must not stall
    /// the partition for longer than one back-off. `None` if the back-off allows no more
    /// deliveries (the next failure is the last one anyway).
    fn retry_due(&mut self, entry: &RetryEntry) -> Option<i64> {
        let since_first = entry.last_failure_ms.saturating_sub(entry.first_failure_ms);
        let elapsed = Duration::from_millis(u64::try_from(since_first).unwrap_or(0));
        let delay = self.config.failure.backoff().delay_with_jitter(
            entry.attempts,
            elapsed,
            self.rng.f64(),
        )?;
        let due = entry.last_failure_ms.saturating_add(ms(delay));
        Some(due.min(now_ms().saturating_add(ms(delay))))
    }

    /// Takes `tp`'s state out to work on it while `self` is borrowed too (it goes back with
    /// [`Consumer::put_back`]), leaving its [stand-in](PartitionState::stand_in) in its place.
    /// If the caller's future is dropped before the state goes back (a `poll` cut short by a
    /// timeout or a `select!`), the stand-in stays: the partition goes on from where
    /// everything before was finished, and what was in hand — records, forwards not yet
    /// acknowledged — is delivered or forwarded again rather than lost. The partition stays
    /// assigned.
    fn take_part(&mut self, tp: &TopicPartition) -> Option<PartitionState> {
        let slot = self.parts.get_mut(tp)?;
        let stand_in = slot.stand_in(self.config.ordered);
        Some(std::mem::replace(slot, stand_in))
    }

    /// Gives back a state taken with [`Consumer::take_part`].
    fn put_back(&mut self, tp: &TopicPartition, st: PartitionState) {
        match self.parts.get_mut(tp) {
            Some(slot) => *slot = st,
            None => {
                self.parts.insert(tp.clone(), st);
            }
        }
    }

    async fn process_partition<H: BatchHandler>(
        &mut self,
        tp: &TopicPartition,
        bytes: &bytes::Bytes,
        handler: &H,
        budget: &mut Option<usize>,
    ) -> Result<(), ConsumerError> {
        let Some(mut st) = self.take_part(tp) else {
            return Ok(());
        };
        let result = self
            .process_fetched(tp, &mut st, bytes, handler, budget)
            .await;
        self.put_back(tp, st);
        result
    }

    /// Hands the records `tp` kept from its last fetch to `handler`.
    async fn process_kept<H: BatchHandler>(
        &mut self,
        tp: &TopicPartition,
        handler: &H,
        budget: &mut Option<usize>,
    ) {
        let Some(mut st) = self.take_part(tp) else {
            return;
        };
        let mut records = std::mem::take(&mut st.kept);
        for r in &mut records {
            r.delivery_attempt = attempt_of(r, &st.ledger);
        }
        self.process_records(tp, &mut st, records, handler, budget)
            .await;
        self.put_back(tp, st);
    }

    async fn process_fetched<H: BatchHandler>(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        bytes: &bytes::Bytes,
        handler: &H,
        budget: &mut Option<usize>,
    ) -> Result<(), ConsumerError> {
        let Some(from) = st.position else {
            return Ok(());
        };
        let (records, end) =
            decode(tp, bytes, from, &st.ledger).map_err(|reason| ConsumerError::Corrupt {
                partition: tp.clone(),
                reason,
            })?;
        if records.is_empty() {
            if let Some(end) = end.filter(|&e| e > from) {
                st.position = Some(end);
            }
            return Ok(());
        }
        self.process_records(tp, st, records, handler, budget).await;
        Ok(())
    }

    /// Hands `records` (ascending, the first at the position) to `handler`, at most
    /// `max_batch_records` at a time and at most `budget` in all (`max_poll_records`; a record
    /// delivered again in the same round is not counted twice), until a record waits for its
    /// retry (its back-off, or its attempt count), a forward fails at once, or a record is not
    /// due yet; keeps the rest (from that record on) for the next round. A record forwarded
    /// without waiting is passed; the round's forwards are sent at the end if the partition's
    /// previous forward call is answered ([`PartitionState::forward_calls_answered`]).
    async fn process_records<H: BatchHandler>(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        mut records: Vec<ConsumerRecord>,
        handler: &H,
        budget: &mut Option<usize>,
    ) {
        let mut over_budget = Vec::new();
        if let Some(left) = budget.as_mut() {
            if records.len() > *left {
                over_budget = records.split_off(*left);
            }
            *left -= records.len();
        }
        if st.lot.is_some() {
            let mut rest = self.process_ordered(st, records, handler).await;
            rest.append(&mut over_budget);
            st.kept = rest;
            return;
        }
        let now = now_ms();
        let mut later = Vec::new();
        if let Some(i) = records
            .iter()
            .position(|r| due_of(r).is_some_and(|due| due > now))
        {
            st.wait_until_ms = due_of(&records[i]).unwrap_or(now);
            later = records.split_off(i);
        }
        let max = self.config.max_batch_records.max(1);
        // Handed out up to here; a record that fails and is forwarded (sent without waiting)
        // is passed, and the rest go on in the same round; one retried in place stops it.
        let mut at = 0;
        while at < records.len() {
            let chunk = &records[at..records.len().min(at + max)];
            match handler.handle_batch(chunk).await {
                Ok(()) => {
                    if !st.ledger.is_empty() {
                        for r in chunk {
                            st.ledger.remove(r.offset);
                        }
                    }
                    st.position = chunk.last().map(|r| r.offset + 1);
                    let n = chunk.len() as u64;
                    self.count(&tp.topic, |c| c.processed += n);
                    at += chunk.len();
                }
                Err(failure) => {
                    let index = failure.index.min(chunk.len() - 1);
                    for r in &chunk[..index] {
                        st.ledger.remove(r.offset);
                    }
                    self.count(&tp.topic, |c| c.processed += index as u64);
                    let failed = chunk[index].clone();
                    let offset = failed.offset;
                    st.position = Some(offset);
                    at += index;
                    self.fail(tp, st, failed, failure.error, None).await;
                    if self.may_retry_at_once(st, offset) {
                        // Due now and counted enough: deliver it again in this round.
                        records[at].delivery_attempt = attempt_of(&records[at], &st.ledger);
                        continue;
                    }
                    if st.pending.is_some() || st.position != Some(offset + 1) {
                        break;
                    }
                    at += 1;
                }
            }
        }
        if st.forward_calls_answered() {
            self.flush_forwards(tp, st).await;
        }
        records.drain(..at);
        records.append(&mut later);
        records.append(&mut over_budget);
        st.kept = records;
    }

    /// Whether the record at `offset`, which just failed and is retried in place at the
    /// position (blocking retry), may be delivered again right now: its back-off is over
    /// (zero back-off) and the broker has enough of its attempt count
    /// ([`ConsumerConfig::max_uncommitted_failures`]).
    fn may_retry_at_once(&self, st: &PartitionState, offset: Offset) -> bool {
        st.pending.is_none()
            && st.position == Some(offset)
            && st.ledger.get(offset).is_some()
            && st.wait_until_ms <= now_ms()
            && !st.retry_count_uncommitted(self.config.max_uncommitted_failures)
    }

    /// Ordered mode: whether `key`, just blocked behind its failed head at `offset`, may
    /// retry that head right now — as [`Consumer::may_retry_at_once`] for a partition.
    fn may_retry_key_at_once(&self, st: &PartitionState, key: &ParkKey, offset: Offset) -> bool {
        st.pending.is_none()
            && st
                .lot
                .as_ref()
                .and_then(|lot| lot.due_ms(key))
                .is_some_and(|due| due <= now_ms())
            && st.count_committed(offset, self.config.max_uncommitted_failures)
    }

    /// The failure path of one record whose position is already set to it (or past it in
    /// ordered mode): retry in place, forward to a retry topic, or dead-letter.
    async fn fail(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        record: ConsumerRecord,
        error: HandlerError,
        ordered_key: Option<ParkKey>,
    ) {
        let now = now_ms();
        let retriable = self.config.classifier.is_retriable(&error);
        let previous = origin(&record);
        let failures = record.delivery_attempt.max(1);
        let first = st
            .ledger
            .get(record.offset)
            .map(|e| e.first_failure_ms)
            .or(previous.as_ref().map(|f| f.first_failure_ms))
            .unwrap_or(now);
        let elapsed = Duration::from_millis(u64::try_from(now - first).unwrap_or(0));
        let backoff = self.config.failure.backoff().clone();
        let source = previous
            .as_ref()
            .map_or_else(|| record.topic.to_string(), |f| f.original_topic.clone());
        let mut facts = ForwardFacts {
            original_topic: source.clone(),
            original_partition: previous
                .as_ref()
                .map_or(record.partition, |f| f.original_partition),
            original_offset: previous
                .as_ref()
                .map_or(record.offset, |f| f.original_offset),
            original_timestamp: previous
                .as_ref()
                .map_or(record.timestamp, |f| f.original_timestamp),
            attempts: failures,
            first_failure_ms: first,
            last_failure_ms: now,
            error_kind: if retriable {
                ErrorKind::Retriable
            } else {
                ErrorKind::Fatal
            },
            error_type: error.error_type.clone(),
            error_message: error.message.clone(),
            consumer_group: self.config.group_id.clone(),
            due_ms: None,
        };
        let after = match &ordered_key {
            Some(k) => AfterForward::OrderedHead(k.clone()),
            None => AfterForward::Advance,
        };
        if retriable
            && let (Some(base), Some(delay)) = (
                backoff.delay(failures, elapsed),
                backoff.delay_with_jitter(failures, elapsed, self.rng.f64()),
            )
        {
            match &self.config.failure {
                FailurePolicy::Blocking(_) => {
                    st.ledger.set(
                        record.offset,
                        RetryEntry {
                            attempts: failures,
                            first_failure_ms: first,
                            last_failure_ms: now,
                        },
                    );
                    let due = now.saturating_add(ms(delay));
                    self.count(&tp.topic, |c| c.retried += 1);
                    tracing::debug!(partition = %tp, offset = record.offset, failures, "retrying in place");
                    match ordered_key {
                        Some(key) => {
                            if let Some(lot) = st.lot.as_mut() {
                                let mut head = record;
                                head.delivery_attempt = failures + 1;
                                lot.block(key, head, due);
                            }
                        }
                        None => {
                            st.position = Some(record.offset);
                            st.wait_until_ms = due;
                        }
                    }
                    return;
                }
                FailurePolicy::RetryTopics(_) => {
                    let topic =
                        self.config
                            .naming
                            .retry_topic(&source, &self.config.group_id, base);
                    facts.due_ms = Some(now.saturating_add(ms(delay)));
                    let pending = PendingForward::new(record, topic, facts, false, after, now);
                    self.start_forward(tp, st, pending).await;
                    return;
                }
            }
        }
        let topic = self
            .config
            .naming
            .dead_letter_topic(&source, &self.config.group_id);
        let pending = PendingForward::new(record, topic, facts, true, after, now);
        self.start_forward(tp, st, pending).await;
    }

    /// A record's forward: sent without waiting when the partition moves on past it,
    /// written and waited for in ordered mode (where the record's key waits for it).
    async fn start_forward(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        mut pending: PendingForward,
    ) {
        pending.record.detach();
        match pending.after {
            AfterForward::Advance => self.send_forward(tp, st, pending).await,
            AfterForward::OrderedHead(_) => {
                self.try_forward(tp, st, pending).await;
            }
        }
    }

    /// Writes a forward and waits for it; on success lets the partition move past the record,
    /// on failure keeps it pending (the partition stays stopped) and reports it.
    async fn try_forward(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        pending: PendingForward,
    ) -> Option<ParkKey> {
        let result = self
            .forwarder
            .forward(&self.api, &pending.topic, &pending.record, &pending.facts)
            .await;
        match result {
            Ok((dest, offset)) => self.forwarded(tp, st, pending, &dest, offset),
            Err(e) => {
                self.forward_failed(tp, st, pending, e);
                None
            }
        }
    }

    /// Queues a forward to be sent without waiting for it, with the round's others
    /// ([`Consumer::flush_forwards`]), and moves the partition on past the record; nothing
    /// at or after it is committed until the broker acknowledged it
    /// ([`PartitionState::commit_offset`]). With [`MAX_FORWARDS_IN_FLIGHT`] queued or in
    /// flight (or [`MAX_FORWARD_BYTES_IN_FLIGHT`]), sends the queue and waits for the oldest
    /// half.
    async fn send_forward(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        pending: PendingForward,
    ) {
        let offset = pending.record.offset;
        if st.position.is_none_or(|p| p <= offset) {
            st.position = Some(offset + 1);
        }
        let queued: usize = st.outbox.iter().map(PendingForward::size).sum();
        if queued + pending.size() > MAX_FORWARD_CALL_BYTES {
            self.flush_forwards(tp, st).await;
        }
        st.outbox.push(pending);
        let forwards = st.outbox.len() + st.sending.len();
        if forwards >= MAX_FORWARDS_IN_FLIGHT || st.forward_bytes() >= MAX_FORWARD_BYTES_IN_FLIGHT {
            self.flush_forwards(tp, st).await;
            self.reap_forwards(tp, st, forwards / 2).await;
        }
    }

    /// Sends the queued forwards of `st` in one produce call ([`Forwarder::send_all`]).
    async fn flush_forwards(&mut self, tp: &TopicPartition, st: &mut PartitionState) {
        if st.outbox.is_empty() {
            return;
        }
        if st.pending.is_some() {
            // A forward of this partition failed and waits to be tried again: these go after
            // it, in order, rather than land before it.
            st.resend.extend(st.outbox.drain(..));
            return;
        }
        let queued = std::mem::take(&mut st.outbox);
        let forwards: Vec<(&str, &ConsumerRecord, &ForwardFacts)> = queued
            .iter()
            .map(|p| (p.topic.as_str(), &p.record, &p.facts))
            .collect();
        match self.forwarder.send_all(&self.api, &forwards).await {
            Ok(sent) => st.sending.extend(
                queued
                    .into_iter()
                    .zip(sent)
                    .map(|(pending, sent)| InFlightForward { pending, sent }),
            ),
            Err(e) => {
                for pending in queued {
                    self.forward_failed(tp, st, pending, e.clone());
                }
            }
        }
    }

    /// Sends the queued forwards of every partition: all of them if `all`, else of the
    /// partitions whose calls were all answered ([`PartitionState::forward_calls_answered`]).
    async fn flush_all_forwards(&mut self, all: bool) {
        let queued: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, st)| !st.outbox.is_empty() && (all || st.forward_calls_answered()))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in queued {
            let Some(mut st) = self.take_part(&tp) else {
                continue;
            };
            self.flush_forwards(&tp, &mut st).await;
            self.put_back(&tp, st);
        }
    }

    /// Applies the answers of `st`'s forwards in flight, oldest first: those already answered,
    /// and, waiting for them, as many more as it takes to leave at most `keep` in flight. A
    /// forward that failed stops the partition ([`Consumer::forward_failed`]).
    async fn reap_forwards(&mut self, tp: &TopicPartition, st: &mut PartitionState, keep: usize) {
        while let Some(oldest) = st.sending.front()
            && (st.sending.len() > keep || oldest.sent.is_finished())
        {
            let Some(InFlightForward { pending, sent }) = st.sending.pop_front() else {
                break;
            };
            match sent.outcome(&mut self.forwarder).await {
                Ok((dest, offset)) => {
                    self.forwarded(tp, st, pending, &dest, offset);
                }
                Err(e) => self.forward_failed(tp, st, pending, e),
            }
        }
    }

    /// [`Consumer::reap_forwards`] for every partition; `keep` as there.
    async fn reap_all_forwards(&mut self, keep: usize) {
        let busy: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, st)| !st.sending.is_empty())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in busy {
            let Some(mut st) = self.take_part(&tp) else {
                continue;
            };
            self.reap_forwards(&tp, &mut st, keep).await;
            self.put_back(&tp, st);
        }
    }

    /// Books a forward the broker acknowledged (`dest` at `offset`): counts and reports it,
    /// forgets the record's retry entry, and lets the partition (or, in ordered mode, the
    /// record's key) move past it. Returns the key to drain in ordered mode.
    fn forwarded(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        pending: PendingForward,
        dest: &TopicPartition,
        offset: Offset,
    ) -> Option<ParkKey> {
        let facts = &pending.facts;
        if pending.dead_letter {
            self.count(&tp.topic, |c| c.dead_lettered += 1);
            tracing::warn!(
                group = %self.config.group_id,
                topic = %tp.topic,
                partition = tp.partition,
                offset = pending.record.offset,
                attempt = facts.attempts,
                destination = %dest,
                error_kind = facts.error_kind.as_str(),
                error_type = %facts.error_type,
                error = %facts.error_message,
                "dead-lettered"
            );
        } else {
            self.count(&tp.topic, |c| {
                c.retried += 1;
                c.forwarded_to_retry += 1;
            });
            tracing::info!(
                group = %self.config.group_id,
                topic = %tp.topic,
                partition = tp.partition,
                offset = pending.record.offset,
                attempt = facts.attempts,
                destination = %dest,
                due_ms = facts.due_ms,
                error_type = %facts.error_type,
                error = %facts.error_message,
                "forwarded to a retry topic"
            );
        }
        if dest == tp {
            st.saw_end(offset + 1);
        } else if let Some(d) = self.parts.get_mut(dest) {
            d.saw_end(offset + 1);
        }
        self.events
            .on_forwarded(&pending.record, dest, pending.dead_letter);
        st.ledger.remove(pending.record.offset);
        match pending.after {
            // The position passed the record when the forward was queued; a seek since wins.
            AfterForward::Advance => None,
            AfterForward::OrderedHead(key) => {
                if let Some(lot) = st.lot.as_mut()
                    && lot.head(&key).map(|r| r.offset) == Some(pending.record.offset)
                {
                    lot.pop(&key);
                }
                Some(key)
            }
        }
    }

    /// Books a forward that failed: it becomes the partition's pending forward, retried after
    /// the forward back-off (or, if one is pending already, waits behind it in `resend`), and
    /// the partition stops until they went through; nothing at or after the record is
    /// committed meanwhile.
    fn forward_failed(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        mut pending: PendingForward,
        e: ApiError,
    ) {
        self.count(&tp.topic, |c| c.forward_failures += 1);
        pending.failures = pending.failures.saturating_add(1);
        let delay = self
            .config
            .forward_backoff
            .delay(pending.failures, Duration::ZERO)
            .unwrap_or(Duration::from_secs(1));
        pending.next_try_ms = now_ms().saturating_add(ms(delay));
        tracing::warn!(partition = %tp, offset = pending.record.offset, destination = %pending.topic, error = %e, "forward failed; partition stopped until it succeeds");
        self.events
            .on_forward_failed(tp, pending.record.offset, &pending.topic, &e);
        pending.last_error = Some(e);
        if st.pending.is_some() {
            st.resend.push_back(pending);
        } else {
            st.pending = Some(pending);
        }
    }

    async fn retry_pending_forwards(&mut self) {
        let now = now_ms();
        let due: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, st)| st.pending.as_ref().is_some_and(|p| p.next_try_ms <= now))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            let Some(mut st) = self.take_part(&tp) else {
                continue;
            };
            if let Some(pending) = st.pending.take() {
                self.try_forward(&tp, &mut st, pending).await;
                // Then those that failed behind it, in order, until one fails again.
                while st.pending.is_none()
                    && let Some(next) = st.resend.pop_front()
                {
                    self.try_forward(&tp, &mut st, next).await;
                }
            }
            self.put_back(&tp, st);
        }
    }

    /// Ordered mode: hands each record to the handler unless its key is blocked (then it is
    /// parked); stops where the partition has to wait ([`PartitionState::ordered_waits`]) or a
    /// forward failed, and returns the records from there on (the next round keeps them).
    async fn process_ordered<H: BatchHandler>(
        &mut self,
        st: &mut PartitionState,
        records: Vec<ConsumerRecord>,
        handler: &H,
    ) -> Vec<ConsumerRecord> {
        let Some(first) = records.first() else {
            return Vec::new();
        };
        let tp = first.topic_partition();
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            let key = ParkKey::of(&record);
            let blocked = st.lot.as_ref().is_some_and(|l| l.is_blocked(&key));
            // A parked record takes room in the lot; a handled one may add a retry count.
            let waits = if blocked {
                st.lot.as_ref().is_some_and(ParkingLot::is_full)
            } else {
                !st.may_add_retry(record.offset)
            };
            if st.pending.is_some() || waits {
                st.position = Some(record.offset);
                st.wait_until_ms = st.lot.as_ref().and_then(ParkingLot::next_due).unwrap_or(0);
                return std::iter::once(record).chain(records).collect();
            }
            st.position = Some(record.offset + 1);
            if blocked {
                if let Some(lot) = st.lot.as_mut() {
                    lot.park(&key, record);
                }
                continue;
            }
            // Failures from before a restart, rebalance or seek: the key waits out the
            // back-off of its head before it is delivered again, its later records behind it.
            let now = now_ms();
            let due = st
                .ledger
                .get(record.offset)
                .and_then(|entry| self.retry_due(&entry))
                .filter(|&due| due > now);
            match (due, st.lot.as_mut()) {
                (Some(due), Some(lot)) => {
                    let mut head = record;
                    head.delivery_attempt = attempt_of(&head, &st.ledger);
                    lot.block(key, head, due);
                }
                _ => self.run_key(&tp, st, key, record, handler).await,
            }
        }
        Vec::new()
    }

    /// Handles `record` (not parked behind anything) and then, while the key's head keeps
    /// succeeding, the records parked behind it.
    async fn run_key<H: BatchHandler>(
        &mut self,
        tp: &TopicPartition,
        st: &mut PartitionState,
        key: ParkKey,
        mut record: ConsumerRecord,
        handler: &H,
    ) {
        loop {
            let in_lot = st
                .lot
                .as_ref()
                .and_then(|l| l.head(&key))
                .is_some_and(|h| h.offset == record.offset);
            record.delivery_attempt = attempt_of(&record, &st.ledger);
            match handler.handle_batch(std::slice::from_ref(&record)).await {
                Ok(()) => {
                    self.count(&tp.topic, |c| c.processed += 1);
                    st.ledger.remove(record.offset);
                    if !in_lot {
                        return;
                    }
                }
                Err(failure) => {
                    let before = st.pending.is_some();
                    self.fail(tp, st, record.clone(), failure.error, Some(key.clone()))
                        .await;
                    let blocked = st
                        .lot
                        .as_ref()
                        .is_some_and(|l| l.head(&key).is_some_and(|h| h.offset == record.offset));
                    if blocked && self.may_retry_key_at_once(st, &key, record.offset) {
                        // Due now and counted enough: deliver the head again at once.
                        continue;
                    }
                    if blocked || (st.pending.is_some() && !before) {
                        if st.pending.is_some() && !blocked {
                            // Keep the record as the key's head until the forward succeeds.
                            if let Some(lot) = st.lot.as_mut() {
                                lot.block(key.clone(), record.clone(), i64::MAX);
                            }
                        }
                        return;
                    }
                    // Forwarded: the key moves on.
                    if !in_lot {
                        return;
                    }
                    // `fail` popped the head already; continue with the next one.
                    match st.lot.as_ref().and_then(|l| l.head(&key)) {
                        Some(next) => {
                            record = next.clone();
                            continue;
                        }
                        None => return,
                    }
                }
            }
            // Succeeded as the key's head: pop and go on with the next parked record.
            let next = st.lot.as_mut().and_then(|l| l.pop(&key)).cloned();
            match next {
                Some(n) => record = n,
                None => return,
            }
        }
    }

    async fn retry_due_keys<H: BatchHandler>(&mut self, handler: &H) {
        let now = now_ms();
        let lag = self.config.max_uncommitted_failures;
        // Only partitions with a key due, or a wait to lift, are taken out (a stand-in each).
        let tps: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, st)| {
                let key_due = !st.user_paused
                    && st.pending.is_none()
                    && st
                        .lot
                        .as_ref()
                        .and_then(ParkingLot::next_due)
                        .is_some_and(|due| due <= now);
                key_due || (!st.ordered_waits() && st.wait_until_ms > now)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in tps {
            let Some(mut st) = self.take_part(&tp) else {
                continue;
            };
            let due = if st.user_paused || st.pending.is_some() {
                Vec::new()
            } else {
                st.lot.as_ref().map(|l| l.due(now)).unwrap_or_default()
            };
            for key in due {
                if st.pending.is_some() {
                    break;
                }
                if let Some(head) = st.lot.as_ref().and_then(|l| l.head(&key)).cloned()
                    && st.count_committed(head.offset, lag)
                {
                    self.run_key(&tp, &mut st, key, head, handler).await;
                }
            }
            if !st.ordered_waits() && st.wait_until_ms > now {
                st.wait_until_ms = 0;
            }
            self.put_back(&tp, st);
        }
    }
}

/// A record handler as a batch handler: record by record, each call in a DEBUG `handle`
/// span, stopping at the first failure.
struct TracedRecords<'a, H> {
    handler: &'a H,
    group: Arc<str>,
}

impl<H: Handler> BatchHandler for TracedRecords<'_, H> {
    async fn handle_batch(&self, records: &[ConsumerRecord]) -> Result<(), BatchFailure> {
        for (index, record) in records.iter().enumerate() {
            // DEBUG, not INFO: see "Tracing" at `Consumer::poll_batch`.
            let span = tracing::debug_span!(
                "handle",
                group = %self.group,
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                attempt = record.delivery_attempt,
            );
            self.handler
                .handle(record)
                .instrument(span)
                .await
                .map_err(|error| BatchFailure { index, error })?;
        }
        Ok(())
    }
}

impl<H> std::fmt::Debug for TracedRecords<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracedRecords")
    }
}

/// A batch handler whose every call runs in a `handle` span.
struct TracedBatch<'a, H> {
    handler: &'a H,
    group: Arc<str>,
}

impl<H: BatchHandler> BatchHandler for TracedBatch<'_, H> {
    async fn handle_batch(&self, records: &[ConsumerRecord]) -> Result<(), BatchFailure> {
        let first = records.first();
        let span = tracing::info_span!(
            "handle",
            group = %self.group,
            topic = first.map(|r| &*r.topic),
            partition = first.map(|r| r.partition),
            offset = first.map(|r| r.offset),
            attempt = first.map(|r| r.delivery_attempt),
            records = records.len(),
        );
        self.handler.handle_batch(records).instrument(span).await
    }
}

impl<H> std::fmt::Debug for TracedBatch<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracedBatch")
    }
}
