//! Damage stays where it is: a partition whose log cannot be opened, a topic whose metadata
//! cannot be read and a group whose committed offsets cannot be decoded each go offline alone
//! (KAFKA_STORAGE_ERROR, nothing truncated); the broker starts and serves everything else. A
//! topic whose creation fails half way is removed, not reopened at every start.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use staunch_broker::{Broker, BrokerConfig, CommittedOffset, NewTopic, ProducePartition, Storage};
use staunch_core::{BatchBuilder, ErrorCode, SystemClock};
use staunch_log::{LogConfig, LogStore, SegmentIo, StorageIo};
use staunch_testkit::FaultyIo;

use super::bounded;

pub(crate) fn config() -> BrokerConfig {
    BrokerConfig {
        auto_create_topics: false,
        log: LogConfig {
            segment_bytes: 4096,
            max_batch_bytes: 2048,
            zero_fill_bytes: 2048,
            ..LogConfig::default()
        },
        ..BrokerConfig::default()
    }
}

async fn open(disk: &FaultyIo) -> Broker {
    let storage = Storage::new(Arc::new(disk.clone()), Arc::new(SystemClock));
    tokio::task::spawn_blocking(move || Broker::open_with(config(), storage))
        .await
        .unwrap()
        .expect("the broker opens whatever is damaged")
}

async fn create(broker: &Broker, name: &str, partitions: i32) -> ErrorCode {
    let created = broker
        .create_topics(
            vec![NewTopic {
                name: name.to_owned(),
                partitions,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            false,
        )
        .await;
    created[0].error
}

/// Produces one 300-byte record to `topic`/`partition`: the error and its message.
async fn produce(broker: &Broker, topic: &str, partition: i32) -> (ErrorCode, Option<String>) {
    let records = BatchBuilder::new(1)
        .record(Some(b"k"), Some(&[7u8; 300]))
        .build();
    let result = broker
        .produce(
            -1,
            vec![ProducePartition {
                topic: topic.to_owned(),
                partition,
                records: BytesMut::from(&records[..]),
            }],
        )
        .await;
    (result[0].error, result[0].error_message.clone())
}

fn commit(offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: "m".to_owned(),
        commit_time_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_partition_topic_or_group_goes_offline_alone() {
    bounded(async {
        let disk = FaultyIo::new();
        let broker = open(&disk).await;
        assert_eq!(create(&broker, "hurt", 2).await, ErrorCode::None);
        assert_eq!(create(&broker, "meta", 1).await, ErrorCode::None);
        // Enough 300-byte batches for several 4 KiB segments in hurt/0.
        for _ in 0..40 {
            assert_eq!(produce(&broker, "hurt", 0).await.0, ErrorCode::None);
        }
        assert_eq!(produce(&broker, "hurt", 1).await.0, ErrorCode::None);
        for group in ["good", "bad"] {
            let done = broker
                .commit_offsets(group, vec![("hurt".to_owned(), 1, commit(1))])
                .await;
            assert_eq!(done[0].2, ErrorCode::None);
        }
        broker.shutdown().await;

        // A middle segment of hurt/0 vanishes: the sealed ones after it were on disk.
        let hurt0 = disk.subdir("topics/hurt/0");
        let segments: Vec<String> = hurt0
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert!(segments.len() >= 3, "{segments:?}");
        SegmentIo::remove(&hurt0, &segments[1]).unwrap();
        let kept: Vec<_> = hurt0
            .names()
            .iter()
            .map(|n| (n.clone(), hurt0.live_bytes(n)))
            .collect();
        // meta's topic.toml is garbage.
        disk.subdir("topics/meta")
            .put_file("topic.toml", b"\xff not toml");
        // A well-framed record of group "bad" whose value cannot be decoded.
        {
            let storage = Storage::new(Arc::new(disk.clone()), Arc::new(SystemClock));
            let log = storage
                .open_log("consumer-offsets", LogConfig::default())
                .unwrap();
            let mut key = Vec::new();
            for part in ["bad".as_bytes(), b"hurt"] {
                key.extend_from_slice(&(part.len() as u32).to_be_bytes());
                key.extend_from_slice(part);
            }
            key.extend_from_slice(&0i32.to_be_bytes());
            let mut batch = BatchBuilder::new(1).record(Some(&key), Some(b"xx")).build();
            log.append(&mut batch, 0).unwrap();
            log.close().unwrap();
        }

        let broker = open(&disk).await;
        let metadata = broker.metadata(None, false).await;
        let topic = |name: &str| {
            metadata
                .topics
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name} is listed"))
                .clone()
        };
        let hurt = topic("hurt");
        assert_eq!(hurt.error, ErrorCode::None);
        assert_eq!(hurt.partitions[0].error, ErrorCode::KafkaStorageError);
        assert_eq!(hurt.partitions[0].offline_replicas, vec![1]);
        assert_eq!(hurt.partitions[1].error, ErrorCode::None);
        assert_eq!(topic("meta").error, ErrorCode::KafkaStorageError);

        let (code, message) = produce(&broker, "hurt", 0).await;
        assert_eq!(code, ErrorCode::KafkaStorageError);
        let message = message.expect("the client is told why");
        assert!(
            message.contains("hurt") && message.contains("offline"),
            "{message}"
        );
        assert_eq!(produce(&broker, "hurt", 1).await.0, ErrorCode::None);
        assert_eq!(
            produce(&broker, "meta", 0).await.0,
            ErrorCode::KafkaStorageError
        );
        // Nothing of the damaged partition was changed.
        let now: Vec<_> = hurt0
            .names()
            .iter()
            .map(|n| (n.clone(), hurt0.live_bytes(n)))
            .collect();
        assert_eq!(now, kept, "the offline partition's files were changed");

        assert_eq!(
            broker.committed_offset("bad", "hurt", 1),
            Err(ErrorCode::KafkaStorageError)
        );
        assert_eq!(
            broker
                .committed_offset("good", "hurt", 1)
                .unwrap()
                .map(|c| c.offset),
            Some(1)
        );
        let refused = broker
            .commit_offsets("bad", vec![("hurt".to_owned(), 1, commit(2))])
            .await;
        assert_eq!(refused[0].2, ErrorCode::KafkaStorageError);

        // The offline topic's name stays taken, and it can be deleted.
        assert_eq!(
            create(&broker, "meta", 1).await,
            ErrorCode::TopicAlreadyExists
        );
        let deleted = broker.delete_topics(vec!["meta".to_owned()]).await;
        assert_eq!(deleted[0].error, ErrorCode::None);
        broker.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_creation_fails_half_way_is_removed() {
    bounded(async {
        let disk = FaultyIo::new();
        let broker = open(&disk).await;
        // The first file fsync is topic.toml's; the second, a new partition's first flush.
        disk.fail_one_sync_after(2);
        assert_eq!(
            create(&broker, "half", 2).await,
            ErrorCode::KafkaStorageError
        );
        assert!(!broker.topic_names().contains(&"half".to_owned()));
        assert_eq!(create(&broker, "whole", 1).await, ErrorCode::None);
        broker.shutdown().await;
        let broker = open(&disk).await;
        assert_eq!(broker.topic_names(), vec!["whole".to_owned()]);
        let on_disk = StorageIo::list_dirs(&disk, "topics").unwrap();
        assert_eq!(
            on_disk,
            vec!["whole".to_owned()],
            "half a topic was left on disk"
        );
        tokio::time::timeout(Duration::from_secs(30), broker.shutdown())
            .await
            .unwrap();
    })
    .await;
}

/// Under flush `os` (allowed by lowering the floor) a power cut tears the unsynced tail; the
/// reopened broker reports what recovery cut, per partition, in the topic's configs (what
/// `staunch topics describe` shows), and `none` for a topic that lost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_recovery_cut_is_reported_in_the_topic_configs() {
    bounded(async {
        let disk = FaultyIo::new();
        let config = BrokerConfig {
            durability_floor: staunch_log::FlushPolicy::Os,
            ..config()
        };
        let storage = Storage::new(Arc::new(disk.clone()), Arc::new(SystemClock));
        let open_config = config.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open_with(open_config, storage))
            .await
            .unwrap()
            .unwrap();
        let created = broker
            .create_topics(
                vec![NewTopic {
                    name: "fast".to_owned(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: vec![("flush.policy".to_owned(), "os".to_owned())],
                }],
                false,
            )
            .await;
        assert_eq!(created[0].error, ErrorCode::None);
        assert_eq!(create(&broker, "safe", 1).await, ErrorCode::None);
        for _ in 0..5 {
            assert_eq!(produce(&broker, "fast", 0).await.0, ErrorCode::None);
            assert_eq!(produce(&broker, "safe", 0).await.0, ErrorCode::None);
        }
        // The unsynced tail reaches the disk torn, 100 bytes short of the last batch's end.
        let segment = "00000000000000000000.log";
        let data = broker.partition_sizes(Some(vec![("fast".to_owned(), vec![0])]))[0].1[0].1;
        let live = disk.subdir("topics/fast/0").live_bytes(segment).unwrap();
        let after = disk.crash(staunch_testkit::CrashMode::DropUnsynced);
        after
            .subdir("topics/fast/0")
            .put_file(segment, &live[..data as usize - 100]);
        drop(broker);

        let storage = Storage::new(Arc::new(after), Arc::new(SystemClock));
        let broker = tokio::task::spawn_blocking(move || Broker::open_with(config, storage))
            .await
            .unwrap()
            .unwrap();
        let entry = |topic: &str| {
            broker
                .describe_topic_config(
                    topic,
                    Some(&[staunch_broker::broker::RECOVERY_ENTRY.to_owned()]),
                )
                .unwrap()[0]
                .value
                .clone()
        };
        let cut = entry("fast");
        assert!(
            cut.starts_with("partition 0: ") && cut.contains("bytes"),
            "{cut}"
        );
        assert_eq!(entry("safe"), "none");
        broker.shutdown().await;
    })
    .await;
}
