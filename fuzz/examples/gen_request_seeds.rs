//! Writes seed inputs for the `request_decode` target into `fuzz/seeds/request_decode/`: a
//! valid frame body (after the size prefix) of each of a few common requests.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_request_seeds
//! ```

use std::path::PathBuf;

use staunch_protocol::encode_request;
use staunch_protocol::kafka_protocol::messages::{
    ApiKey, FetchRequest, JoinGroupRequest, MetadataRequest, ProduceRequest, RequestKind,
    fetch_request, join_group_request, metadata_request, produce_request,
};
use staunch_protocol::kafka_protocol::protocol::StrBytes;

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds/request_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let topic = || {
        staunch_protocol::kafka_protocol::messages::TopicName(StrBytes::from_static_str("t"))
    };
    let requests = vec![
        ("metadata_v12", ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
        ])))),
        ("metadata_v1", ApiKey::Metadata, 1, RequestKind::Metadata(MetadataRequest::default())),
        ("produce_v7", ApiKey::Produce, 7, RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_records(Some(bytes::Bytes::from_static(&[0; 61]))),
            ]),
        ]))),
        ("fetch_v11", ApiKey::Fetch, 11, RequestKind::Fetch(FetchRequest::default().with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(topic()).with_partitions(vec![fetch_request::FetchPartition::default()]),
        ]))),
        ("join_group_v5", ApiKey::JoinGroup, 5, RequestKind::JoinGroup(JoinGroupRequest::default().with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str("range")),
        ]))),
    ];
    for (name, key, version, body) in requests {
        let frame = encode_request(key, version, 1, "seed", &body).unwrap();
        std::fs::write(dir.join(name), &frame[4..]).unwrap();
    }
}
