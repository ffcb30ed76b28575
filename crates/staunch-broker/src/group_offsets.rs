//! Committed offsets as a group member commits and fetches them (Kafka's OffsetCommit and
//! OffsetFetch), shared by the network handlers of `staunch-server` and the in-process
//! `BrokerApi`, so both check members and generations and store the same way.

use staunch_core::api::{GroupMembership, OffsetAndMetadata};
use staunch_core::{ErrorCode, TopicPartition};

use crate::{Broker, CommittedOffset};

/// A topic's partitions with their committed offsets (`None`: nothing committed).
pub(crate) type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

impl Broker {
    /// OffsetCommit: checks `member` against its group as Kafka does (a commit with
    /// [`GroupMembership::simple`] is accepted only while the group has no members; a
    /// member's commit needs its current generation), then stores every offset with its
    /// metadata string verbatim. Durable when it returns: each entry's code is `None` only
    /// once the commit is on disk. One code per entry, in order.
    pub async fn commit_group_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(String, i32, ErrorCode)> {
        let validation = self.groups().validate_offset_commit(
            &member.group_id,
            member.generation_id,
            &member.member_id,
            member.group_instance_id.as_deref(),
        );
        if let Err(code) = validation {
            return offsets
                .into_iter()
                .map(|(tp, _)| (tp.topic, tp.partition, code))
                .collect();
        }
        let now = self.now_ms();
        let entries = offsets
            .into_iter()
            .map(|(tp, committed)| {
                (
                    tp.topic,
                    tp.partition,
                    CommittedOffset {
                        offset: committed.offset,
                        leader_epoch: committed.leader_epoch.unwrap_or(-1),
                        metadata: committed.metadata,
                        commit_time_ms: now,
                    },
                )
            })
            .collect();
        self.commit_offsets(&member.group_id, entries).await
    }

    /// OffsetFetch for one group: the committed offsets of the listed partitions, by topic in
    /// the order asked (`None` where nothing is committed), or with `wanted` `None` every
    /// committed partition of the group. KAFKA_STORAGE_ERROR if the group's offsets are
    /// offline (damaged on disk).
    pub fn group_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<TopicOffsets>, ErrorCode> {
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| Ok((p, self.committed_offset(group, &topic, p)?)))
                        .collect::<Result<_, ErrorCode>>()?;
                    Ok((topic, found))
                })
                .collect(),
            None => {
                let mut by_topic: Vec<TopicOffsets> = Vec::new();
                for (topic, partition, committed) in self.committed_offsets(group)? {
                    match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                        Some((_, list)) => list.push((partition, Some(committed))),
                        None => by_topic.push((topic, vec![(partition, Some(committed))])),
                    }
                }
                Ok(by_topic)
            }
        }
    }
}
