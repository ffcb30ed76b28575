//! Compressed batches end to end through the embedded broker: every codec, batch-size
//! accounting before compression, and compressed batches under faults (retries, re-stamping
//! under a new producer id, failures handing the payload back).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use staunch_core::ErrorCode;
use staunch_core::batch::{Compression, HEADER_SIZE};
use staunch_producer::{ProduceError, Producer, ProducerConfig, ProducerRecord, SendResult};

use crate::support::*;

/// Record `i`: a compressible value of varying length, a key for most, a header for some.
fn record(topic: &str, i: usize) -> ProducerRecord {
    let value = format!("{i:05} {}", "compressible payload ".repeat(i % 13));
    let mut record = ProducerRecord::new(topic.to_owned(), value);
    if !i.is_multiple_of(5) {
        record = record.with_key(format!("key-{}", i % 17));
    }
    if i.is_multiple_of(3) {
        record = record.with_header("n", i.to_string());
    }
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_stores_readable_batches_that_respect_batch_size_before_compression() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        const N: usize = 600;
        const BATCH_SIZE: usize = 4096;
        for codec in Compression::ALL {
            let topic = format!("compressed-{codec}");
            create_topic(&broker, &topic, 2).await;
            let config = ProducerConfig {
                compression: codec,
                batch_size: BATCH_SIZE,
                linger: Duration::from_millis(20),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(broker.clone(), config).unwrap();
            let outcomes: Arc<Mutex<Vec<SendResult>>> = Arc::default();
            for i in 0..N {
                let outcomes = outcomes.clone();
                producer
                    .send_async(record(&topic, i), move |r| outcomes.lock().unwrap().push(r))
                    .await;
            }
            producer.close().await;
            let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
            assert_eq!(outcomes.len(), N);
            assert!(
                outcomes.iter().all(Result::is_ok),
                "{codec}: a record failed"
            );

            let mut seen = BTreeSet::new();
            let mut batches = BTreeSet::new();
            for p in 0..2 {
                for stored in read_partition(&broker, &topic, p).await {
                    assert_eq!(stored.compression, Some(codec));
                    let value = String::from_utf8(stored.value.clone().unwrap()).unwrap();
                    let i: usize = value[..5].parse().unwrap();
                    let expected = record(&topic, i);
                    assert_eq!(stored.value.as_deref(), expected.value.as_deref());
                    assert_eq!(stored.key.as_deref(), expected.key.as_deref());
                    assert_eq!(
                        stored.headers.len(),
                        expected.headers.len(),
                        "{codec}: record {i}"
                    );
                    assert!(seen.insert(i), "{codec}: record {i} stored twice");
                    // batch_size bounds the batch before compression.
                    assert!(
                        HEADER_SIZE + stored.batch_records_size <= BATCH_SIZE,
                        "{codec}: a batch of {} bytes before compression",
                        HEADER_SIZE + stored.batch_records_size
                    );
                    if codec != Compression::None {
                        assert!(
                            stored.batch_size < HEADER_SIZE + stored.batch_records_size,
                            "{codec}: a batch that did not shrink"
                        );
                    }
                    batches.insert((p, stored.batch_size, stored.batch_records_size));
                }
            }
            assert_eq!(seen.len(), N, "{codec}: records missing");
            assert!(batches.len() > 2, "{codec}: expected several batches");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_compressed_records_come_back_with_their_payload() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "t", 1).await;
        let faulty = faulty(
            broker,
            Faults {
                always: Some(ErrorCode::NotEnoughReplicas),
                ..Faults::default()
            },
            1,
        );
        for codec in [Compression::Gzip, Compression::Lz4] {
            let config = ProducerConfig {
                compression: codec,
                delivery_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_millis(200),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(faulty.clone(), config).unwrap();
            let sent = ProducerRecord::new("t", "the payload")
                .with_key("k")
                .with_header("h", Bytes::from_static(b"v"));
            let failed = producer.send(sent.clone()).await.unwrap_err();
            assert!(
                matches!(failed.error, ProduceError::DeliveryTimeout { .. }),
                "{codec}: {}",
                failed.error
            );
            assert_eq!(failed.record.value, sent.value, "{codec}");
            assert_eq!(failed.record.key, sent.key, "{codec}");
            assert_eq!(failed.record.headers, sent.headers, "{codec}");
            producer.close().await;
        }
    })
    .await;
}
