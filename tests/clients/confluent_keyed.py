#!/usr/bin/env python3
"""confluent-kafka (librdkafka) keyed partitioning against a live broker: which partition each
key goes to, for comparison with Staunch's Rust producer (crates/staunch-cli/tests/producer.rs).

Creates --topic with --partitions partitions (AdminClient), produces --count keyed messages
with the Java-compatible partitioner, waits for every delivery report and prints one line per
key, in produce order:

    KEY <key as hex> <partition>

The keys are deterministic (a fixed seed) and of every length from 0 to 40 bytes, so murmur2's
1-, 2- and 3-byte tails and the empty key are all covered; some are non-ASCII bytes.

`partitioner: murmur2_random` is librdkafka's Java-compatible partitioner:
toPositive(murmur2(key)) % partitions, what Kafka's Java client (and Staunch's producer) use
for keyed records; null keys go to a random partition. librdkafka's *default*,
`consistent_random`, hashes keys with CRC32 instead and so places keys differently from the
Java client: a mixed fleet must set murmur2_random on its librdkafka clients.

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise. Every wait is
bounded, so a broken broker makes this fail rather than hang.
"""

import argparse
import random
import sys
import time

from confluent_kafka import KafkaException, Producer

from staunch_checks import check, client_config, create_topic, Failure, log


def base_config(args):
    return client_config(args.bootstrap, "staunch-test-keyed")


def keys(count):
    """`count` distinct deterministic keys of lengths 0..40 (ASCII first, then any bytes)."""
    rng = random.Random(20240607)
    seen = set()
    out = []
    attempt = 0
    while len(out) < count:
        length = attempt % 41
        attempt += 1
        if len(out) < count // 2:
            key = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_")
                          for _ in range(length)).encode()
        else:
            key = bytes(rng.randrange(256) for _ in range(length))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def run(args):
    create_topic(args.bootstrap, args.topic, args.partitions)
    producer = Producer({
        **base_config(args),
        # Java-compatible murmur2 (see the module docstring); NOT librdkafka's default
        # consistent_random, which is CRC32-based.
        "partitioner": "murmur2_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": int(args.timeout * 1000),
    })
    reports = {}  # key -> (error, partition)

    def on_delivery(err, msg):
        reports[msg.key()] = (err, msg.partition())

    wanted = keys(args.count)
    started = time.monotonic()
    for key in wanted:
        # No partition given: the configured partitioner places the key.
        producer.produce(args.topic, key=key, value=b"value of " + key.hex().encode(),
                         on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(args.timeout)
    check(remaining == 0, f"{remaining} of {len(wanted)} messages still undelivered after "
                          f"{args.timeout}s")
    check(len(reports) == len(wanted),
          f"got {len(reports)} delivery reports for {len(wanted)} messages")
    failed = [(k, r[0]) for k, r in reports.items() if r[0] is not None]
    check(not failed, f"{len(failed)} deliveries failed, first: {failed[:1]}")
    for key in wanted:
        log(f"KEY {key.hex()} {reports[key][1]}")
    used = len({r[1] for r in reports.values()})
    log(f"produced {len(wanted)} keyed messages in {time.monotonic() - started:.2f}s "
        f"over {used} of {args.partitions} partitions")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", default="keyed-confluent")
    parser.add_argument("--partitions", type=int, default=7)
    parser.add_argument("--count", type=int, default=200, help="keyed messages produced")
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="bound on the wait for delivery reports, seconds")
    args = parser.parse_args()
    log(f"confluent-kafka {__import__('confluent_kafka').version()[0]} "
        f"(librdkafka {__import__('confluent_kafka').libversion()[0]}), broker {args.bootstrap}")
    try:
        run(args)
    except (Failure, KafkaException) as e:
        log(f"FAIL: {e}")
        return 1
    log("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
