//! What happens to a record whose handler failed: blocking retry in place or non-blocking
//! retry topics, then the dead-letter topic — never a silent commit.
//!
//! Both follow a [`BackOff`]: the n-th failed delivery asks `backoff.delay(n, elapsed)`; a
//! delay means "retry after it", `None` means "give up": the record is forwarded to the
//! dead-letter topic, and only once that write is acknowledged is its offset committed.

use std::time::Duration;

use staunch_core::BackOff;

/// How a failed record is retried.
#[derive(Debug, Clone, PartialEq)]
pub enum FailurePolicy {
    /// spring's `DefaultErrorHandler`: the partition is sought back to the failed record and
    /// paused for the delay (other partitions keep flowing); later records of the partition
    /// wait (head-of-line blocking, which keeps order). The attempt count is committed in the
    /// offset metadata, at most one failure behind the deliveries by default
    /// ([`crate::ConsumerConfig::max_uncommitted_failures`]).
    Blocking(BackOff),
    /// spring's `RetryTopicConfiguration` / RocketMQ's retry queue: the record is forwarded to
    /// a retry topic with its due time in a header and the source partition moves on.
    RetryTopics(BackOff),
}

impl Default for FailurePolicy {
    /// spring-kafka's default: blocking, ten deliveries with no pause, then the dead-letter
    /// topic.
    fn default() -> Self {
        FailurePolicy::Blocking(BackOff::spring_default())
    }
}

impl FailurePolicy {
    /// The back-off either policy follows.
    pub fn backoff(&self) -> &BackOff {
        match self {
            FailurePolicy::Blocking(b) | FailurePolicy::RetryTopics(b) => b,
        }
    }
}

/// How retry and dead-letter topics are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicNaming {
    /// spring-kafka: `<topic><retry_suffix>-<delay-ms>` per distinct delay and
    /// `<topic><dlt_suffix>`.
    Spring {
        /// Between the topic and the delay; spring's default `-retry`.
        retry_suffix: String,
        /// After the topic; spring's default `.DLT`.
        dlt_suffix: String,
    },
    /// RocketMQ: one `%RETRY%<group>` and one `%DLQ%<group>` for every topic of the group.
    RocketMq,
}

impl Default for TopicNaming {
    /// spring-kafka's `-retry` and `.DLT` suffixes.
    fn default() -> Self {
        TopicNaming::Spring {
            retry_suffix: "-retry".into(),
            dlt_suffix: ".DLT".into(),
        }
    }
}

impl TopicNaming {
    /// The dead-letter topic of records from `source` (the first source topic) in `group`.
    pub fn dead_letter_topic(&self, source: &str, group: &str) -> String {
        match self {
            TopicNaming::Spring { dlt_suffix, .. } => format!("{source}{dlt_suffix}"),
            TopicNaming::RocketMq => format!("%DLQ%{group}"),
        }
    }

    /// The retry topic for a retry after `delay` of records from `source`.
    pub fn retry_topic(&self, source: &str, group: &str, delay: Duration) -> String {
        match self {
            TopicNaming::Spring { retry_suffix, .. } => {
                format!("{source}{retry_suffix}-{}", delay.as_millis())
            }
            TopicNaming::RocketMq => format!("%RETRY%{group}"),
        }
    }

    /// Every retry topic `source` may need under `backoff` (without jitter), in retry order,
    /// without repeats. Empty when the back-off has no retry limit and no levels, since the
    /// topics could not be listed.
    pub fn retry_topics(&self, source: &str, group: &str, backoff: &BackOff) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let Some(max) = backoff.max_retries else {
            return out;
        };
        for retry in 1..=max {
            let Some(delay) = backoff.delay(retry, Duration::ZERO) else {
                break;
            };
            let topic = self.retry_topic(source, group, delay);
            if !out.contains(&topic) {
                out.push(topic);
            }
        }
        out
    }
}

/// The RocketMQ preset: retry topics named `%RETRY%<group>` / `%DLQ%<group>`, delay levels 3
/// to 18 (10 s … 2 h), at most 16 reconsumes.
pub fn rocketmq() -> (FailurePolicy, TopicNaming) {
    (
        FailurePolicy::RetryTopics(BackOff::rocketmq_levels()),
        TopicNaming::RocketMq,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spring_and_rocketmq() {
        let spring = TopicNaming::default();
        assert_eq!(spring.dead_letter_topic("orders", "g"), "orders.DLT");
        let b = BackOff::exponential(Duration::from_secs(3), 10.0, Duration::from_secs(30))
            .with_max_retries(3);
        assert_eq!(
            spring.retry_topics("orders", "g", &b),
            vec!["orders-retry-3000", "orders-retry-30000"]
        );
        let (policy, naming) = rocketmq();
        assert_eq!(policy.backoff().max_retries, Some(16));
        assert_eq!(naming.dead_letter_topic("orders", "g"), "%DLQ%g");
        assert_eq!(
            naming.retry_topics("orders", "g", policy.backoff()),
            vec!["%RETRY%g"]
        );
    }
}
