//! The consumer's error type.

use staunch_core::{ApiError, TopicPartition};

/// Why a consumer call failed. None of these lose a record: whatever was not committed is
/// delivered again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A broker call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The group protocol could not be completed.
    #[error("group protocol: {0}")]
    Group(String),
    /// A partition's fetched bytes could not be read; the partition is not advanced.
    #[error("unreadable records in {partition}: {reason}")]
    Corrupt {
        /// The partition.
        partition: TopicPartition,
        /// What was wrong.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}
