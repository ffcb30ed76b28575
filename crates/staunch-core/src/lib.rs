//! Staunch's shared vocabulary.
//!
//! Every other Staunch crate speaks in these types, so this crate stays small and runtime-free
//! (no tokio, no I/O):
//!
//! - [`ids`]: `TopicPartition`, `Offset`, `LeaderEpoch`, `ProducerId`, … as newtypes so an offset is
//!   never passed where an epoch was meant.
//! - [`batch`]: a zero-copy view over Kafka's v2 record-batch bytes — the exact bytes a producer
//!   sends, Staunch stores and a consumer fetches — with validation (magic, lengths, CRC-32C) and the
//!   in-place rewrite of base offset and leader epoch, plus a builder for producers' batches.
//! - [`compression`]: Kafka's batch codecs (gzip, snappy, lz4, zstd), bounded on decompression;
//!   each is a cargo feature, all on by default.
//! - [`backoff`]: the retry back-off policies shared by the producer and the consumer.
//! - [`clock`]: wall-clock time as a trait, so tests can move time by hand.
//! - [`api`]: the [`BrokerApi`] trait that producer and consumer are generic over, implemented
//!   over the network by `staunch-client` and in-process by `staunch-broker`.
//!
//! ```
//! use staunch_core::batch::{BatchBuilder, RecordBatch};
//!
//! let mut bytes = BatchBuilder::new(1_700_000_000_000)
//!     .record(Some(b"key"), Some(b"value"))
//!     .build();
//! RecordBatch::set_base_offset(&mut bytes, 42).unwrap();
//! let batch = RecordBatch::parse(&bytes).unwrap();
//! batch.validate().unwrap();
//! assert_eq!(batch.base_offset(), 42);
//! assert_eq!(batch.last_offset(), 42);
//! ```

pub mod api;
pub mod backoff;
pub mod batch;
pub mod clock;
pub mod compression;
pub mod error_code;
pub mod ids;
pub mod security;
mod varint;

pub use api::{
    Acks, ApiError, BrokerApi, PartitionBatch, PartitionInfo, ProduceAck, ProduceCall,
    ProducerIdentity, TopicInfo,
};
pub use backoff::{BackOff, BackOffError, BackOffSchedule};
pub use batch::{BatchBuilder, BatchError, RecordBatch};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error_code::ErrorCode;
pub use ids::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TopicPartition};
pub use security::{SaslMechanism, SecurityProtocol};
