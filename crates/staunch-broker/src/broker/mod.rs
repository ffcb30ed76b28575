//! [`Broker`]: topics, produce, fetch, offsets and admin, as one embeddable object.
//!
//! This module opens the broker (its data directory, cluster id and shared state), holds the
//! helpers its parts share (the blocking pool, topic and partition lookup) and runs its
//! lifecycle (retention, background tasks, shutdown). The request paths live in the
//! submodules: `produce`, `fetch`, `admin` (topics, configs, metadata) and `offsets`
//! (committed offsets and producer ids).

mod admin;
mod fetch;
mod offsets;
mod produce;

use std::path::Path;
use std::sync::Arc;

use staunch_core::ErrorCode;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::durable_file::write_atomic;
use crate::group::{GroupConfig, GroupCoordinator};
use crate::offsets::OffsetStore;
use crate::producer_ids::ProducerIdAllocator;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, Topics};

pub use produce::ProduceInFlight;

/// Why a broker could not open.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the broker: {0}")]
pub struct OpenError(pub String);

/// A single-node broker: every topic's partitions, committed offsets, producer ids.
///
/// Cheap to clone; clones share one broker. All durable state lives under
/// [`BrokerConfig::data_dir`]. Methods that store data say what is durable when they return.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<BrokerConfig>,
    cluster_id: String,
    topics: Topics,
    offsets: OffsetStore,
    producer_ids: ProducerIdAllocator,
    groups: GroupCoordinator,
    /// Bumped whenever a high watermark moves, waking long-polling fetches.
    data_version: watch::Sender<u64>,
    /// Set at shutdown so long polls return at once.
    closing: watch::Sender<bool>,
    /// Taken (in FIFO order) for the write phase of in-process `BrokerApi::produce` calls, so
    /// concurrent calls are appended in the order they were first polled — the order a network
    /// connection gives its requests.
    in_process_writes: tokio::sync::Mutex<()>,
}

/// Runs blocking work (disk I/O, fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorCode> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ErrorCode::UnknownServerError)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn load_cluster_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            write_atomic(&path, id.as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

impl Broker {
    /// Opens (or creates) the broker's data directory: recovers every partition log, reloads
    /// committed offsets and producer-id reservations. Blocks on disk I/O; call it from a
    /// blocking context or accept the stall at startup.
    pub fn open(config: BrokerConfig) -> Result<Broker, OpenError> {
        let config = Arc::new(config);
        config
            .check_durability_floor(&config.log.flush)
            .map_err(|e| OpenError(format!("the default log.flush: {e}")))?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| OpenError(format!("creating {}: {e}", dir.display())))?;
        let cluster_id = load_cluster_id(dir).map_err(OpenError)?;
        let topics = Topics::open(config.clone()).map_err(OpenError)?;
        for topic in topics.list() {
            if let Ok(log) = topic.config.log_config(&config)
                && let Err(e) = config.check_durability_floor(&log.flush)
            {
                tracing::warn!(topic = %topic.name, "kept as it is, set before the floor was raised: {e}");
            }
        }
        let offsets = OffsetStore::open(&dir.join("consumer-offsets")).map_err(OpenError)?;
        let producer_ids = ProducerIdAllocator::open(dir).map_err(OpenError)?;
        let groups = GroupCoordinator::new(GroupConfig {
            min_session_timeout: config.group_min_session_timeout,
            max_session_timeout: config.group_max_session_timeout,
            initial_rebalance_delay: config.group_initial_rebalance_delay,
            max_group_size: None,
        });
        // Groups with committed offsets exist (as Empty) after a restart, as in Kafka.
        for group in offsets.groups() {
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
                cluster_id,
                topics,
                offsets,
                producer_ids,
                groups,
                data_version: watch::channel(0).0,
                closing: watch::channel(false).0,
                in_process_writes: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The consumer-group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner.groups
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
                Err(e) => Err(e.code),
            }
        })
        .await?
    }

    fn partition(&self, topic: &str, index: i32) -> Option<Arc<crate::partition::Partition>> {
        let topic = self.inner.topics.get(topic)?;
        topic.partitions.get(usize::try_from(index).ok()?).cloned()
    }

    /// Applies retention to every partition now.
    pub async fn apply_retention(&self) {
        let broker = self.clone();
        let _ = blocking(move || {
            let now = now_ms();
            for topic in broker.inner.topics.list() {
                for (index, partition) in topic.partitions.iter().enumerate() {
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
            if let Err(e) = broker.inner.offsets.close() {
                tracing::error!(error = %e, "closing the offsets log");
            }
        })
        .await;
        tracing::info!("broker closed");
    }
}
