//! The "consumer" protocol type's payloads inside the group protocol: the subscription a member
//! sends in JoinGroup's protocol metadata, and the assignment the leader hands out in SyncGroup.
//!
//! The broker treats both as opaque bytes; consumers agree on this encoding (Kafka's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`: a big-endian `int16` version,
//! then the message at that version). Encoding uses the newest version this crate knows (3),
//! which every Kafka client decodes — newer versions only append fields. Decoding follows the
//! Java client: a version newer than known is read as the newest known one (its extra fields
//! ignored), and an empty assignment means no partitions. Unlike it, a partition whose topic
//! name is longer than Kafka's 249 characters is refused (see `flatten`).
//!
//! ```
//! use staunch_core::TopicPartition;
//! use staunch_protocol::consumer_protocol::{Assignment, decode_assignment, encode_assignment};
//!
//! let assignment = Assignment {
//!     partitions: vec![TopicPartition::new("orders", 0), TopicPartition::new("orders", 2)],
//!     user_data: None,
//! };
//! let bytes = encode_assignment(&assignment).unwrap();
//! assert_eq!(decode_assignment(&bytes).unwrap(), assignment);
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use kafka_protocol::messages::consumer_protocol_subscription::{
    ConsumerProtocolSubscription, TopicPartition as OwnedTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use staunch_core::TopicPartition;

/// The protocol type consumers join groups with.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A consumer's subscription, sent as its metadata for every assignor it supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The topics the member wants to consume.
    pub topics: Vec<String>,
    /// Assignor-specific data, passed to the leader unchanged.
    pub user_data: Option<Bytes>,
    /// The partitions the member owns now (v1+, for cooperative rebalancing).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which it got them, or -1 (v2+).
    pub generation_id: i32,
    /// The member's rack, for rack-aware assignment (v3+).
    pub rack_id: Option<String>,
}

/// The partitions the leader assigned to one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions, in the order the leader listed them.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific data, passed to the member unchanged.
    pub user_data: Option<Bytes>,
}

/// Bytes that are not a valid subscription or assignment, or values that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consumer protocol: {0}")]
pub struct ConsumerProtocolError(pub String);

/// Encodes a subscription (version 3) for [`JoinGroup`'s protocol metadata].
///
/// [`JoinGroup`'s protocol metadata]: staunch_core::api::GroupProtocol::metadata
pub fn encode_subscription(subscription: &Subscription) -> Result<Bytes, ConsumerProtocolError> {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(subscription.topics.iter().map(|t| text(t)).collect())
        .with_user_data(subscription.user_data.clone())
        .with_owned_partitions(grouped(
            &subscription.owned_partitions,
            |topic, partitions| {
                OwnedTopic::default()
                    .with_topic(topic)
                    .with_partitions(partitions)
            },
        ))
        .with_generation_id(subscription.generation_id)
        .with_rack_id(subscription.rack_id.as_deref().map(text));
    encode_versioned(&message)
}

/// Decodes a member's subscription from its protocol metadata.
pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, ConsumerProtocolError> {
    let message: ConsumerProtocolSubscription = decode_versioned(bytes, "subscription")?;
    Ok(Subscription {
        topics: message
            .topics
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        user_data: message.user_data,
        owned_partitions: flatten(
            &message.owned_partitions,
            |t| (&t.topic, &t.partitions),
            "subscription",
        )?,
        generation_id: message.generation_id,
        rack_id: message.rack_id.map(|r| r.as_str().to_owned()),
    })
}

/// Encodes an assignment (version 3) for [`SyncGroup`](staunch_core::api::MemberAssignment).
pub fn encode_assignment(assignment: &Assignment) -> Result<Bytes, ConsumerProtocolError> {
    let message = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(grouped(&assignment.partitions, |topic, partitions| {
            AssignedTopic::default()
                .with_topic(topic)
                .with_partitions(partitions)
        }))
        .with_user_data(assignment.user_data.clone());
    encode_versioned(&message)
}

/// Decodes the assignment SyncGroup returned; empty bytes (a member the leader gave nothing)
/// are an empty assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, ConsumerProtocolError> {
    if bytes.is_empty() {
        return Ok(Assignment::default());
    }
    let message: ConsumerProtocolAssignment = decode_versioned(bytes, "assignment")?;
    Ok(Assignment {
        partitions: flatten(
            &message.assigned_partitions,
            |t| (&t.topic, &t.partitions),
            "assignment",
        )?,
        user_data: message.user_data,
    })
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// Partitions grouped by topic, topics in order of first appearance, each group made into a
/// message entry by `entry`.
fn grouped<T>(partitions: &[TopicPartition], entry: impl Fn(TopicName, Vec<i32>) -> T) -> Vec<T> {
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in partitions {
        match topics.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, list)) => list.push(tp.partition),
            None => topics.push((&tp.topic, vec![tp.partition])),
        }
    }
    topics
        .into_iter()
        .map(|(topic, list)| entry(TopicName(text(topic)), list))
        .collect()
}

/// Kafka's longest topic name.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// The partitions of message entries that each name a topic and its partition indexes.
///
/// Each partition owns a copy of its topic's name, so a name is refused if it is longer than
/// a topic name can be: else a long name listed once over many partitions would decode into
/// a copy per partition, growing with the square of the input's size (a 1 MiB message into
/// tens of GiB). Bounded, the decoded partitions take at most ~70 bytes per 4-byte index.
fn flatten<T>(
    entries: &[T],
    parts: impl for<'a> Fn(&'a T) -> (&'a TopicName, &'a Vec<i32>),
    what: &str,
) -> Result<Vec<TopicPartition>, ConsumerProtocolError> {
    let mut flat = Vec::new();
    for entry in entries {
        let (topic, partitions) = parts(entry);
        if topic.0.len() > MAX_TOPIC_NAME_LEN && !partitions.is_empty() {
            return Err(ConsumerProtocolError(format!(
                "a {what} names a topic of {} bytes, longer than the {MAX_TOPIC_NAME_LEN} a topic name may have",
                topic.0.len()
            )));
        }
        flat.extend(
            partitions
                .iter()
                .map(|&p| TopicPartition::new(topic.0.as_str(), p)),
        );
    }
    Ok(flat)
}

/// The version prefix, then `message` at the newest version.
fn encode_versioned<M: Encodable + Message>(message: &M) -> Result<Bytes, ConsumerProtocolError> {
    let version = M::VERSIONS.max;
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| ConsumerProtocolError(format!("encoding: {e:#}")))?;
    Ok(buf.freeze())
}

/// Reads the version prefix and the message, newer versions as the newest known.
fn decode_versioned<M: Decodable + Message>(
    bytes: &[u8],
    what: &str,
) -> Result<M, ConsumerProtocolError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Err(ConsumerProtocolError(format!(
            "a {what} of {} bytes has no version",
            bytes.len()
        )));
    }
    let version = buf.get_i16();
    if version < M::VERSIONS.min {
        return Err(ConsumerProtocolError(format!(
            "{what} version {version} is not valid"
        )));
    }
    M::decode(&mut buf, version.min(M::VERSIONS.max))
        .map_err(|e| ConsumerProtocolError(format!("decoding a {what} v{version}: {e:#}")))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as Owned;

    use super::*;

    fn subscription() -> Subscription {
        Subscription {
            topics: vec!["orders".into(), "orders-retry-3000".into()],
            user_data: Some(Bytes::from_static(b"sticky")),
            owned_partitions: vec![
                TopicPartition::new("orders", 1),
                TopicPartition::new("orders-retry-3000", 0),
                TopicPartition::new("orders", 4),
            ],
            generation_id: 7,
            rack_id: Some("rack-a".into()),
        }
    }

    #[test]
    fn a_subscription_round_trips_with_owned_partitions_grouped_by_topic() {
        let bytes = encode_subscription(&subscription()).unwrap();
        assert_eq!(&bytes[..2], &[0, 3], "version 3 prefix");
        let decoded = decode_subscription(&bytes).unwrap();
        let mut expected = subscription();
        // Grouped by topic on the wire: orders-1, orders-4, then the retry topic.
        expected.owned_partitions = vec![
            TopicPartition::new("orders", 1),
            TopicPartition::new("orders", 4),
            TopicPartition::new("orders-retry-3000", 0),
        ];
        assert_eq!(decoded, expected);
    }

    #[test]
    fn older_versions_decode_with_defaults_and_newer_ones_as_the_newest_known() {
        // Version 0, as old clients send it: topics and user data only.
        let v0 = ConsumerProtocolSubscription::default().with_topics(vec![text("t")]);
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        v0.encode(&mut buf, 0).unwrap();
        let decoded = decode_subscription(&buf).unwrap();
        assert_eq!(decoded.topics, vec!["t".to_owned()]);
        assert_eq!(decoded.generation_id, -1);
        assert!(decoded.owned_partitions.is_empty());

        // A future version 9 that appends a field: read as v3, the extra bytes ignored.
        let v3 = ConsumerProtocolSubscription::default()
            .with_topics(vec![text("t")])
            .with_owned_partitions(vec![
                Owned::default()
                    .with_topic(TopicName(text("t")))
                    .with_partitions(vec![2]),
            ])
            .with_generation_id(4);
        let mut buf = BytesMut::new();
        buf.put_i16(9);
        v3.encode(&mut buf, 3).unwrap();
        buf.put_slice(b"future field");
        let decoded = decode_subscription(&buf).unwrap();
        assert_eq!(decoded.owned_partitions, vec![TopicPartition::new("t", 2)]);
        assert_eq!(decoded.generation_id, 4);
    }

    #[test]
    fn assignments_round_trip_and_empty_bytes_mean_nothing_assigned() {
        let assignment = Assignment {
            partitions: vec![TopicPartition::new("a", 0), TopicPartition::new("b", 3)],
            user_data: Some(Bytes::from_static(b"\x00\x01")),
        };
        let bytes = encode_assignment(&assignment).unwrap();
        assert_eq!(decode_assignment(&bytes).unwrap(), assignment);
        assert_eq!(decode_assignment(&[]).unwrap(), Assignment::default());
    }

    /// A topic name longer than Kafka allows, over many partitions, is refused: decoded, each
    /// partition would own a copy of it (the `consumer_protocol` fuzz target checks the
    /// decoded size against the input's).
    #[test]
    fn an_overlong_topic_name_over_partitions_is_refused() {
        for (len, ok) in [(249, true), (250, false)] {
            let assignment = Assignment {
                partitions: (0..100)
                    .map(|p| TopicPartition::new("x".repeat(len), p))
                    .collect(),
                user_data: None,
            };
            let bytes = encode_assignment(&assignment).unwrap();
            assert_eq!(decode_assignment(&bytes).is_ok(), ok, "{len}");
            let subscription = Subscription {
                topics: vec!["x".repeat(len)],
                owned_partitions: assignment.partitions,
                ..Subscription::default()
            };
            let bytes = encode_subscription(&subscription).unwrap();
            assert_eq!(decode_subscription(&bytes).is_ok(), ok, "{len}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b"\x00"[..],
            &b"\xff\xff"[..],
            &b"\x00\x03\x7f\xff\xff\xff"[..],
            &b"\x00\x01\x00\x00\x00\x01\x00"[..],
        ] {
            assert!(decode_subscription(bytes).is_err(), "{bytes:?}");
            assert!(decode_assignment(bytes).is_err(), "{bytes:?}");
        }
    }
}
