#!/usr/bin/env python3
"""confluent-kafka (librdkafka) and compressed record batches against a live broker.

Two modes over a one-partition topic and an input file of records, one per line, each split
at the first --separator into key and value (a line without it has no key), the same format
`staunch produce -K SEP` reads:

  --mode produce --compression CODEC   produce every line, in order, with
                                       compression.type=CODEC (acks=all, idempotence, a
                                       linger so batches hold many records); every delivery
                                       report must succeed, at consecutive offsets.
  --mode consume                       read the partition from the beginning and check that
                                       it holds exactly the lines, in order, at offsets 0..N-1
                                       (whatever codec the batches were compressed with:
                                       librdkafka decompresses them).

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise. Every wait is
bounded, so a broken broker makes this fail rather than hang.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING

from staunch_checks import check, client_config, Failure, log


def base_config(args):
    return client_config(args.bootstrap, "staunch-test-compression")


def records(args):
    """(key or None, value) per input line."""
    sep = args.separator.encode()
    out = []
    with open(args.input, "rb") as f:
        for line in f.read().split(b"\n"):
            if not line:
                continue
            key, found, value = line.partition(sep)
            out.append((key, value) if found else (None, line))
    return out


def show(data):
    return repr(data if data is None or len(data) <= 40 else data[:40] + b"...")


def produce(args):
    wanted = records(args)
    producer = Producer({
        **base_config(args),
        "compression.type": args.compression,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 50,
        "batch.size": 65536,
        "message.timeout.ms": int(args.timeout * 1000),
    })
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.offset()))

    started = time.monotonic()
    for key, value in wanted:
        producer.produce(args.topic, key=key, value=value, partition=0, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(args.timeout)
    check(remaining == 0, f"{remaining} of {len(wanted)} messages still undelivered after "
                          f"{args.timeout}s")
    check(len(reports) == len(wanted),
          f"got {len(reports)} delivery reports for {len(wanted)} messages")
    failed = [r for r in reports if r[0] is not None]
    check(not failed, f"{len(failed)} deliveries failed, first: {failed[:1]}")
    offsets = [r[1] for r in reports]
    check(offsets == list(range(offsets[0], offsets[0] + len(offsets))),
          f"delivery offsets are not consecutive: {offsets[:10]}...")
    log(f"produced {len(wanted)} messages with compression.type={args.compression} "
        f"in {time.monotonic() - started:.2f}s at offsets {offsets[0]}..{offsets[-1]}")


def consume(args):
    wanted = records(args)
    consumer = Consumer({
        **base_config(args),
        "group.id": "staunch-test-compression",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    started = time.monotonic()
    got = 0
    try:
        while got < len(wanted):
            check(time.monotonic() - started < args.timeout,
                  f"timed out after {args.timeout}s with {got} of {len(wanted)} messages")
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
            check(msg.offset() == got, f"expected offset {got}, got {msg.offset()}")
            key, value = wanted[got]
            check(msg.key() == key,
                  f"offset {got} holds key {show(msg.key())}, expected {show(key)}")
            check(msg.value() == value,
                  f"offset {got} holds a value of {len(msg.value() or b'')} bytes "
                  f"{show(msg.value())}, expected {len(value)} bytes {show(value)}")
            got += 1
        # Nothing after the expected records.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                raise Failure(f"an extra message at offset {msg.offset()}")
    finally:
        consumer.close()
    log(f"consumed {got} messages, keys and values as expected, in "
        f"{time.monotonic() - started:.2f}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", required=True, choices=["produce", "consume"])
    parser.add_argument("--compression", default="none",
                        help="compression.type for --mode produce")
    parser.add_argument("--input", required=True, help="the records, one per line")
    parser.add_argument("--separator", default="=", help="between key and value")
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="bound on each wait, seconds")
    args = parser.parse_args()
    log(f"confluent-kafka {__import__('confluent_kafka').version()[0]} "
        f"(librdkafka {__import__('confluent_kafka').libversion()[0]}), broker {args.bootstrap}")
    try:
        if args.mode == "produce":
            produce(args)
        else:
            consume(args)
    except (Failure, KafkaException) as e:
        log(f"FAIL: {e}")
        return 1
    log("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
