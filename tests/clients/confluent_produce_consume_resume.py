#!/usr/bin/env python3
"""confluent-kafka (librdkafka) against a live broker: idempotent produce, group consume with
synchronous commits, and resume at the committed offset after a broker restart.

Run in phases; the caller restarts the broker between them:

  --phase produce                  create a 1-partition topic, produce --total messages with
                                   acks=all + enable.idempotence=true; every delivery report
                                   must succeed and message i must land at offset i.
  --phase consume-part --count N   a group consumer (no auto commit, reset earliest) reads the
                                   first N messages in order and commits synchronously.
  --phase resume                   a new consumer in the same group must find the committed
                                   offset (--expect-start), see it as its first message and
                                   read on to the end in order: no gap, no duplicate.

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise. Every wait is
bounded, so a broken broker makes this fail rather than hang.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from staunch_checks import check, client_config, create_topic, Failure, log


def value_of(index):
    return f"message-{index:06d}".encode()


def base_config(args):
    return client_config(args.bootstrap, "staunch-test-resume")


def phase_produce(args):
    create_topic(args.bootstrap, args.topic, 1)
    producer = Producer({
        **base_config(args),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    })
    reports = {}  # index -> (error, partition, offset)
    delivery_order = []

    def on_delivery(err, msg):
        index = int(msg.key().decode())
        reports[index] = (err, msg.partition(), msg.offset())
        delivery_order.append(index)

    started = time.monotonic()
    for i in range(args.total):
        while True:
            try:
                producer.produce(args.topic, key=str(i).encode(), value=value_of(i),
                                 partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
            check(time.monotonic() - started < args.timeout,
                  f"producing stalled: local queue still full after {args.timeout}s "
                  f"({len(reports)} delivery reports so far)")
        producer.poll(0)
    remaining = producer.flush(max(1.0, args.timeout - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    check(remaining == 0, f"{remaining} of {args.total} messages still undelivered after "
                          f"{args.timeout}s (delivery reports: {len(reports)})")
    check(len(reports) == args.total,
          f"got {len(reports)} delivery reports for {args.total} messages")
    failed = [(i, r[0]) for i, r in sorted(reports.items()) if r[0] is not None]
    check(not failed, f"{len(failed)} deliveries failed, first: message {failed[0][0] if failed else ''}"
                      f" -> {failed[0][1] if failed else ''}")
    wrong = [(i, r[2]) for i, r in sorted(reports.items()) if r[2] != i or r[1] != 0]
    check(not wrong, f"{len(wrong)} messages landed at the wrong offset, first: message "
                     f"{wrong[0][0] if wrong else ''} at offset {wrong[0][1] if wrong else ''}")
    check(delivery_order == list(range(args.total)),
          "delivery reports did not arrive in produce order")
    log(f"produced {args.total} messages with acks=all + idempotence in {elapsed:.2f}s; "
        f"every delivery report succeeded; offsets are 0..{args.total - 1} in order")

    consumer = Consumer({**base_config(args), "group.id": args.group + "-watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, 0), timeout=10)
    finally:
        consumer.close()
    check((low, high) == (0, args.total),
          f"watermarks are ({low}, {high}), expected (0, {args.total})")
    log(f"watermarks of {args.topic}[0]: low {low}, high {high}")


def make_consumer(args):
    return Consumer({
        **base_config(args),
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    })


def committed_offset(consumer, args):
    tps = consumer.committed([TopicPartition(args.topic, 0)], timeout=10)
    check(len(tps) == 1, f"committed() returned {tps}")
    check(tps[0].error is None, f"committed() error: {tps[0].error}")
    return tps[0].offset


def consume(consumer, args, first, last, commit_every):
    """Reads offsets first..last (inclusive) strictly in order; commits synchronously every
    commit_every messages and at the end. Returns the number of messages read."""
    expected = first
    started = time.monotonic()
    first_seen = None
    while expected <= last:
        check(time.monotonic() - started < args.timeout,
              f"timed out after {args.timeout}s waiting for offset {expected} "
              f"(read {expected - first} of {last - first + 1}; consumer assignment: "
              f"{consumer.assignment()})")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            check(not err.fatal() and err.retriable(), f"consumer error: {err}")
            log(f"  retriable consumer error: {err}")
            continue
        if first_seen is None:
            first_seen = msg.offset()
            log(f"first message seen at offset {first_seen} "
                f"({time.monotonic() - started:.2f}s after subscribing)")
            check(first_seen == first,
                  f"first message seen is at offset {first_seen}, expected {first}")
        check(msg.topic() == args.topic and msg.partition() == 0,
              f"message from unexpected {msg.topic()}[{msg.partition()}]")
        check(msg.offset() == expected,
              f"expected offset {expected}, got {msg.offset()} "
              f"({'duplicate/rewind' if msg.offset() < expected else 'gap'})")
        check(msg.value() == value_of(expected),
              f"offset {expected} holds value {msg.value()!r}, expected {value_of(expected)!r}")
        check(msg.key() == str(expected).encode(),
              f"offset {expected} holds key {msg.key()!r}, expected {str(expected)!r}")
        expected += 1
        if (expected - first) % commit_every == 0 or expected > last:
            try:
                result = consumer.commit(asynchronous=False)
            except KafkaException as e:
                raise Failure(f"synchronous commit at offset {expected} failed: {e}") from e
            check(result is not None and len(result) == 1,
                  f"commit returned {result}, expected one partition")
            check(result[0].error is None, f"commit of partition 0 failed: {result[0].error}")
            check(result[0].offset == expected,
                  f"commit stored offset {result[0].offset}, expected {expected}")
    return expected - first


def phase_consume_part(args):
    consumer = make_consumer(args)
    try:
        before = committed_offset(consumer, args)
        check(before < 0, f"group {args.group} already has committed offset {before}")
        consumer.subscribe([args.topic])
        read = consume(consumer, args, 0, args.count - 1, commit_every=1000)
        log(f"consumed offsets 0..{args.count - 1} in order ({read} messages), "
            f"committing synchronously every 1000")
        after = committed_offset(consumer, args)
        check(after == args.count,
              f"committed offset read back is {after}, expected {args.count}")
        log(f"committed offset of group {args.group} read back: {after}")
    finally:
        consumer.close()
    log("consumer closed")


def phase_resume(args):
    consumer = make_consumer(args)
    try:
        committed = committed_offset(consumer, args)
        check(committed == args.expect_start,
              f"after the restart the group's committed offset is {committed}, "
              f"expected {args.expect_start}")
        log(f"after restart, group {args.group} has committed offset {committed}")
        consumer.subscribe([args.topic])
        read = consume(consumer, args, committed, args.total - 1, commit_every=2000)
        log(f"resumed at offset {committed} and read {read} messages in order up to "
            f"{args.total - 1}: no gap, no duplicate")
        # Nothing more must arrive.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                raise Failure(f"unexpected extra message at offset {msg.offset()}")
        after = committed_offset(consumer, args)
        check(after == args.total, f"final committed offset {after}, expected {args.total}")
        log(f"final committed offset {after}; no message after offset {args.total - 1}")
    finally:
        consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--phase", required=True, choices=["produce", "consume-part", "resume"])
    parser.add_argument("--topic", default="resume-topic")
    parser.add_argument("--group", default="resume-group")
    parser.add_argument("--total", type=int, default=10000, help="messages produced")
    parser.add_argument("--count", type=int, default=4000, help="messages consume-part reads")
    parser.add_argument("--expect-start", type=int, default=None,
                        help="committed offset resume expects (default: --count)")
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="bound on each phase's main wait, seconds")
    args = parser.parse_args()
    if args.expect_start is None:
        args.expect_start = args.count
    log(f"confluent-kafka {__import__('confluent_kafka').version()[0]} "
        f"(librdkafka {__import__('confluent_kafka').libversion()[0]}), phase {args.phase}, "
        f"broker {args.bootstrap}")
    try:
        {"produce": phase_produce, "consume-part": phase_consume_part,
         "resume": phase_resume}[args.phase](args)
    except (Failure, KafkaException) as e:
        log(f"FAIL: phase {args.phase}: {e}")
        return 1
    log(f"OK: phase {args.phase}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
