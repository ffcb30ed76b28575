#!/usr/bin/env python3
"""kafka-python against a live broker: topic administration with KafkaAdminClient, then a
KafkaProducer / KafkaConsumer round trip with a group and manual commits.

Admin part:
  - create a topic with 3 partitions and retention.ms set; it appears in list_topics and
    describe_topics (3 partitions, each with a leader); describe_configs shows retention.ms;
  - alter_configs with AlterConfigs (retention.ms, flush.policy=always) and with
    IncrementalAlterConfigs (retention.bytes): each new value is described back;
  - a flush.policy weaker than the broker's durability floor (os, interval:200ms) is refused
    with POLICY_VIOLATION by AlterConfigs, IncrementalAlterConfigs and CreateTopics alike;
  - an unknown config key and an unsupported value (cleanup.policy=compact) are refused, by
    AlterConfigs, IncrementalAlterConfigs and CreateTopics alike, and change nothing;
  - delete the topic; it disappears from list_topics.
Round trip:
  - KafkaProducer (acks=all) sends a few keyed messages; each lands at the next offset;
  - KafkaConsumer (group_id, enable_auto_commit=False, earliest) reads them back in order,
    commits with a metadata string; committed() and the admin's list_group_offsets read the
    offset and metadata back; list_groups / describe_groups show the group and its member.

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise.
"""

import argparse
import logging
import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from staunch_checks import check, Failure, log


def topic_configs(admin, topic):
    """All configs of topic as {name: value}, as DescribeConfigs reports them."""
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                       config_filter="all")
    check("topic" in described and topic in described["topic"],
          f"describe_configs did not describe topic {topic}: {described}")
    return {name: entry.get("value") for name, entry in described["topic"][topic].items()}


def expect_config(admin, topic, name, value):
    configs = topic_configs(admin, topic)
    check(configs.get(name) == value,
          f"describe_configs shows {name}={configs.get(name)!r}, expected {value!r} "
          f"(all: {configs})")
    return configs


def alter(admin, topic, configs, incremental, raise_on_unknown=True):
    result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)],
                                 incremental=incremental, raise_on_unknown=raise_on_unknown)
    check("topic" in result and topic in result["topic"], f"alter_configs returned {result}")
    return result["topic"][topic]


def partition_sizes(found, topic):
    """Every partition_size reported for topic anywhere in describe_log_dirs' answer."""
    if isinstance(found, dict):
        if found.get("name", found.get("topic")) == topic and "partitions" in found:
            for p in found["partitions"]:
                yield p["partition_size"] if isinstance(p, dict) else p[1]
            return
        for value in found.values():
            yield from partition_sizes(value, topic)
    elif isinstance(found, (list, tuple)):
        for value in found:
            yield from partition_sizes(value, topic)


def admin_checks(args, admin):
    topic = args.topic
    names = admin.list_topics()
    check(topic not in names, f"topic {topic} exists before the test created it")

    admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1,
                                 "configs": {"retention.ms": "3600000"}}})
    log(f"created topic {topic} with 3 partitions and retention.ms=3600000")

    check(topic in admin.list_topics(), f"list_topics does not show {topic} after creation")
    described = admin.describe_topics([topic])
    check(len(described) == 1, f"describe_topics returned {len(described)} topics: {described}")
    info = described[0]
    check(info.get("name") == topic and info.get("error_code", 0) == 0,
          f"describe_topics: {info}")
    partitions = sorted(p["partition_index"] for p in info["partitions"])
    check(partitions == [0, 1, 2], f"describe_topics shows partitions {partitions}, expected [0, 1, 2]")
    leaders = [p.get("leader_id", -1) for p in info["partitions"]]
    check(all(leader >= 0 for leader in leaders), f"partitions without a leader: {leaders}")
    log(f"list_topics shows {topic}; describe_topics shows partitions {partitions}, "
        f"leaders {leaders}")

    configs = expect_config(admin, topic, "retention.ms", "3600000")
    modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    check("retention.ms" in modified.get("topic", {}).get(topic, {}),
          f"retention.ms is not reported as a modified (non-default) config: {modified}")
    log(f"describe_configs shows retention.ms=3600000 (set on the topic) among {len(configs)} "
        f"configs: {sorted(configs)}")

    # AlterConfigs (non-incremental): kafka-python fills in the other modified keys itself.
    outcome = alter(admin, topic, {"retention.ms": "7200000", "flush.policy": "always"},
                    incremental=False)
    check(outcome == "OK", f"AlterConfigs retention.ms/flush.policy failed: {outcome}")
    expect_config(admin, topic, "retention.ms", "7200000")
    expect_config(admin, topic, "flush.policy", "always")
    log("AlterConfigs set retention.ms=7200000, flush.policy=always; described back")

    outcome = alter(admin, topic, {"retention.bytes": "1048576"}, incremental=True)
    check(outcome == "OK", f"IncrementalAlterConfigs retention.bytes failed: {outcome}")
    configs = expect_config(admin, topic, "retention.bytes", "1048576")
    check(configs.get("retention.ms") == "7200000",
          f"IncrementalAlterConfigs of retention.bytes changed retention.ms to "
          f"{configs.get('retention.ms')!r}")
    log("IncrementalAlterConfigs set retention.bytes=1048576; described back, "
        "retention.ms kept")

    for incremental in (False, True):
        api = "IncrementalAlterConfigs" if incremental else "AlterConfigs"
        for bad in ({"no.such.config": "1"}, {"cleanup.policy": "compact"}):
            outcome = alter(admin, topic, dict(bad), incremental=incremental,
                            raise_on_unknown=False)
            check(outcome != "OK", f"{api} accepted {bad}")
            log(f"{api} refused {bad}: {outcome}")
    # The broker's durability floor (default always): no client makes acks go out before fsync.
    for incremental in (False, True):
        api = "IncrementalAlterConfigs" if incremental else "AlterConfigs"
        for weak in ("os", "interval:200ms"):
            outcome = alter(admin, topic, {"flush.policy": weak}, incremental=incremental,
                            raise_on_unknown=False)
            check("PolicyViolation" in repr(outcome),
                  f"{api} flush.policy={weak}: expected POLICY_VIOLATION, got {outcome!r}")
            log(f"{api} refused flush.policy={weak}: {outcome!r}")
    expect_config(admin, topic, "flush.policy", "always")
    weak_topic = topic + "-weak"
    try:
        admin.create_topics({weak_topic: {"num_partitions": 1, "replication_factor": 1,
                                          "configs": {"flush.policy": "os"}}})
        refused = None
    except KafkaError as e:
        refused = e
    check(refused is not None and "PolicyViolation" in type(refused).__name__,
          f"CreateTopics flush.policy=os: expected POLICY_VIOLATION, got {refused!r}")
    check(weak_topic not in admin.list_topics(),
          f"refused CreateTopics left topic {weak_topic} behind")
    log(f"CreateTopics refused flush.policy=os: {refused!r}")

    configs = topic_configs(admin, topic)
    check(configs.get("retention.ms") == "7200000" and "no.such.config" not in configs
          and configs.get("cleanup.policy") in (None, "delete"),
          f"a refused alter changed the topic's configs: {configs}")
    log("the refused alters changed nothing")

    bad_topic = topic + "-bad-config"
    try:
        admin.create_topics({bad_topic: {"num_partitions": 1, "replication_factor": 1,
                                         "configs": {"no.such.config": "1"}}})
        refused = None
    except KafkaError as e:
        refused = e
    check(refused is not None, f"CreateTopics accepted unknown config no.such.config "
                               f"for {bad_topic}")
    check(bad_topic not in admin.list_topics(),
          f"refused CreateTopics left topic {bad_topic} behind")
    log(f"CreateTopics refused unknown config no.such.config: {type(refused).__name__}")

    admin.delete_topics([topic])
    deadline = time.monotonic() + 10
    while topic in admin.list_topics():
        check(time.monotonic() < deadline, f"topic {topic} still listed 10s after deletion")
        time.sleep(0.2)
    log(f"deleted topic {topic}; list_topics no longer shows it")


def round_trip(args, admin):
    topic = args.topic + "-roundtrip"
    group = args.group
    admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    log(f"created topic {topic} with 1 partition")
    messages = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(args.messages)]

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                             client_id="staunch-test-producer", request_timeout_ms=10000)
    try:
        for i, (key, value) in enumerate(messages):
            metadata = producer.send(topic, key=key, value=value).get(timeout=10)
            check((metadata.topic, metadata.partition, metadata.offset) == (topic, 0, i),
                  f"message {i} acknowledged at {metadata.topic}[{metadata.partition}]"
                  f"@{metadata.offset}, expected {topic}[0]@{i}")
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    log(f"KafkaProducer (acks=all) wrote {len(messages)} messages at offsets "
        f"0..{len(messages) - 1}")
    # DescribeLogDirs (as kafka-log-dirs.sh): the topic's partition holds those bytes.
    dirs = admin.describe_log_dirs()
    size = sum(partition_sizes(dirs, topic))
    check(size > 0, f"describe_log_dirs shows {size} bytes for {topic}: {dirs}")
    log(f"describe_log_dirs shows {size} bytes on disk for {topic}")

    consumer = KafkaConsumer(topic, bootstrap_servers=args.bootstrap, group_id=group,
                             client_id="staunch-test-consumer", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=10000,
                             heartbeat_interval_ms=1000, request_timeout_ms=15000)
    try:
        records = []
        deadline = time.monotonic() + args.timeout
        while len(records) < len(messages):
            check(time.monotonic() < deadline,
                  f"KafkaConsumer read {len(records)} of {len(messages)} messages in "
                  f"{args.timeout}s (assignment: {consumer.assignment()})")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        got = [(r.offset, r.key, r.value) for r in records]
        want = [(i, k, v) for i, (k, v) in enumerate(messages)]
        check(got == want, f"KafkaConsumer read {got}, expected {want}")
        log(f"KafkaConsumer in group {group} read the {len(messages)} messages back in order")

        tp = TopicPartition(topic, 0)
        consumer.commit({tp: OffsetAndMetadata(len(messages), "staunch-test-metadata", -1)})
        committed = consumer.committed(tp, metadata=True)
        check(committed is not None and committed.offset == len(messages)
              and committed.metadata == "staunch-test-metadata",
              f"committed() reads back {committed}, expected offset {len(messages)} with "
              f"metadata 'staunch-test-metadata'")
        log(f"committed offset {len(messages)} with metadata; committed() reads it back")

        offsets = admin.list_group_offsets(group).get(group, {})
        check(tp in offsets and offsets[tp].offset == len(messages)
              and offsets[tp].metadata == "staunch-test-metadata",
              f"list_group_offsets({group}) returned {offsets}")
        log(f"admin list_group_offsets shows {topic}[0] -> {offsets[tp].offset} "
            f"({offsets[tp].metadata!r})")

        groups = admin.list_groups()
        check(any(g.get("group_id") == group for g in groups),
              f"list_groups does not show {group}: {groups}")
        description = admin.describe_groups([group]).get(group)
        check(description is not None, f"describe_groups did not describe {group}")
        check(description.get("error_code", 0) == 0 and description.get("group_state") == "Stable",
              f"describe_groups({group}): {description}")
        members = description.get("members", [])
        check(len(members) == 1, f"describe_groups shows {len(members)} members: {members}")
        log(f"admin list_groups shows {group}; describe_groups shows it Stable with 1 member")
    finally:
        consumer.close(autocommit=False)
    admin.delete_topics([topic])
    log(f"deleted topic {topic}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", default="kafka-python-admin")
    parser.add_argument("--group", default="kafka-python-group")
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="bound on the consumer's wait, seconds")
    parser.add_argument("--only", choices=["admin", "round-trip"], default=None,
                        help="run just one part")
    parser.add_argument("--debug", action="store_true", help="kafka-python debug logging")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="  kafka-python %(levelname)s %(name)s: %(message)s")
    log(f"kafka-python {kafka.__version__}, broker {args.bootstrap}")
    try:
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="staunch-test-admin",
                                 request_timeout_ms=15000)
    except KafkaError as e:
        log(f"FAIL: connecting the admin client: {e!r}")
        return 1
    try:
        if args.only in (None, "admin"):
            admin_checks(args, admin)
        if args.only in (None, "round-trip"):
            round_trip(args, admin)
    except (Failure, KafkaError, ValueError) as e:
        log(f"FAIL: {type(e).__name__}: {e}")
        return 1
    finally:
        admin.close()
    log(f"OK: kafka-python {args.only or 'admin and round-trip'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
