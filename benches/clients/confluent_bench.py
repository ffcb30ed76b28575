#!/usr/bin/env python3
"""End-to-end load with confluent-kafka (librdkafka) against a running broker.

Measures, on a fresh topic (one partition, or --partitions N with keyed records):
  produce  N messages of SIZE bytes with acks=all, enable.idempotence, linger.ms=5, timed
           after one warm-up message (see below);
  consume  them back with one group consumer;
  round trip: one message produced and flushed at a time (p50 / p99 latency) — to the
           topic, and to a second topic with flush.policy=os (Staunch's per-topic setting:
           no fsync before the ack), which leaves what the client, the network and the
           broker cost without the disk. Another broker may ignore the setting, or refuse
           the topic (then a line says so instead).

    staunch serve &        # or any Kafka broker
    $STAUNCH_VENV/bin/python benches/clients/confluent_bench.py --bootstrap 127.0.0.1:9092

--produce-only stops after the produce phase; --json prints the produce figures as one JSON
object instead of the text lines (benches/compare-producers uses both). -X key=value adds a
librdkafka setting to every client (e.g. -X security.protocol=ssl -X ssl.ca.location=ca.pem;
benches/compare-security uses it).

The venv comes from scripts/install-test-clients. A benchmark, not a test: it prints numbers.
"""
import argparse
import json
import statistics
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=1,
                        help="partitions of the topic; with more than one, every record has a "
                             "key (its number), which spreads the records over all of them")
    parser.add_argument("--produce-only", action="store_true",
                        help="stop after the produce phase (no consume, no round trips)")
    parser.add_argument("--json", action="store_true",
                        help="print the produce figures as one JSON object")
    parser.add_argument("-X", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a librdkafka setting for every client (repeatable), e.g. "
                             "security.protocol=ssl")
    args = parser.parse_args()
    extra = {}
    for setting in args.settings:
        key, sep, value = setting.partition("=")
        if not sep:
            parser.error(f"-X {setting}: expected KEY=VALUE")
        extra[key] = value

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap, **extra})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(timeout=60)

    payload = b"x" * args.size
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        **extra,
    })
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    # Warm-up, not timed: librdkafka's idempotent producer asks for its producer id on a 500 ms
    # timer once it has switched from the bootstrap connection to the broker it learned, which
    # would otherwise dominate a 200,000-message run. (The same happens against Kafka.)
    warm_start = time.perf_counter()
    producer.produce(f"{topic}-warm-up", b"warm-up", on_delivery=report)
    producer.flush(30)
    warm_s = time.perf_counter() - warm_start
    total = args.messages

    keyed = args.partitions > 1
    start = time.perf_counter()
    for n in range(args.messages):
        key = str(n).encode() if keyed else None
        while True:
            try:
                producer.produce(topic, payload, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(60)
    produce_s = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{len(failed)} deliveries failed, first: {failed[0]}")
    if args.json:
        print(json.dumps({
            "client": client_version(),
            "records": args.messages,
            "partitions": args.partitions,
            "record_bytes": args.size,
            "seconds": produce_s,
            "records_per_second": args.messages / produce_s,
            "mb_per_second": args.messages * args.size / produce_s / 1e6,
            "warm_up_seconds": warm_s,
        }))
    else:
        print(f"produce: {args.messages} x {args.size} B in {produce_s:.2f} s = "
              f"{args.messages / produce_s:,.0f} msg/s, {args.messages * args.size / produce_s / 1e6:.0f} MB/s "
              f"(after a {warm_s:.2f} s warm-up: connect, producer id, first message)")
    if args.produce_only:
        delete_topics(admin, topic)
        return

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # librdkafka (2.1+) stops fetching for fetch.queue.backoff.ms (default 1 s) once more
        # than queued.min.messages (100,000) wait in its local queue. A broker that answers
        # fast enough fills that queue before this script drains it, and the run then measures
        # a 1 s client-side pause (about 155k msg/s instead of 500-800k in about a third of
        # runs). A short back-off measures the broker instead.
        "fetch.queue.backoff.ms": 10,
        **extra,
    })
    consumer.subscribe([topic])
    seen = 0
    first = None
    deadline = time.monotonic() + 120
    while seen < total and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        for m in batch:
            if m.error() is None:
                if first is None:
                    first = time.perf_counter()
                seen += 1
    consume_s = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    if seen < total:
        raise SystemExit(f"consumed only {seen} of {total}")
    print(f"consume: {seen} in {consume_s:.2f} s (from the first message) = {seen / consume_s:,.0f} msg/s")

    p50, p99 = round_trips(producer, topic, payload, args.round_trips, report)
    print(f"round trip (produce + flush, one at a time): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    no_fsync = f"{topic}-no-fsync"
    try:
        admin.create_topics([NewTopic(no_fsync, 1, 1, config={"flush.policy": "os"})])[
            no_fsync].result(timeout=30)
    except Exception as e:  # another broker: no such setting
        print(f"(no round trip without fsync: {e})")
        no_fsync = None
    if no_fsync:
        try:
            p50, p99 = round_trips(producer, no_fsync, payload, args.round_trips, report)
            print(f"round trip to a topic with flush.policy=os (no fsync before the ack): "
                  f"p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        finally:
            admin.delete_topics([no_fsync])[no_fsync].result(timeout=30)
    if failed:
        raise SystemExit(f"{len(failed)} deliveries failed, first: {failed[0]}")
    delete_topics(admin, topic)


def round_trips(producer, topic, payload, count, report):
    """Produces and flushes `count` messages one at a time; returns p50 and p99 in ms."""
    latencies = []
    for _ in range(count):
        t = time.perf_counter()
        producer.produce(topic, payload, on_delivery=report)
        producer.flush(10)
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    return (statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000)


def client_version():
    def text(v):
        return v[0] if isinstance(v, tuple) else str(v)
    return (f"confluent-kafka {text(confluent_kafka.version())} "
            f"(librdkafka {text(confluent_kafka.libversion())})")


def delete_topics(admin, topic):
    for name in (topic, f"{topic}-warm-up"):
        admin.delete_topics([name])[name].result(timeout=30)


if __name__ == "__main__":
    main()
