//! [`Broker`]: topics, produce, fetch, offsets and admin, as one embeddable object.
//!
//! This module opens the broker (its data directory, cluster id and shared state), holds the
//! helpers its parts share (the blocking pool, topic and partition lookup) and runs its
//! lifecycle (retention, background tasks, shutdown). The request paths live in the
//! submodules: `produce`, `fetch`, `admin` (topics, configs, metadata) and `offsets`
//! (committed offsets and producer ids).

mod acls;
mod admin;
mod fetch;
mod offsets;
mod produce;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use staunch_core::ErrorCode;
use staunch_log::{BackgroundPool, PoolConfig, read_file, replace_file};
use tokio::sync::watch;

use crate::acl::Authorizer;
use crate::config::BrokerConfig;
use crate::credentials::CredentialStore;
use crate::group::{GroupConfig, GroupCoordinator};
use crate::offsets::OffsetStore;
use crate::producer_ids::ProducerIdAllocator;
use crate::storage::Storage;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, Topics};

pub use admin::RECOVERY_ENTRY;
pub use produce::ProduceInFlight;

/// Why a broker could not open.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the broker: {0}")]
pub struct OpenError(pub String);

/// A single-node broker: every topic's partitions, committed offsets, producer ids.
///
/// Cheap to clone; clones share one broker. All durable state lives under
/// [`BrokerConfig::data_dir`] (or in the [`Storage`] given to [`Broker::open_with`]). Methods
/// that store data say what is durable when they return.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<BrokerConfig>,
    storage: Storage,
    cluster_id: String,
    topics: Topics,
    /// The committed offsets, or why they are offline (their log could not be opened or
    /// replayed): then every offset commit and fetch fails and everything else serves on.
    offsets: Result<OffsetStore, String>,
    producer_ids: ProducerIdAllocator,
    groups: GroupCoordinator,
    /// The users' SCRAM credentials.
    credentials: CredentialStore,
    /// Who may do what ([`BrokerConfig::authorizer_enabled`]).
    authorizer: Authorizer,
    /// Bumped whenever a high watermark moves, waking long-polling fetches.
    data_version: watch::Sender<u64>,
    /// Fetches now waiting for data (see [`Broker::fetches_waiting`]).
    fetches_waiting: AtomicUsize,
    /// Set at shutdown so long polls return at once.
    closing: watch::Sender<bool>,
    /// Taken (in FIFO order) for the write phase of in-process `BrokerApi::produce` calls, so
    /// concurrent calls are appended in the order they were first polled — the order a network
    /// connection gives its requests.
    in_process_writes: tokio::sync::Mutex<()>,
    /// One permit per blocking thread a produce may hold while it writes a partition and
    /// waits for its fsync ([`BrokerConfig::io_threads`]): however many partitions a request
    /// names, the broker's threads stay bounded.
    io_permits: Arc<tokio::sync::Semaphore>,
    /// The (group, topic) lag gauges the last [`Broker::refresh_metrics`] set, so the next
    /// one zeroes those whose offsets are gone.
    reported_lag: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// Runs blocking work (disk I/O, fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorCode> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ErrorCode::UnknownServerError)
}

/// Why partition `index` of `topic` is offline, for the client's error message.
fn offline_reason(topic: &Topic, index: i32) -> Option<String> {
    if let Some(reason) = &topic.offline {
        return Some(reason.clone());
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .and_then(|slot| slot.offline_reason())
        .map(str::to_owned)
}

/// The cluster id in the root's `cluster-id`, made and stored durably on first use.
fn load_cluster_id(storage: &Storage) -> Result<String, String> {
    const FILE: &str = "cluster-id";
    let where_ = storage.describe(FILE);
    let root = storage
        .files("")
        .map_err(|e| format!("opening {}: {e}", storage.describe("")))?;
    match read_file(&*root, FILE) {
        Ok(Some(id)) => Ok(String::from_utf8_lossy(&id).trim().to_owned()),
        Ok(None) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            replace_file(&*root, FILE, id.as_bytes())
                .map_err(|e| format!("writing {where_}: {e}"))?;
            Ok(id)
        }
        Err(e) => Err(format!("reading {where_}: {e}")),
    }
}

impl Broker {
    /// Opens (or creates) the broker's data directory: recovers every partition log, reloads
    /// committed offsets and producer-id reservations. Blocks on disk I/O; call it from a
    /// blocking context or accept the stall at startup.
    pub fn open(config: BrokerConfig) -> Result<Broker, OpenError> {
        let storage = Storage::fs_locked(&config.data_dir, config.max_open_files)
            .map_err(|e| OpenError(format!("opening {}: {e}", config.data_dir.display())))?;
        Self::open_with(config, storage)
    }

    /// [`Broker::open`] with every file in `storage` and every timestamp from its clock
    /// (`config.data_dir` only names the broker in logs): how a test runs the broker on a
    /// disk whose power it can cut.
    pub fn open_with(config: BrokerConfig, storage: Storage) -> Result<Broker, OpenError> {
        if config.background_threads == 0 {
            return Err(OpenError(
                "background_threads must be at least 1".to_owned(),
            ));
        }
        // One pool for every log of the broker: a few threads, one zero-fill budget.
        let storage = storage.with_pool(BackgroundPool::with_config(PoolConfig {
            threads: config.background_threads,
            zero_fill_budget: config.zero_fill_budget,
            ..PoolConfig::default()
        }));
        let config = Arc::new(config);
        let io_permits = Arc::new(tokio::sync::Semaphore::new(config.io_threads.max(1)));
        config
            .check_durability_floor(&config.log.flush)
            .map_err(|e| OpenError(format!("the default log.flush: {e}")))?;
        let dir = &config.data_dir;
        storage
            .io()
            .create_dir_all("")
            .map_err(|e| OpenError(format!("creating {}: {e}", storage.describe(""))))?;
        let cluster_id = load_cluster_id(&storage).map_err(OpenError)?;
        let topics = Topics::open(config.clone(), storage.clone()).map_err(OpenError)?;
        for topic in topics.list() {
            if let Ok(log) = topic.config.log_config(&config)
                && let Err(e) = config.check_durability_floor(&log.flush)
            {
                tracing::warn!(topic = %topic.name, "kept as it is, set before the floor was raised: {e}");
            }
        }
        let offsets = OffsetStore::open_compacting(
            &storage,
            "consumer-offsets",
            config.offsets_compaction_records,
            config.offsets_segment_bytes,
        )
        .inspect_err(|reason| {
            tracing::error!(%reason, "committed offsets are offline: every offset commit and fetch fails; topics keep serving; see `staunch log check`");
        });
        // The offsets log's directory may be new: its entry must survive a power cut too.
        storage
            .io()
            .sync_dir("")
            .map_err(|e| OpenError(format!("syncing {}: {e}", storage.describe(""))))?;
        let root = storage
            .files("")
            .map_err(|e| OpenError(format!("opening {}: {e}", storage.describe(""))))?;
        let authorizer = if config.authorizer_enabled {
            Authorizer::open(
                root.clone(),
                storage.describe(crate::acl::ACL_FILE),
                &config.super_users,
            )
            .map_err(|e| OpenError(format!("the ACLs: {e}")))?
        } else {
            Authorizer::disabled()
        };
        let producer_ids = ProducerIdAllocator::open(root).map_err(OpenError)?;
        let credentials = CredentialStore::open(&storage).map_err(OpenError)?;
        let groups = GroupCoordinator::new(GroupConfig {
            min_session_timeout: config.group_min_session_timeout,
            max_session_timeout: config.group_max_session_timeout,
            initial_rebalance_delay: config.group_initial_rebalance_delay,
            max_group_size: None,
        });
        // Groups with committed offsets exist (as Empty) after a restart, as in Kafka.
        for group in offsets.iter().flat_map(OffsetStore::groups) {
            groups.ensure_group(&group);
        }
        tracing::info!(
            data_dir = %dir.display(),
            topics = topics.list().len(),
            "broker opened"
        );
        Ok(Broker {
            inner: Arc::new(Inner {
                config,
                storage,
                cluster_id,
                topics,
                offsets,
                producer_ids,
                groups,
                credentials,
                authorizer,
                data_version: watch::channel(0).0,
                fetches_waiting: AtomicUsize::new(0),
                closing: watch::channel(false).0,
                in_process_writes: tokio::sync::Mutex::new(()),
                io_permits,
                reported_lag: Default::default(),
            }),
        })
    }

    /// Milliseconds since the epoch by the broker's clock (the one its [`Storage`] holds).
    pub fn now_ms(&self) -> i64 {
        self.inner.storage.now_ms()
    }

    /// The pool doing every partition log's background work, sized by
    /// [`BrokerConfig::background_threads`] and holding the [`BrokerConfig::zero_fill_budget`].
    pub fn background_pool(&self) -> &BackgroundPool {
        self.inner.storage.pool()
    }

    /// The users' SCRAM credentials (SASL authentication reads them; changes are durable
    /// when [`CredentialStore::alter`] returns).
    pub fn credentials(&self) -> &CredentialStore {
        &self.inner.credentials
    }

    /// The consumer-group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// Who may do what: the server asks it before every request's effect.
    pub fn authorizer(&self) -> &Authorizer {
        &self.inner.authorizer
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The cluster id, stable for the life of the data directory.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The host and port clients are told to connect to.
    pub fn advertised(&self) -> (String, i32) {
        (
            self.inner.config.advertised_host.clone(),
            i32::from(self.inner.config.advertised_port),
        )
    }

    /// The topic `name`, creating it with the default partition count if auto-creation is on.
    async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>, ErrorCode> {
        if let Some(topic) = self.inner.topics.get(name) {
            return Ok(topic);
        }
        if !self.inner.config.auto_create_topics {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        let broker = self.clone();
        let name = name.to_owned();
        let partitions = self.inner.config.default_partitions;
        blocking(move || {
            match broker
                .inner
                .topics
                .create(&name, partitions, TopicConfig::default(), false)
            {
                Ok(topic) => Ok(topic),
                // Another request created it first.
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                    broker.inner.topics.get(&name).ok_or(e.code)
                }
                Err(e) => {
                    if e.code == ErrorCode::PolicyViolation {
                        // The client sees only the code; the reason goes to the log.
                        tracing::warn!(topic = %name, reason = %e.message, "auto-creating a topic refused");
                    }
                    Err(e.code)
                }
            }
        })
        .await?
    }

    /// The open partition `index` of `topic`: UNKNOWN_TOPIC_OR_PARTITION if there is none,
    /// KAFKA_STORAGE_ERROR if it is offline.
    fn partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<crate::partition::Partition>, ErrorCode> {
        self.inner
            .topics
            .get(topic)
            .ok_or(ErrorCode::UnknownTopicOrPartition)?
            .partition(index)
    }

    /// The committed offsets, or KAFKA_STORAGE_ERROR (logged) if they are offline.
    fn offsets(&self) -> Result<&OffsetStore, ErrorCode> {
        self.inner.offsets.as_ref().map_err(|reason| {
            tracing::warn!(%reason, "committed offsets are offline");
            ErrorCode::KafkaStorageError
        })
    }

    /// Whether partition `index` of `topic` exists, online or not.
    fn partition_exists(&self, topic: &str, index: i32) -> bool {
        self.inner
            .topics
            .get(topic)
            .is_some_and(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()))
    }

    /// Applies retention to every partition now.
    pub async fn apply_retention(&self) {
        let broker = self.clone();
        let _ = blocking(move || {
            let now = broker.inner.storage.now_ms();
            for topic in broker.inner.topics.list() {
                for (index, partition) in topic.online_partitions() {
                    if let Err(e) = partition.apply_retention(now) {
                        tracing::warn!(topic = %topic.name, index, error = %e, "retention failed");
                    }
                }
            }
        })
        .await;
    }

    /// Starts the periodic work: retention over every partition at
    /// [`BrokerConfig::retention_check_interval`]. Stops at [`Broker::shutdown`].
    pub fn start_background_tasks(&self) {
        let broker = self.clone();
        let mut closing = self.inner.closing.subscribe();
        let period = self.inner.config.retention_check_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => broker.apply_retention().await,
                    _ = closing.changed() => return,
                }
            }
        });
    }

    /// Wakes long polls so they answer now, then flushes and closes every log, marking each
    /// cleanly shut down. Call after the server stopped taking requests.
    pub async fn shutdown(&self) {
        self.inner.closing.send_replace(true);
        self.inner.groups.shutdown();
        let broker = self.clone();
        let _ = blocking(move || {
            broker.inner.topics.close_all();
            if let Ok(offsets) = &broker.inner.offsets
                && let Err(e) = offsets.close()
            {
                tracing::error!(error = %e, "closing the offsets log");
            }
        })
        .await;
        tracing::info!("broker closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second broker on the same data directory is refused at open with a message saying
    /// why, and the directory is free again once the first has shut down.
    #[test]
    fn a_data_directory_serves_one_broker_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            ..BrokerConfig::default()
        };
        let first = Broker::open(config.clone()).unwrap();
        let second = Broker::open(config.clone()).unwrap_err();
        assert!(
            second.0.contains("in use by another process"),
            "{}",
            second.0
        );
        runtime.block_on(first.shutdown());
        drop(first);
        let again = Broker::open(config).unwrap();
        runtime.block_on(again.shutdown());
    }
}
