//! The durability floor: no client can give a topic a flush policy weaker than the broker's
//! `durability_floor`, by CreateTopics, AlterConfigs or IncrementalAlterConfigs.

use staunch_broker::{Broker, BrokerConfig, ConfigOp, NewTopic};
use staunch_core::ErrorCode;
use staunch_log::FlushPolicy;

use super::{bounded, open};

fn new_topic(name: &str, flush: &str) -> NewTopic {
    NewTopic {
        name: name.to_owned(),
        partitions: 1,
        replication_factor: 1,
        configs: vec![("flush.policy".to_owned(), flush.to_owned())],
    }
}

fn flush_of(broker: &Broker, topic: &str) -> String {
    let entries = broker
        .describe_topic_config(topic, Some(&["flush.policy".to_owned()]))
        .unwrap();
    entries[0].value.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weaker_flush_policy_is_refused_with_policy_violation_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let broker = open(dir.path()).await;
        for weak in ["os", "interval:200ms"] {
            let created = broker
                .create_topics(vec![new_topic("weak", weak)], false)
                .await;
            assert_eq!(created[0].error, ErrorCode::PolicyViolation, "{weak}");
            let message = created[0].error_message.as_deref().unwrap();
            assert!(message.contains("durability_floor"), "{message}");
            assert!(broker.describe_topic_config("weak", None).is_err());
        }
        let created = broker
            .create_topics(vec![new_topic("strong", "always")], false)
            .await;
        assert_eq!(created[0].error, ErrorCode::None);
        for incremental in [false, true] {
            let set = vec![("flush.policy".to_owned(), ConfigOp::Set, "os".to_owned())];
            let altered = broker
                .alter_topic_config("strong".to_owned(), set, incremental, false)
                .await;
            assert_eq!(altered.error, ErrorCode::PolicyViolation);
            assert_eq!(flush_of(&broker, "strong"), "always");
        }
        broker.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lowers_the_floor_and_the_broker_default_must_respect_it() {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let weak_default = BrokerConfig {
            data_dir: dir.path().to_owned(),
            log: staunch_log::LogConfig {
                flush: FlushPolicy::Os,
                ..Default::default()
            },
            ..BrokerConfig::default()
        };
        let refused = Broker::open(weak_default.clone()).unwrap_err().to_string();
        assert!(refused.contains("durability_floor"), "{refused}");

        let lowered = BrokerConfig {
            durability_floor: FlushPolicy::Interval(std::time::Duration::from_millis(500)),
            ..weak_default
        };
        assert!(
            Broker::open(lowered.clone()).is_err(),
            "os is below interval:500ms"
        );
        let broker = tokio::task::spawn_blocking(move || {
            Broker::open(BrokerConfig {
                log: Default::default(),
                ..lowered
            })
        })
        .await
        .unwrap()
        .unwrap();
        let created = broker
            .create_topics(
                vec![
                    new_topic("fast", "interval:100ms"),
                    new_topic("slow", "interval:1s"),
                ],
                false,
            )
            .await;
        assert_eq!(created[0].error, ErrorCode::None);
        assert_eq!(created[1].error, ErrorCode::PolicyViolation);
        assert_eq!(flush_of(&broker, "fast"), "interval:100ms");
        broker.shutdown().await;
    })
    .await;
}
