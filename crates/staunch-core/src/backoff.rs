//! Back-off policies shared by producer retries and consumer retries.
//!
//! A [`BackOff`] answers one question: *after the n-th failure, how long until the next try — or
//! is it time to give up?* It is a pure function of the retry number and the time spent so far,
//! so a consumer that persisted its attempt count (in the committed offset's metadata) continues
//! the same schedule after a restart instead of starting over. [`BackOffSchedule`] is the
//! stateful convenience for a caller that keeps counting in memory.
//!
//! The presets users already know:
//!
//! | preset | delays | gives up after |
//! |---|---|---|
//! | [`BackOff::spring_default`] (spring-kafka `FixedBackOff(0, 9)`) | 0 ms | 9 retries (10 deliveries) |
//! | [`BackOff::kafka_producer_default`] (`retry.backoff.ms` / `.max.ms`) | 100 ms × 2 up to 1 s, ±20 % | never (bounded by the delivery timeout) |
//! | [`BackOff::rocketmq_levels`] (delay levels 3–18, `maxReconsumeTimes` 16) | 10 s, 30 s, 1 m, 2 m … 2 h | 16 retries |
//!
//! ```
//! use std::time::Duration;
//! use staunch_core::BackOff;
//!
//! let policy = BackOff::exponential(Duration::from_secs(3), 3.0, Duration::from_secs(60))
//!     .with_max_retries(2);
//! assert_eq!(policy.delay(1, Duration::ZERO), Some(Duration::from_secs(3)));
//! assert_eq!(policy.delay(2, Duration::ZERO), Some(Duration::from_secs(9)));
//! assert_eq!(policy.delay(3, Duration::ZERO), None); // exhausted: dead-letter it
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// RocketMQ's 18 message delay levels (`messageDelayLevel`), level 1 first.
pub const ROCKETMQ_DELAY_LEVELS: [Duration; 18] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(2 * 60),
    Duration::from_secs(3 * 60),
    Duration::from_secs(4 * 60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(6 * 60),
    Duration::from_secs(7 * 60),
    Duration::from_secs(8 * 60),
    Duration::from_secs(9 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(20 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(2 * 60 * 60),
];

/// Why a [`BackOff`] configuration was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackOffError {
    /// The multiplier is below 1 or not finite.
    #[error("back-off multiplier must be a finite number >= 1, got {0}")]
    Multiplier(f64),
    /// The jitter is outside 0..=1.
    #[error("back-off jitter must be between 0 and 1, got {0}")]
    Jitter(f64),
    /// The first delay is longer than the cap.
    #[error("back-off initial delay {initial:?} exceeds max interval {max_interval:?}")]
    InitialAboveMax {
        /// The configured first delay.
        initial: Duration,
        /// The configured cap.
        max_interval: Duration,
    },
}

/// A retry delay policy: fixed, exponential or an explicit list of levels, with optional jitter,
/// a cap on retries and a cap on total elapsed time.
///
/// Retries are counted from 1: retry 1 is the second delivery. `max_retries = 9` therefore means
/// ten deliveries in all, as spring-kafka's `FixedBackOff(0, 9)` and RocketMQ's
/// `maxReconsumeTimes` count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackOff {
    /// Delay before retry 1.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Each further delay is the previous one times this; 1.0 gives a fixed back-off.
    pub multiplier: f64,
    /// No delay exceeds this (before jitter).
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// If non-empty, retry n waits `levels[n-1]` (the last level repeats) instead of the
    /// exponential formula — RocketMQ's delay levels.
    #[serde(with = "duration_list")]
    pub levels: Vec<Duration>,
    /// Each delay is randomized by up to this fraction either way (0.2 → ±20 %).
    pub jitter: f64,
    /// Give up after this many retries; `None` retries without a count limit.
    pub max_retries: Option<u32>,
    /// Give up once this much time has passed since the first failure; `None` for no limit.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Option<Duration>,
}

/// Serde for a list of human-readable durations (`["10s", "30s", "1m"]`).
mod duration_list {
    use std::time::Duration;

    use humantime_serde::Serde;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<Serde<Duration>> = v.iter().copied().map(Serde::from).collect();
        wrapped.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let wrapped: Vec<Serde<Duration>> = Vec::deserialize(d)?;
        Ok(wrapped.into_iter().map(Serde::into_inner).collect())
    }
}

impl Default for BackOff {
    /// The Kafka producer's defaults: 100 ms doubling up to 1 s with ±20 % jitter, no count limit
    /// (the producer's delivery timeout bounds it).
    fn default() -> Self {
        Self::kafka_producer_default()
    }
}

impl BackOff {
    /// The same delay before every retry, at most `max_retries` retries.
    pub fn fixed(interval: Duration, max_retries: u32) -> Self {
        Self {
            initial: interval,
            multiplier: 1.0,
            max_interval: interval,
            levels: Vec::new(),
            jitter: 0.0,
            max_retries: Some(max_retries),
            max_elapsed: None,
        }
    }

    /// Delays of `initial`, `initial × multiplier`, … capped at `max_interval`, with no limit on
    /// retries until one is set.
    pub fn exponential(initial: Duration, multiplier: f64, max_interval: Duration) -> Self {
        Self {
            initial,
            multiplier,
            max_interval,
            levels: Vec::new(),
            jitter: 0.0,
            max_retries: None,
            max_elapsed: None,
        }
    }

    /// Delays taken from a list, one per retry, the last repeating.
    pub fn levels(levels: Vec<Duration>, max_retries: u32) -> Self {
        let max = levels.iter().copied().max().unwrap_or_default();
        Self {
            initial: levels.first().copied().unwrap_or_default(),
            multiplier: 1.0,
            max_interval: max,
            levels,
            jitter: 0.0,
            max_retries: Some(max_retries),
            max_elapsed: None,
        }
    }

    /// spring-kafka's `DefaultErrorHandler` default, `FixedBackOff(0, 9)`: ten deliveries with no
    /// pause. (Where spring then logs and commits, Staunch dead-letters.)
    pub fn spring_default() -> Self {
        Self::fixed(Duration::ZERO, 9)
    }

    /// The Kafka producer's `retry.backoff.ms = 100`, `retry.backoff.max.ms = 1000`, ±20 % jitter.
    pub fn kafka_producer_default() -> Self {
        Self::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1)).with_jitter(0.2)
    }

    /// RocketMQ's consumer retry: delay levels 3 to 18 (10 s … 2 h), `maxReconsumeTimes` 16.
    pub fn rocketmq_levels() -> Self {
        Self::levels(ROCKETMQ_DELAY_LEVELS[2..].to_vec(), 16)
    }

    /// Sets the retry limit.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sets the limit on time since the first failure.
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// Sets the jitter fraction (0.0 ..= 1.0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the numbers make sense and returns the policy.
    pub fn validate(self) -> Result<Self, BackOffError> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(BackOffError::Multiplier(self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BackOffError::Jitter(self.jitter));
        }
        if self.levels.is_empty() && self.initial > self.max_interval {
            return Err(BackOffError::InitialAboveMax {
                initial: self.initial,
                max_interval: self.max_interval,
            });
        }
        Ok(self)
    }

    /// The delay before retry `retry` (1-based) without jitter, or `None` when the policy says
    /// to give up: `retry` exceeds `max_retries`, or `elapsed` (time since the first failure)
    /// has reached `max_elapsed`.
    pub fn delay(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        if retry == 0 {
            return Some(Duration::ZERO);
        }
        if self.max_retries.is_some_and(|max| retry > max) {
            return None;
        }
        if self.max_elapsed.is_some_and(|max| elapsed >= max) {
            return None;
        }
        if !self.levels.is_empty() {
            let index = (retry as usize - 1).min(self.levels.len() - 1);
            return Some(self.levels[index]);
        }
        let factor = self
            .multiplier
            .powi((retry - 1).min(i32::MAX as u32) as i32);
        let millis = self.initial.as_secs_f64() * factor;
        let capped = if millis.is_finite() {
            Duration::from_secs_f64(millis.min(self.max_interval.as_secs_f64()))
        } else {
            self.max_interval
        };
        Some(capped.min(self.max_interval))
    }

    /// [`BackOff::delay`] with jitter applied from `random`, a number in `0.0..1.0`.
    pub fn delay_with_jitter(
        &self,
        retry: u32,
        elapsed: Duration,
        random: f64,
    ) -> Option<Duration> {
        let base = self.delay(retry, elapsed)?;
        if self.jitter == 0.0 {
            return Some(base);
        }
        let spread = self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64((1.0 + spread).max(0.0)))
    }

    /// A stateful schedule that counts retries itself.
    pub fn schedule(&self) -> BackOffSchedule {
        BackOffSchedule {
            policy: self.clone(),
            retries: 0,
            rng: fastrand::Rng::new(),
        }
    }
}

/// A running count of retries under one [`BackOff`]; see [`BackOff::schedule`].
#[derive(Debug, Clone)]
pub struct BackOffSchedule {
    policy: BackOff,
    retries: u32,
    rng: fastrand::Rng,
}

impl BackOffSchedule {
    /// Uses a seeded random source, so jittered delays repeat between runs (tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// Starts counting from `retries` already made, e.g. an attempt count read back after a
    /// restart.
    pub fn resume_after(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Records one more failure and returns the delay before the next try, or `None` to give up.
    pub fn next_delay(&mut self, elapsed: Duration) -> Option<Duration> {
        let next = self.retries.saturating_add(1);
        let delay = self
            .policy
            .delay_with_jitter(next, elapsed, self.rng.f64())?;
        self.retries = next;
        Some(delay)
    }

    /// Retries granted so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spring_default_allows_nine_retries_without_pause() {
        let p = BackOff::spring_default();
        let delays: Vec<_> = (1..=10).map(|n| p.delay(n, Duration::ZERO)).collect();
        assert_eq!(delays[..9], [Some(Duration::ZERO); 9]);
        assert_eq!(delays[9], None);
    }

    #[test]
    fn exponential_grows_and_caps() {
        let p = BackOff::exponential(100 * MS, 2.0, 500 * MS);
        let delays: Vec<_> = (1..=5)
            .map(|n| p.delay(n, Duration::ZERO).unwrap())
            .collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        assert_eq!(p.delay(1_000_000, Duration::ZERO), Some(500 * MS));
    }

    #[test]
    fn max_elapsed_stops_retries() {
        let p = BackOff::fixed(10 * MS, 100).with_max_elapsed(Duration::from_secs(1));
        assert!(p.delay(3, Duration::from_millis(999)).is_some());
        assert_eq!(p.delay(3, Duration::from_secs(1)), None);
    }

    #[test]
    fn rocketmq_preset_walks_the_delay_levels() {
        let p = BackOff::rocketmq_levels();
        assert_eq!(p.delay(1, Duration::ZERO), Some(Duration::from_secs(10)));
        assert_eq!(p.delay(2, Duration::ZERO), Some(Duration::from_secs(30)));
        assert_eq!(p.delay(16, Duration::ZERO), Some(Duration::from_secs(7200)));
        assert_eq!(p.delay(17, Duration::ZERO), None);
    }

    #[test]
    fn schedule_resumes_from_a_persisted_count() {
        let p = BackOff::exponential(MS, 3.0, Duration::from_secs(60)).with_max_retries(5);
        let mut s = p.schedule().resume_after(3);
        assert_eq!(s.next_delay(Duration::ZERO), Some(27 * MS));
        assert_eq!(s.next_delay(Duration::ZERO), Some(81 * MS));
        assert_eq!(s.next_delay(Duration::ZERO), None);
        assert_eq!(s.retries(), 5);
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(BackOff::exponential(MS, 0.5, MS).validate().is_err());
        assert!(BackOff::fixed(MS, 1).with_jitter(1.5).validate().is_err());
        assert!(
            BackOff::exponential(Duration::from_secs(2), 2.0, MS)
                .validate()
                .is_err()
        );
        assert!(BackOff::default().validate().is_ok());
    }

    #[test]
    fn reads_from_toml_with_human_durations() {
        let p: BackOff = toml::from_str(
            "initial = \"3s\"\nmultiplier = 3.0\nmax_interval = \"1m\"\nmax_retries = 2\n",
        )
        .unwrap();
        assert_eq!(p.delay(2, Duration::ZERO), Some(Duration::from_secs(9)));
        assert!(toml::from_str::<BackOff>("initial = \"3s\"\nbogus = 1\n").is_err());
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_band(retry in 1u32..50, random in 0.0f64..1.0, jitter in 0.0f64..=1.0) {
            let p = BackOff::exponential(10 * MS, 2.0, Duration::from_secs(10)).with_jitter(jitter);
            let base = p.delay(retry, Duration::ZERO).unwrap().as_secs_f64();
            let got = p.delay_with_jitter(retry, Duration::ZERO, random).unwrap().as_secs_f64();
            prop_assert!(got >= base * (1.0 - jitter) - 1e-9);
            prop_assert!(got <= base * (1.0 + jitter) + 1e-9);
        }
    }
}
