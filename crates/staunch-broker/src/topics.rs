//! The topics on this broker: created, listed, reconfigured and deleted durably.
//!
//! Layout under `<data_dir>/topics/`: one directory per topic holding `topic.toml` (id,
//! partition count, config overrides) and one log directory per partition, named by its index.
//! A topic is created in a temporary directory and renamed into place, and deleted by renaming
//! it into `<data_dir>/trash/` before removing it, so a crash never leaves half a topic behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use staunch_core::ErrorCode;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::durable_file::{sync_dir, write_atomic};
use crate::partition::Partition;
use crate::topic_config::TopicConfig;

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
    pub partitions: Vec<Arc<Partition>>,
    /// The topic's config overrides.
    pub config: TopicConfig,
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
    root: PathBuf,
    trash: PathBuf,
    broker: Arc<BrokerConfig>,
    map: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises changes (create, delete, alter) so two never race on one directory.
    changes: Mutex<()>,
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`, recovering each partition's log.
    pub fn open(broker: Arc<BrokerConfig>) -> Result<Self, String> {
        let root = broker.data_dir.join("topics");
        let trash = broker.data_dir.join("trash");
        for dir in [&root, &trash] {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        // Finish deletions and abandon creations a crash interrupted.
        remove_children(&trash)?;
        let mut map = BTreeMap::new();
        let entries =
            fs::read_dir(&root).map_err(|e| format!("listing {}: {e}", root.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing {}: {e}", root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".creating-") {
                fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("removing {}: {e}", entry.path().display()))?;
                continue;
            }
            let topic = load_topic(&entry.path(), &name, &broker)?;
            map.insert(name, Arc::new(topic));
        }
        Ok(Topics {
            root,
            trash,
            broker,
            map: RwLock::new(map),
            changes: Mutex::new(()),
        })
    }

    /// The topic called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_map().get(name).cloned()
    }

    /// The topic called `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    fn existing(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.get(name).ok_or_else(|| {
            TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })
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
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("partition count must be between 1 and 100000, not {partitions}"),
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
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_owned(),
                id: Uuid::nil(),
                partitions: Vec::new(),
                config,
            }));
        }
        let staging = self.root.join(format!(".creating-{}", Uuid::new_v4()));
        let file = TopicFile {
            id: Uuid::new_v4(),
            partitions,
            config: config.0.clone(),
        };
        let result = (|| {
            fs::create_dir(&staging)?;
            for index in 0..partitions {
                fs::create_dir(staging.join(index.to_string()))?;
            }
            write_topic_file(&staging, &file)?;
            fs::rename(&staging, self.root.join(name))?;
            sync_dir(&self.root)
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(TopicError::storage(&format!("creating topic '{name}'"), e));
        }
        let dir = self.root.join(name);
        let opened = (0..partitions)
            .map(|i| Partition::open(&dir.join(i.to_string()), log_config.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TopicError::storage(&format!("opening topic '{name}'"), e))?;
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            id: file.id,
            partitions: opened,
            config,
        });
        self.write_map().insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
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
        for partition in &topic.partitions {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = name, error = %e, "closing a deleted topic's partition");
            }
        }
        let doomed = self.trash.join(format!("{name}-{}", Uuid::new_v4()));
        fs::rename(self.root.join(name), &doomed)
            .and_then(|()| sync_dir(&self.root))
            .map_err(|e| TopicError::storage(&format!("deleting topic '{name}'"), e))?;
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(path = %doomed.display(), error = %e, "removing deleted topic data; will retry at the next start");
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.id)
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
        if total <= current || total > 100_000 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions; the new count must be larger (and at most 100000), not {total}"
                ),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic
            .config
            .log_config(&self.broker)
            .map_err(|m| TopicError::new(ErrorCode::InvalidConfig, m))?;
        let dir = self.root.join(name);
        let mut partitions = topic.partitions.clone();
        for index in current..total {
            let path = dir.join(index.to_string());
            // A crash between creating directories and rewriting topic.toml can leave empty
            // ones behind; they are reused.
            fs::create_dir_all(&path)
                .map_err(|e| TopicError::storage(&format!("adding partitions to '{name}'"), e))?;
            let partition = Partition::open(&path, log_config.clone()).map_err(|e| {
                TopicError::storage(&format!("opening partition {index} of '{name}'"), e)
            })?;
            partitions.push(Arc::new(partition));
        }
        write_topic_file(
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
        let dir = self.root.join(name);
        write_topic_file(
            &dir,
            &TopicFile {
                id: topic.id,
                partitions: topic.partitions.len() as i32,
                config: config.0.clone(),
            },
        )
        .map_err(|e| TopicError::storage(&format!("altering config of '{name}'"), e))?;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, old) in topic.partitions.iter().enumerate() {
            if let Err(e) = old.close() {
                tracing::warn!(topic = name, index, error = %e, "closing partition for reconfiguration");
            }
            let partition = Partition::open(&dir.join(index.to_string()), log_config.clone())
                .map_err(|e| {
                    TopicError::storage(&format!("reopening partition {index} of '{name}'"), e)
                })?;
            partitions.push(Arc::new(partition));
        }
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config,
        });
        self.write_map().insert(name.to_owned(), updated);
        tracing::info!(topic = name, "topic config altered");
        Ok(())
    }

    /// Closes every partition, flushing it and marking it cleanly shut down.
    pub fn close_all(&self) {
        for topic in self.list() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if let Err(e) = partition.close() {
                    tracing::error!(topic = %topic.name, index, error = %e, "closing partition");
                }
            }
        }
    }
}

fn write_topic_file(dir: &Path, file: &TopicFile) -> std::io::Result<()> {
    let text = toml::to_string(file).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("topic.toml"), text.as_bytes())
}

fn load_topic(dir: &Path, name: &str, broker: &BrokerConfig) -> Result<Topic, String> {
    let path = dir.join("topic.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file: TopicFile =
        toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let config = TopicConfig(file.config);
    let log_config = config
        .log_config(broker)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let partitions = (0..file.partitions)
        .map(|i| {
            let dir = dir.join(i.to_string());
            Partition::open(&dir, log_config.clone())
                .map(Arc::new)
                .map_err(|e| format!("opening {}: {e}", dir.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topic {
        name: name.to_owned(),
        id: file.id,
        partitions,
        config,
    })
}

fn remove_children(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        fs::remove_dir_all(entry.path())
            .map_err(|e| format!("removing {}: {e}", entry.path().display()))?;
    }
    Ok(())
}
