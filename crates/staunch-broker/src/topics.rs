//! The topics on this broker: created, listed, reconfigured and deleted durably.
//!
//! Layout under `<data_dir>/topics/`: one directory per topic holding `topic.toml` (id,
//! partition count, config overrides) and one log directory per partition, named by its index.
//! A topic is created in a temporary directory and renamed into place, and deleted by renaming
//! it into `<data_dir>/trash/` before removing it, so a crash never leaves half a topic behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use staunch_core::ErrorCode;
use staunch_log::{LogConfig, join_path, read_file, replace_file};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::parallel;
use crate::partition::Partition;
use crate::storage::Storage;
use crate::topic_config::TopicConfig;

/// The directory holding one directory per topic.
const TOPICS: &str = "topics";
/// Where deleted topics wait to be removed.
const TRASH: &str = "trash";
/// A topic's metadata file, in its directory.
const TOPIC_FILE: &str = "topic.toml";
/// The most partitions a topic may have.
const MAX_PARTITIONS: i32 = 100_000;

fn topic_dir(name: &str) -> String {
    join_path(TOPICS, name)
}

fn partition_dir(topic_dir: &str, index: i32) -> String {
    join_path(topic_dir, &index.to_string())
}

/// A failed topic operation: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    /// The error code returned to the client.
    pub code: ErrorCode,
    /// What went wrong, in words.
    pub message: String,
}

impl TopicError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }

    fn storage(what: &str, error: impl std::fmt::Display) -> Self {
        TopicError::new(ErrorCode::KafkaStorageError, format!("{what}: {error}"))
    }
}

/// One topic and its open partitions.
#[derive(Debug)]
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// The topic id (Kafka's topic UUID), stable across restarts.
    pub id: Uuid,
    /// The partitions, by index.
    pub partitions: Vec<PartitionSlot>,
    /// The topic's config overrides.
    pub config: TopicConfig,
    /// Why the whole topic is offline (its `topic.toml` could not be read), or `None`. An
    /// offline topic has no partitions; every request for it gets KAFKA_STORAGE_ERROR, its
    /// name stays taken, and it can be deleted.
    pub offline: Option<String>,
}

impl Topic {
    /// The partition at `index`: [`ErrorCode::UnknownTopicOrPartition`] if there is none,
    /// [`ErrorCode::KafkaStorageError`] if it (or the whole topic) is offline.
    pub fn partition(&self, index: i32) -> Result<Arc<Partition>, ErrorCode> {
        if self.offline.is_some() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .ok_or(ErrorCode::UnknownTopicOrPartition)?;
        slot.online().cloned().ok_or(ErrorCode::KafkaStorageError)
    }

    /// The open partitions with their indexes.
    pub fn online_partitions(&self) -> impl Iterator<Item = (usize, &Arc<Partition>)> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.online().map(|p| (i, p)))
    }

    /// Closes every open partition, logging failures.
    fn close_partitions(&self, why: &str) {
        for (index, partition) in self.online_partitions() {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = %self.name, index, error = %e, "closing a partition ({why})");
            }
        }
    }
}

/// One partition of a topic: open, or offline because its log could not be opened.
#[derive(Debug, Clone)]
pub enum PartitionSlot {
    /// Serving.
    Online(Arc<Partition>),
    /// Not serving: produce, fetch and list offsets for it get KAFKA_STORAGE_ERROR until an
    /// operator repairs it (`staunch log check` / `repair`) and the broker restarts. Nothing of
    /// its log was truncated or changed. Holds why, naming the file and position where known.
    Offline(Arc<str>),
}

impl PartitionSlot {
    /// The partition, if it is open.
    pub fn online(&self) -> Option<&Arc<Partition>> {
        match self {
            PartitionSlot::Online(p) => Some(p),
            PartitionSlot::Offline(_) => None,
        }
    }

    /// Why the partition is offline, if it is.
    pub fn offline_reason(&self) -> Option<&str> {
        match self {
            PartitionSlot::Online(_) => None,
            PartitionSlot::Offline(reason) => Some(reason),
        }
    }
}

/// Opens partition `index` of `topic` in `path`; a log that cannot be opened (damaged, or
/// the disk failing) takes only this partition offline, with an error naming it.
fn open_slot(
    storage: &Storage,
    topic: &str,
    index: i32,
    path: &str,
    config: LogConfig,
) -> PartitionSlot {
    match Partition::open_in_topic(storage, topic, index, path, config) {
        Ok(partition) => PartitionSlot::Online(Arc::new(partition)),
        Err(e) => {
            let reason = format!(
                "partition {index} of topic '{topic}' ({}) is offline: {e}",
                storage.describe(path)
            );
            tracing::error!(topic, index, error = %e, "{reason}; nothing was truncated, every other partition keeps serving; see `staunch log check`");
            PartitionSlot::Offline(reason.into())
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    id: Uuid,
    partitions: i32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// Checks a topic name against Kafka's rules: 1–249 characters from `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| {
        TopicError::new(
            ErrorCode::InvalidTopicException,
            format!("invalid topic name '{name}': {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > 249 {
        return Err(invalid("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Every topic on the broker.
#[derive(Debug)]
pub struct Topics {
    storage: Storage,
    broker: Arc<BrokerConfig>,
    map: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises changes (create, delete, alter) so two never race on one directory.
    changes: Mutex<()>,
}

impl Topics {
    /// Opens every topic under `topics/` of `storage`, recovering each partition's log.
    pub fn open(broker: Arc<BrokerConfig>, storage: Storage) -> Result<Self, String> {
        let io = storage.io();
        let describe = |e: std::io::Error, what: &str| format!("{what}: {e}");
        for dir in [TOPICS, TRASH] {
            io.create_dir_all(dir)
                .map_err(|e| describe(e, &format!("creating {}", storage.describe(dir))))?;
        }
        // The two directories must survive a power cut before any topic is created in them.
        io.sync_dir("")
            .map_err(|e| describe(e, &format!("syncing {}", storage.describe(""))))?;
        // Finish deletions and abandon creations a crash interrupted.
        for doomed in io
            .list_dirs(TRASH)
            .map_err(|e| describe(e, &format!("listing {}", storage.describe(TRASH))))?
        {
            let path = join_path(TRASH, &doomed);
            io.remove_dir_all(&path)
                .map_err(|e| describe(e, &format!("removing {}", storage.describe(&path))))?;
        }
        let mut map = BTreeMap::new();
        let names = io
            .list_dirs(TOPICS)
            .map_err(|e| describe(e, &format!("listing {}", storage.describe(TOPICS))))?;
        for name in names {
            let dir = topic_dir(&name);
            if name.starts_with(".creating-") {
                io.remove_dir_all(&dir)
                    .map_err(|e| describe(e, &format!("removing {}", storage.describe(&dir))))?;
                continue;
            }
            let topic = load_topic(&storage, &name, &broker).unwrap_or_else(|reason| {
                tracing::error!(topic = %name, %reason, "topic is offline: its metadata cannot be read; every other topic keeps serving");
                Topic {
                    name: name.clone(),
                    id: Uuid::nil(),
                    partitions: Vec::new(),
                    config: TopicConfig::default(),
                    offline: Some(reason),
                }
            });
            map.insert(name, Arc::new(topic));
        }
        Ok(Topics {
            storage,
            broker,
            map: RwLock::new(map),
            changes: Mutex::new(()),
        })
    }

    /// The topic called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_map().get(name).cloned()
    }

    /// The topic called `name`: UNKNOWN_TOPIC_OR_PARTITION if there is none,
    /// KAFKA_STORAGE_ERROR if it is offline.
    fn existing(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let topic = self.get(name).ok_or_else(|| {
            TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        match &topic.offline {
            Some(reason) => Err(TopicError::new(
                ErrorCode::KafkaStorageError,
                reason.clone(),
            )),
            None => Ok(topic),
        }
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.read_map().values().cloned().collect()
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a topic with `partitions` partitions. Durable when it returns: the topic exists
    /// after a crash. With `validate_only`, only checks.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("partition count must be between 1 and {MAX_PARTITIONS}, not {partitions}"),
            ));
        }
        let log_config = config
            .log_config(&self.broker)
            .map_err(|m| TopicError::new(ErrorCode::InvalidConfig, m))?;
        let _changes = self.lock_changes();
        if let Some(existing) = self.get(name) {
            if validate_only {
                return Err(TopicError::new(
                    ErrorCode::TopicAlreadyExists,
                    format!("topic '{name}' already exists"),
                ));
            }
            return Err(TopicError {
                code: ErrorCode::TopicAlreadyExists,
                message: format!(
                    "topic '{name}' already exists with {} partitions",
                    existing.partitions.len()
                ),
            });
        }
        self.check_partition_limit(&format!("creating topic '{name}'"), partitions)?;
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_owned(),
                id: Uuid::nil(),
                partitions: Vec::new(),
                config,
                offline: None,
            }));
        }
        let staging = topic_dir(&format!(".creating-{}", Uuid::new_v4()));
        let file = TopicFile {
            id: Uuid::new_v4(),
            partitions,
            config: config.0.clone(),
        };
        let dir = topic_dir(name);
        let io = self.storage.io();
        let result = (|| {
            io.create_dir_all(&staging)?;
            for index in 0..partitions {
                io.create_dir_all(&partition_dir(&staging, index))?;
            }
            // Syncs the staging directory: its partition directories are durable with it.
            write_topic_file(&self.storage, &staging, &file)?;
            io.rename_dir(&staging, &dir)?;
            io.sync_dir(TOPICS)
        })();
        if let Err(e) = result {
            let _ = io.remove_dir_all(&staging);
            return Err(TopicError::storage(&format!("creating topic '{name}'"), e));
        }
        let indexes: Vec<i32> = (0..partitions).collect();
        let outcomes = parallel::map(&indexes, self.broker.recovery_threads, |&i| {
            Partition::open_in_topic(
                &self.storage,
                name,
                i,
                &partition_dir(&dir, i),
                log_config.clone(),
            )
        });
        let mut opened = Vec::with_capacity(partitions as usize);
        let mut first_failure = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(partition) => opened.push(PartitionSlot::Online(Arc::new(partition))),
                Err(e) => {
                    first_failure.get_or_insert((i, e));
                }
            }
        }
        if let Some((i, e)) = first_failure {
            // Half a topic is worse than none: remove it, so it is not reopened (and found
            // broken) at every start.
            for p in opened.iter().filter_map(PartitionSlot::online) {
                let _ = p.close();
            }
            if let Err(removal) = self.remove_dir_durably(name) {
                tracing::error!(topic = name, error = %removal, "removing a topic whose creation failed");
            }
            return Err(TopicError::storage(
                &format!(
                    "opening partition {i} of new topic '{name}' (the topic was removed again)"
                ),
                e,
            ));
        }
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            id: file.id,
            partitions: opened,
            config,
            offline: None,
        });
        self.write_map().insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Refuses (POLICY_VIOLATION) `adding` more partitions when the broker would then hold
    /// more than `max_partitions`. Call with the changes lock held, so two changes cannot both
    /// pass the check.
    fn check_partition_limit(&self, what: &str, adding: i32) -> Result<(), TopicError> {
        let held: usize = self.read_map().values().map(|t| t.partitions.len()).sum();
        let after = held.saturating_add(usize::try_from(adding).unwrap_or(0));
        let max = self.broker.max_partitions;
        if after <= max {
            return Ok(());
        }
        Err(TopicError::new(
            ErrorCode::PolicyViolation,
            format!(
                "{what}: {adding} more partitions would make {after} on this broker, over its \
                 max_partitions of {max} (it holds {held}); raise max_partitions or delete topics"
            ),
        ))
    }

    /// Deletes a topic and its data. Durable when it returns: the topic does not come back
    /// after a crash.
    pub fn delete(&self, name: &str) -> Result<Uuid, TopicError> {
        let _changes = self.lock_changes();
        let Some(topic) = self.write_map().remove(name) else {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        };
        topic.close_partitions("deleting the topic");
        self.remove_dir_durably(name)
            .map_err(|e| TopicError::storage(&format!("deleting topic '{name}'"), e))?;
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    /// Moves topic `name`'s directory to the trash (durably: it does not come back after a
    /// crash), then removes it (a removal that fails is finished at the next start).
    fn remove_dir_durably(&self, name: &str) -> std::io::Result<()> {
        let doomed = join_path(TRASH, &format!("{name}-{}", Uuid::new_v4()));
        let io = self.storage.io();
        io.rename_dir(&topic_dir(name), &doomed)?;
        io.sync_dir(TOPICS)?;
        if let Err(e) = io.remove_dir_all(&doomed) {
            tracing::warn!(path = %self.storage.describe(&doomed), error = %e, "removing deleted topic data; will retry at the next start");
        }
        Ok(())
    }

    /// Raises a topic's partition count to `total`. Durable when it returns.
    pub fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _changes = self.lock_changes();
        let topic = self.existing(name)?;
        let current = topic.partitions.len() as i32;
        if total <= current || total > MAX_PARTITIONS {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions; the new count must be larger (and at most {MAX_PARTITIONS}), not {total}"
                ),
            ));
        }
        self.check_partition_limit(&format!("adding partitions to '{name}'"), total - current)?;
        if validate_only {
            return Ok(());
        }
        let log_config = topic
            .config
            .log_config(&self.broker)
            .map_err(|m| TopicError::new(ErrorCode::InvalidConfig, m))?;
        let dir = topic_dir(name);
        let mut partitions = topic.partitions.clone();
        for index in current..total {
            let path = partition_dir(&dir, index);
            // A crash between creating directories and rewriting topic.toml can leave empty
            // ones behind; they are reused.
            self.storage
                .io()
                .create_dir_all(&path)
                .map_err(|e| TopicError::storage(&format!("adding partitions to '{name}'"), e))?;
            let partition =
                Partition::open_in_topic(&self.storage, name, index, &path, log_config.clone())
                    .map_err(|e| {
                        TopicError::storage(&format!("opening partition {index} of '{name}'"), e)
                    })?;
            partitions.push(PartitionSlot::Online(Arc::new(partition)));
        }
        write_topic_file(
            &self.storage,
            &dir,
            &TopicFile {
                id: topic.id,
                partitions: total,
                config: topic.config.0.clone(),
            },
        )
        .map_err(|e| TopicError::storage(&format!("adding partitions to '{name}'"), e))?;
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config: topic.config.clone(),
            offline: None,
        });
        self.write_map().insert(name.to_owned(), updated);
        tracing::info!(topic = name, partitions = total, "partitions added");
        Ok(())
    }

    /// Replaces a topic's config overrides. Durable when it returns. Partitions are reopened
    /// with the new log settings; appends in flight during the switch fail with a retriable
    /// error.
    pub fn set_config(
        &self,
        name: &str,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let log_config = config
            .log_config(&self.broker)
            .map_err(|m| TopicError::new(ErrorCode::InvalidConfig, m))?;
        let _changes = self.lock_changes();
        let topic = self.existing(name)?;
        if validate_only || topic.config == config {
            return Ok(());
        }
        let dir = topic_dir(name);
        write_topic_file(
            &self.storage,
            &dir,
            &TopicFile {
                id: topic.id,
                partitions: topic.partitions.len() as i32,
                config: config.0.clone(),
            },
        )
        .map_err(|e| TopicError::storage(&format!("altering config of '{name}'"), e))?;
        // Each partition is reopened with the new settings. One that fails to reopen is
        // offline with the reason (never left closed behind an open-looking topic); the others
        // serve on.
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, slot) in topic.partitions.iter().enumerate() {
            let Some(old) = slot.online() else {
                partitions.push(slot.clone());
                continue;
            };
            if let Err(e) = old.close() {
                tracing::warn!(topic = name, index, error = %e, "closing partition for reconfiguration");
            }
            let index = index as i32;
            let path = partition_dir(&dir, index);
            partitions.push(open_slot(
                &self.storage,
                name,
                index,
                &path,
                log_config.clone(),
            ));
        }
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config,
            offline: None,
        });
        self.write_map().insert(name.to_owned(), updated);
        tracing::info!(topic = name, "topic config altered");
        Ok(())
    }

    /// Closes every partition, flushing it and marking it cleanly shut down, on up to
    /// `recovery_threads` threads at once.
    pub fn close_all(&self) {
        let partitions: Vec<(Arc<Topic>, usize, Arc<Partition>)> = self
            .list()
            .into_iter()
            .flat_map(|topic| {
                let online: Vec<_> = topic
                    .online_partitions()
                    .map(|(i, p)| (i, p.clone()))
                    .collect();
                online.into_iter().map(move |(i, p)| (topic.clone(), i, p))
            })
            .collect();
        parallel::map(
            &partitions,
            self.broker.recovery_threads,
            |(topic, index, p)| {
                if let Err(e) = p.close() {
                    tracing::warn!(topic = %topic.name, index, error = %e, "closing a partition (shutting down)");
                }
            },
        );
    }
}

/// Replaces `topic.toml` in `dir` durably (the directory is synced too).
fn write_topic_file(storage: &Storage, dir: &str, file: &TopicFile) -> std::io::Result<()> {
    let text = toml::to_string(file).map_err(std::io::Error::other)?;
    replace_file(&*storage.files(dir)?, TOPIC_FILE, text.as_bytes())
}

fn load_topic(storage: &Storage, name: &str, broker: &BrokerConfig) -> Result<Topic, String> {
    let dir = topic_dir(name);
    let path = storage.describe(&join_path(&dir, TOPIC_FILE));
    let bytes = storage
        .files(&dir)
        .and_then(|files| read_file(&*files, TOPIC_FILE))
        .map_err(|e| format!("reading {path}: {e}"))?
        .ok_or_else(|| format!("reading {path}: missing"))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("reading {path}: {e}"))?;
    let file: TopicFile = toml::from_str(text).map_err(|e| format!("parsing {path}: {e}"))?;
    // No topic is ever written with a count outside these bounds: a count outside them is
    // damage, and a huge one would open that many logs here.
    if !(1..=MAX_PARTITIONS).contains(&file.partitions) {
        return Err(format!(
            "{path}: {} partitions, not between 1 and {MAX_PARTITIONS}",
            file.partitions
        ));
    }
    let config = TopicConfig(file.config);
    let log_config = config
        .log_config(broker)
        .map_err(|e| format!("{path}: {e}"))?;
    let indexes: Vec<i32> = (0..file.partitions).collect();
    let partitions = parallel::map(&indexes, broker.recovery_threads, |&i| {
        open_slot(
            storage,
            name,
            i,
            &partition_dir(&dir, i),
            log_config.clone(),
        )
    });
    Ok(Topic {
        name: name.to_owned(),
        id: file.id,
        partitions,
        config,
        offline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `topic.toml` whose partition count no topic can have (the `broker_metadata` fuzz
    /// target checks it) takes its topic offline: it never loads as a topic without
    /// partitions, nor opens millions of logs.
    #[test]
    fn a_partition_count_out_of_bounds_is_damage() {
        let disk = staunch_testkit::FaultyIo::new();
        let storage = Storage::new(
            Arc::new(disk.clone()),
            Arc::new(staunch_core::ManualClock::new(0)),
        );
        let broker = BrokerConfig::default();
        for count in ["0", "-4", "100001", "2000000000"] {
            let file = format!("id = \"{}\"\npartitions = {count}\n", Uuid::nil());
            disk.subdir("topics/t")
                .put_file(TOPIC_FILE, file.as_bytes());
            let error = load_topic(&storage, "t", &broker).unwrap_err();
            assert!(error.contains("not between 1 and 100000"), "{error}");
        }
        let file = format!("id = \"{}\"\npartitions = 2\n", Uuid::nil());
        disk.subdir("topics/t")
            .put_file(TOPIC_FILE, file.as_bytes());
        assert_eq!(
            load_topic(&storage, "t", &broker).unwrap().partitions.len(),
            2
        );
    }
}
