//! The consumer protocol's subscription and assignment decoders over arbitrary bytes.
//!
//! The same input goes to `decode_subscription` and `decode_assignment`. Checks:
//! - neither panics, nor allocates far beyond the input: the decoded value takes at most
//!   `72 × input + 1 KiB` bytes (each 4-byte partition index becomes a `TopicPartition` owning
//!   its topic's name, so a long name repeated over many partitions would grow with the
//!   square of the input);
//! - what decodes re-encodes, and decodes again to the same value with the partitions grouped by
//!   topic (the encoder lists each topic once, in order of first appearance); encoding that
//!   again gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use staunch_core::TopicPartition;
use staunch_protocol::consumer_protocol::{
    Assignment, Subscription, decode_assignment, decode_subscription, encode_assignment,
    encode_subscription,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(subscription) = decode_subscription(data) {
        let size = subscription
            .topics
            .iter()
            .map(|t| 24 + t.len())
            .sum::<usize>()
            + partitions_size(&subscription.owned_partitions)
            + subscription.user_data.as_ref().map_or(0, |d| d.len())
            + subscription.rack_id.as_ref().map_or(0, String::len);
        bounded(size, data.len());
        let bytes = encode_subscription(&subscription)
            .unwrap_or_else(|e| panic!("a decoded subscription does not encode: {e}"));
        let again = decode_subscription(&bytes)
            .unwrap_or_else(|e| panic!("an encoded subscription does not decode: {e}"));
        let expected = Subscription {
            owned_partitions: grouped(&subscription.owned_partitions),
            ..subscription
        };
        assert_eq!(again, expected);
        assert_eq!(encode_subscription(&again).unwrap(), bytes);
    }
    if let Ok(assignment) = decode_assignment(data) {
        let size = partitions_size(&assignment.partitions)
            + assignment.user_data.as_ref().map_or(0, |d| d.len());
        bounded(size, data.len());
        let bytes = encode_assignment(&assignment)
            .unwrap_or_else(|e| panic!("a decoded assignment does not encode: {e}"));
        let again = decode_assignment(&bytes)
            .unwrap_or_else(|e| panic!("an encoded assignment does not decode: {e}"));
        let expected = Assignment {
            partitions: grouped(&assignment.partitions),
            ..assignment
        };
        assert_eq!(again, expected);
        assert_eq!(encode_assignment(&again).unwrap(), bytes);
    }
});

fn partitions_size(partitions: &[TopicPartition]) -> usize {
    partitions
        .iter()
        .map(|tp| std::mem::size_of::<TopicPartition>() + tp.topic.len())
        .sum()
}

fn bounded(size: usize, input: usize) {
    assert!(
        size <= 72 * input + 1024,
        "{input} bytes decoded to about {size} bytes"
    );
}

/// Stable grouping by topic, topics in order of first appearance.
fn grouped(partitions: &[TopicPartition]) -> Vec<TopicPartition> {
    let mut topics: Vec<&str> = Vec::new();
    for tp in partitions {
        if !topics.contains(&tp.topic.as_str()) {
            topics.push(&tp.topic);
        }
    }
    topics
        .iter()
        .flat_map(|t| partitions.iter().filter(move |tp| tp.topic == *t).cloned())
        .collect()
}
