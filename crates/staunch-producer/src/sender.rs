//! The sender: one tokio task per producer that owns every record between `send` and its
//! outcome.
//!
//! It receives accepted records over a channel, partitions them, batches them per partition,
//! sends batches with [`BrokerApi::produce`] (each request in its own short task, so requests
//! to several leaders overlap), and turns every answer into acknowledgements, retries or
//! failures. Nothing else touches this state, so there are no locks; the handle only shares the
//! counters, the buffer semaphore and a closed flag with it.
//!
//! One loop iteration: handle what arrived (records, flush/close requests, finished requests,
//! metadata, producer ids), then [`Sender::poll`]: expire records past their delivery
//! deadline, close batches that are full or have lingered, restart sequences where needed, and
//! send what the in-flight rules allow (see [`crate::sequence`]). Then sleep until the next
//! deadline, linger expiry or back-off, or until something arrives.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use staunch_core::{
    ApiError, BrokerApi, ErrorCode, PartitionBatch, ProduceAck, ProduceCall, ProducerIdentity,
    TopicInfo, TopicPartition,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::accumulator::{Accepted, Batch, Finished, OpenBatch};
use crate::config::{ProducerConfig, UnkeyedPartitioning};
use crate::error::{ProduceError, SendError};
use crate::metrics::Metrics;
use crate::outbox::Journal;
use crate::partitioner::{partition_for_key, pick_sticky};
use crate::sequence::SequenceState;

/// What the handle and the sender task share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: Metrics,
    /// One permit per buffered byte ([`ProducerConfig::buffer_memory`]).
    pub(crate) buffer: Semaphore,
    /// Set by `close`: new sends are refused at the handle.
    pub(crate) closed: AtomicBool,
}

/// A request from the handle to the sender task.
#[derive(Debug)]
pub(crate) enum Command {
    /// A record to deliver.
    Send(Accepted),
    /// A batch recovered from the durable outbox, to send again exactly as it was stamped.
    Replay(Replay),
    /// Answer once every record accepted before this command has an outcome.
    Flush(oneshot::Sender<()>),
    /// Flush, refuse later records, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// A batch recovered from the durable outbox: its records go to `partition` of their topic in
/// one batch with the producer fields they were sent with before the crash, so the broker
/// recognizes them if it already wrote them (see [`crate::sequence`], rule 6).
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) partition: i32,
    pub(crate) identity: ProducerIdentity,
    pub(crate) base_sequence: i32,
    /// In batch order; never empty.
    pub(crate) records: Vec<Accepted>,
}

/// What a helper task reports back.
#[derive(Debug)]
enum TaskOutput {
    /// A produce request's outcomes, or `None` if it did not answer in time.
    Produce(Option<Vec<(TopicPartition, Result<ProduceAck, ApiError>)>>),
    Metadata(Result<TopicInfo, ApiError>),
    ProducerId(Result<ProducerIdentity, ApiError>),
}

/// What a helper task was for, kept by the sender so even a panicked task is accounted for.
#[derive(Debug)]
enum TaskKind {
    Produce {
        /// (topic index, partition, batch ordinal) in request order.
        batches: Vec<(usize, i32, u64)>,
        leader: Option<i32>,
        wait: Duration,
    },
    Metadata(usize),
    ProducerId,
}

/// The producer id shared by partitions that have not needed one of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Idempotence is off.
    Disabled,
    /// Needed; ask for one at this time.
    Missing {
        retry_at: Instant,
    },
    /// Asked for.
    Fetching,
    Ready(ProducerIdentity),
}

/// Per-record bookkeeping that outlives batches: counters, buffer space and flush waiters.
#[derive(Debug)]
struct Ledger {
    shared: Arc<Shared>,
    /// Current flush generation; every record is tagged with the generation it arrived in.
    generation: u64,
    /// Records without an outcome, per generation.
    incomplete: BTreeMap<u64, u64>,
    /// Flush requests, each waiting for every generation up to its own.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// The durable outbox's journal: finished records are marked there before their callers
    /// hear of them.
    journal: Option<Journal>,
}

impl Ledger {
    fn arrived(&mut self) -> u64 {
        *self.incomplete.entry(self.generation).or_default() += 1;
        self.generation
    }

    fn finished(&mut self, records: &[Finished], acknowledged: bool) {
        if records.is_empty() {
            return;
        }
        if let Some(journal) = &self.journal {
            let offsets: Vec<_> = records.iter().filter_map(|r| r.outbox).collect();
            journal.finish(&offsets, acknowledged);
        }
        let metrics = &self.shared.metrics;
        let counter = if acknowledged {
            &metrics.acknowledged
        } else {
            &metrics.failed
        };
        Metrics::add(counter, records.len() as u64);
        let mut permits = 0usize;
        for record in records {
            permits += record.buffered as usize;
            if let Some(count) = self.incomplete.get_mut(&record.generation) {
                *count -= 1;
                if *count == 0 {
                    self.incomplete.remove(&record.generation);
                }
            }
        }
        self.shared.buffer.add_permits(permits);
    }

    fn flush(&mut self, done: oneshot::Sender<()>) {
        self.waiters.push((self.generation, done));
        self.generation += 1;
    }

    fn flushing(&self) -> bool {
        !self.waiters.is_empty()
    }

    fn idle(&self) -> bool {
        self.incomplete.is_empty()
    }

    fn notify(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let oldest = self.incomplete.keys().next().copied().unwrap_or(u64::MAX);
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 < oldest {
                let (_, done) = self.waiters.swap_remove(i);
                let _ = done.send(());
            } else {
                i += 1;
            }
        }
    }
}

/// One partition: its open batch, closed batches waiting to go, batches in flight.
#[derive(Debug)]
struct PartitionState {
    tp: TopicPartition,
    leader: Option<i32>,
    open: Option<OpenBatch>,
    /// Closed batches to send: retries first, in ordinal order, then new batches in order.
    queue: VecDeque<Batch>,
    in_flight: Vec<Batch>,
    seq: SequenceState,
    /// Recently not sent / not answered: unkeyed records avoid it until then.
    unavailable_until: Option<Instant>,
}

impl PartitionState {
    fn new(tp: TopicPartition) -> Self {
        PartitionState {
            tp,
            leader: None,
            open: None,
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            seq: SequenceState::default(),
            unavailable_until: None,
        }
    }

    fn available(&self, now: Instant) -> bool {
        self.leader.is_some() && self.unavailable_until.is_none_or(|t| t <= now)
    }

    /// Puts a failed batch back, keeping stamped batches first and in ordinal order.
    fn requeue(&mut self, batch: Batch) {
        let ordinal = batch.stamp.map_or(u64::MAX, |s| s.ordinal);
        let at = self
            .queue
            .iter()
            .position(|b| b.stamp.is_none_or(|s| s.ordinal > ordinal))
            .unwrap_or(self.queue.len());
        self.queue.insert(at, batch);
    }
}

impl Drop for PartitionState {
    /// A partition torn down with a batch still open (the runtime shut down, or the task
    /// panicked) owes its records an outcome too: `Aborted`, as every other dropped record.
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            open.fail(self.tp.clone(), ProduceError::Aborted, |_| {});
        }
    }
}

/// One topic: its partitions once metadata is known, and records waiting for it.
#[derive(Debug)]
struct TopicState {
    name: String,
    partitions: Vec<PartitionState>,
    known: bool,
    fetching: bool,
    refresh_wanted: bool,
    fetched_at: Option<Instant>,
    meta_failures: u32,
    meta_retry_at: Option<Instant>,
    meta_error: Option<ApiError>,
    /// Records that arrived before the topic's partitions were known, in arrival order.
    waiting: VecDeque<Accepted>,
    /// Batches recovered from the outbox, waiting for the topic's partitions; placed before
    /// `waiting`.
    replays: VecDeque<Replay>,
    sticky: Option<i32>,
    sticky_previous: Option<i32>,
}

impl TopicState {
    fn new(name: String) -> Self {
        TopicState {
            name,
            partitions: Vec::new(),
            known: false,
            fetching: false,
            refresh_wanted: false,
            fetched_at: None,
            meta_failures: 0,
            meta_retry_at: None,
            meta_error: None,
            waiting: VecDeque::new(),
            replays: VecDeque::new(),
            sticky: None,
            sticky_previous: None,
        }
    }

    /// Closes partition `index`'s open batch; the sticky partitioner moves on from it.
    fn seal(&mut self, index: usize) {
        let Some(p) = self.partitions.get_mut(index) else {
            return;
        };
        if let Some(open) = p.open.take() {
            p.queue.push_back(open.seal(p.tp.clone()));
        }
        if self.sticky == Some(index as i32) {
            self.sticky = None;
            self.sticky_previous = Some(index as i32);
        }
    }
}

/// A produce request being assembled: batches for one leader, at most one per partition.
#[derive(Debug)]
struct PendingCall {
    leader: Option<i32>,
    /// (topic index, partition, batch ordinal), in the order of `batches`.
    keys: Vec<(usize, i32, u64)>,
    batches: Vec<PartitionBatch>,
    bytes: usize,
    /// The latest delivery deadline among the batches.
    deadline: Instant,
}

/// Polls `future` once, here, then lets it go on in a task of the set.
///
/// [`BrokerApi::produce`] appends concurrent calls on one partition in the order they were
/// *first polled*. A freshly spawned task is first polled whenever the runtime gets to it: on a
/// multi-threaded runtime two tasks spawned one after the other may start in either order (the
/// newer one sits in this worker's LIFO slot while the older one is stolen by another worker, or
/// the other way round). Two batches of a partition would then reach the broker swapped: an
/// idempotent producer gets OUT_OF_ORDER_SEQUENCE_NUMBER and retries, a plain one stores the
/// records out of order. Polling the first time on the sender task makes that order the order
/// calls are made. The first poll uses a no-op waker: the task the future moves into polls it
/// again as soon as it runs, which registers the real waker.
fn spawn_started<F>(tasks: &mut JoinSet<TaskOutput>, future: F) -> tokio::task::AbortHandle
where
    F: Future<Output = TaskOutput> + Send + 'static,
{
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => tasks.spawn(std::future::ready(output)),
        Poll::Pending => tasks.spawn(future),
    }
}

/// Keeps the earliest of several wake-up times.
#[derive(Debug, Default)]
struct Wake(Option<Instant>);

impl Wake {
    fn at(&mut self, t: Instant) {
        self.0 = Some(self.0.map_or(t, |w| w.min(t)));
    }
}

/// How a failed batch is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Retry after back-off; `refresh`: the metadata is probably stale.
    Retry { refresh: bool },
    /// A sequence error: retried, or resets the partition's sequences (see [`crate::sequence`]).
    Sequence,
    /// Fail at once.
    Fatal,
}

fn classify(error: &ApiError, idempotent: bool) -> Verdict {
    match error {
        ApiError::NotSent { .. } | ApiError::NoAnswer { .. } => Verdict::Retry { refresh: true },
        ApiError::Protocol(_) => Verdict::Fatal,
        ApiError::Broker { code, .. } => match code {
            ErrorCode::OutOfOrderSequenceNumber | ErrorCode::UnknownProducerId if idempotent => {
                Verdict::Sequence
            }
            // The bytes will not change: a corrupt batch stays corrupt.
            ErrorCode::CorruptMessage => Verdict::Fatal,
            ErrorCode::NotLeaderOrFollower
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::UnknownTopicId
            | ErrorCode::KafkaStorageError => Verdict::Retry { refresh: true },
            code if code.is_retriable() => Verdict::Retry { refresh: false },
            _ => Verdict::Fatal,
        },
    }
}

/// The sender task's state.
pub(crate) struct Sender<B> {
    api: Arc<B>,
    config: Arc<ProducerConfig>,
    ledger: Ledger,
    rng: fastrand::Rng,
    topics: Vec<TopicState>,
    topic_index: HashMap<String, usize>,
    tasks: JoinSet<TaskOutput>,
    task_kinds: HashMap<Id, TaskKind>,
    identity: Identity,
    identity_failures: u32,
    identity_error: Option<ApiError>,
    /// Flush everything and stop once idle.
    closing: bool,
    /// `close` was called: refuse records that arrive from now on.
    refusing: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl<B> std::fmt::Debug for Sender<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("topics", &self.topics.len())
            .field("identity", &self.identity)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl<B: BrokerApi> Sender<B> {
    /// A sender for `api`; with `journal`, records of the durable outbox are stamped and
    /// marked finished there.
    pub(crate) fn new(
        api: Arc<B>,
        config: Arc<ProducerConfig>,
        shared: Arc<Shared>,
        journal: Option<Journal>,
    ) -> Self {
        let identity = if config.idempotence {
            Identity::Missing {
                retry_at: Instant::now(),
            }
        } else {
            Identity::Disabled
        };
        Sender {
            api,
            config,
            ledger: Ledger {
                shared,
                generation: 0,
                incomplete: BTreeMap::new(),
                waiters: Vec::new(),
                journal,
            },
            rng: fastrand::Rng::new(),
            topics: Vec::new(),
            topic_index: HashMap::new(),
            tasks: JoinSet::new(),
            task_kinds: HashMap::new(),
            identity,
            identity_failures: 0,
            identity_error: None,
            closing: false,
            refusing: false,
            close_waiters: Vec::new(),
        }
    }

    /// Runs until closed (or until every handle is gone) and every accepted record has an
    /// outcome.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut handles_alive = true;
        loop {
            let wake = self.poll(Instant::now());
            self.ledger.notify();
            // `closing` means `close` was called or every handle is gone.
            if self.closing && self.ledger.idle() {
                for done in self.close_waiters.drain(..) {
                    let _ = done.send(());
                }
                break;
            }
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_task(joined, Instant::now());
                }
                command = commands.recv(), if handles_alive => match command {
                    Some(command) => {
                        self.on_command(command);
                        // Take what else is queued before the next poll, so a burst of sends
                        // costs one pass over the partitions, not one per record.
                        for _ in 0..1024 {
                            match commands.try_recv() {
                                Ok(command) => self.on_command(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        handles_alive = false;
                        self.closing = true;
                    }
                },
                () = sleep_until(wake.0), if wake.0.is_some() => {}
                else => {
                    tracing::error!("producer sender has nothing to wait for while records are pending");
                    break;
                }
            }
        }
        // Records that raced with close: refused, with their payload.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            self.on_command(command);
        }
        tracing::debug!("producer sender stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send(mut accepted) => {
                accepted.generation = self.ledger.arrived();
                if self.refusing {
                    self.fail_accepted(accepted, ProduceError::Closed);
                    return;
                }
                let index = self.topic(&accepted.record.topic);
                if self.topics[index].known {
                    self.place(index, accepted, Instant::now());
                } else {
                    self.topics[index].waiting.push_back(accepted);
                }
            }
            Command::Replay(mut replay) => {
                for accepted in &mut replay.records {
                    accepted.generation = self.ledger.arrived();
                }
                let Some(first) = replay.records.first() else {
                    return;
                };
                let index = self.topic(&first.record.topic.clone());
                if self.topics[index].known {
                    self.place_replay(index, replay, Instant::now());
                } else {
                    self.topics[index].replays.push_back(replay);
                }
            }
            Command::Flush(done) => self.ledger.flush(done),
            Command::Close(done) => {
                self.closing = true;
                self.refusing = true;
                self.ledger.shared.closed.store(true, Ordering::Release);
                self.close_waiters.push(done);
            }
        }
    }

    /// The index of `name`'s state, created on first use.
    fn topic(&mut self, name: &str) -> usize {
        match self.topic_index.get(name) {
            Some(&i) => i,
            None => {
                self.topics.push(TopicState::new(name.to_owned()));
                self.topic_index
                    .insert(name.to_owned(), self.topics.len() - 1);
                self.topics.len() - 1
            }
        }
    }

    fn fail_accepted(&mut self, mut accepted: Accepted, error: ProduceError) {
        // Logged here like a failed batch, so a oneway send's failure is not only counted.
        tracing::warn!(topic = %accepted.record.topic, %error, "record failed before being sent");
        self.ledger.finished(&[Finished::of(&accepted)], false);
        let (record, completion) = accepted.take();
        completion.complete(Err(SendError::unsent(record, error)));
    }

    /// Puts a record into its partition's open batch.
    fn place(&mut self, topic_index: usize, accepted: Accepted, now: Instant) {
        let avoid =
            self.config.unkeyed_partitioning == UnkeyedPartitioning::StickyAvoidingUnavailable;
        let topic = &mut self.topics[topic_index];
        let count = topic.partitions.len();
        let partition = match (accepted.record.partition, &accepted.record.key) {
            (Some(p), _) if usize::try_from(p).is_ok_and(|p| p < count) => p,
            (Some(p), _) => {
                let error = ProduceError::InvalidPartition {
                    partition: p,
                    partitions: count,
                };
                self.fail_accepted(accepted, error);
                return;
            }
            (None, Some(key)) => partition_for_key(key, count as i32),
            (None, None) => match topic.sticky {
                Some(p) => p,
                None => {
                    let partitions = &topic.partitions;
                    let p = pick_sticky(&mut self.rng, count as i32, topic.sticky_previous, |i| {
                        !avoid || partitions[i as usize].available(now)
                    });
                    topic.sticky = Some(p);
                    p
                }
            },
        };
        let index = partition as usize;
        let size = accepted.record.buffered_size();
        let full = topic.partitions[index].open.as_ref().is_some_and(|open| {
            open.len() > 0 && open.encoded_len() + size > self.config.batch_size
        });
        if full {
            topic.seal(index);
        }
        let now_ms = wall_clock_ms();
        let p = &mut topic.partitions[index];
        let open = p.open.get_or_insert_with(|| {
            OpenBatch::new(
                accepted.record.timestamp.unwrap_or(now_ms),
                now,
                accepted.deadline,
                self.config.compression,
            )
        });
        open.push(accepted, now_ms);
        if open.encoded_len() >= self.config.batch_size {
            topic.seal(index);
        }
    }

    /// Queues a batch recovered from the outbox with the stamp it had, ahead of anything new
    /// for its partition. Without idempotence, or if the partition no longer exists, its
    /// records are placed as new ones.
    fn place_replay(&mut self, topic_index: usize, replay: Replay, now: Instant) {
        let Replay {
            partition,
            identity,
            base_sequence,
            records,
        } = replay;
        let topic = &mut self.topics[topic_index];
        let exists = usize::try_from(partition).is_ok_and(|p| p < topic.partitions.len());
        if !self.config.idempotence || !exists {
            for accepted in records {
                self.place(topic_index, accepted, now);
            }
            return;
        }
        let index = partition as usize;
        // Records placed before stay ahead of the recovered batch.
        topic.seal(index);
        let now_ms = wall_clock_ms();
        let Some(first) = records.first() else {
            return;
        };
        let mut open = OpenBatch::new(
            first.record.timestamp.unwrap_or(now_ms),
            now,
            first.deadline,
            self.config.compression,
        );
        for accepted in records {
            open.push(accepted, now_ms);
        }
        let p = &mut topic.partitions[index];
        let mut batch = open.seal(p.tp.clone());
        let stamp = p.seq.adopt(identity, base_sequence, batch.record_count());
        if let Err(error) = batch.set_stamp(stamp) {
            // Unreachable for a batch not yet encoded; fail it rather than send it unstamped.
            batch.fail(ProduceError::Fatal(error), |f| {
                self.ledger.finished(f, false)
            });
            return;
        }
        // It may have been written before the crash.
        batch.may_have_been_appended = true;
        batch.ambiguous_since_stamp = true;
        p.queue.push_back(batch);
    }

    /// Does everything that is due at `now`; returns when to look again.
    fn poll(&mut self, now: Instant) -> Wake {
        let mut wake = Wake::default();
        self.poll_identity(now, &mut wake);
        for index in 0..self.topics.len() {
            self.poll_metadata(index, now, &mut wake);
            self.expire(index, now, &mut wake);
            self.seal_ready(index, now, &mut wake);
            self.reset_sequences(index, now);
        }
        self.drain(now, &mut wake);
        wake
    }

    fn poll_identity(&mut self, now: Instant, wake: &mut Wake) {
        if let Identity::Missing { retry_at } = self.identity {
            if retry_at > now {
                wake.at(retry_at);
                return;
            }
            let api = self.api.clone();
            let wait = self.config.request_timeout;
            let handle = self.tasks.spawn(async move {
                TaskOutput::ProducerId(
                    match tokio::time::timeout(wait, api.init_producer_id()).await {
                        Ok(result) => result,
                        Err(_) => Err(no_answer("init_producer_id", wait)),
                    },
                )
            });
            self.task_kinds.insert(handle.id(), TaskKind::ProducerId);
            self.identity = Identity::Fetching;
            tracing::debug!("asking for a producer id");
        }
    }

    fn poll_metadata(&mut self, index: usize, now: Instant, wake: &mut Wake) {
        let max_age = self.config.metadata_max_age;
        let topic = &mut self.topics[index];
        if topic.fetching {
            return;
        }
        let stale = topic.known && topic.fetched_at.is_some_and(|t| now >= t + max_age);
        let waiting = !topic.waiting.is_empty() || !topic.replays.is_empty();
        let wanted = (!topic.known && waiting) || topic.refresh_wanted || stale;
        if !wanted {
            return;
        }
        if let Some(at) = topic.meta_retry_at.filter(|&at| at > now) {
            wake.at(at);
            return;
        }
        topic.fetching = true;
        topic.refresh_wanted = false;
        let api = self.api.clone();
        let name = topic.name.clone();
        let wait = self.config.request_timeout;
        let handle = self.tasks.spawn(async move {
            TaskOutput::Metadata(match tokio::time::timeout(wait, api.topic(&name)).await {
                Ok(result) => result,
                Err(_) => Err(no_answer("metadata", wait)),
            })
        });
        self.task_kinds
            .insert(handle.id(), TaskKind::Metadata(index));
    }

    /// Fails every record whose delivery deadline has passed and that is not in flight.
    fn expire(&mut self, index: usize, now: Instant, wake: &mut Wake) {
        let timeout = self.config.delivery_timeout;
        let idempotent = self.config.idempotence;
        let identity_error = self.identity_error.clone();
        let topic = &mut self.topics[index];
        while let Some(front) = topic.replays.front() {
            let deadline = front.records.first().map_or(now, |r| r.deadline);
            if deadline > now {
                wake.at(deadline);
                break;
            }
            let Some(replay) = topic.replays.pop_front() else {
                break;
            };
            for mut accepted in replay.records {
                let error = ProduceError::DeliveryTimeout {
                    timeout,
                    attempts: 0,
                    last_error: topic.meta_error.clone(),
                };
                self.ledger.finished(&[Finished::of(&accepted)], false);
                let (record, completion) = accepted.take();
                completion.complete(Err(SendError {
                    record,
                    error,
                    may_have_been_appended: true,
                }));
            }
        }
        while let Some(front) = topic.waiting.front() {
            if front.deadline > now {
                wake.at(front.deadline);
                break;
            }
            let Some(accepted) = topic.waiting.pop_front() else {
                break;
            };
            let error = ProduceError::DeliveryTimeout {
                timeout,
                attempts: 0,
                last_error: topic.meta_error.clone(),
            };
            tracing::warn!(topic = %topic.name, %error, "record expired waiting for metadata");
            self.ledger.finished(&[Finished::of(&accepted)], false);
            let mut accepted = accepted;
            let (record, completion) = accepted.take();
            completion.complete(Err(SendError::unsent(record, error)));
        }
        for p in &mut topic.partitions {
            if let Some(open) = &p.open {
                if open.deadline <= now {
                    if let Some(open) = p.open.take() {
                        let error = ProduceError::DeliveryTimeout {
                            timeout,
                            attempts: 0,
                            last_error: identity_error.clone(),
                        };
                        tracing::warn!(partition = %p.tp, error = %error, "records expired before being sent");
                        open.fail(p.tp.clone(), error, |f| self.ledger.finished(f, false));
                    }
                } else {
                    wake.at(open.deadline);
                }
            }
            let mut i = 0;
            while i < p.queue.len() {
                if p.queue[i].deadline > now {
                    wake.at(p.queue[i].deadline);
                    i += 1;
                    continue;
                }
                let Some(batch) = p.queue.remove(i) else {
                    break;
                };
                if idempotent && batch.stamp.is_some() {
                    // Its sequence may or may not be in the log: later ones must restart.
                    p.seq.needs_reset = true;
                }
                let error = ProduceError::DeliveryTimeout {
                    timeout,
                    attempts: batch.attempts,
                    last_error: batch.last_error.clone().or_else(|| identity_error.clone()),
                };
                tracing::warn!(partition = %p.tp, records = batch.len(), error = %error, "batch expired");
                batch.fail(error, |f| self.ledger.finished(f, false));
            }
        }
    }

    /// Closes open batches that are full, or that have lingered long enough and can be sent.
    fn seal_ready(&mut self, index: usize, now: Instant, wake: &mut Wake) {
        let hurry = self.closing || self.ledger.flushing();
        let linger = self.config.linger;
        let max_in_flight = self.config.max_in_flight_per_partition;
        let idempotent = self.config.idempotence;
        let topic = &mut self.topics[index];
        for i in 0..topic.partitions.len() {
            let p = &topic.partitions[i];
            let Some(open) = &p.open else {
                continue;
            };
            let ready_at = open.created + linger;
            let lingered = hurry || ready_at <= now;
            let sendable = p.queue.is_empty()
                && !p.seq.needs_reset
                && p.in_flight.len() < max_in_flight
                && (!idempotent || p.seq.confirmed() || p.in_flight.is_empty());
            if lingered && sendable {
                topic.seal(i);
            } else if !lingered {
                wake.at(ready_at);
            }
        }
    }

    /// Restarts the sequences of partitions that need it, once nothing of theirs is in flight.
    fn reset_sequences(&mut self, index: usize, now: Instant) {
        let metrics = &self.ledger.shared.metrics;
        let topic = &mut self.topics[index];
        for p in &mut topic.partitions {
            if !p.seq.needs_reset || !p.in_flight.is_empty() {
                continue;
            }
            // KIP-360, as the Java producer does it: bump the epoch locally (the broker takes a
            // newer epoch starting at sequence 0). Only an exhausted epoch needs a new id.
            let (fresh, how) = match (p.seq.identity(), self.identity) {
                // A recovered identity is not bumped (rule 6): the producer's own is taken.
                (_, Identity::Ready(fresh)) if p.seq.recovered() => (fresh, "the producer's id"),
                (_, Identity::Missing { .. } | Identity::Fetching) if p.seq.recovered() => {
                    continue;
                }
                (Some(old), _) if old.epoch < i16::MAX => (
                    ProducerIdentity {
                        id: old.id,
                        epoch: old.epoch + 1,
                    },
                    "a bumped producer epoch",
                ),
                (_, Identity::Ready(fresh)) if Some(fresh) != p.seq.identity() => {
                    (fresh, "a new producer id")
                }
                (_, Identity::Ready(_)) => {
                    self.identity = Identity::Missing { retry_at: now };
                    continue;
                }
                (_, Identity::Missing { .. } | Identity::Fetching | Identity::Disabled) => continue,
            };
            let mut duplicates = 0;
            for batch in &mut p.queue {
                if batch.stamp.is_some() {
                    if batch.ambiguous_since_stamp {
                        duplicates += batch.len() as u64;
                    }
                    batch.clear_stamp();
                }
            }
            Metrics::add(&metrics.possible_duplicates, duplicates);
            tracing::warn!(
                partition = %p.tp,
                old = ?p.seq.identity(),
                new = ?fresh,
                possible_duplicates = duplicates,
                "restarting the partition's sequence numbers under {how}"
            );
            p.seq.start(fresh);
        }
    }

    /// Sends every batch the in-flight rules allow, one request per leader per round.
    fn drain(&mut self, now: Instant, wake: &mut Wake) {
        if let Identity::Missing { retry_at } = self.identity {
            // A reset asked for a new id; poll_identity sends the request on the next pass.
            wake.at(retry_at);
        }
        for _round in 0..self.config.max_in_flight_per_partition {
            let mut calls: Vec<PendingCall> = Vec::new();
            for t in 0..self.topics.len() {
                if !self.topics[t].known {
                    continue;
                }
                for i in 0..self.topics[t].partitions.len() {
                    let Some((leader, ordinal, batch, deadline)) =
                        self.next_sendable(t, i, now, wake)
                    else {
                        continue;
                    };
                    let size = batch.records.len();
                    let limit = self.config.max_request_size;
                    let key = (t, i as i32, ordinal);
                    match calls
                        .iter_mut()
                        .find(|c| c.leader == leader && c.bytes + size <= limit)
                    {
                        Some(call) => {
                            call.keys.push(key);
                            call.batches.push(batch);
                            call.bytes += size;
                            call.deadline = call.deadline.max(deadline);
                        }
                        None => calls.push(PendingCall {
                            leader,
                            keys: vec![key],
                            batches: vec![batch],
                            bytes: size,
                            deadline,
                        }),
                    }
                }
            }
            if calls.is_empty() {
                break;
            }
            for call in calls {
                self.spawn_produce(call, now);
            }
        }
    }

    /// Takes the partition's next batch if it may be sent now, stamps it and moves it in flight.
    fn next_sendable(
        &mut self,
        t: usize,
        i: usize,
        now: Instant,
        wake: &mut Wake,
    ) -> Option<(Option<i32>, u64, PartitionBatch, Instant)> {
        let idempotent = self.config.idempotence;
        let max_in_flight = self.config.max_in_flight_per_partition;
        let metrics = &self.ledger.shared.metrics;
        let topic = &mut self.topics[t];
        let refreshing = topic.fetching || topic.refresh_wanted;
        let p = &mut topic.partitions[i];
        let head = p.queue.front()?;
        if p.seq.needs_reset {
            return None;
        }
        let fresh_needed =
            p.seq.identity().is_none() || (p.seq.recovered() && head.stamp.is_none());
        if idempotent && fresh_needed {
            // A recovered identity is retired once its own batches are all answered (rule 6).
            if !p.in_flight.is_empty() {
                return None;
            }
            match self.identity {
                Identity::Ready(identity) => p.seq.start(identity),
                _ => return None,
            }
        }
        if head.is_retry() {
            // Retries go alone, oldest first, after every in-flight batch answered and after
            // stale metadata was refreshed.
            if !p.in_flight.is_empty() || refreshing {
                return None;
            }
            if let Some(at) = head.retry_at.filter(|&at| at > now) {
                wake.at(at);
                return None;
            }
        } else if !p.in_flight.is_empty() {
            if idempotent && !p.seq.confirmed() {
                return None;
            }
            let oldest = p
                .in_flight
                .iter()
                .filter_map(|b| b.stamp.map(|s| s.ordinal))
                .min()
                .unwrap_or(p.seq.next_ordinal());
            let window = p.seq.next_ordinal().saturating_sub(oldest) as usize;
            if p.in_flight.len() >= max_in_flight || window >= max_in_flight {
                return None;
            }
        }
        let mut batch = p.queue.pop_front()?;
        if batch.stamp.is_none() {
            let stamp = p.seq.stamp(batch.record_count(), idempotent);
            if let Err(error) = batch.set_stamp(stamp) {
                tracing::error!(partition = %p.tp, %error, "cannot stamp a batch");
                p.seq.needs_reset = idempotent;
                batch.fail(ProduceError::Fatal(error), |f| {
                    self.ledger.finished(f, false)
                });
                return None;
            }
            // The stamp reaches the outbox before the batch leaves: after a crash the batch is
            // sent again exactly like this, and the broker recognizes it.
            if let Some(journal) = &self.ledger.journal
                && let Some((identity, base)) = stamp.sequence
                && let Some(offsets) = batch.outbox_offsets()
                && let Err(error) = journal.stamp(p.tp.partition, identity, base, &offsets)
            {
                tracing::warn!(partition = %p.tp, %error,
                    "cannot record a batch's producer fields in the outbox; after a crash its records may be sent twice");
            }
        }
        let n = batch.len() as u64;
        if batch.is_retry() {
            Metrics::add(&metrics.retried, n);
            if !idempotent && batch.ambiguous_since_send {
                Metrics::add(&metrics.possible_duplicates, n);
            }
        }
        batch.attempts += 1;
        batch.ambiguous_since_send = false;
        batch.sent_behind = !p.in_flight.is_empty();
        let ordinal = batch.stamp.map_or(0, |s| s.ordinal);
        let records = batch.bytes();
        let deadline = batch.deadline;
        let partition = PartitionBatch {
            partition: p.tp.clone(),
            records,
        };
        p.in_flight.push(batch);
        Some((p.leader, ordinal, partition, deadline))
    }

    fn spawn_produce(&mut self, call: PendingCall, now: Instant) {
        let PendingCall {
            leader,
            keys,
            batches,
            deadline,
            ..
        } = call;
        // An answer that would come after every record's delivery deadline is not waited for.
        let wait = self
            .config
            .request_timeout
            .min(deadline.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let call = ProduceCall {
            acks: self.config.acks,
            timeout: self.config.request_timeout,
            batches,
        };
        tracing::trace!(?leader, batches = keys.len(), "produce request");
        let api = self.api.clone();
        let handle = spawn_started(&mut self.tasks, async move {
            TaskOutput::Produce(tokio::time::timeout(wait, api.produce(call)).await.ok())
        });
        self.task_kinds.insert(
            handle.id(),
            TaskKind::Produce {
                batches: keys,
                leader,
                wait,
            },
        );
    }

    fn on_task(&mut self, joined: Result<(Id, TaskOutput), JoinError>, now: Instant) {
        let (id, output) = match joined {
            Ok((id, output)) => (id, Some(output)),
            Err(e) => {
                tracing::error!(error = %e, "a producer request task failed");
                (e.id(), None)
            }
        };
        let Some(kind) = self.task_kinds.remove(&id) else {
            return;
        };
        match kind {
            TaskKind::Produce {
                batches,
                leader,
                wait,
            } => {
                let outcomes = match output {
                    Some(TaskOutput::Produce(outcomes)) => outcomes,
                    _ => None,
                };
                self.on_produced(batches, outcomes, leader, wait, now);
            }
            TaskKind::Metadata(index) => {
                let result = match output {
                    Some(TaskOutput::Metadata(result)) => result,
                    _ => Err(no_answer("metadata", self.config.request_timeout)),
                };
                self.on_metadata(index, result, now);
            }
            TaskKind::ProducerId => {
                let result = match output {
                    Some(TaskOutput::ProducerId(result)) => result,
                    _ => Err(no_answer("init_producer_id", self.config.request_timeout)),
                };
                self.on_producer_id(result, now);
            }
        }
    }

    fn on_produced(
        &mut self,
        keys: Vec<(usize, i32, u64)>,
        outcomes: Option<Vec<(TopicPartition, Result<ProduceAck, ApiError>)>>,
        leader: Option<i32>,
        wait: Duration,
        now: Instant,
    ) {
        let mut outcomes: Vec<Option<(TopicPartition, Result<ProduceAck, ApiError>)>> =
            outcomes.map_or_else(Vec::new, |o| o.into_iter().map(Some).collect());
        let unanswered = outcomes.is_empty();
        for (n, (t, i, ordinal)) in keys.into_iter().enumerate() {
            let Some(p) = self
                .topics
                .get_mut(t)
                .and_then(|t| t.partitions.get_mut(i as usize))
            else {
                continue;
            };
            let Some(position) = p
                .in_flight
                .iter()
                .position(|b| b.stamp.is_some_and(|s| s.ordinal == ordinal))
            else {
                tracing::error!(partition = %p.tp, ordinal, "answer for a batch not in flight");
                continue;
            };
            let batch = p.in_flight.swap_remove(position);
            let matches =
                |o: &Option<(TopicPartition, _)>| o.as_ref().is_some_and(|(tp, _)| *tp == p.tp);
            let slot = if outcomes.get(n).is_some_and(matches) {
                Some(n)
            } else {
                outcomes.iter().position(matches)
            };
            let result = match slot.and_then(|s| outcomes[s].take()) {
                Some((_, result)) => result,
                None => Err(ApiError::NoAnswer {
                    broker: leader
                        .map_or_else(|| "unknown leader".to_owned(), |l| format!("node {l}")),
                    reason: if unanswered {
                        format!("no answer within {wait:?}")
                    } else {
                        "the answer has no outcome for this partition".to_owned()
                    },
                }),
            };
            match result {
                Ok(ack) => self.acknowledge(
                    t,
                    i as usize,
                    batch,
                    ack.base_offset,
                    ack.log_append_time_ms,
                ),
                Err(e)
                    if self.config.idempotence
                        && e.code() == Some(ErrorCode::DuplicateSequenceNumber) =>
                {
                    // Already written; Kafka brokers do not say where.
                    self.acknowledge(t, i as usize, batch, -1, -1);
                }
                Err(e) => self.on_failure(t, i as usize, batch, e, now),
            }
        }
    }

    fn acknowledge(
        &mut self,
        t: usize,
        i: usize,
        batch: Batch,
        base_offset: i64,
        append_time: i64,
    ) {
        let p = &mut self.topics[t].partitions[i];
        p.seq.acknowledged();
        p.unavailable_until = None;
        batch.acknowledge(base_offset, append_time, |f| self.ledger.finished(f, true));
    }

    fn on_failure(&mut self, t: usize, i: usize, mut batch: Batch, error: ApiError, now: Instant) {
        let idempotent = self.config.idempotence;
        if error.may_have_been_appended() {
            batch.may_have_been_appended = true;
            batch.ambiguous_since_stamp = true;
            batch.ambiguous_since_send = true;
        }
        let verdict = classify(&error, idempotent);
        let topic = &mut self.topics[t];
        let p = &mut topic.partitions[i];
        batch.last_error = Some(error.clone());
        match verdict {
            Verdict::Sequence => {
                if !batch.sent_behind && !p.seq.needs_reset {
                    tracing::warn!(partition = %p.tp, %error, "sequence error not explained by an earlier batch");
                    p.seq.needs_reset = true;
                } else {
                    tracing::debug!(partition = %p.tp, %error, "sequence error behind an earlier batch; retrying");
                }
                batch.retry_at = Some(now);
                p.requeue(batch);
            }
            Verdict::Retry { refresh } => {
                if refresh {
                    topic.refresh_wanted = true;
                }
                batch.failures += 1;
                let first = *batch.first_failure.get_or_insert(now);
                let delay = self.config.retry_backoff.delay_with_jitter(
                    batch.failures,
                    now.saturating_duration_since(first),
                    self.rng.f64(),
                );
                let p = &mut topic.partitions[i];
                if matches!(error, ApiError::NotSent { .. } | ApiError::NoAnswer { .. })
                    || error.code() == Some(ErrorCode::NotLeaderOrFollower)
                    || error.code() == Some(ErrorCode::LeaderNotAvailable)
                {
                    let until = now + delay.unwrap_or(self.config.retry_backoff.max_interval);
                    p.unavailable_until = Some(until);
                    if topic.sticky == Some(i as i32) {
                        topic.sticky = None;
                        topic.sticky_previous = Some(i as i32);
                    }
                }
                let p = &mut topic.partitions[i];
                match delay {
                    Some(delay) => {
                        tracing::debug!(partition = %p.tp, %error, ?delay, attempts = batch.attempts, "retrying batch");
                        batch.retry_at = Some(now + delay);
                        p.requeue(batch);
                    }
                    None => {
                        if idempotent && batch.stamp.is_some() {
                            p.seq.needs_reset = true;
                        }
                        let error = ProduceError::RetriesExhausted {
                            attempts: batch.attempts,
                            last_error: error,
                        };
                        tracing::warn!(partition = %p.tp, records = batch.len(), %error, "batch failed");
                        batch.fail(error, |f| self.ledger.finished(f, false));
                    }
                }
            }
            Verdict::Fatal => {
                if idempotent && batch.stamp.is_some() {
                    // A gap in the sequence: later batches restart under a new id.
                    p.seq.needs_reset = true;
                }
                let error = ProduceError::Fatal(error);
                tracing::warn!(partition = %p.tp, records = batch.len(), %error, "batch failed");
                batch.fail(error, |f| self.ledger.finished(f, false));
            }
        }
    }

    fn on_metadata(&mut self, index: usize, result: Result<TopicInfo, ApiError>, now: Instant) {
        let result = result.and_then(|info| {
            if info.partitions.is_empty() {
                Err(ApiError::broker(ErrorCode::LeaderNotAvailable))
            } else {
                Ok(info)
            }
        });
        let topic = &mut self.topics[index];
        topic.fetching = false;
        match result {
            Ok(info) => {
                let count = info
                    .partitions
                    .iter()
                    .map(|p| p.index.saturating_add(1).max(0) as usize)
                    .max()
                    .unwrap_or(0);
                while topic.partitions.len() < count {
                    let tp = TopicPartition::new(topic.name.clone(), topic.partitions.len() as i32);
                    topic.partitions.push(PartitionState::new(tp));
                }
                for info in &info.partitions {
                    if let Some(p) = usize::try_from(info.index)
                        .ok()
                        .and_then(|i| topic.partitions.get_mut(i))
                    {
                        p.leader = info.leader;
                    }
                }
                if !topic.known {
                    tracing::debug!(topic = %topic.name, partitions = count, "topic metadata");
                }
                topic.known = true;
                topic.fetched_at = Some(now);
                topic.meta_failures = 0;
                topic.meta_retry_at = None;
                topic.meta_error = None;
                let replays = std::mem::take(&mut topic.replays);
                let waiting = std::mem::take(&mut topic.waiting);
                for replay in replays {
                    self.place_replay(index, replay, now);
                }
                for accepted in waiting {
                    self.place(index, accepted, now);
                }
            }
            Err(error) => {
                topic.meta_failures += 1;
                let delay = self
                    .config
                    .retry_backoff
                    .delay_with_jitter(topic.meta_failures, Duration::ZERO, self.rng.f64())
                    .unwrap_or(self.config.retry_backoff.max_interval);
                topic.meta_retry_at = Some(now + delay);
                topic.meta_error = Some(error.clone());
                tracing::debug!(topic = %topic.name, %error, "metadata request failed");
                if !error.is_retriable() && !topic.known {
                    let replays = std::mem::take(&mut topic.replays);
                    let waiting = std::mem::take(&mut topic.waiting);
                    for accepted in replays.into_iter().flat_map(|r| r.records).chain(waiting) {
                        self.fail_accepted(accepted, ProduceError::Fatal(error.clone()));
                    }
                }
            }
        }
    }

    fn on_producer_id(&mut self, result: Result<ProducerIdentity, ApiError>, now: Instant) {
        match result {
            Ok(identity) => {
                tracing::debug!(?identity, "producer id");
                self.identity = Identity::Ready(identity);
                self.identity_failures = 0;
                self.identity_error = None;
            }
            Err(error) => {
                self.identity_failures += 1;
                let delay = self
                    .config
                    .retry_backoff
                    .delay_with_jitter(self.identity_failures, Duration::ZERO, self.rng.f64())
                    .unwrap_or(self.config.retry_backoff.max_interval);
                self.identity = Identity::Missing {
                    retry_at: now + delay,
                };
                tracing::warn!(%error, "cannot get a producer id");
                if !error.is_retriable() {
                    // Retrying cannot help the records waiting for a first sequence number.
                    self.fail_unstamped(ProduceError::Fatal(error.clone()));
                }
                self.identity_error = Some(error);
            }
        }
    }

    /// Fails every batch that has not been given a sequence number yet.
    fn fail_unstamped(&mut self, error: ProduceError) {
        for topic in &mut self.topics {
            for p in &mut topic.partitions {
                if p.seq.identity().is_some() && !p.seq.needs_reset {
                    continue;
                }
                if let Some(open) = p.open.take() {
                    open.fail(p.tp.clone(), error.clone(), |f| {
                        self.ledger.finished(f, false)
                    });
                }
                let mut keep = VecDeque::with_capacity(p.queue.len());
                while let Some(batch) = p.queue.pop_front() {
                    if batch.stamp.is_some() {
                        keep.push_back(batch);
                    } else {
                        batch.fail(error.clone(), |f| self.ledger.finished(f, false));
                    }
                }
                p.queue = keep;
            }
        }
    }
}

fn no_answer(what: &str, wait: Duration) -> ApiError {
    ApiError::NoAnswer {
        broker: "cluster".to_owned(),
        reason: format!("{what} not answered within {wait:?}"),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_kafka() {
        let broker = |code| ApiError::broker(code);
        assert_eq!(
            classify(&broker(ErrorCode::NotLeaderOrFollower), true),
            Verdict::Retry { refresh: true }
        );
        assert_eq!(
            classify(&broker(ErrorCode::NotEnoughReplicas), true),
            Verdict::Retry { refresh: false }
        );
        assert_eq!(
            classify(&broker(ErrorCode::MessageTooLarge), true),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&broker(ErrorCode::CorruptMessage), true),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&broker(ErrorCode::RecordListTooLarge), true),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&broker(ErrorCode::InvalidRecord), true),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&broker(ErrorCode::TopicAuthorizationFailed), true),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&broker(ErrorCode::OutOfOrderSequenceNumber), true),
            Verdict::Sequence
        );
        assert_eq!(
            classify(&broker(ErrorCode::OutOfOrderSequenceNumber), false),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&ApiError::Protocol("x".into()), true),
            Verdict::Fatal
        );
        let lost = ApiError::NoAnswer {
            broker: "b".into(),
            reason: "r".into(),
        };
        assert_eq!(classify(&lost, false), Verdict::Retry { refresh: true });
    }

    #[test]
    fn flush_waits_for_earlier_generations_only() {
        let shared = Arc::new(Shared {
            metrics: Metrics::default(),
            buffer: Semaphore::new(100),
            closed: AtomicBool::new(false),
        });
        let mut ledger = Ledger {
            shared,
            generation: 0,
            incomplete: BTreeMap::new(),
            waiters: Vec::new(),
            journal: None,
        };
        let first = ledger.arrived();
        let (tx, mut rx) = oneshot::channel();
        ledger.flush(tx);
        let later = ledger.arrived();
        ledger.notify();
        assert!(rx.try_recv().is_err());
        ledger.finished(
            &[Finished {
                generation: first,
                buffered: 1,
                outbox: None,
            }],
            true,
        );
        ledger.notify();
        assert!(rx.try_recv().is_ok());
        assert!(!ledger.idle());
        ledger.finished(
            &[Finished {
                generation: later,
                buffered: 1,
                outbox: None,
            }],
            false,
        );
        assert!(ledger.idle());
        let m = ledger.shared.metrics.snapshot();
        assert_eq!((m.acknowledged, m.failed), (1, 1));
    }
}
