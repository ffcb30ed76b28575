//! Redrive: list dead-letter topics, read their records with the [`ForwardFacts`] the consumer
//! put on them, and replay them to their original topic (or another) — each record at most
//! once, with the progress kept durably in the broker.
//!
//! Generic over [`BrokerApi`], so it runs against an embedded broker, a `staunch serve` process
//! or a Kafka cluster. `BrokerApi` cannot list topics: the caller names the dead-letter topics
//! (the `staunch dlq` CLI takes them from the broker's metadata; [`is_dead_letter_topic`] tells
//! the usual names apart).
//!
//! # What a replayed record looks like
//!
//! The same key, value, timestamp and **own** headers as the dead letter (which are those of
//! the source record); every `staunch.dlt.*` and `staunch.retry.*` header removed; one
//! [`REDRIVE_FROM`] header added, `"<dead-letter topic>/<partition>/<offset>"`, naming the dead
//! letter it came from (an older `staunch.redrive.from` is replaced). It goes to the
//! `staunch.dlt.original-topic` of the dead letter, or [`RedriveOptions::to`], in the
//! partition with the source record's index (modulo the destination's partition count), so
//! keyed records stay with their key's partition.
//!
//! # Never the same record twice: the redrive ledger
//!
//! Progress is kept as the committed offsets of a dedicated consumer group,
//! [`redrive_group`]`(dlt)` = `staunch-redrive.<dlt>`, one per dead-letter partition, through
//! [`BrokerApi::commit_offsets`] — durable in the broker, so it survives the process that ran
//! the redrive. Per partition:
//!
//! - the committed **offset** `c`: every dead letter below `c` was redriven; a run starts there;
//! - the **metadata** string ([`RedriveLedger`]) lists redriven offsets at or after `c` — records
//!   a filter let through while an earlier one was left alone — so a later run with other
//!   filters still finds the left-alone records and never the redriven ones;
//! - before each replay an **intent** (the dead letter's offset, the destination partition and
//!   its end offset) is committed; after the destination acknowledged the replay with
//!   `acks=all`, the offset is marked redriven and the intent cleared in one commit. A run that
//!   finds an intent (the previous run died between the two commits) reads the destination
//!   partition from the noted end offset and looks for the [`REDRIVE_FROM`] header: found, the
//!   record counts as redriven; not found, the replay never happened and is done again.
//!
//! So a dead letter is replayed **once**, even across crashes, as long as runs on the same
//! dead-letter topic do not overlap in time (two runs at once may both replay a record). A run
//! reads each partition up to the end offset it saw when it started: dead letters written
//! while it runs (for instance a replayed record that failed again) are left for the next run.
//! The ledger lives in one metadata string of at most 4096 bytes (Kafka's default
//! `offset.metadata.max.bytes`); when filters leave so many gaps that it would not fit, the run
//! stops with [`RedriveError::LedgerFull`] before replaying anything more — redrive the
//! left-alone records (without the filter) to close the gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_core::api::{
    FetchCall, FetchPosition, GroupMembership, OffsetAndMetadata, OffsetSpec, PartitionBatch,
    ProduceCall,
};
use staunch_core::{Acks, ApiError, BatchBuilder, BrokerApi, Offset, TopicPartition};

use crate::handler::ConsumerRecord;
use crate::headers::{ErrorKind, ForwardFacts, is_staunch_header};
use crate::ledger::RetryLedger;

/// The header a replayed record carries: `"<dead-letter topic>/<partition>/<offset>"`.
pub const REDRIVE_FROM: &str = "staunch.redrive.from";

/// The longest ledger string committed (Kafka's default `offset.metadata.max.bytes`).
pub const MAX_LEDGER_BYTES: usize = 4096;

const TAG: &str = "staunch-redrive/1";
const FETCH_BYTES: i32 = 1 << 20;

/// The consumer group whose committed offsets hold the redrive progress of `dead_letter_topic`.
pub fn redrive_group(dead_letter_topic: &str) -> String {
    format!("staunch-redrive.{dead_letter_topic}")
}

/// Whether `topic` is named like a dead-letter topic: spring's `<topic>.DLT` or RocketMQ's
/// `%DLQ%<group>`.
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(".DLT") || topic.starts_with("%DLQ%")
}

/// Why a listing, read or redrive failed. Nothing that was committed before is undone; a
/// redrive that failed can simply be run again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedriveError {
    /// A broker call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        source: ApiError,
    },
    /// Fetched bytes did not decode.
    #[error("reading {partition}: {reason}")]
    Corrupt {
        /// The partition read.
        partition: String,
        /// What was wrong.
        reason: String,
    },
    /// The redrive ledger of a partition would exceed [`MAX_LEDGER_BYTES`].
    #[error(
        "the redrive ledger of {partition} is full: too many records left alone between redriven ones; redrive them (without the filter) first"
    )]
    LedgerFull {
        /// The dead-letter partition.
        partition: String,
    },
    /// The options cannot work (e.g. a rate that is not positive).
    #[error("invalid redrive options: {0}")]
    Invalid(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(ApiError) -> RedriveError {
    let what = what.into();
    move |source| RedriveError::Api { what, source }
}

/// A dead letter and the facts decoded from its `staunch.dlt.*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as stored in the dead-letter topic.
    pub record: ConsumerRecord,
    /// Its forward facts; `None` when the headers are missing or garbled (a record another
    /// tool wrote).
    pub facts: Option<ForwardFacts>,
}

impl DeadLetter {
    fn new(record: ConsumerRecord) -> Self {
        let facts = record.forward_facts();
        DeadLetter { record, facts }
    }

    /// When it was dead-lettered: the last failure time, else (no facts) its timestamp.
    pub fn dead_lettered_ms(&self) -> i64 {
        self.facts
            .as_ref()
            .map_or(self.record.timestamp, |f| f.last_failure_ms)
    }
}

/// One partition of a dead-letter topic in a [`DeadLetterTopicSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPartitionSummary {
    /// The partition index.
    pub partition: i32,
    /// Its first offset.
    pub earliest: Offset,
    /// Its end offset (the high watermark).
    pub latest: Offset,
    /// Records not yet redriven, by the redrive ledger.
    pub pending: i64,
}

/// A dead-letter topic's size, age and redrive state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTopicSummary {
    /// The topic.
    pub topic: String,
    /// Its partitions, by index.
    pub partitions: Vec<DeadLetterPartitionSummary>,
    /// Records in it: the sum of latest − earliest.
    pub records: i64,
    /// Records not yet redriven.
    pub pending: i64,
    /// When the oldest record (the first of each partition) was dead-lettered, ms since the
    /// epoch ([`DeadLetter::dead_lettered_ms`]); `None` when empty.
    pub oldest_ms: Option<i64>,
    /// When the newest record (the last of each partition) was dead-lettered.
    pub newest_ms: Option<i64>,
}

/// Summarises each of `topics` (names the caller knows, e.g. from metadata filtered with
/// [`is_dead_letter_topic`]): record counts, the age of the first and last records, and how
/// many are not yet redriven. Reads only; commits nothing. Note that
/// [`BrokerApi::topic`] creates a missing topic on a cluster that auto-creates topics.
pub async fn list_dead_letter_topics<B: BrokerApi>(
    api: &B,
    topics: &[String],
) -> Result<Vec<DeadLetterTopicSummary>, RedriveError> {
    let mut out = Vec::new();
    for topic in topics {
        out.push(summarise(api, topic).await?);
    }
    Ok(out)
}

async fn summarise<B: BrokerApi>(
    api: &B,
    topic: &str,
) -> Result<DeadLetterTopicSummary, RedriveError> {
    let parts = partitions(api, topic).await?;
    let bounds = bounds(api, topic, &parts).await?;
    let ledgers = load_ledgers(api, topic, &parts).await?;
    let mut summary = DeadLetterTopicSummary {
        topic: topic.to_owned(),
        partitions: Vec::new(),
        records: 0,
        pending: 0,
        oldest_ms: None,
        newest_ms: None,
    };
    for ((&p, (earliest, latest)), ledger) in parts.iter().zip(bounds).zip(ledgers) {
        let tp = TopicPartition::new(topic, p);
        let pending = ledger.pending(earliest, latest);
        if latest > earliest {
            let first = read_range(api, &tp, earliest, earliest + 1, 1).await?;
            let last = read_range(api, &tp, latest - 1, latest, 1).await?;
            for (d, newest) in first
                .iter()
                .map(|d| (d, false))
                .chain(last.iter().map(|d| (d, true)))
            {
                let t = d.dead_lettered_ms();
                let slot = if newest {
                    &mut summary.newest_ms
                } else {
                    &mut summary.oldest_ms
                };
                *slot = Some(match (*slot, newest) {
                    (None, _) => t,
                    (Some(s), true) => s.max(t),
                    (Some(s), false) => s.min(t),
                });
            }
        }
        summary.records += latest - earliest;
        summary.pending += pending;
        summary.partitions.push(DeadLetterPartitionSummary {
            partition: p,
            earliest,
            latest,
            pending,
        });
    }
    Ok(summary)
}

/// Up to `limit` dead letters of `topic`, from the first offset of each partition in turn
/// (partition 0 first), with their decoded facts. Reads only; commits nothing.
pub async fn read_dead_letters<B: BrokerApi>(
    api: &B,
    topic: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, RedriveError> {
    let parts = partitions(api, topic).await?;
    let bounds = bounds(api, topic, &parts).await?;
    let mut out = Vec::new();
    for (&p, (earliest, latest)) in parts.iter().zip(bounds) {
        if out.len() >= limit {
            break;
        }
        let tp = TopicPartition::new(topic, p);
        out.extend(read_range(api, &tp, earliest, latest, limit - out.len()).await?);
    }
    Ok(out)
}

/// What [`redrive`] replays and how.
#[derive(Debug, Clone, PartialEq)]
pub struct RedriveOptions {
    /// The dead-letter topic to replay.
    pub dead_letter_topic: String,
    /// Replay here instead of each record's `staunch.dlt.original-topic`. Needed for dead
    /// letters without Staunch's headers, which are otherwise left alone.
    pub to: Option<String>,
    /// Only records dead-lettered ([`DeadLetter::dead_lettered_ms`]) at or after this time
    /// (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only records dead-lettered before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only records whose last failure was of this kind.
    pub error_kind: Option<ErrorKind>,
    /// Only records whose error type (`staunch.dlt.error-type`) is this.
    pub error_type: Option<String>,
    /// Only records with exactly this key.
    pub key: Option<Bytes>,
    /// At most this many records per second (`None`: as fast as the broker acknowledges).
    pub rate: Option<f64>,
    /// Report what would be replayed; produce and commit nothing.
    pub dry_run: bool,
    /// How long the broker may wait for replicas on each produce.
    pub produce_timeout: Duration,
}

impl RedriveOptions {
    /// Every record of `dead_letter_topic` to its original topic, no rate limit, for real.
    pub fn new(dead_letter_topic: impl Into<String>) -> Self {
        RedriveOptions {
            dead_letter_topic: dead_letter_topic.into(),
            to: None,
            since_ms: None,
            until_ms: None,
            error_kind: None,
            error_type: None,
            key: None,
            rate: None,
            dry_run: false,
            produce_timeout: Duration::from_secs(30),
        }
    }

    fn passes(&self, d: &DeadLetter) -> bool {
        let t = d.dead_lettered_ms();
        if self.since_ms.is_some_and(|s| t < s) || self.until_ms.is_some_and(|u| t >= u) {
            return false;
        }
        if let Some(kind) = self.error_kind
            && d.facts.as_ref().is_none_or(|f| f.error_kind != kind)
        {
            return false;
        }
        if let Some(ty) = &self.error_type
            && d.facts.as_ref().is_none_or(|f| &f.error_type != ty)
        {
            return false;
        }
        if let Some(key) = &self.key
            && d.record.key.as_ref() != Some(key)
        {
            return false;
        }
        true
    }
}

/// What a [`redrive`] run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Records read that were not redriven before and passed the filters.
    pub matched: u64,
    /// Records replayed and acknowledged, and marked redriven in the ledger; 0 in a dry run.
    /// The redrive's "redriven" counter: a consumer does not count replays, the run does.
    pub redriven: u64,
    /// [`redriven`](Self::redriven) by destination topic (the original topic, or
    /// [`RedriveOptions::to`]); empty in a dry run.
    pub redriven_to: BTreeMap<String, u64>,
    /// Records left alone by the filters (a later run may still replay them).
    pub skipped_by_filter: u64,
    /// Records an earlier run had already replayed (including one whose replay a crashed run
    /// left unconfirmed and this run found in the destination).
    pub already_redriven: u64,
    /// Matching records left alone because they name no original topic and no
    /// [`RedriveOptions::to`] was given.
    pub no_destination: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Where a running [`redrive_with_progress`] is, after each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveProgress<'a> {
    /// The counts so far.
    pub report: &'a RedriveReport,
    /// Records read so far.
    pub read: u64,
    /// Records the run will read in all (from the ledger's start to the end offsets seen at
    /// the start).
    pub total: u64,
}

/// Replays the dead letters of `options.dead_letter_topic` that pass the filters and were not
/// redriven before, one at a time, each produced with `acks=all` and waited for, then marked
/// redriven in the broker (see the [module docs](self)): when this returns `Ok`, every record
/// counted in [`RedriveReport::redriven`] is acknowledged in its destination and durably
/// marked, so no later run replays it. On `Err`, the records replayed before the error are
/// marked as well; run again to continue.
pub async fn redrive<B: BrokerApi>(
    api: &B,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    redrive_with_progress(api, options, |_| {}).await
}

/// [`redrive`], calling `progress` after each record read.
pub async fn redrive_with_progress<B: BrokerApi>(
    api: &B,
    options: &RedriveOptions,
    mut progress: impl FnMut(RedriveProgress<'_>),
) -> Result<RedriveReport, RedriveError> {
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(RedriveError::Invalid("the rate must be positive".into()));
    }
    let dlt = options.dead_letter_topic.as_str();
    let group = redrive_group(dlt);
    let parts = partitions(api, dlt).await?;
    let bounds = bounds(api, dlt, &parts).await?;
    let mut ledgers = load_ledgers(api, dlt, &parts).await?;
    let mut report = RedriveReport {
        dry_run: options.dry_run,
        ..RedriveReport::default()
    };
    let total: u64 = bounds
        .iter()
        .zip(&ledgers)
        .map(|(&(e, l), ledger)| u64::try_from(l - ledger.next.max(e)).unwrap_or(0))
        .sum();
    let mut read = 0u64;
    let mut pacer = Pacer::new(options.rate);
    let mut destinations = std::collections::HashMap::<String, i32>::new();
    for ((&p, (earliest, latest)), ledger) in parts.iter().zip(bounds).zip(ledgers.iter_mut()) {
        let tp = TopicPartition::new(dlt, p);
        if !options.dry_run {
            resolve_intent(api, &group, &tp, ledger).await?;
        }
        let start = ledger.next.max(earliest);
        report.already_redriven += u64::try_from(ledger.next.min(latest) - earliest).unwrap_or(0);
        let mut offset = start;
        while offset < latest {
            let chunk = read_range(api, &tp, offset, latest, 500).await?;
            let Some(last) = chunk.last() else {
                break;
            };
            offset = last.record.offset + 1;
            for d in chunk {
                read += 1;
                let at = d.record.offset;
                if ledger.is_redriven(at) {
                    report.already_redriven += 1;
                } else if !options.passes(&d) {
                    report.skipped_by_filter += 1;
                } else if let Some(to) = options
                    .to
                    .clone()
                    .or_else(|| d.facts.as_ref().map(|f| f.original_topic.clone()))
                {
                    report.matched += 1;
                    if !options.dry_run {
                        pacer.wait().await;
                        replay(
                            api,
                            options,
                            &group,
                            &tp,
                            ledger,
                            &d,
                            &to,
                            &mut destinations,
                        )
                        .await?;
                        report.redriven += 1;
                        *report.redriven_to.entry(to).or_default() += 1;
                    }
                } else {
                    report.no_destination += 1;
                }
                progress(RedriveProgress {
                    report: &report,
                    read,
                    total,
                });
            }
        }
    }
    Ok(report)
}

/// Produces one dead letter to `to` and records it in the ledger: intent, produce, done.
#[allow(clippy::too_many_arguments)]
async fn replay<B: BrokerApi>(
    api: &B,
    options: &RedriveOptions,
    group: &str,
    tp: &TopicPartition,
    ledger: &mut RedriveLedger,
    d: &DeadLetter,
    to: &str,
    destinations: &mut std::collections::HashMap<String, i32>,
) -> Result<(), RedriveError> {
    let count = match destinations.get(to) {
        Some(&n) => n,
        None => {
            let info = api
                .topic(to)
                .await
                .map_err(api_err(format!("looking up topic {to}")))?;
            let n = i32::try_from(info.partitions.len()).unwrap_or(0);
            if n <= 0 {
                return Err(RedriveError::Invalid(format!(
                    "topic {to} has no partitions"
                )));
            }
            destinations.insert(to.to_owned(), n);
            n
        }
    };
    let index = d
        .facts
        .as_ref()
        .map_or(d.record.partition, |f| f.original_partition);
    let dest = TopicPartition::new(to, index.rem_euclid(count));
    let end = list_one(api, &dest, OffsetSpec::Latest).await?;
    // Intent first: a crash after the produce is then resolved by looking at the destination.
    let mut with_intent = ledger.clone();
    with_intent.done.insert(d.record.offset);
    with_intent.normalise();
    if with_intent.encode().len() + 64 + to.len() > MAX_LEDGER_BYTES {
        return Err(RedriveError::LedgerFull {
            partition: tp.to_string(),
        });
    }
    let mut intent = ledger.clone();
    intent.pending = Some(Pending {
        offset: d.record.offset,
        partition: dest.partition,
        end,
        topic: to.to_owned(),
    });
    commit(api, group, tp, &intent).await?;

    let marker = format!("{}/{}/{}", tp.topic, tp.partition, d.record.offset);
    let headers: Vec<(&[u8], Option<&[u8]>)> = d
        .record
        .headers
        .iter()
        .filter(|(k, _)| !is_staunch_header(k) && k.as_ref() != REDRIVE_FROM.as_bytes())
        .map(|(k, v)| (k.as_ref(), v.as_deref()))
        .chain([(REDRIVE_FROM.as_bytes(), Some(marker.as_bytes()))])
        .collect();
    let mut builder = BatchBuilder::new(d.record.timestamp);
    builder.push(
        d.record.timestamp,
        d.record.key.as_deref(),
        d.record.value.as_deref(),
        headers.iter().copied(),
    );
    let answer = api
        .produce(ProduceCall {
            acks: Acks::All,
            timeout: options.produce_timeout,
            batches: vec![PartitionBatch {
                partition: dest.clone(),
                records: Bytes::from(builder.build()),
            }],
        })
        .await
        .pop();
    match answer {
        Some((_, Ok(_))) => {}
        Some((_, Err(e))) => {
            // The intent stays: the next run checks the destination for this replay.
            *ledger = intent;
            return Err(RedriveError::Api {
                what: format!("replaying {marker} to {dest}"),
                source: e,
            });
        }
        None => {
            *ledger = intent;
            return Err(RedriveError::Api {
                what: format!("replaying {marker} to {dest}"),
                source: ApiError::Protocol("produce answered for no partition".into()),
            });
        }
    }
    commit(api, group, tp, &with_intent).await?;
    *ledger = with_intent;
    Ok(())
}

/// A run that died between intent and done left `ledger.pending`: look for the replay in the
/// destination and settle it.
async fn resolve_intent<B: BrokerApi>(
    api: &B,
    group: &str,
    tp: &TopicPartition,
    ledger: &mut RedriveLedger,
) -> Result<(), RedriveError> {
    let Some(pending) = ledger.pending.take() else {
        return Ok(());
    };
    let dest = TopicPartition::new(pending.topic.clone(), pending.partition);
    let latest = list_one(api, &dest, OffsetSpec::Latest).await?;
    let marker = format!("{}/{}/{}", tp.topic, tp.partition, pending.offset);
    let mut offset = pending.end;
    let mut found = false;
    while offset < latest && !found {
        let chunk = read_range(api, &dest, offset, latest, 500).await?;
        let Some(last) = chunk.last() else {
            break;
        };
        offset = last.record.offset + 1;
        found = chunk.iter().any(|d| {
            d.record.headers.iter().any(|(k, v)| {
                k.as_ref() == REDRIVE_FROM.as_bytes() && v.as_deref() == Some(marker.as_bytes())
            })
        });
    }
    if found {
        ledger.done.insert(pending.offset);
        ledger.normalise();
    }
    commit(api, group, tp, ledger).await
}

async fn commit<B: BrokerApi>(
    api: &B,
    group: &str,
    tp: &TopicPartition,
    ledger: &RedriveLedger,
) -> Result<(), RedriveError> {
    let answer = api
        .commit_offsets(
            &GroupMembership::simple(group),
            vec![(
                tp.clone(),
                OffsetAndMetadata {
                    offset: ledger.next,
                    leader_epoch: None,
                    metadata: ledger.encode(),
                },
            )],
        )
        .await
        .pop();
    match answer {
        Some((_, Ok(()))) => Ok(()),
        Some((_, Err(e))) => Err(RedriveError::Api {
            what: format!("committing the redrive progress of {tp} in group {group}"),
            source: e,
        }),
        None => Err(RedriveError::Api {
            what: format!("committing the redrive progress of {tp}"),
            source: ApiError::Protocol("commit answered for no partition".into()),
        }),
    }
}

/// A replay that was started but not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    /// The dead letter's offset.
    offset: Offset,
    /// The destination partition.
    partition: i32,
    /// The destination's end offset before the produce.
    end: Offset,
    /// The destination topic.
    topic: String,
}

/// The redrive progress of one dead-letter partition, as committed by the redrive group: the
/// committed offset below which everything was redriven, the redriven offsets above it, and a
/// replay in flight.
///
/// Metadata format: `staunch-redrive/1;done=5-7,9;pending=<offset>:<partition>:<end>:<topic>`
/// (both parts optional). An unreadable string reads as "nothing above the committed offset
/// was redriven".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveLedger {
    /// Every dead letter below this offset was redriven.
    pub next: Offset,
    done: BTreeSet<Offset>,
    pending: Option<Pending>,
}

impl RedriveLedger {
    /// Reads a committed offset and its metadata string.
    pub fn decode(next: Offset, metadata: &str) -> Self {
        let mut ledger = RedriveLedger {
            next,
            ..RedriveLedger::default()
        };
        let mut parts = metadata.split(';');
        if parts.next() != Some(TAG) {
            return ledger;
        }
        for part in parts {
            if let Some(ranges) = part.strip_prefix("done=") {
                for range in ranges.split(',').filter(|r| !r.is_empty()) {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                        ledger.done.extend(a.max(next)..=b);
                    }
                }
            } else if let Some(p) = part.strip_prefix("pending=") {
                let fields: Vec<&str> = p.splitn(4, ':').collect();
                if let [o, pa, e, t] = fields.as_slice()
                    && let (Ok(offset), Ok(partition), Ok(end)) = (o.parse(), pa.parse(), e.parse())
                {
                    ledger.pending = Some(Pending {
                        offset,
                        partition,
                        end,
                        topic: (*t).to_owned(),
                    });
                }
            }
        }
        ledger.normalise();
        ledger
    }

    /// The metadata string to commit with [`next`](Self::next).
    pub fn encode(&self) -> String {
        let mut out = String::from(TAG);
        if !self.done.is_empty() {
            out.push_str(";done=");
            let mut ranges: Vec<String> = Vec::new();
            let mut iter = self.done.iter().copied().peekable();
            while let Some(a) = iter.next() {
                let mut b = a;
                while iter.peek() == Some(&(b + 1)) {
                    b += 1;
                    iter.next();
                }
                ranges.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
            }
            out.push_str(&ranges.join(","));
        }
        if let Some(p) = &self.pending {
            out.push_str(&format!(
                ";pending={}:{}:{}:{}",
                p.offset, p.partition, p.end, p.topic
            ));
        }
        out
    }

    /// Whether the dead letter at `offset` was redriven.
    pub fn is_redriven(&self, offset: Offset) -> bool {
        offset < self.next || self.done.contains(&offset)
    }

    /// Records in `[earliest, latest)` not yet redriven.
    pub fn pending(&self, earliest: Offset, latest: Offset) -> i64 {
        let start = self.next.max(earliest);
        let done = self.done.range(start..latest).count();
        (latest - start).max(0) - i64::try_from(done).unwrap_or(0)
    }

    /// Moves `next` over redriven offsets right at it.
    fn normalise(&mut self) {
        while self.done.remove(&self.next) {
            self.next += 1;
        }
        let next = self.next;
        self.done.retain(|&o| o >= next);
    }
}

/// Paces replays to at most `rate` per second.
#[derive(Debug)]
struct Pacer {
    interval: Option<Duration>,
    start: Instant,
    sent: u32,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Pacer {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            start: Instant::now(),
            sent: 0,
        }
    }

    async fn wait(&mut self) {
        if let Some(interval) = self.interval {
            let due = self.start + interval.saturating_mul(self.sent);
            tokio::time::sleep_until(due.into()).await;
        }
        self.sent = self.sent.saturating_add(1);
    }
}

async fn partitions<B: BrokerApi>(api: &B, topic: &str) -> Result<Vec<i32>, RedriveError> {
    let info = api
        .topic(topic)
        .await
        .map_err(api_err(format!("looking up topic {topic}")))?;
    let mut parts: Vec<i32> = info.partitions.iter().map(|p| p.index).collect();
    parts.sort_unstable();
    Ok(parts)
}

async fn list_one<B: BrokerApi>(
    api: &B,
    tp: &TopicPartition,
    spec: OffsetSpec,
) -> Result<Offset, RedriveError> {
    match api.list_offsets(vec![(tp.clone(), spec)]).await.pop() {
        Some((_, Ok(Some(o)))) => Ok(o.offset),
        Some((_, Ok(None))) => Ok(-1),
        Some((_, Err(e))) => Err(RedriveError::Api {
            what: format!("listing the offsets of {tp}"),
            source: e,
        }),
        None => Err(RedriveError::Api {
            what: format!("listing the offsets of {tp}"),
            source: ApiError::Protocol("no answer for the partition".into()),
        }),
    }
}

/// `(earliest, latest)` of each partition.
async fn bounds<B: BrokerApi>(
    api: &B,
    topic: &str,
    parts: &[i32],
) -> Result<Vec<(Offset, Offset)>, RedriveError> {
    let mut out = Vec::new();
    for &p in parts {
        let tp = TopicPartition::new(topic, p);
        let earliest = list_one(api, &tp, OffsetSpec::Earliest).await?;
        let latest = list_one(api, &tp, OffsetSpec::Latest).await?;
        out.push((earliest, latest.max(earliest)));
    }
    Ok(out)
}

async fn load_ledgers<B: BrokerApi>(
    api: &B,
    topic: &str,
    parts: &[i32],
) -> Result<Vec<RedriveLedger>, RedriveError> {
    let group = redrive_group(topic);
    let tps: Vec<TopicPartition> = parts
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect();
    let answers = api.fetch_committed_offsets(&group, tps).await;
    let mut out = Vec::new();
    for (tp, answer) in answers {
        let committed = answer.map_err(api_err(format!(
            "reading the redrive progress of {tp} (group {group})"
        )))?;
        out.push(match committed {
            Some(c) if c.offset >= 0 => RedriveLedger::decode(c.offset, &c.metadata),
            _ => RedriveLedger::default(),
        });
    }
    if out.len() != parts.len() {
        return Err(RedriveError::Api {
            what: format!("reading the redrive progress of {topic}"),
            source: ApiError::Protocol("an answer per partition was missing".into()),
        });
    }
    Ok(out)
}

/// Up to `limit` records of `tp` in `[from, to)`.
async fn read_range<B: BrokerApi>(
    api: &B,
    tp: &TopicPartition,
    from: Offset,
    to: Offset,
    limit: usize,
) -> Result<Vec<DeadLetter>, RedriveError> {
    let mut out = Vec::new();
    let mut offset = from;
    let ledger = RetryLedger::default();
    while offset < to && out.len() < limit {
        let answer = api
            .fetch(FetchCall {
                max_wait: Duration::ZERO,
                min_bytes: 0,
                max_bytes: FETCH_BYTES,
                partitions: vec![FetchPosition {
                    partition: tp.clone(),
                    offset,
                    max_bytes: FETCH_BYTES,
                }],
            })
            .await
            .pop();
        let fetched = match answer {
            Some((_, Ok(f))) => f,
            Some((_, Err(e))) => {
                return Err(RedriveError::Api {
                    what: format!("reading {tp} at {offset}"),
                    source: e,
                });
            }
            None => break,
        };
        let (records, next) = crate::decode::decode(tp, &fetched.records, offset, &ledger)
            .map_err(|reason| RedriveError::Corrupt {
                partition: tp.to_string(),
                reason,
            })?;
        for r in records {
            if r.offset >= to || out.len() >= limit {
                return Ok(out);
            }
            out.push(DeadLetter::new(r));
        }
        match next {
            Some(n) if n > offset => offset = n,
            // Nothing readable at this offset (yet): stop rather than spin.
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_closes_gaps() {
        let mut l = RedriveLedger::decode(3, "staunch-redrive/1;done=5-7,9");
        assert!(l.is_redriven(2) && !l.is_redriven(3) && l.is_redriven(6) && !l.is_redriven(8));
        assert_eq!(l.encode(), "staunch-redrive/1;done=5-7,9");
        assert_eq!(l.pending(0, 12), 12 - 3 - 4);
        l.done.insert(3);
        l.done.insert(4);
        l.normalise();
        assert_eq!(l.next, 8);
        assert_eq!(l.encode(), "staunch-redrive/1;done=9");
        l.pending = Some(Pending {
            offset: 8,
            partition: 1,
            end: 40,
            topic: "a:b".into(),
        });
        let back = RedriveLedger::decode(l.next, &l.encode());
        assert_eq!(back, l);
        assert_eq!(RedriveLedger::decode(4, "garbage").next, 4);
    }

    #[test]
    fn dead_letter_names() {
        assert!(is_dead_letter_topic("orders.DLT"));
        assert!(is_dead_letter_topic("%DLQ%billing"));
        assert!(!is_dead_letter_topic("orders"));
        assert_eq!(redrive_group("orders.DLT"), "staunch-redrive.orders.DLT");
    }
}
