//! Consumer groups: the classic group membership protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) as librdkafka, kafka-python and the Java client use it. Committed offsets live
//! in [`crate::offsets`].

mod coordinator;

pub use coordinator::*;
