//! Snapshots at the broker level: after a clean shutdown the producer-state snapshot of a
//! partition and the committed-offsets snapshot are bit-flipped, truncated or deleted; the
//! broker rebuilds both from the logs, an idempotent producer's last acknowledged batch sent
//! again gets its original offset and stores nothing, and every committed offset is there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::{Broker, NewTopic, Storage};
use staunch_core::api::{GroupMembership, OffsetAndMetadata, OffsetSpec};
use staunch_core::{
    Acks, BatchBuilder, BrokerApi, ErrorCode, PartitionBatch, ProduceCall, SystemClock,
    TopicPartition,
};
use staunch_log::SegmentIo;
use staunch_testkit::FaultyIo;

use super::bounded;
use super::damage::config;

async fn open(disk: &FaultyIo) -> Broker {
    let storage = Storage::new(Arc::new(disk.clone()), Arc::new(SystemClock));
    tokio::task::spawn_blocking(move || Broker::open_with(config(), storage))
        .await
        .unwrap()
        .expect("the broker opens")
}

async fn produce(broker: &Broker, tp: &TopicPartition, bytes: Bytes) -> i64 {
    let call = ProduceCall {
        acks: Acks::All,
        timeout: Duration::from_secs(10),
        batches: vec![PartitionBatch {
            partition: tp.clone(),
            records: bytes,
        }],
    };
    let (_, answer) = BrokerApi::produce(broker, call).await.pop().unwrap();
    answer.expect("the produce is acknowledged").base_offset
}

async fn latest(broker: &Broker, tp: &TopicPartition) -> i64 {
    let listed = BrokerApi::list_offsets(broker, vec![(tp.clone(), OffsetSpec::Latest)]).await;
    listed[0].1.clone().unwrap().unwrap().offset
}

async fn committed(broker: &Broker, tp: &TopicPartition) -> Option<i64> {
    let fetched = BrokerApi::fetch_committed_offsets(broker, "g", vec![tp.clone()]).await;
    fetched[0].1.clone().unwrap().map(|c| c.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_missing_snapshots_are_rebuilt_and_retries_still_deduplicated() {
    bounded(async {
        for damage in ["flip", "truncate", "delete"] {
            let disk = FaultyIo::new();
            let broker = open(&disk).await;
            let topic = NewTopic {
                name: "t".to_owned(),
                partitions: 1,
                replication_factor: 1,
                configs: Vec::new(),
            };
            assert_eq!(
                broker.create_topics(vec![topic], false).await[0].error,
                ErrorCode::None
            );
            let tp = TopicPartition::new("t", 0);
            let id = BrokerApi::init_producer_id(&broker).await.unwrap();
            let mut last = (Bytes::new(), 0);
            // ~30 batches of ~500 bytes: the 4 KiB segments roll several times.
            for seq in 0..30 {
                let bytes = Bytes::from(
                    BatchBuilder::new(1)
                        .producer(id.id, id.epoch, seq)
                        .record(None, Some(&[7u8; 500]))
                        .build(),
                );
                last = (bytes.clone(), produce(&broker, &tp, bytes).await);
                let commit = OffsetAndMetadata {
                    offset: i64::from(seq),
                    leader_epoch: None,
                    metadata: String::new(),
                };
                let answer = BrokerApi::commit_offsets(
                    &broker,
                    &GroupMembership::simple("g"),
                    vec![(tp.clone(), commit)],
                )
                .await;
                assert!(answer[0].1.is_ok());
            }
            broker.shutdown().await;

            let partition = disk.subdir("topics/t/0");
            let mut names: Vec<String> = partition
                .names()
                .into_iter()
                .filter(|n| n.ends_with(".snapshot"))
                .collect();
            names.sort();
            assert!(
                names.len() >= 2,
                "snapshots at rolls and at the shutdown: {names:?}"
            );
            let offsets = disk.subdir("consumer-offsets");
            for (dir, name) in [
                (&partition, names.last().unwrap().as_str()),
                (&offsets, "offsets.snapshot"),
            ] {
                let bytes = dir.live_bytes(name).expect("the snapshot was written");
                match damage {
                    "flip" => dir.flip_bit(name, bytes.len() - 10, 1),
                    "truncate" => dir.put_file(name, &bytes[..bytes.len() / 2]),
                    _ => dir.remove(name).unwrap(),
                }
            }

            let broker = open(&disk).await;
            let end = latest(&broker, &tp).await;
            assert_eq!(
                produce(&broker, &tp, last.0.clone()).await,
                last.1,
                "{damage}"
            );
            assert_eq!(
                latest(&broker, &tp).await,
                end,
                "{damage}: the retry was stored"
            );
            assert_eq!(committed(&broker, &tp).await, Some(29), "{damage}");
            broker.shutdown().await;
        }
    })
    .await;
}
