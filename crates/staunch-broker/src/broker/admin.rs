//! Topic admin: cluster metadata, creating and deleting topics, adding partitions, and
//! describing and altering topic configs (within the broker's durability floor).

use std::sync::Arc;

use staunch_core::ErrorCode;

use super::{Broker, blocking};
use crate::topic_config::{ConfigEntry, TopicConfig};
use crate::topics::{Topic, TopicError};
use crate::types::*;

fn topic_error(name: &str, e: TopicError) -> TopicOutcome {
    TopicOutcome {
        name: name.to_owned(),
        error: e.code,
        error_message: Some(e.message),
    }
}

fn topic_ok(name: &str) -> TopicOutcome {
    TopicOutcome {
        name: name.to_owned(),
        error: ErrorCode::None,
        error_message: None,
    }
}

/// A topic asked for, or why there is none: `Some` when auto-creating it was refused with a
/// reason the client should see.
type Found = Result<Arc<Topic>, Option<ErrorCode>>;

impl Broker {
    /// Metadata for `topics` (all topics when `None`). Unknown topics are created when
    /// `allow_auto_create` and the broker's auto-creation are both on.
    pub async fn metadata(
        &self,
        topics: Option<Vec<String>>,
        allow_auto_create: bool,
    ) -> ClusterMetadata {
        let (host, port) = self.advertised();
        let node = self.inner.config.node_id;
        let wanted: Vec<(String, Found)> = match topics {
            None => self
                .inner
                .topics
                .list()
                .into_iter()
                .map(|t| (t.name.clone(), Ok(t)))
                .collect(),
            Some(names) => {
                let mut found = Vec::with_capacity(names.len());
                for name in names {
                    let topic = match self.inner.topics.get(&name) {
                        Some(topic) => Ok(topic),
                        None if allow_auto_create => {
                            self.topic_or_create(&name).await.map_err(|code| {
                                // Over the partition limit is worth telling the client; for
                                // anything else the topic is simply unknown, as before.
                                (code == ErrorCode::PolicyViolation).then_some(code)
                            })
                        }
                        None => Err(None),
                    };
                    found.push((name, topic));
                }
                found
            }
        };
        let topics = wanted
            .into_iter()
            .map(|(name, topic)| match topic {
                Ok(topic) => TopicMetadata {
                    name,
                    id: topic.id,
                    error: if topic.offline.is_some() {
                        ErrorCode::KafkaStorageError
                    } else {
                        ErrorCode::None
                    },
                    partitions: topic
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(index, slot)| {
                            let offline = slot.offline_reason().is_some();
                            PartitionMetadata {
                                index: index as i32,
                                error: if offline {
                                    ErrorCode::KafkaStorageError
                                } else {
                                    ErrorCode::None
                                },
                                leader: node,
                                leader_epoch: 0,
                                replicas: vec![node],
                                isr: if offline { Vec::new() } else { vec![node] },
                                offline_replicas: if offline { vec![node] } else { Vec::new() },
                            }
                        })
                        .collect(),
                },
                Err(refused) => TopicMetadata {
                    error: match crate::topics::validate_topic_name(&name) {
                        Ok(()) => refused.unwrap_or(ErrorCode::UnknownTopicOrPartition),
                        Err(e) => e.code,
                    },
                    name,
                    id: uuid::Uuid::nil(),
                    partitions: Vec::new(),
                },
            })
            .collect();
        ClusterMetadata {
            cluster_id: self.inner.cluster_id.clone(),
            controller_id: node,
            brokers: vec![(node, host, port)],
            topics,
        }
    }

    /// Creates topics. Each is durable when its outcome is `None`.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let broker = self.clone();
        blocking(move || {
            topics
                .into_iter()
                .map(|t| {
                    if t.replication_factor > 1 {
                        return topic_error(
                            &t.name,
                            TopicError {
                                code: ErrorCode::InvalidReplicationFactor,
                                message: format!(
                                    "replication factor {} is larger than the 1 available broker",
                                    t.replication_factor
                                ),
                            },
                        );
                    }
                    let partitions = if t.partitions == -1 {
                        broker.inner.config.default_partitions
                    } else {
                        t.partitions
                    };
                    let config = match TopicConfig::from_pairs(
                        t.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        &broker.inner.config,
                    ) {
                        Ok(config) => config,
                        Err(message) => {
                            return topic_error(
                                &t.name,
                                TopicError {
                                    code: ErrorCode::InvalidConfig,
                                    message,
                                },
                            );
                        }
                    };
                    if let Err(e) = broker.check_durability_floor(&config) {
                        return topic_error(&t.name, e);
                    }
                    match broker
                        .inner
                        .topics
                        .create(&t.name, partitions, config, validate_only)
                    {
                        Ok(_) => topic_ok(&t.name),
                        Err(e) => topic_error(&t.name, e),
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Deletes topics and their data, and every group's committed offsets for them. Durable
    /// when each outcome is `None`.
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let broker = self.clone();
        blocking(move || {
            names
                .into_iter()
                .map(|name| match broker.inner.topics.delete(&name) {
                    Ok(_) => {
                        if let Ok(offsets) = &broker.inner.offsets
                            && let Err(e) = offsets.delete_topic(&name)
                        {
                            tracing::error!(topic = %name, error = %e, "deleting committed offsets of a deleted topic");
                        }
                        topic_ok(&name)
                    }
                    Err(e) => topic_error(&name, e),
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Raises partition counts: `(topic, new total)`.
    pub async fn create_partitions(
        &self,
        changes: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let broker = self.clone();
        blocking(move || {
            changes
                .into_iter()
                .map(|(name, total)| {
                    match broker
                        .inner
                        .topics
                        .add_partitions(&name, total, validate_only)
                    {
                        Ok(()) => topic_ok(&name),
                        Err(e) => topic_error(&name, e),
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// A topic's settings with their effective values (`names` filters; `None` for all).
    pub fn describe_topic_config(
        &self,
        topic: &str,
        names: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>, TopicOutcome> {
        let t = self.inner.topics.get(topic).ok_or_else(|| TopicOutcome {
            name: topic.to_owned(),
            error: ErrorCode::UnknownTopicOrPartition,
            error_message: Some(format!("topic '{topic}' does not exist")),
        })?;
        let mut entries = t.config.describe(&self.inner.config);
        entries.push(ConfigEntry {
            name: RECOVERY_ENTRY.to_owned(),
            value: recovery_summary(&t),
            is_override: false,
        });
        Ok(entries
            .into_iter()
            .filter(|e| names.is_none_or(|n| n.contains(&e.name)))
            .collect())
    }

    /// Replaces a topic's overrides with `entries` (AlterConfigs: unlisted ones return to their
    /// defaults), or, with `incremental`, applies each `(name, op, value)` to the current ones.
    /// Durable when the outcome is `None`.
    pub async fn alter_topic_config(
        &self,
        topic: String,
        entries: Vec<(String, ConfigOp, String)>,
        incremental: bool,
        validate_only: bool,
    ) -> TopicOutcome {
        let broker = self.clone();
        blocking(move || {
            let Some(current) = broker.inner.topics.get(&topic) else {
                return TopicOutcome {
                    error: ErrorCode::UnknownTopicOrPartition,
                    error_message: Some(format!("topic '{topic}' does not exist")),
                    name: topic,
                };
            };
            let mut config = if incremental {
                current.config.clone()
            } else {
                TopicConfig::default()
            };
            for (name, op, value) in &entries {
                let applied = match op {
                    ConfigOp::Set => config.set(name, value),
                    ConfigOp::Delete => config.remove(name),
                };
                if let Err(message) = applied {
                    return TopicOutcome {
                        name: topic,
                        error: ErrorCode::InvalidConfig,
                        error_message: Some(message),
                    };
                }
            }
            if let Err(e) = broker.check_durability_floor(&config) {
                return topic_error(&topic, e);
            }
            match broker
                .inner
                .topics
                .set_config(&topic, config, validate_only)
            {
                Ok(()) => topic_ok(&topic),
                Err(e) => topic_error(&topic, e),
            }
        })
        .await
        .unwrap_or_else(|code| TopicOutcome {
            name: String::new(),
            error: code,
            error_message: None,
        })
    }

    /// Bytes on disk of each open partition of `wanted` topics (all topics if `None`; all of a
    /// topic's partitions if its list is empty), by topic: what Kafka's DescribeLogDirs
    /// reports. Offline partitions and unknown topics are left out.
    pub fn partition_sizes(
        &self,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<(i32, u64)>)> {
        let topics: Vec<(std::sync::Arc<crate::topics::Topic>, Vec<i32>)> = match wanted {
            None => self
                .inner
                .topics
                .list()
                .into_iter()
                .map(|t| (t, Vec::new()))
                .collect(),
            Some(wanted) => wanted
                .into_iter()
                .filter_map(|(name, partitions)| Some((self.inner.topics.get(&name)?, partitions)))
                .collect(),
        };
        topics
            .into_iter()
            .map(|(topic, only)| {
                let sizes = topic
                    .online_partitions()
                    .map(|(index, p)| (index as i32, p.log().size_bytes()))
                    .filter(|(index, _)| only.is_empty() || only.contains(index))
                    .collect();
                (topic.name.clone(), sizes)
            })
            .collect()
    }

    /// POLICY_VIOLATION if `config` would give its topic a flush policy weaker than the
    /// broker's durability floor.
    fn check_durability_floor(&self, config: &TopicConfig) -> Result<(), TopicError> {
        let broker = &self.inner.config;
        let flush = config
            .log_config(broker)
            .map_err(|message| TopicError {
                code: ErrorCode::InvalidConfig,
                message,
            })?
            .flush;
        broker
            .check_durability_floor(&flush)
            .map_err(|message| TopicError {
                code: ErrorCode::PolicyViolation,
                message,
            })
    }

    /// A topic's id and partition count, if it exists.
    pub fn topic_summary(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        let topic = self.inner.topics.get(name)?;
        Some((topic.id, topic.partitions.len() as i32))
    }

    /// The name of the topic with id `id`, if any.
    pub fn topic_name_by_id(&self, id: uuid::Uuid) -> Option<String> {
        self.inner
            .topics
            .list()
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
    }

    /// Names of all topics.
    pub fn topic_names(&self) -> Vec<String> {
        self.inner
            .topics
            .list()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }
}

/// The read-only entry DescribeConfigs (and `staunch topics describe`) shows with what the last
/// start-up's recovery cut from the topic's partitions: torn tails under flush `os` /
/// `interval` (unsynced, so possibly acknowledged), or, under `always`, unacknowledged ones.
pub const RECOVERY_ENTRY: &str = "staunch.recovery.truncated";

/// `none`, or per partition whose recovery cut something: the bytes and records cut and where.
fn recovery_summary(topic: &crate::topics::Topic) -> String {
    let cuts: Vec<String> = topic
        .online_partitions()
        .filter_map(|(index, partition)| {
            let r = partition.log().recovery();
            (r.bytes_truncated > 0).then(|| {
                let at_least = if r.records_truncated_exact {
                    ""
                } else {
                    "at least "
                };
                format!(
                    "partition {index}: {} bytes, {at_least}{} records ({})",
                    r.bytes_truncated,
                    r.records_truncated,
                    r.truncation_reason.as_deref().unwrap_or("torn tail")
                )
            })
        })
        .collect();
    if cuts.is_empty() {
        "none".to_owned()
    } else {
        cuts.join("; ")
    }
}
