//! What a consumer needs from every [`BrokerApi`]: checks that run unchanged against the
//! in-process broker, the network client against `staunch serve`, and (through the client)
//! any Kafka cluster.
//!
//! Each check takes the names of the topics and groups it may create, so several checks can
//! share one cluster, and panics with a message naming the broken promise. They use only
//! `BrokerApi` calls (topics are made with [`BrokerApi::create_topic`]), need a cluster that
//! keeps records forever and accepts session timeouts of 10 s, and finish in seconds when
//! the group's initial rebalance delay is short.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchPosition, FetchedRecords, GroupMembership, GroupProtocol,
    JoinGroupCall, JoinOutcome, JoinedGroup, ListedOffset, MemberAssignment, OffsetAndMetadata,
    OffsetSpec, SyncGroupCall, TopicCreation,
};
use staunch_core::{
    Acks, ApiError, BatchBuilder, BrokerApi, ErrorCode, PartitionBatch, ProduceCall, RecordBatch,
    TopicPartition,
};

/// The metadata string committed by [`commit_offsets_with_metadata`]: the kind of retry state a
/// consumer keeps there, with quotes, a newline and non-ASCII text that must come back
/// byte for byte.
pub const RETRY_STATE: &str =
    "attempt=3;first=2024-05-01T10:00:00Z;error=\"timeout\"\nnext line, ünïcødé ✓";

/// The longest any single wait in these checks may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(30);

/// `future`, or a panic naming `what` if it takes longer than [`HANG`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG:?}"))
}

/// Creates `topic` with `partitions` partitions and unlimited retention; it must be new.
pub async fn create_new_topic<B: BrokerApi>(api: &B, topic: &str, partitions: i32) {
    let created = within(
        "create_topic",
        api.create_topic(topic_call(topic, partitions)),
    )
    .await;
    assert_eq!(created, Ok(TopicCreation::Created), "creating {topic}");
}

fn topic_call(topic: &str, partitions: i32) -> CreateTopicCall {
    CreateTopicCall {
        name: topic.to_owned(),
        partitions: Some(partitions),
        replication_factor: None,
        configs: vec![("retention.ms".to_owned(), "-1".to_owned())],
    }
}

/// A batch of `values` (key `k`), every record stamped `timestamp`.
pub fn batch(timestamp: i64, values: &[&str]) -> Vec<u8> {
    values
        .iter()
        .fold(BatchBuilder::new(timestamp), |b, v| {
            b.record(Some(b"k"), Some(v.as_bytes()))
        })
        .build()
}

/// Produces `records` to `partition` with acks=all; returns the base offset.
pub async fn produce<B: BrokerApi>(api: &B, partition: &TopicPartition, records: &[u8]) -> i64 {
    let call = ProduceCall {
        acks: Acks::All,
        timeout: Duration::from_secs(10),
        batches: vec![PartitionBatch {
            partition: partition.clone(),
            records: Bytes::copy_from_slice(records),
        }],
    };
    let (_, outcome) = within("produce", api.produce(call))
        .await
        .pop()
        .expect("one outcome per batch");
    outcome
        .unwrap_or_else(|e| panic!("producing to {partition}: {e}"))
        .base_offset
}

fn position(partition: &TopicPartition, offset: i64) -> FetchPosition {
    FetchPosition {
        partition: partition.clone(),
        offset,
        max_bytes: 1 << 20,
    }
}

fn fetch_call(max_wait: Duration, min_bytes: i32, positions: Vec<FetchPosition>) -> FetchCall {
    FetchCall {
        max_wait,
        min_bytes,
        max_bytes: 4 << 20,
        partitions: positions,
    }
}

/// `produced` as a log stores it: base offset `base` and the leader epoch the broker stamped
/// (read from `stored`); every other byte unchanged.
fn as_stored(produced: &[u8], base: i64, stored: &[u8]) -> Vec<u8> {
    let epoch = RecordBatch::parse(stored)
        .expect("a fetch returns whole batches")
        .partition_leader_epoch();
    let mut bytes = produced.to_vec();
    RecordBatch::set_base_offset(&mut bytes, base).expect("a valid batch");
    RecordBatch::set_partition_leader_epoch(&mut bytes, epoch).expect("a valid batch");
    bytes
}

fn fetched(outcome: &(TopicPartition, Result<FetchedRecords, ApiError>)) -> &FetchedRecords {
    match &outcome.1 {
        Ok(records) => records,
        Err(e) => panic!("fetching {}: {e}", outcome.0),
    }
}

fn codes<T: std::fmt::Debug>(
    outcomes: &[(TopicPartition, Result<T, ApiError>)],
) -> Vec<Option<ErrorCode>> {
    outcomes
        .iter()
        .map(|(tp, r)| match r {
            Ok(value) => panic!("{tp} should have failed, got {value:?}"),
            Err(e) => e.code(),
        })
        .collect()
}

/// Creating a topic twice is `AlreadyExists`, not an error; a fetch from several partitions
/// returns each one's batches exactly as produced (only the base offset and leader epoch
/// stamped), in the order asked, with the partition's offsets; a batch comes whole even when
/// the fetch starts inside it; the end of the log is empty, not an error; bad offsets, topics
/// and partitions are told apart per partition.
pub async fn fetch_returns_the_stored_batches<B: BrokerApi>(api: &B, topic: &str) {
    create_new_topic(api, topic, 2).await;
    let again = within("create_topic", api.create_topic(topic_call(topic, 5))).await;
    assert_eq!(
        again,
        Ok(TopicCreation::AlreadyExists),
        "creating an existing topic is not an error"
    );
    let p0 = TopicPartition::new(topic, 0);
    let p1 = TopicPartition::new(topic, 1);
    let a = batch(1_000, &["a1", "a2", "a3"]);
    let b = batch(1_000, &["b1", "b2"]);
    let c = batch(2_000, &["c1"]);
    assert_eq!(produce(api, &p0, &a).await, 0);
    assert_eq!(produce(api, &p1, &b).await, 0);
    assert_eq!(produce(api, &p0, &c).await, 3);

    let call = fetch_call(
        Duration::from_secs(5),
        1,
        vec![position(&p1, 0), position(&p0, 0)],
    );
    let answer = within("fetch", api.fetch(call)).await;
    assert_eq!(answer.len(), 2);
    assert_eq!(answer[0].0, p1, "answers come in the order asked");
    let from_p1 = fetched(&answer[0]);
    let from_p0 = fetched(&answer[1]);
    let mut expected_p0 = as_stored(&a, 0, &from_p0.records);
    expected_p0.extend(as_stored(&c, 3, &from_p0.records[a.len()..]));
    assert_eq!(
        &from_p0.records[..],
        &expected_p0[..],
        "the bytes as produced and stored"
    );
    assert_eq!(
        &from_p1.records[..],
        &as_stored(&b, 0, &from_p1.records)[..]
    );
    assert_eq!(
        (
            from_p0.high_watermark,
            from_p0.last_stable_offset,
            from_p0.log_start_offset
        ),
        (4, 4, 0)
    );
    assert_eq!(from_p1.high_watermark, 2);

    let middle = within(
        "fetch",
        api.fetch(fetch_call(Duration::ZERO, 1, vec![position(&p0, 1)])),
    )
    .await;
    let first = RecordBatch::parse(&fetched(&middle[0]).records).expect("a whole batch");
    assert_eq!(
        first.base_offset(),
        0,
        "the batch holding the offset comes whole"
    );

    let end = within(
        "fetch",
        api.fetch(fetch_call(Duration::ZERO, 1, vec![position(&p0, 4)])),
    )
    .await;
    assert!(
        fetched(&end[0]).records.is_empty(),
        "nothing past the end yet"
    );

    let bad = fetch_call(
        Duration::from_secs(5),
        1,
        vec![
            position(&p0, 99),
            position(&TopicPartition::new(format!("{topic}-missing"), 0), 0),
            position(&TopicPartition::new(topic, 7), 0),
        ],
    );
    let errors = within("fetch", api.fetch(bad)).await;
    assert_eq!(
        codes(&errors),
        vec![
            Some(ErrorCode::OffsetOutOfRange),
            Some(ErrorCode::UnknownTopicOrPartition),
            Some(ErrorCode::UnknownTopicOrPartition),
        ]
    );
}

/// `min_bytes` 0 answers at once; a fetch of an empty partition with `min_bytes` 1 waits, and
/// answers as soon as a record is acknowledged — far sooner than its `max_wait` (20 s, so a
/// poll that only answers at its deadline fails the check).
pub async fn a_long_poll_answers_when_data_arrives<B: BrokerApi>(api: &B, topic: &str) {
    create_new_topic(api, topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    let max_wait = Duration::from_secs(20);

    let at_once = tokio::time::timeout(
        Duration::from_secs(10),
        api.fetch(fetch_call(max_wait, 0, vec![position(&tp, 0)])),
    )
    .await
    .expect("min_bytes 0 does not wait for data");
    assert!(fetched(&at_once[0]).records.is_empty());

    let mut poll = pin!(api.fetch(fetch_call(max_wait, 1, vec![position(&tp, 0)])));
    let early = tokio::time::timeout(Duration::from_millis(500), &mut poll).await;
    assert!(early.is_err(), "an empty partition is waited on: {early:?}");
    produce(api, &tp, &batch(1, &["hello"])).await;
    let answered = tokio::time::timeout(max_wait / 2, poll)
        .await
        .expect("the long poll answered when the data arrived, not at its deadline");
    let records = fetched(&answered[0]);
    assert_eq!(records.high_watermark, 1);
    let batch = RecordBatch::parse(&records.records).expect("a whole batch");
    assert_eq!(batch.record_count(), 1);
}

/// Earliest, latest (the high watermark), and by timestamp: the first record at or after it,
/// with its timestamp; `None` past the last record; an unknown partition is an error.
pub async fn list_offsets_by_spec<B: BrokerApi>(api: &B, topic: &str) {
    create_new_topic(api, topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api, &tp, &batch(1_000, &["a", "b", "c"])).await;
    produce(api, &tp, &batch(2_000, &["d", "e"])).await;
    let specs = [
        OffsetSpec::Earliest,
        OffsetSpec::Latest,
        OffsetSpec::Timestamp(500),
        OffsetSpec::Timestamp(1_500),
        OffsetSpec::Timestamp(9_999),
    ];
    let mut asked: Vec<(TopicPartition, OffsetSpec)> =
        specs.iter().map(|s| (tp.clone(), *s)).collect();
    asked.push((TopicPartition::new(topic, 3), OffsetSpec::Latest));
    let found = within("list_offsets", api.list_offsets(asked)).await;
    let listed = |offset, timestamp| Some(ListedOffset { offset, timestamp });
    let ok: Vec<Option<ListedOffset>> = found[..5]
        .iter()
        .map(|(tp, r)| r.clone().unwrap_or_else(|e| panic!("{tp}: {e}")))
        .collect();
    assert_eq!(
        ok,
        vec![
            listed(0, None),
            listed(5, None),
            listed(0, Some(1_000)),
            listed(3, Some(2_000)),
            None,
        ]
    );
    assert_eq!(
        codes(&found[5..]),
        vec![Some(ErrorCode::UnknownTopicOrPartition)]
    );
}

fn join_call(group: &str, member_id: &str, metadata: &'static [u8]) -> JoinGroupCall {
    JoinGroupCall {
        group_id: group.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: None,
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        protocol_type: "consumer".to_owned(),
        protocols: vec![GroupProtocol {
            name: "range".to_owned(),
            metadata: Bytes::from_static(metadata),
        }],
    }
}

/// A first join: `MEMBER_ID_REQUIRED` with the id to join with.
async fn new_member_id<B: BrokerApi>(api: &B, group: &str, metadata: &'static [u8]) -> String {
    match within("join_group", api.join_group(join_call(group, "", metadata))).await {
        Ok(JoinOutcome::MemberIdRequired { member_id }) => {
            assert!(!member_id.is_empty());
            member_id
        }
        other => panic!("a first join must be asked for a member id, got {other:?}"),
    }
}

async fn join<B: BrokerApi>(
    api: &B,
    group: &str,
    member_id: &str,
    metadata: &'static [u8],
) -> JoinedGroup {
    match within(
        "join_group",
        api.join_group(join_call(group, member_id, metadata)),
    )
    .await
    {
        Ok(JoinOutcome::Joined(joined)) => joined,
        other => panic!("expected to join {group}, got {other:?}"),
    }
}

fn membership(group: &str, joined: &JoinedGroup) -> GroupMembership {
    GroupMembership {
        group_id: group.to_owned(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        group_instance_id: None,
    }
}

fn sync_call(
    group: &str,
    joined: &JoinedGroup,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupCall {
    SyncGroupCall {
        member: membership(group, joined),
        protocol_type: Some("consumer".to_owned()),
        protocol_name: joined.protocol_name.clone(),
        assignments: assignments
            .iter()
            .map(|(member_id, assignment)| MemberAssignment {
                member_id: (*member_id).to_owned(),
                assignment: Bytes::from_static(assignment),
            })
            .collect(),
    }
}

/// Heartbeats `member` until the coordinator says to rejoin.
async fn heartbeat_until_rebalance<B: BrokerApi>(api: &B, member: &GroupMembership) {
    within("waiting for REBALANCE_IN_PROGRESS", async {
        loop {
            match api.heartbeat(member).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::RebalanceInProgress), "{e}");
                    return;
                }
            }
        }
    })
    .await;
}

fn offset(offset: i64) -> OffsetAndMetadata {
    OffsetAndMetadata {
        offset,
        leader_epoch: None,
        metadata: String::new(),
    }
}

/// A two-member group's life, member A through `a` and member B through `b` (they may be the
/// same `BrokerApi`, or two clients): join through `MEMBER_ID_REQUIRED`, sync, heartbeat; B
/// joining starts a rebalance that A learns of by heartbeat; both get the next generation, the
/// leader every member's metadata, each its own assignment; stale generations and unknown
/// members are refused (also for commits); B leaving makes A rejoin alone; leaving twice is
/// `UNKNOWN_MEMBER_ID`. Creates `topic` (1 partition) for the commits.
pub async fn two_members_rebalance_and_leave<A: BrokerApi, B: BrokerApi>(
    a: &A,
    b: &B,
    group: &str,
    topic: &str,
) {
    create_new_topic(a, topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    let a_id = new_member_id(a, group, b"meta-a").await;
    let a1 = join(a, group, &a_id, b"meta-a").await;
    assert!(a1.is_leader(), "the only member leads");
    assert_eq!(a1.protocol_name.as_deref(), Some("range"));
    assert_eq!(a1.members.len(), 1);
    let assigned = within(
        "sync_group",
        a.sync_group(sync_call(group, &a1, &[(&a_id, b"all to a")])),
    )
    .await
    .expect("the leader syncs");
    assert_eq!(&assigned[..], b"all to a");
    a.heartbeat(&membership(group, &a1))
        .await
        .expect("a heartbeat in a stable group");

    // B arrives: its join waits for the rebalance, which A learns of by heartbeat.
    let b_id = new_member_id(b, group, b"meta-b").await;
    let b_join = b.join_group(join_call(group, &b_id, b"meta-b"));
    let a_rejoin = async {
        heartbeat_until_rebalance(a, &membership(group, &a1)).await;
        join(a, group, &a_id, b"meta-a").await
    };
    let (b_joined, a2) = within("the rebalance", async { tokio::join!(b_join, a_rejoin) }).await;
    let b2 = match b_joined {
        Ok(JoinOutcome::Joined(joined)) => joined,
        other => panic!("B joins once A has rejoined, got {other:?}"),
    };
    assert_eq!(a2.generation_id, a1.generation_id + 1);
    assert_eq!(b2.generation_id, a2.generation_id);
    assert!(a2.is_leader(), "the leader that rejoined keeps leading");
    assert!(
        !b2.is_leader() && b2.members.is_empty(),
        "followers see no members"
    );
    assert_eq!(b2.member_id, b_id);
    let seen: BTreeMap<&str, &[u8]> = a2
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), &m.metadata[..]))
        .collect();
    let expected = BTreeMap::from([
        (a_id.as_str(), &b"meta-a"[..]),
        (b_id.as_str(), &b"meta-b"[..]),
    ]);
    assert_eq!(seen, expected, "the leader gets every member's metadata");

    // The follower's sync waits for the leader's.
    let (b_assigned, a_assigned) = within("sync_group", async {
        tokio::join!(
            b.sync_group(sync_call(group, &b2, &[])),
            a.sync_group(sync_call(
                group,
                &a2,
                &[(&a_id, b"half a"), (&b_id, b"half b")]
            )),
        )
    })
    .await;
    assert_eq!(&b_assigned.expect("the follower syncs")[..], b"half b");
    assert_eq!(&a_assigned.expect("the leader syncs")[..], b"half a");
    a.heartbeat(&membership(group, &a2))
        .await
        .expect("A is in generation 2");
    b.heartbeat(&membership(group, &b2))
        .await
        .expect("B is in generation 2");

    let stale = a.heartbeat(&membership(group, &a1)).await.unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::IllegalGeneration), "{stale}");
    let mut stranger = membership(group, &a2);
    stranger.member_id = "nobody".to_owned();
    let unknown = a.heartbeat(&stranger).await.unwrap_err();
    assert_eq!(
        unknown.code(),
        Some(ErrorCode::UnknownMemberId),
        "{unknown}"
    );
    let refused = a
        .commit_offsets(&membership(group, &a1), vec![(tp.clone(), offset(1))])
        .await;
    assert_eq!(
        codes(&refused),
        vec![Some(ErrorCode::IllegalGeneration)],
        "a commit from an old generation is refused"
    );
    let accepted = a
        .commit_offsets(&membership(group, &a2), vec![(tp.clone(), offset(1))])
        .await;
    assert!(accepted[0].1.is_ok(), "{:?}", accepted[0].1);

    // B leaves: A must rejoin, and is alone in the next generation.
    b.leave_group(&membership(group, &b2))
        .await
        .expect("B leaves");
    heartbeat_until_rebalance(a, &membership(group, &a2)).await;
    let a3 = join(a, group, &a_id, b"meta-a").await;
    assert_eq!(a3.generation_id, a2.generation_id + 1);
    assert_eq!(a3.members.len(), 1);
    within(
        "sync_group",
        a.sync_group(sync_call(group, &a3, &[(&a_id, b"all to a")])),
    )
    .await
    .expect("the leader syncs alone");
    a.leave_group(&membership(group, &a3))
        .await
        .expect("A leaves");
    let again = a.leave_group(&membership(group, &a3)).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::UnknownMemberId), "{again}");
}

/// What [`commit_offsets_with_metadata`] leaves committed for `group` on `topic`: partition 1
/// at 7 with empty metadata, partition 0 at 41 (leader epoch 0) with [`RETRY_STATE`], nothing
/// on partition 9 — asked in that order.
pub fn committed_by_the_suite(topic: &str) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)> {
    vec![
        (TopicPartition::new(topic, 1), Some(offset(7))),
        (
            TopicPartition::new(topic, 0),
            Some(OffsetAndMetadata {
                offset: 41,
                leader_epoch: Some(0),
                metadata: RETRY_STATE.to_owned(),
            }),
        ),
        (TopicPartition::new(topic, 9), None),
    ]
}

/// A simple commit (outside group management) of two partitions of a new two-partition
/// `topic`, one with [`RETRY_STATE`] as metadata; an unknown topic and metadata over 4 KiB are
/// refused per partition. Then checks [`committed_offsets_are_as_committed`].
pub async fn commit_offsets_with_metadata<B: BrokerApi>(api: &B, topic: &str, group: &str) {
    create_new_topic(api, topic, 2).await;
    let mut offsets: Vec<(TopicPartition, OffsetAndMetadata)> = committed_by_the_suite(topic)
        .into_iter()
        .filter_map(|(tp, committed)| Some((tp, committed?)))
        .collect();
    offsets.push((
        TopicPartition::new(format!("{topic}-missing"), 0),
        offset(1),
    ));
    let mut too_large = offset(8);
    too_large.metadata = "x".repeat(5_000);
    offsets.push((TopicPartition::new(topic, 1), too_large));
    let outcomes = within(
        "commit_offsets",
        api.commit_offsets(&GroupMembership::simple(group), offsets),
    )
    .await;
    assert!(
        outcomes[0].1.is_ok() && outcomes[1].1.is_ok(),
        "{outcomes:?}"
    );
    assert_eq!(
        codes(&outcomes[2..]),
        vec![
            Some(ErrorCode::UnknownTopicOrPartition),
            Some(ErrorCode::OffsetMetadataTooLarge),
        ],
        "refused per partition; metadata over the limit is refused, never cut"
    );
    committed_offsets_are_as_committed(api, topic, group).await;
}

/// The offsets [`commit_offsets_with_metadata`] committed come back exactly, metadata byte for
/// byte (run it again after a broker restart); another group has none.
pub async fn committed_offsets_are_as_committed<B: BrokerApi>(api: &B, topic: &str, group: &str) {
    let expected = committed_by_the_suite(topic);
    let asked: Vec<TopicPartition> = expected.iter().map(|(tp, _)| tp.clone()).collect();
    let fetched = within(
        "fetch_committed_offsets",
        api.fetch_committed_offsets(group, asked),
    )
    .await;
    let found: Vec<(TopicPartition, Option<OffsetAndMetadata>)> = fetched
        .into_iter()
        .map(|(tp, r)| {
            let committed = r.unwrap_or_else(|e| panic!("{tp}: {e}"));
            (tp, committed)
        })
        .collect();
    assert_eq!(found, expected);
    let other = within(
        "fetch_committed_offsets",
        api.fetch_committed_offsets(
            &format!("{group}-other"),
            vec![TopicPartition::new(topic, 0)],
        ),
    )
    .await;
    assert_eq!(
        other[0].1,
        Ok(None),
        "a group that never committed has nothing"
    );
}
