//! Per-log configuration: flush policy, segment size and age, retention, index density, how
//! long an fsync may take before the log gives up on its disk.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::LogError;

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `fdatasync` before an append is reported durable. Concurrent appends share one fsync
    /// (group commit). The default: an acknowledged append survives power loss.
    Always,
    /// Appends return once in the page cache; a background flusher syncs at this interval, so a
    /// power loss can lose at most about this much acknowledged data.
    Interval(Duration),
    /// Appends return once in the page cache and the OS decides when to write back. Survives a
    /// crash of the process, not of the machine.
    Os,
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Os => f.write_str("os"),
            FlushPolicy::Interval(d) => write!(
                f,
                "interval:{}",
                humantime_serde::re::humantime::format_duration(*d)
            ),
        }
    }
}

impl FlushPolicy {
    /// Whether this policy can lose acknowledged data that `other` would keep: `os` is weaker
    /// than any `interval`, which is weaker than `always`, and a longer interval is weaker
    /// than a shorter one.
    pub fn is_weaker_than(&self, other: &FlushPolicy) -> bool {
        match (self, other) {
            (FlushPolicy::Always, _) => false,
            (_, FlushPolicy::Always) => true,
            (FlushPolicy::Interval(_), FlushPolicy::Os) => false,
            (FlushPolicy::Os, FlushPolicy::Os) => false,
            (FlushPolicy::Os, FlushPolicy::Interval(_)) => true,
            (FlushPolicy::Interval(mine), FlushPolicy::Interval(floor)) => mine > floor,
        }
    }
}

impl FromStr for FlushPolicy {
    type Err = String;

    /// Parses `always`, `os` or `interval:<duration>` (e.g. `interval:200ms`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            other => {
                let Some(d) = other.strip_prefix("interval:") else {
                    return Err(format!(
                        "unknown flush policy {other:?}: expected always, os or interval:<duration>"
                    ));
                };
                let d = humantime_serde::re::humantime::parse_duration(d.trim())
                    .map_err(|e| format!("bad flush interval {d:?}: {e}"))?;
                if d.is_zero() {
                    return Err("flush interval must be positive (use `always`)".into());
                }
                Ok(FlushPolicy::Interval(d))
            }
        }
    }
}

impl Serialize for FlushPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlushPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Configuration of one partition's log. Read from TOML with human durations:
///
/// ```toml
/// flush = "always"            # or "os", or "interval:200ms"
/// segment_bytes = 1073741824
/// segment_age = "7d"
/// retention_age = "7d"        # omit retention_age / retention_bytes for no limit
/// retention_bytes = 10737418240
/// sync_timeout = "30s"
/// max_unsynced_bytes = 16777216
/// checkpoint_interval = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// When appends are forced to disk. Default `always`.
    pub flush: FlushPolicy,
    /// Roll to a new segment when the active one would grow past this. Default 1 GiB, at most
    /// 2 GiB (positions in the index are 32-bit, as in Kafka).
    pub segment_bytes: u64,
    /// Roll to a new segment at the first append after the active one is this old. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub segment_age: Duration,
    /// Delete closed segments whose newest batch was appended longer ago than this. Default 7
    /// days; `None` keeps data forever. Counted from the broker's append time, not from producer
    /// timestamps (as Kafka does), so a producer's skewed clock can neither expire data early nor
    /// pin it forever.
    #[serde(with = "humantime_serde")]
    pub retention_age: Option<Duration>,
    /// Delete the oldest closed segments while the log is larger than this. Default `None`.
    pub retention_bytes: Option<u64>,
    /// One index entry per this many bytes of batches. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// Largest batch accepted. Default 1 MiB + 12 bytes (Kafka's `message.max.bytes`).
    pub max_batch_bytes: u32,
    /// Under flush `always` only: how many bytes past the data of the active segment the
    /// log's background job keeps written with zeros (and fsynced). An `fdatasync` of writes
    /// into written blocks need not commit file-system metadata, which made it about 2x cheaper
    /// on ext4. Each log holds up to this much disk beyond its data, and all logs of one
    /// [`BackgroundPool`](crate::BackgroundPool) together at most its zero-fill budget (a log
    /// that gets no budget appends without zeros ahead); 0 turns it off (the segment then
    /// reserves blocks with `fallocate`, as under `os` and `interval`). Default 8 MiB.
    pub zero_fill_bytes: u64,
    /// How long one `fdatasync` of this log may run before the log treats its disk as hung:
    /// the log is then failed exactly as after a failed fsync ([`LogError::Failed`], naming the
    /// file and this limit), every append waiting for durability and every later one fails,
    /// and nothing is reported durable again until the log is reopened — even if the fsync
    /// returns `Ok` later. Measured in real (monotonic) time, whatever clock the log was opened
    /// with. Must be positive.
    ///
    /// Default 30 s. A healthy but saturated disk can take seconds for one fsync (writeback of
    /// much dirty data, a RAID resync, a cloud volume's burst credits running out), and taking a
    /// partition offline for that would turn slowness into an outage that needs a restart; so the
    /// limit sits well above that. 30 s is also Linux's default SCSI command timeout
    /// (`/sys/block/*/device/timeout`), after which the kernel itself starts aborting and
    /// retrying the commands, and Kafka's default producer `request.timeout.ms`, after which a
    /// client has given up on the request and retries it anyway: an acknowledgement later than
    /// that helps no one.
    #[serde(with = "humantime_serde")]
    pub sync_timeout: Duration,
    /// Under flush `always` only: the most bytes the log keeps written but not yet fsynced. A
    /// write that would go past it first waits for (or forces) an fsync of what is there; an
    /// append larger than it is written in pieces with an fsync between them. Never reached by
    /// appends that wait for their own durability unless more than this much is in flight.
    /// Recovery relies on the bound: valid batches found more than this far past a damaged one
    /// prove the damage is not a torn write (so it is bit rot, and the log refuses to cut it).
    /// Default 16 MiB; must be positive.
    pub max_unsynced_bytes: u64,
    /// How often, at most, the background job rewrites the log's recovery point (the offset
    /// below which everything is known durable) when the durable end moved. The recovery point
    /// is also written at every segment roll, truncation and clean close. Each write costs a
    /// small file, two fsyncs and a rename. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

/// The defaults, in one place.
const DEFAULTS: LogConfig = LogConfig {
    flush: FlushPolicy::Always,
    segment_bytes: 1 << 30,
    segment_age: Duration::from_secs(7 * 24 * 3600),
    retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
    retention_bytes: None,
    index_interval_bytes: 4096,
    max_batch_bytes: 1_048_588,
    zero_fill_bytes: 8 << 20,
    sync_timeout: Duration::from_secs(30),
    max_unsynced_bytes: 16 << 20,
    checkpoint_interval: Duration::from_secs(10),
};

impl Default for LogConfig {
    fn default() -> Self {
        DEFAULTS
    }
}

impl LogConfig {
    /// The most bytes a log with this configuration ever holds written but not fsynced, under
    /// flush `always`: [`LogConfig::max_unsynced_bytes`], or one batch if that is larger (a
    /// batch is written whole). 0 under `interval` and `os`, which have no such bound.
    pub(crate) fn unsynced_window(&self) -> u64 {
        match self.flush {
            FlushPolicy::Always => self.max_unsynced_bytes.max(u64::from(self.max_batch_bytes)),
            FlushPolicy::Interval(_) | FlushPolicy::Os => 0,
        }
    }

    /// Checks the numbers and returns the configuration.
    pub fn validate(self) -> Result<Self, LogError> {
        let bad = |m: String| Err(LogError::InvalidConfig(m));
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(format!(
                "segment_bytes must be between 1 KiB and 2 GiB, got {}",
                self.segment_bytes
            ));
        }
        if self.segment_age.is_zero() {
            return bad("segment_age must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if self.max_batch_bytes < 64 || u64::from(self.max_batch_bytes) > self.segment_bytes {
            return bad(format!(
                "max_batch_bytes must be between 64 bytes and segment_bytes, got {}",
                self.max_batch_bytes
            ));
        }
        if self.max_unsynced_bytes == 0 {
            return bad("max_unsynced_bytes must be positive".into());
        }
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval must be positive".into());
        }
        if let FlushPolicy::Interval(d) = self.flush
            && d.is_zero()
        {
            return bad("flush interval must be positive".into());
        }
        if self.sync_timeout.is_zero() {
            return bad("sync_timeout must be positive".into());
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policies_are_ordered_by_what_a_power_cut_can_lose() {
        let ms = |n| FlushPolicy::Interval(Duration::from_millis(n));
        // From strongest to weakest.
        let ordered = [FlushPolicy::Always, ms(10), ms(200), FlushPolicy::Os];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(a.is_weaker_than(b), i > j, "{a} weaker than {b}");
            }
        }
    }

    #[test]
    fn parses_toml_with_defaults_and_rejects_unknown_fields() {
        let c: LogConfig = toml::from_str(
            "flush = \"interval:250ms\"\nretention_age = \"1h\"\nsync_timeout = \"200ms\"\n",
        )
        .unwrap();
        assert_eq!(c.flush, FlushPolicy::Interval(Duration::from_millis(250)));
        assert_eq!(c.retention_age, Some(Duration::from_secs(3600)));
        assert_eq!(c.sync_timeout, Duration::from_millis(200));
        assert_eq!(c.segment_bytes, 1 << 30);
        assert!(toml::from_str::<LogConfig>("flushh = \"os\"").is_err());
        assert!(toml::from_str::<LogConfig>("flush = \"sometimes\"").is_err());
        let c: LogConfig = toml::from_str("").unwrap();
        assert_eq!(c, LogConfig::default());
        assert_eq!(c.flush, FlushPolicy::Always);
        assert_eq!(c.sync_timeout, Duration::from_secs(30));
    }

    #[test]
    fn flush_policy_round_trips_as_text() {
        for p in [
            FlushPolicy::Always,
            FlushPolicy::Os,
            FlushPolicy::Interval(Duration::from_millis(1500)),
        ] {
            assert_eq!(p.to_string().parse::<FlushPolicy>().unwrap(), p);
        }
    }

    #[test]
    fn validation_rejects_nonsense() {
        let c = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(c.validate().is_err());
        let c = LogConfig {
            max_batch_bytes: 1 << 30,
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        assert!(c.validate().is_err());
        let c = LogConfig {
            sync_timeout: Duration::ZERO,
            ..LogConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(LogConfig::default().validate().is_ok());
    }
}
