//! Consumer groups' committed offsets (commit, read, delete) and producer-id allocation.

use staunch_core::ErrorCode;

use super::{Broker, blocking};
use crate::offsets::{CommittedOffset, OffsetStore};

impl Broker {
    /// A producer id never handed out before by this data directory, durably reserved.
    pub async fn init_producer_id(&self) -> Result<i64, ErrorCode> {
        let broker = self.clone();
        blocking(move || broker.inner.producer_ids.next())
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "allocating a producer id");
                ErrorCode::KafkaStorageError
            })
    }

    /// Stores committed offsets for `group`. Durable when it returns `Ok`: the commits survive
    /// a crash. Each entry's error is `None` or why that partition's commit was refused. A
    /// storage error on a commit of many partitions (written in several batches) may leave
    /// the earlier batches' offsets committed; committing them again is harmless.
    pub async fn commit_offsets(
        &self,
        group: &str,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Vec<(String, i32, ErrorCode)> {
        let mut results = Vec::with_capacity(entries.len());
        let mut accepted = Vec::new();
        for (topic, partition, committed) in entries {
            let code = if committed.metadata.len() > self.inner.config.offset_metadata_max_bytes {
                ErrorCode::OffsetMetadataTooLarge
            } else if !self.partition_exists(&topic, partition) {
                ErrorCode::UnknownTopicOrPartition
            } else {
                accepted.push((topic.clone(), partition, Some(committed)));
                ErrorCode::None
            };
            results.push((topic, partition, code));
        }
        if !accepted.is_empty() {
            let broker = self.clone();
            let group = group.to_owned();
            let written = blocking(move || {
                let exists = |topic: &str, partition| broker.partition_exists(topic, partition);
                broker
                    .offsets()?
                    .write_where(&group, accepted, exists)
                    .map_err(|e| {
                        tracing::error!(error = %e, "storing committed offsets");
                        ErrorCode::KafkaStorageError
                    })
            })
            .await;
            let failed = match written {
                Ok(Ok(gone)) => {
                    // Deleted while the commit was on its way.
                    for result in results.iter_mut() {
                        if gone.iter().any(|(t, p)| *t == result.0 && *p == result.1) {
                            result.2 = ErrorCode::UnknownTopicOrPartition;
                        }
                    }
                    None
                }
                Ok(Err(code)) => Some(code),
                Err(code) => Some(code),
            };
            if let Some(code) = failed {
                for result in results.iter_mut().filter(|r| r.2 == ErrorCode::None) {
                    result.2 = code;
                }
            }
        }
        results
    }

    /// The committed offset of one partition for `group` (`None`: nothing committed), or
    /// KAFKA_STORAGE_ERROR if the group's offsets are offline (damaged on disk) — never
    /// `None` for offsets that may exist.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CommittedOffset>, ErrorCode> {
        self.offsets()?
            .get(group, topic, partition)
            .map_err(offline_group)
    }

    /// Every committed offset of `group`, or KAFKA_STORAGE_ERROR as
    /// [`committed_offset`](Self::committed_offset).
    pub fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(String, i32, CommittedOffset)>, ErrorCode> {
        self.offsets()?.all(group).map_err(offline_group)
    }

    /// Groups that have committed offsets (none while the offsets are offline).
    pub fn groups_with_offsets(&self) -> Vec<String> {
        self.offsets().map(OffsetStore::groups).unwrap_or_default()
    }

    /// Sets the broker's gauges ([`crate::metrics`]): partitions online and offline, and each
    /// group's lag per topic (high watermark minus committed offset, summed over the
    /// partitions it committed; a partition that is gone or offline adds nothing). Reads only
    /// memory: an exporter calls it when it is scraped. A group or topic whose offsets are
    /// deleted has its lag set to 0 (the facade cannot remove a series).
    pub fn refresh_metrics(&self) {
        use crate::metrics::{CONSUMER_GROUP_LAG, PARTITIONS_OFFLINE, PARTITIONS_ONLINE};
        let (mut online, mut offline) = (0u64, 0u64);
        for topic in self.inner.topics.list() {
            if topic.offline.is_some() {
                offline += 1;
                continue;
            }
            for slot in &topic.partitions {
                match slot.online() {
                    Some(_) => online += 1,
                    None => offline += 1,
                }
            }
        }
        metrics::gauge!(PARTITIONS_ONLINE).set(online as f64);
        metrics::gauge!(PARTITIONS_OFFLINE).set(offline as f64);
        let Ok(store) = &self.inner.offsets else {
            return;
        };
        let mut reported = std::collections::BTreeSet::new();
        for group in store.groups() {
            let Ok(committed) = store.all(&group) else {
                continue;
            };
            let mut by_topic: std::collections::BTreeMap<String, i64> = Default::default();
            for (topic, partition, offset) in committed {
                let lag = self
                    .partition(&topic, partition)
                    .map(|p| (p.high_watermark() - offset.offset).max(0))
                    .unwrap_or(0);
                *by_topic.entry(topic).or_default() += lag;
            }
            for (topic, lag) in by_topic {
                metrics::gauge!(CONSUMER_GROUP_LAG, "group" => group.clone(), "topic" => topic.clone())
                    .set(lag as f64);
                reported.insert((group.clone(), topic));
            }
        }
        let mut last = self
            .inner
            .reported_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (group, topic) in last.difference(&reported) {
            metrics::gauge!(CONSUMER_GROUP_LAG, "group" => group.clone(), "topic" => topic.clone())
                .set(0.0);
        }
        *last = reported;
    }

    /// Deletes a group's committed offsets. Durable when it returns `Ok`.
    pub async fn delete_group_offsets(&self, group: &str) -> Result<(), ErrorCode> {
        let broker = self.clone();
        let group = group.to_owned();
        blocking(move || {
            broker.offsets()?.delete_group(&group).map_err(|e| {
                tracing::error!(error = %e, "deleting committed offsets");
                ErrorCode::KafkaStorageError
            })
        })
        .await?
    }
}

/// KAFKA_STORAGE_ERROR for a group whose offsets are offline, logged with the reason.
fn offline_group(reason: String) -> ErrorCode {
    tracing::warn!(%reason, "offset fetch of an offline group");
    ErrorCode::KafkaStorageError
}
