//! What the workload was told, and the checks a reopened broker must pass against it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::Broker;
use staunch_core::api::{FetchCall, FetchPosition, OffsetAndMetadata, OffsetSpec};
use staunch_core::batch::batches;
use staunch_core::{Acks, BrokerApi, ErrorCode, PartitionBatch, ProduceCall, TopicPartition};

/// One record's key and value.
pub(crate) type Rec = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A topic the workload created (its creation may or may not have been acknowledged).
#[derive(Debug, Default)]
pub(crate) struct TopicModel {
    /// Partition count asked for.
    pub(crate) partitions: i32,
    /// Its creation was acknowledged.
    pub(crate) created: bool,
    /// A deletion was tried (acknowledged or not).
    pub(crate) delete_tried: bool,
    /// A deletion was acknowledged.
    pub(crate) deleted: bool,
    /// The topic had a retention override after the clock moved on: records below the log
    /// start may be gone legitimately.
    pub(crate) retention_ran: bool,
    /// `retention.ms` as last acknowledged, and values tried since.
    pub(crate) retention: Versions<Option<String>>,
    /// Acknowledged records by partition and offset.
    pub(crate) records: BTreeMap<i32, BTreeMap<i64, Rec>>,
}

/// A value as last acknowledged, and the values tried after it without an answer: after a
/// power cut any of them may be what is stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Versions<T> {
    /// The last acknowledged value (`None`: never acknowledged).
    pub(crate) acked: Option<T>,
    /// Values tried since, not acknowledged.
    pub(crate) tried: Vec<T>,
}

impl<T: PartialEq + Clone> Versions<T> {
    /// Records an attempt; call [`Versions::ack`] if it is acknowledged.
    pub(crate) fn try_value(&mut self, value: T) {
        self.tried.push(value);
    }

    /// The last tried value was acknowledged.
    pub(crate) fn ack(&mut self) {
        self.acked = self.tried.pop();
        self.tried.clear();
    }

    /// Whether `found` may be what is stored.
    pub(crate) fn allows(&self, found: &Option<T>) -> bool {
        match found {
            None => self.acked.is_none(),
            Some(v) => self.acked.as_ref() == Some(v) || self.tried.contains(v),
        }
    }
}

/// An idempotent producer writing to one partition.
#[derive(Debug)]
pub(crate) struct ProducerModel {
    /// Its partition.
    pub(crate) tp: TopicPartition,
    /// Producer id and epoch.
    pub(crate) id: i64,
    /// Producer epoch.
    pub(crate) epoch: i16,
    /// The sequence of the next new batch.
    pub(crate) next_seq: i32,
    /// The last acknowledged batch: its bytes (as sent) and base offset.
    pub(crate) last_acked: Option<(Bytes, i64)>,
    /// A batch sent without an answer: sent again (same sequence) before any new one.
    pub(crate) pending: Option<(Bytes, Vec<Rec>)>,
}

/// Everything acknowledged so far in a seed.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Topics by name (names are never reused).
    pub(crate) topics: BTreeMap<String, TopicModel>,
    /// Committed offsets by (group, topic, partition).
    pub(crate) commits: BTreeMap<(String, String, i32), Versions<(i64, String)>>,
    /// Idempotent producers.
    pub(crate) producers: Vec<ProducerModel>,
    /// The highest high watermark any fetch saw, by partition.
    pub(crate) high_watermarks: BTreeMap<(String, i32), i64>,
    /// Topics created so far, for naming.
    pub(crate) created: usize,
    /// The clock has moved on: records written before may be past a retention limit set at
    /// any later time (the log applies retention at every segment roll, too).
    pub(crate) clock_moved: bool,
    /// Groups that ever committed.
    pub(crate) groups: BTreeSet<String>,
}

impl Model {
    /// Records the acknowledgement of `records` at `base` in `tp`.
    pub(crate) fn ack_records(&mut self, tp: &TopicPartition, base: i64, records: &[Rec]) {
        let Some(topic) = self.topics.get_mut(&tp.topic) else {
            return;
        };
        let partition = topic.records.entry(tp.partition).or_default();
        for (i, rec) in records.iter().enumerate() {
            partition.insert(base + i as i64, rec.clone());
        }
    }

    /// Checks the reopened broker against everything acknowledged.
    pub(crate) async fn check(&mut self, broker: &Broker) -> Result<(), String> {
        let existing: BTreeSet<String> = broker.topic_names().into_iter().collect();
        for (name, topic) in &self.topics {
            let exists = existing.contains(name);
            if topic.deleted && exists {
                return Err(format!(
                    "topic {name} came back after its deletion was acknowledged"
                ));
            }
            if topic.created && !topic.delete_tried && !exists {
                return Err(format!("acknowledged topic {name} is gone"));
            }
            if !exists {
                continue;
            }
            let retention = broker
                .describe_topic_config(name, Some(&["retention.ms".to_owned()]))
                .map_err(|e| format!("describing {name}: {e:?}"))?;
            let stored = retention
                .first()
                .filter(|e| e.is_override)
                .map(|e| e.value.clone());
            if topic.created && !topic.retention.allows(&Some(stored.clone())) {
                return Err(format!(
                    "topic {name} has retention.ms {stored:?}; acknowledged {:?}, tried {:?}",
                    topic.retention.acked, topic.retention.tried
                ));
            }
            let (_, count) = broker
                .topic_summary(name)
                .ok_or_else(|| format!("no summary of {name}"))?;
            for partition in 0..count {
                let tp = TopicPartition::new(name.as_str(), partition);
                let (start, stored) = read_partition(broker, &tp).await?;
                let hw = stored.keys().next_back().map_or(start, |o| o + 1);
                if let Some(seen) = self.high_watermarks.get(&(name.clone(), partition))
                    && hw < *seen
                    && !topic.retention_ran
                {
                    return Err(format!(
                        "{tp:?}: the high watermark moved back from {seen} to {hw}"
                    ));
                }
                let Some(acked) = topic.records.get(&partition) else {
                    continue;
                };
                for (offset, rec) in acked {
                    if *offset < start && topic.retention_ran {
                        continue;
                    }
                    match stored.get(offset) {
                        Some(found) if found == rec => {}
                        Some(found) => {
                            return Err(format!(
                                "{tp:?} offset {offset}: acknowledged {rec:?}, stored {found:?}"
                            ));
                        }
                        None => {
                            return Err(format!(
                                "{tp:?}: acknowledged record at offset {offset} is lost (log {start}..{hw})"
                            ));
                        }
                    }
                }
            }
        }
        for ((group, topic, partition), versions) in &self.commits {
            let t = &self.topics[topic];
            if t.delete_tried || !existing.contains(topic) {
                continue;
            }
            let tp = TopicPartition::new(topic.as_str(), *partition);
            let fetched = BrokerApi::fetch_committed_offsets(broker, group, vec![tp.clone()]).await;
            let found = fetched[0]
                .1
                .as_ref()
                .map_err(|e| format!("fetching {group}'s offset of {tp:?}: {e}"))?
                .as_ref()
                .map(|c: &OffsetAndMetadata| (c.offset, c.metadata.clone()));
            if !versions.allows(&found) {
                return Err(format!(
                    "group {group} {tp:?}: committed {found:?}; acknowledged {:?}, tried {:?}",
                    versions.acked, versions.tried
                ));
            }
        }
        Ok(())
    }

    /// After a restart: each producer's last acknowledged batch, sent again, is answered with
    /// its original offset and stores nothing new; then its unanswered batch is sent again.
    pub(crate) async fn retry_after_restart(&mut self, broker: &Broker) -> Result<(), String> {
        let existing: BTreeSet<String> = broker.topic_names().into_iter().collect();
        for i in 0..self.producers.len() {
            let tp = self.producers[i].tp.clone();
            let topic = &self.topics[&tp.topic];
            if !existing.contains(&tp.topic) || topic.retention_ran || topic.delete_tried {
                continue;
            }
            if let Some((bytes, base)) = self.producers[i].last_acked.clone() {
                let end_before = latest(broker, &tp).await?;
                match produce(broker, &tp, bytes, Acks::All).await {
                    Ok(offset) if offset == base => {}
                    other => {
                        return Err(format!(
                            "{tp:?}: the acknowledged batch at {base} sent again got {other:?}"
                        ));
                    }
                }
                let end_after = latest(broker, &tp).await?;
                if end_after != end_before {
                    return Err(format!(
                        "{tp:?}: the retried batch was stored again ({end_before} -> {end_after})"
                    ));
                }
            }
            if let Some((bytes, recs)) = self.producers[i].pending.clone()
                && let Ok(base) = produce(broker, &tp, bytes.clone(), Acks::All).await
            {
                self.ack_records(&tp, base, &recs);
                let p = &mut self.producers[i];
                p.pending = None;
                p.last_acked = Some((bytes, base));
            }
        }
        Ok(())
    }
}

/// Produces `bytes` to `tp`; the base offset, or the error code.
pub(crate) async fn produce(
    broker: &Broker,
    tp: &TopicPartition,
    bytes: Bytes,
    acks: Acks,
) -> Result<i64, String> {
    let call = ProduceCall {
        acks,
        timeout: Duration::from_secs(10),
        batches: vec![PartitionBatch {
            partition: tp.clone(),
            records: bytes,
        }],
    };
    let mut answer = BrokerApi::produce(broker, call).await;
    match answer.pop() {
        Some((_, Ok(ack))) => Ok(ack.base_offset),
        Some((_, Err(e))) => Err(e.to_string()),
        None => Err("no answer".to_owned()),
    }
}

/// The high watermark of `tp`.
async fn latest(broker: &Broker, tp: &TopicPartition) -> Result<i64, String> {
    let listed = BrokerApi::list_offsets(broker, vec![(tp.clone(), OffsetSpec::Latest)]).await;
    match &listed[0].1 {
        Ok(Some(l)) => Ok(l.offset),
        other => Err(format!("latest offset of {tp:?}: {other:?}")),
    }
}

/// Reads all of `tp` below its high watermark, checking every batch's CRC: the log start and
/// the records by offset.
pub(crate) async fn read_partition(
    broker: &Broker,
    tp: &TopicPartition,
) -> Result<(i64, BTreeMap<i64, Rec>), String> {
    let listed = BrokerApi::list_offsets(broker, vec![(tp.clone(), OffsetSpec::Earliest)]).await;
    let start = match &listed[0].1 {
        Ok(Some(l)) => l.offset,
        other => return Err(format!("earliest offset of {tp:?}: {other:?}")),
    };
    let mut records = BTreeMap::new();
    let mut next = start;
    loop {
        let fetched = BrokerApi::fetch(
            broker,
            FetchCall {
                max_wait: Duration::ZERO,
                min_bytes: 0,
                max_bytes: 1 << 20,
                partitions: vec![FetchPosition {
                    partition: tp.clone(),
                    offset: next,
                    max_bytes: 1 << 20,
                }],
            },
        )
        .await;
        let got = match &fetched[0].1 {
            Ok(got) => got.clone(),
            Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => break,
            Err(e) => return Err(format!("fetching {tp:?} at {next}: {e}")),
        };
        if got.records.is_empty() {
            break;
        }
        let before = next;
        collect(&got.records, &mut records, &mut next).map_err(|e| format!("{tp:?}: {e}"))?;
        if next <= before {
            break;
        }
    }
    Ok((start, records))
}

/// Adds the records of fetched `bytes` to `records` and moves `next` past them; every batch
/// must pass its CRC.
pub(crate) fn collect(
    bytes: &[u8],
    records: &mut BTreeMap<i64, Rec>,
    next: &mut i64,
) -> Result<(), String> {
    for batch in batches(bytes) {
        let batch = batch.map_err(|e| format!("a served batch does not parse: {e}"))?;
        batch
            .validate()
            .map_err(|e| format!("a served batch fails its check: {e}"))?;
        for record in batch.records().map_err(|e| e.to_string())? {
            let record = record.map_err(|e| e.to_string())?;
            if record.offset >= *next {
                records.insert(
                    record.offset,
                    (
                        record.key.map(<[u8]>::to_vec),
                        record.value.map(<[u8]>::to_vec),
                    ),
                );
            }
        }
        *next = (*next).max(batch.last_offset() + 1);
    }
    Ok(())
}
