//! The broker's configuration: where data lives, what clients are told, and the defaults every
//! topic starts from.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use staunch_log::{FlushPolicy, LogConfig};

/// Broker settings. Every field has a safe default: a single node, data in `./staunch-data`,
/// flush `always` (every acknowledgement after fsync), topics auto-created like Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in metadata responses. Default 1.
    pub node_id: i32,
    /// The directory holding topics, committed offsets and producer-id state.
    pub data_dir: PathBuf,
    /// The host clients are told to connect to. Default `127.0.0.1`.
    pub advertised_host: String,
    /// The port clients are told to connect to; the server sets it to the port it bound when
    /// left at 0. Default 0.
    pub advertised_port: u16,
    /// Create a topic when a client asks for its metadata or produces to it. Default `true`,
    /// as in Kafka (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (`num.partitions`). Default 1.
    pub default_partitions: i32,
    /// `min.insync.replicas` of topics that do not set it. Default 1.
    pub min_insync_replicas: i32,
    /// The log settings of topics that do not override them.
    pub log: LogConfig,
    /// The weakest `flush.policy` a topic may have. A client asking for a weaker one
    /// (CreateTopics, AlterConfigs, IncrementalAlterConfigs) is refused with
    /// POLICY_VIOLATION, and the broker does not open with a weaker `log.flush` default.
    /// Default `always`: no client can make acknowledgements go out before fsync.
    pub durability_floor: FlushPolicy,
    /// Largest metadata string stored with a committed offset (`offset.metadata.max.bytes`).
    /// Default 4096.
    pub offset_metadata_max_bytes: usize,
    /// Smallest session timeout a group member may ask for. Default 6 s.
    #[serde(with = "humantime_serde")]
    pub group_min_session_timeout: Duration,
    /// Largest session timeout a group member may ask for. Default 30 min.
    #[serde(with = "humantime_serde")]
    pub group_max_session_timeout: Duration,
    /// How long a new group waits for more members before its first rebalance completes
    /// (`group.initial.rebalance.delay.ms`). Default 3 s.
    #[serde(with = "humantime_serde")]
    pub group_initial_rebalance_delay: Duration,
    /// Committed-offset records appended since the last snapshot after which the offsets log
    /// is compacted (every live offset written again, older segments deleted). Default
    /// 200,000.
    pub offsets_compaction_records: u64,
    /// Segment size of the committed-offsets log (only whole segments are deleted by
    /// compaction). Default 16 MiB.
    pub offsets_segment_bytes: u64,
    /// Most partitions the broker holds, all topics together. A CreateTopics or
    /// CreatePartitions that would go past it is refused with POLICY_VIOLATION, and so is an
    /// auto-created topic; nothing of a refused topic is created. Default 100,000.
    pub max_partitions: usize,
    /// How often retention runs over every partition. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// Segment files that may hold an open descriptor at once; idle ones are closed and
    /// reopened on demand (files with unsynced writes stay open). Keep it well under the
    /// process's open-files limit, which must also cover connections. Default 4096.
    pub max_open_files: usize,
    /// Threads that do every partition log's background work (sealing closed segments,
    /// interval flushes, recovery points, zero-filling): one pool for the whole broker, so
    /// thousands of partitions do not cost a thread each. At least 1. Default 4.
    pub background_threads: usize,
    /// Blocking threads that produce requests may hold at once, each writing one partition's
    /// records and waiting for their fsync (Kafka's `num.io.threads`, larger because an
    /// fsync holds its thread): a request naming more partitions waits for a free one, so
    /// thousands of partitions never cost a thread each. At least 1. Default 128: fsyncs of
    /// different partitions overlap (confluent-kafka over 1,000 keyed partitions reached 0.46x
    /// its one-partition throughput with 32, 0.54x with 128, on a 2-core VM).
    pub io_threads: usize,
    /// Threads that open (recover), create and close partition logs at once, at start-up,
    /// topic creation and shutdown: their fsyncs overlap instead of running one after
    /// another (Kafka's `num.recovery.threads.per.data.dir`). They exist only meanwhile.
    /// Default 16.
    pub recovery_threads: usize,
    /// Bytes of zeros that all partition logs together may keep written ahead of their data
    /// (flush `always`, `log.zero_fill_bytes` each): only recently written partitions get
    /// them, and idle ones give theirs back. 0 turns zero-filling off. Default 256 MiB.
    pub zero_fill_budget: u64,
    /// Check every request against the ACLs (Kafka's `authorizer.class.name` set to its
    /// standard authorizer), on every listener. Then a principal may do only what an ALLOW
    /// ACL grants and no DENY ACL refuses (a resource without ACLs is denied:
    /// `allow.everyone.if.no.acl.found=false`), except the [`BrokerConfig::super_users`];
    /// ACLs are stored in the data directory's `acls.toml`. Default `false`: every request
    /// is allowed and the ACL requests answer SECURITY_DISABLED, as in Kafka without an
    /// authorizer.
    pub authorizer_enabled: bool,
    /// Principals allowed everything when the authorizer is enabled (Kafka's `super.users`),
    /// each `User:name`. Default none.
    pub super_users: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("staunch-data"),
            advertised_host: "127.0.0.1".to_owned(),
            advertised_port: 0,
            auto_create_topics: true,
            default_partitions: 1,
            min_insync_replicas: 1,
            log: LogConfig::default(),
            durability_floor: FlushPolicy::Always,
            offset_metadata_max_bytes: 4096,
            group_min_session_timeout: Duration::from_secs(6),
            group_max_session_timeout: Duration::from_secs(30 * 60),
            group_initial_rebalance_delay: Duration::from_secs(3),
            offsets_compaction_records: 200_000,
            offsets_segment_bytes: 16 << 20,
            max_partitions: 100_000,
            retention_check_interval: Duration::from_secs(300),
            max_open_files: staunch_log::io::DEFAULT_OPEN_FILES,
            background_threads: 4,
            io_threads: 128,
            recovery_threads: 16,
            zero_fill_budget: 256 << 20,
            authorizer_enabled: false,
            super_users: Vec::new(),
        }
    }
}

impl BrokerConfig {
    /// Refuses a flush policy weaker than [`BrokerConfig::durability_floor`], with a message
    /// naming the setting that allows it.
    pub fn check_durability_floor(&self, flush: &FlushPolicy) -> Result<(), String> {
        if flush.is_weaker_than(&self.durability_floor) {
            return Err(format!(
                "flush.policy {flush} is weaker than this broker's durability floor ({}): \
                 acknowledged records could be lost in a power cut; an operator can allow it \
                 with the broker setting durability_floor = \"{flush}\" \
                 (--durability-floor, STAUNCH_DURABILITY_FLOOR)",
                self.durability_floor
            ));
        }
        Ok(())
    }
}
