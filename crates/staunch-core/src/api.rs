//! [`BrokerApi`]: the calls a producer or consumer makes to a Kafka-protocol cluster.
//!
//! Two implementations exist: `staunch-client` over TCP (against Staunch or any Kafka cluster)
//! and `staunch-broker` in-process. Producer and consumer are generic over this trait, so their
//! retry and dead-letter logic runs the same against both — and against test doubles that drop
//! connections or lose answers on purpose.
//!
//! The trait speaks of a *cluster*, not one connection: an implementation routes each partition's
//! records to that partition's leader, each group call to the group's coordinator, and
//! refreshes what it knows about leaders and coordinators when told it is stale. It does not
//! retry: retries, back-off and idempotence are the caller's policy.
//!
//! The calls map one to one onto Kafka requests: produce (`Produce`), the producer id
//! (`InitProducerId`), topic metadata and creation (`Metadata`, `CreateTopics`), reading
//! (`Fetch`, `ListOffsets`), the classic consumer-group protocol (`JoinGroup`, `SyncGroup`,
//! `Heartbeat`, `LeaveGroup`) and committed offsets (`OffsetCommit`, `OffsetFetch`). Group
//! protocol metadata and assignments are opaque bytes here; `staunch-protocol`'s
//! `consumer_protocol` encodes the standard consumer subscription and assignment.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::{ErrorCode, Offset, ProducerEpoch, ProducerId, TopicPartition};

/// How many replicas must have a produce's records before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No answer at all (`acks=0`): the caller never learns whether the records arrived.
    None,
    /// The leader has appended them (`acks=1`); on Staunch, as durable as its flush policy says.
    Leader,
    /// Every in-sync replica has them (`acks=all`, the default).
    #[default]
    All,
}

/// A duration as the milliseconds of a Kafka `int32` field, saturating at `i32::MAX`.
fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

impl Acks {
    /// The value on the wire: 0, 1 or -1.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Why a call, or one partition of a call, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The broker answered with an error code for this partition (or the whole request).
    #[error("{code} from the broker{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The Kafka error code.
        code: ErrorCode,
        /// The broker's explanation, if it sent one.
        message: Option<String>,
    },
    /// The request was sent but no answer arrived (the connection dropped, or the request timed
    /// out). **Ambiguous** for a produce: the broker may have appended the records.
    #[error("no answer from {broker}: {reason}")]
    NoAnswer {
        /// The broker the request went to.
        broker: String,
        /// What happened.
        reason: String,
    },
    /// The request was not sent: no leader is known, or no connection could be made. Nothing
    /// was appended.
    #[error("not sent to {target}: {reason}")]
    NotSent {
        /// The partition or broker it was meant for.
        target: String,
        /// Why it was not sent.
        reason: String,
    },
    /// The broker does not speak a version of the API this client can use, or sent an answer
    /// that could not be decoded. Retrying does not help.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ApiError {
    /// A broker error without a message.
    pub fn broker(code: ErrorCode) -> Self {
        ApiError::Broker {
            code,
            message: None,
        }
    }

    /// Whether the same call may succeed if retried (after a metadata refresh or a pause):
    /// transport failures, and the broker error codes Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            ApiError::Broker { code, .. } => code.is_retriable(),
            ApiError::NoAnswer { .. } | ApiError::NotSent { .. } => true,
            ApiError::Protocol(_) => false,
        }
    }

    /// Whether the records may have been appended although the call failed — the case an
    /// idempotent producer resolves with sequence numbers and a plain producer turns into a
    /// possible duplicate: no answer, a timeout, or NOT_ENOUGH_REPLICAS_AFTER_APPEND (the
    /// leader has the batch, too few replicas confirmed it in time).
    pub fn may_have_been_appended(&self) -> bool {
        match self {
            ApiError::NoAnswer { .. } => true,
            ApiError::Broker { code, .. } => matches!(
                code,
                ErrorCode::RequestTimedOut | ErrorCode::NotEnoughReplicasAfterAppend
            ),
            ApiError::NotSent { .. } | ApiError::Protocol(_) => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Kafka v2 record batches for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// Where the records go.
    pub partition: TopicPartition,
    /// One or more v2 record batches (an idempotent producer sends exactly one per partition).
    pub records: Bytes,
}

/// A produce call: batches for any number of partitions, which the implementation sends to
/// each partition's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceCall {
    /// How acknowledged the records must be before the answer.
    pub acks: Acks,
    /// How long the broker may wait for replicas before answering with a timeout error.
    pub timeout: Duration,
    /// The batches, at most one per partition.
    pub batches: Vec<PartitionBatch>,
}

/// Where a partition's records landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record; -1 with [`Acks::None`], when the broker does not answer.
    pub base_offset: Offset,
    /// The broker's append time for topics that use log-append time, else -1.
    pub log_append_time_ms: i64,
}

/// One partition of a topic, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index.
    pub index: i32,
    /// The leader's node id, or `None` while the partition has no leader.
    pub leader: Option<i32>,
}

/// A topic's partitions, as metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Every partition, by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A producer id with its epoch, from `InitProducerId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// The producer id; never handed out twice by a cluster.
    pub id: ProducerId,
    /// Its epoch.
    pub epoch: ProducerEpoch,
}

/// Where to read one partition from, in a [`FetchCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    /// The partition.
    pub partition: TopicPartition,
    /// The first offset wanted.
    pub offset: Offset,
    /// At most this many bytes for this partition (`max.partition.fetch.bytes`); the first
    /// partition of a fetch that has data still brings one whole batch larger than this, so a
    /// consumer always progresses (consumers rotate the partitions' order between fetches).
    pub max_bytes: i32,
}

/// A fetch: several partitions read at once, long-polling as Kafka's Fetch does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchCall {
    /// How long the broker may wait for `min_bytes` before it answers with what it has
    /// (`fetch.max.wait.ms`).
    pub max_wait: Duration,
    /// The broker answers as soon as at least this many bytes are readable
    /// (`fetch.min.bytes`); 0 answers at once.
    pub min_bytes: i32,
    /// At most this many bytes in all, per broker asked (`fetch.max.bytes`), except that the
    /// first partition with data always gets its first batch whole, however large (Kafka's
    /// rule, so a consumer never stalls on a batch bigger than its limit).
    pub max_bytes: i32,
    /// The partitions, each at most once.
    pub partitions: Vec<FetchPosition>,
}

impl FetchCall {
    /// `max_wait` in milliseconds, as the wire carries it (saturating).
    pub fn max_wait_ms(&self) -> i32 {
        millis(self.max_wait)
    }
}

/// What a fetch read from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecords {
    /// Offsets below this are acknowledged (replicated as `acks=all` promises) and readable.
    pub high_watermark: Offset,
    /// Offsets below this have no open transaction; equal to the high watermark on Staunch.
    pub last_stable_offset: Offset,
    /// The partition's first offset (earlier ones were deleted by retention).
    pub log_start_offset: Offset,
    /// Kafka v2 record batches exactly as the broker stores them — possibly compressed, never
    /// re-encoded — or empty when nothing at or after the offset is readable yet. The first
    /// batch may start **before** the requested offset (a batch is never split), so a caller
    /// skips records below it; a Kafka broker may also cut the **last** batch short at the
    /// byte limit, which a caller drops (it comes whole in the next fetch).
    pub records: Bytes,
}

/// Which offset [`BrokerApi::list_offsets`] looks up for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The partition's first offset (the log start offset).
    Earliest,
    /// The offset the next acknowledged record will get (the high watermark).
    Latest,
    /// The first offset whose record timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The value on the wire: -2 for earliest, -1 for latest, else the timestamp.
    pub fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }

    /// The lookup's result from the offset and timestamp a broker answers with (Kafka's
    /// ListOffsets fields): `None` when a timestamp lookup found no record (offset -1); the
    /// timestamp is kept only for timestamp lookups.
    pub fn found(self, offset: Offset, timestamp: i64) -> Option<ListedOffset> {
        match self {
            OffsetSpec::Timestamp(_) if offset < 0 => None,
            OffsetSpec::Timestamp(_) => Some(ListedOffset {
                offset,
                timestamp: Some(timestamp),
            }),
            OffsetSpec::Earliest | OffsetSpec::Latest => Some(ListedOffset {
                offset,
                timestamp: None,
            }),
        }
    }
}

/// An offset found by [`BrokerApi::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset.
    pub offset: Offset,
    /// For [`OffsetSpec::Timestamp`], the timestamp of the record at `offset`; `None` for
    /// earliest and latest.
    pub timestamp: Option<i64>,
}

/// A topic to create with [`BrokerApi::create_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicCall {
    /// The topic name.
    pub name: String,
    /// How many partitions; `None` for the cluster's default (`num.partitions`).
    pub partitions: Option<i32>,
    /// How many replicas of each partition; `None` for the cluster's default
    /// (`default.replication.factor`).
    pub replication_factor: Option<i16>,
    /// Topic config overrides by Kafka name, e.g. `("retention.ms", "-1")`.
    pub configs: Vec<(String, String)>,
}

/// What [`BrokerApi::create_topic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicCreation {
    /// The topic was created (durable on Staunch; on Kafka, its metadata may take a moment to
    /// reach every broker, so a produce right after may see `UNKNOWN_TOPIC_OR_PARTITION`).
    Created,
    /// A topic of that name already existed; it was left as it is (its partition count and
    /// configs were **not** compared with the call's).
    AlreadyExists,
}

/// One protocol a member supports in a [`JoinGroupCall`], e.g. an assignor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProtocol {
    /// The protocol name, e.g. `"range"` or `"cooperative-sticky"` for protocol type
    /// `"consumer"`.
    pub name: String,
    /// The member's metadata for this protocol, opaque to the broker (for `"consumer"`, an
    /// encoded `ConsumerProtocolSubscription`).
    pub metadata: Bytes,
}

/// A JoinGroup call of the classic group protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupCall {
    /// The group.
    pub group_id: String,
    /// The member id the coordinator gave this member; empty on a first join.
    pub member_id: String,
    /// `group.instance.id` for static membership: the member keeps its place across restarts.
    pub group_instance_id: Option<String>,
    /// How long the coordinator waits for a heartbeat before it drops the member
    /// (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// How long the coordinator waits for every member to rejoin during a rebalance
    /// (`max.poll.interval.ms` in the Java client). The call may block this long.
    pub rebalance_timeout: Duration,
    /// The protocol type, `"consumer"` for consumers.
    pub protocol_type: String,
    /// The protocols this member supports, most preferred first.
    pub protocols: Vec<GroupProtocol>,
}

impl JoinGroupCall {
    /// `session_timeout` in milliseconds, as the wire carries it (saturating).
    pub fn session_timeout_ms(&self) -> i32 {
        millis(self.session_timeout)
    }

    /// `rebalance_timeout` in milliseconds, as the wire carries it (saturating).
    pub fn rebalance_timeout_ms(&self) -> i32 {
        millis(self.rebalance_timeout)
    }
}

/// One member of a group and its protocol metadata, as the leader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberMetadata {
    /// The member id.
    pub member_id: String,
    /// The member's `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// Its metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A completed join: the member is in generation `generation_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedGroup {
    /// The generation the member joined.
    pub generation_id: i32,
    /// The group's protocol type, when the broker says (JoinGroup v7+ and Staunch in-process).
    pub protocol_type: Option<String>,
    /// The protocol the group selected, from those every member supports.
    pub protocol_name: Option<String>,
    /// The leader's member id; the leader computes the assignment.
    pub leader: String,
    /// This member's id, to send with every later group call.
    pub member_id: String,
    /// Every member with its metadata when this member is the leader; empty otherwise.
    pub members: Vec<GroupMemberMetadata>,
}

impl JoinedGroup {
    /// Whether this member leads the generation (and must send the assignments).
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// The answer to a [`JoinGroupCall`] that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The member is in the new generation; next comes [`BrokerApi::sync_group`].
    Joined(JoinedGroup),
    /// `MEMBER_ID_REQUIRED` (KIP-394): the coordinator assigned `member_id` to this new
    /// member, which must join again **at once** with it. Kept apart from errors because the
    /// caller needs the id.
    MemberIdRequired {
        /// The member id to join with.
        member_id: String,
    },
}

/// A member of one generation of a group: what heartbeat, sync, leave and commit name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMembership {
    /// The group.
    pub group_id: String,
    /// The generation joined; -1 outside group management.
    pub generation_id: i32,
    /// The member id; empty outside group management.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
}

impl GroupMembership {
    /// No membership: for a "simple" offset commit by a consumer that assigns partitions
    /// itself (generation -1, empty member id). The broker accepts it only while the group
    /// has no members.
    pub fn simple(group_id: impl Into<String>) -> Self {
        GroupMembership {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// The assignment the leader hands one member in a [`SyncGroupCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    /// The member.
    pub member_id: String,
    /// Its assignment, opaque to the broker (for `"consumer"`, an encoded
    /// `ConsumerProtocolAssignment`).
    pub assignment: Bytes,
}

/// A SyncGroup call: the leader hands in every member's assignment, followers ask for theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupCall {
    /// Who is syncing, in which generation.
    pub member: GroupMembership,
    /// The protocol type from the join; checked by brokers that know it, when given.
    pub protocol_type: Option<String>,
    /// The protocol name from the join; checked by brokers that know it, when given.
    pub protocol_name: Option<String>,
    /// Every member's assignment (leader only; empty from followers).
    pub assignments: Vec<MemberAssignment>,
}

/// A committed position and its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset to consume.
    pub offset: Offset,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// Free text stored with the offset and returned verbatim by
    /// [`BrokerApi::fetch_committed_offsets`]; the consumer keeps retry attempt counts here.
    /// At most `offset.metadata.max.bytes` (4096 by default) or the commit fails with
    /// `OFFSET_METADATA_TOO_LARGE`. Kafka does not tell an empty string from none.
    pub metadata: String,
}

/// The calls producers and consumers make to a Kafka-protocol cluster.
///
/// Every method is a single attempt: it reports failures, it does not retry them. Futures are
/// `Send`, so callers may spawn them.
pub trait BrokerApi: Send + Sync + 'static {
    /// Appends each partition's batches at its leader. Returns one outcome per batch, in the
    /// order given. With [`Acks::All`] an `Ok` means every in-sync replica has the records
    /// (on Staunch with flush `always`: on disk). An [`ApiError::NoAnswer`] is ambiguous: the
    /// records may have been appended.
    ///
    /// **Order:** concurrent calls that name the same partition are appended in the order the
    /// calls were first polled, as a Kafka connection appends its pipelined requests in order.
    /// An idempotent producer relies on this to keep several batches of one partition in
    /// flight without the broker seeing a sequence gap.
    fn produce(
        &self,
        call: ProduceCall,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<ProduceAck, ApiError>)>> + Send;

    /// The topic's partitions and their leaders. Creates the topic when the cluster
    /// auto-creates topics; otherwise a missing topic is
    /// `ApiError::Broker { code: UnknownTopicOrPartition, .. }`.
    fn topic(&self, topic: &str) -> impl Future<Output = Result<TopicInfo, ApiError>> + Send;

    /// A new producer id for an idempotent producer (epoch 0 on a new id).
    fn init_producer_id(&self) -> impl Future<Output = Result<ProducerIdentity, ApiError>> + Send;

    /// Reads each partition from its leader, only acknowledged records (below the high
    /// watermark). Long-polls as Kafka's Fetch: a broker answers as soon as `min_bytes` are
    /// readable, or when `max_wait` has passed, or at once when a partition has an error.
    /// When the partitions have different leaders each is asked in parallel with the same
    /// limits, and the call returns when all have answered (so within about `max_wait`).
    ///
    /// Returns one outcome per partition, in the order given: the records (possibly none) or
    /// an error — `OFFSET_OUT_OF_RANGE` when the offset is below the log start or beyond the
    /// end (the caller resets with [`list_offsets`](Self::list_offsets)), leadership errors
    /// after which the implementation refreshes its metadata, transport errors. A fetch has no
    /// effect on the broker, so every failure may simply be retried.
    fn fetch(
        &self,
        call: FetchCall,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<FetchedRecords, ApiError>)>> + Send;

    /// Looks up an offset per partition at its leader: the earliest, the latest (the high
    /// watermark), or the first at or after a timestamp. Returns one outcome per partition,
    /// in the order given; `Ok(None)` only for a timestamp later than every record's.
    fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, OffsetSpec)>,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<Option<ListedOffset>, ApiError>)>> + Send;

    /// Creates a topic, whether or not the cluster auto-creates topics. A topic that already
    /// exists is `Ok(`[`TopicCreation::AlreadyExists`]`)`, never an error, so creating the
    /// topics one needs is idempotent. Errors: `INVALID_TOPIC_EXCEPTION`, `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`, `INVALID_CONFIG`, `POLICY_VIOLATION`, …, and transport
    /// errors (after which the topic may or may not exist: call again).
    fn create_topic(
        &self,
        call: CreateTopicCall,
    ) -> impl Future<Output = Result<TopicCreation, ApiError>> + Send;

    /// JoinGroup of the classic group protocol, at the group's coordinator (found and cached
    /// by the implementation). Blocks until the rebalance completes — up to the call's
    /// `rebalance_timeout` — as Kafka's JoinGroup does.
    ///
    /// A first join (empty member id) answers [`JoinOutcome::MemberIdRequired`]; join again
    /// with that id. Errors the caller reacts to: `UNKNOWN_MEMBER_ID` (join again with an
    /// empty member id), `FENCED_INSTANCE_ID`, `INCONSISTENT_GROUP_PROTOCOL`,
    /// `INVALID_SESSION_TIMEOUT`, `GROUP_MAX_SIZE_REACHED`, and the retriable
    /// `NOT_COORDINATOR` / `COORDINATOR_NOT_AVAILABLE` / `COORDINATOR_LOAD_IN_PROGRESS`
    /// (after which the implementation looks the coordinator up again on the next call).
    fn join_group(
        &self,
        call: JoinGroupCall,
    ) -> impl Future<Output = Result<JoinOutcome, ApiError>> + Send;

    /// SyncGroup: the leader hands in the assignments, and every member gets its own (opaque
    /// bytes; empty if the leader assigned it nothing). A follower's call waits for the
    /// leader's. Errors: `REBALANCE_IN_PROGRESS` (join again), `UNKNOWN_MEMBER_ID`,
    /// `ILLEGAL_GENERATION`, `FENCED_INSTANCE_ID`, `INCONSISTENT_GROUP_PROTOCOL`, and the
    /// coordinator errors of [`join_group`](Self::join_group).
    fn sync_group(
        &self,
        call: SyncGroupCall,
    ) -> impl Future<Output = Result<Bytes, ApiError>> + Send;

    /// Heartbeat: keeps the member's session alive. `REBALANCE_IN_PROGRESS` tells the member to
    /// join again (it keeps its partitions until it has); `UNKNOWN_MEMBER_ID`,
    /// `ILLEGAL_GENERATION` and `FENCED_INSTANCE_ID` that it was dropped from the group.
    fn heartbeat(
        &self,
        member: &GroupMembership,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// LeaveGroup: the member leaves at once (instead of when its session expires), which
    /// starts a rebalance for the others. `member.generation_id` is not sent. A static member
    /// is named by its `group_instance_id` (and its member id, if known).
    fn leave_group(
        &self,
        member: &GroupMembership,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// OffsetCommit: stores each partition's offset and metadata string for `member`'s group.
    /// Returns one outcome per partition, in the order given; `Ok` means the commit is durable
    /// on Staunch (on disk before the answer) and replicated as Kafka's `__consumer_offsets`
    /// is. A commit by a group member is checked against its generation
    /// (`ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, `REBALANCE_IN_PROGRESS`,
    /// `FENCED_INSTANCE_ID`); use [`GroupMembership::simple`] outside group management.
    fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<(), ApiError>)>> + Send;

    /// OffsetFetch: the committed offset and metadata string of each partition for `group_id`,
    /// exactly as committed, or `None` where nothing is committed. One outcome per partition,
    /// in the order given.
    fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<Option<OffsetAndMetadata>, ApiError>)>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_may_have_appended_the_records() {
        let broker = |code| ApiError::Broker {
            code,
            message: None,
        };
        assert!(broker(ErrorCode::RequestTimedOut).may_have_been_appended());
        assert!(broker(ErrorCode::NotEnoughReplicasAfterAppend).may_have_been_appended());
        assert!(!broker(ErrorCode::NotEnoughReplicas).may_have_been_appended());
        assert!(!broker(ErrorCode::CorruptMessage).may_have_been_appended());
    }
}
