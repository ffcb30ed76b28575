//! Writes the seed inputs of the targets that fuzz what Staunch reads back from disk
//! (`offsets_replay`, `producer_ids`, `broker_metadata`, `index_recovery`, `outbox_replay`,
//! `consumer_protocol`, `acl_file`) into `fuzz/seeds/<target>/`, and the reproducers of the bugs they found
//! into `fuzz/regressions/<target>/`.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_disk_seeds
//! ```
//! Deterministic: regenerating leaves the files unchanged.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use staunch_core::TopicPartition;
use staunch_fuzz::{
    INDEX_MAGIC, INTENT_MAGIC, MARKER_MAGIC, RECOVERY_POINT_MAGIC, index_log, offsets_key, seal,
    unseal,
};
use staunch_protocol::consumer_protocol::{
    Assignment, Subscription, encode_assignment, encode_subscription,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = fuzz.join("seeds");
    let regressions = fuzz.join("regressions");
    offsets_replay(&seeds.join("offsets_replay"));
    producer_ids(
        &seeds.join("producer_ids"),
        &regressions.join("producer_ids"),
    );
    broker_metadata(
        &seeds.join("broker_metadata"),
        &regressions.join("broker_metadata"),
    );
    index_recovery(&seeds.join("index_recovery"));
    outbox_replay(
        &seeds.join("outbox_replay"),
        &regressions.join("outbox_replay"),
    );
    consumer_protocol(
        &seeds.join("consumer_protocol"),
        &regressions.join("consumer_protocol"),
    );
    acl_file(&seeds.join("acl_file"));
    println!("seeds written under {}", seeds.display());
}

/// Op 0 (a commit) of group `g{g}`, topic `t{t}`, partition `p`.
fn commit(g: u8, t: u8, p: u8, offset: i64, metadata: &[u8]) -> Vec<u8> {
    cat(&[
        &[0, g, t, p],
        &offset.to_be_bytes(),
        &3i32.to_be_bytes(),
        &1_700_000_000_123i64.to_be_bytes(),
        &[metadata.len() as u8],
        metadata,
    ])
}

/// Op 2: a raw key and value (`None`: a null value).
fn raw(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut v = vec![2, key.len() as u8];
    v.extend_from_slice(key);
    match value {
        Some(value) => {
            v.push(value.len() as u8);
            v.extend_from_slice(value);
        }
        None => v.push(255),
    }
    v
}

fn offsets_replay(dir: &Path) {
    let commits = cat(&[
        &[0],
        &commit(0, 0, 0, 5, b"attempt=1"),
        &commit(0, 0, 1, 7, b""),
        &[3],
        &commit(1, 1, 0, 100, b"x"),
        &commit(0, 0, 0, 6, b"attempt=2"),
        &[1, 1, 1, 0],
    ]);
    write(dir, "commits_and_a_deletion", &commits);
    let mut compacting = commits.clone();
    compacting[0] = 1;
    write(dir, "commits_compacting", &compacting);
    let mut gzip = commits.clone();
    gzip[0] = 2;
    write(dir, "compressed_batch", &gzip);
    // A value too short for its fields: group g2 goes offline, g0 serves.
    let key = offsets_key(b"g2", b"t0", 0);
    write(
        dir,
        "malformed_value",
        &cat(&[&[0], &commit(0, 0, 0, 9, b"m"), &raw(&key, Some(b"short"))]),
    );
    // A later good record of the same key supersedes a malformed one.
    write(
        dir,
        "malformed_value_superseded",
        &cat(&[
            &[0],
            &raw(&key, Some(b"short")),
            &[3],
            &commit(2, 0, 0, 1, b""),
        ]),
    );
    // Metadata that is not UTF-8.
    write(
        dir,
        "metadata_not_utf8",
        &cat(&[&[0], &commit(3, 0, 0, 1, b"\xff\xfe")]),
    );
    // A key naming its group and nothing else readable: the group goes offline.
    let group_only = cat(&[&2u32.to_be_bytes(), b"g4", &[0, 0]]);
    write(
        dir,
        "key_with_group_only",
        &cat(&[&[0], &commit(4, 0, 0, 1, b""), &raw(&group_only, Some(b""))]),
    );
    // A key naming no group: the store cannot tell whose offsets are unknown and fails.
    write(
        dir,
        "key_naming_no_group",
        &cat(&[&[0], &raw(b"\xff", None)]),
    );
    write(dir, "empty", &[]);
}

fn producer_ids(dir: &Path, reg: &Path) {
    for (name, text) in [
        ("zero", &b"0"[..]),
        ("block", b"1000"),
        ("newline", b"3000\n"),
        ("spaces", b"  42  "),
        ("garbage", b"garbage"),
        ("empty", b""),
        ("not_utf8", b"\xff12"),
        ("plus", b"+7"),
    ] {
        write(dir, name, text);
    }
    // Found by the fuzzer: a reservation near i64::MAX overflowed `next + BLOCK` (a panic
    // with overflow checks, a negative id without); a negative one handed out negative ids.
    write(reg, "near_i64_max", b"9223372036854775000");
    write(reg, "i64_max", b"9223372036854775807");
    write(reg, "negative", b"-1000");
}

const TOPIC_TOML: &str = "id = \"0b6a7c3e-1d2f-4a5b-8c9d-0e1f2a3b4c5d\"\npartitions = 3\n";

fn broker_metadata(dir: &Path, reg: &Path) {
    let topic = |body: &str| cat(&[&[0], body.as_bytes()]);
    write(dir, "topic_valid", &topic(TOPIC_TOML));
    write(
        dir,
        "topic_with_config",
        &topic(&format!(
            "{TOPIC_TOML}\n[config]\n\"retention.ms\" = \"60000\"\n\"flush.policy\" = \"os\"\n\"segment.bytes\" = \"1048576\"\n"
        )),
    );
    write(
        dir,
        "topic_bad_config_value",
        &topic(&format!(
            "{TOPIC_TOML}\n[config]\n\"segment.bytes\" = \"1\"\n"
        )),
    );
    write(
        dir,
        "topic_unknown_field",
        &topic(&format!("{TOPIC_TOML}replicas = 3\n")),
    );
    write(
        dir,
        "topic_bad_uuid",
        &topic("id = \"not-a-uuid\"\npartitions = 1\n"),
    );
    write(dir, "topic_truncated", &topic(&TOPIC_TOML[..30]));
    write(dir, "topic_empty", &[0]);
    write(dir, "cluster_id", b"\x01Mk3OEYBSD-S6SRTG2HHQFA\n");
    write(dir, "cluster_id_empty", b"\x01");
    write(dir, "producer_ids", b"\x02123000");
    write(dir, "producer_ids_garbage", b"\x02twelve");
    // Found by the fuzzer: a partition count below 1 loaded as a topic with no partitions, and
    // one above 100,000 made the broker open that many logs at start-up.
    write(
        reg,
        "topic_negative_partitions",
        &topic("id = \"0b6a7c3e-1d2f-4a5b-8c9d-0e1f2a3b4c5d\"\npartitions = -4\n"),
    );
    write(
        reg,
        "topic_zero_partitions",
        &topic("id = \"0b6a7c3e-1d2f-4a5b-8c9d-0e1f2a3b4c5d\"\npartitions = 0\n"),
    );
    write(
        reg,
        "topic_too_many_partitions",
        &topic("id = \"0b6a7c3e-1d2f-4a5b-8c9d-0e1f2a3b4c5d\"\npartitions = 2000000000\n"),
    );
}

fn index_recovery(dir: &Path) {
    let (disk, _) = index_log();
    let mut indexes: Vec<String> = disk
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".index"))
        .collect();
    indexes.sort();
    let segments = indexes.len() as u8;
    // Byte 0: the file (index k, then the marker, the intent, the recovery point); byte 1:
    // flags (1 reseal, 2 unclean, 4 append).
    for (k, name) in indexes.iter().enumerate() {
        let k = k as u8;
        let file = disk.live_bytes(name).unwrap();
        let body = unseal(&file, INDEX_MAGIC).expect("a valid index").to_vec();
        write(dir, &format!("index_{k}_as_is"), &cat(&[&[k, 0], &file]));
        write(dir, &format!("index_{k}_resealed"), &cat(&[&[k, 1], &body]));
        write(
            dir,
            &format!("index_{k}_resealed_unclean_append"),
            &cat(&[&[k, 1 | 2 | 4], &body]),
        );
        let mut flipped = file.clone();
        flipped[12] ^= 1;
        write(
            dir,
            &format!("index_{k}_bit_flip"),
            &cat(&[&[k, 0], &flipped]),
        );
    }
    let marker = disk.live_bytes("clean-shutdown").unwrap();
    let body = unseal(&marker, MARKER_MAGIC)
        .expect("a valid marker")
        .to_vec();
    write(dir, "marker_as_is", &cat(&[&[segments, 0], &marker]));
    write(dir, "marker_resealed", &cat(&[&[segments, 1], &body]));
    write(
        dir,
        "marker_torn",
        &cat(&[&[segments, 0], &marker[..marker.len() - 3]]),
    );
    // A truncation intent to offset 20 (sealed, so it is carried out), and a torn one.
    let intent = seal(INTENT_MAGIC, &20i64.to_be_bytes());
    write(
        dir,
        "intent_resealed",
        &cat(&[&[segments + 1, 1 | 4], &20i64.to_be_bytes()]),
    );
    write(
        dir,
        "intent_torn",
        &cat(&[&[segments + 1, 0], &intent[..10]]),
    );
    write(dir, "unclean_only", &[0, 2]);
    // The recovery point: as written, resealed, torn, and resealed claiming an offset far past
    // the data (a lie the open may refuse, never serve).
    let point = disk.live_bytes("recovery-point").unwrap();
    let body = unseal(&point, RECOVERY_POINT_MAGIC)
        .expect("a valid recovery point")
        .to_vec();
    let rp = segments + 2;
    write(dir, "recovery_point_as_is", &cat(&[&[rp, 0], &point]));
    write(dir, "recovery_point_resealed", &cat(&[&[rp, 1 | 2], &body]));
    write(
        dir,
        "recovery_point_torn",
        &cat(&[&[rp, 2], &point[..point.len() - 2]]),
    );
    let mut lie = body.clone();
    lie[..8].copy_from_slice(&1_000_000i64.to_be_bytes());
    write(
        dir,
        "recovery_point_past_the_data",
        &cat(&[&[rp, 1 | 4], &lie]),
    );
}

/// Op 0: an entry of topic `t{t}`, partition `partition`, with a key and value.
fn entry(t: u8, partition: Option<i32>, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = vec![0, t];
    match partition {
        None => v.push(0),
        Some(p) => {
            v.push(1);
            v.extend_from_slice(&p.to_be_bytes());
        }
    }
    for part in [key, value] {
        v.push(1);
        v.push(part.len() as u8);
        v.extend_from_slice(part);
    }
    v.push(1); // one header of its own
    v.extend_from_slice(&[5]);
    v.extend_from_slice(b"trace");
    v.extend_from_slice(&[1, 2]);
    v.extend_from_slice(b"ab");
    v
}

/// Op 1: a stamp.
fn stamp(id: i64, epoch: i16, base_sequence: i32, partition: i32, offsets: &[u8]) -> Vec<u8> {
    cat(&[
        &[1],
        &id.to_be_bytes(),
        &epoch.to_be_bytes(),
        &base_sequence.to_be_bytes(),
        &partition.to_be_bytes(),
        &[offsets.len() as u8],
        offsets,
    ])
}

/// Op 2 (acknowledged) or 3 (done).
fn marker(acked: bool, offsets: &[u8]) -> Vec<u8> {
    cat(&[
        &[if acked { 2 } else { 3 }, offsets.len() as u8],
        offsets,
        &[0],
    ])
}

fn outbox_replay(dir: &Path, reg: &Path) {
    // Entries 0-2, a stamp of 0 and 1, entry 4; 0 acknowledged.
    let pending = cat(&[
        &entry(0, Some(1), b"k0", b"v0"),
        &entry(0, Some(1), b"k1", b"v1"),
        &entry(1, None, b"k2", b"v2"),
        &[5],
        &stamp(77, 0, 0, 1, &[0, 1]),
        &entry(0, Some(1), b"k4", b"v4"),
    ]);
    write(dir, "stamped_batch_pending", &pending);
    write(
        dir,
        "stamped_batch_half_acked",
        &cat(&[&pending, &marker(true, &[0])]),
    );
    write(
        dir,
        "done_and_restamped",
        &cat(&[
            &pending,
            &marker(false, &[2]),
            &stamp(78, 1, 0, 1, &[1, 5]),
            &entry(0, Some(1), b"k6", b"v6"),
        ]),
    );
    write(
        dir,
        "stamp_too_short",
        &cat(&[&entry(0, None, b"k", b"v"), &[1]]),
    );
    // A record with a raw header first: not an entry.
    write(
        dir,
        "not_an_entry",
        &cat(&[
            &entry(0, None, b"k", b"v"),
            &[4, 1, 3],
            b"odd",
            &[0, 1, 1],
            b"v",
        ]),
    );
    write(dir, "empty", &[]);
    // Caught by the target: a stamp listing entry 0 twice was reused for a batch of entries
    // 0 and 1 only, sent with the stamp's sequence numbers.
    write(
        reg,
        "stamp_listing_an_entry_twice",
        &cat(&[
            &entry(0, Some(1), b"k0", b"v0"),
            &entry(0, Some(1), b"k1", b"v1"),
            &stamp(5, 0, 0, 1, &[0, 0, 1]),
        ]),
    );
}

fn consumer_protocol(dir: &Path, reg: &Path) {
    let subscription = Subscription {
        topics: vec!["orders".into(), "payments".into()],
        user_data: Some(Bytes::from_static(b"sticky")),
        owned_partitions: vec![
            TopicPartition::new("orders", 1),
            TopicPartition::new("payments", 0),
            TopicPartition::new("orders", 4),
        ],
        generation_id: 7,
        rack_id: Some("rack-a".into()),
    };
    write(
        dir,
        "subscription_v3",
        &encode_subscription(&subscription).unwrap(),
    );
    // Version 0: topics and user data only.
    let v0 = cat(&[
        &0i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &1i16.to_be_bytes(),
        b"t",
        &(-1i32).to_be_bytes(),
    ]);
    write(dir, "subscription_v0", &v0);
    let assignment = Assignment {
        partitions: vec![
            TopicPartition::new("orders", 0),
            TopicPartition::new("orders", 2),
            TopicPartition::new("payments", 1),
        ],
        user_data: None,
    };
    write(
        dir,
        "assignment_v3",
        &encode_assignment(&assignment).unwrap(),
    );
    let mut future = encode_assignment(&assignment).unwrap().to_vec();
    future[1] = 9;
    future.extend_from_slice(b"a later version's field");
    write(dir, "assignment_future_version", &future);
    write(dir, "empty", &[]);
    // Found by the fuzzer's size check: a long topic name over many partitions decoded into a
    // copy of the name per partition, a size growing with the square of the input's (here
    // 4 KiB in, about 1 MiB out; 1 MiB in would make tens of GiB).
    let name = vec![b'x'; 2_000];
    let partitions = 500i32;
    let mut body = cat(&[
        &3i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &(name.len() as i16).to_be_bytes(),
        &name,
        &partitions.to_be_bytes(),
    ]);
    for p in 0..partitions {
        body.extend_from_slice(&p.to_be_bytes());
    }
    body.extend_from_slice(&(-1i32).to_be_bytes());
    write(reg, "long_topic_many_partitions", &body);
}

/// `acls.toml` as the broker writes it (literal, prefixed, wildcard, DENY, a name with quotes
/// and a newline), a file whose checksum does not match, one with a matching checksum over an
/// invalid binding (resource type ANY), and no checksum at all.
fn acl_file(dir: &Path) {
    use staunch_broker::Authorizer;
    use staunch_broker::acl::{
        ACL_FILE, AccessControlEntry, AclBinding, AclOperation, AclPermission, PatternType,
        ResourcePattern, ResourceType,
    };
    let binding = |rt, name: &str, pattern, principal: &str, host: &str, op, permission| {
        AclBinding {
            pattern: ResourcePattern {
                resource_type: rt,
                name: name.to_owned(),
                pattern_type: pattern,
            },
            entry: AccessControlEntry {
                principal: principal.to_owned(),
                host: host.to_owned(),
                operation: op,
                permission,
            },
        }
    };
    let disk = staunch_testkit::FaultyIo::new();
    let authorizer =
        Authorizer::open(std::sync::Arc::new(disk.clone()), ACL_FILE.into(), &[]).unwrap();
    let answers = authorizer.create(vec![
        binding(ResourceType::Topic, "orders", PatternType::Literal, "User:alice", "*", AclOperation::Write, AclPermission::Allow),
        binding(ResourceType::Topic, "logs.", PatternType::Prefixed, "User:*", "10.0.0.1", AclOperation::Read, AclPermission::Allow),
        binding(ResourceType::Group, "*", PatternType::Literal, "User:bob", "*", AclOperation::All, AclPermission::Deny),
        binding(ResourceType::Cluster, "kafka-cluster", PatternType::Literal, "User:ops", "*", AclOperation::Alter, AclPermission::Allow),
        binding(ResourceType::TransactionalId, "q\"uote\nd", PatternType::Literal, "User:CN=a,O=b", "*", AclOperation::Describe, AclPermission::Allow),
    ]);
    assert!(answers.iter().all(Result::is_ok));
    let bytes = staunch_log::read_file(&disk, ACL_FILE).unwrap().unwrap();
    write(dir, "written", &bytes);
    let mut flipped = bytes.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    write(dir, "bad_checksum", &flipped);
    let body = "[[acl]]\nresource_type = \"ANY\"\nname = \"t\"\npattern_type = \"LITERAL\"\n\
                principal = \"User:a\"\nhost = \"*\"\noperation = \"READ\"\npermission = \"ALLOW\"\n";
    let invalid = format!("# crc32c={:08x}\n{body}", crc32c::crc32c(body.as_bytes()));
    write(dir, "invalid_binding", invalid.as_bytes());
    write(dir, "no_checksum", body.as_bytes());
}
