//! Kafka's error codes, the subset Staunch produces or must understand, with whether a client
//! may retry the request that got them.
//!
//! The numbers are the wire values of Apache Kafka's `Errors` enum; a code Staunch does not
//! know is kept as [`ErrorCode::Other`] rather than guessed at.

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $retriable:literal, $text:literal; )*) => {
        /// A Kafka protocol error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this table does not list, kept as received.
            Other(i16),
        }

        impl ErrorCode {
            /// The wire value.
            pub fn code(self) -> i16 {
                match self {
                    $( ErrorCode::$name => $code, )*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The code for a wire value; unknown values become [`ErrorCode::Other`].
            pub fn from_code(code: i16) -> Self {
                match code {
                    $( $code => ErrorCode::$name, )*
                    other => ErrorCode::Other(other),
                }
            }

            /// Whether Kafka classifies the error as retriable: the same request may succeed
            /// later without any change by the caller.
            pub fn is_retriable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retriable, )*
                    ErrorCode::Other(_) => false,
                }
            }

            /// Kafka's name for the error, e.g. `NOT_LEADER_OR_FOLLOWER`.
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $text, )*
                    ErrorCode::Other(_) => "UNKNOWN_ERROR_CODE",
                }
            }
        }
    };
}

impl std::fmt::Display for ErrorCode {
    /// Kafka's name with the wire value, e.g. `NOT_LEADER_OR_FOLLOWER (6)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

error_codes! {
    /// An unexpected server error.
    UnknownServerError = -1, false, "UNKNOWN_SERVER_ERROR";
    /// No error.
    None = 0, false, "NONE";
    /// The requested offset is outside the range the server has for the partition.
    OffsetOutOfRange = 1, false, "OFFSET_OUT_OF_RANGE";
    /// A record batch failed its CRC or is otherwise corrupt.
    CorruptMessage = 2, true, "CORRUPT_MESSAGE";
    /// The server does not host this topic-partition.
    UnknownTopicOrPartition = 3, true, "UNKNOWN_TOPIC_OR_PARTITION";
    /// The requested fetch size is invalid.
    InvalidFetchSize = 4, false, "INVALID_FETCH_SIZE";
    /// The partition has no leader right now (e.g. during a leader election).
    LeaderNotAvailable = 5, true, "LEADER_NOT_AVAILABLE";
    /// This broker is not the partition's leader.
    NotLeaderOrFollower = 6, true, "NOT_LEADER_OR_FOLLOWER";
    /// The request timed out.
    RequestTimedOut = 7, true, "REQUEST_TIMED_OUT";
    /// A batch is larger than the server accepts.
    MessageTooLarge = 10, false, "MESSAGE_TOO_LARGE";
    /// The metadata string of a committed offset is too large.
    OffsetMetadataTooLarge = 12, false, "OFFSET_METADATA_TOO_LARGE";
    /// The coordinator is loading its state.
    CoordinatorLoadInProgress = 14, true, "COORDINATOR_LOAD_IN_PROGRESS";
    /// The coordinator is not available.
    CoordinatorNotAvailable = 15, true, "COORDINATOR_NOT_AVAILABLE";
    /// This broker is not the coordinator for the group.
    NotCoordinator = 16, true, "NOT_COORDINATOR";
    /// The topic name is invalid.
    InvalidTopicException = 17, false, "INVALID_TOPIC_EXCEPTION";
    /// The request's record data is larger than the maximum.
    RecordListTooLarge = 18, false, "RECORD_LIST_TOO_LARGE";
    /// Fewer in-sync replicas than `min.insync.replicas`.
    NotEnoughReplicas = 19, true, "NOT_ENOUGH_REPLICAS";
    /// Written, but fewer in-sync replicas than required acknowledged it.
    NotEnoughReplicasAfterAppend = 20, true, "NOT_ENOUGH_REPLICAS_AFTER_APPEND";
    /// `acks` is not -1, 0 or 1.
    InvalidRequiredAcks = 21, false, "INVALID_REQUIRED_ACKS";
    /// The group generation is not the current one.
    IllegalGeneration = 22, false, "ILLEGAL_GENERATION";
    /// The member's protocols do not match the group's.
    InconsistentGroupProtocol = 23, false, "INCONSISTENT_GROUP_PROTOCOL";
    /// The group id is empty or invalid.
    InvalidGroupId = 24, false, "INVALID_GROUP_ID";
    /// The member id is not known to the coordinator.
    UnknownMemberId = 25, false, "UNKNOWN_MEMBER_ID";
    /// The session timeout is outside the broker's allowed range.
    InvalidSessionTimeout = 26, false, "INVALID_SESSION_TIMEOUT";
    /// The group is rebalancing; rejoin.
    RebalanceInProgress = 27, false, "REBALANCE_IN_PROGRESS";
    /// The committed metadata string is too large.
    InvalidCommitOffsetSize = 28, false, "INVALID_COMMIT_OFFSET_SIZE";
    /// A timestamp is out of the acceptable range.
    InvalidTimestamp = 32, false, "INVALID_TIMESTAMP";
    /// The group has reached its maximum size.
    GroupMaxSizeReached = 81, false, "GROUP_MAX_SIZE_REACHED";
    /// The API version is not supported.
    UnsupportedVersion = 35, false, "UNSUPPORTED_VERSION";
    /// The topic already exists.
    TopicAlreadyExists = 36, false, "TOPIC_ALREADY_EXISTS";
    /// The partition count is invalid.
    InvalidPartitions = 37, false, "INVALID_PARTITIONS";
    /// The replication factor is invalid.
    InvalidReplicationFactor = 38, false, "INVALID_REPLICATION_FACTOR";
    /// A configuration value is invalid.
    InvalidConfig = 40, false, "INVALID_CONFIG";
    /// The request is malformed or inconsistent.
    InvalidRequest = 42, false, "INVALID_REQUEST";
    /// The request violates a broker policy.
    PolicyViolation = 44, false, "POLICY_VIOLATION";
    /// The producer's sequence number is not the next one expected.
    OutOfOrderSequenceNumber = 45, false, "OUT_OF_ORDER_SEQUENCE_NUMBER";
    /// The batch is a duplicate of one already written.
    DuplicateSequenceNumber = 46, false, "DUPLICATE_SEQUENCE_NUMBER";
    /// The producer's epoch is older than the current one: it was fenced.
    InvalidProducerEpoch = 47, false, "INVALID_PRODUCER_EPOCH";
    /// The producer id is not known to the broker.
    UnknownProducerId = 59, false, "UNKNOWN_PRODUCER_ID";
    /// The disk holding the partition failed.
    KafkaStorageError = 56, true, "KAFKA_STORAGE_ERROR";
    /// The group still has members.
    NonEmptyGroup = 68, false, "NON_EMPTY_GROUP";
    /// The group does not exist.
    GroupIdNotFound = 69, false, "GROUP_ID_NOT_FOUND";
    /// The leader epoch is older than the broker's.
    FencedLeaderEpoch = 74, true, "FENCED_LEADER_EPOCH";
    /// The leader epoch is newer than the broker's.
    UnknownLeaderEpoch = 75, true, "UNKNOWN_LEADER_EPOCH";
    /// The join needs a member id: rejoin with the one given.
    MemberIdRequired = 79, false, "MEMBER_ID_REQUIRED";
    /// Another member with the same `group.instance.id` took over.
    FencedInstanceId = 82, false, "FENCED_INSTANCE_ID";
    /// A record in the batch is invalid.
    InvalidRecord = 87, false, "INVALID_RECORD";
    /// A newer producer with the same transactional id fenced this one.
    ProducerFenced = 90, false, "PRODUCER_FENCED";
    /// The topic id is not known.
    UnknownTopicId = 100, true, "UNKNOWN_TOPIC_ID";
    /// The broker is not available.
    BrokerNotAvailable = 8, false, "BROKER_NOT_AVAILABLE";
    /// The replica is not available for the requested topic partition.
    ReplicaNotAvailable = 9, true, "REPLICA_NOT_AVAILABLE";
    /// The server disconnected before a response was received.
    NetworkException = 13, true, "NETWORK_EXCEPTION";
    /// Not authorized to access the topic.
    TopicAuthorizationFailed = 29, false, "TOPIC_AUTHORIZATION_FAILED";
    /// Not authorized to access the group.
    GroupAuthorizationFailed = 30, false, "GROUP_AUTHORIZATION_FAILED";
    /// The cluster authorization failed.
    ClusterAuthorizationFailed = 31, false, "CLUSTER_AUTHORIZATION_FAILED";
    /// This is not the correct controller for this cluster.
    NotController = 41, true, "NOT_CONTROLLER";
    /// Another transaction is being completed for this producer (Kafka's
    /// `ConcurrentTransactionsException`, retriable).
    ConcurrentTransactions = 51, true, "CONCURRENT_TRANSACTIONS";
    /// Not authorized to use the transactional id.
    TransactionalIdAuthorizationFailed = 53, false, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED";
    /// Security features (ACLs) are disabled on the broker.
    SecurityDisabled = 54, false, "SECURITY_DISABLED";
    /// SASL authentication failed.
    SaslAuthenticationFailed = 58, false, "SASL_AUTHENTICATION_FAILED";
    /// The SASL mechanism asked for is not enabled on this listener.
    UnsupportedSaslMechanism = 33, false, "UNSUPPORTED_SASL_MECHANISM";
    /// A SASL request arrived where the exchange does not allow it.
    IllegalSaslState = 34, false, "ILLEGAL_SASL_STATE";
    /// A named resource (a user's SCRAM credential) does not exist.
    ResourceNotFound = 91, false, "RESOURCE_NOT_FOUND";
    /// The same resource is named twice in one request.
    DuplicateResource = 92, false, "DUPLICATE_RESOURCE";
    /// A credential does not meet the broker's requirements (too few iterations, empty
    /// name or salt).
    UnacceptableCredential = 93, false, "UNACCEPTABLE_CREDENTIAL";
    /// The leader has no listener with the name the request came in on.
    ListenerNotFound = 72, true, "LISTENER_NOT_FOUND";
    /// The leader's high watermark is not yet known (after a leader change).
    OffsetNotAvailable = 77, true, "OFFSET_NOT_AVAILABLE";
    /// Transactional offsets for the partition are pending (OffsetFetch with
    /// `require_stable`); ask again.
    UnstableOffsetCommit = 88, true, "UNSTABLE_OFFSET_COMMIT";
    /// The request exceeded a quota and was throttled.
    ThrottlingQuotaExceeded = 89, true, "THROTTLING_QUOTA_EXCEEDED";
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        for code in -1..=120 {
            assert_eq!(ErrorCode::from_code(code).code(), code);
        }
        assert_eq!(ErrorCode::from_code(6), ErrorCode::NotLeaderOrFollower);
        assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
        assert!(!ErrorCode::MessageTooLarge.is_retriable());
        assert_eq!(ErrorCode::from_code(999), ErrorCode::Other(999));
        assert_eq!(ErrorCode::CorruptMessage.name(), "CORRUPT_MESSAGE");
        // Kafka's retriable exceptions are retriable here too; authorization is not.
        for retriable in [41, 88, 13, 9, 89] {
            assert!(
                ErrorCode::from_code(retriable).is_retriable(),
                "{retriable}"
            );
        }
        for fatal in [29, 30, 31, 58] {
            assert!(!ErrorCode::from_code(fatal).is_retriable(), "{fatal}");
        }
    }
}
