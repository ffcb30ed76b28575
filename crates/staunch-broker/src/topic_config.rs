//! Per-topic settings under Kafka's names (`retention.ms`, `segment.bytes`, …), how they map
//! onto a partition's [`LogConfig`], and how they are described back to clients.

use std::collections::BTreeMap;
use std::time::Duration;

use staunch_log::{FlushPolicy, LogConfig};

use crate::config::BrokerConfig;

/// The topic-level settings Staunch understands. Anything else is refused with a clear error,
/// never silently stored and ignored.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "flush.policy",
    "max.message.bytes",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// One described setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka's name for it.
    pub name: String,
    /// The effective value, as text.
    pub value: String,
    /// Whether the topic overrides the broker default.
    pub is_override: bool,
}

/// A topic's overrides, by Kafka name. Only keys in [`TOPIC_CONFIG_KEYS`] with valid values
/// are ever stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TopicConfig(pub BTreeMap<String, String>);

impl TopicConfig {
    /// Builds overrides from `(name, value)` pairs, checking each against the broker defaults.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        broker: &BrokerConfig,
    ) -> Result<Self, String> {
        let mut config = TopicConfig::default();
        for (name, value) in pairs {
            config.set(name, value)?;
        }
        config.log_config(broker)?;
        Ok(config)
    }

    /// Sets one override after checking the name and value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        check(name, value)?;
        self.0.insert(name.to_owned(), value.trim().to_owned());
        Ok(())
    }

    /// Removes an override, returning to the broker default.
    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        if !TOPIC_CONFIG_KEYS.contains(&name) {
            return Err(unknown(name));
        }
        self.0.remove(name);
        Ok(())
    }

    /// The log configuration a partition of this topic runs with.
    pub fn log_config(&self, broker: &BrokerConfig) -> Result<LogConfig, String> {
        let mut log = broker.log.clone();
        for (name, value) in &self.0 {
            match name.as_str() {
                "retention.ms" => log.retention_age = millis_or_unlimited(name, value)?,
                "retention.bytes" => {
                    let bytes: i64 = parse(name, value)?;
                    log.retention_bytes = u64::try_from(bytes).ok();
                }
                "segment.bytes" => log.segment_bytes = parse(name, value)?,
                "segment.ms" => {
                    log.segment_age = Duration::from_millis(parse::<u64>(name, value)?);
                }
                "max.message.bytes" => log.max_batch_bytes = parse(name, value)?,
                "flush.policy" => log.flush = parse::<FlushPolicy>(name, value)?,
                _ => {}
            }
        }
        // A small segment.bytes without an explicit max.message.bytes caps the batch size
        // instead of being refused: a batch must fit in one segment.
        if !self.0.contains_key("max.message.bytes")
            && u64::from(log.max_batch_bytes) > log.segment_bytes
        {
            log.max_batch_bytes = u32::try_from(log.segment_bytes).unwrap_or(u32::MAX);
        }
        log.validate().map_err(|e| e.to_string())
    }

    /// `min.insync.replicas` for this topic.
    pub fn min_insync_replicas(&self, broker: &BrokerConfig) -> i32 {
        self.0
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.min_insync_replicas)
    }

    /// Every setting with its effective value, for DescribeConfigs.
    pub fn describe(&self, broker: &BrokerConfig) -> Vec<ConfigEntry> {
        let log = self
            .log_config(broker)
            .unwrap_or_else(|_| broker.log.clone());
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|&name| {
                let value = match name {
                    "cleanup.policy" => "delete".to_owned(),
                    "flush.policy" => log.flush.to_string(),
                    "max.message.bytes" => log.max_batch_bytes.to_string(),
                    "min.insync.replicas" => self.min_insync_replicas(broker).to_string(),
                    "retention.bytes" => log
                        .retention_bytes
                        .map_or("-1".to_owned(), |b| b.to_string()),
                    "retention.ms" => log
                        .retention_age
                        .map_or("-1".to_owned(), |d| d.as_millis().to_string()),
                    "segment.bytes" => log.segment_bytes.to_string(),
                    "segment.ms" => log.segment_age.as_millis().to_string(),
                    _ => String::new(),
                };
                ConfigEntry {
                    name: name.to_owned(),
                    value,
                    is_override: self.0.contains_key(name),
                }
            })
            .collect()
    }
}

fn unknown(name: &str) -> String {
    format!(
        "unknown or unsupported topic config '{name}' (supported: {})",
        TOPIC_CONFIG_KEYS.join(", ")
    )
}

fn check(name: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    match name {
        "cleanup.policy" if value == "delete" => Ok(()),
        "cleanup.policy" => Err(format!(
            "cleanup.policy '{value}' is not supported: Staunch deletes by retention only"
        )),
        "retention.ms" => millis_or_unlimited(name, value).map(|_| ()),
        "retention.bytes" => parse::<i64>(name, value).map(|_| ()),
        "segment.bytes" | "segment.ms" => parse::<u64>(name, value).map(|_| ()),
        "max.message.bytes" => parse::<u32>(name, value).map(|_| ()),
        "min.insync.replicas" => match parse::<i32>(name, value)? {
            1.. => Ok(()),
            n => Err(format!("min.insync.replicas must be at least 1, not {n}")),
        },
        "flush.policy" => parse::<FlushPolicy>(name, value).map(|_| ()),
        _ => Err(unknown(name)),
    }
}

fn millis_or_unlimited(name: &str, value: &str) -> Result<Option<Duration>, String> {
    let ms: i64 = parse(name, value)?;
    match ms {
        -1 => Ok(None),
        0.. => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
        _ => Err(format!(
            "{name} must be -1 (unlimited) or at least 0, not {ms}"
        )),
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("invalid value '{value}' for {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_map_onto_the_log_config_and_bad_ones_are_refused() {
        let broker = BrokerConfig::default();
        let config = TopicConfig::from_pairs(
            [
                ("retention.ms", "60000"),
                ("flush.policy", "os"),
                ("segment.bytes", "1048576"),
            ],
            &broker,
        )
        .unwrap();
        let log = config.log_config(&broker).unwrap();
        assert_eq!(log.retention_age, Some(Duration::from_secs(60)));
        assert_eq!(log.flush, FlushPolicy::Os);
        assert_eq!(log.segment_bytes, 1 << 20);
        let described = config.describe(&broker);
        let retention = described.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(
            (retention.value.as_str(), retention.is_override),
            ("60000", true)
        );

        assert!(TopicConfig::from_pairs([("compression.type", "gzip")], &broker).is_err());
        assert!(TopicConfig::from_pairs([("retention.ms", "soon")], &broker).is_err());
        assert!(TopicConfig::from_pairs([("cleanup.policy", "compact")], &broker).is_err());
        assert!(TopicConfig::from_pairs([("segment.bytes", "1")], &broker).is_err());
        let unlimited = TopicConfig::from_pairs([("retention.ms", "-1")], &broker).unwrap();
        assert_eq!(unlimited.log_config(&broker).unwrap().retention_age, None);
    }
}
