//! Kill -9 of a `staunch serve` process in the middle of a produce load: after a restart,
//! every record the clients saw acknowledged (acks=all, flush always) is read back, at the
//! offset it was acknowledged with.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_client::kafka_protocol::messages::{
    FetchRequest, ProduceRequest, TopicName, fetch_request,
};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_core::BatchBuilder;

use common::Staunch;

fn produce_request(topic: &str, partition: i32, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ])
}

/// Produces batches of 4 records until the connection breaks or the bounds are reached;
/// records each acknowledged one (offset → value).
async fn produce_until_killed(
    addr: SocketAddr,
    writer: usize,
    acked: Arc<Mutex<BTreeMap<i64, Vec<u8>>>>,
) {
    let Ok(mut connection) =
        Connection::connect(addr, "kill9-producer", Duration::from_secs(10)).await
    else {
        return;
    };
    let started = Instant::now();
    for n in 0..20_000u32 {
        if started.elapsed() > Duration::from_secs(20) {
            return;
        }
        let values: Vec<Vec<u8>> = (0..4)
            .map(|i| format!("w{writer}-b{n}-r{i}").into_bytes())
            .collect();
        let mut builder = BatchBuilder::new(1_700_000_000_000);
        for v in &values {
            builder = builder.record(None, Some(v));
        }
        let Ok(response) = connection
            .call(produce_request("kill9", 0, builder.build()))
            .await
        else {
            return;
        };
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce failed before the kill");
        let mut acked = acked.lock().unwrap();
        for (i, v) in values.into_iter().enumerate() {
            acked.insert(p.base_offset + i as i64, v);
        }
    }
}

#[test]
fn every_acknowledged_record_survives_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = std::env::var("STAUNCH_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut server = Staunch::start(dir.path());
    for round in 0..3 {
        let addr = server.addr();
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let kill_after = Duration::from_millis(rng.u64(200..1200));
        runtime.block_on(async {
            let writers: Vec<_> = (0..4)
                .map(|w| tokio::spawn(produce_until_killed(addr, w, acked.clone())))
                .collect();
            tokio::time::sleep(kill_after).await;
            server.kill9();
            for w in writers {
                w.await.unwrap();
            }
        });
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was acknowledged before the kill (seed {seed})"
        );

        server.restart();
        let stored = runtime.block_on(read_all(server.addr()));
        for (offset, value) in &acked {
            match stored.get(offset) {
                Some(found) if found == value => {}
                other => panic!(
                    "round {round}: acknowledged offset {offset} ({}) lost or changed after kill -9: {:?} (seed {seed})",
                    String::from_utf8_lossy(value),
                    other.map(|v| String::from_utf8_lossy(v).into_owned()),
                ),
            }
        }
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acknowledged records all present ({} stored)",
            acked.len(),
            stored.len()
        );
    }
}

/// Every record in partition 0 of the test topic, by offset.
async fn read_all(addr: SocketAddr) -> BTreeMap<i64, Vec<u8>> {
    let mut connection = Connection::connect(addr, "kill9-reader", Duration::from_secs(10))
        .await
        .unwrap();
    let mut stored = BTreeMap::new();
    let mut next = 0;
    loop {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(4 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("kill9")))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(next)
                            .with_partition_max_bytes(4 << 20),
                    ]),
            ]);
        let response = connection.call(request).await.unwrap();
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        let bytes = partition.records.clone().unwrap_or_default();
        if bytes.is_empty() {
            return stored;
        }
        for batch in staunch_core::batch::batches(&bytes) {
            let batch = batch.unwrap();
            for record in batch.records().unwrap() {
                let record = record.unwrap();
                stored.insert(record.offset, record.value.unwrap_or_default().to_vec());
            }
            next = batch.next_offset();
        }
    }
}
