//! Consumer groups' committed offsets (commit, read, delete) and producer-id allocation.

use staunch_core::ErrorCode;

use super::{Broker, blocking};
use crate::offsets::CommittedOffset;

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
            } else if self.partition(&topic, partition).is_none() {
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
                let exists = |topic: &str, partition| broker.partition(topic, partition).is_some();
                broker.inner.offsets.write_where(&group, accepted, exists)
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
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "storing committed offsets");
                    Some(ErrorCode::KafkaStorageError)
                }
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

    /// The committed offset of one partition for `group`.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.inner.offsets.get(group, topic, partition)
    }

    /// Every committed offset of `group`.
    pub fn committed_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.inner.offsets.all(group)
    }

    /// Groups that have committed offsets.
    pub fn groups_with_offsets(&self) -> Vec<String> {
        self.inner.offsets.groups()
    }

    /// Deletes a group's committed offsets. Durable when it returns `Ok`.
    pub async fn delete_group_offsets(&self, group: &str) -> Result<(), ErrorCode> {
        let broker = self.clone();
        let group = group.to_owned();
        blocking(move || broker.inner.offsets.delete_group(&group))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "deleting committed offsets");
                ErrorCode::KafkaStorageError
            })
    }
}
